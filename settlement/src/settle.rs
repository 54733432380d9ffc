//! Delivery versus payment: trades become obligations, each settled by one registry transfer
//! and a funds movement in the exchange's own ledger, through a durable state machine.
//!
//! ```text
//! created --run--> submitted --registry completes--> confirmed
//!                      |  \--registry refuses (an answer)--> broken
//!                      \--no answer (error, timeout)--> failed --next run--> retried --> submitted ...
//!                                                          \--attempts exhausted--> broken
//! ```
//!
//! - **Obligations** come from trades ([`TradeToSettle`]), one per trade, keyed by the trade id:
//!   adding the same trade again changes nothing, adding another trade under a used id is
//!   refused.
//! - **Funds** (the exchange's ledger, in the instruments' price unit): when an obligation is
//!   created the buyer pays `value + fee` into clearing; when the registry completes the
//!   transfer the seller is paid `value - fee` and the exchange's fee account `2 x fee`
//!   (delivery versus payment: the seller is never paid for certificates not delivered). A
//!   broken obligation leaves the buyer's payment in clearing until the break is resolved.
//! - **The certificate leg** is a two-phase registry transfer: propose (reserve) then post
//!   (complete), with client ids derived from the trade id (`<trade>:p`, `<trade>:c`). Every
//!   state is committed to the database *before* the registry is called, and a retry (after an
//!   error, a lost answer or a crash) sends the same requests with the same ids, so the
//!   registry's idempotency makes certificates move at most once.
//! - A registry refusal (insufficient units, unknown account, a transfer no longer pending) is
//!   an answer: the same request would be refused again, so the obligation is broken at once,
//!   with the reason, never dropped. An error without an answer is retried up to
//!   [`SettlementConfig::max_attempts`] times; then the registry is asked what became of the
//!   transfer: completed after all (the answers were lost) confirms the obligation, pending is
//!   voided, and the obligation is broken with what was found.
//!
//! - **Batches**: a run takes the open obligations in chunks ([`RUN_CHUNK_MAX`]): the chunk is
//!   marked submitted in one transaction, proposed and posted in one registry batch
//!   ([`BatchOp::ProposeAndPost`]: a proposal is posted only if it is accepted), and its
//!   outcomes recorded in one transaction, each obligation's outcome the same as if it went
//!   alone. A batch without an answer is no answer for each obligation in it.
//!
//! Storage is SQLite through `rusqlite` with portable SQL (PostgreSQL comes next): every
//! change is one transaction; times are passed in, never read from a clock.
//!
//! A confirmed obligation keeps the serial blocks its completed transfer moved (column
//! `blocks`, `vintage:start-end` comma-separated, of the trade's instrument), so [reconciliation](crate::reconcile) can compare serial blocks without
//! asking the registry for every transfer.
//!
//! The tables (schema version 4) are laid out for few and local writes per trade, since each
//! commit writes every page it changed: obligations and funds movements are numbered
//! (`seq`, the row's key), an obligation's trade is stored in columns, only open obligations
//! are in the index a run reads them by, a funds movement is one row from one account to
//! another (three per settled trade: the payment, the seller's share, the fees), and each
//! account's balance is kept in `balances`, changed once per transaction, rather than indexing
//! every movement by account. A database of versions 1 to 3 is converted when opened.

use std::collections::BTreeMap;
use std::path::Path;

use cccx_engine::types::{InstrumentId, Qty};
use rusqlite::{params, Connection, OptionalExtension};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::audit::AuditLog;
use crate::error::RegistryError;
use crate::registry::{BatchAnswers, BatchOp, Registry};
use crate::types::{
    AccountId, ProposeAndPost, ProposeTransfer, RequestId, SerialBlock, Timestamp, Transfer, TransferStatus,
    VoidTransfer,
};

/// The longest trade id (the registry's request ids add two characters).
pub const TRADE_ID_LENGTH_MAX: usize = 62;
/// The funds account that collects the exchange's fees.
pub const FEE_ACCOUNT: &str = "EXCHANGE-FEES";
/// The funds account that holds buyers' payments until delivery.
pub const CLEARING_ACCOUNT: &str = "CLEARING";
const SCHEMA_VERSION: i64 = 4;

/// Whether an obligation is open ([`ObligationState::is_open`]), as the condition of the
/// index of open obligations and of the query that reads them (the same text, so that the
/// query can use the partial index). Not an `IN` list: SQLite builds a temporary table for
/// one each time a statement evaluates it, and every change of state evaluates the condition.
macro_rules! open_states {
    () => {
        "state <> 'confirmed' AND state <> 'broken'"
    };
}

/// Each account's balance from the funds movements: what it received less what it paid.
macro_rules! balances_of_movements {
    () => {
        "SELECT account, SUM(amount) FROM
             (SELECT to_account AS account, amount FROM funds
              UNION ALL SELECT from_account, -amount FROM funds)
         GROUP BY account"
    };
}

/// The obligations table of schema version 4 (as of version 3) and its index of open ones.
const SCHEMA_OBLIGATIONS: &str = concat!(
    "CREATE TABLE obligations (
         seq INTEGER PRIMARY KEY,
         trade_id VARCHAR(64) NOT NULL UNIQUE,
         instrument INTEGER NOT NULL,
         buyer VARCHAR(64) NOT NULL,
         seller VARCHAR(64) NOT NULL,
         qty BIGINT NOT NULL,
         price BIGINT NOT NULL,
         traded_at BIGINT NOT NULL,
         fee BIGINT NOT NULL,
         state VARCHAR(16) NOT NULL,
         attempts INTEGER NOT NULL,
         reason TEXT,
         updated_at BIGINT NOT NULL,
         blocks TEXT
     );
     CREATE INDEX obligations_open ON obligations (seq) WHERE ",
    open_states!(),
    ";"
);

/// The funds tables of schema version 4: one row per movement of an amount from one account
/// to another (so every movement balances by itself), and each account's balance.
const SCHEMA_FUNDS: &str = "CREATE TABLE funds (
         seq INTEGER PRIMARY KEY,
         obligation BIGINT NOT NULL,
         kind VARCHAR(16) NOT NULL,
         from_account VARCHAR(64) NOT NULL,
         to_account VARCHAR(64) NOT NULL,
         amount BIGINT NOT NULL,
         at BIGINT NOT NULL
     );
     CREATE TABLE balances (
         account VARCHAR(64) PRIMARY KEY,
         balance BIGINT NOT NULL
     );";

/// The funds table of schema version 3: one row per account and movement, signed.
const SCHEMA_FUNDS_V3: &str = "CREATE TABLE funds (
         seq INTEGER PRIMARY KEY,
         account VARCHAR(64) NOT NULL,
         obligation BIGINT NOT NULL,
         kind VARCHAR(16) NOT NULL,
         amount BIGINT NOT NULL,
         at BIGINT NOT NULL
     );";

/// The columns `query_seq` reads, in its order.
const OBLIGATION_COLUMNS: &str =
    "seq, trade_id, instrument, buyer, seller, qty, price, traded_at, fee, state, attempts, reason, updated_at, blocks";

/// Records an obligation's outcome: its new state, reason and time (with the serial blocks its
/// transfer moved, as JSON, when it is confirmed), provided it is still submitted, as this
/// runner left it (a second runner on the same database, two processes or a restart while the
/// old one hangs, cannot move it twice).
const RECORD: &str =
    "UPDATE obligations SET state = ?1, reason = ?2, updated_at = ?3, blocks = COALESCE(?4, blocks)
     WHERE seq = ?5 AND state = 'submitted'";

/// Submits the open obligations in a range of sequence numbers that are in a state with a
/// number of attempts (over the index of open obligations), and returns them.
const SUBMIT: &str = concat!(
    "UPDATE obligations SET state = 'submitted', attempts = ?1, reason = NULL, updated_at = ?2 WHERE ",
    open_states!(),
    " AND seq >= ?3 AND seq <= ?4 AND state = ?5 AND attempts = ?6 RETURNING seq"
);

