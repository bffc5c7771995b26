//! Simulator of the Channel3 Partner API (`https://partners.trychannel3.com`).
//!
//! [`Channel3Sim::base_url`] is `http://127.0.0.1:PORT` (no `/v0`): the adapter appends
//! `/v0/partner/...`. Every route needs `x-api-key`: missing → 401
//! `{"detail":"Missing API key"}`, wrong → 403 `{"detail":"Invalid API key"}`.
//!
//! | route name | request |
//! | --- | --- |
//! | [`LIST_MERCHANTS`] | `GET /v0/partner/merchants?page=&size=` |
//! | [`CREATE_MERCHANT`] | `POST /v0/partner/merchants` |
//! | [`LIST_CONNECTIONS`] | `GET /v0/partner/merchants/{customer_id}/connections` |
//! | [`CREATE_SESSION`] | `POST /v0/partner/merchants/{customer_id}/connections/sessions` |
//!
//! Choices where the provider's docs are unconfirmed:
//!
//! * List merchants: `page` starts at 1 (default 1), `size` defaults to
//!   [`DEFAULT_PAGE_SIZE`] and is silently capped at [`MAX_PAGE_SIZE`] (the response's `size`
//!   says the size used); envelope `{items, total, page, size, pages}` with items
//!   `{customer_id, name, logo_url}`; `pages` = ceil(total / size) (0 when there are none); a
//!   page past the end has no items. `page < 1`, `size < 1` or a non-integer → 422 with a
//!   FastAPI `detail` list. Foreign merchants are not listed.
//! * Unknown `customer_id` → 404 `{"detail":"Merchant not found"}`; a merchant of another
//!   partner → 403 `{"detail":"Merchant does not belong to this partner"}`.
//! * Create merchant answers 200 for both a new and an existing domain (`created` tells
//!   which). Domains compare case-insensitively, without scheme, `www.`, path or trailing dot.
//!   A new merchant gets an active `web_crawl` (ingestion) and an active `openai`
//!   (distribution, sync `pending`) connection; every other platform `not_connected`.
//! * Create connect session: `expires_at` is RFC 3339 UTC, 30 minutes ahead; `url` is
//!   `{base_url}/connect/sessions/{token}` (not served). `platform`, when given, must be one of
//!   the 15 `PlatformSlug`s (else 422).
//! * Request bodies follow FastAPI conventions: invalid JSON → 422 `json_invalid`, missing
//!   field → 422 `missing`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::data::{
    self, Channel3Connection, Channel3Customer, Channel3Data, Channel3Sync, CHANNEL3_PLATFORMS,
};
use crate::faults::{Faults, Stats};
use crate::mutate::Vocab;
use crate::server::{self, detail, json_response, validation, Core, Server};
use crate::util::{self, SimClock};

/// Route name of `GET /v0/partner/merchants`.
pub const LIST_MERCHANTS: &str = "list_merchants";
/// Route name of `POST /v0/partner/merchants`.
pub const CREATE_MERCHANT: &str = "create_merchant";
/// Route name of `GET /v0/partner/merchants/{customer_id}/connections`.
pub const LIST_CONNECTIONS: &str = "list_connections";
/// Route name of `POST /v0/partner/merchants/{customer_id}/connections/sessions`.
pub const CREATE_SESSION: &str = "create_session";
/// Every route name of this simulator.
pub const ROUTES: [&str; 4] = [
    LIST_MERCHANTS,
    CREATE_MERCHANT,
    LIST_CONNECTIONS,
    CREATE_SESSION,
];

/// List merchants page size when `size` is not given.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The largest page size the server honours; larger requests are capped to it.
pub const MAX_PAGE_SIZE: usize = 100;
/// Lifetime of a connect session, in seconds (30 minutes).
pub const SESSION_TTL_SECS: i64 = 30 * 60;

static VOCAB: Vocab = Vocab {
    enum_keys: &["status", "category", "state"],
    optional_keys: &[
        "id",
        "connected_at",
        "accounts",
        "sync",
        "last_synced_at",
        "total_products",
        "synced_products",
        "name",
        "store_url",
        "logo_url",
    ],
};

