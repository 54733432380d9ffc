//! The embedded registry: the ledger in a SQLite database (the default for `cccx serve`).
//!
//! The database is the record: one row per issuance and per transfer (with the serial blocks it
//! moved), one per request that is not a proposal ([`schema`]). Which serials each account
//! holds now is derived from the record on open and kept in memory ([`ledger`]), so a proposal
//! picks its serials without reading block rows and writes one row, and a post updates that row
//! and records its request. Holdings as of a time and statements are derived from the record
//! when asked.
//!
//! Each request (or batch) runs in one database transaction: look up the request id, check the
//! time, check the request, write its effects, store the answer under the id, commit. Checks
//! come before writes, so a refusal stores only the answer (for a proposal, the rejected
//! transfer); a storage error rolls everything back, stores nothing, and the state in memory is
//! derived again from the database.

mod ids;
mod ledger;
mod schema;
mod store;

use std::collections::BTreeMap;
use std::path::Path;

use cccx_engine::types::{InstrumentId, Qty};
use rusqlite::Connection;
use serde::{de::DeserializeOwned, Serialize};

use ids::IdFilter;
use ledger::{Ledger, Ranges};
use rustc_hash::FxHashMap;
pub use schema::SCHEMA_VERSION;
use store::Prior;
pub(crate) use store::{decode_blocks, encode_blocks};

use crate::error::RegistryError;
use crate::registry::{BatchAnswers, BatchOp, Registry};
use crate::types::{
    merge_held, Account, AccountId, EntryKind, HeldBlock, Holdings, Issuance, IssueUnits, OpenAccount,
    PostTransfer, ProposeAndPost, ProposeTransfer, RequestId, SerialBlock, Shortfall, Statement,
    StatementLine, Timestamp, Transfer, TransferStatus, Vintage, VoidTransfer, REQUEST_QTY_MAX, SERIAL_MAX,
};

/// How many prepared statements a connection keeps.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// The page size of a new database, in bytes.
pub const PAGE_SIZE: i64 = 16_384;

/// The write-ahead log's size, in pages, that triggers a checkpoint (64 MiB of 16 KiB pages).
pub const WAL_CHECKPOINT_PAGES: i64 = 4_096;

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
/// One `SqliteRegistry` is the only writer of its database: it keeps the current state and the
/// next event number in memory. A second writer on the same file would fail on a duplicate key
/// or a transfer no longer pending in the database (a storage error, nothing corrupted), never
/// interleave.
#[derive(Debug)]
pub struct SqliteRegistry {
    conn: Connection,
    ledger: Ledger,
    /// Every request id in the record, approximately.
    ids: IdFilter,
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

fn to_json<T: Serialize>(value: &T) -> Result<String, RegistryError> {
    serde_json::to_string(value).map_err(|e| RegistryError::Storage(e.to_string()))
}

fn from_json<T: DeserializeOwned>(json: &str, id: &RequestId) -> Result<T, RegistryError> {
    serde_json::from_str(json).map_err(|e| RegistryError::Storage(format!("stored answer of {id}: {e}")))
}

fn inconsistent(what: String) -> RegistryError {
    RegistryError::Storage(format!("the ledger's state does not match its record: {what}"))
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
        // 16 KiB pages (a new database only; an existing one keeps its size): a batch's rows
        // and index entries land on fewer pages, so fewer log frames per commit.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
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
        // Fewer checkpoints than the default (one per 1,000 pages of log): pages that
        // successive batches change again are copied back once.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        SqliteRegistry::with_connection(conn)
    }

    /// A registry in a private in-memory database (tests).
    pub fn open_in_memory() -> Result<SqliteRegistry, RegistryError> {
        SqliteRegistry::with_connection(Connection::open_in_memory()?)
    }

    fn with_connection(mut conn: Connection) -> Result<SqliteRegistry, RegistryError> {
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        stable_plans(&conn)?;
        schema::create(&mut conn)?;
        let ledger = store::load_ledger(&conn)?;
        let ids = store::load_ids(&conn)?;
        let last_at = Timestamp(conn.query_row("SELECT last_at_ns FROM ledger_clock", [], |r| r.get(0))?);
        Ok(SqliteRegistry { conn, ledger, ids, last_at })
    }

