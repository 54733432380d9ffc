//! Reconciliation: settle trades against the embedded registry, plant each kind of break in
//! the registry or in the exchange's records, and require each to be found and classified; a
//! property test against a brute-force model; the break lifecycle; the in-flight refusal.

use std::collections::{BTreeMap, BTreeSet};

use cccx_settlement::audit::{self, AuditLog};
use cccx_settlement::reconcile::{
    reconcile, render, BreakStatus, BreakStore, BreakType, ExchangeEntry, ExchangeView, FoundBy, Position,
    ReconcileError, RegistryView, Report, TrailLine,
};
use cccx_settlement::settle::{ObligationState, Settlement, SettlementConfig, TradeToSettle};
use cccx_settlement::{
    EntryKind, HeldBlock, PostTransfer, ProposeTransfer, Registry, RequestId, SerialBlock, SqliteRegistry,
    StatementLine, Timestamp, Vintage,
};
use proptest::prelude::*;

mod common;

use common::{acct, registry_with, CCC};

const FROM: Timestamp = Timestamp(5);
const AS_OF: Timestamp = Timestamp(100);

/// A trade of `qty` at 100.
fn trade(id: &str, seller: &str, buyer: &str, qty: u64) -> TradeToSettle {
    common::trade(id, seller, buyer, qty, 100)
}

/// Moves units in the registry behind the exchange's back.
fn move_units(r: &mut SqliteRegistry, id: &str, from: &str, to: &str, qty: u64, at: i64) {
    let propose = ProposeTransfer {
        id: RequestId::new(id).unwrap(),
        from: acct(from),
        to: acct(to),
        instrument: CCC,
        quantity: qty,
        vintage: None,
    };
    r.propose(&propose, Timestamp(at)).unwrap();
    let post = PostTransfer { id: RequestId::new(format!("{id}:post")).unwrap(), transfer: propose.id };
    r.post(&post, Timestamp(at)).unwrap();
}

/// Plants an obligation the exchange's records call confirmed, with the blocks of the registry
/// transfer under its id (or none when the registry has none).
fn mark_confirmed(db: &std::path::Path, r: &dyn Registry, trade_id: &str) {
    let id = RequestId::new(format!("{trade_id}:p")).unwrap();
    // As stored: `vintage:start-end`, comma-separated.
    let blocks = r.transfer(&id).unwrap().map(|t| {
        t.blocks
            .iter()
            .map(|b| format!("{}:{}-{}", b.vintage.0, b.start, b.end))
            .collect::<Vec<_>>()
            .join(",")
    });
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute(
        "UPDATE obligations SET state = 'confirmed', blocks = ?1 WHERE trade_id = ?2",
        rusqlite::params![blocks, trade_id],
    )
    .unwrap();
}

fn run_reconcile(s: &Settlement, r: &dyn Registry) -> Result<Report, ReconcileError> {
    let ex = ExchangeView::from_settlement(s, AS_OF).unwrap();
    let reg = RegistryView::load(r, &ex.accounts(), &ex.instruments(), FROM, AS_OF).unwrap();
    reconcile(&ex, &reg)
}

fn kinds(report: &Report) -> BTreeMap<String, BreakType> {
    report.breaks.iter().map(|b| (b.key.clone(), b.kind)).collect()
}

