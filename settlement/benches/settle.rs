//! Settlement end to end against the embedded registry on a database file: `add_trades`, then
//! `Settlement::run` until every obligation is confirmed. Trades go between a few hundred
//! accounts, each of which sells and buys, so blocks split and accounts come to hold many.
//!
//! The settlement database syncs every commit (`synchronous=FULL`); the registry runs with
//! `FULL`, then `NORMAL`. No audit trail.
//!
//! `cargo bench -p cccx-settlement --bench settle [-- TRADES]`

use std::time::Instant;

use cccx_engine::types::InstrumentId;
use cccx_settlement::settle::{ObligationState, Settlement, SettlementConfig, TradeToSettle};
use cccx_settlement::sqlite::Durability;
use cccx_settlement::{
    AccountId, IssueUnits, OpenAccount, Registry, RequestId, SqliteRegistry, Timestamp, Vintage,
};

const ACCOUNTS: u64 = 300;
const CCC: InstrumentId = InstrumentId(0);

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn account(n: u64) -> BenchResult<AccountId> {
    Ok(AccountId::new(format!("ACCT-{n:03}"))?)
}

/// Trades from a fixed xorshift sequence: seller and buyer among the accounts, 1 to 20
/// certificates, prices around 1,000.
fn trades(count: u64) -> BenchResult<Vec<TradeToSettle>> {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut roll = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..count)
        .map(|n| {
            let seller = roll() % ACCOUNTS;
            let buyer = (seller + 1 + roll() % (ACCOUNTS - 1)) % ACCOUNTS;
            Ok(TradeToSettle {
                trade_id: format!("T{n}"),
                instrument: CCC,
                buyer: account(buyer)?,
                seller: account(seller)?,
                qty: 1 + roll() % 20,
                price: 900 + (roll() % 200) as i64,
                traded_at: Timestamp(1),
            })
        })
        .collect()
}

/// This process's CPU time (user and system, all threads) in seconds: on a shared machine it
/// moves less with other load than the wall clock does.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Seconds for add_trades and for the runs, the runs it took, and the CPU seconds of both.
fn run(durability: Durability, count: u64) -> BenchResult<(f64, f64, u32, f64)> {
    let dir = tempfile::tempdir()?;
    let mut registry = SqliteRegistry::open_with(dir.path().join("registry.db"), durability)?;
    for n in 0..ACCOUNTS {
        let open = OpenAccount { id: RequestId::new(format!("open-{n}"))?, account: account(n)? };
        registry.open_account(&open, Timestamp(0))?;
        let issue = IssueUnits {
            id: RequestId::new(format!("issue-{n}"))?,
            account: account(n)?,
            instrument: CCC,
            vintage: Vintage(2024),
            quantity: 1_000_000,
        };
        registry.issue(&issue, Timestamp(0))?;
    }
    let config = SettlementConfig { fee_bps: 10, max_attempts: 5 };
    let mut s = Settlement::open(dir.path().join("settlement.db"), config)?;
    let trades = trades(count)?;
    let cpu = cpu_seconds();
    let start = Instant::now();
    s.add_trades(&trades, Timestamp(10))?;
    let added = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut runs = 0;
    loop {
        runs += 1;
        let report = s.run(&mut registry, Timestamp(100 + i64::from(runs)))?;
        if report.failed == 0 || runs >= 10 {
            break;
        }
    }
    let ran = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    let counts = s.counts()?;
    if counts != vec![(ObligationState::Confirmed, count)] {
        return Err(format!("not all confirmed: {counts:?}").into());
    }
    s.check()?;
    registry.check_invariants()?;
    Ok((added, ran, runs, cpu))
}

fn main() -> BenchResult<()> {
    // `cargo test --all-targets` runs this without --bench: a small smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let default = if smoke { 500 } else { 100_000 };
    let count: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(default);
    for (name, durability) in
        [("synchronous=FULL", Durability::Full), ("synchronous=NORMAL", Durability::Normal)]
    {
        let (added, ran, runs, cpu) = run(durability, count)?;
        let total = added + ran;
        println!(
            "settlement, embedded registry WAL file {name}, {ACCOUNTS} accounts: {count} trades, \
             add_trades {added:.2} s, run {ran:.2} s ({runs} run(s)), total {total:.2} s \
             (CPU {cpu:.2} s), {:.0} trades/s",
            count as f64 / total
        );
    }
    Ok(())
}