    /// Every block every account holds now, by account, in canonical form ([`merge_held`]).
    pub fn snapshot(&self) -> Result<BTreeMap<AccountId, Vec<HeldBlock>>, RegistryError> {
        let mut by_account: BTreeMap<AccountId, Vec<HeldBlock>> = BTreeMap::new();
        for (account, held) in self.ledger.all_held() {
            by_account.entry(account).or_default().push(held);
        }
        Ok(by_account.into_iter().map(|(a, blocks)| (a, merge_held(blocks))).collect())
    }

    /// Checks the ledger's invariants: no serial is held twice; the blocks of each instrument
    /// and vintage are exactly the serials issued (1 up to the counter); every pending transfer
    /// reserves exactly its quantity; the state in memory is what the database's record
    /// gives when derived again from scratch; and the filter of ids holds every recorded id.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut blocks = self.ledger.all_held();
        blocks.sort_by_key(|(_, h)| h.block);
        let mut issued: BTreeMap<(InstrumentId, Vintage), u64> = BTreeMap::new();
        for (_, held) in &blocks {
            let b = held.block;
            let next = issued.entry((b.instrument, b.vintage)).or_insert(1);
            if b.start != *next {
                return Err(format!("serials {}..{} of {b:?} missing or held twice", *next, b.start));
            }
            *next = b.end + 1;
        }
        for (&key, &next) in &self.ledger.next_serial {
            if issued.get(&key).copied().unwrap_or(1) != next {
                return Err(format!(
                    "{key:?}: blocks end before {:?}, counter says {next}",
                    issued.get(&key)
                ));
            }
        }
        for t in self.ledger.pending.values() {
            let reserved: Qty = t.blocks.iter().map(SerialBlock::quantity).sum();
            if reserved != t.quantity || t.status != TransferStatus::Accepted {
                return Err(format!(
                    "transfer {} reserves {reserved} of {} ({})",
                    t.id, t.quantity, t.status
                ));
            }
        }
        let again = store::load_ledger(&self.conn).map_err(|e| e.to_string())?;
        let mut mine = self.ledger.all_held();
        let mut theirs = again.all_held();
        mine.sort();
        theirs.sort();
        if mine != theirs
            || again.pending != self.ledger.pending
            || again.accounts != self.ledger.accounts
            || again.next_serial != self.ledger.next_serial
            || again.seq != self.ledger.seq
        {
            return Err("the state in memory differs from the one derived from the database".into());
        }
        let ids = store::all_ids(&self.conn).map_err(|e| e.to_string())?;
        if let Some(id) = ids.iter().find(|id| !self.ids.may_contain(id)) {
            return Err(format!("request id {id} is recorded but not in the filter of ids"));
        }
        Ok(())
    }

    /// Runs `f` in one transaction and commits it if it wrote (moving the ledger's clock to
    /// `at`). If `f` or the commit fails, the transaction rolls back and the state in memory,
    /// which `f` may have changed, is derived again from the database.
    fn transact<R>(
        &mut self,
        at: Timestamp,
        f: impl FnOnce(&mut Work<'_>) -> Result<R, RegistryError>,
    ) -> Result<R, RegistryError> {
        let tx = self.conn.transaction()?;
        let mut work = Work {
            c: &tx,
            ledger: &mut self.ledger,
            ids: &mut self.ids,
            last_at: self.last_at,
            at,
            wrote: false,
        };
        let out = f(&mut work);
        let wrote = work.wrote;
        // Nothing written, or an error: dropping the transaction rolls it back.
        let out = (move || {
            let r = out?;
            if wrote {
                write_clock(&tx, at)?;
                tx.commit()?;
            }
            Ok(r)
        })();
        match &out {
            Ok(_) if wrote => self.last_at = at,
            Ok(_) => {}
            Err(_) => self.ledger = store::load_ledger(&self.conn)?,
        }
        out
    }
}

/// One transaction's work: the database inside it, the state in memory, and the request time.
struct Work<'a> {
    c: &'a Connection,
    ledger: &'a mut Ledger,
    /// Ids of a transaction rolled back stay in it: a false positive, harmless.
    ids: &'a mut IdFilter,
    last_at: Timestamp,
    at: Timestamp,
    wrote: bool,
}

