//! `connhealth serve` and `connhealth demo --serve`: the watcher behind an HTTP server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use connhealth_core::http::HttpStats;
use connhealth_core::watch::{WatchState, Watcher};
use connhealth_core::Secret;
use connhealth_server::{Server, ServerConfig, ServerError};

/// What `serve` needs besides the watcher.
#[derive(Debug)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Bearer token (required off loopback).
    pub token: Option<Secret>,
    /// Persist the watcher's memory here after every poll.
    pub state: Option<PathBuf>,
}

/// Serves until Ctrl-C. Returns the process exit code.
pub async fn run(
    mut watcher: Watcher,
    stats: Vec<(String, Arc<HttpStats>)>,
    opts: ServeOptions,
) -> i32 {
    if let Some(path) = &opts.state {
        match WatchState::load(path) {
            Ok(s) => watcher.set_state(s),
            Err(e) => {
                eprintln!("connhealth: cannot load state {}: {e}", path.display());
                return 74;
            }
        }
    }
    let config = ServerConfig {
        token: opts.token,
        ..ServerConfig::new(opts.listen)
    };
    let mut server = match Server::new(config, watcher) {
        Ok(s) => s,
        Err(e @ (ServerError::TokenRequired { .. } | ServerError::EmptyToken)) => {
            eprintln!("connhealth: {e} (--token or CONNHEALTH_TOKEN)");
            return 64;
        }
        Err(e) => {
            eprintln!("connhealth: {e}");
            return 70;
        }
    };
    for (name, s) in stats {
        server = server.with_http_stats(name, s);
    }
    if let Some(path) = opts.state.clone() {
        server = server.on_poll(move |_, state| {
            if let Err(e) = state.save(&path) {
                tracing::error!(path = %path.display(), error = %e, "cannot save watch state");
            }
        });
    }
    let bound = match server.bind().await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("connhealth: {e}");
            return 69;
        }
    };
    let addr = bound.local_addr();
    eprintln!("connhealth: dashboard on http://{addr}/  (report: /v1/report, events: /v1/events, metrics: /metrics; Ctrl-C stops)");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match bound.serve(shutdown).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("connhealth: {e}");
            70
        }
    }
}
