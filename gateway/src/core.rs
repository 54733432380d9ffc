//! The engine thread: sequences requests, journals them, applies them, publishes what happened.
//!
//! Every request from REST, FIX, the scheduler or an operator goes into one bounded queue
//! (crossbeam's array channel: lock-free on the fast path). The engine thread takes them in
//! batches, turns each into a [`Command`] (assigning order ids and stamping the time: the
//! only clock read, outside the engine), appends it to the journal, applies it, updates the
//! [`OrderStore`] and publishes a [`Published`] record on a broadcast channel for the WebSocket
//! subscribers and, in batches, on bounded record taps ([`Core::tap`]) for the FIX router. Each caller's answer is sent once the journal holds the
//! command at the configured durability (one group commit per batch under `batch`).
//!
//! Settlement gets its own feed ([`FeedItem`], [`CoreConfig::settlement_feed`]): the trades
//! and bid-window closes of each command, sent on an unbounded channel once the journal holds
//! the command (never lossy like the broadcast, never blocking the engine thread), and at start
//! every trade the journal's replay produced, so that a trade journaled before a crash is
//! settled after the restart (settlement is idempotent by trade id).
//!
//! A full queue refuses the request at once ([`CoreError::Busy`]) instead of blocking a caller;
//! a journal that cannot be written stops the engine (nothing is applied that is not journaled)
//! and every later request is refused ([`CoreError::Stopped`]).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cccx_engine::auction::CurvePoint;
use cccx_engine::journal::{Durability, JournalWriter, SEGMENT_BYTES_DEFAULT};
use cccx_engine::recovery::{self, EngineConfig};
use cccx_engine::risk::Account;
use cccx_engine::{
    Book, Command, CommandBody, Engine, Event, InstrumentId, InstrumentSpec, MassCancelScope, NewOrder,
    OrderId, OrderType, ParticipantId, Phase, Price, Qty, Side, TimeInForce, Trade, TradeTotals,
};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};

use crate::metrics::Metrics;
use crate::orders::{OrderStore, OrderUpdate, OrderView, Published};

/// Name of the journal directory inside the data directory.
pub const JOURNAL_DIR: &str = "journal";
/// Name of the client order id side log inside the data directory.
pub const CLIENT_IDS_FILE: &str = "client-ids.jsonl";
/// Largest number of requests applied before the journal is synced and answers go out.
pub const BATCH_MAX: usize = 512;
/// Published records a slow subscriber may lag behind before it is cut off.
pub const PUBLISH_CAPACITY: usize = 65_536;
/// Record taps (direct feeds for threads outside tokio) the engine thread serves at most.
pub const TAPS_MAX: usize = 8;

/// What a participant (or operator) asks for.
#[derive(Clone, Debug)]
pub enum Intent {
    /// A new order; the engine thread assigns the order id.
    New {
        /// The book.
        instrument: InstrumentId,
        /// Buy or sell.
        side: Side,
        /// Limit or market.
        order_type: OrderType,
        /// Time in force.
        tif: TimeInForce,
        /// Limit price (ignored for market orders).
        price: Price,
        /// Quantity.
        qty: Qty,
        /// Post-only.
        post_only: bool,
        /// The client's id for it (FIX ClOrdID); empty: the order id.
        client_order_id: String,
    },
    /// Cancel one of the participant's orders.
    Cancel {
        /// The order.
        order_id: u64,
    },
    /// Amend one of the participant's orders.
    Amend {
        /// The order.
        order_id: u64,
        /// New limit price.
        price: Price,
        /// New open quantity.
        qty: Qty,
        /// A new client id for the order (FIX ClOrdID of a replace), if any.
        client_order_id: Option<String>,
    },
    /// Cancel all the participant's orders, in one instrument or all.
    MassCancel {
        /// The instrument, or every one.
        instrument: Option<InstrumentId>,
    },
    /// An operator's or the scheduler's command, as is.
    Operator(CommandBody),
}

/// A read of the engine's state, answered on the engine thread between commands.
#[derive(Clone, Debug)]
pub enum Query {
    /// Instruments with phase and totals.
    Instruments,
    /// Depth of a book.
    Book {
        /// The instrument.
        instrument: InstrumentId,
        /// Levels per side.
        depth: usize,
    },
    /// Recent public trades.
    Trades {
        /// The instrument.
        instrument: InstrumentId,
        /// How many.
        limit: usize,
    },
    /// One order of a participant (by exchange id).
    Order {
        /// The owner asking.
        participant: ParticipantId,
        /// The order.
        order_id: u64,
    },
    /// One order of a participant by client order id.
    OrderByClientId {
        /// The owner asking.
        participant: ParticipantId,
        /// Its client id.
        client_order_id: String,
    },
    /// A participant's orders.
    Orders {
        /// The owner.
        participant: ParticipantId,
        /// Open orders only.
        open_only: bool,
        /// At most this many, newest first.
        limit: usize,
    },
    /// Accounts: one participant's, or everyone's.
    Accounts {
        /// One participant, or all.
        participant: Option<ParticipantId>,
    },
    /// The last uncross and the curves as they stand.
    Auction {
        /// The instrument.
        instrument: InstrumentId,
    },
    /// Each seller's total offered quantity (the holdings-check export).
    SellTotals {
        /// The instrument.
        instrument: InstrumentId,
    },
    /// Journal position.
    Status,
}

