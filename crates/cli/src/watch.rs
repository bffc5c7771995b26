//! `connhealth watch`: poll, print change events as NDJSON, remember state.

use std::io::Write;
use std::path::Path;

use connhealth_core::watch::{WatchState, Watcher};

use crate::error::CliError;

/// Runs the watcher until Ctrl-C (or once), then `Ok(0)`. Every change is one JSON line on
/// stdout; the state file, if any, is loaded first and saved after every poll.
pub async fn run(watcher: &mut Watcher, state: Option<&Path>, once: bool) -> Result<i32, CliError> {
    if let Some(path) = state {
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
    loop {
        let poll = watcher.poll().await;
        let mut out = std::io::stdout().lock();
        for change in &poll.changes {
            let line = serde_json::to_string(change).expect("a change always serializes");
            if writeln!(out, "{line}").is_err() {
                return Ok(0); // stdout closed: nobody is listening any more
            }
        }
        let _ = out.flush();
        drop(out);
        if let Some(path) = state {
            if let Err(e) = watcher.state().save(path) {
                return Err(CliError::Io(format!(
                    "cannot save state {}: {e}",
                    path.display()
                )));
            }
        }
        if once {
            return Ok(0);
        }
        tokio::select! {
            _ = tokio::time::sleep(watcher.next_delay()) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}