/// The next open obligations after a sequence number, oldest first, at most a chunk: one
/// range of the index of open obligations (confirmed and broken ones are not in it), read in
/// `seq` order.
const OPEN_CHUNK: &str = concat!("WHERE ", open_states!(), " AND seq > ?1 ORDER BY seq LIMIT ?2");

/// A trade to settle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeToSettle {
    /// The exchange's unique trade id.
    pub trade_id: String,
    /// The instrument (certificate type).
    pub instrument: InstrumentId,
    /// The buyer's registry account.
    pub buyer: AccountId,
    /// The seller's registry account.
    pub seller: AccountId,
    /// Certificates.
    pub qty: Qty,
    /// Price per certificate, in the instrument's price unit.
    pub price: i64,
    /// When the trade happened.
    pub traded_at: Timestamp,
}

/// Where an obligation stands.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ObligationState {
    /// Recorded, the buyer's payment in clearing; not sent to the registry yet.
    Created,
    /// Sent to the registry; the answer is not recorded yet (a crash here is resumed).
    Submitted,
    /// The registry completed the transfer and the seller was paid.
    Confirmed,
    /// The last attempt got no answer; it will be retried.
    Failed,
    /// Queued for another attempt.
    Retried,
    /// Refused by the registry, or out of attempts: a break to resolve.
    Broken,
}

impl ObligationState {
    /// The stable name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ObligationState::Created => "created",
            ObligationState::Submitted => "submitted",
            ObligationState::Confirmed => "confirmed",
            ObligationState::Failed => "failed",
            ObligationState::Retried => "retried",
            ObligationState::Broken => "broken",
        }
    }

    /// The state of a stored name.
    pub fn parse(name: &str) -> Option<ObligationState> {
        use ObligationState::*;
        [Created, Submitted, Confirmed, Failed, Retried, Broken].into_iter().find(|s| s.as_str() == name)
    }

    /// Whether a run still has work to do on it.
    pub fn is_open(self) -> bool {
        !matches!(self, ObligationState::Confirmed | ObligationState::Broken)
    }
}

/// One obligation and where it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Obligation {
    /// The trade.
    pub trade: TradeToSettle,
    /// The exchange fee charged to each side.
    pub fee: i64,
    /// Where it stands.
    pub state: ObligationState,
    /// Attempts made so far.
    pub attempts: u32,
    /// Why it is broken, or why the last attempt failed.
    pub reason: Option<String>,
    /// When it last changed (for a confirmed obligation: when it was confirmed).
    pub updated_at: Timestamp,
    /// The serial blocks the registry moved for it, coalesced; empty unless confirmed.
    #[serde(default)]
    pub blocks: Vec<SerialBlock>,
}

impl Obligation {
    /// The registry request id of the proposal (also the transfer's id).
    pub fn transfer_id(&self) -> Result<RequestId, SettlementError> {
        Ok(RequestId::new(format!("{}:p", self.trade.trade_id))?)
    }

    /// The registry request id of the post.
    pub fn post_id(&self) -> Result<RequestId, SettlementError> {
        Ok(RequestId::new(format!("{}:c", self.trade.trade_id))?)
    }
}

/// How settlement runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementConfig {
    /// The fee charged to each side, in basis points of the trade's value (rounded down).
    pub fee_bps: u32,
    /// Attempts without an answer before an obligation is broken.
    pub max_attempts: u32,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig { fee_bps: 0, max_attempts: 5 }
    }
}

/// Why settlement could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SettlementError {
    /// The database failed.
    #[error("settlement database: {0}")]
    Storage(String),
    /// A trade that cannot be settled as given.
    #[error("trade {trade_id}: {reason}")]
    BadTrade {
        /// The trade.
        trade_id: String,
        /// What is wrong.
        reason: String,
    },
    /// A registry id that cannot be built (an invalid trade id).
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<rusqlite::Error> for SettlementError {
    fn from(e: rusqlite::Error) -> Self {
        SettlementError::Storage(e.to_string())
    }
}

/// What one [`Settlement::run`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// Obligations confirmed in this run.
    pub confirmed: usize,
    /// Attempts that got no answer (to be retried).
    pub failed: usize,
    /// Obligations broken in this run.
    pub broken: usize,
}

/// Counts of obligations per state.
pub type StateCounts = Vec<(ObligationState, u64)>;

/// What became of a transfer after the last attempt.
enum Verdict {
    /// The registry completed it: the completed transfer.
    Delivered(Transfer),
    /// Definitely not delivered: break, with why.
    Break(String),
    /// The registry could not say: try again later.
    InDoubt(String),
}

/// What a run records for an obligation after its attempt.
enum Outcome {
    /// Delivered: pay the seller and the fee; the serial blocks the transfer moved.
    Confirmed(Vec<SerialBlock>),
    /// Refused, or out of attempts and not delivered: why.
    Broken(String),
    /// No answer: why; the next run tries again.
    Failed(String),
}

impl Outcome {
    /// A completed transfer of the obligation: confirmed, unless the registry says it moved
    /// serials of another instrument than the trade's (a break to investigate, never paid).
    fn delivered(o: &Obligation, t: Transfer) -> Outcome {
        match t.blocks.iter().find(|b| b.instrument != o.trade.instrument) {
            None => Outcome::Confirmed(t.blocks),
            Some(b) => Outcome::Broken(format!(
                "the registry's transfer {} moved serials of instrument {}, the trade is of {}",
                t.id, b.instrument.0, o.trade.instrument.0
            )),
        }
    }
}

/// A chunk sent to the registry: the obligations' sequence numbers, the obligations (as
/// submitted) and the outcomes to record.
struct Sent {
    seqs: Vec<i64>,
    chunk: Vec<Obligation>,
    outcomes: Vec<Outcome>,
}

/// The most obligations [`Settlement::run`] takes at once: one transaction marks them
/// submitted, one registry batch proposes, one posts, one transaction records the outcomes
/// (and marks the next chunk submitted). As large as a registry service takes in one batch
/// ([`crate::registry::BATCH_OPS_MAX`]): 4,096 instead of 1,024 cut a 100,000-trade run by
/// about a fifth (four times fewer commits and synced log writes).
pub const RUN_CHUNK_MAX: usize = crate::registry::BATCH_OPS_MAX;

/// The largest value of one trade (price x quantity) settlement takes: sums of many trades
/// stay far inside 64 bits.
pub const TRADE_VALUE_MAX: i64 = 1_000_000_000_000_000;

/// Which obligations [`Settlement::obligations_where`] returns: every part that is set must
/// match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObligationFilter {
    /// Only in this state.
    pub state: Option<ObligationState>,
    /// Only of this instrument.
    pub instrument: Option<InstrumentId>,
    /// Only those this registry account is the buyer or the seller of.
    pub account: Option<AccountId>,
}

/// The settlement state machine over its database.
pub struct Settlement {
    conn: Connection,
    config: SettlementConfig,
    audit: Option<AuditLog>,
    chunk: usize,
}

