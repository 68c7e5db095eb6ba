//! Work done inside an append's own transaction.
//!
//! On SQLite one connection writes both the log and the read models, so a group of
//! appends and the projector batch that follows it take turns on it: the group commits,
//! its callers wait for the runner to read the log, take the connection back and commit
//! again, and only then answer. A node's projector runner can instead install itself
//! here; the writer then hands it each group's transaction once the events are written,
//! and the group commits with its read models already applied. Callers wait for one
//! commit, not two, and the next group does not queue behind a batch.
//!
//! Whatever it does must leave the transaction as it found it when it fails (a
//! savepoint): the events commit either way.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use sqlx::AnyConnection;

/// What to do once the transaction ended, told whether it committed.
pub type Settle = Box<dyn FnOnce(bool) + Send>;

/// Work the writer runs inside each group's transaction.
pub trait InTransaction: Send + Sync + 'static {
    /// Runs inside the transaction that has just written the log up to position
    /// `last` (SQLite's log positions are its row ids); `None` when it did nothing
    /// (and left nothing behind in the transaction).
    fn run<'c>(&'c self, conn: &'c mut AnyConnection, last: i64) -> BoxFuture<'c, Option<Settle>>;
}

/// The work installed for a database handle and its clones, if any.
#[derive(Clone, Default)]
pub struct Inline(Arc<Mutex<Option<Arc<dyn InTransaction>>>>);

impl Inline {
    /// From the next group on, runs `work` inside each group's transaction.
    pub fn install(&self, work: Arc<dyn InTransaction>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(work);
        }
    }

    /// From the next group on, runs nothing, if `work` is what is installed (its
    /// runner stopped; another may have been installed since).
    pub fn remove(&self, work: &Arc<dyn InTransaction>) {
        if let Ok(mut slot) = self.0.lock() {
            let same = slot.as_ref().is_some_and(|installed| {
                std::ptr::addr_eq(Arc::as_ptr(installed), Arc::as_ptr(work))
            });
            if same {
                *slot = None;
            }
        }
    }

    pub(crate) fn current(&self) -> Option<Arc<dyn InTransaction>> {
        self.0.lock().ok().and_then(|slot| slot.clone())
    }
}
