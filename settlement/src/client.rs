//! [`HttpRegistry`]: the [`Registry`] interface over HTTP, for a registry service
//! (`cccx registry serve`, see [`crate::service`]).
//!
//! Exactly-once effects across faults come from two rules working together: every change
//! carries its client-made request id (the caller's, taken from the request), and a retry sends
//! the same request again, byte for byte, id and time included. So a request that was applied
//! but whose answer was lost is answered, on retry, from the registry's record of the id.
//!
//! A request is retried, after a growing pause, on a `503`, on a timeout, and on a connection
//! that fails before the whole answer arrived. Any other answer is final: a registry error comes
//! back as the same [`RegistryError`] the registry raised. When every attempt fails, the
//! outcome is unknown (the request may have been applied): the error says so, and the caller
//! resolves it by sending the same request again later.
//!
//! The client is blocking (it runs its own small runtime): do not call it from inside an async
//! runtime's worker thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cccx_engine::types::{InstrumentId, Qty};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::error::RegistryError;
use crate::registry::{BatchAnswers, BatchOp, Registry, BATCH_OPS_MAX};
use crate::service::wire::{registry_error_of, BatchAnswer, CheckAnswer, ExpireAnswer};
use crate::types::{
    Account, AccountId, Holdings, Issuance, IssueUnits, OpenAccount, PostTransfer, ProposeTransfer,
    RequestId, Shortfall, Statement, Timestamp, Transfer, Vintage, VoidTransfer,
};

/// The most attempts a client may be configured to make per request.
pub const ATTEMPTS_MAX_LIMIT: u32 = 100;

/// Whose clock dates a change.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum TimeSource {
    /// The caller's: the `at` (or `now`) passed in is sent with the request, as the
    /// [`Registry`] interface means it. Deterministic; for one client per registry.
    #[default]
    Caller,
    /// The service's: the time passed in is not sent, and the service stamps each request with
    /// its own clock when it applies it. For several clients of one registry, whose clocks
    /// would otherwise interleave out of order (refused as `TimeWentBackwards`).
    Service,
}

/// How the client times out and retries.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct HttpRegistryConfig {
    /// Whose clock dates a change.
    pub time_source: TimeSource,
    /// How long one attempt may take, answer included.
    pub timeout_ms: u64,
    /// Attempts per request, the first included (1 to [`ATTEMPTS_MAX_LIMIT`]).
    pub attempts_max: u32,
    /// The pause before the first retry; it doubles with each retry.
    pub backoff_ms: u64,
    /// The longest pause between attempts.
    pub backoff_max_ms: u64,
}

impl Default for HttpRegistryConfig {
    fn default() -> Self {
        HttpRegistryConfig {
            time_source: TimeSource::Caller,
            timeout_ms: 2_000,
            attempts_max: 8,
            backoff_ms: 10,
            backoff_max_ms: 1_000,
        }
    }
}

/// A registry service's client. See the [module docs](self).
#[derive(Debug)]
pub struct HttpRegistry {
    base: Url,
    http: reqwest::blocking::Client,
    config: HttpRegistryConfig,
    attempts: AtomicU64,
    retries: AtomicU64,
    /// Tells this client's expiry ids from another's.
    nonce: u64,
    /// Expiries requested so far.
    expiries: u64,
}

/// How one attempt ended.
enum Attempt {
    /// A final answer: the status and the body.
    Answer(StatusCode, Vec<u8>),
    /// Worth another attempt: why.
    Retry(String),
    /// The request could not even be built: no attempt will do better.
    Unsendable(String),
}

impl HttpRegistry {
    /// A client of the service at `base_url` (such as `http://127.0.0.1:7070`).
    pub fn new(base_url: &str, config: HttpRegistryConfig) -> Result<HttpRegistry, RegistryError> {
        let setup = |what: &str, e: &dyn std::fmt::Display| RegistryError::Storage(format!("{what}: {e}"));
        let base = Url::parse(base_url).map_err(|e| setup("registry service URL", &e))?;
        if base.cannot_be_a_base() {
            return Err(setup("registry service URL", &"not a base URL"));
        }
        if config.attempts_max == 0 || config.attempts_max > ATTEMPTS_MAX_LIMIT {
            return Err(setup("attempts_max", &format!("1 to {ATTEMPTS_MAX_LIMIT}")));
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| setup("HTTP client", &e))?;
        Ok(HttpRegistry {
            base,
            http,
            config,
            attempts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            nonce: nonce(),
            expiries: 0,
        })
    }

