//! The plumbing shared by the three simulators: the counting / fault-injecting middleware,
//! the loopback server handle, and JSON response helpers.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt as _;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::faults::{Fault, Faults, Stats, UNMATCHED};
use crate::mutate::{self, Vocab};
use crate::ratelimit;

/// Per-simulator configuration of the middleware.
pub(crate) struct Core {
    pub(crate) faults: Faults,
    pub(crate) stats: Stats,
    pub(crate) vocab: &'static Vocab,
    /// Route name of a request from its method and raw path (without query).
    pub(crate) classify: fn(&Method, &str) -> Option<&'static str>,
    /// The provider's error body for a status code (used by `Fault::Status` without a body).
    pub(crate) error_body: Box<dyn Fn(u16) -> String + Send + Sync>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// A running loopback server; dropping it starts a graceful shutdown.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, let in-flight requests finish (hung ones are answered 503), and wait for
    /// the server task (at most 5 s, then it is aborted).
    pub(crate) async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Bind `127.0.0.1:port` (0 = any free port).
pub(crate) async fn bind(port: u16) -> io::Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await
}

/// A shutdown channel: the sender goes to [`serve`], the receiver into [`Core`].
pub(crate) fn shutdown_channel() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}

/// Spawn `router` (with the middleware) on the caller's tokio runtime.
pub(crate) fn serve(
    listener: TcpListener,
    router: Router,
    core: Arc<Core>,
    shutdown: watch::Sender<bool>,
) -> io::Result<Server> {
    let addr = listener.local_addr()?;
    let stats = core.stats.clone();
    let listener = listener.tap_io(move |_tcp| stats.tcp_accepted());
    let app = router.layer(axum::middleware::from_fn_with_state(core, middleware));
    let mut rx = shutdown.subscribe();
    let task = tokio::spawn(async move {
        let signal = async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await
        {
            tracing::warn!(error = %e, "simulator server stopped with an error");
        }
    });
    Ok(Server {
        addr,
        shutdown,
        task: Some(task),
    })
}

async fn middleware(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    let raw = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let route = (core.classify)(req.method(), req.uri().path()).unwrap_or(UNMATCHED);
    let _in_flight = core.stats.begin(route, &raw);
    if let Err(secs) = core.faults.take_token(ratelimit::credential(req.headers())) {
        core.stats.count_rate_limited();
        let mut resp = (StatusCode::TOO_MANY_REQUESTS, (core.error_body)(429)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return resp;
    }
    let selected = core.faults.select(route, &raw);
    if !selected.latency.is_zero() {
        tokio::time::sleep(selected.latency).await;
    }
    let Some(fault) = selected.response else {
        return next.run(req).await;
    };
    match fault {
        Fault::Latency(_) | Fault::LatencyBetween(..) => next.run(req).await,
        Fault::Status {
            status,
            retry_after,
            body,
        } => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = body.unwrap_or_else(|| (core.error_body)(code.as_u16()));
            let mut resp = (code, body).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Some(ra) = retry_after {
                if let Ok(v) = HeaderValue::from_str(&ra) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            resp
        }
        Fault::Hang => {
            let mut rx = core.shutdown.clone();
            let _ = rx.wait_for(|stop| *stop).await;
            (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
        }
        Fault::MalformedJson => {
            let mut resp = (
                StatusCode::OK,
                "<html><body><h1>Upstream returned an unexpected page</h1>{\"oops\": </body></html>",
            )
                .into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        rewrite => {
            let resp = next.run(req).await;
            rewrite_response(resp, rewrite, core.vocab).await
        }
    }
}

const CHUNK: usize = 64 * 1024;
static PAD_A: [u8; CHUNK] = [b'a'; CHUNK];
static PAD_SPACE: [u8; CHUNK] = [b' '; CHUNK];

fn padding_stream(
    pad: &'static [u8; CHUNK],
    len: usize,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send {
    futures::stream::unfold(len, move |rem| async move {
        if rem == 0 {
            None
        } else {
            let k = rem.min(CHUNK);
            Some((Ok(Bytes::from_static(&pad[..k])), rem - k))
        }
    })
}

fn oversized(original: Bytes, min_len: usize) -> Body {
    let trimmed_start = original
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(original.len());
    let body = original.slice(trimmed_start..);
    let inject_at = if body.starts_with(b"{") {
        Some(1)
    } else if body.starts_with(b"[") {
        let after = body[1..]
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .map(|p| p + 1);
        after.filter(|&p| body[p] == b'{').map(|p| p + 1)
    } else {
        None
    };
    let (prefix, pad, suffix): (Bytes, &'static [u8; CHUNK], Bytes) = match inject_at {
        Some(at) => {
            let rest = body.slice(at..);
            let empty_object = rest
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'}');
            let mut prefix = body[..at].to_vec();
            prefix.extend_from_slice(br#""x_padding":""#);
            let mut suffix = Vec::with_capacity(rest.len() + 2);
            suffix.push(b'"');
            if !empty_object {
                suffix.push(b',');
            }
            suffix.extend_from_slice(&rest);
            (Bytes::from(prefix), &PAD_A, Bytes::from(suffix))
        }
        None => (Bytes::new(), &PAD_SPACE, body),
    };
    let pad_len = min_len.saturating_sub(prefix.len() + suffix.len());
    let stream = futures::stream::once(async move { Ok::<_, io::Error>(prefix) })
        .chain(padding_stream(pad, pad_len))
        .chain(futures::stream::once(async move { Ok(suffix) }));
    Body::from_stream(stream)
}

fn drop_mid_body(original: Bytes) -> Body {
    let half = original.slice(..original.len() / 2);
    let stream = futures::stream::unfold(0u8, move |step| {
        let half = half.clone();
        async move {
            match step {
                0 => Some((Ok(half), 1)),
                1 => {
                    // Let the head and the first half reach the client before the abort.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Some((
                        Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "simulated connection drop mid-body",
                        )),
                        2,
                    ))
                }
                _ => None,
            }
        }
    });
    Body::from_stream(stream)
}

