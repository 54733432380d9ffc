//! The settlement thread: trades become obligations settled at the registry (delivery versus
//! payment), and the registry's holdings check when a bid window closes.
//!
//! One OS thread owns the [`Settlement`] state machine and the registry client (both block on
//! I/O: SQLite, HTTP), so nothing here ever runs on the engine thread or a tokio worker.
//!
//! - **Trades arrive exactly once in effect.** The engine thread sends each command's trades
//!   on settlement's own unbounded feed once the journal holds the command, and at start every
//!   trade its replay of the journal produced ([`crate::core::FeedItem`]). The trade id is
//!   `<symbol>-<seq>-<index>` (the journal sequence of the command and the event's index among
//!   its events, the public trade id after the symbol), the same on every replay, and
//!   [`Settlement::add_trades`] skips an id it already holds: a trade fed twice (a restart) is
//!   recorded once, and a trade journaled before a crash is recorded after the restart.
//! - **Batches.** Whatever is queued is recorded in one transaction, then one
//!   [`Settlement::run`] works every open obligation. When a run has failures (no answer from
//!   the registry), the next run waits `retry_ms`, doubling up to [`RETRY_BACKOFF_MAX`] while
//!   runs keep failing; trades arriving meanwhile are recorded and wait for that run.
//! - **Holdings check.** A bid-window close on the feed (or an operator's request) sends each
//!   seller's total to [`Registry::holdings_check`]; the sellers found short get a `SHORTFALL`
//!   command, which removes their sell orders before the uncross. A registry that cannot
//!   answer is logged, counted (`cccx_holdings_check_failures_total`) and reported to the
//!   operator; nothing is removed then.
//! - **Stop.** After the engine thread has stopped, [`SettlementService::stop_blocking`] lets the thread
//!   finish its current batch, record whatever trades are still queued, and end.
//!
//! The embedded registry is seeded on start ([`seed`]): an account per participant and its
//! `initial_holdings` issued, with request ids fixed per participant and instrument, so a
//! restart issues nothing twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cccx_engine::{CommandBody, InstrumentId, ParticipantId, Qty};
use cccx_settlement::audit::AuditLog;
use cccx_settlement::client::{HttpRegistry, HttpRegistryConfig, TimeSource};
use cccx_settlement::settle::{Settlement, SettlementConfig, TradeToSettle};
use cccx_settlement::{
    AccountId, IssueUnits, OpenAccount, Registry, RegistryError, RequestId, SqliteRegistry, Timestamp,
    Vintage, REQUEST_QTY_MAX,
};
use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use crate::config::{Config, RegistryChoice, AUDIT_FILE, REGISTRY_FILE, SETTLEMENT_FILE};
use crate::core::{Core, CoreError, FeedItem, FeedSender, Intent};
use crate::metrics::Metrics;

/// The longest pause between retries of failed obligations.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The most issues of `REQUEST_QTY_MAX` certificates a seed makes per participant and instrument.
pub const SEED_ISSUES_MAX: u64 = 16;
/// Attempts the HTTP registry client makes per request (settlement retries on top of that).
pub const HTTP_ATTEMPTS_MAX: u32 = 3;

/// A seller the registry found short, with its participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Short {
    /// The participant.
    pub participant: ParticipantId,
    /// Its registry account.
    pub account: AccountId,
    /// The total it offered.
    pub requested: Qty,
    /// What it has available at the registry.
    pub available: Qty,
}

enum Control {
    HoldingsCheck {
        instrument: InstrumentId,
        sells: Vec<(ParticipantId, Qty)>,
        reply: oneshot::Sender<Result<Vec<Short>, String>>,
    },
    Stop,
}

/// Participants and their registry accounts, both ways.
#[derive(Clone, Debug, Default)]
pub struct Accounts {
    by_participant: BTreeMap<u32, AccountId>,
    by_account: BTreeMap<AccountId, u32>,
}

impl Accounts {
    /// From the configuration (participants without a valid account are left out).
    pub fn of(config: &Config) -> Accounts {
        let mut accounts = Accounts::default();
        for p in &config.participants {
            if let Ok(a) = AccountId::new(p.registry_account.clone()) {
                accounts.by_participant.insert(p.id, a.clone());
                accounts.by_account.insert(a, p.id);
            }
        }
        accounts
    }

