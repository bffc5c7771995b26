//! The routes, and the rules every request goes through.
//!
//! # Routes
//!
//! Every JSON response is `application/json; charset=utf-8`; every failure is
//! `{"error": code, "message": text}` with `code` one of `not_ready`, `not_found`,
//! `bad_request`, `unauthorized`, `method_not_allowed`, `body_not_accepted` (and `internal`,
//! which serializing the model's types cannot actually produce).
//!
//! - **`GET /v1/report`** — the watcher's current view (`Poll::report`): fresh connections
//!   where providers answered, the last known ones (as `unknown`) where they did not. The body
//!   is the `HealthReport` JSON (ARCHITECTURE.md). Strong `ETag` (SHA-256 of the body); a matching
//!   `If-None-Match` (weak comparison, `*` included) answers 304 without a body. Before the
//!   first poll finished: 503 `not_ready`.
//!
//!   Filters, each repeatable and/or comma-separated (`?status=degraded,unknown&status=pending`):
//!   `provider` (name), `status` (one of the eight), `customer` (customer id). Values of one
//!   parameter are alternatives (OR); different parameters all apply (AND). A filtered report
//!   keeps `generated_at` and the full `providers` list (so outcomes stay visible), keeps only
//!   the matching `connections`, and recomputes `summary` from them and `overall` by the
//!   roll-up (ARCHITECTURE.md) over them and over the providers the `provider` filter selects (all
//!   when absent). An unknown status or an unknown parameter is 400 `bad_request`. Each
//!   filtered body has its own ETag.
//! - **`GET /v1/summary`** — what a dashboard's tiles and provider panel need, without the
//!   connections: `{generated_at, overall, summary, providers: [{provider, outcome,
//!   elapsed_ms, errors, last_poll_at, summary, last_webhook_at}]}` (`summary` = `total` and
//!   a count per status, overall and per provider). Counted once per poll when the report
//!   comes in, never by serializing the report; `last_webhook_at` (the latest accepted
//!   webhook of that provider) is read from the store, `null` without one. 503 before the
//!   first poll.
//! - **`GET /v1/connections/{id}`** — one connection of the current view. The id is one
//!   percent-encoded path segment (`subtotal%3A01J…`; a literal `:` also works; a `/` inside
//!   an id must be sent as `%2F`). 404 `not_found` when unknown, 503 before the first poll.
//!   Same ETag rules as the report.
//! - **`GET /v1/events`** — `text/event-stream`. Each change is one event: `event:` the
//!   change's name (`status_changed`, …), `id:` its sequence number, `data:` the change as
//!   one line of JSON (core's `Change`). Ids increase by one per event and start at the
//!   server's start time in microseconds since the Unix epoch, so they also increase across
//!   restarts. Without `Last-Event-ID` only new events are sent. With it, the buffered events
//!   after it are replayed first; when that id is older than the buffer (`event_buffer`
//!   events are kept) or was never issued, an `event: reset` comes first instead (its `id` is
//!   the latest issued, its data `{"reason", "last_event_id", "latest_event_id"}`): re-read
//!   `/v1/report`, then carry on with the live events that follow. A subscriber too slow to
//!   keep up also gets a `reset`. A `: keep-alive` comment every 15 s. Streams end when the
//!   server shuts down.
//! - **With a store** ([`crate::Server::with_store`]), the `/v1/events` stream's ids are the
//!   store's event ids (increasing in commit order, kept across restarts), its `data` is the
//!   stored event (the change plus `id` and `source`), events are published once stored, and
//!   `Last-Event-ID` resumes from the store (at most 10,000 events, else `reset`).
//! - **Store routes** (a store is needed; without one: 503 `no_store`; a store that cannot be
//!   read: 503 `store_unavailable`; `limit` is 1–1000, default 100, else 400):
//!   `GET /v1/connections?status=&provider=&customer=&q=&limit=&cursor=` (one page, worst
//!   first then id: `{items, next_cursor, total}`; an item is the stored connection plus
//!   `since` and `actions` — `[{kind, destructive}]`, by its provider's rule
//!   ([`connhealth_core::Provider::actions`]); a cursor not issued here is 400;
//!   `group=customer` pages customers worst first by their worst matching status, then
//!   by `{provider}:{customer_id}`, each item carrying `customer_status`, with cursors of its
//!   own; `timeline=24h|7d|30d|90d` adds each item's status changes in that window as
//!   `timeline: [{at, from, to}]`), `GET /v1/connections/{id}/history?limit=&before=` (newest first: `{items,
//!   next_before}`), `GET /v1/uptime?window=24h|7d|30d|90d&by=provider|customer|connection`
//!   (+ `provider`, `customer`; `{window, from, to, items}`), and `GET /v1/events?after=&limit=`
//!   (also with `Accept: application/json`): `{items, next_after}`, oldest first. With a store,
//!   `GET /v1/connections/{id}` also carries `since`; it always carries `actions`.
//! - **`GET /metrics`** — Prometheus text format 0.0.4: `connhealth_ready`,
//!   `connhealth_connections{provider,status}` (all eight statuses of every provider, zeros
//!   included), `connhealth_provider_up{provider}` (1 when the last outcome was `ok` or
//!   `partial`), `connhealth_last_poll_duration_seconds`, `connhealth_last_poll_timestamp_seconds`,
//!   `connhealth_polls_total`, `connhealth_poll_errors_total{provider,kind}`,
//!   `connhealth_events_total{event}`, with a store `connhealth_store_write_failures_total`,
//!   `connhealth_store_write_failing`, `connhealth_store_pending_polls`,
//!   `connhealth_store_pending_events`, `connhealth_store_dropped_events_total`, and, for providers whose HTTP counters were registered
//!   with [`crate::Server::with_http_stats`], `connhealth_http_retries_total{provider}`.
//!   The schedule ([`connhealth_core::schedule`]): `connhealth_schedule_due_rechecks`,
//!   `connhealth_schedule_rechecks_in_flight`, `connhealth_schedule_customers`,
//!   `connhealth_schedule_oldest_customer_age_seconds`,
//!   `connhealth_schedule_rechecks_total{provider}` and, after a sweep,
//!   `connhealth_schedule_achievable_staleness_seconds`,
//!   `connhealth_schedule_max_staleness_seconds`,
//!   `connhealth_schedule_sweep_customers_per_second`.
//!   Poll errors are counted from the providers' outcome entries; an entry identical to the
//!   previous poll's is taken to be carried over (a provider skipped because it is rate
//!   limited) and not counted again.
//! - **`GET /healthz`** — 200 `{"status":"ok"}`, always, without a token.
//! - **`GET /readyz`** — 200 `{"status":"ready","warnings":[{code, message}]}` once the first
//!   poll finished, else 503 `not_ready`. A warning (`state_save_failed`: the `--state` file
//!   cannot be written; `store_write_failed`: the store cannot be written, polls are kept in
//!   memory; `store_events_dropped`: past that bound, events were never stored;
//!   `staleness_budget`: at the sweep rate achieved, customers get staler than
//!   `max_staleness` between sweeps, with the numbers) never makes it a 503, which would
//!   empty a load balancer.
//! - **At the connection cap** (see [`crate::ServerConfig::max_connections`]) the overflow
//!   connections answer `/healthz` as usual and every other route 503 `busy` with
//!   `Retry-After: 1`.
//! - **`GET /openapi.json`** — the OpenAPI 3.1 document of these routes, with component
//!   schemas for `HealthReport`, `Connection`, `Change` and `Error`.
//! - **`GET /`** — the dashboard (one HTML page, inline CSS and JS, no external resource).
//! - **`POST /v1/webhooks/{name}`** — a provider's signed webhook (no token: the signature
//!   is its authentication), in DESIGN.md's order: 404, 503 `no_store`, 413, 401,
//!   400, 429 with `Retry-After`, 200 `{"duplicate":true}`, 202 `{"accepted":true}`.
//! - **`POST /v1/refresh`** `{"provider", "customer_id"}` — queue a targeted refresh of one
//!   customer (e.g. after a Channel3 connect flow): 202 `{"accepted":true}`; its changes are
//!   stored and published with `source: "refresh"`. A bad body is 400, an unknown provider
//!   404, a full queue 429 with `Retry-After`, no store 503 `no_store`.
//! - **Notifications** ([`crate::Server::with_notifier`]; a store is needed, else 503
//!   `no_store`): `GET /v1/notifications?sink=&state=&limit=` — the outbox, newest first:
//!   `{items: [{id, event_id, sink, message_id, state, attempts, next_attempt_at,
//!   last_error}], sinks: [{name, kind, disabled, disabled_at, disabled_reason}]}` (`state` one
//!   of `pending`, `delivering`, `delivered`, `failed`, `muted`, `sink_disabled`; another is
//!   400; `last_error` never carries a URL or a secret). `GET /v1/mutes` — `{items}`: the
//!   config's `[[mute]]` tables (`source: "config"`, ids `config-N`) then the stored ones
//!   (`source: "api"`, integer ids). `POST /v1/mutes` `{match: {provider?, customer?,
//!   connection?}, until, reason}` (admin token) — 201 with the stored mute; a bad body, an
//!   empty `match` or an `until` not in the future is 400. `DELETE /v1/mutes/{id}` (admin
//!   token) — 200 `{deleted}`; `config-N` is 409 `conflict` (edit the file), an unknown id 404.
//! - **`POST /v1/connections/{id}/actions/{kind}`** — perform an action (admin token; a body is
//!   optional, but must be JSON when present, else 400): 200 `{kind, ok, url?, connection?,
//!   message}`; 404 for an unknown connection or a kind it does not support; 429 with
//!   `Retry-After` and `retry_at` when a rate rule forbids it now; 502 `ok: false` when the
//!   provider failed; 503 `no_store` without a store. Every authenticated attempt is one audit
//!   row; a changed connection is an event of source `action`, recorded before the answer
//!   (see [`crate::action`]).
//! - **`GET /v1/audit?before=&limit=`** — the audit log, newest first: `{items, next_before}`.
//! - Anything else: 404 `not_found`.
//!
//! # Rules for every request
//!
//! 1. Only `GET` and `HEAD`, but for the admin routes (`POST /v1/refresh`, `POST /v1/mutes`,
//!    `DELETE /v1/mutes/{id}`, the action route) and the webhook route (which is outside these
//!    rules): any other method is 405 `method_not_allowed` with `Allow: GET, HEAD` (so CORS
//!    preflights fail too).
//! 2. No request body (but for the admin routes): a `Content-Length` above 0 or any
//!    `Transfer-Encoding` is 413 `body_not_accepted`.
//! 3. The admin routes (`POST /v1/refresh`, `POST /v1/mutes`, `DELETE /v1/mutes/{id}`,
//!    `POST /v1/connections/{id}/actions/{kind}`) need the **admin token** ([`crate::ServerConfig::admin_token`],
//!    `Authorization: Bearer`), on loopback too: none configured is 403 `forbidden`, a
//!    missing or wrong one 401 `unauthorized`. The admin token also opens every `GET`.
//!    No cookie is ever read, so a cross-site page cannot forge a request.
//! 4. With a token configured, every route but `/healthz` needs `Authorization: Bearer
//!    <token>` (compared in constant time), else 401 `unauthorized` with
//!    `WWW-Authenticate: Bearer`. Browsers cannot set that header on a page load or on an
//!    `EventSource`, so `/` and `/v1/events` (only those) also take the token as the query
//!    parameter `access_token` (alias `token`); the dashboard opened as `/?token=…` passes it
//!    on. Mind that a token in a URL can end up in browser history and proxy logs.
//! 5. Bodies are compressed with gzip or br when `Accept-Encoding` asks (above 32 bytes),
//!    but never the `text/event-stream` of `/v1/events` (compression would hold events back).
//!    The `ETag` is the uncompressed body's, whatever the encoding.
//! 6. Every response has `X-Content-Type-Options: nosniff`, `Cache-Control: no-store`,
//!    `Referrer-Policy: no-referrer` and, unless the route sets its own, the
//!    Content-Security-Policy `default-src 'none'; frame-ancestors 'none'`. The dashboard's CSP
//!    allows only its own inline script and style, by SHA-256 hash, and fetches to its own
//!    origin. No CORS header is ever sent (cross-origin pages cannot read anything).

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use connhealth_core::{HealthReport, Status, Summary};

