//! Breaks with a status and a history, in the settlement database (portable SQL).
//!
//! - `recon_runs`: one row per recorded run (its window, when, how many breaks).
//! - `breaks`: one row per break, unique by (type, key): a break found again in a later run
//!   is the same break (its last run and texts are updated), never a new one.
//! - `break_events`: the history of each break: `opened`, `investigated`, `resolved` (with a
//!   reason and by whom), `not_found` (an unresolved break a run no longer finds: recorded,
//!   never resolved silently), `found_again` (after `not_found`), `reopened` (a resolved
//!   break found again: resolving says the discrepancy is gone).
//!
//! Every change is one transaction, and goes to the audit trail too when one is given.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{BreakStatus, BreakType, ReconcileError, Report};
use crate::audit::AuditLog;
use crate::types::Timestamp;

/// Who records the events of a run.
pub const RUN_ACTOR: &str = "reconcile";
/// The longest name or note a person gives, in bytes.
pub const NOTE_LENGTH_MAX: usize = 1000;

/// A stored break.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBreak {
    /// Its id.
    pub id: i64,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: BreakType,
    /// What it is about (see [`super::Break::key`]).
    pub key: String,
    /// What the exchange said when last found.
    pub expected: String,
    /// What the registry said when last found.
    pub actual: String,
    /// More detail, from the last run that found it.
    pub note: String,
    /// Where it stands.
    pub status: BreakStatus,
    /// Whether the last run found it.
    pub found: bool,
    /// The run that first found it.
    pub first_run: i64,
    /// The last run that found it.
    pub last_run: i64,
}

/// One event in a break's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakEvent {
    /// The break.
    pub break_id: i64,
    /// When.
    pub at: Timestamp,
    /// The run, for events a run recorded.
    pub run: Option<i64>,
    /// `opened`, `investigated`, `resolved`, `not_found`, `found_again` or `reopened`.
    pub action: String,
    /// Who.
    pub by: String,
    /// Why, or what was found.
    pub note: String,
}

/// What recording a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id.
    pub run: i64,
    /// Breaks found for the first time.
    pub opened: Vec<i64>,
    /// Resolved breaks found again.
    pub reopened: Vec<i64>,
    /// Unresolved breaks this run no longer finds.
    pub not_found: Vec<i64>,
}

/// The break store over its own connection to the settlement database.
pub struct BreakStore {
    conn: Connection,
    audit: Option<AuditLog>,
}

const SELECT: &str =
    "SELECT id, kind, break_key, expected, actual, note, status, found, first_run, last_run FROM breaks";

