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
//!   marked submitted in one transaction, proposed in one registry batch, posted in another,
//!   and its outcomes recorded in one transaction, each obligation's outcome the same as if it
//!   went alone. A batch without an answer is no answer for each obligation in it.
//!
//! Storage is SQLite through `rusqlite` with portable SQL (PostgreSQL comes next): every
//! change is one transaction; times are passed in, never read from a clock.
//!
//! A confirmed obligation keeps the serial blocks its completed transfer moved (column
//! `blocks`, JSON; schema version 2, a version 1 database gains the column when opened), so
//! [reconciliation](crate::reconcile) can compare serial blocks without asking the registry
//! for every transfer.

use std::path::Path;

use cccx_engine::types::{InstrumentId, Qty};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::audit::AuditLog;
use crate::error::RegistryError;
use crate::registry::{BatchAnswers, BatchOp, Registry};
use crate::types::{
    AccountId, PostTransfer, ProposeTransfer, RequestId, SerialBlock, Timestamp, Transfer, TransferStatus,
    VoidTransfer,
};

/// The longest trade id (the registry's request ids add two characters).
pub const TRADE_ID_LENGTH_MAX: usize = 62;
/// The funds account that collects the exchange's fees.
pub const FEE_ACCOUNT: &str = "EXCHANGE-FEES";
/// The funds account that holds buyers' payments until delivery.
pub const CLEARING_ACCOUNT: &str = "CLEARING";
const SCHEMA_VERSION: i64 = 2;

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

/// The most obligations [`Settlement::run`] takes at once: one transaction marks them
/// submitted, one registry batch proposes, one posts, one transaction records the outcomes.
pub const RUN_CHUNK_MAX: usize = 1024;

