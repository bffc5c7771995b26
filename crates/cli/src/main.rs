//! `connhealth`: which of my customers' commerce connections are healthy, and what must
//! someone do about the rest?
//!
//! ```text
//! connhealth demo                                  # built-in simulators, no account needed
//! connhealth check --config connhealth.toml        # one aggregation, table/json/ndjson
//! connhealth config example                        # a commented config file
//! ```
//!
//! Exit codes of `check`: 0 healthy, 1 degraded or unknown, 2 action required or disconnected,
//! 3 a provider did not fully answer, 64 usage error, 66 config file unreadable, 78 bad config,
//! 70 internal error (see [`error::CliError`]).
// Denied (the workspace's lint) rather than forbidden: `alloc` sets one allocator option
// through mimalloc's C API, the one `unsafe` of the binary.
#![deny(unsafe_code)]
// A binary has no public API: its modules' `pub` items are crate-internal by construction.
#![allow(unreachable_pub)]

mod act;
mod alloc;
mod config;
mod error;
mod notify;
mod output;
mod providers;
mod serve;
mod store;
mod watch;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use connhealth::config_file;
use connhealth::futures::StreamExt;
use connhealth::schedule::ScheduleConfig;
use connhealth::simulators::Fleet;
use connhealth::watch::{WatchConfig, Watcher};
use connhealth::{Aggregator, HealthReport, Secret};

use crate::config::Config;
use crate::error::CliError;
use crate::output::{Format, TableOptions};