use crate::http::{self as h, JSON};
use crate::state::AppState;
use crate::{metrics, sse, stored};

/// The dashboard page.
const DASHBOARD: &str = include_str!("dashboard.html");
/// The OpenAPI document.
const OPENAPI: &str = include_str!("openapi.json");

/// The routes documented in the [module docs](self), with their rules, over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/v1/report", get(report))
        .route("/v1/summary", get(summary))
        .route("/v1/connections", get(stored::connections))
        .route("/v1/connections/{id}", get(connection))
        .route("/v1/connections/{id}/history", get(stored::history))
        .route("/v1/uptime", get(stored::uptime))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics_route))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .route("/v1/refresh", post(crate::webhook::refresh))
        .route("/v1/notifications", get(crate::notifications::list))
        .route(
            "/v1/mutes",
            get(crate::notifications::mutes).post(crate::notifications::add_mute),
        )
        .route(
            "/v1/mutes/{id}",
            axum::routing::delete(crate::notifications::delete_mute),
        )
        .route(
            "/v1/connections/{id}/actions/{kind}",
            post(crate::action::perform),
        )
        .route("/v1/audit", get(crate::action::audit))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state.clone())
        // Webhooks are POSTed by providers without the bearer token: outside the guard (the
        // signature is their authentication; see crate::webhook).
        .merge(
            Router::new()
                .route("/v1/webhooks/{name}", post(crate::webhook::receive))
                .with_state(state),
        )
        .layer(compression())
}