#[test]
fn a_clean_settlement_reconciles_without_breaks() {
    let mut r = registry_with(&[("B1", 0), ("B2", 0), ("S1", 100), ("S2", 10)]);
    let mut s = Settlement::open_in_memory(SettlementConfig::default()).unwrap();
    let trades = [trade("T1", "S1", "B1", 30), trade("T2", "S1", "B2", 20), trade("T3", "S2", "B1", 50)];
    s.add_trades(&trades, Timestamp(20)).unwrap();
    s.run(&mut r, Timestamp(30)).unwrap();
    // T3 was refused (S2 holds 10): broken, and the registry moved nothing for it.
    assert_eq!(s.obligation("T3").unwrap().unwrap().state, ObligationState::Broken);
    let t1 = s.obligation("T1").unwrap().unwrap();
    assert_eq!(t1.blocks.iter().map(|b| b.quantity()).sum::<u64>(), 30);
    let report = run_reconcile(&s, &r).unwrap();
    assert!(report.is_clean(), "{}", render::summary(&report));
    assert_eq!((report.confirmed, report.matched, report.registry_transfers), (2, 2, 2));
    assert!(report.differing_buckets.is_empty() && report.differing_blocks.is_empty());
}

/// Each kind of break, planted the way it happens: a transfer done behind the exchange's back,
/// one done twice, the exchange's records calling confirmed a transfer id whose fields differ
/// (settlement itself breaks such an obligation: its records were changed), an obligation
/// marked confirmed that the registry never moved.
#[test]
fn every_planted_break_is_found_and_classified() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("settlement.db");
    let mut r = registry_with(&[("B1", 0), ("B2", 0), ("S1", 100), ("S2", 100)]);
    // Before the exchange runs, transfers under its ids with other fields.
    move_units(&mut r, "T4:p", "S1", "B1", 4, 20);
    move_units(&mut r, "T5:p", "S2", "B2", 6, 21);
    let mut s = Settlement::open(&db, SettlementConfig { fee_bps: 0, max_attempts: 1 }).unwrap();
    let trades = [
        trade("T1", "S1", "B1", 10),
        trade("T2", "S1", "B2", 5),
        trade("T3", "S2", "B1", 7),
        trade("T4", "S1", "B1", 5),
        trade("T5", "S1", "B2", 6),
        trade("T6", "S2", "B1", 1000),
    ];
    s.add_trades(&trades, Timestamp(25)).unwrap();
    s.run(&mut r, Timestamp(30)).unwrap();
    // Settlement does not take a transfer under its id with other fields for a delivery.
    for t in ["T4", "T5", "T6"] {
        assert_eq!(s.obligation(t).unwrap().unwrap().state, ObligationState::Broken, "{t}");
    }
    // After the run: a transfer the exchange does not know, one that repeats T1.
    move_units(&mut r, "X1", "S2", "B2", 3, 40);
    move_units(&mut r, "T1:again", "S1", "B1", 10, 41);
    // The exchange's records say T4, T5 and T6 were delivered.
    for t in ["T4", "T5", "T6"] {
        mark_confirmed(&db, &r, t);
    }

    let report = run_reconcile(&s, &r).unwrap();
    let expected: BTreeMap<String, BreakType> = [
        ("T4:p", BreakType::QuantityMismatch),
        ("T5:p", BreakType::AccountMismatch),
        ("T6:p", BreakType::MissingTransfer),
        ("X1", BreakType::UnexpectedTransfer),
        ("T1:again", BreakType::Duplicate),
    ]
    .into_iter()
    .map(|(k, t)| (k.to_string(), t))
    .collect();
    assert_eq!(kinds(&report), expected, "{}", render::summary(&report));
    // The trail of a differing block leads to the units moved behind the exchange's back; T6
    // has no blocks recorded (it was never delivered) and T4's recorded blocks are the 4 units
    // the registry moved, so only the id join sees those two.
    let by: BTreeMap<&str, FoundBy> = report.breaks.iter().map(|b| (b.key.as_str(), b.found_by)).collect();
    assert_eq!(by["X1"], FoundBy::Trail, "{}", render::summary(&report));
    assert_eq!(by["T1:again"], FoundBy::Trail);
    assert_eq!(by["T5:p"], FoundBy::Trail);
    assert_eq!((by["T4:p"], by["T6:p"]), (FoundBy::IdJoin, FoundBy::IdJoin));
    assert_eq!(report.buckets_without_blocks, 2);
    assert_eq!(report.matched, 3);
    assert!(!report.differing_buckets.is_empty() && !report.differing_blocks.is_empty());
    let t4 = report.breaks.iter().find(|b| b.key == "T4:p").unwrap();
    assert_eq!((t4.expected.as_str(), t4.actual.as_str()), ("S1 -> B1 5 of 0", "S1 -> B1 4 of 0"));
    // The renderings carry every break.
    let csv = render::to_csv(&report).unwrap();
    assert_eq!(csv.lines().count(), 1 + 5);
    assert!(csv.starts_with("id,status,type,key,"));
    let json: serde_json::Value = serde_json::from_str(&render::to_json(&report).unwrap()).unwrap();
    assert_eq!(json["breaks"].as_array().unwrap().len(), 5);
    assert_eq!(json["breaks"][0]["type"], "missing_transfer");
    let summary = render::summary(&report);
    assert!(summary.contains("breaks: 5 (missing_transfer 1, unexpected_transfer 1"), "{summary}");
}