/// Exit code for command-line usage errors (sysexits EX_USAGE), as clap's errors end.
const EXIT_USAGE: i32 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "connhealth",
    version,
    about = "Which of my customers' commerce connections are healthy, and what must someone do about the rest?",
    long_about = None,
    after_help = "Start with `connhealth demo`: it runs against built-in simulators and needs no account."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Table: also list healthy and not-connected connections.
    #[arg(long)]
    all: bool,
    /// Table colours: auto (when stdout is a terminal), always, never.
    #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"])]
    color: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run against built-in simulators of Channel3, Violet and Subtotal (no account, no network)
    /// and print the health table.
    Demo {
        /// Generated customers per provider (the providers' documented examples are added).
        #[arg(long, default_value_t = 200)]
        customers: usize,
        /// Seed of the data generator (same seed, same data).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Instead of printing once, serve the dashboard over the simulators (polled every 5 s unless --interval says otherwise,
        /// with one simulated connection changing every 10 s so the page has something to show).
        #[arg(long)]
        serve: bool,
        /// With --serve: where to listen.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// With --serve: time between polls (e.g. 5s, 1h; a long one keeps a big fleet's
        /// polls out of a measurement).
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        interval: Duration,
        /// With --serve: the admin token (at least 16 bytes) that opens the dashboard's action
        /// buttons and POST /v1/refresh; without one those answer 403.
        #[arg(long, env = "CONNHEALTH_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Keep polling and serve the report (JSON), change events (SSE), Prometheus metrics and a
    /// dashboard page over HTTP.
    Serve {
        /// The config file.
        #[arg(long, short, default_value = "connhealth.toml")]
        config: PathBuf,
        /// Where to listen. Any address other than loopback requires a token.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Bearer token every request must carry (required off loopback).
        #[arg(long, env = "CONNHEALTH_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Admin token (at least 16 bytes) for POST /v1/refresh and the actions, on loopback too; it also
        /// opens every GET. Without one, those routes answer 403.
        #[arg(long, env = "CONNHEALTH_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Targeted refreshes queued (from webhooks and POST /v1/refresh) past which a webhook
        /// that needs one is answered 429 with Retry-After.
        #[arg(long, default_value_t = connhealth_server::DEFAULT_QUEUE_BOUND as u32,
              value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        webhook_queue_bound: u32,
        /// This replica's name when several serve processes share one PostgreSQL store (the
        /// holder of the store lease `leader` while it leads; shown in /readyz and /metrics).
        /// One replica leads: it polls the providers, drains the webhook queue and performs
        /// refreshes; the others serve every read from the store. Default: pid and start time.
        #[arg(long, value_parser = parse_replica_id)]
        replica_id: Option<String>,
        /// Time between sweeps of every customer (e.g. 30s, 5m, 1h; default: the config's
        /// `interval`, else 5m).
        #[arg(long, value_parser = parse_duration)]
        interval: Option<Duration>,
        #[command(flatten)]
        schedule: ScheduleArgs,
        /// Remember only the last state, in this JSON file, instead of a store (no history,
        /// uptime or /v1/connections then).
        #[arg(long, conflicts_with = "store")]
        state: Option<PathBuf>,
        /// The store (sqlite://FILE or postgres://user@host:5432/db). Default: the config's
        /// `store`, else sqlite://connhealth.db next to the config file (unless --state).
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// Polls in a row a worse status must be seen before it is announced.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        trip: u32,
        /// Polls in a row a better status must be seen before it is announced.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        clear: u32,
        /// How long a client may take to send a request head (slow clients are closed).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        header_read_timeout: Duration,
        /// Close a connection on which nothing moved for this long.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        idle_timeout: Duration,
        /// Connections served at once; past it, /healthz still answers and the rest is 503.
        #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..1_000_000))]
        max_connections: u64,
    },
    /// Ask every configured provider once and print the report.
    Check {
        /// The config file (see `connhealth config example`).
        #[arg(long, short, default_value = "connhealth.toml")]
        config: PathBuf,
        /// Only these providers (by name); repeatable.
        #[arg(long = "provider", value_name = "NAME")]
        providers: Vec<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Poll on an interval and print change events as NDJSON (one JSON object per line).
    Watch {
        /// The config file.
        #[arg(long, short, default_value = "connhealth.toml")]
        config: PathBuf,
        /// Time between sweeps of every customer (e.g. 30s, 5m, 1h; default: the config's
        /// `interval`, else 5m); spread by ±10 % jitter.
        #[arg(long, value_parser = parse_duration)]
        interval: Option<Duration>,
        #[command(flatten)]
        schedule: ScheduleArgs,
        /// Remember the last state in this JSON file (written atomically), so a restart does
        /// not re-announce everything.
        #[arg(long, conflicts_with = "store")]
        state: Option<PathBuf>,
        /// Remember in this store (sqlite://FILE or postgres://…; default: the config's
        /// `store`, if any): events then carry `id` and `source`, and history and uptime are kept.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// Polls in a row a worse status must be seen before it is announced.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        trip: u32,
        /// Polls in a row a better status must be seen before it is announced.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        clear: u32,
        /// Poll once, print what changed since the state file, save it and exit (for cron).
        #[arg(long)]
        once: bool,
        /// Only these providers (by name); repeatable.
        #[arg(long = "provider", value_name = "NAME")]
        providers: Vec<String>,
    },
    /// One connection's change events from the store, newest first.
    History {
        /// The connection id (as in the report).
        connection_id: String,
        /// The store; default: the config's `store`, else sqlite://connhealth.db next to it.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// The config file whose `store` to read (providers are not asked).
        #[arg(long, short, default_value = "connhealth.toml")]
        config: PathBuf,
        /// At most this many events.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
        /// Output format.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Uptime over a window from the store, by provider, customer or connection.
    Uptime {
        /// 24h, 7d, 30d or 90d.
        #[arg(long, default_value = "7d", value_parser = ["24h", "7d", "30d", "90d"])]
        window: String,
        /// Grouped by.
        #[arg(long, default_value = "provider", value_parser = ["provider", "customer", "connection"])]
        by: String,
        /// Only these providers; repeatable.
        #[arg(long = "provider", value_name = "NAME")]
        providers: Vec<String>,
        /// Only these customers (id or provider:id); repeatable.
        #[arg(long = "customer", value_name = "ID")]
        customers: Vec<String>,
        /// The store; default: the config's `store`, else sqlite://connhealth.db next to it.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// The config file whose `store` to read (providers are not asked).
        #[arg(long, short, default_value = "connhealth.toml")]
        config: PathBuf,
        /// Output format.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// The notification outbox from the store: each delivery's state, attempts and last error,
    /// newest first (and the sinks a 410 disabled).
    Notifications {
        /// Only this sink's deliveries.
        #[arg(long, value_name = "NAME")]
        sink: Option<String>,
        /// Only deliveries in this state.
        #[arg(long, value_parser = notify::STATES)]
        state: Option<String>,
        /// The store; default: the config's `store`, else sqlite://connhealth.db next to it.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// The config file whose `store` to read (providers are not asked).
        #[arg(long, short, default_value = "connhealth.toml")]
        config: PathBuf,
        /// At most this many rows.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10000))]
        limit: u64,
        /// Output format.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Notification helpers.
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Perform an action on a connection (connect_link, refresh, reauth_link, disconnect)
    /// through a running `connhealth serve`; exit code 1 when it was not done.
    Act {
        /// The connection id (as in the report).
        connection_id: String,
        /// The action kind, as listed in the connection's `actions`.
        kind: String,
        /// The running server.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The server's admin token.
        #[arg(long, env = "CONNHEALTH_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Output format.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum NotifyCommand {
    /// Send one signed test event to a `[[notify]]` sink now and print the outcome (exit 0
    /// when it was delivered, 69 when not).
    Test {
        /// The sink's name.
        #[arg(long, value_name = "NAME")]
        sink: String,
        /// The config file (only its `[[notify]]` tables are read).
        #[arg(long, short, default_value = "connhealth.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print a commented example config file.
    Example,
    /// Check a config file (and that its environment variables are set) without calling anyone.
    Validate {
        /// The config file.
        #[arg(long, short, default_value = "connhealth.toml")]
        config: PathBuf,
    },
}

/// A replica id: 1–64 characters of ASCII letters, digits, `-`, `_`, `.` (it becomes a
/// Prometheus label value and a /readyz message).
fn parse_replica_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err("use 1 to 64 of A-Z a-z 0-9 - _ .".to_owned())
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}

fn main() {
    alloc::configure();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(CliError::Internal(format!(
            "cannot start the async runtime: {e}"
        ))),
    };
    let result = runtime.block_on(run(cli));
    // Do not wait for lingering simulator tasks.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => fail(e),
    }
}

/// Logs go to stderr, off unless `CONNHEALTH_LOG` (an env-filter, e.g. `debug`) says otherwise.
/// Every field (the message included) goes through [`output::escape`], since ids, names and
/// provider messages reach the logs; colours only when stderr is a terminal and `NO_COLOR` is
/// unset.
fn init_logging() {
    use tracing_subscriber::field::MakeExt;
    let filter = std::env::var("CONNHEALTH_LOG").unwrap_or_else(|_| "off".to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = format!("{value:?}");
        if field.name() == "message" {
            write!(w, "{}", output::escape(&text))
        } else {
            write!(w, "{}={}", field.name(), output::escape(&text))
        }
    })
    .delimited(" ");
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .fmt_fields(fields)
        .try_init();
}

/// Print the error as one line (escaped: it may carry provider or file text) and exit with its
/// code.
fn fail(e: CliError) -> ! {
    eprintln!("connhealth: {}", output::escape(&e.to_string()));
    std::process::exit(e.exit_code())
}

/// The watcher settings of `watch` and `serve` (their flags of the same names).
fn watch_settings(interval: Duration, trip: u32, clear: u32) -> WatchConfig {
    WatchConfig {
        interval,
        trip,
        clear,
        ..WatchConfig::default()
    }
}

/// The re-check flags of `watch` and `serve` (each also a top-level config key).
#[derive(Debug, Clone, clap::Args)]
struct ScheduleArgs {
    /// How often a customer with a connection that is not healthy (or pending, syncing) is
    /// read again, in seconds (default: the config's `recheck_secs`, else 60).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    recheck_secs: Option<u64>,
    /// No customer's last read is ever older than this (e.g. 24h; default: the config's
    /// `max_staleness`, else 24h).
    #[arg(long, value_parser = parse_duration)]
    max_staleness: Option<Duration>,
}

/// `watch`/`serve` settings: each flag beats the config's key of the same name, which beats
/// the default.
fn poll_settings(
    cfg: &Config,
    interval: Option<Duration>,
    schedule: &ScheduleArgs,
    trip: u32,
    clear: u32,
) -> (WatchConfig, ScheduleConfig) {
    let interval = interval
        .or(cfg.poll.interval)
        .unwrap_or(config::DEFAULT_INTERVAL);
    let defaults = ScheduleConfig::default();
    let sched = ScheduleConfig {
        recheck: schedule
            .recheck_secs
            .map(Duration::from_secs)
            .or(cfg.poll.recheck)
            .unwrap_or(defaults.recheck),
        max_staleness: schedule
            .max_staleness
            .or(cfg.poll.max_staleness)
            .unwrap_or(defaults.max_staleness),
        ..defaults
    };
    (watch_settings(interval, trip, clear), sched)
}

/// Start the three simulators on loopback.
async fn start_fleet(customers: usize, seed: u64) -> Result<Fleet, CliError> {
    Fleet::start(customers, seed)
        .await
        .map_err(|e| CliError::Internal(format!("cannot start the simulators on loopback: {e}")))
}

/// Runs one command: `Ok(exit code)` when it ran (a report's codes 0–3), or why it could not.
async fn run(cli: Cli) -> Result<i32, CliError> {
    match cli.command {
        Command::Config {
            command: ConfigCommand::Example,
        } => {
            print!("{}", config::EXAMPLE);
            Ok(0)
        }
        Command::Config {
            command: ConfigCommand::Validate { config },
        } => {
            let cfg = Config::load(&config, &config_file::process)?;
            let agg = providers::aggregator(&cfg, &[])?;
            println!(
                "{}: ok ({})",
                config.display(),
                agg.provider_names().join(", ")
            );
            Ok(0)
        }
        Command::Check {
            config,
            providers: only,
            output,
        } => {
            let cfg = Config::load(&config, &config_file::process)?;
            let agg = providers::aggregator(&cfg, &only)?;
            let report = aggregate_with_progress(&agg, &output).await;
            print_report(&report, &output);
            Ok(output::exit_code(&report))
        }
        Command::Watch {
            config,
            interval,
            schedule,
            state,
            store,
            trip,
            clear,
            once,
            providers: only,
        } => {
            let cfg = Config::load(&config, &config_file::process)?;
            let (settings, sched) = poll_settings(&cfg, interval, &schedule, trip, clear);
            let mut watcher = providers::watcher(&cfg, &only, settings)?.with_schedule(sched);
            let configured = configured_names(&cfg);
            // --state wins over the config's `store` (cron users keep their state files).
            let chosen = match state {
                Some(_) => None,
                None => store::choose(store.as_deref(), &cfg.store, None)?,
            };
            match chosen {
                Some(choice) => {
                    watch::run_with_store(
                        &mut watcher,
                        &choice,
                        once,
                        cfg.sinks.clone(),
                        cfg.mutes.clone(),
                    )
                    .await
                }
                None if !cfg.sinks.is_empty() => Err(CliError::Usage(
                    "[[notify]] needs a store (the outbox lives there): give --store or the config's `store`".into(),
                )),
                None => watch::run(&mut watcher, state.as_deref(), once, &configured).await,
            }
        }
        Command::Act {
            connection_id,
            kind,
            url,
            admin_token,
            format,
        } => {
            let admin_token = admin_token.ok_or_else(|| {
                CliError::Usage(
                    "act needs the server's admin token (--admin-token or CONNHEALTH_ADMIN_TOKEN)"
                        .into(),
                )
            })?;
            let (text, code) = act::act(&act::ActArgs {
                url: &url,
                admin_token: &admin_token,
                connection_id: &connection_id,
                kind: &kind,
                json: format == "json",
            })
            .await?;
            print_text(&text);
            Ok(code)
        }
        Command::History {
            connection_id,
            store,
            config,
            limit,
            format,
        } => {
            let choice = store::choose_for_reading(store.as_deref(), &config)?;
            let text = store::history(
                &choice,
                &connection_id,
                usize::try_from(limit).unwrap_or(1000),
                format == "json",
            )
            .await?;
            print_text(&text);
            Ok(0)
        }
        Command::Notifications {
            sink,
            state,
            store,
            config,
            limit,
            format,
        } => {
            let choice = store::choose_for_reading(store.as_deref(), &config)?;
            let text = notify::notifications(
                &choice,
                sink.as_deref(),
                state.as_deref(),
                usize::try_from(limit).unwrap_or(10000),
                format == "json",
            )
            .await?;
            print_text(&text);
            Ok(0)
        }
        Command::Notify {
            command: NotifyCommand::Test { sink, config },
        } => {
            let (text, code) = notify::test(&config, &sink).await?;
            print_text(&text);
            Ok(code)
        }
        Command::Uptime {
            window,
            by,
            providers,
            customers,
            store,
            config,
            format,
        } => {
            let choice = store::choose_for_reading(store.as_deref(), &config)?;
            let window = window
                .parse()
                .map_err(|e: connhealth_store::StoreError| CliError::Usage(e.to_string()))?;
            let by = match by.as_str() {
                "customer" => connhealth_store::GroupBy::Customer,
                "connection" => connhealth_store::GroupBy::Connection,
                _ => connhealth_store::GroupBy::Provider,
            };
            let text =
                store::uptime(&choice, window, by, providers, customers, format == "json").await?;
            print_text(&text);
            Ok(0)
        }
        Command::Serve {
            config,
            listen,
            token,
            admin_token,
            webhook_queue_bound,
            replica_id,
            interval,
            schedule,
            state,
            store,
            trip,
            clear,
            header_read_timeout,
            idle_timeout,
            max_connections,
        } => {
            let cfg = Config::load(&config, &config_file::process)?;
            let (settings, sched) = poll_settings(&cfg, interval, &schedule, trip, clear);
            let watcher = providers::watcher(&cfg, &[], settings)?.with_schedule(sched);
            // clap fills `token` from the flag or from CONNHEALTH_TOKEN; only the flag shows
            // in `ps`.
            let token_from_flag =
                token.is_some() && std::env::var("CONNHEALTH_TOKEN").ok() != token;
            // Without --state, serve remembers in a store: --store, the config's, or
            // sqlite://connhealth.db next to the config file.
            let store = match state {
                Some(_) => None,
                None => store::choose(store.as_deref(), &cfg.store, Some(store::DEFAULT_STORE))?,
            };
            let opts = serve::ServeOptions {
                listen,
                token: token.map(Secret::new),
                token_from_flag,
                state,
                store,
                _store_dir: None,
                configured: configured_names(&cfg),
                header_read_timeout,
                idle_timeout,
                max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
                admin_token: admin_token.map(Secret::new),
                sinks: cfg.sinks.clone(),
                mutes: cfg.mutes.clone(),
                queue_bound: webhook_queue_bound as usize,
                replica_id,
                bound_tx: None,
            };
            serve::run(watcher, opts).await
        }
        Command::Demo {
            customers,
            seed,
            serve: true,
            listen,
            interval,
            admin_token,
            ..
        } => {
            let fleet = start_fleet(customers, seed).await?;
            let mut watcher = Watcher::new(WatchConfig {
                interval,
                jitter: 0.0,
                ..WatchConfig::default()
            });
            // Violet and Subtotal push signed webhooks to this serve as their data changes
            // (secrets made up per run; loopback only).
            let secret = |who: &str| {
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write(who.as_bytes());
                format!("demo-{who}-{:016x}", h.finish())
            };
            let (violet_secret, subtotal_secret) = (secret("violet"), secret("subtotal"));
            for p in
                providers::demo_providers_with_webhooks(&fleet, &violet_secret, &subtotal_secret)?
            {
                watcher.add(p, None);
            }
            let (bound_tx, bound_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
            let churn = tokio::spawn(async move {
                let Ok(addr) = bound_rx.await else { return };
                let hook = |name: &str| format!("http://{addr}/v1/webhooks/{name}");
                let _violet = fleet
                    .violet
                    .emit_webhooks_to(&hook("violet"), &violet_secret);
                let _subtotal = fleet
                    .subtotal
                    .emit_webhooks_to(&hook("subtotal"), &subtotal_secret);
                demo_churn(&fleet, seed).await;
            });
            // A temporary store, removed when the demo ends.
            let dir = tempfile::tempdir()
                .map_err(|e| CliError::Io(format!("cannot make a temporary store: {e}")))?;
            let url =
                connhealth_store::StoreUrl::parse_relative_to(store::DEFAULT_STORE, dir.path())
                    .map_err(|e| CliError::Internal(e.to_string()))?;
            let code = serve::run(
                watcher,
                serve::ServeOptions {
                    listen,
                    token: None,
                    token_from_flag: false,
                    state: None,
                    store: Some(store::StoreChoice {
                        url,
                        password: None,
                        retention_days: 90,
                    }),
                    _store_dir: Some(dir),
                    configured: Vec::new(),
                    header_read_timeout: connhealth_server::DEFAULT_HEADER_READ_TIMEOUT,
                    idle_timeout: connhealth_server::DEFAULT_IDLE_TIMEOUT,
                    max_connections: connhealth_server::DEFAULT_MAX_CONNECTIONS,
                    admin_token: admin_token.map(Secret::new),
                    sinks: Vec::new(),
                    mutes: Vec::new(),
                    queue_bound: connhealth_server::DEFAULT_QUEUE_BOUND,
                    replica_id: None,
                    bound_tx: Some(bound_tx),
                },
            )
            .await;
            churn.abort();
            code
        }
        Command::Demo {
            customers,
            seed,
            output,
            ..
        } => {
            let fleet = start_fleet(customers, seed).await?;
            let agg = providers::demo_aggregator(&fleet)?;
            let report = aggregate_with_progress(&agg, &output).await;
            print_report(&report, &output);
            if output.format == Format::Table {
                eprintln!(
                    "\nThat was connhealth against built-in simulators ({customers} generated customers per provider, seed {seed}).\n\
                     Next: `connhealth config example > connhealth.toml`, set the named environment variables, then `connhealth check`."
                );
            }
            Ok(0)
        }
    }
}

/// The names of every provider the config declares (whatever `--provider` selects).
fn configured_names(cfg: &Config) -> Vec<String> {
    cfg.providers.iter().map(|p| p.name.clone()).collect()
}

/// Every 10 s, flips one simulated Subtotal connection between `active` and `unauthenticated`,
/// and every 20 s one Violet merchant between `ACTIVE` and `DISABLED`, so a demo dashboard
/// shows live changes (with webhooks on, pushed at once; the 5 s poll would find them too).
async fn demo_churn(fleet: &Fleet, seed: u64) {
    let ids = fleet.subtotal.connection_ids();
    let merchants = fleet.violet.merchant_ids();
    if ids.is_empty() {
        return;
    }
    let mut rng = seed;
    for tick in 0u64.. {
        tokio::time::sleep(Duration::from_secs(10)).await;
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let id = &ids[(rng >> 33) as usize % ids.len()];
        let next = match fleet.subtotal.connection(id).map(|c| c.status) {
            Some(s) if s == "active" => "unauthenticated",
            _ => "active",
        };
        fleet.subtotal.set_status(id, next);
        if tick % 2 == 1 && !merchants.is_empty() {
            let m = merchants[(rng >> 17) as usize % merchants.len()];
            let status = match fleet.violet.merchant(m) {
                Some(v) if v["merchant_status"] == "ACTIVE" => "DISABLED",
                _ => "ACTIVE",
            };
            fleet.violet.set_merchant_status(m, status);
        }
    }
}

/// Runs the aggregation; on a terminal, shows which providers are still being waited for.
async fn aggregate_with_progress(agg: &Aggregator, output: &OutputArgs) -> HealthReport {
    let stderr = std::io::stderr();
    let show = stderr.is_terminal();
    let mut pending = agg.provider_names();
    let started = tokio::time::Instant::now();
    let mut results = Vec::new();
    let mut stream = agg.run_stream();
    let mut tick = tokio::time::interval(Duration::from_millis(120));
    let frames = ['|', '/', '-', '\\'];
    let mut frame = 0usize;
    loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(r) => {
                    pending.retain(|n| n != &r.outcome.provider);
                    results.push(r);
                }
                None => break,
            },
            _ = tick.tick(), if show => {
                frame = (frame + 1) % frames.len();
                let mut e = stderr.lock();
                let _ = write!(e, "\r\x1b[2K{} {:>5.1}s waiting for {}", frames[frame], started.elapsed().as_secs_f64(), output::escape(&pending.join(", ")));
                let _ = e.flush();
            }
        }
    }
    if show {
        let mut e = stderr.lock();
        let _ = write!(e, "\r\x1b[2K");
        let _ = e.flush();
    }
    let _ = output; // the progress line never goes to stdout, whatever the format
    Aggregator::assemble(results)
}

/// Print text to stdout (a closed pipe is not an error).
fn print_text(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn print_report(report: &HealthReport, output: &OutputArgs) {
    let text = match output.format {
        Format::Json => output::json(report),
        Format::Ndjson => output::ndjson(report),
        Format::Table => {
            let color = match output.color.as_str() {
                "always" => true,
                "never" => false,
                _ => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            };
            output::table(
                report,
                TableOptions {
                    color,
                    all: output.all,
                },
            )
        }
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}