/// One instrument as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct InstrumentInfo {
    /// Its id.
    pub id: u32,
    /// The engine's specification.
    pub spec: InstrumentSpec,
    /// Its phase.
    pub phase: &'static str,
    /// Trading totals.
    pub totals: TradeTotals,
}

/// The answer to a [`Query`].
#[derive(Clone, Debug)]
pub enum QueryResult {
    /// Instruments.
    Instruments(Vec<InstrumentInfo>),
    /// Bids and asks, best first.
    Book(Vec<(Price, Qty)>, Vec<(Price, Qty)>),
    /// Trades, newest first.
    Trades(Vec<crate::orders::PublicTrade>),
    /// Orders.
    Orders(Vec<OrderView>),
    /// Accounts by participant.
    Accounts(Vec<(u32, Account)>),
    /// Last uncross (if any) and the current curves.
    Auction(Option<crate::orders::MarketEvent>, Vec<CurvePoint>),
    /// Sell totals by participant.
    SellTotals(Vec<(u32, Qty)>),
    /// Last journal sequence and how far it is durable.
    Status {
        /// Last sequence.
        last_seq: u64,
        /// Durable sequence.
        durable_seq: u64,
    },
}

/// What a submitted intent did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The command's journal sequence.
    pub seq: u64,
    /// The engine's events.
    pub events: Vec<Event>,
    /// The reports to order owners.
    pub updates: Vec<OrderUpdate>,
}

/// Why a request was not carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// The order does not exist or belongs to someone else (the two look the same).
    #[error("no such order")]
    UnknownOrder,
    /// The input queue is full: try again later.
    #[error("the exchange is busy: its input queue is full")]
    Busy,
    /// The client order id already names one of the participant's open orders.
    #[error("the client order id is in use by an open order")]
    DuplicateClientOrderId,
    /// The engine has stopped (shut down, or its journal failed).
    #[error("the exchange is not accepting requests: {0}")]
    Stopped(String),
}

/// Where an outcome goes.
type Reply = oneshot::Sender<Result<Outcome, CoreError>>;

enum Request {
    Submit {
        participant: ParticipantId,
        intent: Intent,
        reply: Option<oneshot::Sender<Result<Outcome, CoreError>>>,
    },
    Query {
        query: Query,
        reply: oneshot::Sender<QueryResult>,
    },
    Shutdown {
        reply: oneshot::Sender<Result<(), String>>,
    },
    Tap(RecordTap),
}

/// What a record tap delivers: the published records one release step made durable, in
/// sequence order, or how many records the tap lost because its reader fell behind.
#[derive(Debug)]
pub enum Tapped {
    /// Records, in sequence order.
    Records(Vec<Arc<Published>>),
    /// Records lost since the last delivery (the reader was too far behind).
    Lagged(u64),
}

/// The engine thread's side of a record tap: bounded in records, never blocking. A batch
/// that does not fit is dropped and counted, and the reader is told before the next batch.
struct RecordTap {
    tx: Sender<Tapped>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    capacity: usize,
    lost: u64,
}

