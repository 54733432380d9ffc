//! Delivery versus payment: every trade settles exactly once or ends as a reported break, with
//! the registry failing before or after doing the work, and with crashes in between.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;

use cccx_engine::types::InstrumentId;
use cccx_settlement::audit::AuditLog;
use cccx_settlement::settle::{
    Obligation, ObligationFilter, ObligationState, Settlement, SettlementConfig, TradeToSettle,
    CLEARING_ACCOUNT, FEE_ACCOUNT,
};
use cccx_settlement::{
    Account, AccountId, Holdings, Issuance, IssueUnits, OpenAccount, PostTransfer, ProposeTransfer, Registry,
    RegistryError, RequestId, Shortfall, SqliteRegistry, Statement, Timestamp, Transfer, TransferStatus,
    Vintage, VoidTransfer,
};
use proptest::prelude::*;

/// Forwards the named `Registry` methods of a test wrapper to its `inner` registry, unchanged:
/// `forward!(method, ...)` inside the wrapper's `impl Registry`, which writes only the methods it
/// changes.
macro_rules! forward {
    ($($method:ident),* $(,)?) => { $(forward!(@one $method);)* };
    (@one open_account) => {
        fn open_account(&mut self, req: &OpenAccount, at: Timestamp) -> Result<Account, RegistryError> {
            self.inner.open_account(req, at)
        }
    };
    (@one issue) => {
        fn issue(&mut self, req: &IssueUnits, at: Timestamp) -> Result<Issuance, RegistryError> {
            self.inner.issue(req, at)
        }
    };
    (@one propose) => {
        fn propose(&mut self, req: &ProposeTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
            self.inner.propose(req, at)
        }
    };
    (@one post) => {
        fn post(&mut self, req: &PostTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
            self.inner.post(req, at)
        }
    };
    (@one void) => {
        fn void(&mut self, req: &VoidTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
            self.inner.void(req, at)
        }
    };
    (@one expire_pending) => {
        fn expire_pending(&mut self, timeout_ns: u64, now: Timestamp) -> Result<Vec<Transfer>, RegistryError> {
            self.inner.expire_pending(timeout_ns, now)
        }
    };
    (@one transfer) => {
        fn transfer(&self, id: &RequestId) -> Result<Option<Transfer>, RegistryError> {
            self.inner.transfer(id)
        }
    };
    (@one holdings) => {
        fn holdings(
            &self,
            a: &AccountId,
            i: InstrumentId,
            as_of: Option<Timestamp>,
        ) -> Result<Holdings, RegistryError> {
            self.inner.holdings(a, i, as_of)
        }
    };
    (@one statement) => {
        fn statement(&self, a: &AccountId, from: Timestamp, to: Timestamp) -> Result<Statement, RegistryError> {
            self.inner.statement(a, from, to)
        }
    };
    (@one holdings_check) => {
        fn holdings_check(
            &self,
            i: InstrumentId,
            v: Option<Vintage>,
            sells: &BTreeMap<AccountId, u64>,
        ) -> Result<Vec<Shortfall>, RegistryError> {
            self.inner.holdings_check(i, v, sells)
        }
    };
}

mod common;

use common::{acct, registry_with, trade, CCC};

fn held(r: &dyn Registry, account: &str) -> u64 {
    r.holdings(&acct(account), CCC, None).unwrap().total.held
}

#[test]
fn trades_settle_against_delivery_and_refusals_are_breaks() {
    let mut registry = registry_with(&[("B1", 0), ("B2", 0), ("S1", 100), ("S2", 10)]);
    let config = SettlementConfig { fee_bps: 10, max_attempts: 3 };
    let mut s = Settlement::open_in_memory(config).unwrap();
    let trades = [
        trade("T1", "S1", "B1", 30, 1000),
        trade("T2", "S1", "B2", 20, 1010),
        trade("T3", "S2", "B1", 50, 990),
    ];
    assert_eq!(s.add_trades(&trades, Timestamp(20)).unwrap(), 3);
    // The same trades again change nothing; one under a used id with other fields is refused.
    assert_eq!(s.add_trades(&trades, Timestamp(21)).unwrap(), 0);
    assert!(s.add_trades(&[trade("T1", "S1", "B1", 31, 1000)], Timestamp(21)).is_err());
    assert_eq!(s.balance(CLEARING_ACCOUNT).unwrap(), 30_030 + 20_220 + 49_549);
    let report = s.run(&mut registry, Timestamp(30)).unwrap();
    assert_eq!((report.confirmed, report.broken, report.failed), (2, 1, 0));
    // Certificates moved for T1 and T2 only; S2 was short.
    assert_eq!((held(&registry, "B1"), held(&registry, "B2"), held(&registry, "S1")), (30, 20, 50));
    assert_eq!(held(&registry, "S2"), 10);
    let t3 = s.obligation("T3").unwrap().unwrap();
    assert_eq!(t3.state, ObligationState::Broken);
    assert!(t3.reason.as_deref().unwrap().contains("insufficient units"), "{t3:?}");
    // Funds: value 30,000 and 20,200; fee 10 bps a side (30 and 20).
    assert_eq!(s.balance("B1").unwrap(), -30_030 - 49_549);
    assert_eq!(s.balance("S1").unwrap(), 29_970 + 20_180);
    assert_eq!(s.balance(FEE_ACCOUNT).unwrap(), 60 + 40);
    assert_eq!(s.balance(CLEARING_ACCOUNT).unwrap(), 49_549, "the broken trade's payment stays in clearing");
    s.check().unwrap();
    // Nothing left to do.
    assert_eq!(s.run(&mut registry, Timestamp(31)).unwrap(), Default::default());
    let counts = s.counts().unwrap();
    assert_eq!(counts, vec![(ObligationState::Confirmed, 2), (ObligationState::Broken, 1)]);
}

