//! The web dashboard: a few hand-written files compiled into the binary and served under
//! `/ui/`, so an operator needs nothing but the backend and a browser, also offline.
//!
//! The files are public and the data is not: the page holds no data of its own and reads
//! everything from the `/v1` API with the bearer token the operator gives it, so the
//! dashboard can show nothing the token could not fetch, and no route here bypasses
//! [`crate::auth`]. The token arrives in the URL fragment (which browsers never send), is
//! kept in `sessionStorage` and is removed from the address bar.
//!
//! Nothing is loaded from elsewhere (no CDN, no fonts): the Content-Security-Policy allows
//! only this origin and no inline script, so an API string that slipped into markup could
//! still not run. Responses carry a strong `ETag` of their bytes and `no-cache`, so a
//! browser revalidates cheaply and never keeps the files of an older backend.

use std::sync::OnceLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// Where the dashboard lives.
pub const PREFIX: &str = "/ui/";

/// The policy every dashboard response carries: this origin only, no inline script or
/// style, no plugins, no framing, forms and `<base>` pinned.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    content_type: &'static str,
    body: &'static str,
    etag: OnceLock<String>,
}

impl Asset {
    const fn new(content_type: &'static str, body: &'static str) -> Self {
        Self { content_type, body, etag: OnceLock::new() }
    }

    /// `"<first 16 bytes of the SHA-256, hex>"`, computed on first use.
    fn etag(&self) -> &str {
        self.etag.get_or_init(|| format!("\"{}\"", crate::blobs::hex(&Sha256::digest(self.body.as_bytes())[..16])))
    }
}

static INDEX: Asset = Asset::new("text/html; charset=utf-8", include_str!("assets/index.html"));
static APP: Asset = Asset::new("text/javascript; charset=utf-8", include_str!("assets/app.js"));
static STYLE: Asset = Asset::new("text/css; charset=utf-8", include_str!("assets/style.css"));

/// The dashboard's routes: `/` and `/ui` redirect to `/ui/`; no authentication (the
/// files are the same for everyone; the API they call checks the token).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to(PREFIX) }))
        .route("/ui", get(|| async { Redirect::to(PREFIX) }))
        .route("/ui/", get(|headers: HeaderMap| async move { serve(&INDEX, &headers) }))
        .route("/ui/index.html", get(|headers: HeaderMap| async move { serve(&INDEX, &headers) }))
        .route("/ui/app.js", get(|headers: HeaderMap| async move { serve(&APP, &headers) }))
        .route("/ui/style.css", get(|headers: HeaderMap| async move { serve(&STYLE, &headers) }))
}

/// The asset, or 304 when the browser's copy (`If-None-Match`) is current.
fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let tag = asset.etag();
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut response = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { asset.body.into_response() };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(tag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}
