//! Reading a journal back: every check recovery and `cccx journal verify` make.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use zerocopy::FromBytes;

use super::record::{
    Record, RecordBytes, SegmentHeader, FORMAT_VERSION, HEADER_BYTES, RECORD_BYTES, SEGMENT_MAGIC,
};
use super::{segment_files, JournalError};
use crate::message::Command;

/// A torn last record, cut off by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub segment: PathBuf,
    /// Offset of the torn record.
    pub offset: u64,
    /// Why it is not a record.
    pub reason: String,
}

/// What a scan found.
#[derive(Clone, Debug, Default)]
pub struct ScanReport {
    /// Segment files, in order.
    pub segments: Vec<PathBuf>,
    /// Sequence of the last command (0 when there is none).
    pub last_seq: u64,
    /// Command records.
    pub commands: u64,
    /// Seal records.
    pub seals: u64,
    /// Chain hash of the newest seal (the genesis when there is none).
    pub head: [u8; 32],
    /// Commands after the newest seal (protected by their CRC only).
    pub unsealed: u32,
    /// Offset, in the last segment, of the first record after the valid ones.
    pub end_offset: u64,
    /// Offset, in the last segment, of the first unsealed command.
    pub block_start: u64,
    /// The torn record at the end, if there was one.
    pub torn_tail: Option<TornTail>,
}

/// Scans a journal directory from the first record to the last, calling `apply` with every
/// command in sequence order. Checks headers, framing, CRCs, sequence continuity and every seal
/// against the chain from `genesis`. A torn last record is reported in
/// [`ScanReport::torn_tail`], not applied; any other damage is an error.
pub fn scan(
    dir: &Path,
    genesis: [u8; 32],
    mut apply: impl FnMut(u64, &Command),
) -> Result<ScanReport, JournalError> {
    let files = segment_files(dir)?;
    let mut report = ScanReport { head: genesis, ..ScanReport::default() };
    for (i, (number, path)) in files.iter().enumerate() {
        if *number != i as u64 {
            let missing = super::segment_name(i as u64);
            return Err(JournalError::corrupt(path, 0, format!("segment {missing} is missing")));
        }
        let last = i + 1 == files.len();
        scan_segment(path, *number, last, &mut report, &mut apply)?;
        report.segments.push(path.clone());
    }
    Ok(report)
}

/// Commands the checking thread of [`scan_pipelined`] hands over at a time (256 KiB): each
/// handover may park and wake a thread, so fewer of them cost less (1,024 was measurably slower).
const PIPELINE_BATCH_COMMANDS: usize = 4096;
/// Batches checked and not yet applied, at most (back-pressure on the checking thread).
const PIPELINE_BATCHES_MAX: usize = 4;

