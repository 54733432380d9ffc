//! The embedded registry: the ledger in a SQLite database (the default for `cccx serve`).
//!
//! Each request runs in one database transaction: look up the request id, check the time,
//! check the request, write its effects, store the answer under the id, commit. Checks come
//! before writes, so a refusal stores only the answer (and, for a proposal, the rejected
//! transfer); a storage error rolls everything back and stores nothing.

mod schema;
mod store;

use std::collections::BTreeMap;
use std::path::Path;

use cccx_engine::types::{InstrumentId, Qty};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{de::DeserializeOwned, Serialize};

pub use schema::SCHEMA_VERSION;
use store::Counters;

use crate::error::RegistryError;
use crate::registry::{BatchAnswers, BatchOp, Registry};
use crate::types::{
    merge_held, Account, AccountId, EntryKind, HeldBlock, Holdings, Issuance, IssueUnits, OpenAccount,
    PostTransfer, ProposeTransfer, RequestId, SerialBlock, Shortfall, Statement, StatementLine, Timestamp,
    Transfer, TransferStatus, Vintage, VoidTransfer, REQUEST_QTY_MAX, SERIAL_MAX,
};

/// How many prepared statements a connection keeps.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// The write-ahead log's size, in pages, that triggers a checkpoint (64 MiB of 4 KiB pages).
pub const WAL_CHECKPOINT_PAGES: i64 = 16_384;

/// How the database syncs a commit to disk.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit reaches the disk before the request returns (`synchronous=FULL`).
    #[default]
    Full,
    /// Commits reach the write-ahead log; a power cut may lose the last few, never corrupt
    /// the database (`synchronous=NORMAL`).
    Normal,
}

/// The embedded registry on SQLite. See the [module docs](self).
///
/// One `SqliteRegistry` is the only writer of its database: it keeps the next block id and
/// entry sequence number in memory (portable, no autoincrement). A second writer on the same
/// file would fail on a duplicate key (a storage error, nothing corrupted), never interleave.
#[derive(Debug)]
pub struct SqliteRegistry {
    conn: Connection,
    ids: Counters,
    last_at: Timestamp,
}

fn check_quantity(quantity: Qty) -> Result<(), RegistryError> {
    if quantity == 0 || quantity > REQUEST_QTY_MAX {
        return Err(RegistryError::InvalidQuantity { quantity, max: REQUEST_QTY_MAX });
    }
    Ok(())
}

/// Plans that do not depend on the values bound (SQLite's query planner stability guarantee).
///
/// Without it, SQLite marks a statement whose plan could depend on a bound value (an equality
/// on a column the index does not cover, a `LIMIT ?`) for re-preparation when that value is
/// rebound; `rusqlite` clears the bindings of every statement it returns to its cache, so each
/// such cached statement was parsed and planned again on every use (about 9% of a settlement
/// run). The plans here come from the indexes, not from the values.
pub(crate) fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

/// The hash that tells a retry (same fields) from a reused id (other fields).
fn fields_hash(kind: &str, fields: &impl Serialize) -> Result<String, RegistryError> {
    let json = serde_json::to_string(fields).map_err(|e| RegistryError::Storage(e.to_string()))?;
    let mut h = blake3::Hasher::new();
    h.update(kind.as_bytes());
    h.update(b":");
    h.update(json.as_bytes());
    Ok(h.finalize().to_hex().to_string())
}

