//! The store's logic, written once over [`Tx`] for both backends.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use connhealth_core::watch::{ProviderState, Tracked, WatchState};
use connhealth_core::{Change, Connection, Status};

use crate::db::{bad_row, insert_many, query_one, Row, Tx, V};
use crate::error::{Result, StoreError};
use crate::types::*;

const HOUR_MS: i64 = 3_600_000;
const GOOD: i64 = 0;
const BAD: i64 = 1;
const UNKNOWN: i64 = 2;

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Uptime class of a status (DESIGN.md "Uptime").
pub(crate) fn class(s: Status) -> i64 {
    match s {
        Status::Healthy | Status::NotConnected | Status::Pending | Status::Syncing => GOOD,
        Status::Unknown => UNKNOWN,
        _ => BAD,
    }
}

fn search_text(c: &Connection) -> String {
    let mut s = format!("{}\n{}\n", c.id, c.customer.id);
    if let Some(n) = &c.customer.name {
        s.push_str(n);
    }
    s.push('\n');
    s.push_str(&c.platform);
    for p in &c.problems {
        s.push('\n');
        s.push_str(&p.code);
    }
    s.to_lowercase()
}

async fn meta_get(tx: &mut dyn Tx, key: &str) -> Result<Option<i64>> {
    Ok(
        query_one(tx, "SELECT value FROM meta WHERE key = $1", &[key.into()])
            .await?
            .and_then(|r| r.first().and_then(V::text).and_then(|s| s.parse().ok())),
    )
}

async fn meta_set(tx: &mut dyn Tx, key: &str, v: i64) -> Result<()> {
    tx.exec(
        "INSERT INTO meta (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[key.into(), v.to_string().into()],
    )
    .await?;
    Ok(())
}

/// Everything a restarted watcher needs.
pub(crate) async fn load_state(tx: &mut dyn Tx) -> Result<WatchState> {
    let mut state = WatchState::default();
    let rows = tx
        .query(
            "SELECT body, since, streak, worsening FROM connections",
            &[],
        )
        .await?;
    for r in rows {
        let body = r[0]
            .text()
            .ok_or_else(|| bad_row(tx, "connection", "no body"))?;
        let connection: serde_json::Value =
            serde_json::from_str(body).map_err(|e| bad_row(tx, "connection", e))?;
        let tracked: Tracked = serde_json::from_value(serde_json::json!({
            "connection": connection,
            "since": time(r[1].int().unwrap_or_default()),
            "streak": r[2].int().unwrap_or_default(),
            "worsening": r[3].int().unwrap_or_default() != 0,
        }))
        .map_err(|e| bad_row(tx, "connection", e))?;
        state
            .connections
            .insert(tracked.connection.id.clone(), tracked);
    }
    for r in tx
        .query("SELECT name, available, since, last FROM providers", &[])
        .await?
    {
        let name = r[0].text().unwrap_or_default().to_owned();
        let last: Option<serde_json::Value> = match r[3].text() {
            Some(t) => Some(serde_json::from_str(t).map_err(|e| bad_row(tx, "provider", e))?),
            None => None,
        };
        let ps: ProviderState = serde_json::from_value(serde_json::json!({
            "available": r[1].int().unwrap_or_default() != 0,
            "since": time(r[2].int().unwrap_or_default()),
            "last": last,
        }))
        .map_err(|e| bad_row(tx, "provider", e))?;
        state.providers.insert(name, ps);
    }
    Ok(state)
}

/// One poll, one transaction (the caller's). Returns the assigned event ids in input order.
pub(crate) async fn commit_poll(tx: &mut dyn Tx, rec: &PollRecord) -> Result<Vec<i64>> {
    let at = ms(rec.at);
    // Roll up the hours that ended before this poll, from what was stored until now.
    let hour = at.div_euclid(HOUR_MS);
    match meta_get(tx, "rollup_until_hour").await? {
        None => meta_set(tx, "rollup_until_hour", hour).await?,
        Some(done) if done < hour => {
            rollup(tx, done, hour).await?;
            meta_set(tx, "rollup_until_hour", hour).await?;
        }
        Some(_) => {}
    }

    // Provider outcomes of this poll.
    let rows = rec
        .outcomes
        .iter()
        .map(|o| {
            Ok(vec![
                at.into(),
                o.provider.as_str().into(),
                o.outcome.as_str().into(),
                serde_json::to_string(o)
                    .map_err(|e| bad_row(tx, "outcome", e))?
                    .into(),
            ])
        })
        .collect::<Result<Vec<_>>>()?;
    insert_many(
        tx,
        "poll_outcomes",
        &["at", "provider", "outcome", "body"],
        rows,
        "",
    )
    .await?;

    // Provider availability, and outage spans (unknown time for uptime).
    for (name, ps) in &rec.providers {
        let last = ps
            .last
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| bad_row(tx, "provider", e))?;
        tx.exec(
            "INSERT INTO providers (name, available, since, last) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET available = excluded.available, \
             since = excluded.since, last = excluded.last",
            &[
                name.into(),
                ps.available.into(),
                ms(ps.since).into(),
                last.into(),
            ],
        )
        .await?;
        let open = query_one(
            tx,
            "SELECT start_ms FROM outages WHERE provider = $1 AND stop_ms IS NULL",
            &[name.into()],
        )
        .await?;
        match (ps.available, open) {
            (false, None) => {
                tx.exec(
                    "INSERT INTO outages (provider, start_ms) VALUES ($1, $2)",
                    &[name.into(), ms(ps.since).into()],
                )
                .await?;
            }
            (true, Some(r)) => {
                let start = r[0].int().unwrap_or(at);
                tx.exec(
                    "UPDATE outages SET stop_ms = $2 WHERE provider = $1 AND stop_ms IS NULL",
                    &[name.into(), ms(ps.since).max(start).into()],
                )
                .await?;
            }
            _ => {}
        }
    }

    // What the commit does to customers' worst statuses (the `customers` table), at its end.
    let mut customers = CustomerUpkeep::default();

    // Removed connections: their spans and incidents end now.
    for id in &rec.removed {
        for r in tx
            .query(
                "DELETE FROM connections WHERE id = $1 RETURNING provider, customer_id",
                &[id.into()],
            )
            .await?
        {
            customers.recount.insert((
                r[0].text().unwrap_or_default().to_owned(),
                r[1].text().unwrap_or_default().to_owned(),
            ));
        }
        tx.exec(
            "UPDATE spans SET stop_ms = $2 WHERE connection_id = $1 AND stop_ms IS NULL",
            &[id.into(), at.into()],
        )
        .await?;
        tx.exec(
            "UPDATE incidents SET stop_ms = $2 WHERE connection_id = $1 AND stop_ms IS NULL",
            &[id.into(), at.into()],
        )
        .await?;
    }

    // Upserts, a chunk at a time so that a first poll of a large fleet never holds all its
    // rows (each with its JSON body) at once: the previous class and incident of each, to
    // keep spans and incidents, then the chunk's rows. Each connection's statements touch
    // only its own rows, so chunking keeps the transaction's outcome.
    for chunk in rec.upserts.chunks(COMMIT_CHUNK) {
        commit_upserts(tx, chunk, &mut customers).await?;
    }
    customers.apply(tx).await?;

    // Events, then their outbox rows, a chunk at a time.
    let mut ids = Vec::with_capacity(rec.events.len());
    let mut events = rec.events.iter();
    loop {
        let chunk: Vec<EventRef<'_>> = events.by_ref().take(COMMIT_CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        ids.extend(commit_events(tx, &chunk, at).await?);
    }
    Ok(ids)
}