/// gzip and br when the client asks (`Accept-Encoding`), for bodies above 32 bytes; never
/// for `text/event-stream` (compressing buffers events) nor images (tower-http's default
/// predicate).
fn compression() -> tower_http::compression::CompressionLayer {
    tower_http::compression::CompressionLayer::new()
        .gzip(true)
        .br(true)
        .no_deflate()
        .no_zstd()
        // Fast levels: the report is tens of MB at fleet scale and compressed per request.
        .quality(tower_http::CompressionLevel::Fastest)
}

/// What an overflow connection (past the connection cap) serves: `/healthz` as usual, every
/// other route 503 `busy`.
pub(crate) fn busy_router(state: AppState) -> Router {
    router(state).layer(middleware::from_fn(busy))
}

async fn busy(req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let mut r = h::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "the server is at its connection cap; retry shortly",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Routes that accept the token as a query parameter (browsers cannot set headers there).
fn takes_query_token(path: &str) -> bool {
    path == "/" || path == "/v1/events"
}

fn query_token(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "access_token" || k == "token")
        .map(|(_, v)| v.into_owned())
}

/// Whether an `Authorization: Bearer` header of `req` carries `token`.
fn bearer_matches(req: &Request, token: &connhealth_core::Secret) -> bool {
    let expected = token.expose().as_bytes();
    req.headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_owned())
        })
        .any(|given| h::constant_time_eq(given.as_bytes(), expected))
}

