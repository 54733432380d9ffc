//! Snapshots of the whole engine state, and the canonical state hash.
//!
//! Recovery is the newest valid snapshot plus the journal after the sequence it records: a
//! snapshot holds every instrument's specification and resting orders ([`EngineImage`]) and the
//! sequence number of the last command applied before it was taken.
//!
//! # The canonical state hash
//!
//! [`state_hash`] is BLAKE3 over the encoding below: the same books and orders give the same
//! hash whatever the book implementation, memory layout, platform or build. Integers are
//! little-endian; counts and lengths are `u64`; nothing comes from `Debug` output or memory.
//!
//! ```text
//! state      = "cccx state v6\n"                  the 14 ASCII bytes, naming this encoding
//!              instrument_count:u64  instrument*  in id order
//!              risk
//! instrument = id:u32  symbol_len:u64  symbol:UTF-8 bytes
//!              tick_size:i64  lot_size:u64  price_floor:opt  price_ceiling:opt
//!              max_order_qty:u64  stp:u8  resting_orders_max:u32  initial_phase:u8
//!              auction_allocation:u8  auction_price_rule:u8
//!              ladder_window_ticks:u32
//!              bid_count:u64  order*  ask_count:u64  order*   each side in priority order
//!              trades:u64  volume:u64  last_price:opt          the trading totals
//!              phase:u8                                     the current trading phase
//! risk       = checks:u8  defaults_to_suspend:u32  suspension_ns:u64
//!              account_count:u64  account*         in participant order
//! account    = participant:u32
//!              deposited:i128  available:i128  locked:i128  paid:i128  received:i128
//!              defaults_total:u32  quarter:u32  defaults_in_quarter:u32  suspended_until:u64
//!              holding_count:u64  holding*          in instrument order
//! holding    = instrument:u32  held:i128  available:i128  locked:i128  delivered:i128  bought:i128
//! opt        = 0x00 (none) | 0x01 value:i64
//! order      = order_id:u64  participant:u32  side:u8  price:i64  leaves_qty:u64
//!              filled_qty:u64  tif:u8  post_only:u8
//! codes      side: Buy 0, Sell 1; tif: Gtc 0, Day 1, Ioc 2, Fok 3;
//!            stp: None 0, CancelResting 1, CancelIncoming 2, CancelBoth 3;
//!            phase: Continuous 0, Call 1, Closed 2, CallClosed 3, Uncrossed 4;
//!            allocation: ProRata 0, TimePriority 1; price rule: Midpoint 0, Lowest 1, Highest 2;
//!            bool: 0 or 1
//! ```
//!
//! Every specification field is included, even `ladder_window_ticks`, which only affects speed:
//! the hash also says which configuration is running. The trading totals make a trade executed
//! twice visible even when the books end up alike. Changing the encoding means a new name
//! (`v2`) and new expected hashes; `tests::state_hash_is_pinned` catches an accidental change.
//!
//! # The snapshot file
//!
//! ```text
//! offset  size  field
//!      0     8  magic "CCCXSNAP"
//!      8     4  format version, u32 (1)
//!     12     8  sequence number of the last command applied, u64
//!     20     8  payload length in bytes, u64
//!     28    32  BLAKE3 of bytes 0..28 followed by the payload
//!     60     n  payload: the postcard encoding of an EngineImage
//! ```
//!
//! All integers are little-endian. The hash covers the header fields as well as the payload,
//! so a damaged sequence number is caught like a damaged order. A reader refuses an unknown
//! version, a length that disagrees with the file, a hash mismatch, a payload that does not
//! decode (or leaves bytes over), and an image no engine could hold ([`Engine::from_image`]).
//!
//! # The snapshot directory
//!
//! [`write_snapshot`] writes `snapshot-{last_seq:020}.cccxs` atomically: the bytes go to
//! `.snapshot-{last_seq:020}.cccxs.tmp` in the same directory, which is fsynced, renamed to the
//! final name, and then the directory is fsynced so that the rename itself is durable. A crash
//! leaves either no snapshot or a whole one, plus perhaps a temporary file. [`newest_valid_snapshot`]
//! reads only names of the exact form `snapshot-<20 digits>.cccxs`: temporary files and any
//! other file are ignored (neither read nor deleted). It falls back to older snapshots when a
//! newer one is damaged and returns every one it skipped, with the reason.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::book::{OrderBook, RestingOrder};
use crate::engine::{ConfigError, Engine, EngineImage};
use crate::risk::Risk;
use crate::types::{InstrumentId, InstrumentSpec, Side, StpMode, TimeInForce};

