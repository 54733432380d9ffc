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
use crate::registry::Registry;
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

/// The largest value of one trade (price x quantity) settlement takes: sums of many trades
/// stay far inside 64 bits.
pub const TRADE_VALUE_MAX: i64 = 1_000_000_000_000_000;

/// The settlement state machine over its database.
pub struct Settlement {
    conn: Connection,
    config: SettlementConfig,
    audit: Option<AuditLog>,
}

impl Settlement {
    /// Opens (or creates) the settlement database in a file.
    pub fn open(path: impl AsRef<Path>, config: SettlementConfig) -> Result<Settlement, SettlementError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
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
        Ok(Settlement { conn, config, audit: None })
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

    fn sync_audit(&mut self) -> Result<(), SettlementError> {
        match self.audit.as_mut() {
            Some(log) => log.sync().map_err(|e| SettlementError::Storage(e.to_string())),
            None => Ok(()),
        }
    }

    /// Records trades as obligations (each buyer's payment goes into clearing). A trade already
    /// recorded with the same fields is skipped; under a used id with other fields it is
    /// refused, and nothing of the batch is recorded. Returns how many were new.
    pub fn add_trades(&mut self, trades: &[TradeToSettle], at: Timestamp) -> Result<usize, SettlementError> {
        let tx = self.conn.transaction()?;
        let mut added = 0;
        let mut inserted = Vec::new();
        let mut seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM obligations", [], |r| r.get(0))?;
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
            let existing: Option<String> = tx
                .query_row("SELECT trade FROM obligations WHERE trade_id = ?1", params![t.trade_id], |r| {
                    r.get(0)
                })
                .optional()?;
            match existing {
                Some(stored) if stored == text => continue,
                Some(_) => return Err(bad("already recorded with other fields")),
                None => {}
            }
            seq += 1;
            tx.execute(
                "INSERT INTO obligations (trade_id, seq, trade, buyer, seller, fee, state, attempts, reason, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, NULL, ?8)",
                params![
                    t.trade_id,
                    seq,
                    text,
                    t.buyer.as_str(),
                    t.seller.as_str(),
                    fee,
                    ObligationState::Created.as_str(),
                    at.0
                ],
            )?;
            let paid = value.checked_add(fee).ok_or_else(|| bad("value plus fee overflows"))?;
            insert_funds(&tx, t.buyer.as_str(), &t.trade_id, "pay", -paid, at)?;
            insert_funds(&tx, CLEARING_ACCOUNT, &t.trade_id, "pay", paid, at)?;
            added += 1;
            inserted.push(t.clone());
        }
        tx.commit()?;
        for t in &inserted {
            self.audit(at, "obligation", serde_json::json!({"trade": t, "state": "created"}))?;
        }
        self.sync_audit()?;
        Ok(added)
    }

    /// Works every open obligation once, oldest first: submits it to the registry (or
    /// resumes it after a crash or a failed attempt) and records the outcome.
    pub fn run(&mut self, registry: &mut dyn Registry, at: Timestamp) -> Result<RunReport, SettlementError> {
        let mut report = RunReport::default();
        for mut o in self.open_obligations()? {
            if matches!(o.state, ObligationState::Failed) {
                self.set_state(&mut o, ObligationState::Retried, None, at)?;
            }
            o.attempts += 1;
            self.set_state(&mut o, ObligationState::Submitted, None, at)?;
            let delivered = self.deliver(registry, &o, at);
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
            match delivered {
                Ok(transfer) => {
                    self.confirm(&mut o, &transfer, at)?;
                    report.confirmed += 1;
                }
                Err(SettlementError::Registry(e)) if e.is_answer() => {
                    self.set_state(&mut o, ObligationState::Broken, Some(e.to_string()), at)?;
                    report.broken += 1;
                }
                Err(e) if o.attempts >= self.config.max_attempts => {
                    // Out of attempts: ask the registry what became of the transfer before
                    // giving up, so that a delivery whose answer was lost is not a break.
                    match self.give_up(registry, &o, at, &e.to_string())? {
                        Verdict::Delivered(transfer) => {
                            self.confirm(&mut o, &transfer, at)?;
                            report.confirmed += 1;
                        }
                        Verdict::Break(why) => {
                            self.set_state(&mut o, ObligationState::Broken, Some(why), at)?;
                            report.broken += 1;
                        }
                        Verdict::InDoubt(why) => {
                            // Not final: the registry could not say; the next run asks again.
                            self.set_state(&mut o, ObligationState::Failed, Some(why), at)?;
                            report.failed += 1;
                        }
                    }
                }
                Err(e) => {
                    self.set_state(&mut o, ObligationState::Failed, Some(e.to_string()), at)?;
                    report.failed += 1;
                }
            }
        }
        self.sync_audit()?;
        Ok(report)
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

    /// The certificate leg: propose then post, with the obligation's fixed request ids.
    /// Returns the completed transfer.
    fn deliver(
        &self,
        registry: &mut dyn Registry,
        o: &Obligation,
        at: Timestamp,
    ) -> Result<Transfer, SettlementError> {
        let t = &o.trade;
        let propose = ProposeTransfer {
            id: o.transfer_id()?,
            from: t.seller.clone(),
            to: t.buyer.clone(),
            instrument: t.instrument,
            quantity: t.qty,
            vintage: None,
        };
        let proposed = registry.propose(&propose, at)?;
        if proposed.status == TransferStatus::Rejected {
            return Err(
                RegistryError::TransferNotPending { transfer: proposed.id, status: proposed.status }.into()
            );
        }
        let posted = registry.post(&PostTransfer { id: o.post_id()?, transfer: o.transfer_id()? }, at)?;
        if posted.status != TransferStatus::Completed {
            return Err(
                RegistryError::TransferNotPending { transfer: posted.id, status: posted.status }.into()
            );
        }
        Ok(posted)
    }

    /// Records the delivery (with the blocks `transfer` moved) and pays the seller and the
    /// fee, in one transaction.
    fn confirm(
        &mut self,
        o: &mut Obligation,
        transfer: &Transfer,
        at: Timestamp,
    ) -> Result<(), SettlementError> {
        let t = &o.trade;
        let overflow = || SettlementError::Storage(format!("trade {}: amounts overflow", t.trade_id));
        let value = i64::try_from(t.qty).ok().and_then(|q| q.checked_mul(t.price)).ok_or_else(overflow)?;
        let paid = value.checked_add(o.fee).ok_or_else(overflow)?;
        let fees = o.fee.checked_mul(2).ok_or_else(overflow)?;
        let tx = self.conn.transaction()?;
        insert_funds(&tx, CLEARING_ACCOUNT, &t.trade_id, "deliver", -paid, at)?;
        insert_funds(&tx, t.seller.as_str(), &t.trade_id, "receive", value - o.fee, at)?;
        insert_funds(&tx, FEE_ACCOUNT, &t.trade_id, "fee", fees, at)?;
        update_state(&tx, o, ObligationState::Confirmed, None, at)?;
        let blocks =
            serde_json::to_string(&transfer.blocks).map_err(|e| SettlementError::Storage(e.to_string()))?;
        tx.execute("UPDATE obligations SET blocks = ?1 WHERE trade_id = ?2", params![blocks, t.trade_id])?;
        tx.commit()?;
        (o.state, o.blocks) = (ObligationState::Confirmed, transfer.blocks.clone());
        let data = serde_json::json!({
            "trade": t.trade_id, "state": "confirmed", "seller_paid": value - o.fee, "fee": fees,
        });
        self.audit(at, "obligation", data)
    }

    fn set_state(
        &mut self,
        o: &mut Obligation,
        state: ObligationState,
        reason: Option<String>,
        at: Timestamp,
    ) -> Result<(), SettlementError> {
        let tx = self.conn.transaction()?;
        update_state(&tx, o, state, reason.clone(), at)?;
        tx.commit()?;
        (o.state, o.reason, o.updated_at) = (state, reason, at);
        let data = serde_json::json!({
            "trade": o.trade.trade_id, "state": state.as_str(), "attempts": o.attempts, "reason": o.reason,
        });
        self.audit(at, "obligation", data)
    }

    fn open_obligations(&self) -> Result<Vec<Obligation>, SettlementError> {
        let open: Vec<&str> = [
            ObligationState::Created,
            ObligationState::Submitted,
            ObligationState::Failed,
            ObligationState::Retried,
        ]
        .iter()
        .map(|s| s.as_str())
        .collect();
        self.query(
            "WHERE state IN (?1, ?2, ?3, ?4) ORDER BY seq",
            params![open[0], open[1], open[2], open[3]],
        )
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
        let sql = format!(
            "SELECT trade, fee, state, attempts, reason, updated_at, blocks FROM obligations {clause}"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(args, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<String>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (trade, fee, state, attempts, reason, updated_at, blocks) = row?;
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
            out.push(Obligation { trade, fee, state, attempts, reason, updated_at, blocks });
        }
        Ok(out)
    }
}

fn insert_funds(
    tx: &rusqlite::Transaction<'_>,
    account: &str,
    trade_id: &str,
    kind: &str,
    amount: i64,
    at: Timestamp,
) -> Result<(), SettlementError> {
    let seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM funds", [], |r| r.get(0))?;
    tx.execute(
        "INSERT INTO funds (seq, account, trade_id, kind, amount, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![seq, account, trade_id, kind, amount, at.0],
    )?;
    Ok(())
}

fn update_state(
    tx: &rusqlite::Transaction<'_>,
    o: &Obligation,
    state: ObligationState,
    reason: Option<String>,
    at: Timestamp,
) -> Result<(), SettlementError> {
    // Only from the state this runner read: a second runner on the same database (two
    // processes, a restart while the old one hangs) cannot move it twice.
    let changed = tx.execute(
        "UPDATE obligations SET state = ?1, attempts = ?2, reason = ?3, updated_at = ?4
         WHERE trade_id = ?5 AND state = ?6",
        params![state.as_str(), i64::from(o.attempts), reason, at.0, o.trade.trade_id, o.state.as_str()],
    )?;
    if changed != 1 {
        return Err(SettlementError::Storage(format!(
            "obligation {} changed under this runner (another settlement process?)",
            o.trade.trade_id
        )));
    }
    Ok(())
}
