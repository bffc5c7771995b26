//! # connhealth-violet
//!
//! The connhealth adapter for [Violet](https://violet.io)'s connection-health report:
//! `GET /operations/connection_health` lists every merchant connected to your Violet app with
//! eight health checks each; this crate turns every merchant into one normalized
//! [`Connection`] (role `source`).
//!
//! ```
//! use connhealth_core::{Provider, Secret, Status};
//! use connhealth_testkit::VioletSim;
//! use connhealth_violet::Violet;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A loopback simulator of Violet with 50 generated merchants.
//! let sim = VioletSim::start_generated(50, 7).await?;
//!
//! let violet = Violet::builder()
//!     .base_url(sim.base_url())
//!     .app_id(sim.app_id())
//!     .app_secret(Secret::new(sim.app_secret()))
//!     .username(sim.username())
//!     .password(Secret::new(sim.password()))
//!     .build()?;
//!
//! let fetched = violet.fetch().await;
//! assert!(fetched.errors.is_empty());
//! for c in &fetched.connections {
//!     assert!(c.id.starts_with("violet:"));
//!     // Every status other than healthy comes with the problems that explain it.
//!     assert!(c.status == Status::Healthy || !c.problems.is_empty());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## What it asks
//!
//! One authenticated `GET /operations/connection_health?app_id=…&exclude_public=…` per poll
//! (Violet caches the report for up to 24 h, so polling more than a few times a day only reads
//! the same data). Authentication (login, token refresh ahead of the JWT's expiry, renewal on a
//! 401, one renewal shared by concurrent callers) is described on [`VioletClient`].
//! [`VioletClient::refresh_merchant`] recomputes one merchant's report on demand; polls never
//! call it. The `refresh` action (`Provider::act`, offered on every connection) does, at most
//! once per merchant per [`RECOMPUTE_INTERVAL`], a window shared with `Provider::refresh`.
//!
//! ## How a report maps
//!
//! One [`Connection`] per merchant entry: `role` `source`; `platform` the lower-cased
//! `platform` (unknown platforms are kept; a missing one becomes `"unknown"`);
//! `provider_connection_id` and `customer.id` the merchant id; `id` `"{name}:{merchant_id}"`;
//! `customer.name` the `merchant_name`; `customer.email` the (Violet-obfuscated)
//! `merchant_email` only with [`VioletBuilder::include_personal_data`]; one account (id = the
//! merchant id, with the store URL); `provider_status` the raw `merchant_status`;
//! `data_as_of` the `sync_status.results.date_last_synced` (the report does not say when it was
//! computed; the last catalog sync is the freshest moment it vouches for); `sync` from
//! `sync_status.results` (`COMPLETED` live, `IN_PROGRESS`/`PENDING` syncing, `NOT_STARTED`
//! pending, `FAILED` failed, anything else unknown; `total_products`, `total_products_synced`,
//! `date_last_synced`).
//!
//! Every section present (`connection`, `scope_validation`, `sync_status`, `invalid_products`,
//! `offers_published`, `payout_account`, `migration`, `commission_rate`, then any other
//! object-with-a-`status` key such as `channel_connection` or `terms_of_service`, by name)
//! becomes a [`connhealth_core::Check`]: `COMPLETE`/`NOT_APPLICABLE` → healthy, `INCOMPLETE` →
//! degraded, `NEEDS_ATTENTION` → action_required, `ERROR` → unknown, any other value → unknown
//! with `unrecognized_value`; `detail` = the section's `error.message`. A missing or null
//! section adds no check.
//!
//! The results are then read **whatever the section's status says** (the documented example
//! has `migration` COMPLETE with results `MIGRATION_REQUIRED`: the specific results win),
//! except in a section whose status is `NOT_APPLICABLE`:
//!
//! | what the report says | status | problem | remediation |
//! |---|---|---|---|
//! | `merchant_status` ACTIVE | healthy | – | – |
//! | INACTIVE, DISABLED, DISABLED_INACTIVE, FOR_DELETION | disconnected | `merchant_disabled` | contact_provider |
//! | NEW, APPLICATION_IN_PROGRESS / _SUBMITTED / _ACCEPTED | pending | `merchant_onboarding` | complete_setup `merchant_onboarding` |
//! | APPLICATION_DENIED | action_required | `merchant_application_denied` | contact_provider |
//! | any other value / missing | unknown | `unrecognized_value` / `missing_value` | – |
//! | `connection.results.isConnected` or `.connected` false | disconnected | `store_disconnected` | reconnect |
//! | `connection.results.hasActivePlatformPlan` false | action_required | `platform_plan_inactive` | complete_setup `platform_plan` |
//! | `storeScopes.missingScopes` / `scope_validation.results.missing_scopes` non-empty, or `hasValidScopes` / `valid` false | action_required (degraded when only INCOMPLETE checks list them and no flag is false) | `missing_scopes` | grant_scopes (deduplicated union) |
//! | `sync_status.results.status` FAILED | degraded | `sync_failed` | – |
//! | IN_PROGRESS, PENDING | syncing | `sync_in_progress` | wait_for_sync |
//! | NOT_STARTED | pending | `sync_not_started` | wait_for_sync |
//! | any other value | unknown | `unrecognized_value` | – |
//! | `invalid_products.results.count` > 0 | degraded | `invalid_products` (the count) | – |
//! | `payout_account` NEEDS_ATTENTION without results | action_required | `payout_account_missing` | complete_setup `payout_account` |
//! | payout results `is_active` false or `errors[]` not resolved | action_required | `payout_account_error` (the messages) | complete_setup `payout_account` |
//! | `migration.results` MIGRATION_REQUIRED, or the check NEEDS_ATTENTION | action_required | `migration_required` | complete_setup `migration` |
//! | MIGRATION_IN_PROGRESS | pending | `migration_in_progress` | – |
//! | ERROR | unknown | `migration_error` | – |
//! | any other value | unknown | `unrecognized_value` | – |
//! | a check NEEDS_ATTENTION / INCOMPLETE / ERROR not explained by a problem above of at least its severity | action_required / degraded / unknown | `check_needs_attention` / `check_incomplete` / `check_error` | – |
//! | a field whose JSON type does not fit | unknown | `unrecognized_value` | – |
//! | an entry that cannot be decoded but names its merchant | unknown | `malformed_entry` | – |
//!
//! The connection's status is the worst of every check and every problem. Entries without a
//! readable merchant id are skipped (counted in a debug log). Decoding accepts snake_case and
//! camelCase keys, enum values in any case, numbers as strings, nulls and missing sections, and
//! never fails the report because of one entry.
#![forbid(unsafe_code)]

