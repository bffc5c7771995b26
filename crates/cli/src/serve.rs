//! `connhealth serve` and `connhealth demo --serve`: the watcher behind an HTTP server.

use std::net::SocketAddr;
use std::path::PathBuf;

use connhealth_core::watch::{WatchState, Watcher};
use connhealth_core::Secret;
use connhealth_server::{Server, ServerConfig, ServerError};

use crate::error::CliError;

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

/// Serves until Ctrl-C (then `Ok(0)`). The providers' HTTP counters reach `/metrics` through
/// [`connhealth_core::Provider::http_stats`].
pub async fn run(mut watcher: Watcher, opts: ServeOptions) -> Result<i32, CliError> {
    if let Some(path) = &opts.state {
        match WatchState::load(path) {
            Ok(s) => watcher.set_state(s),
            Err(e) => {
                return Err(CliError::Io(format!(
                    "cannot load state {}: {e}",
                    path.display()
                )))
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
            return Err(CliError::Usage(format!(
                "{e} (--token or CONNHEALTH_TOKEN)"
            )))
        }
        Err(e) => return Err(CliError::Internal(e.to_string())),
    };
    if let Some(path) = opts.state.clone() {
        server = server.on_poll(move |_, state| {
            if let Err(e) = state.save(&path) {
                tracing::error!(path = %path.display(), error = %e, "cannot save watch state");
            }
        });
    }
    let bound = match server.bind().await {
        Ok(b) => b,
        Err(e) => return Err(CliError::Unavailable(e.to_string())),
    };
    let addr = bound.local_addr();
    eprintln!("connhealth: dashboard on http://{addr}/  (report: /v1/report, events: /v1/events, metrics: /metrics; Ctrl-C stops)");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match bound.serve(shutdown).await {
        Ok(()) => Ok(0),
        Err(e) => Err(CliError::Internal(e.to_string())),
    }
}
