//! The read rule's facts as the read models hold them: each user's standing in a
//! conversation (membership, a ban in force, a pending invitation), handed to the
//! policy (`parley_aggregates::policy::read_access`) to judge, and the same rule as a
//! SQL condition for list queries that cannot ask it row by row.
//!
//! The SQL condition is the policy's `Full` written once more; a test checks the two
//! agree on every combination of facts, on both backends.

use std::collections::HashMap;

use parley_aggregates::policy::Standing;
use sqlx::Row;

use crate::{Db, ProjectionError};

/// Unix milliseconds, the form `sanctions.until_ms` is compared in.
pub fn unix_ms(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// SQL that is true when the user bound as `user` has a ban in force at `now` (both
/// placeholders such as `$3`) in the conversation whose id is the expression `conv`.
fn banned_sql(conv: &str, user: &str, now: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM sanctions s WHERE s.conversation_id = {conv} AND s.user_id = {user} \
         AND s.kind = 'BAN' AND (s.until_ms IS NULL OR s.until_ms > {now}))"
    )
}

fn member_sql(conv: &str, user: &str) -> String {
    format!("EXISTS (SELECT 1 FROM members mm WHERE mm.conversation_id = {conv} AND mm.user_id = {user})")
}

fn public_sql(conv: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM conversations cc WHERE cc.id = {conv} \
         AND cc.kind = 'CHANNEL' AND cc.visibility = 'PUBLIC')"
    )
}

fn invited_sql(conv: &str, user: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM invitations ii WHERE ii.invitee_id = {user} \
         AND ii.conversation_id = {conv} AND ii.status = 'PENDING')"
    )
}

/// The policy's `ReadAccess::Full` as a SQL condition: the user bound as `user` may
/// read everything of the conversation whose id is the expression `conv`, at the time
/// (Unix ms) bound as `now`.
pub fn full_access_sql(conv: &str, user: &str, now: &str) -> String {
    format!(
        "(NOT {banned} AND ({member} OR {public}))",
        banned = banned_sql(conv, user, now),
        member = member_sql(conv, user),
        public = public_sql(conv),
    )
}

fn flag(condition: &str) -> String {
    format!("CAST(CASE WHEN {condition} THEN 1 ELSE 0 END AS BIGINT)")
}

/// The user's standing in each of `conversation_ids` that exists, at `now_ms`.
pub async fn standings(
    db: &Db,
    user_id: &str,
    conversation_ids: &[String],
    now_ms: i64,
) -> Result<HashMap<String, Standing>, ProjectionError> {
    if conversation_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT c.id, {public}, {member}, {banned}, {invited} FROM conversations c WHERE c.id IN ({ids})",
        public = flag("c.kind = 'CHANNEL' AND c.visibility = 'PUBLIC'"),
        member = flag(&member_sql("c.id", "$1")),
        banned = flag(&banned_sql("c.id", "$1", "$2")),
        invited = flag(&invited_sql("c.id", "$1")),
        ids = crate::placeholders(3, conversation_ids.len()),
    );
    let mut query = sqlx::query(&sql).bind(user_id).bind(now_ms);
    for id in conversation_ids {
        query = query.bind(id);
    }
    let mut standings = HashMap::with_capacity(conversation_ids.len());
    for row in query.fetch_all(&db.read).await? {
        let set =
            |i: usize| -> Result<bool, ProjectionError> { Ok(row.try_get::<i64, _>(i)? != 0) };
        standings.insert(
            row.try_get::<String, _>(0)?,
            Standing {
                public_channel: set(1)?,
                member: set(2)?,
                banned: set(3)?,
                invited: set(4)?,
            },
        );
    }
    Ok(standings)
}
