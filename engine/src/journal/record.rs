//! The on-disk layout of a journal: segment header and 64-byte records, little-endian.
//!
//! ```text
//! segment header (64 bytes)
//!   0  magic "CCCXJRNL"      8  format version u32   12  header length u32 (64)
//!  16  segment number u64    24  first sequence u64  32  chain hash at segment start [32]
//! record (64 bytes), at offset 64 + 64 * i
//!   0  length u32: 64, written last (0 = never written)
//!   4  CRC32C u32 of bytes 0..4 and 8..64
//!   8  sequence u64 (a seal carries the sequence of the last command it covers)
//!  16  payload (48 bytes)
//! command payload
//!  16 kind u8 (1 NEW, 2 CANCEL, 3 AMEND, 4 MASS CANCEL, 5 EXPIRE DAY, 6 UNCROSS, 7 SET PHASE,
//!     8 FUNDS, 9 HOLDINGS, 10 SHORTFALL)  17 side u8 (0 buy, 1 sell)
//!  18 order type u8 (0 limit, 1 market)  19 tif u8 (0 GTC, 1 DAY, 2 IOC, 3 FOK)
//!  20 flags u8 (bit 0 post-only)  21 mass-cancel scope u8 (0 instrument, 1 participant,
//!     2 participant in instrument), or the phase of a SET PHASE (`Phase::code`)  22 reserved [2]  24 instrument u32  28 participant u32
//!  32 order id u64  40 price i64 (the signed amount of FUNDS and quantity of HOLDINGS)
//!  48 quantity u64  56 time ns u64
//! seal payload
//!  16 kind u8 (255)  17 reserved [3]  20 commands covered u32  24 chain hash [32]  56 reserved [8]
//! ```
//!
//! A seal's chain hash is BLAKE3(previous chain hash ‖ BLAKE3(the bytes of the command records
//! since the previous seal)); the chain starts from BLAKE3 of the journal's instrument file.

use zerocopy::little_endian::{I64, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::message::{Command, CommandBody, MassCancelScope, NewOrder};
use crate::types::{InstrumentId, OrderId, OrderType, ParticipantId, Phase, Side, TimeInForce};

/// Magic number at the start of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"CCCXJRNL";
/// The journal format this build writes and reads.
pub const FORMAT_VERSION: u32 = 4;
/// Size of a segment header and of every record.
pub const RECORD_BYTES: usize = 64;
/// Size of the segment header.
pub const HEADER_BYTES: usize = 64;

const KIND_NEW: u8 = 1;
const KIND_CANCEL: u8 = 2;
const KIND_AMEND: u8 = 3;
const KIND_MASS_CANCEL: u8 = 4;
const KIND_EXPIRE_DAY: u8 = 5;
const KIND_UNCROSS: u8 = 6;
const KIND_SET_PHASE: u8 = 7;
const KIND_FUNDS: u8 = 8;
const KIND_HOLDINGS: u8 = 9;
const KIND_SHORTFALL: u8 = 10;
/// Record kind of a seal.
pub const KIND_SEAL: u8 = 255;

/// A segment header.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct SegmentHeader {
    pub magic: [u8; 8],
    pub version: U32,
    pub header_bytes: U32,
    pub segment_no: U64,
    pub first_seq: U64,
    pub chain_start: [u8; 32],
}

/// A record as it lies in the file.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct RecordBytes {
    pub len: U32,
    pub crc: U32,
    pub seq: U64,
    pub payload: [u8; 48],
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
#[repr(C)]
struct CommandPayload {
    kind: u8,
    side: u8,
    order_type: u8,
    tif: u8,
    flags: u8,
    scope: u8,
    reserved: [u8; 2],
    instrument: U32,
    participant: U32,
    order_id: U64,
    price: I64,
    qty: U64,
    ts_ns: U64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
struct SealPayload {
    kind: u8,
    reserved: [u8; 3],
    commands: U32,
    chain: [u8; 32],
    reserved2: [u8; 8],
}

/// What a valid record holds.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A sequenced command.
    Command(Command),
    /// The end of a block: the chain hash over the commands since the previous seal.
    Seal {
        /// Commands covered.
        commands: u32,
        /// Chain hash after them.
        chain: [u8; 32],
    },
}