mod client;
mod config;
pub use config::VioletConfig;
mod map;
pub mod webhook;
mod wire;

pub use webhook::verify_webhook;

use std::fmt;

use chrono::{DateTime, Utc};
use connhealth_core::{
    until_refused, Action, ActionError, ActionKind, ActionOutcome, AdapterDefaults, Batch,
    ClientOptions, Connection, Error, ErrorKind, HeaderMap, Provider, RefreshHint, Result, Secret,
    WebhookError, WebhookEvent,
};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::time::{Duration, Instant};

pub use client::{AuthStats, VioletClient, DEFAULT_TOKEN_LIFETIME, REFRESH_MARGIN};

/// The default provider name.
pub const DEFAULT_NAME: &str = "violet";

/// The default response-body cap: the report is one unpaginated array of every merchant, so it
/// is allowed to be larger than core's default.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// Violet as a connhealth [`Provider`]: one batch per poll, one [`Connection`] per merchant.
///
/// Build it with [`Violet::builder`].
pub struct Violet {
    name: String,
    client: VioletClient,
    webhook_secret: Secret,
    /// When each merchant's report was last recomputed (`refresh=true`) by
    /// [`Provider::refresh`], on tokio's clock.
    recomputed: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    /// When each merchant's cached report was last read by a *scheduled* re-check
    /// ([`RefreshHint::Scheduled`]), for the once-per-[`SCHEDULED_RECHECK_INTERVAL`] bound.
    rechecked: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
}

/// [`Provider::refresh`] asks Violet to recompute a merchant's report (`refresh=true`) at most
/// once per merchant within this window; other refreshes read the cached report.
pub const RECOMPUTE_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// The shortest time between two scheduled re-checks of one merchant
/// ([`RefreshHint::Scheduled`]): the report is cached for a day, so the scheduler reads the
/// cached report (never `refresh=true`) at most hourly; webhooks and actions recompute.
pub const SCHEDULED_RECHECK_INTERVAL: Duration = Duration::from_secs(60 * 60);

impl fmt::Debug for Violet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Violet")
            .field("name", &self.name)
            .field("client", &self.client)
            .finish()
    }
}

impl Violet {
    /// Violet's sandbox API (the default; sandbox and live use different credentials).
    pub const SANDBOX_BASE_URL: &'static str = "https://sandbox-api.violet.io/v1";
    /// Violet's live API.
    pub const LIVE_BASE_URL: &'static str = "https://api.violet.io/v1";

