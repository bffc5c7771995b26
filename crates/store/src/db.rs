//! The small SQL surface both backends offer, so that the store's logic is written once.

use async_trait::async_trait;

use crate::error::{Result, StoreError};

/// A SQL value: the only types the schema uses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum V {
    Null,
    Int(i64),
    Text(String),
}

impl V {
    pub(crate) fn int(&self) -> Option<i64> {
        match self {
            V::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            V::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl From<i64> for V {
    fn from(v: i64) -> V {
        V::Int(v)
    }
}
impl From<&str> for V {
    fn from(v: &str) -> V {
        V::Text(v.to_owned())
    }
}
impl From<String> for V {
    fn from(v: String) -> V {
        V::Text(v)
    }
}
impl From<&String> for V {
    fn from(v: &String) -> V {
        V::Text(v.clone())
    }
}
impl From<bool> for V {
    fn from(v: bool) -> V {
        V::Int(v as i64)
    }
}
impl<T: Into<V>> From<Option<T>> for V {
    fn from(v: Option<T>) -> V {
        v.map(Into::into).unwrap_or(V::Null)
    }
}

/// A row: values in SELECT order.
pub(crate) type Row = Vec<V>;

/// Which SQL dialect (for the few places they differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// One open transaction. SQL uses `$1, $2, …` placeholders, numbered in order of first use
/// (SQLite reads them as named parameters numbered the same way).
#[async_trait]
pub(crate) trait Tx: Send {
    fn dialect(&self) -> Dialect;
    /// Run a statement; the number of rows it changed.
    async fn exec(&mut self, sql: &str, params: &[V]) -> Result<u64>;
    /// Run a query; its rows.
    async fn query(&mut self, sql: &str, params: &[V]) -> Result<Vec<Row>>;
    /// The redacted store name, for errors.
    fn store_name(&self) -> &str;
}

/// Helpers over [`Tx`].
pub(crate) async fn query_one(tx: &mut dyn Tx, sql: &str, params: &[V]) -> Result<Option<Row>> {
    Ok(tx.query(sql, params).await?.into_iter().next())
}

/// The most rows one multi-row statement carries (SQLite allows 32,766 parameters).
const CHUNK_PARAMS: usize = 30_000;

/// `INSERT INTO table (cols) VALUES (…),(…) [suffix]` in as few statements as the parameter
/// limits allow; with `RETURNING id` in `suffix`, the returned ids in ascending order.
pub(crate) async fn insert_many(
    tx: &mut dyn Tx,
    table: &str,
    cols: &[&str],
    rows: Vec<Vec<V>>,
    suffix: &str,
) -> Result<Vec<i64>> {
    let per = (CHUNK_PARAMS / cols.len()).clamp(1, 1000);
    let mut ids = Vec::new();
    let mut rows = rows.into_iter().peekable();
    let mut chunk_sql: Option<(usize, String)> = None;
    while rows.peek().is_some() {
        let chunk: Vec<Vec<V>> = rows.by_ref().take(per).collect();
        let n = chunk.len();
        let sql = match &chunk_sql {
            Some((m, s)) if *m == n => s.clone(),
            _ => {
                let mut s = format!("INSERT INTO {table} ({}) VALUES ", cols.join(", "));
                let mut p = 1;
                for r in 0..n {
                    if r > 0 {
                        s.push(',');
                    }
                    s.push('(');
                    for c in 0..cols.len() {
                        if c > 0 {
                            s.push(',');
                        }
                        s.push_str(&format!("${p}"));
                        p += 1;
                    }
                    s.push(')');
                }
                s.push(' ');
                s.push_str(suffix);
                chunk_sql = Some((n, s.clone()));
                s
            }
        };
        let params: Vec<V> = chunk.into_iter().flatten().collect();
        if suffix.contains("RETURNING") {
            let mut got: Vec<i64> = tx
                .query(&sql, &params)
                .await?
                .into_iter()
                .filter_map(|r| r.first().and_then(V::int))
                .collect();
            got.sort_unstable();
            ids.extend(got);
        } else {
            tx.exec(&sql, &params).await?;
        }
    }
    Ok(ids)
}

/// A decode error for a row.
pub(crate) fn bad_row(tx: &dyn Tx, what: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Decode {
        store: tx.store_name().to_owned(),
        what,
        detail: detail.to_string(),
    }
}
