//! Seeded, deterministic data for the simulators: the same `(n, seed)` always gives
//! byte-identical data (no wall-clock time is used; timestamps are drawn before
//! 2025-06-01).
//!
//! * [`channel3_customers`] → [`Channel3Data`] for [`Channel3Sim`](crate::Channel3Sim)
//! * [`violet_merchants`] → [`VioletData`] for [`VioletSim`](crate::VioletSim)
//! * [`subtotal_customers`] → [`SubtotalData`] for [`SubtotalSim`](crate::SubtotalSim)
//!
//! `n` counts every customer/merchant the generator returns, **including** the provider's
//! documented example, which takes the first slot when [`GenOptions::doc_examples`] is set
//! (the default) and `n >= 1`. The odd-id and foreign Channel3 customers of
//! [`GenOptions`] are added **on top of** `n`.
//!
//! The first generated records cycle through fixed scenarios so that every status value the
//! simulators know appears once `n` is large enough (about 10 for Channel3 and Subtotal,
//! about 60 for Violet); the rest are drawn at random with a realistic, mostly healthy mix.

use std::collections::HashSet;

use chrono::{DateTime, SecondsFormat};
use fastrand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::util;

/// Options of the `*_with` generators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenOptions {
    /// Include the provider's documented example as a fixed customer (default `true`).
    pub doc_examples: bool,
    /// Channel3 only: add customers with odd ids ([`CHANNEL3_ODD_IDS`]) on top of `n`
    /// (default `false`, so discovery sees plain ids).
    pub odd_ids: bool,
    /// Channel3 only: add [`CHANNEL3_FOREIGN_ID`], a merchant that exists but belongs to
    /// another partner (403 on its connections, absent from List merchants); default `false`.
    pub foreign: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            doc_examples: true,
            odd_ids: false,
            foreign: false,
        }
    }
}

fn rng_for(seed: u64, salt: u64) -> Rng {
    Rng::with_seed(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(salt.wrapping_mul(0xBF58_476D_1CE4_E5B9))
            ^ salt,
    )
}

/// 2025-06-01T00:00:00Z: generated timestamps lie before this instant.
const EPOCH_END: i64 = 1_748_736_000;

fn ts(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn past(rng: &mut Rng, max_days: i64) -> i64 {
    EPOCH_END - rng.i64(3600..max_days.max(1) * 86_400 + 3600)
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

fn weighted<'a, T>(rng: &mut Rng, items: &'a [(T, u32)]) -> &'a T {
    let total: u32 = items.iter().map(|(_, w)| *w).sum();
    let mut r = rng.u32(..total.max(1));
    for (item, w) in items {
        if r < *w {
            return item;
        }
        r -= w;
    }
    &items[items.len() - 1].0
}

fn alnum_lower(rng: &mut Rng, n: usize) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..n).map(|_| A[rng.usize(..A.len())] as char).collect()
}

const ADJECTIVES: &[&str] = &[
    "Acme", "Blue", "Bright", "Cedar", "Copper", "Golden", "Green", "Harbor", "Iron", "Lunar",
    "Maple", "Nordic", "Oak", "Pine", "Quiet", "Red", "Silver", "Solar", "Stone", "Urban",
    "Velvet", "Wild", "Willow", "Zen",
];
const NOUNS: &[&str] = &[
    "Apparel",
    "Bakery",
    "Bikes",
    "Books",
    "Candles",
    "Ceramics",
    "Coffee",
    "Cosmetics",
    "Denim",
    "Garden",
    "Gear",
    "Goods",
    "Home",
    "Jewelry",
    "Kitchen",
    "Leather",
    "Outdoors",
    "Pets",
    "Records",
    "Shoes",
    "Skincare",
    "Sports",
    "Tea",
    "Toys",
    "Wellness",
];
const SUFFIXES: &[&str] = &[
    "Co",
    "Supply",
    "Studio",
    "Shop",
    "Collective",
    "Market",
    "Works",
    "Store",
];

fn business_name(rng: &mut Rng) -> (String, String) {
    let a = *pick(rng, ADJECTIVES);
    let n = *pick(rng, NOUNS);
    let s = *pick(rng, SUFFIXES);
    let name = format!("{a} {n} {s}");
    let slug = format!("{}-{}-{}", a, n, alnum_lower(rng, 4)).to_lowercase();
    (name, slug)
}

// =====================================================================================
// Channel3
// =====================================================================================

/// The 15 Channel3 `PlatformSlug`s in schema order, with their `PlatformCategory` and the
/// display name shown when not connected.
pub const CHANNEL3_PLATFORMS: [(&str, &str, &str); 15] = [
    ("channel3", "distribution", "Channel3"),
    ("google", "distribution", "Google"),
    ("microsoft", "distribution", "Microsoft"),
    ("openai", "distribution", "OpenAI"),
    ("paypal", "distribution", "PayPal"),
    ("perplexity", "distribution", "Perplexity"),
    ("stripe", "distribution", "Stripe"),
    ("ucp", "distribution", "UCP"),
    ("shopify", "ingestion", "Shopify"),
    ("woocommerce", "ingestion", "WooCommerce"),
    ("bigcommerce", "ingestion", "BigCommerce"),
    ("magento", "ingestion", "Magento"),
    ("salesforce_commerce", "ingestion", "Salesforce Commerce"),
    ("akeneo", "ingestion", "Akeneo"),
    ("web_crawl", "ingestion", "Web Crawl"),
];

/// Id of the fixed customer whose List connections response is the documented example.
pub const CHANNEL3_DOC_EXAMPLE_ID: &str = "cus_doc_example";

/// Customer ids with characters that need percent-encoding in a path segment
/// (added when [`GenOptions::odd_ids`] is set).
pub const CHANNEL3_ODD_IDS: [&str; 6] = [
    "cus/slash",
    "cus?query",
    "cus%percent",
    "cus#hash",
    "cus space",
    "cus_ünïcode",
];

/// Id of the foreign merchant added when [`GenOptions::foreign`] is set.
pub const CHANNEL3_FOREIGN_ID: &str = "cus_foreign_partner";

/// Default Channel3 partner API key accepted by the simulator.
pub const CHANNEL3_API_KEY: &str = "c3_sk_sim_0123456789abcdef";

/// Default redirect-URI allowlist prefix for connect sessions.
pub const CHANNEL3_REDIRECT_PREFIX: &str = "https://app.example.com/";

/// Everything a [`Channel3Sim`](crate::Channel3Sim) serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel3Data {
    /// The `x-api-key` value the simulator accepts.
    pub api_key: String,
    /// `redirect_uri` prefixes accepted by Create connect session.
    pub redirect_allowlist: Vec<String>,
    /// Merchants, in List merchants order.
    pub customers: Vec<Channel3Customer>,
}

