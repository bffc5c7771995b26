//! Helpers shared by the CLI's end-to-end tests.

use std::process::Stdio;
use std::time::Duration;

/// The built binary.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_connhealth");

/// Starts `connhealth` with `args`; returns the child, the base URL, and the stderr lines read
/// up to the "dashboard on" line; the rest of stderr is collected by the returned task.
pub(crate) async fn start_server(
    args: &[&str],
    envs: &[(&str, &str)],
) -> (
    tokio::process::Child,
    String,
    Vec<String>,
    tokio::task::JoinHandle<Vec<String>>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("CONNHEALTH_LOG")
        .env_remove("CONNHEALTH_TOKEN")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut before = Vec::new();
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.contains("dashboard on http://") {
                return l;
            }
            before.push(l);
        }
        panic!("the server exited before listening: {before:?}");
    })
    .await
    .expect("the server did not start within 30 s");
    let url = line
        .split("dashboard on ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let rest = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            v.push(l);
        }
        v
    });
    (child, url, before, rest)
}