/// One chunk of a poll's events and their outbox rows; the ids assigned, in order.
async fn commit_events(tx: &mut dyn Tx, chunk: &[EventRef<'_>], at: i64) -> Result<Vec<i64>> {
    let mut rows = Vec::with_capacity(chunk.len());
    for e in chunk {
        let c = &e.change;
        rows.push(vec![
            ms(c.at).into(),
            e.source.as_str().into(),
            c.kind.name().into(),
            c.connection_id.clone().into(),
            (&c.provider).into(),
            serde_json::to_string(c)
                .map_err(|e| bad_row(tx, "event", e))?
                .into(),
        ]);
    }
    let ids = insert_many(
        tx,
        "events",
        &["at", "source", "event", "connection_id", "provider", "body"],
        rows,
        "RETURNING id",
    )
    .await?;
    if ids.len() != chunk.len() {
        return Err(StoreError::Database {
            store: tx.store_name().to_owned(),
            detail: format!("{} events written, {} ids returned", chunk.len(), ids.len()),
        });
    }
    let mut outbox = Vec::new();
    for (e, id) in chunk.iter().zip(&ids) {
        for sink in e.notify {
            outbox.push(vec![
                (*id).into(),
                sink.into(),
                DeliveryState::Pending.as_str().into(),
                0i64.into(),
                at.into(),
                at.into(),
            ]);
        }
    }
    insert_many(
        tx,
        "outbox",
        &[
            "event_id",
            "sink",
            "state",
            "attempts",
            "next_ms",
            "updated_ms",
        ],
        outbox,
        "",
    )
    .await?;
    Ok(ids)
}

/// Rows a commit builds at a time (connections with their JSON bodies, events), so that its
/// memory is bounded whatever the poll's size.
const COMMIT_CHUNK: usize = 500;

/// A status's rank in [`Status::ALL`] (what `customers.worst` holds).
fn rank_of(s: Status) -> i64 {
    Status::ALL.iter().position(|x| *x == s).unwrap_or(0) as i64
}

/// What one commit does to customers' worst statuses (provider, customer id). A connection
/// that appeared, or whose status ranks the same or higher than before, can only raise its
/// customer's worst (`raise`: kept as the greater of the two, no read); one that ranks lower,
/// left its customer or was removed may lower it (`recount`: counted again from
/// `connections`, through `connections_group` alone). In the poll's transaction, so the
/// table never disagrees with the connections a reader sees.
#[derive(Default)]
struct CustomerUpkeep {
    raise: BTreeMap<(String, String), i64>,
    recount: BTreeSet<(String, String)>,
}

impl CustomerUpkeep {
    fn raise(&mut self, key: (String, String), rank: i64) {
        let e = self.raise.entry(key).or_insert(rank);
        *e = (*e).max(rank);
    }

    async fn apply(self, tx: &mut dyn Tx) -> Result<()> {
        let greatest = match tx.dialect() {
            crate::db::Dialect::Sqlite => "MAX",
            crate::db::Dialect::Postgres => "GREATEST",
        };
        let rows: Vec<Vec<V>> = self
            .raise
            .into_iter()
            .filter(|(k, _)| !self.recount.contains(k))
            .map(|((p, c), rank)| vec![p.into(), c.into(), rank.into()])
            .collect();
        insert_many(
            tx,
            "customers",
            &["provider", "customer_id", "worst"],
            rows,
            &format!(
                "ON CONFLICT (provider, customer_id) DO UPDATE SET \
                 worst = {greatest}(customers.worst, excluded.worst)"
            ),
        )
        .await?;
        let mut by_provider: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (p, c) in self.recount {
            by_provider.entry(p).or_default().push(c);
        }
        for (provider, ids) in by_provider {
            for chunk in ids.chunks(COMMIT_CHUNK) {
                let list = in_list("customer_id", chunk.len(), 2);
                let mut params: Vec<V> = vec![(&provider).into()];
                params.extend(chunk.iter().map(V::from));
                tx.exec(
                    &format!("DELETE FROM customers WHERE provider = $1 AND {list}"),
                    &params,
                )
                .await?;
                tx.exec(
                    &format!(
                        "INSERT INTO customers (provider, customer_id, worst) \
                         SELECT provider, customer_id, MAX({}) FROM connections \
                         WHERE provider = $1 AND {list} GROUP BY provider, customer_id",
                        rank_sql()
                    ),
                    &params,
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// One chunk of a poll's upserts: connections, their spans and incidents; what they do to
/// their customers' worst statuses goes into `customers`.
async fn commit_upserts(
    tx: &mut dyn Tx,
    chunk: &[Tracked],
    customers: &mut CustomerUpkeep,
) -> Result<()> {
    let mut prev: HashMap<String, (i64, Option<i64>)> = HashMap::new();
    // Each known connection's customer and status rank before this commit.
    let mut before: HashMap<String, ((String, String), Option<i64>)> = HashMap::new();
    let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT id, class, incident_since, provider, customer_id, status FROM connections \
         WHERE id IN ({})",
        marks.join(",")
    );
    let params: Vec<V> = chunk.iter().map(|t| V::from(&t.connection.id)).collect();
    for r in tx.query(&sql, &params).await? {
        let id = r[0].text().unwrap_or_default().to_owned();
        prev.insert(id.clone(), (r[1].int().unwrap_or(GOOD), r[2].int()));
        let key = (
            r[3].text().unwrap_or_default().to_owned(),
            r[4].text().unwrap_or_default().to_owned(),
        );
        let rank = r[5].text().and_then(|s| s.parse().ok()).map(rank_of);
        before.insert(id, (key, rank));
    }
    for t in chunk {
        let c = &t.connection;
        let key = (c.provider.clone(), c.customer.id.clone());
        let rank = rank_of(c.status);
        match before.remove(&c.id) {
            None => customers.raise(key, rank),
            Some((old, old_rank)) => {
                if old != key {
                    customers.recount.insert(old);
                    customers.raise(key, rank);
                } else {
                    match old_rank {
                        Some(o) if o == rank => {}
                        Some(o) if o < rank => customers.raise(key, rank),
                        _ => {
                            customers.recount.insert(key);
                        }
                    }
                }
            }
        }
    }
    let mut rows = Vec::with_capacity(chunk.len());
    let mut new_spans = Vec::new();
    let mut new_incidents = Vec::new();
    for t in chunk {
        let c = &t.connection;
        let cls = class(c.status);
        let since = ms(t.since);
        let mut incident = prev.get(&c.id).and_then(|p| p.1);
        match prev.get(&c.id) {
            Some((old, _)) if *old == cls => {}
            Some(_) => {
                tx.exec(
                    "UPDATE spans SET stop_ms = $2 WHERE connection_id = $1 AND stop_ms IS NULL",
                    &[(&c.id).into(), since.into()],
                )
                .await?;
                new_spans.push(span_row(c, cls, since));
            }
            None => new_spans.push(span_row(c, cls, since)),
        }
        if cls == BAD && incident.is_none() {
            incident = Some(since);
            new_incidents.push(vec![
                (&c.id).into(),
                (&c.provider).into(),
                (&c.customer.id).into(),
                since.into(),
            ]);
        } else if cls == GOOD && incident.is_some() {
            tx.exec(
                "UPDATE incidents SET stop_ms = $2 WHERE connection_id = $1 AND stop_ms IS NULL",
                &[(&c.id).into(), since.into()],
            )
            .await?;
            incident = None;
        }
        let body = serde_json::to_string(&**c).map_err(|e| bad_row(tx, "connection", e))?;
        rows.push(vec![
            (&c.id).into(),
            (&c.provider).into(),
            (&c.customer.id).into(),
            (&c.platform).into(),
            c.status.as_str().into(),
            i64::from(c.status.severity()).into(),
            since.into(),
            i64::from(t.streak).into(),
            t.worsening.into(),
            search_text(c).into(),
            cls.into(),
            incident.into(),
            body.into(),
        ]);
    }
    insert_many(
        tx,
        "connections",
        &[
            "id",
            "provider",
            "customer_id",
            "platform",
            "status",
            "severity",
            "since",
            "streak",
            "worsening",
            "search",
            "class",
            "incident_since",
            "body",
        ],
        rows,
        "ON CONFLICT (id) DO UPDATE SET provider = excluded.provider, \
         customer_id = excluded.customer_id, platform = excluded.platform, \
         status = excluded.status, severity = excluded.severity, since = excluded.since, \
         streak = excluded.streak, worsening = excluded.worsening, search = excluded.search, \
         class = excluded.class, incident_since = excluded.incident_since, body = excluded.body",
    )
    .await?;
    insert_many(
        tx,
        "spans",
        &[
            "connection_id",
            "provider",
            "customer_id",
            "class",
            "start_ms",
        ],
        new_spans,
        "",
    )
    .await?;
    insert_many(
        tx,
        "incidents",
        &["connection_id", "provider", "customer_id", "start_ms"],
        new_incidents,
        "",
    )
    .await?;
    Ok(())
}

fn span_row(c: &Connection, cls: i64, start: i64) -> Vec<V> {
    vec![
        (&c.id).into(),
        (&c.provider).into(),
        (&c.customer.id).into(),
        cls.into(),
        start.into(),
    ]
}

/// Seconds of each class per hour, for one key.
type Buckets = BTreeMap<i64, [i64; 3]>;

/// Milliseconds of `[s, e)` spent inside any of `outages` (which do not overlap).
fn outage_ms(s: i64, e: i64, outages: &[(i64, i64)]) -> i64 {
    outages
        .iter()
        .map(|(os, oe)| (e.min(*oe) - s.max(*os)).max(0))
        .sum::<i64>()
        .min(e - s)
}

/// Add the span `[s, e)` of class `cls` to `secs`: its outage time counts as unknown.
fn add_span(secs: &mut [i64; 3], cls: usize, s: i64, e: i64, outages: &[(i64, i64)]) {
    if e <= s {
        return;
    }
    let out = outage_ms(s, e, outages);
    secs[cls.min(2)] += (e - s - out) / 1000;
    secs[UNKNOWN as usize] += out / 1000;
}

/// Provider outages overlapping `[a, b)`, clipped to it.
async fn outages_in(tx: &mut dyn Tx, a: i64, b: i64) -> Result<HashMap<String, Vec<(i64, i64)>>> {
    let mut outages: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    for r in tx
        .query(
            "SELECT provider, start_ms, stop_ms FROM outages \
             WHERE start_ms < $2 AND (stop_ms IS NULL OR stop_ms > $1)",
            &[a.into(), b.into()],
        )
        .await?
    {
        outages
            .entry(r[0].text().unwrap_or_default().to_owned())
            .or_default()
            .push((
                r[1].int().unwrap_or(a).max(a),
                r[2].int().unwrap_or(b).min(b),
            ));
    }
    Ok(outages)
}

/// Roll hours `[from, to)` (hour numbers since the epoch) up from the status spans and the
/// provider outages: one row per provider and hour. (Customers and connections are answered
/// from the spans themselves: one row per status-class change, exact, and far smaller than
/// hourly rows for connections that stay bad for weeks.)
async fn rollup(tx: &mut dyn Tx, from: i64, to: i64) -> Result<()> {
    let (a, b) = (from * HOUR_MS, to * HOUR_MS);
    let outages = outages_in(tx, a, b).await?;
    let spans = tx
        .query(
            "SELECT provider, class, start_ms, stop_ms FROM spans \
             WHERE start_ms < $2 AND (stop_ms IS NULL OR stop_ms > $1)",
            &[a.into(), b.into()],
        )
        .await?;
    let mut per_provider: HashMap<String, Buckets> = HashMap::new();
    let none = Vec::new();
    for r in &spans {
        let Some(provider) = r[0].text() else {
            continue;
        };
        let cls = r[1].int().unwrap_or(UNKNOWN) as usize;
        let start = r[2].int().unwrap_or(a).max(a);
        let stop = r[3].int().unwrap_or(b).min(b);
        let out = outages.get(provider).unwrap_or(&none);
        let pb = per_provider.entry(provider.to_owned()).or_default();
        let mut h = start.div_euclid(HOUR_MS);
        while h * HOUR_MS < stop {
            let (hs, he) = ((h * HOUR_MS).max(start), ((h + 1) * HOUR_MS).min(stop));
            add_span(pb.entry(h).or_default(), cls, hs, he, out);
            h += 1;
        }
    }
    let mut rows = Vec::new();
    for (p, buckets) in per_provider {
        for (h, s) in buckets {
            rows.push(vec![
                "p".into(),
                (&p).into(),
                h.into(),
                s[0].into(),
                s[1].into(),
                s[2].into(),
            ]);
        }
    }
    insert_many(
        tx,
        "rollups",
        &["scope", "key", "hour", "good", "bad", "unknown"],
        rows,
        "ON CONFLICT (scope, key, hour) DO UPDATE SET good = rollups.good + excluded.good, \
         bad = rollups.bad + excluded.bad, unknown = rollups.unknown + excluded.unknown",
    )
    .await?;
    Ok(())
}

fn decode_event(tx: &dyn Tx, r: &Row) -> Result<StoredEvent> {
    let id = r[0].int().ok_or_else(|| bad_row(tx, "event", "no id"))?;
    let source = r[1]
        .text()
        .and_then(Source::parse)
        .ok_or_else(|| bad_row(tx, "event", "unknown source"))?;
    let change: Change = serde_json::from_str(r[2].text().unwrap_or_default())
        .map_err(|e| bad_row(tx, "event", e))?;
    Ok(StoredEvent { id, source, change })
}

pub(crate) async fn last_event_id(tx: &mut dyn Tx) -> Result<i64> {
    Ok(
        query_one(tx, "SELECT COALESCE(MAX(id), 0) FROM events", &[])
            .await?
            .and_then(|r| r[0].int())
            .unwrap_or(0),
    )
}

pub(crate) async fn events_after(tx: &mut dyn Tx, after: i64, limit: usize) -> Result<EventPage> {
    let rows = tx
        .query(
            "SELECT id, source, body FROM events WHERE id > $1 ORDER BY id LIMIT $2",
            &[after.into(), (limit as i64).into()],
        )
        .await?;
    let items = rows
        .iter()
        .map(|r| decode_event(tx, r))
        .collect::<Result<Vec<_>>>()?;
    let next = Some(items.last().map(|e| e.id).unwrap_or(after));
    Ok(EventPage { items, next })
}

pub(crate) async fn history(
    tx: &mut dyn Tx,
    connection_id: &str,
    before: Option<i64>,
    limit: usize,
) -> Result<EventPage> {
    let rows = tx
        .query(
            "SELECT id, source, body FROM events WHERE connection_id = $1 AND id < $2 \
             ORDER BY id DESC LIMIT $3",
            &[
                connection_id.into(),
                before.unwrap_or(i64::MAX).into(),
                (limit as i64 + 1).into(),
            ],
        )
        .await?;
    let mut items = rows
        .iter()
        .map(|r| decode_event(tx, r))
        .collect::<Result<Vec<_>>>()?;
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more {
        items.last().map(|e| e.id)
    } else {
        None
    };
    Ok(EventPage { items, next })
}

/// `WHERE a AND b …`, or nothing without conditions.
fn where_sql(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    }
}

fn in_list(col: &str, n: usize, first: usize) -> String {
    let marks: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
    format!("{col} IN ({})", marks.join(","))
}

/// `WHERE …` and its parameters for a connection filter.
fn connection_where(f: &ConnectionFilter) -> (Vec<String>, Vec<V>) {
    let mut conds = Vec::new();
    let mut params: Vec<V> = Vec::new();
    if !f.status.is_empty() {
        conds.push(in_list("status", f.status.len(), params.len() + 1));
        params.extend(f.status.iter().map(|s| V::from(s.as_str())));
    }
    if !f.provider.is_empty() {
        conds.push(in_list("provider", f.provider.len(), params.len() + 1));
        params.extend(f.provider.iter().map(V::from));
    }
    if !f.customer.is_empty() {
        let n = f.customer.len();
        let a = in_list("customer_id", n, params.len() + 1);
        params.extend(f.customer.iter().map(V::from));
        let b = in_list("(provider || ':' || customer_id)", n, params.len() + 1);
        params.extend(f.customer.iter().map(V::from));
        conds.push(format!("({a} OR {b})"));
    }
    if let Some(q) = f.q.as_deref().filter(|q| !q.is_empty()) {
        let esc = q
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        conds.push(format!("search LIKE ${} ESCAPE '\\'", params.len() + 1));
        params.push(format!("%{esc}%").into());
    }
    (conds, params)
}

/// One stored connection by its exact id.
pub(crate) async fn connection(tx: &mut dyn Tx, id: &str) -> Result<Option<ConnectionItem>> {
    let Some(r) = query_one(
        tx,
        "SELECT body, since FROM connections WHERE id = $1",
        &[id.into()],
    )
    .await?
    else {
        return Ok(None);
    };
    let connection: Connection = serde_json::from_str(r[0].text().unwrap_or_default())
        .map_err(|e| bad_row(tx, "connection", e))?;
    Ok(Some(ConnectionItem {
        connection,
        since: time(r[1].int().unwrap_or_default()),
        customer_status: None,
    }))
}

/// Cursor: `{severity}~{id}` of the last item.
fn parse_cursor(c: &str) -> Result<(i64, String)> {
    let bad = || StoreError::Invalid(format!("cursor {c:?} is not one this store issued"));
    let (s, id) = c.split_once('~').ok_or_else(bad)?;
    Ok((s.parse().map_err(|_| bad())?, id.to_owned()))
}

pub(crate) async fn connections(
    tx: &mut dyn Tx,
    f: &ConnectionFilter,
    cursor: Option<&str>,
    limit: usize,
) -> Result<ConnectionPage> {
    let (mut conds, mut params) = connection_where(f);
    let total_sql = if conds.is_empty() {
        "SELECT COUNT(*) FROM connections".to_owned()
    } else {
        format!(
            "SELECT COUNT(*) FROM connections WHERE {}",
            conds.join(" AND ")
        )
    };
    let total = query_one(tx, &total_sql, &params)
        .await?
        .and_then(|r| r[0].int())
        .unwrap_or(0) as u64;
    if let Some(c) = cursor {
        let (sev, id) = parse_cursor(c)?;
        let n = params.len();
        conds.push(format!(
            "(severity < ${} OR (severity = ${} AND id > ${}))",
            n + 1,
            n + 1,
            n + 2
        ));
        params.push(sev.into());
        params.push(id.into());
    }
    let sql = format!(
        "SELECT body, since, severity, id FROM connections {} ORDER BY severity DESC, id LIMIT ${}",
        where_sql(&conds),
        params.len() + 1
    );
    params.push((limit as i64 + 1).into());
    let rows = tx.query(&sql, &params).await?;
    let more = rows.len() > limit;
    let mut items = Vec::new();
    let mut last = None;
    for r in rows.iter().take(limit) {
        let connection: Connection = serde_json::from_str(r[0].text().unwrap_or_default())
            .map_err(|e| bad_row(tx, "connection", e))?;
        items.push(ConnectionItem {
            connection,
            since: time(r[1].int().unwrap_or_default()),
            customer_status: None,
        });
        last = Some((
            r[2].int().unwrap_or_default(),
            r[3].text().unwrap_or_default().to_owned(),
        ));
    }
    let next_cursor = if more {
        last.map(|(s, id)| format!("{s}~{id}"))
    } else {
        None
    };
    Ok(ConnectionPage {
        items,
        next_cursor,
        total,
    })
}

/// SQL for a status's rank in [`Status::ALL`] (least to most severe): the order a
/// customer's worst status is taken in (`customers.worst`, schema migration 5).
pub(crate) fn rank_sql() -> String {
    let arms: Vec<String> = Status::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| format!("WHEN '{}' THEN {i}", s.as_str()))
        .collect();
    format!("CASE status {} ELSE 0 END", arms.join(" "))
}

/// A grouped cursor: `g` + the JSON `[customer rank, provider, customer id, severity, id]`
/// of the last item.
fn parse_group_cursor(c: &str) -> Result<GroupCursor> {
    let bad = || StoreError::Invalid(format!("cursor {c:?} is not one this store issued"));
    let json = c.strip_prefix('g').ok_or_else(bad)?;
    serde_json::from_str(json).map_err(|_| bad())
}

/// A grouped cursor's parts: customer rank, provider, customer id, severity, id.
type GroupCursor = (i64, String, String, i64, String);

/// [`crate::Store::connections_by_customer`]: customers worst first (their worst status among
/// the matching connections), then by `{provider}:{customer_id}`; within a customer, worst
/// first then by id.
///
/// Three ways to the same order, by filter: without a status or search filter every
/// connection of a matching customer matches, so its worst status is the kept
/// `customers.worst` and the page walks `customers_order`; with one status every match ranks
/// the same, so the page is a range of `connections_status_group`; any other filter ranks the
/// matching rows with a window function (a scan of the matches).
pub(crate) async fn connections_by_customer(
    tx: &mut dyn Tx,
    f: &ConnectionFilter,
    cursor: Option<&str>,
    limit: usize,
) -> Result<ConnectionPage> {
    let (conds, params) = connection_where(f);
    let wh = where_sql(&conds);
    let total = query_one(
        tx,
        &format!("SELECT COUNT(*) FROM connections {wh}"),
        &params,
    )
    .await?
    .and_then(|r| r[0].int())
    .unwrap_or(0) as u64;
    let cursor = cursor.map(parse_group_cursor).transpose()?;
    let no_search = f.q.as_deref().is_none_or(str::is_empty);
    // Rows as [body, since, customer rank, provider, customer_id, severity, id], up to limit+1.
    let rows = if f.status.is_empty() && no_search {
        grouped_by_kept_rank(tx, f, cursor.as_ref(), limit).await?
    } else if no_search && f.status.iter().all(|s| *s == f.status[0]) {
        grouped_one_status(tx, f, cursor.as_ref(), limit).await?
    } else {
        grouped_by_window(tx, &wh, params, cursor.as_ref(), limit).await?
    };
    let more = rows.len() > limit;
    let mut items = Vec::new();
    let mut last = None;
    for r in rows.iter().take(limit) {
        let connection: Connection = serde_json::from_str(r[0].text().unwrap_or_default())
            .map_err(|e| bad_row(tx, "connection", e))?;
        let cs = r[2].int().unwrap_or_default();
        items.push(ConnectionItem {
            connection,
            since: time(r[1].int().unwrap_or_default()),
            customer_status: usize::try_from(cs)
                .ok()
                .and_then(|i| Status::ALL.get(i).copied()),
        });
        last = Some((
            cs,
            r[3].text().unwrap_or_default().to_owned(),
            r[4].text().unwrap_or_default().to_owned(),
            r[5].int().unwrap_or_default(),
            r[6].text().unwrap_or_default().to_owned(),
        ));
    }
    let next_cursor = match (more, last) {
        (true, Some(l)) => Some(format!(
            "g{}",
            serde_json::to_string(&l).map_err(|e| StoreError::Invalid(e.to_string()))?
        )),
        _ => None,
    };
    Ok(ConnectionPage {
        items,
        next_cursor,
        total,
    })
}

/// The grouped order when every connection of a matching customer matches (provider and
/// customer filters only): customers from `customers_order` (a batch of `limit + 1` at a
/// time: each has a connection, so one batch nearly always fills the page), then each
/// customer's connections worst first.
async fn grouped_by_kept_rank(
    tx: &mut dyn Tx,
    f: &ConnectionFilter,
    cursor: Option<&GroupCursor>,
    limit: usize,
) -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::new();
    // Where the next batch of customers starts, and whether that customer is included (the
    // cursor's own customer may have connections left after the cursor's).
    let mut from: Option<(i64, String, String, bool)> =
        cursor.map(|(cs, p, c, _, _)| (*cs, p.clone(), c.clone(), true));
    loop {
        let (mut conds, mut params) = connection_where(f);
        if let Some((cs, p, c, inclusive)) = &from {
            let n = params.len();
            let op = if *inclusive { ">=" } else { ">" };
            conds.push(format!(
                "(worst < ${a} OR (worst = ${a} AND (provider > ${b} OR \
                 (provider = ${b} AND customer_id {op} ${c}))))",
                a = n + 1,
                b = n + 2,
                c = n + 3,
            ));
            params.extend([(*cs).into(), p.into(), c.into()]);
        }
        let sql = format!(
            "SELECT worst, provider, customer_id FROM customers {} \
             ORDER BY worst DESC, provider, customer_id LIMIT ${}",
            where_sql(&conds),
            params.len() + 1
        );
        params.push((limit as i64 + 1).into());
        let batch = tx.query(&sql, &params).await?;
        for k in &batch {
            let worst = k[0].int().unwrap_or_default();
            let provider = k[1].text().unwrap_or_default().to_owned();
            let customer = k[2].text().unwrap_or_default().to_owned();
            let mut params: Vec<V> = vec![(&provider).into(), (&customer).into()];
            let mut within = String::new();
            if let Some((cs, p, c, sev, id)) = cursor {
                if (*cs, p, c) == (worst, &provider, &customer) {
                    within = "AND (severity < $3 OR (severity = $3 AND id > $4)) ".into();
                    params.extend([(*sev).into(), id.into()]);
                }
            }
            params.push(((limit + 1 - rows.len()) as i64).into());
            let sql = format!(
                "SELECT body, since, provider, customer_id, severity, id FROM connections \
                 WHERE provider = $1 AND customer_id = $2 {within}\
                 ORDER BY severity DESC, id LIMIT ${}",
                params.len()
            );
            for mut r in tx.query(&sql, &params).await? {
                r.insert(2, V::Int(worst));
                rows.push(r);
            }
            if rows.len() > limit {
                return Ok(rows);
            }
        }
        match batch.last() {
            Some(k) if batch.len() > limit => {
                from = Some((
                    k[0].int().unwrap_or_default(),
                    k[1].text().unwrap_or_default().to_owned(),
                    k[2].text().unwrap_or_default().to_owned(),
                    false,
                ));
            }
            _ => return Ok(rows),
        }
    }
}

/// The grouped order under a one-status filter: every match ranks as that status and has
/// its severity, so the order is `provider, customer_id, id`, a range of
/// `connections_status_group`.
async fn grouped_one_status(
    tx: &mut dyn Tx,
    f: &ConnectionFilter,
    cursor: Option<&GroupCursor>,
    limit: usize,
) -> Result<Vec<Row>> {
    let status = f.status[0];
    let cs = Status::ALL.iter().position(|s| *s == status).unwrap_or(0) as i64;
    let one = ConnectionFilter {
        status: Vec::new(),
        ..f.clone()
    };
    let (mut conds, mut params) = connection_where(&one);
    // Placeholders are numbered in order of first use (SQLite's reading of `$N`).
    conds.push(format!("status = ${}", params.len() + 1));
    params.push(status.as_str().into());
    if let Some((_, p, c, _, id)) = cursor {
        let n = params.len();
        conds.push(format!(
            "(provider, customer_id, id) > (${}, ${}, ${})",
            n + 1,
            n + 2,
            n + 3
        ));
        params.extend([p.into(), c.into(), id.into()]);
    }
    let sql = format!(
        "SELECT body, since, provider, customer_id, severity, id FROM connections WHERE {} \
         ORDER BY provider, customer_id, id LIMIT ${}",
        conds.join(" AND "),
        params.len() + 1
    );
    params.push((limit as i64 + 1).into());
    let mut rows = tx.query(&sql, &params).await?;
    for r in &mut rows {
        r.insert(2, V::Int(cs));
    }
    Ok(rows)
}

/// The grouped order for any filter: the matching rows ranked by a window function.
async fn grouped_by_window(
    tx: &mut dyn Tx,
    wh: &str,
    mut params: Vec<V>,
    cursor: Option<&GroupCursor>,
    limit: usize,
) -> Result<Vec<Row>> {
    let mut outer = String::new();
    if let Some((cs, provider, customer, sev, id)) = cursor {
        let n = params.len();
        let (a, b, cc, d, e) = (n + 1, n + 2, n + 3, n + 4, n + 5);
        outer = format!(
            "WHERE (cs < ${a} OR (cs = ${a} AND (provider > ${b} OR (provider = ${b} AND \
             (customer_id > ${cc} OR (customer_id = ${cc} AND (severity < ${d} OR \
             (severity = ${d} AND id > ${e})))))))) "
        );
        params.extend([
            (*cs).into(),
            provider.into(),
            customer.into(),
            (*sev).into(),
            id.into(),
        ]);
    }
    // The order is decided on narrow rows (no body), the page's bodies read afterwards by id:
    // sorting every matching row with its JSON body is what costs.
    let sql = format!(
        "SELECT c.body, c.since, t.cs, t.provider, t.customer_id, t.severity, t.id FROM (\
         SELECT cs, provider, customer_id, severity, id FROM (\
         SELECT provider, customer_id, severity, id, \
         MAX({rank}) OVER (PARTITION BY provider, customer_id) AS cs FROM connections {wh}\
         ) w {outer}ORDER BY cs DESC, provider, customer_id, severity DESC, id LIMIT ${}\
         ) t JOIN connections c ON c.id = t.id \
         ORDER BY t.cs DESC, t.provider, t.customer_id, t.severity DESC, t.id",
        params.len() + 1,
        rank = rank_sql(),
    );
    params.push((limit as i64 + 1).into());
    tx.query(&sql, &params).await
}

/// [`crate::Store::timelines`]: the status changes (`appeared`, `status_changed`) of these
/// connections at or after `from`, oldest first, by connection id.
pub(crate) async fn timelines(
    tx: &mut dyn Tx,
    ids: &[String],
    from: DateTime<Utc>,
) -> Result<HashMap<String, Vec<TimelinePoint>>> {
    let mut out: HashMap<String, Vec<TimelinePoint>> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let mut params: Vec<V> = vec![from.timestamp_millis().into()];
    let list = in_list("connection_id", ids.len(), 2);
    params.extend(ids.iter().map(V::from));
    let sql = format!(
        "SELECT connection_id, body FROM events WHERE at >= $1 AND {list} \
         AND event IN ('appeared', 'status_changed') ORDER BY connection_id, id"
    );
    for r in tx.query(&sql, &params).await? {
        let change: Change = serde_json::from_str(r[1].text().unwrap_or_default())
            .map_err(|e| bad_row(tx, "event", e))?;
        let (from, to) = match change.kind {
            connhealth_core::ChangeKind::Appeared { status } => (None, status),
            connhealth_core::ChangeKind::StatusChanged { from, to } => (Some(from), to),
            _ => continue,
        };
        out.entry(r[0].text().unwrap_or_default().to_owned())
            .or_default()
            .push(TimelinePoint {
                at: change.at,
                from,
                to,
            });
    }
    Ok(out)
}

/// [`crate::Store::last_webhooks`]: per provider, when its latest accepted webhook arrived.
pub(crate) async fn last_webhooks(tx: &mut dyn Tx) -> Result<BTreeMap<String, DateTime<Utc>>> {
    let rows = tx
        .query(
            "SELECT provider, MAX(received_ms) FROM webhooks GROUP BY provider",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r[0].text()?.to_owned(), time(r[1].int()?))))
        .collect())
}

