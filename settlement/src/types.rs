//! Registry values: identifiers, timestamps, serial blocks, requests and answers.
//!
//! Every value is immutable data with `serde` derives, so an answer can be stored beside its
//! request id and replayed byte for byte.

use std::fmt;

use cccx_engine::types::{InstrumentId, Qty};
use serde::{Deserialize, Serialize};

use crate::error::RegistryError;

/// The longest request id or account id, in bytes.
pub const ID_LENGTH_MAX: usize = 64;
/// The largest quantity one request may issue or transfer.
pub const REQUEST_QTY_MAX: Qty = 1_000_000_000_000;
/// The largest serial number: serials, and the next serial to issue, are stored as signed
/// 64-bit integers.
pub const SERIAL_MAX: u64 = i64::MAX as u64 - 1;

fn check_id(id: &str) -> Result<(), RegistryError> {
    let printable = id.bytes().all(|b| b.is_ascii_graphic());
    if id.is_empty() || id.len() > ID_LENGTH_MAX || !printable {
        return Err(RegistryError::InvalidId(id.chars().take(ID_LENGTH_MAX + 1).collect()));
    }
    Ok(())
}

/// A client-made request id: 1 to [`ID_LENGTH_MAX`] printable ASCII characters, no spaces.
///
/// The id of a transfer proposal is also the transfer's id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(String);

impl RequestId {
    /// A request id, if `id` is well formed.
    pub fn new(id: impl Into<String>) -> Result<RequestId, RegistryError> {
        let id = id.into();
        check_id(&id)?;
        Ok(RequestId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A registry account (a participant's holding account): 1 to [`ID_LENGTH_MAX`] printable
/// ASCII characters, no spaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccountId(String);

impl AccountId {
    /// An account id, if `id` is well formed.
    pub fn new(id: impl Into<String>) -> Result<AccountId, RegistryError> {
        let id = id.into();
        check_id(&id)?;
        Ok(AccountId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The year a unit's emission reduction took place. Older vintages leave an account first.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Vintage(pub u16);

impl fmt::Display for Vintage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A point in time: nanoseconds since the Unix epoch, UTC. The caller passes every time in;
/// the ledger never reads a clock.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Parses an RFC 3339 time such as `2026-05-01T15:00:00Z` or `2026-05-01T20:30:00.5+05:30`.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, RegistryError> {
        let format = &time::format_description::well_known::Rfc3339;
        let parsed = time::OffsetDateTime::parse(text, format)
            .map_err(|e| RegistryError::InvalidTimestamp(format!("{text:?}: {e}")))?;
        let ns = i64::try_from(parsed.unix_timestamp_nanos())
            .map_err(|_| RegistryError::InvalidTimestamp(format!("{text:?}: out of range")))?;
        Ok(Timestamp(ns))
    }

    /// The time in RFC 3339, UTC, with nanoseconds when they are not zero.
    pub fn to_rfc3339(self) -> String {
        let format = &time::format_description::well_known::Rfc3339;
        // Every i64 of nanoseconds lies within the years 1677 to 2262, which RFC 3339 covers.
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0))
            .ok()
            .and_then(|t| t.format(format).ok())
            .unwrap_or_else(|| format!("{}ns", self.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// A run of units with consecutive serial numbers `[start, end]` (both inclusive) of one
/// instrument and vintage.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SerialBlock {
    /// The instrument the units belong to.
    pub instrument: InstrumentId,
    /// The units' vintage.
    pub vintage: Vintage,
    /// The first serial of the block.
    pub start: u64,
    /// The last serial of the block (inclusive).
    pub end: u64,
}

impl SerialBlock {
    /// The number of units in the block.
    pub fn quantity(&self) -> Qty {
        self.end - self.start + 1
    }

    /// Whether `next` continues this block without a gap (same instrument and vintage).
    pub fn is_followed_by(&self, next: &SerialBlock) -> bool {
        self.instrument == next.instrument
            && self.vintage == next.vintage
            && self.end.checked_add(1) == Some(next.start)
    }
}

/// Sorts blocks by instrument, vintage and serial, and merges the ones that touch: the
/// canonical form of a set of blocks, however a ledger happens to have split them.
pub fn coalesce(mut blocks: Vec<SerialBlock>) -> Vec<SerialBlock> {
    blocks.sort();
    let mut out: Vec<SerialBlock> = Vec::with_capacity(blocks.len());
    for b in blocks {
        match out.last_mut() {
            Some(last) if last.is_followed_by(&b) => last.end = b.end,
            _ => out.push(b),
        }
    }
    out
}

/// Request: open a registry account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAccount {
    /// The client-made request id.
    pub id: RequestId,
    /// The account to open.
    pub account: AccountId,
}

/// Request: issue new units to an account. The registry assigns the next free serials of the
/// instrument and vintage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueUnits {
    /// The client-made request id.
    pub id: RequestId,
    /// The account that receives the units.
    pub account: AccountId,
    /// The instrument of the units.
    pub instrument: InstrumentId,
    /// The vintage of the units.
    pub vintage: Vintage,
    /// How many units, 1 to [`REQUEST_QTY_MAX`].
    pub quantity: Qty,
}

/// Request: propose a transfer (the first phase). If `from` has the units available, they are
/// reserved, oldest first (by vintage, then serial), and the transfer is pending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposeTransfer {
    /// The client-made request id, which becomes the transfer's id.
    pub id: RequestId,
    /// The transferring account.
    pub from: AccountId,
    /// The acquiring account.
    pub to: AccountId,
    /// The instrument of the units.
    pub instrument: InstrumentId,
    /// How many units, 1 to [`REQUEST_QTY_MAX`].
    pub quantity: Qty,
    /// Only units of this vintage, or any vintage (oldest first) when `None`.
    pub vintage: Option<Vintage>,
}

/// Request: complete (post) a pending transfer: its reserved units move to the acquiring account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostTransfer {
    /// The client-made request id.
    pub id: RequestId,
    /// The pending transfer.
    pub transfer: RequestId,
}

/// Request: propose a transfer and, if the proposal is accepted, post it at once (delivery
/// of a settled trade). Two requests under their own ids, with their own idempotency:
/// [`ProposeTransfer`] (`id`, the transfer's id) and then, only if that proposal's answer is
/// the pending transfer, a post of it under `post_id`. A proposal that is refused (or whose id
/// was used for other fields) is never followed by the post, so the post can never complete
/// another client's transfer of the same id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposeAndPost {
    /// The proposal.
    #[serde(flatten)]
    pub propose: ProposeTransfer,
    /// The client-made request id of the post.
    pub post_id: RequestId,
}

impl ProposeAndPost {
    /// The post that follows an accepted proposal.
    pub fn post(&self) -> PostTransfer {
        PostTransfer { id: self.post_id.clone(), transfer: self.propose.id.clone() }
    }
}

/// Request: terminate (void) a pending transfer: its reserved units are released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidTransfer {
    /// The client-made request id.
    pub id: RequestId,
    /// The pending transfer.
    pub transfer: RequestId,
}

