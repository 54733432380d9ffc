//! Transfers per second of the embedded registry on a database file: each transfer is a
//! proposal (reserving 10 units, splitting a block) and its post, two database transactions;
//! or, in batches (`Registry::apply_batch`), one transaction per 1,024 proposals and one per
//! their posts; or one transaction per 1,024 proposals posted at once (`ProposeAndPost`).
//!
//! The in-memory run shows what the SQL work costs without the disk.
//!
//! `cargo bench -p cccx-settlement --bench registry [-- TRANSFERS]`

use std::time::Instant;

use cccx_settlement::sqlite::Durability;
use cccx_settlement::{RegistryError, SqliteRegistry};

mod common;
use common::Mode;

/// Operations per batch in the batched runs.
const BATCH: u64 = 1024;

fn run(durability: Option<Durability>, transfers: u64, mode: Mode) -> Result<f64, RegistryError> {
    let dir = tempfile::tempdir().map_err(|e| RegistryError::Storage(e.to_string()))?;
    let mut r = match durability {
        Some(d) => SqliteRegistry::open_with(dir.path().join("bench.db"), d)?,
        None => SqliteRegistry::open_in_memory()?,
    };
    let (a, b) = common::setup(&mut r, "", transfers)?;
    let start = Instant::now();
    common::send(&mut r, "", (&a, &b), transfers, mode)?;
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
        for mode in [Mode::OneByOne, Mode::Batches(BATCH), Mode::ProposeAndPost(BATCH)] {
            let rate = run(durability, transfers, mode)?;
            println!(
                "embedded registry, {name}, {}: {transfers} transfers, {rate:.0} transfers/s",
                mode.describe()
            );
        }
    }
    Ok(())
}
