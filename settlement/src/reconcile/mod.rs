//! Reconciliation: the exchange's view of settlement against the registry's, the way the
//! UNFCCC transaction log reconciles registries.
//!
//! - **Nothing in flight.** A run starts only when no obligation is submitted, failed or
//!   retried (or changed after the agreed time, so its state then is unknown) and no
//!   registry transfer of the exchange's ids is pending; otherwise it is refused, naming how
//!   many and the first few ([`ReconcileError::InFlight`]).
//! - **One agreed time.** Both views are taken as of the same time `as_of`; the window is
//!   `[from, as_of]` (the session start to the agreed time). The exchange expects an account
//!   to hold, per instrument, what the registry held just before `from`, plus the units the
//!   registry issued to it in the window (the exchange does not issue: issuance is taken as
//!   given), plus what its obligations confirmed in the window delivered to it, minus what
//!   they took from it.
//! - **Phase 1, totals**, per (account, instrument): expected against the registry's holdings
//!   at `as_of`.
//! - **Phase 2, serial blocks**, for the buckets that differ: the expected blocks (opening +
//!   issued + received − delivered, as recorded on each confirmed obligation) against the
//!   blocks held, by a sweep over serials; every run of serials where the counts differ is a
//!   differing block.
//! - **Phase 3, the trail**: the statement lines and obligations that touch the differing
//!   blocks name the transfers to look at.
//! - **Classification**, by a hash join on the transfer id (`<trade>:p`) of every obligation
//!   confirmed in the window against every transfer in the registry's trail, so that a
//!   mismatch is classified even when the totals cancel out: a [`BreakType::MissingTransfer`]
//!   (confirmed, the registry has none), [`BreakType::UnexpectedTransfer`] (the registry
//!   moved units the exchange holds no confirmed obligation for),
//!   [`BreakType::QuantityMismatch`] and [`BreakType::AccountMismatch`] (same id, other
//!   quantity, or other accounts or instrument), [`BreakType::Duplicate`] (an obligation
//!   settled twice: a second registry transfer with the parties, instrument and quantity of
//!   an obligation already matched, or two obligations under one transfer id). Each break
//!   says whether the trail of a differing block led to it ([`FoundBy::Trail`]) or only the
//!   join did ([`FoundBy::IdJoin`]). What the transfer-level breaks do not explain of a
//!   bucket's difference (the registry's holdings disagreeing with its own trail) is a
//!   quantity mismatch on the holding itself ([`FoundBy::Totals`], key
//!   `holding:<account>:<instrument>`).
//!
//! [`reconcile`] is the pure core: no I/O, no clock, hash maps (Fx hashing: the keys are the
//! exchange's and the registry's own ids), deterministic output (breaks sorted by type and
//! key). The two views are independent until the join, so the registry's trail is rebuilt on
//! a second scoped thread while the exchange's totals are summed; the result does not depend
//! on which finishes first. [`view`] builds the two sides from a [`crate::settle::Settlement`]
//! and a [`crate::Registry`]; [`store`] keeps breaks with a status and a history in the
//! settlement database; [`render`] writes the report as JSON, CSV or a summary.

mod core;
pub mod render;
pub mod store;
pub mod view;

use std::collections::BTreeMap;
use std::fmt;

use cccx_engine::types::{InstrumentId, Qty};
use serde::{Deserialize, Serialize};

use crate::types::{AccountId, Timestamp, Vintage};

pub use self::core::reconcile;
pub use store::{BreakEvent, BreakStore, RunRecord, StoredBreak};
pub use view::{ExchangeEntry, ExchangeView, Position, RegistryView, TrailLine};

/// How many in-flight items an [`ReconcileError::InFlight`] names.
pub const IN_FLIGHT_NAMED_MAX: usize = 5;
/// How many transfers the report lists per differing block.
pub const TRAIL_PER_BLOCK_MAX: usize = 16;

/// The kind of a break.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakType {
    /// The exchange confirmed a transfer the registry does not have.
    MissingTransfer,
    /// The registry moved units the exchange holds no confirmed obligation for.
    UnexpectedTransfer,
    /// Same transfer, another quantity (or a holding whose total the trail does not explain).
    QuantityMismatch,
    /// Same transfer, other accounts or another instrument.
    AccountMismatch,
    /// An obligation settled twice.
    Duplicate,
}

impl BreakType {
    /// Every type, in report order.
    pub const ALL: [BreakType; 5] = [
        BreakType::MissingTransfer,
        BreakType::UnexpectedTransfer,
        BreakType::QuantityMismatch,
        BreakType::AccountMismatch,
        BreakType::Duplicate,
    ];

    /// The stable name stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakType::MissingTransfer => "missing_transfer",
            BreakType::UnexpectedTransfer => "unexpected_transfer",
            BreakType::QuantityMismatch => "quantity_mismatch",
            BreakType::AccountMismatch => "account_mismatch",
            BreakType::Duplicate => "duplicate",
        }
    }

    /// The type of a stored name.
    pub fn parse(name: &str) -> Option<BreakType> {
        BreakType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for BreakType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a break stands.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakStatus {
    /// Found, nobody has looked at it yet.
    Open,
    /// Someone is looking at it.
    Investigating,
    /// Closed with a reason, by someone.
    Resolved,
}

impl BreakStatus {
    /// The stable name stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakStatus::Open => "open",
            BreakStatus::Investigating => "investigating",
            BreakStatus::Resolved => "resolved",
        }
    }

    /// The status of a stored name.
    pub fn parse(name: &str) -> Option<BreakStatus> {
        [BreakStatus::Open, BreakStatus::Investigating, BreakStatus::Resolved]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

impl fmt::Display for BreakStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which step of the run found a break.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FoundBy {
    /// Phase 1 alone: a holding's total that no transfer explains.
    Totals,
    /// Phase 3: the trail of a differing block (phases 1 and 2 led to it).
    Trail,
    /// Only the comparison by transfer id: the totals and blocks cancel out.
    IdJoin,
}

impl FoundBy {
    /// The stable name printed.
    pub fn as_str(self) -> &'static str {
        match self {
            FoundBy::Totals => "totals",
            FoundBy::Trail => "trail",
            FoundBy::IdJoin => "id_join",
        }
    }
}

