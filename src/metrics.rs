//! Prometheus metrics: every metric's name and meaning, the process's recorder, the
//! GraphQL extension that times operations, and the `GET /metrics` rendering.
//!
//! Labels only ever take values from a fixed set (schema fields, projector names, event
//! types, limit kinds), never from what a client sends, so no client can grow the
//! number of series.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection};
use async_graphql::{Response, ServerResult, Variables};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const PROJECTOR_POSITION: &str = "parley_projector_position";
pub const PROJECTOR_LAG: &str = "parley_projector_lag_events";
pub const PROJECTOR_STATE: &str = "parley_projector_state";
pub const PROJECTOR_REBUILD: &str = "parley_projector_rebuild_progress_ratio";
pub const EVENTS_APPENDED: &str = parley_store::bus::EVENTS_APPENDED;
pub const OPERATIONS: &str = "parley_graphql_operations_total";
pub const OPERATION_SECONDS: &str = "parley_graphql_operation_duration_seconds";
pub const WS_CONNECTIONS: &str = "parley_websocket_connections";
pub const SUBSCRIPTIONS: &str = "parley_subscriptions";
pub const CONSISTENCY_TIMEOUTS: &str = "parley_consistency_wait_timeouts_total";
pub const RATE_LIMITED: &str = "parley_rate_limited_total";
pub const SHARED_RENDERS: &str = "parley_shared_payload_renders_total";
pub const SHARED_SENT: &str = "parley_shared_payloads_sent_total";

/// Latency buckets in seconds: a chat operation should take milliseconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The process's recorder, installed by the first server of the process (tests run
/// several in one); `None` if another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(OPERATION_SECONDS.to_owned()), &BUCKETS)
                .and_then(|builder| builder.install_recorder());
            match handle {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics are off: cannot install the recorder");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    describe_gauge!(
        PROJECTOR_POSITION,
        "Position in the log of the last event each projector applied."
    );
    describe_gauge!(
        PROJECTOR_LAG,
        "Events each projector is behind the head of the log (approximate on PostgreSQL)."
    );
    describe_gauge!(
        PROJECTOR_STATE,
        "1 for each projector's current state (live, rebuilding or failed), 0 for the others."
    );
    describe_gauge!(
        PROJECTOR_REBUILD,
        "Share of the log a rebuild of each projector has applied (0 to 1); 0 when none runs."
    );
    describe_counter!(EVENTS_APPENDED, "Events appended to the log, by type.");
    describe_counter!(
        OPERATIONS,
        "GraphQL queries and mutations, by root field, kind and outcome (ok, error, invalid)."
    );
    describe_histogram!(
        OPERATION_SECONDS,
        metrics::Unit::Seconds,
        "Time to execute a GraphQL query or mutation, by root field."
    );
    describe_gauge!(WS_CONNECTIONS, "Open WebSocket connections.");
    describe_gauge!(SUBSCRIPTIONS, "Live GraphQL subscriptions.");
    describe_counter!(
        CONSISTENCY_TIMEOUTS,
        "Mutations answered before every read model had applied them."
    );
    describe_counter!(RATE_LIMITED, "Requests refused by a rate limit, by limit.");
    describe_counter!(
        SHARED_RENDERS,
        "Executions of a shared subscription document over one event (one per event and document)."
    );
    describe_counter!(
        SHARED_SENT,
        "Payloads sent to subscribers of shared documents; sent per render is the sharing."
    );
}

