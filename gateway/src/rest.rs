//! The REST/JSON API and the WebSocket feed (axum).
//!
//! Every request but `/health` and `/metrics` carries an API key: `Authorization: Bearer <key>`
//! (or `?key=` on the WebSocket URL). Participant keys reach the participant routes, operator
//! keys the `/v1/admin` routes; market data is open to both. A participant only ever sees its
//! own orders: another's order id answers 404, exactly like one that does not exist.
//!
//! Errors are problem documents (RFC 9457, `application/problem+json`) with a 4xx status for
//! anything the caller can fix; an order the engine refuses is `422` with the engine's reason
//! code. Nothing a caller sends can produce a 500.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cccx_engine::{
    CommandBody, Event, InstrumentId, MassCancelScope, OrderType, ParticipantId, Phase, Side, TimeInForce,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::config::Config;
use crate::core::{Core, CoreError, Intent, Outcome, Query, QueryResult};
use crate::orders::{ExecKind, OrderUpdate, OrderView, PublicTrade, Published};
use crate::secrets::Secrets;

mod settlement;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The engine thread.
    pub core: Core,
    /// The configuration.
    pub config: Arc<Config>,
    /// The credentials.
    pub secrets: Arc<Secrets>,
    /// The settlement thread (`None` when settlement is off).
    pub settlement: Option<crate::settlement::SettlementService>,
}

/// A problem document.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
    extra: Value,
}

impl Problem {
    fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Problem { status, title, detail: detail.into(), extra: Value::Null }
    }
    fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "bad request", detail)
    }
    fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not found", detail)
    }
    /// 422: the engine refused the command of journal sequence `seq`.
    fn rejected(reason: cccx_engine::RejectReason, seq: u64) -> Self {
        let mut p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", reason.text());
        p.extra = json!({"reason_code": reason.code(), "seq": seq});
        p
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("https://cccx.dev/problems/{}", self.title.replace(' ', "-")),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let (Value::Object(b), Value::Object(extra)) = (&mut body, self.extra) {
            b.extend(extra);
        }
        (self.status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response()
    }
}

impl From<CoreError> for Problem {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::UnknownOrder => Problem::not_found("no such order"),
            CoreError::DuplicateClientOrderId => {
                Problem::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            CoreError::Busy => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string()),
            CoreError::Stopped(_) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string())
            }
        }
    }
}

fn json_error(e: JsonRejection) -> Problem {
    match e {
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported media type",
            "send the body as application/json",
        ),
        other => Problem::bad_request(other.body_text()),
    }
}

fn path_error(e: PathRejection) -> Problem {
    Problem::bad_request(e.body_text())
}

fn query_error(e: QueryRejection) -> Problem {
    Problem::bad_request(e.body_text())
}

/// Who is calling.
enum Caller {
    Participant(u32),
    Operator,
}

fn caller(state: &AppState, headers: &HeaderMap, key: Option<&str>) -> Result<Caller, Problem> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(key) = from_header.or(key) else {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <api key>",
        ));
    };
    // Only the participants and operators of the current configuration: a key left in the
    // secrets file for someone removed from it no longer works.
    if let Some(p) = state.secrets.participant_by_key(key) {
        if state.config.participant(ParticipantId(p)).is_some() {
            return Ok(Caller::Participant(p));
        }
    }
    if let Some(name) = state.secrets.operator_by_key(key) {
        if state.config.operators.iter().any(|o| o.name == name) {
            return Ok(Caller::Operator);
        }
    }
    Err(Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown API key"))
}

fn participant(state: &AppState, headers: &HeaderMap) -> Result<u32, Problem> {
    match caller(state, headers, None)? {
        Caller::Participant(p) => Ok(p),
        Caller::Operator => {
            Err(Problem::new(StatusCode::FORBIDDEN, "forbidden", "operators use the /v1/admin routes"))
        }
    }
}

fn operator(state: &AppState, headers: &HeaderMap) -> Result<(), Problem> {
    match caller(state, headers, None)? {
        Caller::Operator => Ok(()),
        Caller::Participant(_) => {
            Err(Problem::new(StatusCode::FORBIDDEN, "forbidden", "an operator key is needed"))
        }
    }
}

fn instrument(state: &AppState, symbol: &str) -> Result<InstrumentId, Problem> {
    state.core.instrument_id(symbol).ok_or_else(|| Problem::not_found(format!("no instrument {symbol}")))
}

