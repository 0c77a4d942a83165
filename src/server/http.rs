//! The HTTP plumbing every TLS route shares: JSON error answers, the `?timeout=` budget, a
//! bounded body read, the per-route timer, and closing HTTP/1.1 connections after an error.

use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    extract::{FromRequestParts, Request},
    http::{HeaderMap, HeaderValue, StatusCode, Version, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde_json::json;

use crate::{metrics::RouteLabels, read_model::ReadModel};

/// The largest body accepted, as upstream's PSA webhook and controller-runtime do.
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// Past the limit, this much more is read and thrown away before the answer, so a client that
/// writes its whole body before reading still gets the 413 instead of a reset.
const DISCARD_AT_MOST: usize = 8 * 1024 * 1024;

/// Without a `?timeout=`, the API server's default webhook timeout (10 s in v1).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The API server's own maximum for a webhook call.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// An answer that is not the route's own: the request could not be read.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.message, "code": self.status.as_u16()});
        (self.status, axum::Json(body)).into_response()
    }
}

/// A JSON answer written into one buffer of about `size_hint` bytes. The extender's answer in
/// full-Node mode holds up to 5,000 Nodes: axum's `Json` starts at 128 bytes and grows by
/// doubling, which copied the answer a dozen times.
pub fn json_sized<T: serde::Serialize>(value: &T, size_hint: usize) -> Response {
    let mut buf = Vec::with_capacity(size_hint);
    match serde_json::to_writer(&mut buf, value) {
        Ok(()) => json_bytes(buf),
        Err(e) => HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A 200 answer of JSON already written.
pub fn json_bytes(json: Vec<u8>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        json,
    )
        .into_response()
}

/// The time left for work: the API server's `?timeout=` minus a margin for the answer to
/// travel, capped at the API server's own 30 s maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget(pub Duration);

impl Budget {
    /// From the query string; a `timeout` given twice is an error, an unreadable one the default.
    pub fn of(query: Option<&str>) -> Result<Self, HttpError> {
        let mut asked = query
            .unwrap_or("")
            .split('&')
            .filter_map(|pair| pair.strip_prefix("timeout="));
        let first = asked.next();
        if asked.next().is_some() {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                "`timeout` is given more than once in the query",
            ));
        }
        // A caller asking for more than 30 s asks for a connection held open at its pleasure.
        let total = first
            .and_then(|t| humantime::parse_duration(t).ok())
            .unwrap_or(DEFAULT_TIMEOUT)
            .min(MAX_TIMEOUT);
        Ok(Self(
            total.saturating_sub((total / 5).min(Duration::from_millis(500))),
        ))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Budget {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, HttpError> {
        Self::of(parts.uri.query())
    }
}

/// Checks the content type and reads at most `MAX_BODY` bytes within `budget`: 415 for another
/// content type, 413 past the limit (after discarding a bounded rest), 400 for a body whose
/// framing breaks, 408 for one that stalls.
pub async fn read_body(headers: &HeaderMap, body: Body, budget: Budget) -> Result<Bytes, HttpError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type must be application/json, got {content_type:?}"),
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let too_large = |len: String| {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body of {len} bytes is over the {MAX_BODY}-byte limit"),
        )
    };
    // Past the limit the rest is discarded up to a bound; a declared length past even that is
    // answered at once (closing beats reading a caller's gigabytes).
    if let Some(len) = declared
        && len > MAX_BODY + DISCARD_AT_MOST
    {
        return Err(too_large(len.to_string()));
    }
    let deadline = tokio::time::Instant::now() + budget.0;
    let mut chunks = body.into_data_stream();
    let mut kept = Vec::with_capacity(declared.unwrap_or(0).min(MAX_BODY));
    let mut total = 0usize;
    loop {
        let next = match tokio::time::timeout_at(deadline, chunks.next()).await {
            Ok(next) => next,
            Err(_) if total > MAX_BODY => return Err(too_large(format!("more than {total}"))),
            Err(_) => {
                return Err(HttpError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body not received before the request's timeout",
                ));
            }
        };
        match next {
            None if total > MAX_BODY => return Err(too_large(total.to_string())),
            None => return Ok(kept.into()),
            Some(Err(_)) if total > MAX_BODY => return Err(too_large(format!("more than {total}"))),
            Some(Err(e)) => {
                return Err(HttpError::new(
                    StatusCode::BAD_REQUEST,
                    format!("malformed body: {e}"),
                ));
            }
            Some(Ok(chunk)) => {
                total += chunk.len();
                if total <= MAX_BODY {
                    kept.extend_from_slice(&chunk);
                } else {
                    kept = Vec::new();
                    if total > MAX_BODY + DISCARD_AT_MOST {
                        return Err(too_large(format!("more than {total}")));
                    }
                }
            }
        }
    }
}

/// After an error answer to a request whose body may be unread, an HTTP/1.1 connection is
/// closed: the next request's bytes could not be told apart from the rest of this body.
pub async fn close_after_error(request: Request, next: Next) -> Response {
    let http1 = request.version() < Version::HTTP_2;
    let mut response = next.run(request).await;
    let status = response.status();
    if http1
        && matches!(
            status,
            StatusCode::BAD_REQUEST | StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE
        )
    {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Times a route (on drop) and counts its unreadable requests; shared by every route.
pub struct Timer<'a> {
    app: &'a ReadModel,
    route: &'static str,
    start: std::time::Instant,
}

impl<'a> Timer<'a> {
    pub fn start(app: &'a ReadModel, route: &'static str) -> Self {
        Self {
            app,
            route,
            start: std::time::Instant::now(),
        }
    }

    /// The preamble every route shares: the body read within its budget and parsed, or the
    /// error answer (counted as a bad request).
    pub async fn read<T>(
        &self,
        budget: Budget,
        headers: &HeaderMap,
        body: Body,
        parse: impl FnOnce(&[u8]) -> Result<T, HttpError>,
    ) -> Result<T, Response> {
        let bytes = self.body(budget, headers, body).await?;
        parse(&bytes).map_err(|e| self.bad(e))
    }

    /// The body's bytes, for a parse that borrows from them.
    pub async fn body(&self, budget: Budget, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
        read_body(headers, body, budget).await.map_err(|e| self.bad(e))
    }

    pub fn bad(&self, e: HttpError) -> Response {
        self.app
            .metrics
            .bad_requests
            .get_or_create(&RouteLabels { route: self.route })
            .inc();
        tracing::debug!(route = self.route, status = e.status.as_u16(), error = %e.message, "bad request");
        e.into_response()
    }
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.app
            .metrics
            .request_duration
            .get_or_create(&RouteLabels { route: self.route })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_budget_follows_the_callers_timeout_capped_at_the_api_servers_30s() {
        let ms = Duration::from_millis;
        // (query, budget: the timeout less a fifth, at most 500 ms, for the answer's way back)
        let rows = [
            (None, ms(9_500)),
            (Some("timeout=5s"), ms(4_500)),
            (Some("dryRun=All&timeout=1s"), ms(800)),
            (Some("timeout=30s"), ms(29_500)),
            (Some("timeout=1000000h"), ms(29_500)),
            (Some("timeout=soon"), ms(9_500)),
            (Some("mytimeout=1s"), ms(9_500)),
        ];
        for (query, want) in rows {
            assert_eq!(Budget::of(query).unwrap(), Budget(want), "{query:?}");
        }
        let twice = Budget::of(Some("timeout=1s&timeout=2s")).unwrap_err();
        assert_eq!(twice.status, StatusCode::BAD_REQUEST);
    }
}