/// One discrepancy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Break {
    /// The stored break's id, once recorded by a [`BreakStore`].
    pub id: Option<i64>,
    /// The stored break's status, once recorded.
    pub status: Option<BreakStatus>,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: BreakType,
    /// What it is about: a transfer id, or `holding:<account>:<instrument>`. A break found
    /// again in a later run has the same type and key.
    pub key: String,
    /// The trade, when an obligation is involved.
    pub trade_id: Option<String>,
    /// What the exchange says (`none` when it says nothing).
    pub expected: String,
    /// What the registry says (`none` when it says nothing).
    pub actual: String,
    /// Which step found it.
    pub found_by: FoundBy,
    /// More detail.
    pub note: String,
}

/// Phase 1: a bucket whose total differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketDiff {
    /// The account.
    pub account: AccountId,
    /// The instrument.
    pub instrument: InstrumentId,
    /// Units the exchange expects it to hold.
    pub expected: i128,
    /// Units the registry says it holds.
    pub actual: i128,
}

/// Phase 2: a run of serials held other than expected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDiff {
    /// The account.
    pub account: AccountId,
    /// The instrument.
    pub instrument: InstrumentId,
    /// The vintage.
    pub vintage: Vintage,
    /// The first serial.
    pub start: u64,
    /// The last serial (inclusive).
    pub end: u64,
    /// Times the exchange expects each serial held (more than 1: delivered twice).
    pub expected: i64,
    /// Times the registry holds it (0 or 1).
    pub actual: i64,
    /// Phase 3: the transfers in the trail that touch these serials (at most
    /// [`TRAIL_PER_BLOCK_MAX`]).
    pub trail: Vec<String>,
}

/// What a run compared and found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The start of the window.
    pub from: Timestamp,
    /// The agreed time.
    pub as_of: Timestamp,
    /// Obligations in the exchange's view.
    pub obligations: usize,
    /// Obligations confirmed in the window.
    pub confirmed: usize,
    /// Transfers in the registry's trail.
    pub registry_transfers: usize,
    /// Confirmed obligations that match their registry transfer exactly.
    pub matched: usize,
    /// Phase 1: buckets compared.
    pub buckets: usize,
    /// Phase 1: the buckets that differ.
    pub differing_buckets: Vec<BucketDiff>,
    /// Phase 2: the differing blocks.
    pub differing_blocks: Vec<BlockDiff>,
    /// Phase 2: differing buckets whose blocks could not be compared (an obligation without
    /// recorded blocks).
    pub buckets_without_blocks: usize,
    /// Phase 3: statement lines that touch a differing block.
    pub trail_lines: usize,
    /// The breaks, by type then key.
    pub breaks: Vec<Break>,
    /// Breaks per type.
    pub counts: BTreeMap<BreakType, usize>,
    /// What recording the run did, once a [`BreakStore`] recorded it.
    pub run: Option<RunRecord>,
}

impl Report {
    /// A report of a window that found nothing yet.
    pub fn empty(from: Timestamp, as_of: Timestamp) -> Report {
        Report {
            from,
            as_of,
            obligations: 0,
            confirmed: 0,
            registry_transfers: 0,
            matched: 0,
            buckets: 0,
            differing_buckets: Vec::new(),
            differing_blocks: Vec::new(),
            buckets_without_blocks: 0,
            trail_lines: 0,
            breaks: Vec::new(),
            counts: BTreeMap::new(),
            run: None,
        }
    }

    /// Whether the run found no break.
    pub fn is_clean(&self) -> bool {
        self.breaks.is_empty()
    }
}

/// Why a reconciliation did not run or could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The two views are not taken at the same time, or the window is empty.
    #[error("the views do not agree: {0}")]
    Views(String),
    /// Something is in flight: reconciliation starts only when nothing is.
    #[error("{count} in flight, reconciliation needs none (first: {})", .first.join(", "))]
    InFlight {
        /// How many obligations and pending transfers.
        count: usize,
        /// The first few, by id.
        first: Vec<String>,
    },
    /// No such break.
    #[error("no break {0}")]
    UnknownBreak(i64),
    /// A request that cannot be done as given.
    #[error("{0}")]
    Invalid(String),
    /// The database or the audit trail failed.
    #[error("reconciliation storage: {0}")]
    Storage(String),
}

impl From<rusqlite::Error> for ReconcileError {
    fn from(e: rusqlite::Error) -> Self {
        ReconcileError::Storage(e.to_string())
    }
}

/// A movement as text: `S1 -> B1 30 of 0`.
fn movement(from: &AccountId, to: &AccountId, qty: Qty, instrument: InstrumentId) -> String {
    format!("{from} -> {to} {qty} of {}", instrument.0)
}
