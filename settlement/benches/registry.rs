//! Transfers per second of the embedded registry on a database file: each transfer is a
//! proposal (reserving 10 units, splitting a block) and its post, two database transactions;
//! or, in batches ([`Registry::apply_batch`]), one transaction per 1,024 proposals and one per
//! their posts.
//!
//! The in-memory run shows what the SQL work costs without the disk.
//!
//! `cargo bench -p cccx-settlement --bench registry [-- TRANSFERS]`

use std::time::Instant;

use cccx_engine::types::InstrumentId;
use cccx_settlement::sqlite::Durability;
use cccx_settlement::{
    AccountId, BatchOp, IssueUnits, OpenAccount, PostTransfer, ProposeTransfer, Registry, RegistryError,
    RequestId, SqliteRegistry, Timestamp, Vintage,
};

fn id(s: String) -> Result<RequestId, RegistryError> {
    RequestId::new(s)
}

/// Operations per batch in the batched runs (settlement's chunk).
const BATCH: u64 = 1024;

fn run(durability: Option<Durability>, transfers: u64, batch: u64) -> Result<f64, RegistryError> {
    let dir = tempfile::tempdir().map_err(|e| RegistryError::Storage(e.to_string()))?;
    let mut r = match durability {
        Some(d) => SqliteRegistry::open_with(dir.path().join("bench.db"), d)?,
        None => SqliteRegistry::open_in_memory()?,
    };
    let (a, b) = (AccountId::new("A")?, AccountId::new("B")?);
    r.open_account(&OpenAccount { id: id("oa".into())?, account: a.clone() }, Timestamp(0))?;
    r.open_account(&OpenAccount { id: id("ob".into())?, account: b.clone() }, Timestamp(0))?;
    let issue = IssueUnits {
        id: id("i".into())?,
        account: a.clone(),
        instrument: InstrumentId(0),
        vintage: Vintage(2024),
        quantity: transfers * 10,
    };
    r.issue(&issue, Timestamp(0))?;
    let start = Instant::now();
    let mut pending = (Vec::new(), Vec::new());
    for n in 0..transfers {
        if batch > 1 {
            let t = id(format!("t{n}"))?;
            pending.0.push(BatchOp::Propose(ProposeTransfer {
                id: t.clone(),
                from: a.clone(),
                to: b.clone(),
                instrument: InstrumentId(0),
                quantity: 10,
                vintage: None,
            }));
            pending.1.push(BatchOp::Post(PostTransfer { id: id(format!("p{n}"))?, transfer: t }));
            if pending.0.len() as u64 == batch || n + 1 == transfers {
                let (proposals, posts) = std::mem::take(&mut pending);
                for ops in [proposals, posts] {
                    for answer in r.apply_batch(&ops, Timestamp(1 + n as i64))? {
                        answer?;
                    }
                }
            }
            continue;
        }
        let at = Timestamp(1 + n as i64);
        let t = id(format!("t{n}"))?;
        let propose = ProposeTransfer {
            id: t.clone(),
            from: a.clone(),
            to: b.clone(),
            instrument: InstrumentId(0),
            quantity: 10,
            vintage: None,
        };
        r.propose(&propose, at)?;
        r.post(&PostTransfer { id: id(format!("p{n}"))?, transfer: t }, at)?;
    }
    let secs = start.elapsed().as_secs_f64();
    r.check_invariants().map_err(RegistryError::Storage)?;
    Ok(transfers as f64 / secs)
}

fn main() -> Result<(), RegistryError> {
    // `cargo test --all-targets` runs this without --bench: a small smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let default = if smoke { 200 } else { 5_000 };
    let transfers: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(default);
    let runs = [
        ("WAL file, synchronous=FULL", Some(Durability::Full)),
        ("WAL file, synchronous=NORMAL", Some(Durability::Normal)),
        ("in memory (the CPU cost alone)", None),
    ];
    for (name, durability) in runs {
        for batch in [1, BATCH] {
            let rate = run(durability, transfers, batch)?;
            let how = if batch == 1 { "one by one".to_string() } else { format!("in batches of {batch}") };
            println!(
                "embedded registry, {name}, {how}: {transfers} transfers (propose+post), {rate:.0} transfers/s"
            );
        }
    }
    Ok(())
}
