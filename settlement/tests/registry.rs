//! Scenario tests of the registry interface, each run against the embedded SQLite registry and
//! the naive reference, with the SQLite ledger's invariants checked at the end.

use std::collections::BTreeMap;

use cccx_engine::types::InstrumentId;
use cccx_settlement::{
    AccountId, EntryKind, HeldBlock, IssueUnits, NaiveRegistry, OpenAccount, PostTransfer, ProposeTransfer,
    Registry, RegistryError, RequestId, SerialBlock, Shortfall, SqliteRegistry, Timestamp, Totals,
    TransferStatus, Vintage, VoidTransfer,
};

const CCC: InstrumentId = InstrumentId(1);
const V21: Vintage = Vintage(2021);
const V22: Vintage = Vintage(2022);

fn id(s: &str) -> RequestId {
    RequestId::new(s).expect("valid id")
}

fn acct(s: &str) -> AccountId {
    AccountId::new(s).expect("valid account")
}

fn t(ns: i64) -> Timestamp {
    Timestamp(ns)
}

fn blk(vintage: Vintage, start: u64, end: u64) -> SerialBlock {
    SerialBlock { instrument: CCC, vintage, start, end }
}

fn free(b: SerialBlock) -> HeldBlock {
    HeldBlock { block: b, reserved_by: None }
}

fn reserved(b: SerialBlock, by: &str) -> HeldBlock {
    HeldBlock { block: b, reserved_by: Some(id(by)) }
}

fn totals(held: u64, reserved: u64) -> Totals {
    Totals { held, reserved, available: held - reserved }
}

/// Runs a scenario against both registries, and against the SQLite one again through the
/// registry service and its HTTP client.
fn both(scenario: fn(&mut dyn Registry)) {
    scenario(&mut NaiveRegistry::new());
    let mut sqlite = SqliteRegistry::open_in_memory().expect("open");
    scenario(&mut sqlite);
    sqlite.check_invariants().expect("invariants");
    over_http(scenario);
}

fn over_http(scenario: fn(&mut dyn Registry)) {
    use cccx_settlement::client::{HttpRegistry, HttpRegistryConfig};
    use cccx_settlement::service::RegistryServer;
    let registry = SqliteRegistry::open_in_memory().expect("open");
    let listen = "127.0.0.1:0".parse().expect("address");
    let server = RegistryServer::start(registry, listen, Default::default()).expect("start");
    let mut http = HttpRegistry::new(&server.url(), HttpRegistryConfig::default()).expect("client");
    scenario(&mut http);
    server.stop().expect("stop").check_invariants().expect("invariants");
}

/// Accounts A, B, C (opened at 0, 1, 2); A holds 2022 [1,10], 2021 [1,5], 2022 [11,20] (issued
/// at 3, 4, 5).
fn setup(r: &mut dyn Registry) {
    for (n, a) in ["A", "B", "C"].iter().enumerate() {
        r.open_account(&OpenAccount { id: id(&format!("open-{a}")), account: acct(a) }, t(n as i64)).unwrap();
    }
    for (n, (vintage, quantity)) in [(V22, 10), (V21, 5), (V22, 10)].into_iter().enumerate() {
        let req = IssueUnits {
            id: id(&format!("issue-{n}")),
            account: acct("A"),
            instrument: CCC,
            vintage,
            quantity,
        };
        r.issue(&req, t(n as i64 + 3)).unwrap();
    }
}

fn propose(
    r: &mut dyn Registry,
    tid: &str,
    from: &str,
    to: &str,
    qty: u64,
    at: i64,
) -> Result<cccx_settlement::Transfer, RegistryError> {
    let req = ProposeTransfer {
        id: id(tid),
        from: acct(from),
        to: acct(to),
        instrument: CCC,
        quantity: qty,
        vintage: None,
    };
    r.propose(&req, t(at))
}

