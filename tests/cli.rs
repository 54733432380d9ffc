//! End-to-end tests of the `cccx` binary: `gen-flow` and `bench` as a user runs them.

mod common;

use common::{cccx, path, stderr, stdout};

#[test]
fn bench_json_reports_throughput_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("flow.csv");
    let gen = cccx(&["gen-flow", "--ops", "5000", "--seed", "3", "--out", path(&flow)]);
    assert!(gen.status.success(), "{}", stderr(&gen));
    let out = cccx(&["bench", "--flow", path(&flow), "--json", "--repeat", "1", "--compare-naive"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON object");
    assert_eq!(report["commands"], 5000);
    assert!(report["commands_per_s"].as_f64().unwrap() > 0.0);
    let latency = &report["latency_ns"];
    let (p50, p99, p999, max) = (
        latency["p50"].as_u64().unwrap(),
        latency["p99"].as_u64().unwrap(),
        latency["p999"].as_u64().unwrap(),
        latency["max"].as_u64().unwrap(),
    );
    assert!(0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max, "{latency}");
    assert!(report["naive"]["ratio"].as_f64().unwrap() > 0.0);
}

/// With everyone funded, risk checks change no event of the continuous or the auction profile
/// (the bench compares them command by command and fails otherwise).
#[test]
fn bench_compares_risk_checks_on_and_off() {
    for profile in ["continuous", "auction"] {
        let args = ["bench", "--profile", profile, "--ops", "20000", "--repeat", "1", "--no-latency"];
        let out = cccx(&[&args[..], &["--compare-risk", "--json"]].concat());
        assert!(out.status.success(), "{profile}: {}", stderr(&out));
        let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON object");
        assert!(report["risk"]["ratio_to_engine"].as_f64().unwrap() > 0.0, "{report}");
    }
}

#[test]
fn bench_writes_canonical_trades_and_book() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("flow.csv");
    std::fs::write(
        &flow,
        "seq,op,order_id,participant,instrument,side,type,tif,price,qty\n\
         1,NEW,1,10,CCC1,SELL,LIMIT,GTC,101,5\n\
         2,NEW,2,11,CCC1,SELL,LIMIT,GTC,100,5\n\
         3,NEW,3,12,CCC0,BUY,LIMIT,GTC,99,7\n\
         4,NEW,4,13,CCC1,BUY,LIMIT,IOC,101,8\n\
         5,AMEND,3,12,CCC0,BUY,LIMIT,,98,7\n\
         6,CANCEL,9,12,CCC0,BUY,,,,\n",
    )
    .unwrap();
    let (trades, book) = (dir.path().join("trades.csv"), dir.path().join("book.csv"));
    let out = cccx(&[
        "bench",
        "--flow",
        path(&flow),
        "--trades",
        path(&trades),
        "--book",
        path(&book),
        "--repeat",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&trades).unwrap(),
        "trade_seq,instrument,price,qty,buy_order_id,sell_order_id,aggressor_side\n\
         1,CCC1,100,5,4,2,BUY\n\
         2,CCC1,101,3,4,1,BUY\n"
    );
    assert_eq!(
        std::fs::read_to_string(&book).unwrap(),
        "instrument,side,price,order_id,leaves_qty\n\
         CCC0,BUY,98,3,7\n\
         CCC1,SELL,101,1,2\n"
    );
    assert!(stdout(&out).contains("commands/s"));
}

#[test]
fn bad_input_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let header = "seq,op,order_id,participant,instrument,side,type,tif,price,qty\n";
    let good = "1,NEW,1,10,CCC0,SELL,LIMIT,GTC,101,5\n";
    let cases = [
        ("2,FROB,2,10,CCC0,SELL,LIMIT,GTC,101,5\n", "line 3: op"),
        ("2,NEW,2,10,CCC0,SELL,LIMIT,GTC,abc,5\n", "line 3: price: `abc` is not a valid number"),
        ("2,NEW,2,10,CCC0,SELL,LIMIT,GTC,101\n", "line 3: expected 10 fields"),
        ("2,NEW,2,,CCC0,SELL,LIMIT,GTC,101,5\n", "line 3: participant: missing"),
    ];
    for (i, (bad, want)) in cases.iter().enumerate() {
        let flow = dir.path().join(format!("bad{i}.csv"));
        std::fs::write(&flow, format!("{header}{good}{bad}")).unwrap();
        let out = cccx(&["bench", "--flow", path(&flow)]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = stderr(&out);
        assert!(err.contains(path(&flow)) && err.contains(want), "{bad}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let missing = dir.path().join("missing.csv");
    let out = cccx(&["bench", "--flow", path(&missing)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot open") && stderr(&out).contains(path(&missing)));
}

#[test]
fn every_command_has_help() {
    for args in [&["--help"][..], &["gen-flow", "--help"], &["bench", "--help"]] {
        let out = cccx(args);
        assert!(out.status.success(), "{args:?}");
        assert!(stdout(&out).contains("Usage"), "{args:?}");
    }
    let help = stdout(&cccx(&["bench", "--help"]));
    for option in ["--flow", "--trades", "--book", "--json", "--compare-naive", "--profile", "--ops"] {
        assert!(help.contains(option), "bench --help lacks {option}");
    }
}

#[test]
fn generated_flow_runs_without_a_file() {
    let out =
        cccx(&["bench", "--ops", "2000", "--profile", "deep-book", "--prefill", "500", "--repeat", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("commands        2500"), "{}", stdout(&out));
}

#[test]
fn audit_verify_names_the_first_tampered_record() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let mut log = cccx_settlement::audit::AuditLog::open(&file).unwrap();
    for i in 0..4 {
        log.append(i, "obligation", serde_json::json!({"trade": format!("T{i}")})).unwrap();
    }
    drop(log);
    let out = cccx(&["audit", "verify", path(&file)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("intact: 4 records, head "), "{}", stdout(&out));
    let text = std::fs::read_to_string(&file).unwrap().replace("\"T2\"", "\"T7\"");
    std::fs::write(&file, text).unwrap();
    let out = cccx(&["audit", "verify", path(&file)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("audit.jsonl:3: record 3 is not intact"), "{}", stderr(&out));
}
