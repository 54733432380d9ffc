//! The engine's canonical outputs agree with an independent Python model of the specification.
//!
//! `tests/model/canonical.py` implements the rules of WORKLOADS.md ("Canonical semantics": the
//! continuous trading and the call auction of a file with `UNCROSS`; "Canonical outputs") from the
//! text alone, with a plain book and a brute-force search of the clearing price. Each test
//! generates a flow with `cccx gen-flow`, runs it through `cccx bench --trades --book` and through
//! the model, and requires byte-identical trades and book files. Hand-written flows are also
//! compared with outputs worked out by hand. A missing `python3` fails.

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

/// Generates a flow with `cccx gen-flow ARGS` (whitespace-separated), asserts that both outputs
/// are identical and returns the engine's.
fn check_generated(args: &str) -> Outputs {
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
    rust
}

/// Few participants and a small live cap: a dense book where cancels and amends often find the
/// order still resting.
const DENSE: &str = "--participants 5 --max-live 30";

/// Generates an auction flow (`--profile auction` and ARGS) and asserts that both outputs are
/// identical and that every trade is an uncross trade (so the flow was run in its call phase).
fn check_auction(args: &str) {
    let args = format!("--profile auction {args}");
    let rust = check_generated(&args);
    let trades = String::from_utf8_lossy(&rust.trades);
    if let Some(line) = trades.lines().skip(1).find(|line| !line.ends_with(",AUCTION")) {
        panic!("gen-flow {args}: a trade of an auction flow is not an AUCTION trade: {line:?}");
    }
}

/// Few participants and a small live cap for auction flows: a book of a few dozen orders, where
/// the clearing price often has a wide candidate interval and some instruments do not cross.
const AUCTION_DENSE: &str = "--participants 5 --max-live 40";

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

#[test]
fn auction_one_instrument() {
    // Default participants and live cap: thousands of orders, a marginal level of ~150 orders.
    check_auction("--ops 20000 --seed 2");
}

#[test]
fn auction_one_instrument_other_seeds() {
    for seed in ["1", "-3", "123456789"] {
        check_auction(&format!("--ops 5000 --seed={seed}"));
    }
}

#[test]
fn auction_three_instruments() {
    check_auction("--ops 15000 --seed 1 --instruments 3");
    check_auction("--ops 6000 --seed 8 --instruments 3");
}

#[test]
fn auction_small_dense_book() {
    // Seeds 3 and -3: a candidate interval of two ticks (floor of the midpoint); seed 7: six
    // ticks. With three instruments some do not cross at all (V = 0, no uncross).
    for seed in ["1", "3", "5", "7", "-3"] {
        check_auction(&format!("--ops 2000 --seed={seed} {AUCTION_DENSE}"));
    }
    for seed in ["7", "8", "77"] {
        check_auction(&format!("--ops 6000 --seed={seed} --instruments 3 {AUCTION_DENSE}"));
    }
}

#[test]
fn auction_low_mid_and_prefill() {
    check_auction("--ops 8000 --seed 9 --mid 150");
    // The prefill rests far from the mid (down to the price 1 at mid 150) and never crosses.
    check_auction("--prefill 2000 --ops 5000 --seed 4");
    check_auction("--prefill 2000 --ops 5000 --seed 4 --mid 150 --instruments 3");
}

/// Runs the hand-written `flow` and asserts that the engine and the model both write exactly
/// `trades` and `book`.
fn check_hand_written(label: &str, flow_text: &str, trades: &str, book: &str) {
    let dir = TempDir::new().expect("temporary directory");
    let flow = dir.path().join("flow.csv");
    std::fs::write(&flow, flow_text).expect("write the flow");
    let (rust, python) = run_both(dir.path(), &flow, label);
    let expected = Outputs { trades: trades.into(), book: book.into() };
    assert_same(label, "Rust", &rust, "expected", &expected);
    assert_same(label, "Python", &python, "expected", &expected);
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
    check_hand_written("hand-written flow", HAND_FLOW, HAND_TRADES, HAND_BOOK);
}

