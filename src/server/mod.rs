//! `alexnet serve`: an exported model behind TensorFlow Serving's REST API, so a client written
//! for TF Serving works against this binary unchanged, plus a web page at `/`.
//!
//! ```text
//! HTTP (axum on tokio) ─ routes ─ request (JSON -> Column) ─ batching ─ blocking pool: session run
//!                                                               │
//!                 versions: Arc<LoadedModel> of the highest version folder, swapped by a poller
//! ```
//! [`versions`] loads numbered SavedModel folders ([`model`]) and hot-swaps newer ones;
//! [`routes`] reads TF Serving's paths and JSON ([`request`]) and answers errors as
//! `{"error": ...}` ([`error`]); [`batching`] joins concurrent requests into one session run;
//! [`page`] is the browser page; [`listen`] accepts connections. SIGINT or SIGTERM stop accepting connections, let the requests
//! in flight finish, and return.

pub mod batching;
pub mod error;
pub mod listen;
pub mod model;
pub mod page;
pub mod request;
pub mod routes;
pub mod versions;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
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
    pub addr: SocketAddr,
    /// None: every request runs on its own.
    pub batching: Option<BatchOptions>,
    /// How often the base path is checked for a newer version.
    pub poll: Duration,
    pub limits: Limits,
    pub max_body_bytes: usize,
    /// A request (reading its body included) that takes longer gets 408.
    pub request_timeout: Duration,
}

/// Serves until SIGINT or SIGTERM, then drains the requests in flight.
pub fn serve(opts: ServeOptions) -> Result<()> {
    let versions = Arc::new(Versions::load(&opts.base_path)?);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(run(opts, versions))
}

async fn run(opts: ServeOptions, versions: Arc<Versions>) -> Result<()> {
    versions::watch(versions.clone(), opts.poll);
    let state = AppState {
        model_name: opts.model_name.clone(),
        versions: versions.clone(),
        runner: Runner::new(opts.batching),
        limits: opts.limits,
        max_body_bytes: opts.max_body_bytes,
    };
    let listener = tokio::net::TcpListener::bind(opts.addr).await.with_context(|| format!("cannot listen on {}", opts.addr))?;
    let addr = listener.local_addr()?;
    let batching = match opts.batching {
        Some(b) => format!("batching up to {} images within {} ms", b.max_batch_size, b.window.as_millis()),
        None => "batching off".into(),
    };
    let stop = shutdown_signal()?;
    // Tests and scripts read the port from this line (with --port 0 the system picks one).
    say(&format!("alexnet serve: model '{}' version {} on http://{addr}/ ({batching})", opts.model_name, versions.current().version));
    listen::serve(listener, router(state, opts.request_timeout), opts.request_timeout, stop).await;
    say("alexnet serve: stopped (requests in flight answered)");
    Ok(())
}

fn router(state: AppState, timeout: Duration) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/", get(page::page))
        .route("/v1/models/{*path}", get(routes::rest::get).post(routes::rest::post))
        .fallback(|| async { ApiError::not_found("no such resource (the API is under /v1/models/NAME)") })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(move |req: Request, next: Next| with_timeout(timeout, req, next)))
        .with_state(state)
}

/// A request that is not answered in time (a client sending its body slowly, or never) gets
/// 408 and its connection's task is freed; it never held a session worker.
async fn with_timeout(timeout: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(StatusCode::REQUEST_TIMEOUT, format!("the request took longer than {} s (--request-timeout-secs)", timeout.as_secs_f64()))
            .into_response(),
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
