//! The accept loop: HTTP/1.1 connections served by hyper with a timeout on reading a request's
//! headers, which `axum::serve` does not set. With it, a client that connects and sends its
//! headers slowly, or goes silent, is dropped after `--request-timeout-secs` instead of holding
//! its connection forever; the body and the answer are covered by the per-request timeout of
//! [`crate::server`]. On shutdown the listener closes, idle connections are closed, and requests
//! in flight are answered before this returns.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

pub async fn serve(listener: TcpListener, app: Router, header_timeout: Duration, shutdown: impl Future<Output = ()>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    eprintln!("alexnet serve: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that vanished mid-answer is no error of the server's.
            let _ = conn.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