/// Call auction, the clearing price. Nothing matches before the UNCROSS lines although the books
/// are crossed; trades are numbered across the file in the order of the UNCROSS lines.
const AUCTION_PRICE_FLOW: &str = "\
seq,op,order_id,participant,instrument,side,type,tif,price,qty
1,NEW,1,1,CCC0,BUY,LIMIT,DAY,103,10
2,NEW,2,2,CCC0,BUY,LIMIT,DAY,101,3
3,NEW,3,3,CCC0,SELL,LIMIT,DAY,100,10
4,NEW,4,4,CCC0,SELL,LIMIT,DAY,102,5
5,NEW,5,1,CCC1,BUY,LIMIT,DAY,14,5
6,NEW,6,2,CCC1,SELL,LIMIT,DAY,10,5
7,NEW,7,3,CCC2,BUY,LIMIT,DAY,50,3
8,NEW,8,4,CCC2,BUY,LIMIT,DAY,55,2
9,NEW,9,1,CCC3,BUY,LIMIT,DAY,40,6
10,NEW,10,2,CCC3,SELL,LIMIT,DAY,45,6
11,UNCROSS,,,CCC1,,,,,
12,UNCROSS,,,CCC0,,,,,
13,UNCROSS,,,CCC2,,,,,
14,UNCROSS,,,CCC3,,,,,
";

// CCC1 (uncrossed first): D = 5 for P <= 14, S = 5 for P >= 10. V = 5 with surplus 0 on every
//   tick of [10, 14]: P = (10 + 14) / 2 = 12, a price no order carries (odd width: 5 ticks,
//   lo + hi even). Trade 1: 5 at 12, buy 5, sell 6.
// CCC0: D(100..101) = 13, D(102..103) = 10; S(100..101) = 10, S(102..103) = 15.
//   V = 10 on all of [100, 103] (a tie in maximum volume); the surplus is 3 at 100 and 101 and 5
//   at 102 and 103, so the interval is [100, 101] and P = floor(201 / 2) = 100 (even width: 2
//   ticks, lo + hi odd). Buys: 1 (limit 103) takes all 10, 2 (limit 101) nothing; sells: 3 takes
//   10 (4, limit 102, does not accept 100). Trade 2: 10 at 100, buy 1, sell 3.
// CCC2: buys only (a one-sided book): no uncross. CCC3: bid 40 below ask 45: V = 0, no uncross.
const AUCTION_PRICE_TRADES: &str = "\
trade_seq,instrument,price,qty,buy_order_id,sell_order_id,aggressor_side
1,CCC1,12,5,5,6,AUCTION
2,CCC0,100,10,1,3,AUCTION
";

const AUCTION_PRICE_BOOK: &str = "\
instrument,side,price,order_id,leaves_qty
CCC0,BUY,101,2,3
CCC0,SELL,102,4,5
CCC2,BUY,55,8,2
CCC2,BUY,50,7,3
CCC3,BUY,40,9,6
CCC3,SELL,45,10,6
";

#[test]
fn auction_clearing_price_worked_example() {
    check_hand_written(
        "auction clearing price",
        AUCTION_PRICE_FLOW,
        AUCTION_PRICE_TRADES,
        AUCTION_PRICE_BOOK,
    );
}