impl Channel3Data {
    /// No customers, the default key and allowlist.
    pub fn empty() -> Self {
        Channel3Data {
            api_key: CHANNEL3_API_KEY.to_string(),
            redirect_allowlist: vec![CHANNEL3_REDIRECT_PREFIX.to_string()],
            customers: Vec::new(),
        }
    }
}

/// One Channel3 merchant (a partner's customer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel3Customer {
    /// Channel3 `customer_id` (any string; may contain characters that need encoding).
    pub customer_id: String,
    /// Display name (List merchants `name`).
    pub name: Option<String>,
    /// List merchants `logo_url`.
    pub logo_url: Option<String>,
    /// Storefront domain (Create merchant is idempotent on it).
    pub domain: String,
    /// Belongs to another partner: List connections answers 403 and List merchants omits it.
    pub foreign: bool,
    /// The List connections response's `connections`, served verbatim.
    pub connections: Vec<Channel3Connection>,
}

impl Channel3Customer {
    /// A merchant with every platform `not_connected`.
    pub fn new(customer_id: impl Into<String>, name: impl Into<String>) -> Self {
        let customer_id = customer_id.into();
        let domain = format!(
            "{}.example.com",
            customer_id
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                })
                .collect::<String>()
        );
        Channel3Customer {
            customer_id,
            name: Some(name.into()),
            logo_url: None,
            domain,
            foreign: false,
            connections: channel3_not_connected(),
        }
    }

    /// The connection for `platform`, if listed.
    pub fn connection(&self, platform: &str) -> Option<&Channel3Connection> {
        self.connections.iter().find(|c| c.platform == platform)
    }

    /// The connection for `platform`, if listed (mutable).
    pub fn connection_mut(&mut self, platform: &str) -> Option<&mut Channel3Connection> {
        self.connections.iter_mut().find(|c| c.platform == platform)
    }
}

/// `PartnerConnection`, field for field (strings rather than enums, so tests can set
/// values the schema does not know).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel3Connection {
    /// `PlatformSlug`.
    pub platform: String,
    /// `distribution` or `ingestion`.
    pub category: String,
    /// `not_connected`, `action_required` or `active`.
    pub status: String,
    /// Store/account name or domain when connected, else the platform name.
    pub display_name: String,
    /// Stable connection id; null when not connected.
    pub id: Option<String>,
    /// RFC 3339; null when not connected.
    pub connected_at: Option<String>,
    /// Platform-side accounts (Google, Microsoft); else null.
    pub accounts: Option<Vec<Channel3Account>>,
    /// Delivery status of connected distribution platforms; else null.
    pub sync: Option<Channel3Sync>,
}

impl Channel3Connection {
    /// A `not_connected` row for `platform` (category and display name from
    /// [`CHANNEL3_PLATFORMS`]; unknown platforms get category `distribution`).
    pub fn not_connected(platform: &str) -> Self {
        let (category, display) = CHANNEL3_PLATFORMS
            .iter()
            .find(|(p, _, _)| *p == platform)
            .map(|(_, c, d)| (*c, (*d).to_string()))
            .unwrap_or(("distribution", platform.to_string()));
        Channel3Connection {
            platform: platform.to_string(),
            category: category.to_string(),
            status: "not_connected".to_string(),
            display_name: display,
            id: None,
            connected_at: None,
            accounts: None,
            sync: None,
        }
    }
}

/// `ConnectionAccount`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel3Account {
    /// Account id.
    pub id: String,
    /// Account name.
    pub name: Option<String>,
    /// Store URL.
    pub store_url: Option<String>,
}

/// `ConnectionSync`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel3Sync {
    /// `pending`, `syncing` or `live`.
    pub state: String,
    /// RFC 3339 or null.
    pub last_synced_at: Option<String>,
    /// Products Channel3 distributes to the platform.
    pub total_products: Option<u64>,
    /// Products fully synced.
    pub synced_products: Option<u64>,
}

/// All 15 platforms, `not_connected`, in schema order.
pub fn channel3_not_connected() -> Vec<Channel3Connection> {
    CHANNEL3_PLATFORMS
        .iter()
        .map(|(p, _, _)| Channel3Connection::not_connected(p))
        .collect()
}

/// The fixed customer whose connections are the seed document's example response, verbatim
/// (three rows only: channel3 not_connected, google active live 150/150, shopify
/// action_required).
pub fn channel3_doc_example() -> Channel3Customer {
    Channel3Customer {
        customer_id: CHANNEL3_DOC_EXAMPLE_ID.to_string(),
        name: Some("Acme Corp".to_string()),
        logo_url: Some("https://cdn.example.com/logos/acme.png".to_string()),
        domain: "acme.example.com".to_string(),
        foreign: false,
        connections: vec![
            Channel3Connection {
                platform: "channel3".into(),
                category: "distribution".into(),
                status: "not_connected".into(),
                display_name: "Channel3 Main Account".into(),
                id: None,
                connected_at: None,
                accounts: None,
                sync: None,
            },
            Channel3Connection {
                platform: "google".into(),
                category: "distribution".into(),
                status: "active".into(),
                display_name: "Acme Corp Google Store".into(),
                id: Some("conn-1234-google".into()),
                connected_at: Some("2024-01-15T09:30:00Z".into()),
                accounts: Some(vec![Channel3Account {
                    id: "acct-5678".into(),
                    name: Some("Acme Corp Main Account".into()),
                    store_url: Some("https://store.google.com/acmecorp".into()),
                }]),
                sync: Some(Channel3Sync {
                    state: "live".into(),
                    last_synced_at: Some("2024-04-20T14:45:00Z".into()),
                    total_products: Some(150),
                    synced_products: Some(150),
                }),
            },
            Channel3Connection {
                platform: "shopify".into(),
                category: "ingestion".into(),
                status: "action_required".into(),
                display_name: "Acme Shopify Store".into(),
                id: Some("conn-7890-shopify".into()),
                connected_at: Some("2024-02-10T11:00:00Z".into()),
                accounts: None,
                sync: None,
            },
        ],
    }
}

/// What a generated distribution row looks like.
#[derive(Clone, Copy)]
enum Dist {
    Off,
    ActionRequired,
    Pending,
    Syncing,
    Live,
    LivePartial,
    NoSync,
}

fn c3_activate(
    rng: &mut Rng,
    conn: &mut Channel3Connection,
    name: &str,
    domain: &str,
    status: &str,
) {
    conn.status = status.to_string();
    conn.id = Some(format!("conn_{}_{}", conn.platform, alnum_lower(rng, 12)));
    conn.connected_at = Some(ts(past(rng, 540)));
    let display = CHANNEL3_PLATFORMS
        .iter()
        .find(|(p, _, _)| *p == conn.platform)
        .map(|(_, _, d)| *d)
        .unwrap_or("Store");
    conn.display_name = if conn.platform == "web_crawl" || rng.u8(..4) == 0 {
        domain.to_string()
    } else {
        format!("{name} {display}")
    };
    if conn.platform == "google" || conn.platform == "microsoft" {
        let count = 1 + rng.usize(..2);
        conn.accounts = Some(
            (0..count)
                .map(|i| Channel3Account {
                    id: format!("acct-{}", rng.u32(100_000..999_999)),
                    name: Some(if i == 0 {
                        format!("{name} Main Account")
                    } else {
                        format!("{name} Outlet")
                    }),
                    store_url: if rng.u8(..5) == 0 {
                        None
                    } else {
                        Some(format!("https://{}/{}", domain, conn.platform))
                    },
                })
                .collect(),
        );
    }
}

