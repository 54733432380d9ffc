//! Reconciliation of N confirmed obligations against N registry transfers, in memory: the
//! pure core alone (building the views is not timed). Once clean, once with about 1% of the
//! obligations damaged (missing, quantity, account, unexpected and duplicate transfers in
//! turn), which sends most buckets through phases 2 and 3.
//!
//! `cargo bench -p cccx-settlement --bench reconcile [-- N]` (N defaults to 1,000,000)

use std::time::Instant;

use cccx_engine::types::InstrumentId;
use cccx_settlement::reconcile::{reconcile, ExchangeEntry, ExchangeView, Position, RegistryView, TrailLine};
use cccx_settlement::settle::ObligationState;
use cccx_settlement::{
    AccountId, EntryKind, HeldBlock, RequestId, SerialBlock, StatementLine, Timestamp, Vintage,
};

const INSTRUMENT: InstrumentId = InstrumentId(0);

fn block(start: u64, qty: u64) -> SerialBlock {
    SerialBlock { instrument: INSTRUMENT, vintage: Vintage(2024), start, end: start + qty - 1 }
}

struct Views {
    exchange: ExchangeView,
    registry: RegistryView,
    planted: usize,
}

/// N obligations between N/10 accounts (at least 2), each settled by one registry transfer
/// of its own serial block; every `damage_every`-th obligation is damaged (0: none).
fn views(n: usize, damage_every: usize) -> Views {
    let accounts: Vec<AccountId> =
        (0..(n / 10).max(2)).map(|a| AccountId::new(format!("A{a:07}")).expect("valid id")).collect();
    let a_n = accounts.len();
    let mut opening: Vec<Vec<HeldBlock>> = vec![Vec::new(); a_n];
    let mut closing: Vec<Vec<HeldBlock>> = vec![Vec::new(); a_n];
    let mut trail = Vec::with_capacity(2 * n + n / 50);
    let mut entries = Vec::with_capacity(n);
    let (mut next, mut planted) = (1u64, 0);
    let at = Timestamp(50);
    let held = |b: SerialBlock| HeldBlock { block: b, reserved_by: None };
    let move_units = |trail: &mut Vec<TrailLine>, id: &str, from: usize, to: usize, b: SerialBlock| {
        let tid = RequestId::new(id).expect("valid id");
        for (acc, kind, other) in [(from, EntryKind::Debited, to), (to, EntryKind::Credited, from)] {
            let line = StatementLine {
                at,
                kind,
                block: b,
                transfer: Some(tid.clone()),
                counterparty: Some(accounts[other].clone()),
            };
            trail.push(TrailLine { account: accounts[acc].clone(), line });
        }
    };
    for i in 0..n {
        let from = i % a_n;
        let mut to = (i * 7 + 1 + i / a_n) % a_n;
        if to == from {
            to = (to + 1) % a_n;
        }
        let qty = 1 + ((i + i / 100) % 10) as u64;
        let b = block(next, qty);
        next += qty;
        opening[from].push(held(b));
        let trade_id = format!("T{i}");
        let transfer_id = format!("{trade_id}:p");
        let damage = if damage_every > 0 && i % damage_every == 0 { (i / damage_every) % 5 } else { 9 };
        match damage {
            0 => closing[from].push(held(b)), // missing: the registry never moved it
            1 if qty > 1 => {
                // quantity: the registry moved one unit less
                let short = block(b.start, qty - 1);
                move_units(&mut trail, &transfer_id, from, to, short);
                closing[to].push(held(short));
                closing[from].push(held(block(b.end, 1)));
            }
            2 => {
                // account: delivered to another buyer
                let other = if (to + 1) % a_n == from { (to + 2) % a_n } else { (to + 1) % a_n };
                move_units(&mut trail, &transfer_id, from, other, b);
                closing[other].push(held(b));
            }
            d => {
                move_units(&mut trail, &transfer_id, from, to, b);
                closing[to].push(held(b));
                if d == 3 || d == 4 {
                    // unexpected (other quantity) or duplicate (same parties and quantity)
                    let extra_qty = if d == 3 { qty + 100 } else { qty };
                    let extra = block(next, extra_qty);
                    next += extra_qty;
                    opening[from].push(held(extra));
                    move_units(&mut trail, &format!("X{i}"), from, to, extra);
                    closing[to].push(held(extra));
                }
            }
        }
        planted += usize::from(damage < 5 && !(damage == 1 && qty == 1));
        entries.push(ExchangeEntry {
            trade_id,
            transfer_id,
            from: accounts[from].clone(),
            to: accounts[to].clone(),
            instrument: INSTRUMENT,
            qty,
            state: ObligationState::Confirmed,
            blocks: vec![b],
            updated_at: at,
        });
    }
    let positions = |blocks: Vec<Vec<HeldBlock>>| -> Vec<Position> {
        blocks
            .into_iter()
            .enumerate()
            .map(|(a, blocks)| Position { account: accounts[a].clone(), instrument: INSTRUMENT, blocks })
            .collect()
    };
    let (from, as_of) = (Timestamp(10), Timestamp(100));
    Views {
        exchange: ExchangeView::new(as_of, entries),
        registry: RegistryView::new(from, as_of, positions(opening), positions(closing), trail),
        planted,
    }
}

fn main() {
    // `cargo test --all-targets` runs this without --bench: a small smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let default = if smoke { 2_000 } else { 1_000_000 };
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(default);
    let repeat = if smoke { 1 } else { 5 };
    for (name, damage_every) in [("clean", 0), ("1% damaged", 100)] {
        let v = views(n, damage_every);
        let mut best = f64::MAX;
        let mut found = 0;
        for _ in 0..repeat {
            let start = Instant::now();
            let report = match reconcile(&v.exchange, &v.registry) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("reconcile failed: {e}");
                    std::process::exit(1);
                }
            };
            best = best.min(start.elapsed().as_secs_f64());
            found = report.breaks.len();
            if found != v.planted {
                eprintln!("{name}: {} breaks found, {} planted: a bug", found, v.planted);
                std::process::exit(1);
            }
        }
        println!(
            "reconcile {name}: {n} obligations vs {} trail lines, {found} breaks, best of {repeat}: {:.0} ms",
            v.registry.trail.len(),
            best * 1e3
        );
    }
}
