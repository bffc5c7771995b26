//! The routes served from the store: `/v1/connections`, `/v1/connections/{id}/history`,
//! `/v1/uptime` and `/v1/events?after=` (see the [routes](crate::routes) docs).
// A rejected request's answer is the `Err`: built once per request, so boxing gains nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use connhealth_core::Status;
use connhealth_store::{ConnectionFilter, GroupBy, Store, StoreError, UptimeQuery, Window};

use crate::http as h;
use crate::state::AppState;

/// The default and the largest `limit`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// 503 `no_store`: the route needs a store and none is configured.
pub(crate) fn no_store() -> Response {
    h::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_store",
        "no store configured: this route is served from the store (serve --store URL, or serve without --state)",
    )
}

/// A store failure: 400 for a bad argument (a cursor not ours), else 503 `store_unavailable`.
pub(crate) fn store_error(e: &StoreError) -> Response {
    match e {
        StoreError::Invalid(m) => h::error(StatusCode::BAD_REQUEST, "bad_request", m.clone()),
        other => h::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            other.to_string(),
        ),
    }
}

fn bad(message: impl Into<String>) -> Response {
    h::error(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// A query string as (key, values) pairs: values of a key repeat or are comma-separated;
/// a key not in `allowed` is an error. `access_token`/`token` are the auth rule's, skipped.
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub(crate) fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Query, Response> {
        let mut pairs = Vec::new();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if k == "access_token" || k == "token" {
                continue;
            }
            if !allowed.contains(&k.as_ref()) {
                return Err(bad(format!(
                    "unknown query parameter {k:?}; this route takes {}",
                    allowed.join(", ")
                )));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Query { pairs })
    }

    /// Every value of `key`, split on commas, blanks left out.
    fn list(&self, key: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split(',').map(str::trim).map(str::to_owned))
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// The one value of `key` (the last if repeated), blank as absent.
    pub(crate) fn one(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, v)| k == key && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
    }

    /// `limit`: 1–1000, default 100.
    pub(crate) fn limit(&self) -> Result<usize, Response> {
        match self.one("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(bad(format!(
                    "limit {v:?}: expected a whole number from 1 to {MAX_LIMIT}"
                ))),
            },
        }
    }

    /// An event id parameter (`after`, `before`): a non-negative integer.
    pub(crate) fn id(&self, key: &str) -> Result<Option<i64>, Response> {
        match self.one(key) {
            None => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n >= 0 => Ok(Some(n)),
                _ => Err(bad(format!(
                    "{key} {v:?}: expected an event id (0 or more)"
                ))),
            },
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_value(value) {
        Ok(v) => h::json_value(StatusCode::OK, &v),
        Err(e) => h::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot serialize: {e}"),
        ),
    }
}

fn store_of(state: &AppState) -> Result<Arc<dyn Store>, Response> {
    state.store().cloned().ok_or_else(no_store)
}

/// The query of the dashboard's first page, exactly as dashboard.html sends it: built again
/// (and cached) in the background whenever the store changed, so a page load never waits for
/// it (see [`prewarm`]).
pub(crate) const DASHBOARD_FIRST_PAGE: &str = "group=customer&timeline=30d&limit=100";

/// Build the dashboard's first page into the page cache, off the request path, each time a
/// store write asks for it; until the state is shut down. `serve` runs this as one task and
/// waits for it, so nothing holds the store after `serve` returns (a SQLite store's lock is
/// then free for the next process, or the next `serve` in this one).
pub(crate) async fn run_prewarmer(state: AppState) {
    if state.store().is_none() {
        return;
    }
    let mut stop = state.stop_signal();
    loop {
        tokio::select! {
            _ = state.prewarm_wanted() => {}
            _ = crate::stopped(&mut stop) => return,
        }
        tokio::select! {
            _ = connections(
                State(state.clone()),
                // As a browser asks: the gzip'd form is made here too, off the request path.
                gzip_request(),
                RawQuery(Some(DASHBOARD_FIRST_PAGE.to_owned())),
            ) => {}
            _ = crate::stopped(&mut stop) => return,
        }
    }
}

fn gzip_request() -> axum::http::HeaderMap {
    let mut h = axum::http::HeaderMap::new();
    h.insert(
        axum::http::header::ACCEPT_ENCODING,
        axum::http::HeaderValue::from_static("gzip"),
    );
    h
}