fn authorized(state: &AppState, req: &Request) -> bool {
    let Some(token) = state.token() else {
        return true;
    };
    if bearer_matches(req, token) || state.admin_token().is_some_and(|a| bearer_matches(req, a)) {
        return true;
    }
    let expected = token.expose().as_bytes();
    takes_query_token(req.uri().path())
        && query_token(req.uri().query())
            .is_some_and(|given| h::constant_time_eq(given.as_bytes(), expected))
}

fn has_body(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().parse::<u64>() != Ok(0))
}

/// Method, body and token rules, then the security headers on the way out.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let admin_route = (req.method() == Method::POST
        && (path == "/v1/refresh" || path == "/v1/mutes" || crate::action::is_action_path(path)))
        || (req.method() == Method::DELETE && path.starts_with("/v1/mutes/"));
    let mut resp = if admin_route {
        match state.admin_token() {
            None => h::error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "no admin token configured (--admin-token or CONNHEALTH_ADMIN_TOKEN): this route is off",
            ),
            Some(admin) if !bearer_matches(&req, admin) => {
                let mut r = h::error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong admin token (Authorization: Bearer <admin token>)",
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"connhealth-admin\""),
                );
                r
            }
            Some(_) => next.run(req).await,
        }
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = h::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{} is not accepted: this API is read-only (GET, HEAD)",
                req.method()
            ),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else if has_body(req.headers()) {
        h::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_not_accepted",
            "requests must not have a body",
        )
    } else if req.uri().path() != "/healthz" && !authorized(&state, &req) {
        let mut r = h::error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token (Authorization: Bearer <token>)",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"connhealth\""),
        );
        r
    } else {
        next.run(req).await
    };
    let headers = resp.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    resp
}

