//! `connhealth watch`: poll, print change events as NDJSON, remember state.

use std::io::Write;
use std::path::Path;

use connhealth_core::watch::{WatchState, Watcher};

/// Exit code when the state file cannot be read or written (sysexits EX_IOERR).
const EXIT_IO: i32 = 74;

/// Runs the watcher until Ctrl-C (or once). Every change is one JSON line on stdout; the state
/// file, if any, is loaded first and saved after every poll.
pub async fn run(watcher: &mut Watcher, state: Option<&Path>, once: bool) -> i32 {
    if let Some(path) = state {
        match WatchState::load(path) {
            Ok(s) => watcher.set_state(s),
            Err(e) => {
                eprintln!("connhealth: cannot load state {}: {e}", path.display());
                return EXIT_IO;
            }
        }
    }
    loop {
        let poll = watcher.poll().await;
        let mut out = std::io::stdout().lock();
        for change in &poll.changes {
            let line = serde_json::to_string(change).expect("a change always serializes");
            if writeln!(out, "{line}").is_err() {
                return 0; // stdout closed: nobody is listening any more
            }
        }
        let _ = out.flush();
        drop(out);
        if let Some(path) = state {
            if let Err(e) = watcher.state().save(path) {
                eprintln!("connhealth: cannot save state {}: {e}", path.display());
                return EXIT_IO;
            }
        }
        if once {
            return 0;
        }
        tokio::select! {
            _ = tokio::time::sleep(watcher.next_delay()) => {}
            _ = tokio::signal::ctrl_c() => return 0,
        }
    }
}
