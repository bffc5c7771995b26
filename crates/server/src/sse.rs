//! The `/v1/events` stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use connhealth_store::Store;
use futures::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast::{self, error::RecvError};
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
    let live = live(sub.live, state.stop_signal(), sent);
    stream::iter(first).chain(live).map(Ok)
}

/// Live events with an id above `sent`, until the server shuts down; a `reset` when this
/// subscriber lags.
fn live(
    rx: broadcast::Receiver<Arc<SeqEvent>>,
    stop: watch::Receiver<bool>,
    sent: u64,
) -> impl Stream<Item = Event> + Send + 'static {
    stream::unfold(
        (rx, stop, sent),
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
    )
}

/// At most this many stored events are replayed to one resuming subscriber; past it, `reset`.
pub(crate) const MAX_REPLAY: usize = 10_000;

/// With a store: the stored events after `last` (at most [`MAX_REPLAY`], else a `reset`),
/// then live ones. Subscribed before reading, so nothing committed in between is missed;
/// what is both read and received live is sent once (ids only increase).
async fn from_store(
    state: &AppState,
    store: &Arc<dyn Store>,
    last: u64,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let rx = state.subscribe_live();
    let mut first = Vec::new();
    let mut sent = last;
    let mut after = i64::try_from(last).unwrap_or(i64::MAX);
    loop {
        match store.events_after(after, 1000).await {
            Ok(page) => {
                if page.items.is_empty() {
                    break;
                }
                if first.len() + page.items.len() > MAX_REPLAY {
                    let latest = page.items.last().map_or(sent, |e| e.id as u64);
                    first.clear();
                    first.push(reset_event(
                        &format!("more than {MAX_REPLAY} events after {last}; re-read /v1/report or page /v1/events?after="),
                        Some(last),
                        latest,
                    ));
                    sent = latest;
                    // Skip to the newest stored: what follows is live.
                    while let Ok(p) = store.events_after(sent as i64, 1000).await {
                        match p.items.last() {
                            Some(e) => sent = e.id as u64,
                            None => break,
                        }
                    }
                    break;
                }
                for e in &page.items {
                    if let Ok(data) = serde_json::to_string(e) {
                        first.push(change_event(&SeqEvent {
                            id: e.id as u64,
                            name: e.change.kind.name(),
                            data,
                        }));
                    }
                    sent = e.id as u64;
                }
                after = page.next.unwrap_or(after);
            }
            Err(e) => {
                first.push(reset_event(
                    &format!("cannot read the store to resume: {e}"),
                    Some(last),
                    sent,
                ));
                break;
            }
        }
    }
    stream::iter(first)
        .chain(live(rx, state.stop_signal(), sent))
        .map(Ok)
}

/// The SSE response for a request with these headers.
pub(crate) async fn response(state: &AppState, headers: &HeaderMap) -> Response {
    let last = last_event_id(headers);
    let stream = match (state.store(), last) {
        (Some(store), Some(last)) => from_store(state, store, last).await.boxed(),
        _ => events(state, last).boxed(),
    };
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