    /// A participant's account.
    pub fn account(&self, participant: u32) -> Option<&AccountId> {
        self.by_participant.get(&participant)
    }

    /// An account's participant.
    pub fn participant(&self, account: &AccountId) -> Option<u32> {
        self.by_account.get(account).copied()
    }
}

/// A handle to the settlement thread: holdings checks, and reads of the obligations (on a
/// connection of their own, so that a read never waits for the registry).
#[derive(Clone)]
pub struct SettlementService {
    control: Sender<Control>,
    reader: Arc<Mutex<Settlement>>,
    accounts: Arc<Accounts>,
    symbols: Arc<Vec<String>>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// What [`SettlementService::start`] returns: the service and the feed the engine thread
/// sends to.
pub struct Started {
    /// The handle.
    pub service: SettlementService,
    /// Start the engine thread with this as [`crate::core::CoreConfig::settlement_feed`]...
    pub feed: FeedSender,
    /// ...then hand the engine's handle to [`Started::run`].
    pending: Option<Pending>,
}

struct Pending {
    settlement: Settlement,
    registry: Box<dyn Registry + Send>,
    feed_rx: Receiver<Vec<FeedItem>>,
    control_rx: Receiver<Control>,
    retry: Duration,
    metrics: Arc<Metrics>,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Opens the registry the configuration names (seeding the embedded one).
fn open_registry(config: &Config, data_dir: &Path) -> Result<Box<dyn Registry + Send>, String> {
    match config.settlement.registry().map_err(|e| e.to_string())? {
        RegistryChoice::Embedded => {
            let path = data_dir.join(REGISTRY_FILE);
            let mut registry = SqliteRegistry::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            seed(&mut registry, config, Timestamp(now_ns()))?;
            Ok(Box::new(registry))
        }
        RegistryChoice::Http(url) => {
            // Several exchanges share a registry service: its clock dates the changes.
            let client = HttpRegistryConfig {
                time_source: TimeSource::Service,
                attempts_max: HTTP_ATTEMPTS_MAX,
                ..HttpRegistryConfig::default()
            };
            let registry = HttpRegistry::new(&url, client).map_err(|e| format!("registry {url}: {e}"))?;
            Ok(Box::new(registry))
        }
    }
}

/// Seeds a registry from the configuration: opens each participant's `registry_account` and
/// issues its `initial_holdings` (of the instrument's vintage) to it. Request ids are fixed per
/// account, participant and instrument, so a second seed changes nothing; a seed the registry
/// already holds with other fields (the configuration changed since) is left as it was.
pub fn seed(registry: &mut dyn Registry, config: &Config, at: Timestamp) -> Result<(), String> {
    let id = |text: String| RequestId::new(text).map_err(|e| e.to_string());
    for p in &config.participants {
        let account =
            AccountId::new(p.registry_account.clone()).map_err(|e| format!("participant {}: {e}", p.id))?;
        let open = OpenAccount { id: id(format!("open-{account}"))?, account: account.clone() };
        match registry.open_account(&open, at) {
            Ok(_) | Err(RegistryError::AccountExists(_)) => {}
            Err(e @ RegistryError::DuplicateIdOtherFields(_)) => tracing::warn!("registry seed: {e}"),
            Err(e) => return Err(format!("registry seed, account {account}: {e}")),
        }
        for (symbol, qty) in &p.initial_holdings {
            let (Some(instrument), Some(c)) =
                (config.instrument_id(symbol), config.instruments.iter().find(|i| &i.symbol == symbol))
            else {
                continue;
            };
            let mut left = u64::try_from(*qty).unwrap_or(0);
            if left > REQUEST_QTY_MAX * SEED_ISSUES_MAX {
                tracing::warn!(
                    "registry seed: participant {} {symbol}: {left} certificates; issuing {}",
                    p.id,
                    REQUEST_QTY_MAX * SEED_ISSUES_MAX
                );
                left = REQUEST_QTY_MAX * SEED_ISSUES_MAX;
            }
            let mut n = 0;
            while left > 0 {
                let quantity = left.min(REQUEST_QTY_MAX);
                let req = IssueUnits {
                    id: id(format!("issue-p{}-{symbol}-{n}", p.id))?,
                    account: account.clone(),
                    instrument,
                    vintage: Vintage(c.vintage()),
                    quantity,
                };
                match registry.issue(&req, at) {
                    Ok(_) => {}
                    Err(e @ RegistryError::DuplicateIdOtherFields(_)) => tracing::warn!("registry seed: {e}"),
                    Err(e) => return Err(format!("registry seed, {account} {symbol}: {e}")),
                }
                left -= quantity;
                n += 1;
            }
        }
    }
    Ok(())
}

impl SettlementService {
    /// Opens the settlement database, the audit trail and the registry (seeding the embedded
    /// one). The thread starts with [`Started::run`], once the engine thread is up.
    pub fn start(config: &Config, metrics: Arc<Metrics>) -> Result<Started, String> {
        let data_dir = &config.server.data_dir;
        let s = &config.settlement;
        let settings = SettlementConfig { fee_bps: s.fee_bps, max_attempts: s.max_attempts };
        let path = data_dir.join(SETTLEMENT_FILE);
        let audit_path = data_dir.join(AUDIT_FILE);
        let audit = AuditLog::open(&audit_path).map_err(|e| format!("{}: {e}", audit_path.display()))?;
        let settlement = Settlement::open(&path, settings)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .with_audit(audit);
        let reader = Settlement::open(&path, settings).map_err(|e| format!("{}: {e}", path.display()))?;
        let registry = open_registry(config, data_dir)?;
        let (feed, feed_rx) = crossbeam_channel::unbounded();
        let (control, control_rx) = crossbeam_channel::unbounded();
        let service = SettlementService {
            control,
            reader: Arc::new(Mutex::new(reader)),
            accounts: Arc::new(Accounts::of(config)),
            symbols: Arc::new(config.instruments.iter().map(|i| i.symbol.clone()).collect()),
            thread: Arc::new(Mutex::new(None)),
        };
        let retry = Duration::from_millis(s.retry_ms);
        let pending = Pending { settlement, registry, feed_rx, control_rx, retry, metrics };
        Ok(Started { service, feed, pending: Some(pending) })
    }