impl BreakStore {
    /// Opens the store in a database file (the settlement database), creating its tables.
    pub fn open(path: impl AsRef<Path>) -> Result<BreakStore, ReconcileError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        BreakStore::with_connection(conn)
    }

    /// A store in memory (tests).
    pub fn open_in_memory() -> Result<BreakStore, ReconcileError> {
        BreakStore::with_connection(Connection::open_in_memory()?)
    }

    fn with_connection(conn: Connection) -> Result<BreakStore, ReconcileError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS recon_runs (
                 id BIGINT PRIMARY KEY,
                 at BIGINT NOT NULL,
                 from_ns BIGINT NOT NULL,
                 as_of_ns BIGINT NOT NULL,
                 breaks BIGINT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS breaks (
                 id BIGINT PRIMARY KEY,
                 kind VARCHAR(32) NOT NULL,
                 break_key VARCHAR(200) NOT NULL,
                 expected TEXT NOT NULL,
                 actual TEXT NOT NULL,
                 note TEXT NOT NULL,
                 status VARCHAR(16) NOT NULL,
                 found INTEGER NOT NULL,
                 first_run BIGINT NOT NULL,
                 last_run BIGINT NOT NULL
             );
             CREATE UNIQUE INDEX IF NOT EXISTS breaks_key ON breaks (kind, break_key);
             CREATE INDEX IF NOT EXISTS breaks_status ON breaks (status);
             CREATE TABLE IF NOT EXISTS break_events (
                 break_id BIGINT NOT NULL,
                 seq BIGINT NOT NULL,
                 at BIGINT NOT NULL,
                 run BIGINT,
                 action VARCHAR(16) NOT NULL,
                 by_name VARCHAR(200) NOT NULL,
                 note TEXT NOT NULL
             );
             CREATE UNIQUE INDEX IF NOT EXISTS break_events_seq ON break_events (break_id, seq);",
        )?;
        Ok(BreakStore { conn, audit: None })
    }

    /// Records runs and break state changes in an audit trail too.
    pub fn with_audit(mut self, log: AuditLog) -> BreakStore {
        self.audit = Some(log);
        self
    }

    /// Records a run: every break of the report is opened, updated or reopened, every
    /// unresolved break it no longer finds gets a `not_found` event. Fills in the id and
    /// status of each break of the report.
    pub fn record(&mut self, report: &mut Report, at: Timestamp) -> Result<RunRecord, ReconcileError> {
        let tx = self.conn.transaction()?;
        let run: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM recon_runs", [], |r| r.get(0))?;
        tx.execute(
            "INSERT INTO recon_runs (id, at, from_ns, as_of_ns, breaks) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run, at.0, report.from.0, report.as_of.0, report.breaks.len() as i64],
        )?;
        let mut rec = RunRecord { run, ..RunRecord::default() };
        let mut events = Vec::new();
        let mut next_id: i64 =
            tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM breaks", [], |r| r.get(0))?;
        for b in report.breaks.iter_mut() {
            let existing: Option<(i64, String, i64)> = tx
                .query_row(
                    "SELECT id, status, found FROM breaks WHERE kind = ?1 AND break_key = ?2",
                    params![b.kind.as_str(), b.key],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let (id, status, action) = match existing {
                None => {
                    let id = next_id;
                    next_id += 1;
                    tx.execute(
                        "INSERT INTO breaks (id, kind, break_key, expected, actual, note, status, found, first_run, last_run)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?8)",
                        params![id, b.kind.as_str(), b.key, b.expected, b.actual, b.note, "open", run],
                    )?;
                    rec.opened.push(id);
                    (id, BreakStatus::Open, Some("opened"))
                }
                Some((id, status, found)) => {
                    let status = parse_status(&status)?;
                    let (status, action) = match status {
                        BreakStatus::Resolved => {
                            rec.reopened.push(id);
                            (BreakStatus::Open, Some("reopened"))
                        }
                        s if found == 0 => (s, Some("found_again")),
                        s => (s, None),
                    };
                    tx.execute(
                        "UPDATE breaks SET expected = ?1, actual = ?2, note = ?3, status = ?4, found = 1, last_run = ?5
                         WHERE id = ?6",
                        params![b.expected, b.actual, b.note, status.as_str(), run, id],
                    )?;
                    (id, status, action)
                }
            };
            (b.id, b.status) = (Some(id), Some(status));
            if let Some(action) = action {
                events.push((id, action, format!("{} {}", b.kind, b.key)));
            }
        }
        let gone: Vec<i64> = {
            let mut stmt = tx.prepare("SELECT id FROM breaks WHERE found = 1 AND last_run < ?1 AND status <> 'resolved' ORDER BY id")?;
            let rows = stmt.query_map(params![run], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for &id in &gone {
            tx.execute("UPDATE breaks SET found = 0 WHERE id = ?1", params![id])?;
            events.push((id, "not_found", format!("run {run} no longer finds it")));
        }
        rec.not_found = gone;
        for (id, action, note) in &events {
            insert_event(&tx, *id, at, Some(run), action, RUN_ACTOR, note)?;
        }
        // The audit records go first (written and synced), then the commit: no committed change
        // lacks its record.
        let data = serde_json::json!({
            "run": run, "from": report.from.0, "as_of": report.as_of.0, "breaks": report.breaks.len(),
            "counts": report.counts.iter().map(|(k, v)| (k.as_str(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
        });
        audit_to(&mut self.audit, at, "recon_run", data)?;
        for (id, action, note) in events {
            let data =
                serde_json::json!({"break": id, "run": run, "action": action, "by": RUN_ACTOR, "note": note});
            audit_to(&mut self.audit, at, "recon_break", data)?;
        }
        sync_to(&mut self.audit)?;
        tx.commit()?;
        report.run = Some(rec.clone());
        Ok(rec)
    }

    /// Marks a break as being investigated, with a note.
    pub fn investigate(
        &mut self,
        id: i64,
        by: &str,
        note: &str,
        at: Timestamp,
    ) -> Result<StoredBreak, ReconcileError> {
        self.change(id, by, note, at, BreakStatus::Investigating, "investigated")
    }

    /// Resolves a break, with a reason and by whom (neither may be empty).
    pub fn resolve(
        &mut self,
        id: i64,
        by: &str,
        reason: &str,
        at: Timestamp,
    ) -> Result<StoredBreak, ReconcileError> {
        self.change(id, by, reason, at, BreakStatus::Resolved, "resolved")
    }

    fn change(
        &mut self,
        id: i64,
        by: &str,
        note: &str,
        at: Timestamp,
        status: BreakStatus,
        action: &str,
    ) -> Result<StoredBreak, ReconcileError> {
        for (what, text) in [("a name (by)", by), ("a note or reason", note)] {
            if text.trim().is_empty() || text.len() > NOTE_LENGTH_MAX {
                return Err(ReconcileError::Invalid(format!(
                    "{action} needs {what} of 1 to {NOTE_LENGTH_MAX} bytes"
                )));
            }
        }
        let current = self.get(id)?.ok_or(ReconcileError::UnknownBreak(id))?;
        if current.status == BreakStatus::Resolved {
            return Err(ReconcileError::Invalid(format!("break {id} is already resolved")));
        }
        let tx = self.conn.transaction()?;
        tx.execute("UPDATE breaks SET status = ?1 WHERE id = ?2", params![status.as_str(), id])?;
        insert_event(&tx, id, at, None, action, by, note)?;
        let data = serde_json::json!({"break": id, "action": action, "by": by, "note": note, "status": status.as_str()});
        audit_to(&mut self.audit, at, "recon_break", data)?;
        sync_to(&mut self.audit)?;
        tx.commit()?;
        self.get(id)?.ok_or(ReconcileError::UnknownBreak(id))
    }

    /// One break.
    pub fn get(&self, id: i64) -> Result<Option<StoredBreak>, ReconcileError> {
        Ok(self.query(&format!("{SELECT} WHERE id = ?1"), params![id])?.into_iter().next())
    }

    /// The breaks, by id, of one status or all.
    pub fn breaks(&self, status: Option<BreakStatus>) -> Result<Vec<StoredBreak>, ReconcileError> {
        match status {
            Some(s) => self.query(&format!("{SELECT} WHERE status = ?1 ORDER BY id"), params![s.as_str()]),
            None => self.query(&format!("{SELECT} ORDER BY id"), params![]),
        }
    }

    /// A break's history, oldest first.
    pub fn history(&self, id: i64) -> Result<Vec<BreakEvent>, ReconcileError> {
        let mut stmt = self.conn.prepare(
            "SELECT at, run, action, by_name, note FROM break_events WHERE break_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![id], |r| {
            Ok(BreakEvent {
                break_id: id,
                at: Timestamp(r.get(0)?),
                run: r.get(1)?,
                action: r.get(2)?,
                by: r.get(3)?,
                note: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn query(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<StoredBreak>, ReconcileError> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map(args, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, i64>(9)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kind, key, expected, actual, note, status, found, first_run, last_run) = row?;
            let kind = BreakType::parse(&kind)
                .ok_or_else(|| ReconcileError::Storage(format!("unknown break type {kind}")))?;
            let status = parse_status(&status)?;
            out.push(StoredBreak {
                id,
                kind,
                key,
                expected,
                actual,
                note,
                status,
                found: found != 0,
                first_run,
                last_run,
            });
        }
        Ok(out)
    }
}

fn parse_status(name: &str) -> Result<BreakStatus, ReconcileError> {
    BreakStatus::parse(name).ok_or_else(|| ReconcileError::Storage(format!("unknown break status {name}")))
}

fn insert_event(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    at: Timestamp,
    run: Option<i64>,
    action: &str,
    by: &str,
    note: &str,
) -> Result<(), ReconcileError> {
    let seq: i64 = tx.query_row(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM break_events WHERE break_id = ?1",
        params![id],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO break_events (break_id, seq, at, run, action, by_name, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id, seq, at.0, run, action, by, note],
    )?;
    Ok(())
}

/// Appends a record to the audit trail, if there is one.
fn audit_to(
    audit: &mut Option<AuditLog>,
    at: Timestamp,
    kind: &str,
    data: serde_json::Value,
) -> Result<(), ReconcileError> {
    if let Some(log) = audit.as_mut() {
        log.append(at.0, kind, data).map_err(|e| ReconcileError::Storage(e.to_string()))?;
    }
    Ok(())
}

/// Syncs the audit trail, if there is one.
fn sync_to(audit: &mut Option<AuditLog>) -> Result<(), ReconcileError> {
    match audit.as_mut() {
        Some(log) => log.sync().map_err(|e| ReconcileError::Storage(e.to_string())),
        None => Ok(()),
    }
}
