//! The service's routes: one per [`crate::Registry`] operation, each with its OpenAPI entry.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cccx_engine::types::{InstrumentId, Qty};
use serde::Serialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::problem::{json_error, path_error, query_error, Problem};
use super::wire::{
    BatchAnswer, BatchBody, BatchItemAnswer, BatchItemBody, CheckAnswer, CheckBody, ExpireAnswer, ExpireBody,
    HoldingsParams, IssueBody, OpenAccountBody, ProposeBody, ResolveBody, StatementParams, TimeArg,
};
use super::AppState;
use crate::error::RegistryError;
use crate::registry::{BatchOp, Registry, BATCH_OPS_MAX};
use crate::service::schema;
use crate::types::{
    AccountId, IssueUnits, OpenAccount, PostTransfer, ProposeAndPost, ProposeTransfer, RequestId, Timestamp,
    Vintage, VoidTransfer,
};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "cccx reference registry",
        description = "A carbon registry's ledger over HTTP: accounts, issuance, two-phase transfers of serial blocks (propose, then post or void), holdings now or as of a time, statements, and the bid-window holdings check. Every change carries a client-made request id and is idempotent: a retry with the same id and fields gets the same answer (a refusal included) and changes nothing. Times are integer nanoseconds since the Unix epoch (UTC); requests may also give RFC 3339 text. Errors are problem documents (RFC 9457) with a stable `code` and the error's fields."
    ),
    components(schemas(schema::ProblemDoc))
)]
struct ApiDoc;

/// The routes, registered with their OpenAPI entries.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    use utoipa::OpenApi;
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(open_account))
        .routes(routes!(holdings))
        .routes(routes!(statement))
        .routes(routes!(issue))
        .routes(routes!(propose))
        .routes(routes!(get_transfer))
        .routes(routes!(post_transfer))
        .routes(routes!(void_transfer))
        .routes(routes!(batch))
        .routes(routes!(expire))
        .routes(routes!(holdings_check))
}

fn request_id(id: &str) -> Result<RequestId, Problem> {
    RequestId::new(id).map_err(Problem::from)
}

fn account_id(id: &str) -> Result<AccountId, Problem> {
    AccountId::new(id).map_err(Problem::from)
}

fn time_of(at: Option<&TimeArg>) -> Result<Option<Timestamp>, Problem> {
    at.map(TimeArg::timestamp).transpose().map_err(Problem::from)
}

fn time_param(text: &str) -> Result<Timestamp, Problem> {
    TimeArg::Text(text.to_string()).timestamp().map_err(Problem::from)
}

/// The registry's answer: `ok` and the value, or its refusal as a problem.
fn answer<T: Serialize>(ok: StatusCode, result: Result<T, RegistryError>) -> Result<Response, Problem> {
    Ok((ok, Json(result?)).into_response())
}

#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    summary = "Liveness: the ledger thread answers",
    responses(
        (status = 200, description = "Running", body = Object),
        (status = 503, description = "The ledger has stopped", body = schema::ProblemDoc, content_type = "application/problem+json")
    )
)]
async fn health(State(state): State<AppState>) -> Result<Response, Problem> {
    state.on_ledger(|_| ()).await?;
    Ok(Json(json!({"status": "ok"})).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/accounts",
    tag = "accounts",
    summary = "Open an account",
    request_body = OpenAccountBody,
    responses(
        (status = 201, description = "The account (a retry gets the same answer)", body = schema::Account),
        (status = 400, description = "Malformed request", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`account_exists`, `duplicate_id_other_fields`, `time_went_backwards`", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable: retry with the same id", body = schema::ProblemDoc, content_type = "application/problem+json")
    )
)]
async fn open_account(
    State(state): State<AppState>,
    body: Result<Json<OpenAccountBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let Json(b) = body.map_err(json_error)?;
    let req = OpenAccount { id: request_id(&b.id)?, account: account_id(&b.account)? };
    let at = time_of(b.at.as_ref())?;
    let result = state
        .on_ledger(move |l| {
            let at = l.stamp(at);
            l.registry.open_account(&req, at)
        })
        .await?;
    answer(StatusCode::CREATED, result)
}

