//! The naive reference registry: a vector of blocks in memory, written for obviousness rather
//! than speed. Tests run the same operations against it and the embedded registry and compare
//! every answer, holding and block.

use std::collections::BTreeMap;

use cccx_engine::types::{InstrumentId, Qty};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::RegistryError;
use crate::registry::Registry;
use crate::types::{
    coalesce, merge_held, Account, AccountId, EntryKind, HeldBlock, Holdings, Issuance, IssueUnits,
    OpenAccount, PostTransfer, ProposeTransfer, RequestId, SerialBlock, Shortfall, Statement, StatementLine,
    Timestamp, Transfer, TransferStatus, Vintage, VoidTransfer, REQUEST_QTY_MAX, SERIAL_MAX,
};

/// One block and its holder.
type Row = (AccountId, HeldBlock);

/// An in-memory registry with the same behaviour as [`crate::SqliteRegistry`], kept naive on
/// purpose: every query scans every block, and every change keeps a full copy of the blocks for
/// views as of a time.
#[derive(Clone, Debug, Default)]
pub struct NaiveRegistry {
    accounts: BTreeMap<AccountId, Timestamp>,
    rows: Vec<Row>,
    /// The rows after each change, with the change's time.
    history: Vec<(Timestamp, Vec<Row>)>,
    next_serial: BTreeMap<(InstrumentId, Vintage), u64>,
    transfers: BTreeMap<RequestId, Transfer>,
    /// Request id -> (kind and fields, answer), both as JSON.
    requests: BTreeMap<RequestId, (String, String)>,
    entries: Vec<(AccountId, StatementLine)>,
    last_at: Option<Timestamp>,
}

