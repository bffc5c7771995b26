//! The typed Channel3 Partner API client: requests, auth and pagination.

use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, Utc};
use connhealth_core::futures::stream::{self, BoxStream, StreamExt};
use connhealth_core::http::{header, HeaderName, HttpClient, Request};
use connhealth_core::{Error, ErrorKind, Result, Secret};
use reqwest::Method;

use crate::map::parse_time;
use crate::wire;

const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");

const LIST_MERCHANTS: &str = "GET /v0/partner/merchants";
const CREATE_MERCHANT: &str = "POST /v0/partner/merchants";
pub(crate) const LIST_CONNECTIONS: &str = "GET /v0/partner/merchants/{customer_id}/connections";
const CREATE_SESSION: &str = "POST /v0/partner/merchants/{customer_id}/connections/sessions";

/// The most List merchants pages one walk requests before giving up (with a `decode` error),
/// so that a server that never says "last page" cannot keep us busy forever: 10,000 pages,
/// a million merchants at the default page size of 100.
pub const MAX_PAGES: u64 = 10_000;

/// A client for the Channel3 Partner API (`/v0/partner/…`), authenticated with the partner
/// key in `x-api-key`. Get one from [`crate::Channel3::client`]. Cheap to clone.
///
/// Health polls only read (List merchants, List connections); the two `create_*` methods are
/// control-plane calls for onboarding flows and are never made by a poll.
#[derive(Clone)]
pub struct Channel3Client {
    http: HttpClient,
    api_key: Secret,
    page_size: usize,
}

impl fmt::Debug for Channel3Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel3Client")
            .field("provider", &self.http.provider())
            .field("base_url", &self.http.base_url().as_str())
            .field("api_key", &self.api_key)
            .field("page_size", &self.page_size)
            .finish()
    }
}

/// One merchant from List merchants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant {
    /// The Channel3 customer id.
    pub customer_id: String,
    /// Display name, when given.
    pub name: Option<String>,
    /// Logo URL, when given.
    pub logo: Option<String>,
}

impl From<wire::MerchantItem> for Merchant {
    fn from(m: wire::MerchantItem) -> Self {
        Merchant {
            customer_id: m.customer_id,
            name: m.name,
            logo: m.logo,
        }
    }
}

/// One page of List merchants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantPage {
    /// The page's merchants that carried a `customer_id`.
    pub merchants: Vec<Merchant>,
    /// How many entries the page held (including ones without `customer_id`).
    pub received: usize,
    /// Total merchants, when the server said.
    pub total: Option<u64>,
    /// Total pages, when the server said.
    pub pages: Option<u64>,
    /// This page's number, when the server said.
    pub page: Option<u64>,
    /// The page size the server applied, when it said.
    pub size: Option<u64>,
    /// Whether more pages follow, when the server said.
    pub has_more: Option<bool>,
}

/// The answer of Create merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedMerchant {
    /// The Channel3 customer id (stable; store it).
    pub customer_id: String,
    /// `false` when the domain already belonged to a merchant (the call is idempotent on domain).
    pub created: bool,
    /// Display name.
    pub name: Option<String>,
}

/// A hosted connect session: send the merchant to `url` (single-use, expires after 30 minutes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectSession {
    /// The session token (never printed).
    pub token: Secret,
    /// The co-branded hosted page.
    pub url: String,
    /// When the session expires, when `expires_at` parsed as a date-time.
    pub expires_at: Option<DateTime<Utc>>,
    /// `expires_at` as sent (its format is undocumented).
    pub expires_at_raw: Option<String>,
}

impl Channel3Client {
    pub(crate) fn new(http: HttpClient, api_key: Secret, page_size: usize) -> Self {
        Channel3Client {
            http,
            api_key,
            page_size,
        }
    }

