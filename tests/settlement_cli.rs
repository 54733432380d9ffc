//! `cccx settlement status` and `cccx settlement settle` as a clearing team runs them: formats,
//! filters, exit codes, and errors that name the file (and line).

use std::path::Path;

use cccx_engine::types::InstrumentId;
use cccx_settlement::settle::{Settlement, SettlementConfig, TradeToSettle};
use cccx_settlement::{
    AccountId, IssueUnits, OpenAccount, Registry, RequestId, SqliteRegistry, Timestamp, Vintage,
};
use serde_json::Value;

mod common;

use common::{cccx, path, stderr, stdout};

fn acct(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

/// A registry database: S1 holds 100 units of instrument 0 and 50 of instrument 1, S2 holds 5
/// of instrument 0; B1 and B2 hold nothing.
fn registry_db(file: &Path) {
    let mut r = SqliteRegistry::open(file).unwrap();
    for (n, a) in ["B1", "B2", "S1", "S2"].into_iter().enumerate() {
        let open = OpenAccount { id: RequestId::new(format!("open-{a}")).unwrap(), account: acct(a) };
        r.open_account(&open, Timestamp(n as i64)).unwrap();
    }
    for (n, (a, instrument, quantity)) in
        [("S1", 0, 100), ("S1", 1, 50), ("S2", 0, 5)].into_iter().enumerate()
    {
        let issue = IssueUnits {
            id: RequestId::new(format!("issue-{n}")).unwrap(),
            account: acct(a),
            instrument: InstrumentId(instrument),
            vintage: Vintage(2025),
            quantity,
        };
        r.issue(&issue, Timestamp(10 + n as i64)).unwrap();
    }
}

fn trade(id: &str, instrument: u32, seller: &str, buyer: &str, qty: u64, at: &str) -> TradeToSettle {
    TradeToSettle {
        trade_id: id.into(),
        instrument: InstrumentId(instrument),
        buyer: acct(buyer),
        seller: acct(seller),
        qty,
        price: 1_000,
        traded_at: Timestamp::parse_rfc3339(at).unwrap(),
    }
}

/// T1 and T2 on 4 May (IST; T2 is 3 May in UTC), T3 and T4 on 5 May. T3 breaks: S2 is short.
fn trades() -> Vec<TradeToSettle> {
    vec![
        trade("T1", 0, "S1", "B1", 10, "2026-05-04T10:00:00+05:30"),
        trade("T2", 1, "S1", "B2", 20, "2026-05-03T19:00:00Z"),
        trade("T3", 0, "S2", "B1", 30, "2026-05-05T11:00:00+05:30"),
        trade("T4", 0, "S1", "B2", 40, "2026-05-05T12:00:00+05:30"),
    ]
}

fn write_trades(file: &Path, trades: &[TradeToSettle]) {
    let lines: Vec<String> = trades.iter().map(|t| serde_json::to_string(t).unwrap()).collect();
    std::fs::write(file, lines.join("\n") + "\n").unwrap();
}

/// A settled database, through `settle` against an embedded registry.
fn settled(dir: &Path) -> std::path::PathBuf {
    let (db, trades_file, registry) =
        (dir.join("settlement.db"), dir.join("trades.jsonl"), dir.join("registry.db"));
    registry_db(&registry);
    write_trades(&trades_file, &trades());
    let args = [
        "settlement",
        "settle",
        "--db",
        path(&db),
        "--trades",
        path(&trades_file),
        "--registry-db",
        path(&registry),
    ];
    let out = cccx(&[&args[..], &["--fee-bps", "10", "--retry-ms", "0"]].concat());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("4 trades, 3 confirmed, 1 broken"), "{text}");
    assert!(
        text.contains("broken T3 S2 -> B1 qty 30 price 1000: insufficient units in account S2"),
        "{text}"
    );
    // Given again, the same file records nothing new and moves nothing.
    let again = cccx(&[&args[..], &["--retry-ms", "0"]].concat());
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(stderr(&again).contains("recorded 0 new trades of 4"), "{}", stderr(&again));
    let r = SqliteRegistry::open(&registry).unwrap();
    assert_eq!(r.holdings(&acct("B2"), InstrumentId(0), None).unwrap().total.held, 40);
    db
}

