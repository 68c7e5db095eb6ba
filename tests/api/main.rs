//! API integration tests: the real server on port 0, driven over HTTP, on every backend.

#[path = "../common/mod.rs"]
mod common;

mod access;
mod accounts;
mod attachments;
mod crash;
mod export;
mod helpers;
mod limits;
mod live;
mod messaging;
mod metrics;
mod moderation;
mod nodes;
mod privacy;
mod rate;
mod rebuild;
mod schema;
mod seed;
mod server;
mod sessions;
mod sockets;
mod ws;
