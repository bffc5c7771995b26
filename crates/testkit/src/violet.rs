//! Simulator of Violet's API (`https://sandbox-api.violet.io/v1`): login, token refresh and
//! the connection-health report.
//!
//! [`VioletSim::base_url`] is `http://127.0.0.1:PORT/v1`; every route lives under `/v1`.
//!
//! | route name | request |
//! | --- | --- |
//! | [`LOGIN`] | `POST /v1/login` |
//! | [`REFRESH`] | `GET /v1/auth/token` |
//! | [`CONNECTION_HEALTH`] | `GET /v1/operations/connection_health?app_id=&exclude_public=` |
//! | [`CONNECTION_HEALTH_MERCHANT`] | `GET /v1/operations/connection_health/{merchant_id}?app_id=&refresh=` |
//!
//! # Authentication
//!
//! Every route needs `X-Violet-App-Id` and `X-Violet-App-Secret` (missing or wrong → 403,
//! error_code 1003). Login takes `{username, password}` (wrong → 401, error_code 1002) and
//! returns the user object with `token` (a JWT whose payload has `exp`, unix seconds, and
//! `sub`) and `refresh_token`. `GET /v1/auth/token` takes the refresh token in
//! `X-Violet-Token` and returns `{"token": ...}` (unknown or revoked → 401, error_code 12).
//! The report routes take the access token in `X-Violet-Token`: missing or unknown → 401,
//! error_code 10; expired → 401 `{"status":401,"message":"Token has expired","error_code":11,
//! "timestamp":<epoch ms>}`.
//!
//! Error bodies are `{status, message, error_code, timestamp}`. Codes chosen here (Violet does
//! not document them beyond 11): 10 invalid/missing token, 11 expired token, 12 invalid
//! refresh token, 1001 malformed body, 1002 invalid credentials, 1003 invalid app credentials,
//! 1004 `app_id` not accessible (403), 2001 bad or missing query/path parameter (400),
//! 2004 merchant not found (404).
//!
//! # Time
//!
//! "Now" is the wall clock at start plus the time elapsed on tokio's clock, so a test with
//! `#[tokio::test(start_paused = true)]` expires tokens with `tokio::time::advance`.
//!
//! # Report
//!
//! `GET /v1/operations/connection_health` returns a JSON array of ConnectionHealth objects,
//! unpaginated. `app_id` is required (missing or not an integer → 400, another app → 403);
//! `exclude_public` defaults to `true` and then omits `distribution_type: PUBLIC` merchants
//! (the documented example, merchant 123, is PUBLIC, so it appears only with
//! `exclude_public=false` or on the per-merchant route). The per-merchant route returns one
//! object (unknown → 404); `refresh=true` is counted in
//! [`health_refreshes`](VioletSim::health_refreshes) and otherwise changes nothing.
//! [`set_camel_case`](VioletSim::set_camel_case) serves every key in camelCase;
//! [`set_lower_case_enums`](VioletSim::set_lower_case_enums) lower-cases enum values.
//! Keys of objects are served in alphabetical order (the data is kept as `serde_json::Value`).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::data::{self, VioletData};
use crate::faults::{Faults, Stats};
use crate::mutate::{self, Vocab};
use crate::server::{self, json_response, Core, Server};
use crate::util::{self, SimClock};

/// Route name of `POST /v1/login`.
pub const LOGIN: &str = "login";
/// Route name of `GET /v1/auth/token` (refresh).
pub const REFRESH: &str = "refresh";
/// Route name of `GET /v1/operations/connection_health`.
pub const CONNECTION_HEALTH: &str = "connection_health";
/// Route name of `GET /v1/operations/connection_health/{merchant_id}`.
pub const CONNECTION_HEALTH_MERCHANT: &str = "connection_health_merchant";
/// Every route name of this simulator.
pub const ROUTES: [&str; 4] = [
    LOGIN,
    REFRESH,
    CONNECTION_HEALTH,
    CONNECTION_HEALTH_MERCHANT,
];

/// Default access-token lifetime (24 h, as documented).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Id of the user object returned by login.
pub const USER_ID: i64 = 50_001;

/// Keys whose values are enums (lower-cased by `set_lower_case_enums`).
const ENUM_KEYS: &[&str] = &[
    "merchant_status",
    "platform",
    "distribution_type",
    "status",
    "results",
    "account_type",
    "payment_provider",
    "payment_provider_account_type",
];