fn status_json(db: &Path, filters: &[&str]) -> Value {
    let out = cccx(&[&["settlement", "status", "--db", path(db), "--format", "json"][..], filters].concat());
    assert!(out.status.success(), "{filters:?}: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("one JSON object")
}

#[test]
fn status_counts_per_state_session_and_participant_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let db = settled(dir.path());
    let before = std::fs::read(&db).unwrap();

    let all = status_json(&db, &[]);
    assert_eq!(all["obligations"], 4);
    assert_eq!(all["open"], 0);
    assert_eq!(all["states"]["confirmed"], 3);
    assert_eq!(all["states"]["broken"], 1);
    assert_eq!(all["states"]["created"], 0);
    assert_eq!(all["sessions"], serde_json::json!({"2026-05-04": 2, "2026-05-05": 2}));
    assert_eq!(all["participants"]["S1"], serde_json::json!({"buyer": 0, "seller": 3}));
    assert_eq!(all["participants"]["B1"], serde_json::json!({"buyer": 2, "seller": 0}));
    assert_eq!(all["ledger"]["balanced"], true);
    assert!(all.get("list").is_none());

    let b1 = status_json(&db, &["--participant", "B1", "--list"]);
    assert_eq!(b1["obligations"], 2);
    let rows = b1["list"].as_array().unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["trade_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["T1", "T3"]);
    assert_eq!(rows[0]["transfer_id"], "T1:p");
    assert_eq!(rows[0]["fee"], 10);
    assert_eq!(rows[1]["state"], "broken");
    assert!(rows[1]["reason"].as_str().unwrap().contains("insufficient units"));

    assert_eq!(status_json(&db, &["--state", "broken"])["obligations"], 1);
    assert_eq!(status_json(&db, &["--session", "2026-05-04"])["obligations"], 2);
    assert_eq!(status_json(&db, &["--instrument", "1"])["obligations"], 1);
    let none = status_json(&db, &["--session", "2026-05-05", "--participant", "B2", "--state", "broken"]);
    assert_eq!(none["obligations"], 0);

    let table = cccx(&["settlement", "status", "--db", path(&db), "--list", "--state", "broken"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    for want in ["obligations 1 (0 open)", "broken", "2026-05-05", "funds ledger balanced", "S2 -> B1"] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    assert!(text.contains("insufficient units in account S2"), "{text}");

    // Status wrote nothing.
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn status_names_a_missing_or_foreign_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let out = cccx(&["settlement", "status", "--db", path(&missing)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(path(&missing)), "{}", stderr(&out));
    assert!(!missing.exists(), "status created the database");

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a database at all, just some words to fill a page\n".repeat(100)).unwrap();
    let registry = dir.path().join("registry.db");
    registry_db(&registry);
    for file in [&text, &registry] {
        let out = cccx(&["settlement", "status", "--db", path(file)]);
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        let err = stderr(&out);
        assert!(err.contains(path(file)) && err.contains("not a settlement database"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }

    let bad = cccx(&["settlement", "status", "--db", path(&missing), "--session", "2026-13-01"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("is not a date YYYY-MM-DD"), "{}", stderr(&bad));
}

#[test]
fn settle_names_the_bad_line_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (db, registry) = (dir.path().join("settlement.db"), dir.path().join("registry.db"));
    registry_db(&registry);
    let good: Vec<String> = trades().iter().map(|t| serde_json::to_string(t).unwrap()).collect();
    let other_t1 =
        serde_json::to_string(&trade("T1", 0, "S1", "B1", 11, "2026-05-04T10:00:00+05:30")).unwrap();
    let cases = [
        (format!("{}\n{}\n{{\"trade_id\": \"T9\"}}\n", good[0], good[1]), ":3: not a trade"),
        (format!("{}\n\n{}\nnot json\n", good[0], good[1]), ":4: not a trade"),
        (format!("{}\n{}\n", good[0], good[1].replace("\"B2\"", "\"B 2\"")), ":2: invalid id"),
        (format!("{}\n{}\n", good[0], other_t1), ":2: trade T1 was given on line 1 with other fields"),
        (format!("{}\n{}\n", good[0], good[1].replace("\"qty\":20", "\"qty\":0")), ":2: trade T2: quantity"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.jsonl"));
        std::fs::write(&file, text).unwrap();
        let out = cccx(&[
            "settlement",
            "settle",
            "--db",
            path(&db),
            "--trades",
            path(&file),
            "--registry-db",
            path(&registry),
        ]);
        assert_eq!(out.status.code(), Some(2), "{want}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(err.contains(&format!("{}{want}", path(&file))), "{want}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        if db.exists() {
            let s = Settlement::open(&db, SettlementConfig::default()).unwrap();
            assert!(s.obligations().unwrap().is_empty(), "{want}: something was recorded");
        }
    }
    // No registry, or one that does not exist, is an error too.
    let file = dir.path().join("good.jsonl");
    write_trades(&file, &trades());
    let out = cccx(&["settlement", "settle", "--db", path(&db), "--trades", path(&file)]);
    assert_eq!(out.status.code(), Some(2));
    let nowhere = dir.path().join("nowhere.db");
    let out = cccx(&[
        "settlement",
        "settle",
        "--db",
        path(&db),
        "--trades",
        path(&file),
        "--registry-db",
        path(&nowhere),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(path(&nowhere)), "{}", stderr(&out));
}

#[test]
fn settle_exits_zero_when_every_trade_is_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let (db, registry, file) =
        (dir.path().join("s.db"), dir.path().join("registry.db"), dir.path().join("t.jsonl"));
    registry_db(&registry);
    let mut ok = trades();
    ok.remove(2);
    write_trades(&file, &ok);
    let audit = dir.path().join("audit.jsonl");
    let out = cccx(&[
        "settlement",
        "settle",
        "--db",
        path(&db),
        "--trades",
        path(&file),
        "--registry-db",
        path(&registry),
        "--audit",
        path(&audit),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("3 trades, 3 confirmed, 0 broken"), "{}", stdout(&out));
    let verify = cccx(&["audit", "verify", path(&audit)]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}

#[test]
fn settlement_commands_have_help() {
    let status = stdout(&cccx(&["settlement", "status", "--help"]));
    for option in ["--db", "--participant", "--state", "--session", "--instrument", "--format", "--list"] {
        assert!(status.contains(option), "status --help lacks {option}");
    }
    let settle = stdout(&cccx(&["settlement", "settle", "--help"]));
    for option in [
        "--db",
        "--trades",
        "--registry-url",
        "--registry-db",
        "--fee-bps",
        "--max-attempts",
        "--audit",
        "--retry-ms",
    ] {
        assert!(settle.contains(option), "settle --help lacks {option}");
    }
    assert!(stdout(&cccx(&["settlement", "--help"])).contains("status"));
}