fn c3_distribution(
    rng: &mut Rng,
    conn: &mut Channel3Connection,
    name: &str,
    domain: &str,
    d: Dist,
) {
    match d {
        Dist::Off => {}
        Dist::ActionRequired => c3_activate(rng, conn, name, domain, "action_required"),
        Dist::NoSync => c3_activate(rng, conn, name, domain, "active"),
        Dist::Pending | Dist::Syncing | Dist::Live | Dist::LivePartial => {
            c3_activate(rng, conn, name, domain, "active");
            let total = rng.u64(20..5000);
            let sync = match d {
                Dist::Pending => Channel3Sync {
                    state: "pending".into(),
                    last_synced_at: None,
                    total_products: if rng.bool() { Some(total) } else { None },
                    synced_products: Some(0),
                },
                Dist::Syncing => Channel3Sync {
                    state: "syncing".into(),
                    last_synced_at: Some(ts(past(rng, 2))),
                    total_products: Some(total),
                    synced_products: Some(rng.u64(0..total)),
                },
                Dist::Live => Channel3Sync {
                    state: "live".into(),
                    last_synced_at: Some(ts(past(rng, 2))),
                    total_products: Some(total),
                    synced_products: Some(total),
                },
                _ => Channel3Sync {
                    state: "live".into(),
                    last_synced_at: Some(ts(past(rng, 2))),
                    total_products: Some(total),
                    synced_products: Some(total * rng.u64(50..99) / 100),
                },
            };
            conn.sync = Some(sync);
        }
    }
}

fn random_dist(rng: &mut Rng, active_pct: u8) -> Dist {
    if rng.u8(..100) >= active_pct {
        return Dist::Off;
    }
    *weighted(
        rng,
        &[
            (Dist::ActionRequired, 6),
            (Dist::Pending, 18),
            (Dist::Syncing, 18),
            (Dist::Live, 46),
            (Dist::LivePartial, 11),
            (Dist::NoSync, 1),
        ],
    )
}

