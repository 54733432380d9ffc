//! Recovery: an engine rebuilt from a journal directory, as the newest valid snapshot plus the
//! journal after it.
//!
//! A journal directory holds the instrument file (`instruments.cccxi`, written once when the
//! journal is created), the journal segments ([`crate::journal`]) and snapshots
//! ([`crate::snapshot`]). The chain of the journal starts from the BLAKE3 hash of the instrument
//! file, so the configuration is covered by the chain too. Journal records at or below the
//! snapshot's sequence are skipped, never applied twice.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::book::OrderBook;
use crate::engine::Engine;
use crate::journal::{
    scan, scan_pipelined, Durability, JournalConfig, JournalError, JournalWriter, ScanReport,
};
use crate::message::Command;
use crate::risk::RiskConfig;
use crate::sink::Discard;
use crate::snapshot::{newest_valid_snapshot, SnapshotError};
use crate::types::InstrumentSpec;

/// Name of the instrument file in a journal directory.
pub const INSTRUMENTS_FILE: &str = "instruments.cccxi";
const INSTRUMENTS_MAGIC: [u8; 8] = *b"CCCXINST";
const INSTRUMENTS_VERSION: u32 = 4;

/// Why an engine could not be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The journal is unreadable or damaged.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A snapshot could not be written or the directory's snapshots could not be read.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The instrument file is missing, damaged or disagrees with the configuration.
    #[error("{path}: {reason}")]
    Instruments {
        /// The instrument file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The snapshot and the journal disagree.
    #[error("{0}")]
    Inconsistent(String),
}

/// What recovery did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The snapshot recovery started from, with its last sequence.
    pub snapshot: Option<(u64, PathBuf)>,
    /// Newer snapshots that did not read back, with the reason (recovery fell back past them).
    pub skipped_snapshots: Vec<(PathBuf, String)>,
    /// Journal commands applied on top of the snapshot.
    pub replayed: u64,
    /// What the journal scan found (torn tail included).
    pub journal: ScanReport,
}

/// What a journal directory's instrument file holds: the configuration the journal was created
/// with, which it keeps for life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// The instruments, in id order.
    pub instruments: Vec<InstrumentSpec>,
    /// The risk settings.
    pub risk: RiskConfig,
}

impl EngineConfig {
    /// An engine with this configuration and no orders or accounts.
    pub fn engine<B: OrderBook>(&self) -> Result<Engine<B>, crate::engine::ConfigError> {
        Engine::with_risk(self.instruments.clone(), self.risk)
    }
}

/// Reads a journal directory's instrument file; returns the configuration and the chain's
/// genesis.
pub fn read_instruments(dir: &Path) -> Result<(EngineConfig, [u8; 32]), RecoveryError> {
    let path = dir.join(INSTRUMENTS_FILE);
    let bad = |reason: String| RecoveryError::Instruments { path: path.clone(), reason };
    let bytes = std::fs::read(&path).map_err(|e| bad(format!("cannot read: {e}")))?;
    if bytes.len() < 20 || bytes[..8] != INSTRUMENTS_MAGIC {
        return Err(bad("not a cccx instrument file".into()));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != INSTRUMENTS_VERSION {
        return Err(bad(format!(
            "instrument file version {version} is not supported (this build reads {INSTRUMENTS_VERSION})"
        )));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..20]);
    if u64::from_le_bytes(len) != (bytes.len() - 20) as u64 {
        return Err(bad("length does not match the file".into()));
    }
    let config: EngineConfig =
        postcard::from_bytes(&bytes[20..]).map_err(|e| bad(format!("cannot decode: {e}")))?;
    Ok((config, *blake3::hash(&bytes).as_bytes()))
}