impl Settlement {
    /// Opens (or creates) the settlement database in a file.
    pub fn open(path: impl AsRef<Path>, config: SettlementConfig) -> Result<Settlement, SettlementError> {
        let conn = Connection::open(path)?;
        // A new database only; an existing one keeps its page size.
        conn.pragma_update(None, "page_size", crate::sqlite::PAGE_SIZE)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "cache_size", -65_536)?;
        conn.pragma_update(None, "wal_autocheckpoint", crate::sqlite::WAL_CHECKPOINT_PAGES)?;
        Settlement::with_connection(conn, config)
    }

    /// A settlement database in memory (tests).
    pub fn open_in_memory(config: SettlementConfig) -> Result<Settlement, SettlementError> {
        Settlement::with_connection(Connection::open_in_memory()?, config)
    }

    fn with_connection(
        mut conn: Connection,
        config: SettlementConfig,
    ) -> Result<Settlement, SettlementError> {
        if config.fee_bps > 10_000 {
            return Err(SettlementError::Storage(format!(
                "fee_bps {} is more than the whole value (10000)",
                config.fee_bps
            )));
        }
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(64);
        crate::sqlite::stable_plans(&conn)?;
        // Without a write lock when the schema is current; anything else (no table yet, an
        // older version, an error) is settled by `setup_schema` under the write lock.
        let current: Option<i64> = conn
            .query_row("SELECT version FROM settlement_schema", [], |r| r.get(0))
            .optional()
            .unwrap_or(None);
        if current != Some(SCHEMA_VERSION) {
            setup_schema(&mut conn)?;
        }
        Ok(Settlement { conn, config, audit: None, chunk: RUN_CHUNK_MAX })
    }

    /// Works at most `chunk` obligations per registry batch (1 to [`RUN_CHUNK_MAX`], the
    /// default): smaller batches give a registry that answers slowly less to do per request.
    pub fn with_chunk(mut self, chunk: usize) -> Settlement {
        self.chunk = chunk.clamp(1, RUN_CHUNK_MAX);
        self
    }

    /// Records every obligation, state change and registry answer in an audit trail too.
    pub fn with_audit(mut self, log: AuditLog) -> Settlement {
        self.audit = Some(log);
        self
    }

    /// Appends a record to the audit trail, if there is one (`data` is built only then).
    fn audit(
        &mut self,
        at: Timestamp,
        kind: &str,
        data: impl FnOnce() -> serde_json::Value,
    ) -> Result<(), SettlementError> {
        if let Some(log) = self.audit.as_mut() {
            log.append(at.0, kind, data()).map_err(|e| SettlementError::Storage(e.to_string()))?;
        }
        Ok(())
    }

    /// Records trades as obligations (each buyer's payment goes into clearing). A trade already
    /// recorded with the same fields is skipped; under a used id with other fields it is
    /// refused, and nothing of the batch is recorded. Returns how many were new.
    pub fn add_trades(&mut self, trades: &[TradeToSettle], at: Timestamp) -> Result<usize, SettlementError> {
        let tx = self.conn.transaction()?;
        let mut added = 0;
        let mut inserted = Vec::new();
        let mut seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM obligations", [], |r| r.get(0))?;
        let mut funds = Movements::start(&tx, at)?;
        for t in trades {
            let bad = |reason: &str| SettlementError::BadTrade {
                trade_id: t.trade_id.clone(),
                reason: reason.into(),
            };
            if t.trade_id.is_empty()
                || t.trade_id.len() > TRADE_ID_LENGTH_MAX
                || !t.trade_id.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(bad("the id must be 1 to 62 printable ASCII characters"));
            }
            if t.qty == 0 || t.price <= 0 {
                return Err(bad("quantity and price must be positive"));
            }
            if t.buyer == t.seller {
                return Err(bad("buyer and seller are the same account"));
            }
            let (qty, value) = i64::try_from(t.qty)
                .ok()
                .and_then(|q| Some((q, q.checked_mul(t.price)?)))
                .filter(|(_, v)| *v <= TRADE_VALUE_MAX)
                .ok_or_else(|| bad("value overflows the largest trade value settlement takes"))?;
            let fee = i64::try_from(i128::from(value) * i128::from(self.config.fee_bps) / 10_000)
                .map_err(|_| bad("fee overflows"))?;
            let paid = value.checked_add(fee).ok_or_else(|| bad("value plus fee overflows"))?;
            // Insert unless the id is taken; only then read what is stored under it.
            let changed = tx
                .prepare_cached(
                    "INSERT INTO obligations (seq, trade_id, instrument, buyer, seller, qty, price, traded_at, fee,
                         state, attempts, reason, updated_at, blocks)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, NULL, ?11, NULL)
                     ON CONFLICT (trade_id) DO NOTHING",
                )?
                .execute(params![
                    seq + 1,
                    t.trade_id,
                    t.instrument.0,
                    t.buyer.as_str(),
                    t.seller.as_str(),
                    qty,
                    t.price,
                    t.traded_at.0,
                    fee,
                    ObligationState::Created.as_str(),
                    at.0
                ])?;
            if changed == 0 {
                let stored = query_seq(&tx, "WHERE trade_id = ?1", params![t.trade_id])?;
                if stored.first().is_some_and(|(_, o)| o.trade == *t) {
                    continue;
                }
                return Err(bad("already recorded with other fields"));
            }
            seq += 1;
            funds.add(&tx, seq, "pay", t.buyer.as_str(), CLEARING_ACCOUNT, paid)?;
            added += 1;
            if self.audit.is_some() {
                inserted.push(t);
            }
        }
        funds.finish(&tx)?;
        let records = inserted.iter().map(|t| serde_json::json!({"trade": t, "state": "created"}));
        write_ahead(&mut self.audit, at, records)?;
        tx.commit()?;
        Ok(added)
    }

    /// Works every open obligation once, oldest first: submits it to the registry (or
    /// resumes it after a crash or a failed attempt) and records the outcome.
    ///
    /// Obligations go in chunks of up to [`RUN_CHUNK_MAX`]: a transaction marks the chunk
    /// submitted (committed before the registry is called), one registry batch proposes, one
    /// posts what was accepted, and the next transaction records every outcome (and marks the
    /// next chunk submitted), the audit trail synced before each commit. Each obligation's
    /// outcome is what it would be alone.
    pub fn run(&mut self, registry: &mut dyn Registry, at: Timestamp) -> Result<RunReport, SettlementError> {
        let mut report = RunReport::default();
        let mut after_seq = 0;
        let mut sent = None;
        loop {
            let (seqs, chunk) = self.record_and_submit(sent.take(), after_seq, at, &mut report)?;
            let Some(&last_seq) = seqs.last() else { break };
            after_seq = last_seq;
            let delivered = deliver_chunk(registry, &chunk, at);
            let mut outcomes = Vec::with_capacity(chunk.len());
            for (o, delivered) in chunk.iter().zip(delivered) {
                outcomes.push(self.outcome(registry, o, delivered, at)?);
            }
            sent = Some(Sent { seqs, chunk, outcomes });
        }
        Ok(report)
    }

    /// In one transaction: records the outcomes of the chunk sent (if any), then reads the next
    /// chunk of open obligations after `after_seq` and marks it submitted, and returns it (with
    /// the obligations' sequence numbers; empty when none are left). When the next chunk cannot
    /// be read or submitted, the outcomes are committed without it, and the error returned.
    fn record_and_submit(
        &mut self,
        sent: Option<Sent>,
        after_seq: i64,
        at: Timestamp,
        report: &mut RunReport,
    ) -> Result<(Vec<i64>, Vec<Obligation>), SettlementError> {
        let auditing = self.audit.is_some();
        let mut records = Vec::new();
        let mut tx = self.conn.transaction()?;
        if let Some(Sent { seqs, mut chunk, outcomes }) = sent {
            record(&tx, &seqs, &mut chunk, outcomes, at, report, auditing, &mut records)?;
        }
        let recorded = records.len();
        let next = {
            let sp = tx.savepoint()?;
            let next = query_seq(&sp, OPEN_CHUNK, params![after_seq, self.chunk as i64]).and_then(|open| {
                let (seqs, mut chunk): (Vec<i64>, Vec<Obligation>) = open.into_iter().unzip();
                submit(&sp, &seqs, &mut chunk, at, auditing, &mut records)?;
                Ok((seqs, chunk))
            });
            if next.is_ok() {
                sp.commit()?;
            } else {
                // Dropping the savepoint rolls the next chunk back.
                records.truncate(recorded);
            }
            next
        };
        write_ahead(&mut self.audit, at, records)?;
        tx.commit()?;
        next
    }

    /// What to record after an attempt: the registry's answer decides, and an attempt without
    /// an answer is retried, or, out of attempts, settled by asking the registry what became of
    /// the transfer.
    fn outcome(
        &mut self,
        registry: &mut dyn Registry,
        o: &Obligation,
        delivered: Result<Transfer, SettlementError>,
        at: Timestamp,
    ) -> Result<Outcome, SettlementError> {
        let transfer = o.transfer_id()?;
        self.audit(at, "registry", || {
            let answer = match &delivered {
                Ok(_) => "completed".to_string(),
                Err(e) => e.to_string(),
            };
            serde_json::json!({"trade": o.trade.trade_id, "transfer": transfer.to_string(), "answer": answer})
        })?;
        Ok(match delivered {
            Ok(t) => Outcome::delivered(o, t),
            Err(SettlementError::Registry(e)) if e.is_answer() => Outcome::Broken(e.to_string()),
            // Out of attempts: ask the registry what became of the transfer before giving up,
            // so that a delivery whose answer was lost is not a break.
            Err(e) if o.attempts >= self.config.max_attempts => {
                match self.give_up(registry, o, at, &e.to_string())? {
                    Verdict::Delivered(t) => Outcome::delivered(o, t),
                    Verdict::Break(why) => Outcome::Broken(why),
                    // Not final: the registry could not say; the next run asks again.
                    Verdict::InDoubt(why) => Outcome::Failed(why),
                }
            }
            Err(e) => Outcome::Failed(e.to_string()),
        })
    }

    /// After the last attempt, what the registry says became of the transfer. Only a definite
    /// answer breaks the obligation; while the registry cannot say, it stays in doubt (failed,
    /// asked again next run). A pending transfer is voided; a void refused because the transfer
    /// completed meanwhile (a late post) confirms the delivery.
    fn give_up(
        &self,
        registry: &mut dyn Registry,
        o: &Obligation,
        at: Timestamp,
        error: &str,
    ) -> Result<Verdict, SettlementError> {
        let attempts = o.attempts;
        let prefix = format!("no answer after {attempts} attempts ({error})");
        let id = o.transfer_id()?;
        let verdict = match registry.transfer(&id) {
            Ok(Some(t)) if !is_transfer_of(&t, o) => Verdict::Break(format!(
                "{prefix}; the registry's transfer {} is not this trade's ({} -> {}, {} of instrument {})",
                t.id, t.from, t.to, t.quantity, t.instrument.0
            )),
            Ok(Some(t)) if t.status == TransferStatus::Completed => Verdict::Delivered(t),
            Ok(Some(t)) if t.status.is_pending() => {
                let void =
                    VoidTransfer { id: RequestId::new(format!("{}:v", o.trade.trade_id))?, transfer: t.id };
                match registry.void(&void, at) {
                    Ok(v) if v.status == TransferStatus::Completed => Verdict::Delivered(v),
                    Ok(_) => Verdict::Break(format!("{prefix}; the pending transfer was voided")),
                    Err(e) => match registry.transfer(&id) {
                        Ok(Some(t)) if t.status == TransferStatus::Completed => Verdict::Delivered(t),
                        Ok(Some(t)) if !t.status.is_pending() => {
                            Verdict::Break(format!("{prefix}; the transfer is {}", t.status))
                        }
                        _ => Verdict::InDoubt(format!(
                            "{prefix}; the pending transfer could not be voided: {e}"
                        )),
                    },
                }
            }
            Ok(Some(t)) => Verdict::Break(format!("{prefix}; the transfer is {}", t.status)),
            Ok(None) => Verdict::Break(format!("{prefix}; the registry has no such transfer")),
            Err(e) => Verdict::InDoubt(format!("{prefix}; the registry's state is unknown: {e}")),
        };
        Ok(verdict)
    }

    /// Every obligation, oldest first.
    pub fn obligations(&self) -> Result<Vec<Obligation>, SettlementError> {
        query(&self.conn, "ORDER BY seq", params![])
    }

    /// The newest obligations that match a filter (each part optional), at most `limit`,
    /// newest first. The database does the filtering: it reads back from the newest obligation
    /// and stops after `limit` matches.
    pub fn obligations_where(
        &self,
        filter: &ObligationFilter,
        limit: usize,
    ) -> Result<Vec<Obligation>, SettlementError> {
        query(
            &self.conn,
            "WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR instrument = ?2)
             AND (?3 IS NULL OR buyer = ?3 OR seller = ?3) ORDER BY seq DESC LIMIT ?4",
            params![
                filter.state.map(ObligationState::as_str),
                filter.instrument.map(|i| i64::from(i.0)),
                filter.account.as_ref().map(AccountId::as_str),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
        )
    }

    /// One obligation by trade id.
    pub fn obligation(&self, trade_id: &str) -> Result<Option<Obligation>, SettlementError> {
        Ok(query(&self.conn, "WHERE trade_id = ?1", params![trade_id])?.into_iter().next())
    }

    /// Obligations per state, in state order (states without any are left out).
    pub fn counts(&self) -> Result<StateCounts, SettlementError> {
        let mut stmt = self.conn.prepare("SELECT state, COUNT(*) FROM obligations GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, n) = row?;
            let state = ObligationState::parse(&name)
                .ok_or_else(|| SettlementError::Storage(format!("unknown state {name}")))?;
            out.push((state, n as u64));
        }
        out.sort();
        Ok(out)
    }

    /// Obligations per state, in all and per registry account (an obligation counts for its
    /// buyer and for its seller), in state order: one pass over the obligations, grouped by the
    /// database.
    pub fn counts_by_account(
        &self,
    ) -> Result<(StateCounts, BTreeMap<AccountId, StateCounts>), SettlementError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT buyer, seller, state, COUNT(*) FROM obligations GROUP BY buyer, seller, state",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
        })?;
        let mut total: BTreeMap<ObligationState, u64> = BTreeMap::new();
        let mut by_account: BTreeMap<AccountId, BTreeMap<ObligationState, u64>> = BTreeMap::new();
        for row in rows {
            let (buyer, seller, name, n) = row?;
            let state = ObligationState::parse(&name)
                .ok_or_else(|| SettlementError::Storage(format!("unknown state {name}")))?;
            let n = u64::try_from(n).unwrap_or(0);
            *total.entry(state).or_default() += n;
            for party in [buyer, seller] {
                let party = AccountId::new(party)
                    .map_err(|_| SettlementError::Storage("unreadable account in the database".into()))?;
                *by_account.entry(party).or_default().entry(state).or_default() += n;
            }
        }
        let flat = |m: BTreeMap<ObligationState, u64>| m.into_iter().collect::<StateCounts>();
        Ok((flat(total), by_account.into_iter().map(|(a, m)| (a, flat(m))).collect()))
    }

    /// The balance of a funds account in the exchange's ledger (negative: it paid more than it
    /// received).
    pub fn balance(&self, account: &str) -> Result<i64, SettlementError> {
        let balance = self
            .conn
            .prepare_cached("SELECT balance FROM balances WHERE account = ?1")?
            .query_row(params![account], |r| r.get(0))
            .optional()?;
        Ok(balance.unwrap_or(0))
    }

    /// Checks the ledger: each account's balance is what its movements brought in less what
    /// they took out (every movement goes from one account to another, so the ledger sums to
    /// zero), and every obligation moved exactly its buyer's payment into clearing and, once
    /// confirmed (only then), the seller's share and the fees out of it, so that clearing
    /// holds exactly the payments of obligations not confirmed.
    pub fn check(&self) -> Result<(), String> {
        let sql = |e: rusqlite::Error| e.to_string();
        let sums = |query: &str| -> Result<BTreeMap<String, i64>, String> {
            let mut stmt = self.conn.prepare(query).map_err(sql)?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sql)?;
            rows.collect::<Result<_, _>>().map_err(sql)
        };
        let moved = sums(balances_of_movements!())?;
        let balances = sums("SELECT account, balance FROM balances")?;
        if moved != balances {
            let accounts: std::collections::BTreeSet<&String> = moved.keys().chain(balances.keys()).collect();
            for a in accounts {
                let (m, b) = (moved.get(a), balances.get(a));
                if m != b {
                    return Err(format!("account {a}: balance {b:?}, its movements sum to {m:?}"));
                }
            }
        }
        // Each obligation's movements: its payment into clearing and, once confirmed (only
        // then), its payout, each exactly once; in SQL, so that memory does not grow with the
        // ledger.
        let bad: Option<(String, String, Option<i64>)> = self
            .conn
            .query_row(CHECK_MOVEMENTS, params![CLEARING_ACCOUNT, FEE_ACCOUNT], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(sql)?;
        if let Some((trade, state, rows)) = bad {
            return Err(format!(
                "trade {trade} ({state}): its funds movements ({} rows) are not its payment{}",
                rows.unwrap_or(0),
                if state == ObligationState::Confirmed.as_str() { " and payout" } else { " alone" }
            ));
        }
        let orphan: Option<i64> = self
            .conn
            .query_row(
                "SELECT obligation FROM funds WHERE obligation NOT IN (SELECT seq FROM obligations) LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        if let Some(seq) = orphan {
            return Err(format!("funds movements of obligation {seq}, which is not stored"));
        }
        Ok(())
    }
}