fn gen_channel3_customer(
    rng: &mut Rng,
    index: usize,
    ids: &mut HashSet<String>,
) -> Channel3Customer {
    let mut id;
    loop {
        id = format!("cus_{}", alnum_lower(rng, 20));
        if ids.insert(id.clone()) {
            break;
        }
    }
    let (name, slug) = business_name(rng);
    let domain = format!("{slug}.example.com");
    let mut c = Channel3Customer {
        customer_id: id,
        name: if rng.u8(..50) == 0 {
            None
        } else {
            Some(name.clone())
        },
        logo_url: if rng.u8(..4) == 0 {
            None
        } else {
            Some(format!("https://cdn.example.com/logos/{slug}.png"))
        },
        domain: domain.clone(),
        foreign: false,
        connections: channel3_not_connected(),
    };

    // (ingestion platform + status, [(distribution platform, dist)], web_crawl active)
    type Plan = (
        Option<(&'static str, &'static str)>,
        Vec<(&'static str, Dist)>,
        bool,
    );
    let plan: Plan = match index {
        0 => (
            Some(("shopify", "active")),
            vec![("openai", Dist::Pending), ("google", Dist::Live)],
            true,
        ),
        1 => (
            Some(("woocommerce", "active")),
            vec![("openai", Dist::Syncing)],
            true,
        ),
        2 => (None, vec![("openai", Dist::LivePartial)], true),
        3 => (
            Some(("shopify", "action_required")),
            vec![("google", Dist::ActionRequired), ("openai", Dist::Live)],
            true,
        ),
        4 => (
            Some(("bigcommerce", "active")),
            vec![("microsoft", Dist::NoSync), ("openai", Dist::Live)],
            true,
        ),
        5 => (
            Some(("magento", "active")),
            vec![("perplexity", Dist::Live), ("stripe", Dist::Pending)],
            false,
        ),
        6 => (
            Some(("salesforce_commerce", "active")),
            vec![
                ("paypal", Dist::Syncing),
                ("ucp", Dist::Live),
                ("channel3", Dist::Live),
            ],
            true,
        ),
        7 => (
            Some(("akeneo", "active")),
            vec![("google", Dist::LivePartial)],
            true,
        ),
        _ => {
            let ingestion = if rng.u8(..100) < 65 {
                let p = *weighted(
                    rng,
                    &[
                        ("shopify", 50),
                        ("woocommerce", 20),
                        ("bigcommerce", 10),
                        ("magento", 8),
                        ("salesforce_commerce", 5),
                        ("akeneo", 7),
                    ],
                );
                let s = if rng.u8(..100) < 88 {
                    "active"
                } else {
                    "action_required"
                };
                Some((p, s))
            } else {
                None
            };
            let mut dists = vec![
                ("openai", random_dist(rng, 75)),
                ("google", random_dist(rng, 45)),
            ];
            for (p, pct) in [
                ("microsoft", 15),
                ("perplexity", 10),
                ("channel3", 8),
                ("paypal", 5),
                ("stripe", 5),
                ("ucp", 5),
            ] {
                dists.push((p, random_dist(rng, pct)));
            }
            (ingestion, dists, rng.u8(..100) < 85)
        }
    };
    let (ingestion, dists, web_crawl) = plan;
    if web_crawl {
        if let Some(conn) = c.connection_mut("web_crawl") {
            c3_activate(rng, conn, &name, &domain, "active");
        }
    }
    if let Some((p, status)) = ingestion {
        if let Some(conn) = c.connection_mut(p) {
            c3_activate(rng, conn, &name, &domain, status);
        }
    }
    for (p, d) in dists {
        if let Some(conn) = c.connection_mut(p) {
            c3_distribution(rng, conn, &name, &domain, d);
        }
    }
    c
}

/// `n` Channel3 customers (the documented example first) with default options.
pub fn channel3_customers(n: usize, seed: u64) -> Channel3Data {
    channel3_customers_with(n, seed, &GenOptions::default())
}

/// `n` Channel3 customers with explicit [`GenOptions`].
pub fn channel3_customers_with(n: usize, seed: u64, opts: &GenOptions) -> Channel3Data {
    let mut rng = rng_for(seed, 1);
    let mut data = Channel3Data::empty();
    data.customers.reserve(n + 7);
    let mut ids = HashSet::with_capacity(n + 7);
    if opts.doc_examples && n > 0 {
        data.customers.push(channel3_doc_example());
        ids.insert(CHANNEL3_DOC_EXAMPLE_ID.to_string());
    }
    let generated = n - data.customers.len();
    for i in 0..generated {
        let c = gen_channel3_customer(&mut rng, i, &mut ids);
        data.customers.push(c);
    }
    if opts.odd_ids {
        for (i, id) in CHANNEL3_ODD_IDS.iter().enumerate() {
            let mut c = Channel3Customer::new(*id, format!("Odd Id Merchant {}", i + 1));
            if let Some(conn) = c.connection_mut("web_crawl") {
                c3_activate(&mut rng, conn, "Odd", "odd.example.com", "active");
            }
            data.customers.push(c);
        }
    }
    if opts.foreign {
        let mut c = Channel3Customer::new(CHANNEL3_FOREIGN_ID, "Someone Else's Merchant");
        c.foreign = true;
        data.customers.push(c);
    }
    data
}

// =====================================================================================
// Violet
// =====================================================================================

/// Default Violet app id accepted by the simulator.
pub const VIOLET_APP_ID: u64 = 10001;
/// Default Violet app secret.
pub const VIOLET_APP_SECRET: &str = "violet-sim-app-secret";
/// Default Violet username (the app owner's e-mail).
pub const VIOLET_USERNAME: &str = "developer@example.com";
/// Default Violet password.
pub const VIOLET_PASSWORD: &str = "violet-sim-password";
/// `merchant_id` of the fixed merchant that is the documented example, verbatim.
pub const VIOLET_DOC_EXAMPLE_ID: i64 = 123;

/// The documented `GET /operations/connection_health` example's single element, verbatim.
pub const VIOLET_DOC_EXAMPLE_JSON: &str = r#"{
"merchant_id": 123,
"merchant_name": "<string>",
"merchant_email": "<string>",
"merchant_status": "INACTIVE",
"platform": "OTHER",
"store_url": "<string>",
"distribution_type": "PUBLIC",
"connection": {"status": "COMPLETE",
 "error": {"message": "<string>", "error": "<string>", "code": 123,
  "data": {"skus": [{"message": "<string>", "name": "<string>", "skuId": 123, "orderSkuId": 123, "bagId": 123}]},
  "id": {}, "ids": [{}]},
 "results": {"isConnected": true, "hasActivePlatformPlan": true, "hasShippingMethods": true,
  "storeScopes": {"hasValidScopes": true, "requiredScopes": ["<string>"], "missingScopes": ["<string>"]},
  "connected": true}},
"scope_validation": {"status": "COMPLETE",
 "error": {"message": "<string>", "error": "<string>", "code": 123,
  "data": {"skus": [{"message": "<string>", "name": "<string>", "skuId": 123, "orderSkuId": 123, "bagId": 123}]},
  "id": {}, "ids": [{}]},
 "results": {"valid": true, "missing_scopes": ["<string>"]}},
"sync_status": {"status": "COMPLETE",
 "error": {"message": "<string>", "error": "<string>", "code": 123,
  "data": {"skus": [{"message": "<string>", "name": "<string>", "skuId": 123, "orderSkuId": 123, "bagId": 123}]},
  "id": {}, "ids": [{}]},
 "results": {"id": 123, "merchant_id": 123, "status": "NOT_STARTED", "abort": true, "total_products": 123,
  "total_products_synced": 123, "resync_required": true, "date_last_synced": "2023-11-07T05:31:56Z",
  "taxonomy_synced": true, "webhooks_created": true, "date_shipping_last_synced": "2023-11-07T05:31:56Z",
  "app_id": 123}},
"invalid_products": {"status": "COMPLETE",
 "error": {"message": "<string>", "error": "<string>", "code": 123,
  "data": {"skus": [{"message": "<string>", "name": "<string>", "skuId": 123, "orderSkuId": 123, "bagId": 123}]},
  "id": {}, "ids": [{}]},
 "results": {"count": 123, "invalid_product": {"id": 123, "external_id": "<string>", "name": "<string>",
  "thumbnail_url": "<string>", "merchant_id": 123, "issues": "<string>", "status": "UNRESOLVED",
  "date_created": "2023-11-07T05:31:56Z", "date_last_modified": "2023-11-07T05:31:56Z"}}},
"offers_published": {"status": "COMPLETE",
 "error": {"message": "<string>", "error": "<string>", "code": 123,
  "data": {"skus": [{"message": "<string>", "name": "<string>", "skuId": 123, "orderSkuId": 123, "bagId": 123}]},
  "id": {}, "ids": [{}]},
 "results": {"sync_complete": true, "count": 123}},
"payout_account": {"status": "COMPLETE",
 "error": {"message": "<string>", "error": "<string>", "code": 123,
  "data": {"skus": [{"message": "<string>", "name": "<string>", "skuId": 123, "orderSkuId": 123, "bagId": 123}]},
  "id": {}, "ids": [{}]},
 "results": {"id": 123, "account_type": "MERCHANT", "account_id": 123, "merchant_id": 123, "app_id": 123,
  "is_active": true, "country_code": "<string>", "payment_provider": "STRIPE",
  "payment_provider_account_id": "<string>", "payment_provider_account_type": "EXPRESS",
  "payment_provider_metadata": {}, "payment_provider_account": {}, "date_deactivated": "2023-11-07T05:31:56Z",
  "errors": [{"id": 123, "error_code": 123, "error_message": "<string>", "resolved": true,
   "date_resolved": "2023-11-07T05:31:56Z", "date_created": "2023-11-07T05:31:56Z", "payout_account_id": 123}],
  "date_created": "2023-11-07T05:31:56Z", "date_last_modified": "2023-11-07T05:31:56Z"}},
"migration": {"status": "COMPLETE",
 "error": {"message": "<string>", "error": "<string>", "code": 123,
  "data": {"skus": [{"message": "<string>", "name": "<string>", "skuId": 123, "orderSkuId": 123, "bagId": 123}]},
  "id": {}, "ids": [{}]},
 "results": "MIGRATION_REQUIRED"},
"commission_rate": {"status": "COMPLETE",
 "error": {"message": "<string>", "error": "<string>", "code": 123,
  "data": {"skus": [{"message": "<string>", "name": "<string>", "skuId": 123, "orderSkuId": 123, "bagId": 123}]},
  "id": {}, "ids": [{}]},
 "default_rate": 123,
 "overrides": [{"status": "COMPLETE",
  "error": {"message": "<string>", "error": "<string>", "code": 123,
   "data": {"skus": [{"message": "<string>", "name": "<string>", "skuId": 123, "orderSkuId": 123, "bagId": 123}]},
   "id": {}, "ids": [{}]},
  "app_id": 123, "rate": 123, "commission_locked": true}]}
}"#;

