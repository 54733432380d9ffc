//! The reference registry as its own process: the [`SqliteRegistry`] behind a REST/JSON API
//! (axum), with an OpenAPI document at `/openapi.json` generated from the routes.
//!
//! - One ledger thread owns the database; handlers send it jobs over a bounded queue, so
//!   requests are applied one at a time, in arrival order.
//! - Every change carries a client-made request id and is idempotent (the ledger's own rule;
//!   an expiry, which the ledger keeps no id for, is remembered by the service, see
//!   [`wire::ExpireBody`]).
//! - A change may carry its time (`at`); otherwise the ledger thread stamps it with the
//!   service's clock, never earlier than the last time it stamped.
//! - Errors are problem documents (RFC 9457) with a stable `code` ([`wire::status_of`] gives
//!   the status); nothing a caller sends produces a 500.
//! - [`crate::faults`] injects latency, errors, dropped answers and duplicate deliveries into
//!   the `/v1` routes, decided by a seeded generator set at start.

mod handlers;
mod problem;
mod schema;
pub mod wire;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::error::RegistryError;
use crate::faults::{DropMode, FaultPlan, Faults, FaultsError};
use crate::sqlite::SqliteRegistry;
use crate::types::{Timestamp, Transfer};
pub use problem::Problem;

/// The most jobs waiting for the ledger thread; a handler waits for room beyond it.
pub const LEDGER_QUEUE_MAX: usize = 1024;
/// The most expiry answers the service remembers for retries.
pub const EXPIRY_ANSWERS_MAX: usize = 1024;
/// The largest request body, in bytes.
pub const BODY_SIZE_MAX: usize = 1 << 20;

/// Why the service could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// The listening address could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The async runtime or a thread failed.
    #[error("runtime: {0}")]
    Runtime(String),
    /// A fault setting out of range.
    #[error("faults: {0}")]
    Faults(#[from] FaultsError),
    /// The registry database could not be opened.
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
}

/// A remembered expiry: its fields and its answer.
type ExpiryAnswer = ((u64, Timestamp), Vec<Transfer>);

/// What the ledger thread owns.
struct Ledger {
    registry: SqliteRegistry,
    /// The last time the service's clock stamped a request.
    last_stamp: Timestamp,
    expiries: BTreeMap<String, ExpiryAnswer>,
    expiry_order: VecDeque<String>,
}

impl Ledger {
    /// The request's own time, or the service's clock (never before its last stamp).
    fn stamp(&mut self, at: Option<Timestamp>) -> Timestamp {
        if let Some(at) = at {
            return at;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_nanos()).ok())
            .unwrap_or(0);
        self.last_stamp = Timestamp(now.max(self.last_stamp.0));
        self.last_stamp
    }

    fn remember_expiry(&mut self, id: String, answer: ExpiryAnswer) {
        if self.expiry_order.len() >= EXPIRY_ANSWERS_MAX {
            if let Some(oldest) = self.expiry_order.pop_front() {
                self.expiries.remove(&oldest);
            }
        }
        self.expiry_order.push_back(id.clone());
        self.expiries.insert(id, answer);
    }
}

type Job = Box<dyn FnOnce(&mut Ledger) + Send>;

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    ledger: mpsc::Sender<Job>,
    faults: Arc<FaultPlan>,
}

impl AppState {
    /// Runs `job` on the ledger thread and waits for its result.
    async fn on_ledger<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Ledger) -> T + Send + 'static,
    ) -> Result<T, Problem> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |ledger| {
            let _ = tx.send(job(ledger));
        });
        self.ledger.send(job).await.map_err(|_| Problem::unavailable("the ledger has stopped"))?;
        rx.await.map_err(|_| Problem::unavailable("the ledger has stopped"))
    }
}

/// Starts the ledger thread: it applies jobs until every sender is gone.
fn start_ledger(
    registry: SqliteRegistry,
) -> Result<(mpsc::Sender<Job>, JoinHandle<SqliteRegistry>), ServiceError> {
    let (tx, mut rx) = mpsc::channel::<Job>(LEDGER_QUEUE_MAX);
    let mut ledger = Ledger {
        registry,
        last_stamp: Timestamp(0),
        expiries: BTreeMap::new(),
        expiry_order: VecDeque::new(),
    };
    let thread = std::thread::Builder::new()
        .name("registry-ledger".into())
        .spawn(move || {
            while let Some(job) = rx.blocking_recv() {
                job(&mut ledger);
            }
            ledger.registry
        })
        .map_err(|e| ServiceError::Runtime(e.to_string()))?;
    Ok((tx, thread))
}

fn router(state: AppState) -> Router {
    let (routes, api) = handlers::routes().split_for_parts();
    let document = Arc::new(api.to_json().unwrap_or_default());
    routes
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], document.to_string()) }
            }),
        )
        .fallback(|| async { Problem::new(404, "no_route", "no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(405, "method_not_allowed", "this route does not take that method")
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), inject_faults))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_SIZE_MAX))
        .with_state(state)
}

