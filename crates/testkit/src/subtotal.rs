//! Simulator of Subtotal's connections API (`https://api.subtotal.com`).
//!
//! [`SubtotalSim::base_url`] is `http://127.0.0.1:PORT`. Every route needs `x-api-key`
//! (header names are case-insensitive): missing → 401 `{"detail":"Missing API key"}`, wrong →
//! 403 `{"detail":"Invalid API key"}`.
//!
//! | route name | request |
//! | --- | --- |
//! | [`LIST_CONNECTIONS`] | `GET /connections?customer_id=` |
//! | [`CREATE_CONNECTION`] | `POST /connections` |
//! | [`GET_CONNECTION`] | `GET /connections/{connection_id}` |
//! | [`UPDATE_CONNECTION`] | `PATCH /connections/{connection_id}` |
//! | [`DELETE_CONNECTION`] | `DELETE /connections/{connection_id}` |
//! | [`CREATE_TOKEN`] | `POST /connections/{connection_id}/token` |
//! | [`RETAILERS`] | `GET /retailers` |
//!
//! Choices where the provider's docs are unconfirmed:
//!
//! * `GET /connections` is not paginated; a missing `customer_id` → FastAPI 422
//!   (`loc: ["query","customer_id"]`); an unknown customer → `{"connections":[]}`.
//! * `is_simulated` appears only on simulated connections (as `true`).
//! * `POST /connections/{id}/token` answers 201 `{"connection_token": <JWT>}`; the JWT payload
//!   has `sub` (the connection id), `scope`, `iat` and `exp`. Tokens live
//!   [`DEFAULT_TOKEN_TTL`] (1 hour) unless [`SubtotalSim::set_token_ttl`] says otherwise.
//!   Only the PATCH route requires a connection token; the GET, DELETE and token routes need
//!   only the API key.
//! * PATCH accepts `Authorization: Bearer <token>` and the docs' `Bearer: <token>` variant.
//!   Any problem with the token (missing, unknown, expired, revoked, minted for another
//!   connection, `link` scope) → 401 `{"detail":"Invalid or expired connection token"}`; it is
//!   checked before the connection's existence (404) and the body (422).
//! * Create connection accepts any `retailer_id` (not checked against `/retailers`) and
//!   answers 201 with status `initialized`.
//! * `GET /retailers` items are `{retailer_id, name, enabled}`.
//! * Unknown connection → 404 `{"detail":"Connection not found"}`; DELETE answers 204.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::data::{self, SubtotalConnection, SubtotalData, SubtotalRetailer};
use crate::faults::{Faults, Stats};
use crate::mutate::Vocab;
use crate::server::{self, detail, json_response, validation, Core, Server};
use crate::util::{self, SimClock};

/// Route name of `GET /connections?customer_id=`.
pub const LIST_CONNECTIONS: &str = "list_connections";
/// Route name of `GET /connections/{connection_id}`.
pub const GET_CONNECTION: &str = "get_connection";
/// Route name of `POST /connections`.
pub const CREATE_CONNECTION: &str = "create_connection";
/// Route name of `PATCH /connections/{connection_id}`.
pub const UPDATE_CONNECTION: &str = "update_connection";
/// Route name of `POST /connections/{connection_id}/token`.
pub const CREATE_TOKEN: &str = "create_token";
/// Route name of `DELETE /connections/{connection_id}`.
pub const DELETE_CONNECTION: &str = "delete_connection";
/// Route name of `GET /retailers`.
pub const RETAILERS: &str = "retailers";
/// Every route name of this simulator.
pub const ROUTES: [&str; 7] = [
    LIST_CONNECTIONS,
    GET_CONNECTION,
    CREATE_CONNECTION,
    UPDATE_CONNECTION,
    CREATE_TOKEN,
    DELETE_CONNECTION,
    RETAILERS,
];

/// Default connection-token lifetime (1 hour; the real lifetime is undocumented).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60 * 60);