/// A problem document (RFC 9457), as every error answer carries it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProblemDoc {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this case.
    pub detail: String,
    /// The engine's reason code (422 answers).
    pub reason_code: Option<u16>,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "cccx exchange API", description = "REST/JSON API of the cccx carbon credit certificate exchange: orders, market data, accounts, settlement, and the operator's session control."),
    components(schemas(ProblemDoc, settlement::ObligationView)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("api_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The routes and their OpenAPI document, from the same registrations (so they cannot
/// disagree).
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(metrics))
        .routes(routes!(instruments))
        .routes(routes!(book))
        .routes(routes!(trades))
        .routes(routes!(auction))
        .routes(routes!(new_order, list_orders, mass_cancel))
        .routes(routes!(get_order, cancel_order, amend_order))
        .routes(routes!(get_order_by_client_id))
        .routes(routes!(account))
        .routes(routes!(websocket))
        .routes(routes!(admin_participants))
        .routes(routes!(admin_accounts))
        .routes(routes!(admin_funds))
        .routes(routes!(admin_holdings))
        .routes(routes!(admin_shortfall))
        .routes(routes!(admin_phase))
        .routes(routes!(admin_uncross))
        .routes(routes!(admin_expire))
        .routes(routes!(admin_mass_cancel))
        .routes(routes!(admin_sell_totals))
        .routes(routes!(settlement::holdings_check))
        .routes(routes!(settlement::obligations))
        .routes(routes!(settlement::summary))
        .split_for_parts()
}

/// The router with every route, and `/openapi.json`.
pub fn router(state: AppState) -> Router {
    let (routes, api) = routes();
    let document = Arc::new(api.to_json().unwrap_or_default());
    routes
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], document.to_string()) }
            }),
        )
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
                "this route does not take that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

async fn count_requests(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    state.core.metrics().http_requests.inc();
    next.run(request).await
}