/// First bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"CCCXSNAP";
/// The snapshot format version this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 5;
/// Size of the fixed header in front of the payload.
pub const SNAPSHOT_HEADER_SIZE: usize = 60;
/// The bytes that start the state hash encoding (its name and version).
const STATE_HASH_DOMAIN: &[u8] = b"cccx state v6\n";
/// The header bytes the hash covers in front of the payload: magic, version, sequence, length.
const HASHED_HEADER_SIZE: usize = 28;

/// Why a snapshot could not be written or read. Every variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file system operation failed.
    #[error("{path}: cannot {action}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, e.g. `rename the temporary file into place`.
        action: &'static str,
        /// The operating system's error.
        error: io::Error,
    },
    /// The file ends inside its fixed header.
    #[error("{path}: snapshot truncated: {len} bytes is shorter than its header")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// The file does not start with [`SNAPSHOT_MAGIC`].
    #[error("{path}: not a cccx snapshot (wrong magic bytes)")]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// The file's format version is not one this build reads.
    #[error("{path}: snapshot format version {version} is not supported (this build reads version {SNAPSHOT_VERSION})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version the file declares.
        version: u32,
    },
    /// The header's payload length disagrees with the file.
    #[error(
        "{path}: header declares a {declared}-byte payload, the file holds {actual} bytes after the header"
    )]
    LengthMismatch {
        /// The file.
        path: PathBuf,
        /// The length in the header.
        declared: u64,
        /// The bytes actually present.
        actual: u64,
    },
    /// The BLAKE3 hash does not match the header and payload: the file is damaged.
    #[error("{path}: snapshot hash mismatch (the file is damaged)")]
    HashMismatch {
        /// The file.
        path: PathBuf,
    },
    /// The payload could not be encoded or decoded.
    #[error("{path}: snapshot payload: {error}")]
    Payload {
        /// The file.
        path: PathBuf,
        /// The postcard error.
        error: postcard::Error,
    },
    /// The payload decodes but leaves bytes over.
    #[error("{path}: snapshot payload has {count} bytes after the engine image")]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// How many bytes are left over.
        count: usize,
    },
    /// The image decodes but no engine could hold it.
    #[error("{path}: snapshot image refused: {error}")]
    Image {
        /// The file.
        path: PathBuf,
        /// Why the engine refused it.
        error: ConfigError,
    },
    /// The sequence number in the file name disagrees with the one in the header.
    #[error("{path}: file name says sequence {named}, header says {recorded}")]
    SequenceMismatch {
        /// The file.
        path: PathBuf,
        /// The sequence in the file name.
        named: u64,
        /// The sequence in the header.
        recorded: u64,
    },
}

/// A snapshot that read back whole.
pub struct ValidSnapshot<B: OrderBook> {
    /// Sequence number of the last command the engine had applied: replay the journal after it.
    pub last_seq: u64,
    /// The engine, rebuilt.
    pub engine: Engine<B>,
    /// The snapshot file.
    pub path: PathBuf,
}

/// What [`newest_valid_snapshot`] found in a directory.
#[must_use = "skipped snapshots must be reported"]
pub struct SnapshotScan<B: OrderBook> {
    /// The newest snapshot that reads back whole, if any.
    pub newest: Option<ValidSnapshot<B>>,
    /// The snapshots newer than `newest` that did not read back, newest first, each with the
    /// reason. Recovery must report them: falling back to an older snapshot is never silent.
    pub skipped: Vec<(PathBuf, SnapshotError)>,
}

/// Feeds the canonical encoding to a BLAKE3 hasher.
struct Canonical(blake3::Hasher);

impl Canonical {
    fn bytes(&mut self, b: &[u8]) {
        self.0.update(b);
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn i128(&mut self, v: i128) {
        self.bytes(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }
    fn opt(&mut self, v: Option<i64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.i64(v);
            }
        }
    }

