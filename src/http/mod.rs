//! HTTP routes: `/graphql` (GraphQL over HTTP, WebSocket upgrades, GraphiQL),
//! `/healthz`, `/readyz`, `/metrics`, and the embedded blob store's `/blobs/…`.

mod blobs;
mod graphql;
mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use async_graphql::http::GraphiQLSource;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::auth::{Accounts, Grant};
use crate::graphql::{ClientIp, ParleySchema, Viewer};

#[derive(Clone)]
struct Http {
    state: Arc<AppState>,
    schema: ParleySchema,
}

pub fn router(state: Arc<AppState>, schema: ParleySchema) -> Router {
    let body_limit = state.config.max_request_bytes as usize;
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/blobs/{*key}", get(blobs::get).put(blobs::put))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(Http { state, schema })
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

/// `POST /graphql`: one operation (GraphQL over HTTP).
async fn graphql_post(
    State(http): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let media = graphql::negotiate(&headers);
    match graphql::from_body(&headers, body) {
        Ok(request) => graphql::execute(&http, peer, &headers, request, media).await,
        Err(refused) => refused.respond(media),
    }
}

/// `GET /graphql`: the WebSocket endpoint when upgrading, a query when the URL carries
/// one, GraphiQL otherwise.
async fn graphql_get(
    State(http): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => {
            let ip = client(&http, peer, &headers);
            if let Err(limited) = http.state.rate.connect(ip.0) {
                return too_many(limited);
            }
            ws::upgrade(upgrade, http.schema.clone(), http.state.clone(), ip)
        }
        Err(_) if params.contains_key("query") => {
            let media = graphql::negotiate(&headers);
            match graphql::from_query(&params) {
                Ok(request) => graphql::execute(&http, peer, &headers, request, media).await,
                Err(refused) => refused.respond(media),
            }
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
/// caught up, and its state: `live`, `rebuilding` (new tables are being built beside
/// the ones served) or `failed` (stuck, with the error).
async fn readyz(State(http): State<Http>) -> impl IntoResponse {
    let state = &http.state;
    if let Err(error) = state.db.ping().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "error": error.to_string() })),
        );
    }
    let head = parley_store::log::head(&state.db).await.ok();
    let rebuilds = parley_projections::rebuild::shares_done(&state.db)
        .await
        .unwrap_or_default();
    let projectors: Vec<_> = state
        .projections
        .positions()
        .into_iter()
        .map(|(name, progress)| {
            let rebuilding = rebuilds.iter().any(|(rebuilt, _)| rebuilt == name);
            serde_json::json!({
                "name": name,
                "state": crate::metrics::projector_state(&progress, rebuilding),
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

/// Prometheus metrics in the text exposition format.
async fn metrics(State(http): State<Http>) -> Response {
    let state = &http.state;
    let head = parley_store::log::head(&state.db).await.ok();
    let rebuilds = parley_projections::rebuild::shares_done(&state.db)
        .await
        .unwrap_or_default();
    crate::metrics::projectors(&state.projections.positions(), head, &rebuilds);
    crate::metrics::consistency_timeouts(
        state
            .consistency_timeouts
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    match crate::metrics::render() {
        Some(page) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            page,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are off").into_response(),
    }
}
