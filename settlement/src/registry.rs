//! The registry connector interface: what settlement asks of a carbon registry.

use std::collections::BTreeMap;

use cccx_engine::types::{InstrumentId, Qty};

use serde::{Deserialize, Serialize};

use crate::error::RegistryError;
use crate::types::{
    Account, AccountId, Holdings, Issuance, IssueUnits, OpenAccount, PostTransfer, ProposeAndPost,
    ProposeTransfer, RequestId, Shortfall, Statement, Timestamp, Transfer, Vintage, VoidTransfer,
};

/// The most operations one [`Registry::apply_batch`] call should carry; the registry service
/// refuses a larger batch, and its client splits one.
pub const BATCH_OPS_MAX: usize = 4096;

/// One change in a batch: a proposal, a post, a void, each with its own request id and the
/// same idempotency as the single call, or a proposal posted at once if accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum BatchOp {
    /// [`Registry::propose`].
    Propose(ProposeTransfer),
    /// [`Registry::post`].
    Post(PostTransfer),
    /// [`Registry::void`].
    Void(VoidTransfer),
    /// [`Registry::propose`], then [`Registry::post`] if the answer is the pending transfer:
    /// the answer is the post's, or the proposal's when it is anything else. The two calls in
    /// one batch (`[propose, post]`) would post a transfer of that id even when the proposal
    /// was refused because another client used the id.
    ProposeAndPost(ProposeAndPost),
}

impl BatchOp {
    /// The operation's request id.
    pub fn id(&self) -> &RequestId {
        match self {
            BatchOp::Propose(r) => &r.id,
            BatchOp::Post(r) => &r.id,
            BatchOp::Void(r) => &r.id,
            BatchOp::ProposeAndPost(r) => &r.propose.id,
        }
    }

    /// Applies the operation through the single calls: what [`Registry::apply_batch`] must
    /// answer for it at its place in the batch.
    pub fn apply_one<R: Registry + ?Sized>(
        &self,
        registry: &mut R,
        at: Timestamp,
    ) -> Result<Transfer, RegistryError> {
        match self {
            BatchOp::Propose(req) => registry.propose(req, at),
            BatchOp::Post(req) => registry.post(req, at),
            BatchOp::Void(req) => registry.void(req, at),
            BatchOp::ProposeAndPost(req) => match registry.propose(&req.propose, at)? {
                t if t.status.is_pending() => registry.post(&req.post(), at),
                t => Ok(t),
            },
        }
    }
}

/// The answer to each operation of a batch, in order.
pub type BatchAnswers = Vec<Result<Transfer, RegistryError>>;

/// A registry: accounts holding serial blocks, and two-phase transfers between them.
///
/// Every change carries a client-made request id and is idempotent: the same id with the same
/// fields gives the same answer (including a stored refusal) and changes nothing the second
/// time; the same id with other fields is refused with
/// [`RegistryError::DuplicateIdOtherFields`]. The time of a request is not one of its fields: a
/// retry may come later.
///
/// Every time is passed in (`at`, `now`, `as_of`); an implementation never reads a clock, and
/// refuses a change dated before the last change it recorded
/// ([`RegistryError::TimeWentBackwards`]), so views as of a time stay true.
pub trait Registry {
    /// Opens an account.
    fn open_account(&mut self, req: &OpenAccount, at: Timestamp) -> Result<Account, RegistryError>;

    /// Issues new units to an account, on the next free serials of the instrument and vintage
    /// (serials start at 1).
    fn issue(&mut self, req: &IssueUnits, at: Timestamp) -> Result<Issuance, RegistryError>;

    /// Proposes a transfer. If the transferring account has the units available, they are
    /// reserved oldest first (by vintage, then serial; a block is split when only part of it is
    /// needed) and the transfer is pending ([`crate::TransferStatus::Accepted`]). Otherwise the
    /// transfer is recorded as rejected and the refusal is returned.
    fn propose(&mut self, req: &ProposeTransfer, at: Timestamp) -> Result<Transfer, RegistryError>;

    /// Posts a pending transfer: its reserved blocks move to the acquiring account and the
    /// transfer is completed.
    fn post(&mut self, req: &PostTransfer, at: Timestamp) -> Result<Transfer, RegistryError>;

    /// Voids a pending transfer: its reserved blocks are released and the transfer is
    /// terminated.
    fn void(&mut self, req: &VoidTransfer, at: Timestamp) -> Result<Transfer, RegistryError>;

    /// Applies a list of proposals, posts and voids, all dated `at`, in order: each answer is
    /// what the single call would have answered at that point of the sequence (a refusal of one
    /// operation does not touch the others), and each operation is idempotent under its own
    /// request id exactly like the single call.
    ///
    /// `Err` means the batch as a whole got no answer (some, all or none of it may have been
    /// applied; the embedded registry applies none): send the same batch again. The default sends the single calls one by one; a
    /// registry may do better (the embedded one commits the whole batch at once).
    fn apply_batch(&mut self, ops: &[BatchOp], at: Timestamp) -> Result<BatchAnswers, RegistryError> {
        Ok(ops.iter().map(|op| op.apply_one(self, at)).collect())
    }

    /// Cancels, as of `now`, every pending transfer proposed at or before `now - timeout_ns`,
    /// releasing its blocks. Returns the transfers cancelled, by id. The registry runs this
    /// itself, so it takes no request id; a second call at the same time finds nothing to do.
    fn expire_pending(&mut self, timeout_ns: u64, now: Timestamp) -> Result<Vec<Transfer>, RegistryError>;

    /// A transfer, if one has this id.
    fn transfer(&self, id: &RequestId) -> Result<Option<Transfer>, RegistryError>;

    /// An account's blocks and totals of an instrument, now (`as_of` = `None`) or as they were
    /// after every change dated at or before `as_of`.
    fn holdings(
        &self,
        account: &AccountId,
        instrument: InstrumentId,
        as_of: Option<Timestamp>,
    ) -> Result<Holdings, RegistryError>;

    /// What happened to an account in `[from, to)`, in ledger order.
    fn statement(
        &self,
        account: &AccountId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Statement, RegistryError>;

    /// [`Registry::holdings`] of several accounts, answered each on its own, in the order given
    /// (an account the registry does not know is [`RegistryError::UnknownAccount`]). `Err` is
    /// an error of the whole query. The default asks for each account; the embedded registry
    /// reads its record once for all of them (reconciliation asks for every account in scope).
    fn holdings_of(
        &self,
        accounts: &[AccountId],
        instrument: InstrumentId,
        as_of: Option<Timestamp>,
    ) -> Result<Vec<Result<Holdings, RegistryError>>, RegistryError> {
        Ok(accounts.iter().map(|a| self.holdings(a, instrument, as_of)).collect())
    }

    /// [`Registry::statement`] of several accounts, like [`Registry::holdings_of`].
    fn statements_of(
        &self,
        accounts: &[AccountId],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Result<Statement, RegistryError>>, RegistryError> {
        Ok(accounts.iter().map(|a| self.statement(a, from, to)).collect())
    }

    /// The bid-window holdings check: given the total sell quantity per seller account, the
    /// sellers whose available units (held minus reserved) of the instrument, and of the
    /// vintage if given, fall short, in account order. An unknown account is short with 0
    /// available.
    fn holdings_check(
        &self,
        instrument: InstrumentId,
        vintage: Option<Vintage>,
        sells: &BTreeMap<AccountId, Qty>,
    ) -> Result<Vec<Shortfall>, RegistryError>;
}
