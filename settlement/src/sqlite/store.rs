//! Row-level SQL of the embedded registry: reading and writing blocks, transfers and entries.
//! Every function runs inside the caller's transaction.

use cccx_engine::types::{InstrumentId, Qty};
use rusqlite::{params, Connection, OptionalExtension, Row};
use rustc_hash::FxHashSet;

use crate::error::RegistryError;
use crate::types::{
    AccountId, EntryKind, HeldBlock, RequestId, SerialBlock, StatementLine, Timestamp, Transfer,
    TransferStatus, Vintage,
};

/// The ids the registry assigns itself (portable: no autoincrement), and what the current
/// transaction has already looked up. Loaded on open; a rolled back transaction leaves a gap
/// in the ids, which is harmless.
#[derive(Debug, Default)]
pub struct Counters {
    /// The last block id used.
    pub block_id: i64,
    /// The last entry sequence number used.
    pub entry_seq: i64,
    /// Accounts found open in the current transaction (a batch names the same few hundred
    /// accounts thousands of times). Cleared when a transaction begins, so nothing a rolled
    /// back transaction saw outlives it; accounts are never closed.
    open_accounts: FxHashSet<AccountId>,
}

impl Counters {
    /// The counters of a database: one past the largest ids in it.
    pub fn load(c: &Connection) -> Result<Counters, RegistryError> {
        let block_id = c.query_row(
            "SELECT COALESCE(MAX(m), 0) FROM (SELECT MAX(block_id) AS m FROM blocks
             UNION ALL SELECT MAX(block_id) AS m FROM block_history) ids",
            [],
            |r| r.get(0),
        )?;
        let entry_seq = c.query_row("SELECT COALESCE(MAX(entry_seq), 0) FROM entries", [], |r| r.get(0))?;
        Ok(Counters { block_id, entry_seq, open_accounts: FxHashSet::default() })
    }

    /// Forgets what the previous transaction looked up.
    pub fn begin(&mut self) {
        self.open_accounts.clear();
    }

    /// [`known`], asking the database once per account and transaction.
    pub fn known(&mut self, c: &Connection, account: &AccountId) -> Result<(), RegistryError> {
        if self.open_accounts.contains(account) {
            return Ok(());
        }
        known(c, account)?;
        self.open_accounts.insert(account.clone());
        Ok(())
    }
}

fn corrupt(what: &str) -> RegistryError {
    RegistryError::Storage(format!("unreadable {what} in the database"))
}

/// A stored non-negative integer as `u64`.
pub fn to_u64(v: i64, what: &str) -> Result<u64, RegistryError> {
    u64::try_from(v).map_err(|_| corrupt(what))
}

/// A quantity or serial (at most `i64::MAX` by the request limits) as a database integer.
pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn vintage(v: i64) -> Result<Vintage, RegistryError> {
    u16::try_from(v).map(Vintage).map_err(|_| corrupt("vintage"))
}

fn instrument(v: i64) -> Result<InstrumentId, RegistryError> {
    u32::try_from(v).map(InstrumentId).map_err(|_| corrupt("instrument"))
}

fn request_id(s: String) -> Result<RequestId, RegistryError> {
    RequestId::new(s).map_err(|_| corrupt("request id"))
}

fn account_id(s: String) -> Result<AccountId, RegistryError> {
    AccountId::new(s).map_err(|_| corrupt("account id"))
}

/// A block's columns as stored: instrument, vintage, serial_start, serial_end.
type BlockCols = (i64, i64, i64, i64);

/// A serial block from four columns: instrument, vintage, serial_start, serial_end.
fn block_at(r: &Row<'_>, i: usize) -> rusqlite::Result<BlockCols> {
    Ok((r.get(i)?, r.get(i + 1)?, r.get(i + 2)?, r.get(i + 3)?))
}

fn to_block((i, v, s, e): BlockCols) -> Result<SerialBlock, RegistryError> {
    let block = SerialBlock {
        instrument: instrument(i)?,
        vintage: vintage(v)?,
        start: to_u64(s, "serial")?,
        end: to_u64(e, "serial")?,
    };
    if block.start > block.end {
        return Err(corrupt("block"));
    }
    Ok(block)
}

/// Whether an account is open.
pub fn account_exists(c: &Connection, account: &AccountId) -> Result<bool, RegistryError> {
    let found: Option<i64> = c
        .prepare_cached("SELECT 1 FROM accounts WHERE account_id = ?1")?
        .query_row([account.as_str()], |r| r.get(0))
        .optional()?;
    Ok(found.is_some())
}

