//! The embedded registry's schema, created on open.
//!
//! Portable SQL: standard types (`BIGINT`, `INTEGER`, `VARCHAR`, `TEXT`), no rowids, no
//! autoincrement (the registry assigns block ids and entry sequence numbers itself), no
//! `INSERT OR ...`; `CREATE ... IF NOT EXISTS` works on SQLite and PostgreSQL alike. Times are
//! nanoseconds since the Unix epoch. A block lives in `blocks` while current and moves to
//! `block_history` with the time it stopped being current, which is what views as of a time
//! read. A block changed at the very time it became current was never seen by any view (a view
//! as of `t` sees every change dated `t`): it is changed in place and leaves no history.

use rusqlite::{Connection, OptionalExtension};

use crate::error::RegistryError;

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i64 = 1;

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
    "CREATE TABLE IF NOT EXISTS blocks (
        block_id BIGINT NOT NULL PRIMARY KEY,
        account_id VARCHAR(64) NOT NULL,
        instrument BIGINT NOT NULL,
        vintage INTEGER NOT NULL,
        serial_start BIGINT NOT NULL,
        serial_end BIGINT NOT NULL,
        reserved_by VARCHAR(64),
        valid_from_ns BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS blocks_by_owner ON blocks (account_id, instrument, vintage, serial_start)",
    "CREATE INDEX IF NOT EXISTS blocks_by_transfer ON blocks (reserved_by)",
    "CREATE TABLE IF NOT EXISTS block_history (
        block_id BIGINT NOT NULL PRIMARY KEY,
        account_id VARCHAR(64) NOT NULL,
        instrument BIGINT NOT NULL,
        vintage INTEGER NOT NULL,
        serial_start BIGINT NOT NULL,
        serial_end BIGINT NOT NULL,
        reserved_by VARCHAR(64),
        valid_from_ns BIGINT NOT NULL,
        valid_to_ns BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS block_history_by_owner ON block_history (account_id, instrument, valid_from_ns)",
    "CREATE TABLE IF NOT EXISTS transfers (
        transfer_id VARCHAR(64) NOT NULL PRIMARY KEY,
        from_account VARCHAR(64) NOT NULL,
        to_account VARCHAR(64) NOT NULL,
        instrument BIGINT NOT NULL,
        vintage INTEGER,
        quantity BIGINT NOT NULL,
        status VARCHAR(16) NOT NULL,
        proposed_at_ns BIGINT NOT NULL,
        resolved_at_ns BIGINT)",
    "CREATE INDEX IF NOT EXISTS transfers_by_status ON transfers (status, proposed_at_ns)",
    "CREATE TABLE IF NOT EXISTS transfer_blocks (
        transfer_id VARCHAR(64) NOT NULL,
        position INTEGER NOT NULL,
        instrument BIGINT NOT NULL,
        vintage INTEGER NOT NULL,
        serial_start BIGINT NOT NULL,
        serial_end BIGINT NOT NULL,
        PRIMARY KEY (transfer_id, position))",
    "CREATE TABLE IF NOT EXISTS entries (
        entry_seq BIGINT NOT NULL PRIMARY KEY,
        account_id VARCHAR(64) NOT NULL,
        at_ns BIGINT NOT NULL,
        kind VARCHAR(16) NOT NULL,
        instrument BIGINT NOT NULL,
        vintage INTEGER NOT NULL,
        serial_start BIGINT NOT NULL,
        serial_end BIGINT NOT NULL,
        transfer_id VARCHAR(64),
        counterparty VARCHAR(64))",
    "CREATE INDEX IF NOT EXISTS entries_by_account ON entries (account_id, at_ns)",
    "CREATE TABLE IF NOT EXISTS requests (
        request_id VARCHAR(64) NOT NULL PRIMARY KEY,
        kind VARCHAR(16) NOT NULL,
        fields_hash CHAR(64) NOT NULL,
        answer TEXT NOT NULL,
        at_ns BIGINT NOT NULL)",
];

/// Creates the tables that are missing, in one transaction, and checks the schema version.
pub fn create(conn: &mut Connection) -> Result<(), RegistryError> {
    let tx = conn.transaction()?;
    for sql in TABLES {
        tx.execute(sql, [])?;
    }
    let found: Option<i64> =
        tx.query_row("SELECT version FROM schema_version", [], |r| r.get(0)).optional()?;
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
