//! `cccx registry ...`: the reference registry as its own process.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use cccx_settlement::faults::{DropMode, Faults};
use cccx_settlement::sqlite::Durability;
use cccx_settlement::SqliteRegistry;
use clap::{Subcommand, ValueEnum};

/// Registry subcommands.
#[derive(Subcommand, Debug)]
pub enum RegistryCmd {
    /// Serve a reference registry over HTTP (REST/JSON; OpenAPI at /openapi.json) on its own
    /// SQLite database. Stops on Ctrl-C or SIGTERM after the requests in flight.
    Serve(ServeArgs),
}

/// How commits reach the disk.
#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum Sync {
    /// Every commit is on disk before its answer.
    Full,
    /// Commits reach the write-ahead log; a power cut may lose the last few.
    Normal,
}

/// How an injected lost answer is lost.
#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum DropHow {
    /// Cut the connection after the status line.
    Close,
    /// Hold the answer back for --fault-drop-delay-ms.
    Delay,
}

/// `cccx registry serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The registry's database file (created if missing).
    #[arg(long, value_name = "FILE")]
    db: PathBuf,
    /// The address to listen on (port 0: any free port, printed at start).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// How commits reach the disk.
    #[arg(long, value_enum, default_value = "full")]
    sync: Sync,
    /// Fault injection (tests): the seed that decides each request's fault.
    #[arg(long, default_value_t = 0, value_name = "N")]
    fault_seed: u64,
    /// Fault injection: latency added to every /v1 request.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    fault_latency_ms: u64,
    /// Fault injection: up to this much more latency, drawn per request.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    fault_jitter_ms: u64,
    /// Fault injection: percentage of requests answered 503 without doing the work.
    #[arg(long, default_value_t = 0, value_name = "PCT")]
    fault_error_pct: u32,
    /// Fault injection: percentage of requests done whose answer is lost.
    #[arg(long, default_value_t = 0, value_name = "PCT")]
    fault_drop_pct: u32,
    /// Fault injection: how a lost answer is lost.
    #[arg(long, value_enum, default_value = "close")]
    fault_drop_mode: DropHow,
    /// Fault injection: how long a delayed answer is held back (past the client's timeout).
    #[arg(long, default_value_t = 5_000, value_name = "MS")]
    fault_drop_delay_ms: u64,
    /// Fault injection: percentage of requests applied twice.
    #[arg(long, default_value_t = 0, value_name = "PCT")]
    fault_duplicate_pct: u32,
}

/// Runs a registry subcommand.
pub fn run(cmd: RegistryCmd) -> anyhow::Result<()> {
    let RegistryCmd::Serve(a) = cmd;
    let faults = Faults {
        seed: a.fault_seed,
        latency_ms: a.fault_latency_ms,
        jitter_ms: a.fault_jitter_ms,
        error_pct: a.fault_error_pct,
        drop_pct: a.fault_drop_pct,
        drop_mode: match a.fault_drop_mode {
            DropHow::Close => DropMode::Close,
            DropHow::Delay => DropMode::Delay { delay_ms: a.fault_drop_delay_ms },
        },
        duplicate_pct: a.fault_duplicate_pct,
    };
    faults.validate()?;
    let durability = match a.sync {
        Sync::Full => Durability::Full,
        Sync::Normal => Durability::Normal,
    };
    let registry = SqliteRegistry::open_with(&a.db, durability)
        .with_context(|| format!("opening the registry database {}", a.db.display()))?;
    cccx_settlement::service::serve_until_signal(registry, a.listen, faults)?;
    Ok(())
}