/// Fails with [`RegistryError::UnknownAccount`] unless the account is open.
pub fn known(c: &Connection, account: &AccountId) -> Result<(), RegistryError> {
    match account_exists(c, account)? {
        true => Ok(()),
        false => Err(RegistryError::UnknownAccount(account.clone())),
    }
}

/// Adds a current block.
pub fn insert_block(
    c: &Connection,
    ids: &mut Counters,
    account: &AccountId,
    held: &HeldBlock,
    at: Timestamp,
) -> Result<(), RegistryError> {
    ids.block_id += 1;
    let b = &held.block;
    c.prepare_cached(
        "INSERT INTO blocks (block_id, account_id, instrument, vintage, serial_start, serial_end,
         reserved_by, valid_from_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        ids.block_id,
        account.as_str(),
        i64::from(b.instrument.0),
        i64::from(b.vintage.0),
        to_i64(b.start),
        to_i64(b.end),
        held.reserved_by.as_ref().map(RequestId::as_str),
        at.0
    ])?;
    Ok(())
}

/// Ends a current block at `at`: it moves to the history unless it was created at `at` too
/// (then no view as of any time ever saw it).
pub fn close_block(c: &Connection, block_id: i64, at: Timestamp) -> Result<(), RegistryError> {
    c.prepare_cached(
        "INSERT INTO block_history (block_id, account_id, instrument, vintage, serial_start, serial_end,
         reserved_by, valid_from_ns, valid_to_ns)
         SELECT block_id, account_id, instrument, vintage, serial_start, serial_end, reserved_by,
         valid_from_ns, ?2 FROM blocks WHERE block_id = ?1 AND valid_from_ns < ?2",
    )?
    .execute(params![block_id, at.0])?;
    c.prepare_cached("DELETE FROM blocks WHERE block_id = ?1")?.execute([block_id])?;
    Ok(())
}

/// A current block as stored: its id, its serials and since when it is current.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CurrentBlock {
    /// The block id.
    pub id: i64,
    /// Its serials.
    pub block: SerialBlock,
    /// Since when it is current.
    pub valid_from: Timestamp,
}

/// An account's unreserved blocks of an instrument (and vintage, if given), oldest first, read
/// until they hold `need` units, and the units they hold. Fewer than `need` means every free
/// block was read: the sum is what the account has available. (An account that received many
/// transfers holds many blocks; a proposal reads only the few it takes.)
pub fn free_blocks(
    c: &Connection,
    account: &AccountId,
    instrument: InstrumentId,
    vintage: Option<Vintage>,
    need: Qty,
) -> Result<(Vec<CurrentBlock>, Qty), RegistryError> {
    let columns = "SELECT block_id, instrument, vintage, serial_start, serial_end, valid_from_ns FROM blocks
         WHERE account_id = ?1 AND instrument = ?2 AND reserved_by IS NULL";
    let mut stmt = match vintage {
        None => c.prepare_cached(&format!("{columns} ORDER BY vintage, serial_start"))?,
        Some(_) => c.prepare_cached(&format!("{columns} AND vintage = ?3 ORDER BY vintage, serial_start"))?,
    };
    let inst = i64::from(instrument.0);
    let mut rows = match vintage {
        None => stmt.query(params![account.as_str(), inst])?,
        Some(v) => stmt.query(params![account.as_str(), inst, i64::from(v.0)])?,
    };
    let (mut blocks, mut held): (Vec<CurrentBlock>, Qty) = (Vec::new(), 0);
    while let Some(r) = rows.next()? {
        let block = to_block(block_at(r, 1)?)?;
        blocks.push(CurrentBlock { id: r.get(0)?, block, valid_from: Timestamp(r.get(5)?) });
        held = held.saturating_add(block.quantity());
        if held >= need {
            break;
        }
    }
    Ok((blocks, held))
}

/// The current blocks a pending transfer reserves, with their holder.
pub fn reserved_blocks(
    c: &Connection,
    transfer: &RequestId,
) -> Result<Vec<(AccountId, CurrentBlock)>, RegistryError> {
    let rows: Vec<(i64, String, BlockCols, i64)> = c
        .prepare_cached(
            "SELECT block_id, account_id, instrument, vintage, serial_start, serial_end, valid_from_ns
             FROM blocks WHERE reserved_by = ?1",
        )?
        .query_map([transfer.as_str()], |r| Ok((r.get(0)?, r.get(1)?, block_at(r, 2)?, r.get(6)?)))?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(id, a, b, from)| {
            Ok((account_id(a)?, CurrentBlock { id, block: to_block(b)?, valid_from: Timestamp(from) }))
        })
        .collect()
}

