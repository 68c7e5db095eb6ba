//! HTTP routes: `/graphql` (POST queries, GET GraphiQL), `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::GraphQLResponse;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::auth::{Accounts, Grant};
use crate::graphql::{ClientIp, Loaders, ParleySchema, Viewer};

#[derive(Clone)]
struct Http {
    state: Arc<AppState>,
    schema: ParleySchema,
}

pub fn router(state: Arc<AppState>, schema: ParleySchema) -> Router {
    let body_limit = state.config.max_request_bytes as usize;
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(Http { state, schema })
}

/// A request refused before any GraphQL ran, in the GraphQL error shape.
fn refuse(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": crate::graphql::error::code::BAD_USER_INPUT } }]
    });
    (status, Json(body)).into_response()
}

/// Reads one GraphQL request from a body of at most `PARLEY_MAX_REQUEST_BYTES`. File
/// uploads do not travel through GraphQL (attachments use presigned URLs), so
/// multipart bodies are refused rather than parsed.
async fn read_request(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<async_graphql::Request, Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    if content_type.is_some_and(|ct| {
        ct.trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/")
    }) {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "multipart requests are not accepted; send application/json",
        ));
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than this server accepts (PARLEY_MAX_REQUEST_BYTES)",
            )
        } else {
            refuse(rejection.status(), &rejection.body_text())
        }
    })?;
    async_graphql::http::receive_body(
        content_type,
        futures::io::Cursor::new(body),
        async_graphql::http::MultipartOptions::default(),
    )
    .await
    .map_err(|error| refuse(StatusCode::BAD_REQUEST, &error.to_string()))
}

/// Reads `Authorization: Bearer <token>`: anonymous without one, invalid unless the
/// token is well signed, unexpired and of a session still open.
pub fn viewer_from_header(value: Option<&str>, accounts: &Accounts) -> (Viewer, Option<Grant>) {
    let Some(value) = value else {
        return (Viewer::Anonymous, None);
    };
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim);
    match token.and_then(|token| accounts.verify_access(token)) {
        Some(grant) => (Viewer::User(grant.user_id), Some(grant)),
        None => (Viewer::Invalid, None),
    }
}

/// The client's address, by the socket peer and trusted proxies.
fn client(http: &Http, peer: SocketAddr, headers: &HeaderMap) -> ClientIp {
    ClientIp(crate::rate::client_ip(
        peer,
        headers,
        &http.state.config.trusted_proxies,
    ))
}

/// A refusal for a whole HTTP request: 429 with `Retry-After`.
fn too_many(limited: crate::rate::Limited) -> Response {
    let seconds = limited.retry_after_secs();
    let body = serde_json::json!({
        "errors": [{
            "message": format!("too many requests; try again in {seconds} s"),
            "extensions": { "code": crate::graphql::error::code::RATE_LIMITED, "retryAfter": seconds }
        }]
    });
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, seconds.to_string())],
        Json(body),
    )
        .into_response()
}

async fn graphql(
    State(http): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request = match read_request(&headers, body).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let (viewer, _) = viewer_from_header(authorization, &http.state.accounts);
    let user = match viewer {
        Viewer::User(id) => Some(id),
        _ => None,
    };
    let loaders = Loaders::new(&http.state.db, user, http.state.clock.clone());
    let ip = client(&http, peer, &headers);
    let mut response = http
        .schema
        .execute(request.data(viewer).data(loaders).data(ip))
        .await;
    // Every resolver error carries its code already; what reaches here without one
    // failed before any resolver ran (parsing, validation, argument coercion, limits):
    // the request itself was bad.
    for error in &mut response.errors {
        let coded = error
            .extensions
            .as_ref()
            .is_some_and(|extensions| extensions.get("code").is_some());
        if !coded {
            error
                .extensions
                .get_or_insert_with(Default::default)
                .set("code", crate::graphql::error::code::BAD_USER_INPUT);
        }
    }
    // A limited operation tells when to come back, in the header too.
    let retry_after = response
        .errors
        .iter()
        .filter_map(|error| error.extensions.as_ref())
        .filter(|extensions| {
            extensions.get("code")
                == Some(&async_graphql::Value::from(
                    crate::graphql::error::code::RATE_LIMITED,
                ))
        })
        .filter_map(|extensions| match extensions.get("retryAfter") {
            Some(async_graphql::Value::Number(n)) => n.as_u64(),
            _ => None,
        })
        .max();
    let mut response = GraphQLResponse::from(response).into_response();
    if let Some(seconds) = retry_after {
        if let Ok(value) = header::HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

/// `GET /graphql`: the WebSocket endpoint when upgrading, GraphiQL otherwise.
async fn graphql_get(
    State(http): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => {
            let ip = client(&http, peer, &headers);
            if let Err(limited) = http.state.rate.connect(ip.0) {
                return too_many(limited);
            }
            crate::live::upgrade(upgrade, http.schema.clone(), http.state.clone(), ip)
        }
        Err(_) => graphiql().into_response(),
    }
}

fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql")
            .finish(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the store answers; reports each projector's position, whether it has
/// caught up, and whether it is stuck (`state: failed`, with the error).
async fn readyz(State(http): State<Http>) -> impl IntoResponse {
    let state = &http.state;
    if let Err(error) = state.db.ping().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "error": error.to_string() })),
        );
    }
    let head = parley_projections::log::head(&state.db).await.ok();
    let projectors: Vec<_> = state
        .projections
        .positions()
        .into_iter()
        .map(|(name, progress)| {
            serde_json::json!({
                "name": name,
                "state": if progress.failure.is_some() { "failed" } else { "live" },
                "position": progress.position.to_cursor(),
                "caughtUp": head.is_none_or(|head| progress.position >= head),
                "error": progress.failure,
            })
        })
        .collect();
    (
        StatusCode::OK,
        Json(serde_json::json!({
            "ready": true,
            "head": head.map(|h| h.to_cursor()),
            "projectors": projectors,
        })),
    )
}