#[derive(Default)]
struct Acc {
    secs: [i64; 3],
    incidents: i64,
    ended: i64,
    repair_ms: i64,
}

pub(crate) async fn uptime(tx: &mut dyn Tx, q: &UptimeQuery) -> Result<UptimeReport> {
    let to_h = meta_get(tx, "rollup_until_hour").await?.unwrap_or(0);
    let from_h = to_h - q.window.hours();
    let (a, b) = (from_h * HOUR_MS, to_h * HOUR_MS);
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    let provider_ok = |p: &str| q.provider.is_empty() || q.provider.iter().any(|x| x == p);
    let customer_ok = |p: &str, c: &str| {
        q.customer.is_empty()
            || q.customer
                .iter()
                .any(|x| x == c || x.split_once(':') == Some((p, c)))
    };
    let key_of = |p: &str, c: &str, id: &str| match q.by {
        GroupBy::Provider => p.to_owned(),
        GroupBy::Customer => format!("{p}:{c}"),
        GroupBy::Connection => id.to_owned(),
    };
    if q.by == GroupBy::Provider && q.customer.is_empty() {
        // Dense per-provider roll-ups: a handful of rows per hour.
        for r in tx
            .query(
                "SELECT key, CAST(SUM(good) AS BIGINT), CAST(SUM(bad) AS BIGINT), CAST(SUM(unknown) AS BIGINT) FROM rollups \
                 WHERE scope = 'p' AND hour >= $1 AND hour < $2 GROUP BY key",
                &[from_h.into(), to_h.into()],
            )
            .await?
        {
            let k = r[0].text().unwrap_or_default();
            if provider_ok(k) {
                let e = acc.entry(k.to_owned()).or_default();
                for i in 0..3 {
                    e.secs[i] = r[1 + i].int().unwrap_or_default();
                }
            }
        }
    } else {
        // Customers and connections: from the status spans (exact), minus provider outages.
        let outages = outages_in(tx, a, b).await?;
        let none = Vec::new();
        for r in tx
            .query(
                "SELECT connection_id, provider, customer_id, class, start_ms, stop_ms FROM spans \
                 WHERE start_ms < $2 AND (stop_ms IS NULL OR stop_ms > $1)",
                &[a.into(), b.into()],
            )
            .await?
        {
            let (id, p, c) = (
                r[0].text().unwrap_or_default(),
                r[1].text().unwrap_or_default(),
                r[2].text().unwrap_or_default(),
            );
            if !provider_ok(p) || !customer_ok(p, c) {
                continue;
            }
            let cls = r[3].int().unwrap_or(UNKNOWN) as usize;
            let (s, e) = (
                r[4].int().unwrap_or(a).max(a),
                r[5].int().unwrap_or(b).min(b),
            );
            let e_acc = acc.entry(key_of(p, c, id)).or_default();
            add_span(&mut e_acc.secs, cls, s, e, outages.get(p).unwrap_or(&none));
        }
    }
    for r in tx
        .query(
            "SELECT connection_id, provider, customer_id, start_ms, stop_ms FROM incidents \
             WHERE start_ms >= $1 AND start_ms < $2",
            &[a.into(), b.into()],
        )
        .await?
    {
        let (id, p, c) = (
            r[0].text().unwrap_or_default(),
            r[1].text().unwrap_or_default(),
            r[2].text().unwrap_or_default(),
        );
        if !provider_ok(p) || !customer_ok(p, c) {
            continue;
        }
        let e = acc.entry(key_of(p, c, id)).or_default();
        e.incidents += 1;
        if let (Some(s), Some(t)) = (r[3].int(), r[4].int()) {
            e.ended += 1;
            e.repair_ms += t - s;
        }
    }
    let items = acc
        .into_iter()
        .map(|(key, e)| {
            let [good, bad, unknown] = e.secs;
            UptimeItem {
                key,
                uptime: (good + bad > 0).then(|| good as f64 / (good + bad) as f64),
                good_seconds: good,
                bad_seconds: bad,
                unknown_seconds: unknown,
                incidents: e.incidents,
                mttr_seconds: (e.ended > 0).then(|| e.repair_ms as f64 / 1000.0 / e.ended as f64),
            }
        })
        .collect();
    Ok(UptimeReport {
        window: q.window,
        from: time(a),
        to: time(b),
        items,
    })
}

