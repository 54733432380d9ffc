//! The embedded registry's schema, created on open.
//!
//! Portable SQL: standard types (`BIGINT`, `INTEGER`, `VARCHAR`, `TEXT`), no rowids, no
//! autoincrement (the registry numbers its events itself), no `INSERT OR ...`; `CREATE ... IF
//! NOT EXISTS` and partial indexes work on SQLite and PostgreSQL alike. Times are nanoseconds
//! since the Unix epoch.
//!
//! The database is the record, one row per event: `issuances` (new serials for an account) and
//! `transfers` (a proposal, with the serial blocks it reserved, and later its resolution). Every
//! event has a number in ledger order (`seq`, `propose_seq`, `resolve_seq`). Which account holds
//! which serials now is derived from that record on open and kept in memory
//! ([`super::ledger`]); holdings as of a time and statements are derived from it on demand.
//! Transfers have one secondary index, by resolution time, for statements and views as of a
//! time: a transfer proposed in a time range is pending (in memory) or resolved at or after the
//! range's start. Pending transfers are found by a scan on open. `requests` keeps the requests that are not proposals (a proposal's record is its transfer
//! row): their fields (or a hash of them) and the answer, which for a successful post or void is
//! the transfer row itself and is not stored twice.
//!
//! Version 1 kept every block as a row, with a history table and statement lines per block; a
//! version 1 database is refused (`SchemaVersion`).

use rusqlite::{Connection, OptionalExtension};

use crate::error::RegistryError;

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i64 = 2;

const TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ledger_clock (last_at_ns BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS accounts (
        account_id VARCHAR(64) NOT NULL PRIMARY KEY,
        opened_at_ns BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS serial_counters (
        instrument BIGINT NOT NULL,
        vintage INTEGER NOT NULL,
        next_serial BIGINT NOT NULL,
        PRIMARY KEY (instrument, vintage))",
    "CREATE TABLE IF NOT EXISTS issuances (
        seq BIGINT NOT NULL PRIMARY KEY,
        account_id VARCHAR(64) NOT NULL,
        instrument BIGINT NOT NULL,
        vintage INTEGER NOT NULL,
        serial_start BIGINT NOT NULL,
        serial_end BIGINT NOT NULL,
        at_ns BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS issuances_by_account ON issuances (account_id, at_ns)",
    "CREATE TABLE IF NOT EXISTS transfers (
        transfer_id VARCHAR(64) NOT NULL PRIMARY KEY,
        from_account VARCHAR(64) NOT NULL,
        to_account VARCHAR(64) NOT NULL,
        instrument BIGINT NOT NULL,
        vintage INTEGER,
        quantity BIGINT NOT NULL,
        status VARCHAR(16) NOT NULL,
        blocks TEXT NOT NULL,
        refusal TEXT,
        proposed_at_ns BIGINT NOT NULL,
        propose_seq BIGINT NOT NULL,
        resolved_at_ns BIGINT,
        resolve_seq BIGINT,
        resolve_id VARCHAR(64))",
    "CREATE INDEX IF NOT EXISTS transfers_by_resolution ON transfers (resolved_at_ns)
        WHERE resolved_at_ns IS NOT NULL",
    "CREATE UNIQUE INDEX IF NOT EXISTS transfers_by_resolve_id ON transfers (resolve_id)
        WHERE resolve_id IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS requests (
        request_id VARCHAR(64) NOT NULL PRIMARY KEY,
        kind VARCHAR(16) NOT NULL,
        fields VARCHAR(64) NOT NULL,
        answer TEXT,
        at_ns BIGINT NOT NULL)",
];

/// Checks the schema version and creates the tables that are missing, in one transaction. The
/// version is read first, so that an older database is refused as such rather than failing on
/// a table of another shape.
pub fn create(conn: &mut Connection) -> Result<(), RegistryError> {
    let tx = conn.transaction()?;
    tx.execute(TABLES[0], [])?;
    let found: Option<i64> =
        tx.query_row("SELECT version FROM schema_version", [], |r| r.get(0)).optional()?;
    if let Some(found) = found.filter(|&v| v != SCHEMA_VERSION) {
        return Err(RegistryError::SchemaVersion { found, expected: SCHEMA_VERSION });
    }
    for sql in &TABLES[1..] {
        tx.execute(sql, [])?;
    }
    match found {
        None => {
            tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [SCHEMA_VERSION])?;
        }
        Some(v) if v == SCHEMA_VERSION => {}
        Some(found) => return Err(RegistryError::SchemaVersion { found, expected: SCHEMA_VERSION }),
    }
    let clock: Option<i64> =
        tx.query_row("SELECT last_at_ns FROM ledger_clock", [], |r| r.get(0)).optional()?;
    if clock.is_none() {
        tx.execute("INSERT INTO ledger_clock (last_at_ns) VALUES (?1)", [i64::MIN])?;
    }
    tx.commit()?;
    Ok(())
}
