//! GraphQL over HTTP, as its specification has it: requests from a JSON body (POST) or
//! URL parameters (GET, queries only), responses as `application/graphql-response+json`
//! when the client accepts it (request errors are then 400 without `data`) and as
//! `application/json` otherwise (always 200).

use std::collections::HashMap;
use std::net::SocketAddr;

use async_graphql::parser::types::OperationType;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{client, viewer_from_header, Http};
use crate::graphql::error::code;
use crate::graphql::Loaders;

/// The response media type the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// `application/graphql-response+json`: status codes tell request errors apart.
    GraphqlResponse,
    /// `application/json`: the legacy type, always 200.
    Json,
}

impl Media {
    fn content_type(self) -> &'static str {
        match self {
            Self::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
            Self::Json => "application/json; charset=utf-8",
        }
    }
}

/// Picks the response type from `Accept`: the GraphQL one when listed, else JSON.
pub fn negotiate(headers: &HeaderMap) -> Media {
    let accepts_graphql = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| {
            item.split(';').next().is_some_and(|media| {
                media
                    .trim()
                    .eq_ignore_ascii_case("application/graphql-response+json")
            })
        });
    if accepts_graphql {
        Media::GraphqlResponse
    } else {
        Media::Json
    }
}

/// A request refused before GraphQL could run it.
pub struct Refused {
    status: StatusCode,
    message: String,
    allow: Option<&'static str>,
}

impl Refused {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            allow: None,
        }
    }

    pub fn respond(self, media: Media) -> Response {
        let body = serde_json::json!({
            "errors": [{ "message": self.message, "extensions": { "code": code::BAD_USER_INPUT } }]
        });
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(media.content_type()),
        );
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

fn bad(message: impl Into<String>) -> Refused {
    Refused::new(StatusCode::BAD_REQUEST, message)
}

/// The request parameters (`query`, `operationName`, `variables`, `extensions`), each
/// of the type the specification requires.
fn request(
    query: Option<&Value>,
    operation_name: Option<&Value>,
    variables: Option<&Value>,
    extensions: Option<&Value>,
) -> Result<async_graphql::Request, Refused> {
    let query = match query {
        Some(Value::String(query)) => query.clone(),
        Some(_) => return Err(bad("`query` must be a string")),
        None => return Err(bad("the request has no `query`")),
    };
    let mut request = async_graphql::Request::new(query);
    match operation_name {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => request = request.operation_name(name.clone()),
        Some(_) => return Err(bad("`operationName` must be a string")),
    }
    match variables {
        None | Some(Value::Null) => {}
        Some(variables @ Value::Object(_)) => {
            request = request.variables(async_graphql::Variables::from_json(variables.clone()));
        }
        Some(_) => return Err(bad("`variables` must be a map")),
    }
    match extensions {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                let value = async_graphql::Value::from_json(value.clone())
                    .map_err(|_| bad("`extensions` must be a map of JSON values"))?;
                request.extensions.insert(key.clone(), value);
            }
        }
        Some(_) => return Err(bad("`extensions` must be a map")),
    }
    Ok(request)
}

/// One operation from a POST body of at most `PARLEY_MAX_REQUEST_BYTES`, in JSON. File
/// uploads do not travel through GraphQL (attachments use presigned URLs), so multipart
/// bodies are refused rather than parsed.
pub fn from_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<async_graphql::Request, Refused> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match content_type.as_deref() {
        Some("application/json") => {}
        Some(other) if other.starts_with("multipart/") => {
            return Err(Refused::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "multipart requests are not accepted; send application/json",
            ))
        }
        _ => {
            return Err(Refused::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the request as application/json",
            ))
        }
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refused::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than this server accepts (PARLEY_MAX_REQUEST_BYTES)",
            )
        } else {
            Refused::new(rejection.status(), rejection.body_text())
        }
    })?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|error| bad(format!("the body is not JSON: {error}")))?;
    let Value::Object(params) = body else {
        return Err(bad("the body must be a JSON map with a `query`"));
    };
    request(
        params.get("query"),
        params.get("operationName"),
        params.get("variables"),
        params.get("extensions"),
    )
}