    fn spec(&mut self, spec: &InstrumentSpec) {
        self.len(spec.symbol.len());
        self.bytes(spec.symbol.as_bytes());
        self.i64(spec.tick_size);
        self.u64(spec.lot_size);
        self.opt(spec.price_floor);
        self.opt(spec.price_ceiling);
        self.u64(spec.max_order_qty);
        self.u8(stp_code(spec.stp));
        self.u32(spec.resting_orders_max);
        self.u8(spec.initial_phase.code());
        self.u8(match spec.auction_allocation {
            crate::types::AuctionAllocation::ProRata => 0,
            crate::types::AuctionAllocation::TimePriority => 1,
        });
        self.u8(match spec.auction_price_rule {
            crate::types::AuctionPriceRule::Midpoint => 0,
            crate::types::AuctionPriceRule::Lowest => 1,
            crate::types::AuctionPriceRule::Highest => 2,
        });
        self.u32(spec.ladder_window_ticks);
    }

    fn order(&mut self, o: &RestingOrder) {
        self.u64(o.order_id.0);
        self.u32(o.participant.0);
        self.u8(side_code(o.side));
        self.i64(o.price);
        self.u64(o.leaves_qty);
        self.u64(o.filled_qty);
        self.u8(tif_code(o.tif));
        self.u8(u8::from(o.post_only));
    }

    /// One side of a book: the count, then the orders in priority order.
    fn side<B: OrderBook>(&mut self, book: &B, side: Side) {
        let mut count = 0usize;
        book.for_each_order(side, &mut |_| count += 1);
        self.len(count);
        book.for_each_order(side, &mut |o| self.order(o));
    }
    fn risk(&mut self, risk: &Risk) {
        let config = risk.config();
        self.u8(u8::from(config.checks));
        self.u32(config.defaults_to_suspend);
        self.u64(config.suspension_ns);
        let accounts = risk.accounts();
        self.len(accounts.len());
        for (participant, account) in accounts {
            self.u32(participant.0);
            let f = &account.funds;
            for v in [f.deposited, f.available, f.locked, f.paid, f.received] {
                self.i128(v);
            }
            let s = &account.standing;
            self.u32(s.defaults_total);
            self.u32(s.quarter);
            self.u32(s.defaults_in_quarter);
            self.u64(s.suspended_until);
            self.len(account.holdings.len());
            for (instrument, h) in &account.holdings {
                self.u32(instrument.0);
                for v in [h.held, h.available, h.locked, h.delivered, h.bought] {
                    self.i128(v);
                }
            }
        }
    }
}

fn side_code(side: Side) -> u8 {
    match side {
        Side::Buy => 0,
        Side::Sell => 1,
    }
}

fn tif_code(tif: TimeInForce) -> u8 {
    match tif {
        TimeInForce::Gtc => 0,
        TimeInForce::Day => 1,
        TimeInForce::Ioc => 2,
        TimeInForce::Fok => 3,
    }
}

fn stp_code(stp: StpMode) -> u8 {
    match stp {
        StpMode::None => 0,
        StpMode::CancelResting => 1,
        StpMode::CancelIncoming => 2,
        StpMode::CancelBoth => 3,
    }
}

/// The canonical state hash of an engine: BLAKE3 over the encoding in the [module
/// documentation](self). Equal for equal books and orders, whatever the book implementation.
/// Allocates only to sort the accounts by participant.
pub fn state_hash<B: OrderBook>(engine: &Engine<B>) -> [u8; 32] {
    let mut h = Canonical(blake3::Hasher::new());
    h.bytes(STATE_HASH_DOMAIN);
    let specs = engine.instruments();
    h.len(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let id = InstrumentId(i as u32);
        h.u32(id.0);
        h.spec(spec);
        if let Some(book) = engine.book(id) {
            h.side(book, Side::Buy);
            h.side(book, Side::Sell);
        }
        let totals = engine.totals(id).copied().unwrap_or_default();
        h.u64(totals.trades);
        h.u64(totals.volume);
        h.opt(totals.last_price);
        h.u8(engine.book(id).map_or(0, |b| b.phase().code()));
    }
    h.risk(engine.risk());
    *h.0.finalize().as_bytes()
}

/// Lower-case hexadecimal of `bytes` (of a [`state_hash`], say).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

/// The file name of the snapshot taken after command `last_seq`: `snapshot-{last_seq:020}.cccxs`
/// (zero-padded so that names sort like sequence numbers).
pub fn snapshot_file_name(last_seq: u64) -> String {
    format!("snapshot-{last_seq:020}.cccxs")
}

