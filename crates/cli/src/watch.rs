//! `connhealth watch`: poll, print change events as NDJSON, remember state.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use connhealth_core::schedule::{PollLoop, Step};
use connhealth_core::watch::{StateFile, WatchState, Watcher};

use crate::error::CliError;
use crate::output::escape;

/// Lock and load a state file for a watcher over the providers named `configured`.
///
/// A file locked by another process (a second `watch`, or `serve --state`) or one that
/// cannot be read is a [`CliError::Io`] (one line, exit 74). A file that remembers providers
/// this config does not declare was written for another config: said on stderr (once), and
/// those providers' connections are kept as they are, never announced `disappeared`.
pub fn open_state(path: &Path, configured: &[String]) -> Result<(StateFile, WatchState), CliError> {
    let file =
        StateFile::open(path).map_err(|e| CliError::Io(escape(&e.to_string()).into_owned()))?;
    let state = file.load().map_err(|e| {
        CliError::Io(format!(
            "cannot load state {}: {}",
            escape(&path.display().to_string()),
            escape(&e.to_string())
        ))
    })?;
    let mut foreign: BTreeMap<&str, usize> = BTreeMap::new();
    for name in state.providers.keys() {
        foreign.entry(name.as_str()).or_default();
    }
    for t in state.connections.values() {
        *foreign.entry(t.connection.provider.as_str()).or_default() += 1;
    }
    foreign.retain(|name, _| !configured.iter().any(|c| c == name));
    if !foreign.is_empty() {
        let list: Vec<String> = foreign
            .iter()
            .map(|(name, n)| format!("{} ({n} connections)", escape(name)))
            .collect();
        eprintln!(
            "connhealth: warning: state {} was written for another config: it remembers {} that this config does not declare; they are kept as they are, not announced (use a --state file per config, or delete this one to start afresh)",
            escape(&path.display().to_string()),
            list.join(", ")
        );
    }
    Ok((file, state))
}

