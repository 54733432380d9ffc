//! The embedded registry on a database file: what survives a restart.

use cccx_engine::types::InstrumentId;
use cccx_settlement::sqlite::SCHEMA_VERSION;
use cccx_settlement::{
    AccountId, IssueUnits, OpenAccount, PostTransfer, ProposeTransfer, Registry, RegistryError, RequestId,
    SerialBlock, SqliteRegistry, Timestamp, TransferStatus, Vintage,
};

const CCC: InstrumentId = InstrumentId(7);

fn id(s: &str) -> RequestId {
    RequestId::new(s).expect("id")
}

fn acct(s: &str) -> AccountId {
    AccountId::new(s).expect("account")
}

fn seed(r: &mut SqliteRegistry) -> cccx_settlement::Transfer {
    r.open_account(&OpenAccount { id: id("o1"), account: acct("A") }, Timestamp(1)).unwrap();
    r.open_account(&OpenAccount { id: id("o2"), account: acct("B") }, Timestamp(2)).unwrap();
    let issue = IssueUnits {
        id: id("i1"),
        account: acct("A"),
        instrument: CCC,
        vintage: Vintage(2023),
        quantity: 100,
    };
    r.issue(&issue, Timestamp(3)).unwrap();
    let propose = ProposeTransfer {
        id: id("T1"),
        from: acct("A"),
        to: acct("B"),
        instrument: CCC,
        quantity: 40,
        vintage: None,
    };
    r.propose(&propose, Timestamp(10)).unwrap()
}

#[test]
fn a_reopened_registry_keeps_holdings_answers_clock_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let pending = {
        let mut r = SqliteRegistry::open(&path).unwrap();
        seed(&mut r)
    };
    let mut r = SqliteRegistry::open(&path).unwrap();
    r.check_invariants().unwrap();
    assert_eq!(r.transfer(&id("T1")).unwrap(), Some(pending.clone()));
    let h = r.holdings(&acct("A"), CCC, None).unwrap();
    assert_eq!((h.total.held, h.total.reserved), (100, 40));
    // A retry after the restart gets the stored answer.
    let propose = ProposeTransfer {
        id: id("T1"),
        from: acct("A"),
        to: acct("B"),
        instrument: CCC,
        quantity: 40,
        vintage: None,
    };
    assert_eq!(r.propose(&propose, Timestamp(20)).unwrap(), pending);
    // The clock survived.
    let late = r.post(&PostTransfer { id: id("P1"), transfer: id("T1") }, Timestamp(5));
    assert_eq!(late, Err(RegistryError::TimeWentBackwards { given: Timestamp(5), last: Timestamp(10) }));
    assert_eq!(
        r.post(&PostTransfer { id: id("P1"), transfer: id("T1") }, Timestamp(30)).unwrap().status,
        TransferStatus::Completed
    );
    // Serials and internal ids continue where they stopped.
    let more =
        IssueUnits { id: id("i2"), account: acct("B"), instrument: CCC, vintage: Vintage(2023), quantity: 5 };
    let block = r.issue(&more, Timestamp(31)).unwrap().block;
    assert_eq!(block, SerialBlock { instrument: CCC, vintage: Vintage(2023), start: 101, end: 105 });
    r.check_invariants().unwrap();
    assert_eq!(r.statement(&acct("B"), Timestamp(0), Timestamp(100)).unwrap().lines.len(), 2);
    assert_eq!(r.holdings(&acct("A"), CCC, Some(Timestamp(10))).unwrap().total.reserved, 40);
}

#[test]
fn a_database_of_another_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    drop(SqliteRegistry::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE schema_version SET version = 99", []).unwrap();
    drop(conn);
    let err = SqliteRegistry::open(&path).unwrap_err();
    assert_eq!(err, RegistryError::SchemaVersion { found: 99, expected: SCHEMA_VERSION });
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn a_file_that_is_not_a_database_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    assert!(matches!(SqliteRegistry::open(&path), Err(RegistryError::Storage(_))));
}

#[test]
fn a_version_1_database_is_refused_as_such_before_any_table_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    // Version 1 kept blocks as rows and its requests table had other columns.
    conn.execute_batch(
        "CREATE TABLE schema_version (version BIGINT NOT NULL);
         INSERT INTO schema_version (version) VALUES (1);
         CREATE TABLE requests (request_id VARCHAR(64) NOT NULL PRIMARY KEY, kind VARCHAR(16) NOT NULL,
             fields_hash CHAR(64) NOT NULL, answer TEXT NOT NULL, at_ns BIGINT NOT NULL);
         CREATE TABLE blocks (block_id BIGINT NOT NULL PRIMARY KEY);",
    )
    .unwrap();
    drop(conn);
    let err = SqliteRegistry::open(&path).unwrap_err();
    assert_eq!(err, RegistryError::SchemaVersion { found: 1, expected: SCHEMA_VERSION });
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'issuances'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "nothing created in a database of another version");
}
