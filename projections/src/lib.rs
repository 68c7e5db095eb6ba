//! Parley's read side: the checkpointed projector runner and one module per read model
//! holding its projector and the read queries the API uses. The event log they read is
//! `parley-store`'s.
//!
//! Read models are written only by projectors. Their SQL runs unchanged on SQLite and
//! PostgreSQL through `sqlx::Any`, so column types stay within what both map the same
//! way: BIGINT (also for flags, 0/1), TEXT, DOUBLE and BLOB. The same statements also
//! run on a typed PostgreSQL connection in rebuilds, for the projectors whose new rows
//! are loaded there with `COPY` (see `sink`).

pub mod access;
pub mod attachments;
pub mod chain;
pub mod conversations;
pub mod error;
pub mod messages;
pub mod moderation;
pub mod notifications;
pub mod page;
pub mod projector;
pub mod rebuild;
pub mod runner;
pub mod sessions;
mod sink;
pub mod time_travel;
pub mod unread;
pub mod users;

pub use error::ProjectionError;
pub(crate) use parley_store::{
    format_time, placeholders, rows_per_statement, Backend, Db, StoredEvent,
};
pub use projector::Projector;
pub use runner::Projections;