    /// Attempts made so far, retries included.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Retries made so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// The URL of a route: `segments` are percent-encoded (ids may hold `/`, `?`, `%`).
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    fn attempt(&self, method: &Method, url: &Url, body: Option<&Value>) -> Attempt {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let mut request = self.http.request(method.clone(), url.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send() {
            Ok(response) => response,
            Err(e) if e.is_builder() => return Attempt::Unsendable(error_chain(&e)),
            Err(e) => return Attempt::Retry(error_chain(&e)),
        };
        let status = response.status();
        // A response cut off after its status line is a lost answer: the work may be done.
        match response.bytes() {
            Ok(_) if status == StatusCode::SERVICE_UNAVAILABLE => Attempt::Retry(format!("status {status}")),
            Ok(bytes) => Attempt::Answer(status, bytes.to_vec()),
            Err(e) => Attempt::Retry(error_chain(&e)),
        }
    }

    /// Sends a request until it gets a final answer or runs out of attempts.
    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<T, RegistryError> {
        let mut pause_ms = self.config.backoff_ms;
        let mut why = String::new();
        for n in 0..self.config.attempts_max {
            if n > 0 {
                self.retries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(pause_ms));
                pause_ms = (pause_ms * 2).min(self.config.backoff_max_ms);
            }
            match self.attempt(&method, &url, body.as_ref()) {
                Attempt::Retry(reason) => why = reason,
                Attempt::Unsendable(reason) => {
                    return Err(RegistryError::Storage(format!("request to the registry service: {reason}")))
                }
                Attempt::Answer(status, bytes) if status.is_success() => {
                    return serde_json::from_slice(&bytes).map_err(|e| {
                        RegistryError::Storage(format!("unreadable answer from the registry service: {e}"))
                    })
                }
                Attempt::Answer(status, bytes) => return Err(problem_error(status, &bytes)),
            }
        }
        Err(RegistryError::Storage(format!(
            "registry service unavailable after {} attempts ({why}); the request may have been \
             applied: send it again with the same id",
            self.config.attempts_max
        )))
    }

    /// Sends a change, dated `at` if the caller's clock dates changes.
    fn change<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        mut body: Value,
        at: Timestamp,
    ) -> Result<T, RegistryError> {
        if self.config.time_source == TimeSource::Caller {
            body["at"] = json!(at);
        }
        self.call(Method::POST, self.url(segments, &[]), Some(body))
    }
}

/// The error of a problem document: the registry's own, or a description of the answer.
fn problem_error(status: StatusCode, bytes: &[u8]) -> RegistryError {
    let doc: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    registry_error_of(&doc).unwrap_or_else(|| {
        let detail = doc["detail"].as_str().map(str::to_string);
        let text =
            detail.unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned());
        RegistryError::Storage(format!("registry service answered {status}: {text}"))
    })
}

