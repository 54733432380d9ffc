//! Property test: the SQLite registry against the naive reference over random operation
//! sequences. Every answer must match; after every step the holdings must match, the SQLite
//! ledger's invariants must hold, and the blocks of each instrument and vintage must be exactly
//! the serials issued (none held twice, none lost).

use std::collections::BTreeMap;

use cccx_engine::types::InstrumentId;
use cccx_settlement::{
    coalesce, AccountId, IssueUnits, NaiveRegistry, OpenAccount, PostTransfer, ProposeTransfer, Registry,
    RequestId, SerialBlock, SqliteRegistry, Timestamp, Vintage, VoidTransfer,
};
use proptest::prelude::*;

const ACCOUNTS: usize = 4;
/// Proposals draw transfer ids from t0, t1, ...; the other requests draw from pools of their own
/// kind (o, i, p), where reuse means retries and conflicts. Post and void share one pool: the
/// kind of request is part of what an id means. A post or void names a transfer by how many
/// proposals back it was (`TRANSFER_IDS`: an unknown transfer), so most of them find one.
const TRANSFER_IDS: usize = 40;

#[derive(Clone, Debug)]
enum Op {
    Open {
        id: usize,
        account: usize,
    },
    Issue {
        id: usize,
        account: usize,
        instrument: u32,
        vintage: u16,
        quantity: u64,
    },
    Propose {
        id: usize,
        from: usize,
        to: usize,
        instrument: u32,
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
    Expire {
        timeout_ns: u64,
    },
    /// Sends an earlier request again, unchanged.
    Retry {
        back: usize,
    },
    Holdings {
        account: usize,
        instrument: u32,
        back_ns: Option<i64>,
    },
    /// The statement of `[now - back_ns, now - back_ns + len)`.
    Statement {
        account: usize,
        back_ns: i64,
        len: i64,
    },
    Check {
        instrument: u32,
        vintage: Option<u16>,
        sells: Vec<(usize, u64)>,
    },
    Transfer {
        id: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0..32usize;
    let tid = 0..TRANSFER_IDS;
    let account = prop_oneof![12 => 0..ACCOUNTS, 1 => Just(ACCOUNTS)]; // that one is never opened
    let instrument = 0u32..2;
    let vintage = 2021u16..2023;
    prop_oneof![
        1 => (0..8usize, account.clone()).prop_map(|(id, account)| Op::Open { id, account }),
        3 => (id.clone(), account.clone(), instrument.clone(), vintage.clone(), 0u64..30)
            .prop_map(|(id, account, instrument, vintage, quantity)| Op::Issue { id, account, instrument, vintage, quantity }),
        6 => (tid.clone(), account.clone(), account.clone(), instrument.clone(), 0u64..25, proptest::option::of(vintage.clone()))
            .prop_map(|(id, from, to, instrument, quantity, vintage)| Op::Propose { id, from, to, instrument, quantity, vintage }),
        5 => (id.clone(), prop_oneof![20 => 0..4usize, 1 => Just(TRANSFER_IDS)]).prop_map(|(id, transfer)| Op::Post { id, transfer }),
        2 => (id.clone(), prop_oneof![20 => 0..4usize, 1 => Just(TRANSFER_IDS)]).prop_map(|(id, transfer)| Op::Void { id, transfer }),
        1 => (0u64..20).prop_map(|timeout_ns| Op::Expire { timeout_ns }),
        2 => (0usize..40).prop_map(|back| Op::Retry { back }),
        2 => (account.clone(), instrument.clone(), proptest::option::of(0i64..8))
            .prop_map(|(account, instrument, back_ns)| Op::Holdings { account, instrument, back_ns }),
        2 => (account.clone(), 0i64..60, 0i64..40).prop_map(|(account, back_ns, len)| Op::Statement { account, back_ns, len }),
        1 => (instrument, proptest::option::of(vintage), proptest::collection::vec((account, 0u64..40), 0..4))
            .prop_map(|(instrument, vintage, sells)| Op::Check { instrument, vintage, sells }),
        1 => tid.prop_map(|id| Op::Transfer { id }),
    ]
}

fn rid(kind: char, i: usize) -> RequestId {
    RequestId::new(format!("{kind}{i}")).expect("id")
}

fn acct(i: usize) -> AccountId {
    AccountId::new(format!("acct-{i}")).expect("account")
}

/// Applies a mutating op to one registry: its answer, printed for comparison, and the block
/// it issued, if it is an issue that succeeded (a retry answers the same block again).
fn apply(r: &mut dyn Registry, op: &Op, now: Timestamp) -> Option<(String, Option<SerialBlock>)> {
    let answer = match op {
        Op::Open { id, account } => {
            format!("{:?}", r.open_account(&OpenAccount { id: rid('o', *id), account: acct(*account) }, now))
        }
        Op::Issue { id, account, instrument, vintage, quantity } => {
            let req = IssueUnits {
                id: rid('i', *id),
                account: acct(*account),
                instrument: InstrumentId(*instrument),
                vintage: Vintage(*vintage),
                quantity: *quantity,
            };
            let answer = r.issue(&req, now);
            return Some((format!("{answer:?}"), answer.ok().map(|i| i.block)));
        }
        Op::Propose { id, from, to, instrument, quantity, vintage } => {
            let req = ProposeTransfer {
                id: rid('t', *id),
                from: acct(*from),
                to: acct(*to),
                instrument: InstrumentId(*instrument),
                quantity: *quantity,
                vintage: vintage.map(Vintage),
            };
            format!("{:?}", r.propose(&req, now))
        }
        Op::Post { id, transfer } => {
            format!("{:?}", r.post(&PostTransfer { id: rid('p', *id), transfer: rid('t', *transfer) }, now))
        }
        Op::Void { id, transfer } => {
            format!("{:?}", r.void(&VoidTransfer { id: rid('p', *id), transfer: rid('t', *transfer) }, now))
        }
        Op::Expire { timeout_ns } => format!("{:?}", r.expire_pending(*timeout_ns, now)),
        _ => return None,
    };
    Some((answer, None))
}

/// Runs a query op on one registry.
fn query(r: &dyn Registry, op: &Op, now: Timestamp) -> String {
    match op {
        // Each with the same question about every account at once (the embedded registry
        // answers it from one pass over its record, the naive one account by account).
        Op::Holdings { account, instrument, back_ns } => {
            let as_of = back_ns.map(|b| Timestamp(now.0 - b));
            let one = r.holdings(&acct(*account), InstrumentId(*instrument), as_of);
            let all: Vec<AccountId> = (0..=ACCOUNTS).map(acct).collect();
            format!("{one:?} {:?}", r.holdings_of(&all, InstrumentId(*instrument), as_of))
        }
        Op::Statement { account, back_ns, len } => {
            let (from, to) = (Timestamp(now.0 - back_ns), Timestamp(now.0 - back_ns + len));
            let all: Vec<AccountId> = (0..=ACCOUNTS).rev().map(acct).collect();
            format!("{:?} {:?}", r.statement(&acct(*account), from, to), r.statements_of(&all, from, to))
        }
        Op::Check { instrument, vintage, sells } => {
            let sells: BTreeMap<AccountId, u64> = sells.iter().map(|(a, q)| (acct(*a), *q)).collect();
            format!("{:?}", r.holdings_check(InstrumentId(*instrument), vintage.map(Vintage), &sells))
        }
        Op::Transfer { id } => format!("{:?}", r.transfer(&rid('t', *id))),
        _ => String::new(),
    }
}

/// Serials must be neither duplicated nor lost: per instrument and vintage, the blocks held are
/// exactly the blocks issued.
fn check_conservation(sqlite: &SqliteRegistry, issued: &[SerialBlock]) -> Result<(), TestCaseError> {
    let held: Vec<SerialBlock> =
        sqlite.snapshot().expect("snapshot").into_values().flatten().map(|h| h.block).collect();
    let count: u64 = held.iter().map(|b| b.quantity()).sum();
    let issued_count: u64 = issued.iter().map(|b| b.quantity()).sum();
    prop_assert_eq!(count, issued_count, "units held twice or lost");
    prop_assert_eq!(coalesce(held), coalesce(issued.to_vec()));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_registry_matches_the_naive_model(
        steps in proptest::collection::vec((op(), prop_oneof![1 => Just(-1i64), 12 => 0i64..4]), 1..80),
    ) {
        let mut sqlite = SqliteRegistry::open_in_memory().expect("open");
        let mut naive = NaiveRegistry::new();
        let mut issued: Vec<SerialBlock> = Vec::new();
        let mut sent: Vec<Op> = Vec::new();
        let mut proposed: Vec<usize> = Vec::new();
        let mut now = 100i64;
        // A start that makes most random requests meaningful: every account but the last is
        // open and holds units of both instruments.
        for a in 0..ACCOUNTS {
            let open = OpenAccount { id: rid('o', 100 + a), account: acct(a) };
            for r in [&mut naive as &mut dyn Registry, &mut sqlite] {
                r.open_account(&open, Timestamp(now)).expect("open");
            }
            for (n, (instrument, vintage)) in [(0, 2022), (1, 2021), (0, 2021)].into_iter().enumerate() {
                let op = Op::Issue { id: 100 + a * 3 + n, account: a, instrument, vintage, quantity: 10 };
                let (answer, block) = apply(&mut naive, &op, Timestamp(now)).expect("issue");
                prop_assert_eq!(apply(&mut sqlite, &op, Timestamp(now)).map(|(a, _)| a), Some(answer));
                issued.extend(block);
                sent.push(op);
            }
        }
        for (step, (op, dt)) in steps.iter().enumerate() {
            now += dt;
            let at = Timestamp(now);
            let back = |k: usize| if k < TRANSFER_IDS && !proposed.is_empty() {
                proposed[proposed.len() - 1 - k % proposed.len()]
            } else {
                TRANSFER_IDS
            };
            let op = match op {
                Op::Retry { back } if !sent.is_empty() => sent[sent.len() - 1 - back % sent.len()].clone(),
                Op::Post { id, transfer } => Op::Post { id: *id, transfer: back(*transfer) },
                Op::Void { id, transfer } => Op::Void { id: *id, transfer: back(*transfer) },
                op => op.clone(),
            };
            if let Some((expected, block)) = apply(&mut naive, &op, at) {
                let got = apply(&mut sqlite, &op, at).map(|(answer, _)| answer).unwrap_or_default();
                prop_assert_eq!(&got, &expected, "step {} {:?}", step, op);
                if let (Op::Propose { id, .. }, true) = (&op, expected.starts_with("Ok")) {
                    proposed.push(*id);
                }
                if let Some(block) = block.filter(|b| !issued.contains(b)) {
                    issued.push(block);
                }
                if !matches!(op, Op::Expire { .. }) {
                    sent.push(op.clone());
                }
            } else {
                prop_assert_eq!(query(&sqlite, &op, at), query(&naive, &op, at), "step {} {:?}", step, op);
            }
            prop_assert_eq!(sqlite.snapshot().expect("snapshot"), naive.snapshot(), "step {} {:?}", step, op);
            sqlite.check_invariants().map_err(|e| TestCaseError::fail(format!("step {step} {op:?}: {e}")))?;
            check_conservation(&sqlite, &issued)?;
        }
    }
}