/// Answer: an open account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The account.
    pub id: AccountId,
    /// When it was opened.
    pub opened_at: Timestamp,
}

/// Answer: units issued to an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issuance {
    /// The account that received the units.
    pub account: AccountId,
    /// The new units.
    pub block: SerialBlock,
    /// When they were issued.
    pub issued_at: Timestamp,
}

/// The life of a registry transaction.
///
/// The embedded registry checks and accepts a proposal in one step, so it stores only
/// `Accepted` (pending: the units are reserved) and the final statuses; `Proposed` and
/// `Checked` are what a remote registry may report while a proposal is in flight.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransferStatus {
    /// Received, not yet checked.
    Proposed,
    /// Checked, not yet accepted.
    Checked,
    /// Accepted and pending: the units are reserved until the transfer is posted or voided.
    Accepted,
    /// Refused at the check: nothing was reserved.
    Rejected,
    /// Posted: the units moved to the acquiring account.
    Completed,
    /// Voided by a client: the reserved units were released.
    Terminated,
    /// Expired while pending (cancelled on timeout): the reserved units were released.
    Cancelled,
}

impl TransferStatus {
    /// The stable name stored in the database and shown in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferStatus::Proposed => "proposed",
            TransferStatus::Checked => "checked",
            TransferStatus::Accepted => "accepted",
            TransferStatus::Rejected => "rejected",
            TransferStatus::Completed => "completed",
            TransferStatus::Terminated => "terminated",
            TransferStatus::Cancelled => "cancelled",
        }
    }

    /// The status of a stored name.
    pub fn parse(name: &str) -> Option<TransferStatus> {
        use TransferStatus::*;
        [Proposed, Checked, Accepted, Rejected, Completed, Terminated, Cancelled]
            .into_iter()
            .find(|s| s.as_str() == name)
    }

    /// Whether the transfer still holds a reservation and may be posted or voided.
    pub fn is_pending(self) -> bool {
        matches!(self, TransferStatus::Proposed | TransferStatus::Checked | TransferStatus::Accepted)
    }
}