fn classify(method: &Method, path: &str) -> Option<&'static str> {
    let segs = server::segments(path);
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["v0", "partner", "merchants"]) => Some(LIST_MERCHANTS),
        ("POST", ["v0", "partner", "merchants"]) => Some(CREATE_MERCHANT),
        ("GET", ["v0", "partner", "merchants", id, "connections"]) if !id.is_empty() => {
            Some(LIST_CONNECTIONS)
        }
        ("POST", ["v0", "partner", "merchants", id, "connections", "sessions"])
            if !id.is_empty() =>
        {
            Some(CREATE_SESSION)
        }
        _ => None,
    }
}

/// A connect session minted by the simulator (what `POST .../connections/sessions` returned,
/// plus the request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectSession {
    /// The merchant it was minted for.
    pub customer_id: String,
    /// `token` of the response.
    pub token: String,
    /// `url` of the response.
    pub url: String,
    /// `expires_at` of the response (RFC 3339).
    pub expires_at: String,
    /// The requested `redirect_uri`.
    pub redirect_uri: String,
    /// The requested `platform`, if any.
    pub platform: Option<String>,
}

#[derive(Debug)]
struct Store {
    allowlist: Vec<String>,
    customers: Vec<Channel3Customer>,
    index: HashMap<String, usize>,
    sessions: Vec<ConnectSession>,
}

impl Store {
    fn reindex(&mut self) {
        self.index = self
            .customers
            .iter()
            .enumerate()
            .map(|(i, c)| (c.customer_id.clone(), i))
            .collect();
    }

    fn get(&self, id: &str) -> Option<&Channel3Customer> {
        self.index.get(id).and_then(|&i| self.customers.get(i))
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Channel3Customer> {
        match self.index.get(id) {
            Some(&i) => self.customers.get_mut(i),
            None => None,
        }
    }
}

#[derive(Debug)]
struct Shared {
    api_key: String,
    store: Mutex<Store>,
    clock: SimClock,
    base_url: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running Channel3 Partner API simulator. Dropping it (or [`shutdown`](Self::shutdown))
/// stops the server.
#[derive(Debug)]
pub struct Channel3Sim {
    shared: Arc<Shared>,
    faults: Faults,
    stats: Stats,
    server: Server,
}

impl Channel3Sim {
    /// Start on `127.0.0.1` on a free port, serving `data`, in the caller's tokio runtime.
    pub async fn start(data: Channel3Data) -> io::Result<Self> {
        Self::start_on_port(data, 0).await
    }

    /// Start with [`data::channel3_customers`]`(customers, seed)` (the documented example
    /// customer `cus_doc_example` first).
    pub async fn start_generated(customers: usize, seed: u64) -> io::Result<Self> {
        Self::start(data::channel3_customers(customers, seed)).await
    }