impl SqliteRegistry {
    /// Opens (or creates) the registry in a database file, durable on every commit.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteRegistry, RegistryError> {
        SqliteRegistry::open_with(path, Durability::Full)
    }

    /// Opens (or creates) the registry in a database file with the given durability.
    pub fn open_with(
        path: impl AsRef<Path>,
        durability: Durability,
    ) -> Result<SqliteRegistry, RegistryError> {
        let conn = Connection::open(path)?;
        // Connection settings, not schema: the SQLite-specific part stays here.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        // Statement journals in memory rather than in temporary files, and enough pages cached
        // that the indexes are not read back from the file system on every lookup (64 MiB).
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "cache_size", -65_536)?;
        // A batch's transaction dirties thousands of pages across the indexes; with the default
        // (a checkpoint once the log holds 1,000 pages) every batch commit was followed by a
        // checkpoint copying them all back. Copy back less often: pages that successive
        // batches change again (index leaves of the same accounts) are written back once.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        SqliteRegistry::with_connection(conn)
    }

    /// A registry in a private in-memory database (tests).
    pub fn open_in_memory() -> Result<SqliteRegistry, RegistryError> {
        SqliteRegistry::with_connection(Connection::open_in_memory()?)
    }

    fn with_connection(mut conn: Connection) -> Result<SqliteRegistry, RegistryError> {
        // A request uses about twenty statements: keep them all prepared (the default of 16
        // evicted and re-parsed some on every request).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        stable_plans(&conn)?;
        schema::create(&mut conn)?;
        let ids = Counters::load(&conn)?;
        let last_at = Timestamp(conn.query_row("SELECT last_at_ns FROM ledger_clock", [], |r| r.get(0))?);
        Ok(SqliteRegistry { conn, ids, last_at })
    }

    /// Every block every account holds now, by account, in canonical form ([`merge_held`]).
    pub fn snapshot(&self) -> Result<BTreeMap<AccountId, Vec<HeldBlock>>, RegistryError> {
        let mut by_account: BTreeMap<AccountId, Vec<HeldBlock>> = BTreeMap::new();
        for (account, held) in store::all_blocks(&self.conn)? {
            by_account.entry(account).or_default().push(held);
        }
        Ok(by_account.into_iter().map(|(a, blocks)| (a, merge_held(blocks))).collect())
    }

    /// Checks the ledger's invariants: no serial is held twice; the blocks of each instrument
    /// and vintage are exactly the serials issued (1 up to the counter); every reserved block
    /// belongs to a pending transfer out of its holder, and reserves exactly its quantity.
    pub fn check_invariants(&self) -> Result<(), String> {
        let err = |e: RegistryError| e.to_string();
        let mut blocks = store::all_blocks(&self.conn).map_err(err)?;
        blocks.sort_by_key(|(_, h)| h.block);
        let mut issued: BTreeMap<(InstrumentId, Vintage), u64> = BTreeMap::new();
        for (account, held) in &blocks {
            let b = held.block;
            let next = issued.entry((b.instrument, b.vintage)).or_insert(1);
            if b.start != *next {
                return Err(format!("serials {}..{} of {b:?} missing or held twice", *next, b.start));
            }
            *next = b.end + 1;
            if let Some(id) = &held.reserved_by {
                let t = store::load_transfer(&self.conn, id).map_err(err)?;
                match t {
                    Some(t) if t.status.is_pending() && t.from == *account => {}
                    _ => {
                        return Err(format!(
                            "{b:?} of {account} reserved by {id}, not a pending transfer of it"
                        ))
                    }
                }
            }
        }
        let counters: Vec<(i64, i64, i64)> = (|| {
            let mut stmt =
                self.conn.prepare("SELECT instrument, vintage, next_serial FROM serial_counters")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })()
        .map_err(|e| e.to_string())?;
        for (i, v, next) in counters {
            let key = (InstrumentId(i as u32), Vintage(v as u16));
            if issued.get(&key).map(|&n| n as i64) != Some(next) {
                return Err(format!(
                    "{key:?}: blocks end before {:?}, counter says {next}",
                    issued.get(&key)
                ));
            }
        }
        self.check_reservations().map_err(err)
    }

    fn check_reservations(&self) -> Result<(), RegistryError> {
        for id in store::pending_due(&self.conn, Timestamp(i64::MAX))? {
            let Some(t) = store::load_transfer(&self.conn, &id)? else { continue };
            let reserved: Qty =
                store::reserved_blocks(&self.conn, &id)?.iter().map(|(_, b)| b.block.quantity()).sum();
            if reserved != t.quantity {
                return Err(RegistryError::Storage(format!(
                    "transfer {id} reserves {reserved} of {}",
                    t.quantity
                )));
            }
        }
        Ok(())
    }

    /// Runs `op` in one transaction unless the request id was seen before, and stores its
    /// answer under the id.
    fn idempotent<T: Serialize + DeserializeOwned>(
        &mut self,
        id: &RequestId,
        kind: &str,
        fields: &impl Serialize,
        at: Timestamp,
        op: impl FnOnce(&Connection, &mut Counters) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let tx = self.conn.transaction()?;
        self.ids.begin();
        let done = request(&tx, &mut self.ids, self.last_at, id, kind, fields, at, op)?;
        if done.wrote {
            write_clock(&tx, at)?;
            tx.commit()?;
            self.last_at = at;
        }
        done.answer
    }

    /// The batch in one transaction, validate then apply: every refusal, and every error
    /// without an answer but a storage error (a reused id, a time that went back), is found
    /// before the operation writes anything, so one operation's refusal leaves the others
    /// alone without a savepoint each. A storage error rolls the whole batch back: no answer.
    fn batch(&mut self, ops: &[BatchOp], at: Timestamp) -> Result<BatchAnswers, RegistryError> {
        let tx = self.conn.transaction()?;
        self.ids.begin();
        let mut answers = Vec::with_capacity(ops.len());
        let mut wrote = false;
        for op in ops {
            let (ids, last) = (&mut self.ids, self.last_at);
            let done = match op {
                BatchOp::Propose(req) => {
                    request(&tx, ids, last, &req.id, "propose", req, at, |c, ids| propose(c, ids, req, at))
                }
                BatchOp::Post(req) => request(&tx, ids, last, &req.id, "post", req, at, |c, ids| {
                    resolve(c, ids, &req.transfer, TransferStatus::Completed, at)
                }),
                BatchOp::Void(req) => request(&tx, ids, last, &req.id, "void", req, at, |c, ids| {
                    resolve(c, ids, &req.transfer, TransferStatus::Terminated, at)
                }),
            };
            match done {
                Ok(done) => {
                    wrote |= done.wrote;
                    answers.push(done.answer);
                }
                // Found before the operation wrote anything (see `request`).
                Err(
                    e @ (RegistryError::DuplicateIdOtherFields(_) | RegistryError::TimeWentBackwards { .. }),
                ) => answers.push(Err(e)),
                // Dropping the transaction rolls back the whole batch.
                Err(e) => return Err(e),
            }
        }
        if wrote {
            write_clock(&tx, at)?;
            tx.commit()?;
            self.last_at = at;
        }
        Ok(answers)
    }
}