/// Replaces a current block by `held`, held by `account`, at `at`. A block that became current
/// at `at` itself was never seen by a view as of any time (views as of `at` see every change
/// dated `at`), so it is changed in place: one statement instead of moving it to the history
/// (which [`close_block`] skips for it anyway), deleting it and inserting the new one. Within
/// one settlement run every batch is dated alike, so most blocks a run moves are of this kind.
pub fn replace_block(
    c: &Connection,
    ids: &mut Counters,
    old: &CurrentBlock,
    account: &AccountId,
    held: &HeldBlock,
    at: Timestamp,
) -> Result<(), RegistryError> {
    if old.valid_from != at {
        close_block(c, old.id, at)?;
        return insert_block(c, ids, account, held, at);
    }
    let b = &held.block;
    c.prepare_cached(
        "UPDATE blocks SET account_id = ?2, instrument = ?3, vintage = ?4, serial_start = ?5,
         serial_end = ?6, reserved_by = ?7 WHERE block_id = ?1",
    )?
    .execute(params![
        old.id,
        account.as_str(),
        i64::from(b.instrument.0),
        i64::from(b.vintage.0),
        to_i64(b.start),
        to_i64(b.end),
        held.reserved_by.as_ref().map(RequestId::as_str)
    ])?;
    Ok(())
}

/// An account's blocks of an instrument, now or as of a time.
pub fn held_blocks(
    c: &Connection,
    account: &AccountId,
    instrument: InstrumentId,
    as_of: Option<Timestamp>,
) -> Result<Vec<HeldBlock>, RegistryError> {
    let current = "SELECT instrument, vintage, serial_start, serial_end, reserved_by FROM blocks
         WHERE account_id = ?1 AND instrument = ?2";
    let inst = i64::from(instrument.0);
    let map = |r: &Row<'_>| Ok((block_at(r, 0)?, r.get::<_, Option<String>>(4)?));
    let rows: Vec<(BlockCols, Option<String>)> = match as_of {
        None => c
            .prepare_cached(current)?
            .query_map(params![account.as_str(), inst], map)?
            .collect::<Result<_, _>>(),
        Some(t) => c
            .prepare_cached(&format!(
                "{current} AND valid_from_ns <= ?3
                 UNION ALL
                 SELECT instrument, vintage, serial_start, serial_end, reserved_by FROM block_history
                 WHERE account_id = ?1 AND instrument = ?2 AND valid_from_ns <= ?3 AND valid_to_ns > ?3"
            ))?
            .query_map(params![account.as_str(), inst, t.0], map)?
            .collect::<Result<_, _>>(),
    }?;
    rows.into_iter()
        .map(|(b, r)| Ok(HeldBlock { block: to_block(b)?, reserved_by: r.map(request_id).transpose()? }))
        .collect()
}

/// Every current block, with its holder.
pub fn all_blocks(c: &Connection) -> Result<Vec<(AccountId, HeldBlock)>, RegistryError> {
    let rows: Vec<(String, BlockCols, Option<String>)> = c
        .prepare_cached(
            "SELECT account_id, instrument, vintage, serial_start, serial_end, reserved_by FROM blocks",
        )?
        .query_map([], |r| Ok((r.get(0)?, block_at(r, 1)?, r.get(5)?)))?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(a, b, r)| {
            Ok((
                account_id(a)?,
                HeldBlock { block: to_block(b)?, reserved_by: r.map(request_id).transpose()? },
            ))
        })
        .collect()
}

/// Stores a new transfer and its blocks.
pub fn insert_transfer(c: &Connection, t: &Transfer) -> Result<(), RegistryError> {
    c.prepare_cached(
        "INSERT INTO transfers (transfer_id, from_account, to_account, instrument, vintage, quantity,
         status, proposed_at_ns, resolved_at_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        t.id.as_str(),
        t.from.as_str(),
        t.to.as_str(),
        i64::from(t.instrument.0),
        t.vintage.map(|v| i64::from(v.0)),
        to_i64(t.quantity),
        t.status.as_str(),
        t.proposed_at.0,
        t.resolved_at.map(|r| r.0)
    ])?;
    let mut stmt = c.prepare_cached(
        "INSERT INTO transfer_blocks (transfer_id, position, instrument, vintage, serial_start, serial_end)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (position, b) in t.blocks.iter().enumerate() {
        stmt.execute(params![
            t.id.as_str(),
            i64::try_from(position).unwrap_or(i64::MAX),
            i64::from(b.instrument.0),
            i64::from(b.vintage.0),
            to_i64(b.start),
            to_i64(b.end)
        ])?;
    }
    Ok(())
}

