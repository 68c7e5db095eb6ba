//! The S3 blob store (AWS S3 or any S3-compatible server): presigned PUTs that sign
//! `Content-Length` and `Content-Type`, so the store itself refuses any other size or
//! type, and presigned GETs of objects stored with their served type and
//! `Content-Disposition` that also sign those two as response overrides.
//!
//! Credentials come from the standard AWS chain (environment, profiles, instance
//! roles); the bucket must exist and be reachable at start.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use time::OffsetDateTime;

use super::{
    content_disposition, parse_key, served_inline, served_type, withheld_key, BlobError, BlobStore,
    Served, UploadTarget,
};

/// Where the bucket is.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// An S3-compatible server's URL; AWS when `None`.
    pub endpoint: Option<String>,
    pub region: String,
    /// `https://host/bucket/key` rather than `https://bucket.host/key`, as most
    /// S3-compatible servers need.
    pub force_path_style: bool,
}

pub struct S3Blobs {
    client: aws_sdk_s3::Client,
    bucket: String,
}

fn s3_error<E: std::error::Error + 'static>(error: E) -> BlobError {
    BlobError::S3(DisplayErrorContext(error).to_string())
}

/// Why the bucket cannot be used, in words an operator can act on: the SDK's own
/// rendering of these errors appends a debug dump of the whole response.
fn unreachable<E>(error: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> BlobError
where
    E: std::error::Error + 'static,
{
    let deepest = |error: &(dyn std::error::Error + 'static)| {
        let mut at = error;
        while let Some(source) = at.source() {
            at = source;
        }
        at.to_string()
    };
    let reason = match &error {
        SdkError::ServiceError(service) => match service.raw().status().as_u16() {
            404 => "no such bucket".to_owned(),
            403 => "access denied: check the AWS credentials (AWS_ACCESS_KEY_ID and \
                    AWS_SECRET_ACCESS_KEY, a profile or an instance role) and the bucket's policy"
                .to_owned(),
            301 | 400 => "the bucket is in another region than PARLEY_S3_REGION".to_owned(),
            status => format!("the server answered HTTP {status}"),
        },
        SdkError::DispatchFailure(failure) if failure.is_io() || failure.is_timeout() => {
            format!("cannot connect to the endpoint: {}", deepest(&error))
        }
        SdkError::TimeoutError(_) => "the endpoint did not answer in time".to_owned(),
        _ => deepest(&error),
    };
    BlobError::S3(reason)
}

/// A presigned URL's lifetime: until `expires_at`, at least a second.
fn lifetime(expires_at: OffsetDateTime) -> Result<PresigningConfig, BlobError> {
    let seconds = (expires_at - OffsetDateTime::now_utc())
        .whole_seconds()
        .max(1);
    PresigningConfig::expires_in(Duration::from_secs(seconds.unsigned_abs())).map_err(s3_error)
}

impl S3Blobs {
    /// Connects and checks that the bucket is reachable with the credentials found.
    pub async fn connect(settings: &S3Settings) -> Result<Self, BlobError> {
        let mut loader = aws_config::defaults(BehaviorVersion::v2026_11_17())
            .region(aws_config::Region::new(settings.region.clone()));
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let shared = loader.load().await;
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.force_path_style)
            .build();
        let client = aws_sdk_s3::Client::from_conf(config);
        client
            .head_bucket()
            .bucket(&settings.bucket)
            .send()
            .await
            .map_err(unreachable)?;
        Ok(Self {
            client,
            bucket: settings.bucket.clone(),
        })
    }
}

#[async_trait::async_trait]
impl BlobStore for S3Blobs {
    async fn upload_target(
        &self,
        key: &str,
        content_type: &str,
        size: u64,
        expires_at: OffsetDateTime,
    ) -> Result<UploadTarget, BlobError> {
        parse_key(key)?;
        let length = i64::try_from(size).map_err(|_| BlobError::TooLarge(key.to_owned()))?;
        let presigned = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(length)
            .presigned(lifetime(expires_at)?)
            .await
            .map_err(s3_error)?;
        Ok(UploadTarget {
            url: presigned.uri().to_owned(),
            method: "PUT",
            headers: presigned
                .headers()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
        })
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, BlobError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(
                head.content_length()
                    .and_then(|length| u64::try_from(length).ok())
                    .unwrap_or_default(),
            )),
            Err(SdkError::ServiceError(error)) if error.err().is_not_found() => Ok(None),
            Err(error) => Err(s3_error(error)),
        }
    }

    async fn read(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, BlobError> {
        let object = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(object) => object,
            Err(SdkError::ServiceError(error)) if error.err().is_no_such_key() => return Ok(None),
            Err(error) => return Err(s3_error(error)),
        };
        let length = object
            .content_length()
            .and_then(|length| u64::try_from(length).ok());
        if length.is_none_or(|length| length > max) {
            return Err(BlobError::TooLarge(key.to_owned()));
        }
        let bytes = object.body.collect().await.map_err(s3_error)?.into_bytes();
        if bytes.len() as u64 > max {
            return Err(BlobError::TooLarge(key.to_owned()));
        }
        Ok(Some(bytes.to_vec()))
    }

    async fn write(&self, key: &str, bytes: Vec<u8>, served: Served<'_>) -> Result<(), BlobError> {
        parse_key(key)?;
        let inline = served_inline(served.content_type);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(served_type(served.content_type))
            .content_disposition(content_disposition(served.filename, inline))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    async fn list(&self, kind: &str, limit: usize) -> Result<Vec<String>, BlobError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{kind}/"))
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(s3_error)?;
            for key in page.contents().iter().filter_map(|object| object.key()) {
                if keys.len() == limit {
                    return Ok(keys);
                }
                if parse_key(key).is_ok() {
                    keys.push(key.to_owned());
                }
            }
        }
        Ok(keys)
    }

    async fn download_url(
        &self,
        key: &str,
        served: Served<'_>,
        expires_at: OffsetDateTime,
    ) -> Result<String, BlobError> {
        parse_key(key)?;
        // The type and disposition stored with the object (`write`) are asked for again
        // in the signed URL (`response-content-type`, `response-content-disposition`),
        // which S3 applies over whatever the object carries: S3 cannot send
        // `X-Content-Type-Options: nosniff`, so a type off the inline list must reach the
        // browser as an octet stream to be saved, whatever metadata an object ended up
        // with. The parameters are signed, so a client cannot change them back.
        let inline = served_inline(served.content_type);
        let presigned = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_type(served_type(served.content_type))
            .response_content_disposition(content_disposition(served.filename, inline))
            .presigned(lifetime(expires_at)?)
            .await
            .map_err(s3_error)?;
        Ok(presigned.uri().to_owned())
    }

    /// A presigned GET cannot be revoked; the object it names can be moved away. Done
    /// with a read and a write (not `CopyObject`, which not every S3-compatible server
    /// offers), the copy first, so an interruption leaves the bytes somewhere.
    async fn withhold(&self, key: &str) -> Result<(), BlobError> {
        let held = withheld_key(key)?;
        let Some(bytes) = self.read(key, u64::MAX).await? else {
            return Ok(());
        };
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&held)
            .content_type("application/octet-stream")
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(s3_error)?;
        self.delete(key).await
    }
}
