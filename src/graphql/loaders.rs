//! Dataloaders: batch the lookups resolvers make per field into one query per request tick.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use parley_projections::users::{self, UserRow};
use parley_projections::Db;

use parley_projections::ProjectionError;

pub struct UserLoader {
    db: Db,
}

impl UserLoader {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

impl Loader<String> for UserLoader {
    type Value = UserRow;
    type Error = Arc<ProjectionError>;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, UserRow>, Self::Error> {
        let rows = users::by_ids(&self.db, keys).await.map_err(Arc::new)?;
        Ok(rows.into_iter().map(|row| (row.id.clone(), row)).collect())
    }
}