    /// Start on `127.0.0.1:port` (0 = any free port).
    pub async fn start_on_port(data: Channel3Data, port: u16) -> io::Result<Self> {
        let listener = server::bind(port).await?;
        let addr = listener.local_addr()?;
        let mut store = Store {
            allowlist: data.redirect_allowlist,
            customers: data.customers,
            index: HashMap::new(),
            sessions: Vec::new(),
        };
        store.reindex();
        let shared = Arc::new(Shared {
            api_key: data.api_key,
            store: Mutex::new(store),
            clock: SimClock::new(),
            base_url: format!("http://{addr}"),
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
                "/v0/partner/merchants",
                get(list_merchants).post(create_merchant),
            )
            .route(
                "/v0/partner/merchants/{customer_id}/connections",
                get(list_connections),
            )
            .route(
                "/v0/partner/merchants/{customer_id}/connections/sessions",
                post(create_session),
            )
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(shared.clone());
        let server = server::serve(listener, router, core, tx)?;
        Ok(Channel3Sim {
            shared,
            faults,
            stats,
            server,
        })
    }

    /// `http://127.0.0.1:PORT` (append `/v0/partner/...`).
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The bound loopback address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The `x-api-key` value accepted.
    pub fn api_key(&self) -> &str {
        &self.shared.api_key
    }

    /// Customer ids that List merchants returns (every non-foreign merchant), in order.
    pub fn customer_ids(&self) -> Vec<String> {
        self.shared
            .lock()
            .customers
            .iter()
            .filter(|c| !c.foreign)
            .map(|c| c.customer_id.clone())
            .collect()
    }

    /// Every merchant the simulator knows, foreign ones included, in order.
    pub fn customers(&self) -> Vec<Channel3Customer> {
        self.shared.lock().customers.clone()
    }

    /// One merchant, by id.
    pub fn customer(&self, customer_id: &str) -> Option<Channel3Customer> {
        self.shared.lock().get(customer_id).cloned()
    }

    /// The `connections` List connections would return for `customer_id`.
    pub fn connections(&self, customer_id: &str) -> Option<Vec<Channel3Connection>> {
        self.shared
            .lock()
            .get(customer_id)
            .map(|c| c.connections.clone())
    }

    /// Add a merchant (any id, e.g. one with odd characters); replaces one with the same id.
    pub fn add_customer(&self, customer: Channel3Customer) {
        let mut store = self.shared.lock();
        match store.index.get(&customer.customer_id) {
            Some(&i) => store.customers[i] = customer,
            None => {
                let i = store.customers.len();
                store.index.insert(customer.customer_id.clone(), i);
                store.customers.push(customer);
            }
        }
    }

    /// Remove a merchant; returns whether it existed.
    pub fn remove_customer(&self, customer_id: &str) -> bool {
        let mut store = self.shared.lock();
        let before = store.customers.len();
        store.customers.retain(|c| c.customer_id != customer_id);
        let removed = store.customers.len() != before;
        if removed {
            store.reindex();
        }
        removed
    }

    /// Set the `status` of one platform row of a merchant (the row is added if the platform
    /// is not listed). `not_connected` clears `id`, `connected_at`, `accounts` and `sync`;
    /// another status on a row without an `id` gives it an id and `connected_at` = now.
    /// Returns false if the merchant does not exist.
    pub fn set_connection_status(&self, customer_id: &str, platform: &str, status: &str) -> bool {
        let now = self.shared.clock.rfc3339_in(0);
        let mut store = self.shared.lock();
        let Some(c) = store.get_mut(customer_id) else {
            return false;
        };
        if c.connection(platform).is_none() {
            c.connections
                .push(Channel3Connection::not_connected(platform));
        }
        if let Some(conn) = c.connection_mut(platform) {
            conn.status = status.to_string();
            if status == "not_connected" {
                conn.id = None;
                conn.connected_at = None;
                conn.accounts = None;
                conn.sync = None;
            } else if conn.id.is_none() {
                conn.id = Some(format!(
                    "conn_{platform}_{}",
                    util::random_id(12).to_lowercase()
                ));
                conn.connected_at = Some(now);
            }
        }
        true
    }

    /// Set (or clear) the `sync` of one platform row. Returns false if the merchant or the row
    /// does not exist.
    pub fn set_sync(&self, customer_id: &str, platform: &str, sync: Option<Channel3Sync>) -> bool {
        let mut store = self.shared.lock();
        match store
            .get_mut(customer_id)
            .and_then(|c| c.connection_mut(platform))
        {
            Some(conn) => {
                conn.sync = sync;
                true
            }
            None => false,
        }
    }

    /// Replace every row of a merchant's List connections response. Returns false if the
    /// merchant does not exist.
    pub fn set_connections(&self, customer_id: &str, connections: Vec<Channel3Connection>) -> bool {
        let mut store = self.shared.lock();
        match store.get_mut(customer_id) {
            Some(c) => {
                c.connections = connections;
                true
            }
            None => false,
        }
    }

    /// Mark a merchant as belonging to another partner (403 on its routes, not listed).
    pub fn set_foreign(&self, customer_id: &str, foreign: bool) -> bool {
        let mut store = self.shared.lock();
        match store.get_mut(customer_id) {
            Some(c) => {
                c.foreign = foreign;
                true
            }
            None => false,
        }
    }

    /// Replace the `redirect_uri` prefix allowlist of Create connect session.
    pub fn set_redirect_allowlist(&self, prefixes: Vec<String>) {
        self.shared.lock().allowlist = prefixes;
    }

    /// Every connect session minted so far, in order.
    pub fn sessions(&self) -> Vec<ConnectSession> {
        self.shared.lock().sessions.clone()
    }

    /// Fault rules of this simulator.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Request statistics of this simulator.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stop the server gracefully and wait for it (at most 5 s).
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

// Response bodies as structs, so that keys keep the documented order.
#[derive(Serialize)]
struct MerchantItem<'a> {
    customer_id: &'a str,
    name: Option<&'a str>,
    logo_url: Option<&'a str>,
}

#[derive(Serialize)]
struct MerchantPage<'a> {
    items: Vec<MerchantItem<'a>>,
    total: usize,
    page: usize,
    size: usize,
    pages: usize,
}

#[derive(Serialize)]
struct ConnectionsBody<'a> {
    connections: &'a [Channel3Connection],
}

#[derive(Serialize)]
struct CreatedBody<'a> {
    customer_id: &'a str,
    created: bool,
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct SessionBody<'a> {
    token: &'a str,
    url: &'a str,
    expires_at: &'a str,
}

