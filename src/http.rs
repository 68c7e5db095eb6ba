//! HTTP routes: `/graphql` (POST queries, GET GraphiQL), `/healthz` and `/readyz`.

use std::sync::Arc;

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::auth::TokenKeys;
use crate::graphql::{Loaders, ParleySchema, Viewer};

#[derive(Clone)]
struct Http {
    state: Arc<AppState>,
    schema: ParleySchema,
}

pub fn router(state: Arc<AppState>, schema: ParleySchema) -> Router {
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(TraceLayer::new_for_http())
        .with_state(Http { state, schema })
}

/// Reads `Authorization: Bearer <token>`.
pub fn viewer_from_header(value: Option<&str>, keys: &TokenKeys) -> Viewer {
    let Some(value) = value else {
        return Viewer::Anonymous;
    };
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim);
    match token.and_then(|token| keys.verify_access(token)) {
        Some(user_id) => Viewer::User(user_id),
        None => Viewer::Invalid,
    }
}

async fn graphql(
    State(http): State<Http>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> GraphQLResponse {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let viewer = viewer_from_header(authorization, http.state.accounts.keys());
    let user = match viewer {
        Viewer::User(id) => Some(id),
        _ => None,
    };
    let loaders = Loaders::new(&http.state.db, user, http.state.clock.clone());
    let mut response = http
        .schema
        .execute(request.into_inner().data(viewer).data(loaders))
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
    response.into()
}

/// `GET /graphql`: the WebSocket endpoint when upgrading, GraphiQL otherwise.
async fn graphql_get(
    State(http): State<Http>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => crate::live::upgrade(upgrade, http.schema.clone(), http.state.clone()),
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

/// Ready when the store answers; reports each projector's position and lag.
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
        .map(|(name, position)| {
            serde_json::json!({
                "name": name,
                "position": position.to_cursor(),
                "caughtUp": head.is_none_or(|head| position >= head),
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