    /// The underlying HTTP client (base URL, request counters).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// The page size [`Channel3Client::list_all_merchants`] asks for.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    fn request(
        &self,
        method: Method,
        endpoint: &'static str,
        segments: &[&str],
    ) -> Result<Request> {
        let url = self
            .http
            .url(segments)
            .map_err(|e| e.with_endpoint(endpoint))?;
        Ok(self
            .http
            .request(method, endpoint, url)
            .secret_header(API_KEY_HEADER, "", &self.api_key)
            .header(header::ACCEPT, "application/json"))
    }

    /// List connections: `GET /v0/partner/merchants/{customer_id}/connections`, the merchant's
    /// state on every platform. Errors carry the customer id.
    pub async fn list_connections(
        &self,
        customer_id: &str,
    ) -> Result<wire::PartnerConnectionsResponse> {
        let req = self
            .request(
                Method::GET,
                LIST_CONNECTIONS,
                &["v0", "partner", "merchants", customer_id, "connections"],
            )
            .map_err(|e| e.with_customer(customer_id))?
            .for_customer(customer_id);
        let response = self.http.send(req).await?;
        match wire::PartnerConnectionsResponse::from_slice(response.body()) {
            Ok(r) => Ok(r),
            // Re-decode through core for its typed error (JSON path, no document values).
            Err(_) => response.json(),
        }
    }

    /// List merchants, one page: `GET /v0/partner/merchants?page={page}&size={size}` (`page`
    /// starts at 1). The envelope is parsed tolerantly (a bare array, or the items under `items`, `merchants`, `data` or `results`).
    pub async fn list_merchants(&self, page: u64, size: usize) -> Result<MerchantPage> {
        let req = self
            .request(Method::GET, LIST_MERCHANTS, &["v0", "partner", "merchants"])?
            .query(&[("page", &page.to_string()), ("size", &size.to_string())]);
        let env: wire::MerchantsEnvelope = self.http.send_json(req).await?;
        for s in &env.skipped {
            tracing::debug!(provider = %self.http.provider(), page, index = s.index, reason = %s.reason, "skipped a merchant entry");
        }
        Ok(MerchantPage {
            merchants: env.items.into_iter().map(Merchant::from).collect(),
            received: env.received,
            total: env.total,
            pages: env.pages,
            page: env.page,
            size: env.size,
            has_more: env.has_more,
        })
    }

    /// Every merchant, walking List merchants page by page (see
    /// [`Channel3Client::merchant_pages`] for the rules). Each customer appears once.
    pub async fn list_all_merchants(&self) -> Result<Vec<Merchant>> {
        let mut all = Vec::new();
        let mut pages = self.merchant_pages();
        while let Some(page) = pages.next().await {
            all.extend(page?);
        }
        Ok(all)
    }

    /// Walks List merchants from page 1 with the configured page size, yielding each page's
    /// merchants not seen on an earlier page, as soon as the page arrives. On an error it
    /// yields the error and ends.
    ///
    /// When to stop (the envelope is undocumented):
    /// - `pages` present: after page `pages`;
    /// - else `total` present: once as many entries were received as `total` (counting the
    ///   entries actually received, since a server may cap `size` below what was asked);
    /// - else `has_more` present: when it is `false`;
    /// - else: at a page shorter than the `size` the server reports, or at an empty page.
    ///
    /// An empty page always ends the walk, and so does a page that adds no new merchant:
    /// one whose customers were all seen on earlier pages (a server that ignores `page`), or
    /// one of nothing but undecodable entries when neither `pages` nor `total` bounds the
    /// walk. At most [`MAX_PAGES`] pages are asked for; past that the walk ends with an error.
    pub fn merchant_pages(&self) -> BoxStream<'_, Result<Vec<Merchant>>> {
        struct Walk {
            page: u64,
            received: u64,
            seen: HashSet<String>,
            done: bool,
        }
        let init = Walk {
            page: 1,
            received: 0,
            seen: HashSet::new(),
            done: false,
        };
        stream::unfold(init, move |mut w| async move {
            if w.done {
                return None;
            }
            if w.page > MAX_PAGES {
                w.done = true;
                let e = Error::new(
                    self.http.provider(),
                    LIST_MERCHANTS,
                    ErrorKind::Decode,
                    format!("List merchants did not end after {MAX_PAGES} pages; stopped"),
                );
                return Some((Err(e), w));
            }
            let page = match self.list_merchants(w.page, self.page_size).await {
                Ok(p) => p,
                Err(e) => {
                    w.done = true;
                    return Some((Err(e), w));
                }
            };
            w.received += page.received as u64;
            let had_ids = !page.merchants.is_empty();
            let fresh: Vec<Merchant> = page
                .merchants
                .into_iter()
                .filter(|m| w.seen.insert(m.customer_id.clone()))
                .collect();
            // A page that adds no merchant ends the walk: all customers already seen means the
            // server ignores `page` (or the list shifted by a whole page). A page of only
            // undecodable entries ends it too unless `pages` or `total` say how far the list
            // goes (those bound the walk themselves); otherwise nothing says the next page
            // would be any better, and nothing would stop it short of MAX_PAGES.
            let bounded = page.pages.is_some() || page.total.is_some();
            let stale = fresh.is_empty() && (had_ids || !bounded);
            let last = page.received == 0
                || stale
                || match (page.pages, page.total, page.has_more) {
                    (Some(pages), _, _) => w.page >= pages,
                    (None, Some(total), _) => w.received >= total,
                    (None, None, Some(more)) => !more,
                    (None, None, None) => page.size.is_some_and(|s| (page.received as u64) < s),
                };
            tracing::debug!(
                provider = %self.http.provider(),
                page = w.page,
                received = page.received,
                new = fresh.len(),
                total = ?page.total,
                pages = ?page.pages,
                last,
                "listed merchants"
            );
            w.done = last;
            w.page += 1;
            Some((Ok(fresh), w))
        })
        .boxed()
    }

    /// Create merchant: `POST /v0/partner/merchants` with the storefront `domain` (and an
    /// optional display name). Idempotent on domain, so it is retried like a safe request.
    pub async fn create_merchant(
        &self,
        domain: &str,
        name: Option<&str>,
    ) -> Result<CreatedMerchant> {
        let req = self
            .request(
                Method::POST,
                CREATE_MERCHANT,
                &["v0", "partner", "merchants"],
            )?
            .json(&wire::CreateMerchantRequest { domain, name })
            .retry_unsafe();
        let r: wire::CreateMerchantResponse = self.http.send_json(req).await?;
        Ok(CreatedMerchant {
            customer_id: r.customer_id,
            created: r.created,
            name: r.name,
        })
    }

    /// Create connect session: `POST /v0/partner/merchants/{customer_id}/connections/sessions`.
    /// `redirect_uri` must prefix-match a URI registered with Channel3; `platform` deep-links
    /// to one platform (omit it for a picker). Not retried once sent: each call mints a
    /// single-use session.
    pub async fn create_connect_session(
        &self,
        customer_id: &str,
        redirect_uri: &str,
        platform: Option<&str>,
    ) -> Result<ConnectSession> {
        let req = self
            .request(
                Method::POST,
                CREATE_SESSION,
                &[
                    "v0",
                    "partner",
                    "merchants",
                    customer_id,
                    "connections",
                    "sessions",
                ],
            )
            .map_err(|e| e.with_customer(customer_id))?
            .for_customer(customer_id)
            .json(&wire::CreateSessionRequest {
                redirect_uri,
                platform,
            });
        let r: wire::ConnectSessionResponse = self.http.send_json(req).await?;
        Ok(ConnectSession {
            token: r.token,
            url: r.url,
            expires_at: r.expires_at.as_deref().and_then(parse_time),
            expires_at_raw: r.expires_at,
        })
    }
}