static VOCAB: Vocab = Vocab {
    enum_keys: &[
        "merchant_status",
        "merchantStatus",
        "distribution_type",
        "distributionType",
        "status",
        "results",
        "account_type",
        "accountType",
        "payment_provider",
        "paymentProvider",
        "payment_provider_account_type",
        "paymentProviderAccountType",
        "type",
    ],
    optional_keys: &[
        "merchant_name",
        "merchantName",
        "merchant_email",
        "merchantEmail",
        "store_url",
        "storeUrl",
        "error",
        "date_last_synced",
        "dateLastSynced",
        "date_shipping_last_synced",
        "dateShippingLastSynced",
        "date_deactivated",
        "dateDeactivated",
        "invalid_product",
        "invalidProduct",
        "payment_provider_metadata",
        "paymentProviderMetadata",
        "payment_provider_account",
        "paymentProviderAccount",
        "payment_provider_account_type",
        "paymentProviderAccountType",
        "hasActivePlatformPlan",
        "hasShippingMethods",
        "default_rate",
        "defaultRate",
    ],
};

fn classify(method: &Method, path: &str) -> Option<&'static str> {
    let segs = server::segments(path);
    match (method.as_str(), segs.as_slice()) {
        ("POST", ["v1", "login"]) => Some(LOGIN),
        ("GET", ["v1", "auth", "token"]) => Some(REFRESH),
        ("GET", ["v1", "operations", "connection_health"]) => Some(CONNECTION_HEALTH),
        ("GET", ["v1", "operations", "connection_health", id]) if !id.is_empty() => {
            Some(CONNECTION_HEALTH_MERCHANT)
        }
        _ => None,
    }
}

#[derive(Debug)]
struct Store {
    merchants: Vec<Value>,
    index: HashMap<i64, usize>,
    /// access token → exp (unix seconds)
    access: HashMap<String, i64>,
    /// refresh token → revoked
    refresh: HashMap<String, bool>,
    token_ttl: Duration,
    camel: bool,
    lower_enums: bool,
    logins: u64,
    refreshes: u64,
    health_refreshes: u64,
}

impl Store {
    fn reindex(&mut self) {
        self.index = self
            .merchants
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m["merchant_id"].as_i64().map(|id| (id, i)))
            .collect();
    }

    fn get_mut(&mut self, id: i64) -> Option<&mut Value> {
        match self.index.get(&id) {
            Some(&i) => self.merchants.get_mut(i),
            None => None,
        }
    }

    fn render(&self, report: &Value) -> Value {
        let mut v = report.clone();
        if self.lower_enums {
            mutate::lower_case_values(&mut v, ENUM_KEYS);
        }
        if self.camel {
            v = mutate::camel_case_keys(v);
        }
        v
    }
}

#[derive(Debug)]
struct Shared {
    app_id: u64,
    app_secret: String,
    username: String,
    password: String,
    store: Mutex<Store>,
    clock: SimClock,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn error(&self, status: StatusCode, message: &str, code: i64) -> Response {
        json_response(
            status,
            &json!({
                "status": status.as_u16(),
                "message": message,
                "error_code": code,
                "timestamp": self.clock.now_millis(),
            }),
        )
    }