/// The first obligation (trade id, state, number of funds rows) whose funds movements are not
/// exactly: the buyer's payment (`value + fee`) into clearing (parameter 1) and, if confirmed
/// and only then, the seller's share (`value - fee`) and the fees (`2 x fee`, to parameter 2)
/// out of it.
const CHECK_MOVEMENTS: &str = "
    WITH f AS (
        SELECT obligation,
            COUNT(*) AS n,
            SUM(CASE WHEN kind = 'pay' THEN 1 ELSE 0 END) AS pays,
            SUM(CASE WHEN kind = 'receive' THEN 1 ELSE 0 END) AS receives,
            SUM(CASE WHEN kind = 'fee' THEN 1 ELSE 0 END) AS fees,
            MAX(CASE WHEN kind = 'pay' THEN from_account END) AS payer,
            MAX(CASE WHEN kind = 'pay' THEN to_account END) AS pay_to,
            SUM(CASE WHEN kind = 'pay' THEN amount END) AS paid,
            MAX(CASE WHEN kind = 'receive' THEN from_account END) AS receive_from,
            MAX(CASE WHEN kind = 'receive' THEN to_account END) AS receiver,
            SUM(CASE WHEN kind = 'receive' THEN amount END) AS received,
            MAX(CASE WHEN kind = 'fee' THEN from_account END) AS fee_from,
            MAX(CASE WHEN kind = 'fee' THEN to_account END) AS fee_to,
            SUM(CASE WHEN kind = 'fee' THEN amount END) AS fee_paid
        FROM funds GROUP BY obligation)
    SELECT o.trade_id, o.state, f.n FROM obligations o LEFT JOIN f ON f.obligation = o.seq
    WHERE f.obligation IS NULL
        OR f.n <> f.pays + f.receives + f.fees OR f.pays <> 1
        OR f.payer <> o.buyer OR f.pay_to <> ?1 OR f.paid <> o.qty * o.price + o.fee
        OR (o.state = 'confirmed' AND (f.receives <> 1 OR f.fees <> 1
            OR f.receive_from <> ?1 OR f.receiver <> o.seller OR f.received <> o.qty * o.price - o.fee
            OR f.fee_from <> ?1 OR f.fee_to <> ?2 OR f.fee_paid <> 2 * o.fee))
        OR (o.state <> 'confirmed' AND (f.receives <> 0 OR f.fees <> 0))
    ORDER BY o.seq LIMIT 1";

