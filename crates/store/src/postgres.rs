//! The PostgreSQL backend: shared by replicas. One connection for writes and one for reads
//! (reconnected when lost: a database that went away and came back is used again).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use std::collections::HashMap;
use tokio::sync::Mutex;
use tokio_postgres::types::{IsNull, ToSql, Type};

use tokio_postgres::{Client, NoTls, Statement};

use crate::db::{Dialect, Row, Tx, V};
use crate::error::{Result, StoreError};
use crate::url::StoreUrl;
use crate::{Backend, Job, OpenOptions, Run};

/// A PostgreSQL store (see the crate docs). Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    config: tokio_postgres::Config,
    read_only: bool,
    writer: Mutex<Option<Conn>>,
    reader: Mutex<Option<Conn>>,
}

/// A client and its prepared statements.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.inner.name)
            .field("read_only", &self.inner.read_only)
            .finish()
    }
}

pub(crate) fn map_err(store: &str, e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    let store = store.to_owned();
    // The database's message without any connection parameters (tokio-postgres never puts the
    // password in an error).
    let detail = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    if e.is_closed() {
        return StoreError::Unavailable { store, detail };
    }
    match e.code() {
        Some(c) if *c == SqlState::DISK_FULL || *c == SqlState::OUT_OF_MEMORY => {
            StoreError::Full { store, detail }
        }
        Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => {
            StoreError::ReadOnly { store, detail }
        }
        Some(c)
            if *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || c.code().starts_with("08") =>
        {
            StoreError::Unavailable { store, detail }
        }
        Some(_) => StoreError::Database { store, detail },
        // No SQL state: an I/O or protocol failure talking to the server.
        None => StoreError::Unavailable { store, detail },
    }
}

impl PgStore {
    /// Connect and run the migrations (under an advisory lock, so that replicas starting
    /// together migrate once). The password: `opts.password`, else `PGPASSWORD`, else the
    /// URL's.
    pub async fn open(url: &StoreUrl, opts: &OpenOptions) -> Result<PgStore> {
        let StoreUrl::Postgres { url: u, password } = url else {
            return Err(StoreError::BadUrl {
                url: url.redacted(),
                reason: "not a postgres:// URL".into(),
            });
        };
        let name = u.to_string();
        let mut config: tokio_postgres::Config =
            u.as_str()
                .parse()
                .map_err(|e: tokio_postgres::Error| StoreError::BadUrl {
                    url: name.clone(),
                    reason: e.to_string(),
                })?;
        let pw = opts
            .password
            .as_ref()
            .map(|s| s.expose().to_owned())
            .or_else(|| std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()))
            .or_else(|| password.as_ref().map(|p| p.0.expose().to_owned()));
        if let Some(pw) = pw {
            config.password(pw);
        }
        config.application_name("connhealth");
        config.connect_timeout(std::time::Duration::from_secs(10));
        let store = PgStore {
            inner: Arc::new(Inner {
                name,
                config,
                read_only: opts.read_only,
                writer: Mutex::new(None),
                reader: Mutex::new(None),
            }),
        };
        if opts.read_only {
            let v: i64 = store
                .run(
                    false,
                    crate::job(|tx| {
                        Box::pin(async move { crate::schema::stored_version_pg(tx).await })
                    }),
                )
                .await?;
            if v > crate::schema::VERSION {
                return Err(StoreError::TooNew {
                    store: store.inner.name.clone(),
                    found: v,
                    supported: crate::schema::VERSION,
                });
            }
        } else {
            store
                .run(
                    true,
                    crate::job(|tx| Box::pin(async move { crate::schema::migrate(tx).await })),
                )
                .await?;
        }
        Ok(store)
    }

    async fn connect(&self) -> Result<Client> {
        let (client, conn) = self
            .inner
            .config
            .connect(NoTls)
            .await
            .map_err(|e| map_err(&self.inner.name, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("store connection ended: {e}");
            }
        });
        if self.inner.read_only {
            client
                .batch_execute("SET default_transaction_read_only = on")
                .await
                .map_err(|e| map_err(&self.inner.name, e))?;
        }
        Ok(client)
    }
}

