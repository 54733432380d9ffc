//! cccx settlement: the registry ledger that settlement moves certificates in.
//!
//! - [`registry`]: the [`Registry`] connector interface: accounts, issuance, two-phase
//!   transfers, holdings (now and as of a time), statements and the bid-window holdings check.
//! - [`sqlite`]: [`SqliteRegistry`], the embedded registry on SQLite (portable SQL).
//! - [the reference module](crate::reference): [`NaiveRegistry`], an in-memory model the tests compare the
//!   embedded registry against.
//! - [`types`]: ids, timestamps, serial blocks, requests and answers.
//! - [`error`]: the [`RegistryError`] enum.
//! - [`audit`]: the append-only, hash-chained audit trail and its verification.
//! - [`settle`]: delivery versus payment: obligations from trades, a durable state machine per
//!   obligation, the exchange's funds ledger.
//! - [`reconcile`]: the exchange's view against the registry's at one agreed time (totals,
//!   serial blocks, the transfer trail), breaks with a status and a history.
//!
//! The ledger reads no clock: every time is passed in, so tests and replays are deterministic.

pub mod audit;
pub mod error;
pub mod reconcile;
pub mod reference;
pub mod registry;
pub mod settle;
pub mod sqlite;
pub mod types;

// The registry service and its HTTP client (issue 6, second slice).
pub mod client;
pub mod faults;
pub mod service;

pub use error::RegistryError;
pub use reference::NaiveRegistry;
pub use registry::{BatchAnswers, BatchOp, Registry, BATCH_OPS_MAX};
pub use sqlite::SqliteRegistry;
pub use types::{
    coalesce, merge_held, Account, AccountId, EntryKind, HeldBlock, Holdings, Issuance, IssueUnits,
    OpenAccount, PostTransfer, ProposeAndPost, ProposeTransfer, RequestId, SerialBlock, Shortfall, Statement,
    StatementLine, Timestamp, Totals, Transfer, TransferStatus, Vintage, VoidTransfer, ID_LENGTH_MAX,
    REQUEST_QTY_MAX, SERIAL_MAX,
};