/// A request's answer (`Ok`), or an error that is not one (`Err`: a reused id or a time that
/// went back, found before anything was written; or a storage error, after which the caller
/// rolls back).
type Answered<T> = Result<Result<T, RegistryError>, RegistryError>;

impl Work<'_> {
    /// What a request id was used for before, if anything: the database is asked only when
    /// the filter of recorded ids may hold it.
    fn prior(&self, id: &RequestId) -> Result<Option<Prior>, RegistryError> {
        match self.ids.may_contain(id.as_str()) {
            true => store::prior(self.c, id),
            false => Ok(None),
        }
    }

    /// Notes a request id just recorded in the database.
    fn recorded(&mut self, id: &RequestId) -> Result<(), RegistryError> {
        if !self.ids.insert(id.as_str()) {
            *self.ids = store::load_ids(self.c)?;
        }
        Ok(())
    }

    fn known(&self, account: &AccountId) -> Result<(), RegistryError> {
        match self.ledger.accounts.contains_key(account) {
            true => Ok(()),
            false => Err(RegistryError::UnknownAccount(account.clone())),
        }
    }

    /// An answer that is a change: the time must not have gone back.
    fn may_change(&self) -> Result<(), RegistryError> {
        check_time(self.last_at, self.at)
    }

    /// A request that is not a proposal and is answered from its stored JSON answer (opening
    /// an account, issuing).
    fn stored<T: Serialize + DeserializeOwned>(
        &mut self,
        id: &RequestId,
        kind: &str,
        fields: &impl Serialize,
        op: impl FnOnce(&mut Self) -> Result<T, RegistryError>,
    ) -> Answered<T> {
        let hash = fields_hash(kind, fields)?;
        match self.prior(id)? {
            None => {}
            Some(Prior::Request { kind: k, fields: f, answer }) if k == kind && f == hash => {
                let answer = answer.ok_or_else(|| inconsistent(format!("request {id} has no answer")))?;
                return from_json(&answer, id);
            }
            Some(_) => return Err(RegistryError::DuplicateIdOtherFields(id.clone())),
        }
        self.may_change()?;
        let answer = match op(self) {
            Err(e) if !e.is_answer() => return Err(e),
            answer => answer,
        };
        store::insert_request(self.c, id, kind, &hash, Some(&to_json(&answer)?), self.at)?;
        self.recorded(id)?;
        self.wrote = true;
        Ok(answer)
    }

    fn open_account(&mut self, req: &OpenAccount) -> Answered<Account> {
        self.stored(&req.id, "open_account", req, |w| {
            if w.ledger.accounts.contains_key(&req.account) {
                return Err(RegistryError::AccountExists(req.account.clone()));
            }
            store::insert_account(w.c, &req.account, w.at)?;
            w.ledger.accounts.insert(req.account.clone(), w.at);
            Ok(Account { id: req.account.clone(), opened_at: w.at })
        })
    }

    fn issue(&mut self, req: &IssueUnits) -> Answered<Issuance> {
        self.stored(&req.id, "issue", req, |w| {
            check_quantity(req.quantity)?;
            w.known(&req.account)?;
            let key = (req.instrument, req.vintage);
            let next = w.ledger.next_serial.get(&key).copied();
            let start = next.unwrap_or(1);
            let exhausted =
                RegistryError::SerialsExhausted { instrument: req.instrument, vintage: req.vintage };
            let end = start.checked_add(req.quantity - 1).filter(|&e| e <= SERIAL_MAX).ok_or(exhausted)?;
            let block = SerialBlock { instrument: req.instrument, vintage: req.vintage, start, end };
            let seq = w.ledger.next_seq();
            store::insert_issuance(w.c, seq, &req.account, &block, next.is_none(), w.at)?;
            w.ledger.next_serial.insert(key, end + 1);
            w.ledger
                .credit(&req.account, &[block])
                .map_err(|e| inconsistent(format!("{:?} issued twice", e.0)))?;
            Ok(Issuance { account: req.account.clone(), block, issued_at: w.at })
        })
    }

    /// A proposal: its record is its transfer row (accepted with the blocks it reserved, or
    /// rejected with the refusal), which also answers a retry.
    fn propose(&mut self, req: &ProposeTransfer) -> Answered<Transfer> {
        match self.prior(&req.id)? {
            None => {}
            Some(Prior::Request { .. }) => return Err(RegistryError::DuplicateIdOtherFields(req.id.clone())),
            Some(Prior::Proposal) => return self.proposed_before(req),
        }
        self.may_change()?;
        self.propose_new(req, None)
    }

    /// A proposal under a new id, posted at once if accepted and `post` is given (an id
    /// not used before). Answers the transfer, pending or completed, or the refusal, stored.
    fn propose_new(&mut self, req: &ProposeTransfer, post: Option<&RequestId>) -> Answered<Transfer> {
        let at = self.at;
        let mut transfer = Transfer::rejected(req, at);
        let picked = (|| {
            check_quantity(req.quantity)?;
            if req.from == req.to {
                return Err(RegistryError::SameAccount(req.from.clone()));
            }
            self.known(&req.from)?;
            self.known(&req.to)?;
            self.ledger
                .free_mut(&req.from, req.instrument)
                .take_oldest(req.instrument, req.vintage, req.quantity)
                .map_err(|available| RegistryError::InsufficientUnits {
                    account: req.from.clone(),
                    requested: req.quantity,
                    available,
                })
        })();
        let seq = self.ledger.next_seq();
        self.wrote = true;
        let blocks = match picked {
            Err(e) => {
                store::insert_transfer(self.c, &transfer, Some(&to_json(&e)?), seq, None)?;
                self.recorded(&req.id)?;
                return Ok(Err(e));
            }
            Ok(blocks) => blocks,
        };
        transfer.blocks = blocks;
        match post {
            None => {
                transfer.status = TransferStatus::Accepted;
                transfer.resolved_at = None;
                store::insert_transfer(self.c, &transfer, None, seq, None)?;
                self.ledger.pending.insert(req.id.clone(), transfer.clone());
            }
            Some(post) => {
                transfer.status = TransferStatus::Completed;
                transfer.resolved_at = Some(at);
                self.ledger
                    .credit(&req.to, &transfer.blocks)
                    .map_err(|e| inconsistent(format!("{:?} of transfer {} held twice", e.0, req.id)))?;
                let resolve_seq = self.ledger.next_seq();
                store::insert_transfer(self.c, &transfer, None, seq, Some((resolve_seq, post)))?;
                self.recorded(post)?;
            }
        }
        self.recorded(&req.id)?;
        Ok(Ok(transfer))
    }

    /// [`BatchOp::ProposeAndPost`]: under two new ids (the usual case), one transfer row
    /// written completed; otherwise the proposal and, if it is accepted, the post, each
    /// answered as its single call would be. Both ways record the same.
    fn propose_and_post(&mut self, req: &ProposeAndPost) -> Answered<Transfer> {
        let post = req.post();
        if self.prior(&req.propose.id)?.is_none() && self.prior(&post.id)?.is_none() {
            self.may_change()?;
            return self.propose_new(&req.propose, Some(&post.id));
        }
        match self.propose(&req.propose)? {
            Ok(t) if t.status.is_pending() => {
                self.post_or_void(&post.id, "post", &post.transfer, TransferStatus::Completed)
            }
            answer => Ok(answer),
        }
    }

    /// The answer to a proposal whose id has a transfer: a retry (the same fields) gets the
    /// transfer as it was proposed, or the refusal; other fields are refused.
    fn proposed_before(&self, req: &ProposeTransfer) -> Answered<Transfer> {
        let row = store::load_transfer(self.c, &req.id)?
            .ok_or_else(|| inconsistent(format!("transfer {} vanished", req.id)))?;
        let t = &row.transfer;
        if (&t.from, &t.to, t.instrument, t.vintage, t.quantity)
            != (&req.from, &req.to, req.instrument, req.vintage, req.quantity)
        {
            return Err(RegistryError::DuplicateIdOtherFields(req.id.clone()));
        }
        Ok(match row.refusal {
            Some(refusal) => Err(from_json(&refusal, &req.id)?),
            None => Ok(Transfer { status: TransferStatus::Accepted, resolved_at: None, ..row.transfer }),
        })
    }

    /// A post or a void: a successful one is recorded on the transfer it resolved, whose row
    /// (final, so it never changes) answers a retry; a refusal is stored as JSON under its id.
    fn post_or_void(
        &mut self,
        id: &RequestId,
        kind: &str,
        transfer: &RequestId,
        status: TransferStatus,
    ) -> Answered<Transfer> {
        match self.prior(id)? {
            None => {}
            Some(Prior::Request { kind: k, fields: f, answer }) if k == kind && f == transfer.as_str() => {
                return match answer {
                    Some(answer) => from_json(&answer, id),
                    None => match store::load_transfer(self.c, transfer)? {
                        Some(row) if !row.transfer.status.is_pending() => Ok(Ok(row.transfer)),
                        _ => Err(inconsistent(format!(
                            "request {id} resolved {transfer}, which is not resolved"
                        ))),
                    },
                };
            }
            Some(_) => return Err(RegistryError::DuplicateIdOtherFields(id.clone())),
        }
        self.may_change()?;
        let answer = self.resolve(transfer, status, Some(id))?;
        if answer.is_err() {
            // A success is recorded on the transfer it resolved.
            store::insert_request(self.c, id, kind, transfer.as_str(), Some(&to_json(&answer)?), self.at)?;
            self.recorded(id)?;
            self.wrote = true;
        }
        Ok(answer)
    }

    /// Ends a pending transfer, recording the post or void that ends it (`request`; none for an
    /// expiry): its blocks go to the acquiring account when `status` is completed, back to the
    /// transferring one otherwise.
    fn resolve(
        &mut self,
        id: &RequestId,
        status: TransferStatus,
        request: Option<&RequestId>,
    ) -> Answered<Transfer> {
        let Some(mut t) = self.ledger.pending.remove(id) else {
            return Ok(Err(match store::load_transfer(self.c, id)? {
                Some(row) => {
                    RegistryError::TransferNotPending { transfer: id.clone(), status: row.transfer.status }
                }
                None => RegistryError::UnknownTransfer(id.clone()),
            }));
        };
        let owner = if status == TransferStatus::Completed { &t.to } else { &t.from };
        self.ledger
            .credit(owner, &t.blocks)
            .map_err(|e| inconsistent(format!("{:?} of transfer {id} held twice", e.0)))?;
        let seq = self.ledger.next_seq();
        store::resolve_transfer(self.c, id, status, self.at, seq, request)?;
        if let Some(request) = request {
            self.recorded(request)?;
        }
        self.wrote = true;
        t.status = status;
        t.resolved_at = Some(self.at);
        Ok(Ok(t))
    }

    fn apply(&mut self, op: &BatchOp) -> Answered<Transfer> {
        match op {
            BatchOp::Propose(req) => self.propose(req),
            BatchOp::Post(req) => {
                self.post_or_void(&req.id, "post", &req.transfer, TransferStatus::Completed)
            }
            BatchOp::Void(req) => {
                self.post_or_void(&req.id, "void", &req.transfer, TransferStatus::Terminated)
            }
            BatchOp::ProposeAndPost(req) => self.propose_and_post(req),
        }
    }
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