fn query(
    conn: &Connection,
    clause: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Obligation>, SettlementError> {
    Ok(query_seq(conn, clause, args)?.into_iter().map(|(_, o)| o).collect())
}

/// Obligations with their sequence numbers.
fn query_seq(
    conn: &Connection,
    clause: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<(i64, Obligation)>, SettlementError> {
    let sql = format!("SELECT {OBLIGATION_COLUMNS} FROM obligations {clause}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(args)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        let trade_id: String = r.get(1)?;
        let stored = |what: &str| SettlementError::Storage(format!("stored obligation {trade_id}: {what}"));
        let instrument = u32::try_from(r.get::<_, i64>(2)?).map_err(|_| stored("instrument out of range"))?;
        let qty = u64::try_from(r.get::<_, i64>(5)?).map_err(|_| stored("quantity out of range"))?;
        let state: String = r.get(9)?;
        let state =
            ObligationState::parse(&state).ok_or_else(|| stored(&format!("unknown state {state}")))?;
        let attempts = u32::try_from(r.get::<_, i64>(10)?).unwrap_or(u32::MAX);
        let blocks: Vec<SerialBlock> =
            match r.get_ref(13)?.as_str_or_null().map_err(|e| stored(&e.to_string()))? {
                Some(text) => crate::sqlite::decode_blocks(InstrumentId(instrument), text)
                    .map_err(|e| stored(&format!("blocks: {e}")))?,
                None => Vec::new(),
            };
        let trade = TradeToSettle {
            instrument: InstrumentId(instrument),
            buyer: stored_account(r.get(3)?).map_err(|e| stored(&e))?,
            seller: stored_account(r.get(4)?).map_err(|e| stored(&e))?,
            qty,
            price: r.get(6)?,
            traded_at: Timestamp(r.get(7)?),
            trade_id,
        };
        let (fee, reason, updated_at) = (r.get(8)?, r.get(11)?, Timestamp(r.get(12)?));
        out.push((seq, Obligation { trade, fee, state, attempts, reason, updated_at, blocks }));
    }
    Ok(out)
}

/// An account id as stored (as the trade's JSON was read before: not checked again).
fn stored_account(id: String) -> Result<AccountId, String> {
    serde_json::from_value(serde_json::Value::String(id)).map_err(|e| e.to_string())
}

/// Marks a chunk submitted (a failed one retried first), one more attempt each, in one
/// transaction. `seqs` are the obligations' sequence numbers, ascending.
///
/// The chunk is every open obligation in its range of sequence numbers (`OPEN_CHUNK`),
/// so one UPDATE per state and attempts read moves them all, over the index of open
/// obligations; it moves only rows still as this runner read them, and must move exactly
/// the obligations read so (a second runner on the same database, two processes or a
/// restart while the old one hangs, cannot move one twice). A failed obligation is retried
/// then submitted: one change of the row (retried is never committed), a record of each
/// step.
fn submit(
    tx: &Connection,
    seqs: &[i64],
    chunk: &mut [Obligation],
    at: Timestamp,
    auditing: bool,
    records: &mut Vec<serde_json::Value>,
) -> Result<(), SettlementError> {
    let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else { return Ok(()) };
    let mut groups: BTreeMap<(&'static str, u32), Vec<i64>> = BTreeMap::new();
    for (&seq, o) in seqs.iter().zip(chunk.iter()) {
        groups.entry((o.state.as_str(), o.attempts)).or_default().push(seq);
    }
    {
        let mut stmt = tx.prepare_cached(SUBMIT)?;
        for ((state, attempts), read) in groups {
            let attempts = i64::from(attempts);
            let mut rows = stmt.query(params![attempts + 1, at.0, first, last, state, attempts])?;
            let mut moved = Vec::with_capacity(read.len());
            while let Some(r) = rows.next()? {
                moved.push(r.get::<_, i64>(0)?);
            }
            moved.sort_unstable();
            if moved != read {
                // The first obligation read but not moved (or moved but not read).
                let seq = read.iter().zip(&moved).find(|(a, b)| a != b).map_or_else(
                    || if read.len() > moved.len() { read[moved.len()] } else { moved[read.len()] },
                    |(a, b)| *a.min(b),
                );
                let trade = seqs
                    .binary_search(&seq)
                    .map_or_else(|_| format!("#{seq}"), |i| chunk[i].trade.trade_id.clone());
                return Err(changed_under_runner(&trade));
            }
        }
    }
    for o in chunk.iter_mut() {
        if o.state == ObligationState::Failed {
            (o.state, o.reason, o.updated_at) = (ObligationState::Retried, None, at);
            if auditing {
                records.push(state_record(o));
            }
        }
        o.attempts += 1;
        (o.state, o.reason, o.updated_at) = (ObligationState::Submitted, None, at);
        if auditing {
            records.push(state_record(o));
        }
    }
    Ok(())
}

/// Records a chunk's outcomes: a delivery pays the seller and the fee.
#[allow(clippy::too_many_arguments)]
fn record(
    tx: &Connection,
    seqs: &[i64],
    chunk: &mut [Obligation],
    outcomes: Vec<Outcome>,
    at: Timestamp,
    report: &mut RunReport,
    auditing: bool,
    records: &mut Vec<serde_json::Value>,
) -> Result<(), SettlementError> {
    let mut funds = Movements::start(tx, at)?;
    let mut update = tx.prepare_cached(RECORD)?;
    for ((&seq, o), outcome) in seqs.iter().zip(chunk.iter_mut()).zip(outcomes) {
        let (state, reason, blocks_text) = match outcome {
            Outcome::Confirmed(blocks) => {
                let t = &o.trade;
                let (seller_paid, fees) = payout(o)?;
                funds.add(tx, seq, "receive", CLEARING_ACCOUNT, t.seller.as_str(), seller_paid)?;
                funds.add(tx, seq, "fee", CLEARING_ACCOUNT, FEE_ACCOUNT, fees)?;
                let text = crate::sqlite::encode_blocks(&blocks);
                o.blocks = blocks;
                report.confirmed += 1;
                if auditing {
                    records.push(serde_json::json!({
                        "trade": t.trade_id, "state": "confirmed", "seller_paid": seller_paid, "fee": fees,
                    }));
                }
                (ObligationState::Confirmed, None, Some(text))
            }
            Outcome::Broken(why) => {
                report.broken += 1;
                (ObligationState::Broken, Some(why), None)
            }
            Outcome::Failed(why) => {
                report.failed += 1;
                (ObligationState::Failed, Some(why), None)
            }
        };
        (o.state, o.reason, o.updated_at) = (state, reason, at);
        let changed = update.execute(params![o.state.as_str(), o.reason, at.0, blocks_text, seq])?;
        if changed != 1 {
            return Err(changed_under_runner(&o.trade.trade_id));
        }
        if auditing && state != ObligationState::Confirmed {
            records.push(state_record(o));
        }
    }
    funds.finish(tx)?;
    Ok(())
}

/// Creates the tables of a new database, or converts an older one, in one transaction under
/// the write lock (a second process opening the same database at once waits, then finds the
/// schema current).
fn setup_schema(conn: &mut Connection) -> Result<(), SettlementError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS settlement_schema (version INTEGER NOT NULL)")?;
    let version: Option<i64> =
        tx.query_row("SELECT version FROM settlement_schema", [], |r| r.get(0)).optional()?;
    let tables: i64 = tx.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'obligations'",
        [],
        |r| r.get(0),
    )?;
    match version {
        Some(SCHEMA_VERSION) => {}
        None if tables == 0 => {
            tx.execute_batch(SCHEMA_OBLIGATIONS)?;
            tx.execute_batch(SCHEMA_FUNDS)?;
            tx.execute("INSERT INTO settlement_schema (version) VALUES (?1)", params![SCHEMA_VERSION])?;
        }
        // Versions 1 and 2 created their tables before recording their version: a crash in
        // between left them empty, without a version.
        None => {
            let obligations: i64 = tx.query_row("SELECT COUNT(*) FROM obligations", [], |r| r.get(0))?;
            if obligations != 0 {
                return Err(SettlementError::Storage(format!(
                    "the database holds {obligations} obligations but no schema version"
                )));
            }
            tx.execute_batch(
                "DROP TABLE obligations; DROP TABLE IF EXISTS funds; DROP TABLE IF EXISTS balances;",
            )?;
            tx.execute_batch(SCHEMA_OBLIGATIONS)?;
            tx.execute_batch(SCHEMA_FUNDS)?;
            tx.execute("INSERT INTO settlement_schema (version) VALUES (?1)", params![SCHEMA_VERSION])?;
        }
        Some(v @ 1..=3) => {
            let convert = || {
                if v < 3 {
                    convert_v2(&tx)?;
                }
                convert_v3(&tx)
            };
            convert().map_err(|e| {
                SettlementError::Storage(format!(
                    "converting the version {v} database to version {SCHEMA_VERSION}: {e}"
                ))
            })?;
            tx.execute("UPDATE settlement_schema SET version = ?1", params![SCHEMA_VERSION])?;
        }
        Some(v) => {
            return Err(SettlementError::Storage(format!(
                "schema version {v} is not supported (this build reads {SCHEMA_VERSION})"
            )))
        }
    }
    tx.commit()?;
    Ok(())
}

/// Converts the tables of versions 1 and 2 to version 3 (then [`convert_v3`] goes on to version
/// 4). Version 2 added the `blocks` column
/// (the serial blocks of a confirmed obligation; version 1 has none, NULL: not recorded).
/// Obligations keep their sequence numbers, states and times, and their trades move from JSON
/// text to columns; funds movements keep their numbers and name their obligation by number
/// instead of by trade id.
fn convert_v2(tx: &Connection) -> Result<(), SettlementError> {
    let has_blocks = tx.prepare("SELECT blocks FROM obligations").is_ok();
    tx.execute_batch(
        "DROP INDEX IF EXISTS obligations_state;
         DROP INDEX IF EXISTS funds_account;
         DROP INDEX IF EXISTS funds_seq;
         DROP INDEX IF EXISTS funds_once;
         ALTER TABLE obligations RENAME TO obligations_v2;
         ALTER TABLE funds RENAME TO funds_v2;",
    )?;
    tx.execute_batch(SCHEMA_OBLIGATIONS)?;
    tx.execute_batch(SCHEMA_FUNDS_V3)?;
    let blocks = if has_blocks { "blocks" } else { "NULL" };
    let mut read = tx.prepare(&format!(
        "SELECT seq, trade_id, trade, fee, state, attempts, reason, updated_at, {blocks} FROM obligations_v2
         ORDER BY seq"
    ))?;
    let mut rows = read.query([])?;
    while let Some(r) = rows.next()? {
        let (seq, trade_id, text): (i64, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let t: TradeToSettle = serde_json::from_str(&text)
            .map_err(|e| SettlementError::Storage(format!("stored trade {trade_id}: {e}")))?;
        if t.trade_id != trade_id {
            return Err(SettlementError::Storage(format!(
                "stored trade {trade_id} has the id {}",
                t.trade_id
            )));
        }
        let qty = i64::try_from(t.qty).map_err(|_| {
            SettlementError::Storage(format!("stored trade {trade_id}: quantity out of range"))
        })?;
        tx.prepare_cached(
            "INSERT INTO obligations (seq, trade_id, instrument, buyer, seller, qty, price, traded_at, fee, state,
                 attempts, reason, updated_at, blocks)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?
        .execute(params![
            seq,
            trade_id,
            t.instrument.0,
            t.buyer.as_str(),
            t.seller.as_str(),
            qty,
            t.price,
            t.traded_at.0,
            r.get::<_, i64>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, Option<String>>(6)?,
            r.get::<_, i64>(7)?,
            r.get::<_, Option<String>>(8)?,
        ])?;
    }
    drop(rows);
    drop(read);
    // Each movement names its obligation by number instead of by trade id.
    let moved = tx.execute(
        "INSERT INTO funds (seq, account, obligation, kind, amount, at)
             SELECT f.seq, f.account, o.seq, f.kind, f.amount, f.at
             FROM funds_v2 f JOIN obligations o ON o.trade_id = f.trade_id ORDER BY f.seq",
        [],
    )?;
    let movements: i64 = tx.query_row("SELECT COUNT(*) FROM funds_v2", [], |r| r.get(0))?;
    let moved = moved as i64;
    if moved != movements {
        return Err(SettlementError::Storage(format!(
            "{} of {movements} funds movements are of no stored obligation",
            movements - moved
        )));
    }
    tx.execute_batch("DROP TABLE obligations_v2; DROP TABLE funds_v2; DROP TABLE IF EXISTS balances;")?;
    Ok(())
}

/// Rewrites the serial blocks of confirmed obligations from JSON (versions 2 and 3) to the
/// text of version 4 (`vintage:start-end`, comma-separated, of the trade's instrument).
fn blocks_to_text(tx: &Connection) -> Result<(), SettlementError> {
    let rows: Vec<(i64, String, i64, String)> = tx
        .prepare("SELECT seq, trade_id, instrument, blocks FROM obligations WHERE blocks IS NOT NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let mut update = tx.prepare("UPDATE obligations SET blocks = ?1 WHERE seq = ?2")?;
    for (seq, trade_id, instrument, json) in rows {
        let stored = |what: String| SettlementError::Storage(format!("stored obligation {trade_id}: {what}"));
        let blocks: Vec<SerialBlock> =
            serde_json::from_str(&json).map_err(|e| stored(format!("blocks: {e}")))?;
        if let Some(b) = blocks.iter().find(|b| i64::from(b.instrument.0) != instrument) {
            return Err(stored(format!(
                "a block of instrument {} in a trade of {instrument}",
                b.instrument.0
            )));
        }
        update.execute(params![crate::sqlite::encode_blocks(&blocks), seq])?;
    }
    Ok(())
}

/// Converts the funds of version 3 (a signed row per account: the buyer's payment as two rows,
/// a delivery as three) to version 4 (a row per movement from one account to another: the
/// payment from the buyer into clearing, and from clearing the seller's share and the fees),
/// keeping each movement's number (the credited row's), kind and time, and derives the
/// balances again. Every account must end with the balance its version 3 rows summed to.
fn convert_v3(tx: &Connection) -> Result<(), SettlementError> {
    tx.execute_batch(
        "DROP INDEX IF EXISTS funds_once;
         DROP TABLE IF EXISTS balances;
         ALTER TABLE funds RENAME TO funds_v3;",
    )?;
    tx.execute_batch(SCHEMA_FUNDS)?;
    blocks_to_text(tx)?;
    // The payment's debit row names the buyer; a delivery's `deliver` row (out of clearing) is
    // the sum of its `receive` and `fee` rows.
    tx.execute(
        "INSERT INTO funds (seq, obligation, kind, from_account, to_account, amount, at)
             SELECT f.seq, f.obligation, f.kind,
                    CASE f.kind WHEN 'pay' THEN
                        (SELECT d.account FROM funds_v3 d
                         WHERE d.obligation = f.obligation AND d.kind = 'pay' AND d.amount < 0)
                    ELSE ?1 END,
                    f.account, f.amount, f.at
             FROM funds_v3 f
             WHERE f.kind <> 'deliver' AND NOT (f.kind = 'pay' AND f.amount < 0)
             ORDER BY f.seq",
        params![CLEARING_ACCOUNT],
    )?;
    tx.execute_batch(concat!("INSERT INTO balances (account, balance) ", balances_of_movements!(), ";"))?;
    let mut stmt = tx.prepare(
        "SELECT o.account, o.balance, n.balance
         FROM (SELECT account, SUM(amount) AS balance FROM funds_v3 GROUP BY account) o
         LEFT JOIN balances n ON n.account = o.account
         WHERE n.balance IS NULL OR n.balance <> o.balance",
    )?;
    let differ: Option<(String, i64, Option<i64>)> =
        stmt.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()?;
    drop(stmt);
    if let Some((account, was, now)) = differ {
        return Err(SettlementError::Storage(format!(
            "account {account}: its movements summed to {was}, converted they sum to {now:?} \
             (a payment or delivery without all of its rows?)"
        )));
    }
    tx.execute_batch("DROP TABLE funds_v3;")?;
    Ok(())
}

/// Funds movements written per statement.
const FUNDS_PER_INSERT: usize = 64;

/// The funds movements of one transaction: rows numbered from the next free sequence number
/// (one read per transaction; this runner is the only writer, and a second one would fail on
/// the numbers, the funds' key, or on the obligations' state guard) and written
/// [`FUNDS_PER_INSERT`] at a time, and what they change in each account's balance, written
/// once per account when the transaction is done.
struct Movements<'a> {
    seq: i64,
    at: Timestamp,
    /// Rows not written yet: obligation, kind, from, to, amount.
    rows: Vec<(i64, &'static str, &'a str, &'a str, i64)>,
    changes: FxHashMap<&'a str, i128>,
    /// The statement that writes as many rows as `rows` holds (usually).
    sql: InsertFunds,
}

/// The statement that writes `len` funds movements.
struct InsertFunds {
    len: usize,
    text: String,
}

impl InsertFunds {
    fn len(&self) -> usize {
        self.len
    }
}

/// The values a funds row binds after the time.
const FUNDS_VALUES: usize = 6;

/// `INSERT INTO funds` of `len` rows; parameter 1 is the time, the rows' values follow.
fn insert_funds_sql(len: usize) -> InsertFunds {
    let mut text = String::from(
        "INSERT INTO funds (seq, obligation, kind, from_account, to_account, amount, at) VALUES ",
    );
    for i in 0..len {
        let p = 2 + FUNDS_VALUES * i;
        let sep = if i == 0 { "" } else { ", " };
        let values: Vec<String> = (p..p + FUNDS_VALUES).map(|n| format!("?{n}")).collect();
        text.push_str(&format!("{sep}({}, ?1)", values.join(", ")));
    }
    InsertFunds { len, text }
}

impl<'a> Movements<'a> {
    fn start(tx: &Connection, at: Timestamp) -> Result<Movements<'a>, SettlementError> {
        let seq = tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM funds", [], |r| r.get(0))?;
        Ok(Movements {
            seq,
            at,
            rows: Vec::with_capacity(FUNDS_PER_INSERT),
            changes: FxHashMap::default(),
            sql: insert_funds_sql(FUNDS_PER_INSERT),
        })
    }

    /// Moves `amount` of an obligation from one account to another.
    fn add(
        &mut self,
        tx: &Connection,
        obligation: i64,
        kind: &'static str,
        from: &'a str,
        to: &'a str,
        amount: i64,
    ) -> Result<(), SettlementError> {
        self.rows.push((obligation, kind, from, to, amount));
        *self.changes.entry(from).or_default() -= i128::from(amount);
        *self.changes.entry(to).or_default() += i128::from(amount);
        if self.rows.len() == FUNDS_PER_INSERT {
            self.flush(tx)?;
        }
        Ok(())
    }

    /// Writes the rows not written yet, in one statement.
    fn flush(&mut self, tx: &Connection) -> Result<(), SettlementError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        if self.sql.len() != self.rows.len() {
            self.sql = insert_funds_sql(self.rows.len());
        }
        let mut stmt = tx.prepare_cached(&self.sql.text)?;
        stmt.raw_bind_parameter(1, self.at.0)?;
        for (i, (obligation, kind, from, to, amount)) in self.rows.drain(..).enumerate() {
            let p = 2 + FUNDS_VALUES * i;
            stmt.raw_bind_parameter(p, self.seq)?;
            stmt.raw_bind_parameter(p + 1, obligation)?;
            stmt.raw_bind_parameter(p + 2, kind)?;
            stmt.raw_bind_parameter(p + 3, from)?;
            stmt.raw_bind_parameter(p + 4, to)?;
            stmt.raw_bind_parameter(p + 5, amount)?;
            self.seq += 1;
        }
        stmt.raw_execute()?;
        Ok(())
    }

    /// Writes the rows left and adds the changes to the balances (each account's balance is
    /// what its movements brought in less what they took out).
    fn finish(mut self, tx: &Connection) -> Result<(), SettlementError> {
        self.flush(tx)?;
        let mut read = tx.prepare_cached("SELECT balance FROM balances WHERE account = ?1")?;
        let mut write = tx.prepare_cached(
            "INSERT INTO balances (account, balance) VALUES (?1, ?2)
             ON CONFLICT (account) DO UPDATE SET balance = excluded.balance",
        )?;
        let mut changes: Vec<(&str, i128)> = self.changes.into_iter().collect();
        changes.sort_unstable();
        for (account, change) in changes {
            let balance: Option<i64> = read.query_row(params![account], |r| r.get(0)).optional()?;
            let balance = i64::try_from(i128::from(balance.unwrap_or(0)) + change)
                .map_err(|_| SettlementError::Storage(format!("the balance of {account} overflows")))?;
            write.execute(params![account, balance])?;
        }
        Ok(())
    }
}

/// What a delivery pays out of clearing (the buyer's payment, value + fee): the seller's
/// share (value - fee) and the fees (2 x fee).
fn payout(o: &Obligation) -> Result<(i64, i64), SettlementError> {
    let t = &o.trade;
    let overflow = || SettlementError::Storage(format!("trade {}: amounts overflow", t.trade_id));
    let value = i64::try_from(t.qty).ok().and_then(|q| q.checked_mul(t.price)).ok_or_else(overflow)?;
    let fees = o.fee.checked_mul(2).ok_or_else(overflow)?;
    Ok((value - o.fee, fees))
}

/// The audit record of a state change.
fn state_record(o: &Obligation) -> serde_json::Value {
    serde_json::json!({
        "trade": o.trade.trade_id, "state": o.state.as_str(), "attempts": o.attempts, "reason": o.reason,
    })
}

/// An obligation's certificate leg: its proposal, posted at once if the registry accepts it.
fn delivery_of(o: &Obligation) -> Result<BatchOp, SettlementError> {
    let t = &o.trade;
    let propose = ProposeTransfer {
        id: o.transfer_id()?,
        from: t.seller.clone(),
        to: t.buyer.clone(),
        instrument: t.instrument,
        quantity: t.qty,
        vintage: None,
    };
    Ok(BatchOp::ProposeAndPost(ProposeAndPost { propose, post_id: o.post_id()? }))
}

/// Whether a transfer the registry holds under an obligation's id moves what the trade says.
fn is_transfer_of(t: &Transfer, o: &Obligation) -> bool {
    let trade = &o.trade;
    t.from == trade.seller
        && t.to == trade.buyer
        && t.instrument == trade.instrument
        && t.quantity == trade.qty
}

/// The certificate legs of a chunk, with the obligations' fixed request ids: one batch of
/// proposals, each posted at once if accepted. `Ok` is a completed transfer.
fn deliver_chunk(
    registry: &mut dyn Registry,
    chunk: &[Obligation],
    at: Timestamp,
) -> Vec<Result<Transfer, SettlementError>> {
    let mut results: Vec<Result<Transfer, SettlementError>> = Vec::with_capacity(chunk.len());
    let (mut ops, mut sent) = (Vec::with_capacity(chunk.len()), Vec::with_capacity(chunk.len()));
    for (i, o) in chunk.iter().enumerate() {
        match delivery_of(o) {
            Ok(op) => {
                ops.push(op);
                sent.push(i);
                // Replaced by the answer below.
                results.push(Err(SettlementError::Storage("not answered".into())));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    for (i, answer) in sent.into_iter().zip(batch_answers(registry, &ops, at)) {
        results[i] = match answer {
            Ok(t) if t.status == TransferStatus::Completed => Ok(t),
            Ok(t) => Err(RegistryError::TransferNotPending { transfer: t.id, status: t.status }.into()),
            Err(e) => Err(e.into()),
        };
    }
    results
}

/// A batch's answers, one per operation: a batch that got no answer (or a short one) is no
/// answer for each of its operations.
fn batch_answers(registry: &mut dyn Registry, ops: &[BatchOp], at: Timestamp) -> BatchAnswers {
    if ops.is_empty() {
        return Vec::new();
    }
    let why = match registry.apply_batch(ops, at) {
        Ok(answers) if answers.len() == ops.len() => return answers,
        Ok(answers) => format!("the registry answered {} of {} operations", answers.len(), ops.len()),
        Err(e) => format!("no answer to the batch: {e}"),
    };
    ops.iter().map(|_| Err(RegistryError::Storage(why.clone()))).collect()
}

/// Appends `records` (obligation records) to the audit trail and syncs it: called just before
/// the transaction that makes the changes they describe commits, so that no committed change
/// lacks its record. A crash (or a failed commit) between the two leaves records of changes
/// that did not happen; the retry that follows writes them again.
fn write_ahead(
    audit: &mut Option<AuditLog>,
    at: Timestamp,
    records: impl IntoIterator<Item = serde_json::Value>,
) -> Result<(), SettlementError> {
    let Some(log) = audit.as_mut() else { return Ok(()) };
    let failed = |e: crate::audit::AuditError| SettlementError::Storage(e.to_string());
    for data in records {
        log.append(at.0, "obligation", data).map_err(failed)?;
    }
    log.sync().map_err(failed)
}

fn changed_under_runner(trade_id: &str) -> SettlementError {
    SettlementError::Storage(format!(
        "obligation {trade_id} changed under this runner (another settlement process?)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The condition of the index of open obligations is [`ObligationState::is_open`].
    #[test]
    fn the_open_condition_is_the_open_states() {
        let conn = Connection::open_in_memory().unwrap();
        use ObligationState::*;
        for state in [Created, Submitted, Confirmed, Failed, Retried, Broken] {
            let sql = concat!("SELECT ", open_states!(), " FROM (SELECT ?1 AS state)");
            let open: bool = conn.query_row(sql, [state.as_str()], |r| r.get(0)).unwrap();
            assert_eq!(open, state.is_open(), "{state:?}");
        }
    }

    /// A completed transfer that moved serials of another instrument than the trade's is a
    /// break, never a confirmation (the blocks are stored without their instrument).
    #[test]
    fn a_delivery_of_another_instrument_is_a_break() {
        let account = |a: &str| AccountId::new(a).unwrap();
        let trade = TradeToSettle {
            trade_id: "T1".into(),
            instrument: InstrumentId(1),
            buyer: account("B"),
            seller: account("S"),
            qty: 2,
            price: 10,
            traded_at: Timestamp(1),
        };
        let o = Obligation {
            trade,
            fee: 0,
            state: ObligationState::Submitted,
            attempts: 1,
            reason: None,
            updated_at: Timestamp(2),
            blocks: Vec::new(),
        };
        let block = |instrument| SerialBlock {
            instrument: InstrumentId(instrument),
            vintage: crate::Vintage(2024),
            start: 1,
            end: 2,
        };
        let transfer = |instrument| Transfer {
            id: RequestId::new("T1:p").unwrap(),
            from: account("S"),
            to: account("B"),
            instrument: InstrumentId(1),
            vintage: None,
            quantity: 2,
            status: TransferStatus::Completed,
            blocks: vec![block(instrument)],
            proposed_at: Timestamp(2),
            resolved_at: Some(Timestamp(2)),
        };
        assert!(matches!(Outcome::delivered(&o, transfer(1)), Outcome::Confirmed(b) if b == vec![block(1)]));
        assert!(
            matches!(Outcome::delivered(&o, transfer(2)), Outcome::Broken(why) if why.contains("instrument 2"))
        );
    }

    /// A run reads and submits open obligations over the index of open obligations, not by
    /// scanning all of them.
    #[test]
    fn runs_go_over_the_index_of_open_obligations() {
        let s = Settlement::open_in_memory(SettlementConfig::default()).unwrap();
        let plan = |sql: &str, args: usize| -> String {
            let mut stmt = s.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let params: Vec<i64> = vec![0; args];
            let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| r.get::<_, String>(3)).unwrap();
            rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("; ")
        };
        let read = plan(&format!("SELECT {OBLIGATION_COLUMNS} FROM obligations {OPEN_CHUNK}"), 2);
        assert!(read.contains("USING INDEX obligations_open"), "{read}");
        let submit = plan(SUBMIT, 6);
        assert!(submit.contains("USING INDEX obligations_open"), "{submit}");
    }
}