async fn rewrite_response(resp: Response, fault: Fault, vocab: &Vocab) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = match fault {
        Fault::DropMidBody => drop_mid_body(bytes),
        Fault::TruncatedBody => Body::from(bytes.slice(..bytes.len() / 2)),
        Fault::OversizedBody(n) => oversized(bytes, n),
        Fault::UnknownEnums
        | Fault::MissingOptionals
        | Fault::EmptyArrays
        | Fault::DuplicateIds => match serde_json::from_slice::<Value>(&bytes) {
            Ok(mut v) => {
                match fault {
                    Fault::UnknownEnums => mutate::unknown_enums(&mut v, vocab),
                    Fault::MissingOptionals => mutate::missing_optionals(&mut v, vocab),
                    Fault::EmptyArrays => mutate::empty_arrays(&mut v),
                    _ => mutate::duplicate_items(&mut v),
                }
                Body::from(serde_json::to_vec(&v).unwrap_or_else(|_| bytes.to_vec()))
            }
            Err(_) => Body::from(bytes),
        },
        _ => Body::from(bytes),
    };
    Response::from_parts(parts, body)
}

/// Serialize `v` as a JSON response.
pub(crate) fn json_response<T: Serialize + ?Sized>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "serialization failed").into_response(),
    }
}

// ---- FastAPI-flavoured helpers (Channel3 and Subtotal are FastAPI services) ----

/// `{"detail": msg}` with `status`.
pub(crate) fn detail(status: StatusCode, msg: &str) -> Response {
    json_response(status, &json!({ "detail": msg }))
}

/// The FastAPI error body for a status code (used for injected `Status` faults).
pub(crate) fn fastapi_error_body(status: u16) -> String {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    json!({ "detail": reason }).to_string()
}

/// 422 `{"detail": [items...]}`.
pub(crate) fn validation(items: Vec<Value>) -> Response {
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({ "detail": items }),
    )
}

/// A FastAPI "Field required" item at `loc`.
pub(crate) fn missing_item(loc: &[&str], with_input: bool) -> Value {
    let mut item = json!({ "loc": loc, "msg": "Field required", "type": "missing" });
    if with_input {
        item["input"] = Value::Null;
    }
    item
}

/// Parse a JSON object body the FastAPI way: empty → 422 missing body, invalid → 422
/// json_invalid, not an object → 422 model_attributes_type.
pub(crate) fn parse_body_object(bytes: &Bytes) -> Result<Map<String, Value>, Response> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(validation(vec![missing_item(&["body"], true)]));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(validation(vec![json!({
            "type": "model_attributes_type",
            "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from",
            "input": other,
        })])),
        Err(e) => Err(validation(vec![json!({
            "type": "json_invalid",
            "loc": ["body", e.column()],
            "msg": "JSON decode error",
            "input": {},
            "ctx": { "error": e.to_string() },
        })])),
    }
}

/// An optional string field: missing or null → `None`; a non-string → a 422 item.
pub(crate) fn opt_string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, Value> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(json!({
            "type": "string_type",
            "loc": ["body", key],
            "msg": "Input should be a valid string",
            "input": other,
        })),
    }
}

/// `x-api-key` check: missing → 401, wrong → 403 (both `{"detail": ...}`).
pub(crate) fn check_api_key(headers: &HeaderMap, expected: &str) -> Result<(), Response> {
    match headers.get("x-api-key") {
        None => Err(detail(StatusCode::UNAUTHORIZED, "Missing API key")),
        Some(v) if v.as_bytes().is_empty() => {
            Err(detail(StatusCode::UNAUTHORIZED, "Missing API key"))
        }
        Some(v) if v.as_bytes() == expected.as_bytes() => Ok(()),
        Some(_) => Err(detail(StatusCode::FORBIDDEN, "Invalid API key")),
    }
}

/// Split a raw path (no query) into its segments (after the leading `/`; empty segments are
/// kept so that the result agrees with the router).
pub(crate) fn segments(path: &str) -> Vec<&str> {
    path.strip_prefix('/').unwrap_or(path).split('/').collect()
}
