//! `alexnet serve`: an exported model behind TensorFlow Serving's REST and gRPC APIs, so a
//! client written for TF Serving works against this binary unchanged, plus a web page at `/`.
//!
//! ```text
//! HTTP (axum on tokio) ─ routes ─ request (JSON -> Column) ─┐
//! gRPC (tonic)         ─ grpc ─ tensor (TensorProto -> Column) ─ batching ─ blocking pool: session run
//!                                                               │
//!                 versions: Arc<LoadedModel> of the highest version folder, swapped by a poller
//! ```
//! [`versions`] loads numbered SavedModel folders ([`model`]) and hot-swaps newer ones;
//! [`routes`] reads TF Serving's paths and JSON ([`request`]) and answers errors as
//! `{"error": ...}` ([`error`]); [`grpc`] answers TF Serving's PredictionService, ModelService
//! and the gRPC health service; [`batching`] joins concurrent requests into one session run;
//! [`warmup`] replays a version's recorded requests before it serves; [`metrics`] counts for
//! Prometheus; [`page`] is the browser page; [`listen`] accepts connections. SIGINT or SIGTERM stop accepting connections, let the requests
//! in flight finish, and return.

pub mod batching;
pub mod batching_params;
pub mod error;
pub mod grpc;
pub mod listen;
pub mod metrics;
pub mod model;
pub mod page;
pub mod request;
pub mod routes;
pub mod versions;
pub mod warmup;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use self::batching::{BatchOptions, Runner};
use self::error::ApiError;
use self::request::Limits;
use self::routes::AppState;
use self::versions::Versions;

/// Everything `alexnet serve` is told.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub base_path: PathBuf,
    pub model_name: String,
    /// The REST API's address, None to serve gRPC only (TF Serving's `--rest_api_port=0`).
    pub rest_addr: Option<SocketAddr>,
    pub grpc_addr: SocketAddr,
    /// None: every request runs on its own.
    pub batching: Option<BatchOptions>,
    /// How often the base path is checked for a newer version; None: only at start.
    pub poll: Option<Duration>,
    pub limits: Limits,
    /// Bytes of one REST body or gRPC message at most.
    pub max_body_bytes: usize,
    /// Where the REST server answers Prometheus metrics; None: nowhere.
    pub metrics_path: Option<String>,
    /// A request (reading its body included) that takes longer gets 408.
    pub request_timeout: Duration,
}

/// Serves until SIGINT or SIGTERM, then drains the requests in flight.
pub fn serve(opts: ServeOptions) -> Result<()> {
    let versions = Arc::new(Versions::load(&opts.base_path, &opts.model_name)?);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(run(opts, versions))
}

async fn run(opts: ServeOptions, versions: Arc<Versions>) -> Result<()> {
    if let Some(every) = opts.poll {
        versions::watch(versions.clone(), every);
    }
    let state = AppState {
        model_name: opts.model_name.clone(),
        versions: versions.clone(),
        runner: Runner::new(opts.batching.clone()),
        limits: opts.limits,
        max_body_bytes: opts.max_body_bytes,
    };
    let grpc = bind(opts.grpc_addr).await?;
    let rest = match opts.rest_addr {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let batching = match &opts.batching {
        Some(b) => format!("batching up to {} images within {} us", b.max_batch_size, b.window.as_micros()),
        None => "batching off".into(),
    };
    let stop = shutdown_signal()?;
    // Both servers stop on the one signal: a watch channel hands it to each.
    let (stopped, stopping) = tokio::sync::watch::channel(());
    tokio::spawn(async move {
        stop.await;
        let _ = stopped.send(());
    });
    let on_stop = |mut rx: tokio::sync::watch::Receiver<()>| async move {
        let _ = rx.changed().await;
    };
    let grpc_at = format!("grpc://{}", grpc.local_addr()?);
    let rest_at = match &rest {
        Some(l) => format!("http://{}/ and ", l.local_addr()?),
        None => "REST off, ".into(),
    };
    // Tests and scripts read the ports from this line (with port 0 the system picks them).
    say(&format!("alexnet serve: model '{}' version {} on {rest_at}{grpc_at} ({batching})", opts.model_name, versions.current().version));
    let rest_server = async {
        if let Some(listener) = rest {
            listen::serve(listener, router(state.clone(), opts.request_timeout, opts.metrics_path.as_deref()), opts.request_timeout, on_stop(stopping.clone()))
                .await;
        }
    };
    let grpc_server = grpc::serve(grpc, state.clone(), opts.max_body_bytes, on_stop(stopping.clone()));
    let ((), grpc_result) = tokio::join!(rest_server, grpc_server);
    grpc_result?;
    say("alexnet serve: stopped (requests in flight answered)");
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (another server on that port? choose another with --port / --rest_api_port)"))
}

fn router(state: AppState, timeout: Duration, metrics_path: Option<&str>) -> Router {
    let limit = state.max_body_bytes;
    let mut app = Router::new();
    if let Some(path) = metrics_path {
        app = app.route(path, get(|| async { ([("content-type", "text/plain; version=0.0.4")], metrics::exposition()) }));
    }
    app.route("/", get(page::page))
        .route("/v1/models/{*path}", get(routes::rest::get).post(routes::rest::post))
        .fallback(|| async { ApiError::not_found("no such resource (the API is under /v1/models/NAME)") })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(move |req: Request, next: Next| with_timeout(timeout, req, next)))
        .with_state(state)
}

/// A request that is not answered in time gets TF Serving's 504 (DEADLINE_EXCEEDED), or 408 when
/// its body had not even arrived (a client sending slowly, or never); either way its connection's
/// task is freed, and a client that is slow to send never held a session worker.
async fn with_timeout(timeout: Duration, mut req: Request, next: Next) -> Response {
    let body_read = BodyRead::default();
    if req.method() != axum::http::Method::POST {
        body_read.arrived();
    }
    req.extensions_mut().insert(body_read.clone());
    // The handler is dropped at the deadline, before it counts the request: counted here instead.
    let target = req.uri().path().strip_prefix("/v1/models/").and_then(|p| routes::Target::parse(p).ok());
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            if let Some(t) = target.filter(|t| matches!(t.verb.as_deref(), Some("predict" | "classify"))) {
                metrics::request(&t.name, t.verb.as_deref().unwrap_or(""), "REST", "DEADLINE_EXCEEDED", timeout);
            }
            let secs = timeout.as_secs_f64();
            let (status, message) = if body_read.0.load(Ordering::Relaxed) {
                (StatusCode::GATEWAY_TIMEOUT, format!("Deadline exceeded: no answer within {secs} s (--rest_api_timeout_in_ms, --request-timeout-secs)"))
            } else {
                (StatusCode::REQUEST_TIMEOUT, format!("the request body did not arrive within {secs} s (--rest_api_timeout_in_ms, --request-timeout-secs)"))
            };
            ApiError::new(status, message).into_response()
        }
    }
}

/// Whether a request's body has arrived, told by the POST handler to [`with_timeout`].
#[derive(Clone, Default)]
pub struct BodyRead(Arc<AtomicBool>);

impl BodyRead {
    pub fn arrived(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// SIGINT and SIGTERM, handled from here on: registered before the server says it listens, so
/// a signal sent right after that line drains the server instead of killing it.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("alexnet serve: shutting down, answering the requests in flight");
    })
}

/// A line on stdout that may be closed (`alexnet serve | head -1`): a server must not panic on it.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
