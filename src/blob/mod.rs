//! Blob storage for attachments: the [`BlobStore`] the upload service writes through,
//! with an embedded implementation (files under `$PARLEY_DATA_DIR/blobs/`, uploads and
//! downloads at HMAC-signed URLs this server answers itself) and an S3 one; what is
//! served inline and what only as a download; and the inspection of uploaded content.
//!
//! Keys are always one of `incoming/<uuid>`, `files/<uuid>` or `thumbs/<uuid>`, made
//! from an upload's id (`parley_aggregates::upload`), never from user input, or
//! `withheld-files/<uuid>` and `withheld-thumbs/<uuid>` for a deleted message's files
//! kept through the grace period where no download URL reaches them.

pub mod embedded;
pub mod inspect;
pub mod s3;
mod sign;

use time::OffsetDateTime;
use uuid::Uuid;

pub use embedded::EmbeddedBlobs;
pub use s3::{S3Blobs, S3Settings};
pub use sign::Signer;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store I/O on {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a blob key: {0:?}")]
    BadKey(String),
    #[error("the object {0} is larger than allowed")]
    TooLarge(String),
    #[error("S3: {0}")]
    S3(String),
}

/// Where and how a client sends an upload's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadTarget {
    pub url: String,
    pub method: &'static str,
    /// Headers the request must carry exactly as given (they are signed).
    pub headers: Vec<(String, String)>,
}

/// How a stored object is named to the client that downloads it.
#[derive(Debug, Clone, Copy)]
pub struct Served<'a> {
    pub filename: &'a str,
    pub content_type: &'a str,
}

#[async_trait::async_trait]
pub trait BlobStore: Send + Sync {
    /// A URL that accepts one PUT of exactly `size` bytes of `content_type` at `key`
    /// until `expires_at`.
    async fn upload_target(
        &self,
        key: &str,
        content_type: &str,
        size: u64,
        expires_at: OffsetDateTime,
    ) -> Result<UploadTarget, BlobError>;

    /// The object's size, `None` when there is no object.
    async fn size(&self, key: &str) -> Result<Option<u64>, BlobError>;

    /// The object's bytes, `None` when there is no object; `TooLarge` beyond `max`.
    async fn read(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, BlobError>;

    /// Stores `bytes` at `key`, to be served as `served` says (the S3 store records
    /// the type and disposition with the object, so the bucket serves them too).
    async fn write(&self, key: &str, bytes: Vec<u8>, served: Served<'_>) -> Result<(), BlobError>;

    /// Removes the object; nothing to do when it is not there.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;

    /// Up to `limit` keys of one kind: `incoming` (where uploads land before they are
    /// checked; the sweeper looks there for bytes no upload is waiting for) or
    /// `erasures` (the erasure ledger). Only well-formed keys; half-written files and
    /// strays are not objects.
    async fn list(&self, kind: &str, limit: usize) -> Result<Vec<String>, BlobError>;

    /// A URL that serves the object until `expires_at`, inline only when
    /// [`served_inline`] says so.
    async fn download_url(
        &self,
        key: &str,
        served: Served<'_>,
        expires_at: OffsetDateTime,
    ) -> Result<String, BlobError>;

    /// Makes the URLs already issued for `key` stop serving it, keeping its bytes (at
    /// [`withheld_key`]) until it is deleted: a deleted message's files during the
    /// grace period. Nothing to do where every download is checked as it is asked
    /// for, as the embedded store does; nothing to do when the object is gone.
    async fn withhold(&self, _key: &str) -> Result<(), BlobError> {
        Ok(())
    }
}

/// Where [`BlobStore::withhold`] keeps a `files/` or `thumbs/` object.
pub fn withheld_key(key: &str) -> Result<String, BlobError> {
    match parse_key(key)? {
        ("files", id) => Ok(format!("withheld-files/{id}")),
        ("thumbs", id) => Ok(format!("withheld-thumbs/{id}")),
        _ => Err(BlobError::BadKey(key.to_owned())),
    }
}

/// What a key names: its kind (`incoming`, `files`, `thumbs`, and the two `withheld-`
/// kinds) and the upload's id, or
/// (`erasures`) an erased user's id in the erasure ledger (kept by the privacy module).
/// Anything else is refused, so no request can reach another path.
pub fn parse_key(key: &str) -> Result<(&'static str, Uuid), BlobError> {
    let bad = || BlobError::BadKey(key.to_owned());
    let (kind, id) = key.split_once('/').ok_or_else(bad)?;
    let kind = match kind {
        "incoming" => "incoming",
        "files" => "files",
        "thumbs" => "thumbs",
        "erasures" => "erasures",
        "withheld-files" => "withheld-files",
        "withheld-thumbs" => "withheld-thumbs",
        _ => return Err(bad()),
    };
    let id = Uuid::try_parse(id).map_err(|_| bad())?;
    // Only the canonical spelling, so one object has one key.
    if id.to_string() != key[kind.len() + 1..] {
        return Err(bad());
    }
    Ok((kind, id))
}

/// Whether a type is safe to render in the browser on this origin: the raster images
/// `inspect` decodes (so they were checked against decoding limits and lost their
/// metadata), audio, video and PDF. Everything else (SVG and HTML above all: a
/// same-origin inline SVG runs script as the viewer; AVIF and BMP, which nothing here
/// decodes) is served as a download.
pub fn served_inline(content_type: &str) -> bool {
    matches!(
        content_type,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp" | "application/pdf"
    ) || ((content_type.starts_with("audio/") || content_type.starts_with("video/"))
        && content_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/.+-".contains(c)))
}

/// The `Content-Disposition` for serving `filename`: an ASCII fallback and the UTF-8
/// name (RFC 6266), with nothing that could end the header or the quoted string.
pub fn content_disposition(filename: &str, inline: bool) -> String {
    let kind = if inline { "inline" } else { "attachment" };
    let fallback: String = filename
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded =
        percent_encoding::utf8_percent_encode(filename, percent_encoding::NON_ALPHANUMERIC);
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// The type a stored object is served with: its own for what may be rendered, else
/// `application/octet-stream`, so no browser ever interprets it.
pub fn served_type(content_type: &str) -> &str {
    if served_inline(content_type) {
        content_type
    } else {
        "application/octet-stream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_three_kinds_of_key_with_a_canonical_uuid_are_keys() {
        let id = Uuid::now_v7();
        assert!(parse_key(&format!("files/{id}")).is_ok());
        for bad in [
            format!("files/../{id}"),
            format!("other/{id}"),
            format!("files/{}", id.simple()),
            format!("files/{id}/x"),
            "files/".to_owned(),
            "../etc/passwd".to_owned(),
        ] {
            assert!(parse_key(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scriptable_types_are_never_inline() {
        for t in [
            "image/svg+xml",
            "text/html",
            "application/xhtml+xml",
            "text/xml",
            "application/octet-stream",
            "text/plain",
        ] {
            assert!(!served_inline(t), "{t}");
            assert_eq!(served_type(t), "application/octet-stream");
        }
        for t in [
            "image/png",
            "image/jpeg",
            "audio/mpeg",
            "video/mp4",
            "application/pdf",
        ] {
            assert!(served_inline(t), "{t}");
        }
    }

    #[test]
    fn a_filename_cannot_break_out_of_its_header() {
        let header = content_disposition("a\"b\r\n;é.txt", false);
        assert!(header.starts_with("attachment; filename=\"a_b__;_.txt\"; filename*=UTF-8''"));
        assert!(!header.contains('\r') && !header.contains('\n'));
    }
}
