//! The registry service's wire format: request bodies, times, and errors as problem documents.
//!
//! Answers are the registry's own values ([`crate::types`]) as JSON; times in them are integer
//! nanoseconds since the Unix epoch (UTC). A request may give a time either way: integer
//! nanoseconds or RFC 3339 text.

use std::collections::BTreeMap;

use cccx_engine::types::{InstrumentId, Qty};
use serde::{Deserialize, Serialize};

use crate::error::RegistryError;
use crate::types::{AccountId, RequestId, Timestamp, TransferStatus, Vintage};

/// A time in a request: integer nanoseconds since the Unix epoch, or RFC 3339 text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum TimeArg {
    /// Nanoseconds since the Unix epoch, UTC.
    Ns(i64),
    /// RFC 3339, such as `2026-05-01T15:00:00Z`.
    Text(String),
}

impl TimeArg {
    /// The time, if well formed.
    pub fn timestamp(&self) -> Result<Timestamp, RegistryError> {
        match self {
            TimeArg::Ns(ns) => Ok(Timestamp(*ns)),
            TimeArg::Text(text) => match text.parse::<i64>() {
                Ok(ns) => Ok(Timestamp(ns)),
                Err(_) => Timestamp::parse_rfc3339(text),
            },
        }
    }
}

/// Body of `POST /v1/accounts`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccountBody {
    /// The client-made request id.
    pub id: String,
    /// The account to open.
    pub account: String,
    /// The time of the request; the service's clock when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<TimeArg>,
}

/// Body of `POST /v1/issuances`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    /// The client-made request id.
    pub id: String,
    /// The account that receives the units.
    pub account: String,
    /// The instrument of the units.
    pub instrument: u32,
    /// The vintage of the units.
    pub vintage: u16,
    /// How many units.
    pub quantity: Qty,
    /// The time of the request; the service's clock when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<TimeArg>,
}

/// Body of `POST /v1/transfers`: a proposal.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposeBody {
    /// The client-made request id, which becomes the transfer's id.
    pub id: String,
    /// The transferring account.
    pub from: String,
    /// The acquiring account.
    pub to: String,
    /// The instrument of the units.
    pub instrument: u32,
    /// How many units.
    pub quantity: Qty,
    /// Only units of this vintage; any vintage, oldest first, when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vintage: Option<u16>,
    /// The time of the request; the service's clock when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<TimeArg>,
}

/// Body of `POST /v1/transfers/{transfer}/post` and `.../void`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    /// The client-made request id.
    pub id: String,
    /// The time of the request; the service's clock when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<TimeArg>,
}

/// Body of `POST /v1/expiries`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpireBody {
    /// The client-made request id. The ledger itself keeps no id for an expiry: the service
    /// remembers the answers of its most recent expiries by id, so a retry gets its answer.
    pub id: String,
    /// Transfers pending at least this long are cancelled.
    pub timeout_ns: u64,
    /// The time of the request ("now"); the service's clock when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<TimeArg>,
}

/// Answer of `POST /v1/expiries`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpireAnswer {
    /// The transfers cancelled, by id.
    pub expired: Vec<crate::types::Transfer>,
}

/// Body of `POST /v1/holdings-check`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    /// The instrument.
    pub instrument: u32,
    /// Only units of this vintage count, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vintage: Option<u16>,
    /// The total sell quantity per seller account.
    pub sells: BTreeMap<String, Qty>,
}

/// Answer of `POST /v1/holdings-check`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckAnswer {
    /// The sellers found short, in account order.
    pub short: Vec<crate::types::Shortfall>,
}

/// Body of `POST /v1/batch`: proposals, posts, voids and proposals posted at once, applied in
/// order, all at one time.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// The operations, at most [`crate::BATCH_OPS_MAX`].
    pub ops: Vec<BatchItemBody>,
    /// The time of every operation; the service's clock when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<TimeArg>,
}

/// One operation of a batch, named by `op`; each has its own client-made request id.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum BatchItemBody {
    /// A proposal, as `POST /v1/transfers`.
    Propose {
        /// The client-made request id, which becomes the transfer's id.
        id: String,
        /// The transferring account.
        from: String,
        /// The acquiring account.
        to: String,
        /// The instrument of the units.
        instrument: u32,
        /// How many units.
        quantity: Qty,
        /// Only units of this vintage; any vintage, oldest first, when absent.
        #[serde(default)]
        vintage: Option<u16>,
    },
    /// A post, as `POST /v1/transfers/{transfer}/post`.
    Post {
        /// The client-made request id.
        id: String,
        /// The pending transfer.
        transfer: String,
    },
    /// A void, as `POST /v1/transfers/{transfer}/void`.
    Void {
        /// The client-made request id.
        id: String,
        /// The pending transfer.
        transfer: String,
    },
    /// A proposal, as `propose`, posted at once under `post_id` if it is accepted (its answer
    /// is the pending transfer): the answer is the post's, or the proposal's when it is
    /// anything else. Unlike a `propose` and a `post` in one batch, a refused proposal (its id
    /// used by another client, say) is never followed by the post.
    ProposeAndPost {
        /// The client-made request id of the proposal, which becomes the transfer's id.
        id: String,
        /// The transferring account.
        from: String,
        /// The acquiring account.
        to: String,
        /// The instrument of the units.
        instrument: u32,
        /// How many units.
        quantity: Qty,
        /// Only units of this vintage; any vintage, oldest first, when absent.
        #[serde(default)]
        vintage: Option<u16>,
        /// The client-made request id of the post.
        post_id: String,
    },
}

