//! Row-level SQL of the embedded registry: the record of issuances, transfers and requests, and
//! the current state derived from it. Every function runs inside the caller's transaction.

use cccx_engine::types::InstrumentId;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::ids::IdFilter;
use super::ledger::Ledger;
use crate::error::RegistryError;
use crate::types::{AccountId, RequestId, SerialBlock, Timestamp, Transfer, TransferStatus, Vintage};

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

/// A transfer's blocks as stored: `vintage:start-end`, comma-separated (the instrument is the
/// transfer's).
pub fn encode_blocks(blocks: &[SerialBlock]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(blocks.len() * 24);
    for (i, b) in blocks.iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        // Writing to a String cannot fail.
        let _ = write!(out, "{sep}{}:{}-{}", b.vintage.0, b.start, b.end);
    }
    out
}

/// The blocks of [`encode_blocks`].
pub fn decode_blocks(instrument: InstrumentId, text: &str) -> Result<Vec<SerialBlock>, RegistryError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|part| {
            let (v, range) = part.split_once(':').ok_or_else(|| corrupt("transfer blocks"))?;
            let (s, e) = range.split_once('-').ok_or_else(|| corrupt("transfer blocks"))?;
            let parse = |t: &str| t.parse::<u64>().map_err(|_| corrupt("transfer blocks"));
            let vintage = Vintage(v.parse::<u16>().map_err(|_| corrupt("transfer blocks"))?);
            let block = SerialBlock { instrument, vintage, start: parse(s)?, end: parse(e)? };
            if block.start > block.end || block.start == 0 {
                return Err(corrupt("transfer blocks"));
            }
            Ok(block)
        })
        .collect()
}

/// A transfer as stored: the transfer, the refusal of a rejected proposal (JSON), and the
/// numbers of its proposal and resolution in ledger order.
#[derive(Clone, Debug)]
pub struct TransferRow {
    /// The transfer.
    pub transfer: Transfer,
    /// Why the proposal was refused (a [`RegistryError`] as JSON), if it was.
    pub refusal: Option<String>,
    /// The proposal's event number.
    pub propose_seq: i64,
    /// The resolution's event number (none while pending, or for a refusal).
    pub resolve_seq: Option<i64>,
}

/// The columns of `transfers`, in the order [`raw_transfer`] reads them.
macro_rules! transfer_columns {
    () => {
        "transfer_id, from_account, to_account, instrument, vintage, quantity, status, blocks, refusal, \
         proposed_at_ns, propose_seq, resolved_at_ns, resolve_seq"
    };
}

type RawTransfer = (
    String,
    String,
    String,
    i64,
    Option<i64>,
    i64,
    String,
    String,
    Option<String>,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
);

fn raw_transfer(r: &Row<'_>) -> rusqlite::Result<RawTransfer> {
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
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
    ))
}

fn to_transfer(raw: RawTransfer) -> Result<TransferRow, RegistryError> {
    let (id, from, to, inst, vin, quantity, status, blocks, refusal, proposed, pseq, resolved, rseq) = raw;
    let instrument = instrument(inst)?;
    Ok(TransferRow {
        transfer: Transfer {
            id: request_id(id)?,
            from: account_id(from)?,
            to: account_id(to)?,
            instrument,
            vintage: vin.map(vintage).transpose()?,
            quantity: to_u64(quantity, "quantity")?,
            status: TransferStatus::parse(&status).ok_or_else(|| corrupt("transfer status"))?,
            blocks: decode_blocks(instrument, &blocks)?,
            proposed_at: Timestamp(proposed),
            resolved_at: resolved.map(Timestamp),
        },
        refusal,
        propose_seq: pseq,
        resolve_seq: rseq,
    })
}