pub(crate) async fn outcomes(tx: &mut dyn Tx, limit: usize) -> Result<Vec<StoredOutcome>> {
    let rows = tx
        .query(
            "SELECT at, body FROM poll_outcomes ORDER BY id DESC LIMIT $1",
            &[(limit as i64).into()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(StoredOutcome {
                at: time(r[0].int().unwrap_or_default()),
                outcome: serde_json::from_str(r[1].text().unwrap_or_default())
                    .map_err(|e| bad_row(tx, "outcome", e))?,
            })
        })
        .collect()
}

pub(crate) async fn prune(tx: &mut dyn Tx, r: Retention, now: DateTime<Utc>) -> Result<PruneStats> {
    let now = ms(now);
    let raw = now - i64::from(r.retention_days) * 24 * HOUR_MS;
    let long = now - i64::from(r.rollup_days) * 24 * HOUR_MS;
    let mut stats = PruneStats::default();
    let jobs: [(&str, &str, i64); 9] = [
        ("events", "DELETE FROM events WHERE at < $1", raw),
        ("poll_outcomes", "DELETE FROM poll_outcomes WHERE at < $1", raw),
        ("webhooks", "DELETE FROM webhooks WHERE received_ms < $1", raw),
        ("work", "DELETE FROM work WHERE done_ms IS NOT NULL AND done_ms < $1", raw),
        (
            "outbox",
            "DELETE FROM outbox WHERE state <> 'pending' AND state <> 'delivering' AND updated_ms < $1",
            raw,
        ),
        ("rollups", "DELETE FROM rollups WHERE hour < $1", long / HOUR_MS),
        ("spans", "DELETE FROM spans WHERE stop_ms IS NOT NULL AND stop_ms < $1", long),
        ("incidents", "DELETE FROM incidents WHERE stop_ms IS NOT NULL AND stop_ms < $1", long),
        ("audit", "DELETE FROM audit WHERE at < $1", long),
    ];
    for (table, sql, cutoff) in jobs {
        let n = tx.exec(sql, &[cutoff.into()]).await?;
        stats.removed.insert(table.to_owned(), n);
    }
    // A relayed action's answer nobody read within an hour (the follower gave up waiting) may
    // hold a connect link: it is not kept with the item.
    tx.exec(
        "UPDATE work SET result = NULL WHERE result IS NOT NULL AND done_ms < $1",
        &[(now - HOUR_MS).into()],
    )
    .await?;
    Ok(stats)
}