/// The answer to one operation of a batch: `{"transfer": ...}`, or `{"error": ...}` with the
/// members of the problem document the single call would have answered (`status`, `code`,
/// `detail` and the error's fields).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchItemAnswer {
    /// The transfer.
    Transfer(crate::types::Transfer),
    /// The refusal, or the error without an answer.
    Error(serde_json::Value),
}

impl BatchItemAnswer {
    /// The answer of a registry result.
    pub fn of(result: Result<crate::types::Transfer, RegistryError>) -> BatchItemAnswer {
        match result {
            Ok(t) => BatchItemAnswer::Transfer(t),
            Err(e) => {
                let mut doc = serde_json::to_value(WireError::from(e.clone())).unwrap_or_default();
                if let serde_json::Value::Object(members) = &mut doc {
                    members.insert("status".into(), status_of(&e).into());
                    members.insert("detail".into(), e.to_string().into());
                }
                BatchItemAnswer::Error(doc)
            }
        }
    }

    /// The registry result it carries.
    pub fn result(self) -> Result<crate::types::Transfer, RegistryError> {
        match self {
            BatchItemAnswer::Transfer(t) => Ok(t),
            BatchItemAnswer::Error(doc) => Err(registry_error_of(&doc).unwrap_or_else(|| {
                RegistryError::Storage(format!("unreadable error in a batch answer: {doc}"))
            })),
        }
    }
}

/// Answer of `POST /v1/batch`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchAnswer {
    /// One answer per operation, in order.
    pub results: Vec<BatchItemAnswer>,
}

/// Query of `GET /v1/accounts/{account}/holdings`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HoldingsParams {
    /// The instrument.
    pub instrument: u32,
    /// The holdings as of this time (nanoseconds or RFC 3339); now when absent.
    pub as_of: Option<String>,
}

/// Query of `GET /v1/accounts/{account}/statement`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatementParams {
    /// The start of the range, inclusive (nanoseconds or RFC 3339).
    pub from: String,
    /// The end of the range, exclusive (nanoseconds or RFC 3339).
    pub to: String,
}

/// A [`RegistryError`] as the extension members of a problem document: a stable `code` and the
/// error's fields. Every variant maps both ways, so a client gets back the error the registry
/// raised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub(crate) enum WireError {
    InvalidId { id: String },
    InvalidTimestamp { value: String },
    DuplicateIdOtherFields { id: RequestId },
    TimeWentBackwards { given: Timestamp, last: Timestamp },
    UnknownAccount { account: AccountId },
    AccountExists { account: AccountId },
    InvalidQuantity { quantity: Qty, max: Qty },
    SerialsExhausted { instrument: InstrumentId, vintage: Vintage },
    SameAccount { account: AccountId },
    InsufficientUnits { account: AccountId, requested: Qty, available: Qty },
    UnknownTransfer { transfer: RequestId },
    // `status` is the HTTP status in a problem document.
    TransferNotPending { transfer: RequestId, transfer_status: TransferStatus },
    SchemaVersion { found: i64, expected: i64 },
    Storage { message: String },
}

impl From<RegistryError> for WireError {
    fn from(e: RegistryError) -> Self {
        use RegistryError as E;
        match e {
            E::InvalidId(id) => WireError::InvalidId { id },
            E::InvalidTimestamp(value) => WireError::InvalidTimestamp { value },
            E::DuplicateIdOtherFields(id) => WireError::DuplicateIdOtherFields { id },
            E::TimeWentBackwards { given, last } => WireError::TimeWentBackwards { given, last },
            E::UnknownAccount(account) => WireError::UnknownAccount { account },
            E::AccountExists(account) => WireError::AccountExists { account },
            E::InvalidQuantity { quantity, max } => WireError::InvalidQuantity { quantity, max },
            E::SerialsExhausted { instrument, vintage } => {
                WireError::SerialsExhausted { instrument, vintage }
            }
            E::SameAccount(account) => WireError::SameAccount { account },
            E::InsufficientUnits { account, requested, available } => {
                WireError::InsufficientUnits { account, requested, available }
            }
            E::UnknownTransfer(transfer) => WireError::UnknownTransfer { transfer },
            E::TransferNotPending { transfer, status } => {
                WireError::TransferNotPending { transfer, transfer_status: status }
            }
            E::SchemaVersion { found, expected } => WireError::SchemaVersion { found, expected },
            E::Storage(message) => WireError::Storage { message },
        }
    }
}