/// Applies the request's fault: latency, a 503 instead of the work, a second delivery, a lost
/// answer. Only the `/v1` routes; `/health` and `/openapi.json` are never faulted.
async fn inject_faults(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/v1/") || !state.faults.faults().any() {
        return next.run(request).await;
    }
    let fault = state.faults.next();
    if fault.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
    }
    if fault.error {
        return Problem::unavailable("injected fault: try again").into_response();
    }
    let response = if fault.duplicate {
        let (parts, body) = request.into_parts();
        let bytes = match axum::body::to_bytes(body, BODY_SIZE_MAX).await {
            Ok(bytes) => bytes,
            Err(_) => return Problem::new(413, "payload_too_large", "the body is too large").into_response(),
        };
        let first = Request::from_parts(parts.clone(), axum::body::Body::from(bytes.clone()));
        let _ = next.clone().run(first).await;
        next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
    } else {
        next.run(request).await
    };
    if !fault.drop {
        return response;
    }
    match state.faults.faults().drop_mode {
        DropMode::Close => problem::cut_off(response),
        DropMode::Delay { delay_ms } => {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            response
        }
    }
}

/// A registry service running on its own thread (tests, benches): stop it with
/// [`RegistryServer::stop`] or by dropping it.
#[derive(Debug)]
pub struct RegistryServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<SqliteRegistry, ServiceError>>>,
}

impl RegistryServer {
    /// Starts serving `registry` on `listen` (port 0: an ephemeral port) with `faults`.
    pub fn start(
        registry: SqliteRegistry,
        listen: SocketAddr,
        faults: Faults,
    ) -> Result<RegistryServer, ServiceError> {
        let plan = Arc::new(FaultPlan::new(faults)?);
        let runtime = runtime()?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(listen))
            .map_err(|source| ServiceError::Bind { addr: listen, source })?;
        let addr = listener.local_addr().map_err(|source| ServiceError::Bind { addr: listen, source })?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("registry-service".into())
            .spawn(move || {
                runtime.block_on(serve(listener, registry, plan, async {
                    let _ = stopped.await;
                }))
            })
            .map_err(|e| ServiceError::Runtime(e.to_string()))?;
        Ok(RegistryServer { addr, shutdown: Some(shutdown), thread: Some(thread) })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, such as `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes the requests in flight, and hands back the registry (tests
    /// check its invariants and compare its holdings).
    pub fn stop(mut self) -> Result<SqliteRegistry, ServiceError> {
        self.stop_now().unwrap_or_else(|| Err(ServiceError::Runtime("already stopped".into())))
    }

    fn stop_now(&mut self) -> Option<Result<SqliteRegistry, ServiceError>> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let thread = self.thread.take()?;
        Some(
            thread
                .join()
                .map_err(|_| ServiceError::Runtime("the service thread panicked".into()))
                .and_then(|r| r),
        )
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        let _ = self.stop_now();
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ServiceError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("registry-http")
        .enable_all()
        .build()
        .map_err(|e| ServiceError::Runtime(e.to_string()))
}

/// Serves until `shutdown` completes, then waits for the requests in flight and for the ledger
/// thread to finish, and returns the registry.
async fn serve(
    listener: tokio::net::TcpListener,
    registry: SqliteRegistry,
    faults: Arc<FaultPlan>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<SqliteRegistry, ServiceError> {
    let (ledger, ledger_thread) = start_ledger(registry)?;
    let app = router(AppState { ledger, faults });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| ServiceError::Runtime(e.to_string()));
    // The router (and with it the last sender) is gone: the ledger thread ends.
    let registry = tokio::task::spawn_blocking(move || ledger_thread.join())
        .await
        .map_err(|e| ServiceError::Runtime(e.to_string()))?
        .map_err(|_| ServiceError::Runtime("the ledger thread panicked".into()))?;
    served.map(|()| registry)
}

/// Runs the service in the foreground until Ctrl-C or SIGTERM (`cccx registry serve`).
pub fn serve_until_signal(
    registry: SqliteRegistry,
    listen: SocketAddr,
    faults: Faults,
) -> Result<(), ServiceError> {
    let plan = Arc::new(FaultPlan::new(faults)?);
    let runtime = runtime()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ServiceError::Bind { addr: listen, source })?;
        let addr = listener.local_addr().map_err(|source| ServiceError::Bind { addr: listen, source })?;
        tracing::info!(%addr, faults = ?plan.faults(), "registry service listening");
        eprintln!("registry listening on http://{addr}");
        serve(listener, registry, plan, signal()).await.map(drop)
    })
}

async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The OpenAPI document of the service, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    handlers::routes().split_for_parts().1
}