fn write_instruments(dir: &Path, config: &EngineConfig) -> Result<(), RecoveryError> {
    let path = dir.join(INSTRUMENTS_FILE);
    let bad = |reason: String| RecoveryError::Instruments { path: path.clone(), reason };
    let payload = postcard::to_allocvec(config).map_err(|e| bad(format!("cannot encode: {e}")))?;
    let mut bytes = INSTRUMENTS_MAGIC.to_vec();
    bytes.extend(INSTRUMENTS_VERSION.to_le_bytes());
    bytes.extend((payload.len() as u64).to_le_bytes());
    bytes.extend(payload);
    let tmp = dir.join(format!("{INSTRUMENTS_FILE}.tmp"));
    let io = |e: std::io::Error| bad(format!("cannot write: {e}"));
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(&bytes).and_then(|_| file.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// Opens the journal in `dir` for writing, creating it with `new_config` when there is none,
/// and rebuilds the engine from the newest valid snapshot and the journal after it. An existing
/// journal keeps the configuration it was created with (the engine's
/// [`Engine::instruments`] and [`Engine::risk`] tell which).
pub fn open<B: OrderBook>(
    dir: &Path,
    new_config: &EngineConfig,
    segment_bytes: u64,
    durability: Durability,
) -> Result<(Engine<B>, JournalWriter, Recovery), RecoveryError> {
    std::fs::create_dir_all(dir).map_err(|e| JournalError::Io { path: dir.to_path_buf(), error: e })?;
    if !dir.join(INSTRUMENTS_FILE).exists() {
        write_instruments(dir, new_config)?;
    }
    let (existing, genesis) = read_instruments(dir)?;
    let (mut engine, mut recovery) = from_snapshot::<B>(dir, &existing)?;
    let skip = recovery.snapshot.as_ref().map_or(0, |(seq, _)| *seq);
    let mut replayed = 0;
    let config = JournalConfig { dir: dir.to_path_buf(), segment_bytes, durability, genesis };
    let (writer, report) = JournalWriter::open(config, apply_after(&mut engine, skip, &mut replayed))?;
    check_snapshot_covered(skip, &report)?;
    (recovery.replayed, recovery.journal) = (replayed, report);
    Ok((engine, writer, recovery))
}

/// Opens the journal in `dir` for writing like [`open`], but rebuilds the engine from the whole
/// journal (snapshots are not used) and shows `observe` every command with its events and the
/// engine after it: for a server that derives more state from the events than the engine keeps
/// (order histories, market data).
pub fn open_replaying<B: OrderBook>(
    dir: &Path,
    new_config: &EngineConfig,
    segment_bytes: u64,
    durability: Durability,
    mut observe: impl FnMut(u64, &Command, &[crate::message::Event], &Engine<B>),
) -> Result<(Engine<B>, JournalWriter, Recovery), RecoveryError> {
    std::fs::create_dir_all(dir).map_err(|e| JournalError::Io { path: dir.to_path_buf(), error: e })?;
    if !dir.join(INSTRUMENTS_FILE).exists() {
        write_instruments(dir, new_config)?;
    }
    let (existing, genesis) = read_instruments(dir)?;
    let mut engine: Engine<B> = existing.engine().map_err(|e| RecoveryError::Instruments {
        path: dir.join(INSTRUMENTS_FILE),
        reason: e.to_string(),
    })?;
    let mut replayed = 0;
    let mut events = Vec::with_capacity(1024);
    let config = JournalConfig { dir: dir.to_path_buf(), segment_bytes, durability, genesis };
    let (writer, report) = JournalWriter::open(config, |seq, cmd| {
        events.clear();
        engine.apply(cmd, &mut events);
        observe(seq, cmd, &events, &engine);
        replayed += 1;
    })?;
    Ok((engine, writer, Recovery { replayed, journal: report, ..Recovery::default() }))
}

/// Rebuilds the engine from `dir` without writing anything (a torn tail is reported, not cut).
pub fn replay<B: OrderBook>(dir: &Path) -> Result<(Engine<B>, Recovery), RecoveryError> {
    let (config, genesis) = read_instruments(dir)?;
    let (mut engine, mut recovery) = from_snapshot::<B>(dir, &config)?;
    let skip = recovery.snapshot.as_ref().map_or(0, |(seq, _)| *seq);
    let mut replayed = 0;
    let report = scan_pipelined(dir, genesis, apply_after(&mut engine, skip, &mut replayed))?;
    check_snapshot_covered(skip, &report)?;
    (recovery.replayed, recovery.journal) = (replayed, report);
    Ok((engine, recovery))
}

/// Applies to `engine` the journal's commands after sequence `skip` (the snapshot's), counting
/// them in `replayed`: what a recovery feeds to the journal scan.
fn apply_after<'a, B: OrderBook>(
    engine: &'a mut Engine<B>,
    skip: u64,
    replayed: &'a mut u64,
) -> impl FnMut(u64, &Command) + 'a {
    // Recovery needs the state, not the events: none are built.
    move |seq, cmd| {
        if seq > skip {
            engine.apply_into(cmd, &mut Discard);
            *replayed += 1;
        }
    }
}

/// Checks a journal directory (instrument file, framing, CRCs, sequence, chain) without
/// building an engine.
pub fn verify(dir: &Path) -> Result<ScanReport, RecoveryError> {
    let (_, genesis) = read_instruments(dir)?;
    Ok(scan(dir, genesis, |_, _| {})?)
}

fn from_snapshot<B: OrderBook>(
    dir: &Path,
    config: &EngineConfig,
) -> Result<(Engine<B>, Recovery), RecoveryError> {
    let found = newest_valid_snapshot::<B>(dir)?;
    let mut recovery = Recovery {
        skipped_snapshots: found.skipped.iter().map(|(p, e)| (p.clone(), e.to_string())).collect(),
        ..Recovery::default()
    };
    let engine = match found.newest {
        Some(snapshot) => {
            if snapshot.engine.instruments() != config.instruments
                || snapshot.engine.risk().config() != config.risk
            {
                return Err(RecoveryError::Inconsistent(format!(
                    "{}: the snapshot's configuration differs from the journal's",
                    snapshot.path.display()
                )));
            }
            recovery.snapshot = Some((snapshot.last_seq, snapshot.path));
            snapshot.engine
        }
        None => config.engine().map_err(|e| RecoveryError::Instruments {
            path: dir.join(INSTRUMENTS_FILE),
            reason: e.to_string(),
        })?,
    };
    Ok((engine, recovery))
}

/// A snapshot must never be ahead of the journal: the journal is synced before a snapshot is
/// written, so a gap means the journal lost records.
fn check_snapshot_covered(snapshot_seq: u64, report: &ScanReport) -> Result<(), RecoveryError> {
    if snapshot_seq > report.last_seq {
        return Err(RecoveryError::Inconsistent(format!(
            "the newest snapshot is at sequence {snapshot_seq} but the journal ends at {}: \
             the journal lost records it had acknowledged",
            report.last_seq
        )));
    }
    Ok(())
}
