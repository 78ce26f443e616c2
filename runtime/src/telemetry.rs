//! Self-observability of every Vigil process: structured logs via tracing,
//! Prometheus self-metrics, and the HTTP endpoints `/metrics`, `/health` (alive)
//! and `/ready` (started, and every connection up; see [`crate::health`]).

use crate::health::{Health, Readiness};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::{Metric, Registry};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The `main` of a command-line binary: installs tracing in `format`, starts the
/// async runtime and runs `run` on it. An error, and an async runtime that cannot
/// start, are printed as `error: ...` (with their causes) and exit with a failure.
pub fn run_main<E, F>(format: LogFormat, run: F) -> std::process::ExitCode
where
    E: std::fmt::Display,
    F: std::future::Future<Output = Result<std::process::ExitCode, E>>,
{
    init_tracing(format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: the async runtime could not start: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Installs the global tracing subscriber; the filter comes from `VIGIL_LOG`
/// (for example `info,vigil_agent=debug`), defaulting to `info`.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("VIGIL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The registry of a process's self-metrics, shared by its stages.
#[derive(Clone, Default)]
pub struct SelfMetrics {
    registry: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for SelfMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfMetrics").finish_non_exhaustive()
    }
}

impl SelfMetrics {
    /// Registers `metric` as `vigil_<name>` and returns it for updating.
    pub fn register<M: Metric + Clone>(&self, name: &str, help: &str, metric: M) -> M {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        registry.register(format!("vigil_{name}"), help, metric.clone());
        metric
    }

    /// The OpenMetrics text exposition of every registered metric.
    pub fn encode(&self) -> String {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

#[derive(Clone)]
struct EndpointState {
    metrics: SelfMetrics,
    health: Health,
}

/// What every Vigil process starts with: its self-metrics registry, its readiness,
/// the shutdown token cancelled by SIGTERM or SIGINT, and the HTTP endpoints.
#[derive(Debug, Clone)]
pub struct ProcessContext {
    pub metrics: SelfMetrics,
    pub health: Health,
    pub shutdown: CancellationToken,
}

impl ProcessContext {
    /// Installs the signal handlers and serves the endpoints on `listen`.
    pub async fn start(listen: SocketAddr) -> Result<Self, HttpListenError> {
        let context = Self {
            metrics: SelfMetrics::default(),
            health: Health::default(),
            shutdown: crate::shutdown::on_signal(),
        };
        context.metrics.register(
            "connection_up",
            "Whether the peer answered the last check (1) or not (0), by peer",
            context.health.connection_gauges(),
        );
        serve_http(
            listen,
            context.metrics.clone(),
            context.health.clone(),
            context.shutdown.clone(),
        )
        .await
        .map_err(|source| HttpListenError {
            address: listen,
            source,
        })?;
        Ok(context)
    }
}

/// The HTTP endpoints could not be served.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve HTTP on {address}: {source}")]
pub struct HttpListenError {
    pub address: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Serves `/metrics`, `/health` and `/ready` on `address` until `shutdown`;
/// returns the bound address (useful with port 0).
pub async fn serve_http(
    address: SocketAddr,
    metrics: SelfMetrics,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready_handler))
        .with_state(EndpointState { metrics, health });
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "metrics endpoint stopped");
        }
    });
    tracing::info!(address = %bound, "serving /metrics, /health and /ready");
    Ok(bound)
}

async fn metrics_handler(State(state): State<EndpointState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// 200 `ready`, or 503 with `starting` or one line per connection that is down:
/// `kafka down: <why>`.
async fn ready_handler(State(state): State<EndpointState>) -> impl IntoResponse {
    match state.health.readiness() {
        Readiness::Ready => (StatusCode::OK, "ready\n".to_owned()),
        Readiness::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_owned()),
        Readiness::Down(peers) => (
            StatusCode::SERVICE_UNAVAILABLE,
            peers
                .iter()
                .map(|(peer, reason)| format!("{peer} down: {reason}\n"))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn registered_metrics_are_exposed_with_the_vigil_prefix() {
        let metrics = SelfMetrics::default();
        let counter = metrics.register("lines_read", "Lines read", Counter::<u64>::default());
        counter.inc_by(3);
        let text = metrics.encode();
        assert!(text.contains("vigil_lines_read_total 3"), "{text}");
    }

    #[tokio::test]
    async fn ready_answers_503_naming_the_connection_that_is_down() {
        let health = Health::default();
        let kafka = health.connection("kafka");
        health.set_ready(true);
        let shutdown = CancellationToken::new();
        let address = serve_http(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            SelfMetrics::default(),
            health,
            shutdown.clone(),
        )
        .await
        .unwrap();
        let ready = || async {
            let response = reqwest::get(format!("http://{address}/ready"))
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        };
        kafka.set_down("no metadata from k:9092: timed out");
        assert_eq!(
            ready().await,
            (
                503,
                "kafka down: no metadata from k:9092: timed out\n".to_owned()
            )
        );
        kafka.set_up();
        assert_eq!(ready().await, (200, "ready\n".to_owned()));
        shutdown.cancel();
    }
}