/// A number that differs between clients: the time and the process id, mixed.
fn nonce() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    static CLIENTS: AtomicU64 = AtomicU64::new(0);
    let count = CLIENTS.fetch_add(1, Ordering::Relaxed);
    let mut h = now ^ (u64::from(std::process::id()) << 32) ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// An error and its causes on one line (reqwest's own message hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Registry for HttpRegistry {
    fn open_account(&mut self, req: &OpenAccount, at: Timestamp) -> Result<Account, RegistryError> {
        self.change(&["v1", "accounts"], json!({"id": req.id, "account": req.account}), at)
    }

    fn issue(&mut self, req: &IssueUnits, at: Timestamp) -> Result<Issuance, RegistryError> {
        let body = json!({
            "id": req.id, "account": req.account, "instrument": req.instrument, "vintage": req.vintage,
            "quantity": req.quantity,
        });
        self.change(&["v1", "issuances"], body, at)
    }

    fn propose(&mut self, req: &ProposeTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        let mut body = json!({
            "id": req.id, "from": req.from, "to": req.to, "instrument": req.instrument,
            "quantity": req.quantity,
        });
        if let Some(vintage) = req.vintage {
            body["vintage"] = json!(vintage);
        }
        self.change(&["v1", "transfers"], body, at)
    }

    fn post(&mut self, req: &PostTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        self.change(&["v1", "transfers", req.transfer.as_str(), "post"], json!({"id": req.id}), at)
    }

    fn void(&mut self, req: &VoidTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        self.change(&["v1", "transfers", req.transfer.as_str(), "void"], json!({"id": req.id}), at)
    }

    /// Through `POST /v1/batch`, [`BATCH_OPS_MAX`] operations per request. `Err` if any request
    /// got no answer: send the same operations again.
    fn apply_batch(&mut self, ops: &[BatchOp], at: Timestamp) -> Result<BatchAnswers, RegistryError> {
        let mut answers = Vec::with_capacity(ops.len());
        for chunk in ops.chunks(BATCH_OPS_MAX) {
            let items = serde_json::to_value(chunk).map_err(|e| RegistryError::Storage(e.to_string()))?;
            let answer: BatchAnswer = self.change(&["v1", "batch"], json!({"ops": items}), at)?;
            if answer.results.len() != chunk.len() {
                return Err(RegistryError::Storage(format!(
                    "the registry service answered {} of {} operations",
                    answer.results.len(),
                    chunk.len()
                )));
            }
            answers.extend(answer.results.into_iter().map(|a| a.result()));
        }
        Ok(answers)
    }

    /// Each call gets a request id of its own (the client's nonce and a count), which its
    /// retries share: a retry gets the first answer, while a second call at the same time, as
    /// on every registry, finds nothing left to expire.
    fn expire_pending(&mut self, timeout_ns: u64, now: Timestamp) -> Result<Vec<Transfer>, RegistryError> {
        self.expiries += 1;
        let id = format!("expire-{:x}-{}", self.nonce, self.expiries);
        let body = json!({"id": id, "timeout_ns": timeout_ns});
        self.change::<ExpireAnswer>(&["v1", "expiries"], body, now).map(|a| a.expired)
    }

    fn transfer(&self, id: &RequestId) -> Result<Option<Transfer>, RegistryError> {
        match self.call(Method::GET, self.url(&["v1", "transfers", id.as_str()], &[]), None) {
            Ok(t) => Ok(Some(t)),
            Err(RegistryError::UnknownTransfer(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn holdings(
        &self,
        account: &AccountId,
        instrument: InstrumentId,
        as_of: Option<Timestamp>,
    ) -> Result<Holdings, RegistryError> {
        let mut query = vec![("instrument", instrument.0.to_string())];
        if let Some(as_of) = as_of {
            query.push(("as_of", as_of.0.to_string()));
        }
        self.call(Method::GET, self.url(&["v1", "accounts", account.as_str(), "holdings"], &query), None)
    }

    fn statement(
        &self,
        account: &AccountId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Statement, RegistryError> {
        let query = [("from", from.0.to_string()), ("to", to.0.to_string())];
        self.call(Method::GET, self.url(&["v1", "accounts", account.as_str(), "statement"], &query), None)
    }

    fn holdings_check(
        &self,
        instrument: InstrumentId,
        vintage: Option<Vintage>,
        sells: &BTreeMap<AccountId, Qty>,
    ) -> Result<Vec<Shortfall>, RegistryError> {
        let mut body = json!({"instrument": instrument, "sells": sells});
        if let Some(vintage) = vintage {
            body["vintage"] = json!(vintage);
        }
        let url = self.url(&["v1", "holdings-check"], &[]);
        self.call::<CheckAnswer>(Method::POST, url, Some(body)).map(|a| a.short)
    }
}