fn post(
    r: &mut dyn Registry,
    rid: &str,
    tid: &str,
    at: i64,
) -> Result<cccx_settlement::Transfer, RegistryError> {
    r.post(&PostTransfer { id: id(rid), transfer: id(tid) }, t(at))
}

fn void(
    r: &mut dyn Registry,
    rid: &str,
    tid: &str,
    at: i64,
) -> Result<cccx_settlement::Transfer, RegistryError> {
    r.void(&VoidTransfer { id: id(rid), transfer: id(tid) }, t(at))
}

fn blocks_of(r: &dyn Registry, a: &str) -> Vec<HeldBlock> {
    r.holdings(&acct(a), CCC, None).unwrap().blocks
}

#[test]
fn issue_assigns_consecutive_serials_per_vintage() {
    both(|r| {
        setup(r);
        let h = r.holdings(&acct("A"), CCC, None).unwrap();
        assert_eq!(h.blocks, vec![free(blk(V21, 1, 5)), free(blk(V22, 1, 20))]);
        assert_eq!(h.by_vintage, vec![(V21, totals(5, 0)), (V22, totals(20, 0))]);
        assert_eq!(h.total, totals(25, 0));
        assert!(r.holdings(&acct("A"), InstrumentId(9), None).unwrap().blocks.is_empty());
    });
}

#[test]
fn propose_reserves_oldest_vintage_then_lowest_serial_and_splits_the_last_block() {
    both(|r| {
        setup(r);
        let tr = propose(r, "T1", "A", "B", 7, 10).unwrap();
        assert_eq!(tr.status, TransferStatus::Accepted);
        assert_eq!(tr.blocks, vec![blk(V21, 1, 5), blk(V22, 1, 2)]);
        assert_eq!(tr.resolved_at, None);
        let h = r.holdings(&acct("A"), CCC, None).unwrap();
        assert_eq!(
            h.blocks,
            vec![reserved(blk(V21, 1, 5), "T1"), reserved(blk(V22, 1, 2), "T1"), free(blk(V22, 3, 20))]
        );
        assert_eq!(h.total, totals(25, 7));
        // Nothing moved yet.
        assert!(blocks_of(r, "B").is_empty());
    });
}

#[test]
fn propose_with_a_vintage_takes_only_that_vintage() {
    both(|r| {
        setup(r);
        let req = ProposeTransfer {
            id: id("T1"),
            from: acct("A"),
            to: acct("B"),
            instrument: CCC,
            quantity: 12,
            vintage: Some(V22),
        };
        assert_eq!(r.propose(&req, t(10)).unwrap().blocks, vec![blk(V22, 1, 12)]);
        let req = ProposeTransfer { id: id("T2"), quantity: 9, ..req };
        assert_eq!(
            r.propose(&req, t(11)),
            Err(RegistryError::InsufficientUnits { account: acct("A"), requested: 9, available: 8 })
        );
    });
}

#[test]
fn post_moves_the_reserved_blocks_to_the_acquirer() {
    both(|r| {
        setup(r);
        propose(r, "T1", "A", "B", 7, 10).unwrap();
        let tr = post(r, "P1", "T1", 11).unwrap();
        assert_eq!(tr.status, TransferStatus::Completed);
        assert_eq!(tr.resolved_at, Some(t(11)));
        assert_eq!(blocks_of(r, "A"), vec![free(blk(V22, 3, 20))]);
        assert_eq!(blocks_of(r, "B"), vec![free(blk(V21, 1, 5)), free(blk(V22, 1, 2))]);
        // B passes units on; they leave B oldest first too.
        let tr = propose(r, "T2", "B", "C", 6, 12).unwrap();
        assert_eq!(tr.blocks, vec![blk(V21, 1, 5), blk(V22, 1, 1)]);
        post(r, "P2", "T2", 13).unwrap();
        assert_eq!(blocks_of(r, "C"), vec![free(blk(V21, 1, 5)), free(blk(V22, 1, 1))]);
        assert_eq!(blocks_of(r, "B"), vec![free(blk(V22, 2, 2))]);
    });
}