/// Two quantity mismatches that cancel out in every total are still found, by the id join.
#[test]
fn mismatches_that_cancel_out_are_found_by_transfer_id() {
    let mut r = registry_with(&[("B1", 0), ("S1", 100)]);
    move_units(&mut r, "T1:p", "S1", "B1", 4, 20);
    move_units(&mut r, "T2:p", "S1", "B1", 6, 21);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("settlement.db");
    let mut s = Settlement::open(&db, SettlementConfig { fee_bps: 0, max_attempts: 1 }).unwrap();
    s.add_trades(&[trade("T1", "S1", "B1", 5), trade("T2", "S1", "B1", 5)], Timestamp(25)).unwrap();
    s.run(&mut r, Timestamp(30)).unwrap();
    for t in ["T1", "T2"] {
        mark_confirmed(&db, &r, t);
    }
    let report = run_reconcile(&s, &r).unwrap();
    assert!(report.differing_buckets.is_empty());
    assert_eq!(report.breaks.len(), 2, "{}", render::summary(&report));
    for b in &report.breaks {
        assert_eq!((b.kind, b.found_by), (BreakType::QuantityMismatch, FoundBy::IdJoin));
    }
}

#[test]
fn reconciliation_refuses_to_start_while_anything_is_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("settlement.db");
    let mut r = registry_with(&[("B1", 0), ("S1", 100)]);
    let mut s = Settlement::open(&db, SettlementConfig::default()).unwrap();
    s.add_trades(&[trade("T1", "S1", "B1", 5), trade("T2", "S1", "B1", 5)], Timestamp(25)).unwrap();
    // A pending registry transfer under the exchange's id (T2 is not run yet).
    let propose = ProposeTransfer {
        id: RequestId::new("T2:p").unwrap(),
        from: acct("S1"),
        to: acct("B1"),
        instrument: CCC,
        quantity: 5,
        vintage: None,
    };
    r.propose(&propose, Timestamp(26)).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE obligations SET state = 'failed' WHERE trade_id = 'T1'", []).unwrap();
    match run_reconcile(&s, &r) {
        Err(ReconcileError::InFlight { count, first }) => {
            assert_eq!(count, 2);
            assert_eq!(first, ["obligation T1 is failed", "registry transfer T2:p is pending"]);
        }
        other => panic!("{other:?}"),
    }
    // An obligation changed after the agreed time: its state then is unknown.
    conn.execute("UPDATE obligations SET state = 'broken', updated_at = 500 WHERE trade_id = 'T1'", [])
        .unwrap();
    let err = run_reconcile(&s, &r).unwrap_err().to_string();
    assert!(err.contains("obligation T1 changed after the agreed time"), "{err}");
    // Views of two different times are refused.
    let ex = ExchangeView::from_settlement(&s, Timestamp(99)).unwrap();
    let reg = RegistryView::new(FROM, AS_OF, Vec::new(), Vec::new(), Vec::new());
    assert!(matches!(reconcile(&ex, &reg), Err(ReconcileError::Views(_))));
}