async fn dashboard() -> Response {
    let csp = HeaderValue::from_static(h::dashboard_csp(DASHBOARD));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        DASHBOARD,
    )
        .into_response()
}

/// The `/v1/report` filters. `None`: not filtered on that field.
#[derive(Debug, Default, PartialEq)]
struct Filter {
    providers: Option<Vec<String>>,
    statuses: Option<Vec<Status>>,
    customers: Option<Vec<String>>,
}

impl Filter {
    fn parse(query: Option<&str>) -> Result<Filter, String> {
        let mut f = Filter::default();
        let Some(q) = query else { return Ok(f) };
        for (key, value) in url::form_urlencoded::parse(q.as_bytes()) {
            let values = value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned);
            match key.as_ref() {
                "provider" => f.providers.get_or_insert_with(Vec::new).extend(values),
                "customer" => f.customers.get_or_insert_with(Vec::new).extend(values),
                "status" => {
                    let list = f.statuses.get_or_insert_with(Vec::new);
                    for v in values {
                        list.push(v.parse::<Status>().map_err(|e| format!("status: {e}"))?);
                    }
                }
                other => {
                    return Err(format!(
                    "unknown query parameter {other:?}; filters are provider, status and customer"
                ))
                }
            }
        }
        // `?status=` alone filters nothing.
        if f.providers.as_ref().is_some_and(Vec::is_empty) {
            f.providers = None;
        }
        if f.customers.as_ref().is_some_and(Vec::is_empty) {
            f.customers = None;
        }
        if f.statuses.as_ref().is_some_and(Vec::is_empty) {
            f.statuses = None;
        }
        Ok(f)
    }

    fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    fn apply(&self, report: &HealthReport) -> HealthReport {
        let keep_provider = |p: &str| {
            self.providers
                .as_ref()
                .is_none_or(|l| l.iter().any(|x| x == p))
        };
        let connections: Vec<_> = report
            .connections
            .iter()
            .filter(|c| keep_provider(&c.provider))
            .filter(|c| self.statuses.as_ref().is_none_or(|l| l.contains(&c.status)))
            .filter(|c| {
                self.customers
                    .as_ref()
                    .is_none_or(|l| l.contains(&c.customer.id))
            })
            .cloned()
            .collect();
        let selected: Vec<_> = report
            .providers
            .iter()
            .filter(|p| keep_provider(&p.provider))
            .cloned()
            .collect();
        HealthReport {
            generated_at: report.generated_at,
            overall: HealthReport::roll_up(&selected, &connections),
            summary: Summary::of(connections.iter().map(|c| &**c)),
            providers: report.providers.clone(),
            connections,
        }
    }
}

async fn report(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let filter = match Filter::parse(query.as_deref()) {
        Ok(f) => f,
        Err(msg) => return h::error(StatusCode::BAD_REQUEST, "bad_request", msg),
    };
    let Some(snap) = state.snapshot() else {
        return h::not_ready();
    };
    if filter.is_empty() {
        return match snap.json() {
            Some((body, etag)) => h::json_with_etag(&headers, body.clone(), etag),
            None => h::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the report could not be serialized",
            ),
        };
    }
    let filtered = filter.apply(&snap.report);
    match serde_json::to_vec(&filtered) {
        Ok(body) => {
            let etag = h::etag_of(&body);
            h::json_with_etag(&headers, Bytes::from(body), &etag)
        }
        Err(e) => h::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot serialize the report: {e}"),
        ),
    }
}

