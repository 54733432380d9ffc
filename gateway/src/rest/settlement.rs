//! Settlement over REST: obligations and their states (a participant sees those where it buys or
//! sells, an operator all), the summary per state, and the operator's holdings check.

use std::collections::BTreeMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cccx_engine::{CommandBody, Event, ParticipantId};
use cccx_settlement::settle::{Obligation, ObligationFilter, ObligationState, StateCounts};
use cccx_settlement::AccountId;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{caller, instrument, operator, path_error, query_error, AppState, Caller, Problem, ProblemDoc};
use crate::core::{Intent, Query, QueryResult};
use crate::settlement::SettlementService;

/// The most obligations one answer lists.
pub const OBLIGATIONS_LIMIT_MAX: usize = 10_000;

fn service(state: &AppState) -> Result<&SettlementService, Problem> {
    state.settlement.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "settlement is off ([settlement] enabled = false)",
        )
    })
}

fn storage(e: String) -> Problem {
    tracing::error!("settlement read: {e}");
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("settlement: {e}"))
}

/// One obligation as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ObligationView {
    /// The trade id: `<symbol>-<seq>-<index>`.
    pub trade_id: String,
    /// The instrument.
    pub symbol: String,
    /// The buyer's participant id (none for an account no configured participant has).
    pub buyer: Option<u32>,
    /// The buyer's registry account.
    pub buyer_account: String,
    /// The seller's participant id (none for an account no configured participant has).
    pub seller: Option<u32>,
    /// The seller's registry account.
    pub seller_account: String,
    /// Certificates.
    pub qty: u64,
    /// Price per certificate.
    pub price: i64,
    /// Price x quantity.
    pub value: i64,
    /// The fee charged to each side.
    pub fee: i64,
    /// created, submitted, confirmed, failed, retried or broken.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why it is broken, or why the last attempt failed.
    pub reason: Option<String>,
    /// When the trade happened (RFC 3339).
    pub traded_at: String,
    /// When the obligation last changed (RFC 3339).
    pub updated_at: String,
}

