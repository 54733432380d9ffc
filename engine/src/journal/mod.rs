//! The write-ahead command journal: segmented, memory-mapped, framed, CRC-checked and
//! hash-chained.
//!
//! Every command gets the next sequence number and is written to the journal before the engine
//! applies it; replaying the journal rebuilds the same state. A journal is a directory:
//!
//! - `0000000000.cccxj`, `0000000001.cccxj`, ...: segments of a fixed size (a multiple of 64
//!   bytes), each a 64-byte header and 64-byte records ([`record`] has the layout).
//! - the chain's genesis, given by the caller (the binary derives it from the journal's
//!   instrument file), so the chain also covers the configuration.
//!
//! A record's length word is written after the rest of it, and the unwritten part of a segment
//! is zero: a reader takes a zero length as the end, and a record whose length is set but whose
//! CRC fails as torn. Every [`SEAL_EVERY`] commands (and before a segment rolls, and on close)
//! a seal record closes the block of records since the previous seal with
//! BLAKE3(previous chain hash ‖ BLAKE3(the block's records)), so editing, removing or
//! reordering any sealed record breaks the chain at the next seal. The
//! newest seal's hash (the *head*) is what an operator publishes to anchor the log; records
//! after it are protected by their CRC only until the next seal.
//!
//! Recovery ([`scan`], or [`scan_pipelined`] with the checks on a second thread) checks framing,
//! CRCs, sequence continuity and the chain. A torn record at
//! the very end of the last segment (followed by nothing but zeros) is reported and cut off;
//! damage anywhere else is refused with an error naming the segment and offset.
//!
//! [`pipeline::journal_and_apply`] runs the appends on a second thread, ahead of the engine.

pub mod pipeline;
pub mod record;
mod scan;
mod syncer;
mod writer;

use std::path::{Path, PathBuf};

pub use scan::{scan, scan_pipelined, ScanReport, TornTail};
pub use writer::JournalWriter;

/// Commands per sealed block: with the seal, 1024 records (64 KiB, which BLAKE3 hashes 16
/// chunks at a time).
pub const SEAL_EVERY: u32 = 1023;
/// Default segment size: one million records.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Smallest segment: the header, one command and its seal.
pub const SEGMENT_BYTES_MIN: u64 = 3 * record::RECORD_BYTES as u64;
/// Largest segment.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;

/// When the journal forces its writes to stable storage.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Never: records are in the page cache when the command is applied (they survive a crash
    /// of the process, not of the machine).
    None,
    /// Group commit: a sync thread makes the journal durable once `records` commands or
    /// `interval_us` have passed since the last request, whichever comes first (checked on
    /// appends and by [`JournalWriter::sync_if_due`]), while the engine goes on. One sync is in
    /// flight at most: while the disk is busy the next batch grows. [`JournalWriter::durable_seq`]
    /// says which commands may be reported.
    Batch {
        /// Commands per sync at most.
        records: u32,
        /// Time between syncs at most, in microseconds.
        interval_us: u64,
    },
    /// One `msync` per command, before the command is applied.
    Every,
}

/// How a journal is opened.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// The journal's directory (created if missing).
    pub dir: PathBuf,
    /// Size of each segment file, a multiple of 64 bytes.
    pub segment_bytes: u64,
    /// The durability policy.
    pub durability: Durability,
    /// Chain hash before the first record.
    pub genesis: [u8; 32],
}

/// A journal that cannot be written or read as it is.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// An I/O operation on a journal file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// A record or header is damaged, out of sequence, or does not match the chain.
    #[error("{segment}, offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the bad header or record in it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The configuration is unusable.
    #[error("journal configuration: {0}")]
    Config(String),
}

impl JournalError {
    fn io(path: &Path, error: std::io::Error) -> Self {
        JournalError::Io { path: path.to_path_buf(), error }
    }

    fn corrupt(segment: &Path, offset: usize, reason: impl Into<String>) -> Self {
        JournalError::Corrupt { segment: segment.to_path_buf(), offset: offset as u64, reason: reason.into() }
    }
}

/// The file name of segment `n`.
pub fn segment_name(n: u64) -> String {
    format!("{n:010}.cccxj")
}

/// The segment files of a journal directory, in order, with their numbers. Files of other
/// names (snapshots, temporary files) are not segments.
pub fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let entries = std::fs::read_dir(dir).map_err(|e| JournalError::io(dir, e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".cccxj") else { continue };
        if stem.len() == 10 && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = stem.parse() {
                segments.push((n, entry.path()));
            }
        }
    }
    segments.sort();
    Ok(segments)
}