/// The database's filter gives what filtering every obligation in memory gives, newest first.
#[test]
fn obligations_where_matches_filtering_every_obligation() {
    let mut registry = registry_with(&[("B1", 0), ("B2", 0), ("S1", 100), ("S2", 10)]);
    let mut s = Settlement::open_in_memory(SettlementConfig { fee_bps: 10, max_attempts: 3 }).unwrap();
    let mut trades = Vec::new();
    for n in 0..24u64 {
        let (seller, buyer) = [("S1", "B1"), ("S2", "B2"), ("S1", "B2"), ("S2", "B1")][(n % 4) as usize];
        let mut t = trade(&format!("T{n}"), seller, buyer, 1 + n % 7, 1000);
        t.instrument = InstrumentId((n % 3 == 0) as u32);
        trades.push(t);
    }
    s.add_trades(&trades[..16], Timestamp(20)).unwrap();
    s.run(&mut registry, Timestamp(30)).unwrap();
    s.add_trades(&trades[16..], Timestamp(40)).unwrap();
    let all = s.obligations().unwrap();
    let states = [
        None,
        Some(ObligationState::Created),
        Some(ObligationState::Confirmed),
        Some(ObligationState::Broken),
    ];
    let instruments = [None, Some(InstrumentId(0)), Some(InstrumentId(1))];
    let accounts = [None, Some(acct("B1")), Some(acct("S2")), Some(acct("NOBODY"))];
    let mut nonempty = 0;
    for state in states {
        for instrument in instruments {
            for account in &accounts {
                for limit in [1, 5, 100] {
                    let filter = ObligationFilter { state, instrument, account: account.clone() };
                    let expected: Vec<_> = all
                        .iter()
                        .rev()
                        .filter(|o| state.is_none_or(|w| o.state == w))
                        .filter(|o| instrument.is_none_or(|i| o.trade.instrument == i))
                        .filter(|o| {
                            account.as_ref().is_none_or(|a| o.trade.buyer == *a || o.trade.seller == *a)
                        })
                        .take(limit)
                        .cloned()
                        .collect();
                    nonempty += usize::from(!expected.is_empty());
                    assert_eq!(s.obligations_where(&filter, limit).unwrap(), expected, "{filter:?} {limit}");
                }
            }
        }
    }
    assert!(nonempty > 40, "the filters select something: {nonempty}");
    // Counts per state, in all and per party, as counting every obligation gives them.
    let count = |of: &dyn Fn(&Obligation) -> bool| -> Vec<(ObligationState, u64)> {
        let mut m: BTreeMap<ObligationState, u64> = BTreeMap::new();
        for o in all.iter().filter(|o| of(o)) {
            *m.entry(o.state).or_default() += 1;
        }
        m.into_iter().collect()
    };
    let (total, by_account) = s.counts_by_account().unwrap();
    assert_eq!(total, count(&|_| true));
    assert_eq!(total, s.counts().unwrap());
    assert_eq!(by_account.len(), 4);
    for (account, counts) in by_account {
        assert_eq!(counts, count(&|o| o.trade.buyer == account || o.trade.seller == account), "{account}");
    }
}