/// A registry whose holdings disagree with its own trail: the bucket is a break by itself.
#[test]
fn holdings_the_trail_does_not_explain_are_a_break_on_the_holding() {
    let block = |start, end| SerialBlock { instrument: CCC, vintage: Vintage(2024), start, end };
    let held = |a: &str, blocks: Vec<SerialBlock>| Position {
        account: acct(a),
        instrument: CCC,
        blocks: blocks.into_iter().map(|block| HeldBlock { block, reserved_by: None }).collect(),
    };
    let ex = ExchangeView::new(AS_OF, Vec::new());
    let reg = RegistryView::new(
        FROM,
        AS_OF,
        vec![held("A", vec![block(1, 10)])],
        vec![held("A", vec![block(1, 8)])],
        Vec::new(),
    );
    let report = reconcile(&ex, &reg).unwrap();
    assert_eq!(report.breaks.len(), 1);
    let b = &report.breaks[0];
    assert_eq!(
        (b.kind, b.key.as_str(), b.found_by),
        (BreakType::QuantityMismatch, "holding:A:0", FoundBy::Totals)
    );
    assert_eq!(report.differing_blocks.len(), 1);
    assert_eq!((report.differing_blocks[0].start, report.differing_blocks[0].end), (9, 10));
    assert_eq!((report.differing_blocks[0].expected, report.differing_blocks[0].actual), (1, 0));
}

fn unexpected_report(keys: &[&str]) -> Report {
    let mut report = Report::empty(FROM, AS_OF);
    for k in keys {
        report.breaks.push(cccx_settlement::reconcile::Break {
            id: None,
            status: None,
            kind: BreakType::UnexpectedTransfer,
            key: k.to_string(),
            trade_id: None,
            expected: "none".into(),
            actual: "S1 -> B1 1 of 0".into(),
            found_by: FoundBy::Trail,
            note: String::new(),
        });
    }
    report
}