    /// A builder with the defaults (sandbox base URL, name `violet`).
    pub fn builder() -> VioletBuilder {
        VioletBuilder::default()
    }

    /// The typed client, for control-plane calls ([`VioletClient::refresh_merchant`], …).
    pub fn client(&self) -> &VioletClient {
        &self.client
    }

    /// How long until [`Provider::refresh`] may ask Violet to recompute `merchant_id` again
    /// (`None`: the next refresh recomputes). For an action's `Retry-After`.
    pub fn recompute_allowed_in(&self, merchant_id: &str) -> Option<Duration> {
        let map = self
            .recomputed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let since = Instant::now().duration_since(*map.get(merchant_id)?);
        RECOMPUTE_INTERVAL
            .checked_sub(since)
            .filter(|d| !d.is_zero())
    }

    /// Record a scheduled re-check of `merchant_id` now, or refuse it (`rate_limited`, with
    /// the wait as `Retry-After`) within [`SCHEDULED_RECHECK_INTERVAL`] of the last one.
    fn take_scheduled_recheck(&self, merchant_id: &str) -> Result<()> {
        let now = Instant::now();
        let mut map = self
            .rechecked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = map.get(merchant_id) {
            let since = now.duration_since(*at);
            if since < SCHEDULED_RECHECK_INTERVAL {
                return Err(Error::new(
                    &self.name,
                    "GET /operations/connection_health/{merchant_id}",
                    ErrorKind::RateLimited,
                    "a scheduled re-check reads a merchant's cached report at most once per hour",
                )
                .with_customer(merchant_id)
                .with_retry_after(SCHEDULED_RECHECK_INTERVAL - since));
            }
        }
        map.retain(|_, at| now.duration_since(*at) < SCHEDULED_RECHECK_INTERVAL);
        map.insert(merchant_id.to_owned(), now);
        Ok(())
    }

    /// Whether a recompute of `merchant_id` is allowed now (none within
    /// [`RECOMPUTE_INTERVAL`]); if so it is recorded as done now.
    fn take_recompute(&self, merchant_id: &str) -> bool {
        self.try_recompute(merchant_id).is_ok()
    }

    /// Like [`Violet::take_recompute`], but a refusal says how long until it is allowed (one
    /// lock, so two callers cannot both be allowed).
    fn try_recompute(&self, merchant_id: &str) -> std::result::Result<(), Duration> {
        let now = Instant::now();
        let mut map = self
            .recomputed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(merchant_id) {
            Some(at) if now.duration_since(*at) < RECOMPUTE_INTERVAL => {
                Err(RECOMPUTE_INTERVAL - now.duration_since(*at))
            }
            _ => {
                // Forget merchants whose window has passed, so the map stays small.
                map.retain(|_, at| now.duration_since(*at) < RECOMPUTE_INTERVAL);
                map.insert(merchant_id.to_owned(), now);
                Ok(())
            }
        }
    }
}

#[connhealth_core::async_trait]
impl Provider for Violet {
    fn name(&self) -> &str {
        &self.name
    }

    /// One merchant's report (`GET /operations/connection_health/{merchant_id}`). The first
    /// refresh of a merchant within [`RECOMPUTE_INTERVAL`] asks Violet to recompute it
    /// (`refresh=true`, which Violet calls heavy); the others read the cached report. The
    /// window starts when the recompute is asked for, whether or not it succeeds, so a failing
    /// merchant is not hammered. The hint is ignored: a merchant is one connection.
    ///
    /// A [`RefreshHint::Scheduled`] re-check never recomputes: it reads the cached report, at
    /// most once per merchant per [`SCHEDULED_RECHECK_INTERVAL`] (a second one within it is a
    /// `rate_limited` error carrying the wait, and nothing is sent), and it leaves the
    /// recompute window of webhooks and actions alone.
    async fn refresh(&self, customer_id: &str, hint: RefreshHint) -> Result<Vec<Connection>> {
        if hint == RefreshHint::Scheduled {
            self.take_scheduled_recheck(customer_id)?;
            return Ok(vec![self.client.merchant_health(customer_id).await?]);
        }
        let conn = if self.take_recompute(customer_id) {
            self.client.refresh_merchant(customer_id).await?
        } else {
            self.client.merchant_health(customer_id).await?
        };
        Ok(vec![conn])
    }

    /// [`SCHEDULED_RECHECK_INTERVAL`]: the scheduler re-checks a merchant at most hourly.
    fn recheck_floor(&self) -> Option<Duration> {
        Some(SCHEDULED_RECHECK_INTERVAL)
    }

