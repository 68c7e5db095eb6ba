//! The embedded blob store's own endpoints, `PUT` and `GET /blobs/<kind>/<uuid>`, at
//! URLs the upload service signed. Uploads are taken only while their upload is
//! pending and only exactly as signed; downloads only while the attachment is served,
//! inline only for types a browser cannot run script in.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use parley_projections::attachments::{self, status};

use super::Http;
use crate::blob::embedded::{PutRefused, ReceiveError, SignedQuery};
use crate::blob::{content_disposition, parse_key, served_inline, served_type};

fn refuse(status: StatusCode, message: &'static str) -> Response {
    (status, message).into_response()
}

/// `PUT /blobs/incoming/<uuid>`: an upload's bytes.
pub(super) async fn put(
    State(http): State<Http>,
    Path(key): Path<String>,
    Query(query): Query<SignedQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(store) = &http.state.embedded_blobs else {
        return refuse(StatusCode::NOT_FOUND, "not found");
    };
    let Ok(("incoming", id)) = parse_key(&key) else {
        return refuse(StatusCode::FORBIDDEN, "not an upload URL");
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let now = http.state.clock.now();
    let size = match store.verify_put(&key, &query, content_type, length, now) {
        Ok(size) => size,
        Err(PutRefused::Forbidden) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "the signature does not allow this request",
            )
        }
        Err(PutRefused::WrongSize) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "Content-Length differs from the signed size",
            )
        }
    };
    // Once completed, the upload's content is checked and kept elsewhere: a URL still
    // valid must not plant new bytes.
    match attachments::by_id(&http.state.db, &id.to_string()).await {
        Ok(Some(row)) if row.status == status::PENDING => {}
        Ok(_) => return refuse(StatusCode::CONFLICT, "the upload is no longer open"),
        Err(error) => {
            tracing::error!(%error, "cannot read an upload");
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    }
    match store.receive(&key, body.into_data_stream(), size).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(ReceiveError::WrongSize) => {
            refuse(StatusCode::BAD_REQUEST, "the body is not the signed size")
        }
        Err(ReceiveError::Body(_)) => refuse(StatusCode::BAD_REQUEST, "the body was cut off"),
        Err(ReceiveError::Blob(error)) => {
            tracing::error!(%error, "cannot store an upload");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// `GET /blobs/files/<uuid>` and `/blobs/thumbs/<uuid>`: an attachment or its thumbnail.
pub(super) async fn get(
    State(http): State<Http>,
    Path(key): Path<String>,
    Query(query): Query<SignedQuery>,
) -> Response {
    let Some(store) = &http.state.embedded_blobs else {
        return refuse(StatusCode::NOT_FOUND, "not found");
    };
    let (kind, id) = match parse_key(&key) {
        Ok((kind @ ("files" | "thumbs"), id)) => (kind, id),
        _ => return refuse(StatusCode::NOT_FOUND, "not found"),
    };
    if !store.verify_get(&key, &query, http.state.clock.now()) {
        return refuse(
            StatusCode::FORBIDDEN,
            "the signature does not allow this request",
        );
    }
    let row = match attachments::by_id(&http.state.db, &id.to_string()).await {
        Ok(Some(row)) => row,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, "not found"),
        Err(error) => {
            tracing::error!(%error, "cannot read an attachment");
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    if !row.served() {
        return refuse(StatusCode::NOT_FOUND, "not found");
    }
    let content_type = if kind == "thumbs" {
        "image/png"
    } else {
        row.content_type.as_str()
    };
    let path = match store.file(&key) {
        Ok(path) => path,
        Err(_) => return refuse(StatusCode::NOT_FOUND, "not found"),
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(_) => return refuse(StatusCode::NOT_FOUND, "not found"),
    };
    let length = file.metadata().await.map(|m| m.len()).ok();
    let inline = served_inline(content_type);
    let mut response = Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
    let headers = response.headers_mut();
    let set = |value: &str| HeaderValue::from_str(value).ok();
    if let Some(value) = set(served_type(content_type)) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Some(value) = set(&content_disposition(&row.filename, inline)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Even a type served inline gets no script and no same-origin powers.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; img-src 'self'; media-src 'self'; sandbox"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    response
}
