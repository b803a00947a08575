//! Artifacts (models, patches, validation sets) by digest, with HTTP ranges: what a
//! device gateway, a CDN or `mota` fetches, resumably.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::extract::ApiPath;
use crate::auth::{ApiError, Caller, ErrorBody};
use crate::blobs::{BlobStore, parse_digest};
use crate::server::AppState;
use crate::tokens::Role;

/// An artifact's bytes; honours a single `Range: bytes=a-b` (206) and answers a
/// malformed or unsatisfiable one with 416.
#[utoipa::path(get, path = "/v1/artifacts/{sha256}", tag = "artifacts",
    params(("sha256" = String, Path, pattern = "^[0-9a-fA-F]{64}$"), ("Range" = Option<String>, Header, description = "bytes=START-[END] or bytes=-SUFFIX")),
    security(("bearer" = [])),
    responses(
        (status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 416, body = ErrorBody)))]
pub async fn get_artifact(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath(sha256): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let digest = parse_digest(&sha256).ok_or_else(|| ApiError::bad_request("bad_path", "not a SHA-256 in hex"))?;
    let known: Option<i64> = sqlx::query_scalar("SELECT size FROM artifacts WHERE sha256 = $1")
        .bind(crate::blobs::hex(&digest))
        .fetch_optional(&state.db.pool)
        .await?;
    let size = known.ok_or_else(|| ApiError::not_found(format!("artifact {sha256}")))? as u64;
    let range = match headers.get(header::RANGE) {
        None => None,
        Some(v) => Some(parse_range(v.to_str().unwrap_or_default(), size).ok_or_else(|| {
            ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "range", format!("unsatisfiable range; size {size}"))
        })?),
    };
    let (start, end) = range.unwrap_or((0, size));
    let bytes = state.blobs.read_range(&digest, start, end - start).await?;
    let mut response = Response::new(Body::from(bytes));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", crate::blobs::hex(&digest))) {
        h.insert(header::ETAG, etag);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable"));
    if range.is_some() {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(response)
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` as a half-open range within `size`.
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.checked_sub(n.min(size))?, size)
        }
        (a, "") => (a.parse().ok()?, size),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.checked_add(1)?.min(size)),
    };
    (start < end && start < size).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 100)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 1000)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 1000)));
        assert_eq!(parse_range("bytes=990-2000", 1000), Some((990, 1000)), "an end past the size is clipped");
        for bad in ["bytes=1000-", "bytes=5-4", "bytes=-0", "items=0-1", "bytes=a-b", "bytes=0-1,5-6", ""] {
            assert_eq!(parse_range(bad, 1000), None, "{bad}");
        }
    }
}