impl RecordTap {
    /// Offers a batch; `false` once the reader has gone.
    fn offer(&mut self, batch: &[Arc<Published>]) -> bool {
        let room = |queued: usize, n: usize| queued.saturating_add(n) <= self.capacity;
        let queued = self.queued.load(Ordering::Acquire);
        if self.lost > 0 {
            if !room(queued, batch.len()) {
                self.lost += batch.len() as u64;
                return true;
            }
            match self.tx.try_send(Tapped::Lagged(self.lost)) {
                Ok(()) => self.lost = 0,
                Err(TrySendError::Full(_)) => {
                    self.lost += batch.len() as u64;
                    return true;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        if !room(queued, batch.len()) {
            self.lost += batch.len() as u64;
            return true;
        }
        self.queued.fetch_add(batch.len(), Ordering::AcqRel);
        match self.tx.try_send(Tapped::Records(batch.to_vec())) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.queued.fetch_sub(batch.len(), Ordering::AcqRel);
                self.lost += batch.len() as u64;
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// The reading side of a record tap ([`Core::tap`]).
pub struct TapReceiver {
    rx: Receiver<Tapped>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl TapReceiver {
    /// The channel, to wait on (with `crossbeam_channel::select!`) or to drain.
    pub fn channel(&self) -> &Receiver<Tapped> {
        &self.rx
    }

    /// Says that a [`Tapped::Records`] batch of `n` records was taken off the channel, which
    /// makes room for more.
    pub fn taken(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }
}

/// What the engine thread hands settlement, in journal order, once the journal holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedItem {
    /// A trade: the command's journal sequence and the event's index among the command's
    /// events (together stable across restarts: the public trade id is `<seq>-<index>`).
    Trade {
        /// The command's sequence.
        seq: u64,
        /// The event's index among its events.
        index: usize,
        /// The trade.
        trade: Trade,
    },
    /// An instrument's bid window closed (live only, never from a replay), with each seller's
    /// total offered quantity: the registry's holdings check is due.
    WindowClosed {
        /// The `SetPhase` command's sequence.
        seq: u64,
        /// The instrument.
        instrument: InstrumentId,
        /// Sellers and their totals, in participant order.
        sells: Vec<(ParticipantId, Qty)>,
    },
}

/// The settlement feed's sending side: batches of [`FeedItem`]s.
pub type FeedSender = crossbeam_channel::Sender<Vec<FeedItem>>;

/// The feed items of one command's events.
fn feed_items(seq: u64, events: &[Event], live: bool, out: &mut Vec<FeedItem>) {
    for (index, event) in events.iter().enumerate() {
        match event {
            Event::Trade(trade) => out.push(FeedItem::Trade { seq, index, trade: *trade }),
            Event::PhaseChanged { instrument, phase: Phase::CallClosed } if live => {
                out.push(FeedItem::WindowClosed { seq, instrument: *instrument, sells: Vec::new() });
            }
            Event::SellTotal { instrument, participant, qty } if live => {
                if let Some(FeedItem::WindowClosed { instrument: i, sells, .. }) = out.last_mut() {
                    if i == instrument {
                        sells.push((*participant, *qty));
                    }
                }
            }
            _ => {}
        }
    }
}

/// How to start the engine thread.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// The data directory (journal and side log inside it).
    pub data_dir: PathBuf,
    /// The engine configuration for a new journal (an existing one keeps its own).
    pub engine: EngineConfig,
    /// Journal durability.
    pub durability: Durability,
    /// Input queue capacity.
    pub queue_capacity: usize,
    /// Commands applied once, when the journal is created (initial deposits and holdings).
    pub genesis: Vec<CommandBody>,
    /// Where settlement's feed goes (none: no settlement).
    pub settlement_feed: Option<FeedSender>,
}

/// A handle to the engine thread: cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Core {
    tx: Sender<Request>,
    published: broadcast::Sender<Arc<Published>>,
    metrics: Arc<Metrics>,
    stopped: Arc<AtomicBool>,
    instruments: Arc<Vec<InstrumentSpec>>,
}

/// The engine thread's join handle.
pub struct CoreThread(JoinHandle<()>);

impl CoreThread {
    /// Waits for the engine thread to end.
    pub fn join(self) {
        let _ = self.0.join();
    }
}

/// What the engine thread recovered at start.
#[derive(Clone, Debug)]
pub struct Started {
    /// Commands replayed from the journal.
    pub replayed: u64,
    /// The last journal sequence.
    pub last_seq: u64,
    /// Whether the journal was created now.
    pub created: bool,
}

impl Core {
    /// Recovers the journal in `config.data_dir` (replaying it in full) and starts the engine
    /// thread.
    pub fn start(config: CoreConfig, metrics: Arc<Metrics>) -> Result<(Core, CoreThread, Started), String> {
        let journal_dir = config.data_dir.join(JOURNAL_DIR);
        let created = !journal_dir.join(recovery::INSTRUMENTS_FILE).exists();
        let client_ids = read_client_ids(&config.data_dir.join(CLIENT_IDS_FILE))?;
        let mut store = None::<OrderStore>;
        let mut last_ts = 0;
        let mut replayed_feed = Vec::new();
        let feeding = config.settlement_feed.is_some();
        let mut on_replay = |seq: u64, cmd: &Command, events: &[Event], engine: &Engine<Book>| {
            if feeding {
                feed_items(seq, events, false, &mut replayed_feed);
            }
            let s = store.get_or_insert_with(|| {
                OrderStore::new(&engine.instruments().iter().map(|s| s.symbol.clone()).collect::<Vec<_>>())
            });
            let cid = client_id_of(cmd, &client_ids);
            s.apply(seq, cmd, events, cid);
            last_ts = cmd.ts_ns;
        };
        let (engine, writer, rec) = recovery::open_replaying::<Book>(
            &journal_dir,
            &config.engine,
            SEGMENT_BYTES_DEFAULT,
            config.durability,
            &mut on_replay,
        )
        .map_err(|e| format!("recovering {}: {e}", journal_dir.display()))?;
        let mut store = store.unwrap_or_else(|| {
            OrderStore::new(&engine.instruments().iter().map(|s| s.symbol.clone()).collect::<Vec<_>>())
        });
        // Replaces that renamed orders, in the order they happened (each logged after its
        // command took effect).
        for r in &client_ids.renames {
            if store.get(r.order_id).is_some_and(|o| o.participant == r.participant) {
                store.name(r.order_id, r.participant, &r.client_order_id);
            }
        }
        if engine.instruments() != config.engine.instruments.as_slice() {
            return Err(format!(
                "{} was created for other instruments ({}); move it away or configure those instruments",
                journal_dir.display(),
                engine.instruments().iter().map(|s| s.symbol.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        if engine.risk().config() != config.engine.risk {
            let on = |c: bool| if c { "on" } else { "off" };
            return Err(format!(
                "{} was created with risk checks {}; the configuration asks for them {}",
                journal_dir.display(),
                on(engine.risk().config().checks),
                on(config.engine.risk.checks)
            ));
        }
        let side_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.data_dir.join(CLIENT_IDS_FILE))
            .map_err(|e| format!("{}: {e}", config.data_dir.join(CLIENT_IDS_FILE).display()))?;
        let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity);
        let (published, _) = broadcast::channel(PUBLISH_CAPACITY);
        let stopped = Arc::new(AtomicBool::new(false));
        let started = Started { replayed: rec.replayed, last_seq: writer.last_seq(), created };
        let core = Core {
            tx,
            published: published.clone(),
            metrics: metrics.clone(),
            stopped: stopped.clone(),
            instruments: Arc::new(engine.instruments().to_vec()),
        };
        let next_order_id = store.max_order_id() + 1;
        if let Some(feed) = &config.settlement_feed {
            // Replayed commands are durable: settlement may have them at once.
            if !replayed_feed.is_empty() {
                let _ = feed.send(replayed_feed);
            }
        }
        let mut thread = EngineThread {
            engine,
            writer: Some(writer),
            store,
            side_syncer: FileSyncer::start(side_log.try_clone().map_err(|e| format!("client id log: {e}"))?)?,
            side_bytes: 0,
            side_log: BufWriter::new(side_log),
            next_order_id,
            last_ts,
            published,
            taps: Vec::new(),
            unpublished: Vec::new(),
            feed: config.settlement_feed,
            unfed: Vec::new(),
            metrics,
            stopped,
            pending: Vec::new(),
            events: Vec::with_capacity(1024),
            durability: config.durability,
        };
        if created {
            for body in config.genesis {
                thread.submit(ParticipantId(0), Intent::Operator(body), None);
            }
            thread.flush();
        }
        let handle = std::thread::Builder::new()
            .name("cccx-engine".into())
            .spawn(move || thread.run(rx))
            .map_err(|e| format!("cannot start the engine thread: {e}"))?;
        Ok((core, CoreThread(handle), started))
    }

    /// The instruments, in id order.
    pub fn instruments(&self) -> &[InstrumentSpec] {
        &self.instruments
    }

    /// The id of a symbol.
    pub fn instrument_id(&self, symbol: &str) -> Option<InstrumentId> {
        self.instruments.iter().position(|s| s.symbol == symbol).map(|i| InstrumentId(i as u32))
    }

    /// A direct feed of the published records for a thread outside tokio (the FIX router):
    /// from the next release step on, every batch of records the engine thread releases is
    /// offered to it, at most `capacity` records waiting. The engine thread never waits for
    /// it: when the reader falls behind, batches are dropped and it gets [`Tapped::Lagged`]
    /// (it must then resynchronise from queries).
    pub fn tap(&self, capacity: usize) -> Result<TapReceiver, CoreError> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tap = RecordTap { tx, queued: queued.clone(), capacity, lost: 0 };
        // Must get through even when the queue is full (it happens once, at start).
        self.tx
            .send(Request::Tap(tap))
            .map_err(|_| CoreError::Stopped("the engine thread has ended".into()))?;
        Ok(TapReceiver { rx, queued })
    }

    /// Subscribes to everything the engine publishes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.published.subscribe()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Queue depth now.
    pub fn queue_depth(&self) -> usize {
        self.tx.len()
    }

    fn enqueue(&self, request: Request) -> Result<(), CoreError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(CoreError::Stopped("stopped".into()));
        }
        self.tx.try_send(request).map_err(|e| match e {
            TrySendError::Full(_) => {
                self.metrics.busy.inc();
                CoreError::Busy
            }
            TrySendError::Disconnected(_) => CoreError::Stopped("the engine thread has ended".into()),
        })
    }

    /// Submits an intent; the receiver gets the outcome once it is durable.
    pub fn submit(
        &self,
        participant: ParticipantId,
        intent: Intent,
    ) -> Result<oneshot::Receiver<Result<Outcome, CoreError>>, CoreError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(Request::Submit { participant, intent, reply: Some(reply) })?;
        Ok(rx)
    }

    /// Submits an intent without waiting for an answer (the FIX path: reports come through
    /// the published stream).
    pub fn submit_nowait(&self, participant: ParticipantId, intent: Intent) -> Result<(), CoreError> {
        self.enqueue(Request::Submit { participant, intent, reply: None })
    }

    /// Submits and waits (async).
    pub async fn call(&self, participant: ParticipantId, intent: Intent) -> Result<Outcome, CoreError> {
        let rx = self.submit(participant, intent)?;
        rx.await.unwrap_or_else(|_| Err(CoreError::Stopped("the engine thread has ended".into())))
    }

    /// Asks a query (async).
    pub async fn query(&self, query: Query) -> Result<QueryResult, CoreError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(Request::Query { query, reply })?;
        rx.await.map_err(|_| CoreError::Stopped("the engine thread has ended".into()))
    }

