//! `GET /metrics`: the runtime's `raft_*` metrics (proposals, commit and
//! fsync latency, elections, messages, snapshots...) and this server's
//! `raftkv_*` metrics (HTTP requests by route and status, latency,
//! forwards, open connections, store size) in the Prometheus/OpenMetrics
//! text format.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::server::app::SharedApp;
use crate::server::extract::{NoBody, NoQuery, QueryParams};
use crate::server::metrics::render;

pub async fn handle(
    State(app): State<SharedApp>,
    _: QueryParams<NoQuery>,
    _: NoBody,
) -> impl IntoResponse {
    {
        let sm = app
            .raft
            .state_machine()
            .read()
            // Readers cannot leave the state half-updated; see the runtime.
            .unwrap_or_else(|e| e.into_inner());
        // A failing engine leaves the gauges as they were; the failure
        // itself stops the node and is reported there.
        if let Ok(st) = sm.kv().stats() {
            let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            app.metrics.keys.set(gauge(st.keys));
            app.metrics.data_bytes.set(gauge(st.data_bytes));
            app.metrics.sessions.set(gauge(st.sessions));
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render(&app.registry),
    )
}
