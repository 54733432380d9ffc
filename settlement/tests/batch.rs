//! Property test: a batch gives exactly what its operations, sent one by one, would give.
//!
//! The same random batches (proposals, posts, voids and proposals posted at once, with reused
//! ids, conflicting ids,
//! unknown transfers, short sellers, a time that goes back, whole batches sent again) go to the
//! embedded registry's one-transaction batch, to the embedded registry one call at a time, and
//! to the naive reference through the trait's default batch. Every answer must match; after
//! every batch the holdings and statements must match and the ledger's invariants hold.

use std::collections::BTreeMap;

use cccx_engine::types::InstrumentId;
use cccx_settlement::{
    AccountId, BatchOp, IssueUnits, NaiveRegistry, OpenAccount, PostTransfer, ProposeAndPost,
    ProposeTransfer, Registry, RequestId, SqliteRegistry, Timestamp, TransferStatus, Vintage, VoidTransfer,
};
use proptest::prelude::*;

const ACCOUNTS: usize = 4;
const CCC: InstrumentId = InstrumentId(1);

fn rid(kind: char, i: usize) -> RequestId {
    RequestId::new(format!("{kind}{i}")).expect("id")
}

fn acct(i: usize) -> AccountId {
    AccountId::new(format!("acct-{i}")).expect("account")
}

#[derive(Clone, Debug)]
enum Item {
    Propose {
        id: usize,
        from: usize,
        to: usize,
        quantity: u64,
        vintage: Option<u16>,
    },
    Post {
        id: usize,
        transfer: usize,
    },
    Void {
        id: usize,
        transfer: usize,
    },
    /// A proposal posted at once under post id `post` (which may have been used before).
    ProposeAndPost {
        id: usize,
        from: usize,
        to: usize,
        quantity: u64,
        vintage: Option<u16>,
        post: usize,
    },
}

#[derive(Clone, Debug)]
enum Step {
    /// A batch, dated this many ns after the previous step (negative: earlier).
    Batch { dt: i64, items: Vec<Item> },
    /// An earlier batch sent again, unchanged (a retry after a lost answer).
    Again { back: usize },
}