async fn not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Not Found")
}

async fn method_not_allowed() -> Response {
    detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

fn auth(shared: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    server::check_api_key(headers, &shared.api_key)
}

fn int_query(pairs: &[(String, String)], key: &str, default: usize) -> Result<i64, Value> {
    match util::query_get(pairs, key) {
        None => Ok(default as i64),
        Some(v) => v.trim().parse::<i64>().map_err(|_| {
            json!({
                "type": "int_parsing",
                "loc": ["query", key],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": v,
            })
        }),
    }
}

async fn list_merchants(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(r) = auth(&shared, &headers) {
        return r;
    }
    let pairs = util::query_pairs(query.as_deref());
    let mut errors = Vec::new();
    let page = int_query(&pairs, "page", 1).unwrap_or_else(|e| {
        errors.push(e);
        1
    });
    let size = int_query(&pairs, "size", DEFAULT_PAGE_SIZE).unwrap_or_else(|e| {
        errors.push(e);
        1
    });
    if errors.is_empty() {
        if page < 1 {
            errors.push(json!({
                "type": "greater_than_equal", "loc": ["query", "page"],
                "msg": "Input should be greater than or equal to 1",
                "input": page.to_string(), "ctx": {"ge": 1},
            }));
        }
        if size < 1 {
            errors.push(json!({
                "type": "greater_than_equal", "loc": ["query", "size"],
                "msg": "Input should be greater than or equal to 1",
                "input": size.to_string(), "ctx": {"ge": 1},
            }));
        }
    }
    if !errors.is_empty() {
        return validation(errors);
    }
    let size = (size as usize).min(MAX_PAGE_SIZE);
    let page = page as usize;
    let store = shared.lock();
    let listed: Vec<&Channel3Customer> = store.customers.iter().filter(|c| !c.foreign).collect();
    let total = listed.len();
    let pages = total.div_ceil(size);
    let start = page.saturating_sub(1).saturating_mul(size);
    let items: Vec<MerchantItem<'_>> = listed
        .iter()
        .skip(start)
        .take(size)
        .map(|c| MerchantItem {
            customer_id: &c.customer_id,
            name: c.name.as_deref(),
            logo_url: c.logo_url.as_deref(),
        })
        .collect();
    json_response(
        StatusCode::OK,
        &MerchantPage {
            items,
            total,
            page,
            size,
            pages,
        },
    )
}

fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, Response> {
    path.map(|Path(id)| id)
        .map_err(|_| detail(StatusCode::NOT_FOUND, "Not Found"))
}

fn lookup<'a>(store: &'a Store, id: &str) -> Result<&'a Channel3Customer, Response> {
    match store.get(id) {
        None => Err(detail(StatusCode::NOT_FOUND, "Merchant not found")),
        Some(c) if c.foreign => Err(detail(
            StatusCode::FORBIDDEN,
            "Merchant does not belong to this partner",
        )),
        Some(c) => Ok(c),
    }
}

async fn list_connections(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    if let Err(r) = auth(&shared, &headers) {
        return r;
    }
    let id = match path_id(path) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let store = shared.lock();
    match lookup(&store, &id) {
        Ok(c) => json_response(
            StatusCode::OK,
            &ConnectionsBody {
                connections: &c.connections,
            },
        ),
        Err(r) => r,
    }
}

fn normalize_domain(domain: &str) -> String {
    let d = domain.trim().to_lowercase();
    let d = d
        .strip_prefix("https://")
        .or_else(|| d.strip_prefix("http://"))
        .unwrap_or(&d);
    let d = d.split(['/', '?', '#']).next().unwrap_or(d);
    let d = d.strip_prefix("www.").unwrap_or(d);
    d.trim_end_matches('.').to_string()
}