/// The statement lines of a transfer's blocks.
fn lines(t: &Transfer, at: Timestamp, kind: EntryKind, counterparty: &AccountId) -> Vec<StatementLine> {
    t.blocks
        .iter()
        .map(|&block| StatementLine {
            at,
            kind,
            block,
            transfer: Some(t.id.clone()),
            counterparty: Some(counterparty.clone()),
        })
        .collect()
}

impl SqliteRegistry {
    /// The accounts of a query: each open one by its position (the others are answered
    /// unknown), and the one account asked about, if only one is, for the queries to filter by.
    fn scope<'a>(
        &self,
        accounts: &'a [AccountId],
    ) -> (FxHashMap<&'a AccountId, usize>, Option<&'a AccountId>) {
        let index = accounts
            .iter()
            .enumerate()
            .filter(|(_, a)| self.ledger.accounts.contains_key(*a))
            .map(|(i, a)| (a, i))
            .collect();
        let only = match accounts {
            [one] => Some(one),
            _ => None,
        };
        (index, only)
    }

    /// Accounts' blocks of an instrument as of `t` (by position in `accounts`; `None` for an
    /// account not open): their blocks now, with every change dated after `t` undone (last
    /// first), and the reservations of the transfers pending at `t`. One pass over the record
    /// after `t` serves every account.
    fn held_as_of(
        &self,
        accounts: &[AccountId],
        instrument: InstrumentId,
        t: Timestamp,
    ) -> Result<Vec<Option<Vec<HeldBlock>>>, RegistryError> {
        let broken = |e: ledger::Inconsistent| inconsistent(format!("{:?} as of {}", e.0, t.0));
        let (scope, only) = self.scope(accounts);
        let mut ranges: Vec<Option<Ranges>> = vec![None; accounts.len()];
        for (&account, &i) in &scope {
            let mut r = Ranges::default();
            for held in self.ledger.held(account, instrument) {
                r.insert(held.block).map_err(broken)?;
            }
            ranges[i] = Some(r);
        }
        let later = store::resolved_after(&self.conn, only, instrument, t)?;
        for row in later.iter().filter(|r| r.transfer.status == TransferStatus::Completed) {
            let tr = &row.transfer;
            for &b in &tr.blocks {
                if let Some(r) = scope.get(&tr.to).and_then(|&i| ranges[i].as_mut()) {
                    r.remove(b).map_err(broken)?;
                }
                if let Some(r) = scope.get(&tr.from).and_then(|&i| ranges[i].as_mut()) {
                    r.insert(b).map_err(broken)?;
                }
            }
        }
        for (_, account, block, _) in store::issuances_after(&self.conn, only, instrument, t)? {
            if let Some(r) = scope.get(&account).and_then(|&i| ranges[i].as_mut()) {
                r.remove(block).map_err(broken)?;
            }
        }
        let mut out: Vec<Option<Vec<HeldBlock>>> =
            accounts.iter().map(|a| scope.contains_key(a).then(Vec::new)).collect();
        let pending_now = self.ledger.pending.values().filter(|p| p.proposed_at <= t);
        let resolved_later = later
            .iter()
            .map(|r| &r.transfer)
            .filter(|p| p.proposed_at <= t && p.status != TransferStatus::Rejected);
        for p in pending_now.chain(resolved_later).filter(|p| p.instrument == instrument) {
            let Some(&i) = scope.get(&p.from) else { continue };
            for &block in &p.blocks {
                if let Some(r) = ranges[i].as_mut() {
                    r.remove(block).map_err(broken)?;
                }
                if let Some(o) = out[i].as_mut() {
                    o.push(HeldBlock { block, reserved_by: Some(p.id.clone()) });
                }
            }
        }
        for (o, r) in out.iter_mut().zip(&ranges) {
            if let (Some(o), Some(r)) = (o.as_mut(), r) {
                o.extend(r.blocks(instrument).map(|block| HeldBlock { block, reserved_by: None }));
            }
        }
        Ok(out)
    }

    /// Accounts' statement lines in `[from, to)` (by position in `accounts`; `None` for an
    /// account not open), in ledger order: issuances, proposals (a reservation on the
    /// transferring account) and resolutions (a debit and a credit, or a release), each by its
    /// event number. One pass over the record of the range serves every account.
    fn lines_in(
        &self,
        accounts: &[AccountId],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Option<Vec<StatementLine>>>, RegistryError> {
        let (scope, only) = self.scope(accounts);
        let mut events: Vec<Vec<(i64, Vec<StatementLine>)>> = vec![Vec::new(); accounts.len()];
        for (seq, account, block, at) in store::issuances_in(&self.conn, only, from, to)? {
            if let Some(&i) = scope.get(&account) {
                let line =
                    StatementLine { at, kind: EntryKind::Issued, block, transfer: None, counterparty: None };
                events[i].push((seq, vec![line]));
            }
        }
        let mut proposed = store::resolved_proposed_in(&self.conn, only, from, to)?;
        for p in self.ledger.pending.values() {
            if scope.contains_key(&p.from) && from <= p.proposed_at && p.proposed_at < to {
                proposed.extend(store::load_transfer(&self.conn, &p.id)?);
            }
        }
        for row in proposed {
            let t = &row.transfer;
            if let (Some(&i), true) = (scope.get(&t.from), t.status != TransferStatus::Rejected) {
                events[i].push((row.propose_seq, lines(t, t.proposed_at, EntryKind::Reserved, &t.to)));
            }
        }
        for row in store::resolved_in(&self.conn, only, from, to)? {
            let (t, Some(seq), Some(at)) = (&row.transfer, row.resolve_seq, row.transfer.resolved_at) else {
                continue;
            };
            let completed = t.status == TransferStatus::Completed;
            if let Some(&i) = scope.get(&t.from) {
                let kind = if completed { EntryKind::Debited } else { EntryKind::Released };
                events[i].push((seq, lines(t, at, kind, &t.to)));
            }
            if let (Some(&i), true) = (scope.get(&t.to), completed) {
                events[i].push((seq, lines(t, at, EntryKind::Credited, &t.from)));
            }
        }
        Ok(accounts
            .iter()
            .zip(events)
            .map(|(a, mut events)| {
                scope.contains_key(a).then(|| {
                    events.sort_by_key(|(seq, _)| *seq);
                    events.into_iter().flat_map(|(_, lines)| lines).collect()
                })
            })
            .collect())
    }
}