    /// Asks a query from a thread outside the async runtime.
    pub fn query_blocking(&self, query: Query) -> Result<QueryResult, CoreError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(Request::Query { query, reply })?;
        rx.blocking_recv().map_err(|_| CoreError::Stopped("the engine thread has ended".into()))
    }

    /// Stops the engine after the requests already queued: seals and syncs the journal.
    pub fn shutdown_blocking(&self) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        // Shutdown must get through even when the queue is full.
        self.tx.send(Request::Shutdown { reply }).map_err(|_| "the engine thread has ended".to_string())?;
        rx.blocking_recv().unwrap_or_else(|_| Err("the engine thread has ended".into()))
    }
}

/// A thread that fsyncs a file on request, so that the engine thread never waits for it.
struct FileSyncer {
    tx: crossbeam_channel::Sender<u64>,
    synced: Arc<std::sync::atomic::AtomicU64>,
    error: Arc<std::sync::Mutex<Option<String>>>,
    requested: u64,
}

impl FileSyncer {
    fn start(file: File) -> Result<FileSyncer, String> {
        let (tx, rx) = crossbeam_channel::unbounded::<u64>();
        let synced = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let error = Arc::new(std::sync::Mutex::new(None));
        let (s, e) = (synced.clone(), error.clone());
        std::thread::Builder::new()
            .name("cccx-side-sync".into())
            .spawn(move || {
                while let Ok(mut upto) = rx.recv() {
                    // Coalesce: one fsync covers every request made meanwhile.
                    while let Ok(more) = rx.try_recv() {
                        upto = upto.max(more);
                    }
                    match file.sync_data() {
                        Ok(()) => s.store(upto, Ordering::Release),
                        Err(err) => {
                            if let Ok(mut slot) = e.lock() {
                                *slot = Some(err.to_string());
                            }
                            return;
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the client id log's sync thread: {e}"))?;
        Ok(FileSyncer { tx, synced, error, requested: 0 })
    }

    /// Asks for the first `bytes` bytes (already written to the file) to be made durable.
    fn request(&mut self, bytes: u64) {
        if bytes > self.requested {
            self.requested = bytes;
            let _ = self.tx.send(bytes);
        }
    }

    /// Bytes known durable.
    fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }
}

/// One line of the client id side log.
#[derive(Serialize, Deserialize)]
struct ClientIdRecord {
    order_id: u64,
    participant: u32,
    client_order_id: String,
    /// A replace renamed the order (logged after it took effect); otherwise the name of a NEW
    /// (logged before its journal append).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    rename: bool,
}

#[derive(Default)]
struct ClientIds {
    /// By order id: the last NEW record. A record whose command never reached the journal (a
    /// crash or failure between the two writes) is later overwritten by the record of the NEW
    /// that reuses its order id, or never matched by a journaled NEW.
    new: std::collections::HashMap<u64, (u32, String)>,
    /// Renames by replaces, in log order.
    renames: Vec<ClientIdRecord>,
}

/// Reads the side log; a torn last line (a crash while writing it) is cut off the file, so
/// that the next record starts on a line of its own.
fn read_client_ids(path: &Path) -> Result<ClientIds, String> {
    let mut ids = ClientIds::default();
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(io(e)),
    };
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if complete < bytes.len() {
        tracing::warn!("{}: torn last record cut off", path.display());
        let file = std::fs::OpenOptions::new().write(true).open(path).map_err(io)?;
        file.set_len(complete as u64).and_then(|()| file.sync_all()).map_err(io)?;
    }
    for (n, line) in bytes[..complete].split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(r) = serde_json::from_slice::<ClientIdRecord>(line) else {
            tracing::warn!("{}:{}: unreadable client id record ignored", path.display(), n + 1);
            continue;
        };
        if r.rename {
            ids.renames.push(r);
        } else {
            ids.new.insert(r.order_id, (r.participant, r.client_order_id));
        }
    }
    Ok(ids)
}

/// The client id a journaled NEW carried, if the side log has it for the same participant.
fn client_id_of<'a>(cmd: &Command, ids: &'a ClientIds) -> Option<&'a str> {
    match &cmd.body {
        CommandBody::New(o) => ids
            .new
            .get(&o.order_id.0)
            .filter(|(participant, _)| *participant == o.participant.0)
            .map(|(_, cid)| cid.as_str()),
        _ => None,
    }
}