#[async_trait]
impl Run for PgStore {
    fn kind(&self) -> Backend {
        Backend::Postgres
    }
    fn store_name(&self) -> &str {
        &self.inner.name
    }
    async fn run<T: Send + 'static>(&self, write: bool, job: Job<T>) -> Result<T> {
        let slot = if write {
            &self.inner.writer
        } else {
            &self.inner.reader
        };
        let mut guard = slot.lock().await;
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = Some(Conn {
                client: self.connect().await?,
                statements: HashMap::new(),
            });
        }
        let conn = guard.as_mut().expect("connected above");
        let res = async {
            let tx = conn
                .client
                .build_transaction()
                .read_only(!write)
                .start()
                .await
                .map_err(|e| map_err(&self.inner.name, e))?;
            let mut ptx = PgTx {
                tx,
                statements: &mut conn.statements,
                name: self.inner.name.clone(),
            };
            let v = job(&mut ptx).await?;
            ptx.tx
                .commit()
                .await
                .map_err(|e| map_err(&self.inner.name, e))?;
            Ok(v)
        }
        .await;
        if let Err(StoreError::Unavailable { .. }) = &res {
            *guard = None;
        }
        res
    }
    async fn check(&self) -> Result<()> {
        let v: i64 = self
            .run(
                false,
                crate::job(|tx| {
                    Box::pin(async move { crate::schema::stored_version_pg(tx).await })
                }),
            )
            .await?;
        if v != crate::schema::VERSION {
            return Err(StoreError::Corrupt {
                store: self.inner.name.clone(),
                detail: format!("schema version {v}, expected {}", crate::schema::VERSION),
            });
        }
        self.run(
            false,
            crate::job(|tx| {
                Box::pin(async move {
                    for t in crate::schema::TABLES {
                        tx.query(&format!("SELECT 1 FROM {t} LIMIT 1"), &[]).await?;
                    }
                    Ok(())
                })
            }),
        )
        .await
    }
}

struct PgTx<'a> {
    tx: tokio_postgres::Transaction<'a>,
    statements: &'a mut HashMap<String, Statement>,
    name: String,
}

impl PgTx<'_> {
    async fn prepare(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self
            .tx
            .prepare(sql)
            .await
            .map_err(|e| map_err(&self.name, e))?;
        if self.statements.len() > 500 {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

impl ToSql for V {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            V::Null => Ok(IsNull::Yes),
            V::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            V::Int(i) if *ty == Type::TEXT || *ty == Type::VARCHAR => i.to_string().to_sql(ty, out),
            V::Int(i) => i.to_sql(ty, out),
            V::Text(s) => s.to_sql(ty, out),
        }
    }
    fn accepts(ty: &Type) -> bool {
        [Type::INT8, Type::INT4, Type::TEXT, Type::VARCHAR].contains(ty)
    }
    tokio_postgres::types::to_sql_checked!();
}

#[async_trait]
impl Tx for PgTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
    fn store_name(&self) -> &str {
        &self.name
    }
    async fn exec(&mut self, sql: &str, params: &[V]) -> Result<u64> {
        let p: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
        let stmt = self.prepare(sql).await?;
        self.tx
            .execute(&stmt, &p)
            .await
            .map_err(|e| map_err(&self.name, e))
    }
    async fn query(&mut self, sql: &str, params: &[V]) -> Result<Vec<Row>> {
        let p: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
        let stmt = self.prepare(sql).await?;
        let rows = self
            .tx
            .query(&stmt, &p)
            .await
            .map_err(|e| map_err(&self.name, e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut row = Vec::with_capacity(r.len());
            for (i, col) in r.columns().iter().enumerate() {
                let v = match *col.type_() {
                    Type::INT8 => r.try_get::<_, Option<i64>>(i).map(|v| v.map(V::Int)),
                    Type::INT4 => r
                        .try_get::<_, Option<i32>>(i)
                        .map(|v| v.map(|x| V::Int(x.into()))),
                    Type::BOOL => r
                        .try_get::<_, Option<bool>>(i)
                        .map(|v| v.map(|x| V::Int(x.into()))),
                    _ => r.try_get::<_, Option<String>>(i).map(|v| v.map(V::Text)),
                }
                .map_err(|e| map_err(&self.name, e))?;
                row.push(v.unwrap_or(V::Null));
            }
            out.push(row);
        }
        Ok(out)
    }
}