impl Registry for SqliteRegistry {
    fn open_account(&mut self, req: &OpenAccount, at: Timestamp) -> Result<Account, RegistryError> {
        self.transact(at, |w| w.open_account(req))?
    }

    fn issue(&mut self, req: &IssueUnits, at: Timestamp) -> Result<Issuance, RegistryError> {
        self.transact(at, |w| w.issue(req))?
    }

    fn propose(&mut self, req: &ProposeTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        self.transact(at, |w| w.propose(req))?
    }

    fn post(&mut self, req: &PostTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        self.transact(at, |w| w.post_or_void(&req.id, "post", &req.transfer, TransferStatus::Completed))?
    }

    fn void(&mut self, req: &VoidTransfer, at: Timestamp) -> Result<Transfer, RegistryError> {
        self.transact(at, |w| w.post_or_void(&req.id, "void", &req.transfer, TransferStatus::Terminated))?
    }

    /// The batch in one transaction: every refusal, and every error without an answer but a
    /// storage error (a reused id, a time that went back), is found before the operation
    /// writes anything, so one operation's refusal leaves the others alone without a
    /// savepoint each. A storage error rolls the whole batch back: no answer.
    fn apply_batch(&mut self, ops: &[BatchOp], at: Timestamp) -> Result<BatchAnswers, RegistryError> {
        self.transact(at, |w| {
            let mut answers = Vec::with_capacity(ops.len());
            for op in ops {
                match w.apply(op) {
                    Ok(answer) => answers.push(answer),
                    Err(
                        e @ (RegistryError::DuplicateIdOtherFields(_)
                        | RegistryError::TimeWentBackwards { .. }),
                    ) => answers.push(Err(e)),
                    Err(e) => return Err(e),
                }
            }
            Ok(answers)
        })
    }