/// The eight report sections, in documented order.
pub const VIOLET_SECTIONS: [&str; 8] = [
    "connection",
    "scope_validation",
    "sync_status",
    "invalid_products",
    "offers_published",
    "payout_account",
    "migration",
    "commission_rate",
];

/// Every documented per-check `status`.
pub const VIOLET_CHECK_STATUSES: [&str; 5] = [
    "COMPLETE",
    "INCOMPLETE",
    "NEEDS_ATTENTION",
    "NOT_APPLICABLE",
    "ERROR",
];

/// Every documented `merchant_status`.
pub const VIOLET_MERCHANT_STATUSES: [&str; 10] = [
    "INACTIVE",
    "ACTIVE",
    "DISABLED",
    "NEW",
    "DISABLED_INACTIVE",
    "FOR_DELETION",
    "APPLICATION_IN_PROGRESS",
    "APPLICATION_SUBMITTED",
    "APPLICATION_DENIED",
    "APPLICATION_ACCEPTED",
];

/// Every documented `sync_status.results.status`.
pub const VIOLET_SYNC_STATUSES: [&str; 5] = [
    "NOT_STARTED",
    "PENDING",
    "IN_PROGRESS",
    "COMPLETED",
    "FAILED",
];

/// Every documented `platform` (the generator also uses all of them).
pub const VIOLET_PLATFORMS: [&str; 40] = [
    "OTHER",
    "SHOPIFY",
    "MAGENTO",
    "MAGENTO_ONE",
    "WOOCOMMERCE",
    "BIGCOMMERCE",
    "LIGHTSPEED",
    "ECWID",
    "YAAS",
    "SPREECOMMERCE",
    "DEMANDWARE",
    "VOLUSION",
    "PRESTASHOP",
    "THREEDCART",
    "SYLIUS",
    "WIX",
    "SWELL",
    "MIVA",
    "WEBSPHERE",
    "ORACLECC",
    "SAPCC",
    "SQUARESPACE",
    "SHOPWARE",
    "COMMERCETOOLS",
    "MEDUSA",
    "ABICART",
    "SPRYKER",
    "MYSTORE",
    "CENTRA",
    "XCART",
    "VTEX",
    "KIBO",
    "SALEOR",
    "VENDO",
    "CHORD",
    "DIGITALRIVER",
    "SQUARE",
    "AMAZON",
    "BIGCARTEL",
    "CUSTOM",
];

/// Everything a [`VioletSim`](crate::VioletSim) serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VioletData {
    /// `X-Violet-App-Id` (and the `app_id` query parameter) the simulator accepts.
    pub app_id: u64,
    /// `X-Violet-App-Secret`.
    pub app_secret: String,
    /// Login username.
    pub username: String,
    /// Login password.
    pub password: String,
    /// One ConnectionHealth object per merchant (snake_case keys, upper-case enums), each
    /// with an integer `merchant_id`; served in this order.
    pub merchants: Vec<Value>,
}

impl VioletData {
    /// No merchants, the default credentials.
    pub fn empty() -> Self {
        VioletData {
            app_id: VIOLET_APP_ID,
            app_secret: VIOLET_APP_SECRET.to_string(),
            username: VIOLET_USERNAME.to_string(),
            password: VIOLET_PASSWORD.to_string(),
            merchants: Vec::new(),
        }
    }
}

/// The documented example merchant (id 123), verbatim. Note that it is `PUBLIC`, so the list
/// endpoint only returns it with `exclude_public=false`.
pub fn violet_doc_example() -> Value {
    serde_json::from_str(VIOLET_DOC_EXAMPLE_JSON).unwrap_or(Value::Null)
}

fn scope_list(platform: &str) -> Vec<&'static str> {
    if platform == "SHOPIFY" {
        vec![
            "read_products",
            "read_inventory",
            "write_orders",
            "read_orders",
            "read_shipping",
            "write_fulfillments",
        ]
    } else {
        vec!["catalog:read", "orders:write", "inventory:read"]
    }
}

fn section_error(rng: &mut Rng, message: &str) -> Value {
    json!({
        "message": message,
        "error": "PLATFORM_ERROR",
        "code": 4000 + rng.i64(0..999),
        "data": { "cause": "PLATFORM_ERROR", "skus": [] },
        "id": null,
        "ids": [],
    })
}

/// A fully healthy ConnectionHealth object (every check COMPLETE or NOT_APPLICABLE), with
/// plausible values. Useful to build custom merchants in tests.
pub fn violet_healthy_merchant(merchant_id: i64, name: &str, platform: &str) -> Value {
    let mut rng = Rng::with_seed(merchant_id as u64);
    violet_healthy(
        &mut rng,
        merchant_id,
        name,
        platform,
        "PRIVATE",
        VIOLET_APP_ID,
    )
}

fn violet_healthy(
    rng: &mut Rng,
    id: i64,
    name: &str,
    platform: &str,
    distribution: &str,
    app_id: u64,
) -> Value {
    let slug: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .collect::<String>()
        .to_lowercase()
        .replace(' ', "-");
    let store_url = if platform == "SHOPIFY" {
        format!("https://{slug}.myshopify.com")
    } else {
        format!("https://{slug}.example.com")
    };
    let first = slug.chars().next().unwrap_or('m');
    let email = format!("{first}****{}@{slug}.example.com", rng.u8(0..10));
    let total = rng.i64(10..4000);
    let synced_at = ts(past(rng, 3));
    let created = ts(past(rng, 900));
    let scopes = scope_list(platform);
    let migrated = rng.u8(..10) < 3;
    json!({
        "merchant_id": id,
        "merchant_name": name,
        "merchant_email": email,
        "merchant_status": "ACTIVE",
        "platform": platform,
        "store_url": store_url,
        "distribution_type": distribution,
        "connection": {
            "status": "COMPLETE",
            "error": null,
            "results": {
                "isConnected": true,
                "hasActivePlatformPlan": true,
                "hasShippingMethods": true,
                "storeScopes": {
                    "hasValidScopes": true,
                    "requiredScopes": scopes,
                    "missingScopes": [],
                },
                "connected": true,
            },
        },
        "scope_validation": {
            "status": "COMPLETE",
            "error": null,
            "results": { "valid": true, "missing_scopes": [] },
        },
        "sync_status": {
            "status": "COMPLETE",
            "error": null,
            "results": {
                "id": id * 10 + 1,
                "merchant_id": id,
                "status": "COMPLETED",
                "abort": false,
                "total_products": total,
                "total_products_synced": total,
                "resync_required": false,
                "date_last_synced": synced_at,
                "taxonomy_synced": true,
                "webhooks_created": true,
                "date_shipping_last_synced": synced_at,
                "app_id": app_id,
            },
        },
        "invalid_products": {
            "status": "COMPLETE",
            "error": null,
            "results": { "count": 0, "invalid_product": null },
        },
        "offers_published": {
            "status": "COMPLETE",
            "error": null,
            "results": { "sync_complete": true, "count": total },
        },
        "payout_account": {
            "status": "COMPLETE",
            "error": null,
            "results": {
                "id": id * 10 + 2,
                "account_type": "MERCHANT",
                "account_id": id,
                "merchant_id": id,
                "app_id": app_id,
                "is_active": true,
                "country_code": *pick(rng, &["US", "US", "US", "CA", "GB", "DE", "AU"]),
                "payment_provider": "STRIPE",
                "payment_provider_account_id": format!("acct_{}", alnum_lower(rng, 16)),
                "payment_provider_account_type": *pick(rng, &["EXPRESS", "EXPRESS", "CUSTOM", "STANDARD"]),
                "payment_provider_metadata": {},
                "payment_provider_account": {},
                "date_deactivated": null,
                "errors": [],
                "date_created": created,
                "date_last_modified": created,
            },
        },
        "migration": {
            "status": if migrated { "COMPLETE" } else { "NOT_APPLICABLE" },
            "error": null,
            "results": if migrated { "MIGRATED" } else { "NOT_APPLICABLE" },
        },
        "commission_rate": {
            "status": "COMPLETE",
            "error": null,
            "default_rate": rng.i64(5..26),
            "overrides": if rng.u8(..4) == 0 {
                json!([{ "status": "COMPLETE", "error": null, "app_id": app_id,
                         "rate": rng.i64(5..26), "commission_locked": rng.bool() }])
            } else {
                json!([])
            },
        },
    })
}

