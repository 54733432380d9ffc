//! The batch route, `POST /v1/batch`, on a real server on 127.0.0.1: per-item answers and
//! idempotency, the size limit, and a batch whose answer was lost, sent again, moving nothing
//! twice.

use cccx_engine::types::InstrumentId;
use cccx_settlement::client::{HttpRegistry, HttpRegistryConfig};
use cccx_settlement::faults::Faults;
use cccx_settlement::service::RegistryServer;
use cccx_settlement::{
    AccountId, BatchOp, IssueUnits, NaiveRegistry, OpenAccount, PostTransfer, ProposeAndPost,
    ProposeTransfer, Registry, RegistryError, RequestId, SqliteRegistry, Timestamp, Vintage, VoidTransfer,
    BATCH_OPS_MAX,
};
use serde_json::{json, Value};

const CCC: InstrumentId = InstrumentId(1);

fn id(s: &str) -> RequestId {
    RequestId::new(s).expect("id")
}

fn acct(s: &str) -> AccountId {
    AccountId::new(s).expect("account")
}

/// Accounts A (holding 10), B and C (holding nothing).
fn setup(r: &mut dyn Registry) {
    for a in ["A", "B", "C"] {
        r.open_account(&OpenAccount { id: id(&format!("open-{a}")), account: acct(a) }, Timestamp(1))
            .expect("open");
    }
    let issue = IssueUnits {
        id: id("i1"),
        account: acct("A"),
        instrument: CCC,
        vintage: Vintage(2022),
        quantity: 10,
    };
    r.issue(&issue, Timestamp(2)).expect("issue");
}

fn propose(t: &str, from: &str, to: &str, quantity: u64) -> BatchOp {
    BatchOp::Propose(ProposeTransfer {
        id: id(t),
        from: acct(from),
        to: acct(to),
        instrument: CCC,
        quantity,
        vintage: None,
    })
}

fn propose_and_post(t: &str, from: &str, to: &str, quantity: u64, p: &str) -> BatchOp {
    let BatchOp::Propose(propose) = propose(t, from, to, quantity) else { unreachable!("a proposal") };
    BatchOp::ProposeAndPost(ProposeAndPost { propose, post_id: id(p) })
}

fn post(p: &str, t: &str) -> BatchOp {
    BatchOp::Post(PostTransfer { id: id(p), transfer: id(t) })
}

fn void(v: &str, t: &str) -> BatchOp {
    BatchOp::Void(VoidTransfer { id: id(v), transfer: id(t) })
}

/// Three batches: proposals (one short, one to an unknown account), then posts and voids (one of
/// a rejected transfer, one under a reused id), then proposals posted at once (one short, one
/// under a used transfer id).
fn batches() -> Vec<Vec<BatchOp>> {
    vec![
        vec![
            propose("T1", "A", "B", 4),
            propose("T2", "A", "C", 40),
            propose("T3", "A", "X", 1),
            propose("T4", "A", "C", 3),
        ],
        vec![post("P1", "T1"), post("P2", "T2"), void("P1", "T4"), void("V4", "T4"), post("P4", "T4")],
        vec![
            propose_and_post("T5", "A", "B", 2, "P5"),
            propose_and_post("T6", "A", "C", 40, "P6"),
            propose_and_post("T1", "A", "C", 1, "P7"),
        ],
    ]
}

fn start(registry: SqliteRegistry, faults: Faults) -> RegistryServer {
    RegistryServer::start(registry, "127.0.0.1:0".parse().expect("address"), faults).expect("start")
}

fn held(r: &dyn Registry, account: &str) -> u64 {
    r.holdings(&acct(account), CCC, None).expect("holdings").total.held
}