    fn expire_pending(&mut self, timeout_ns: u64, now: Timestamp) -> Result<Vec<Transfer>, RegistryError> {
        self.transact(now, |w| {
            w.may_change()?;
            w.wrote = true;
            let cutoff = Timestamp(now.0.saturating_sub(i64::try_from(timeout_ns).unwrap_or(i64::MAX)));
            let mut due: Vec<RequestId> =
                w.ledger.pending.values().filter(|t| t.proposed_at <= cutoff).map(|t| t.id.clone()).collect();
            due.sort();
            due.iter().map(|id| w.resolve(id, TransferStatus::Cancelled, None)?).collect()
        })
    }

    fn transfer(&self, id: &RequestId) -> Result<Option<Transfer>, RegistryError> {
        Ok(store::load_transfer(&self.conn, id)?.map(|row| row.transfer))
    }

    fn holdings(
        &self,
        account: &AccountId,
        instrument: InstrumentId,
        as_of: Option<Timestamp>,
    ) -> Result<Holdings, RegistryError> {
        let one = std::slice::from_ref(account);
        self.holdings_of(one, instrument, as_of)?
            .pop()
            .unwrap_or_else(|| Err(inconsistent("no answer".into())))
    }

    /// Every account's holdings from one pass over the record (see `held_as_of`).
    fn holdings_of(
        &self,
        accounts: &[AccountId],
        instrument: InstrumentId,
        as_of: Option<Timestamp>,
    ) -> Result<Vec<Result<Holdings, RegistryError>>, RegistryError> {
        let blocks = match as_of {
            None => accounts
                .iter()
                .map(|a| self.ledger.accounts.contains_key(a).then(|| self.ledger.held(a, instrument)))
                .collect(),
            Some(t) => self.held_as_of(accounts, instrument, t)?,
        };
        Ok(accounts
            .iter()
            .zip(blocks)
            .map(|(a, blocks)| match blocks {
                Some(blocks) => Ok(Holdings::from_blocks(a.clone(), instrument, as_of, blocks)),
                None => Err(RegistryError::UnknownAccount(a.clone())),
            })
            .collect())
    }