/// Sets the projector gauges from this node's view of its projectors and the head, and
/// the rebuilds under way (name, share done).
pub fn projectors(
    positions: &[(&'static str, parley_projections::runner::Progress)],
    head: Option<parley_store::LogPosition>,
    rebuilds: &[(String, f64)],
) {
    for (name, progress) in positions {
        let name = *name;
        gauge!(PROJECTOR_POSITION, "projector" => name).set(progress.position.pos as f64);
        if let Some(head) = head {
            // Positions are dense on SQLite; on PostgreSQL rolled-back inserts leave gaps.
            let lag = head.pos.saturating_sub(progress.position.pos).max(0);
            gauge!(PROJECTOR_LAG, "projector" => name).set(lag as f64);
        }
        let rebuild = rebuilds
            .iter()
            .find(|(rebuilt, _)| rebuilt == name)
            .map(|(_, share)| *share);
        gauge!(PROJECTOR_REBUILD, "projector" => name).set(rebuild.unwrap_or(0.0));
        let state = projector_state(progress, rebuild.is_some());
        for each in ["live", "rebuilding", "failed"] {
            let on = if each == state { 1.0 } else { 0.0 };
            gauge!(PROJECTOR_STATE, "projector" => name, "state" => each).set(on);
        }
    }
}

/// `failed` while stuck, `rebuilding` while a rebuild makes its tables anew beside the
/// ones served, `live` otherwise; as `/readyz` and `parley projections status` say.
pub fn projector_state(
    progress: &parley_projections::runner::Progress,
    rebuilding: bool,
) -> &'static str {
    match (&progress.failure, rebuilding) {
        (Some(_), _) => "failed",
        (None, true) => "rebuilding",
        (None, false) => "live",
    }
}

/// The total of mutations answered before their read models caught up.
pub fn consistency_timeouts(total: u64) {
    counter!(CONSISTENCY_TIMEOUTS).absolute(total);
}

/// Everything recorded, as Prometheus text; `None` when metrics are off.
pub fn render() -> Option<String> {
    let handle = handle()?;
    handle.run_upkeep();
    Some(handle.render())
}

/// A request refused by the rate limit `limit`.
pub fn rate_limited(limit: &'static str) {
    counter!(RATE_LIMITED, "limit" => limit).increment(1);
}

/// Counts an open WebSocket connection until dropped.
pub struct Connection;

impl Connection {
    pub fn open() -> Self {
        gauge!(WS_CONNECTIONS).increment(1.0);
        Self
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        gauge!(WS_CONNECTIONS).decrement(1.0);
    }
}

/// One execution of a shared subscription document.
pub fn shared_render() {
    counter!(SHARED_RENDERS).increment(1);
}

/// One payload sent to a subscriber of a shared document.
pub fn shared_sent() {
    counter!(SHARED_SENT).increment(1);
}

/// Subscriptions started (positive) or ended (negative).
pub fn subscriptions(delta: f64) {
    gauge!(SUBSCRIPTIONS).increment(delta);
}

/// Times and counts queries and mutations, as an async-graphql extension.
pub struct OperationMetrics;

impl ExtensionFactory for OperationMetrics {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Recorder::default())
    }
}

#[derive(Default)]
struct Recorder {
    /// Each operation's kind and first root field, by operation name.
    operations: Mutex<Vec<(Option<String>, &'static str, String)>>,
    /// Set once an operation ran (its document was valid).
    executed: std::sync::atomic::AtomicBool,
}

fn kind(ty: OperationType) -> &'static str {
    match ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    }
}

#[async_trait::async_trait]
impl Extension for Recorder {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let response = next.run(ctx).await;
        if !self.executed.load(std::sync::atomic::Ordering::Relaxed) && response.is_err() {
            // Refused before it ran (unparsable, invalid, over a limit): the document
            // names nothing the schema vouches for, so no field label.
            counter!(OPERATIONS, "operation" => "-", "kind" => "-", "outcome" => "invalid")
                .increment(1);
        }
        response
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let operations = document
            .operations
            .iter()
            .map(|(name, operation)| {
                let first = operation
                    .node
                    .selection_set
                    .node
                    .items
                    .iter()
                    .find_map(|selection| match &selection.node {
                        Selection::Field(field) => Some(field.node.name.node.to_string()),
                        _ => None,
                    })
                    .unwrap_or_else(|| "-".to_owned());
                (name.map(|n| n.to_string()), kind(operation.node.ty), first)
            })
            .collect();
        if let Ok(mut slot) = self.operations.lock() {
            *slot = operations;
        }
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        self.executed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        let response = next.run(ctx, operation_name).await;
        // Validation passed, so the root field is one of the schema's.
        let label = self.operations.lock().ok().and_then(|operations| {
            operations
                .iter()
                .find(|(name, _, _)| operation_name.is_none() || name.as_deref() == operation_name)
                .map(|(_, kind, field)| (*kind, field.clone()))
        });
        let (kind, field) = label.unwrap_or(("-", "-".to_owned()));
        let outcome = if response.is_err() { "error" } else { "ok" };
        counter!(OPERATIONS, "operation" => field.clone(), "kind" => kind, "outcome" => outcome)
            .increment(1);
        histogram!(OPERATION_SECONDS, "operation" => field, "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        response
    }
}