/// The sequence number a snapshot file name carries; `None` for any other name (temporary
/// files included).
fn parse_snapshot_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("snapshot-")?.strip_suffix(".cccxs")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A snapshot file's bytes: header and payload.
fn encode(path: &Path, last_seq: u64, engine_image: &EngineImage) -> Result<Vec<u8>, SnapshotError> {
    let payload = postcard::to_allocvec(engine_image)
        .map_err(|error| SnapshotError::Payload { path: path.to_path_buf(), error })?;
    let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER_SIZE + payload.len());
    bytes.extend_from_slice(&SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&last_seq.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let hash = blake3::Hasher::new().update(&bytes).update(&payload).finalize();
    bytes.extend_from_slice(hash.as_bytes());
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

/// `N` bytes of `bytes` at `offset`, if there are that many.
fn field<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    bytes.get(offset..offset.checked_add(N)?)?.try_into().ok()
}

/// Checks a snapshot file's bytes and rebuilds its engine; `path` only names the file in errors.
fn decode<B: OrderBook>(path: &Path, bytes: &[u8]) -> Result<(u64, Engine<B>), SnapshotError> {
    let path_buf = || path.to_path_buf();
    let truncated = || SnapshotError::Truncated { path: path_buf(), len: bytes.len() };
    let magic: [u8; 8] = field(bytes, 0).ok_or_else(truncated)?;
    if magic != SNAPSHOT_MAGIC {
        return Err(SnapshotError::BadMagic { path: path_buf() });
    }
    let version = u32::from_le_bytes(field(bytes, 8).ok_or_else(truncated)?);
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotError::UnsupportedVersion { path: path_buf(), version });
    }
    let last_seq = u64::from_le_bytes(field(bytes, 12).ok_or_else(truncated)?);
    let declared = u64::from_le_bytes(field(bytes, 20).ok_or_else(truncated)?);
    let hash: [u8; 32] = field(bytes, HASHED_HEADER_SIZE).ok_or_else(truncated)?;
    let (hashed_header, payload) = match (bytes.get(..HASHED_HEADER_SIZE), bytes.get(SNAPSHOT_HEADER_SIZE..))
    {
        (Some(header), Some(payload)) => (header, payload),
        _ => return Err(truncated()),
    };
    if declared != payload.len() as u64 {
        return Err(SnapshotError::LengthMismatch {
            path: path_buf(),
            declared,
            actual: payload.len() as u64,
        });
    }
    let computed = blake3::Hasher::new().update(hashed_header).update(payload).finalize();
    if *computed.as_bytes() != hash {
        return Err(SnapshotError::HashMismatch { path: path_buf() });
    }
    let (engine_image, rest) = postcard::take_from_bytes::<EngineImage>(payload)
        .map_err(|error| SnapshotError::Payload { path: path_buf(), error })?;
    if !rest.is_empty() {
        return Err(SnapshotError::TrailingBytes { path: path_buf(), count: rest.len() });
    }
    let engine =
        Engine::from_image(engine_image).map_err(|error| SnapshotError::Image { path: path_buf(), error })?;
    Ok((last_seq, engine))
}

/// Writes a snapshot of `engine`, taken after command `last_seq`, into `dir` atomically (see
/// the [module documentation](self)) and returns its path. An existing snapshot of the same
/// sequence is replaced.
pub fn write_snapshot<B: OrderBook>(
    dir: &Path,
    last_seq: u64,
    engine: &Engine<B>,
) -> Result<PathBuf, SnapshotError> {
    let name = snapshot_file_name(last_seq);
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let bytes = encode(&path, last_seq, &engine.image())?;
    if let Err(source) = write_synced(&tmp, &bytes) {
        // Best effort: the scan ignores a leftover temporary file anyway.
        let _ = fs::remove_file(&tmp);
        return Err(io_error(&tmp, "write and sync the temporary file")(source));
    }
    fs::rename(&tmp, &path).map_err(io_error(&tmp, "rename the temporary file into place"))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir, "sync the directory"))?;
    Ok(path)
}

/// Wraps an I/O error with the file and what was being done to it.
fn io_error<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |error| SnapshotError::Io { path: path.to_path_buf(), action, error }
}

/// Writes `bytes` to a new (or truncated) file at `path` and syncs it to the disk.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Reads a snapshot file: checks magic, version, length and hash, and rebuilds the engine.
/// Returns the sequence number of the last command applied and the engine. Never panics,
/// whatever the file holds.
pub fn read_snapshot<B: OrderBook>(path: &Path) -> Result<(u64, Engine<B>), SnapshotError> {
    let bytes = fs::read(path).map_err(io_error(path, "read the snapshot"))?;
    decode(path, &bytes)
}