#[test]
fn breaks_keep_their_identity_status_and_history_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("audit.jsonl");
    let mut store =
        BreakStore::open(dir.path().join("s.db")).unwrap().with_audit(AuditLog::open(&log_path).unwrap());
    let mut first = unexpected_report(&["X1", "X2"]);
    let rec = store.record(&mut first, Timestamp(200)).unwrap();
    assert_eq!((rec.run, rec.opened.clone()), (1, vec![1, 2]));
    assert_eq!(first.breaks[0].id, Some(1));
    assert_eq!(first.breaks[0].status, Some(BreakStatus::Open));
    // Found again: the same breaks, nothing new.
    let rec = store.record(&mut unexpected_report(&["X1", "X2"]), Timestamp(210)).unwrap();
    assert!(rec.opened.is_empty() && rec.not_found.is_empty());
    assert_eq!(store.breaks(None).unwrap().len(), 2);
    // Investigation and resolution need a name and a note.
    assert!(matches!(store.investigate(1, "", "x", Timestamp(220)), Err(ReconcileError::Invalid(_))));
    assert!(matches!(store.resolve(1, "ana", " ", Timestamp(220)), Err(ReconcileError::Invalid(_))));
    assert!(matches!(store.investigate(9, "ana", "x", Timestamp(220)), Err(ReconcileError::UnknownBreak(9))));
    let b = store.investigate(1, "ana", "asked the registry", Timestamp(220)).unwrap();
    assert_eq!(b.status, BreakStatus::Investigating);
    // X1 is gone in the next run: recorded, not resolved.
    let rec = store.record(&mut unexpected_report(&["X2"]), Timestamp(230)).unwrap();
    assert_eq!(rec.not_found, vec![1]);
    let b = store.get(1).unwrap().unwrap();
    assert_eq!((b.status, b.found), (BreakStatus::Investigating, false));
    // It comes back, then is resolved, then is found once more: reopened.
    store.record(&mut unexpected_report(&["X1", "X2"]), Timestamp(240)).unwrap();
    store.resolve(1, "ana", "registry reversed it", Timestamp(250)).unwrap();
    assert!(matches!(store.resolve(1, "ana", "again", Timestamp(251)), Err(ReconcileError::Invalid(_))));
    assert_eq!(store.breaks(Some(BreakStatus::Resolved)).unwrap().len(), 1);
    let mut again = unexpected_report(&["X1"]);
    let rec = store.record(&mut again, Timestamp(260)).unwrap();
    assert_eq!((rec.reopened.clone(), rec.not_found.clone()), (vec![1], vec![2]));
    assert_eq!(again.breaks[0].status, Some(BreakStatus::Open));
    let actions: Vec<(String, String)> =
        store.history(1).unwrap().into_iter().map(|e| (e.action, e.by)).collect();
    let want = [
        ("opened", "reconcile"),
        ("investigated", "ana"),
        ("not_found", "reconcile"),
        ("found_again", "reconcile"),
        ("resolved", "ana"),
        ("reopened", "reconcile"),
    ];
    assert_eq!(actions, want.map(|(a, b)| (a.to_string(), b.to_string())));
    let history = store.history(1).unwrap();
    assert_eq!(history[4].note, "registry reversed it");
    // Every run and every change is in the audit trail, intact.
    drop(store);
    let (records, _) = audit::verify(&log_path).unwrap();
    // Runs with their events: 1 + 2 opened, 1, 1 + 1 not found, 1 + 1 found again, 1 + 1
    // reopened + 1 not found; one investigation, one resolution.
    assert_eq!(records, 3 + 1 + 2 + 2 + 3 + 1 + 1);
}

// --- The property test: random settlement, random damage, a brute-force model. ---

const ACCOUNTS: [&str; 5] = ["A0", "A1", "A2", "A3", "A4"];

/// What happens to one obligation in the registry.
#[derive(Clone, Debug)]
enum Damage {
    None,
    Missing,
    Quantity(u64),
    Account(usize),
    Duplicate,
}

#[derive(Clone, Debug)]
struct Case {
    obligations: Vec<(usize, usize, u64, Damage)>,
    extras: Vec<(usize, usize, u64)>,
}

fn case() -> impl Strategy<Value = Case> {
    let damage = prop_oneof![
        6 => Just(Damage::None),
        1 => Just(Damage::Missing),
        1 => (1u64..12).prop_map(Damage::Quantity),
        1 => (0usize..5).prop_map(Damage::Account),
        1 => Just(Damage::Duplicate),
    ];
    let obligation =
        (0usize..5, 1usize..5, 1u64..12, damage).prop_map(|(f, d, q, dmg)| (f, (f + d) % 5, q, dmg));
    let extra = (0usize..5, 1usize..5, 1u64..12).prop_map(|(f, d, q)| (f, (f + d) % 5, q));
    (proptest::collection::vec(obligation, 0..25), proptest::collection::vec(extra, 0..3))
        .prop_map(|(obligations, extras)| Case { obligations, extras })
}

/// A tiny registry ledger: blocks per account, oldest serial first.
struct Ledger {
    held: BTreeMap<String, Vec<SerialBlock>>,
    trail: Vec<TrailLine>,
    /// (id, from, to, qty) of every completed transfer: what the model reads.
    transfers: Vec<(String, String, String, u64)>,
}

impl Ledger {
    fn new() -> Ledger {
        let held = ACCOUNTS
            .iter()
            .enumerate()
            .map(|(k, a)| {
                let start = k as u64 * 1000 + 1;
                (
                    a.to_string(),
                    vec![SerialBlock { instrument: CCC, vintage: Vintage(2024), start, end: start + 59 }],
                )
            })
            .collect();
        Ledger { held, trail: Vec::new(), transfers: Vec::new() }
    }