/// The largest value of one trade (price x quantity) settlement takes: sums of many trades
/// stay far inside 64 bits.
pub const TRADE_VALUE_MAX: i64 = 1_000_000_000_000_000;

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

    fn with_connection(conn: Connection, config: SettlementConfig) -> Result<Settlement, SettlementError> {
        if config.fee_bps > 10_000 {
            return Err(SettlementError::Storage(format!(
                "fee_bps {} is more than the whole value (10000)",
                config.fee_bps
            )));
        }
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(64);
        crate::sqlite::stable_plans(&conn)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS settlement_schema (version INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS obligations (
                 trade_id VARCHAR(64) PRIMARY KEY,
                 seq INTEGER NOT NULL,
                 trade TEXT NOT NULL,
                 buyer VARCHAR(64) NOT NULL,
                 seller VARCHAR(64) NOT NULL,
                 fee BIGINT NOT NULL,
                 state VARCHAR(16) NOT NULL,
                 attempts INTEGER NOT NULL,
                 reason TEXT,
                 updated_at BIGINT NOT NULL,
                 blocks TEXT
             );
             CREATE INDEX IF NOT EXISTS obligations_state ON obligations (state, seq);
             CREATE TABLE IF NOT EXISTS funds (
                 seq INTEGER NOT NULL,
                 account VARCHAR(64) NOT NULL,
                 trade_id VARCHAR(64) NOT NULL,
                 kind VARCHAR(16) NOT NULL,
                 amount BIGINT NOT NULL,
                 at BIGINT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS funds_account ON funds (account);
             CREATE INDEX IF NOT EXISTS funds_seq ON funds (seq);
             CREATE UNIQUE INDEX IF NOT EXISTS funds_once ON funds (trade_id, account, kind);",
        )?;
        let version: Option<i64> =
            conn.query_row("SELECT version FROM settlement_schema", [], |r| r.get(0)).optional()?;
        match version {
            None => {
                conn.execute("INSERT INTO settlement_schema (version) VALUES (?1)", params![SCHEMA_VERSION])?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(1) => {
                // Version 2 adds the blocks of each completed transfer (NULL: not recorded).
                let tx = conn.unchecked_transaction()?;
                tx.execute_batch(
                    "ALTER TABLE obligations ADD COLUMN blocks TEXT;
                     UPDATE settlement_schema SET version = 2;",
                )?;
                tx.commit()?;
            }
            Some(v) => {
                return Err(SettlementError::Storage(format!(
                    "schema version {v} is not supported (this build reads {SCHEMA_VERSION})"
                )))
            }
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

    fn audit(&mut self, at: Timestamp, kind: &str, data: serde_json::Value) -> Result<(), SettlementError> {
        if let Some(log) = self.audit.as_mut() {
            log.append(at.0, kind, data).map_err(|e| SettlementError::Storage(e.to_string()))?;
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
        let mut funds_seq = next_funds_seq(&tx)?;
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
            let value = i64::try_from(t.qty)
                .ok()
                .and_then(|q| q.checked_mul(t.price))
                .filter(|v| *v <= TRADE_VALUE_MAX)
                .ok_or_else(|| bad("value overflows the largest trade value settlement takes"))?;
            let fee = i64::try_from(i128::from(value) * i128::from(self.config.fee_bps) / 10_000)
                .map_err(|_| bad("fee overflows"))?;
            let text = serde_json::to_string(t).map_err(|e| bad(&e.to_string()))?;
            // Insert unless the id is taken; only then read what is stored under it.
            let changed = tx
                .prepare_cached(
                    "INSERT INTO obligations (trade_id, seq, trade, buyer, seller, fee, state, attempts, reason, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, NULL, ?8)
                     ON CONFLICT (trade_id) DO NOTHING",
                )?
                .execute(params![
                    t.trade_id,
                    seq + 1,
                    text,
                    t.buyer.as_str(),
                    t.seller.as_str(),
                    fee,
                    ObligationState::Created.as_str(),
                    at.0
                ])?;
            if changed == 0 {
                let stored: String = tx
                    .prepare_cached("SELECT trade FROM obligations WHERE trade_id = ?1")?
                    .query_row(params![t.trade_id], |r| r.get(0))?;
                if stored == text {
                    continue;
                }
                return Err(bad("already recorded with other fields"));
            }
            seq += 1;
            let paid = value.checked_add(fee).ok_or_else(|| bad("value plus fee overflows"))?;
            insert_funds(&tx, &mut funds_seq, t.buyer.as_str(), &t.trade_id, "pay", -paid, at)?;
            insert_funds(&tx, &mut funds_seq, CLEARING_ACCOUNT, &t.trade_id, "pay", paid, at)?;
            added += 1;
            inserted.push(t.clone());
        }
        let records = inserted.iter().map(|t| serde_json::json!({"trade": t, "state": "created"}));
        write_ahead(&mut self.audit, at, records)?;
        tx.commit()?;
        Ok(added)
    }

    /// Works every open obligation once, oldest first: submits it to the registry (or
    /// resumes it after a crash or a failed attempt) and records the outcome.
    ///
    /// Obligations go in chunks of up to [`RUN_CHUNK_MAX`]: one transaction marks the chunk
    /// submitted (committed before the registry is called), one registry batch proposes, one
    /// posts what was accepted, one transaction records every outcome, and the audit trail is
    /// synced once. Each obligation's outcome is what it would be alone.
    pub fn run(&mut self, registry: &mut dyn Registry, at: Timestamp) -> Result<RunReport, SettlementError> {
        let mut report = RunReport::default();
        let mut after_seq = 0;
        loop {
            let (mut chunk, last_seq) = self.open_chunk(after_seq)?;
            let Some(last_seq) = last_seq else { break };
            after_seq = last_seq;
            self.submit(&mut chunk, at)?;
            let delivered = deliver_chunk(registry, &chunk, at);
            let mut outcomes = Vec::with_capacity(chunk.len());
            for (o, delivered) in chunk.iter().zip(delivered) {
                outcomes.push(self.outcome(registry, o, delivered, at)?);
            }
            self.record(&mut chunk, outcomes, at, &mut report)?;
        }
        Ok(report)
    }

    /// Marks a chunk submitted (a failed one retried first), one more attempt each, in one
    /// transaction.
    fn submit(&mut self, chunk: &mut [Obligation], at: Timestamp) -> Result<(), SettlementError> {
        let tx = self.conn.transaction()?;
        let mut records = Vec::with_capacity(chunk.len());
        for o in chunk.iter_mut() {
            if o.state == ObligationState::Failed {
                update_state(&tx, o, ObligationState::Retried, None, None, at)?;
                (o.state, o.reason, o.updated_at) = (ObligationState::Retried, None, at);
                records.push(state_record(o));
            }
            o.attempts += 1;
            update_state(&tx, o, ObligationState::Submitted, None, None, at)?;
            (o.state, o.reason, o.updated_at) = (ObligationState::Submitted, None, at);
            records.push(state_record(o));
        }
        write_ahead(&mut self.audit, at, records)?;
        tx.commit()?;
        Ok(())
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
        let answer = match &delivered {
            Ok(_) => "completed".to_string(),
            Err(e) => e.to_string(),
        };
        let transfer = o.transfer_id()?.to_string();
        self.audit(
            at,
            "registry",
            serde_json::json!({"trade": o.trade.trade_id, "transfer": transfer, "answer": answer}),
        )?;
        Ok(match delivered {
            Ok(t) => Outcome::Confirmed(t.blocks),
            Err(SettlementError::Registry(e)) if e.is_answer() => Outcome::Broken(e.to_string()),
            // Out of attempts: ask the registry what became of the transfer before giving up,
            // so that a delivery whose answer was lost is not a break.
            Err(e) if o.attempts >= self.config.max_attempts => {
                match self.give_up(registry, o, at, &e.to_string())? {
                    Verdict::Delivered(t) => Outcome::Confirmed(t.blocks),
                    Verdict::Break(why) => Outcome::Broken(why),
                    // Not final: the registry could not say; the next run asks again.
                    Verdict::InDoubt(why) => Outcome::Failed(why),
                }
            }
            Err(e) => Outcome::Failed(e.to_string()),
        })
    }

    /// Records a chunk's outcomes in one transaction: a delivery pays the seller and the fee.
    fn record(
        &mut self,
        chunk: &mut [Obligation],
        outcomes: Vec<Outcome>,
        at: Timestamp,
        report: &mut RunReport,
    ) -> Result<(), SettlementError> {
        let tx = self.conn.transaction()?;
        let mut funds_seq = next_funds_seq(&tx)?;
        let mut records = Vec::with_capacity(chunk.len());
        for (o, outcome) in chunk.iter_mut().zip(outcomes) {
            let (state, reason, blocks_text) = match outcome {
                Outcome::Confirmed(blocks) => {
                    let t = &o.trade;
                    let (paid, seller_paid, fees) = payout(o)?;
                    insert_funds(&tx, &mut funds_seq, CLEARING_ACCOUNT, &t.trade_id, "deliver", -paid, at)?;
                    insert_funds(
                        &tx,
                        &mut funds_seq,
                        t.seller.as_str(),
                        &t.trade_id,
                        "receive",
                        seller_paid,
                        at,
                    )?;
                    insert_funds(&tx, &mut funds_seq, FEE_ACCOUNT, &t.trade_id, "fee", fees, at)?;
                    let text = serde_json::to_string(&blocks)
                        .map_err(|e| SettlementError::Storage(e.to_string()))?;
                    o.blocks = blocks;
                    report.confirmed += 1;
                    records.push(serde_json::json!({
                        "trade": t.trade_id, "state": "confirmed", "seller_paid": seller_paid, "fee": fees,
                    }));
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
            update_state(&tx, o, state, reason.clone(), blocks_text.as_deref(), at)?;
            (o.state, o.reason, o.updated_at) = (state, reason, at);
            if state != ObligationState::Confirmed {
                records.push(state_record(o));
            }
        }
        write_ahead(&mut self.audit, at, records)?;
        tx.commit()?;
        Ok(())
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

    /// The next open obligations after `after_seq`, oldest first, at most one chunk, and the
    /// sequence number of the last of them.
    ///
    /// One indexed range per open state, each read in `seq` order and at most a chunk long,
    /// merged here: a single `state IN (...) ORDER BY seq` query sorts every open obligation
    /// after `after_seq` for each chunk, which made a run quadratic in its length.
    fn open_chunk(&self, after_seq: i64) -> Result<(Vec<Obligation>, Option<i64>), SettlementError> {
        let mut open = Vec::new();
        for state in [
            ObligationState::Created,
            ObligationState::Submitted,
            ObligationState::Failed,
            ObligationState::Retried,
        ] {
            open.extend(self.query_seq(
                "WHERE state = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                params![state.as_str(), after_seq, self.chunk as i64],
            )?);
        }
        open.sort_by_key(|(seq, _)| *seq);
        open.truncate(self.chunk);
        let last = open.last().map(|(seq, _)| *seq);
        Ok((open.into_iter().map(|(_, o)| o).collect(), last))
    }

    /// Every obligation, oldest first.
    pub fn obligations(&self) -> Result<Vec<Obligation>, SettlementError> {
        self.query("ORDER BY seq", params![])
    }

    /// One obligation by trade id.
    pub fn obligation(&self, trade_id: &str) -> Result<Option<Obligation>, SettlementError> {
        Ok(self.query("WHERE trade_id = ?1", params![trade_id])?.into_iter().next())
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

    /// The balance of a funds account in the exchange's ledger (negative: it paid more than it
    /// received).
    pub fn balance(&self, account: &str) -> Result<i64, SettlementError> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(SUM(amount), 0) FROM funds WHERE account = ?1",
            params![account],
            |r| r.get(0),
        )?)
    }

    /// Checks the ledger: every funds movement sums to zero per trade, clearing holds exactly
    /// the payments of obligations not confirmed, and the seller and fee were paid exactly for
    /// the confirmed ones.
    pub fn check(&self) -> Result<(), String> {
        let err = |e: SettlementError| e.to_string();
        let total: i64 = self
            .conn
            .query_row("SELECT COALESCE(SUM(amount), 0) FROM funds", [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        if total != 0 {
            return Err(format!("the funds ledger does not balance: {total}"));
        }
        let mut clearing = 0i128;
        for o in self.obligations().map_err(err)? {
            if o.state != ObligationState::Confirmed {
                clearing += i128::from(o.trade.price) * i128::from(o.trade.qty) + i128::from(o.fee);
            }
        }
        let held = i128::from(self.balance(CLEARING_ACCOUNT).map_err(err)?);
        if held != clearing {
            return Err(format!("clearing holds {held}, unconfirmed obligations {clearing}"));
        }
        Ok(())
    }

    fn query(&self, clause: &str, args: impl rusqlite::Params) -> Result<Vec<Obligation>, SettlementError> {
        Ok(self.query_seq(clause, args)?.into_iter().map(|(_, o)| o).collect())
    }

    /// Obligations with their sequence numbers.
    fn query_seq(
        &self,
        clause: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<(i64, Obligation)>, SettlementError> {
        let sql = format!(
            "SELECT trade, fee, state, attempts, reason, updated_at, blocks, seq FROM obligations {clause}"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(args, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (trade, fee, state, attempts, reason, updated_at, blocks, seq) = row?;
            let trade: TradeToSettle = serde_json::from_str(&trade)
                .map_err(|e| SettlementError::Storage(format!("stored trade: {e}")))?;
            let state = ObligationState::parse(&state)
                .ok_or_else(|| SettlementError::Storage(format!("unknown state {state}")))?;
            let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
            let blocks: Vec<SerialBlock> = match blocks {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| SettlementError::Storage(format!("stored blocks: {e}")))?,
                None => Vec::new(),
            };
            let updated_at = Timestamp(updated_at);
            out.push((seq, Obligation { trade, fee, state, attempts, reason, updated_at, blocks }));
        }
        Ok(out)
    }
}

/// The sequence number the next funds movement takes (one read per transaction; this runner is
/// the only writer, and a second one would fail on `funds_once` or the state guard).
fn next_funds_seq(tx: &rusqlite::Transaction<'_>) -> Result<i64, SettlementError> {
    Ok(tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM funds", [], |r| r.get(0))?)
}

fn insert_funds(
    tx: &rusqlite::Transaction<'_>,
    seq: &mut i64,
    account: &str,
    trade_id: &str,
    kind: &str,
    amount: i64,
    at: Timestamp,
) -> Result<(), SettlementError> {
    tx.prepare_cached(
        "INSERT INTO funds (seq, account, trade_id, kind, amount, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![*seq, account, trade_id, kind, amount, at.0])?;
    *seq += 1;
    Ok(())
}

/// What a delivery moves: the buyer's payment out of clearing, the seller's share, the fees.
fn payout(o: &Obligation) -> Result<(i64, i64, i64), SettlementError> {
    let t = &o.trade;
    let overflow = || SettlementError::Storage(format!("trade {}: amounts overflow", t.trade_id));
    let value = i64::try_from(t.qty).ok().and_then(|q| q.checked_mul(t.price)).ok_or_else(overflow)?;
    let paid = value.checked_add(o.fee).ok_or_else(overflow)?;
    let fees = o.fee.checked_mul(2).ok_or_else(overflow)?;
    Ok((paid, value - o.fee, fees))
}

/// The audit record of a state change.
fn state_record(o: &Obligation) -> serde_json::Value {
    serde_json::json!({
        "trade": o.trade.trade_id, "state": o.state.as_str(), "attempts": o.attempts, "reason": o.reason,
    })
}

/// The proposal of an obligation's certificate leg.
fn propose_of(o: &Obligation) -> Result<BatchOp, SettlementError> {
    let t = &o.trade;
    Ok(BatchOp::Propose(ProposeTransfer {
        id: o.transfer_id()?,
        from: t.seller.clone(),
        to: t.buyer.clone(),
        instrument: t.instrument,
        quantity: t.qty,
        vintage: None,
    }))
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
/// proposals, then one batch posting those accepted. `Ok` is a completed transfer.
fn deliver_chunk(
    registry: &mut dyn Registry,
    chunk: &[Obligation],
    at: Timestamp,
) -> Vec<Result<Transfer, SettlementError>> {
    let not_pending =
        |t: Transfer| Err(RegistryError::TransferNotPending { transfer: t.id, status: t.status }.into());
    let mut results: Vec<Result<Transfer, SettlementError>> = Vec::with_capacity(chunk.len());
    let (mut proposals, mut proposed) = (Vec::with_capacity(chunk.len()), Vec::with_capacity(chunk.len()));
    for (i, o) in chunk.iter().enumerate() {
        match propose_of(o) {
            Ok(op) => {
                proposals.push(op);
                proposed.push(i);
                // Replaced by the answer below.
                results.push(Err(SettlementError::Storage("not answered".into())));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    let (mut posts, mut posted) = (Vec::with_capacity(chunk.len()), Vec::with_capacity(chunk.len()));
    for (i, answer) in proposed.into_iter().zip(batch_answers(registry, &proposals, at)) {
        match answer {
            Ok(t) if t.status == TransferStatus::Rejected => results[i] = not_pending(t),
            Ok(_) => {
                let o = &chunk[i];
                let post = o.post_id().and_then(|id| Ok(PostTransfer { id, transfer: o.transfer_id()? }));
                match post {
                    Ok(post) => {
                        posts.push(BatchOp::Post(post));
                        posted.push(i);
                    }
                    Err(e) => results[i] = Err(e),
                }
            }
            Err(e) => results[i] = Err(e.into()),
        }
    }
    for (i, answer) in posted.into_iter().zip(batch_answers(registry, &posts, at)) {
        results[i] = match answer {
            Ok(t) if t.status == TransferStatus::Completed => Ok(t),
            Ok(t) => not_pending(t),
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

/// Moves an obligation to `state` (with the serial blocks its transfer moved, as JSON, when
/// it is confirmed; `None` keeps what is stored).
fn update_state(
    tx: &rusqlite::Transaction<'_>,
    o: &Obligation,
    state: ObligationState,
    reason: Option<String>,
    blocks: Option<&str>,
    at: Timestamp,
) -> Result<(), SettlementError> {
    // Only from the state this runner read: a second runner on the same database (two
    // processes, a restart while the old one hangs) cannot move it twice.
    let changed = tx
        .prepare_cached(
            "UPDATE obligations SET state = ?1, attempts = ?2, reason = ?3, updated_at = ?4,
                 blocks = COALESCE(?7, blocks)
             WHERE trade_id = ?5 AND state = ?6",
        )?
        .execute(params![
            state.as_str(),
            i64::from(o.attempts),
            reason,
            at.0,
            o.trade.trade_id,
            o.state.as_str(),
            blocks
        ])?;
    if changed != 1 {
        return Err(SettlementError::Storage(format!(
            "obligation {} changed under this runner (another settlement process?)",
            o.trade.trade_id
        )));
    }
    Ok(())
}
