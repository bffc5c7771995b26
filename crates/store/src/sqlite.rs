//! The SQLite backend: one file in WAL mode, one writer connection, a few reader connections
//! (readers never block the writer), held by one process through an exclusive lock file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{ErrorCode, OpenFlags};

use crate::db::{Dialect, Row, Tx, V};
use crate::error::{Result, StoreError};
use crate::{Backend, Job, OpenOptions, Run};

/// An SQLite store (see the crate docs). Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    path: PathBuf,
    read_only: bool,
    writer: Mutex<Option<rusqlite::Connection>>,
    readers: Mutex<Vec<rusqlite::Connection>>,
    _lock: Option<File>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("read_only", &self.inner.read_only)
            .finish()
    }
}

pub(crate) fn map_err(store: &str, e: rusqlite::Error) -> StoreError {
    let store = store.to_owned();
    let detail = e.to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::Full { store, detail },
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly { store, detail },
        Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => {
            StoreError::Corrupt { store, detail }
        }
        Some(ErrorCode::CannotOpen) => StoreError::Unavailable { store, detail },
        _ => StoreError::Database { store, detail },
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

impl SqliteStore {
    /// Open (creating it if needed) the file at `path`, take its lock, set WAL and run the
    /// migrations; read-only opens neither lock nor migrate.
    pub async fn open(path: &Path, opts: &OpenOptions) -> Result<SqliteStore> {
        let path = path.to_owned();
        let read_only = opts.read_only;
        tokio::task::spawn_blocking(move || Self::open_blocking(path, read_only))
            .await
            .map_err(|e| StoreError::Database {
                store: "sqlite".into(),
                detail: e.to_string(),
            })?
    }

    fn open_blocking(path: PathBuf, read_only: bool) -> Result<SqliteStore> {
        let name = format!("sqlite://{}", path.display());
        let lock = if read_only {
            None
        } else {
            let lp = lock_path(&path);
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lp)
                .map_err(|e| StoreError::Unavailable {
                    store: name.clone(),
                    detail: format!("cannot create its lock file {}: {e}", lp.display()),
                })?;
            fs4::FileExt::try_lock(&f).map_err(|_| StoreError::Locked {
                store: name.clone(),
                lock: lp.display().to_string(),
            })?;
            Some(f)
        };
        let flags = if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn =
            rusqlite::Connection::open_with_flags(&path, flags).map_err(|e| map_err(&name, e))?;
        let setup = if read_only {
            "PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;"
        } else {
            // WAL: readers never block the writer. synchronous=NORMAL: a commit survives a
            // process crash (kill -9); a power cut may lose the last commits, never corrupt.
            // Memory: the page cache is bounded at 8 MiB and nothing is memory-mapped. A
            // 128 MiB cache plus 256 MiB maps (counted in serve's resident memory as they are
            // touched) were ~0.9 KB per connection at 317k connections, more than the
            // connection itself, and 32 MiB still ~0.09 KB at 370k; the OS page cache keeps
            // the file's hot pages, so a smaller cache costs a read() (no disk) per miss.
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; \
             PRAGMA cache_size = -8192; PRAGMA temp_store = MEMORY; PRAGMA mmap_size = 0;"
        };
        conn.execute_batch(setup).map_err(|e| map_err(&name, e))?;
        let mut tx = SqliteTx {
            conn: Some(conn),
            name: name.clone(),
        };
        // Migrate (or, read-only, only check the version).
        let res = futures::executor::block_on(async {
            if read_only {
                let found = crate::schema::stored_version_ro(&mut tx).await?;
                if found > crate::schema::VERSION {
                    return Err(StoreError::TooNew {
                        store: name.clone(),
                        found,
                        supported: crate::schema::VERSION,
                    });
                }
                if found < crate::schema::VERSION {
                    return Err(StoreError::ReadOnly {
                        store: name.clone(),
                        detail: format!(
                            "schema version {found} needs migrating to {}, which a read-only handle cannot do",
                            crate::schema::VERSION
                        ),
                    });
                }
                Ok(())
            } else {
                tx.begin(true)?;
                match crate::schema::migrate(&mut tx).await {
                    Ok(()) => tx.finish(true),
                    Err(e) => {
                        let _ = tx.finish(false);
                        Err(e)
                    }
                }
            }
        });
        res?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                name,
                path,
                read_only,
                writer: Mutex::new(tx.conn.take()),
                readers: Mutex::new(Vec::new()),
                _lock: lock,
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Set SQLite's `max_page_count` on the writer (a size cap; the way tests simulate a full
    /// disk). Returns the cap in force (never below the file's current size).
    pub async fn set_max_page_count(&self, pages: u64) -> Result<u64> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let guard = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            let conn = guard.as_ref().ok_or_else(|| closed(&inner.name))?;
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(|e| map_err(&inner.name, e))
        })
        .await
        .map_err(|e| join_err(&self.inner.name, e))?
    }

    /// The file's size in pages and the page size in bytes.
    pub async fn page_stats(&self) -> Result<(u64, u64)> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let guard = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            let conn = guard.as_ref().ok_or_else(|| closed(&inner.name))?;
            let count: i64 = conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .map_err(|e| map_err(&inner.name, e))?;
            let size: i64 = conn
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .map_err(|e| map_err(&inner.name, e))?;
            Ok((count as u64, size as u64))
        })
        .await
        .map_err(|e| join_err(&self.inner.name, e))?
    }

    fn reader(&self) -> Result<rusqlite::Connection> {
        if let Some(c) = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
        {
            return Ok(c);
        }
        let c = rusqlite::Connection::open_with_flags(
            &self.inner.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| map_err(&self.inner.name, e))?;
        c.execute_batch(
            // 4 MiB of page cache each, no memory map (see the writer's settings).
            "PRAGMA busy_timeout = 5000; PRAGMA query_only = ON; PRAGMA cache_size = -4096; \
             PRAGMA mmap_size = 0;",
        )
        .map_err(|e| map_err(&self.inner.name, e))?;
        Ok(c)
    }
}

