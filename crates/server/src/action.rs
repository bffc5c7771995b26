//! `POST /v1/connections/{id}/actions/{kind}` and `GET /v1/audit` (see the
//! [routes](crate::routes) docs and DESIGN.md, "Actions").
//!
//! The handler finds the connection in the current view, asks its provider
//! ([`Provider::act`]), re-fetches the connection when the action's answer did not carry it
//! (a targeted [`Provider::refresh`]), hands the result to the poller (which owns the watcher
//! and the journal) so that a change becomes an event with `source: "action"`, waits until it
//! is recorded, writes one audit row per attempt and answers `{kind, ok, url?, connection?,
//! message}`. The audit row never holds a URL (a connect link is a bearer secret).
// A rejected request's answer is the `Err`: built once per request, so boxing gains nothing.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use chrono::Utc;
use connhealth_core::{
    Action, ActionError, ActionKind, ActionOutcome, Connection, Provider, RefreshHint,
};
use connhealth_store::{AuditRecord, Source};

use crate::http as h;
use crate::state::AppState;
use crate::stored::{self, Query};
use crate::webhook::Applied;

/// The caller every audit row names (the admin token is the only way in).
const ACTOR: &str = "admin";
/// How long the handler waits for the poller to record the re-fetched connection (it may be
/// in the middle of a poll); past it, the answer goes out and the change is recorded later.
const RECORD_WAIT: Duration = Duration::from_secs(15);

/// Whether `path` is an action route (for the admin-token rule).
pub(crate) fn is_action_path(path: &str) -> bool {
    path.strip_prefix("/v1/connections/")
        .and_then(|rest| rest.split_once("/actions/"))
        .is_some_and(|(id, kind)| !id.is_empty() && !kind.is_empty() && !kind.contains('/'))
}

/// The actions `connection` supports, by its provider's rule (none for a provider not
/// configured here).
pub(crate) fn actions_of(state: &AppState, connection: &Connection) -> Vec<Action> {
    state
        .intake()
        .provider(&connection.provider)
        .map(|p| p.actions(connection))
        .unwrap_or_default()
}

/// The `actions` JSON of a connection.
pub(crate) fn actions_json(state: &AppState, connection: &Connection) -> serde_json::Value {
    serde_json::to_value(actions_of(state, connection)).unwrap_or_default()
}

fn answer(status: StatusCode, outcome: &ActionOutcome) -> Response {
    h::json_value(
        status,
        &serde_json::to_value(outcome).unwrap_or_else(|_| serde_json::json!({})),
    )
}

fn refused(status: StatusCode, kind: Option<ActionKind>, message: String) -> Response {
    match kind {
        Some(kind) => {
            let mut outcome = ActionOutcome::done(kind, message);
            outcome.ok = false;
            answer(status, &outcome)
        }
        None => h::error(status, "not_found", message),
    }
}