    fn check_app(&self, headers: &HeaderMap) -> Result<(), Response> {
        let id_ok = headers
            .get("x-violet-app-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            == Some(self.app_id);
        let secret_ok = headers
            .get("x-violet-app-secret")
            .is_some_and(|v| v.as_bytes() == self.app_secret.as_bytes());
        if id_ok && secret_ok {
            Ok(())
        } else {
            Err(self.error(StatusCode::FORBIDDEN, "Invalid app credentials", 1003))
        }
    }

    fn check_token(&self, headers: &HeaderMap) -> Result<(), Response> {
        let Some(token) = headers
            .get("x-violet-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Err(self.error(StatusCode::UNAUTHORIZED, "Missing token", 10));
        };
        let exp = self.lock().access.get(token).copied();
        match exp {
            None => Err(self.error(StatusCode::UNAUTHORIZED, "Invalid token", 10)),
            Some(exp) if self.clock.now_secs() >= exp => {
                Err(self.error(StatusCode::UNAUTHORIZED, "Token has expired", 11))
            }
            Some(_) => Ok(()),
        }
    }

    fn mint_access(&self, store: &mut Store) -> String {
        let now = self.clock.now_secs();
        let exp = now.saturating_add(store.token_ttl.as_secs().min(i64::MAX as u64) as i64);
        let token = util::mint_jwt(&json!({
            "sub": USER_ID.to_string(),
            "username": self.username,
            "app_id": self.app_id,
            "iat": now,
            "exp": exp,
            "jti": util::random_id(16),
        }));
        store.access.insert(token.clone(), exp);
        token
    }
}

/// A running Violet API simulator. Dropping it (or [`shutdown`](Self::shutdown)) stops the
/// server.
#[derive(Debug)]
pub struct VioletSim {
    shared: Arc<Shared>,
    faults: Faults,
    stats: Stats,
    server: Server,
    webhooks: crate::webhooks::EmitterSlot,
    event_seq: std::sync::atomic::AtomicU64,
}

impl VioletSim {
    /// Start on `127.0.0.1` on a free port, serving `data`, in the caller's tokio runtime.
    pub async fn start(data: VioletData) -> io::Result<Self> {
        Self::start_on_port(data, 0).await
    }

    /// Start with [`data::violet_merchants`]`(customers, seed)` (the documented example,
    /// merchant 123, first).
    pub async fn start_generated(customers: usize, seed: u64) -> io::Result<Self> {
        Self::start(data::violet_merchants(customers, seed)).await
    }

    /// Start on `127.0.0.1:port` (0 = any free port).
    pub async fn start_on_port(data: VioletData, port: u16) -> io::Result<Self> {
        let listener = server::bind(port).await?;
        let mut store = Store {
            merchants: data.merchants,
            index: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            token_ttl: DEFAULT_TOKEN_TTL,
            camel: false,
            lower_enums: false,
            logins: 0,
            refreshes: 0,
            health_refreshes: 0,
        };
        store.reindex();
        let clock = SimClock::new();
        let shared = Arc::new(Shared {
            app_id: data.app_id,
            app_secret: data.app_secret,
            username: data.username,
            password: data.password,
            store: Mutex::new(store),
            clock,
        });
        let faults = Faults::default();
        let stats = Stats::default();
        let (tx, rx) = server::shutdown_channel();
        let core = Arc::new(Core {
            faults: faults.clone(),
            stats: stats.clone(),
            vocab: &VOCAB,
            classify,
            error_body: Box::new(move |status| {
                let reason = StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Error");
                json!({
                    "status": status,
                    "message": reason,
                    "error_code": status,
                    "timestamp": clock.now_millis(),
                })
                .to_string()
            }),
            shutdown: rx,
        });
        let router = Router::new()
            .route("/v1/login", post(login))
            .route("/v1/auth/token", get(refresh))
            .route("/v1/operations/connection_health", get(connection_health))
            .route(
                "/v1/operations/connection_health/{merchant_id}",
                get(connection_health_merchant),
            )
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(shared.clone());
        let server = server::serve(listener, router, core, tx)?;
        Ok(VioletSim {
            shared,
            faults,
            stats,
            server,
            webhooks: Default::default(),
            event_seq: Default::default(),
        })
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.server.addr())
    }

    /// The bound loopback address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The accepted `X-Violet-App-Id` (and `app_id` query parameter).
    pub fn app_id(&self) -> u64 {
        self.shared.app_id
    }

    /// The accepted `X-Violet-App-Secret`.
    pub fn app_secret(&self) -> &str {
        &self.shared.app_secret
    }

    /// The accepted login username.
    pub fn username(&self) -> &str {
        &self.shared.username
    }

    /// The accepted login password.
    pub fn password(&self) -> &str {
        &self.shared.password
    }