#[utoipa::path(
    post,
    path = "/v1/issuances",
    tag = "accounts",
    summary = "Issue new units to an account, on the next free serials",
    request_body = IssueBody,
    responses(
        (status = 201, description = "The units issued", body = schema::Issuance),
        (status = 400, description = "Malformed request", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_account`", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`duplicate_id_other_fields`, `time_went_backwards`", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_quantity`, `serials_exhausted`", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable: retry with the same id", body = schema::ProblemDoc, content_type = "application/problem+json")
    )
)]
async fn issue(
    State(state): State<AppState>,
    body: Result<Json<IssueBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let Json(b) = body.map_err(json_error)?;
    let req = IssueUnits {
        id: request_id(&b.id)?,
        account: account_id(&b.account)?,
        instrument: InstrumentId(b.instrument),
        vintage: Vintage(b.vintage),
        quantity: b.quantity,
    };
    let at = time_of(b.at.as_ref())?;
    let result = state
        .on_ledger(move |l| {
            let at = l.stamp(at);
            l.registry.issue(&req, at)
        })
        .await?;
    answer(StatusCode::CREATED, result)
}

#[utoipa::path(
    post,
    path = "/v1/transfers",
    tag = "transfers",
    summary = "Propose a transfer: reserve the units, oldest first",
    description = "A refused proposal is recorded as a rejected transfer under its id; a retry gets the same refusal.",
    request_body = ProposeBody,
    responses(
        (status = 201, description = "The transfer, pending (`Accepted`)", body = schema::Transfer),
        (status = 400, description = "Malformed request", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_account`", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`duplicate_id_other_fields`, `time_went_backwards`", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`insufficient_units`, `same_account`, `invalid_quantity`", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable: retry with the same id", body = schema::ProblemDoc, content_type = "application/problem+json")
    )
)]
async fn propose(
    State(state): State<AppState>,
    body: Result<Json<ProposeBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let Json(b) = body.map_err(json_error)?;
    let req = proposal(&b.id, &b.from, &b.to, b.instrument, b.quantity, b.vintage)?;
    let at = time_of(b.at.as_ref())?;
    let result = state
        .on_ledger(move |l| {
            let at = l.stamp(at);
            l.registry.propose(&req, at)
        })
        .await?;
    answer(StatusCode::CREATED, result)
}

#[utoipa::path(
    get,
    path = "/v1/transfers/{transfer}",
    tag = "transfers",
    summary = "A transfer and where it stands",
    params(("transfer" = String, Path, description = "The transfer's id (its proposal's request id)")),
    responses(
        (status = 200, description = "The transfer", body = schema::Transfer),
        (status = 400, description = "Malformed request", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_transfer`", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable: retry", body = schema::ProblemDoc, content_type = "application/problem+json")
    )
)]
async fn get_transfer(
    State(state): State<AppState>,
    transfer: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let Path(transfer) = transfer.map_err(path_error)?;
    let id = request_id(&transfer)?;
    let found = state.on_ledger(move |l| l.registry.transfer(&id).map(|t| (id, t))).await??;
    match found {
        (_, Some(t)) => Ok(Json(t).into_response()),
        (id, None) => Err(RegistryError::UnknownTransfer(id).into()),
    }
}

/// Posts (`void` = false) or voids a pending transfer.
async fn resolve(
    state: AppState,
    transfer: Result<Path<String>, PathRejection>,
    body: Result<Json<ResolveBody>, JsonRejection>,
    void: bool,
) -> Result<Response, Problem> {
    let Path(transfer) = transfer.map_err(path_error)?;
    let Json(b) = body.map_err(json_error)?;
    let (id, transfer) = (request_id(&b.id)?, request_id(&transfer)?);
    let at = time_of(b.at.as_ref())?;
    let result = state
        .on_ledger(move |l| {
            let at = l.stamp(at);
            if void {
                l.registry.void(&VoidTransfer { id, transfer }, at)
            } else {
                l.registry.post(&PostTransfer { id, transfer }, at)
            }
        })
        .await?;
    answer(StatusCode::OK, result)
}