impl fmt::Display for TransferStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Answer: a transfer and where it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The transfer's id (its proposal's request id).
    pub id: RequestId,
    /// The transferring account.
    pub from: AccountId,
    /// The acquiring account.
    pub to: AccountId,
    /// The instrument of the units.
    pub instrument: InstrumentId,
    /// The vintage the proposal asked for, if any.
    pub vintage: Option<Vintage>,
    /// The quantity proposed.
    pub quantity: Qty,
    /// Where the transfer stands.
    pub status: TransferStatus,
    /// The units reserved (and, once completed, moved), coalesced; empty if rejected.
    pub blocks: Vec<SerialBlock>,
    /// When it was proposed.
    pub proposed_at: Timestamp,
    /// When it reached a final status, if it has.
    pub resolved_at: Option<Timestamp>,
}

impl Transfer {
    /// The transfer a proposal becomes when it is refused: rejected at `at`, no blocks. An
    /// accepted one is this with its blocks, status accepted and no resolution time.
    pub fn rejected(req: &ProposeTransfer, at: Timestamp) -> Transfer {
        Transfer {
            id: req.id.clone(),
            from: req.from.clone(),
            to: req.to.clone(),
            instrument: req.instrument,
            vintage: req.vintage,
            quantity: req.quantity,
            status: TransferStatus::Rejected,
            blocks: Vec::new(),
            proposed_at: at,
            resolved_at: Some(at),
        }
    }
}

/// A block an account holds, and the pending transfer that reserves it, if any.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HeldBlock {
    /// The units.
    pub block: SerialBlock,
    /// The pending transfer that reserves them.
    pub reserved_by: Option<RequestId>,
}

/// Sorts held blocks by block and merges the ones that touch and share a reservation: the
/// canonical form of one account's blocks.
pub fn merge_held(mut blocks: Vec<HeldBlock>) -> Vec<HeldBlock> {
    blocks.sort();
    let mut merged: Vec<HeldBlock> = Vec::with_capacity(blocks.len());
    for b in blocks {
        match merged.last_mut() {
            Some(last) if last.reserved_by == b.reserved_by && last.block.is_followed_by(&b.block) => {
                last.block.end = b.block.end
            }
            _ => merged.push(b),
        }
    }
    merged
}

/// Held, reserved and available quantities (available = held - reserved).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Units in the account.
    pub held: Qty,
    /// Units reserved by pending transfers out of the account.
    pub reserved: Qty,
    /// Units free to transfer.
    pub available: Qty,
}

impl Totals {
    fn add(&mut self, b: &HeldBlock) {
        let q = b.block.quantity();
        self.held += q;
        if b.reserved_by.is_some() {
            self.reserved += q;
        } else {
            self.available += q;
        }
    }
}

/// Answer: an account's holdings of one instrument, now or as of a time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holdings {
    /// The account.
    pub account: AccountId,
    /// The instrument.
    pub instrument: InstrumentId,
    /// The time of the view, or `None` for the current state.
    pub as_of: Option<Timestamp>,
    /// The blocks, by vintage and serial; touching blocks with the same reservation merged.
    pub blocks: Vec<HeldBlock>,
    /// Totals per vintage, oldest first.
    pub by_vintage: Vec<(Vintage, Totals)>,
    /// Totals over all vintages.
    pub total: Totals,
}

impl Holdings {
    /// Holdings made of `blocks` in any order and split: sorts, merges and totals them.
    pub fn from_blocks(
        account: AccountId,
        instrument: InstrumentId,
        as_of: Option<Timestamp>,
        blocks: Vec<HeldBlock>,
    ) -> Holdings {
        let merged = merge_held(blocks);
        let mut by_vintage: Vec<(Vintage, Totals)> = Vec::new();
        let mut total = Totals::default();
        for b in &merged {
            total.add(b);
            match by_vintage.last_mut() {
                Some((v, t)) if *v == b.block.vintage => t.add(b),
                _ => {
                    let mut t = Totals::default();
                    t.add(b);
                    by_vintage.push((b.block.vintage, t));
                }
            }
        }
        Holdings { account, instrument, as_of, blocks: merged, by_vintage, total }
    }
}

/// What a statement line records.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// New units issued to the account (a credit).
    Issued,
    /// Units reserved by an accepted proposal out of the account (no change of holdings).
    Reserved,
    /// Reserved units released by a void or an expiry (no change of holdings).
    Released,
    /// Units moved out of the account by a completed transfer (a debit).
    Debited,
    /// Units moved into the account by a completed transfer (a credit).
    Credited,
}

