//! The pure core: two views in, a report out. No I/O, no clock.

use std::collections::hash_map::Entry;

// Fx hashing: the keys are the exchange's and the registry's own ids, not an attacker's, and
// SipHash was a third of the run time.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use cccx_engine::types::{InstrumentId, Qty};

use super::view::{ExchangeEntry, ExchangeView, RegistryView};
use super::{
    movement, BlockDiff, Break, BreakType, BucketDiff, FoundBy, ReconcileError, Report, IN_FLIGHT_NAMED_MAX,
    TRAIL_PER_BLOCK_MAX,
};
use crate::settle::ObligationState;
use crate::types::{AccountId, EntryKind, SerialBlock};

/// An (account, instrument) bucket.
type Bucket<'a> = (&'a str, InstrumentId);
/// A transfer that moved a block of a bucket, and whether the registry's trail says so.
type Touch<'a> = (&'a str, SerialBlock, bool);
/// Expected and actual units per bucket.
type Totals<'a> = HashMap<Bucket<'a>, [i128; 2]>;
/// What a transfer moved: (from, to, instrument, quantity).
type Signature<'a> = (&'a str, &'a str, InstrumentId, Qty);

/// A registry transfer rebuilt from the statement lines of the accounts in scope.
struct RegTransfer<'a> {
    id: &'a str,
    from: &'a str,
    to: &'a str,
    instrument: InstrumentId,
    debited: Qty,
    credited: Qty,
    /// Whether the transferring account's debit lines are in the trail.
    has_debit: bool,
    /// The confirmed obligation it was matched to.
    matched_by: Option<usize>,
}

impl RegTransfer<'_> {
    /// The quantity moved: the debits when the transferring account is in scope.
    fn qty(&self) -> Qty {
        if self.has_debit {
            self.debited
        } else {
            self.credited
        }
    }

    fn text(&self) -> String {
        format!("{} -> {} {} of {}", self.from, self.to, self.qty(), self.instrument.0)
    }
}

/// A break before its texts are written.
struct Found {
    kind: BreakType,
    /// The exchange's side, if any (an index into the exchange's entries).
    entry: Option<usize>,
    /// The registry's side, if any (an index into the rebuilt transfers).
    transfer: Option<usize>,
    note: String,
}

/// What the registry's trail holds: transfers by id, and issuance per bucket.
struct Trail<'a> {
    transfers: Vec<RegTransfer<'a>>,
    by_id: HashMap<&'a str, usize>,
    issued: HashMap<Bucket<'a>, (u128, Vec<SerialBlock>)>,
}