fn closed(name: &str) -> StoreError {
    StoreError::Unavailable {
        store: name.to_owned(),
        detail: "the writer connection was lost (a panic during a write)".into(),
    }
}

fn join_err(name: &str, e: tokio::task::JoinError) -> StoreError {
    StoreError::Database {
        store: name.to_owned(),
        detail: format!("the store's task failed: {e}"),
    }
}

#[async_trait]
impl Run for SqliteStore {
    fn kind(&self) -> Backend {
        Backend::Sqlite
    }
    fn store_name(&self) -> &str {
        &self.inner.name
    }
    async fn run<T: Send + 'static>(&self, write: bool, job: Job<T>) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let name = this.inner.name.clone();
            if write {
                let mut guard = this.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
                let conn = guard.take().ok_or_else(|| closed(&name))?;
                let mut tx = SqliteTx {
                    conn: Some(conn),
                    name,
                };
                let res = tx.run_job(true, job);
                *guard = tx.conn.take();
                res
            } else {
                let conn = this.reader()?;
                let mut tx = SqliteTx {
                    conn: Some(conn),
                    name,
                };
                let res = tx.run_job(false, job);
                if let Some(c) = tx.conn.take() {
                    let mut pool = this.inner.readers.lock().unwrap_or_else(|p| p.into_inner());
                    if pool.len() < 4 {
                        pool.push(c);
                    }
                }
                res
            }
        })
        .await
        .map_err(|e| join_err(&self.inner.name, e))?
    }
    async fn check(&self) -> Result<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = this.reader()?;
            let mut stmt = conn
                .prepare("PRAGMA integrity_check")
                .map_err(|e| map_err(&this.inner.name, e))?;
            let lines: Vec<String> = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| map_err(&this.inner.name, e))?;
            if lines == ["ok"] {
                Ok(())
            } else {
                Err(StoreError::Corrupt {
                    store: this.inner.name.clone(),
                    detail: lines.join("; "),
                })
            }
        })
        .await
        .map_err(|e| join_err(&self.inner.name, e))?
    }
}

/// A connection inside a transaction. It owns the connection (so it is `Send`); the job runs
/// on this blocking thread (`block_on`: nothing in it ever waits on anything else).
pub(crate) struct SqliteTx {
    conn: Option<rusqlite::Connection>,
    name: String,
}

impl SqliteTx {
    fn c(&self) -> Result<&rusqlite::Connection> {
        self.conn.as_ref().ok_or_else(|| closed(&self.name))
    }

    fn begin(&mut self, write: bool) -> Result<()> {
        let sql = if write { "BEGIN IMMEDIATE" } else { "BEGIN" };
        self.c()?
            .execute_batch(sql)
            .map_err(|e| map_err(&self.name, e))
    }

    fn finish(&mut self, commit: bool) -> Result<()> {
        let sql = if commit { "COMMIT" } else { "ROLLBACK" };
        self.c()?
            .execute_batch(sql)
            .map_err(|e| map_err(&self.name, e))
    }

    fn run_job<T>(&mut self, write: bool, job: Job<T>) -> Result<T> {
        self.begin(write)?;
        let res = futures::executor::block_on(job(self));
        match res {
            Ok(v) => match self.finish(true) {
                Ok(()) => Ok(v),
                Err(e) => {
                    let _ = self.finish(false);
                    Err(e)
                }
            },
            Err(e) => {
                let _ = self.finish(false);
                Err(e)
            }
        }
    }
}

/// `$1` → `?1`: SQLite's numbered parameters.
fn numbered(sql: &str) -> String {
    sql.replace('$', "?")
}

fn to_sql(v: &V) -> rusqlite::types::Value {
    match v {
        V::Null => rusqlite::types::Value::Null,
        V::Int(i) => rusqlite::types::Value::Integer(*i),
        V::Text(s) => rusqlite::types::Value::Text(s.clone()),
    }
}

#[async_trait]
impl Tx for SqliteTx {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
    fn store_name(&self) -> &str {
        &self.name
    }
    async fn exec(&mut self, sql: &str, params: &[V]) -> Result<u64> {
        let c = self.c()?;
        let mut stmt = c
            .prepare_cached(&numbered(sql))
            .map_err(|e| map_err(&self.name, e))?;
        stmt.execute(rusqlite::params_from_iter(params.iter().map(to_sql)))
            .map(|n| n as u64)
            .map_err(|e| map_err(&self.name, e))
    }
    async fn query(&mut self, sql: &str, params: &[V]) -> Result<Vec<Row>> {
        let c = self.c()?;
        let mut stmt = c
            .prepare_cached(&numbered(sql))
            .map_err(|e| map_err(&self.name, e))?;
        let n = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter().map(to_sql)))
            .map_err(|e| map_err(&self.name, e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| map_err(&self.name, e))? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                use rusqlite::types::ValueRef;
                row.push(match r.get_ref(i).map_err(|e| map_err(&self.name, e))? {
                    ValueRef::Null => V::Null,
                    ValueRef::Integer(i) => V::Int(i),
                    ValueRef::Real(f) => V::Int(f as i64),
                    ValueRef::Text(t) => V::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => V::Text(String::from_utf8_lossy(b).into_owned()),
                });
            }
            out.push(row);
        }
        Ok(out)
    }
}