    /// Fault rules of this simulator.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Request statistics of this simulator.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Lifetime of access tokens minted from now on (default [`DEFAULT_TOKEN_TTL`]).
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.shared.lock().token_ttl = ttl;
    }

    /// The current access-token lifetime.
    pub fn token_ttl(&self) -> Duration {
        self.shared.lock().token_ttl
    }

    /// Revoke every refresh token issued so far (refresh then answers 401, error_code 12).
    pub fn revoke_refresh_tokens(&self) {
        for revoked in self.shared.lock().refresh.values_mut() {
            *revoked = true;
        }
    }

    /// Expire every access token issued so far (they then get 401, error_code 11).
    pub fn expire_all_tokens(&self) {
        for exp in self.shared.lock().access.values_mut() {
            *exp = i64::MIN;
        }
    }

    /// Successful logins so far.
    pub fn logins(&self) -> u64 {
        self.shared.lock().logins
    }

    /// Successful token refreshes (`GET /v1/auth/token`) so far.
    pub fn refreshes(&self) -> u64 {
        self.shared.lock().refreshes
    }

    /// Per-merchant report requests with `refresh=true` so far.
    pub fn health_refreshes(&self) -> u64 {
        self.shared.lock().health_refreshes
    }

    /// Serve report keys in camelCase (`merchantId`, `syncStatus`, ...) instead of snake_case.
    pub fn set_camel_case(&self, on: bool) {
        self.shared.lock().camel = on;
    }

    /// Serve enum values lower-cased (`"active"`, `"complete"`, ...).
    pub fn set_lower_case_enums(&self, on: bool) {
        self.shared.lock().lower_enums = on;
    }

    /// The simulator's current idea of now (wall clock at start + tokio time elapsed).
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.shared.clock.now()
    }

    /// Every merchant id, in report order.
    pub fn merchant_ids(&self) -> Vec<i64> {
        self.shared
            .lock()
            .merchants
            .iter()
            .filter_map(|m| m["merchant_id"].as_i64())
            .collect()
    }

    /// One merchant's stored report (snake_case, as generated).
    pub fn merchant(&self, merchant_id: i64) -> Option<Value> {
        self.shared.lock().get_mut(merchant_id).map(|v| v.clone())
    }

    /// Add a merchant report (it must have an integer `merchant_id`; one with the same id is
    /// replaced). Returns false if the report has no integer `merchant_id`.
    pub fn add_merchant(&self, report: Value) -> bool {
        let Some(id) = report["merchant_id"].as_i64() else {
            return false;
        };
        {
            let mut store = self.shared.lock();
            match store.index.get(&id) {
                Some(&i) => store.merchants[i] = report,
                None => {
                    let i = store.merchants.len();
                    store.index.insert(id, i);
                    store.merchants.push(report);
                }
            }
        }
        self.emit_webhook("MERCHANT_CONNECTED", id);
        true
    }

    /// Remove a merchant; returns whether it existed.
    pub fn remove_merchant(&self, merchant_id: i64) -> bool {
        let mut store = self.shared.lock();
        let before = store.merchants.len();
        store
            .merchants
            .retain(|m| m["merchant_id"].as_i64() != Some(merchant_id));
        let removed = before != store.merchants.len();
        if removed {
            store.reindex();
        }
        drop(store);
        if removed {
            self.emit_webhook("MERCHANT_DISCONNECTED", merchant_id);
        }
        removed
    }

    /// Edit one merchant's stored report in place. Returns false if it does not exist.
    pub fn update_merchant(&self, merchant_id: i64, f: impl FnOnce(&mut Value)) -> bool {
        let mut store = self.shared.lock();
        match store.get_mut(merchant_id) {
            Some(v) => {
                f(v);
                true
            }
            None => false,
        }
    }

    /// Set `section.status` (e.g. `"sync_status"`, `"NEEDS_ATTENTION"`) of a merchant; the
    /// section is created if missing. Returns false if the merchant does not exist.
    pub fn set_check_status(&self, merchant_id: i64, section: &str, status: &str) -> bool {
        let ok = self.update_merchant(merchant_id, |v| {
            if !v[section].is_object() {
                v[section] = json!({ "status": status, "error": null, "results": null });
            } else {
                v[section]["status"] = json!(status);
            }
        });
        if ok {
            let s = status.to_ascii_uppercase();
            let topic = match (section, s.as_str()) {
                ("sync_status", "COMPLETE" | "COMPLETED") => "PRODUCT_SYNC_COMPLETED",
                ("sync_status", "ERROR" | "FAILED" | "NEEDS_ATTENTION") => "PRODUCT_SYNC_FAILED",
                ("sync_status", _) => "PRODUCT_SYNC_STARTED",
                (_, "COMPLETE" | "NOT_APPLICABLE") => "MERCHANT_COMPLETE",
                _ => "MERCHANT_NEEDS_ATTENTION",
            };
            self.emit_webhook(topic, merchant_id);
        }
        ok
    }

    /// Set a merchant's `merchant_status`. Returns false if it does not exist. With webhooks
    /// on, emits `MERCHANT_ENABLED` for `ACTIVE` and `MERCHANT_DISABLED` otherwise.
    pub fn set_merchant_status(&self, merchant_id: i64, status: &str) -> bool {
        let ok = self.update_merchant(merchant_id, |v| v["merchant_status"] = json!(status));
        if ok {
            let topic = if status.eq_ignore_ascii_case("ACTIVE") {
                "MERCHANT_ENABLED"
            } else {
                "MERCHANT_DISABLED"
            };
            self.emit_webhook(topic, merchant_id);
        }
        ok
    }

    /// Turn on signed webhooks: from now on the mutation methods ([`Self::add_merchant`]
    /// `MERCHANT_CONNECTED`, [`Self::remove_merchant`] `MERCHANT_DISCONNECTED`,
    /// [`Self::set_merchant_status`], [`Self::set_check_status`]: `sync_status` as
    /// `PRODUCT_SYNC_*`, other sections `MERCHANT_NEEDS_ATTENTION` / `MERCHANT_COMPLETE`) POST
    /// Violet's webhook for the merchant to `url`: body `{"event", "merchant_id"}`, headers
    /// `X-Violet-Hmac` (base64 HMAC-SHA256 of the body keyed with `secret`, which is the app
    /// secret in Violet), `X-Violet-Event-Id`, `X-Violet-Topic`. Needs a tokio runtime.
    /// [`Self::update_merchant`] emits nothing (call [`Self::emit_webhook`]).
    pub fn emit_webhooks_to(&self, url: &str, secret: &str) -> crate::webhooks::WebhookEmitter {
        let e = crate::webhooks::WebhookEmitter::start(url, secret);
        self.webhooks.set(e.clone());
        e
    }

    /// The emitter, once [`Self::emit_webhooks_to`] was called.
    pub fn webhooks(&self) -> Option<crate::webhooks::WebhookEmitter> {
        self.webhooks.get()
    }

    /// Queue one signed webhook of `topic` for `merchant_id` (`None` when webhooks are off).
    /// Returns its event id.
    pub fn emit_webhook(&self, topic: &str, merchant_id: i64) -> Option<String> {
        let emitter = self.webhooks.get()?;
        let n = self
            .event_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let event_id = format!("violet-evt-{n:08}");
        let body = serde_json::to_vec(&json!({ "event": topic, "merchant_id": merchant_id }))
            .unwrap_or_default();
        let sig = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            crate::webhooks::hmac_sha256(&emitter.secret, &[&body]),
        );
        emitter.send(crate::webhooks::Job {
            event_id: event_id.clone(),
            event_type: topic.to_owned(),
            headers: vec![
                ("X-Violet-Hmac", sig),
                ("X-Violet-Event-Id", event_id.clone()),
                ("X-Violet-Topic", topic.to_owned()),
            ],
            body,
        });
        Some(event_id)
    }

    /// Stop the server gracefully and wait for it (at most 5 s).
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

