//! The `/v1/events` stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use crate::state::{AppState, SeqEvent};

/// How often a keep-alive comment is sent on an idle stream.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn change_event(e: &SeqEvent) -> Event {
    Event::default()
        .event(e.name)
        .id(e.id.to_string())
        .data(&e.data)
}

fn reset_event(reason: &str, last_event_id: Option<u64>, latest_id: u64) -> Event {
    let data = serde_json::json!({
        "reason": reason,
        "last_event_id": last_event_id,
        "latest_event_id": latest_id,
    });
    Event::default()
        .event("reset")
        .id(latest_id.to_string())
        .data(data.to_string())
}

/// The `Last-Event-ID` header, when it is a number (anything else counts as absent).
pub(crate) fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The stream: `reset` when the asked-for id cannot be resumed, the buffered events after it,
/// then live events until the server shuts down.
fn events(
    state: &AppState,
    last: Option<u64>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let sub = state.subscribe(last);
    let mut first: Vec<Event> = Vec::with_capacity(sub.backlog.len() + 1);
    let mut sent = last.unwrap_or(0);
    if let Some(reason) = &sub.reset {
        first.push(reset_event(reason, last, sub.latest_id));
        sent = sub.latest_id;
    }
    for e in &sub.backlog {
        first.push(change_event(e));
        sent = e.id;
    }
    let stop = state.stop_signal();
    let live = stream::unfold(
        (sub.live, stop, sent),
        |(mut rx, mut stop, mut sent): (_, watch::Receiver<bool>, u64)| async move {
            loop {
                let next: Result<Arc<SeqEvent>, RecvError> = tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => return None,
                    r = rx.recv() => r,
                };
                match next {
                    Ok(e) if e.id <= sent => continue,
                    Ok(e) => {
                        sent = e.id;
                        return Some((change_event(&e), (rx, stop, sent)));
                    }
                    Err(RecvError::Lagged(missed)) => {
                        let reason = format!(
                            "this subscriber fell {missed} events behind; re-read /v1/report"
                        );
                        return Some((reset_event(&reason, Some(sent), sent), (rx, stop, sent)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    stream::iter(first).chain(live).map(Ok)
}

/// The SSE response for a request with these headers.
pub(crate) fn response(state: &AppState, headers: &HeaderMap) -> Response {
    let stream = events(state, last_event_id(headers));
    let mut resp = Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(state.keep_alive())
                .text("keep-alive"),
        )
        .into_response();
    // Tell buffering reverse proxies (nginx) to pass events through at once.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