/// `POST /v1/connections/{id}/actions/{kind}` (behind the admin token, checked by the guard).
pub(crate) async fn perform(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> Response {
    let run = async {
        let Path((id, kind_name)) =
            path.map_err(|e| h::error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
        if !body.iter().all(u8::is_ascii_whitespace)
            && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err()
        {
            return Err(h::error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body, when there is one, must be JSON (e.g. {})",
            ));
        }
        // Only the leader calls providers: a follower queues the action for it and answers
        // with the leader's answer (bounded).
        if !state.role().is_leading() {
            return Ok(crate::replica::relay_action(&state, &id, &kind_name).await);
        }
        Ok(carry_out(&state, id, kind_name).await)
    };
    run.await.unwrap_or_else(|r| r)
}

/// Do the action `kind_name` on connection `id` here (the leader): find it in the current
/// view, ask its provider, record the change and one audit row; the answer.
pub(crate) async fn carry_out(state: &AppState, id: String, kind_name: String) -> Response {
    let run = async {
        let store = state.store().cloned().ok_or_else(stored::no_store)?;
        let snap = state.snapshot().ok_or_else(h::not_ready)?;
        let kind = kind_name.parse::<ActionKind>().ok();
        let audit = |ok: bool, outcome: &str, message: &str| AuditRecord {
            at: Utc::now(),
            actor: ACTOR.into(),
            action: kind_name.clone(),
            connection_id: id.clone(),
            ok,
            outcome: outcome.into(),
            message: message.into(),
        };
        let record = |rec: AuditRecord| {
            let store = store.clone();
            async move {
                if let Err(e) = store.append_audit(rec).await {
                    tracing::warn!(error = %e, "cannot write the audit row");
                }
            }
        };
        let Some(conn) = snap.report.connection(&id).cloned() else {
            let m = format!("no connection {id:?} in the current report");
            record(audit(false, "not_found", &m)).await;
            return Err(refused(StatusCode::NOT_FOUND, kind, m));
        };
        let provider = state.intake().provider(&conn.provider);
        let supported = match (kind, &provider) {
            (Some(k), Some(p)) => p.actions(&conn).iter().any(|a| a.kind == k),
            _ => false,
        };
        let (Some(kind), Some(provider), true) = (kind, provider, supported) else {
            let m = format!("connection {id:?} does not support the action {kind_name:?}");
            record(audit(false, "unsupported", &m)).await;
            return Err(refused(StatusCode::NOT_FOUND, kind, m));
        };
        tracing::info!(connection_id = %id, action = %kind, caller = ACTOR, "action");
        match provider.act(&conn, kind).await {
            Ok(mut outcome) => {
                if outcome.connection.is_none() {
                    outcome.connection = refetch(&*provider, &conn).await;
                }
                if let Some(fresh) = &outcome.connection {
                    record_change(state, &conn, fresh.clone()).await;
                }
                record(audit(true, "done", &outcome.message)).await;
                Ok(answer(StatusCode::OK, &outcome))
            }
            Err(e) => {
                let outcome = ActionOutcome::failed(kind, &e);
                let (status, code) = match &e {
                    ActionError::RateLimited { .. } => {
                        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
                    }
                    ActionError::Unsupported { .. } => (StatusCode::NOT_FOUND, "unsupported"),
                    _ => (StatusCode::BAD_GATEWAY, "failed"),
                };
                tracing::info!(connection_id = %id, action = %kind, error = %e, "action failed");
                record(audit(false, code, &outcome.message)).await;
                let mut resp = answer(status, &outcome);
                if let Some(at) = outcome.retry_at {
                    let secs = (at - Utc::now()).num_seconds().max(1);
                    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                        resp.headers_mut().insert(header::RETRY_AFTER, v);
                    }
                }
                Err(resp)
            }
        }
    };
    run.await.unwrap_or_else(|r| r)
}

/// The connection as its provider now reports it (a targeted refresh), or `None` when that
/// read fails (the next poll shows any change).
async fn refetch(provider: &dyn Provider, conn: &Connection) -> Option<Connection> {
    let hint = match &conn.provider_connection_id {
        Some(pid) => RefreshHint::Connection(pid.to_string()),
        None => RefreshHint::Customer,
    };
    match provider.refresh(&conn.customer.id, hint).await {
        Ok(found) => found.into_iter().find(|c| c.id == conn.id),
        Err(e) => {
            tracing::info!(connection_id = %conn.id, error = %e, "re-fetch after the action failed; the next poll shows any change");
            None
        }
    }
}

/// Hand the re-fetched connection to the poller and wait (bounded) until it is recorded.
async fn record_change(state: &AppState, before: &Connection, fresh: Connection) {
    let Some(tx) = state.intake().applied() else {
        return;
    };
    let (done, recorded) = tokio::sync::oneshot::channel();
    let applied = Applied::Read {
        provider: before.provider.clone(),
        customer_id: before.customer.id.clone(),
        connections: vec![fresh],
        whole_customer: false,
        source: Source::Action,
        done: Some(done),
    };
    if tx.send(applied).await.is_err() {
        return;
    }
    if tokio::time::timeout(RECORD_WAIT, recorded).await.is_err() {
        tracing::info!(connection_id = %before.id, "the poller is busy; the action's change is recorded when it is free");
    }
}

/// `GET /v1/audit?before=&limit=`: `{items, next_before}`, newest first.
pub(crate) async fn audit(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let run = async {
        let q = Query::parse(raw.as_deref(), &["before", "limit"])?;
        let limit = q.limit()?;
        let before = q.id("before")?;
        let store = state.store().cloned().ok_or_else(stored::no_store)?;
        let page = store
            .audit(before, limit)
            .await
            .map_err(|e| stored::store_error(&e))?;
        Ok::<_, Response>(h::json_value(
            StatusCode::OK,
            &serde_json::json!({ "items": page.items, "next_before": page.next_before }),
        ))
    };
    run.await.unwrap_or_else(|r| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_paths() {
        assert!(is_action_path(
            "/v1/connections/subtotal%3A01J/actions/disconnect"
        ));
        assert!(!is_action_path("/v1/connections/x/actions/"));
        assert!(!is_action_path("/v1/connections//actions/refresh"));
        assert!(!is_action_path("/v1/connections/x/history"));
        assert!(!is_action_path("/v1/refresh"));
    }
}