const INVALID_TOKEN: &str = "Invalid or expired connection token";

static VOCAB: Vocab = Vocab {
    enum_keys: &["status", "scope"],
    optional_keys: &["email", "mobile", "is_simulated"],
};

fn classify(method: &Method, path: &str) -> Option<&'static str> {
    let segs = server::segments(path);
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["connections"]) => Some(LIST_CONNECTIONS),
        ("POST", ["connections"]) => Some(CREATE_CONNECTION),
        ("GET", ["connections", id]) if !id.is_empty() => Some(GET_CONNECTION),
        ("PATCH", ["connections", id]) if !id.is_empty() => Some(UPDATE_CONNECTION),
        ("DELETE", ["connections", id]) if !id.is_empty() => Some(DELETE_CONNECTION),
        ("POST", ["connections", id, "token"]) if !id.is_empty() => Some(CREATE_TOKEN),
        ("GET", ["retailers"]) => Some(RETAILERS),
        _ => None,
    }
}

#[derive(Debug, Clone)]
struct TokenInfo {
    connection_id: String,
    scope: String,
    exp: i64,
    revoked: bool,
}

#[derive(Debug)]
struct Store {
    retailers: Vec<SubtotalRetailer>,
    connections: Vec<SubtotalConnection>,
    by_id: HashMap<String, usize>,
    by_customer: HashMap<String, Vec<usize>>,
    tokens: HashMap<String, TokenInfo>,
    token_ttl: Duration,
    minted: u64,
}

impl Store {
    fn reindex(&mut self) {
        self.by_id.clear();
        self.by_customer.clear();
        for (i, c) in self.connections.iter().enumerate() {
            self.by_id.insert(c.connection_id.clone(), i);
            self.by_customer
                .entry(c.customer_id.clone())
                .or_default()
                .push(i);
        }
    }

    fn get(&self, id: &str) -> Option<&SubtotalConnection> {
        self.by_id.get(id).and_then(|&i| self.connections.get(i))
    }

    fn push(&mut self, c: SubtotalConnection) {
        let i = self.connections.len();
        self.by_id.insert(c.connection_id.clone(), i);
        self.by_customer
            .entry(c.customer_id.clone())
            .or_default()
            .push(i);
        self.connections.push(c);
    }
}

#[derive(Debug)]
struct Shared {
    api_key: String,
    store: Mutex<Store>,
    clock: SimClock,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running Subtotal API simulator. Dropping it (or [`shutdown`](Self::shutdown)) stops the
/// server.
#[derive(Debug)]
pub struct SubtotalSim {
    shared: Arc<Shared>,
    faults: Faults,
    stats: Stats,
    server: Server,
    webhooks: crate::webhooks::EmitterSlot,
    event_seq: std::sync::atomic::AtomicU64,
}

impl SubtotalSim {
    /// Start on `127.0.0.1` on a free port, serving `data`, in the caller's tokio runtime.
    pub async fn start(data: SubtotalData) -> io::Result<Self> {
        Self::start_on_port(data, 0).await
    }

    /// Start with [`data::subtotal_customers`]`(customers, seed)` (the documented example
    /// customer first).
    pub async fn start_generated(customers: usize, seed: u64) -> io::Result<Self> {
        Self::start(data::subtotal_customers(customers, seed)).await
    }