    fn statement(
        &self,
        account: &AccountId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Statement, RegistryError> {
        let one = std::slice::from_ref(account);
        self.statements_of(one, from, to)?.pop().unwrap_or_else(|| Err(inconsistent("no answer".into())))
    }

    /// Every account's statement from one pass over the record of the range (see `lines_in`).
    fn statements_of(
        &self,
        accounts: &[AccountId],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Result<Statement, RegistryError>>, RegistryError> {
        Ok(accounts
            .iter()
            .zip(self.lines_in(accounts, from, to)?)
            .map(|(a, lines)| match lines {
                Some(lines) => Ok(Statement { account: a.clone(), from, to, lines }),
                None => Err(RegistryError::UnknownAccount(a.clone())),
            })
            .collect())
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
                let available = self.ledger.available(account, instrument, vintage);
                (available < requested).then(|| Shortfall { account: account.clone(), requested, available })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filter of ids is built again from the database when it is full, inside the batch's
    /// transaction: every id recorded before and during that batch is in the new one.
    #[test]
    fn a_full_id_filter_is_rebuilt_with_every_id() {
        let mut r = SqliteRegistry::open_in_memory().unwrap();
        let account = |n: u32| AccountId::new(format!("A{n}")).unwrap();
        let id = |s: String| RequestId::new(s).unwrap();
        for n in 0..2 {
            r.open_account(&OpenAccount { id: id(format!("open-{n}")), account: account(n) }, Timestamp(0))
                .unwrap();
        }
        let issue = IssueUnits {
            id: id("issue".into()),
            account: account(0),
            instrument: InstrumentId(1),
            vintage: Vintage(2024),
            quantity: 1_000,
        };
        r.issue(&issue, Timestamp(0)).unwrap();
        // Room for 4 ids: the batches below fill it several times over.
        r.ids = IdFilter::sized(store::all_ids(&r.conn).unwrap().iter().map(String::as_str), 4);
        for batch in 0..5 {
            let ops: Vec<BatchOp> = (0..10)
                .map(|n| {
                    let propose = ProposeTransfer {
                        id: id(format!("t{batch}-{n}")),
                        from: account(0),
                        to: account(1),
                        instrument: InstrumentId(1),
                        quantity: 1,
                        vintage: None,
                    };
                    BatchOp::ProposeAndPost(ProposeAndPost { propose, post_id: id(format!("c{batch}-{n}")) })
                })
                .collect();
            let answers = r.apply_batch(&ops, Timestamp(1 + batch)).unwrap();
            assert!(answers.iter().all(Result::is_ok), "{answers:?}");
            r.check_invariants().unwrap();
        }
        // A retry is still recognised as one: the same answers, nothing moved again.
        let retry = BatchOp::ProposeAndPost(ProposeAndPost {
            propose: ProposeTransfer {
                id: id("t0-0".into()),
                from: account(0),
                to: account(1),
                instrument: InstrumentId(1),
                quantity: 1,
                vintage: None,
            },
            post_id: id("c0-0".into()),
        });
        let again = r.apply_batch(&[retry], Timestamp(10)).unwrap();
        assert_eq!(again[0].as_ref().unwrap().status, TransferStatus::Completed);
        assert_eq!(r.ledger.available(&account(1), InstrumentId(1), None), 50);
    }
}
