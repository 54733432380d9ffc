//! The registry connector interface: what settlement asks of a carbon registry.

use std::collections::BTreeMap;

use cccx_engine::types::{InstrumentId, Qty};

use crate::error::RegistryError;
use crate::types::{
    Account, AccountId, Holdings, Issuance, IssueUnits, OpenAccount, PostTransfer, ProposeTransfer,
    RequestId, Shortfall, Statement, Timestamp, Transfer, Vintage, VoidTransfer,
};

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
