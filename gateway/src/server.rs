//! `cccx serve`: one process with the engine thread, the HTTP server (tokio, axum), the
//! session scheduler, the settlement thread and (with its module) the FIX acceptor.
//!
//! SIGTERM or Ctrl-C shuts down cleanly: stop accepting connections, let the requests in
//! flight finish, drain the engine's queue, seal and sync the journal, then let settlement
//! finish its batch and record the trades still queued.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cccx_engine::{CommandBody, ParticipantId};

use crate::config::Config;
use crate::core::{Core, CoreConfig, CoreThread, FeedItem, Query, QueryResult, Started};
use crate::metrics::Metrics;
use crate::rest::{self, AppState};
use crate::secrets::{Secrets, SECRETS_FILE};
use crate::settlement::SettlementService;

/// A running server (for tests and embedding): its addresses and a way to stop it.
pub struct Running {
    /// The HTTP address actually bound (port 0 in the config picks a free one).
    pub http: std::net::SocketAddr,
    /// The engine handle.
    pub core: Core,
    /// The credentials.
    pub secrets: Arc<Secrets>,
    /// What recovery found.
    pub started: Started,
    /// The FIX acceptor's address (`None` when `fix_enabled` is off; a FIX acceptor that cannot
    /// start stops the server).
    pub fix: Option<std::net::SocketAddr>,
    fix_acceptor: Option<crate::fix::FixAcceptor>,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    core_thread: Option<CoreThread>,
    stop_scheduler: Arc<AtomicBool>,
    scheduler: Option<std::thread::JoinHandle<()>>,
    /// The settlement thread (`None` when `[settlement] enabled = false`).
    pub settlement: Option<SettlementService>,
}

/// The commands that set up a new journal: each participant's initial funds and holdings
/// (only with risk checks on: without them there are no accounts).
pub fn genesis_commands(config: &Config) -> Vec<CommandBody> {
    if !config.server.risk {
        return Vec::new();
    }
    let mut out = Vec::new();
    for p in &config.participants {
        let participant = ParticipantId(p.id);
        if p.initial_funds > 0 {
            out.push(CommandBody::Funds { participant, amount: p.initial_funds });
        }
        for (symbol, qty) in &p.initial_holdings {
            if let (Some(instrument), true) = (config.instrument_id(symbol), *qty > 0) {
                out.push(CommandBody::Holdings { participant, instrument, qty: *qty });
            }
        }
    }
    out
}

/// Starts everything on the current tokio runtime.
pub async fn start(config: Config) -> Result<Running, String> {
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let (secrets, _) = Secrets::load_or_create(&data_dir, &config).map_err(|e| e.to_string())?;
    let secrets = Arc::new(secrets);
    let metrics = Arc::new(Metrics::default());
    let engine = config.engine_config().map_err(|e| e.to_string())?;
    let mut settlement = if config.settlement.enabled {
        let m = metrics.clone();
        Some(tokio::task::block_in_place(|| SettlementService::start(&config, m))?)
    } else {
        None
    };
    let core_config = CoreConfig {
        data_dir: data_dir.clone(),
        engine,
        durability: config.server.durability.durability(),
        queue_capacity: config.server.queue_capacity,
        genesis: genesis_commands(&config),
        settlement_feed: settlement.as_ref().map(|s| s.feed.clone()),
    };
    let (core, core_thread, started) =
        match tokio::task::block_in_place(|| Core::start(core_config, metrics.clone())) {
            Ok(started) => started,
            Err(e) => {
                // An HTTP registry client must not be dropped on an async worker.
                tokio::task::block_in_place(move || drop(settlement));
                return Err(e);
            }
        };
    if let Some(s) = settlement.as_mut() {
        s.run(core.clone())?;
        resume_holdings_checks(&core, &s.feed).await;
    }
    let settlement = settlement.map(|s| s.service);
    let stop_scheduler = Arc::new(AtomicBool::new(false));
    let scheduler = crate::scheduler::start(core.clone(), config.schedules(), stop_scheduler.clone());
    let listener = tokio::net::TcpListener::bind(config.server.http)
        .await
        .map_err(|e| format!("cannot listen for HTTP on {}: {e}", config.server.http))?;
    let http = listener.local_addr().map_err(|e| e.to_string())?;
    let (fix_acceptor, fix_error) = if config.server.fix_enabled {
        match crate::fix::FixAcceptor::start(&config, &secrets, core.clone()) {
            Ok(a) => (Some(a), None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    let fix = fix_acceptor.as_ref().map(|a| a.addr);
    let state = AppState {
        core: core.clone(),
        config: Arc::new(config),
        secrets: secrets.clone(),
        settlement: settlement.clone(),
    };
    let app = rest::router(state);
    let (shutdown, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        let graceful = async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(graceful).await {
            tracing::error!("HTTP server: {e}");
        }
    });
    let running = Running {
        http,
        core,
        secrets,
        started,
        fix,
        fix_acceptor,
        shutdown,
        server,
        core_thread: Some(core_thread),
        stop_scheduler,
        scheduler,
        settlement,
    };
    // A FIX acceptor that cannot start (its port taken, say) stops the server: a desk must not
    // find the exchange half up.
    if let Some(e) = fix_error {
        running.stop().await?;
        return Err(format!("the FIX acceptor cannot start: {e}"));
    }
    Ok(running)
}

impl Running {
    /// Stops accepting, finishes what is in flight, drains the engine and closes the journal.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(fix) = self.fix_acceptor.take() {
            let _ = tokio::task::spawn_blocking(move || fix.stop()).await;
        }
        let _ = self.shutdown.send(true);
        let _ = (&mut self.server).await;
        self.stop_scheduler.store(true, Ordering::Release);
        if let Some(s) = self.scheduler.take() {
            let _ = tokio::task::spawn_blocking(move || s.join()).await;
        }
        let core = self.core.clone();
        let result = tokio::task::spawn_blocking(move || core.shutdown_blocking())
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        if let Some(t) = self.core_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        // After the engine: its last trades are on settlement's feed by now.
        if let Some(s) = self.settlement.take() {
            let _ = tokio::task::spawn_blocking(move || s.stop_blocking()).await;
        }
        result
    }
}