    fn positions(&self) -> Vec<Position> {
        self.held
            .iter()
            .map(|(a, blocks)| Position {
                account: acct(a),
                instrument: CCC,
                blocks: blocks.iter().map(|b| HeldBlock { block: *b, reserved_by: None }).collect(),
            })
            .collect()
    }

    /// Moves `qty` units, lowest serials first; `None` if `from` has too few.
    fn transfer(&mut self, id: &str, from: &str, to: &str, qty: u64, at: i64) -> Option<Vec<SerialBlock>> {
        let src = self.held.get_mut(from)?;
        if src.iter().map(|b| b.quantity()).sum::<u64>() < qty {
            return None;
        }
        let (mut moved, mut left) = (Vec::new(), qty);
        while left > 0 {
            let b = &mut src[0];
            let n = b.quantity().min(left);
            moved.push(SerialBlock { end: b.start + n - 1, ..*b });
            left -= n;
            if n == b.quantity() {
                src.remove(0);
            } else {
                b.start += n;
            }
        }
        let dst = self.held.entry(to.to_string()).or_default();
        dst.extend(moved.iter().copied());
        *dst = cccx_settlement::coalesce(std::mem::take(dst));
        for (account, kind, other) in [(from, EntryKind::Debited, to), (to, EntryKind::Credited, from)] {
            for b in &moved {
                let line = StatementLine {
                    at: Timestamp(at),
                    kind,
                    block: *b,
                    transfer: Some(RequestId::new(id).unwrap()),
                    counterparty: Some(acct(other)),
                };
                self.trail.push(TrailLine { account: acct(account), line });
            }
        }
        self.transfers.push((id.to_string(), from.to_string(), to.to_string(), qty));
        Some(moved)
    }
}

/// The expected breaks, by brute force over plain lists.
fn model(
    entries: &[ExchangeEntry],
    transfers: &[(String, String, String, u64)],
) -> BTreeSet<(BreakType, String)> {
    let mut out = BTreeSet::new();
    let mut matched_ids = Vec::new();
    let mut exact = Vec::new();
    for e in entries.iter().filter(|e| e.state == ObligationState::Confirmed) {
        match transfers.iter().find(|t| t.0 == e.transfer_id) {
            None => {
                out.insert((BreakType::MissingTransfer, e.transfer_id.clone()));
            }
            Some(t) => {
                matched_ids.push(t.0.clone());
                if t.1 != e.from.as_str() || t.2 != e.to.as_str() {
                    out.insert((BreakType::AccountMismatch, e.transfer_id.clone()));
                } else if t.3 != e.qty {
                    out.insert((BreakType::QuantityMismatch, e.transfer_id.clone()));
                } else {
                    exact.push(e);
                }
            }
        }
    }
    for t in transfers.iter().filter(|t| !matched_ids.contains(&t.0)) {
        let known = entries.iter().any(|e| e.transfer_id == t.0);
        let twin = exact.iter().any(|e| e.from.as_str() == t.1 && e.to.as_str() == t.2 && e.qty == t.3);
        let kind = if !known && twin { BreakType::Duplicate } else { BreakType::UnexpectedTransfer };
        out.insert((kind, t.0.clone()));
    }
    out
}

