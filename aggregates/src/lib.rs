//! Parley's pure domain: commands, events, aggregate state and domain errors.
//!
//! Nothing here performs I/O. Time enters through commands (`at` fields set by the
//! command service's clock) and outside capabilities such as password hashing through
//! each aggregate's `Services`, so every rule is testable with cqrs-es's `TestFramework`.

pub mod claim;
pub mod conversation;
pub mod event;
pub mod inbox;
pub mod member;
pub mod message;
pub mod moderation;
pub mod policy;
pub mod upload;
pub mod user;
pub mod values;

pub use values::InputError;