fn view(s: &SettlementService, o: &Obligation) -> ObligationView {
    let t = &o.trade;
    ObligationView {
        trade_id: t.trade_id.clone(),
        symbol: s.symbols().get(t.instrument.0 as usize).cloned().unwrap_or_default(),
        buyer: s.accounts().participant(&t.buyer),
        buyer_account: t.buyer.to_string(),
        seller: s.accounts().participant(&t.seller),
        seller_account: t.seller.to_string(),
        qty: t.qty,
        price: t.price,
        value: i64::try_from(i128::from(t.price) * i128::from(t.qty)).unwrap_or(i64::MAX),
        fee: o.fee,
        state: o.state.as_str().into(),
        attempts: o.attempts,
        reason: o.reason.clone(),
        traded_at: t.traded_at.to_rfc3339(),
        updated_at: o.updated_at.to_rfc3339(),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ObligationParams {
    /// Only obligations in this state (created, submitted, confirmed, failed, retried, broken).
    state: Option<String>,
    /// Only obligations of this instrument (symbol).
    instrument: Option<String>,
    /// At most this many, newest first (1 to 10000; default 100).
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/settlement/obligations",
    tag = "settlement",
    summary = "Obligations, newest first: a participant's own (as buyer or seller), or all for an operator",
    params(ObligationParams),
    responses((status = 200, description = "Obligations", body = Vec<ObligationView>), (status = 400, description = "Malformed request", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 503, description = "Settlement is off or its database cannot be read", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub(super) async fn obligations(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<QueryParams<ObligationParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let who = caller(&state, &headers, None)?;
    let QueryParams(params) = params.map_err(query_error)?;
    let wanted = match params.state.as_deref() {
        None => None,
        Some(name) => Some(ObligationState::parse(name).ok_or_else(|| {
            Problem::bad_request(format!(
                "state `{name}`: expected created, submitted, confirmed, failed, retried or broken"
            ))
        })?),
    };
    let instrument = match params.instrument.as_deref() {
        None => None,
        Some(symbol) => Some(
            state
                .core
                .instrument_id(symbol)
                .ok_or_else(|| Problem::bad_request(format!("no instrument {symbol}")))?,
        ),
    };
    let limit = params.limit.unwrap_or(100);
    if !(1..=OBLIGATIONS_LIMIT_MAX).contains(&limit) {
        return Err(Problem::bad_request(format!("limit must be 1 to {OBLIGATIONS_LIMIT_MAX}")));
    }
    let s = service(&state)?.clone();
    // A participant sees the obligations its registry account is a party to (none without one).
    let account = match who {
        Caller::Operator => None,
        Caller::Participant(p) => match s.accounts().account(p) {
            Some(a) => Some(a.clone()),
            None => return Ok(Json(Vec::<ObligationView>::new()).into_response()),
        },
    };
    let filter = ObligationFilter { state: wanted, instrument, account };
    let list = s
        .read(move |r| r.obligations_where(&filter, limit).map_err(|e| e.to_string()))
        .await
        .and_then(|r| r)
        .map_err(storage)?;
    let out: Vec<ObligationView> = list.iter().map(|o| view(&s, o)).collect();
    Ok(Json(out).into_response())
}

/// Counts per state, every state named.
fn count(counts: &StateCounts) -> BTreeMap<&'static str, u64> {
    use ObligationState::*;
    let mut out: BTreeMap<&'static str, u64> =
        [Created, Submitted, Confirmed, Failed, Retried, Broken].iter().map(|s| (s.as_str(), 0)).collect();
    for (state, n) in counts {
        *out.entry(state.as_str()).or_default() += n;
    }
    out
}

#[utoipa::path(
    get,
    path = "/v1/settlement/summary",
    tag = "settlement",
    summary = "Obligations per state (the caller's own, or all and per participant for an operator), and funds in the exchange's settlement ledger",
    responses((status = 200, description = "Counts per state", body = Object), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 503, description = "Settlement is off or its database cannot be read", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub(super) async fn summary(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Problem> {
    let who = caller(&state, &headers, None)?;
    let s = service(&state)?.clone();
    let accounts: Vec<(u32, String)> = state
        .config
        .participants
        .iter()
        .filter(|p| match who {
            Caller::Operator => true,
            Caller::Participant(me) => p.id == me,
        })
        .map(|p| (p.id, p.registry_account.clone()))
        .collect();
    let ((all, by_account), balances) = s
        .read(move |r| {
            let counts = r.counts_by_account().map_err(|e| e.to_string())?;
            let balances = accounts
                .into_iter()
                .map(|(p, a)| Ok((p, a.clone(), r.balance(&a).map_err(|e| e.to_string())?)))
                .collect::<Result<Vec<_>, String>>()?;
            Ok::<_, String>((counts, balances))
        })
        .await
        .and_then(|r| r)
        .map_err(storage)?;
    let of = |account: &str| -> StateCounts {
        AccountId::new(account).ok().and_then(|a| by_account.get(&a).cloned()).unwrap_or_default()
    };
    // An operator sees every obligation, a participant those of its registry account.
    let mine: StateCounts = match who {
        Caller::Operator => all,
        Caller::Participant(p) => s.accounts().account(p).map(|a| of(a.as_str())).unwrap_or_default(),
    };
    let participants: Vec<serde_json::Value> = balances
        .iter()
        .map(|(p, account, balance)| {
            json!({"participant": p, "registry_account": account, "states": count(&of(account)), "funds_balance": balance})
        })
        .collect();
    let total: u64 = mine.iter().map(|(_, n)| n).sum();
    Ok(Json(json!({"total": total, "states": count(&mine), "participants": participants})).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/admin/instruments/{symbol}/holdings-check",
    tag = "admin",
    summary = "The registry's holdings check now: send each seller's total, remove the offers of the sellers found short (with the bid window closed)",
    params(("symbol" = String, Path, description = "Instrument symbol")),
    responses((status = 200, description = "The sellers checked and those found short, with what became of their offers", body = Object), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "No such instrument", body = ProblemDoc, content_type = "application/problem+json"), (status = 502, description = "The registry did not answer", body = ProblemDoc, content_type = "application/problem+json"), (status = 503, description = "Settlement is off, or the exchange is busy or stopped", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub(super) async fn holdings_check(
    State(state): State<AppState>,
    headers: HeaderMap,
    symbol: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    operator(&state, &headers)?;
    let Path(symbol) = symbol.map_err(path_error)?;
    let instrument = instrument(&state, &symbol)?;
    let s = service(&state)?.clone();
    let QueryResult::SellTotals(sells) = state.core.query(Query::SellTotals { instrument }).await? else {
        return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "unexpected answer"));
    };
    let sellers = sells.len();
    let sells = sells.into_iter().map(|(p, q)| (ParticipantId(p), q)).collect();
    let short = s
        .holdings_check(instrument, sells)
        .await
        .map_err(|e| Problem::new(StatusCode::BAD_GATEWAY, "registry unavailable", e))?;
    let mut out = Vec::new();
    for sh in short {
        state.core.metrics().shortfalls.inc();
        let body = CommandBody::Shortfall { instrument, participant: sh.participant };
        let outcome = state.core.call(ParticipantId(0), Intent::Operator(body)).await?;
        let (removed, reason) = match outcome.events.first() {
            Some(Event::Rejected { reason, .. }) => (false, Some(reason.text())),
            _ => (true, None),
        };
        out.push(json!({
            "participant": sh.participant.0, "registry_account": sh.account.to_string(),
            "requested": sh.requested, "available": sh.available,
            "offers_removed": removed, "reason": reason, "seq": outcome.seq,
        }));
    }
    Ok(Json(json!({"symbol": symbol, "sellers_checked": sellers, "short": out})).into_response())
}
