//! The OpenAPI schemas of the service's answers.
//!
//! The answers are the registry's own values ([`crate::types`]) serialized with their serde
//! derives; these mirrors only describe them. A test reads real answers into the mirrors with
//! unknown fields denied, so a field added to a value without its mirror fails the build's
//! tests rather than leaving the document stale.

#![allow(dead_code)]

use serde::Deserialize;

/// A problem document (RFC 9457), as every error answer carries it.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ProblemDoc {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this case.
    pub detail: String,
    /// The stable machine-readable code: a registry error (`insufficient_units`,
    /// `unknown_account`, ...) or a service error (`malformed`, `unavailable`, ...). The
    /// registry error's fields follow as further members.
    pub code: String,
}

/// An open account.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The account.
    pub id: String,
    /// When it was opened (ns since the Unix epoch).
    pub opened_at: i64,
}

/// A run of units with consecutive serials `[start, end]` of one instrument and vintage.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SerialBlock {
    /// The instrument.
    pub instrument: u32,
    /// The vintage.
    pub vintage: u16,
    /// The first serial.
    pub start: u64,
    /// The last serial (inclusive).
    pub end: u64,
}

/// Units issued to an account.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Issuance {
    /// The account.
    pub account: String,
    /// The new units.
    pub block: SerialBlock,
    /// When they were issued (ns).
    pub issued_at: i64,
}

/// The life of a registry transaction.
#[derive(Deserialize, utoipa::ToSchema)]
pub enum TransferStatus {
    /// Received, not yet checked.
    Proposed,
    /// Checked, not yet accepted.
    Checked,
    /// Pending: the units are reserved.
    Accepted,
    /// Refused at the check.
    Rejected,
    /// Posted: the units moved.
    Completed,
    /// Voided: the units were released.
    Terminated,
    /// Expired while pending: the units were released.
    Cancelled,
}

/// A transfer and where it stands.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// The transfer's id (its proposal's request id).
    pub id: String,
    /// The transferring account.
    pub from: String,
    /// The acquiring account.
    pub to: String,
    /// The instrument.
    pub instrument: u32,
    /// The vintage the proposal asked for, if any.
    pub vintage: Option<u16>,
    /// The quantity proposed.
    pub quantity: u64,
    /// Where it stands.
    pub status: TransferStatus,
    /// The units reserved (and, once completed, moved); empty if rejected.
    pub blocks: Vec<SerialBlock>,
    /// When it was proposed (ns).
    pub proposed_at: i64,
    /// When it reached a final status (ns), if it has.
    pub resolved_at: Option<i64>,
}

/// A block an account holds, and the pending transfer reserving it, if any.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeldBlock {
    /// The units.
    pub block: SerialBlock,
    /// The pending transfer that reserves them.
    pub reserved_by: Option<String>,
}

/// Held, reserved and available quantities.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Units in the account.
    pub held: u64,
    /// Units reserved by pending transfers out of it.
    pub reserved: u64,
    /// Units free to transfer.
    pub available: u64,
}

/// An account's holdings of one instrument.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Holdings {
    /// The account.
    pub account: String,
    /// The instrument.
    pub instrument: u32,
    /// The time of the view (ns), or null for now.
    pub as_of: Option<i64>,
    /// The blocks, by vintage and serial.
    pub blocks: Vec<HeldBlock>,
    /// `[vintage, totals]` pairs, oldest vintage first.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub by_vintage: Vec<(u16, Totals)>,
    /// Totals over all vintages.
    pub total: Totals,
}

/// What a statement line records.
#[derive(Deserialize, utoipa::ToSchema)]
pub enum EntryKind {
    /// New units issued (a credit).
    Issued,
    /// Units reserved by a proposal out of the account.
    Reserved,
    /// Reserved units released by a void or an expiry.
    Released,
    /// Units moved out by a completed transfer (a debit).
    Debited,
    /// Units moved in by a completed transfer (a credit).
    Credited,
}

/// One line of a statement.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatementLine {
    /// When (ns).
    pub at: i64,
    /// What happened.
    pub kind: EntryKind,
    /// The units.
    pub block: SerialBlock,
    /// The transfer, for every kind but `Issued`.
    pub transfer: Option<String>,
    /// The other account of the transfer.
    pub counterparty: Option<String>,
}