/// `GET /v1/connections`: a page cached since the last store write is answered from its
/// bytes, gzip'd ones when the client takes gzip ([`crate::page_cache`]).
pub(crate) async fn connections(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let key = raw.clone().unwrap_or_default();
    if let (Some(page), _) = state.cached_page(&key) {
        return page.response(&headers);
    }
    // One build per query at a time; a miss that waited takes the page just built.
    let gate = state.page_gate(&key);
    let _turn = gate.lock().await;
    let (cached, generation) = state.cached_page(&key);
    if let Some(page) = cached {
        return page.response(&headers);
    }
    let run = async {
        let q = Query::parse(
            raw.as_deref(),
            &[
                "status", "provider", "customer", "q", "limit", "cursor", "group", "timeline",
            ],
        )?;
        let mut status = Vec::new();
        for v in q.list("status") {
            status.push(
                v.parse::<Status>()
                    .map_err(|e| bad(format!("status: {e}")))?,
            );
        }
        let filter = ConnectionFilter {
            status,
            provider: q.list("provider"),
            customer: q.list("customer"),
            q: q.one("q").map(str::to_owned),
        };
        let limit = q.limit()?;
        let grouped = match q.one("group") {
            None => false,
            Some("customer") => true,
            Some(other) => {
                return Err(bad(format!(
                    "group {other:?}: the only grouping is \"customer\""
                )))
            }
        };
        let timeline: Option<Window> = q
            .one("timeline")
            .map(|w| {
                w.parse()
                    .map_err(|e: StoreError| bad(format!("timeline: {e}")))
            })
            .transpose()?;
        let store = store_of(&state)?;
        let page = if grouped {
            store
                .connections_by_customer(&filter, q.one("cursor"), limit)
                .await
        } else {
            store.connections(&filter, q.one("cursor"), limit).await
        }
        .map_err(|e| store_error(&e))?;
        let mut timelines = match timeline {
            None => Default::default(),
            Some(w) => {
                let ids: Vec<String> = page.items.iter().map(|i| i.connection.id.clone()).collect();
                let from = chrono::Utc::now() - chrono::Duration::hours(w.hours());
                store
                    .timelines(&ids, from)
                    .await
                    .map_err(|e| store_error(&e))?
            }
        };
        let items: Vec<serde_json::Value> = page
            .items
            .iter()
            .map(|item| {
                let mut v = serde_json::to_value(item).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert(
                        "actions".into(),
                        crate::action::actions_json(&state, &item.connection),
                    );
                    if timeline.is_some() {
                        let points = timelines.remove(&item.connection.id).unwrap_or_default();
                        o.insert(
                            "timeline".into(),
                            serde_json::to_value(points).unwrap_or_default(),
                        );
                    }
                }
                v
            })
            .collect();
        let body = bytes::Bytes::from(
            serde_json::json!({
                "items": items,
                "next_cursor": page.next_cursor,
                "total": page.total,
            })
            .to_string(),
        );
        let page = Arc::new(crate::page_cache::CachedPage::new(body));
        state.cache_page(&key, generation, page.clone());
        Ok::<_, Response>(page.response(&headers))
    };
    run.await.unwrap_or_else(|r| r)
}

/// `GET /v1/connections/{id}/history`.
pub(crate) async fn history(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    let run = async {
        let Path(id) = id.map_err(|e| bad(e.body_text()))?;
        let q = Query::parse(raw.as_deref(), &["limit", "before"])?;
        let limit = q.limit()?;
        let before = q.id("before")?;
        let store = store_of(&state)?;
        let page = store
            .history(&id, before, limit)
            .await
            .map_err(|e| store_error(&e))?;
        Ok::<_, Response>(h::json_value(
            StatusCode::OK,
            &serde_json::json!({ "items": page.items, "next_before": page.next }),
        ))
    };
    run.await.unwrap_or_else(|r| r)
}

/// `GET /v1/uptime`.
pub(crate) async fn uptime(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let run = async {
        let q = Query::parse(raw.as_deref(), &["window", "by", "provider", "customer"])?;
        let window: Window = q
            .one("window")
            .unwrap_or("24h")
            .parse()
            .map_err(|e: StoreError| bad(e.to_string()))?;
        let by = match q.one("by").unwrap_or("provider") {
            "provider" => GroupBy::Provider,
            "customer" => GroupBy::Customer,
            "connection" => GroupBy::Connection,
            other => {
                return Err(bad(format!(
                    "by {other:?}: expected provider, customer or connection"
                )))
            }
        };
        let query = UptimeQuery {
            window,
            by,
            provider: q.list("provider"),
            customer: q.list("customer"),
        };
        let store = store_of(&state)?;
        let report = store.uptime(&query).await.map_err(|e| store_error(&e))?;
        Ok::<_, Response>(json(&report))
    };
    run.await.unwrap_or_else(|r| r)
}

/// `GET /v1/events` as JSON: `{items, next_after}`, oldest first.
pub(crate) async fn events_page(state: &AppState, raw: Option<&str>) -> Response {
    let run = async {
        let q = Query::parse(raw, &["after", "limit"])?;
        let after = q.id("after")?.unwrap_or(0);
        let limit = q.limit()?;
        let store = store_of(state)?;
        let page = store
            .events_after(after, limit)
            .await
            .map_err(|e| store_error(&e))?;
        Ok::<_, Response>(h::json_value(
            StatusCode::OK,
            &serde_json::json!({ "items": page.items, "next_after": page.next }),
        ))
    };
    run.await.unwrap_or_else(|r| r)
}

/// `since` of one connection, when a store knows it.
pub(crate) async fn since_of(state: &AppState, id: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let store = state.store()?;
    match store.connection(id).await {
        Ok(found) => found.map(|c| c.since),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a connection's since from the store");
            None
        }
    }
}

/// When each provider's latest webhook was accepted, from the store (empty without one, or
/// when it cannot be read). The one place `/v1/summary` learns webhook freshness from.
pub(crate) async fn last_webhook_at(
    state: &AppState,
) -> std::collections::BTreeMap<String, chrono::DateTime<chrono::Utc>> {
    let Some(store) = state.store() else {
        return Default::default();
    };
    match store.last_webhooks().await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the last webhooks from the store");
            Default::default()
        }
    }
}