#[utoipa::path(
    post,
    path = "/v1/transfers/{transfer}/post",
    tag = "transfers",
    summary = "Post a pending transfer: its reserved units move to the acquirer",
    params(("transfer" = String, Path, description = "The pending transfer")),
    request_body = ResolveBody,
    responses(
        (status = 200, description = "The transfer, completed", body = schema::Transfer),
        (status = 400, description = "Malformed request", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_transfer`", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`transfer_not_pending`, `duplicate_id_other_fields`, `time_went_backwards`", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable: retry with the same id", body = schema::ProblemDoc, content_type = "application/problem+json")
    )
)]
async fn post_transfer(
    State(state): State<AppState>,
    transfer: Result<Path<String>, PathRejection>,
    body: Result<Json<ResolveBody>, JsonRejection>,
) -> Result<Response, Problem> {
    resolve(state, transfer, body, false).await
}

#[utoipa::path(
    post,
    path = "/v1/transfers/{transfer}/void",
    tag = "transfers",
    summary = "Void a pending transfer: its reserved units are released",
    params(("transfer" = String, Path, description = "The pending transfer")),
    request_body = ResolveBody,
    responses(
        (status = 200, description = "The transfer, terminated", body = schema::Transfer),
        (status = 400, description = "Malformed request", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_transfer`", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`transfer_not_pending`, `duplicate_id_other_fields`, `time_went_backwards`", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable: retry with the same id", body = schema::ProblemDoc, content_type = "application/problem+json")
    )
)]
async fn void_transfer(
    State(state): State<AppState>,
    transfer: Result<Path<String>, PathRejection>,
    body: Result<Json<ResolveBody>, JsonRejection>,
) -> Result<Response, Problem> {
    resolve(state, transfer, body, true).await
}

/// A proposal, from the members of its body or batch item.
fn proposal(
    id: &str,
    from: &str,
    to: &str,
    instrument: u32,
    quantity: Qty,
    vintage: Option<u16>,
) -> Result<ProposeTransfer, Problem> {
    Ok(ProposeTransfer {
        id: request_id(id)?,
        from: account_id(from)?,
        to: account_id(to)?,
        instrument: InstrumentId(instrument),
        quantity,
        vintage: vintage.map(Vintage),
    })
}

/// A batch item as the registry's operation.
fn batch_op(item: &BatchItemBody) -> Result<BatchOp, Problem> {
    Ok(match item {
        BatchItemBody::Propose { id, from, to, instrument, quantity, vintage } => {
            BatchOp::Propose(proposal(id, from, to, *instrument, *quantity, *vintage)?)
        }
        BatchItemBody::ProposeAndPost { id, from, to, instrument, quantity, vintage, post_id } => {
            BatchOp::ProposeAndPost(ProposeAndPost {
                propose: proposal(id, from, to, *instrument, *quantity, *vintage)?,
                post_id: request_id(post_id)?,
            })
        }
        BatchItemBody::Post { id, transfer } => {
            BatchOp::Post(PostTransfer { id: request_id(id)?, transfer: request_id(transfer)? })
        }
        BatchItemBody::Void { id, transfer } => {
            BatchOp::Void(VoidTransfer { id: request_id(id)?, transfer: request_id(transfer)? })
        }
    })
}