impl RecordBytes {
    /// The CRC the record should carry.
    #[inline]
    pub fn expected_crc(&self) -> u32 {
        record_crc(self)
    }

    /// A complete record: payload, sequence, CRC and length.
    pub fn new(seq: u64, payload: [u8; 48]) -> Self {
        let mut r =
            RecordBytes { len: U32::new(RECORD_BYTES as u32), crc: U32::new(0), seq: U64::new(seq), payload };
        r.crc = U32::new(r.expected_crc());
        r
    }

    /// Decodes the payload of a record whose framing and CRC were checked.
    // Inlined into the scan loop: as a call, the command was built on the stack with narrow
    // stores and copied out with wide loads (a store-forwarding stall on every record).
    #[inline(always)]
    pub fn decode(&self) -> Result<Record, String> {
        // Read in place (no copy of the payload first): the fields are loaded straight from
        // the record, which may be the mapped segment itself.
        if self.payload[0] == KIND_SEAL {
            let s = SealPayload::ref_from_bytes(&self.payload).map_err(|_| "short seal")?;
            return Ok(Record::Seal { commands: s.commands.get(), chain: s.chain });
        }
        let p = CommandPayload::ref_from_bytes(&self.payload).map_err(|_| "short payload")?;
        decode_command(p).map(Record::Command)
    }
}

/// CRC32C of a record's bytes 0..4 and 8..64 (everything but the CRC itself): the same value
/// as `crc32c_append(crc32c(&bytes[0..4]), &bytes[8..])`.
#[inline]
pub fn record_crc(rec: &RecordBytes) -> u32 {
    crc_of(rec.len.get(), rec.seq.get(), &payload_words(&rec.payload))
}

/// A payload as six little-endian words.
#[inline]
pub fn payload_words(payload: &[u8; 48]) -> [u64; 6] {
    let mut words = [0u64; 6];
    for (word, bytes) in words.iter_mut().zip(payload.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        *word = u64::from_le_bytes(b);
    }
    words
}

/// The CRC of a record with this length, sequence and payload (as words): computed from the
/// values themselves, without the general routine's alignment prologue and epilogue and
/// without reading back bytes just written. With SSE4.2 (detected at run time: the build does
/// not assume it) one `crc32` of the length and seven of 8-byte words; otherwise the `crc32c`
/// crate's software path.
#[inline]
pub fn crc_of(len: u32, seq: u64, payload: &[u64; 6]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU has SSE4.2, checked just above.
            return unsafe { crc_of_sse42(len, seq, payload) };
        }
    }
    let mut bytes = [0u8; RECORD_BYTES - 4];
    bytes[..4].copy_from_slice(&len.to_le_bytes());
    bytes[4..12].copy_from_slice(&seq.to_le_bytes());
    for (i, word) in payload.iter().enumerate() {
        bytes[12 + 8 * i..20 + 8 * i].copy_from_slice(&word.to_le_bytes());
    }
    crc32c::crc32c(&bytes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc_of_sse42(len: u32, seq: u64, payload: &[u64; 6]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64};
    let mut crc = u64::from(_mm_crc32_u32(!0, len));
    crc = _mm_crc32_u64(crc, seq);
    for word in payload {
        crc = _mm_crc32_u64(crc, *word);
    }
    !(crc as u32)
}

/// The payload of a seal.
pub fn seal_payload(commands: u32, chain: [u8; 32]) -> [u8; 48] {
    let s = SealPayload {
        kind: KIND_SEAL,
        reserved: [0; 3],
        commands: U32::new(commands),
        chain,
        reserved2: [0; 8],
    };
    let mut out = [0u8; 48];
    out.copy_from_slice(s.as_bytes());
    out
}

