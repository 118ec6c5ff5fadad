//! Prometheus metrics: HTTP requests by route and status, sessions by status, events appended
//! by type, open event streams, webhook deliveries by outcome. They live below the HTTP layer
//! so that background workers count without depending on it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use wagate_core::SessionStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The matched route template (`/api/v1/sessions/{session}`), never the raw path.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub event_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub sessions: Family<StatusLabels, Gauge>,
    /// Attempts by outcome: `succeeded`, `retrying` (a retry is scheduled), `failed` (final).
    pub webhook_deliveries: Family<OutcomeLabels, Counter>,
    pub webhook_attempt_duration: Histogram,
    /// Pending deliveries of enabled webhooks.
    pub webhook_backlog: Gauge,
    pub events_appended: Family<TypeLabels, Counter>,
    pub event_streams: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wagate");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let sessions = Family::<StatusLabels, Gauge>::default();
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by method, route and status", http_requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route", http_duration.clone());
        registry.register("sessions", "Sessions by status", sessions.clone());
        registry.register("webhook_deliveries", "Webhook delivery attempts by outcome (succeeded, retrying, failed)", webhook_deliveries.clone());
        let webhook_attempt_duration = latency_histogram();
        let webhook_backlog = Gauge::default();
        registry.register("webhook_attempt_duration_seconds", "Webhook delivery attempt latency", webhook_attempt_duration.clone());
        registry.register("webhook_backlog", "Pending webhook deliveries of enabled webhooks", webhook_backlog.clone());
        let events_appended = Family::<TypeLabels, Counter>::default();
        let event_streams = Gauge::default();
        registry.register("events_appended", "Events committed to the event log, by type", events_appended.clone());
        registry.register("event_streams_open", "Open event streams (GET /api/v1/events:stream)", event_streams.clone());
        Self {
            registry,
            http_requests,
            http_duration,
            sessions,
            webhook_deliveries,
            webhook_attempt_duration,
            webhook_backlog,
            events_appended,
            event_streams,
        }
    }
}

impl Metrics {
    pub fn set_session_counts(&self, counts: &[(SessionStatus, u64)]) {
        for status in SessionStatus::ALL {
            let n = counts.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
            self.sessions.get_or_create(&StatusLabels { status: status.as_str().to_owned() }).set(n as i64);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