#[test]
fn reservations_count_against_availability() {
    both(|r| {
        setup(r);
        propose(r, "T1", "A", "B", 20, 10).unwrap();
        let refused = propose(r, "T2", "A", "C", 6, 11);
        assert_eq!(
            refused,
            Err(RegistryError::InsufficientUnits { account: acct("A"), requested: 6, available: 5 })
        );
        let rejected = r.transfer(&id("T2")).unwrap().unwrap();
        assert_eq!(rejected.status, TransferStatus::Rejected);
        assert!(rejected.blocks.is_empty());
        assert_eq!(rejected.resolved_at, Some(t(11)));
        assert_eq!(propose(r, "T3", "A", "C", 5, 12).unwrap().blocks, vec![blk(V22, 16, 20)]);
    });
}

#[test]
fn void_releases_the_reservation_and_ends_the_transfer() {
    both(|r| {
        setup(r);
        propose(r, "T1", "A", "B", 7, 10).unwrap();
        let tr = void(r, "V1", "T1", 11).unwrap();
        assert_eq!(tr.status, TransferStatus::Terminated);
        assert_eq!(r.holdings(&acct("A"), CCC, None).unwrap().total, totals(25, 0));
        assert_eq!(blocks_of(r, "A"), vec![free(blk(V21, 1, 5)), free(blk(V22, 1, 20))]);
        let not_pending =
            RegistryError::TransferNotPending { transfer: id("T1"), status: TransferStatus::Terminated };
        assert_eq!(post(r, "P1", "T1", 12), Err(not_pending.clone()));
        assert_eq!(void(r, "V2", "T1", 12), Err(not_pending));
        assert_eq!(post(r, "P2", "nope", 12), Err(RegistryError::UnknownTransfer(id("nope"))));
    });
}

#[test]
fn expiry_cancels_only_transfers_pending_past_the_timeout() {
    both(|r| {
        setup(r);
        propose(r, "T1", "A", "B", 3, 100).unwrap();
        propose(r, "T2", "A", "C", 3, 200).unwrap();
        propose(r, "T3", "A", "C", 3, 210).unwrap();
        post(r, "P3", "T3", 220).unwrap();
        let expired = r.expire_pending(150, t(250)).unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!((expired[0].id.clone(), expired[0].status), (id("T1"), TransferStatus::Cancelled));
        assert_eq!(expired[0].resolved_at, Some(t(250)));
        assert_eq!(r.transfer(&id("T2")).unwrap().unwrap().status, TransferStatus::Accepted);
        assert_eq!(r.transfer(&id("T3")).unwrap().unwrap().status, TransferStatus::Completed);
        assert_eq!(r.holdings(&acct("A"), CCC, None).unwrap().total, totals(22, 3));
        // Nothing left to expire at the same time; a cancelled transfer can no longer post.
        assert!(r.expire_pending(150, t(250)).unwrap().is_empty());
        let cancelled =
            RegistryError::TransferNotPending { transfer: id("T1"), status: TransferStatus::Cancelled };
        assert_eq!(post(r, "P1", "T1", 251), Err(cancelled));
        // The boundary: proposed exactly `timeout` ago expires.
        assert_eq!(r.expire_pending(150, t(350)).unwrap()[0].id, id("T2"));
    });
}

