//! Delivery versus payment: every trade settles exactly once or ends as a reported break, with
//! the registry failing before or after doing the work, and with crashes in between.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;

use cccx_engine::types::InstrumentId;
use cccx_settlement::audit::AuditLog;
use cccx_settlement::settle::{
    ObligationState, Settlement, SettlementConfig, TradeToSettle, CLEARING_ACCOUNT, FEE_ACCOUNT,
};
use cccx_settlement::{
    Account, AccountId, Holdings, Issuance, IssueUnits, OpenAccount, PostTransfer, ProposeTransfer, Registry,
    RegistryError, RequestId, Shortfall, SqliteRegistry, Statement, Timestamp, Transfer, TransferStatus,
    Vintage, VoidTransfer,
};
use proptest::prelude::*;

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
    fn open_account(&mut self, req: &OpenAccount, at: Timestamp) -> Result<Account, RegistryError> {
        self.inner.open_account(req, at)
    }
    fn issue(&mut self, req: &IssueUnits, at: Timestamp) -> Result<Issuance, RegistryError> {
        self.inner.issue(req, at)
    }
    fn propose(&mut self, req: &ProposeTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        self.call(|r| r.propose(req, at))
    }
    fn post(&mut self, req: &PostTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        self.call(|r| r.post(req, at))
    }
    fn void(&mut self, req: &VoidTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        self.call(|r| r.void(req, at))
    }
    fn expire_pending(&mut self, timeout_ns: u64, now: Timestamp) -> Result<Vec<Transfer>, RegistryError> {
        self.inner.expire_pending(timeout_ns, now)
    }
    fn transfer(&self, id: &RequestId) -> Result<Option<Transfer>, RegistryError> {
        self.inner.transfer(id)
    }
    fn holdings(
        &self,
        a: &AccountId,
        i: InstrumentId,
        as_of: Option<Timestamp>,
    ) -> Result<Holdings, RegistryError> {
        self.inner.holdings(a, i, as_of)
    }
    fn statement(&self, a: &AccountId, from: Timestamp, to: Timestamp) -> Result<Statement, RegistryError> {
        self.inner.statement(a, from, to)
    }
    fn holdings_check(
        &self,
        i: InstrumentId,
        v: Option<Vintage>,
        sells: &BTreeMap<AccountId, u64>,
    ) -> Result<Vec<Shortfall>, RegistryError> {
        self.inner.holdings_check(i, v, sells)
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
        fn open_account(&mut self, req: &OpenAccount, at: Timestamp) -> Result<Account, RegistryError> {
            self.inner.open_account(req, at)
        }
        fn issue(&mut self, req: &IssueUnits, at: Timestamp) -> Result<Issuance, RegistryError> {
            self.inner.issue(req, at)
        }
        fn propose(&mut self, req: &ProposeTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
            self.inner.propose(req, at)
        }
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
        fn expire_pending(
            &mut self,
            timeout_ns: u64,
            now: Timestamp,
        ) -> Result<Vec<Transfer>, RegistryError> {
            self.inner.expire_pending(timeout_ns, now)
        }
        fn transfer(&self, id: &RequestId) -> Result<Option<Transfer>, RegistryError> {
            if self.blind {
                return Err(RegistryError::Storage("unreachable".into()));
            }
            self.inner.transfer(id)
        }
        fn holdings(
            &self,
            a: &AccountId,
            i: InstrumentId,
            as_of: Option<Timestamp>,
        ) -> Result<Holdings, RegistryError> {
            self.inner.holdings(a, i, as_of)
        }
        fn statement(
            &self,
            a: &AccountId,
            from: Timestamp,
            to: Timestamp,
        ) -> Result<Statement, RegistryError> {
            self.inner.statement(a, from, to)
        }
        fn holdings_check(
            &self,
            i: InstrumentId,
            v: Option<Vintage>,
            sells: &BTreeMap<AccountId, u64>,
        ) -> Result<Vec<Shortfall>, RegistryError> {
            self.inner.holdings_check(i, v, sells)
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
        fn open_account(&mut self, req: &OpenAccount, at: Timestamp) -> Result<Account, RegistryError> {
            self.inner.open_account(req, at)
        }
        fn issue(&mut self, req: &IssueUnits, at: Timestamp) -> Result<Issuance, RegistryError> {
            self.inner.issue(req, at)
        }
        fn propose(&mut self, req: &ProposeTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
            self.inner.propose(req, at)
        }
        fn post(&mut self, req: &PostTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
            self.inner.post(req, at)
        }
        fn void(&mut self, req: &VoidTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
            self.inner.void(req, at)
        }
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
        fn expire_pending(
            &mut self,
            timeout_ns: u64,
            now: Timestamp,
        ) -> Result<Vec<Transfer>, RegistryError> {
            self.inner.expire_pending(timeout_ns, now)
        }
        fn transfer(&self, id: &RequestId) -> Result<Option<Transfer>, RegistryError> {
            self.inner.transfer(id)
        }
        fn holdings(
            &self,
            a: &AccountId,
            i: InstrumentId,
            as_of: Option<Timestamp>,
        ) -> Result<Holdings, RegistryError> {
            self.inner.holdings(a, i, as_of)
        }
        fn statement(
            &self,
            a: &AccountId,
            from: Timestamp,
            to: Timestamp,
        ) -> Result<Statement, RegistryError> {
            self.inner.statement(a, from, to)
        }
        fn holdings_check(
            &self,
            i: InstrumentId,
            v: Option<Vintage>,
            sells: &BTreeMap<AccountId, u64>,
        ) -> Result<Vec<Shortfall>, RegistryError> {
            self.inner.holdings_check(i, v, sells)
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
        assert!(registry.batches > 6, "several chunks, several rounds");
        drop(s);
        cccx_settlement::audit::verify(&audit).unwrap();
    }
}