#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    summary = "Liveness and journal position",
    responses((status = 200, description = "Running", body = Object), (status = 503, description = "The exchange is busy or stopped", body = ProblemDoc, content_type = "application/problem+json"))
)]
async fn health(State(state): State<AppState>) -> Response {
    match state.core.query(Query::Status).await {
        Ok(QueryResult::Status { last_seq, durable_seq }) => {
            Json(json!({"status": "ok", "last_seq": last_seq, "durable_seq": durable_seq})).into_response()
        }
        _ => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the engine is not running")
            .into_response(),
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.core.metrics().render(state.core.queue_depth());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[utoipa::path(
    get,
    path = "/v1/instruments",
    tag = "market data",
    summary = "Instruments with their phases and totals",
    responses((status = 200, description = "Instruments", body = Vec<Object>), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn instruments(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Problem> {
    caller(&state, &headers, None)?;
    let QueryResult::Instruments(list) = state.core.query(Query::Instruments).await? else {
        return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "unexpected answer"));
    };
    let with_config: Vec<Value> = list
        .into_iter()
        .map(|i| {
            let c = &state.config.instruments[i.id as usize];
            json!({
                "symbol": i.spec.symbol, "segment": c.segment, "mode": c.mode, "phase": i.phase,
                "tick_size": i.spec.tick_size, "lot_size": i.spec.lot_size,
                "price_floor": i.spec.price_floor, "price_ceiling": i.spec.price_ceiling,
                "max_order_qty": i.spec.max_order_qty,
                "trades": i.totals.trades, "volume": i.totals.volume, "last_price": i.totals.last_price,
            })
        })
        .collect();
    Ok(Json(with_config).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DepthParams {
    depth: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/instruments/{symbol}/book",
    tag = "market data",
    summary = "Book depth",
    params(("symbol" = String, Path, description = "Instrument symbol"), DepthParams),
    responses((status = 200, description = "Bids and asks, best first", body = Object), (status = 400, description = "Malformed request", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "No such instrument or order (or another participant's order)", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn book(
    State(state): State<AppState>,
    headers: HeaderMap,
    symbol: Result<Path<String>, PathRejection>,
    params: Result<QueryParams<DepthParams>, QueryRejection>,
) -> Result<Response, Problem> {
    caller(&state, &headers, None)?;
    let Path(symbol) = symbol.map_err(path_error)?;
    let QueryParams(params) = params.map_err(query_error)?;
    let instrument = instrument(&state, &symbol)?;
    let depth = params.depth.unwrap_or(10).clamp(1, 1000);
    let QueryResult::Book(bids, asks) = state.core.query(Query::Book { instrument, depth }).await? else {
        return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "unexpected answer"));
    };
    let levels = |l: Vec<(i64, u64)>| {
        l.into_iter().map(|(price, qty)| json!({"price": price, "qty": qty})).collect::<Vec<_>>()
    };
    Ok(Json(json!({"symbol": symbol, "bids": levels(bids), "asks": levels(asks)})).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct LimitParams {
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/instruments/{symbol}/trades",
    tag = "market data",
    summary = "Recent public trades, newest first",
    params(("symbol" = String, Path, description = "Instrument symbol"), LimitParams),
    responses((status = 200, description = "Trades", body = Vec<PublicTrade>), (status = 400, description = "Malformed request", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "No such instrument or order (or another participant's order)", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn trades(
    State(state): State<AppState>,
    headers: HeaderMap,
    symbol: Result<Path<String>, PathRejection>,
    params: Result<QueryParams<LimitParams>, QueryRejection>,
) -> Result<Response, Problem> {
    caller(&state, &headers, None)?;
    let Path(symbol) = symbol.map_err(path_error)?;
    let QueryParams(params) = params.map_err(query_error)?;
    let instrument = instrument(&state, &symbol)?;
    let limit = params.limit.unwrap_or(100).clamp(1, crate::orders::RECENT_TRADES);
    let QueryResult::Trades(list) = state.core.query(Query::Trades { instrument, limit }).await? else {
        return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "unexpected answer"));
    };
    Ok(Json(list).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/instruments/{symbol}/auction",
    tag = "market data",
    summary = "Last uncross (MCP, MCV) and the current demand and supply curves",
    params(("symbol" = String, Path, description = "Instrument symbol")),
    responses((status = 200, description = "Auction results and curves", body = Object), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "No such instrument or order (or another participant's order)", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn auction(
    State(state): State<AppState>,
    headers: HeaderMap,
    symbol: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    caller(&state, &headers, None)?;
    let Path(symbol) = symbol.map_err(path_error)?;
    let instrument = instrument(&state, &symbol)?;
    let QueryResult::Auction(last, curves) = state.core.query(Query::Auction { instrument }).await? else {
        return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "unexpected answer"));
    };
    let curves: Vec<Value> =
        curves.iter().map(|p| json!({"price": p.price, "demand": p.demand, "supply": p.supply})).collect();
    Ok(Json(json!({"symbol": symbol, "last_uncross": last, "curves": curves})).into_response())
}

#[derive(Deserialize, utoipa::ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum SideName {
    Buy,
    Sell,
}

#[derive(Deserialize, utoipa::ToSchema, Clone, Copy, Default)]
#[serde(rename_all = "lowercase")]
enum TypeName {
    #[default]
    Limit,
    Market,
}

#[derive(Deserialize, utoipa::ToSchema, Clone, Copy, Default)]
#[serde(rename_all = "lowercase")]
enum TifName {
    #[default]
    Gtc,
    Day,
    Ioc,
    Fok,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewOrderRequest {
    symbol: String,
    side: SideName,
    #[serde(default, rename = "type")]
    order_type: TypeName,
    #[serde(default)]
    tif: TifName,
    price: Option<i64>,
    qty: u64,
    #[serde(default)]
    post_only: bool,
    client_order_id: Option<String>,
}

/// The answer to an order request: the order as it stands and every report the command made
/// for the caller (fills included).
#[derive(Serialize, utoipa::ToSchema)]
struct OrderAnswer {
    seq: u64,
    order: Option<OrderView>,
    reports: Vec<OrderUpdate>,
}

fn answer(
    outcome: Outcome,
    participant: u32,
    order_id: Option<u64>,
    ok: StatusCode,
) -> Result<Response, Problem> {
    let reports: Vec<OrderUpdate> =
        outcome.updates.into_iter().filter(|u| u.order.participant == participant).collect();
    let order = order_id
        .and_then(|id| reports.iter().rev().find(|u| u.order.order_id == id))
        .map(|u| u.order.clone());
    if let Some(Event::Rejected { reason, .. }) =
        outcome.events.iter().find(|e| matches!(e, Event::Rejected { .. }))
    {
        let mut p = Problem::rejected(*reason, outcome.seq);
        p.extra["order"] = json!(order);
        return Err(p);
    }
    Ok((ok, Json(OrderAnswer { seq: outcome.seq, order, reports })).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/orders",
    tag = "orders",
    summary = "Enter an order",
    request_body = NewOrderRequest,
    responses((status = 201, description = "Accepted (and perhaps filled): the order and its reports", body = OrderAnswer), (status = 400, description = "Malformed request", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json"), (status = 422, description = "The engine refused it; `reason_code` says why", body = ProblemDoc, content_type = "application/problem+json"), (status = 503, description = "The exchange is busy or stopped", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn new_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<NewOrderRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let started = Instant::now();
    let p = participant(&state, &headers)?;
    let Json(r) = body.map_err(json_error)?;
    let instrument = instrument(&state, &r.symbol)
        .map_err(|_| Problem::bad_request(format!("no instrument {}", r.symbol)))?;
    let order_type = match r.order_type {
        TypeName::Limit => OrderType::Limit,
        TypeName::Market => OrderType::Market,
    };
    let price = match (order_type, r.price) {
        (OrderType::Limit, Some(price)) => price,
        (OrderType::Limit, None) => return Err(Problem::bad_request("a limit order needs a price")),
        (OrderType::Market, None) => 0,
        (OrderType::Market, Some(_)) => return Err(Problem::bad_request("a market order carries no price")),
    };
    let client_order_id = r.client_order_id.unwrap_or_default();
    if client_order_id.len() > 64 || client_order_id.chars().any(|c| c.is_control()) {
        return Err(Problem::bad_request("client_order_id: at most 64 printable characters"));
    }
    let intent = Intent::New {
        instrument,
        side: match r.side {
            SideName::Buy => Side::Buy,
            SideName::Sell => Side::Sell,
        },
        order_type,
        tif: match r.tif {
            TifName::Gtc => TimeInForce::Gtc,
            TifName::Day => TimeInForce::Day,
            TifName::Ioc => TimeInForce::Ioc,
            TifName::Fok => TimeInForce::Fok,
        },
        price,
        qty: r.qty,
        post_only: r.post_only,
        client_order_id,
    };
    let outcome = state.core.call(ParticipantId(p), intent).await?;
    let order_id = outcome
        .updates
        .iter()
        .find(|u| matches!(u.exec, ExecKind::New | ExecKind::Rejected))
        .map(|u| u.order.order_id);
    let result = answer(outcome, p, order_id, StatusCode::CREATED);
    state.core.metrics().rest_latency.record(started.elapsed());
    result
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListParams {
    open: Option<bool>,
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/orders",
    tag = "orders",
    summary = "The caller's orders, newest first",
    params(ListParams),
    responses((status = 200, description = "Orders", body = Vec<OrderView>), (status = 400, description = "Malformed request", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn list_orders(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<QueryParams<ListParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let p = participant(&state, &headers)?;
    let QueryParams(params) = params.map_err(query_error)?;
    let query = Query::Orders {
        participant: ParticipantId(p),
        open_only: params.open.unwrap_or(false),
        limit: params.limit.unwrap_or(100).clamp(1, 10_000),
    };
    let QueryResult::Orders(list) = state.core.query(query).await? else {
        return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "unexpected answer"));
    };
    Ok(Json(list).into_response())
}

async fn one_order(state: &AppState, query: Query) -> Result<Response, Problem> {
    match state.core.query(query).await? {
        QueryResult::Orders(list) => match list.into_iter().next() {
            Some(o) => Ok(Json(o).into_response()),
            None => Err(Problem::not_found("no such order")),
        },
        _ => Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "unexpected answer")),
    }
}

#[utoipa::path(
    get,
    path = "/v1/orders/{order_id}",
    tag = "orders",
    summary = "One of the caller's orders",
    params(("order_id" = u64, Path, description = "Exchange order id")),
    responses((status = 200, description = "The order", body = OrderView), (status = 400, description = "Malformed request", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "No such instrument or order (or another participant's order)", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn get_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, Problem> {
    let p = participant(&state, &headers)?;
    let Path(order_id) = id.map_err(path_error)?;
    one_order(&state, Query::Order { participant: ParticipantId(p), order_id }).await
}

#[utoipa::path(
    get,
    path = "/v1/orders/by-client-id/{client_order_id}",
    tag = "orders",
    summary = "One of the caller's orders by its client order id",
    params(("client_order_id" = String, Path, description = "Client order id")),
    responses((status = 200, description = "The order", body = OrderView), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "No such instrument or order (or another participant's order)", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn get_order_by_client_id(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let p = participant(&state, &headers)?;
    let Path(client_order_id) = id.map_err(path_error)?;
    one_order(&state, Query::OrderByClientId { participant: ParticipantId(p), client_order_id }).await
}

#[utoipa::path(
    delete,
    path = "/v1/orders/{order_id}",
    tag = "orders",
    summary = "Cancel an order",
    params(("order_id" = u64, Path, description = "Exchange order id")),
    responses((status = 200, description = "Cancelled", body = OrderAnswer), (status = 400, description = "Malformed request", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "No such instrument or order (or another participant's order)", body = ProblemDoc, content_type = "application/problem+json"), (status = 422, description = "The engine refused it; `reason_code` says why", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn cancel_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, Problem> {
    let p = participant(&state, &headers)?;
    let Path(order_id) = id.map_err(path_error)?;
    let outcome = state.core.call(ParticipantId(p), Intent::Cancel { order_id }).await?;
    answer(outcome, p, Some(order_id), StatusCode::OK)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AmendRequest {
    price: i64,
    qty: u64,
}

#[utoipa::path(
    patch,
    path = "/v1/orders/{order_id}",
    tag = "orders",
    summary = "Amend an order's price and open quantity",
    params(("order_id" = u64, Path, description = "Exchange order id")),
    request_body = AmendRequest,
    responses((status = 200, description = "Amended (and perhaps filled)", body = OrderAnswer), (status = 400, description = "Malformed request", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "No such instrument or order (or another participant's order)", body = ProblemDoc, content_type = "application/problem+json"), (status = 422, description = "The engine refused it; `reason_code` says why", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn amend_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<u64>, PathRejection>,
    body: Result<Json<AmendRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = participant(&state, &headers)?;
    let Path(order_id) = id.map_err(path_error)?;
    let Json(r) = body.map_err(json_error)?;
    let intent = Intent::Amend { order_id, price: r.price, qty: r.qty, client_order_id: None };
    let outcome = state.core.call(ParticipantId(p), intent).await?;
    answer(outcome, p, Some(order_id), StatusCode::OK)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct SymbolParams {
    symbol: Option<String>,
}

#[utoipa::path(
    delete,
    path = "/v1/orders",
    tag = "orders",
    summary = "Cancel all the caller's orders (in one instrument, or all)",
    params(SymbolParams),
    responses((status = 200, description = "Cancelled order ids", body = Object), (status = 400, description = "Malformed request", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "No such instrument or order (or another participant's order)", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn mass_cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<QueryParams<SymbolParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let p = participant(&state, &headers)?;
    let QueryParams(params) = params.map_err(query_error)?;
    let instrument = params.symbol.as_deref().map(|s| instrument(&state, s)).transpose()?;
    let outcome = state.core.call(ParticipantId(p), Intent::MassCancel { instrument }).await?;
    if let Some(Event::Rejected { reason, .. }) = outcome.events.first() {
        return Err(Problem::rejected(*reason, outcome.seq));
    }
    let cancelled: Vec<u64> =
        outcome.updates.iter().filter(|u| u.exec == ExecKind::Cancelled).map(|u| u.order.order_id).collect();
    Ok(Json(json!({"seq": outcome.seq, "cancelled": cancelled})).into_response())
}

fn account_json(participant: u32, a: &cccx_engine::risk::Account, symbols: &[String]) -> Value {
    let f = &a.funds;
    let holdings: Vec<Value> = a
        .holdings
        .iter()
        .map(|(i, h)| {
            json!({
                "symbol": symbols.get(i.0 as usize), "held": h.held.to_string(), "available": h.available.to_string(),
                "locked": h.locked.to_string(), "delivered": h.delivered.to_string(), "bought": h.bought.to_string(),
            })
        })
        .collect();
    json!({
        "participant": participant,
        "funds": {
            "deposited": f.deposited.to_string(), "available": f.available.to_string(), "locked": f.locked.to_string(),
            "paid": f.paid.to_string(), "received": f.received.to_string(),
        },
        "holdings": holdings,
        "standing": {
            "defaults_total": a.standing.defaults_total,
            "defaults_in_quarter": a.standing.defaults_in_quarter,
            "suspended_until_ns": a.standing.suspended_until,
        },
    })
}

fn symbols(state: &AppState) -> Vec<String> {
    state.core.instruments().iter().map(|s| s.symbol.clone()).collect()
}

#[utoipa::path(
    get,
    path = "/v1/account",
    tag = "account",
    summary = "The caller's funds, holdings and standing",
    responses((status = 200, description = "Account (amounts as decimal strings)", body = Object), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn account(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Problem> {
    let p = participant(&state, &headers)?;
    let QueryResult::Accounts(list) =
        state.core.query(Query::Accounts { participant: Some(ParticipantId(p)) }).await?
    else {
        return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "unexpected answer"));
    };
    let symbols = symbols(&state);
    let a = list.into_iter().next().map(|(_, a)| a).unwrap_or_default();
    Ok(Json(account_json(p, &a, &symbols)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/admin/participants",
    tag = "admin",
    summary = "Configured participants",
    responses((status = 200, description = "Participants", body = Vec<Object>), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn admin_participants(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Problem> {
    operator(&state, &headers)?;
    Ok(Json(&state.config.participants).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/admin/accounts",
    tag = "admin",
    summary = "Every account",
    responses((status = 200, description = "Accounts", body = Vec<Object>), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn admin_accounts(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Problem> {
    operator(&state, &headers)?;
    let QueryResult::Accounts(list) = state.core.query(Query::Accounts { participant: None }).await? else {
        return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "unexpected answer"));
    };
    let symbols = symbols(&state);
    Ok(Json(list.iter().map(|(p, a)| account_json(*p, a, &symbols)).collect::<Vec<_>>()).into_response())
}

/// Runs an operator command; 200 with its events, or 422 with the engine's reason.
async fn operator_command(state: &AppState, body: CommandBody) -> Result<Response, Problem> {
    let outcome = state.core.call(ParticipantId(0), Intent::Operator(body)).await?;
    if let Some(Event::Rejected { reason, .. }) = outcome.events.first() {
        return Err(Problem::rejected(*reason, outcome.seq));
    }
    let events: Vec<Value> =
        outcome.events.iter().map(|e| serde_json::to_value(e).unwrap_or(Value::Null)).collect();
    Ok(Json(json!({"seq": outcome.seq, "events": events})).into_response())
}

/// An operator command on the instrument named in the path.
async fn instrument_command(
    state: &AppState,
    headers: &HeaderMap,
    symbol: Result<Path<String>, PathRejection>,
    command: impl FnOnce(InstrumentId) -> CommandBody,
) -> Result<Response, Problem> {
    operator(state, headers)?;
    let Path(symbol) = symbol.map_err(path_error)?;
    let instrument = instrument(state, &symbol)?;
    operator_command(state, command(instrument)).await
}

fn known_participant(state: &AppState, id: u32) -> Result<ParticipantId, Problem> {
    state
        .config
        .participant(ParticipantId(id))
        .map(|p| ParticipantId(p.id))
        .ok_or_else(|| Problem::bad_request(format!("no participant {id}")))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FundsRequest {
    participant: u32,
    amount: i64,
}

#[utoipa::path(
    post,
    path = "/v1/admin/funds",
    tag = "admin",
    summary = "Deposit or withdraw a participant's funds",
    request_body = FundsRequest,
    responses((status = 200, description = "Done: the events", body = Object), (status = 400, description = "Malformed request", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json"), (status = 422, description = "The engine refused it; `reason_code` says why", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn admin_funds(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<FundsRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    operator(&state, &headers)?;
    let Json(r) = body.map_err(json_error)?;
    let participant = known_participant(&state, r.participant)?;
    operator_command(&state, CommandBody::Funds { participant, amount: r.amount }).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct HoldingsRequest {
    participant: u32,
    symbol: String,
    qty: i64,
}

#[utoipa::path(
    post,
    path = "/v1/admin/holdings",
    tag = "admin",
    summary = "Credit or debit a participant's registry holdings",
    request_body = HoldingsRequest,
    responses((status = 200, description = "Done: the events", body = Object), (status = 400, description = "Malformed request", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json"), (status = 422, description = "The engine refused it; `reason_code` says why", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn admin_holdings(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<HoldingsRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    operator(&state, &headers)?;
    let Json(r) = body.map_err(json_error)?;
    let participant = known_participant(&state, r.participant)?;
    let instrument = instrument(&state, &r.symbol).map_err(|p| Problem::bad_request(p.detail))?;
    operator_command(&state, CommandBody::Holdings { participant, instrument, qty: r.qty }).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ShortfallRequest {
    participant: u32,
    symbol: String,
}

#[utoipa::path(
    post,
    path = "/v1/admin/shortfall",
    tag = "admin",
    summary = "The registry found a seller short: remove its offers, count a default",
    request_body = ShortfallRequest,
    responses((status = 200, description = "Done: the events", body = Object), (status = 400, description = "Malformed request", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json"), (status = 422, description = "The engine refused it; `reason_code` says why", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn admin_shortfall(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ShortfallRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    operator(&state, &headers)?;
    let Json(r) = body.map_err(json_error)?;
    let participant = known_participant(&state, r.participant)?;
    let instrument = instrument(&state, &r.symbol).map_err(|p| Problem::bad_request(p.detail))?;
    operator_command(&state, CommandBody::Shortfall { instrument, participant }).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PhaseRequest {
    phase: String,
}

fn parse_phase(name: &str) -> Option<Phase> {
    [Phase::Continuous, Phase::Call, Phase::Closed, Phase::CallClosed, Phase::Uncrossed]
        .into_iter()
        .find(|p| crate::orders::phase_name(*p) == name)
}

#[utoipa::path(
    post,
    path = "/v1/admin/instruments/{symbol}/phase",
    tag = "admin",
    summary = "Move an instrument to a trading phase",
    params(("symbol" = String, Path, description = "Instrument symbol")),
    request_body = PhaseRequest,
    responses((status = 200, description = "Done: the events", body = Object), (status = 400, description = "Malformed request", body = ProblemDoc, content_type = "application/problem+json"), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "No such instrument or order (or another participant's order)", body = ProblemDoc, content_type = "application/problem+json"), (status = 422, description = "The engine refused it; `reason_code` says why", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn admin_phase(
    State(state): State<AppState>,
    headers: HeaderMap,
    symbol: Result<Path<String>, PathRejection>,
    body: Result<Json<PhaseRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    operator(&state, &headers)?;
    let Path(symbol) = symbol.map_err(path_error)?;
    let instrument = instrument(&state, &symbol)?;
    let Json(r) = body.map_err(json_error)?;
    let phase = parse_phase(&r.phase).ok_or_else(|| {
        Problem::bad_request(format!(
            "phase `{}`: expected continuous, call, closed, call_closed or uncrossed",
            r.phase
        ))
    })?;
    operator_command(&state, CommandBody::SetPhase { instrument, phase }).await
}

#[utoipa::path(
    post,
    path = "/v1/admin/instruments/{symbol}/uncross",
    tag = "admin",
    summary = "Run the uncross",
    params(("symbol" = String, Path, description = "Instrument symbol")),
    responses((status = 200, description = "Done: the events", body = Object), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "No such instrument or order (or another participant's order)", body = ProblemDoc, content_type = "application/problem+json"), (status = 422, description = "The engine refused it; `reason_code` says why", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn admin_uncross(
    State(state): State<AppState>,
    headers: HeaderMap,
    symbol: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    instrument_command(&state, &headers, symbol, |instrument| CommandBody::Uncross { instrument }).await
}

#[utoipa::path(
    post,
    path = "/v1/admin/instruments/{symbol}/expire",
    tag = "admin",
    summary = "End of day: expire DAY orders",
    params(("symbol" = String, Path, description = "Instrument symbol")),
    responses((status = 200, description = "Done: the events", body = Object), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "No such instrument or order (or another participant's order)", body = ProblemDoc, content_type = "application/problem+json"), (status = 422, description = "The engine refused it; `reason_code` says why", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn admin_expire(
    State(state): State<AppState>,
    headers: HeaderMap,
    symbol: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    instrument_command(&state, &headers, symbol, |instrument| CommandBody::ExpireDay { instrument }).await
}

#[utoipa::path(
    delete,
    path = "/v1/admin/instruments/{symbol}/orders",
    tag = "admin",
    summary = "Cancel every order of an instrument",
    params(("symbol" = String, Path, description = "Instrument symbol")),
    responses((status = 200, description = "Done: the events", body = Object), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "No such instrument or order (or another participant's order)", body = ProblemDoc, content_type = "application/problem+json"), (status = 422, description = "The engine refused it; `reason_code` says why", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn admin_mass_cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    symbol: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    instrument_command(&state, &headers, symbol, |instrument| {
        CommandBody::MassCancel(MassCancelScope::Instrument(instrument))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/admin/instruments/{symbol}/sell-totals",
    tag = "admin",
    summary = "Each seller's offered total: the export for the registry's holdings check",
    params(("symbol" = String, Path, description = "Instrument symbol")),
    responses((status = 200, description = "Sellers", body = Object), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json"), (status = 403, description = "The key may not use this route", body = ProblemDoc, content_type = "application/problem+json"), (status = 404, description = "No such instrument or order (or another participant's order)", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn admin_sell_totals(
    State(state): State<AppState>,
    headers: HeaderMap,
    symbol: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    operator(&state, &headers)?;
    let Path(symbol) = symbol.map_err(path_error)?;
    let instrument = instrument(&state, &symbol)?;
    let QueryResult::SellTotals(list) = state.core.query(Query::SellTotals { instrument }).await? else {
        return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "unexpected answer"));
    };
    let list: Vec<Value> = list
        .into_iter()
        .map(|(p, qty)| {
            let account = state.config.participant(ParticipantId(p)).map(|c| c.registry_account.clone());
            json!({"participant": p, "registry_account": account, "qty": qty})
        })
        .collect();
    Ok(Json(json!({"symbol": symbol, "sellers": list})).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct WsParams {
    key: Option<String>,
}

/// `GET /v1/ws`: public trades, level changes, phases and auction results for everyone; each
/// participant also gets its own order reports. A subscriber that falls too far behind is
/// disconnected (close code 1013, "try again later"), never allowed to slow the engine.
#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "market data",
    summary = "WebSocket feed: public market data and the caller's order reports",
    params(WsParams),
    responses((status = 101, description = "Switching to the WebSocket protocol"), (status = 400, description = "Not a WebSocket upgrade", body = ProblemDoc), (status = 401, description = "No or unknown API key", body = ProblemDoc, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
async fn websocket(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<QueryParams<WsParams>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, Problem> {
    let QueryParams(params) = params.map_err(query_error)?;
    let who = caller(&state, &headers, params.key.as_deref())?;
    let upgrade = upgrade.map_err(|e| Problem::bad_request(e.body_text()))?;
    let participant = match who {
        Caller::Participant(p) => Some(p),
        Caller::Operator => None,
    };
    let rx = state.core.subscribe();
    let metrics = state.core.metrics().clone();
    Ok(upgrade.on_upgrade(move |socket| feed(socket, rx, participant, metrics)))
}

/// How long a WebSocket subscriber may take to accept one message.
pub const WS_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn feed(
    mut socket: WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<Arc<Published>>,
    participant: Option<u32>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    metrics.ws_subscribers.inc();
    let hello = json!({"type": "subscribed", "participant": participant});
    let mut open = socket.send(Message::text(hello.to_string())).await.is_ok();
    while open {
        tokio::select! {
            published = rx.recv() => match published {
                Ok(p) => {
                    for text in feed_messages(&p, participant) {
                        // A reader that does not take a message within the timeout is cut off
                        // like one that falls behind the broadcast.
                        match tokio::time::timeout(WS_SEND_TIMEOUT, socket.send(Message::text(text))).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => {
                                open = false;
                                break;
                            }
                            Err(_) => {
                                metrics.slow_consumers.inc();
                                open = false;
                                break;
                            }
                        }
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    metrics.slow_consumers.inc();
                    let frame = axum::extract::ws::CloseFrame { code: 1013, reason: "too slow: reconnect".into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    open = false;
                }
                Err(RecvError::Closed) => open = false,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => open = false,
                Some(Ok(_)) => {}
            },
        }
    }
    metrics.ws_subscribers.dec();
}

/// The feed's JSON messages for one published record, as one subscriber sees them.
pub fn feed_messages(p: &Published, participant: Option<u32>) -> Vec<String> {
    let mut out = Vec::new();
    for m in &p.market {
        out.push(json!({"channel": "market", "seq": p.seq, "event": m}).to_string());
    }
    if let Some(me) = participant {
        for u in p.updates.iter().filter(|u| u.order.participant == me) {
            out.push(json!({"channel": "orders", "seq": p.seq, "report": u}).to_string());
        }
    }
    out
}