    /// Start on `127.0.0.1:port` (0 = any free port).
    pub async fn start_on_port(data: SubtotalData, port: u16) -> io::Result<Self> {
        let listener = server::bind(port).await?;
        let mut store = Store {
            retailers: data.retailers,
            connections: data.connections,
            by_id: HashMap::new(),
            by_customer: HashMap::new(),
            tokens: HashMap::new(),
            token_ttl: DEFAULT_TOKEN_TTL,
            minted: 0,
        };
        store.reindex();
        let shared = Arc::new(Shared {
            api_key: data.api_key,
            store: Mutex::new(store),
            clock: SimClock::new(),
        });
        let faults = Faults::default();
        let stats = Stats::default();
        let (tx, rx) = server::shutdown_channel();
        let core = Arc::new(Core {
            faults: faults.clone(),
            stats: stats.clone(),
            vocab: &VOCAB,
            classify,
            error_body: Box::new(server::fastapi_error_body),
            shutdown: rx,
        });
        let router = Router::new()
            .route(
                "/connections",
                get(list_connections).post(create_connection),
            )
            .route(
                "/connections/{connection_id}",
                get(get_connection)
                    .patch(update_connection)
                    .delete(delete_connection),
            )
            .route("/connections/{connection_id}/token", post(create_token))
            .route("/retailers", get(retailers))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(shared.clone());
        let server = server::serve(listener, router, core, tx)?;
        Ok(SubtotalSim {
            shared,
            faults,
            stats,
            server,
            webhooks: Default::default(),
            event_seq: Default::default(),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The bound loopback address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The accepted `x-api-key`.
    pub fn api_key(&self) -> &str {
        &self.shared.api_key
    }

    /// Fault rules of this simulator.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Request statistics of this simulator.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Distinct customer ids, in first-appearance order.
    pub fn customer_ids(&self) -> Vec<String> {
        let store = self.shared.lock();
        let mut seen = std::collections::HashSet::new();
        store
            .connections
            .iter()
            .filter(|c| seen.insert(c.customer_id.as_str()))
            .map(|c| c.customer_id.clone())
            .collect()
    }

    /// Every connection id, in order.
    pub fn connection_ids(&self) -> Vec<String> {
        self.shared
            .lock()
            .connections
            .iter()
            .map(|c| c.connection_id.clone())
            .collect()
    }

    /// One connection.
    pub fn connection(&self, connection_id: &str) -> Option<SubtotalConnection> {
        self.shared.lock().get(connection_id).cloned()
    }

    /// A customer's connections (what `GET /connections?customer_id=` returns).
    pub fn connections_of(&self, customer_id: &str) -> Vec<SubtotalConnection> {
        let store = self.shared.lock();
        store
            .by_customer
            .get(customer_id)
            .map(|ix| {
                ix.iter()
                    .filter_map(|&i| store.connections.get(i).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Set a connection's status (any string). Returns false if it does not exist. With
    /// webhooks on, `active`, `unauthenticated` and `disconnected` emit
    /// `connection.activated|unauthenticated|disconnected`.
    pub fn set_status(&self, connection_id: &str, status: &str) -> bool {
        let changed = {
            let mut store = self.shared.lock();
            match store.by_id.get(connection_id).copied() {
                Some(i) => {
                    store.connections[i].status = status.to_string();
                    Some(store.connections[i].clone())
                }
                None => None,
            }
        };
        match changed {
            Some(c) => {
                self.emit_for(&c);
                true
            }
            None => false,
        }
    }

    /// Add a connection (one with the same id is replaced); with webhooks on, emits the
    /// event of its status as [`Self::set_status`] does.
    pub fn add_connection(&self, connection: SubtotalConnection) {
        let copy = connection.clone();
        {
            let mut store = self.shared.lock();
            match store.by_id.get(&connection.connection_id).copied() {
                Some(i) => {
                    store.connections[i] = connection;
                    store.reindex();
                }
                None => store.push(connection),
            }
        }
        self.emit_for(&copy);
    }

    /// Turn on signed webhooks: from now on [`Self::set_status`] and [`Self::add_connection`]
    /// POST Subtotal's `connection.*` event to `url`: envelope `{type, id, payload:
    /// {connection: {connection_id, customer_id, retailer_id, status, email: null, mobile:
    /// null}}}`, headers `X-Subtotal-Timestamp` (unix seconds on the simulator's clock) and
    /// `X-Subtotal-Signature` (`v1=` + hex HMAC-SHA256 of `"{timestamp}.{body}"` keyed with
    /// `secret`, the destination's `signing_secret`). Needs a tokio runtime.
    pub fn emit_webhooks_to(&self, url: &str, secret: &str) -> crate::webhooks::WebhookEmitter {
        let e = crate::webhooks::WebhookEmitter::start(url, secret);
        self.webhooks.set(e.clone());
        e
    }

    /// The emitter, once [`Self::emit_webhooks_to`] was called.
    pub fn webhooks(&self) -> Option<crate::webhooks::WebhookEmitter> {
        self.webhooks.get()
    }

    fn emit_for(&self, c: &SubtotalConnection) {
        let event_type = match c.status.as_str() {
            "active" => "connection.activated",
            "unauthenticated" => "connection.unauthenticated",
            "disconnected" => "connection.disconnected",
            _ => return,
        };
        self.emit_webhook(event_type, c);
    }

    /// Queue one signed webhook of `event_type` about `connection` (`None` when webhooks are
    /// off). Returns its event id.
    pub fn emit_webhook(
        &self,
        event_type: &str,
        connection: &SubtotalConnection,
    ) -> Option<String> {
        let emitter = self.webhooks.get()?;
        let n = self
            .event_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let event_id = format!("01EVT{n:021}");
        let body = serde_json::to_vec(&serde_json::json!({
            "type": event_type,
            "id": event_id,
            "payload": {"connection": {
                "connection_id": connection.connection_id,
                "customer_id": connection.customer_id,
                "retailer_id": connection.retailer_id,
                "status": connection.status,
                "email": null,
                "mobile": null,
            }},
        }))
        .unwrap_or_default();
        let ts = self.shared.clock.now_secs().to_string();
        let sig = hex::encode(crate::webhooks::hmac_sha256(
            &emitter.secret,
            &[ts.as_bytes(), b".", &body],
        ));
        emitter.send(crate::webhooks::Job {
            event_id: event_id.clone(),
            event_type: event_type.to_owned(),
            headers: vec![
                ("X-Subtotal-Timestamp", ts),
                ("X-Subtotal-Signature", format!("v1={sig}")),
            ],
            body,
        });
        Some(event_id)
    }

    /// Remove a connection; returns whether it existed.
    pub fn remove_connection(&self, connection_id: &str) -> bool {
        let mut store = self.shared.lock();
        let before = store.connections.len();
        store
            .connections
            .retain(|c| c.connection_id != connection_id);
        let removed = before != store.connections.len();
        if removed {
            store.reindex();
        }
        removed
    }

    /// The retailer catalogue served by `GET /retailers`.
    pub fn retailers(&self) -> Vec<SubtotalRetailer> {
        self.shared.lock().retailers.clone()
    }

    /// Replace the retailer catalogue.
    pub fn set_retailers(&self, retailers: Vec<SubtotalRetailer>) {
        self.shared.lock().retailers = retailers;
    }

    /// Lifetime of connection tokens minted from now on (default [`DEFAULT_TOKEN_TTL`]).
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.shared.lock().token_ttl = ttl;
    }

    /// Revoke every connection token minted so far.
    pub fn revoke_tokens(&self) {
        for t in self.shared.lock().tokens.values_mut() {
            t.revoked = true;
        }
    }

    /// Expire every connection token minted so far.
    pub fn expire_all_tokens(&self) {
        for t in self.shared.lock().tokens.values_mut() {
            t.exp = i64::MIN;
        }
    }

    /// Connection tokens minted so far.
    pub fn tokens_minted(&self) -> u64 {
        self.shared.lock().minted
    }

    /// Stop the server gracefully and wait for it (at most 5 s).
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

#[derive(Serialize)]
struct ConnectionsBody<'a> {
    connections: Vec<&'a SubtotalConnection>,
}

#[derive(Serialize)]
struct RetailersBody<'a> {
    retailers: &'a [SubtotalRetailer],
}

async fn not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Not Found")
}

async fn method_not_allowed() -> Response {
    detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, Response> {
    path.map(|Path(id)| id)
        .map_err(|_| detail(StatusCode::NOT_FOUND, "Connection not found"))
}

fn connection_not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Connection not found")
}

async fn list_connections(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(r) = server::check_api_key(&headers, &shared.api_key) {
        return r;
    }
    let pairs = util::query_pairs(query.as_deref());
    let Some(customer) = util::query_get(&pairs, "customer_id") else {
        return validation(vec![server::missing_item(&["query", "customer_id"], true)]);
    };
    let store = shared.lock();
    let connections: Vec<&SubtotalConnection> = store
        .by_customer
        .get(customer)
        .map(|ix| {
            ix.iter()
                .filter_map(|&i| store.connections.get(i))
                .collect()
        })
        .unwrap_or_default();
    json_response(StatusCode::OK, &ConnectionsBody { connections })
}

async fn get_connection(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    if let Err(r) = server::check_api_key(&headers, &shared.api_key) {
        return r;
    }
    let id = match path_id(path) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let store = shared.lock();
    match store.get(&id) {
        Some(c) => json_response(StatusCode::OK, c),
        None => connection_not_found(),
    }
}

fn email_item(email: &str) -> Option<Value> {
    if email.contains('@') {
        None
    } else {
        Some(json!({
            "loc": ["body", "email"],
            "msg": "value is not a valid email address: An email address must have an @-sign.",
            "type": "value_error",
            "input": email,
        }))
    }
}

fn required_string(
    map: &Map<String, Value>,
    key: &str,
    errors: &mut Vec<Value>,
    body: &Value,
) -> Option<String> {
    match server::opt_string(map, key) {
        Ok(Some(s)) => Some(s),
        Ok(None) => {
            errors.push(json!({
                "type": "missing", "loc": ["body", key], "msg": "Field required", "input": body,
            }));
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

async fn create_connection(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = server::check_api_key(&headers, &shared.api_key) {
        return r;
    }
    let map = match server::parse_body_object(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let whole = Value::Object(map.clone());
    let mut errors = Vec::new();
    let customer_id = required_string(&map, "customer_id", &mut errors, &whole);
    let retailer_id = required_string(&map, "retailer_id", &mut errors, &whole);
    let email = server::opt_string(&map, "email").unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    if let Some(item) = email.as_deref().and_then(email_item) {
        errors.push(item);
    }
    let mobile = server::opt_string(&map, "mobile").unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let (Some(customer_id), Some(retailer_id)) = (customer_id, retailer_id) else {
        return validation(errors);
    };
    if !errors.is_empty() {
        return validation(errors);
    }
    let millis = shared.clock.now_millis().max(0) as u64;
    let mut store = shared.lock();
    let mut rng = fastrand::Rng::new();
    let mut connection_id = util::ulid(&mut rng, millis);
    while store.by_id.contains_key(&connection_id) {
        connection_id = util::ulid(&mut rng, millis);
    }
    let c = SubtotalConnection {
        connection_id,
        customer_id,
        retailer_id,
        status: "initialized".to_string(),
        email,
        mobile,
        is_simulated: None,
    };
    store.push(c.clone());
    json_response(StatusCode::CREATED, &c)
}

async fn create_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    if let Err(r) = server::check_api_key(&headers, &shared.api_key) {
        return r;
    }
    let id = match path_id(path) {
        Ok(id) => id,
        Err(r) => return r,
    };
    if shared.lock().get(&id).is_none() {
        return connection_not_found();
    }
    let map = match server::parse_body_object(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let scope = match map.get("scope") {
        None | Some(Value::Null) => {
            return validation(vec![json!({
                "type": "missing", "loc": ["body", "scope"], "msg": "Field required",
                "input": Value::Object(map.clone()),
            })])
        }
        Some(Value::String(s)) if s == "access" || s == "link" => s.clone(),
        Some(other) => {
            return validation(vec![json!({
                "type": "enum", "loc": ["body", "scope"],
                "msg": "Input should be 'link' or 'access'",
                "input": other, "ctx": { "expected": "'link' or 'access'" },
            })])
        }
    };
    let now = shared.clock.now_secs();
    let mut store = shared.lock();
    let exp = now.saturating_add(store.token_ttl.as_secs().min(i64::MAX as u64) as i64);
    let token = util::mint_jwt(&json!({
        "sub": id, "scope": scope, "iat": now, "exp": exp, "jti": util::random_id(16),
    }));
    store.tokens.insert(
        token.clone(),
        TokenInfo {
            connection_id: id,
            scope,
            exp,
            revoked: false,
        },
    );
    store.minted += 1;
    json_response(StatusCode::CREATED, &json!({ "connection_token": token }))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?.trim();
    let (scheme, rest) = v.split_at(v.find([' ', ':'])?);
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let t = rest.trim_start_matches(':').trim();
    (!t.is_empty()).then_some(t)
}

async fn update_connection(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    if let Err(r) = server::check_api_key(&headers, &shared.api_key) {
        return r;
    }
    let id = match path_id(path) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let now = shared.clock.now_secs();
    {
        let store = shared.lock();
        let valid = bearer(&headers)
            .and_then(|t| store.tokens.get(t))
            .is_some_and(|t| {
                !t.revoked && now < t.exp && t.scope == "access" && t.connection_id == id
            });
        if !valid {
            return detail(StatusCode::UNAUTHORIZED, INVALID_TOKEN);
        }
        if store.get(&id).is_none() {
            return connection_not_found();
        }
    }
    let map = match server::parse_body_object(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut errors = Vec::new();
    let mut field = |key: &str| {
        server::opt_string(&map, key).unwrap_or_else(|e| {
            errors.push(e);
            None
        })
    };
    let customer_id = field("customer_id");
    let email = field("email");
    let mobile = field("mobile");
    let status = field("status");
    if let Some(item) = email.as_deref().and_then(email_item) {
        errors.push(item);
    }
    if let Some(s) = status.as_deref().filter(|s| *s != "disconnected") {
        errors.push(json!({
            "type": "enum", "loc": ["body", "status"],
            "msg": "Input should be 'disconnected'", "input": s,
            "ctx": { "expected": "'disconnected'" },
        }));
    }
    if !errors.is_empty() {
        return validation(errors);
    }
    let mut store = shared.lock();
    let Some(i) = store.by_id.get(&id).copied() else {
        return connection_not_found();
    };
    let customer_changed = {
        let c = &mut store.connections[i];
        let mut changed = false;
        if let Some(cid) = customer_id {
            changed = cid != c.customer_id;
            c.customer_id = cid;
        }
        if let Some(e) = email {
            c.email = Some(e);
        }
        if let Some(m) = mobile {
            c.mobile = Some(m);
        }
        if let Some(s) = status {
            c.status = s;
        }
        changed
    };
    if customer_changed {
        store.reindex();
    }
    json_response(StatusCode::OK, &store.connections[i])
}

async fn delete_connection(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    if let Err(r) = server::check_api_key(&headers, &shared.api_key) {
        return r;
    }
    let id = match path_id(path) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let mut store = shared.lock();
    let before = store.connections.len();
    store.connections.retain(|c| c.connection_id != id);
    if store.connections.len() == before {
        return connection_not_found();
    }
    store.reindex();
    StatusCode::NO_CONTENT.into_response()
}

async fn retailers(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(r) = server::check_api_key(&headers, &shared.api_key) {
        return r;
    }
    let store = shared.lock();
    json_response(
        StatusCode::OK,
        &RetailersBody {
            retailers: &store.retailers,
        },
    )
}
