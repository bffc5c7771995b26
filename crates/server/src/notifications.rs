//! The notification routes: `GET /v1/notifications` (the outbox), `GET/POST /v1/mutes` and
//! `DELETE /v1/mutes/{id}` (see the [routes](crate::routes) docs).
// A rejected request's answer is the `Err`: built once per request, so boxing gains nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use connhealth_notify::Mute;
use connhealth_store::{DeliveryState, NewMute, Store};
use serde_json::{json, Value};

use crate::http as h;
use crate::state::AppState;
use crate::stored::{no_store, Query};

/// The most outbox rows one `GET /v1/notifications` returns (and the default).
const MAX_ITEMS: usize = 1000;
const DEFAULT_ITEMS: usize = 100;

fn store_of(state: &AppState) -> Result<Arc<dyn Store>, Response> {
    state.store().cloned().ok_or_else(no_store)
}

fn unavailable(e: &connhealth_store::StoreError) -> Response {
    h::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        e.to_string(),
    )
}

fn bad(message: impl Into<String>) -> Response {
    h::error(StatusCode::BAD_REQUEST, "bad_request", message)
}

const STATES: [DeliveryState; 6] = [
    DeliveryState::Pending,
    DeliveryState::Delivering,
    DeliveryState::Delivered,
    DeliveryState::Failed,
    DeliveryState::Muted,
    DeliveryState::SinkDisabled,
];

/// `GET /v1/notifications?sink=&state=&limit=`: `{items, sinks}`, newest first.
pub(crate) async fn list(State(state): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let run =
        async {
            let q = Query::parse(q.as_deref(), &["sink", "state", "limit"])?;
            let sink = q.one("sink");
            let wanted =
                match q.one("state") {
                    None => None,
                    Some(s) => Some(STATES.into_iter().find(|k| k.as_str() == s).ok_or_else(
                        || {
                            bad(format!(
                                "state {s:?}: one of {}",
                                STATES.map(|k| k.as_str()).join(", ")
                            ))
                        },
                    )?),
                };
            let limit = match q.one("limit") {
                None => DEFAULT_ITEMS,
                Some(l) => l
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_ITEMS).contains(n))
                    .ok_or_else(|| bad(format!("limit {l:?}: a whole number from 1 to 1000")))?,
            };
            let store = store_of(&state)?;
            let items = store
                .deliveries(sink, wanted, limit)
                .await
                .map_err(|e| unavailable(&e))?;
            let disabled = store.disabled_sinks().await.map_err(|e| unavailable(&e))?;
            let sinks: Vec<Value> = match state.notifier() {
                None => Vec::new(),
                Some(n) => n
                    .sinks()
                    .map(|s| {
                        let d = disabled.iter().find(|d| d.sink == s.name);
                        json!({
                            "name": s.name,
                            "kind": s.kind,
                            // This process's flag, or the store's record for this same config
                        // (a replica that does not deliver has not restored the flag).
                        "disabled": n.is_disabled(&s.name)
                            || d.is_some_and(|d| d.fingerprint == s.fingerprint()),
                            "disabled_at": d.map(|d| d.disabled_at),
                            "disabled_reason": d.map(|d| d.reason.clone()),
                        })
                    })
                    .collect(),
            };
            Ok(h::json_value(
                StatusCode::OK,
                &json!({ "items": items, "sinks": sinks }),
            ))
        };
    run.await.unwrap_or_else(|r: Response| r)
}

fn config_mute(i: usize, m: &Mute) -> Value {
    json!({
        "id": format!("config-{}", i + 1),
        "source": "config",
        "match": m.matches,
        "until": m.until,
        "reason": m.reason,
    })
}

/// `GET /v1/mutes`: `{items}`, the config's (`source: "config"`, ids `config-N`) then the
/// API's (`source: "api"`, integer ids), those still in force.
pub(crate) async fn mutes(State(state): State<AppState>) -> Response {
    let run = async {
        let store = store_of(&state)?;
        let now = Utc::now();
        let mut items: Vec<Value> = state
            .notifier()
            .map(|n| n.mutes())
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter(|(_, m)| m.until > now)
            .map(|(i, m)| config_mute(i, m))
            .collect();
        for m in store.mutes(now).await.map_err(|e| unavailable(&e))? {
            items.push(api_mute(&m));
        }
        Ok(h::json_value(StatusCode::OK, &json!({ "items": items })))
    };
    run.await.unwrap_or_else(|r: Response| r)
}

fn api_mute(m: &connhealth_store::StoredMute) -> Value {
    json!({
        "id": m.id,
        "source": "api",
        "match": Mute::from(m).matches,
        "until": m.mute.until,
        "reason": m.mute.reason,
        "created_at": m.created_at,
    })
}

/// `POST /v1/mutes` `{match: {provider?, customer?, connection?}, until, reason}`: 201 with
/// the stored mute.
pub(crate) async fn add_mute(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let run = async {
        let store = store_of(&state)?;
        let m: Mute = serde_json::from_slice(&body).map_err(|e| {
            bad(format!(
                "POST /v1/mutes: expected {{\"match\": {{\"provider\"?, \"customer\"?, \"connection\"?}}, \"until\": RFC 3339, \"reason\"}}: {e}"
            ))
        })?;
        m.validate()
            .map_err(|e| bad(format!("POST /v1/mutes: {e}")))?;
        let now = Utc::now();
        if m.until <= now {
            return Err(bad("POST /v1/mutes: until is not in the future"));
        }
        let new = NewMute {
            provider: m.matches.provider.clone(),
            customer: m.matches.customer.clone(),
            connection: m.matches.connection.clone(),
            until: m.until,
            reason: m.reason.clone(),
        };
        let id = store
            .add_mute(new.clone(), now)
            .await
            .map_err(|e| unavailable(&e))?;
        tracing::info!(mute = id, caller = "admin", "mute added");
        if let Some(n) = state.notifier() {
            n.wake();
        }
        let stored = connhealth_store::StoredMute {
            id,
            mute: new,
            // As stored (milliseconds), so a GET shows the same.
            created_at: chrono::DateTime::from_timestamp_millis(now.timestamp_millis())
                .unwrap_or(now),
        };
        Ok(h::json_value(StatusCode::CREATED, &api_mute(&stored)))
    };
    run.await.unwrap_or_else(|r: Response| r)
}

/// `DELETE /v1/mutes/{id}`: 200 `{deleted: id}`; a config mute is 409, an unknown id 404.
pub(crate) async fn delete_mute(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let run = async {
        let store = store_of(&state)?;
        if id.starts_with("config-") {
            return Err(h::error(
                StatusCode::CONFLICT,
                "conflict",
                format!("mute {id:?} comes from the config file ([[mute]]): edit the file and restart to remove it"),
            ));
        }
        let not_found = || {
            h::error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no mute {id:?}"),
            )
        };
        let n: i64 = id.parse().map_err(|_| not_found())?;
        if !store.delete_mute(n).await.map_err(|e| unavailable(&e))? {
            return Err(not_found());
        }
        tracing::info!(mute = n, caller = "admin", "mute deleted");
        Ok(h::json_value(StatusCode::OK, &json!({ "deleted": n })))
    };
    run.await.unwrap_or_else(|r: Response| r)
}