/// Records a transfer's final status.
pub fn resolve_transfer(
    c: &Connection,
    id: &RequestId,
    status: TransferStatus,
    at: Timestamp,
) -> Result<(), RegistryError> {
    c.prepare_cached("UPDATE transfers SET status = ?2, resolved_at_ns = ?3 WHERE transfer_id = ?1")?
        .execute(params![id.as_str(), status.as_str(), at.0])?;
    Ok(())
}

type TransferRow = (String, String, String, i64, Option<i64>, i64, String, i64, Option<i64>);

/// A transfer, if one has this id.
pub fn load_transfer(c: &Connection, id: &RequestId) -> Result<Option<Transfer>, RegistryError> {
    let row: Option<TransferRow> = c
        .prepare_cached(
            "SELECT transfer_id, from_account, to_account, instrument, vintage, quantity, status,
             proposed_at_ns, resolved_at_ns FROM transfers WHERE transfer_id = ?1",
        )?
        .query_row([id.as_str()], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })
        .optional()?;
    let Some((id, from, to, inst, vin, quantity, status, proposed, resolved)) = row else {
        return Ok(None);
    };
    let blocks: Vec<BlockCols> = c
        .prepare_cached(
            "SELECT instrument, vintage, serial_start, serial_end FROM transfer_blocks
             WHERE transfer_id = ?1 ORDER BY position",
        )?
        .query_map([id.as_str()], |r| block_at(r, 0))?
        .collect::<Result<_, _>>()?;
    Ok(Some(Transfer {
        id: request_id(id)?,
        from: account_id(from)?,
        to: account_id(to)?,
        instrument: instrument(inst)?,
        vintage: vin.map(vintage).transpose()?,
        quantity: to_u64(quantity, "quantity")?,
        status: TransferStatus::parse(&status).ok_or_else(|| corrupt("transfer status"))?,
        blocks: blocks.into_iter().map(to_block).collect::<Result<_, _>>()?,
        proposed_at: Timestamp(proposed),
        resolved_at: resolved.map(Timestamp),
    }))
}

/// The ids of the pending transfers proposed at or before `cutoff`.
pub fn pending_due(c: &Connection, cutoff: Timestamp) -> Result<Vec<RequestId>, RegistryError> {
    let ids: Vec<String> = c
        .prepare_cached("SELECT transfer_id FROM transfers WHERE status = ?1 AND proposed_at_ns <= ?2")?
        .query_map(params![TransferStatus::Accepted.as_str(), cutoff.0], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut ids: Vec<RequestId> = ids.into_iter().map(request_id).collect::<Result<_, _>>()?;
    // Sorted here rather than in SQL: text collation differs between databases.
    ids.sort();
    Ok(ids)
}

/// Appends a statement line for an account.
pub fn insert_entry(
    c: &Connection,
    ids: &mut Counters,
    account: &AccountId,
    line: &StatementLine,
) -> Result<(), RegistryError> {
    ids.entry_seq += 1;
    let b = &line.block;
    c.prepare_cached(
        "INSERT INTO entries (entry_seq, account_id, at_ns, kind, instrument, vintage, serial_start,
         serial_end, transfer_id, counterparty) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        ids.entry_seq,
        account.as_str(),
        line.at.0,
        line.kind.as_str(),
        i64::from(b.instrument.0),
        i64::from(b.vintage.0),
        to_i64(b.start),
        to_i64(b.end),
        line.transfer.as_ref().map(RequestId::as_str),
        line.counterparty.as_ref().map(AccountId::as_str)
    ])?;
    Ok(())
}

type EntryRow = (i64, String, BlockCols, Option<String>, Option<String>);

/// An account's statement lines in `[from, to)`, in ledger order.
pub fn entries(
    c: &Connection,
    account: &AccountId,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<StatementLine>, RegistryError> {
    let rows: Vec<EntryRow> = c
        .prepare_cached(
            "SELECT at_ns, kind, instrument, vintage, serial_start, serial_end, transfer_id, counterparty
             FROM entries WHERE account_id = ?1 AND at_ns >= ?2 AND at_ns < ?3 ORDER BY entry_seq",
        )?
        .query_map(params![account.as_str(), from.0, to.0], |r| {
            Ok((r.get(0)?, r.get(1)?, block_at(r, 2)?, r.get(6)?, r.get(7)?))
        })?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(at, kind, b, t, cp)| {
            Ok(StatementLine {
                at: Timestamp(at),
                kind: EntryKind::parse(&kind).ok_or_else(|| corrupt("entry kind"))?,
                block: to_block(b)?,
                transfer: t.map(request_id).transpose()?,
                counterparty: cp.map(account_id).transpose()?,
            })
        })
        .collect()
}