    /// `refresh` for every Violet connection (any merchant's report can be recomputed).
    fn actions(&self, connection: &Connection) -> Vec<Action> {
        let _ = connection;
        vec![Action::new(ActionKind::Refresh)]
    }

    /// `refresh`: that merchant's report recomputed now
    /// (`GET /operations/connection_health/{merchant_id}?refresh=true`), the outcome carrying
    /// the connection as it now is. At most once per merchant per [`RECOMPUTE_INTERVAL`],
    /// sharing the window with [`Provider::refresh`] (webhooks, `POST /v1/refresh`): within
    /// it, [`ActionError::RateLimited`] says when it is allowed again and nothing is sent.
    async fn act(
        &self,
        connection: &Connection,
        kind: ActionKind,
    ) -> std::result::Result<ActionOutcome, ActionError> {
        if kind != ActionKind::Refresh {
            return Err(ActionError::unsupported(connection, kind));
        }
        let merchant = connection.customer.id.as_str();
        if let Err(wait) = self.try_recompute(merchant) {
            // Round up to whole seconds, so `Retry-After` is never early.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(ActionError::RateLimited {
                provider: self.name.clone(),
                connection_id: connection.id.clone(),
                kind,
                retry_at: Utc::now() + chrono::Duration::seconds(secs as i64),
                reason: "Violet's report is recomputed at most once per merchant per 15 minutes"
                    .into(),
            });
        }
        let conn = self
            .client
            .refresh_merchant(merchant)
            .await
            .map_err(|e| ActionError::at_step("recomputing the merchant's report failed", e))?;
        Ok(ActionOutcome::done(
            kind,
            format!(
                "merchant {merchant}'s report was recomputed; the next recompute is allowed in 15 minutes"
            ),
        )
        .with_connection(conn))
    }

    /// [`verify_webhook`] with this provider's webhook secret, the event carrying this
    /// provider's name.
    fn verify_webhook(
        &self,
        headers: &HeaderMap,
        raw_body: &[u8],
        now: DateTime<Utc>,
    ) -> Option<std::result::Result<WebhookEvent, WebhookError>> {
        Some(
            webhook::verify_webhook(headers, raw_body, &self.webhook_secret, now).map(|mut e| {
                e.provider = self.name.clone();
                e
            }),
        )
    }

    fn http_stats(&self) -> Option<std::sync::Arc<connhealth_core::http::HttpStats>> {
        Some(self.client().http().stats().clone())
    }

    fn stream(&self) -> BoxStream<'_, Batch> {
        let batches = stream::once(async move {
            match self.client.connection_health_mapped().await {
                Ok(mapped) => mapped.into_batches(),
                Err(e) => vec![Err(e)],
            }
        })
        .flat_map(stream::iter)
        .boxed();
        // One report, so nothing follows a refusal anyway; the rule is the same for all.
        until_refused(batches)
    }
}

/// What a [`VioletBuilder`] uses for settings left unset.
const DEFAULTS: AdapterDefaults = AdapterDefaults {
    name: DEFAULT_NAME,
    base_url: Violet::SANDBOX_BASE_URL,
    max_body_bytes: DEFAULT_MAX_BODY_BYTES,
    concurrency: 32,
};

/// Builder of [`Violet`]. Setters never fail; [`VioletBuilder::build`] validates everything.
///
/// The shared client settings (name, base URL — default [`Violet::SANDBOX_BASE_URL`] —,
/// timeouts, retries, body cap — default [`DEFAULT_MAX_BODY_BYTES`] —, and the bound on
/// per-merchant requests of [`VioletClient::merchants_health`]) are [`ClientOptions`]; the
/// setters below them are Violet's own.
#[derive(Clone)]
pub struct VioletBuilder {
    options: ClientOptions,
    app_id: Option<u64>,
    app_secret: Option<Secret>,
    username: Option<String>,
    password: Option<Secret>,
    webhook_secret: Option<Secret>,
    exclude_public: bool,
    include_personal_data: bool,
}

impl fmt::Debug for VioletBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VioletBuilder")
            .field("options", &self.options)
            .field("app_id", &self.app_id)
            .field("app_secret", &self.app_secret)
            .field("username", &self.username.as_ref().map(|_| "[redacted]"))
            .field("password", &self.password)
            .field("webhook_secret", &self.webhook_secret)
            .field("exclude_public", &self.exclude_public)
            .field("include_personal_data", &self.include_personal_data)
            .finish()
    }
}

impl Default for VioletBuilder {
    fn default() -> Self {
        VioletBuilder {
            options: ClientOptions::new(),
            app_id: None,
            app_secret: None,
            username: None,
            password: None,
            webhook_secret: None,
            exclude_public: true,
            include_personal_data: false,
        }
    }
}