#[utoipa::path(
    post,
    path = "/v1/batch",
    tag = "transfers",
    summary = "Apply proposals, posts and voids in order, in one database transaction",
    description = "Each operation carries its own request id and is idempotent exactly like its single route; each gets its own answer, the one its single route would have given at that point of the sequence, and a refusal of one leaves the others alone. All are dated `at`. A malformed operation (a bad id) refuses the whole batch with a 400 and applies nothing. Send a batch that got no answer again, unchanged.",
    request_body = BatchBody,
    responses(
        (status = 200, description = "One answer per operation, in order", body = schema::BatchAnswer),
        (status = 400, description = "Malformed request", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`batch_too_large`: more operations than the service takes at once (4096), or `payload_too_large`", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable: send the same batch again", body = schema::ProblemDoc, content_type = "application/problem+json")
    )
)]
async fn batch(
    State(state): State<AppState>,
    body: Result<Json<BatchBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let Json(b) = body.map_err(json_error)?;
    if b.ops.len() > BATCH_OPS_MAX {
        let detail = format!("{} operations, at most {BATCH_OPS_MAX} per batch", b.ops.len());
        return Err(Problem::new(413, "batch_too_large", detail));
    }
    let ops = b.ops.iter().map(batch_op).collect::<Result<Vec<_>, Problem>>()?;
    let at = time_of(b.at.as_ref())?;
    let answers = state
        .on_ledger(move |l| {
            let at = l.stamp(at);
            l.registry.apply_batch(&ops, at)
        })
        .await??;
    let results = answers.into_iter().map(BatchItemAnswer::of).collect();
    Ok(Json(BatchAnswer { results }).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/expiries",
    tag = "transfers",
    summary = "Cancel every transfer pending past a timeout",
    request_body = ExpireBody,
    responses(
        (status = 200, description = "The transfers cancelled, by id", body = schema::ExpireAnswer),
        (status = 400, description = "Malformed request", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`duplicate_id_other_fields`, `time_went_backwards`", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable: retry with the same id", body = schema::ProblemDoc, content_type = "application/problem+json")
    )
)]
async fn expire(
    State(state): State<AppState>,
    body: Result<Json<ExpireBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let Json(b) = body.map_err(json_error)?;
    let id = request_id(&b.id)?;
    let at = time_of(b.at.as_ref())?;
    let timeout_ns = b.timeout_ns;
    let result = state
        .on_ledger(move |l| {
            if let Some(((timeout, now), expired)) = l.expiries.get(id.as_str()) {
                // An explicit time must match; the service's clock cannot (a retry comes later).
                let same = *timeout == timeout_ns && at.is_none_or(|at| at == *now);
                return match same {
                    true => Ok(expired.clone()),
                    false => Err(RegistryError::DuplicateIdOtherFields(id)),
                };
            }
            let now = l.stamp(at);
            let expired = l.registry.expire_pending(timeout_ns, now)?;
            l.remember_expiry(id.as_str().to_string(), ((timeout_ns, now), expired.clone()));
            Ok(expired)
        })
        .await?;
    answer(StatusCode::OK, result.map(|expired| ExpireAnswer { expired }))
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{account}/holdings",
    tag = "accounts",
    summary = "An account's blocks and totals of an instrument, now or as of a time",
    params(("account" = String, Path, description = "The account"), HoldingsParams),
    responses(
        (status = 200, description = "The holdings", body = schema::Holdings),
        (status = 400, description = "Malformed request", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_account`", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable: retry", body = schema::ProblemDoc, content_type = "application/problem+json")
    )
)]
async fn holdings(
    State(state): State<AppState>,
    account: Result<Path<String>, PathRejection>,
    params: Result<Query<HoldingsParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let Path(account) = account.map_err(path_error)?;
    let Query(p) = params.map_err(query_error)?;
    let account = account_id(&account)?;
    let as_of = p.as_of.as_deref().map(time_param).transpose()?;
    let instrument = InstrumentId(p.instrument);
    let result = state.on_ledger(move |l| l.registry.holdings(&account, instrument, as_of)).await?;
    answer(StatusCode::OK, result)
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{account}/statement",
    tag = "accounts",
    summary = "What happened to an account in [from, to), in ledger order",
    params(("account" = String, Path, description = "The account"), StatementParams),
    responses(
        (status = 200, description = "The statement", body = schema::Statement),
        (status = 400, description = "Malformed request", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_account`", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable: retry", body = schema::ProblemDoc, content_type = "application/problem+json")
    )
)]
async fn statement(
    State(state): State<AppState>,
    account: Result<Path<String>, PathRejection>,
    params: Result<Query<StatementParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let Path(account) = account.map_err(path_error)?;
    let Query(p) = params.map_err(query_error)?;
    let account = account_id(&account)?;
    let (from, to) = (time_param(&p.from)?, time_param(&p.to)?);
    let result = state.on_ledger(move |l| l.registry.statement(&account, from, to)).await?;
    answer(StatusCode::OK, result)
}

#[utoipa::path(
    post,
    path = "/v1/holdings-check",
    tag = "accounts",
    summary = "The bid-window holdings check: the sellers short of available units",
    description = "Reads only; safe to retry.",
    request_body = CheckBody,
    responses(
        (status = 200, description = "The sellers found short, in account order", body = schema::CheckAnswer),
        (status = 400, description = "Malformed request", body = schema::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Unavailable: retry", body = schema::ProblemDoc, content_type = "application/problem+json")
    )
)]
async fn holdings_check(
    State(state): State<AppState>,
    body: Result<Json<CheckBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let Json(b) = body.map_err(json_error)?;
    let sells = b
        .sells
        .iter()
        .map(|(account, qty)| Ok((account_id(account)?, *qty)))
        .collect::<Result<_, Problem>>()?;
    let (instrument, vintage) = (InstrumentId(b.instrument), b.vintage.map(Vintage));
    let result = state.on_ledger(move |l| l.registry.holdings_check(instrument, vintage, &sells)).await?;
    answer(StatusCode::OK, result.map(|short| CheckAnswer { short }))
}