fn item() -> impl Strategy<Value = Item> {
    // An account index of ACCOUNTS is never opened.
    let account = prop_oneof![12 => 0..ACCOUNTS, 1 => Just(ACCOUNTS)];
    prop_oneof![
        5 => (0..24usize, account.clone(), account.clone(), 0u64..40, proptest::option::of(2021u16..2023))
            .prop_map(|(id, from, to, quantity, vintage)| Item::Propose { id, from, to, quantity, vintage }),
        4 => (0..16usize, 0..26usize).prop_map(|(id, transfer)| Item::Post { id, transfer }),
        2 => (0..16usize, 0..26usize).prop_map(|(id, transfer)| Item::Void { id, transfer }),
        4 => (0..24usize, account.clone(), account, 0u64..40, proptest::option::of(2021u16..2023), 0..16usize)
            .prop_map(|(id, from, to, quantity, vintage, post)| Item::ProposeAndPost {
                id,
                from,
                to,
                quantity,
                vintage,
                post
            }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (prop_oneof![10 => 0i64..5, 1 => -3i64..0], prop::collection::vec(item(), 0..12))
            .prop_map(|(dt, items)| Step::Batch { dt, items }),
        1 => (0usize..6).prop_map(|back| Step::Again { back }),
    ]
}

fn proposal(id: usize, from: usize, to: usize, quantity: u64, vintage: Option<u16>) -> ProposeTransfer {
    ProposeTransfer {
        id: rid('t', id),
        from: acct(from),
        to: acct(to),
        instrument: CCC,
        quantity,
        vintage: vintage.map(Vintage),
    }
}

fn op_of(item: &Item) -> BatchOp {
    match *item {
        Item::Propose { id, from, to, quantity, vintage } => {
            BatchOp::Propose(proposal(id, from, to, quantity, vintage))
        }
        // Its post id comes from the pool of posts and voids.
        Item::ProposeAndPost { id, from, to, quantity, vintage, post } => {
            BatchOp::ProposeAndPost(ProposeAndPost {
                propose: proposal(id, from, to, quantity, vintage),
                post_id: rid('p', post),
            })
        }
        Item::Post { id, transfer } => {
            BatchOp::Post(PostTransfer { id: rid('p', id), transfer: rid('t', transfer) })
        }
        // Posts and voids share a pool of ids: a void under a post's id is a conflict.
        Item::Void { id, transfer } => {
            BatchOp::Void(VoidTransfer { id: rid('p', id), transfer: rid('t', transfer) })
        }
    }
}

/// Accounts 0..ACCOUNTS, each issued units of two vintages.
fn setup(r: &mut dyn Registry) {
    for a in 0..ACCOUNTS {
        let open = OpenAccount { id: rid('o', a), account: acct(a) };
        r.open_account(&open, Timestamp(0)).expect("open");
        for (n, vintage) in [2021u16, 2022].into_iter().enumerate() {
            let issue = IssueUnits {
                id: rid('i', a * 2 + n),
                account: acct(a),
                instrument: CCC,
                vintage: Vintage(vintage),
                quantity: 10 + 7 * a as u64,
            };
            r.issue(&issue, Timestamp(0)).expect("issue");
        }
    }
}

fn one_by_one(r: &mut SqliteRegistry, ops: &[BatchOp], at: Timestamp) -> Vec<String> {
    ops.iter().map(|op| format!("{:?}", op.apply_one(r, at))).collect()
}

fn batch(r: &mut dyn Registry, ops: &[BatchOp], at: Timestamp) -> Vec<String> {
    r.apply_batch(ops, at).expect("a batch gets an answer").iter().map(|a| format!("{a:?}")).collect()
}

/// What every account holds and every line of its statement.
fn state(r: &dyn Registry) -> BTreeMap<usize, String> {
    (0..ACCOUNTS)
        .map(|a| {
            let holdings = r.holdings(&acct(a), CCC, None).expect("holdings");
            let statement =
                r.statement(&acct(a), Timestamp(i64::MIN), Timestamp(i64::MAX)).expect("statement");
            (a, format!("{holdings:?} {statement:?}"))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn a_batch_answers_as_its_single_calls_in_sequence(steps in prop::collection::vec(step(), 1..20)) {
        let mut fast = SqliteRegistry::open_in_memory().expect("open");
        let mut single = SqliteRegistry::open_in_memory().expect("open");
        let mut naive = NaiveRegistry::new();
        setup(&mut fast);
        setup(&mut single);
        setup(&mut naive);
        let mut now = 10i64;
        let mut sent: Vec<(Vec<BatchOp>, Timestamp)> = Vec::new();
        for step in &steps {
            let (ops, at) = match step {
                Step::Batch { dt, items } => {
                    now += dt;
                    (items.iter().map(op_of).collect::<Vec<_>>(), Timestamp(now))
                }
                Step::Again { back } => match sent.len().checked_sub(back + 1).and_then(|i| sent.get(i)) {
                    Some(earlier) => earlier.clone(),
                    None => continue,
                },
            };
            let expected = one_by_one(&mut single, &ops, at);
            prop_assert_eq!(&batch(&mut fast, &ops, at), &expected, "{:?} at {:?}", ops, at);
            prop_assert_eq!(&batch(&mut naive, &ops, at), &expected, "naive: {:?} at {:?}", ops, at);
            prop_assert_eq!(state(&fast), state(&single));
            prop_assert_eq!(state(&fast), state(&naive));
            fast.check_invariants().map_err(TestCaseError::fail)?;
            sent.push((ops, at));
        }
        prop_assert_eq!(fast.snapshot().expect("snapshot"), naive.snapshot());
    }
}

/// A batch that is refused part way keeps the rest: a short seller's proposal is refused (and
/// recorded as rejected) while the others in the same batch are accepted and posted.
#[test]
fn one_refusal_leaves_the_others_alone() {
    let mut r = SqliteRegistry::open_in_memory().expect("open");
    setup(&mut r);
    let ops = vec![
        op_of(&Item::Propose { id: 0, from: 0, to: 1, quantity: 5, vintage: None }),
        op_of(&Item::Propose { id: 1, from: 0, to: 1, quantity: 500, vintage: None }),
        op_of(&Item::Propose { id: 2, from: 1, to: 0, quantity: 5, vintage: None }),
        op_of(&Item::Post { id: 0, transfer: 0 }),
        op_of(&Item::Post { id: 1, transfer: 1 }),
        // A reused id with other fields: no answer for it, nothing of it written.
        op_of(&Item::Void { id: 0, transfer: 2 }),
        op_of(&Item::Post { id: 2, transfer: 2 }),
    ];
    let answers = r.apply_batch(&ops, Timestamp(5)).expect("answer");
    let ok: Vec<bool> = answers.iter().map(Result::is_ok).collect();
    assert_eq!(ok, [true, false, true, true, false, false, true], "{answers:?}");
    assert_eq!(r.holdings(&acct(1), CCC, None).expect("holdings").total.held, 34 - 5 + 5);
    r.check_invariants().expect("invariants");
    // The same batch again changes nothing and answers the same.
    let before = state(&r);
    assert_eq!(r.apply_batch(&ops, Timestamp(6)).expect("answer"), answers);
    assert_eq!(state(&r), before);
}

/// A proposal posted at once is posted only when the proposal is accepted: under an id another
/// client used for its own transfer, it is refused and that transfer stays pending, where a
/// proposal and a post in one batch would have completed it.
#[test]
fn a_refused_proposal_is_not_followed_by_its_post() {
    let mut r = SqliteRegistry::open_in_memory().expect("open");
    setup(&mut r);
    let theirs = op_of(&Item::Propose { id: 0, from: 0, to: 1, quantity: 5, vintage: None });
    assert!(r.apply_batch(&[theirs], Timestamp(5)).expect("answer")[0].is_ok());
    let ours = Item::ProposeAndPost { id: 0, from: 2, to: 3, quantity: 5, vintage: None, post: 0 };
    let answers = r.apply_batch(&[op_of(&ours)], Timestamp(6)).expect("answer");
    assert!(
        matches!(&answers[0], Err(cccx_settlement::RegistryError::DuplicateIdOtherFields(id)) if *id == rid('t', 0)),
        "{answers:?}"
    );
    let t = r.transfer(&rid('t', 0)).expect("transfer").expect("stored");
    assert!(t.status.is_pending(), "{t:?}");
    r.check_invariants().expect("invariants");
    // The post id is still free: the plain pair would have used it to complete their transfer.
    let plain = [
        op_of(&Item::Propose { id: 0, from: 2, to: 3, quantity: 5, vintage: None }),
        op_of(&Item::Post { id: 0, transfer: 0 }),
    ];
    let answers = r.apply_batch(&plain, Timestamp(7)).expect("answer");
    assert!(answers[0].is_err() && answers[1].as_ref().is_ok_and(|t| t.from == acct(0)), "{answers:?}");
}

/// Under new ids a proposal posted at once answers and records what the proposal and the post
/// sent one by one do: the same completed transfer, holdings and statements.
#[test]
fn propose_and_post_records_what_the_two_calls_record() {
    let mut fast = SqliteRegistry::open_in_memory().expect("open");
    let mut single = SqliteRegistry::open_in_memory().expect("open");
    setup(&mut fast);
    setup(&mut single);
    let ops: Vec<BatchOp> = (0..4)
        .map(|n| {
            op_of(&Item::ProposeAndPost {
                id: n,
                from: n % ACCOUNTS,
                to: (n + 1) % ACCOUNTS,
                quantity: 3 + n as u64,
                vintage: None,
                post: n,
            })
        })
        .collect();
    let answers = fast.apply_batch(&ops, Timestamp(5)).expect("answer");
    assert!(
        answers.iter().all(|a| a.as_ref().is_ok_and(|t| t.status == TransferStatus::Completed)),
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>(),
        one_by_one(&mut single, &ops, Timestamp(5))
    );
    assert_eq!(state(&fast), state(&single));
    for n in 0..4 {
        assert_eq!(
            fast.transfer(&rid('t', n)).expect("transfer"),
            single.transfer(&rid('t', n)).expect("transfer")
        );
    }
    fast.check_invariants().expect("invariants");
}