/// [`scan`] with the checks (framing, CRC, sequence, chain) and the decoding on a second
/// thread, while `apply` runs on the caller's: what recovery uses, so that replaying a journal
/// costs little more than applying its commands. `apply` sees exactly the calls `scan` would
/// make, in the same order (the checking thread hands over batches of checked commands, and the
/// batches before an error are applied before the error is returned), so the result is the
/// same, byte for byte. On a machine with one core, or when no thread can be started, this is
/// [`scan`].
pub fn scan_pipelined(
    dir: &Path,
    genesis: [u8; 32],
    mut apply: impl FnMut(u64, &Command),
) -> Result<ScanReport, JournalError> {
    if std::thread::available_parallelism().map_or(true, |n| n.get() < 2) {
        return scan(dir, genesis, apply);
    }
    type Batch = Vec<(u64, Command)>;
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Batch>(PIPELINE_BATCHES_MAX);
    // Applied batches go back to be refilled: no allocation per batch after the first few.
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Batch>();
    std::thread::scope(|s| {
        let checker =
            std::thread::Builder::new().name("cccx-journal-scan".into()).spawn_scoped(s, move || {
                let mut batch = Vec::with_capacity(PIPELINE_BATCH_COMMANDS);
                let result = scan(dir, genesis, |seq, cmd| {
                    batch.push((seq, *cmd));
                    if batch.len() == PIPELINE_BATCH_COMMANDS {
                        let next = empty_rx
                            .try_recv()
                            .unwrap_or_else(|_| Vec::with_capacity(PIPELINE_BATCH_COMMANDS));
                        // A send fails only when the applying side is gone (it panicked).
                        let _ = full_tx.send(std::mem::replace(&mut batch, next));
                    }
                });
                if !batch.is_empty() {
                    let _ = full_tx.send(batch);
                }
                result
            });
        let Ok(checker) = checker else {
            return scan(dir, genesis, &mut apply);
        };
        for mut batch in full_rx {
            for (seq, cmd) in &batch {
                apply(*seq, cmd);
            }
            batch.clear();
            let _ = empty_tx.send(batch);
        }
        checker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn map(path: &Path) -> Result<Mmap, JournalError> {
    let file = File::open(path).map_err(|e| JournalError::io(path, e))?;
    // SAFETY: journal segments are only written by this process's writer, which is not running
    // while a journal is scanned (recovery happens before it opens); the map is read-only.
    unsafe { Mmap::map(&file) }.map_err(|e| JournalError::io(path, e))
}

fn check_header(path: &Path, bytes: &[u8], number: u64, report: &ScanReport) -> Result<(), JournalError> {
    let bad = |reason: String| Err(JournalError::corrupt(path, 0, reason));
    let Ok((header, _)) = SegmentHeader::read_from_prefix(bytes) else {
        return bad(format!("{} bytes: too short for a segment header", bytes.len()));
    };
    if header.magic != SEGMENT_MAGIC {
        return bad("not a cccx journal segment (bad magic number)".into());
    }
    if header.version.get() != FORMAT_VERSION {
        return bad(format!(
            "journal format version {} is not supported (this build reads version {FORMAT_VERSION})",
            header.version.get()
        ));
    }
    if header.header_bytes.get() as usize != HEADER_BYTES {
        return bad(format!("header length {} (64 expected)", header.header_bytes.get()));
    }
    if header.segment_no.get() != number {
        return bad(format!("header says segment {}, file name says {number}", header.segment_no.get()));
    }
    if header.first_seq.get() != report.last_seq + 1 {
        return bad(format!(
            "segment starts at sequence {}, {} expected",
            header.first_seq.get(),
            report.last_seq + 1
        ));
    }
    if header.chain_start != report.head {
        return bad("segment's chain start does not match the previous segment's last seal".into());
    }
    Ok(())
}

fn scan_segment(
    path: &Path,
    number: u64,
    last: bool,
    report: &mut ScanReport,
    apply: &mut impl FnMut(u64, &Command),
) -> Result<(), JournalError> {
    let map = map(path)?;
    let bytes = &map[..];
    check_header(path, bytes, number, report)?;
    let mut offset = HEADER_BYTES;
    report.block_start = offset as u64;
    report.unsealed = 0;
    while offset + RECORD_BYTES <= bytes.len() {
        // A reference into the map, not a copy: the checks and the decoding read the mapped
        // bytes once.
        let Ok(rec) = RecordBytes::ref_from_bytes(&bytes[offset..offset + RECORD_BYTES]) else { break };
        if rec.len.get() == 0 {
            break;
        }
        let problem = if rec.len.get() as usize != RECORD_BYTES {
            Some(format!("record length {} (64 expected)", rec.len.get()))
        } else if rec.crc.get() != rec.expected_crc() {
            Some("CRC mismatch".to_string())
        } else {
            None
        };
        if let Some(reason) = problem {
            return torn_or_corrupt(path, bytes, offset, last, reason, report);
        }
        let record = rec.decode().map_err(|e| JournalError::corrupt(path, offset, e))?;
        check_record(path, bytes, offset, rec, record, report, apply)?;
        offset += RECORD_BYTES;
    }
    if !zero_after(bytes, offset) {
        let at = offset + RECORD_BYTES.min(bytes.len() - offset);
        if !last || !zero_after(bytes, at) {
            return Err(JournalError::corrupt(path, offset, "data after the end of the records"));
        }
        report.torn_tail = Some(TornTail {
            segment: path.to_path_buf(),
            offset: offset as u64,
            reason: "record partly written (no length)".into(),
        });
    }
    if !last && report.unsealed > 0 {
        return Err(JournalError::corrupt(path, offset, "segment ends with unsealed records"));
    }
    report.end_offset = offset as u64;
    Ok(())
}

#[inline(always)]
fn check_record(
    path: &Path,
    bytes: &[u8],
    offset: usize,
    rec: &RecordBytes,
    record: Record,
    report: &mut ScanReport,
    apply: &mut impl FnMut(u64, &Command),
) -> Result<(), JournalError> {
    match record {
        Record::Command(cmd) => {
            let seq = rec.seq.get();
            if seq != report.last_seq + 1 {
                let reason = format!("sequence {seq} where {} was expected", report.last_seq + 1);
                return Err(JournalError::corrupt(path, offset, reason));
            }
            apply(seq, &cmd);
            report.last_seq = seq;
            report.commands += 1;
            report.unsealed += 1;
        }
        Record::Seal { commands, chain } => {
            let block = &bytes[report.block_start as usize..offset];
            let expected = chain_hash(&report.head, block);
            if commands != report.unsealed || rec.seq.get() != report.last_seq || chain != expected {
                let reason = "seal does not match the records before it (edited, removed or reordered)";
                return Err(JournalError::corrupt(path, offset, reason));
            }
            report.head = chain;
            report.seals += 1;
            report.unsealed = 0;
            report.block_start = (offset + RECORD_BYTES) as u64;
        }
    }
    Ok(())
}

/// A bad record is a torn tail only at the end of the last segment, with nothing after it.
fn torn_or_corrupt(
    path: &Path,
    bytes: &[u8],
    offset: usize,
    last: bool,
    reason: String,
    report: &mut ScanReport,
) -> Result<(), JournalError> {
    if !last || !zero_after(bytes, offset + RECORD_BYTES) {
        return Err(JournalError::corrupt(path, offset, reason));
    }
    report.torn_tail = Some(TornTail { segment: path.to_path_buf(), offset: offset as u64, reason });
    report.end_offset = offset as u64;
    Ok(())
}

/// Whether the unwritten part of a segment from `from` on is zero, as a writer leaves it. The
/// whole rest is read (a few milliseconds for a 64 MiB segment): a hole of lost pages followed
/// by records that were written later must be refused, not taken for the end.
fn zero_after(bytes: &[u8], from: usize) -> bool {
    let rest = &bytes[from.min(bytes.len())..];
    let (words, tail) = rest.split_at(rest.len() / 8 * 8);
    words.chunks_exact(8).all(|w| w == [0u8; 8]) && tail.iter().all(|b| *b == 0)
}

/// The chain hash after a block of records: BLAKE3(previous ‖ BLAKE3(block)). Hashing the
/// block on its own keeps it aligned to BLAKE3's 1 KiB chunks, which are hashed many at a time
/// with SIMD.
pub(super) fn chain_hash(previous: &[u8; 32], block: &[u8]) -> [u8; 32] {
    let mut link = [0u8; 64];
    link[..32].copy_from_slice(previous);
    link[32..].copy_from_slice(blake3::hash(block).as_bytes());
    *blake3::hash(&link).as_bytes()
}
