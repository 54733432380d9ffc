//! cccx gateway: the exchange as a service.
//!
//! - [`config`]: the TOML configuration and the embedded defaults.
//! - [`secrets`]: generated API keys and FIX passwords.
//! - [`core`]: the engine thread (bounded input queue, sequencing, journal, events out).
//! - [`orders`]: order states, reports, the book mirror and recent trades, derived from events.
//! - [`rest`]: the REST/JSON API and the WebSocket feed (axum).
//! - [`scheduler`]: the session calendar's phase commands.
//! - [`settlement`]: the settlement thread (obligations, registry, holdings check).
//! - [`metrics`]: Prometheus metrics.
//! - [`fix`]: the FIX 4.4 acceptor (QuickFIX sessions, order routing, market data).
//! - [`server`]: `cccx serve`: all of the above in one process.

pub mod config;
pub mod core;
pub mod fix;
pub mod metrics;
pub mod orders;
pub mod rest;
pub mod scheduler;
pub mod secrets;
pub mod server;
pub mod settlement;