#[test]
fn holdings_as_of_a_time_show_the_state_after_the_changes_up_to_it() {
    both(|r| {
        setup(r);
        propose(r, "T1", "A", "B", 7, 10).unwrap();
        post(r, "P1", "T1", 20).unwrap();
        let as_of = |r: &dyn Registry, a: &str, at: i64| r.holdings(&acct(a), CCC, Some(t(at))).unwrap();
        assert!(as_of(r, "A", 0).blocks.is_empty());
        assert_eq!(as_of(r, "A", 3).blocks, vec![free(blk(V22, 1, 10))]);
        assert_eq!(as_of(r, "A", 9).blocks, vec![free(blk(V21, 1, 5)), free(blk(V22, 1, 20))]);
        assert_eq!(as_of(r, "A", 10).total, totals(25, 7));
        assert_eq!(as_of(r, "A", 19).blocks[0], reserved(blk(V21, 1, 5), "T1"));
        assert!(as_of(r, "B", 19).blocks.is_empty());
        assert_eq!(as_of(r, "B", 20).total, totals(7, 0));
        assert_eq!(as_of(r, "A", 20).blocks, vec![free(blk(V22, 3, 20))]);
        assert_eq!(as_of(r, "A", 1_000).blocks, blocks_of(r, "A"));
        assert_eq!(as_of(r, "A", 15).as_of, Some(t(15)));
    });
}

#[test]
fn several_changes_at_one_time_show_their_end_state_as_of_that_time() {
    both(|r| {
        setup(r);
        propose(r, "T1", "A", "B", 7, 10).unwrap();
        post(r, "P1", "T1", 10).unwrap();
        assert_eq!(r.holdings(&acct("A"), CCC, Some(t(10))).unwrap().blocks, vec![free(blk(V22, 3, 20))]);
        assert_eq!(r.holdings(&acct("A"), CCC, Some(t(9))).unwrap().total, totals(25, 0));
    });
}

#[test]
fn statement_lists_an_accounts_movements_in_a_time_range() {
    both(|r| {
        setup(r);
        propose(r, "T1", "A", "B", 7, 10).unwrap();
        post(r, "P1", "T1", 20).unwrap();
        propose(r, "T2", "A", "B", 1, 30).unwrap();
        void(r, "V2", "T2", 40).unwrap();
        let s = r.statement(&acct("A"), t(4), t(40)).unwrap();
        let kinds: Vec<(i64, EntryKind, SerialBlock)> =
            s.lines.iter().map(|l| (l.at.0, l.kind, l.block)).collect();
        assert_eq!(
            kinds,
            vec![
                (4, EntryKind::Issued, blk(V21, 1, 5)),
                (5, EntryKind::Issued, blk(V22, 11, 20)),
                (10, EntryKind::Reserved, blk(V21, 1, 5)),
                (10, EntryKind::Reserved, blk(V22, 1, 2)),
                (20, EntryKind::Debited, blk(V21, 1, 5)),
                (20, EntryKind::Debited, blk(V22, 1, 2)),
                (30, EntryKind::Reserved, blk(V22, 3, 3)),
            ]
        );
        assert_eq!(s.lines[4].transfer, Some(id("T1")));
        assert_eq!(s.lines[4].counterparty, Some(acct("B")));
        assert_eq!(s.lines[0].transfer, None);
        let b = r.statement(&acct("B"), t(0), t(100)).unwrap();
        assert_eq!(b.lines.len(), 2);
        assert!(b.lines.iter().all(|l| l.kind == EntryKind::Credited && l.counterparty == Some(acct("A"))));
        let end = r.statement(&acct("A"), t(40), t(41)).unwrap();
        assert_eq!(end.lines[0].kind, EntryKind::Released);
        assert_eq!(r.statement(&acct("Z"), t(0), t(1)), Err(RegistryError::UnknownAccount(acct("Z"))));
    });
}

#[test]
fn holdings_check_reports_sellers_short_of_available_units() {
    both(|r| {
        setup(r);
        propose(r, "T1", "A", "B", 7, 10).unwrap();
        let sells: BTreeMap<AccountId, u64> =
            [(acct("A"), 18), (acct("B"), 1), (acct("C"), 0), (acct("X"), 3)].into();
        let short = r.holdings_check(CCC, None, &sells).unwrap();
        assert_eq!(
            short,
            vec![
                Shortfall { account: acct("B"), requested: 1, available: 0 },
                Shortfall { account: acct("X"), requested: 3, available: 0 },
            ]
        );
        let sells: BTreeMap<AccountId, u64> = [(acct("A"), 19)].into();
        assert_eq!(r.holdings_check(CCC, None, &sells).unwrap()[0].available, 18);
        let sells: BTreeMap<AccountId, u64> = [(acct("A"), 1)].into();
        assert_eq!(r.holdings_check(CCC, Some(V21), &sells).unwrap()[0].available, 0);
        assert_eq!(r.holdings_check(InstrumentId(2), None, &sells).unwrap()[0].available, 0);
    });
}