/// Reconciles the exchange's view against the registry's, both at the same agreed time.
///
/// Refuses ([`ReconcileError::InFlight`]) when anything is in flight, and
/// ([`ReconcileError::Views`]) when the views are not taken at the same time. See the
/// [module docs](super) for the phases and the classification.
pub fn reconcile(ex: &ExchangeView, reg: &RegistryView) -> Result<Report, ReconcileError> {
    if ex.as_of != reg.as_of {
        return Err(ReconcileError::Views(format!(
            "the exchange's view is as of {}, the registry's as of {}",
            ex.as_of, reg.as_of
        )));
    }
    if reg.from > reg.as_of {
        return Err(ReconcileError::Views(format!("the window starts at {} after {}", reg.from, reg.as_of)));
    }
    check_in_flight(ex, reg)?;
    // The two sides are independent until the join: the registry's trail is rebuilt on a
    // second thread while this one totals the exchange's side (the result does not depend
    // on which finishes first).
    let (mut trail, (moved, mut totals)) = std::thread::scope(|scope| {
        let registry = scope.spawn(|| rebuild_trail(reg));
        let exchange = exchange_side(ex, reg);
        match registry.join() {
            Ok(trail) => (trail, exchange),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    for (k, (q, _)) in &trail.issued {
        totals.entry(*k).or_default()[0] += *q as i128;
    }
    let mut found = Vec::new();
    let matched = join(ex, &moved, &mut trail, &mut found);
    let mut report = Report {
        obligations: ex.entries.len(),
        confirmed: moved.len(),
        registry_transfers: trail.transfers.len(),
        matched,
        ..Report::empty(reg.from, reg.as_of)
    };
    let differing: HashSet<Bucket<'_>> =
        totals.iter().filter(|(_, [e, a])| e != a).map(|(k, _)| *k).collect();
    let traced = phase2(ex, reg, &moved, &trail, &differing, &mut report);
    let mut breaks = describe(ex, &trail, &found, &traced);
    breaks.extend(unexplained(ex, reg, &trail, &found, &totals));
    breaks.sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
    for b in &breaks {
        *report.counts.entry(b.kind).or_default() += 1;
    }
    report.buckets = totals.len();
    report.differing_buckets = sorted_diffs(&totals);
    report.breaks = breaks;
    Ok(report)
}

fn check_in_flight(ex: &ExchangeView, reg: &RegistryView) -> Result<(), ReconcileError> {
    let mut names = Vec::new();
    for e in &ex.entries {
        let flying = matches!(
            e.state,
            ObligationState::Submitted | ObligationState::Failed | ObligationState::Retried
        );
        if flying {
            names.push(format!("obligation {} is {}", e.trade_id, e.state.as_str()));
        } else if e.state != ObligationState::Created && e.updated_at > ex.as_of {
            names.push(format!("obligation {} changed after the agreed time", e.trade_id));
        }
    }
    let reserved: HashSet<&str> = reg
        .closing
        .iter()
        .flat_map(|p| &p.blocks)
        .filter_map(|b| b.reserved_by.as_ref())
        .map(|id| id.as_str())
        .collect();
    if !reserved.is_empty() {
        for e in ex.entries.iter().filter(|e| reserved.contains(e.transfer_id.as_str())) {
            names.push(format!("registry transfer {} is pending", e.transfer_id));
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    names.dedup();
    let count = names.len();
    names.truncate(IN_FLIGHT_NAMED_MAX);
    Err(ReconcileError::InFlight { count, first: names })
}

/// The registry's transfers, rebuilt from the trail's debit lines, and from its credit lines
/// only when the transferring account is out of scope.
///
/// An account with a position in the view has its whole statement in the trail (that is how
/// [`RegistryView::load`](super::RegistryView::load) builds it), and the registry writes a
/// transfer's debit and credit lines in one transaction: the debit says everything the credit
/// would (the parties, the instrument, the quantity moved). Skipping those credit lines halves
/// the work on the map by transfer id, the largest in a run.
fn rebuild_trail(reg: &RegistryView) -> Trail<'_> {
    let scope: HashSet<&str> = reg.opening.iter().chain(&reg.closing).map(|p| p.account.as_str()).collect();
    let mut t = Trail {
        transfers: Vec::with_capacity(reg.trail.len() / 2),
        by_id: HashMap::with_capacity_and_hasher(reg.trail.len() / 2, Default::default()),
        issued: HashMap::default(),
    };
    for tl in &reg.trail {
        let (account, line) = (tl.account.as_str(), &tl.line);
        let debit = match line.kind {
            EntryKind::Issued => {
                let e = t.issued.entry((account, line.block.instrument)).or_default();
                e.0 += u128::from(line.block.quantity());
                e.1.push(line.block);
                continue;
            }
            EntryKind::Debited => true,
            EntryKind::Credited => {
                if line.counterparty.as_ref().is_some_and(|from| scope.contains(from.as_str())) {
                    continue;
                }
                false
            }
            EntryKind::Reserved | EntryKind::Released => continue,
        };
        let Some(id) = line.transfer.as_ref() else { continue };
        let other = line.counterparty.as_ref().map_or("?", AccountId::as_str);
        let n = t.transfers.len();
        let i = *t.by_id.entry(id.as_str()).or_insert(n);
        if i == n {
            let (from, to) = if debit { (account, other) } else { (other, account) };
            t.transfers.push(RegTransfer {
                id: id.as_str(),
                from,
                to,
                instrument: line.block.instrument,
                debited: 0,
                credited: 0,
                has_debit: false,
                matched_by: None,
            });
        }
        let r = &mut t.transfers[i];
        if debit {
            r.debited += line.block.quantity();
            r.has_debit = true;
        } else {
            r.credited += line.block.quantity();
        }
    }
    t
}

/// The hash join by transfer id. Returns how many confirmed obligations match exactly.
fn join(ex: &ExchangeView, moved: &[usize], trail: &mut Trail<'_>, found: &mut Vec<Found>) -> usize {
    let mut matched = Vec::new();
    // Confirmed obligations under a transfer id already seen (only ids without a registry
    // transfer are kept here; the others are told by the transfer's `matched`).
    let mut missing: HashMap<&str, usize> = HashMap::default();
    for &i in moved {
        let e = &ex.entries[i];
        let twice = |first: usize| {
            let note = format!(
                "trades {} and {} settle under one transfer id",
                ex.entries[first].trade_id, e.trade_id
            );
            Found { kind: BreakType::Duplicate, entry: Some(i), transfer: None, note }
        };
        let Some(&ri) = trail.by_id.get(e.transfer_id.as_str()) else {
            match missing.entry(e.transfer_id.as_str()) {
                Entry::Occupied(first) => found.push(twice(*first.get())),
                Entry::Vacant(v) => {
                    v.insert(i);
                    let note =
                        "the exchange confirmed it, the registry has no such transfer in the window".into();
                    found.push(Found {
                        kind: BreakType::MissingTransfer,
                        entry: Some(i),
                        transfer: None,
                        note,
                    });
                }
            }
            continue;
        };
        let r = &mut trail.transfers[ri];
        if let Some(first) = r.matched_by {
            found.push(twice(first));
            continue;
        }
        r.matched_by = Some(i);
        let accounts = r.from != e.from.as_str() || r.to != e.to.as_str() || r.instrument != e.instrument;
        let kind = match (accounts, r.qty() != e.qty) {
            (true, _) => BreakType::AccountMismatch,
            (false, true) => BreakType::QuantityMismatch,
            (false, false) => {
                matched.push((i, ri));
                continue;
            }
        };
        let note =
            format!("the registry moved {} units between other accounts or of another instrument", r.qty());
        let note = if kind == BreakType::QuantityMismatch { String::new() } else { note };
        found.push(Found { kind, entry: Some(i), transfer: Some(ri), note });
    }
    let unmatched: Vec<usize> =
        (0..trail.transfers.len()).filter(|&ri| trail.transfers[ri].matched_by.is_none()).collect();
    // The obligations (in any state) under the unmatched transfers' ids: one pass over the
    // exchange's side against a small set.
    let wanted: HashSet<&str> = unmatched.iter().map(|&ri| trail.transfers[ri].id).collect();
    let mut ex_by_id: HashMap<&str, usize> = HashMap::default();
    if !wanted.is_empty() {
        for (i, e) in ex.entries.iter().enumerate() {
            if wanted.contains(e.transfer_id.as_str()) {
                ex_by_id.entry(e.transfer_id.as_str()).or_insert(i);
            }
        }
    }
    // For the unmatched transfers without an obligation under their id: the last matched
    // obligation with the same signature, found in one pass over the matched ones against
    // the few signatures wanted (rather than a map of every matched obligation's signature).
    let mut signatures: HashMap<Signature<'_>, Option<usize>> = unmatched
        .iter()
        .map(|&ri| &trail.transfers[ri])
        .filter(|r| !ex_by_id.contains_key(r.id))
        .map(|r| ((r.from, r.to, r.instrument, r.qty()), None))
        .collect();
    if !signatures.is_empty() {
        for &(i, _) in &matched {
            let e: &ExchangeEntry = &ex.entries[i];
            if let Some(last) = signatures.get_mut(&(e.from.as_str(), e.to.as_str(), e.instrument, e.qty)) {
                *last = Some(i);
            }
        }
    }
    for ri in unmatched {
        let r = &trail.transfers[ri];
        if let Some(&i) = ex_by_id.get(r.id) {
            let e = &ex.entries[i];
            let note = match e.state {
                ObligationState::Confirmed => {
                    format!("trade {} was confirmed outside the window", e.trade_id)
                }
                s => format!("trade {} is {}", e.trade_id, s.as_str()),
            };
            found.push(Found {
                kind: BreakType::UnexpectedTransfer,
                entry: Some(i),
                transfer: Some(ri),
                note,
            });
            continue;
        }
        match signatures.get(&(r.from, r.to, r.instrument, r.qty())).copied().flatten() {
            Some(i) => {
                let note = format!("moves what trade {} already moved", ex.entries[i].trade_id);
                found.push(Found { kind: BreakType::Duplicate, entry: None, transfer: Some(ri), note });
            }
            None => {
                let note = "the exchange has no obligation for it".into();
                found.push(Found {
                    kind: BreakType::UnexpectedTransfer,
                    entry: None,
                    transfer: Some(ri),
                    note,
                });
            }
        }
    }
    matched.len()
}

/// The exchange's side of phase 1: the obligations confirmed in the window, and expected
/// (without the registry's issuance) and actual totals per bucket.
fn exchange_side<'a>(ex: &'a ExchangeView, reg: &'a RegistryView) -> (Vec<usize>, Totals<'a>) {
    let moved: Vec<usize> =
        (0..ex.entries.len()).filter(|&i| ex.entries[i].confirmed_in(reg.from, reg.as_of)).collect();
    let capacity = reg.opening.len().max(reg.closing.len());
    let mut totals: Totals<'a> = HashMap::with_capacity_and_hasher(capacity, Default::default());
    for p in &reg.opening {
        totals.entry((p.account.as_str(), p.instrument)).or_default()[0] += p.total() as i128;
    }
    for &i in &moved {
        let e = &ex.entries[i];
        totals.entry((e.from.as_str(), e.instrument)).or_default()[0] -= i128::from(e.qty);
        totals.entry((e.to.as_str(), e.instrument)).or_default()[0] += i128::from(e.qty);
    }
    for p in &reg.closing {
        totals.entry((p.account.as_str(), p.instrument)).or_default()[1] += p.total() as i128;
    }
    (moved, totals)
}

fn sorted_diffs(totals: &HashMap<Bucket<'_>, [i128; 2]>) -> Vec<BucketDiff> {
    let mut out: Vec<BucketDiff> = totals
        .iter()
        .filter(|(_, [e, a])| e != a)
        .filter_map(|((account, instrument), [e, a])| {
            Some(BucketDiff {
                account: AccountId::new(*account).ok()?,
                instrument: *instrument,
                expected: *e,
                actual: *a,
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.account, a.instrument).cmp(&(&b.account, b.instrument)));
    out
}

/// The blocks of one differing bucket: sweep events and what touched them.
#[derive(Default)]
struct Sweep<'a> {
    /// (block, expected change, actual change).
    blocks: Vec<(SerialBlock, i64, i64)>,
    /// Transfers that moved serials of the bucket, and whether from the registry's trail.
    touching: Vec<Touch<'a>>,
    blocks_unknown: bool,
}

/// Phases 2 and 3: differing blocks of the differing buckets and the transfers that touch
/// them. Returns the transfer ids traced.
fn phase2<'a>(
    ex: &'a ExchangeView,
    reg: &'a RegistryView,
    moved: &[usize],
    trail: &Trail<'a>,
    differing: &HashSet<Bucket<'a>>,
    report: &mut Report,
) -> HashSet<&'a str> {
    let mut traced = HashSet::default();
    if differing.is_empty() {
        return traced;
    }
    // The registry's trail lines are sorted into the buckets on a second thread.
    let (mut sweeps, lines) = std::thread::scope(|scope| {
        let registry = scope.spawn(|| trail_touching(reg, differing));
        let sweeps = gather(ex, reg, moved, trail, differing);
        match registry.join() {
            Ok(lines) => (sweeps, lines),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    for (k, touching) in lines {
        if let Some(s) = sweeps.get_mut(&k) {
            s.touching.extend(touching);
        }
    }
    let mut keys: Vec<Bucket<'a>> = sweeps.keys().copied().collect();
    keys.sort();
    for k in keys {
        let Some(s) = sweeps.remove(&k) else { continue };
        if s.blocks_unknown {
            report.buckets_without_blocks += 1;
            continue;
        }
        let Ok(account) = AccountId::new(k.0) else { continue };
        let mut diffs = sweep(&account, s.blocks);
        report.trail_lines += trace(&mut diffs, &s.touching, &mut traced);
        report.differing_blocks.extend(diffs);
    }
    traced
}

/// The blocks of the differing buckets: held before the window, issued, moved by the
/// exchange's obligations, held at the agreed time.
fn gather<'a>(
    ex: &'a ExchangeView,
    reg: &'a RegistryView,
    moved: &[usize],
    trail: &Trail<'a>,
    differing: &HashSet<Bucket<'a>>,
) -> HashMap<Bucket<'a>, Sweep<'a>> {
    let mut sweeps: HashMap<Bucket<'a>, Sweep<'a>> =
        differing.iter().map(|k| (*k, Sweep::default())).collect();
    for (positions, exp, act) in [(&reg.opening, 1, 0), (&reg.closing, 0, 1)] {
        for p in positions {
            if let Some(s) = sweeps.get_mut(&(p.account.as_str(), p.instrument)) {
                s.blocks.extend(p.blocks.iter().map(|b| (b.block, exp, act)));
            }
        }
    }
    for (k, (_, blocks)) in &trail.issued {
        if let Some(s) = sweeps.get_mut(k) {
            s.blocks.extend(blocks.iter().map(|b| (*b, 1, 0)));
        }
    }
    for &i in moved {
        let e = &ex.entries[i];
        for (account, sign) in [(&e.from, -1), (&e.to, 1)] {
            if let Some(s) = sweeps.get_mut(&(account.as_str(), e.instrument)) {
                s.blocks_unknown |= e.blocks.is_empty();
                s.blocks.extend(e.blocks.iter().map(|b| (*b, sign, 0)));
                s.touching.extend(e.blocks.iter().map(|b| (e.transfer_id.as_str(), *b, false)));
            }
        }
    }
    sweeps
}

/// The transfer lines of the registry's trail in the differing buckets.
fn trail_touching<'a>(
    reg: &'a RegistryView,
    differing: &HashSet<Bucket<'a>>,
) -> HashMap<Bucket<'a>, Vec<Touch<'a>>> {
    let mut out: HashMap<Bucket<'a>, Vec<Touch<'a>>> = HashMap::default();
    for tl in &reg.trail {
        let line = &tl.line;
        let Some(id) = line.transfer.as_ref() else { continue };
        if !matches!(line.kind, EntryKind::Debited | EntryKind::Credited) {
            continue;
        }
        let k = (tl.account.as_str(), line.block.instrument);
        if differing.contains(&k) {
            out.entry(k).or_default().push((id.as_str(), line.block, true));
        }
    }
    out
}

/// The runs of serials whose expected and actual counts differ.
fn sweep(account: &AccountId, blocks: Vec<(SerialBlock, i64, i64)>) -> Vec<BlockDiff> {
    // (instrument, vintage, serial) -> change of (expected, actual) from that serial on.
    let mut events: Vec<((InstrumentId, u16, u128), i64, i64)> = Vec::with_capacity(blocks.len() * 2);
    for (b, e, a) in blocks {
        events.push(((b.instrument, b.vintage.0, u128::from(b.start)), e, a));
        events.push(((b.instrument, b.vintage.0, u128::from(b.end) + 1), -e, -a));
    }
    events.sort_unstable_by_key(|ev| ev.0);
    let mut out: Vec<BlockDiff> = Vec::new();
    let (mut exp, mut act) = (0i64, 0i64);
    let mut i = 0;
    while i < events.len() {
        let key = events[i].0;
        while i < events.len() && events[i].0 == key {
            exp += events[i].1;
            act += events[i].2;
            i += 1;
        }
        let Some(next) = events.get(i).map(|ev| ev.0).filter(|n| (n.0, n.1) == (key.0, key.1)) else {
            continue;
        };
        if exp == act || next.2 <= key.2 {
            continue;
        }
        let (start, end) = (key.2 as u64, (next.2 - 1) as u64);
        match out.last_mut() {
            Some(last)
                if last.instrument == key.0
                    && last.vintage.0 == key.1
                    && last.end.checked_add(1) == Some(start)
                    && (last.expected, last.actual) == (exp, act) =>
            {
                last.end = end
            }
            _ => out.push(BlockDiff {
                account: account.clone(),
                instrument: key.0,
                vintage: crate::types::Vintage(key.1),
                start,
                end,
                expected: exp,
                actual: act,
                trail: Vec::new(),
            }),
        }
    }
    out
}

/// Phase 3: names the transfers that touch each differing block. Returns how many registry
/// statement lines touch one.
fn trace<'a>(
    diffs: &mut [BlockDiff],
    touching: &[(&'a str, SerialBlock, bool)],
    traced: &mut HashSet<&'a str>,
) -> usize {
    let mut lines = 0;
    for (id, b, from_registry) in touching {
        let key = |d: &BlockDiff| (d.instrument, d.vintage, d.end);
        let first = diffs.partition_point(|d| key(d) < (b.instrument, b.vintage, b.start));
        let mut hit = false;
        for d in diffs[first..].iter_mut() {
            if (d.instrument, d.vintage) != (b.instrument, b.vintage) || d.start > b.end {
                break;
            }
            hit = true;
            if d.trail.len() < TRAIL_PER_BLOCK_MAX && !d.trail.iter().any(|t| t == id) {
                d.trail.push((*id).to_string());
            }
        }
        if hit {
            traced.insert(*id);
            lines += usize::from(*from_registry);
        }
    }
    lines
}

/// The breaks with their texts.
fn describe(ex: &ExchangeView, trail: &Trail<'_>, found: &[Found], traced: &HashSet<&str>) -> Vec<Break> {
    found
        .iter()
        .map(|f| {
            let e = f.entry.map(|i| &ex.entries[i]);
            let r = f.transfer.map(|i| &trail.transfers[i]);
            let key = match (r, e) {
                (Some(r), _) => r.id.to_string(),
                (None, Some(e)) => e.transfer_id.clone(),
                (None, None) => String::new(),
            };
            let expected = match e {
                Some(e) if e.state == ObligationState::Confirmed => {
                    movement(&e.from, &e.to, e.qty, e.instrument)
                }
                _ => "none".to_string(),
            };
            let found_by = if traced.contains(key.as_str()) { FoundBy::Trail } else { FoundBy::IdJoin };
            Break {
                id: None,
                status: None,
                kind: f.kind,
                trade_id: e.map(|e| e.trade_id.clone()),
                expected,
                actual: r.map_or_else(|| "none".to_string(), RegTransfer::text),
                found_by,
                note: f.note.clone(),
                key,
            }
        })
        .collect()
}

/// What the transfer-level breaks do not explain of each bucket's difference. Buckets
/// outside the registry's view (a counterparty not in scope) are not compared.
fn unexplained<'a>(
    ex: &'a ExchangeView,
    reg: &RegistryView,
    trail: &Trail<'a>,
    found: &[Found],
    totals: &Totals<'a>,
) -> Vec<Break> {
    let mut predicted: HashMap<Bucket<'a>, i128> = HashMap::default();
    let mut add = |account: &'a str, instrument: InstrumentId, q: i128| {
        if totals.contains_key(&(account, instrument)) {
            *predicted.entry((account, instrument)).or_default() += q;
        }
    };
    for f in found {
        // A confirmed obligation the registry does not match: expected moved, actual did not.
        if let Some(e) = f.entry.map(|i| &ex.entries[i]).filter(|e| e.confirmed_in(reg.from, reg.as_of)) {
            add(e.from.as_str(), e.instrument, -i128::from(e.qty));
            add(e.to.as_str(), e.instrument, i128::from(e.qty));
        }
        if let Some(r) = f.transfer.map(|i| &trail.transfers[i]) {
            add(r.from, r.instrument, i128::from(r.qty()));
            add(r.to, r.instrument, -i128::from(r.qty()));
        }
    }
    let mut out = Vec::new();
    for (k, &[e, a]) in totals {
        let p = predicted.get(k).copied().unwrap_or_default();
        if e - a == p {
            continue;
        }
        out.push(Break {
            id: None,
            status: None,
            kind: BreakType::QuantityMismatch,
            key: format!("holding:{}:{}", k.0, k.1 .0),
            trade_id: None,
            expected: format!("{e} units"),
            actual: format!("{a} units"),
            found_by: FoundBy::Totals,
            note: format!("{} units of the difference are not explained by any transfer", e - a - p),
        });
    }
    out
}
