#![allow(unreachable_pub)] // shared by several test binaries, each using a part of it
//! Test fixtures: real SQLite files in a temp dir, and a real PostgreSQL cluster started by the
//! tests (initdb + pg_ctl in a temp dir on a free loopback port, as the `postgres` user when
//! running as root), one per test binary, a fresh database per test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Duration, TimeZone, Utc};
use connhealth_core::watch::{ProviderState, Tracked, WatchState};
use connhealth_core::{Connection, Status};
use connhealth_store::{open, OpenOptions, Store, StoreUrl};

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()
}

pub fn at(mins: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(mins)
}

/// A connection built from its JSON (the model's public contract).
pub fn conn(
    provider: &str,
    customer: &str,
    platform: &str,
    status: Status,
    when: DateTime<Utc>,
) -> Connection {
    let problems = if matches!(status, Status::Healthy | Status::NotConnected) {
        serde_json::json!([])
    } else {
        serde_json::json!([{"code": format!("{}_problem", status.as_str()), "severity": status, "message": "something", "remediation": null}])
    };
    serde_json::from_value(serde_json::json!({
        "id": format!("{provider}:{customer}:{platform}"),
        "provider": provider,
        "provider_connection_id": null,
        "customer": {"id": customer, "name": format!("Customer {customer}"), "email": null},
        "platform": platform,
        "role": "source",
        "status": status,
        "provider_status": status.as_str(),
        "connected_at": null,
        "sync": null,
        "checks": [],
        "problems": problems,
        "accounts": [],
        "observed_at": when,
        "data_as_of": null,
    }))
    .expect("a valid connection")
}

pub fn tracked(c: Connection, since: DateTime<Utc>) -> Tracked {
    serde_json::from_value(
        serde_json::json!({"connection": c, "since": since, "streak": 0, "worsening": false}),
    )
    .unwrap()
}

pub fn provider_state(available: bool, since: DateTime<Utc>) -> ProviderState {
    serde_json::from_value(
        serde_json::json!({"available": available, "since": since, "last": null}),
    )
    .unwrap()
}

pub fn state_of(items: &[Tracked]) -> WatchState {
    let mut s = WatchState::default();
    for t in items {
        s.connections.insert(t.connection.id.clone(), t.clone());
    }
    s
}

/// One store under test, reopenable.
pub struct Fixture {
    pub store: Option<Arc<dyn Store>>,
    pub url: StoreUrl,
    pub kind: Kind,
    pub _dir: Option<tempfile::TempDir>,
}

#[derive(Clone)]
pub enum Kind {
    Sqlite(PathBuf),
    Postgres {
        port: u16,
        db: String,
        bin: PathBuf,
        socket: PathBuf,
    },
}

