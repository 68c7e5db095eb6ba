//! The embedded blob store: objects as files under `$PARLEY_DATA_DIR/blobs/<kind>/<uuid>`,
//! uploaded and downloaded through this server (`http::blobs`) at URLs signed with an
//! HMAC and an expiry. An upload URL admits exactly the declared size and type, as a
//! presigned S3 PUT does.

use std::path::PathBuf;

use futures::{Stream, StreamExt as _};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt as _;

use super::{parse_key, BlobError, BlobStore, Served, Signer, UploadTarget};

pub struct EmbeddedBlobs {
    root: PathBuf,
    /// `http://host:port` as clients reach this server.
    base_url: String,
    signer: Signer,
}

/// Why an upload to the embedded store was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PutRefused {
    /// Bad or expired signature, or a header that differs from what was signed.
    Forbidden,
    /// More or fewer bytes than signed for.
    WrongSize,
}

fn percent(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn io(key: &str) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        key: key.to_owned(),
        source,
    }
}

impl EmbeddedBlobs {
    /// Opens (creating) the store under `root`.
    pub fn open(root: PathBuf, base_url: String, signer: Signer) -> std::io::Result<Self> {
        for kind in ["incoming", "files", "thumbs", "erasures"] {
            std::fs::create_dir_all(root.join(kind))?;
        }
        Ok(Self {
            root,
            base_url: base_url.trim_end_matches('/').to_owned(),
            signer,
        })
    }

    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        let (kind, id) = parse_key(key)?;
        Ok(self.root.join(kind).join(id.to_string()))
    }

    /// Whether an upload request carries a valid signature for exactly this key, size
    /// and type, and has not expired at `now`.
    pub fn verify_put(
        &self,
        key: &str,
        query: &SignedQuery,
        content_type: Option<&str>,
        content_length: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<u64, PutRefused> {
        let (Some(size), Some(signed_type)) = (query.size, query.content_type.as_deref()) else {
            return Err(PutRefused::Forbidden);
        };
        let expires = query.expires.to_string();
        let size_text = size.to_string();
        let parts = ["PUT", key, &expires, &size_text, signed_type];
        if !self.signer.verify(&parts, &query.signature) || query.expires < now.unix_timestamp() {
            return Err(PutRefused::Forbidden);
        }
        if content_type != Some(signed_type) {
            return Err(PutRefused::Forbidden);
        }
        if content_length.is_some_and(|length| length != size) {
            return Err(PutRefused::WrongSize);
        }
        Ok(size)
    }

    /// Whether a download request is signed for this key and unexpired at `now`.
    pub fn verify_get(&self, key: &str, query: &SignedQuery, now: OffsetDateTime) -> bool {
        let expires = query.expires.to_string();
        self.signer
            .verify(&["GET", key, &expires], &query.signature)
            && query.expires >= now.unix_timestamp()
    }

    /// Stores a request body at `key` if it is exactly `size` bytes; a longer body is
    /// cut off at the first byte too many, and nothing is kept of a refused one.
    pub async fn receive<S, E>(&self, key: &str, mut body: S, size: u64) -> Result<(), ReceiveError>
    where
        S: Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = self.path(key)?;
        let part = path.with_extension(format!("part-{}", uuid::Uuid::new_v4().simple()));
        let outcome = async {
            let mut file = tokio::fs::File::create(&part).await.map_err(io(key))?;
            let mut received: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| ReceiveError::Body(e.to_string()))?;
                received += chunk.len() as u64;
                if received > size {
                    return Err(ReceiveError::WrongSize);
                }
                file.write_all(&chunk).await.map_err(io(key))?;
            }
            if received != size {
                return Err(ReceiveError::WrongSize);
            }
            file.sync_all().await.map_err(io(key))?;
            tokio::fs::rename(&part, &path).await.map_err(io(key))?;
            Ok(())
        }
        .await;
        if outcome.is_err() {
            let _ = tokio::fs::remove_file(&part).await;
        }
        outcome
    }

    /// The path of a stored object, for serving it.
    pub fn file(&self, key: &str) -> Result<PathBuf, BlobError> {
        self.path(key)
    }
}

/// What the embedded store signs into a URL's query.
#[derive(Debug, serde::Deserialize)]
pub struct SignedQuery {
    pub expires: i64,
    pub size: Option<u64>,
    #[serde(rename = "type")]
    pub content_type: Option<String>,
    pub signature: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("the body is not the signed size")]
    WrongSize,
    #[error("the request body failed: {0}")]
    Body(String),
}

#[async_trait::async_trait]
impl BlobStore for EmbeddedBlobs {
    async fn upload_target(
        &self,
        key: &str,
        content_type: &str,
        size: u64,
        expires_at: OffsetDateTime,
    ) -> Result<UploadTarget, BlobError> {
        parse_key(key)?;
        let expires = expires_at.unix_timestamp().to_string();
        let size_text = size.to_string();
        let signature = self
            .signer
            .sign(&["PUT", key, &expires, &size_text, content_type]);
        Ok(UploadTarget {
            url: format!(
                "{}/blobs/{key}?expires={expires}&size={size}&type={}&signature={signature}",
                self.base_url,
                percent(content_type)
            ),
            method: "PUT",
            headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
        })
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, BlobError> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(key)(e)),
        }
    }

    async fn read(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, BlobError> {
        match self.size(key).await? {
            None => Ok(None),
            Some(size) if size > max => Err(BlobError::TooLarge(key.to_owned())),
            Some(_) => match tokio::fs::read(self.path(key)?).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io(key)(e)),
            },
        }
    }

    async fn write(&self, key: &str, bytes: Vec<u8>, _served: Served<'_>) -> Result<(), BlobError> {
        let path = self.path(key)?;
        let part = path.with_extension(format!("part-{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&part, bytes).await.map_err(io(key))?;
        tokio::fs::rename(&part, &path).await.map_err(io(key))
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(key)(e)),
        }
    }

    async fn list(&self, kind: &str, limit: usize) -> Result<Vec<String>, BlobError> {
        let mut keys = Vec::new();
        let mut entries = match tokio::fs::read_dir(self.root.join(kind)).await {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
            Err(error) => return Err(io(kind)(error)),
        };
        while keys.len() < limit {
            let Some(entry) = entries.next_entry().await.map_err(io(kind))? else {
                break;
            };
            // Half-received bodies (`<uuid>.part-…`) are the receiving request's own to
            // remove; only whole objects have keys.
            let key = format!("{kind}/{}", entry.file_name().to_string_lossy());
            if parse_key(&key).is_ok() {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    async fn download_url(
        &self,
        key: &str,
        _served: Served<'_>,
        expires_at: OffsetDateTime,
    ) -> Result<String, BlobError> {
        parse_key(key)?;
        // Name and type are looked up when served, where a deleted message's
        // attachments also stop being served.
        let expires = expires_at.unix_timestamp().to_string();
        let signature = self.signer.sign(&["GET", key, &expires]);
        Ok(format!(
            "{}/blobs/{key}?expires={expires}&signature={signature}",
            self.base_url
        ))
    }
}