struct EngineThread {
    engine: Engine<Book>,
    writer: Option<JournalWriter>,
    store: OrderStore,
    side_log: BufWriter<File>,
    /// Bytes written to the side log so far, and the thread that fsyncs it.
    side_bytes: u64,
    side_syncer: FileSyncer,
    next_order_id: u64,
    last_ts: u64,
    published: broadcast::Sender<Arc<Published>>,
    /// Direct feeds of the published records (the FIX router).
    taps: Vec<RecordTap>,
    metrics: Arc<Metrics>,
    stopped: Arc<AtomicBool>,
    /// Answers waiting for the journal (to the sequence) and the side log (to the byte) to
    /// become durable.
    pending: Vec<(u64, u64, Reply, Outcome)>,
    /// What was applied but is not durable yet: published (to the feed and FIX) only once the
    /// journal and the side log hold it, in sequence order.
    unpublished: Vec<(u64, Arc<Published>)>,
    /// Settlement's feed, and what is applied but not durable yet (released like
    /// `unpublished`, by journal sequence).
    feed: Option<FeedSender>,
    unfed: Vec<FeedItem>,
    events: Vec<Event>,
    durability: Durability,
}

impl EngineThread {
    fn run(mut self, rx: Receiver<Request>) {
        loop {
            let first = if self.pending.is_empty() && self.unpublished.is_empty() {
                match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            } else {
                match rx.recv_timeout(Duration::from_micros(200)) {
                    Ok(r) => r,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        self.flush();
                        continue;
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                }
            };
            let mut next = Some(first);
            let mut n = 0;
            while let Some(request) = next.take() {
                if let Request::Shutdown { reply } = request {
                    let result = self.close();
                    self.stopped.store(true, Ordering::Release);
                    let _ = reply.send(result);
                    // Whatever is still queued is refused.
                    while let Ok(r) = rx.try_recv() {
                        self.refuse(r, "shutting down");
                    }
                    return;
                }
                self.handle(request);
                n += 1;
                if n < BATCH_MAX {
                    next = rx.try_recv().ok();
                }
            }
            self.flush();
            self.metrics.queue_depth.set(rx.len() as u64);
        }
        let _ = self.close();
    }