impl Fixture {
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone().expect("open")
    }

    /// Close and open again (a restart). A server stopped just before may still be letting
    /// go of its handle (a write finishing on a blocking thread): a SQLite store's lock is
    /// retried for up to 10 s, any other error fails at once.
    pub async fn reopen(&mut self) {
        self.store = None;
        let mut tries = 0;
        loop {
            match open(&self.url, OpenOptions::default()).await {
                Ok(s) => {
                    self.store = Some(s);
                    return;
                }
                Err(connhealth_store::StoreError::Locked { .. }) if tries < 200 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("reopen: {e:?}"),
            }
        }
    }

    /// Run raw SQL beside the store (triggers, tampering).
    pub fn raw(&self, sql: &str) {
        match &self.kind {
            Kind::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
                c.execute_batch(sql).unwrap();
            }
            Kind::Postgres {
                port,
                db,
                bin,
                socket,
            } => {
                let out = Command::new(bin.join("psql"))
                    .args([
                        "-h",
                        socket.to_str().unwrap(),
                        "-p",
                        &port.to_string(),
                        "-U",
                        "postgres",
                        "-d",
                        db,
                        "-v",
                        "ON_ERROR_STOP=1",
                        "-q",
                        "-c",
                        sql,
                    ])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "psql: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

pub async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("connhealth.db");
    let url = StoreUrl::parse(&format!("sqlite://{}", path.display())).unwrap();
    let store = open(&url, OpenOptions::default()).await.unwrap();
    Fixture {
        store: Some(store),
        url,
        kind: Kind::Sqlite(path),
        _dir: Some(dir),
    }
}

/// A fresh database on the shared cluster; `None` (with a notice) when
/// `CONNHEALTH_SKIP_POSTGRES=1`. A missing PostgreSQL fails.
pub async fn postgres() -> Option<Fixture> {
    if skip_postgres() {
        return None;
    }
    let c = shared_cluster();
    let db = c.create_db();
    let url = c.url(&db);
    let store = open(&url, OpenOptions::default()).await.unwrap();
    Some(Fixture {
        store: Some(store),
        url,
        kind: Kind::Postgres {
            port: c.port,
            db,
            bin: c.bin.clone(),
            socket: c.dir.clone(),
        },
        _dir: None,
    })
}

pub fn skip_postgres() -> bool {
    if std::env::var("CONNHEALTH_SKIP_POSTGRES").as_deref() == Ok("1") {
        eprintln!(
            "NOTICE: CONNHEALTH_SKIP_POSTGRES=1: the PostgreSQL half of this test is skipped"
        );
        true
    } else {
        false
    }
}

/// A PostgreSQL cluster in a temp dir. It is stopped and removed when dropped, and, for the
/// shared one (a static, never dropped), by a watchdog when the test process ends (even on a
/// panic or a kill).
pub struct Cluster {
    pub port: u16,
    pub bin: PathBuf,
    pub dir: PathBuf,
    as_postgres: bool,
    stop_on_drop: bool,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();

/// The superuser's password: TCP connections (the store's) need it; the socket (createdb,
/// psql) trusts.
pub const PG_PASSWORD: &str = "pg-test-pw";
static DBS: AtomicU32 = AtomicU32::new(0);

pub fn shared_cluster() -> &'static Cluster {
    SHARED.get_or_init(|| {
        let mut c = Cluster::start();
        c.stop_on_drop = false;
        c.watchdog();
        c
    })
}

fn find_bin() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates.reverse();
    candidates.push(PathBuf::from("/usr/local/bin"));
    candidates.push(PathBuf::from("/usr/bin"));
    candidates
        .into_iter()
        .find(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
        .expect("PostgreSQL is not installed (no initdb/pg_ctl in /usr/lib/postgresql/*/bin or /usr/local/bin): install it (scripts/test does, with apt-get) or set CONNHEALTH_SKIP_POSTGRES=1")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Cluster {
    pub fn start() -> Cluster {
        let bin = find_bin();
        let dir = tempfile::Builder::new()
            .prefix("connhealth-pg-")
            .tempdir()
            .unwrap()
            .keep();
        let as_postgres = is_root();
        std::fs::write(dir.join("pwfile"), format!("{PG_PASSWORD}\n")).unwrap();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(ok.success(), "chown of the cluster dir to postgres failed");
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = Cluster {
            port,
            bin,
            dir,
            as_postgres,
            stop_on_drop: true,
        };
        let data = c.dir.join("data");
        c.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--pwfile",
                c.dir.join("pwfile").to_str().unwrap(),
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        c.pg_ctl_start();
        c
    }

    fn cmd(&self, tool: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(exe).args(args);
            cmd
        } else {
            let mut cmd = Command::new(exe);
            cmd.args(args);
            cmd
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .cmd(tool, args)
            .current_dir(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn pg_ctl_start(&self) {
        let data = self.dir.join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    pub fn pg_ctl_stop(&self) {
        let data = self.dir.join("data");
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }

    pub fn create_db(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            DBS.fetch_add(1, Ordering::SeqCst)
        );
        self.run(
            "createdb",
            &[
                "-h",
                self.dir.to_str().unwrap(),
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                &name,
            ],
        );
        name
    }

    pub fn url(&self, db: &str) -> StoreUrl {
        StoreUrl::parse(&format!(
            "postgres://postgres:{PG_PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        ))
        .unwrap()
    }

    /// Stop the server and remove its folder once this process is gone.
    fn watchdog(&self) {
        let data = self.dir.join("data");
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- {} -D {} -m immediate stop",
                pg_ctl.display(),
                data.display()
            )
        } else {
            format!(
                "{} -D {} -m immediate stop",
                pg_ctl.display(),
                data.display()
            )
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        // Launched in the background by a shell that exits at once: the watchdog outlives us.
        let launched = Command::new("sh")
            .args(["-c", &format!("({script}) </dev/null >/dev/null 2>&1 &")])
            .status()
            .unwrap();
        assert!(launched.success());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.stop_on_drop {
            let data = self.dir.join("data");
            let _ = self
                .cmd(
                    "pg_ctl",
                    &[
                        "-D",
                        data.to_str().unwrap(),
                        "-m",
                        "immediate",
                        "-w",
                        "stop",
                    ],
                )
                .output();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn dir_of(p: &Path) -> PathBuf {
    p.parent().unwrap().to_owned()
}