async fn summary(State(state): State<AppState>) -> Response {
    let Some(snap) = state.snapshot() else {
        return h::not_ready();
    };
    let mut view = snap.summary.clone();
    let webhooks = stored::last_webhook_at(&state).await;
    for p in &mut view.providers {
        p.last_webhook_at = webhooks.get(&p.provider).copied();
    }
    match serde_json::to_value(&view) {
        Ok(v) => h::json_value(StatusCode::OK, &v),
        Err(e) => h::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot serialize the summary: {e}"),
        ),
    }
}

async fn connection(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Path(id) = match id {
        Ok(id) => id,
        Err(e) => return h::error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    let Some(snap) = state.snapshot() else {
        return h::not_ready();
    };
    let Some(conn) = snap.report.connection(&id) else {
        return h::error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no connection {id:?} in the current report"),
        );
    };
    /// The connection with, from the store, when its current status began.
    #[derive(serde::Serialize)]
    struct WithSince<'a> {
        #[serde(flatten)]
        connection: &'a connhealth_core::Connection,
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<chrono::DateTime<chrono::Utc>>,
        actions: Vec<connhealth_core::Action>,
    }
    let value = WithSince {
        connection: conn,
        since: stored::since_of(&state, &id).await,
        actions: crate::action::actions_of(&state, conn),
    };
    match serde_json::to_vec(&value) {
        Ok(body) => {
            let etag = h::etag_of(&body);
            h::json_with_etag(&headers, Bytes::from(body), &etag)
        }
        Err(e) => h::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot serialize the connection: {e}"),
        ),
    }
}

async fn events(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let wants_json = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"));
    let has_after = url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .any(|(k, _)| k == "after");
    if wants_json || has_after {
        return stored::events_page(&state, query.as_deref()).await;
    }
    sse::response(&state, &headers).await
}

async fn metrics_route(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        metrics::render(&state),
    )
        .into_response()
}

async fn healthz() -> Response {
    h::json_value(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.role().cannot_reach_store() {
        // A follower serves everything from the store: without it, it is not ready.
        h::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "this replica follows and cannot read the store",
        )
    } else if state.is_ready() {
        h::json_value(
            StatusCode::OK,
            &serde_json::json!({ "status": "ready", "warnings": state.warnings() }),
        )
    } else {
        h::not_ready()
    }
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(JSON))],
        Body::from(OPENAPI),
    )
        .into_response()
}

async fn not_found(req: Request) -> Response {
    h::error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {}", req.uri().path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_repeated_and_comma_separated_values() {
        let f = Filter::parse(Some(
            "status=degraded,unknown&status=pending&provider=subtotal&customer=a%2Cb,c&customer=",
        ))
        .unwrap();
        assert_eq!(
            f.statuses,
            Some(vec![Status::Degraded, Status::Unknown, Status::Pending])
        );
        assert_eq!(f.providers, Some(vec!["subtotal".to_owned()]));
        // A percent-encoded comma still separates: ids with commas cannot be filtered on.
        assert_eq!(
            f.customers,
            Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
        );
        assert!(Filter::parse(Some("status=")).unwrap().is_empty());
        assert!(Filter::parse(None).unwrap().is_empty());
        assert!(Filter::parse(Some("status=fine")).is_err());
        assert!(Filter::parse(Some("colour=red")).is_err());
    }

    #[test]
    fn the_dashboard_has_one_inline_script_and_style_and_no_external_resource() {
        assert_eq!(DASHBOARD.matches("<script").count(), 1);
        assert_eq!(DASHBOARD.matches("<style").count(), 1);
        for needle in ["src=\"http", "href=\"http", "@import", "url(http", "//cdn"] {
            assert!(!DASHBOARD.contains(needle), "{needle}");
        }
    }

    #[test]
    fn the_openapi_document_is_json() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    }
}