impl VioletBuilder {
    connhealth_core::client_options_setters!();

    /// Use [`Violet::LIVE_BASE_URL`].
    pub fn live(self) -> Self {
        self.base_url(Violet::LIVE_BASE_URL)
    }

    /// Your Violet app id (required; sent as `X-Violet-App-Id` and the `app_id` parameter).
    pub fn app_id(mut self, app_id: u64) -> Self {
        self.app_id = Some(app_id);
        self
    }

    /// Your Violet app secret (required).
    pub fn app_secret(mut self, app_secret: Secret) -> Self {
        self.app_secret = Some(app_secret);
        self
    }

    /// The app owner's login e-mail (required). Personal data: never logged or put in errors.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The app owner's password (required).
    pub fn password(mut self, password: Secret) -> Self {
        self.password = Some(password);
        self
    }

    /// The secret Violet signs webhooks with (`X-Violet-Hmac`); default: the app secret.
    pub fn webhook_secret(mut self, secret: Secret) -> Self {
        self.webhook_secret = Some(secret);
        self
    }

    /// Leave merchants with `distribution_type` PUBLIC out of the report (default `true`, as
    /// Violet's own default; sent as `exclude_public`).
    pub fn exclude_public(mut self, exclude: bool) -> Self {
        self.exclude_public = exclude;
        self
    }

    /// Put the merchant's e-mail (`merchant_email`, obfuscated by Violet) into
    /// `Customer.email` (default `false`: personal data is left out).
    pub fn include_personal_data(mut self, include: bool) -> Self {
        self.include_personal_data = include;
        self
    }

    /// Validate the settings and build the provider. Every missing credential is a
    /// [`connhealth_core::ErrorKind::Config`] error naming the setting.
    pub fn build(self) -> Result<Violet> {
        let options = self.options.validate(&DEFAULTS)?;
        let name = options.name;
        let app_id = match self.app_id {
            Some(0) => return Err(Error::config(&name, "app_id must be a positive integer")),
            Some(id) => id,
            None => return Err(Error::config(&name, "app_id is required")),
        };
        let app_secret = match self.app_secret {
            Some(s) if !s.is_empty() => s,
            Some(_) => return Err(Error::config(&name, "app_secret is empty")),
            None => return Err(Error::config(&name, "app_secret is required")),
        };
        let username = match self.username {
            Some(u) if !u.trim().is_empty() => u.trim().to_owned(),
            Some(_) => return Err(Error::config(&name, "username is empty")),
            None => return Err(Error::config(&name, "username is required")),
        };
        let password = match self.password {
            Some(p) if !p.expose().is_empty() => p,
            Some(_) => return Err(Error::config(&name, "password is empty")),
            None => return Err(Error::config(&name, "password is required")),
        };
        let webhook_secret = match self.webhook_secret {
            Some(s) if s.is_empty() => return Err(Error::config(&name, "webhook_secret is empty")),
            Some(s) => s,
            None => app_secret.clone(),
        };
        let concurrency = options.concurrency;
        let http = options.http;
        let client = VioletClient::new(client::Settings {
            name: name.clone(),
            http,
            app_id,
            app_secret,
            username,
            password,
            exclude_public: self.exclude_public,
            include_personal_data: self.include_personal_data,
            concurrency,
        });
        Ok(Violet {
            name,
            client,
            webhook_secret,
            recomputed: Default::default(),
            rechecked: Default::default(),
        })
    }
}

/// Decode and map a `GET /operations/connection_health` body offline (no I/O, no clock): one
/// [`Connection`] per merchant entry, under provider name `name`, observed at `observed_at`.
///
/// The body must be a JSON array; entries that cannot be attributed to a merchant are skipped
/// (when every entry is, that is a `decode` error), entries that are malformed but name their
/// merchant map to `unknown`.
///
/// ```
/// let body = br#"[{"merchant_id": 7, "merchant_status": "ACTIVE", "platform": "SHOPIFY"}]"#;
/// let now = chrono::Utc::now();
/// let conns = connhealth_violet::decode_report("violet", body, now, false).unwrap();
/// assert_eq!(conns[0].id, "violet:7");
/// assert_eq!(conns[0].platform, "shopify");
/// assert_eq!(conns[0].status, connhealth_core::Status::Healthy);
/// ```
pub fn decode_report(
    name: &str,
    body: &[u8],
    observed_at: DateTime<Utc>,
    include_personal_data: bool,
) -> Result<Vec<Connection>> {
    map::decode_report(name, body, observed_at, include_personal_data)?.into_result()
}