pub(crate) async fn accept_webhook(
    tx: &mut dyn Tx,
    provider: &str,
    event_id: &str,
    work: Option<NewWork>,
    now: DateTime<Utc>,
) -> Result<WebhookAccept> {
    let n = tx
        .exec(
            "INSERT INTO webhooks (provider, event_id, received_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (provider, event_id) DO NOTHING",
            &[provider.into(), event_id.into(), ms(now).into()],
        )
        .await?;
    if n == 0 {
        return Ok(WebhookAccept::Duplicate);
    }
    let work_id = match work {
        Some(w) => Some(enqueue(tx, w, now).await?),
        None => None,
    };
    Ok(WebhookAccept::Accepted { work_id })
}

pub(crate) async fn accept_webhooks(
    tx: &mut dyn Tx,
    batch: Vec<NewWebhook>,
    now: DateTime<Utc>,
) -> Result<Vec<WebhookAccept>> {
    let mut out = Vec::with_capacity(batch.len());
    for w in batch {
        out.push(accept_webhook(tx, &w.provider, &w.event_id, w.work, now).await?);
    }
    Ok(out)
}

pub(crate) async fn webhook_seen(tx: &mut dyn Tx, provider: &str, event_id: &str) -> Result<bool> {
    Ok(query_one(
        tx,
        "SELECT 1 FROM webhooks WHERE provider = $1 AND event_id = $2",
        &[provider.into(), event_id.into()],
    )
    .await?
    .is_some())
}