async fn not_found(State(shared): State<Arc<Shared>>) -> Response {
    shared.error(StatusCode::NOT_FOUND, "Not Found", 404)
}

async fn method_not_allowed(State(shared): State<Arc<Shared>>) -> Response {
    shared.error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", 405)
}

async fn login(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = shared.check_app(&headers) {
        return r;
    }
    let creds = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => m,
        _ => {
            return shared.error(
                StatusCode::BAD_REQUEST,
                "Malformed request body: expected {\"username\", \"password\"}",
                1001,
            )
        }
    };
    let username = creds.get("username").and_then(Value::as_str);
    let password = creds.get("password").and_then(Value::as_str);
    if username != Some(shared.username.as_str()) || password != Some(shared.password.as_str()) {
        return shared.error(StatusCode::UNAUTHORIZED, "Invalid credentials", 1002);
    }
    let mut store = shared.lock();
    let token = shared.mint_access(&mut store);
    let refresh_token = util::mint_jwt(&json!({
        "sub": USER_ID.to_string(),
        "typ": "refresh",
        "iat": shared.clock.now_secs(),
        "jti": util::random_id(24),
    }));
    store.refresh.insert(refresh_token.clone(), false);
    store.logins += 1;
    json_response(
        StatusCode::OK,
        &json!({
            "id": USER_ID,
            "first_name": "Sim",
            "last_name": "Developer",
            "email": shared.username,
            "type": "DEVELOPER",
            "verified": true,
            "status": "ACTIVE",
            "date_created": "2023-01-10T12:00:00+0000",
            "date_last_modified": "2024-06-01T08:30:00+0000",
            "roles": [{ "name": "DEVELOPER_OWNER", "permissions": [{ "name": "OPERATIONS_READ" }] }],
            "tos_accepted": true,
            "payment_configured": false,
            "privacy_policy_accepted": true,
            "country_code": "US",
            "merchant_id": null,
            "store_url": null,
            "token": token,
            "refresh_token": refresh_token,
        }),
    )
}