fn transfers_where(
    c: &Connection,
    clause: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<TransferRow>, RegistryError> {
    let sql = format!(concat!("SELECT ", transfer_columns!(), " FROM transfers {}"), clause);
    let raws: Vec<RawTransfer> =
        c.prepare_cached(&sql)?.query_map(args, raw_transfer)?.collect::<Result<_, _>>()?;
    raws.into_iter().map(to_transfer).collect()
}

/// A transfer as stored, if one has this id.
pub fn load_transfer(c: &Connection, id: &RequestId) -> Result<Option<TransferRow>, RegistryError> {
    c.prepare_cached(concat!("SELECT ", transfer_columns!(), " FROM transfers WHERE transfer_id = ?1"))?
        .query_row([id.as_str()], raw_transfer)
        .optional()?
        .map(to_transfer)
        .transpose()
}

/// Stores a new transfer: accepted (pending) or rejected, with its refusal, or already
/// resolved (`resolution`: its event number and the post that completed it, in the same
/// transaction as its proposal).
pub fn insert_transfer(
    c: &Connection,
    t: &Transfer,
    refusal: Option<&str>,
    propose_seq: i64,
    resolution: Option<(i64, &RequestId)>,
) -> Result<(), RegistryError> {
    c.prepare_cached(concat!(
        "INSERT INTO transfers (",
        transfer_columns!(),
        ", resolve_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    ))?
    .execute(params![
        t.id.as_str(),
        t.from.as_str(),
        t.to.as_str(),
        i64::from(t.instrument.0),
        t.vintage.map(|v| i64::from(v.0)),
        to_i64(t.quantity),
        t.status.as_str(),
        encode_blocks(&t.blocks),
        refusal,
        t.proposed_at.0,
        propose_seq,
        t.resolved_at.map(|r| r.0),
        resolution.map(|r| r.0),
        resolution.map(|r| r.1.as_str())
    ])?;
    Ok(())
}

/// Records a pending transfer's final status, and the post or void that set it (none for an
/// expiry).
pub fn resolve_transfer(
    c: &Connection,
    id: &RequestId,
    status: TransferStatus,
    at: Timestamp,
    resolve_seq: i64,
    request: Option<&RequestId>,
) -> Result<(), RegistryError> {
    let changed = c
        .prepare_cached(
            "UPDATE transfers SET status = ?2, resolved_at_ns = ?3, resolve_seq = ?4, resolve_id = ?5
             WHERE transfer_id = ?1 AND status = 'accepted'",
        )?
        .execute(params![id.as_str(), status.as_str(), at.0, resolve_seq, request.map(RequestId::as_str)])?;
    if changed != 1 {
        return Err(RegistryError::Storage(format!(
            "transfer {id} is pending in memory, not in the database"
        )));
    }
    Ok(())
}

/// What a request id was used for before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prior {
    /// A request that is not a proposal: its kind, its fields (or their hash: for a post or a
    /// void, the transfer id), and its answer as JSON (none for a successful post or void: the
    /// transfer row is the answer).
    Request {
        /// The kind of request.
        kind: String,
        /// Its fields, or their hash.
        fields: String,
        /// Its answer, if stored.
        answer: Option<String>,
    },
    /// A proposal: the transfer of that id.
    Proposal,
}

/// What a request id was used for before, if anything: one statement looks for it as a
/// request, a transfer (a proposal's record is its transfer row) and the post or void that
/// resolved a transfer (recorded on that transfer).
pub fn prior(c: &Connection, id: &RequestId) -> Result<Option<Prior>, RegistryError> {
    let row: Option<(String, Option<String>, Option<String>)> = c
        .prepare_cached(
            "SELECT kind, fields, answer FROM requests WHERE request_id = ?1
             UNION ALL SELECT 'propose', NULL, NULL FROM transfers WHERE transfer_id = ?1
             UNION ALL SELECT CASE status WHEN 'completed' THEN 'post' ELSE 'void' END, transfer_id, NULL
                 FROM transfers WHERE resolve_id = ?1",
        )?
        .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(row.map(|(kind, fields, answer)| match fields {
        Some(fields) => Prior::Request { kind, fields, answer },
        None => Prior::Proposal,
    }))
}

/// Records a request that is not a proposal.
pub fn insert_request(
    c: &Connection,
    id: &RequestId,
    kind: &str,
    fields: &str,
    answer: Option<&str>,
    at: Timestamp,
) -> Result<(), RegistryError> {
    c.prepare_cached(
        "INSERT INTO requests (request_id, kind, fields, answer, at_ns) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id.as_str(), kind, fields, answer, at.0])?;
    Ok(())
}

/// Opens an account.
pub fn insert_account(c: &Connection, account: &AccountId, at: Timestamp) -> Result<(), RegistryError> {
    c.prepare_cached("INSERT INTO accounts (account_id, opened_at_ns) VALUES (?1, ?2)")?
        .execute(params![account.as_str(), at.0])?;
    Ok(())
}

/// Records an issuance and moves the serial counter past it.
pub fn insert_issuance(
    c: &Connection,
    seq: i64,
    account: &AccountId,
    block: &SerialBlock,
    first_of_its_kind: bool,
    at: Timestamp,
) -> Result<(), RegistryError> {
    c.prepare_cached(
        "INSERT INTO issuances (seq, account_id, instrument, vintage, serial_start, serial_end, at_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        seq,
        account.as_str(),
        i64::from(block.instrument.0),
        i64::from(block.vintage.0),
        to_i64(block.start),
        to_i64(block.end),
        at.0
    ])?;
    let sql = match first_of_its_kind {
        false => "UPDATE serial_counters SET next_serial = ?3 WHERE instrument = ?1 AND vintage = ?2",
        true => "INSERT INTO serial_counters (instrument, vintage, next_serial) VALUES (?1, ?2, ?3)",
    };
    c.prepare_cached(sql)?.execute(params![
        i64::from(block.instrument.0),
        i64::from(block.vintage.0),
        to_i64(block.end + 1)
    ])?;
    Ok(())
}

/// An issuance as stored: its event number, account, block and time.
pub type IssuanceRow = (i64, AccountId, SerialBlock, Timestamp);

fn issuances_where(
    c: &Connection,
    clause: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<IssuanceRow>, RegistryError> {
    let sql = format!(
        "SELECT seq, account_id, instrument, vintage, serial_start, serial_end, at_ns FROM issuances {clause}"
    );
    type Raw = (i64, String, i64, i64, i64, i64, i64);
    let raws: Vec<Raw> = c
        .prepare_cached(&sql)?
        .query_map(args, |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
        })?
        .collect::<Result<_, _>>()?;
    raws.into_iter()
        .map(|(seq, a, i, v, s, e, at)| {
            let block = SerialBlock {
                instrument: instrument(i)?,
                vintage: vintage(v)?,
                start: to_u64(s, "serial")?,
                end: to_u64(e, "serial")?,
            };
            if block.start > block.end {
                return Err(corrupt("issuance"));
            }
            Ok((seq, account_id(a)?, block, Timestamp(at)))
        })
        .collect()
}

/// `?1`, the account a query is about, or NULL for every account.
fn account_param(account: Option<&AccountId>) -> Option<&str> {
    account.map(AccountId::as_str)
}

/// The issuances (to one account, or to all) dated in `[from, to)`, in ledger order.
pub fn issuances_in(
    c: &Connection,
    account: Option<&AccountId>,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<IssuanceRow>, RegistryError> {
    issuances_where(
        c,
        "WHERE (?1 IS NULL OR account_id = ?1) AND at_ns >= ?2 AND at_ns < ?3 ORDER BY seq",
        params![account_param(account), from.0, to.0],
    )
}

/// The issuances (to one account, or to all) of an instrument dated after `after`.
pub fn issuances_after(
    c: &Connection,
    account: Option<&AccountId>,
    instrument: InstrumentId,
    after: Timestamp,
) -> Result<Vec<IssuanceRow>, RegistryError> {
    issuances_where(
        c,
        "WHERE (?1 IS NULL OR account_id = ?1) AND at_ns > ?2 AND instrument = ?3 ORDER BY seq",
        params![account_param(account), after.0, i64::from(instrument.0)],
    )
}

/// The resolved transfers (out of one account, or all) proposed in `[from, to)` (each was
/// resolved at or after `from`: the resolution index finds them), in ledger order.
pub fn resolved_proposed_in(
    c: &Connection,
    account: Option<&AccountId>,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<TransferRow>, RegistryError> {
    transfers_where(
        c,
        "WHERE resolved_at_ns IS NOT NULL AND resolved_at_ns >= ?2 AND proposed_at_ns >= ?2
         AND proposed_at_ns < ?3 AND (?1 IS NULL OR from_account = ?1) ORDER BY propose_seq",
        params![account_param(account), from.0, to.0],
    )
}

/// The transfers (of one account, either side, or all) resolved in `[from, to)`, in ledger
/// order.
pub fn resolved_in(
    c: &Connection,
    account: Option<&AccountId>,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<TransferRow>, RegistryError> {
    transfers_where(
        c,
        "WHERE resolved_at_ns IS NOT NULL AND resolved_at_ns >= ?2 AND resolved_at_ns < ?3
         AND (?1 IS NULL OR from_account = ?1 OR to_account = ?1) ORDER BY resolve_seq",
        params![account_param(account), from.0, to.0],
    )
}

/// The transfers (of one account, either side, or all) of an instrument resolved after
/// `after`, last first.
pub fn resolved_after(
    c: &Connection,
    account: Option<&AccountId>,
    instrument: InstrumentId,
    after: Timestamp,
) -> Result<Vec<TransferRow>, RegistryError> {
    transfers_where(
        c,
        "WHERE resolved_at_ns IS NOT NULL AND resolved_at_ns > ?2 AND instrument = ?3
         AND (?1 IS NULL OR from_account = ?1 OR to_account = ?1) ORDER BY resolve_seq DESC",
        params![account_param(account), after.0, i64::from(instrument.0)],
    )
}

/// The current state, derived from the record: accounts, counters, the serials issued, moved by
/// every completed transfer in ledger order, less those reserved by pending transfers.
pub fn load_ledger(c: &Connection) -> Result<Ledger, RegistryError> {
    let mut ledger = Ledger::default();
    let accounts: Vec<(String, i64)> = c
        .prepare("SELECT account_id, opened_at_ns FROM accounts")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (a, at) in accounts {
        ledger.accounts.insert(account_id(a)?, Timestamp(at));
    }
    let counters: Vec<(i64, i64, i64)> = c
        .prepare("SELECT instrument, vintage, next_serial FROM serial_counters")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (i, v, next) in counters {
        ledger.next_serial.insert((instrument(i)?, vintage(v)?), to_u64(next, "serial counter")?);
    }
    let inconsistent = |what: &str, id: &str| {
        RegistryError::Storage(format!("the ledger's record does not add up at {what} {id}"))
    };
    for (seq, account, block, _) in issuances_where(c, "ORDER BY seq", [])? {
        ledger.credit(&account, &[block]).map_err(|_| inconsistent("issuance", &seq.to_string()))?;
        ledger.seq = ledger.seq.max(seq);
    }
    for row in transfers_where(c, "WHERE status = 'completed' ORDER BY resolve_seq", [])? {
        let t = &row.transfer;
        ledger.debit(&t.from, &t.blocks).map_err(|_| inconsistent("transfer", t.id.as_str()))?;
        ledger.credit(&t.to, &t.blocks).map_err(|_| inconsistent("transfer", t.id.as_str()))?;
    }
    for row in transfers_where(c, "WHERE status = 'accepted'", [])? {
        let t = row.transfer;
        ledger.debit(&t.from, &t.blocks).map_err(|_| inconsistent("pending transfer", t.id.as_str()))?;
        ledger.pending.insert(t.id.clone(), t);
    }
    let last: Option<i64> = c.query_row(
        "SELECT MAX(m) FROM (SELECT MAX(propose_seq) AS m FROM transfers
         UNION ALL SELECT MAX(resolve_seq) AS m FROM transfers) s",
        [],
        |r| r.get(0),
    )?;
    ledger.seq = ledger.seq.max(last.unwrap_or(0));
    Ok(ledger)
}

/// Every request id in the record: transfers (a proposal's id), the posts and voids that
/// resolved them, and the other requests.
pub fn all_ids(c: &Connection) -> Result<Vec<String>, RegistryError> {
    Ok(c.prepare(
        "SELECT transfer_id FROM transfers
         UNION ALL SELECT resolve_id FROM transfers WHERE resolve_id IS NOT NULL
         UNION ALL SELECT request_id FROM requests",
    )?
    .query_map([], |r| r.get(0))?
    .collect::<Result<_, _>>()?)
}

/// A filter of [`all_ids`].
pub fn load_ids(c: &Connection) -> Result<IdFilter, RegistryError> {
    Ok(IdFilter::of(all_ids(c)?.iter().map(String::as_str)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_damage_is_refused() {
        let i = InstrumentId(3);
        let blocks = vec![
            SerialBlock { instrument: i, vintage: Vintage(2023), start: 1, end: 10 },
            SerialBlock { instrument: i, vintage: Vintage(2024), start: 7, end: 7 },
        ];
        let text = encode_blocks(&blocks);
        assert_eq!(text, "2023:1-10,2024:7-7");
        assert_eq!(decode_blocks(i, &text).unwrap(), blocks);
        assert_eq!(decode_blocks(i, "").unwrap(), vec![]);
        for bad in ["2023:10-1", "2023:0-1", "2023-1-2", "x:1-2", "2023:1", "2023:1-2,", "70000:1-2"] {
            assert!(matches!(decode_blocks(i, bad), Err(RegistryError::Storage(_))), "{bad}");
        }
    }
}
