//! Read models as they stood at a moment, built into a SQLite file of their own for
//! analysis: what the conversation lists, unread counts and moderation state looked
//! like then. The live database is only read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use time::OffsetDateTime;

use crate::projector::Projector;
use crate::rebuild::Progress;
use crate::{runner, Db, ProjectionError};
use parley_store::log::{self, LogPosition, StoredEvent};

const BATCH: i64 = 2_000;

/// Applies every event of `db`'s log that occurred at or before `until`, in log
/// order, to `projectors` in a new SQLite database at `into` (which must not exist), whose
/// checkpoints then name the last event applied. Events are filtered rather than the
/// log cut at the first later one: on PostgreSQL, log order and clock order may differ
/// by a few concurrent commits. `progress` hears of the events read; the result counts
/// those applied.
pub async fn build(
    db: &Db,
    projectors: &[Arc<dyn Projector>],
    until: OffsetDateTime,
    into: &Path,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Progress, ProjectionError> {
    // Built in a scratch database, then copied whole into `into`: the copy is one
    // self-contained file, with no write-ahead log beside it to lose in a rename.
    let scratch = PathBuf::from(format!("{}-building", into.display()));
    remove_database(&scratch);
    let target = Db::open_sqlite_file(&scratch).await?;
    let result = async {
        target.migrate().await?;
        let built = apply_until(db, &target, projectors, until, progress).await?;
        sqlx::query("VACUUM INTO $1")
            .bind(into.to_string_lossy().into_owned())
            .execute(&target.write)
            .await?;
        Ok(built)
    }
    .await;
    target.close().await;
    remove_database(&scratch);
    result
}

/// Removes a SQLite database and the files SQLite keeps beside it.
fn remove_database(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

async fn apply_until(
    db: &Db,
    target: &Db,
    projectors: &[Arc<dyn Projector>],
    until: OffsetDateTime,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Progress, ProjectionError> {
    let total = log::count_after(db, LogPosition::START).await?;
    let work: Vec<(&dyn Projector, LogPosition)> = projectors
        .iter()
        .map(|projector| (projector.as_ref(), LogPosition::START))
        .collect();
    let mut done = Progress {
        applied: 0,
        total,
        position: LogPosition::START,
    };
    let (mut read, mut scanned) = (LogPosition::START, 0);
    loop {
        let events = log::read_after(db, read, BATCH).await?;
        let Some(last) = events.last() else { break };
        read = last.position;
        scanned += events.len() as u64;
        let mut admitted: Vec<StoredEvent> = Vec::with_capacity(events.len());
        for event in events {
            let at = event.occurred_at().ok_or_else(|| {
                ProjectionError::Rebuild(format!(
                    "the event at {} has no valid occurred_at",
                    event.position.to_cursor()
                ))
            })?;
            if at <= until {
                admitted.push(event);
            }
        }
        if let Some(last) = admitted.last() {
            done.position = last.position;
            done.applied += admitted.len() as u64;
            runner::apply_batch(target, &work, &admitted).await?;
        }
        progress(Progress {
            applied: scanned,
            total: total.max(scanned),
            position: read,
        });
    }
    Ok(done)
}