impl From<WireError> for RegistryError {
    fn from(e: WireError) -> Self {
        use RegistryError as E;
        match e {
            WireError::InvalidId { id } => E::InvalidId(id),
            WireError::InvalidTimestamp { value } => E::InvalidTimestamp(value),
            WireError::DuplicateIdOtherFields { id } => E::DuplicateIdOtherFields(id),
            WireError::TimeWentBackwards { given, last } => E::TimeWentBackwards { given, last },
            WireError::UnknownAccount { account } => E::UnknownAccount(account),
            WireError::AccountExists { account } => E::AccountExists(account),
            WireError::InvalidQuantity { quantity, max } => E::InvalidQuantity { quantity, max },
            WireError::SerialsExhausted { instrument, vintage } => {
                E::SerialsExhausted { instrument, vintage }
            }
            WireError::SameAccount { account } => E::SameAccount(account),
            WireError::InsufficientUnits { account, requested, available } => {
                E::InsufficientUnits { account, requested, available }
            }
            WireError::UnknownTransfer { transfer } => E::UnknownTransfer(transfer),
            WireError::TransferNotPending { transfer, transfer_status } => {
                E::TransferNotPending { transfer, status: transfer_status }
            }
            WireError::SchemaVersion { found, expected } => E::SchemaVersion { found, expected },
            WireError::Storage { message } => E::Storage(message),
        }
    }
}

/// The HTTP status of a registry error: 400 for a malformed request, 404 for an unknown account
/// or transfer, 409 for a conflict with the ledger's state (a reused id, an account already
/// open, a transfer no longer pending, a time before the last change), 422 for a well-formed
/// request the registry refuses, 500 for the service's own trouble.
pub fn status_of(e: &RegistryError) -> u16 {
    use RegistryError as E;
    match e {
        E::InvalidId(_) | E::InvalidTimestamp(_) => 400,
        E::UnknownAccount(_) | E::UnknownTransfer(_) => 404,
        E::DuplicateIdOtherFields(_)
        | E::TimeWentBackwards { .. }
        | E::AccountExists(_)
        | E::TransferNotPending { .. } => 409,
        E::InvalidQuantity { .. }
        | E::SerialsExhausted { .. }
        | E::SameAccount(_)
        | E::InsufficientUnits { .. } => 422,
        E::SchemaVersion { .. } | E::Storage(_) => 500,
    }
}

/// Reads a registry error back from a problem document, if it carries one.
pub(crate) fn registry_error_of(problem: &serde_json::Value) -> Option<RegistryError> {
    serde_json::from_value::<WireError>(problem.clone()).ok().map(RegistryError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_error() -> Vec<RegistryError> {
        let id = RequestId::new("T1").unwrap();
        let account = AccountId::new("A").unwrap();
        vec![
            RegistryError::InvalidId("a b".into()),
            RegistryError::InvalidTimestamp("x".into()),
            RegistryError::DuplicateIdOtherFields(id.clone()),
            RegistryError::TimeWentBackwards { given: Timestamp(1), last: Timestamp(2) },
            RegistryError::UnknownAccount(account.clone()),
            RegistryError::AccountExists(account.clone()),
            RegistryError::InvalidQuantity { quantity: 0, max: 9 },
            RegistryError::SerialsExhausted { instrument: InstrumentId(3), vintage: Vintage(2022) },
            RegistryError::SameAccount(account.clone()),
            RegistryError::InsufficientUnits { account, requested: 9, available: 8 },
            RegistryError::UnknownTransfer(id.clone()),
            RegistryError::TransferNotPending { transfer: id, status: TransferStatus::Cancelled },
            RegistryError::SchemaVersion { found: 9, expected: 1 },
            RegistryError::Storage("disk".into()),
        ]
    }

    #[test]
    fn every_error_survives_a_problem_document() {
        for e in every_error() {
            let mut doc = serde_json::to_value(WireError::from(e.clone())).unwrap();
            let members = doc.as_object_mut().unwrap();
            // The problem document's own members do not disturb the error's.
            members.insert("type".into(), "about:blank".into());
            members.insert("status".into(), status_of(&e).into());
            members.insert("detail".into(), e.to_string().into());
            assert_eq!(registry_error_of(&doc), Some(e));
        }
    }

    #[test]
    fn codes_are_stable() {
        let codes: Vec<String> = every_error()
            .into_iter()
            .map(|e| serde_json::to_value(WireError::from(e)).unwrap()["code"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            codes,
            [
                "invalid_id",
                "invalid_timestamp",
                "duplicate_id_other_fields",
                "time_went_backwards",
                "unknown_account",
                "account_exists",
                "invalid_quantity",
                "serials_exhausted",
                "same_account",
                "insufficient_units",
                "unknown_transfer",
                "transfer_not_pending",
                "schema_version",
                "storage",
            ]
        );
    }

    #[test]
    fn times_are_nanoseconds_or_rfc3339() {
        assert_eq!(TimeArg::Ns(5).timestamp(), Ok(Timestamp(5)));
        assert_eq!(TimeArg::Text("-5".into()).timestamp(), Ok(Timestamp(-5)));
        assert_eq!(TimeArg::Text("1970-01-01T00:00:01Z".into()).timestamp(), Ok(Timestamp(1_000_000_000)));
        assert!(TimeArg::Text("soon".into()).timestamp().is_err());
    }
}