impl EntryKind {
    /// The stable name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Issued => "issued",
            EntryKind::Reserved => "reserved",
            EntryKind::Released => "released",
            EntryKind::Debited => "debited",
            EntryKind::Credited => "credited",
        }
    }

    /// The kind of a stored name.
    pub fn parse(name: &str) -> Option<EntryKind> {
        use EntryKind::*;
        [Issued, Reserved, Released, Debited, Credited].into_iter().find(|k| k.as_str() == name)
    }
}

/// One line of an account statement: one block moved, reserved or released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    pub kind: EntryKind,
    /// The units.
    pub block: SerialBlock,
    /// The transfer, for every kind but `Issued`.
    pub transfer: Option<RequestId>,
    /// The other account of the transfer, for every kind but `Issued`.
    pub counterparty: Option<AccountId>,
}

/// Answer: what happened to an account in the time range `[from, to)`, in ledger order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// The account.
    pub account: AccountId,
    /// The start of the range (inclusive).
    pub from: Timestamp,
    /// The end of the range (exclusive).
    pub to: Timestamp,
    /// The lines, in the order the ledger recorded them.
    pub lines: Vec<StatementLine>,
}

/// A seller found short by the holdings check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortfall {
    /// The seller's account.
    pub account: AccountId,
    /// The total sell quantity the exchange sent.
    pub requested: Qty,
    /// The units the account has available (held minus reserved); 0 for an unknown account.
    pub available: Qty,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(vintage: u16, start: u64, end: u64) -> SerialBlock {
        SerialBlock { instrument: InstrumentId(1), vintage: Vintage(vintage), start, end }
    }

    #[test]
    fn coalesce_merges_touching_blocks_of_one_vintage_only() {
        let blocks = vec![b(2022, 6, 9), b(2021, 1, 5), b(2022, 1, 5), b(2022, 11, 12), b(2021, 6, 6)];
        assert_eq!(coalesce(blocks), vec![b(2021, 1, 6), b(2022, 1, 9), b(2022, 11, 12)]);
        let other_instrument = SerialBlock { instrument: InstrumentId(2), ..b(2022, 10, 10) };
        assert_eq!(coalesce(vec![b(2022, 1, 9), other_instrument]).len(), 2);
        assert!(coalesce(Vec::new()).is_empty());
    }

    #[test]
    fn merge_held_keeps_reservations_apart() {
        let t = RequestId::new("T").unwrap();
        let held = vec![
            HeldBlock { block: b(2022, 1, 2), reserved_by: Some(t.clone()) },
            HeldBlock { block: b(2022, 3, 4), reserved_by: None },
            HeldBlock { block: b(2022, 5, 9), reserved_by: None },
        ];
        let merged = merge_held(held);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[1].block, b(2022, 3, 9));
        let h = Holdings::from_blocks(AccountId::new("A").unwrap(), InstrumentId(1), None, merged);
        assert_eq!(h.total, Totals { held: 9, reserved: 2, available: 7 });
    }

    #[test]
    fn timestamps_read_and_write_rfc3339() {
        let t = Timestamp::parse_rfc3339("2026-05-01T20:30:00.5+05:30").unwrap();
        assert_eq!(t, Timestamp::parse_rfc3339("2026-05-01T15:00:00.500Z").unwrap());
        assert_eq!(t.to_rfc3339(), "2026-05-01T15:00:00.5Z");
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp::parse_rfc3339(&Timestamp(-1).to_rfc3339()).unwrap(), Timestamp(-1));
        let err = Timestamp::parse_rfc3339("1 May 2026").unwrap_err();
        assert!(matches!(err, RegistryError::InvalidTimestamp(_)), "{err}");
        assert!(Timestamp::parse_rfc3339("9999-01-01T00:00:00Z").is_err());
    }

    #[test]
    fn status_and_entry_names_round_trip() {
        use TransferStatus::*;
        for s in [Proposed, Checked, Accepted, Rejected, Completed, Terminated, Cancelled] {
            assert_eq!(TransferStatus::parse(s.as_str()), Some(s));
        }
        assert!(Accepted.is_pending() && !Completed.is_pending() && !Rejected.is_pending());
        for k in [
            EntryKind::Issued,
            EntryKind::Reserved,
            EntryKind::Released,
            EntryKind::Debited,
            EntryKind::Credited,
        ] {
            assert_eq!(EntryKind::parse(k.as_str()), Some(k));
        }
    }
}