    fn refuse(&mut self, request: Request, why: &str) {
        match request {
            Request::Submit { reply: Some(reply), .. } => {
                let _ = reply.send(Err(CoreError::Stopped(why.into())));
            }
            Request::Shutdown { reply } => {
                let _ = reply.send(Ok(()));
            }
            _ => {}
        }
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Submit { participant, intent, reply } => self.submit(participant, intent, reply),
            Request::Query { query, reply } => {
                let _ = reply.send(self.query(query));
            }
            Request::Shutdown { .. } => {}
            Request::Tap(tap) => {
                if self.taps.len() < TAPS_MAX {
                    self.taps.push(tap);
                } else {
                    tracing::error!("more than {TAPS_MAX} record taps: refused");
                }
            }
        }
    }

    /// Publishes released records: to the broadcast (WebSocket), then to each tap in one
    /// batch.
    fn release(&mut self, batch: Vec<Arc<Published>>) {
        if batch.is_empty() {
            return;
        }
        if self.published.receiver_count() > 0 {
            for p in &batch {
                let _ = self.published.send(p.clone());
            }
        }
        self.taps.retain_mut(|t| t.offer(&batch));
    }

    fn now(&mut self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        self.last_ts = self.last_ts.max(now);
        self.last_ts
    }

    /// Turns an intent into a command; `Err` for what needs no command (an unknown order).
    fn command(
        &mut self,
        participant: ParticipantId,
        intent: &Intent,
    ) -> Result<(CommandBody, Option<String>), CoreError> {
        let own = |store: &OrderStore, order_id: u64| {
            store
                .get(order_id)
                .filter(|o| o.participant == participant.0)
                .map(|o| o.instrument())
                .ok_or(CoreError::UnknownOrder)
        };
        Ok(match intent {
            Intent::New { instrument, side, order_type, tif, price, qty, post_only, client_order_id } => {
                self.check_client_id(participant, client_order_id)?;
                let order_id = OrderId(self.next_order_id);
                self.next_order_id += 1;
                let cid =
                    if client_order_id.is_empty() { order_id.0.to_string() } else { client_order_id.clone() };
                let order = NewOrder {
                    order_id,
                    participant,
                    instrument: *instrument,
                    side: *side,
                    order_type: *order_type,
                    tif: *tif,
                    price: if *order_type == OrderType::Market { 0 } else { *price },
                    qty: *qty,
                    post_only: *post_only,
                };
                (CommandBody::New(order), Some(cid))
            }
            Intent::Cancel { order_id } => {
                let instrument = own(&self.store, *order_id)?;
                (CommandBody::Cancel { instrument, order_id: OrderId(*order_id), participant }, None)
            }
            Intent::Amend { order_id, price, qty, client_order_id } => {
                let instrument = own(&self.store, *order_id)?;
                if let Some(cid) = client_order_id {
                    self.check_client_id(participant, cid)?;
                }
                let body = CommandBody::Amend {
                    instrument,
                    order_id: OrderId(*order_id),
                    participant,
                    price: *price,
                    qty: *qty,
                };
                (body, client_order_id.clone())
            }
            Intent::MassCancel { instrument } => {
                let scope = match instrument {
                    Some(i) => MassCancelScope::ParticipantInInstrument(participant, *i),
                    None => MassCancelScope::Participant(participant),
                };
                (CommandBody::MassCancel(scope), None)
            }
            Intent::Operator(body) => (*body, None),
        })
    }

    fn submit(
        &mut self,
        participant: ParticipantId,
        intent: Intent,
        reply: Option<oneshot::Sender<Result<Outcome, CoreError>>>,
    ) {
        let answer = |reply: Option<oneshot::Sender<_>>, r| {
            if let Some(reply) = reply {
                let _ = reply.send(r);
            }
        };
        if self.writer.is_none() {
            answer(reply, Err(CoreError::Stopped("the journal failed".into())));
            return;
        }
        let (body, client_id) = match self.command(participant, &intent) {
            Ok(x) => x,
            Err(e) => {
                if reply.is_none() {
                    // A caller that does not wait (FIX) learns of it from the reports, in order.
                    let seq = self.writer.as_ref().map_or(0, |w| w.last_seq());
                    let ts = self.now();
                    if let Some(p) = self.store.refusal(seq, ts, participant, &intent, &e.to_string()) {
                        self.unpublished.push((self.side_bytes, Arc::new(p)));
                    }
                }
                return answer(reply, Err(e));
            }
        };
        let cmd = Command { ts_ns: self.now(), body };
        // The side log first: a client id must never be missing for a journaled order.
        if let (CommandBody::New(o), Some(cid)) = (&cmd.body, &client_id) {
            if let Err(e) = self.log_client_id(o.order_id.0, participant, cid, false) {
                self.fail(format!("client id log: {e}"));
                return answer(reply, Err(CoreError::Stopped("the client id log failed".into())));
            }
        }
        let writer = self.writer.as_mut().expect("checked above");
        let seq = match writer.append(&cmd) {
            Ok(seq) => seq,
            Err(e) => {
                self.fail(format!("journal: {e}"));
                return answer(reply, Err(CoreError::Stopped("the journal failed".into())));
            }
        };
        self.events.clear();
        let started = Instant::now();
        self.engine.apply(&cmd, &mut self.events);
        self.metrics.engine_ns.record(started.elapsed());
        self.metrics.commands.inc();
        let published = self.store.apply(seq, &cmd, &self.events, client_id.as_deref());
        // A replace that took effect renames the order (logged after the fact: a crash in
        // between only loses the new name).
        if let (CommandBody::Amend { order_id, .. }, Some(cid)) = (&cmd.body, &client_id) {
            if self.events.iter().any(|e| matches!(e, Event::Amended { .. })) {
                self.store.name(order_id.0, participant.0, cid);
                if let Err(e) = self.log_client_id(order_id.0, participant, cid, true) {
                    tracing::warn!("client id log: {e}");
                }
            }
        }
        if self.events.iter().any(|e| matches!(e, Event::Rejected { .. })) {
            self.metrics.rejects.inc();
        }
        if self.feed.is_some() {
            feed_items(seq, &self.events, true, &mut self.unfed);
        }
        let outcome = Outcome { seq, events: self.events.clone(), updates: published.updates.clone() };
        self.unpublished.push((self.side_bytes, Arc::new(published)));
        if let Some(reply) = reply {
            self.pending.push((seq, self.side_bytes, reply, outcome));
        }
    }

    /// Refuses a client order id that names one of the participant's open orders.
    fn check_client_id(&self, participant: ParticipantId, cid: &str) -> Result<(), CoreError> {
        match self.store.by_client_id(participant.0, cid) {
            Some(o) if !cid.is_empty() && o.status.is_open() => Err(CoreError::DuplicateClientOrderId),
            _ => Ok(()),
        }
    }

    fn log_client_id(
        &mut self,
        order_id: u64,
        participant: ParticipantId,
        cid: &str,
        rename: bool,
    ) -> std::io::Result<()> {
        let record =
            ClientIdRecord { order_id, participant: participant.0, client_order_id: cid.to_string(), rename };
        let line = serde_json::to_string(&record).map_err(std::io::Error::other)?;
        writeln!(self.side_log, "{line}")?;
        self.side_bytes += line.len() as u64 + 1;
        Ok(())
    }

    /// Makes what was applied durable (per the policy) and sends the answers it covers.
    fn flush(&mut self) {
        if self.pending.is_empty() && self.unpublished.is_empty() {
            if let Some(w) = self.writer.as_mut() {
                let _ = w.sync_if_due();
            }
            return;
        }
        if let Err(e) = self.side_log.flush() {
            self.fail(format!("client id log: {e}"));
        }
        if let Some(e) = self.side_syncer.error() {
            self.fail(format!("client id log: {e}"));
        }
        // Group commit without stalling: the journal's sync thread and the side log's fsync
        // thread work while this thread goes on applying; what they cover is released here
        // (the run loop comes back every 200 us while anything waits).
        let (durable, side_durable) = match self.writer.as_mut() {
            None => (0, 0),
            Some(w) => match self.durability {
                Durability::None => (w.last_seq(), u64::MAX),
                _ => match w.sync_soon() {
                    Ok(()) => {
                        self.side_syncer.request(self.side_bytes);
                        (w.durable_seq(), self.side_syncer.synced())
                    }
                    Err(e) => {
                        self.fail(format!("sync: {e}"));
                        (0, 0)
                    }
                },
            },
        };
        let covered = |seq: u64, bytes: u64| seq <= durable && bytes <= side_durable;
        let ready = self.unpublished.iter().take_while(|(bytes, p)| covered(p.seq, *bytes)).count();
        let batch: Vec<Arc<Published>> = self.unpublished.drain(..ready).map(|(_, p)| p).collect();
        self.release(batch);
        self.release_feed(durable);
        if self.writer.is_none() {
            // Never published: whether they survive is known after a restart.
            self.unpublished.clear();
            self.unfed.clear();
        }
        let mut kept = Vec::new();
        for (seq, bytes, reply, outcome) in self.pending.drain(..) {
            if self.writer.is_some() && covered(seq, bytes) {
                let _ = reply.send(Ok(outcome));
            } else if self.writer.is_none() {
                let why = "the journal failed before this became durable: whether it took effect is known after a restart";
                let _ = reply.send(Err(CoreError::Stopped(why.into())));
            } else {
                kept.push((seq, bytes, reply, outcome));
            }
        }
        self.pending = kept;
    }

    /// Sends settlement the feed items of the commands the journal holds up to `durable`.
    fn release_feed(&mut self, durable: u64) {
        let ready = self
            .unfed
            .iter()
            .take_while(|item| match item {
                FeedItem::Trade { seq, .. } | FeedItem::WindowClosed { seq, .. } => *seq <= durable,
            })
            .count();
        if ready == 0 {
            return;
        }
        let batch: Vec<FeedItem> = self.unfed.drain(..ready).collect();
        if let Some(feed) = &self.feed {
            let _ = feed.send(batch);
        }
    }

    fn fail(&mut self, why: String) {
        tracing::error!("engine stopped: {why}");
        self.writer = None;
        self.stopped.store(true, Ordering::Release);
    }

    /// Syncs and closes the side log and the journal, then answers and publishes everything
    /// still waiting (it is durable now), or fails it when the close failed.
    fn close(&mut self) -> Result<(), String> {
        let side = self
            .side_log
            .flush()
            .and_then(|()| self.side_log.get_ref().sync_data())
            .map_err(|e| format!("client id log: {e}"));
        let journal = match self.writer.take() {
            Some(w) => w.close().map_err(|e| e.to_string()),
            None => Err("the journal had failed".into()),
        };
        if journal.is_ok() {
            // Settlement needs only the journal: everything in it is durable now.
            self.release_feed(u64::MAX);
        }
        self.unfed.clear();
        let result = side.and(journal);
        let batch: Vec<Arc<Published>> = self.unpublished.drain(..).map(|(_, p)| p).collect();
        if result.is_ok() {
            self.release(batch);
        }
        for (_, _, reply, outcome) in self.pending.drain(..) {
            let answer = match &result {
                Ok(()) => Ok(outcome),
                Err(e) => Err(CoreError::Stopped(format!(
                    "closing: {e}; whether it took effect is known after a restart"
                ))),
            };
            let _ = reply.send(answer);
        }
        result
    }

    fn query(&self, query: Query) -> QueryResult {
        let e = &self.engine;
        match query {
            Query::Instruments => QueryResult::Instruments(
                e.instruments()
                    .iter()
                    .enumerate()
                    .map(|(i, spec)| {
                        let id = InstrumentId(i as u32);
                        InstrumentInfo {
                            id: id.0,
                            spec: spec.clone(),
                            phase: crate::orders::phase_name(
                                e.book(id).map_or(Phase::Closed, cccx_engine::OrderBook::phase),
                            ),
                            totals: e.totals(id).copied().unwrap_or_default(),
                        }
                    })
                    .collect(),
            ),
            Query::Book { instrument, depth } => {
                let (bids, asks) = self.store.depth(instrument, depth);
                QueryResult::Book(bids, asks)
            }
            Query::Trades { instrument, limit } => {
                QueryResult::Trades(self.store.recent_trades(instrument, limit))
            }
            Query::Order { participant, order_id } => QueryResult::Orders(
                self.store
                    .get(order_id)
                    .filter(|o| o.participant == participant.0)
                    .cloned()
                    .into_iter()
                    .collect(),
            ),
            Query::OrderByClientId { participant, client_order_id } => QueryResult::Orders(
                self.store.by_client_id(participant.0, &client_order_id).cloned().into_iter().collect(),
            ),
            Query::Orders { participant, open_only, limit } => {
                QueryResult::Orders(self.store.of_participant(participant.0, open_only, limit))
            }
            Query::Accounts { participant } => QueryResult::Accounts(
                e.risk()
                    .accounts()
                    .into_iter()
                    .filter(|(p, _)| participant.is_none_or(|q| q == **p))
                    .map(|(p, a)| (p.0, a.clone()))
                    .collect(),
            ),
            Query::Auction { instrument } => QueryResult::Auction(
                self.store.last_auction(instrument).cloned(),
                e.auction_curves(instrument).unwrap_or_default(),
            ),
            Query::SellTotals { instrument } => QueryResult::SellTotals(
                e.sell_totals(instrument).unwrap_or_default().into_iter().map(|(p, q)| (p.0, q)).collect(),
            ),
            Query::Status => {
                let (last_seq, durable_seq) =
                    self.writer.as_ref().map_or((0, 0), |w| (w.last_seq(), w.durable_seq()));
                QueryResult::Status { last_seq, durable_seq }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cccx_engine::Aggressor;

    #[test]
    fn the_feed_carries_trades_and_live_window_closes_with_their_sellers() {
        let (i, p) = (InstrumentId(0), ParticipantId(3));
        let trade = Trade {
            instrument: i,
            price: 1000,
            qty: 5,
            buy_order_id: OrderId(1),
            sell_order_id: OrderId(2),
            buyer: ParticipantId(1),
            seller: p,
            aggressor: Aggressor::Auction,
            buy_leaves_qty: 0,
            sell_leaves_qty: 0,
            ts_ns: 7,
        };
        let events = [
            Event::PhaseChanged { instrument: i, phase: Phase::CallClosed },
            Event::SellTotal { instrument: i, participant: p, qty: 40 },
            Event::SellTotal { instrument: i, participant: ParticipantId(4), qty: 2 },
            Event::Trade(trade),
        ];
        let mut live = Vec::new();
        feed_items(9, &events, true, &mut live);
        assert_eq!(
            live,
            vec![
                FeedItem::WindowClosed { seq: 9, instrument: i, sells: vec![(p, 40), (ParticipantId(4), 2)] },
                FeedItem::Trade { seq: 9, index: 3, trade },
            ]
        );
        // A replay settles trades; the window it closed long ago is not checked again.
        let mut replayed = Vec::new();
        feed_items(9, &events, false, &mut replayed);
        assert_eq!(replayed, vec![FeedItem::Trade { seq: 9, index: 3, trade }]);
    }
}
