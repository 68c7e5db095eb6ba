//! The GraphQL API (contract: shared/API.md): schema construction, the request
//! context, and resolvers split into queries, mutations and types.

mod conversation_events;
pub mod error;
mod follow;
pub mod limits;
mod loaders;
mod mutation;
mod my_events;
mod presence_feed;
mod query;
pub mod shared;
mod subscription;
mod types;

use std::sync::Arc;

use async_graphql::{Context, Schema};
use uuid::Uuid;

use crate::app::AppState;
use error::ApiError;
pub use loaders::Loaders;
pub use mutation::Mutation;
pub use query::Query;
pub use subscription::Subscription;

pub type ParleySchema = Schema<Query, Mutation, Subscription>;

/// The client's address (see `rate::client_ip`), for limits that count per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub std::net::IpAddr);

/// Who is calling, from the `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    Anonymous,
    /// A header was sent but its token is missing, expired or forged.
    Invalid,
    User(Uuid),
}

pub fn build_schema(state: Arc<AppState>) -> ParleySchema {
    let max_cost = u64::from(state.config.max_query_cost);
    let rate = state.rate.clone();
    Schema::build(Query, Mutation, Subscription)
        .data(state)
        .limit_depth(16)
        .extension(limits::QueryLimits { max_cost, rate })
        .extension(crate::metrics::OperationMetrics)
        .finish()
}

/// The schema's SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    let options = async_graphql::SDLExportOptions::new()
        .sorted_fields()
        .sorted_arguments()
        .sorted_enum_items();
    Schema::build(Query, Mutation, Subscription)
        .finish()
        .sdl_with_options(options)
}

pub(crate) fn state<'a>(ctx: &Context<'a>) -> &'a Arc<AppState> {
    // Installed by `build_schema`; every execution has it.
    ctx.data_unchecked::<Arc<AppState>>()
}

/// Parses an `ID` argument; anything that is not one of ours is unknown.
pub(crate) fn parse_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw.trim()).map_err(|_| ApiError::NotFound(format!("{what} not found")))
}

/// The client's address; unspecified where no transport set it (tests of the schema).
pub(crate) fn client_ip(ctx: &Context<'_>) -> std::net::IpAddr {
    ctx.data_opt::<ClientIp>().map_or(
        std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        |ip| ip.0,
    )
}

/// The signed-in user, or `UNAUTHENTICATED`.
pub(crate) fn viewer(ctx: &Context<'_>) -> Result<Uuid, ApiError> {
    match ctx.data_opt::<Viewer>() {
        Some(Viewer::User(id)) => Ok(*id),
        _ => Err(ApiError::unauthenticated()),
    }
}