/// Set `section` of `report` to `status`, making its results consistent; `variant` picks one
/// of several ways a status can come about.
fn violet_apply(rng: &mut Rng, report: &mut Value, section: &str, status: &str, variant: u8) {
    let platform = report["platform"].as_str().unwrap_or("OTHER").to_string();
    report[section]["status"] = json!(status);
    if status == "ERROR" {
        let msg = match section {
            "connection" => "Unable to reach the store platform",
            "sync_status" => "Product sync state could not be read",
            "payout_account" => "Payment provider request failed",
            _ => "Health check failed to run",
        };
        report[section]["error"] = section_error(rng, msg);
    }
    match (section, status) {
        ("connection", "INCOMPLETE") => {
            report["connection"]["results"]["hasShippingMethods"] = json!(false);
        }
        ("connection", "NEEDS_ATTENTION") => match variant % 3 {
            0 => {
                report["connection"]["results"]["isConnected"] = json!(false);
                report["connection"]["results"]["connected"] = json!(false);
            }
            1 => {
                let scopes = scope_list(&platform);
                let missing: Vec<&str> = scopes.iter().rev().take(2).copied().collect();
                report["connection"]["results"]["storeScopes"]["hasValidScopes"] = json!(false);
                report["connection"]["results"]["storeScopes"]["missingScopes"] = json!(missing);
                report["scope_validation"]["status"] = json!("NEEDS_ATTENTION");
                report["scope_validation"]["results"] =
                    json!({ "valid": false, "missing_scopes": missing });
            }
            _ => {
                report["connection"]["results"]["hasActivePlatformPlan"] = json!(false);
            }
        },
        ("connection", "ERROR") => report["connection"]["results"] = Value::Null,
        ("scope_validation", "INCOMPLETE") => {
            report["scope_validation"]["results"] =
                json!({ "valid": true, "missing_scopes": ["read_locales"] });
        }
        ("scope_validation", "NEEDS_ATTENTION") => {
            let scopes = scope_list(&platform);
            let missing = vec![scopes[scopes.len() - 1]];
            report["scope_validation"]["results"] =
                json!({ "valid": false, "missing_scopes": missing });
            report["connection"]["results"]["storeScopes"]["hasValidScopes"] = json!(false);
            report["connection"]["results"]["storeScopes"]["missingScopes"] = json!(missing);
        }
        ("scope_validation", "ERROR") => report["scope_validation"]["results"] = Value::Null,
        ("sync_status", s) => {
            let r = &mut report["sync_status"]["results"];
            let total = r["total_products"].as_i64().unwrap_or(100);
            match s {
                "INCOMPLETE" => match variant % 3 {
                    0 => {
                        r["status"] = json!("NOT_STARTED");
                        r["total_products_synced"] = json!(0);
                        r["date_last_synced"] = Value::Null;
                        r["taxonomy_synced"] = json!(false);
                    }
                    1 => {
                        r["status"] = json!("PENDING");
                        r["total_products_synced"] = json!(0);
                    }
                    _ => {
                        r["status"] = json!("IN_PROGRESS");
                        r["total_products_synced"] = json!(rng.i64(0..total.max(1)));
                    }
                },
                "NEEDS_ATTENTION" => {
                    r["status"] = json!("FAILED");
                    r["resync_required"] = json!(true);
                    r["total_products_synced"] = json!(rng.i64(0..total.max(1)));
                }
                "ERROR" => {
                    r["status"] = json!("FAILED");
                    r["abort"] = json!(true);
                }
                "NOT_APPLICABLE" => report["sync_status"]["results"] = Value::Null,
                _ => {}
            }
        }
        ("invalid_products", "INCOMPLETE" | "NEEDS_ATTENTION") => {
            let count = if status == "INCOMPLETE" {
                rng.i64(1..20)
            } else {
                rng.i64(50..500)
            };
            let id = report["merchant_id"].as_i64().unwrap_or(0);
            let at = ts(past(rng, 30));
            report["invalid_products"]["results"] = json!({
                "count": count,
                "invalid_product": {
                    "id": id * 100 + rng.i64(0..99),
                    "external_id": format!("{}", rng.u64(1_000_000_000..9_999_999_999)),
                    "name": *pick(rng, &["Classic Tee", "Ceramic Mug", "Trail Shoe", "Gift Card"]),
                    "thumbnail_url": null,
                    "merchant_id": id,
                    "issues": *pick(rng, &["MISSING_IMAGE,MISSING_PRICE", "INVALID_SKU", "MISSING_WEIGHT"]),
                    "status": "UNRESOLVED",
                    "date_created": at,
                    "date_last_modified": at,
                },
            });
        }
        ("invalid_products", "ERROR") => report["invalid_products"]["results"] = Value::Null,
        ("offers_published", "INCOMPLETE") => {
            let count = report["offers_published"]["results"]["count"]
                .as_i64()
                .unwrap_or(10);
            report["offers_published"]["results"] =
                json!({ "sync_complete": false, "count": count / 2 });
        }
        ("offers_published", "NEEDS_ATTENTION") => {
            report["offers_published"]["results"] = json!({ "sync_complete": false, "count": 0 });
        }
        ("offers_published", "NOT_APPLICABLE" | "ERROR") => {
            report["offers_published"]["results"] = Value::Null;
        }
        ("payout_account", "INCOMPLETE") => {
            report["payout_account"]["results"]["payment_provider_account"] = json!({
                "requirements": { "currently_due": [], "eventually_due": ["individual.verification.document"],
                                  "past_due": [], "errors": [], "pending_verification": [] }
            });
        }
        ("payout_account", "NEEDS_ATTENTION") => {
            if variant % 2 == 0 {
                report["payout_account"]["results"] = Value::Null;
            } else {
                let pid = report["payout_account"]["results"]["id"]
                    .as_i64()
                    .unwrap_or(1);
                let at = ts(past(rng, 20));
                report["payout_account"]["results"]["is_active"] = json!(false);
                report["payout_account"]["results"]["errors"] = json!([{
                    "id": pid * 10 + 1,
                    "error_code": 2001,
                    "error_message": "Bank account verification failed",
                    "resolved": false,
                    "date_resolved": null,
                    "date_created": at,
                    "payout_account_id": pid,
                }]);
            }
        }
        ("payout_account", "NOT_APPLICABLE" | "ERROR") => {
            report["payout_account"]["results"] = Value::Null;
        }
        ("migration", s) => {
            report["migration"]["results"] = json!(match s {
                "COMPLETE" => "MIGRATED",
                "INCOMPLETE" => "MIGRATION_IN_PROGRESS",
                "NEEDS_ATTENTION" => "MIGRATION_REQUIRED",
                "NOT_APPLICABLE" => "NOT_APPLICABLE",
                _ => "ERROR",
            });
        }
        ("commission_rate", "INCOMPLETE" | "NOT_APPLICABLE") => {
            report["commission_rate"]["default_rate"] = Value::Null;
            report["commission_rate"]["overrides"] = json!([]);
        }
        ("commission_rate", "NEEDS_ATTENTION") => {
            let app = report["sync_status"]["results"]["app_id"].clone();
            report["commission_rate"]["overrides"] = json!([{
                "status": "NEEDS_ATTENTION",
                "error": section_error(rng, "Commission rate override rejected"),
                "app_id": app,
                "rate": 0,
                "commission_locked": false,
            }]);
        }
        _ => {}
    }
}