fn check_quantity(quantity: Qty) -> Result<(), RegistryError> {
    if quantity == 0 || quantity > REQUEST_QTY_MAX {
        return Err(RegistryError::InvalidQuantity { quantity, max: REQUEST_QTY_MAX });
    }
    Ok(())
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

impl NaiveRegistry {
    /// An empty registry.
    pub fn new() -> NaiveRegistry {
        NaiveRegistry::default()
    }

    /// Every block every account holds now, by account, in canonical form ([`merge_held`]).
    pub fn snapshot(&self) -> BTreeMap<AccountId, Vec<HeldBlock>> {
        let mut by_account: BTreeMap<AccountId, Vec<HeldBlock>> = BTreeMap::new();
        for (account, held) in &self.rows {
            by_account.entry(account.clone()).or_default().push(held.clone());
        }
        by_account.into_iter().map(|(a, blocks)| (a, merge_held(blocks))).collect()
    }

    /// Runs `op` unless the request id was seen before, and stores its answer.
    fn idempotent<T: Serialize + DeserializeOwned>(
        &mut self,
        id: &RequestId,
        kind: &str,
        fields: &impl Serialize,
        at: Timestamp,
        op: impl FnOnce(&mut Self) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let key = format!("{kind}:{}", to_json(fields));
        if let Some((stored_key, answer)) = self.requests.get(id) {
            if *stored_key != key {
                return Err(RegistryError::DuplicateIdOtherFields(id.clone()));
            }
            return serde_json::from_str::<Result<T, RegistryError>>(answer)
                .map_err(|e| RegistryError::Storage(e.to_string()))?;
        }
        self.advance(at)?;
        let answer = op(self);
        if answer.as_ref().err().is_none_or(RegistryError::is_answer) {
            self.requests.insert(id.clone(), (key, to_json(&answer)));
        }
        answer
    }

    fn advance(&mut self, at: Timestamp) -> Result<(), RegistryError> {
        match self.last_at {
            Some(last) if at < last => Err(RegistryError::TimeWentBackwards { given: at, last }),
            _ => {
                self.last_at = Some(at);
                Ok(())
            }
        }
    }

    fn record(&mut self, at: Timestamp) {
        self.history.push((at, self.rows.clone()));
    }

    fn known(&self, account: &AccountId) -> Result<(), RegistryError> {
        match self.accounts.contains_key(account) {
            true => Ok(()),
            false => Err(RegistryError::UnknownAccount(account.clone())),
        }
    }

    fn available(&self, account: &AccountId, instrument: InstrumentId, vintage: Option<Vintage>) -> Qty {
        self.rows
            .iter()
            .filter(|(a, h)| a == account && h.reserved_by.is_none() && h.block.instrument == instrument)
            .filter(|(_, h)| vintage.is_none_or(|v| v == h.block.vintage))
            .map(|(_, h)| h.block.quantity())
            .sum()
    }

    fn entry(
        &mut self,
        account: &AccountId,
        at: Timestamp,
        kind: EntryKind,
        t: Option<(&Transfer, &AccountId)>,
    ) {
        let blocks = match t {
            Some((t, _)) => t.blocks.clone(),
            None => Vec::new(),
        };
        for block in blocks {
            let line = StatementLine {
                at,
                kind,
                block,
                transfer: t.map(|(t, _)| t.id.clone()),
                counterparty: t.map(|(_, c)| c.clone()),
            };
            self.entries.push((account.clone(), line));
        }
    }

    /// Reserves `quantity` units oldest first; the caller checked they are available.
    fn reserve(&mut self, req: &ProposeTransfer) -> Vec<SerialBlock> {
        let mut order: Vec<usize> = (0..self.rows.len())
            .filter(|&i| {
                let (a, h) = &self.rows[i];
                *a == req.from
                    && h.reserved_by.is_none()
                    && h.block.instrument == req.instrument
                    && req.vintage.is_none_or(|v| v == h.block.vintage)
            })
            .collect();
        order.sort_by_key(|&i| (self.rows[i].1.block.vintage, self.rows[i].1.block.start));
        let mut need = req.quantity;
        let mut taken = Vec::new();
        for i in order {
            if need == 0 {
                break;
            }
            let block = self.rows[i].1.block;
            let take = need.min(block.quantity());
            need -= take;
            let reserved = SerialBlock { end: block.start + take - 1, ..block };
            self.rows[i].1 = HeldBlock { block: reserved, reserved_by: Some(req.id.clone()) };
            if take < block.quantity() {
                let rest = SerialBlock { start: reserved.end + 1, ..block };
                self.rows.push((req.from.clone(), HeldBlock { block: rest, reserved_by: None }));
            }
            taken.push(reserved);
        }
        coalesce(taken)
    }

    fn propose_now(&mut self, req: &ProposeTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        let mut transfer = Transfer::rejected(req, at);
        let check = (|| {
            check_quantity(req.quantity)?;
            if req.from == req.to {
                return Err(RegistryError::SameAccount(req.from.clone()));
            }
            self.known(&req.from)?;
            self.known(&req.to)?;
            let available = self.available(&req.from, req.instrument, req.vintage);
            if available < req.quantity {
                return Err(RegistryError::InsufficientUnits {
                    account: req.from.clone(),
                    requested: req.quantity,
                    available,
                });
            }
            Ok(())
        })();
        if let Err(e) = check {
            self.transfers.insert(req.id.clone(), transfer);
            return Err(e);
        }
        transfer.blocks = self.reserve(req);
        transfer.status = TransferStatus::Accepted;
        transfer.resolved_at = None;
        self.entry(&req.from, at, EntryKind::Reserved, Some((&transfer, &req.to)));
        self.transfers.insert(req.id.clone(), transfer.clone());
        self.record(at);
        Ok(transfer)
    }

    /// Ends a pending transfer: moves its blocks to the acquiring account when `status` is
    /// completed, releases them otherwise.
    fn resolve(
        &mut self,
        id: &RequestId,
        status: TransferStatus,
        at: Timestamp,
    ) -> Result<Transfer, RegistryError> {
        let mut t =
            self.transfers.get(id).cloned().ok_or_else(|| RegistryError::UnknownTransfer(id.clone()))?;
        if !t.status.is_pending() {
            return Err(RegistryError::TransferNotPending { transfer: id.clone(), status: t.status });
        }
        for (account, held) in self.rows.iter_mut().filter(|(_, h)| h.reserved_by.as_ref() == Some(id)) {
            held.reserved_by = None;
            if status == TransferStatus::Completed {
                *account = t.to.clone();
            }
        }
        t.status = status;
        t.resolved_at = Some(at);
        if status == TransferStatus::Completed {
            self.entry(&t.from, at, EntryKind::Debited, Some((&t, &t.to)));
            self.entry(&t.to, at, EntryKind::Credited, Some((&t, &t.from)));
        } else {
            self.entry(&t.from, at, EntryKind::Released, Some((&t, &t.to)));
        }
        self.transfers.insert(id.clone(), t.clone());
        self.record(at);
        Ok(t)
    }
}

impl Registry for NaiveRegistry {
    fn open_account(&mut self, req: &OpenAccount, at: Timestamp) -> Result<Account, RegistryError> {
        self.idempotent(&req.id, "open_account", req, at, |r| {
            if r.accounts.contains_key(&req.account) {
                return Err(RegistryError::AccountExists(req.account.clone()));
            }
            r.accounts.insert(req.account.clone(), at);
            Ok(Account { id: req.account.clone(), opened_at: at })
        })
    }

    fn issue(&mut self, req: &IssueUnits, at: Timestamp) -> Result<Issuance, RegistryError> {
        self.idempotent(&req.id, "issue", req, at, |r| {
            check_quantity(req.quantity)?;
            r.known(&req.account)?;
            let key = (req.instrument, req.vintage);
            let start = r.next_serial.get(&key).copied().unwrap_or(1);
            let end = start.checked_add(req.quantity - 1).filter(|&e| e <= SERIAL_MAX).ok_or(
                RegistryError::SerialsExhausted { instrument: req.instrument, vintage: req.vintage },
            )?;
            r.next_serial.insert(key, end + 1);
            let block = SerialBlock { instrument: req.instrument, vintage: req.vintage, start, end };
            r.rows.push((req.account.clone(), HeldBlock { block, reserved_by: None }));
            let line =
                StatementLine { at, kind: EntryKind::Issued, block, transfer: None, counterparty: None };
            r.entries.push((req.account.clone(), line));
            r.record(at);
            Ok(Issuance { account: req.account.clone(), block, issued_at: at })
        })
    }

    fn propose(&mut self, req: &ProposeTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        self.idempotent(&req.id, "propose", req, at, |r| r.propose_now(req, at))
    }

    fn post(&mut self, req: &PostTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        self.idempotent(&req.id, "post", req, at, |r| r.resolve(&req.transfer, TransferStatus::Completed, at))
    }

    fn void(&mut self, req: &VoidTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        self.idempotent(&req.id, "void", req, at, |r| {
            r.resolve(&req.transfer, TransferStatus::Terminated, at)
        })
    }

    fn expire_pending(&mut self, timeout_ns: u64, now: Timestamp) -> Result<Vec<Transfer>, RegistryError> {
        self.advance(now)?;
        let cutoff = now.0.saturating_sub(i64::try_from(timeout_ns).unwrap_or(i64::MAX));
        let due: Vec<RequestId> = self
            .transfers
            .values()
            .filter(|t| t.status.is_pending() && t.proposed_at.0 <= cutoff)
            .map(|t| t.id.clone())
            .collect();
        due.iter().map(|id| self.resolve(id, TransferStatus::Cancelled, now)).collect()
    }

    fn transfer(&self, id: &RequestId) -> Result<Option<Transfer>, RegistryError> {
        Ok(self.transfers.get(id).cloned())
    }

    fn holdings(
        &self,
        account: &AccountId,
        instrument: InstrumentId,
        as_of: Option<Timestamp>,
    ) -> Result<Holdings, RegistryError> {
        self.known(account)?;
        let rows: &[Row] = match as_of {
            None => &self.rows,
            Some(t) => self.history.iter().rev().find(|(at, _)| *at <= t).map_or(&[], |(_, rows)| rows),
        };
        let blocks = rows
            .iter()
            .filter(|(a, h)| a == account && h.block.instrument == instrument)
            .map(|(_, h)| h.clone())
            .collect();
        Ok(Holdings::from_blocks(account.clone(), instrument, as_of, blocks))
    }

    fn statement(
        &self,
        account: &AccountId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Statement, RegistryError> {
        self.known(account)?;
        let lines = self
            .entries
            .iter()
            .filter(|(a, l)| a == account && from <= l.at && l.at < to)
            .map(|(_, l)| l.clone())
            .collect();
        Ok(Statement { account: account.clone(), from, to, lines })
    }

    fn holdings_check(
        &self,
        instrument: InstrumentId,
        vintage: Option<Vintage>,
        sells: &BTreeMap<AccountId, Qty>,
    ) -> Result<Vec<Shortfall>, RegistryError> {
        Ok(sells
            .iter()
            .filter_map(|(account, &requested)| {
                let available = self.available(account, instrument, vintage);
                (available < requested).then(|| Shortfall { account: account.clone(), requested, available })
            })
            .collect())
    }
}