/// The snapshot files in `dir` (names of the exact form `snapshot-<20 digits>.cccxs`) with
/// their sequence numbers, newest first.
fn list_snapshots(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir, "list the directory"))? {
        let entry = entry.map_err(io_error(dir, "list the directory"))?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_snapshot_name) {
            found.push((seq, entry.path()));
        }
    }
    found.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    Ok(found)
}

/// Finds the newest snapshot in `dir` that reads back whole, trying older ones when a newer one
/// is damaged; the damaged ones come back in [`SnapshotScan::skipped`]. Temporary files and
/// other names are ignored. `Err` only when the directory cannot be listed.
pub fn newest_valid_snapshot<B: OrderBook>(dir: &Path) -> Result<SnapshotScan<B>, SnapshotError> {
    let mut skipped = Vec::new();
    for (named, path) in list_snapshots(dir)? {
        match read_snapshot::<B>(&path) {
            Ok((recorded, _)) if recorded != named => {
                let error = SnapshotError::SequenceMismatch { path: path.clone(), named, recorded };
                skipped.push((path, error));
            }
            Ok((last_seq, engine)) => {
                return Ok(SnapshotScan { newest: Some(ValidSnapshot { last_seq, engine, path }), skipped });
            }
            Err(error) => skipped.push((path, error)),
        }
    }
    Ok(SnapshotScan { newest: None, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Book;
    use crate::message::{Command, CommandBody, NewOrder};
    use crate::reference::ReferenceBook;
    use crate::types::{OrderId, ParticipantId};

    /// Two instruments: one with a band, STP, tick and lot; one canonical and empty.
    fn specs() -> Vec<InstrumentSpec> {
        let small = |symbol| InstrumentSpec {
            resting_orders_max: 16,
            ladder_window_ticks: 64,
            ..InstrumentSpec::canonical(symbol)
        };
        vec![
            InstrumentSpec {
                tick_size: 5,
                lot_size: 10,
                price_floor: Some(1000),
                price_ceiling: Some(2000),
                max_order_qty: 1000,
                stp: StpMode::CancelResting,
                ..small("CCC-2026-COMPLIANCE")
            },
            small("CCC-2027-VOLUNTARY"),
        ]
    }

    /// A small fixed book with risk checks on: bids 1 (partly filled) and 2 (DAY, post-only) at
    /// 1500, 3 at 1495; ask 4 at 1510; participants 7 and 8 with deposits, 9 with holdings.
    fn fixed<B: OrderBook>() -> Engine<B> {
        fixed_with::<B>(true)
    }

    /// [`fixed`], with or without risk checks and accounts.
    fn fixed_with<B: OrderBook>(risk: bool) -> Engine<B> {
        let config = if risk { crate::risk::RiskConfig::ON } else { crate::risk::RiskConfig::OFF };
        let mut engine = Engine::<B>::with_risk(specs(), config).expect("valid specs");
        let accounts = if !risk {
            vec![]
        } else {
            vec![
                CommandBody::Funds { participant: ParticipantId(7), amount: 200_000 },
                CommandBody::Funds { participant: ParticipantId(8), amount: 50_000 },
                CommandBody::Holdings {
                    participant: ParticipantId(9),
                    instrument: InstrumentId(0),
                    qty: 100,
                },
            ]
        };
        for body in accounts {
            engine.apply_vec(&Command { ts_ns: 1, body });
        }
        let orders = [
            NewOrder::limit(1, 7, 0, Side::Buy, TimeInForce::Gtc, 1500, 30),
            NewOrder { post_only: true, ..NewOrder::limit(2, 8, 0, Side::Buy, TimeInForce::Day, 1500, 20) },
            NewOrder::limit(3, 7, 0, Side::Buy, TimeInForce::Gtc, 1495, 40),
            NewOrder::limit(4, 9, 0, Side::Sell, TimeInForce::Gtc, 1510, 50),
            NewOrder::limit(5, 9, 0, Side::Sell, TimeInForce::Ioc, 1500, 10),
        ];
        for (ts_ns, order) in (1..).zip(orders) {
            engine.apply_vec(&Command { ts_ns, body: CommandBody::New(order) });
        }
        engine.check_invariants().expect("invariants");
        engine
    }

    /// Any change to the encoding changes this: bump the domain name (`v2`) when it is meant.
    /// The value was cross-checked against a separate encoder written from the module
    /// documentation alone (Python, with the `blake3` package).
    #[test]
    fn state_hash_is_pinned() {
        const PINNED: &str = "efad2c7fae10239347013ed201a71f462a2ca6fa9745fa2a338b75dfabf026ab";
        assert_eq!(hex(&state_hash(&fixed::<Book>())), PINNED);
        assert_eq!(hex(&state_hash(&fixed::<ReferenceBook>())), PINNED);
    }

    /// Each field of the specification and of a resting order, and the priority order, reaches
    /// the hash.
    #[test]
    fn every_field_changes_the_hash() {
        let base = fixed_with::<Book>(false).image();
        type Change = fn(&mut EngineImage);
        let changes: [(&str, Change); 25] = [
            ("symbol", |i| i.instruments[0].spec.symbol.push('X')),
            ("tick_size", |i| i.instruments[0].spec.tick_size = 1),
            ("lot_size", |i| i.instruments[0].spec.lot_size = 5),
            ("price_floor", |i| i.instruments[0].spec.price_floor = Some(995)),
            ("price_ceiling", |i| i.instruments[0].spec.price_ceiling = None),
            ("max_order_qty", |i| i.instruments[0].spec.max_order_qty = 999),
            ("stp", |i| i.instruments[0].spec.stp = StpMode::CancelBoth),
            ("resting_orders_max", |i| i.instruments[0].spec.resting_orders_max = 17),
            ("ladder_window_ticks", |i| i.instruments[0].spec.ladder_window_ticks = 128),
            ("initial_phase", |i| i.instruments[0].spec.initial_phase = crate::types::Phase::Call),
            ("phase", |i| i.instruments[0].phase = crate::types::Phase::Closed),
            ("auction_allocation", |i| {
                i.instruments[0].spec.auction_allocation = crate::types::AuctionAllocation::TimePriority
            }),
            ("auction_price_rule", |i| {
                i.instruments[0].spec.auction_price_rule = crate::types::AuctionPriceRule::Highest
            }),
            ("order_id", |i| i.instruments[0].bids[2].order_id = OrderId(30)),
            ("participant", |i| i.instruments[0].bids[2].participant = ParticipantId(6)),
            ("price", |i| i.instruments[0].bids[2].price = 1490),
            ("leaves_qty", |i| i.instruments[0].bids[2].leaves_qty = 50),
            ("filled_qty", |i| i.instruments[0].bids[2].filled_qty = 1),
            ("tif", |i| i.instruments[0].bids[2].tif = TimeInForce::Day),
            ("post_only", |i| i.instruments[0].bids[2].post_only = true),
            ("side", |i| {
                let mut ask = i.instruments[0].asks.remove(0);
                ask.side = Side::Buy;
                i.instruments[1].bids.push(ask);
            }),
            ("priority", |i| i.instruments[0].bids.swap(0, 1)),
            ("trades", |i| i.instruments[0].totals.trades += 1),
            ("volume", |i| i.instruments[0].totals.volume += 1),
            ("last_price", |i| i.instruments[0].totals.last_price = Some(1505)),
        ];
        let mut seen = vec![hex(&state_hash(&Engine::<Book>::from_image(base.clone()).expect("base")))];
        for (what, change) in changes {
            let mut image = base.clone();
            change(&mut image);
            let engine = Engine::<Book>::from_image(image).unwrap_or_else(|e| panic!("{what}: {e}"));
            let h = hex(&state_hash(&engine));
            assert!(!seen.contains(&h), "changing {what} does not change the hash");
            seen.push(h);
        }
    }

    /// Each risk setting and account field reaches the hash (each change keeps the accounts'
    /// invariants, so that the image still loads).
    #[test]
    fn every_account_field_changes_the_hash() {
        use crate::risk::Account;
        let base = fixed::<Book>().image();
        fn account(i: &mut EngineImage, p: u32) -> &mut Account {
            &mut i.risk.accounts.iter_mut().find(|(q, _)| q.0 == p).expect("account").1
        }
        fn holding(i: &mut EngineImage) -> &mut crate::risk::Holding {
            account(i, 9).holdings.get_mut(&InstrumentId(0)).expect("holding")
        }
        type Change = fn(&mut EngineImage);
        let changes: [(&str, Change); 13] = [
            ("defaults_to_suspend", |i| i.risk.config.defaults_to_suspend = 2),
            ("suspension_ns", |i| i.risk.config.suspension_ns += 1),
            ("deposited", |i| {
                let f = &mut account(i, 8).funds;
                (f.deposited, f.available) = (f.deposited + 1, f.available + 1);
            }),
            ("paid", |i| {
                let f = &mut account(i, 8).funds;
                (f.deposited, f.paid) = (f.deposited + 1, f.paid + 1);
            }),
            ("received", |i| account(i, 8).funds.received += 1),
            ("held", |i| {
                let h = holding(i);
                (h.held, h.available) = (h.held + 1, h.available + 1);
            }),
            ("delivered", |i| {
                let h = holding(i);
                (h.held, h.delivered) = (h.held + 1, h.delivered + 1);
            }),
            ("bought", |i| holding(i).bought += 1),
            ("holding instrument", |i| {
                let h = account(i, 7).holdings.remove(&InstrumentId(0)).expect("holding");
                account(i, 7).holdings.insert(InstrumentId(1), h);
            }),
            ("defaults_total", |i| account(i, 8).standing.defaults_total += 1),
            ("quarter", |i| account(i, 8).standing.quarter += 1),
            ("defaults_in_quarter", |i| account(i, 8).standing.defaults_in_quarter += 1),
            ("suspended_until", |i| account(i, 8).standing.suspended_until += 1),
        ];
        let mut seen = vec![hex(&state_hash(&Engine::<Book>::from_image(base.clone()).expect("base")))];
        for (what, change) in changes {
            let mut image = base.clone();
            change(&mut image);
            let engine = Engine::<Book>::from_image(image).unwrap_or_else(|e| panic!("{what}: {e}"));
            let h = hex(&state_hash(&engine));
            assert!(!seen.contains(&h), "changing {what} does not change the hash");
            seen.push(h);
        }
        let mut inconsistent = base.clone();
        account(&mut inconsistent, 8).funds.available += 1;
        assert!(Engine::<Book>::from_image(inconsistent).is_err(), "funds that do not add up are refused");
        let mut inconsistent = base;
        holding(&mut inconsistent).locked += 1;
        holding(&mut inconsistent).available -= 1;
        assert!(
            Engine::<Book>::from_image(inconsistent).is_err(),
            "locks the orders do not hold are refused"
        );
    }

    #[test]
    fn hex_is_lower_case_and_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn snapshot_names_parse_back() {
        assert_eq!(snapshot_file_name(42), "snapshot-00000000000000000042.cccxs");
        assert_eq!(parse_snapshot_name(&snapshot_file_name(u64::MAX)), Some(u64::MAX));
        for other in [
            ".snapshot-00000000000000000042.cccxs.tmp",
            "snapshot-00000000000000000042.cccxs.tmp",
            "snapshot-42.cccxs",
            "snapshot-+0000000000000000042.cccxs",
            "snapshot-99999999999999999999.cccxs",
            "notes.txt",
        ] {
            assert_eq!(parse_snapshot_name(other), None, "{other}");
        }
    }

    #[test]
    fn file_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = fixed::<Book>();
        let path = write_snapshot(dir.path(), 42, &engine).expect("write");
        assert_eq!(path, dir.path().join("snapshot-00000000000000000042.cccxs"));
        let names: Vec<_> =
            fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![path.file_name().expect("name").to_owned()], "no temporary file is left");
        let (seq, fast) = read_snapshot::<Book>(&path).expect("read");
        assert_eq!(seq, 42);
        assert_eq!(fast.image(), engine.image());
        assert_eq!(state_hash(&fast), state_hash(&engine));
        let (_, naive) = read_snapshot::<ReferenceBook>(&path).expect("read as reference");
        assert_eq!(state_hash(&naive), state_hash(&engine));
        // Rewriting the same sequence replaces the file.
        write_snapshot(dir.path(), 42, &naive).expect("rewrite");
        assert_eq!(read_snapshot::<Book>(&path).expect("reread").0, 42);
    }

    /// Every truncation, every flipped byte and an extra byte give an error naming the file,
    /// never a panic or a wrong engine.
    #[test]
    fn damaged_files_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let good = fs::read(write_snapshot(dir.path(), 7, &fixed::<Book>()).expect("write")).expect("read");
        let path = dir.path().join("damaged");
        let refused = |bytes: &[u8], what: &str| {
            fs::write(&path, bytes).expect("write damaged");
            match read_snapshot::<Book>(&path) {
                Ok(_) => panic!("{what}: accepted"),
                Err(e) => assert!(e.to_string().contains(&path.display().to_string()), "{what}: {e}"),
            }
        };
        for len in 0..good.len() {
            refused(&good[..len], &format!("truncated to {len}"));
        }
        for i in 0..good.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut bytes = good.clone();
                bytes[i] ^= mask;
                refused(&bytes, &format!("byte {i} ^ {mask:#x}"));
            }
        }
        let mut longer = good.clone();
        longer.push(0);
        refused(&longer, "one byte more");
    }

    /// A payload with a valid hash that still does not describe a usable engine.
    #[test]
    fn well_hashed_nonsense_is_refused() {
        let path = Path::new("made-up.cccxs");
        let mut image = fixed::<Book>().image();
        image.instruments[0].bids[0].leaves_qty = 0;
        let bytes = encode(path, 1, &image).expect("encode");
        assert!(matches!(decode::<Book>(path, &bytes), Err(SnapshotError::Image { .. })));
        let mut bytes = encode(path, 1, &fixed::<Book>().image()).expect("encode");
        let payload_len = bytes.len() - SNAPSHOT_HEADER_SIZE + 1;
        bytes.push(0);
        bytes[20..28].copy_from_slice(&(payload_len as u64).to_le_bytes());
        let hash = blake3::Hasher::new().update(&bytes[..28]).update(&bytes[60..]).finalize();
        bytes[28..60].copy_from_slice(hash.as_bytes());
        assert!(matches!(decode::<Book>(path, &bytes), Err(SnapshotError::TrailingBytes { count: 1, .. })));
    }

    #[test]
    fn unknown_version_is_named() {
        let mut bytes = encode(Path::new("x"), 1, &fixed::<Book>().image()).expect("encode");
        // Version 3: the format before instruments had auction rules.
        bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
        let err = decode::<Book>(Path::new("/snapshots/v3.cccxs"), &bytes).err().expect("refused");
        assert_eq!(
            err.to_string(),
            "/snapshots/v3.cccxs: snapshot format version 3 is not supported (this build reads version 5)"
        );
    }

    /// Recovery takes the newest snapshot that reads back, reports every newer one it skipped,
    /// and ignores temporary files and other names.
    #[test]
    fn newest_valid_falls_back_and_reports() {
        let dir = tempfile::tempdir().expect("temp dir");
        let scan = newest_valid_snapshot::<Book>(dir.path()).expect("scan empty");
        assert!(scan.newest.is_none() && scan.skipped.is_empty());
        let engine = fixed::<Book>();
        write_snapshot(dir.path(), 5, &Engine::<Book>::new(specs()).expect("empty")).expect("write 5");
        let nine = write_snapshot(dir.path(), 9, &engine).expect("write 9");
        let twelve = write_snapshot(dir.path(), 12, &engine).expect("write 12");
        let mut bytes = fs::read(&twelve).expect("read 12");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&twelve, bytes).expect("damage 12");
        let ten = dir.path().join(snapshot_file_name(10));
        fs::copy(&nine, &ten).expect("copy 9 as 10");
        for junk in [".snapshot-00000000000000000099.cccxs.tmp", "snapshot-99.cccxs", "notes.txt"] {
            fs::write(dir.path().join(junk), b"garbage").expect("junk");
        }
        let scan = newest_valid_snapshot::<Book>(dir.path()).expect("scan");
        let newest = scan.newest.expect("a valid snapshot");
        assert_eq!((newest.last_seq, &newest.path), (9, &nine));
        assert_eq!(state_hash(&newest.engine), state_hash(&engine));
        let skipped: Vec<_> = scan.skipped.iter().map(|(p, e)| (p.clone(), e.to_string())).collect();
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert_eq!(skipped[0].0, twelve);
        assert!(matches!(scan.skipped[0].1, SnapshotError::HashMismatch { .. }));
        assert_eq!(skipped[1].0, ten);
        assert!(matches!(scan.skipped[1].1, SnapshotError::SequenceMismatch { named: 10, recorded: 9, .. }));
    }

    #[test]
    fn missing_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("nope");
        let err = newest_valid_snapshot::<Book>(&missing).err().expect("refused");
        assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
        assert!(write_snapshot(&missing, 1, &fixed::<Book>()).is_err());
    }
}