/// One query from URL parameters. Mutations are refused with 405: a GET must not change
/// anything (links, prefetchers and caches issue GETs freely).
pub fn from_query(params: &HashMap<String, String>) -> Result<async_graphql::Request, Refused> {
    let json = |name: &str| -> Result<Option<Value>, Refused> {
        params
            .get(name)
            .map(|raw| {
                serde_json::from_str(raw)
                    .map_err(|_| bad(format!("`{name}` must be URL-encoded JSON")))
            })
            .transpose()
    };
    let query = params.get("query").map(|q| Value::String(q.clone()));
    let operation_name = params
        .get("operationName")
        .map(|n| Value::String(n.clone()));
    let request = request(
        query.as_ref(),
        operation_name.as_ref(),
        json("variables")?.as_ref(),
        json("extensions")?.as_ref(),
    )?;
    if let Ok(document) = async_graphql::parser::parse_query(&request.query) {
        let chosen = document.operations.iter().find(|(name, _)| {
            request
                .operation_name
                .as_deref()
                .is_none_or(|wanted| name.is_some_and(|name| name.as_str() == wanted))
        });
        if chosen.is_some_and(|(_, operation)| operation.node.ty != OperationType::Query) {
            return Err(Refused {
                status: StatusCode::METHOD_NOT_ALLOWED,
                message: "only queries can be sent with GET; send mutations with POST".to_owned(),
                allow: Some("POST"),
            });
        }
    }
    Ok(request)
}

/// Runs one operation for the caller and answers in `media`.
pub async fn execute(
    http: &Http,
    peer: SocketAddr,
    headers: &HeaderMap,
    request: async_graphql::Request,
    media: Media,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let (viewer, grant) = viewer_from_header(authorization, &http.state.accounts);
    let loaders = Loaders::new(
        &http.state.db,
        grant.map(|grant| grant.user_id),
        http.state.clock.clone(),
    );
    let ip = client(http, peer, headers);
    let mut response = http
        .schema
        .execute(request.data(viewer).data(loaders).data(ip))
        .await;
    // Every resolver error carries its code already (the API's and the services' error
    // types are not `Display`, so a `?` cannot skip the mapping); what reaches here
    // without one failed before any resolver ran (parsing, validation, argument
    // coercion, limits): the request itself was bad.
    for error in &mut response.errors {
        let coded = error
            .extensions
            .as_ref()
            .is_some_and(|extensions| extensions.get("code").is_some());
        if !coded {
            error
                .extensions
                .get_or_insert_with(Default::default)
                .set("code", code::BAD_USER_INPUT);
        }
    }
    // A limited operation tells when to come back, in the header too.
    let retry_after = response
        .errors
        .iter()
        .filter_map(|error| error.extensions.as_ref())
        .filter(|extensions| {
            extensions.get("code") == Some(&async_graphql::Value::from(code::RATE_LIMITED))
        })
        .filter_map(|extensions| match extensions.get("retryAfter") {
            Some(async_graphql::Value::Number(n)) => n.as_u64(),
            _ => None,
        })
        .max();
    // A request error (nothing ran: every error lacks a path) has no `data`.
    let request_error = !response.errors.is_empty()
        && response.data == async_graphql::Value::Null
        && response.errors.iter().all(|error| error.path.is_empty());
    let mut body = serde_json::to_value(&response).unwrap_or(Value::Null);
    let status = match media {
        Media::GraphqlResponse if request_error => {
            if let Value::Object(map) = &mut body {
                map.remove("data");
            }
            if retry_after.is_some() {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::BAD_REQUEST
            }
        }
        _ => StatusCode::OK,
    };
    let mut http_response = (status, body.to_string()).into_response();
    let headers = http_response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media.content_type()),
    );
    if let Some(seconds) = retry_after {
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            headers.insert(header::RETRY_AFTER, value);
        }
    }
    http_response
}
