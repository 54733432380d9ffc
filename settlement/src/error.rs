//! The registry's errors.

use cccx_engine::types::{InstrumentId, Qty};
use serde::{Deserialize, Serialize};

use crate::types::{AccountId, RequestId, Timestamp, TransferStatus, Vintage};

/// Why a registry request failed.
///
/// Business refusals are answers: the registry stores them under the request id, and a retry
/// of the same request gets the same refusal (see [`RegistryError::is_answer`]). The others
/// (a malformed id, a reused id, a time that went backwards, storage trouble) are not stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RegistryError {
    /// An id that is empty, too long, or has characters other than printable ASCII.
    #[error("invalid id {0:?}: 1 to 64 printable ASCII characters without spaces")]
    InvalidId(String),
    /// A time that is not valid RFC 3339.
    #[error("invalid timestamp {0}")]
    InvalidTimestamp(String),
    /// The request id was used before with other fields.
    #[error("request id {0} was already used with other fields")]
    DuplicateIdOtherFields(RequestId),
    /// A request's time is earlier than a change the ledger already recorded.
    #[error("time {given} is earlier than the ledger's last change at {last}")]
    TimeWentBackwards {
        /// The time of the request.
        given: Timestamp,
        /// The time of the ledger's last change.
        last: Timestamp,
    },
    /// No such account.
    #[error("unknown account {0}")]
    UnknownAccount(AccountId),
    /// The account is already open.
    #[error("account {0} is already open")]
    AccountExists(AccountId),
    /// A quantity of zero or over the request limit.
    #[error("quantity {quantity} is not between 1 and {max}")]
    InvalidQuantity {
        /// The quantity asked for.
        quantity: Qty,
        /// The largest quantity a request may carry.
        max: Qty,
    },
    /// The instrument and vintage have no serials left for the issue.
    #[error("serials of instrument {} vintage {vintage} exhausted", .instrument.0)]
    SerialsExhausted {
        /// The instrument.
        instrument: InstrumentId,
        /// The vintage.
        vintage: Vintage,
    },
    /// A transfer from an account to itself.
    #[error("transfer from account {0} to itself")]
    SameAccount(AccountId),
    /// The transferring account has fewer units available (held minus reserved) than asked.
    #[error("insufficient units in account {account}: {requested} requested, {available} available")]
    InsufficientUnits {
        /// The transferring account.
        account: AccountId,
        /// The quantity asked for.
        requested: Qty,
        /// The units available.
        available: Qty,
    },
    /// No transfer with this id.
    #[error("unknown transfer {0}")]
    UnknownTransfer(RequestId),
    /// The transfer is not pending, so it can be neither posted nor voided.
    #[error("transfer {transfer} is not pending: it is {status}")]
    TransferNotPending {
        /// The transfer.
        transfer: RequestId,
        /// Its status.
        status: TransferStatus,
    },
    /// The database was written by a different schema version.
    #[error("database schema version {found}, this build reads version {expected}")]
    SchemaVersion {
        /// The version in the database.
        found: i64,
        /// The version this build writes.
        expected: i64,
    },
    /// The database failed, or holds data this build cannot read.
    #[error("storage: {0}")]
    Storage(String),
}

impl RegistryError {
    /// Whether the error is the registry's answer to a well-formed request, stored under the
    /// request id and given again to a retry.
    pub fn is_answer(&self) -> bool {
        !matches!(
            self,
            RegistryError::InvalidId(_)
                | RegistryError::InvalidTimestamp(_)
                | RegistryError::DuplicateIdOtherFields(_)
                | RegistryError::TimeWentBackwards { .. }
                | RegistryError::SchemaVersion { .. }
                | RegistryError::Storage(_)
        )
    }
}

impl From<rusqlite::Error> for RegistryError {
    fn from(e: rusqlite::Error) -> Self {
        RegistryError::Storage(e.to_string())
    }
}
