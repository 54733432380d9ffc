//! The engine's canonical outputs agree with an independent Python model of the specification.
//!
//! `tests/model/canonical.py` implements the continuous-trading rules of WORKLOADS.md
//! ("Canonical semantics", "Canonical outputs") from the text alone, with a plain book. Each test
//! generates a flow with `cccx gen-flow`, runs it through `cccx bench --trades --book` and through
//! the model, and requires byte-identical trades and book files. A missing `python3` fails.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// The model, in this package's `tests/model/`.
fn model_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/model/canonical.py")
}

/// Runs `command`, failing the test with `what` and the stderr unless it succeeds.
fn run(mut command: Command, what: &str) -> Output {
    let output = match command.output() {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && command.get_program() == "python3" => {
            panic!("python3 not found on PATH: the comparison with the Python model needs it ({what}: {err})")
        }
        Err(err) => panic!("cannot run {what}: {err}"),
    };
    assert!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The first line where `left` and `right` differ, as a message naming them; `None` when equal.
fn first_difference(left_name: &str, left: &[u8], right_name: &str, right: &[u8]) -> Option<String> {
    if left == right {
        return None;
    }
    let (left, right) = (String::from_utf8_lossy(left), String::from_utf8_lossy(right));
    let (mut left_lines, mut right_lines) = (left.split('\n'), right.split('\n'));
    for number in 1.. {
        let (l, r) = (left_lines.next(), right_lines.next());
        if l != r {
            let show = |line: Option<&str>| line.map_or("<end of file>".to_string(), |l| format!("{l:?}"));
            return Some(format!("line {number}: {left_name} {} / {right_name} {}", show(l), show(r)));
        }
        if l.is_none() {
            break;
        }
    }
    unreachable!("different bytes split into the same lines")
}

/// The trades and book files one implementation wrote.
struct Outputs {
    trades: Vec<u8>,
    book: Vec<u8>,
}

/// Runs `flow` through the engine and the model; returns (engine, model) outputs.
fn run_both(dir: &Path, flow: &Path, label: &str) -> (Outputs, Outputs) {
    let (trades, book) = (dir.join("rust-trades.csv"), dir.join("rust-book.csv"));
    let (py_trades, py_book) = (dir.join("python-trades.csv"), dir.join("python-book.csv"));

    let mut engine = Command::new(env!("CARGO_BIN_EXE_cccx"));
    engine.arg("bench").arg("--flow").arg(flow).arg("--trades").arg(&trades).arg("--book").arg(&book);
    engine.args(["--no-latency", "--repeat", "1"]);
    run(engine, &format!("cccx bench ({label})"));

    let mut model = Command::new("python3");
    model.arg(model_script()).arg(flow).arg(&py_trades).arg(&py_book);
    run(model, &format!("python3 {} ({label})", model_script().display()));

    let read = |path: &Path| std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    (
        Outputs { trades: read(&trades), book: read(&book) },
        Outputs { trades: read(&py_trades), book: read(&py_book) },
    )
}

/// Asserts that `left` and `right` are byte-identical, showing the first differing line of each.
fn assert_same(label: &str, left_name: &str, left: &Outputs, right_name: &str, right: &Outputs) {
    let mut problems = String::new();
    if let Some(diff) = first_difference(left_name, &left.trades, right_name, &right.trades) {
        writeln!(problems, "  trades differ at {diff}").unwrap();
    }
    if let Some(diff) = first_difference(left_name, &left.book, right_name, &right.book) {
        writeln!(problems, "  book differs at {diff}").unwrap();
    }
    assert!(problems.is_empty(), "{label}: {left_name} and {right_name} disagree:\n{problems}");
}

/// Generates a flow with `cccx gen-flow ARGS` (whitespace-separated) and asserts that both
/// outputs are identical.
fn check_generated(args: &str) {
    let dir = TempDir::new().expect("temporary directory");
    let flow = dir.path().join("flow.csv");
    let mut generator = Command::new(env!("CARGO_BIN_EXE_cccx"));
    generator.arg("gen-flow").args(args.split_whitespace()).arg("--out").arg(&flow);
    let label = format!("gen-flow {args}");
    run(generator, &label);
    let (rust, python) = run_both(dir.path(), &flow, &label);
    assert_same(&label, "Rust", &rust, "Python", &python);
    let trades = rust.trades.iter().filter(|&&b| b == b'\n').count().saturating_sub(1);
    assert!(trades > 0, "{label}: no trades, the flow exercises nothing");
}

/// Few participants and a small live cap: a dense book where cancels and amends often find the
/// order still resting.
const DENSE: &str = "--participants 5 --max-live 30";

#[test]
fn continuous_one_instrument_dense_book() {
    check_generated(&format!("--profile continuous --ops 30000 --seed 1 {DENSE}"));
}

#[test]
fn continuous_one_instrument_dense_book_other_seeds() {
    for seed in ["7", "-3", "123456789"] {
        check_generated(&format!("--profile continuous --ops 10000 --seed={seed} {DENSE}"));
    }
}

#[test]
fn continuous_three_instruments() {
    check_generated(&format!("--profile continuous --ops 20000 --seed 7 --instruments 3 {DENSE}"));
}

#[test]
fn continuous_default_limits() {
    // Default participants and live cap: a deeper book with many levels.
    check_generated("--profile continuous --ops 20000 --seed 42");
}

#[test]
fn deep_book_three_instruments() {
    check_generated(&format!(
        "--profile deep-book --prefill 5000 --ops 20000 --seed 11 --instruments 3 {DENSE}"
    ));
}

#[test]
fn deep_book_one_instrument() {
    check_generated(&format!("--profile deep-book --prefill 3000 --ops 15000 --seed 3 {DENSE}"));
    check_generated("--profile deep-book --prefill 10000 --ops 10000 --seed 4");
}

#[test]
fn low_mid_prices_near_one() {
    // At mid 150 the flow's own prices stay above ~85; the prefill (64 to 2111 ticks away from
    // the mid) and a mid of 20 clamp many prices to 1, so the lowest tick is exercised too.
    check_generated(&format!("--profile continuous --ops 20000 --seed 5 --mid 150 {DENSE}"));
    check_generated(&format!("--profile deep-book --prefill 3000 --ops 10000 --seed 9 --mid 150 {DENSE}"));
    check_generated(&format!("--profile continuous --ops 10000 --seed 9 --mid 20 {DENSE}"));
}

#[test]
fn twelve_instruments_book_sorted_by_name() {
    // By name, CCC10 and CCC11 sort before CCC2.
    check_generated(
        "--profile continuous --ops 8000 --seed 2 --instruments 12 --participants 5 --max-live 60",
    );
}

/// A hand-written flow for the rules that generated flows seldom reach, with the outputs worked
/// out from WORKLOADS.md by hand (step by step in the comments).
const HAND_FLOW: &str = "\
seq,op,order_id,participant,instrument,side,type,tif,price,qty
1,NEW,1,1,CCC0,SELL,LIMIT,GTC,101,10
2,NEW,2,2,CCC0,SELL,LIMIT,DAY,101,5
3,NEW,3,3,CCC0,SELL,LIMIT,GTC,103,7
4,NEW,4,4,CCC0,BUY,LIMIT,FOK,102,16
5,NEW,5,4,CCC0,BUY,LIMIT,FOK,101,15
6,NEW,6,1,CCC0,SELL,LIMIT,GTC,101,4
7,NEW,7,2,CCC0,BUY,LIMIT,IOC,100,3
8,CANCEL,7,2,CCC0,BUY,,,,
9,AMEND,7,2,CCC0,BUY,LIMIT,,100,3
10,NEW,8,3,CCC0,BUY,LIMIT,GTC,99,6
11,NEW,9,4,CCC0,BUY,LIMIT,GTC,99,2
12,NEW,10,1,CCC0,SELL,LIMIT,IOC,99,1
13,AMEND,8,3,CCC0,BUY,LIMIT,,99,5
14,NEW,11,2,CCC0,SELL,MARKET,IOC,,4
15,AMEND,9,4,CCC0,BUY,LIMIT,,99,6
16,AMEND,6,1,CCC0,SELL,LIMIT,,99,4
17,NEW,12,5,CCC0,BUY,LIMIT,GTC,98,3
18,AMEND,3,3,CCC0,SELL,LIMIT,,98,10
19,NEW,13,5,CCC1,BUY,MARKET,IOC,,4
20,NEW,14,5,CCC1,BUY,LIMIT,FOK,50,1
21,CANCEL,1,1,CCC0,SELL,,,,
22,NEW,15,2,CCC1,SELL,LIMIT,GTC,1,9
23,NEW,16,2,CCC1,BUY,LIMIT,FOK,1,9
24,NEW,17,2,CCC1,SELL,LIMIT,GTC,2,2
25,AMEND,17,2,CCC1,SELL,LIMIT,,2,2
26,NEW,18,3,CCC1,BUY,LIMIT,GTC,1,1
27,AMEND,18,3,CCC1,BUY,LIMIT,,3,5
";

// 4: FOK 16 at 102: only 15 cross (the 7 at 103 do not) -> rejected, no trade.
// 5: FOK 15 at 101: exactly 15 cross -> fills against 1 then 2, at 101.
// 7-9: the IOC does not rest, so its CANCEL and AMEND are rejected.
// 12: IOC sell 1 at 99 hits 8 (now 5). 13: same price, 5 <= 5 open -> keeps priority.
// 14: market sell 4 hits 8 first (now 1). 15: 9 same price, 6 > 2 open -> back of 99: [8, 9].
// 16: 6 moves to 99 and is the (SELL) aggressor: 1 with 8, 3 with 9 (now 3); 6 is filled.
// 18: 3 moves from 103 to 98 with qty 10: 3 with 9 at 99, 3 with 12 at 98, 4 rest at 98.
// 19-20: market and FOK on an empty side: nothing. 21: 1 was filled, its CANCEL is rejected.
// 23: FOK 9 at 1 fills exactly. 25: same price and qty keeps priority (no change).
// 27: 18 moves from 1 to 3 with qty 5: buys 2 from 17 at 2, 3 rest at 3.
const HAND_TRADES: &str = "\
trade_seq,instrument,price,qty,buy_order_id,sell_order_id,aggressor_side
1,CCC0,101,10,5,1,BUY
2,CCC0,101,5,5,2,BUY
3,CCC0,99,1,8,10,SELL
4,CCC0,99,4,8,11,SELL
5,CCC0,99,1,8,6,SELL
6,CCC0,99,3,9,6,SELL
7,CCC0,99,3,9,3,SELL
8,CCC0,98,3,12,3,SELL
9,CCC1,1,9,16,15,BUY
10,CCC1,2,2,18,17,BUY
";

const HAND_BOOK: &str = "\
instrument,side,price,order_id,leaves_qty
CCC0,SELL,98,3,4
CCC1,BUY,3,18,3
";

#[test]
fn hand_written_flow_matches_worked_example() {
    let dir = TempDir::new().expect("temporary directory");
    let flow = dir.path().join("flow.csv");
    std::fs::write(&flow, HAND_FLOW).expect("write the flow");
    let label = "hand-written flow";
    let (rust, python) = run_both(dir.path(), &flow, label);
    let expected = Outputs { trades: HAND_TRADES.into(), book: HAND_BOOK.into() };
    assert_same(label, "Rust", &rust, "expected", &expected);
    assert_same(label, "Python", &python, "expected", &expected);
}

#[test]
fn first_difference_reports_one_line() {
    let diff = |l: &[u8], r: &[u8]| first_difference("L", l, "R", r);
    assert_eq!(diff(b"a\nb\n", b"a\nb\n"), None);
    assert_eq!(diff(b"a\nb\n", b"a\nc\n").unwrap(), "line 2: L \"b\" / R \"c\"");
    // A missing last line shows as empty, a missing final newline as the end of the file.
    assert_eq!(diff(b"a\nb\n", b"a\n").unwrap(), "line 2: L \"b\" / R \"\"");
    assert_eq!(diff(b"a\n", b"a").unwrap(), "line 2: L \"\" / R <end of file>");
}