async fn refresh(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(r) = shared.check_app(&headers) {
        return r;
    }
    let presented = headers
        .get("x-violet-token")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut store = shared.lock();
    if store.refresh.get(&presented) != Some(&false) {
        drop(store);
        return shared.error(StatusCode::UNAUTHORIZED, "Invalid refresh token", 12);
    }
    let token = shared.mint_access(&mut store);
    store.refreshes += 1;
    json_response(StatusCode::OK, &json!({ "token": token }))
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Check the `app_id` query parameter: `required` → 400 when missing.
fn check_app_id(
    shared: &Shared,
    pairs: &[(String, String)],
    required: bool,
) -> Result<(), Response> {
    match util::query_get(pairs, "app_id") {
        None if required => Err(shared.error(
            StatusCode::BAD_REQUEST,
            "Required request parameter 'app_id' for method parameter type Integer is not present",
            2001,
        )),
        None => Ok(()),
        Some(v) => match v.trim().parse::<u64>() {
            Err(_) => Err(shared.error(
                StatusCode::BAD_REQUEST,
                "Parameter 'app_id' must be an integer",
                2001,
            )),
            Ok(id) if id != shared.app_id => Err(shared.error(
                StatusCode::FORBIDDEN,
                "App is not accessible with these credentials",
                1004,
            )),
            Ok(_) => Ok(()),
        },
    }
}

async fn connection_health(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(r) = shared
        .check_app(&headers)
        .and_then(|_| shared.check_token(&headers))
    {
        return r;
    }
    let pairs = util::query_pairs(query.as_deref());
    if let Err(r) = check_app_id(&shared, &pairs, true) {
        return r;
    }
    let exclude_public = match util::query_get(&pairs, "exclude_public") {
        None => true,
        Some(v) => match parse_bool(v) {
            Some(b) => b,
            None => {
                return shared.error(
                    StatusCode::BAD_REQUEST,
                    "Parameter 'exclude_public' must be a boolean",
                    2001,
                )
            }
        },
    };
    let store = shared.lock();
    let reports: Vec<Value> = store
        .merchants
        .iter()
        .filter(|m| !(exclude_public && m["distribution_type"].as_str() == Some("PUBLIC")))
        .map(|m| store.render(m))
        .collect();
    json_response(StatusCode::OK, &reports)
}

async fn connection_health_merchant(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(r) = shared
        .check_app(&headers)
        .and_then(|_| shared.check_token(&headers))
    {
        return r;
    }
    let Some(id) = path.ok().and_then(|Path(s)| s.trim().parse::<i64>().ok()) else {
        return shared.error(
            StatusCode::BAD_REQUEST,
            "Path variable 'merchant_id' must be an integer",
            2001,
        );
    };
    let pairs = util::query_pairs(query.as_deref());
    if let Err(r) = check_app_id(&shared, &pairs, false) {
        return r;
    }
    let refresh = match util::query_get(&pairs, "refresh") {
        None => false,
        Some(v) => match parse_bool(v) {
            Some(b) => b,
            None => {
                return shared.error(
                    StatusCode::BAD_REQUEST,
                    "Parameter 'refresh' must be a boolean",
                    2001,
                )
            }
        },
    };
    let mut store = shared.lock();
    if refresh {
        store.health_refreshes += 1;
    }
    let rendered = store.get_mut(id).map(|m| m.clone());
    match rendered {
        Some(m) => {
            let v = store.render(&m);
            json_response(StatusCode::OK, &v)
        }
        None => {
            drop(store);
            shared.error(StatusCode::NOT_FOUND, "Merchant not found", 2004)
        }
    }
}
