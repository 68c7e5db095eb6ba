//! The `parley` server and CLI: configuration, event-store wiring, authentication,
//! the GraphQL API and the HTTP server.

pub mod app;
pub mod audit;
pub mod auth;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod config;
pub mod graphql;
pub mod http;
pub mod live;
pub mod rate;
pub mod startup;
pub mod store;
pub mod telemetry;