/// What one request did inside the caller's transaction: its answer (stored before, or new),
/// and whether it wrote (then the caller commits, and the ledger's clock is at `at`).
struct Done<T> {
    answer: Result<T, RegistryError>,
    wrote: bool,
}

/// Runs `op` unless the request id was seen before, and stores its answer under the id. `Err`
/// is an error that is not an answer: the caller rolls back whatever was written. A reused id
/// and a time that went back are found before anything is written.
#[allow(clippy::too_many_arguments)]
fn request<T: Serialize + DeserializeOwned>(
    c: &Connection,
    ids: &mut Counters,
    last_at: Timestamp,
    id: &RequestId,
    kind: &str,
    fields: &impl Serialize,
    at: Timestamp,
    op: impl FnOnce(&Connection, &mut Counters) -> Result<T, RegistryError>,
) -> Result<Done<T>, RegistryError> {
    let hash = fields_hash(kind, fields)?;
    let stored: Option<(String, String)> = c
        .prepare_cached("SELECT fields_hash, answer FROM requests WHERE request_id = ?1")?
        .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((stored_hash, answer)) = stored {
        if stored_hash != hash {
            return Err(RegistryError::DuplicateIdOtherFields(id.clone()));
        }
        let answer = serde_json::from_str::<Result<T, RegistryError>>(&answer)
            .map_err(|e| RegistryError::Storage(format!("stored answer of {id}: {e}")))?;
        return Ok(Done { answer, wrote: false });
    }
    check_time(last_at, at)?;
    let answer = match op(c, ids) {
        Err(e) if !e.is_answer() => return Err(e),
        answer => answer,
    };
    let json = serde_json::to_string(&answer).map_err(|e| RegistryError::Storage(e.to_string()))?;
    c.prepare_cached(
        "INSERT INTO requests (request_id, kind, fields_hash, answer, at_ns) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id.as_str(), kind, hash, json, at.0])?;
    Ok(Done { answer, wrote: true })
}

/// Refuses a time before the ledger's clock.
fn check_time(last: Timestamp, at: Timestamp) -> Result<(), RegistryError> {
    if at < last {
        return Err(RegistryError::TimeWentBackwards { given: at, last });
    }
    Ok(())
}

/// Moves the ledger's clock to `at` (checked by [`check_time`]): once per transaction that
/// wrote, just before it commits, rather than once per request in it.
fn write_clock(c: &Connection, at: Timestamp) -> Result<(), RegistryError> {
    c.prepare_cached("UPDATE ledger_clock SET last_at_ns = ?1")?.execute([at.0])?;
    Ok(())
}

fn issue(
    c: &Connection,
    ids: &mut Counters,
    req: &IssueUnits,
    at: Timestamp,
) -> Result<Issuance, RegistryError> {
    check_quantity(req.quantity)?;
    store::known(c, &req.account)?;
    let key = params![i64::from(req.instrument.0), i64::from(req.vintage.0)];
    let next: Option<i64> = c
        .prepare_cached("SELECT next_serial FROM serial_counters WHERE instrument = ?1 AND vintage = ?2")?
        .query_row(key, |r| r.get(0))
        .optional()?;
    let start = match next {
        Some(n) => store::to_u64(n, "serial counter")?,
        None => 1,
    };
    let exhausted = RegistryError::SerialsExhausted { instrument: req.instrument, vintage: req.vintage };
    let end = start.checked_add(req.quantity - 1).filter(|&e| e <= SERIAL_MAX).ok_or(exhausted)?;
    let sql = match next {
        Some(_) => "UPDATE serial_counters SET next_serial = ?3 WHERE instrument = ?1 AND vintage = ?2",
        None => "INSERT INTO serial_counters (instrument, vintage, next_serial) VALUES (?1, ?2, ?3)",
    };
    c.prepare_cached(sql)?.execute(params![
        i64::from(req.instrument.0),
        i64::from(req.vintage.0),
        store::to_i64(end + 1)
    ])?;
    let block = SerialBlock { instrument: req.instrument, vintage: req.vintage, start, end };
    store::insert_block(c, ids, &req.account, &HeldBlock { block, reserved_by: None }, at)?;
    let line = StatementLine { at, kind: EntryKind::Issued, block, transfer: None, counterparty: None };
    store::insert_entry(c, ids, &req.account, &line)?;
    Ok(Issuance { account: req.account.clone(), block, issued_at: at })
}

/// The blocks a proposal takes, oldest first, as (block id, whole block, units taken), or the
/// refusal if the account has too few units available.
fn pick(
    c: &Connection,
    ids: &mut Counters,
    req: &ProposeTransfer,
) -> Result<Vec<(store::CurrentBlock, Qty)>, RegistryError> {
    check_quantity(req.quantity)?;
    if req.from == req.to {
        return Err(RegistryError::SameAccount(req.from.clone()));
    }
    ids.known(c, &req.from)?;
    ids.known(c, &req.to)?;
    let (free, available) = store::free_blocks(c, &req.from, req.instrument, req.vintage, req.quantity)?;
    if available < req.quantity {
        return Err(RegistryError::InsufficientUnits {
            account: req.from.clone(),
            requested: req.quantity,
            available,
        });
    }
    let mut need = req.quantity;
    let mut picked = Vec::with_capacity(free.len());
    for current in free {
        let take = need.min(current.block.quantity());
        picked.push((current, take));
        need -= take;
    }
    Ok(picked)
}

fn propose(
    c: &Connection,
    ids: &mut Counters,
    req: &ProposeTransfer,
    at: Timestamp,
) -> Result<Transfer, RegistryError> {
    let mut transfer = Transfer {
        id: req.id.clone(),
        from: req.from.clone(),
        to: req.to.clone(),
        instrument: req.instrument,
        vintage: req.vintage,
        quantity: req.quantity,
        status: TransferStatus::Rejected,
        blocks: Vec::new(),
        proposed_at: at,
        resolved_at: Some(at),
    };
    let picked = match pick(c, ids, req) {
        Ok(picked) => picked,
        Err(e) => {
            store::insert_transfer(c, &transfer)?;
            return Err(e);
        }
    };
    let mut taken = Vec::with_capacity(picked.len());
    for (current, take) in picked {
        let block = current.block;
        let reserved = SerialBlock { end: block.start + take - 1, ..block };
        let held = HeldBlock { block: reserved, reserved_by: Some(req.id.clone()) };
        store::replace_block(c, ids, &current, &req.from, &held, at)?;
        if take < block.quantity() {
            let rest = SerialBlock { start: reserved.end + 1, ..block };
            store::insert_block(c, ids, &req.from, &HeldBlock { block: rest, reserved_by: None }, at)?;
        }
        taken.push(reserved);
    }
    transfer.blocks = crate::types::coalesce(taken);
    transfer.status = TransferStatus::Accepted;
    transfer.resolved_at = None;
    store::insert_transfer(c, &transfer)?;
    transfer_entries(c, ids, &transfer, EntryKind::Reserved, at)?;
    Ok(transfer)
}

/// Statement lines for a transfer's blocks: on the acquiring account too when they are credited.
fn transfer_entries(
    c: &Connection,
    ids: &mut Counters,
    t: &Transfer,
    kind: EntryKind,
    at: Timestamp,
) -> Result<(), RegistryError> {
    for block in &t.blocks {
        let line = StatementLine {
            at,
            kind,
            block: *block,
            transfer: Some(t.id.clone()),
            counterparty: Some(t.to.clone()),
        };
        store::insert_entry(c, ids, &t.from, &line)?;
    }
    if kind == EntryKind::Debited {
        for block in &t.blocks {
            let line = StatementLine {
                at,
                kind: EntryKind::Credited,
                block: *block,
                transfer: Some(t.id.clone()),
                counterparty: Some(t.from.clone()),
            };
            store::insert_entry(c, ids, &t.to, &line)?;
        }
    }
    Ok(())
}

/// Ends a pending transfer: moves its blocks to the acquiring account when `status` is
/// completed, releases them otherwise.
fn resolve(
    c: &Connection,
    ids: &mut Counters,
    id: &RequestId,
    status: TransferStatus,
    at: Timestamp,
) -> Result<Transfer, RegistryError> {
    let mut t = store::load_transfer(c, id)?.ok_or_else(|| RegistryError::UnknownTransfer(id.clone()))?;
    if !t.status.is_pending() {
        return Err(RegistryError::TransferNotPending { transfer: id.clone(), status: t.status });
    }
    let owner = if status == TransferStatus::Completed { &t.to } else { &t.from };
    for (_, current) in store::reserved_blocks(c, id)? {
        let held = HeldBlock { block: current.block, reserved_by: None };
        store::replace_block(c, ids, &current, owner, &held, at)?;
    }
    store::resolve_transfer(c, id, status, at)?;
    t.status = status;
    t.resolved_at = Some(at);
    let kind = if status == TransferStatus::Completed { EntryKind::Debited } else { EntryKind::Released };
    transfer_entries(c, ids, &t, kind, at)?;
    Ok(t)
}

impl Registry for SqliteRegistry {
    fn open_account(&mut self, req: &OpenAccount, at: Timestamp) -> Result<Account, RegistryError> {
        self.idempotent(&req.id, "open_account", req, at, |c, _| {
            if store::account_exists(c, &req.account)? {
                return Err(RegistryError::AccountExists(req.account.clone()));
            }
            c.prepare_cached("INSERT INTO accounts (account_id, opened_at_ns) VALUES (?1, ?2)")?
                .execute(params![req.account.as_str(), at.0])?;
            Ok(Account { id: req.account.clone(), opened_at: at })
        })
    }

    fn issue(&mut self, req: &IssueUnits, at: Timestamp) -> Result<Issuance, RegistryError> {
        self.idempotent(&req.id, "issue", req, at, |c, ids| issue(c, ids, req, at))
    }

    fn propose(&mut self, req: &ProposeTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        self.idempotent(&req.id, "propose", req, at, |c, ids| propose(c, ids, req, at))
    }

    fn post(&mut self, req: &PostTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        self.idempotent(&req.id, "post", req, at, |c, ids| {
            resolve(c, ids, &req.transfer, TransferStatus::Completed, at)
        })
    }

    fn void(&mut self, req: &VoidTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        self.idempotent(&req.id, "void", req, at, |c, ids| {
            resolve(c, ids, &req.transfer, TransferStatus::Terminated, at)
        })
    }

    fn apply_batch(&mut self, ops: &[BatchOp], at: Timestamp) -> Result<BatchAnswers, RegistryError> {
        self.batch(ops, at)
    }

    fn expire_pending(&mut self, timeout_ns: u64, now: Timestamp) -> Result<Vec<Transfer>, RegistryError> {
        let tx = self.conn.transaction()?;
        self.ids.begin();
        check_time(self.last_at, now)?;
        write_clock(&tx, now)?;
        let cutoff = Timestamp(now.0.saturating_sub(i64::try_from(timeout_ns).unwrap_or(i64::MAX)));
        let mut expired = Vec::new();
        for id in store::pending_due(&tx, cutoff)? {
            expired.push(resolve(&tx, &mut self.ids, &id, TransferStatus::Cancelled, now)?);
        }
        tx.commit()?;
        self.last_at = now;
        Ok(expired)
    }

    fn transfer(&self, id: &RequestId) -> Result<Option<Transfer>, RegistryError> {
        store::load_transfer(&self.conn, id)
    }

    fn holdings(
        &self,
        account: &AccountId,
        instrument: InstrumentId,
        as_of: Option<Timestamp>,
    ) -> Result<Holdings, RegistryError> {
        store::known(&self.conn, account)?;
        let blocks = store::held_blocks(&self.conn, account, instrument, as_of)?;
        Ok(Holdings::from_blocks(account.clone(), instrument, as_of, blocks))
    }

    fn statement(
        &self,
        account: &AccountId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Statement, RegistryError> {
        store::known(&self.conn, account)?;
        let lines = store::entries(&self.conn, account, from, to)?;
        Ok(Statement { account: account.clone(), from, to, lines })
    }

    fn holdings_check(
        &self,
        instrument: InstrumentId,
        vintage: Option<Vintage>,
        sells: &BTreeMap<AccountId, Qty>,
    ) -> Result<Vec<Shortfall>, RegistryError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT COALESCE(SUM(serial_end - serial_start + 1), 0) FROM blocks
             WHERE account_id = ?1 AND instrument = ?2 AND reserved_by IS NULL AND (?3 IS NULL OR vintage = ?3)",
        )?;
        let mut short = Vec::new();
        for (account, &requested) in sells {
            let vin = vintage.map(|v| i64::from(v.0));
            let available: i64 =
                stmt.query_row(params![account.as_str(), i64::from(instrument.0), vin], |r| r.get(0))?;
            let available = store::to_u64(available, "holding")?;
            if available < requested {
                short.push(Shortfall { account: account.clone(), requested, available });
            }
        }
        Ok(short)
    }
}