/// Call auction, the pro-rata allocation within the marginal level.
const AUCTION_PRO_RATA_FLOW: &str = "\
seq,op,order_id,participant,instrument,side,type,tif,price,qty
1,NEW,1,1,CCC0,BUY,LIMIT,DAY,101,1
2,NEW,2,2,CCC0,BUY,LIMIT,DAY,100,2
3,NEW,3,3,CCC0,BUY,LIMIT,DAY,100,4
4,NEW,4,4,CCC0,BUY,LIMIT,DAY,100,4
5,NEW,5,5,CCC0,BUY,LIMIT,DAY,98,6
6,NEW,6,1,CCC0,SELL,LIMIT,DAY,99,3
7,NEW,7,2,CCC0,SELL,LIMIT,DAY,100,4
8,NEW,8,3,CCC0,SELL,LIMIT,DAY,103,5
9,NEW,9,4,CCC1,BUY,LIMIT,DAY,50,6
10,NEW,10,5,CCC1,SELL,LIMIT,DAY,49,2
11,NEW,11,1,CCC1,SELL,LIMIT,DAY,50,2
12,NEW,12,2,CCC1,SELL,LIMIT,DAY,50,2
13,NEW,13,3,CCC1,SELL,LIMIT,DAY,50,2
14,NEW,14,4,CCC2,BUY,LIMIT,DAY,20,9
15,NEW,15,5,CCC2,BUY,LIMIT,DAY,20,1
16,NEW,16,1,CCC2,SELL,LIMIT,DAY,20,5
17,UNCROSS,,,CCC0,,,,,
18,UNCROSS,,,CCC1,,,,,
19,UNCROSS,,,CCC2,,,,,
";

// CCC0: D(98) = 17, D(99..100) = 11, D(101) = 1; S(99) = 3, S(100..102) = 7, S(103) = 12.
//   V: 98 -> 0, 99 -> 3, 100 -> 7, 101 -> 1, 102 and 103 -> 0: P = 100, V = 7.
//   Buys: 1 (101) takes 1; 6 are left for the level 100 of 10 (orders 2, 3, 4 with 2, 4, 4):
//   6*2/10 = 1 rem 2, 6*4/10 = 2 rem 4, 2 rem 4; one unit left goes to the largest remainder,
//   a tie of 3 and 4 (not 2, the earliest, whose remainder is smaller): 3, the earlier of them.
//   Allocations 1:1, 2:1, 3:3, 4:2 (5, limit 98, takes no part). Sells 6:3, 7:4 (8 at 103 none).
//   Pairing in priority order: 1-6 1, 2-6 1, 3-6 1, 3-7 2, 4-7 2.
// CCC1: D = 6 for P <= 50; S(49) = 2, S(50) = 8: P = 50, V = 6. Sells: 10 (49) takes 2; 4 left
//   for the level 50 of 6 (11, 12, 13 with 2 each): 4*2/6 = 1 rem 2 each, a three-way tie: the
//   one unit left goes to 11, the earliest. 11:2, 12:1, 13:1.
// CCC2: one level on each side at 20: V = 5. Buys 14 and 15 (9 and 1 of 10): 5*9/10 = 4 rem 5,
//   5*1/10 = 0 rem 5: the tie goes to 14, the earlier: 14:5, 15:0, and 15 takes no trade.
const AUCTION_PRO_RATA_TRADES: &str = "\
trade_seq,instrument,price,qty,buy_order_id,sell_order_id,aggressor_side
1,CCC0,100,1,1,6,AUCTION
2,CCC0,100,1,2,6,AUCTION
3,CCC0,100,1,3,6,AUCTION
4,CCC0,100,2,3,7,AUCTION
5,CCC0,100,2,4,7,AUCTION
6,CCC1,50,2,9,10,AUCTION
7,CCC1,50,2,9,11,AUCTION
8,CCC1,50,1,9,12,AUCTION
9,CCC1,50,1,9,13,AUCTION
10,CCC2,20,5,14,16,AUCTION
";

const AUCTION_PRO_RATA_BOOK: &str = "\
instrument,side,price,order_id,leaves_qty
CCC0,BUY,100,2,1
CCC0,BUY,100,3,1
CCC0,BUY,100,4,2
CCC0,BUY,98,5,6
CCC0,SELL,103,8,5
CCC1,SELL,50,12,1
CCC1,SELL,50,13,1
CCC2,BUY,20,14,4
CCC2,BUY,20,15,1
";