pub(crate) async fn webhook_overview(tx: &mut dyn Tx) -> Result<WebhookOverview> {
    let pending = query_one(tx, "SELECT COUNT(*) FROM work WHERE done_ms IS NULL", &[])
        .await?
        .and_then(|r| r[0].int())
        .unwrap_or_default();
    let rows = tx
        .query(
            "SELECT provider, MAX(received_ms) FROM webhooks GROUP BY provider",
            &[],
        )
        .await?;
    let last_received = rows
        .iter()
        .filter_map(|r| Some((r[0].text()?.to_owned(), time(r[1].int()?))))
        .collect();
    Ok(WebhookOverview {
        pending_work: pending.max(0) as u64,
        last_received,
    })
}

pub(crate) async fn enqueue(tx: &mut dyn Tx, w: NewWork, now: DateTime<Utc>) -> Result<i64> {
    let row = query_one(
        tx,
        "INSERT INTO work (kind, provider, payload, created_ms, attempts) \
         VALUES ($1, $2, $3, $4, 0) RETURNING id",
        &[
            w.kind.into(),
            w.provider.into(),
            w.payload.to_string().into(),
            ms(now).into(),
        ],
    )
    .await?;
    row.and_then(|r| r[0].int())
        .ok_or_else(|| bad_row(tx, "work", "no id returned"))
}