#[test]
fn a_retried_request_gets_the_same_answer_and_changes_nothing() {
    both(|r| {
        setup(r);
        let first = propose(r, "T1", "A", "B", 7, 10).unwrap();
        let before =
            (r.holdings(&acct("A"), CCC, None).unwrap(), r.statement(&acct("A"), t(0), t(100)).unwrap());
        assert_eq!(propose(r, "T1", "A", "B", 7, 50).unwrap(), first);
        let after =
            (r.holdings(&acct("A"), CCC, None).unwrap(), r.statement(&acct("A"), t(0), t(100)).unwrap());
        assert_eq!(before, after);
        let posted = post(r, "P1", "T1", 60).unwrap();
        assert_eq!(post(r, "P1", "T1", 61).unwrap(), posted);
        assert_eq!(blocks_of(r, "B").len(), 2);
        // Another request id for the same post is a second request: the transfer is done.
        let done =
            RegistryError::TransferNotPending { transfer: id("T1"), status: TransferStatus::Completed };
        assert_eq!(post(r, "P2", "T1", 62), Err(done));
        let issued = r.issue(
            &IssueUnits {
                id: id("issue-0"),
                account: acct("A"),
                instrument: CCC,
                vintage: V22,
                quantity: 10,
            },
            t(63),
        );
        assert_eq!(issued.unwrap().block, blk(V22, 1, 10));
        assert_eq!(r.holdings(&acct("A"), CCC, None).unwrap().total, totals(18, 0));
        let reopen = r.open_account(&OpenAccount { id: id("open-A"), account: acct("A") }, t(64)).unwrap();
        assert_eq!(reopen.opened_at, t(0));
    });
}

#[test]
fn a_refusal_is_an_answer_too() {
    both(|r| {
        setup(r);
        let refused = propose(r, "T1", "A", "B", 30, 10);
        assert!(matches!(refused, Err(RegistryError::InsufficientUnits { .. })));
        r.issue(
            &IssueUnits { id: id("more"), account: acct("A"), instrument: CCC, vintage: V22, quantity: 10 },
            t(11),
        )
        .unwrap();
        // The retry gets the stored refusal, although the units are there now.
        assert_eq!(propose(r, "T1", "A", "B", 30, 12), refused);
        assert_eq!(r.holdings(&acct("A"), CCC, None).unwrap().total, totals(35, 0));
        let exists = r.open_account(&OpenAccount { id: id("open-again"), account: acct("A") }, t(13));
        assert_eq!(exists, Err(RegistryError::AccountExists(acct("A"))));
    });
}

#[test]
fn the_same_id_with_other_fields_is_refused() {
    both(|r| {
        setup(r);
        propose(r, "T1", "A", "B", 7, 10).unwrap();
        let conflict = Err(RegistryError::DuplicateIdOtherFields(id("T1")));
        assert_eq!(propose(r, "T1", "A", "B", 8, 11), conflict);
        assert_eq!(propose(r, "T1", "A", "C", 7, 11), conflict);
        // Post and void carry the same fields: the kind of request tells them apart.
        post(r, "P1", "T1", 12).unwrap();
        assert_eq!(void(r, "P1", "T1", 13).map(|_| ()), Err(RegistryError::DuplicateIdOtherFields(id("P1"))));
        assert_eq!(post(r, "T1", "T1", 13).map(|_| ()), Err(RegistryError::DuplicateIdOtherFields(id("T1"))));
        assert_eq!(r.holdings(&acct("B"), CCC, None).unwrap().total, totals(7, 0));
        // A conflict is not an answer: the id still holds its first request.
        assert_eq!(r.transfer(&id("T1")).unwrap().unwrap().quantity, 7);
    });
}