#[test]
fn auction_pro_rata_worked_example() {
    check_hand_written(
        "auction pro rata",
        AUCTION_PRO_RATA_FLOW,
        AUCTION_PRO_RATA_TRADES,
        AUCTION_PRO_RATA_BOOK,
    );
}

/// Call auction, time priority through AMEND and CANCEL in the call phase.
const AUCTION_AMEND_FLOW: &str = "\
seq,op,order_id,participant,instrument,side,type,tif,price,qty
1,NEW,1,1,CCC0,BUY,LIMIT,DAY,100,4
2,NEW,2,2,CCC0,BUY,LIMIT,DAY,100,4
3,NEW,3,3,CCC0,BUY,LIMIT,DAY,100,4
4,NEW,4,4,CCC0,SELL,LIMIT,DAY,100,6
5,AMEND,1,1,CCC0,BUY,LIMIT,,100,5
6,AMEND,2,2,CCC0,BUY,LIMIT,,100,3
7,AMEND,3,3,CCC0,BUY,LIMIT,,100,4
8,NEW,5,1,CCC1,SELL,LIMIT,DAY,61,5
9,NEW,6,2,CCC1,SELL,LIMIT,DAY,60,5
10,NEW,7,3,CCC1,BUY,LIMIT,DAY,61,5
11,NEW,8,4,CCC1,BUY,LIMIT,DAY,70,9
12,CANCEL,8,4,CCC1,BUY,,,,
13,AMEND,8,4,CCC1,BUY,LIMIT,,70,9
14,CANCEL,99,4,CCC1,BUY,,,,
15,AMEND,5,1,CCC1,SELL,LIMIT,,60,5
16,UNCROSS,,,CCC0,,,,,
17,UNCROSS,,,CCC1,,,,,
";

// CCC0: 5 raises 1's quantity (loses priority: back of 100), 6 lowers 2's (keeps it), 7 keeps
//   3's (same price and quantity): the level 100 is 2 (3), 3 (4), 1 (5), 12 in all. V = 6 at 100:
//   6*3/12 = 1 rem 6, 6*4/12 = 2 rem 0, 6*5/12 = 2 rem 6; the unit left goes to 2, earlier than
//   1 in the level now (had 1 kept its place, it would take 3 and 2 only 1). 2:2, 3:2, 1:2.
// CCC1: 8 is cancelled, so its AMEND (13) is rejected; CANCEL 99 names no order. 15 moves 5 from
//   61 to 60 without matching the buy at 61: the level 60 is 6, then 5. D = 5 for P <= 61,
//   S(60..61) = 10: V = 5, surplus 5 on [60, 61], P = 60. Sells: 5*5/10 = 2 rem 5 each, the unit
//   left goes to 6 (earlier in the level, though 5 arrived first): 6:3, 5:2.
const AUCTION_AMEND_TRADES: &str = "\
trade_seq,instrument,price,qty,buy_order_id,sell_order_id,aggressor_side
1,CCC0,100,2,2,4,AUCTION
2,CCC0,100,2,3,4,AUCTION
3,CCC0,100,2,1,4,AUCTION
4,CCC1,60,3,7,6,AUCTION
5,CCC1,60,2,7,5,AUCTION
";

const AUCTION_AMEND_BOOK: &str = "\
instrument,side,price,order_id,leaves_qty
CCC0,BUY,100,2,1
CCC0,BUY,100,3,2
CCC0,BUY,100,1,3
CCC1,SELL,60,6,2
CCC1,SELL,60,5,3
";

#[test]
fn auction_amend_priority_worked_example() {
    check_hand_written(
        "auction amend priority",
        AUCTION_AMEND_FLOW,
        AUCTION_AMEND_TRADES,
        AUCTION_AMEND_BOOK,
    );
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