/// An instrument whose bid window is closed at start (the process stopped between the close
/// and the uncross) gets its holdings check again: settlement sees a window close on its feed.
async fn resume_holdings_checks(core: &Core, feed: &crate::core::FeedSender) {
    let Ok(QueryResult::Instruments(list)) = core.query(Query::Instruments).await else {
        return;
    };
    for i in list.into_iter().filter(|i| i.phase == "call_closed") {
        let instrument = cccx_engine::InstrumentId(i.id);
        if let Ok(QueryResult::SellTotals(sells)) = core.query(Query::SellTotals { instrument }).await {
            let sells = sells.into_iter().map(|(p, q)| (ParticipantId(p), q)).collect();
            let _ = feed.send(vec![FeedItem::WindowClosed { seq: 0, instrument, sells }]);
        }
    }
}

/// `cccx serve [--config FILE]`: runs until SIGTERM or Ctrl-C.
pub fn serve(config_path: Option<&Path>) -> Result<(), String> {
    let config = match config_path {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::embedded(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cccx-io")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let source = config_path.map_or("embedded defaults".to_string(), |p| p.display().to_string());
        let data_dir = config.server.data_dir.clone();
        let symbols: Vec<String> = config.instruments.iter().map(|i| i.symbol.clone()).collect();
        let signals = Signals::install();
        let running = start(config).await?;
        let s = &running.started;
        println!("cccx exchange running ({source})");
        println!("  data directory  {}", data_dir.display());
        println!("  journal         {} commands recovered (last seq {})", s.replayed, s.last_seq);
        println!("  instruments     {}", symbols.join(", "));
        println!("  HTTP            http://{}  (REST under /v1, WebSocket /v1/ws, /health, /metrics)", running.http);
        println!("  FIX             {}  (FIX 4.4, SenderCompID CCCX; Username = comp_id, Password = fix_password)", running.fix.map_or("-".to_string(), |a| a.to_string()));
        println!("  settlement      {}", settlement_line(&running, &data_dir));
        println!("  credentials     {}  (API keys and FIX passwords, generated on first start)", data_dir.join(SECRETS_FILE).display());
        println!("  try             curl -H \"Authorization: Bearer $(jq -r '.participants[\"1\"].api_key' {})\" http://{}/v1/instruments", data_dir.join(SECRETS_FILE).display(), running.http);
        println!("stop with Ctrl-C or SIGTERM");
        signals.wait().await;
        println!("shutting down: draining and syncing the journal");
        running.stop().await?;
        println!("stopped cleanly");
        Ok(())
    })
}

fn settlement_line(running: &Running, data_dir: &Path) -> String {
    match &running.settlement {
        None => "off ([settlement] enabled = false)".into(),
        Some(_) => format!(
            "{} (obligations; audit trail {}; GET /v1/settlement/obligations)",
            data_dir.join(crate::config::SETTLEMENT_FILE).display(),
            data_dir.join(crate::config::AUDIT_FILE).display()
        ),
    }
}

/// SIGTERM and SIGINT, listened for from before the server says it is running: a signal that
/// arrives while it is still printing its addresses stops it cleanly too.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals { term: signal(SignalKind::terminate()).ok(), int: signal(SignalKind::interrupt()).ok() }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn wait(self) {
        #[cfg(unix)]
        {
            let (Some(mut term), Some(mut int)) = (self.term, self.int) else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