#[test]
fn bad_trades_are_refused_with_their_id() {
    let mut s = Settlement::open_in_memory(SettlementConfig::default()).unwrap();
    for (t, needle) in [
        (trade("", "S1", "B1", 1, 1), "id"),
        (trade("T has spaces", "S1", "B1", 1, 1), "id"),
        (trade("T0", "S1", "B1", 0, 1), "positive"),
        (trade("T0", "S1", "B1", 1, -5), "positive"),
        (trade("T0", "S1", "S1", 1, 5), "same account"),
        (trade("T0", "S1", "B1", u64::MAX, i64::MAX), "overflows"),
    ] {
        let err = s.add_trades(&[t], Timestamp(1)).unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
    assert!(s.obligations().unwrap().is_empty());
}

/// A registry that fails on purpose: before doing the work (no effect), or after doing it
/// (the answer is lost), or by crashing the caller after doing it.
struct Flaky<R> {
    inner: R,
    seed: u64,
    /// Out of 100: fail before the work.
    before: u64,
    /// Out of 100: do the work, lose the answer.
    after: u64,
    /// Panic after doing the work, on this call number.
    crash_on: Option<u64>,
    calls: u64,
}

impl<R: Registry> Flaky<R> {
    fn roll(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed % 100
    }

    fn call<T>(&mut self, f: impl FnOnce(&mut R) -> Result<T, RegistryError>) -> Result<T, RegistryError> {
        self.calls += 1;
        if self.roll() < self.before {
            return Err(RegistryError::Storage("unavailable".into()));
        }
        let answer = f(&mut self.inner);
        if self.crash_on == Some(self.calls) {
            panic!("the settlement process dies with the answer in flight");
        }
        if self.roll() < self.after {
            return Err(RegistryError::Storage("answer lost".into()));
        }
        answer
    }
}

impl<R: Registry> Registry for Flaky<R> {
    forward!(open_account, issue, expire_pending, transfer, holdings, statement, holdings_check);
    fn propose(&mut self, req: &ProposeTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        self.call(|r| r.propose(req, at))
    }
    fn post(&mut self, req: &PostTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        self.call(|r| r.post(req, at))
    }
    fn void(&mut self, req: &VoidTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        self.call(|r| r.void(req, at))
    }
}

/// Every obligation confirmed has exactly one completed transfer; every broken one has none;
/// each account holds what it was issued plus what it bought minus what it sold, counting
/// confirmed trades only.
fn check_exactly_once(s: &Settlement, r: &dyn Registry, issued: &BTreeMap<String, u64>) {
    s.check().unwrap();
    let mut expected: BTreeMap<String, i128> =
        issued.iter().map(|(a, q)| (a.clone(), i128::from(*q))).collect();
    for o in s.obligations().unwrap() {
        let transfer = r.transfer(&o.transfer_id().unwrap()).unwrap();
        let completed = transfer.as_ref().is_some_and(|t| t.status == TransferStatus::Completed);
        match o.state {
            ObligationState::Confirmed => {
                assert!(completed, "{o:?}: {transfer:?}");
                *expected.entry(o.trade.buyer.to_string()).or_default() += i128::from(o.trade.qty);
                *expected.entry(o.trade.seller.to_string()).or_default() -= i128::from(o.trade.qty);
            }
            ObligationState::Broken => assert!(!completed, "a broken obligation moved certificates: {o:?}"),
            other => panic!("{o:?} still {other:?}"),
        }
    }
    for (account, qty) in expected {
        assert_eq!(i128::from(held(r, &account)), qty, "{account}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the registry does (fail before, lose answers after), repeated runs settle each
    /// trade exactly once or break it.
    #[test]
    fn every_trade_settles_exactly_once_or_breaks(
        seed in 1..u64::MAX,
        before in 0..40u64,
        after in 0..40u64,
        trades in prop::collection::vec((0..3usize, 0..3usize, 1..30u64, 1..50i64), 1..30),
    ) {
        let accounts = ["A", "B", "C"];
        let issued: BTreeMap<String, u64> = [("A", 60), ("B", 25), ("C", 0)].iter().map(|(a, q)| (a.to_string(), *q)).collect();
        let inner = registry_with(&[("A", 60), ("B", 25), ("C", 0)]);
        let mut registry = Flaky { inner, seed, before, after, crash_on: None, calls: 0 };
        let mut s = Settlement::open_in_memory(SettlementConfig { fee_bps: 25, max_attempts: 4 }).unwrap();
        let list: Vec<TradeToSettle> = trades
            .iter()
            .enumerate()
            .filter(|(_, (from, to, _, _))| from != to)
            .map(|(n, (from, to, qty, price))| trade(&format!("T{n}"), accounts[*from], accounts[*to], *qty, *price * 100))
            .collect();
        s.add_trades(&list, Timestamp(5)).unwrap();
        for round in 0..10 {
            s.run(&mut registry, Timestamp(100 + round)).unwrap();
            s.check().unwrap();
        }
        check_exactly_once(&s, &registry.inner, &issued);
    }
}

/// The settlement process dies after the registry did the work and before the answer was
/// recorded; restarted, it resumes with the same request ids and nothing moves twice.
#[test]
fn a_crash_in_flight_is_resumed_without_moving_anything_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("settlement.db");
    let issued: BTreeMap<String, u64> =
        [("S1".to_string(), 100), ("B1".to_string(), 0)].into_iter().collect();
    let inner = registry_with(&[("S1", 100), ("B1", 0)]);
    // A run proposes a chunk, then posts it: calls 1 and 2 propose T1 and T2, call 3 posts T1:
    // die right after that post.
    let mut registry = Flaky { inner, seed: 7, before: 0, after: 0, crash_on: Some(3), calls: 0 };
    let config = SettlementConfig::default();
    let audit = dir.path().join("audit.jsonl");
    let open = || Settlement::open(&db, config).unwrap().with_audit(AuditLog::open(&audit).unwrap());
    {
        let mut s = open();
        s.add_trades(&[trade("T1", "S1", "B1", 40, 500), trade("T2", "S1", "B1", 10, 505)], Timestamp(5))
            .unwrap();
        let crashed = std::panic::catch_unwind(AssertUnwindSafe(|| s.run(&mut registry, Timestamp(10))));
        assert!(crashed.is_err(), "the process died");
    }
    assert_eq!(held(&registry.inner, "B1"), 40, "the registry did move T1");
    registry.crash_on = None;
    let mut s = open();
    assert_eq!(s.obligation("T1").unwrap().unwrap().state, ObligationState::Submitted);
    let report = s.run(&mut registry, Timestamp(20)).unwrap();
    assert_eq!((report.confirmed, report.broken), (2, 0));
    assert_eq!(s.obligation("T1").unwrap().unwrap().attempts, 2);
    check_exactly_once(&s, &registry.inner, &issued);
    assert_eq!(held(&registry.inner, "B1"), 50);
    // The audit trail is intact and tells the story: both trades created, T1 submitted twice.
    drop(s);
    let (records, _) = cccx_settlement::audit::verify(&audit).unwrap();
    let text = std::fs::read_to_string(&audit).unwrap();
    let submitted = text.lines().filter(|l| l.contains("\"T1\"") && l.contains("\"submitted\"")).count();
    assert_eq!(submitted, 2, "{text}");
    assert!(records >= 8, "{records}");
}

/// Regressions from the review of settlement (each once a confirmed bug).
mod review {
    use super::*;

    /// A registry whose every post is lost in transit (no answer), but which completes the
    /// transfer later, just before the void arrives (`late_post`); or whose status query fails
    /// (`blind`).
    struct Late {
        inner: SqliteRegistry,
        late_post: bool,
        blind: bool,
    }

    impl Registry for Late {
        forward!(open_account, issue, propose, expire_pending, holdings, statement, holdings_check);
        fn post(&mut self, _req: &PostTransfer, _at: Timestamp) -> Result<Transfer, RegistryError> {
            Err(RegistryError::Storage("timed out".into()))
        }
        fn void(&mut self, req: &VoidTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
            if self.late_post {
                let post = PostTransfer {
                    id: RequestId::new(format!("{}:c", &req.transfer.as_str()[..2])).unwrap(),
                    transfer: req.transfer.clone(),
                };
                self.inner.post(&post, at).unwrap();
            }
            self.inner.void(req, at)
        }
        fn transfer(&self, id: &RequestId) -> Result<Option<Transfer>, RegistryError> {
            if self.blind {
                return Err(RegistryError::Storage("unreachable".into()));
            }
            self.inner.transfer(id)
        }
    }

    /// The post lands after its attempt timed out and before the void: delivered, so
    /// confirmed and paid, never broken.
    #[test]
    fn a_late_post_that_beats_the_void_is_a_delivery() {
        let mut registry =
            Late { inner: registry_with(&[("S1", 100), ("B1", 0)]), late_post: true, blind: false };
        let mut s = Settlement::open_in_memory(SettlementConfig { fee_bps: 0, max_attempts: 1 }).unwrap();
        s.add_trades(&[trade("T1", "S1", "B1", 40, 500)], Timestamp(5)).unwrap();
        let report = s.run(&mut registry, Timestamp(10)).unwrap();
        assert_eq!((report.confirmed, report.broken), (1, 0), "{:?}", s.obligation("T1").unwrap());
        assert_eq!(s.balance("S1").unwrap(), 20_000);
        let issued = [("S1".to_string(), 100), ("B1".to_string(), 0)].into_iter().collect();
        check_exactly_once(&s, &registry.inner, &issued);
    }

    /// When the registry cannot say what became of the transfer, the obligation stays in doubt
    /// (failed, not broken) and is settled once the registry answers again.
    #[test]
    fn an_unknown_outcome_is_not_a_break() {
        let mut registry =
            Late { inner: registry_with(&[("S1", 100), ("B1", 0)]), late_post: false, blind: true };
        let mut s = Settlement::open_in_memory(SettlementConfig { fee_bps: 0, max_attempts: 1 }).unwrap();
        s.add_trades(&[trade("T1", "S1", "B1", 40, 500)], Timestamp(5)).unwrap();
        let report = s.run(&mut registry, Timestamp(10)).unwrap();
        assert_eq!((report.failed, report.broken), (1, 0));
        assert_eq!(s.obligation("T1").unwrap().unwrap().state, ObligationState::Failed);
        // The registry answers again (and posts this time).
        let mut healthy = registry.inner;
        let report = s.run(&mut healthy, Timestamp(20)).unwrap();
        assert_eq!(report.confirmed, 1);
        let issued = [("S1".to_string(), 100), ("B1".to_string(), 0)].into_iter().collect();
        check_exactly_once(&s, &healthy, &issued);
    }

    #[test]
    fn a_fee_above_the_whole_value_is_refused() {
        assert!(Settlement::open_in_memory(SettlementConfig { fee_bps: 10_001, max_attempts: 1 }).is_err());
        let mut s =
            Settlement::open_in_memory(SettlementConfig { fee_bps: 10_000, max_attempts: 1 }).unwrap();
        let too_big = trade("T1", "S1", "B1", 3, 1_000_000_000_000_000_000);
        assert!(s.add_trades(&[too_big], Timestamp(1)).is_err());
    }
}

/// Batches as a whole fail: before the registry did anything, or after it applied the whole
/// batch (the answer lost). Every item of such a batch got no answer.
mod whole_batches {
    use cccx_settlement::settle::RUN_CHUNK_MAX;
    use cccx_settlement::{BatchAnswers, BatchOp};

    use super::*;

    struct BatchFlaky {
        inner: SqliteRegistry,
        seed: u64,
        /// Out of 100: the batch fails before any work.
        before: u64,
        /// Out of 100: the batch is applied, its answer lost.
        after: u64,
        batches: u64,
    }

    impl BatchFlaky {
        fn roll(&mut self) -> u64 {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            self.seed % 100
        }
    }

    impl Registry for BatchFlaky {
        forward!(
            open_account,
            issue,
            propose,
            post,
            void,
            expire_pending,
            transfer,
            holdings,
            statement,
            holdings_check
        );
        fn apply_batch(&mut self, ops: &[BatchOp], at: Timestamp) -> Result<BatchAnswers, RegistryError> {
            self.batches += 1;
            if self.roll() < self.before {
                return Err(RegistryError::Storage("unavailable".into()));
            }
            let answers = self.inner.apply_batch(ops, at)?;
            if self.roll() < self.after {
                return Err(RegistryError::Storage("answer lost".into()));
            }
            Ok(answers)
        }
    }

    /// More obligations than one chunk holds, some sellers short, and a third of the batches
    /// failing as a whole: every trade settles exactly once or breaks, a batch without an
    /// answer never breaks anything by itself, and the audit trail holds every step.
    #[test]
    fn chunks_with_whole_batch_failures_settle_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = [("A", 3_000), ("B", 2_000), ("C", 5), ("D", 0)];
        let issued: BTreeMap<String, u64> = accounts.iter().map(|(a, q)| (a.to_string(), *q)).collect();
        let inner = registry_with(&accounts);
        let mut registry = BatchFlaky { inner, seed: 99, before: 15, after: 15, batches: 0 };
        let audit = dir.path().join("audit.jsonl");
        let config = SettlementConfig { fee_bps: 5, max_attempts: 50 };
        let mut s = Settlement::open(dir.path().join("settlement.db"), config)
            .unwrap()
            .with_audit(AuditLog::open(&audit).unwrap());
        let names = ["A", "B", "C", "D"];
        let trades: Vec<TradeToSettle> = (0..RUN_CHUNK_MAX * 2 + 100)
            .map(|n| {
                let (from, to) = (n % 3, (n % 3 + 1 + n % 2) % 4);
                trade(&format!("T{n}"), names[from], names[to], 1 + (n % 3) as u64, 100)
            })
            .collect();
        assert_eq!(s.add_trades(&trades, Timestamp(5)).unwrap(), trades.len());
        for round in 0..40 {
            s.run(&mut registry, Timestamp(100 + round)).unwrap();
            s.check().unwrap();
        }
        check_exactly_once(&s, &registry.inner, &issued);
        registry.inner.check_invariants().unwrap();
        let counts = s.counts().unwrap();
        assert!(counts.iter().any(|(state, n)| *state == ObligationState::Broken && *n > 0), "{counts:?}");
        assert!(registry.batches > 3, "several chunks, several rounds: {} batches", registry.batches);
        drop(s);
        cccx_settlement::audit::verify(&audit).unwrap();
    }
}

/// The database's layout: older versions are converted when opened, and the balances kept per
/// account are checked against the movements.
mod schema {
    use super::*;
    use cccx_settlement::SerialBlock;
    use rusqlite::{params, Connection};

    /// The tables schema version 2 created (version 1: the same without `blocks`).
    const VERSION_2: &str = "CREATE TABLE settlement_schema (version INTEGER NOT NULL);
        CREATE TABLE obligations (
            trade_id VARCHAR(64) PRIMARY KEY,
            seq INTEGER NOT NULL,
            trade TEXT NOT NULL,
            buyer VARCHAR(64) NOT NULL,
            seller VARCHAR(64) NOT NULL,
            fee BIGINT NOT NULL,
            state VARCHAR(16) NOT NULL,
            attempts INTEGER NOT NULL,
            reason TEXT,
            updated_at BIGINT NOT NULL,
            blocks TEXT
        );
        CREATE INDEX obligations_state ON obligations (state, seq);
        CREATE TABLE funds (
            seq INTEGER NOT NULL,
            account VARCHAR(64) NOT NULL,
            trade_id VARCHAR(64) NOT NULL,
            kind VARCHAR(16) NOT NULL,
            amount BIGINT NOT NULL,
            at BIGINT NOT NULL
        );
        CREATE INDEX funds_account ON funds (account);
        CREATE INDEX funds_seq ON funds (seq);
        CREATE UNIQUE INDEX funds_once ON funds (trade_id, account, kind);";

    /// The tables schema version 3 created: trades in columns, funds as signed rows per account.
    const VERSION_3: &str = "CREATE TABLE settlement_schema (version INTEGER NOT NULL);
        CREATE TABLE obligations (
            seq INTEGER PRIMARY KEY,
            trade_id VARCHAR(64) NOT NULL UNIQUE,
            instrument INTEGER NOT NULL,
            buyer VARCHAR(64) NOT NULL,
            seller VARCHAR(64) NOT NULL,
            qty BIGINT NOT NULL,
            price BIGINT NOT NULL,
            traded_at BIGINT NOT NULL,
            fee BIGINT NOT NULL,
            state VARCHAR(16) NOT NULL,
            attempts INTEGER NOT NULL,
            reason TEXT,
            updated_at BIGINT NOT NULL,
            blocks TEXT
        );
        CREATE INDEX obligations_open ON obligations (seq) WHERE state <> 'confirmed' AND state <> 'broken';
        CREATE TABLE funds (
            seq INTEGER PRIMARY KEY,
            account VARCHAR(64) NOT NULL,
            obligation BIGINT NOT NULL,
            kind VARCHAR(16) NOT NULL,
            amount BIGINT NOT NULL,
            at BIGINT NOT NULL
        );
        CREATE UNIQUE INDEX funds_once ON funds (obligation, account, kind);
        CREATE TABLE balances (
            account VARCHAR(64) PRIMARY KEY,
            balance BIGINT NOT NULL
        );";

    const CONFIG: SettlementConfig = SettlementConfig { fee_bps: 10, max_attempts: 3 };

    fn block() -> SerialBlock {
        SerialBlock { instrument: CCC, vintage: Vintage(2024), start: 1, end: 5 }
    }

    /// The obligations of the old databases, fee 10 bps: T1 (5 at 1,000) confirmed at 20 with
    /// its blocks (from version 2), T2 (2 at 1,000) created at 10, T3 (1 at 1,000) broken at 20.
    fn old_rows() -> [(TradeToSettle, &'static str, i64, Option<&'static str>, i64); 3] {
        [
            (trade("T1", "S1", "B1", 5, 1_000), "confirmed", 1, None, 20),
            (trade("T2", "S1", "B1", 2, 1_000), "created", 0, None, 10),
            (trade("T3", "S2", "B1", 1, 1_000), "broken", 1, Some("refused"), 20),
        ]
    }

    /// The signed funds rows of versions 1 to 3 for an obligation: account, kind, amount, time.
    fn old_funds(t: &TradeToSettle, state: &str) -> Vec<(String, &'static str, i64, i64)> {
        let value = t.qty as i64 * t.price;
        let fee = value * 10 / 10_000;
        let mut rows = vec![
            (t.buyer.as_str().to_string(), "pay", -(value + fee), 10),
            (CLEARING_ACCOUNT.to_string(), "pay", value + fee, 10),
        ];
        if state == "confirmed" {
            rows.push((CLEARING_ACCOUNT.to_string(), "deliver", -(value + fee), 20));
            rows.push((t.seller.as_str().to_string(), "receive", value - fee, 20));
            rows.push((FEE_ACCOUNT.to_string(), "fee", 2 * fee, 20));
        }
        rows
    }

    /// A database as version 1, 2 or 3 wrote it, with [`old_rows`].
    fn old_database(path: &std::path::Path, version: i64) {
        if version == 3 {
            return version_3_database(path);
        }
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(VERSION_2).unwrap();
        if version == 1 {
            conn.execute_batch("ALTER TABLE obligations DROP COLUMN blocks").unwrap();
        }
        conn.execute("INSERT INTO settlement_schema (version) VALUES (?1)", [version]).unwrap();
        let mut funds = 0;
        for (n, (t, state, attempts, reason, at)) in old_rows().iter().enumerate() {
            let fee = t.qty as i64 * t.price * 10 / 10_000;
            conn.execute(
                "INSERT INTO obligations (trade_id, seq, trade, buyer, seller, fee, state, attempts, reason, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    t.trade_id,
                    n as i64 + 1,
                    serde_json::to_string(t).unwrap(),
                    t.buyer.as_str(),
                    t.seller.as_str(),
                    fee,
                    state,
                    attempts,
                    reason,
                    at
                ],
            )
            .unwrap();
            for (account, kind, amount, at) in old_funds(t, state) {
                funds += 1;
                conn.execute(
                    "INSERT INTO funds (seq, account, trade_id, kind, amount, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![funds, account, t.trade_id, kind, amount, at],
                )
                .unwrap();
            }
            if *state == "confirmed" && version == 2 {
                conn.execute(
                    "UPDATE obligations SET blocks = ?1 WHERE trade_id = ?2",
                    params![serde_json::to_string(&[block()]).unwrap(), t.trade_id],
                )
                .unwrap();
            }
        }
    }

    /// A database as version 3 wrote it: the rows of [`old_database`], blocks recorded.
    fn version_3_database(path: &std::path::Path) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(VERSION_3).unwrap();
        conn.execute("INSERT INTO settlement_schema (version) VALUES (3)", []).unwrap();
        let mut funds = 0;
        for (n, (t, state, attempts, reason, at)) in old_rows().iter().enumerate() {
            let fee = t.qty as i64 * t.price * 10 / 10_000;
            let blocks = (*state == "confirmed").then(|| serde_json::to_string(&[block()]).unwrap());
            conn.execute(
                "INSERT INTO obligations (seq, trade_id, instrument, buyer, seller, qty, price, traded_at, fee,
                     state, attempts, reason, updated_at, blocks)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    n as i64 + 1,
                    t.trade_id,
                    t.instrument.0,
                    t.buyer.as_str(),
                    t.seller.as_str(),
                    t.qty as i64,
                    t.price,
                    t.traded_at.0,
                    fee,
                    state,
                    attempts,
                    reason,
                    at,
                    blocks
                ],
            )
            .unwrap();
            for (account, kind, amount, at) in old_funds(t, state) {
                funds += 1;
                conn.execute(
                    "INSERT INTO funds (seq, account, obligation, kind, amount, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![funds, account, n as i64 + 1, kind, amount, at],
                )
                .unwrap();
                conn.execute(
                    "INSERT INTO balances (account, balance) VALUES (?1, ?2)
                     ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance",
                    params![account, amount],
                )
                .unwrap();
            }
        }
    }

    fn version(path: &std::path::Path) -> i64 {
        let conn = Connection::open(path).unwrap();
        conn.query_row("SELECT version FROM settlement_schema", [], |r| r.get(0)).unwrap()
    }

    fn converted(version: i64) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("old.db");
        old_database(&db, version);
        let mut s = Settlement::open(&db, CONFIG).unwrap();
        assert_eq!(self::version(&db), 4);
        let all = s.obligations().unwrap();
        let seen: Vec<_> = all
            .iter()
            .map(|o| (o.trade.trade_id.as_str(), o.state, o.attempts, o.reason.as_deref(), o.updated_at.0))
            .collect();
        assert_eq!(
            seen,
            [
                ("T1", ObligationState::Confirmed, 1, None, 20),
                ("T2", ObligationState::Created, 0, None, 10),
                ("T3", ObligationState::Broken, 1, Some("refused"), 20),
            ]
        );
        assert_eq!(all[0].trade, trade("T1", "S1", "B1", 5, 1_000));
        assert_eq!(all[0].fee, 5);
        let blocks = if version >= 2 { vec![block()] } else { Vec::new() };
        assert_eq!(all[0].blocks, blocks);
        assert_eq!(s.balance("B1").unwrap(), -5_005 - 2_002 - 1_001);
        assert_eq!(s.balance("S1").unwrap(), 4_995);
        assert_eq!(s.balance(FEE_ACCOUNT).unwrap(), 10);
        assert_eq!(s.balance(CLEARING_ACCOUNT).unwrap(), 2_002 + 1_001);
        s.check().unwrap();
        // The same trade again changes nothing; another under a used id is refused.
        assert_eq!(s.add_trades(&[trade("T2", "S1", "B1", 2, 1_000)], Timestamp(30)).unwrap(), 0);
        assert!(s.add_trades(&[trade("T2", "S1", "B1", 3, 1_000)], Timestamp(30)).is_err());
        // It settles on: T2 is delivered, a new trade is added and delivered.
        let mut registry = registry_with(&[("S1", 100), ("S2", 0), ("B1", 0)]);
        assert_eq!(s.add_trades(&[trade("T4", "S1", "B1", 1, 1_000)], Timestamp(30)).unwrap(), 1);
        let report = s.run(&mut registry, Timestamp(40)).unwrap();
        assert_eq!((report.confirmed, report.broken, report.failed), (2, 0, 0));
        assert_eq!(held(&registry, "B1"), 3);
        assert_eq!(s.balance("S1").unwrap(), 4_995 + 1_998 + 999);
        assert_eq!(s.balance(CLEARING_ACCOUNT).unwrap(), 1_001);
        s.check().unwrap();
        // Opened again, it is not converted again.
        drop(s);
        let s = Settlement::open(&db, CONFIG).unwrap();
        assert_eq!(s.obligations().unwrap().len(), 4);
        s.check().unwrap();
    }

    #[test]
    fn a_version_2_database_is_converted() {
        converted(2);
    }

    #[test]
    fn a_version_1_database_is_converted() {
        converted(1);
    }

    #[test]
    fn a_version_3_database_is_converted() {
        converted(3);
    }

    /// A version 3 payment missing one of its rows is refused, naming the account whose
    /// balance the conversion would change, and the database is left as it was.
    #[test]
    fn a_version_3_database_with_a_missing_row_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("old.db");
        version_3_database(&db);
        let conn = Connection::open(&db).unwrap();
        conn.execute("DELETE FROM funds WHERE kind = 'fee'", []).unwrap();
        conn.execute("UPDATE balances SET balance = 0 WHERE account = ?1", [FEE_ACCOUNT]).unwrap();
        drop(conn);
        let err = Settlement::open(&db, CONFIG).err().unwrap().to_string();
        assert!(err.contains("converting the version 3 database") && err.contains(CLEARING_ACCOUNT), "{err}");
        assert_eq!(version(&db), 3);
    }

    #[test]
    fn a_database_of_an_unknown_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("new.db");
        drop(Settlement::open(&db, CONFIG).unwrap());
        let conn = Connection::open(&db).unwrap();
        conn.execute("UPDATE settlement_schema SET version = 99", []).unwrap();
        drop(conn);
        let err = Settlement::open(&db, CONFIG).err().unwrap().to_string();
        assert!(err.contains("schema version 99 is not supported"), "{err}");
    }

    /// Version 2 created its tables before it recorded its version: a crash in between left
    /// them, empty, without one.
    #[test]
    fn empty_tables_without_a_version_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("unversioned.db");
        Connection::open(&db).unwrap().execute_batch(VERSION_2).unwrap();
        let mut s = Settlement::open(&db, CONFIG).unwrap();
        assert_eq!(version(&db), 4);
        assert_eq!(s.add_trades(&[trade("T1", "S1", "B1", 1, 1_000)], Timestamp(5)).unwrap(), 1);
        s.check().unwrap();
    }

    #[test]
    fn a_balance_that_is_not_the_sum_of_its_movements_fails_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("settlement.db");
        let mut s = Settlement::open(&db, CONFIG).unwrap();
        s.add_trades(&[trade("T1", "S1", "B1", 5, 1_000)], Timestamp(5)).unwrap();
        s.check().unwrap();
        let conn = Connection::open(&db).unwrap();
        conn.execute("UPDATE balances SET balance = balance + 1 WHERE account = 'B1'", []).unwrap();
        let err = s.check().unwrap_err();
        assert!(err.contains("B1"), "{err}");
        conn.execute("UPDATE balances SET balance = balance - 1 WHERE account = 'B1'", []).unwrap();
        conn.execute("DELETE FROM balances WHERE account = 'B1'", []).unwrap();
        let err = s.check().unwrap_err();
        assert!(err.contains("B1"), "{err}");
    }

    /// Funds movements that are not an obligation's payment and payout fail the check, naming
    /// the trade, though every balance is kept the sum of the movements: a payout moved twice,
    /// a fee missing, a payment from another account, a payout of an obligation not confirmed.
    #[test]
    fn movements_that_are_not_the_payment_and_payout_fail_the_check() {
        let plants = [
            (
                "T1",
                "INSERT INTO funds (seq, obligation, kind, from_account, to_account, amount, at)
                     SELECT 100, obligation, kind, from_account, to_account, amount, 30 FROM funds
                     WHERE kind = 'receive'",
            ),
            ("T1", "DELETE FROM funds WHERE kind = 'fee'"),
            ("T2", "UPDATE funds SET from_account = 'S1' WHERE obligation = 2 AND kind = 'pay'"),
            (
                "T2",
                "INSERT INTO funds (seq, obligation, kind, from_account, to_account, amount, at)
                     VALUES (100, 2, 'receive', 'CLEARING', 'S1', 1998, 30)",
            ),
        ];
        for (trade, plant) in plants {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("old.db");
            old_database(&db, 2);
            let s = Settlement::open(&db, CONFIG).unwrap();
            s.check().unwrap();
            let conn = Connection::open(&db).unwrap();
            conn.execute_batch(plant).unwrap();
            // Every balance the sum of the movements again: only the per-trade check can tell.
            conn.execute_batch(
                "DELETE FROM balances;
                 INSERT INTO balances (account, balance) SELECT account, SUM(amount) FROM
                     (SELECT to_account AS account, amount FROM funds
                      UNION ALL SELECT from_account, -amount FROM funds)
                 GROUP BY account;",
            )
            .unwrap();
            let err = s.check().unwrap_err();
            assert!(err.contains(&format!("trade {trade} ")), "{plant}: {err}");
        }
    }

    /// A registry that, while the first batch is out, has another process mark T1 confirmed.
    struct Meddling {
        inner: SqliteRegistry,
        db: std::path::PathBuf,
    }

    impl Registry for Meddling {
        forward!(
            open_account,
            issue,
            propose,
            post,
            void,
            expire_pending,
            transfer,
            holdings,
            statement,
            holdings_check
        );
        fn apply_batch(
            &mut self,
            ops: &[cccx_settlement::BatchOp],
            at: Timestamp,
        ) -> Result<cccx_settlement::BatchAnswers, RegistryError> {
            let conn = Connection::open(&self.db).unwrap();
            conn.execute("UPDATE obligations SET state = 'confirmed' WHERE trade_id = 'T1'", []).unwrap();
            self.inner.apply_batch(ops, at)
        }
    }

    /// An obligation another process moved while its transfer was out is not recorded over: the
    /// run stops, and none of the chunk's outcomes is recorded.
    #[test]
    fn an_obligation_changed_by_another_process_is_not_recorded_over() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("settlement.db");
        let mut s = Settlement::open(&db, CONFIG).unwrap();
        s.add_trades(&[trade("T1", "S1", "B1", 1, 1_000), trade("T2", "S1", "B1", 1, 1_000)], Timestamp(5))
            .unwrap();
        let mut registry = Meddling { inner: registry_with(&[("S1", 10), ("B1", 0)]), db: db.clone() };
        let err = s.run(&mut registry, Timestamp(10)).unwrap_err().to_string();
        assert!(err.contains("obligation T1 changed under this runner"), "{err}");
        let t2 = s.obligation("T2").unwrap().unwrap();
        assert_eq!((t2.state, t2.attempts), (ObligationState::Submitted, 1));
        assert_eq!(s.balance("S1").unwrap(), 0, "nobody paid");
    }
}
