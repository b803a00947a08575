//! Prometheus metrics at `/metrics`: request counts and latencies per route (the matched
//! route template, never the raw path, so cardinality stays bounded) and registry
//! activity. The registry is per server instance, not global, so several servers in one
//! process (tests) keep separate counts.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

/// Labels of a latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// Labels of a chunk refusal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

/// Labels of a status report.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReportLabels {
    outcome: &'static str,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    /// Model versions registered by this instance.
    pub uploads: Counter,
    /// Chunk bytes served to devices.
    pub chunk_bytes: Counter,
    /// Chunks served from the in-memory artifact cache.
    pub chunk_cache_hits: Counter,
    refusals: Family<RefusalLabels, Counter>,
    reports: Family<ReportLabels, Counter>,
    hellos: Family<ReportLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mota");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
        });
        let uploads = Counter::default();
        registry.register("http_requests", "HTTP requests by route and status", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route", latency.clone());
        registry.register("model_uploads", "Model versions registered", uploads.clone());
        let (chunk_bytes, chunk_cache_hits) = (Counter::default(), Counter::default());
        let refusals = Family::<RefusalLabels, Counter>::default();
        let reports = Family::<ReportLabels, Counter>::default();
        registry.register("chunk_bytes", "Chunk bytes served to devices", chunk_bytes.clone());
        registry.register("chunk_cache_hits", "Chunks served from the artifact cache", chunk_cache_hits.clone());
        registry.register("chunk_refusals", "Chunk requests refused, by reason", refusals.clone());
        registry.register(
            "status_reports",
            "Device status reports: moved an attempt, unchanged (duplicate or known), failed to store",
            reports.clone(),
        );
        let hellos = Family::<ReportLabels, Counter>::default();
        registry.register(
            "hellos",
            "Device hellos: registered, updated, offline, class_mismatch (not applied), unknown (dropped)",
            hellos.clone(),
        );
        Self { registry, requests, latency, uploads, chunk_bytes, chunk_cache_hits, refusals, reports, hellos }
    }
}

impl Metrics {
    /// Counts a refused chunk request.
    pub fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// Counts `n` status reports by outcome: `moved` an attempt, left it `unchanged` (a
    /// duplicate, progress already known), or `failed` to be stored.
    pub fn reports(&self, outcome: &'static str, n: u64) {
        self.reports.get_or_create(&ReportLabels { outcome }).inc_by(n);
    }

    /// Counts a hello by what it did.
    pub fn hello(&self, outcome: &'static str) {
        self.hellos.get_or_create(&ReportLabels { outcome }).inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        match prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            Ok(()) => out,
            Err(e) => format!("# encoding failed: {e}\n"),
        }
    }
}

/// Middleware: counts and times every request.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let start = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    metrics
        .latency
        .get_or_create(&RouteLabels { method: method.clone(), route: route.clone() })
        .observe(start.elapsed().as_secs_f64());
    metrics.requests.get_or_create(&RequestLabels { method, route, status }).inc();
    response
}

/// `GET /metrics`.
pub async fn serve(State(metrics): State<Arc<Metrics>>) -> Response {
    let mut response = metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