/// A Violet scenario applied on top of a healthy merchant.
#[derive(Clone, Copy)]
enum VScenario {
    MerchantStatus(&'static str),
    Check(&'static str, &'static str, u8),
}

fn violet_schedule() -> Vec<VScenario> {
    let mut s: Vec<VScenario> = VIOLET_MERCHANT_STATUSES
        .iter()
        .filter(|m| **m != "ACTIVE")
        .map(|m| VScenario::MerchantStatus(m))
        .collect();
    for section in VIOLET_SECTIONS {
        for status in ["INCOMPLETE", "NEEDS_ATTENTION", "NOT_APPLICABLE", "ERROR"] {
            let variants = match (section, status) {
                ("connection", "NEEDS_ATTENTION") => 3,
                ("sync_status", "INCOMPLETE") => 3,
                ("payout_account", "NEEDS_ATTENTION") => 2,
                _ => 1,
            };
            for v in 0..variants {
                s.push(VScenario::Check(section, status, v));
            }
        }
    }
    // COMPLETE variants that differ from the healthy base.
    s.push(VScenario::Check("migration", "COMPLETE", 0));
    s
}

fn apply_scenario(rng: &mut Rng, report: &mut Value, sc: VScenario) {
    match sc {
        VScenario::MerchantStatus(m) => report["merchant_status"] = json!(m),
        VScenario::Check(section, status, v) => violet_apply(rng, report, section, status, v),
    }
}

/// `n` Violet merchants (the documented example, id 123, first) with default options.
pub fn violet_merchants(n: usize, seed: u64) -> VioletData {
    violet_merchants_with(n, seed, &GenOptions::default())
}

/// `n` Violet merchants with explicit [`GenOptions`] (only `doc_examples` applies).
pub fn violet_merchants_with(n: usize, seed: u64, opts: &GenOptions) -> VioletData {
    let mut rng = rng_for(seed, 2);
    let mut data = VioletData::empty();
    data.merchants.reserve(n);
    if opts.doc_examples && n > 0 {
        data.merchants.push(violet_doc_example());
    }
    let schedule = violet_schedule();
    const FORCED_PLATFORMS: [&str; 12] = [
        "SHOPIFY",
        "WOOCOMMERCE",
        "BIGCOMMERCE",
        "MAGENTO",
        "CHORD",
        "SQUARE",
        "AMAZON",
        "BIGCARTEL",
        "PRESTASHOP",
        "WIX",
        "COMMERCETOOLS",
        "CUSTOM",
    ];
    let generated = n - data.merchants.len();
    for i in 0..generated {
        let id = 10_001 + i as i64;
        let (name, _) = business_name(&mut rng);
        let platform: &'static str = if let Some(p) = FORCED_PLATFORMS.get(i) {
            p
        } else if rng.u8(..100) < 55 {
            "SHOPIFY"
        } else if rng.u8(..100) < 40 {
            const COMMON: [&str; 5] = [
                "WOOCOMMERCE",
                "BIGCOMMERCE",
                "MAGENTO",
                "SQUARESPACE",
                "WIX",
            ];
            COMMON[rng.usize(..COMMON.len())]
        } else {
            VIOLET_PLATFORMS[rng.usize(..VIOLET_PLATFORMS.len())]
        };
        let forced = schedule.get(i).copied();
        let distribution = if forced.is_none() && rng.u8(..100) < 15 {
            "PUBLIC"
        } else {
            "PRIVATE"
        };
        let mut report = violet_healthy(&mut rng, id, &name, platform, distribution, data.app_id);
        match forced {
            Some(sc) => apply_scenario(&mut rng, &mut report, sc),
            None => {
                if rng.u8(..100) < 22 {
                    let k = 1 + rng.usize(..2);
                    for _ in 0..k {
                        let sc = *pick(&mut rng, &schedule);
                        apply_scenario(&mut rng, &mut report, sc);
                    }
                }
            }
        }
        data.merchants.push(report);
    }
    data
}

// =====================================================================================
// Subtotal
// =====================================================================================

/// Default Subtotal API key accepted by the simulator.
pub const SUBTOTAL_API_KEY: &str = "st_sim_0123456789abcdef";
/// The documented example's customer id.
pub const SUBTOTAL_DOC_CUSTOMER_ID: &str = "8a46e581-48ba-498a-9ad0-2ee72582e1af";
/// The documented example's connection id.
pub const SUBTOTAL_DOC_CONNECTION_ID: &str = "01J51S0JYV6N7K1030CV1ZKSCA";
/// The documented example's retailer id.
pub const SUBTOTAL_DOC_RETAILER_ID: &str = "01J7SC0NN73R6F5VVSP3ZKPDA3";
/// Every documented connection `status`.
pub const SUBTOTAL_STATUSES: [&str; 4] =
    ["active", "initialized", "unauthenticated", "disconnected"];