fn build(c: &Case) -> (ExchangeView, RegistryView, Ledger, Vec<(BreakType, String)>) {
    let mut ledger = Ledger::new();
    let opening = ledger.positions();
    let mut entries = Vec::new();
    let mut planted = Vec::new();
    for (n, (f, t, qty, damage)) in c.obligations.iter().enumerate() {
        let (from, to, id) = (ACCOUNTS[*f], ACCOUNTS[*t], format!("T{n}:p"));
        let at = 10 + n as i64 * 2;
        let (moved, state) = match damage {
            Damage::Missing => {
                let fake = SerialBlock {
                    instrument: CCC,
                    vintage: Vintage(2030),
                    start: n as u64 * 100 + 1,
                    end: n as u64 * 100 + qty,
                };
                planted.push((BreakType::MissingTransfer, id.clone()));
                (Some(vec![fake]), ObligationState::Confirmed)
            }
            Damage::Quantity(q) if q != qty => match ledger.transfer(&id, from, to, *q, at) {
                Some(m) => {
                    planted.push((BreakType::QuantityMismatch, id.clone()));
                    (Some(m), ObligationState::Confirmed)
                }
                None => (None, ObligationState::Broken),
            },
            Damage::Account(k) if ACCOUNTS[*k] != from && ACCOUNTS[*k] != to => {
                match ledger.transfer(&id, ACCOUNTS[*k], to, *qty, at) {
                    Some(m) => {
                        planted.push((BreakType::AccountMismatch, id.clone()));
                        (Some(m), ObligationState::Confirmed)
                    }
                    None => (None, ObligationState::Broken),
                }
            }
            _ => match ledger.transfer(&id, from, to, *qty, at) {
                Some(m) => (Some(m), ObligationState::Confirmed),
                None => (None, ObligationState::Broken),
            },
        };
        if matches!(damage, Damage::Duplicate) && moved.is_some() {
            ledger.transfer(&format!("D{n}"), from, to, *qty, at + 1);
        }
        entries.push(ExchangeEntry {
            trade_id: format!("T{n}"),
            transfer_id: id,
            from: acct(from),
            to: acct(to),
            instrument: CCC,
            qty: *qty,
            state,
            blocks: moved.unwrap_or_default(),
            updated_at: Timestamp(at),
        });
    }
    for (n, (f, t, qty)) in c.extras.iter().enumerate() {
        ledger.transfer(&format!("X{n}"), ACCOUNTS[*f], ACCOUNTS[*t], *qty, 90);
    }
    let closing = ledger.positions();
    let reg = RegistryView::new(Timestamp(10), AS_OF, opening, closing, ledger.trail.clone());
    (ExchangeView::new(AS_OF, entries), reg, ledger, planted)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn reconcile_agrees_with_a_brute_force_model(c in case()) {
        let (ex, reg, ledger, planted) = build(&c);
        let report = reconcile(&ex, &reg).unwrap();
        let found: BTreeSet<(BreakType, String)> = report.breaks.iter().map(|b| (b.kind, b.key.clone())).collect();
        prop_assert_eq!(&found, &model(&ex.entries, &ledger.transfers), "{}", render::summary(&report));
        for p in &planted {
            prop_assert!(found.contains(p), "planted {:?} not found", p);
        }
        // A consistent registry leaves nothing unexplained, and a clean case has no break.
        prop_assert!(report.breaks.iter().all(|b| b.found_by != FoundBy::Totals));
        let damaged = !c.extras.is_empty() || c.obligations.iter().any(|o| !matches!(o.3, Damage::None));
        prop_assert!(damaged || report.is_clean());
        // Phase 1 agrees with totals computed by hand.
        let mut want = BTreeSet::new();
        for a in ACCOUNTS {
            let mut expected: i128 = 60;
            for e in ex.entries.iter().filter(|e| e.state == ObligationState::Confirmed) {
                expected += if e.to.as_str() == a { e.qty as i128 } else { 0 };
                expected -= if e.from.as_str() == a { e.qty as i128 } else { 0 };
            }
            let actual: i128 = ledger.held[a].iter().map(|b| b.quantity() as i128).sum();
            if expected != actual {
                want.insert((a.to_string(), expected, actual));
            }
        }
        let got: BTreeSet<(String, i128, i128)> =
            report.differing_buckets.iter().map(|d| (d.account.to_string(), d.expected, d.actual)).collect();
        prop_assert_eq!(got, want);
    }
}