/// Every answer through the service equals the reference's, item by item; the same batches
/// again answer the same and change nothing.
#[test]
fn batch_answers_match_the_reference_and_retries_change_nothing() {
    let mut sqlite = SqliteRegistry::open_in_memory().expect("open");
    setup(&mut sqlite);
    let server = start(sqlite, Faults::default());
    let mut http = HttpRegistry::new(&server.url(), HttpRegistryConfig::default()).expect("client");
    let mut naive = NaiveRegistry::new();
    setup(&mut naive);
    for (n, ops) in batches().iter().enumerate() {
        let at = Timestamp(10 + n as i64);
        let expected = naive.apply_batch(ops, at).expect("answers");
        assert_eq!(http.apply_batch(ops, at).expect("answers"), expected, "batch {n}");
    }
    let codes: Vec<bool> =
        naive.apply_batch(&batches()[1], Timestamp(20)).expect("answers").iter().map(Result::is_ok).collect();
    assert_eq!(codes, [true, false, false, true, false]);
    let codes: Vec<bool> =
        naive.apply_batch(&batches()[2], Timestamp(20)).expect("answers").iter().map(Result::is_ok).collect();
    assert_eq!(codes, [true, false, false]);
    for (n, ops) in batches().iter().enumerate() {
        let again = http.apply_batch(ops, Timestamp(30)).expect("answers");
        assert_eq!(again, naive.apply_batch(ops, Timestamp(30)).expect("answers"), "retry of batch {n}");
    }
    assert_eq!((held(&http, "A"), held(&http, "B"), held(&http, "C")), (4, 6, 0));
    server.stop().expect("stop").check_invariants().expect("invariants");
}

/// More operations than the service takes is a 413 problem document; nothing is applied.
#[test]
fn an_oversized_batch_is_refused_whole() {
    let mut sqlite = SqliteRegistry::open_in_memory().expect("open");
    setup(&mut sqlite);
    let server = start(sqlite, Faults::default());
    let ops: Vec<Value> = (0..=BATCH_OPS_MAX)
        .map(|n| json!({"op": "propose", "id": format!("T{n}"), "from": "A", "to": "B", "instrument": 1, "quantity": 1}))
        .collect();
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/v1/batch", server.url()))
        .json(&json!({"ops": ops, "at": 5}))
        .send()
        .expect("send");
    assert_eq!(response.status().as_u16(), 413);
    let kind = response.headers()["content-type"].to_str().expect("type").to_string();
    assert!(kind.starts_with("application/problem+json"), "{kind}");
    let doc: Value = response.json().expect("problem");
    assert_eq!((doc["code"].as_str(), doc["status"].as_u64()), (Some("batch_too_large"), Some(413)), "{doc}");
    // A malformed item refuses the whole batch too.
    let bad = json!({"ops": [{"op": "post", "id": "P1", "transfer": "has space"}], "at": 5});
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/v1/batch", server.url()))
        .json(&bad)
        .send()
        .expect("send");
    assert_eq!(response.status().as_u16(), 400);
    let registry = server.stop().expect("stop");
    assert_eq!(held(&registry, "B"), 0, "nothing applied");
    assert!(registry.transfer(&id("T0")).expect("transfer").is_none());
}

/// The service applies the batch and the answer is lost (every attempt); the client reports no
/// answer. The same batch, sent again once the service answers, gets the first answers, and
/// nothing moved twice.
#[test]
fn a_lost_batch_answer_then_the_same_batch_again_moves_nothing_twice() {
    let mut sqlite = SqliteRegistry::open_in_memory().expect("open");
    setup(&mut sqlite);
    let lossy = Faults { seed: 3, drop_pct: 100, ..Faults::default() };
    let server = start(sqlite, lossy);
    let config = HttpRegistryConfig { attempts_max: 3, backoff_ms: 1, ..HttpRegistryConfig::default() };
    let mut http = HttpRegistry::new(&server.url(), config).expect("client");
    let ops: Vec<BatchOp> = batches().concat();
    let lost = http.apply_batch(&ops, Timestamp(10));
    assert!(matches!(lost, Err(RegistryError::Storage(_))), "{lost:?}");
    assert_eq!(http.attempts(), 3, "every attempt was applied, its answer lost");
    let registry = server.stop().expect("stop");
    let moved = (held(&registry, "A"), held(&registry, "B"), held(&registry, "C"));
    assert_eq!(moved, (4, 6, 0), "applied once, though sent three times");
    let statement =
        |r: &dyn Registry| r.statement(&acct("A"), Timestamp(0), Timestamp(100)).expect("statement");
    let lines = statement(&registry).lines.len();

    let server = start(registry, Faults::default());
    let mut http = HttpRegistry::new(&server.url(), HttpRegistryConfig::default()).expect("client");
    let answers = http.apply_batch(&ops, Timestamp(11)).expect("answers");
    let mut naive = NaiveRegistry::new();
    setup(&mut naive);
    assert_eq!(answers, naive.apply_batch(&ops, Timestamp(10)).expect("answers"), "the first answers");
    assert_eq!((held(&http, "A"), held(&http, "B"), held(&http, "C")), moved);
    assert_eq!(statement(&http).lines.len(), lines);
    server.stop().expect("stop").check_invariants().expect("invariants");
}

