//! Exactly once across faults: random transfers go through [`HttpRegistry`] to a registry
//! service with every fault switched on (fixed seed), and the naive reference gets the same
//! operations directly. Every answer must match, and at the end the service's ledger must hold
//! exactly what the reference holds, with its invariants intact.

use std::collections::BTreeMap;

use cccx_engine::types::InstrumentId;
use cccx_settlement::client::{HttpRegistry, HttpRegistryConfig};
use cccx_settlement::faults::{DropMode, Faults};
use cccx_settlement::service::RegistryServer;
use cccx_settlement::{
    AccountId, IssueUnits, NaiveRegistry, OpenAccount, PostTransfer, ProposeTransfer, Registry, RequestId,
    SqliteRegistry, Timestamp, Vintage, VoidTransfer,
};

const CCC: InstrumentId = InstrumentId(1);
const ACCOUNTS: usize = 4;

/// SplitMix64, for the operations (the service has its own generator for the faults).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn id(s: String) -> RequestId {
    RequestId::new(s).expect("id")
}

fn acct(n: usize) -> AccountId {
    AccountId::new(format!("IN-CCC-{n}")).expect("account")
}

/// Applies one operation to both registries and checks that they answer alike.
struct Pair {
    http: HttpRegistry,
    naive: NaiveRegistry,
    /// Transfers proposed so far (some rejected).
    transfers: Vec<RequestId>,
    step: i64,
}

macro_rules! same {
    ($pair:expr, $what:expr, |$r:ident| $call:expr) => {{
        let expected = {
            let $r: &mut dyn Registry = &mut $pair.naive;
            $call
        };
        let got = {
            let $r: &mut dyn Registry = &mut $pair.http;
            $call
        };
        assert_eq!(got, expected, "{} at step {}", $what, $pair.step);
        got
    }};
}

impl Pair {
    fn setup(&mut self) {
        for a in 0..ACCOUNTS {
            let open = OpenAccount { id: id(format!("open-{a}")), account: acct(a) };
            same!(self, "open", |r| r.open_account(&open, Timestamp(2 * a as i64))).expect("open");
            let issue = IssueUnits {
                id: id(format!("issue-{a}")),
                account: acct(a),
                instrument: CCC,
                vintage: Vintage(2021 + a as u16),
                quantity: 500,
            };
            same!(self, "issue", |r| r.issue(&issue, Timestamp(2 * a as i64 + 1))).expect("issue");
        }
    }

    fn random_step(&mut self, rng: &mut Rng) {
        self.step += 1;
        let at = Timestamp(10 + self.step);
        match rng.below(10) {
            0..=4 => {
                let tid = id(format!("T{}", self.transfers.len()));
                let from = rng.below(ACCOUNTS);
                let to = (from + 1 + rng.below(ACCOUNTS - 1)) % ACCOUNTS;
                let req = ProposeTransfer {
                    id: tid.clone(),
                    from: acct(from),
                    to: acct(to),
                    instrument: CCC,
                    quantity: 1 + rng.below(120) as u64,
                    vintage: None,
                };
                let _ = same!(self, "propose", |r| r.propose(&req, at));
                self.transfers.push(tid);
            }
            5..=7 if !self.transfers.is_empty() => {
                let transfer = self.transfers[rng.below(self.transfers.len())].clone();
                let rid = id(format!("R{}", self.step));
                if rng.below(3) == 0 {
                    let req = VoidTransfer { id: rid, transfer };
                    let _ = same!(self, "void", |r| r.void(&req, at));
                } else {
                    let req = PostTransfer { id: rid, transfer };
                    let _ = same!(self, "post", |r| r.post(&req, at));
                }
            }
            8 => {
                let _ = same!(self, "expire", |r| r.expire_pending(40, at));
            }
            _ => {
                let a = acct(rng.below(ACCOUNTS));
                let _ = same!(self, "holdings", |r| r.holdings(&a, CCC, None));
                let sells: BTreeMap<AccountId, u64> = [(a, 300)].into();
                let _ = same!(self, "check", |r| r.holdings_check(CCC, None, &sells));
            }
        }
    }

    /// The end state: every account's holdings (now and as of a past time), statement and
    /// every transfer.
    fn compare_everything(&mut self) {
        for a in 0..ACCOUNTS {
            let a = acct(a);
            same!(self, "holdings", |r| r.holdings(&a, CCC, None)).expect("holdings");
            same!(self, "holdings as of", |r| r.holdings(&a, CCC, Some(Timestamp(60)))).expect("as of");
            same!(self, "statement", |r| r.statement(&a, Timestamp(0), Timestamp(i64::MAX))).expect("stmt");
        }
        for t in self.transfers.clone() {
            same!(self, "transfer", |r| r.transfer(&t)).expect("transfer");
        }
    }
}