/// Everything a [`SubtotalSim`](crate::SubtotalSim) serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtotalData {
    /// The `x-api-key` value the simulator accepts.
    pub api_key: String,
    /// `GET /retailers`.
    pub retailers: Vec<SubtotalRetailer>,
    /// Every connection, of every customer.
    pub connections: Vec<SubtotalConnection>,
}

impl SubtotalData {
    /// No connections, the default key and retailer list.
    pub fn empty() -> Self {
        SubtotalData {
            api_key: SUBTOTAL_API_KEY.to_string(),
            retailers: subtotal_retailers(),
            connections: Vec::new(),
        }
    }

    /// Distinct customer ids, in first-appearance order.
    pub fn customer_ids(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.connections
            .iter()
            .filter(|c| seen.insert(c.customer_id.as_str()))
            .map(|c| c.customer_id.clone())
            .collect()
    }
}

/// One item of `GET /retailers` (field names unconfirmed in the docs; chosen here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtotalRetailer {
    /// Retailer id: a slug (`walmart`) or a ULID.
    pub retailer_id: String,
    /// Display name.
    pub name: String,
    /// Whether the retailer is enabled for the client.
    pub enabled: bool,
}

/// `ConnectionResponse` (plus `is_simulated`, present only when `Some`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtotalConnection {
    /// ULID-like, 26 Crockford base32 characters.
    pub connection_id: String,
    /// The integrator's customer key.
    pub customer_id: String,
    /// Retailer slug or ULID.
    pub retailer_id: String,
    /// `active`, `initialized`, `unauthenticated` or `disconnected`.
    pub status: String,
    /// E-mail or null.
    pub email: Option<String>,
    /// Mobile or null.
    pub mobile: Option<String>,
    /// Simulated connection marker; omitted from JSON when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_simulated: Option<bool>,
}

/// The documented example connection.
pub fn subtotal_doc_example() -> SubtotalConnection {
    SubtotalConnection {
        connection_id: SUBTOTAL_DOC_CONNECTION_ID.to_string(),
        customer_id: SUBTOTAL_DOC_CUSTOMER_ID.to_string(),
        retailer_id: SUBTOTAL_DOC_RETAILER_ID.to_string(),
        status: "active".to_string(),
        email: Some("alice@example.com".to_string()),
        mobile: Some("+1234567890".to_string()),
        is_simulated: None,
    }
}

/// The simulator's retailer catalogue: slugs plus a few ULID ids (the documented one first).
pub fn subtotal_retailers() -> Vec<SubtotalRetailer> {
    let r = |id: &str, name: &str, enabled: bool| SubtotalRetailer {
        retailer_id: id.to_string(),
        name: name.to_string(),
        enabled,
    };
    vec![
        r(SUBTOTAL_DOC_RETAILER_ID, "Example Market", true),
        r("walmart", "Walmart", true),
        r("target", "Target", true),
        r("amazon", "Amazon", true),
        r("costco", "Costco", true),
        r("kroger", "Kroger", true),
        r("bestbuy", "Best Buy", true),
        r("homedepot", "The Home Depot", true),
        r("instacart", "Instacart", false),
        r("01J7SC1A2B3C4D5E6F7G8H9JKM", "Northside Grocers", true),
        r("01J7SC2QRSTVWXYZ0123456789", "Harbor Pharmacy", true),
    ]
}

fn subtotal_connection(
    rng: &mut Rng,
    customer: &str,
    retailer: &str,
    status: &str,
    first: &str,
) -> SubtotalConnection {
    let millis = (past(rng, 700) as u64) * 1000 + rng.u64(..1000);
    SubtotalConnection {
        connection_id: util::ulid(rng, millis),
        customer_id: customer.to_string(),
        retailer_id: retailer.to_string(),
        status: status.to_string(),
        email: if rng.u8(..10) < 8 {
            Some(format!("{first}.{}@example.com", rng.u16(1..9999)))
        } else {
            None
        },
        mobile: if rng.bool() {
            Some(format!("+1{}", rng.u64(2_000_000_000..9_999_999_999)))
        } else {
            None
        },
        is_simulated: if rng.u8(..100) < 8 { Some(true) } else { None },
    }
}

/// `n` Subtotal customers (the documented example first), each with 1–4 connections.
pub fn subtotal_customers(n: usize, seed: u64) -> SubtotalData {
    subtotal_customers_with(n, seed, &GenOptions::default())
}

/// `n` Subtotal customers with explicit [`GenOptions`] (only `doc_examples` applies).
pub fn subtotal_customers_with(n: usize, seed: u64, opts: &GenOptions) -> SubtotalData {
    const FIRST: &[&str] = &[
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
        "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "wendy",
    ];
    let mut rng = rng_for(seed, 3);
    let mut data = SubtotalData::empty();
    data.connections.reserve(n * 3);
    let retailer_ids: Vec<String> = data
        .retailers
        .iter()
        .map(|r| r.retailer_id.clone())
        .collect();
    let mut customers = 0;
    if opts.doc_examples && n > 0 {
        data.connections.push(subtotal_doc_example());
        customers = 1;
    }
    let mut ids = HashSet::new();
    let mut i = 0usize;
    while customers < n {
        let customer = util::uuid(&mut rng);
        if !ids.insert(customer.clone()) {
            continue;
        }
        let first = *pick(&mut rng, FIRST);
        let count = 1 + rng.usize(..4);
        let mut retailers = retailer_ids.clone();
        rng.shuffle(&mut retailers);
        for (k, retailer) in retailers.iter().take(count).enumerate() {
            // The first few customers cycle through every status; then a realistic mix.
            let status = if i < 8 && k == 0 {
                SUBTOTAL_STATUSES[i % 4]
            } else {
                *weighted(
                    &mut rng,
                    &[
                        ("active", 74),
                        ("initialized", 9),
                        ("unauthenticated", 11),
                        ("disconnected", 6),
                    ],
                )
            };
            let mut c = subtotal_connection(&mut rng, &customer, retailer, status, first);
            if i == 1 && k == 0 {
                c.is_simulated = Some(true);
            }
            data.connections.push(c);
        }
        customers += 1;
        i += 1;
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_example_parses() {
        let v = violet_doc_example();
        assert_eq!(v["merchant_id"], 123);
        assert_eq!(v["migration"]["results"], "MIGRATION_REQUIRED");
    }

    #[test]
    fn counts() {
        assert_eq!(channel3_customers(0, 1).customers.len(), 0);
        assert_eq!(channel3_customers(1, 1).customers.len(), 1);
        assert_eq!(violet_merchants(5, 1).merchants.len(), 5);
        assert_eq!(subtotal_customers(5, 1).customer_ids().len(), 5);
    }
}