#[test]
fn time_may_not_go_backwards_but_a_retry_of_an_old_request_still_answers() {
    both(|r| {
        setup(r);
        let first = propose(r, "T1", "A", "B", 1, 10).unwrap();
        assert_eq!(
            propose(r, "T2", "A", "B", 1, 9),
            Err(RegistryError::TimeWentBackwards { given: t(9), last: t(10) })
        );
        assert_eq!(
            r.expire_pending(0, t(5)).map(|_| ()),
            Err(RegistryError::TimeWentBackwards { given: t(5), last: t(10) })
        );
        assert_eq!(propose(r, "T1", "A", "B", 1, 5).unwrap(), first);
        // The refused request left no trace: its id is free.
        assert_eq!(propose(r, "T2", "A", "B", 1, 10).unwrap().blocks, vec![blk(V21, 2, 2)]);
    });
}

#[test]
fn bad_input_is_refused_with_a_named_error() {
    both(|r| {
        setup(r);
        let zero = propose(r, "T1", "A", "B", 0, 10);
        assert!(matches!(zero, Err(RegistryError::InvalidQuantity { quantity: 0, .. })));
        assert_eq!(propose(r, "T2", "A", "A", 1, 10), Err(RegistryError::SameAccount(acct("A"))));
        assert_eq!(propose(r, "T3", "A", "Z", 1, 10), Err(RegistryError::UnknownAccount(acct("Z"))));
        assert_eq!(propose(r, "T4", "Z", "A", 1, 10), Err(RegistryError::UnknownAccount(acct("Z"))));
        assert_eq!(r.transfer(&id("T3")).unwrap().unwrap().status, TransferStatus::Rejected);
        let huge = IssueUnits {
            id: id("I1"),
            account: acct("A"),
            instrument: CCC,
            vintage: V22,
            quantity: u64::MAX,
        };
        assert!(matches!(r.issue(&huge, t(10)), Err(RegistryError::InvalidQuantity { .. })));
        let nowhere =
            IssueUnits { id: id("I2"), account: acct("Z"), instrument: CCC, vintage: V22, quantity: 1 };
        assert_eq!(r.issue(&nowhere, t(10)), Err(RegistryError::UnknownAccount(acct("Z"))));
        assert_eq!(r.holdings(&acct("Z"), CCC, None), Err(RegistryError::UnknownAccount(acct("Z"))));
        assert_eq!(r.transfer(&id("never")).unwrap(), None);
    });
}

#[test]
fn ids_must_be_short_printable_ascii() {
    assert!(RequestId::new("").is_err());
    assert!(RequestId::new("a b").is_err());
    assert!(RequestId::new("é").is_err());
    assert!(RequestId::new("x".repeat(65)).is_err());
    assert!(RequestId::new("x".repeat(64)).is_ok());
    assert!(AccountId::new("IN-CCC-000123").is_ok());
    let err = AccountId::new("\n").unwrap_err();
    assert!(err.to_string().contains("invalid id"), "{err}");
}

#[test]
fn errors_read_clearly() {
    let e = RegistryError::InsufficientUnits { account: acct("A"), requested: 9, available: 8 };
    assert_eq!(e.to_string(), "insufficient units in account A: 9 requested, 8 available");
    let e = RegistryError::DuplicateIdOtherFields(id("T1"));
    assert_eq!(e.to_string(), "request id T1 was already used with other fields");
    let e = RegistryError::TransferNotPending { transfer: id("T1"), status: TransferStatus::Cancelled };
    assert_eq!(e.to_string(), "transfer T1 is not pending: it is cancelled");
}
