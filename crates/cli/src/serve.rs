//! `connhealth serve` and `connhealth demo --serve`: the watcher behind an HTTP server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use connhealth_core::watch::Watcher;
use connhealth_core::Secret;
use connhealth_server::{Server, ServerConfig, ServerError};

use crate::error::CliError;
use crate::output::escape;
use crate::watch::open_state;

/// What `serve` needs besides the watcher.
#[derive(Debug)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Bearer token (required off loopback).
    pub token: Option<Secret>,
    /// Whether the token came from `--token` (visible in `ps`) rather than the environment.
    pub token_from_flag: bool,
    /// The admin token (`--admin-token` / `CONNHEALTH_ADMIN_TOKEN`) for `POST /v1/refresh`.
    pub admin_token: Option<Secret>,
    /// Persist the watcher's memory here after every poll.
    pub state: Option<PathBuf>,
    /// Remember in this store instead (history, uptime, since, stored event ids).
    pub store: Option<crate::store::StoreChoice>,
    /// Keeps a temporary store's folder until serving ends (`demo --serve`).
    pub _store_dir: Option<tempfile::TempDir>,
    /// Every provider name the config declares (to tell a state file of another config).
    pub configured: Vec<String>,
    /// See [`ServerConfig::header_read_timeout`].
    pub header_read_timeout: Duration,
    /// See [`ServerConfig::idle_timeout`].
    pub idle_timeout: Duration,
    /// See [`ServerConfig::max_connections`].
    pub max_connections: usize,
    /// The config's `[[notify]]` sinks (delivered from the store's outbox).
    pub sinks: Vec<connhealth_notify::Sink>,
    /// The config's `[[mute]]` tables.
    pub mutes: Vec<connhealth_notify::Mute>,
    /// See [`ServerConfig::queue_bound`] (`--webhook-queue-bound`).
    pub queue_bound: usize,
    /// This replica's name on a shared PostgreSQL store (`--replica-id`).
    pub replica_id: Option<String>,
    /// Told the address once bound (`demo --serve` points the simulators' webhooks at it).
    pub bound_tx: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
}

/// The notifier of `sinks` over the journal's store (none without sinks), with the journal
/// naming each event's sinks so its outbox rows are written in the event's transaction.
pub fn notifier_for(
    journal: &mut connhealth_store::Journal,
    sinks: Vec<connhealth_notify::Sink>,
    mutes: Vec<connhealth_notify::Mute>,
) -> Result<Option<Arc<connhealth_notify::Notifier>>, CliError> {
    if sinks.is_empty() {
        return Ok(None);
    }
    let names: Vec<String> = sinks.iter().map(|s| s.name.clone()).collect();
    let n = connhealth_notify::Notifier::new(
        journal.store().clone(),
        sinks,
        mutes,
        connhealth_notify::NotifierOptions::default(),
    )
    .map_err(|e| CliError::Config(e.to_string()))?;
    let n = Arc::new(n);
    let router = n.clone();
    journal.set_router(move |c| router.route(c));
    eprintln!("connhealth: notifying {}", escape(&names.join(", ")));
    Ok(Some(n))
}

/// Serves until Ctrl-C (then `Ok(0)`). The providers' HTTP counters reach `/metrics` through
/// [`connhealth_core::Provider::http_stats`].
pub async fn run(mut watcher: Watcher, opts: ServeOptions) -> Result<i32, CliError> {
    let state_file = match &opts.state {
        Some(path) => match open_state(path, &opts.configured) {
            Ok((file, s)) => {
                watcher.set_state(s);
                Some(file)
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    let mut journal = match &opts.store {
        Some(choice) => {
            let (journal, loaded) = crate::store::open_journal(choice).await?;
            watcher.set_state(loaded);
            Some(journal)
        }
        None => None,
    };
    let notifier = match journal.as_mut() {
        Some(journal) => notifier_for(journal, opts.sinks, opts.mutes)?,
        None if !opts.sinks.is_empty() => {
            return Err(CliError::Usage(
                "[[notify]] needs a store (the outbox lives there): serve without --state".into(),
            ))
        }
        None => None,
    };
    let config = ServerConfig {
        token: opts.token,
        header_read_timeout: opts.header_read_timeout,
        idle_timeout: opts.idle_timeout,
        max_connections: opts.max_connections,
        admin_token: opts.admin_token,
        queue_bound: opts.queue_bound,
        ..ServerConfig::new(opts.listen)
    };
    let mut server = match Server::new(config, watcher) {
        Ok(s) => s,
        Err(
            e @ (ServerError::TokenRequired { .. }
            | ServerError::EmptyToken
            | ServerError::TokenTooShort),
        ) => {
            return Err(CliError::Usage(format!(
                "{e} (--token or CONNHEALTH_TOKEN)"
            )))
        }
        Err(e @ ServerError::AdminTokenTooShort) => {
            return Err(CliError::Usage(format!(
                "{e} (--admin-token or CONNHEALTH_ADMIN_TOKEN)"
            )))
        }
        Err(e) => return Err(CliError::Internal(e.to_string())),
    };
    if opts.token_from_flag {
        eprintln!(
            "connhealth: warning: --token is visible to every user of this machine (ps, /proc); prefer the CONNHEALTH_TOKEN environment variable"
        );
    }
    if let Some(n) = notifier {
        server = server.with_notifier(n);
    }
    if let Some(id) = opts.replica_id {
        server = server.with_replica_id(id);
    }
    if let Some(journal) = journal {
        let name = escape(journal.store().name()).into_owned();
        // Said on stderr once per failure streak, and again when writes work again; every
        // failure is in /metrics and /readyz.
        server = server.with_store(journal, move |w| {
            if let (true, Some(e)) = (w.failure_began, &w.error) {
                eprintln!(
                    "connhealth: cannot write the store: {} (serving goes on; {} polls kept in memory and written when it works; said again only once it does)",
                    escape(&e.to_string()),
                    w.pending_polls
                );
            }
            if w.recovered {
                eprintln!("connhealth: store {name} written again");
            }
            if let Some(Err(e)) = &w.pruned {
                eprintln!("connhealth: pruning the store failed: {}", escape(&e.to_string()));
            }
        });
    }
    if let Some(file) = state_file {
        // Said on stderr once per failure streak (and again when saves work again); every
        // failure is counted in /metrics and shown in /readyz by the server.
        let mut failing = false;
        server = server.persist(move |state| match file.save(state) {
            Ok(()) => {
                if failing {
                    failing = false;
                    eprintln!(
                        "connhealth: state {} saved again",
                        escape(&file.path().display().to_string())
                    );
                }
                Ok(())
            }
            Err(e) => {
                if !failing {
                    failing = true;
                    eprintln!(
                        "connhealth: cannot save state {}: {} (serving goes on; said again only once it works)",
                        escape(&file.path().display().to_string()),
                        escape(&e.to_string())
                    );
                }
                Err(e.to_string())
            }
        });
    }
    let bound = match server.bind().await {
        Ok(b) => b,
        Err(e) => return Err(CliError::Unavailable(e.to_string())),
    };
    let addr = bound.local_addr();
    if let Some(tx) = opts.bound_tx {
        let _ = tx.send(addr);
    }
    eprintln!("connhealth: dashboard on http://{addr}/  (report: /v1/report, events: /v1/events, metrics: /metrics; Ctrl-C stops)");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match bound.serve(shutdown).await {
        Ok(()) => Ok(0),
        Err(e) => Err(CliError::Internal(e.to_string())),
    }
}
