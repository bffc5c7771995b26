//! The schema, as migrations embedded in the crate and run at open.
//!
//! Times are unix milliseconds (`BIGINT`), JSON bodies are `TEXT`, so both backends store the
//! same values. `meta.schema_version` says which migrations ran; a store with a higher version
//! than [`VERSION`] was written by a newer connhealth and is refused.

use crate::db::{query_one, Dialect, Tx, V};
use crate::error::{Result, StoreError};

/// The newest schema version this build writes.
pub const VERSION: i64 = 5;

/// Migration N (1-based) is `MIGRATIONS[N - 1]`. `{pk}` is the auto-increment key column type.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE connections (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    status TEXT NOT NULL,
    severity BIGINT NOT NULL,
    since BIGINT NOT NULL,
    streak BIGINT NOT NULL,
    worsening BIGINT NOT NULL,
    search TEXT NOT NULL,
    class BIGINT NOT NULL,
    incident_since BIGINT,
    body TEXT NOT NULL
);
CREATE INDEX connections_order ON connections (severity DESC, id);
CREATE INDEX connections_provider ON connections (provider, severity DESC, id);
CREATE INDEX connections_customer ON connections (customer_id);
CREATE TABLE providers (
    name TEXT PRIMARY KEY,
    available BIGINT NOT NULL,
    since BIGINT NOT NULL,
    last TEXT
);
CREATE TABLE events (
    id {pk},
    at BIGINT NOT NULL,
    source TEXT NOT NULL,
    event TEXT NOT NULL,
    connection_id TEXT,
    provider TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX events_connection ON events (connection_id, id);
CREATE INDEX events_at ON events (at);
CREATE TABLE poll_outcomes (
    id {pk},
    at BIGINT NOT NULL,
    provider TEXT NOT NULL,
    outcome TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX poll_outcomes_at ON poll_outcomes (at);
CREATE TABLE spans (
    connection_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    class BIGINT NOT NULL,
    start_ms BIGINT NOT NULL,
    stop_ms BIGINT
);
CREATE INDEX spans_open ON spans (connection_id) WHERE stop_ms IS NULL;
CREATE INDEX spans_stop ON spans (stop_ms);
CREATE TABLE outages (
    provider TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    stop_ms BIGINT
);
CREATE TABLE incidents (
    id {pk},
    connection_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    stop_ms BIGINT
);
CREATE INDEX incidents_start ON incidents (start_ms);
CREATE INDEX incidents_open ON incidents (connection_id) WHERE stop_ms IS NULL;
CREATE TABLE rollups (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    hour BIGINT NOT NULL,
    good BIGINT NOT NULL,
    bad BIGINT NOT NULL,
    unknown BIGINT NOT NULL,
    PRIMARY KEY (scope, key, hour)
);
CREATE INDEX rollups_hour ON rollups (scope, hour);
CREATE TABLE webhooks (
    provider TEXT NOT NULL,
    event_id TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (provider, event_id)
);
CREATE INDEX webhooks_received ON webhooks (received_ms);
CREATE TABLE work (
    id {pk},
    kind TEXT NOT NULL,
    provider TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    claimed_by TEXT,
    claimed_until_ms BIGINT,
    done_ms BIGINT,
    attempts BIGINT NOT NULL,
    last_error TEXT
);
CREATE INDEX work_pending ON work (id) WHERE done_ms IS NULL;
CREATE TABLE outbox (
    id {pk},
    event_id BIGINT NOT NULL,
    sink TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_ms BIGINT NOT NULL,
    last_error TEXT,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX outbox_due ON outbox (state, next_ms);
CREATE INDEX outbox_sink ON outbox (sink, id);
CREATE TABLE audit (
    id {pk},
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    ok BIGINT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ms BIGINT NOT NULL
)
"#,
    // 2: durable mutes, sinks a 410 disabled, and the reminders sent.
    r#"
CREATE TABLE mutes (
    id {pk},
    provider TEXT,
    customer TEXT,
    connection_id TEXT,
    until_ms BIGINT NOT NULL,
    reason TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE disabled_sinks (
    sink TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    disabled_ms BIGINT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE reminders (
    sink TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    since_ms BIGINT NOT NULL,
    sent BIGINT NOT NULL,
    next_ms BIGINT NOT NULL,
    PRIMARY KEY (sink, connection_id)
)
"#,
    // 3: the audit log's message (what happened, in words), apart from the outcome code.
    r#"
ALTER TABLE audit ADD COLUMN message TEXT NOT NULL DEFAULT ''
"#,
    // 4: a queued item's result (a follower's relayed action, answered by the leader); cleared
    // when the follower reads it.
    r#"
ALTER TABLE work ADD COLUMN result TEXT
"#,
    // 5: each customer's worst status (`worst`: its rank in `Status::ALL`), kept on every write,
    // so that a grouped page is read in index order instead of ranking every customer: a
    // customer's connections in page order (`connections_group`, with `status` so that the
    // upkeep reads only the index), and one status's in grouped order. A store of version 4
    // gets its customers counted here, once.
    r#"
CREATE TABLE customers (
    provider TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    worst BIGINT NOT NULL,
    PRIMARY KEY (provider, customer_id)
);
CREATE INDEX customers_order ON customers (worst DESC, provider, customer_id);
CREATE INDEX connections_group ON connections (provider, customer_id, severity DESC, id, status);
CREATE INDEX connections_status_group ON connections (status, provider, customer_id, id);
INSERT INTO customers (provider, customer_id, worst)
    SELECT provider, customer_id, MAX({rank}) FROM connections GROUP BY provider, customer_id
"#,
];

fn pk(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Dialect::Postgres => "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    }
}

/// The schema version stored, 0 for an empty database.
pub(crate) async fn stored_version(tx: &mut dyn Tx) -> Result<i64> {
    tx.exec(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        &[],
    )
    .await?;
    let row = query_one(
        tx,
        "SELECT value FROM meta WHERE key = 'schema_version'",
        &[],
    )
    .await?;
    match row {
        None => Ok(0),
        Some(r) => r
            .first()
            .and_then(V::text)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::Corrupt {
                store: tx.store_name().to_owned(),
                detail: "meta.schema_version is not a number".into(),
            }),
    }
}

/// Bring the schema to [`VERSION`] (inside the caller's transaction), or refuse a newer store.
pub(crate) async fn migrate(tx: &mut dyn Tx) -> Result<()> {
    if tx.dialect() == Dialect::Postgres {
        // Replicas starting together: one migrates, the others wait and then see it done.
        tx.exec("SELECT pg_advisory_xact_lock(74170017)", &[])
            .await?;
    }
    let found = stored_version(tx).await?;
    if found > VERSION {
        return Err(StoreError::TooNew {
            store: tx.store_name().to_owned(),
            found,
            supported: VERSION,
        });
    }
    let d = tx.dialect();
    for (i, m) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let m = m
            .replace("{pk}", pk(d))
            .replace("{rank}", &crate::logic::rank_sql());
        for stmt in m.split(';') {
            if !stmt.trim().is_empty() {
                tx.exec(stmt, &[]).await?;
            }
        }
        let v = (i + 1) as i64;
        tx.exec(
            "INSERT INTO meta (key, value) VALUES ('schema_version', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[V::Text(v.to_string())],
        )
        .await?;
    }
    Ok(())
}

/// The stored version without creating anything (a read-only handle).
pub(crate) async fn stored_version_ro(tx: &mut dyn Tx) -> Result<i64> {
    let has = query_one(
        tx,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
        &[],
    )
    .await?;
    if has.is_none() {
        return Ok(0);
    }
    let row = query_one(
        tx,
        "SELECT value FROM meta WHERE key = 'schema_version'",
        &[],
    )
    .await?;
    Ok(row
        .and_then(|r| r.first().and_then(V::text).and_then(|s| s.parse().ok()))
        .unwrap_or(0))
}

/// Every table (for the PostgreSQL readability check).
pub(crate) const TABLES: &[&str] = &[
    "meta",
    "connections",
    "providers",
    "events",
    "poll_outcomes",
    "spans",
    "outages",
    "incidents",
    "rollups",
    "webhooks",
    "work",
    "outbox",
    "audit",
    "leases",
    "mutes",
    "disabled_sinks",
    "reminders",
    "customers",
];

/// The stored version on PostgreSQL without creating anything.
pub(crate) async fn stored_version_pg(tx: &mut dyn Tx) -> Result<i64> {
    let has = query_one(tx, "SELECT to_regclass('meta')::text", &[]).await?;
    if has
        .and_then(|r| r.first().and_then(V::text).map(str::to_owned))
        .is_none()
    {
        return Ok(0);
    }
    let row = query_one(
        tx,
        "SELECT value FROM meta WHERE key = 'schema_version'",
        &[],
    )
    .await?;
    Ok(row
        .and_then(|r| r.first().and_then(V::text).and_then(|s| s.parse().ok()))
        .unwrap_or(0))
}