/// Settlement through the service with every fault on: batches are refused, applied twice, or
/// applied with their answer lost, and the client gives up after two attempts, so whole
/// batches go unanswered. Every trade still settles exactly once or breaks (for several fault
/// seeds).
#[test]
fn settlement_over_a_faulty_service_moves_each_trade_once() {
    let retried: usize = (1..=6).map(settle_with_faults).sum();
    assert!(retried > 0, "some batches went unanswered");
}

/// One scenario; returns how many obligations took more than one attempt.
fn settle_with_faults(seed: u64) -> usize {
    use cccx_settlement::settle::{ObligationState, Settlement, SettlementConfig, TradeToSettle};
    let mut sqlite = SqliteRegistry::open_in_memory().expect("open");
    setup(&mut sqlite);
    let more = IssueUnits {
        id: id("i2"),
        account: acct("B"),
        instrument: CCC,
        vintage: Vintage(2023),
        quantity: 50,
    };
    sqlite.issue(&more, Timestamp(3)).expect("issue");
    let faults = Faults { seed, error_pct: 30, drop_pct: 30, duplicate_pct: 10, ..Faults::default() };
    let server = start(sqlite, faults);
    let config = HttpRegistryConfig { attempts_max: 2, backoff_ms: 1, ..HttpRegistryConfig::default() };
    let mut http = HttpRegistry::new(&server.url(), config).expect("client");
    let mut s = Settlement::open_in_memory(SettlementConfig { fee_bps: 0, max_attempts: 30 }).expect("open");
    let names = ["A", "B", "C"];
    let trades: Vec<TradeToSettle> = (0..60)
        .map(|n| TradeToSettle {
            trade_id: format!("T{n}"),
            instrument: CCC,
            seller: acct(names[n % 2]),
            buyer: acct(if n % 3 == 0 { "C" } else { names[1 - n % 2] }),
            qty: 1 + (n % 3) as u64,
            price: 100,
            traded_at: Timestamp(4),
        })
        .collect();
    s.add_trades(&trades, Timestamp(5)).expect("add");
    for round in 0..30 {
        s.run(&mut http, Timestamp(100 + round)).expect("run");
    }
    let registry = server.stop().expect("stop");
    registry.check_invariants().expect("invariants");
    s.check().expect("funds");
    let mut expected = [10i64, 50, 0];
    let obligations = s.obligations().expect("obligations");
    for o in &obligations {
        let t = registry.transfer(&o.transfer_id().expect("id")).expect("transfer");
        let completed = t.is_some_and(|t| t.status == cccx_settlement::TransferStatus::Completed);
        match o.state {
            ObligationState::Confirmed => {
                assert!(completed, "{o:?}");
                let at = |a: &AccountId| names.iter().position(|n| *n == a.as_str()).expect("account");
                expected[at(&o.trade.seller)] -= o.trade.qty as i64;
                expected[at(&o.trade.buyer)] += o.trade.qty as i64;
            }
            ObligationState::Broken => assert!(!completed, "{o:?}"),
            other => panic!("seed {seed}: {o:?} still {other:?}"),
        }
    }
    let held: Vec<i64> = names.iter().map(|a| held(&registry, a) as i64).collect();
    assert_eq!(held, expected, "seed {seed}");
    obligations.iter().filter(|o| o.attempts > 1).count()
}
