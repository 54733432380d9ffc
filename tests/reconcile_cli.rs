//! `cccx reconcile` as an operator runs it: exit codes, formats, the break workflow, bad input.

use std::path::Path;

use cccx_engine::types::InstrumentId;
use cccx_settlement::settle::{Settlement, SettlementConfig, TradeToSettle};
use cccx_settlement::{
    AccountId, IssueUnits, OpenAccount, PostTransfer, ProposeTransfer, Registry, RequestId, SqliteRegistry,
    Timestamp, Vintage,
};

mod common;

use common::{cccx, path, stderr, stdout};

fn acct(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

fn id(s: &str) -> RequestId {
    RequestId::new(s).unwrap()
}

/// A registry file with S1 holding 100 and a settlement file with two trades settled at 30.
fn settled(dir: &Path) {
    let mut r = SqliteRegistry::open(dir.join("registry.db")).unwrap();
    for a in ["S1", "B1"] {
        r.open_account(&OpenAccount { id: id(&format!("open-{a}")), account: acct(a) }, Timestamp(1))
            .unwrap();
    }
    let issue = IssueUnits {
        id: id("issue"),
        account: acct("S1"),
        instrument: InstrumentId(0),
        vintage: Vintage(2024),
        quantity: 100,
    };
    r.issue(&issue, Timestamp(2)).unwrap();
    let mut s = Settlement::open(dir.join("settlement.db"), SettlementConfig::default()).unwrap();
    let trade = |t: &str, qty| TradeToSettle {
        trade_id: t.into(),
        instrument: InstrumentId(0),
        buyer: acct("B1"),
        seller: acct("S1"),
        qty,
        price: 50,
        traded_at: Timestamp(10),
    };
    s.add_trades(&[trade("T1", 10), trade("T2", 5)], Timestamp(20)).unwrap();
    s.run(&mut r, Timestamp(30)).unwrap();
}

fn plant_unexpected(dir: &Path) {
    let mut r = SqliteRegistry::open(dir.join("registry.db")).unwrap();
    let propose = ProposeTransfer {
        id: id("X1"),
        from: acct("S1"),
        to: acct("B1"),
        instrument: InstrumentId(0),
        quantity: 3,
        vintage: None,
    };
    r.propose(&propose, Timestamp(40)).unwrap();
    r.post(&PostTransfer { id: id("X1:post"), transfer: id("X1") }, Timestamp(40)).unwrap();
}

#[test]
fn reconcile_run_exit_codes_formats_and_the_break_workflow() {
    let dir = tempfile::tempdir().unwrap();
    settled(dir.path());
    let (sdb, rdb) = (dir.path().join("settlement.db"), dir.path().join("registry.db"));
    let base =
        ["reconcile", "run", "--settlement-db", path(&sdb), "--registry-db", path(&rdb), "--from", "5"];
    let run = |extra: &[&str]| cccx(&[&base[..], extra].concat());

    let clean = run(&["--as-of", "1970-01-01T00:00:00.0000001Z"]);
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));
    assert!(stdout(&clean).contains("breaks: 0"), "{}", stdout(&clean));

    plant_unexpected(dir.path());
    let json = run(&["--as-of", "100", "--format", "json"]);
    assert_eq!(json.status.code(), Some(1), "{}", stderr(&json));
    let report: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("one JSON document");
    assert_eq!(report["breaks"][0]["type"], "unexpected_transfer");
    assert_eq!(report["breaks"][0]["key"], "X1");
    assert_eq!(report["breaks"][0]["id"], 1);

    let csv_path = dir.path().join("breaks.csv");
    let audit = dir.path().join("audit.jsonl");
    let csv = run(&["--as-of", "100", "--format", "csv", "--out", path(&csv_path), "--audit", path(&audit)]);
    assert_eq!(csv.status.code(), Some(1), "{}", stderr(&csv));
    let text = std::fs::read_to_string(&csv_path).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().nth(1).unwrap().starts_with("1,open,unexpected_transfer,X1,"), "{text}");

    let db = ["--settlement-db", path(&sdb)];
    let listed = cccx(&[&["reconcile", "breaks", "--status", "open"][..], &db].concat());
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).starts_with("#1 [open] unexpected_transfer X1"), "{}", stdout(&listed));

    // A resolution needs a reason: a missing option or an empty one is an error (2).
    let no_reason = cccx(&[&["reconcile", "resolve", "1", "--by", "ana"][..], &db].concat());
    assert_eq!(no_reason.status.code(), Some(2));
    let empty = cccx(&[&["reconcile", "resolve", "1", "--by", "ana", "--reason", " "][..], &db].concat());
    assert_eq!(empty.status.code(), Some(2));
    assert!(stderr(&empty).contains("reason"), "{}", stderr(&empty));
    let inv = cccx(&[&["reconcile", "investigate", "1", "--by", "ana", "--note", "asked"][..], &db].concat());
    assert!(inv.status.success(), "{}", stderr(&inv));
    let args =
        ["reconcile", "resolve", "1", "--by", "ana", "--reason", "registry error, reversed", "--audit"];
    let done = cccx(&[&args[..], &[path(&audit)], &db].concat());
    assert!(done.status.success(), "{}", stderr(&done));
    assert!(stdout(&done).contains("[resolved]"));
    let show = cccx(&[&["reconcile", "show", "1"][..], &db].concat());
    let history = stdout(&show);
    assert!(
        history.contains("opened") && history.contains("investigated") && history.contains("resolved"),
        "{history}"
    );
    let verified = cccx(&["audit", "verify", path(&audit)]);
    assert!(verified.status.success(), "{}", stderr(&verified));
    let unknown = cccx(&[&["reconcile", "investigate", "9", "--by", "ana", "--note", "x"][..], &db].concat());
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn reconcile_bad_input_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    settled(dir.path());
    let (sdb, rdb) = (dir.path().join("settlement.db"), dir.path().join("registry.db"));
    let missing = dir.path().join("nope.db");
    for (args, says) in [
        (
            vec![
                "--settlement-db",
                path(&sdb),
                "--registry-db",
                path(&rdb),
                "--as-of",
                "yesterday",
                "--from",
                "5",
            ],
            "--as-of",
        ),
        (
            vec!["--settlement-db", path(&sdb), "--registry-db", path(&rdb), "--as-of", "1", "--from", "5"],
            "after",
        ),
        (
            vec![
                "--settlement-db",
                path(&missing),
                "--registry-db",
                path(&rdb),
                "--as-of",
                "100",
                "--from",
                "5",
            ],
            "does not exist",
        ),
        (
            vec![
                "--settlement-db",
                path(&sdb),
                "--registry-db",
                path(&missing),
                "--as-of",
                "100",
                "--from",
                "5",
            ],
            "does not exist",
        ),
        (
            vec![
                "--settlement-db",
                path(&sdb),
                "--registry-url",
                "not a url",
                "--as-of",
                "100",
                "--from",
                "5",
            ],
            "URL",
        ),
        // Before the trades settled at 30, they were in flight (changed after the agreed time).
        (
            vec!["--settlement-db", path(&sdb), "--registry-db", path(&rdb), "--as-of", "25", "--from", "5"],
            "in flight",
        ),
    ] {
        let out = cccx(&[&["reconcile", "run"][..], &args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
}