pub(crate) async fn set_work_result(tx: &mut dyn Tx, id: i64, result: String) -> Result<bool> {
    Ok(tx
        .exec(
            "UPDATE work SET result = $2 WHERE id = $1",
            &[id.into(), result.into()],
        )
        .await?
        > 0)
}

pub(crate) async fn take_work_result(tx: &mut dyn Tx, id: i64) -> Result<WorkState> {
    let Some(row) = query_one(
        tx,
        "SELECT done_ms, result, last_error FROM work WHERE id = $1",
        &[id.into()],
    )
    .await?
    else {
        return Ok(WorkState::Unknown);
    };
    if row[0].int().is_none() {
        return Ok(WorkState::Pending {
            last_error: row[2].text().map(str::to_owned),
        });
    }
    let result = row[1].text().map(str::to_owned);
    if result.is_some() {
        tx.exec("UPDATE work SET result = NULL WHERE id = $1", &[id.into()])
            .await?;
    }
    Ok(WorkState::Done { result })
}

pub(crate) async fn claim_work(
    tx: &mut dyn Tx,
    holder: &str,
    limit: usize,
    now: DateTime<Utc>,
    lease: chrono::Duration,
) -> Result<Vec<WorkItem>> {
    let now_ms = ms(now);
    let rows = tx
        .query(
            "SELECT id, kind, provider, payload, created_ms, attempts, last_error FROM work \
             WHERE done_ms IS NULL AND (claimed_until_ms IS NULL OR claimed_until_ms <= $1) \
             ORDER BY id LIMIT $2",
            &[now_ms.into(), (limit as i64).into()],
        )
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let id = r[0].int().unwrap_or_default();
        tx.exec(
            "UPDATE work SET claimed_by = $2, claimed_until_ms = $3, attempts = attempts + 1 \
             WHERE id = $1",
            &[
                id.into(),
                holder.into(),
                (now_ms + lease.num_milliseconds()).into(),
            ],
        )
        .await?;
        out.push(WorkItem {
            id,
            work: NewWork {
                kind: r[1].text().unwrap_or_default().to_owned(),
                provider: r[2].text().unwrap_or_default().to_owned(),
                payload: serde_json::from_str(r[3].text().unwrap_or("null"))
                    .map_err(|e| bad_row(tx, "work", e))?,
            },
            created_at: time(r[4].int().unwrap_or_default()),
            attempts: r[5].int().unwrap_or_default() + 1,
            last_error: r[6].text().map(str::to_owned),
        });
    }
    Ok(out)
}

pub(crate) async fn finish_work(
    tx: &mut dyn Tx,
    id: i64,
    error: Option<String>,
    now: DateTime<Utc>,
) -> Result<()> {
    match error {
        None => {
            tx.exec(
                "UPDATE work SET done_ms = $2, last_error = NULL WHERE id = $1",
                &[id.into(), ms(now).into()],
            )
            .await?
        }
        Some(e) => {
            tx.exec(
                "UPDATE work SET claimed_by = NULL, claimed_until_ms = NULL, last_error = $2 \
                 WHERE id = $1",
                &[id.into(), e.into()],
            )
            .await?
        }
    };
    Ok(())
}

pub(crate) async fn finish_works(
    tx: &mut dyn Tx,
    items: Vec<(i64, Option<String>)>,
    now: DateTime<Utc>,
) -> Result<()> {
    for (id, error) in items {
        finish_work(tx, id, error, now).await?;
    }
    Ok(())
}

fn decode_delivery(tx: &dyn Tx, r: &Row) -> Result<Delivery> {
    let id = r[0].int().unwrap_or_default();
    Ok(Delivery {
        id,
        event_id: r[1].int().unwrap_or_default(),
        sink: r[2].text().unwrap_or_default().to_owned(),
        message_id: format!("msg_{id}"),
        state: r[3]
            .text()
            .and_then(DeliveryState::parse)
            .ok_or_else(|| bad_row(tx, "delivery", "unknown state"))?,
        attempts: r[4].int().unwrap_or_default(),
        next_attempt_at: time(r[5].int().unwrap_or_default()),
        last_error: r[6].text().map(str::to_owned),
    })
}

const DELIVERY_COLS: &str = "id, event_id, sink, state, attempts, next_ms, last_error";

pub(crate) async fn deliveries(
    tx: &mut dyn Tx,
    sink: Option<&str>,
    state: Option<DeliveryState>,
    limit: usize,
) -> Result<Vec<Delivery>> {
    let rows = tx
        .query(
            &format!(
                "SELECT {DELIVERY_COLS} FROM outbox WHERE ($1 = '' OR sink = $1) \
                 AND ($2 = '' OR state = $2) ORDER BY id DESC LIMIT $3"
            ),
            &[
                sink.unwrap_or("").into(),
                state.map(|s| s.as_str()).unwrap_or("").into(),
                (limit as i64).into(),
            ],
        )
        .await?;
    rows.iter().map(|r| decode_delivery(tx, r)).collect()
}

pub(crate) async fn due_deliveries(
    tx: &mut dyn Tx,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<(Delivery, StoredEvent)>> {
    let rows = tx
        .query(
            "SELECT o.id, o.event_id, o.sink, o.state, o.attempts, o.next_ms, o.last_error, \
             e.id, e.source, e.body FROM outbox o JOIN events e ON e.id = o.event_id \
             WHERE o.state IN ('pending', 'delivering') AND o.next_ms <= $1 \
             ORDER BY o.next_ms, o.id LIMIT $2",
            &[ms(now).into(), (limit as i64).into()],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((decode_delivery(tx, r)?, decode_event(tx, &r[7..].to_vec())?)))
        .collect()
}

pub(crate) async fn update_delivery(
    tx: &mut dyn Tx,
    id: i64,
    u: DeliveryUpdate,
    now: DateTime<Utc>,
) -> Result<()> {
    let attempted = !matches!(
        u.state,
        DeliveryState::Delivering | DeliveryState::Muted | DeliveryState::SinkDisabled
    );
    let n = tx
        .exec(
            "UPDATE outbox SET state = $2, next_ms = $3, last_error = $4, updated_ms = $5, \
             attempts = attempts + $6 WHERE id = $1",
            &[
                id.into(),
                u.state.as_str().into(),
                ms(u.next_attempt_at).into(),
                u.last_error.into(),
                ms(now).into(),
                (attempted as i64).into(),
            ],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::Invalid(format!("no delivery {id}")));
    }
    Ok(())
}