    /// The participants' registry accounts.
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// The instruments' symbols, in id order.
    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    /// Runs the registry's holdings check for the sellers of an instrument (on the settlement
    /// thread). `Err` when the registry could not answer.
    pub async fn holdings_check(
        &self,
        instrument: InstrumentId,
        sells: Vec<(ParticipantId, Qty)>,
    ) -> Result<Vec<Short>, String> {
        let (reply, rx) = oneshot::channel();
        self.control
            .send(Control::HoldingsCheck { instrument, sells, reply })
            .map_err(|_| "the settlement thread has ended".to_string())?;
        rx.await.unwrap_or_else(|_| Err("the settlement thread has ended".into()))
    }

    /// Reads the obligations (on a blocking thread: SQLite).
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Settlement) -> T + Send + 'static,
    ) -> Result<T, String> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let guard = reader.lock().map_err(|_| "the settlement reader failed".to_string())?;
            Ok(f(&guard))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Lets the thread finish its batch, record the trades still queued, and end; waits for it.
    /// Call after the engine thread has stopped (so that its last trades are on the feed).
    pub fn stop_blocking(&self) {
        let _ = self.control.send(Control::Stop);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Started {
    /// Starts the settlement thread; it submits `SHORTFALL` commands through `core`.
    pub fn run(&mut self, core: Core) -> Result<(), String> {
        let Some(p) = self.pending.take() else {
            return Err("the settlement thread runs already".into());
        };
        let mut worker = Worker {
            settlement: p.settlement,
            registry: p.registry,
            core,
            accounts: self.service.accounts.clone(),
            symbols: self.service.symbols.clone(),
            metrics: p.metrics,
            retry_first: p.retry,
            retry: p.retry,
            retry_at: None,
            last_at: 0,
        };
        let (feed_rx, control_rx) = (p.feed_rx, p.control_rx);
        let handle = std::thread::Builder::new()
            .name("cccx-settlement".into())
            .spawn(move || worker.run(&feed_rx, &control_rx))
            .map_err(|e| format!("cannot start the settlement thread: {e}"))?;
        if let Ok(mut slot) = self.service.thread.lock() {
            *slot = Some(handle);
        }
        Ok(())
    }
}

struct Worker {
    settlement: Settlement,
    registry: Box<dyn Registry + Send>,
    core: Core,
    accounts: Arc<Accounts>,
    symbols: Arc<Vec<String>>,
    metrics: Arc<Metrics>,
    retry_first: Duration,
    retry: Duration,
    /// When failed obligations are due for another run.
    retry_at: Option<Instant>,
    last_at: i64,
}

impl Worker {
    fn run(&mut self, feed: &Receiver<Vec<FeedItem>>, control: &Receiver<Control>) {
        let mut feed_open = true;
        // Obligations left open by the last process (a crash, a registry that was down).
        self.settle();
        loop {
            let timeout = self
                .retry_at
                .map_or(Duration::from_secs(3600), |t| t.saturating_duration_since(Instant::now()));
            let mut items = Vec::new();
            crossbeam_channel::select! {
                recv(if feed_open { feed.clone() } else { crossbeam_channel::never() }) -> batch => match batch {
                    Ok(batch) => items = batch,
                    Err(_) => feed_open = false,
                },
                recv(control) -> c => match c {
                    Ok(Control::HoldingsCheck { instrument, sells, reply }) => {
                        let _ = reply.send(self.holdings_check(instrument, &sells));
                        continue;
                    }
                    Ok(Control::Stop) | Err(_) => {
                        self.drain_on_stop(feed);
                        return;
                    }
                },
                default(timeout) => {}
            }
            // Whatever else is queued joins the batch.
            while let Ok(more) = feed.try_recv() {
                items.extend(more);
            }
            self.take(items);
            // While the registry is failing, new trades are recorded but wait with the failed
            // ones for the backoff: a registry in trouble is not hammered by every batch.
            if self.retry_at.is_none_or(|t| Instant::now() >= t) {
                self.settle();
            }
        }
    }

    /// Records the trades of a batch, and runs the holdings checks it asks for (before
    /// settling: the uncross waits for them).
    fn take(&mut self, items: Vec<FeedItem>) {
        let mut trades = Vec::new();
        for item in items {
            match item {
                FeedItem::Trade { seq, index, trade } => {
                    if let Some(t) = self.trade(seq, index, &trade) {
                        trades.push(t);
                    }
                }
                FeedItem::WindowClosed { instrument, sells, .. } => {
                    self.record(&trades);
                    trades.clear();
                    self.window_closed(instrument, &sells);
                }
            }
        }
        self.record(&trades);
    }

    fn at(&mut self) -> Timestamp {
        // The registry refuses a change dated before its last one: never go back.
        self.last_at = self.last_at.max(now_ns());
        Timestamp(self.last_at)
    }

    /// The obligation of an engine trade; `None` for a trade that needs no settlement (both
    /// sides one account) or cannot be mapped (logged and counted).
    fn trade(&mut self, seq: u64, index: usize, t: &cccx_engine::Trade) -> Option<TradeToSettle> {
        let symbol = self.symbols.get(t.instrument.0 as usize)?;
        let trade_id = format!("{symbol}-{seq}-{index}");
        let (Some(buyer), Some(seller)) =
            (self.accounts.account(t.buyer.0), self.accounts.account(t.seller.0))
        else {
            tracing::error!("settlement: trade {trade_id}: participant without a registry account");
            self.metrics.settlement_errors.inc();
            return None;
        };
        if buyer == seller {
            return None;
        }
        Some(TradeToSettle {
            trade_id,
            instrument: t.instrument,
            buyer: buyer.clone(),
            seller: seller.clone(),
            qty: t.qty,
            price: t.price,
            traded_at: Timestamp(i64::try_from(t.ts_ns).unwrap_or(i64::MAX)),
        })
    }

    /// Records trades as obligations: in one transaction, or, when the batch is refused (one
    /// trade recorded before with other fields: the configuration's accounts changed), one
    /// by one, so that one bad trade does not hold up the others.
    fn record(&mut self, trades: &[TradeToSettle]) {
        if trades.is_empty() {
            return;
        }
        let at = self.at();
        match self.settlement.add_trades(trades, at) {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(
                    "settlement: a batch of {} trades refused ({e}); recording them one by one",
                    trades.len()
                );
                for t in trades {
                    if let Err(e) = self.settlement.add_trades(std::slice::from_ref(t), at) {
                        tracing::error!("settlement: {e}");
                        self.metrics.settlement_errors.inc();
                    }
                }
            }
        }
    }

    /// Works the open obligations once and schedules the next run while some failed.
    fn settle(&mut self) {
        let at = self.at();
        match self.settlement.run(self.registry.as_mut(), at) {
            Ok(report) => {
                self.metrics.settlement_runs.inc();
                if report.failed > 0 {
                    tracing::warn!(
                        "settlement: {} obligations got no answer; retrying in {:?}",
                        report.failed,
                        self.retry
                    );
                    self.retry_at = Some(Instant::now() + self.retry);
                    self.retry = (self.retry * 2).min(RETRY_BACKOFF_MAX);
                } else {
                    self.retry_at = None;
                    self.retry = self.retry_first;
                }
            }
            Err(e) => {
                tracing::error!("settlement run: {e}");
                self.metrics.settlement_errors.inc();
                self.retry_at = Some(Instant::now() + self.retry);
                self.retry = (self.retry * 2).min(RETRY_BACKOFF_MAX);
            }
        }
        if let Ok(counts) = self.settlement.counts() {
            self.metrics.set_obligations(&counts);
        }
    }

    /// The registry's holdings check for an instrument's sellers.
    fn holdings_check(
        &mut self,
        instrument: InstrumentId,
        sells: &[(ParticipantId, Qty)],
    ) -> Result<Vec<Short>, String> {
        let mut totals = BTreeMap::new();
        for (p, qty) in sells {
            match self.accounts.account(p.0) {
                Some(a) => {
                    totals.insert(a.clone(), *qty);
                }
                None => tracing::warn!("holdings check: participant {} has no registry account", p.0),
            }
        }
        self.metrics.holdings_checks.inc();
        let found = self.registry.holdings_check(instrument, None, &totals).map_err(|e| {
            self.metrics.holdings_check_failures.inc();
            tracing::error!(
                "holdings check of instrument {}: the registry did not answer: {e}",
                instrument.0
            );
            format!("the registry did not answer the holdings check: {e}")
        })?;
        Ok(found
            .into_iter()
            .filter_map(|s| {
                let participant = ParticipantId(self.accounts.participant(&s.account)?);
                Some(Short {
                    participant,
                    account: s.account,
                    requested: s.requested,
                    available: s.available,
                })
            })
            .collect())
    }

    /// A bid window closed: check the sellers and remove the offers of those found short.
    fn window_closed(&mut self, instrument: InstrumentId, sells: &[(ParticipantId, Qty)]) {
        if sells.is_empty() {
            return;
        }
        let Ok(short) = self.holdings_check(instrument, sells) else {
            return;
        };
        for s in short {
            tracing::warn!(
                "holdings check: {} offered {} but holds {} available: removing its offers",
                s.account,
                s.requested,
                s.available
            );
            self.metrics.shortfalls.inc();
            let body = CommandBody::Shortfall { instrument, participant: s.participant };
            if let Err(e) = submit_and_wait(&self.core, body) {
                tracing::error!(
                    "holdings check: SHORTFALL for participant {} not applied: {e}",
                    s.participant.0
                );
            }
        }
    }

    /// Stopping: the engine has stopped, so its last trades are on the feed: record them (the
    /// next start settles them).
    fn drain_on_stop(&mut self, feed: &Receiver<Vec<FeedItem>>) {
        let mut trades = Vec::new();
        while let Ok(batch) = feed.try_recv() {
            for item in batch {
                if let FeedItem::Trade { seq, index, trade } = item {
                    if let Some(t) = self.trade(seq, index, &trade) {
                        trades.push(t);
                    }
                }
            }
        }
        self.record(&trades);
    }
}

/// Submits an operator command from a plain thread and waits for it, retrying while the
/// engine's queue is full.
fn submit_and_wait(core: &Core, body: CommandBody) -> Result<(), CoreError> {
    for _ in 0..1000 {
        match core.submit(ParticipantId(0), Intent::Operator(body)) {
            Ok(rx) => {
                return rx
                    .blocking_recv()
                    .unwrap_or_else(|_| Err(CoreError::Stopped("the engine thread has ended".into())))
                    .map(|_| ())
            }
            Err(CoreError::Busy) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e),
        }
    }
    Err(CoreError::Busy)
}
