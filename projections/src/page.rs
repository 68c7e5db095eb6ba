//! Keyset pagination shared by the read queries: opaque cursors and page bounds.

use crate::ProjectionError;

/// Page sizes default to 50 and are capped at 200.
pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 200;

/// The effective page size for a client's `first`/`last`.
pub fn page_size(requested: Option<i32>) -> Result<i64, ProjectionError> {
    match requested {
        None => Ok(DEFAULT_PAGE),
        Some(n) if n < 0 => Err(ProjectionError::InvalidPageSize),
        Some(n) => Ok(i64::from(n).min(MAX_PAGE)),
    }
}

/// A page of rows with their cursors.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<(String, T)>,
    pub has_next: bool,
    pub has_previous: bool,
}

impl<T> Page<T> {
    /// Builds a forward page from up to `limit + 1` rows fetched in order.
    pub fn forward(
        mut rows: Vec<T>,
        limit: i64,
        after: bool,
        cursor: impl Fn(&T) -> String,
    ) -> Self {
        let has_next = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        Self {
            items: rows.into_iter().map(|row| (cursor(&row), row)).collect(),
            has_next,
            has_previous: after,
        }
    }
}

/// A two-part cursor `a|b`, as used for `(time, id)` keys.
pub fn split_pair(cursor: &str) -> Result<(String, String), ProjectionError> {
    cursor
        .split_once('|')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or(ProjectionError::InvalidCursor)
}

/// The SQL condition of a newest-first keyset page on `(time, id)`: rows below the key
/// bound as `$first` (time) and `$first+1` (id), or every row when `$first+2` (the
/// third value of [`below`]) is 0.
pub fn below_sql(time: &str, id: &str, first: usize) -> String {
    let (at, key, has) = (first, first + 1, first + 2);
    format!("({time} < ${at} OR ({time} = ${at} AND {id} < ${key}) OR ${has} = 0)")
}

/// The bounds for a newest-first `(time, id)` listing after `cursor`: the key to stay
/// below, and `1` when there is a cursor at all (`0` lists from the top).
pub fn below(cursor: Option<&str>) -> Result<(String, String, i64), ProjectionError> {
    match cursor {
        Some(cursor) => split_pair(cursor).map(|(at, id)| (at, id, 1)),
        None => Ok((String::new(), String::new(), 0)),
    }
}

pub fn pair(a: &str, b: &str) -> String {
    format!("{a}|{b}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_keyset_condition_names_its_three_parameters() {
        assert_eq!(
            super::below_sql("m.created_at", "m.id", 4),
            "(m.created_at < $4 OR (m.created_at = $4 AND m.id < $5) OR $6 = 0)"
        );
    }
}