pub(crate) async fn append_audit(tx: &mut dyn Tx, a: AuditRecord) -> Result<i64> {
    query_one(
        tx,
        "INSERT INTO audit (at, actor, action, connection_id, ok, outcome, message) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        &[
            ms(a.at).into(),
            a.actor.into(),
            a.action.into(),
            a.connection_id.into(),
            a.ok.into(),
            a.outcome.into(),
            a.message.into(),
        ],
    )
    .await?
    .and_then(|r| r[0].int())
    .ok_or_else(|| bad_row(tx, "audit", "no id returned"))
}

pub(crate) async fn audit(tx: &mut dyn Tx, before: Option<i64>, limit: usize) -> Result<AuditPage> {
    let rows = tx
        .query(
            "SELECT id, at, actor, action, connection_id, ok, outcome, message FROM audit \
             WHERE id < $1 ORDER BY id DESC LIMIT $2",
            &[before.unwrap_or(i64::MAX).into(), (limit as i64 + 1).into()],
        )
        .await?;
    let more = rows.len() > limit;
    let items: Vec<AuditEntry> = rows
        .iter()
        .take(limit)
        .map(|r| AuditEntry {
            id: r[0].int().unwrap_or_default(),
            record: AuditRecord {
                at: time(r[1].int().unwrap_or_default()),
                actor: r[2].text().unwrap_or_default().to_owned(),
                action: r[3].text().unwrap_or_default().to_owned(),
                connection_id: r[4].text().unwrap_or_default().to_owned(),
                ok: r[5].int().unwrap_or_default() != 0,
                outcome: r[6].text().unwrap_or_default().to_owned(),
                message: r[7].text().unwrap_or_default().to_owned(),
            },
        })
        .collect();
    let next_before = if more {
        items.last().map(|e| e.id)
    } else {
        None
    };
    Ok(AuditPage { items, next_before })
}

pub(crate) async fn try_lease(
    tx: &mut dyn Tx,
    name: &str,
    holder: &str,
    ttl: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<bool> {
    let now_ms = ms(now);
    let until = now_ms + ttl.num_milliseconds();
    let n = tx
        .exec(
            "INSERT INTO leases (name, holder, until_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms \
             WHERE leases.holder = excluded.holder OR leases.until_ms <= $4",
            &[name.into(), holder.into(), until.into(), now_ms.into()],
        )
        .await?;
    Ok(n > 0)
}

/// Refuse the transaction unless `fence.holder` holds `fence.lease` at `now`. An `UPDATE`
/// (not a `SELECT`) so that PostgreSQL locks the lease row until this transaction ends: a
/// replica taking the lease over ([`try_lease`]'s upsert) waits for it.
pub(crate) async fn check_fence(
    tx: &mut dyn Tx,
    fence: &crate::types::Fence,
    now: DateTime<Utc>,
) -> Result<()> {
    let held = tx
        .exec(
            "UPDATE leases SET until_ms = until_ms WHERE name = $1 AND holder = $2 AND until_ms > $3",
            &[
                fence.lease.as_str().into(),
                fence.holder.as_str().into(),
                ms(now).into(),
            ],
        )
        .await?;
    if held == 0 {
        return Err(crate::StoreError::LeaseLost {
            store: tx.store_name().to_owned(),
            lease: fence.lease.clone(),
            holder: fence.holder.clone(),
        });
    }
    Ok(())
}

pub(crate) async fn release_lease(tx: &mut dyn Tx, name: &str, holder: &str) -> Result<bool> {
    Ok(tx
        .exec(
            "DELETE FROM leases WHERE name = $1 AND holder = $2",
            &[name.into(), holder.into()],
        )
        .await?
        > 0)
}

pub(crate) async fn lease_holder(
    tx: &mut dyn Tx,
    name: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>> {
    Ok(query_one(
        tx,
        "SELECT holder FROM leases WHERE name = $1 AND until_ms > $2",
        &[name.into(), ms(now).into()],
    )
    .await?
    .and_then(|r| r[0].text().map(str::to_owned)))
}

pub(crate) async fn add_mute(tx: &mut dyn Tx, m: NewMute, now: DateTime<Utc>) -> Result<i64> {
    query_one(
        tx,
        "INSERT INTO mutes (provider, customer, connection_id, until_ms, reason, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        &[
            m.provider.into(),
            m.customer.into(),
            m.connection.into(),
            ms(m.until).into(),
            m.reason.into(),
            ms(now).into(),
        ],
    )
    .await?
    .and_then(|r| r[0].int())
    .ok_or_else(|| bad_row(tx, "mute", "no id returned"))
}

pub(crate) async fn mutes(tx: &mut dyn Tx, now: DateTime<Utc>) -> Result<Vec<StoredMute>> {
    let rows = tx
        .query(
            "SELECT id, provider, customer, connection_id, until_ms, reason, created_ms \
             FROM mutes WHERE until_ms > $1 ORDER BY id",
            &[ms(now).into()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| StoredMute {
            id: r[0].int().unwrap_or_default(),
            mute: NewMute {
                provider: r[1].text().map(str::to_owned),
                customer: r[2].text().map(str::to_owned),
                connection: r[3].text().map(str::to_owned),
                until: time(r[4].int().unwrap_or_default()),
                reason: r[5].text().unwrap_or_default().to_owned(),
            },
            created_at: time(r[6].int().unwrap_or_default()),
        })
        .collect())
}

pub(crate) async fn delete_mute(tx: &mut dyn Tx, id: i64) -> Result<bool> {
    Ok(tx
        .exec("DELETE FROM mutes WHERE id = $1", &[id.into()])
        .await?
        > 0)
}

pub(crate) async fn disable_sink(tx: &mut dyn Tx, d: DisabledSink) -> Result<()> {
    tx.exec(
        "INSERT INTO disabled_sinks (sink, fingerprint, disabled_ms, reason) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sink) DO UPDATE SET fingerprint = excluded.fingerprint, \
         disabled_ms = excluded.disabled_ms, reason = excluded.reason",
        &[
            d.sink.into(),
            d.fingerprint.into(),
            ms(d.disabled_at).into(),
            d.reason.into(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn disabled_sinks(tx: &mut dyn Tx) -> Result<Vec<DisabledSink>> {
    let rows = tx
        .query(
            "SELECT sink, fingerprint, disabled_ms, reason FROM disabled_sinks ORDER BY sink",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| DisabledSink {
            sink: r[0].text().unwrap_or_default().to_owned(),
            fingerprint: r[1].text().unwrap_or_default().to_owned(),
            disabled_at: time(r[2].int().unwrap_or_default()),
            reason: r[3].text().unwrap_or_default().to_owned(),
        })
        .collect())
}

pub(crate) async fn enable_sink(tx: &mut dyn Tx, sink: &str) -> Result<bool> {
    Ok(tx
        .exec("DELETE FROM disabled_sinks WHERE sink = $1", &[sink.into()])
        .await?
        > 0)
}

pub(crate) async fn reminder_marks(tx: &mut dyn Tx, sink: &str) -> Result<Vec<ReminderMark>> {
    let rows = tx
        .query(
            "SELECT connection_id, since_ms, sent, next_ms FROM reminders WHERE sink = $1",
            &[sink.into()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ReminderMark {
            connection_id: r[0].text().unwrap_or_default().to_owned(),
            since: time(r[1].int().unwrap_or_default()),
            sent: r[2].int().unwrap_or_default(),
            next_at: time(r[3].int().unwrap_or_default()),
        })
        .collect())
}

pub(crate) async fn set_reminder_marks(
    tx: &mut dyn Tx,
    sink: &str,
    marks: Vec<ReminderMark>,
) -> Result<()> {
    for m in marks {
        tx.exec(
            "INSERT INTO reminders (sink, connection_id, since_ms, sent, next_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sink, connection_id) DO UPDATE SET \
             since_ms = excluded.since_ms, sent = excluded.sent, next_ms = excluded.next_ms",
            &[
                sink.into(),
                m.connection_id.into(),
                ms(m.since).into(),
                m.sent.into(),
                ms(m.next_at).into(),
            ],
        )
        .await?;
    }
    Ok(())
}