fn name_from_domain(domain: &str) -> String {
    let label = domain.split('.').next().unwrap_or(domain);
    label
        .split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut cs = w.chars();
            match cs.next() {
                Some(f) => f.to_uppercase().chain(cs).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn create_merchant(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = auth(&shared, &headers) {
        return r;
    }
    let map = match server::parse_body_object(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut errors = Vec::new();
    let domain = match server::opt_string(&map, "domain") {
        Ok(Some(d)) => Some(d),
        Ok(None) => {
            errors.push(server::missing_item(&["body", "domain"], false));
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let name = server::opt_string(&map, "name").unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let Some(domain) = domain.filter(|_| errors.is_empty()) else {
        return validation(errors);
    };
    let normalized = normalize_domain(&domain);
    if normalized.is_empty() {
        return validation(vec![json!({
            "type": "value_error", "loc": ["body", "domain"],
            "msg": "Value error, domain must not be empty", "input": domain,
        })]);
    }
    let mut store = shared.lock();
    if let Some(existing) = store
        .customers
        .iter()
        .find(|c| !c.foreign && normalize_domain(&c.domain) == normalized)
    {
        return json_response(
            StatusCode::OK,
            &CreatedBody {
                customer_id: &existing.customer_id,
                created: false,
                name: existing.name.as_deref(),
            },
        );
    }
    let mut id;
    loop {
        id = format!("cus_{}", util::random_id(20).to_lowercase());
        if !store.index.contains_key(&id) {
            break;
        }
    }
    let name = name.unwrap_or_else(|| name_from_domain(&normalized));
    let now = shared.clock.rfc3339_in(0);
    let mut customer = Channel3Customer::new(id.clone(), name.clone());
    customer.domain = normalized.clone();
    if let Some(c) = customer.connection_mut("web_crawl") {
        c.status = "active".into();
        c.display_name = normalized.clone();
        c.id = Some(format!(
            "conn_web_crawl_{}",
            util::random_id(12).to_lowercase()
        ));
        c.connected_at = Some(now.clone());
    }
    if let Some(c) = customer.connection_mut("openai") {
        c.status = "active".into();
        c.display_name = format!("{name} OpenAI");
        c.id = Some(format!(
            "conn_openai_{}",
            util::random_id(12).to_lowercase()
        ));
        c.connected_at = Some(now);
        c.sync = Some(Channel3Sync {
            state: "pending".into(),
            last_synced_at: None,
            total_products: None,
            synced_products: None,
        });
    }
    store.customers.push(customer);
    let i = store.customers.len() - 1;
    store.index.insert(id.clone(), i);
    json_response(
        StatusCode::OK,
        &CreatedBody {
            customer_id: &id,
            created: true,
            name: Some(&name),
        },
    )
}

async fn create_session(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    if let Err(r) = auth(&shared, &headers) {
        return r;
    }
    let id = match path_id(path) {
        Ok(id) => id,
        Err(r) => return r,
    };
    {
        let store = shared.lock();
        if let Err(r) = lookup(&store, &id) {
            return r;
        }
    }
    let map = match server::parse_body_object(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut errors = Vec::new();
    let redirect_uri = match server::opt_string(&map, "redirect_uri") {
        Ok(Some(r)) => Some(r),
        Ok(None) => {
            errors.push(server::missing_item(&["body", "redirect_uri"], false));
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let platform = match server::opt_string(&map, "platform") {
        Ok(Some(p)) if !CHANNEL3_PLATFORMS.iter().any(|(s, _, _)| *s == p) => {
            let expected = CHANNEL3_PLATFORMS
                .iter()
                .map(|(s, _, _)| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ");
            errors.push(json!({
                "type": "enum", "loc": ["body", "platform"],
                "msg": format!("Input should be {expected}"), "input": p,
            }));
            None
        }
        Ok(p) => p,
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let Some(redirect_uri) = redirect_uri.filter(|_| errors.is_empty()) else {
        return validation(errors);
    };
    let mut store = shared.lock();
    if !store
        .allowlist
        .iter()
        .any(|prefix| redirect_uri.starts_with(prefix.as_str()))
    {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "redirect_uri not in allowlist",
        );
    }
    let token = format!("cs_{}", util::random_id(32));
    let session = ConnectSession {
        customer_id: id,
        url: format!("{}/connect/sessions/{token}", shared.base_url),
        expires_at: shared.clock.rfc3339_in(SESSION_TTL_SECS),
        token,
        redirect_uri,
        platform,
    };
    let resp = json_response(
        StatusCode::OK,
        &SessionBody {
            token: &session.token,
            url: &session.url,
            expires_at: &session.expires_at,
        },
    );
    store.sessions.push(session);
    resp
}