/// Runs the watcher until Ctrl-C (or once). Every change is one JSON line on stdout; the state
/// file, if any, is locked and loaded first and saved after every poll — also when stdout is
/// gone, so what was polled is remembered whether or not anyone read it.
///
/// A closed stdout (`EPIPE`: `watch --once | head` after `head` exits) ends the watcher
/// quietly with exit 0 once the state is saved: the reader chose to stop reading, and the
/// events it did not read are not repeated. Any other write error is exit 74.
pub async fn run(
    watcher: &mut Watcher,
    state: Option<&Path>,
    once: bool,
    configured: &[String],
) -> Result<i32, CliError> {
    let file = match state {
        Some(path) => match open_state(path, configured) {
            Ok((file, s)) => {
                watcher.set_state(s);
                Some(file)
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    // `--once`: one sweep. Otherwise sweeps every interval with the scheduled re-checks in
    // between and during them (connhealth_core::schedule), each step's changes printed as
    // they come.
    let mut rounds = PollLoop::new();
    loop {
        let (changes, swept) = if once {
            (watcher.poll().await.changes, true)
        } else {
            tokio::select! {
                step = rounds.next(watcher) => match step {
                    Step::Swept { poll, .. } => (poll.changes, true),
                    Step::Rechecked { changes, .. } => (changes, false),
                },
                _ = tokio::signal::ctrl_c() => return Ok(0),
            }
        };
        // A re-check that changed nothing changed nothing worth a save either (its streak
        // is saved with the next sweep).
        if !swept && changes.is_empty() {
            continue;
        }
        let printed = (|| -> std::io::Result<()> {
            let mut out = std::io::stdout().lock();
            for change in &changes {
                let line = serde_json::to_string(change).map_err(std::io::Error::other)?;
                writeln!(out, "{line}")?;
            }
            out.flush()
        })();
        if let Some(file) = &file {
            if let Err(e) = file.save(watcher.state()) {
                return Err(CliError::Io(format!(
                    "cannot save state {}: {}",
                    escape(&file.path().display().to_string()),
                    escape(&e.to_string())
                )));
            }
        }
        match printed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
            Err(e) => return Err(CliError::Io(format!("cannot write events: {e}"))),
        }
        if once {
            return Ok(0);
        }
    }
}

/// [`run`] with a store instead of a state file: the watcher starts from the stored state,
/// every poll is committed in one transaction and its stored events (with `id` and `source`)
/// are printed once committed. A store that cannot be written is said on stderr once per
/// streak; the polls are kept in memory and written (and printed) when it works again. With
/// `--once` nothing can wait: a failed write is exit 74 (nothing printed; the next run
/// announces those changes).
pub async fn run_with_store(
    watcher: &mut Watcher,
    choice: &crate::store::StoreChoice,
    once: bool,
    sinks: Vec<connhealth_notify::Sink>,
    mutes: Vec<connhealth_notify::Mute>,
) -> Result<i32, CliError> {
    let (mut journal, loaded) = crate::store::open_journal(choice).await?;
    watcher.set_state(loaded);
    // With `[[notify]]`, events get their outbox rows and this process delivers them (while
    // it holds the store's delivery lease; `--once` delivers what is due once, after writing).
    let notifier = crate::serve::notifier_for(&mut journal, sinks, mutes)?;
    if let Some(n) = &notifier {
        if let Err(e) = n.restore().await {
            eprintln!(
                "connhealth: cannot read the disabled sinks: {}",
                escape(&e.to_string())
            );
        }
    }
    let _deliverer = match (&notifier, once) {
        (Some(n), false) => Some(AbortOnDrop(n.clone().spawn_leased(
            std::time::Duration::from_secs(1),
            format!("watch-pid{}", std::process::id()),
            std::time::Duration::from_secs(30),
        ))),
        _ => None,
    };
    let mut rounds = PollLoop::new();
    loop {
        let (at, providers, changes) = if once {
            let poll = watcher.poll().await;
            (
                poll.report.generated_at,
                poll.report.providers,
                poll.changes,
            )
        } else {
            tokio::select! {
                step = rounds.next(watcher) => match step {
                    Step::Swept { poll, .. } => {
                        (poll.report.generated_at, poll.report.providers, poll.changes)
                    }
                    // A re-check that changed nothing has nothing to record.
                    Step::Rechecked { changes, .. } if changes.is_empty() => continue,
                    Step::Rechecked { changes, at, .. } => (at, Vec::new(), changes),
                },
                _ = tokio::signal::ctrl_c() => return Ok(0),
            }
        };
        let written = journal
            .record(
                at,
                watcher.state(),
                providers,
                changes,
                connhealth_store::Source::Poll,
            )
            .await;
        let printed = (|| -> std::io::Result<()> {
            let mut out = std::io::stdout().lock();
            for e in written.events.iter() {
                let line = serde_json::to_string(&e).map_err(std::io::Error::other)?;
                writeln!(out, "{line}")?;
            }
            out.flush()
        })();
        if let Some(e) = &written.error {
            if once {
                return Err(CliError::Io(format!(
                    "cannot write the store: {}",
                    escape(&e.to_string())
                )));
            }
            if written.failure_began {
                eprintln!(
                    "connhealth: cannot write the store: {} (polling goes on; the changes are kept in memory and printed once written; said again only once it works)",
                    escape(&e.to_string())
                );
            }
        } else if written.recovered {
            eprintln!("connhealth: the store is written again");
        }
        match printed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
            Err(e) => return Err(CliError::Io(format!("cannot write events: {e}"))),
        }
        if let (Some(n), false) = (&notifier, written.events.is_empty()) {
            n.wake();
        }
        if once {
            if let Some(n) = &notifier {
                if let Err(e) = n.tick().await {
                    eprintln!(
                        "connhealth: delivering notifications failed: {}",
                        escape(&e.to_string())
                    );
                }
            }
            return Ok(0);
        }
    }
}

/// Aborts a task when dropped (the delivery worker ends with the command).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