fn run(faults: Faults, client: HttpRegistryConfig, steps: usize) {
    let listen = "127.0.0.1:0".parse().expect("address");
    let server = RegistryServer::start(SqliteRegistry::open_in_memory().expect("open"), listen, faults)
        .expect("start");
    let http = HttpRegistry::new(&server.url(), client).expect("client");
    let mut pair = Pair { http, naive: NaiveRegistry::new(), transfers: Vec::new(), step: 0 };
    pair.setup();
    let mut rng = Rng(faults.seed ^ 0xC0FFEE);
    for _ in 0..steps {
        pair.random_step(&mut rng);
    }
    pair.compare_everything();
    let (attempts, retries) = (pair.http.attempts(), pair.http.retries());
    eprintln!("{steps} steps: {attempts} attempts, {retries} retries");
    // About a quarter of the attempts fail (errors and dropped answers): many retries.
    assert!(retries * 10 > attempts, "{retries} retries in {attempts} attempts: faults missing");
    let ledger = server.stop().expect("stop");
    ledger.check_invariants().expect("invariants");
    assert_eq!(ledger.snapshot().expect("snapshot"), pair.naive.snapshot());
}

#[test]
fn every_fault_at_once_still_gives_exactly_once_effects() {
    let faults = Faults {
        seed: 20_260_501,
        latency_ms: 0,
        jitter_ms: 2,
        error_pct: 15,
        drop_pct: 15,
        drop_mode: DropMode::Close,
        duplicate_pct: 15,
    };
    let client = HttpRegistryConfig {
        time_source: Default::default(),
        timeout_ms: 5_000,
        attempts_max: 40,
        backoff_ms: 1,
        backoff_max_ms: 20,
    };
    run(faults, client, 400);
}

/// Answers held back past the client's timeout: the client gives up on the attempt and sends
/// the request again while the first answer is still on its way.
#[test]
fn answers_later_than_the_timeout_are_retried_without_a_second_effect() {
    let faults = Faults {
        seed: 7,
        latency_ms: 1,
        jitter_ms: 3,
        error_pct: 10,
        drop_pct: 10,
        drop_mode: DropMode::Delay { delay_ms: 400 },
        duplicate_pct: 10,
    };
    let client = HttpRegistryConfig {
        time_source: Default::default(),
        timeout_ms: 150,
        attempts_max: 40,
        backoff_ms: 1,
        backoff_max_ms: 20,
    };
    run(faults, client, 60);
}

/// Several clients at once, dated by the service's clock (their own clocks would interleave out
/// of order), with faults on: every transfer lands exactly once.
#[test]
fn concurrent_clients_dated_by_the_service_move_every_unit_once() {
    use cccx_settlement::client::TimeSource;
    const CLIENTS: usize = 4;
    const TRANSFERS: u64 = 40;
    let faults = Faults { seed: 11, error_pct: 10, drop_pct: 10, duplicate_pct: 10, ..Faults::default() };
    let listen = "127.0.0.1:0".parse().expect("address");
    let server = RegistryServer::start(SqliteRegistry::open_in_memory().expect("open"), listen, faults)
        .expect("start");
    let config = HttpRegistryConfig {
        time_source: TimeSource::Service,
        timeout_ms: 5_000,
        attempts_max: 40,
        backoff_ms: 1,
        backoff_max_ms: 20,
    };
    let url = server.url();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut r = HttpRegistry::new(&url, config).expect("client");
                let (from, to) = (acct(2 * c), acct(2 * c + 1));
                // The time passed in is ignored: the service dates every change.
                let t = Timestamp(0);
                for a in [&from, &to] {
                    r.open_account(&OpenAccount { id: id(format!("open-{a}")), account: a.clone() }, t)
                        .expect("open");
                }
                let issue = IssueUnits {
                    id: id(format!("issue-{c}")),
                    account: from.clone(),
                    instrument: CCC,
                    vintage: Vintage(2024),
                    quantity: TRANSFERS * 3,
                };
                r.issue(&issue, t).expect("issue");
                for n in 0..TRANSFERS {
                    let tid = id(format!("T{c}-{n}"));
                    let req = ProposeTransfer {
                        id: tid.clone(),
                        from: from.clone(),
                        to: to.clone(),
                        instrument: CCC,
                        quantity: 2,
                        vintage: None,
                    };
                    r.propose(&req, t).expect("propose");
                    r.post(&PostTransfer { id: id(format!("P{c}-{n}")), transfer: tid }, t).expect("post");
                }
                (r.holdings(&from, CCC, None).expect("from"), r.holdings(&to, CCC, None).expect("to"))
            })
        })
        .collect();
    for t in threads {
        let (from, to) = t.join().expect("client thread");
        assert_eq!((from.total.held, to.total.held), (TRANSFERS, TRANSFERS * 2));
    }
    server.stop().expect("stop").check_invariants().expect("invariants");
}