/// What happened to an account in `[from, to)`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// The account.
    pub account: String,
    /// The start of the range (ns, inclusive).
    pub from: i64,
    /// The end of the range (ns, exclusive).
    pub to: i64,
    /// The lines, in ledger order.
    pub lines: Vec<StatementLine>,
}

/// A seller found short by the holdings check.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Shortfall {
    /// The seller's account.
    pub account: String,
    /// The total sell quantity sent.
    pub requested: u64,
    /// The units it has available (0 for an unknown account).
    pub available: u64,
}

/// The answer of an expiry.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpireAnswer {
    /// The transfers cancelled, by id.
    pub expired: Vec<Transfer>,
}

/// The answer of the holdings check.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckAnswer {
    /// The sellers found short, in account order.
    pub short: Vec<Shortfall>,
}

/// The answer to one operation of a batch: exactly one of the two members.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItemAnswer {
    /// The transfer, when the operation succeeded.
    pub transfer: Option<Transfer>,
    /// The refusal, when it did not: the members of the problem document the single call would
    /// have answered (`status`, `code`, `detail`, and the error's fields).
    #[schema(value_type = Option<Object>)]
    pub error: Option<serde_json::Value>,
}

/// The answer of a batch.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchAnswer {
    /// One answer per operation, in order.
    pub results: Vec<BatchItemAnswer>,
}

#[cfg(test)]
mod tests {
    use cccx_engine::types::InstrumentId;
    use serde::de::DeserializeOwned;

    use crate::types::{self as t, AccountId, RequestId, Timestamp, Vintage};

    /// Reads a real answer into its mirror, unknown fields denied.
    fn fits<M: DeserializeOwned>(value: &impl serde::Serialize) {
        let json = serde_json::to_string(value).unwrap();
        if let Err(e) = serde_json::from_str::<M>(&json) {
            panic!("{} does not describe {json}: {e}", std::any::type_name::<M>());
        }
    }

    #[test]
    fn the_schemas_describe_the_answers() {
        let (a, b) = (AccountId::new("A").unwrap(), AccountId::new("B").unwrap());
        let id = RequestId::new("T1").unwrap();
        let block = t::SerialBlock { instrument: InstrumentId(1), vintage: Vintage(2022), start: 1, end: 5 };
        let transfer = t::Transfer {
            id: id.clone(),
            from: a.clone(),
            to: b.clone(),
            instrument: InstrumentId(1),
            vintage: Some(Vintage(2022)),
            quantity: 5,
            status: t::TransferStatus::Completed,
            blocks: vec![block],
            proposed_at: Timestamp(1),
            resolved_at: Some(Timestamp(2)),
        };
        fits::<super::Transfer>(&transfer);
        let refusal = crate::RegistryError::UnknownTransfer(id.clone());
        let results = vec![
            super::super::wire::BatchItemAnswer::of(Ok(transfer.clone())),
            super::super::wire::BatchItemAnswer::of(Err(refusal)),
        ];
        fits::<super::BatchAnswer>(&super::super::wire::BatchAnswer { results });
        fits::<super::ExpireAnswer>(&super::super::wire::ExpireAnswer { expired: vec![transfer] });
        fits::<super::Account>(&t::Account { id: a.clone(), opened_at: Timestamp(0) });
        fits::<super::Issuance>(&t::Issuance { account: a.clone(), block, issued_at: Timestamp(0) });
        let held = vec![t::HeldBlock { block, reserved_by: Some(id.clone()) }];
        fits::<super::Holdings>(&t::Holdings::from_blocks(
            a.clone(),
            InstrumentId(1),
            Some(Timestamp(3)),
            held,
        ));
        let line = t::StatementLine {
            at: Timestamp(2),
            kind: t::EntryKind::Debited,
            block,
            transfer: Some(id),
            counterparty: Some(b),
        };
        let statement =
            t::Statement { account: a.clone(), from: Timestamp(0), to: Timestamp(9), lines: vec![line] };
        fits::<super::Statement>(&statement);
        let short = vec![t::Shortfall { account: a, requested: 3, available: 1 }];
        fits::<super::CheckAnswer>(&super::super::wire::CheckAnswer { short });
    }
}