/// The payload of a command.
pub fn command_payload(cmd: &Command) -> [u8; 48] {
    let mut out = [0u8; 48];
    for (bytes, word) in out.chunks_exact_mut(8).zip(command_words(cmd)) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// The payload of a command as six little-endian words ([`CommandPayload`]'s layout, built in
/// registers: the writer computes the CRC from them and stores each word once).
#[inline]
pub fn command_words(cmd: &Command) -> [u64; 6] {
    // Word 0: kind, side, order type, tif, flags, scope (bytes 16..22 of the record); word 1:
    // instrument, participant; then order id, price, quantity, time.
    let head = |kind: u8, side: u8, order_type: u8, tif: u8, flags: u8, scope: u8| {
        u64::from_le_bytes([kind, side, order_type, tif, flags, scope, 0, 0])
    };
    let ids = |instrument: u32, participant: u32| u64::from(instrument) | u64::from(participant) << 32;
    let (w0, w1, order_id, price, qty) = match cmd.body {
        CommandBody::New(o) => {
            let tif = match o.tif {
                TimeInForce::Gtc => 0,
                TimeInForce::Day => 1,
                TimeInForce::Ioc => 2,
                TimeInForce::Fok => 3,
            };
            let market = u8::from(o.order_type == OrderType::Market);
            let w0 = head(KIND_NEW, side_code(o.side), market, tif, u8::from(o.post_only), 0);
            (w0, ids(o.instrument.0, o.participant.0), o.order_id.0, o.price, o.qty)
        }
        CommandBody::Cancel { instrument, order_id, participant } => {
            (head(KIND_CANCEL, 0, 0, 0, 0, 0), ids(instrument.0, participant.0), order_id.0, 0, 0)
        }
        CommandBody::Amend { instrument, order_id, participant, price, qty } => {
            (head(KIND_AMEND, 0, 0, 0, 0, 0), ids(instrument.0, participant.0), order_id.0, price, qty)
        }
        CommandBody::MassCancel(scope) => {
            let (code, participant, instrument) = match scope {
                MassCancelScope::Instrument(i) => (0, 0, i.0),
                MassCancelScope::Participant(q) => (1, q.0, 0),
                MassCancelScope::ParticipantInInstrument(q, i) => (2, q.0, i.0),
            };
            (head(KIND_MASS_CANCEL, 0, 0, 0, 0, code), ids(instrument, participant), 0, 0, 0)
        }
        CommandBody::ExpireDay { instrument } => {
            (head(KIND_EXPIRE_DAY, 0, 0, 0, 0, 0), ids(instrument.0, 0), 0, 0, 0)
        }
        CommandBody::Uncross { instrument } => {
            (head(KIND_UNCROSS, 0, 0, 0, 0, 0), ids(instrument.0, 0), 0, 0, 0)
        }
        CommandBody::SetPhase { instrument, phase } => {
            (head(KIND_SET_PHASE, 0, 0, 0, 0, phase.code()), ids(instrument.0, 0), 0, 0, 0)
        }
        CommandBody::Funds { participant, amount } => {
            (head(KIND_FUNDS, 0, 0, 0, 0, 0), ids(0, participant.0), 0, amount, 0)
        }
        CommandBody::Holdings { participant, instrument, qty } => {
            (head(KIND_HOLDINGS, 0, 0, 0, 0, 0), ids(instrument.0, participant.0), 0, qty, 0)
        }
        CommandBody::Shortfall { instrument, participant } => {
            (head(KIND_SHORTFALL, 0, 0, 0, 0, 0), ids(instrument.0, participant.0), 0, 0, 0)
        }
    };
    [w0, w1, order_id, price as u64, qty, cmd.ts_ns]
}

fn side_code(side: Side) -> u8 {
    match side {
        Side::Buy => 0,
        Side::Sell => 1,
    }
}

#[inline(always)]
fn decode_command(p: &CommandPayload) -> Result<Command, String> {
    let instrument = InstrumentId(p.instrument.get());
    let participant = ParticipantId(p.participant.get());
    let order_id = OrderId(p.order_id.get());
    let body = match p.kind {
        KIND_NEW => CommandBody::New(NewOrder {
            order_id,
            participant,
            instrument,
            side: match p.side {
                0 => Side::Buy,
                1 => Side::Sell,
                other => return Err(format!("unknown side code {other}")),
            },
            order_type: match p.order_type {
                0 => OrderType::Limit,
                1 => OrderType::Market,
                other => return Err(format!("unknown order type code {other}")),
            },
            tif: match p.tif {
                0 => TimeInForce::Gtc,
                1 => TimeInForce::Day,
                2 => TimeInForce::Ioc,
                3 => TimeInForce::Fok,
                other => return Err(format!("unknown time-in-force code {other}")),
            },
            price: p.price.get(),
            qty: p.qty.get(),
            post_only: p.flags & 1 != 0,
        }),
        KIND_CANCEL => CommandBody::Cancel { instrument, order_id, participant },
        KIND_AMEND => {
            CommandBody::Amend { instrument, order_id, participant, price: p.price.get(), qty: p.qty.get() }
        }
        KIND_MASS_CANCEL => CommandBody::MassCancel(match p.scope {
            0 => MassCancelScope::Instrument(instrument),
            1 => MassCancelScope::Participant(participant),
            2 => MassCancelScope::ParticipantInInstrument(participant, instrument),
            other => return Err(format!("unknown mass-cancel scope {other}")),
        }),
        KIND_EXPIRE_DAY => CommandBody::ExpireDay { instrument },
        KIND_UNCROSS => CommandBody::Uncross { instrument },
        KIND_SET_PHASE => CommandBody::SetPhase {
            instrument,
            phase: Phase::from_code(p.scope).ok_or_else(|| format!("unknown phase code {}", p.scope))?,
        },
        KIND_FUNDS => CommandBody::Funds { participant, amount: p.price.get() },
        KIND_HOLDINGS => CommandBody::Holdings { participant, instrument, qty: p.price.get() },
        KIND_SHORTFALL => CommandBody::Shortfall { instrument, participant },
        other => return Err(format!("unknown record kind {other}")),
    };
    Ok(Command { ts_ns: p.ts_ns.get(), body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_fixed() {
        assert_eq!(std::mem::size_of::<SegmentHeader>(), HEADER_BYTES);
        assert_eq!(std::mem::size_of::<RecordBytes>(), RECORD_BYTES);
        assert_eq!(std::mem::size_of::<CommandPayload>(), 48);
        assert_eq!(std::mem::size_of::<SealPayload>(), 48);
    }

    #[test]
    fn every_command_round_trips() {
        let new = NewOrder {
            post_only: true,
            ..NewOrder::limit(7, 3, 2, Side::Sell, TimeInForce::Day, 19_999, 40)
        };
        let bodies = [
            CommandBody::New(new),
            CommandBody::New(NewOrder::market(8, 1, 0, Side::Buy, 5)),
            CommandBody::New(NewOrder { tif: TimeInForce::Fok, ..NewOrder::market(9, 1, 0, Side::Buy, 5) }),
            CommandBody::Cancel {
                instrument: InstrumentId(1),
                order_id: OrderId(u64::MAX),
                participant: ParticipantId(4),
            },
            CommandBody::Amend {
                instrument: InstrumentId(0),
                order_id: OrderId(3),
                participant: ParticipantId(2),
                price: -5,
                qty: 9,
            },
            CommandBody::MassCancel(MassCancelScope::Instrument(InstrumentId(3))),
            CommandBody::MassCancel(MassCancelScope::Participant(ParticipantId(3))),
            CommandBody::MassCancel(MassCancelScope::ParticipantInInstrument(
                ParticipantId(3),
                InstrumentId(1),
            )),
            CommandBody::ExpireDay { instrument: InstrumentId(2) },
            CommandBody::Uncross { instrument: InstrumentId(1) },
            CommandBody::SetPhase { instrument: InstrumentId(1), phase: Phase::CallClosed },
            CommandBody::Funds { participant: ParticipantId(9), amount: -1_000_000_000_000 },
            CommandBody::Holdings {
                participant: ParticipantId(9),
                instrument: InstrumentId(2),
                qty: i64::MIN,
            },
            CommandBody::Shortfall { instrument: InstrumentId(1), participant: ParticipantId(u32::MAX) },
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            let cmd = Command { ts_ns: 1_700_000_000_000_000_000 + i as u64, body };
            assert_eq!(command_payload(&cmd), payload_by_struct(&cmd), "{cmd:?}");
            let record = RecordBytes::new(i as u64 + 1, command_payload(&cmd));
            assert_eq!(record.crc.get(), record.expected_crc());
            assert_eq!(record.decode(), Ok(Record::Command(cmd)));
        }
        let seal = RecordBytes::new(9, seal_payload(63, [7; 32]));
        assert_eq!(seal.decode(), Ok(Record::Seal { commands: 63, chain: [7; 32] }));
    }

    /// The struct-based encoding the words replaced, kept as the oracle of the layout.
    fn payload_by_struct(cmd: &Command) -> [u8; 48] {
        let mut p = CommandPayload { ts_ns: U64::new(cmd.ts_ns), ..CommandPayload::default() };
        match cmd.body {
            CommandBody::New(o) => {
                p.kind = KIND_NEW;
                p.side = side_code(o.side);
                p.order_type = u8::from(o.order_type == OrderType::Market);
                p.tif = match o.tif {
                    TimeInForce::Gtc => 0,
                    TimeInForce::Day => 1,
                    TimeInForce::Ioc => 2,
                    TimeInForce::Fok => 3,
                };
                p.flags = u8::from(o.post_only);
                (p.instrument, p.participant) = (U32::new(o.instrument.0), U32::new(o.participant.0));
                (p.order_id, p.price, p.qty) = (U64::new(o.order_id.0), I64::new(o.price), U64::new(o.qty));
            }
            CommandBody::Cancel { instrument, order_id, participant } => {
                p.kind = KIND_CANCEL;
                (p.instrument, p.participant, p.order_id) =
                    (U32::new(instrument.0), U32::new(participant.0), U64::new(order_id.0));
            }
            CommandBody::Amend { instrument, order_id, participant, price, qty } => {
                p.kind = KIND_AMEND;
                (p.instrument, p.participant, p.order_id) =
                    (U32::new(instrument.0), U32::new(participant.0), U64::new(order_id.0));
                (p.price, p.qty) = (I64::new(price), U64::new(qty));
            }
            CommandBody::MassCancel(scope) => {
                p.kind = KIND_MASS_CANCEL;
                let (code, participant, instrument) = match scope {
                    MassCancelScope::Instrument(i) => (0, 0, i.0),
                    MassCancelScope::Participant(q) => (1, q.0, 0),
                    MassCancelScope::ParticipantInInstrument(q, i) => (2, q.0, i.0),
                };
                (p.scope, p.participant, p.instrument) = (code, U32::new(participant), U32::new(instrument));
            }
            CommandBody::ExpireDay { instrument } => {
                (p.kind, p.instrument) = (KIND_EXPIRE_DAY, U32::new(instrument.0))
            }
            CommandBody::Uncross { instrument } => {
                (p.kind, p.instrument) = (KIND_UNCROSS, U32::new(instrument.0))
            }
            CommandBody::SetPhase { instrument, phase } => {
                (p.kind, p.instrument, p.scope) = (KIND_SET_PHASE, U32::new(instrument.0), phase.code())
            }
            CommandBody::Funds { participant, amount } => {
                (p.kind, p.participant, p.price) = (KIND_FUNDS, U32::new(participant.0), I64::new(amount))
            }
            CommandBody::Holdings { participant, instrument, qty } => {
                p.kind = KIND_HOLDINGS;
                (p.participant, p.instrument, p.price) =
                    (U32::new(participant.0), U32::new(instrument.0), I64::new(qty));
            }
            CommandBody::Shortfall { instrument, participant } => {
                (p.kind, p.participant, p.instrument) =
                    (KIND_SHORTFALL, U32::new(participant.0), U32::new(instrument.0))
            }
        }
        let mut out = [0u8; 48];
        out.copy_from_slice(p.as_bytes());
        out
    }

    #[test]
    fn record_crc_is_the_crc32c_of_the_record_without_its_crc() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..1000 {
            let mut bytes = [0u8; RECORD_BYTES];
            for b in &mut bytes {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                *b = (state >> 56) as u8;
            }
            let rec = RecordBytes::read_from_bytes(&bytes).unwrap();
            let general = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..4]), &bytes[8..]);
            assert_eq!(record_crc(&rec), general);
        }
    }

    #[test]
    fn crc_covers_length_sequence_and_payload() {
        let cmd = Command { ts_ns: 1, body: CommandBody::ExpireDay { instrument: InstrumentId(0) } };
        let good = RecordBytes::new(1, command_payload(&cmd));
        for byte in (0..4).chain(8..RECORD_BYTES) {
            let mut bytes = [0u8; RECORD_BYTES];
            bytes.copy_from_slice(good.as_bytes());
            bytes[byte] ^= 0x10;
            let bad = RecordBytes::read_from_bytes(&bytes).unwrap();
            assert_ne!(bad.crc.get(), bad.expected_crc(), "byte {byte}");
        }
    }
}
