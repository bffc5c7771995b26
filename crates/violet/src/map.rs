//! Violet's report → [`Connection`]: the only place that knows Violet's vocabulary.
//!
//! Pure functions: the provider name, the observation time and the personal-data opt-in come
//! in as arguments; nothing here reads a clock or does I/O. The client (`client.rs`) fetches
//! and decodes ([`crate::wire`]); this module maps.
//!
//! The rules themselves are written once, in the crate documentation ("How a report maps", in
//! `lib.rs`): the table there is the specification, and the code below follows its rows in
//! order. [`map_merchant`] reads one section after the other, one function per section
//! ([`connection`], [`scope_validation`], [`missing_scopes`], [`sync_status`],
//! [`invalid_products`], `offers_published` (its check only), [`payout_account`],
//! [`migration`], [`commission_rate`], [`other_sections`]), then adds the generic problems
//! ([`unexplained_checks`]). The section → check status mapping is [`check_status`]; the
//! `merchant_status` mapping is [`merchant_status`].

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use connhealth_core::http::BodySink;
use connhealth_core::lenient::{Losses, Mapped, Skipped};
use connhealth_core::{
    Account, Check, Connection, Customer, Error, ErrorKind, Problem, Remediation, Result, Role,
    Status, SyncProgress, SyncState,
};
use futures::stream::{BoxStream, StreamExt};

use crate::client::{VioletClient, MERCHANT, REPORT};
use crate::wire;

use crate::wire::{
    CheckStatus, ConnectionResults, FromJson, Ignored, InvalidResults, Item, Lenient, Merchant,
    MerchantStatus, MigrationResults, MigrationState, PayoutResults, ScopeResults, Section,
    SyncResults, SyncState as WireSync,
};

/// What a mapping needs besides the report.
#[derive(Debug, Clone)]
pub(crate) struct MapContext<'a> {
    /// The configured provider name (`violet` by default).
    pub(crate) provider: &'a str,
    /// When the report was read.
    pub(crate) observed_at: DateTime<Utc>,
    /// Whether `merchant_email` goes into `Customer.email`.
    pub(crate) include_personal_data: bool,
}

/// Map one decoded report item. `None` when it cannot be attributed to a merchant (no readable
/// `merchant_id`): the caller counts and skips it.
pub(crate) fn map_item(
    item: &Item,
    ctx: &MapContext<'_>,
    fallback_id: Option<&str>,
) -> Option<Connection> {
    match item {
        Item::Merchant(m) => map_merchant(m, ctx, fallback_id),
        Item::Malformed {
            merchant_id,
            reason,
        } => {
            let id = merchant_id.as_deref().or(fallback_id)?;
            Some(map_malformed(id, reason, ctx))
        }
    }
}

/// A merchant entry that could not be decoded but names its merchant: `unknown`, with a
/// `malformed_entry` problem.
pub(crate) fn map_malformed(merchant_id: &str, reason: &str, ctx: &MapContext<'_>) -> Connection {
    let mut c = skeleton(merchant_id, "unknown".to_owned(), String::new(), ctx);
    c.problems.push(Problem::new(
        "malformed_entry",
        Status::Unknown,
        format!("Violet's report entry for this merchant could not be read: {reason}"),
    ));
    c.status = c.worst_reported();
    c
}

fn skeleton(
    merchant_id: &str,
    platform: String,
    provider_status: String,
    ctx: &MapContext<'_>,
) -> Connection {
    let mut c = Connection::new(
        ctx.provider,
        Some(merchant_id),
        Customer::new(merchant_id),
        platform,
        Role::Source,
        Status::Healthy,
        ctx.observed_at,
    );
    c.provider_status = provider_status;
    c
}

/// Problems found so far, with the check each one explains.
#[derive(Default)]
struct Findings {
    checks: Vec<Check>,
    problems: Vec<Problem>,
    /// (check name, severity) of every specific problem, for the generic-problem rule.
    explained: Vec<(String, Status)>,
}

impl Findings {
    fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// A specific problem that explains the state of `checks` (section names).
    fn push_for(&mut self, checks: &[&str], problem: Problem) {
        for c in checks {
            self.explained.push(((*c).to_owned(), problem.severity));
        }
        self.problems.push(problem);
    }

    /// `unrecognized_value` for a field that had a JSON type we cannot use.
    fn invalid<T>(&mut self, field: &str, value: &Lenient<T>) {
        if let Lenient::Invalid(kind) = value {
            self.push(Problem::new(
                "unrecognized_value",
                Status::Unknown,
                format!("unexpected {kind} for {field}"),
            ));
        }
    }

    fn explained_at_least(&self, check: &str, status: Status) -> bool {
        self.explained
            .iter()
            .any(|(c, sev)| *c == check && *sev >= status)
    }
}

/// How a section came out: its check status (when it has one) and the fields read from it.
struct SectionView<'a, R> {
    status: Option<CheckStatus>,
    results: Option<&'a R>,
}

impl<R> SectionView<'_, R> {
    fn not_applicable(&self) -> bool {
        matches!(self.status, Some(CheckStatus::NotApplicable))
    }
    fn is(&self, s: CheckStatus) -> bool {
        self.status.as_ref() == Some(&s)
    }
    /// Results to apply the specific rules to: none when the section does not apply.
    fn applicable_results(&self) -> Option<&R> {
        if self.not_applicable() {
            None
        } else {
            self.results
        }
    }
}

/// The section → check status mapping (the one copy): `COMPLETE`/`NOT_APPLICABLE` healthy,
/// `INCOMPLETE` degraded, `NEEDS_ATTENTION` action_required, `ERROR` and anything else unknown.
fn check_status(s: &CheckStatus) -> Status {
    match s {
        CheckStatus::Complete | CheckStatus::NotApplicable => Status::Healthy,
        CheckStatus::Incomplete => Status::Degraded,
        CheckStatus::NeedsAttention => Status::ActionRequired,
        CheckStatus::Error | CheckStatus::Other(_) => Status::Unknown,
    }
}

/// Add the check for `section` (if present) and return what it said.
fn section<'a, R: FromJson>(
    f: &mut Findings,
    name: &str,
    value: &'a Lenient<Section<R>>,
) -> SectionView<'a, R> {
    f.invalid(name, value);
    let Some(s) = value.get() else {
        return SectionView {
            status: None,
            results: None,
        };
    };
    f.invalid(&format!("{name}.results"), &s.results);
    let detail = s
        .error
        .get()
        .and_then(|e| e.message.get())
        .map(|m| m.trim())
        .filter(|m| !m.is_empty())
        .map(str::to_owned);
    let status = match &s.status {
        Lenient::Present(cs) => {
            if let CheckStatus::Other(raw) = cs {
                f.push_for(
                    &[name],
                    Problem::unrecognized(&format!("{name}.status"), raw),
                );
            }
            let status = check_status(cs);
            f.checks.push(Check {
                name: name.to_owned(),
                status,
                detail,
            });
            Some(cs.clone())
        }
        Lenient::Invalid(kind) => {
            f.push_for(
                &[name],
                Problem::new(
                    "unrecognized_value",
                    Status::Unknown,
                    format!("unexpected {kind} for {name}.status"),
                ),
            );
            f.checks.push(Check {
                name: name.to_owned(),
                status: Status::Unknown,
                detail,
            });
            Some(CheckStatus::Other(String::new()))
        }
        Lenient::Absent => None,
    };
    SectionView {
        status,
        results: s.results.get(),
    }
}

fn flag(f: &mut Findings, field: &str, v: &Lenient<bool>) -> Option<bool> {
    f.invalid(field, v);
    v.get().copied()
}

/// Map one merchant entry (the rules: the crate documentation). `None` when it has no usable
/// merchant id and no `fallback_id` (the id the caller asked for) is given.
///
/// Problems are listed in the order of the crate documentation's table: merchant status, then
/// the sections in report order, then the generic problems of unexplained checks.
pub(crate) fn map_merchant(
    m: &Merchant,
    ctx: &MapContext<'_>,
    fallback_id: Option<&str>,
) -> Option<Connection> {
    let merchant_id = match (m.merchant_id.get(), fallback_id) {
        (Some(id), _) => id.0.as_str(),
        (None, Some(id)) => id,
        (None, None) => return None,
    };
    let mut f = Findings::default();
    f.invalid("merchant_id", &m.merchant_id);
    let mut c = identity(&mut f, m, merchant_id, ctx);

    merchant_status(&mut f, &m.merchant_status);

    let mut scopes = Scopes::default();
    let conn = section(&mut f, "connection", &m.connection);
    connection(&mut f, &conn, &mut scopes);
    let scope = section(&mut f, "scope_validation", &m.scope_validation);
    scope_validation(&mut f, &scope, &mut scopes);
    missing_scopes(&mut f, scopes);

    let sync = section(&mut f, "sync_status", &m.sync_status);
    sync_status(&mut f, &sync, &mut c);

    let invalid = section(&mut f, "invalid_products", &m.invalid_products);
    invalid_products(&mut f, &invalid);

    // offers_published: the check only.
    section(&mut f, "offers_published", &m.offers_published);

    let payout = section(&mut f, "payout_account", &m.payout_account);
    payout_account(&mut f, &payout);

    let migration_view = section(&mut f, "migration", &m.migration);
    migration(&mut f, &migration_view);

    section(&mut f, "commission_rate", &m.commission_rate);
    commission_rate(&mut f, &m.commission_rate);

    other_sections(&mut f, &m.extra);
    unexplained_checks(&mut f);

    c.checks = f.checks.into();
    c.problems = f.problems.into();
    c.status = c.worst_reported();
    Some(c)
}

/// Who the entry is about: platform, customer, account, `provider_status`.
fn identity(f: &mut Findings, m: &Merchant, merchant_id: &str, ctx: &MapContext<'_>) -> Connection {
    let platform = m
        .platform
        .get()
        .map(|p| p.trim().to_lowercase())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    f.invalid("platform", &m.platform);
    let provider_status = m.merchant_status.get().cloned().unwrap_or_default();
    let mut c = skeleton(merchant_id, platform, provider_status, ctx);
    c.customer.name = m.merchant_name.get().map(|n| Box::from(n.as_str()));
    if ctx.include_personal_data {
        c.customer.email = m.merchant_email.get().map(|e| Box::from(e.as_str()));
    }
    if let Some(url) = m.store_url.get().filter(|u| !u.trim().is_empty()) {
        c.accounts.push(Account {
            id: merchant_id.to_owned(),
            name: c.customer.name.as_deref().map(str::to_owned),
            store_url: Some(url.clone()),
        });
    }
    c
}

/// What the two scope-reporting sections (`connection`, `scope_validation`) said, gathered for
/// the one `missing_scopes` problem.
#[derive(Default)]
struct Scopes {
    /// The deduplicated union of the listed scopes, in report order.
    missing: Vec<String>,
    /// A validity flag (`hasValidScopes`, `valid`) is false.
    flag_false: bool,
    /// (section, its check status, whether it reported missing scopes).
    sources: Vec<(&'static str, Option<CheckStatus>, bool)>,
}

/// `connection`: store connected, platform plan active, and the store's scopes.
fn connection(f: &mut Findings, conn: &SectionView<'_, ConnectionResults>, scopes: &mut Scopes) {
    let Some(r) = conn.applicable_results() else {
        return;
    };
    let is_connected = flag(f, "connection.results.isConnected", &r.is_connected);
    let connected = flag(f, "connection.results.connected", &r.connected);
    let mut off = Vec::new();
    if is_connected == Some(false) {
        off.push("isConnected");
    }
    if connected == Some(false) {
        off.push("connected");
    }
    if !off.is_empty() {
        f.push_for(
            &["connection"],
            Problem::new(
                "store_disconnected",
                Status::Disconnected,
                format!(
                    "the merchant's store is not connected to Violet (connection.results.{} is false)",
                    off.join(" and ")
                ),
            )
            .with_remediation(Remediation::Reconnect { url: None }),
        );
    }
    if flag(
        f,
        "connection.results.hasActivePlatformPlan",
        &r.has_active_platform_plan,
    ) == Some(false)
    {
        f.push_for(
            &["connection"],
            Problem::new(
                "platform_plan_inactive",
                Status::ActionRequired,
                "the merchant's e-commerce platform plan is not active (connection.results.hasActivePlatformPlan is false)",
            )
            .with_remediation(Remediation::CompleteSetup {
                step: "platform_plan".to_owned(),
            }),
        );
    }
    f.invalid("connection.results.storeScopes", &r.store_scopes);
    if let Some(s) = r.store_scopes.get() {
        let before = scopes.missing.len();
        if flag(
            f,
            "connection.results.storeScopes.hasValidScopes",
            &s.has_valid_scopes,
        ) == Some(false)
        {
            scopes.flag_false = true;
        }
        f.invalid(
            "connection.results.storeScopes.missingScopes",
            &s.missing_scopes,
        );
        add_scopes(&mut scopes.missing, s.missing_scopes.get());
        let reported = scopes.flag_false || scopes.missing.len() > before;
        scopes
            .sources
            .push(("connection", conn.status.clone(), reported));
    }
}

/// `scope_validation`: the validity flag and the missing scopes it lists.
fn scope_validation(f: &mut Findings, scope: &SectionView<'_, ScopeResults>, scopes: &mut Scopes) {
    let Some(r) = scope.applicable_results() else {
        return;
    };
    let before = scopes.missing.len();
    let invalid = flag(f, "scope_validation.results.valid", &r.valid) == Some(false);
    scopes.flag_false |= invalid;
    f.invalid("scope_validation.results.missing_scopes", &r.missing_scopes);
    add_scopes(&mut scopes.missing, r.missing_scopes.get());
    let reported = invalid
        || scopes.missing.len() > before
        || r.missing_scopes.get().is_some_and(|v| !v.is_empty());
    scopes
        .sources
        .push(("scope_validation", scope.status.clone(), reported));
}

/// The one `missing_scopes` problem of both scope-reporting sections.
fn missing_scopes(f: &mut Findings, scopes: Scopes) {
    let Scopes {
        missing,
        flag_false,
        sources,
    } = scopes;
    if !flag_false && missing.is_empty() {
        return;
    }
    let reporting: Vec<(&'static str, Option<CheckStatus>)> = sources
        .into_iter()
        .filter(|(_, _, reported)| *reported)
        .map(|(c, status, _)| (c, status))
        .collect();
    let any = |s: CheckStatus| reporting.iter().any(|(_, st)| st.as_ref() == Some(&s));
    // Missing scopes block checkout; only when the checks reporting them call it a
    // non-blocking INCOMPLETE (and no validity flag is false) is it merely degraded.
    let severity =
        if !flag_false && any(CheckStatus::Incomplete) && !any(CheckStatus::NeedsAttention) {
            Status::Degraded
        } else {
            Status::ActionRequired
        };
    let message = if missing.is_empty() {
        "the store connection lacks required platform scopes (Violet does not list which)"
            .to_owned()
    } else {
        format!(
            "the store connection lacks platform scopes: {}",
            missing.join(", ")
        )
    };
    let checks: Vec<&str> = reporting.iter().map(|(c, _)| *c).collect();
    f.push_for(
        &checks,
        Problem::new("missing_scopes", severity, message)
            .with_remediation(Remediation::GrantScopes { missing }),
    );
}

/// `sync_status`: the connection's [`SyncProgress`], `data_as_of`, and the sync problems.
fn sync_status(f: &mut Findings, sync: &SectionView<'_, SyncResults>, c: &mut Connection) {
    let Some(r) = sync.applicable_results() else {
        return;
    };
    f.invalid("sync_status.results.status", &r.status);
    f.invalid("sync_status.results.total_products", &r.total_products);
    f.invalid(
        "sync_status.results.total_products_synced",
        &r.total_products_synced,
    );
    let total = r.total_products.get().copied();
    let synced = r.total_products_synced.get().copied();
    c.data_as_of = r.date_last_synced.get().copied();
    let progress = match (synced, total) {
        (Some(s), Some(t)) => format!(" ({s} of {t} products synced)"),
        _ => String::new(),
    };
    let state = match r.status.get() {
        Some(WireSync::Completed) => SyncState::Live,
        Some(WireSync::InProgress) | Some(WireSync::Pending) => SyncState::Syncing,
        Some(WireSync::NotStarted) => SyncState::Pending,
        Some(WireSync::Failed) => SyncState::Failed,
        Some(WireSync::Other(_)) | None => SyncState::Unknown,
    };
    let problem = match r.status.get() {
        Some(WireSync::Failed) => Some(Problem::new(
            "sync_failed",
            Status::Degraded,
            format!("the last product sync failed{progress}"),
        )),
        Some(WireSync::InProgress) => Some(
            Problem::new(
                "sync_in_progress",
                Status::Syncing,
                format!("waiting for the product sync to finish{progress}"),
            )
            .with_remediation(Remediation::WaitForSync),
        ),
        Some(WireSync::Pending) => Some(
            Problem::new(
                "sync_in_progress",
                Status::Syncing,
                "waiting for the queued product sync to run (PENDING)",
            )
            .with_remediation(Remediation::WaitForSync),
        ),
        Some(WireSync::NotStarted) => Some(
            Problem::new(
                "sync_not_started",
                Status::Pending,
                "waiting for the first product sync to start (NOT_STARTED)",
            )
            .with_remediation(Remediation::WaitForSync),
        ),
        Some(WireSync::Other(raw)) => {
            Some(Problem::unrecognized("sync_status.results.status", raw))
        }
        Some(WireSync::Completed) | None => None,
    };
    if let Some(p) = problem {
        f.push_for(&["sync_status"], p);
    }
    c.sync = Some(Box::new(SyncProgress {
        state,
        total,
        synced,
        last_synced_at: r.date_last_synced.get().copied(),
    }));
}

/// `invalid_products`: the count (or the length of the listed products).
fn invalid_products(f: &mut Findings, invalid: &SectionView<'_, InvalidResults>) {
    let Some(r) = invalid.applicable_results() else {
        return;
    };
    f.invalid("invalid_products.results.count", &r.count);
    let count = r
        .count
        .get()
        .copied()
        .or_else(|| r.invalid_products.get().map(|v| v.len() as u64))
        .unwrap_or(0);
    if count > 0 {
        let noun = if count == 1 { "product" } else { "products" };
        f.push_for(
            &["invalid_products"],
            Problem::new(
                "invalid_products",
                Status::Degraded,
                format!("{count} invalid {noun} could not be synced"),
            ),
        );
    }
}

/// `payout_account`: no account at all, or one that is inactive or has unresolved errors.
fn payout_account(f: &mut Findings, payout: &SectionView<'_, PayoutResults>) {
    if payout.not_applicable() {
        return;
    }
    let setup = || Remediation::CompleteSetup {
        step: "payout_account".to_owned(),
    };
    let Some(r) = payout.results else {
        if payout.is(CheckStatus::NeedsAttention) {
            f.push_for(
                &["payout_account"],
                Problem::new(
                    "payout_account_missing",
                    Status::ActionRequired,
                    "the merchant has no payout account for this app (payout_account needs attention and reports no account)",
                )
                .with_remediation(setup()),
            );
        }
        return;
    };
    let inactive = flag(f, "payout_account.results.is_active", &r.is_active) == Some(false);
    f.invalid("payout_account.results.errors", &r.errors);
    let unresolved: Vec<String> = r
        .errors
        .get()
        .map(|errs| {
            errs.iter()
                .filter(|e| e.resolved.get() != Some(&true))
                .map(|e| {
                    e.error_message
                        .get()
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "(no message)".to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    if !inactive && unresolved.is_empty() {
        return;
    }
    let mut message = String::from("the merchant's payout account ");
    if inactive {
        message.push_str("is not active");
    }
    if !unresolved.is_empty() {
        if inactive {
            message.push_str(" and ");
        }
        message.push_str(&format!(
            "has {} unresolved error{}: {}",
            unresolved.len(),
            if unresolved.len() == 1 { "" } else { "s" },
            unresolved.join("; ")
        ));
    }
    f.push_for(
        &["payout_account"],
        Problem::new("payout_account_error", Status::ActionRequired, message)
            .with_remediation(setup()),
    );
}

/// `migration`: the payout-account migration state (`results`, a plain string).
fn migration(f: &mut Findings, migration: &SectionView<'_, MigrationResults>) {
    if migration.not_applicable() {
        return;
    }
    let state = migration.results.map(|r| &r.0);
    if let Some(s) = state {
        f.invalid("migration.results", s);
    }
    let state = state.and_then(|s| s.get());
    let required = || {
        Problem::new(
            "migration_required",
            Status::ActionRequired,
            "the merchant's payout account must be migrated (migration.results is MIGRATION_REQUIRED)",
        )
        .with_remediation(Remediation::CompleteSetup {
            step: "migration".to_owned(),
        })
    };
    let problem = match state {
        Some(MigrationState::MigrationRequired) => required(),
        // The check is about nothing but the migration: NEEDS_ATTENTION means it is required.
        Some(MigrationState::Migrated) | Some(MigrationState::NotApplicable) | None
            if migration.is(CheckStatus::NeedsAttention) =>
        {
            required()
        }
        Some(MigrationState::MigrationInProgress) => Problem::new(
            "migration_in_progress",
            Status::Pending,
            "waiting for the merchant's payout account migration to finish (MIGRATION_IN_PROGRESS)",
        ),
        Some(MigrationState::Error) => {
            let detail = f
                .checks
                .iter()
                .rev()
                .find(|c| c.name == "migration")
                .and_then(|c| c.detail.clone());
            Problem::new(
                "migration_error",
                Status::Unknown,
                match detail {
                    Some(d) => format!("Violet could not determine the migration state: {d}"),
                    None => "Violet could not determine the migration state (migration.results is ERROR)".to_owned(),
                },
            )
        }
        Some(MigrationState::Other(raw)) => Problem::unrecognized("migration.results", raw),
        Some(MigrationState::Migrated) | Some(MigrationState::NotApplicable) | None => return,
    };
    f.push_for(&["migration"], problem);
}

/// `commission_rate`: the check's detail falls back to the first failing override's error.
fn commission_rate(f: &mut Findings, value: &Lenient<Section<Ignored>>) {
    let Some(s) = value.get() else {
        return;
    };
    let Some(check) = f.checks.iter_mut().find(|c| c.name == "commission_rate") else {
        return;
    };
    if check.detail.is_none() {
        check.detail = s.overrides.get().and_then(|ovs| {
            ovs.iter()
                .filter(|o| o.status.get().map(check_status) != Some(Status::Healthy))
                .find_map(|o| o.error.get().and_then(|e| e.message.get()).cloned())
        });
    }
}

/// Every other section (`channel_connection`, `terms_of_service`, …): its check, by name.
fn other_sections(f: &mut Findings, extra: &[(String, Section<Ignored>)]) {
    let mut extra: Vec<&(String, Section<Ignored>)> = extra.iter().collect();
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, s) in extra {
        section(f, name, &Lenient::Present(s.clone()));
    }
}

/// A generic problem for every check that is not healthy and not explained by a specific
/// problem of at least its severity.
fn unexplained_checks(f: &mut Findings) {
    let mut generic = Vec::new();
    for check in &f.checks {
        let name = check.name.as_str();
        let explained = |st| f.explained_at_least(name, st);
        let detail = check
            .detail
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        let problem = match check.status {
            Status::ActionRequired if !explained(Status::ActionRequired) => Problem::new(
                "check_needs_attention",
                Status::ActionRequired,
                format!("Violet's {name} check needs attention{detail}"),
            ),
            Status::Degraded if !explained(Status::Degraded) => Problem::new(
                "check_incomplete",
                Status::Degraded,
                format!("Violet's {name} check is incomplete{detail}"),
            ),
            // An unrecognized check status is explained by its `unrecognized_value` problem.
            Status::Unknown if !explained(Status::Unknown) => Problem::new(
                "check_error",
                Status::Unknown,
                format!("Violet's {name} check failed{detail}"),
            ),
            _ => continue,
        };
        generic.push(problem);
    }
    f.problems.extend(generic);
}
fn add_scopes(into: &mut Vec<String>, from: Option<&Vec<String>>) {
    for s in from.into_iter().flatten() {
        let s = s.trim();
        if !s.is_empty() && !into.iter().any(|x| x == s) {
            into.push(s.to_owned());
        }
    }
}

/// The `merchant_status` mapping (the one copy; the crate documentation's first rows).
fn merchant_status(f: &mut Findings, raw: &Lenient<String>) {
    let raw = match raw {
        Lenient::Present(r) => r,
        Lenient::Invalid(_) => {
            f.invalid("merchant_status", raw);
            return;
        }
        Lenient::Absent => {
            f.push(Problem::new(
                "missing_value",
                Status::Unknown,
                "the report has no merchant_status for this merchant",
            ));
            return;
        }
    };
    let disabled = |what: &str| {
        Problem::new(
            "merchant_disabled",
            Status::Disconnected,
            format!("Violet reports the merchant as {what} (merchant_status {raw}): orders cannot be processed for it"),
        )
        .with_remediation(Remediation::ContactProvider {
            detail: format!(
                "Ask the merchant or Violet why the merchant is {raw}. Violet disables a merchant when its platform plan is paused, the app is uninstalled or required scopes are removed, and enables it again when that is fixed."
            ),
        })
    };
    let onboarding = |what: &str| {
        Problem::new(
            "merchant_onboarding",
            Status::Pending,
            format!("waiting for the merchant to finish onboarding with Violet: {what} (merchant_status {raw})"),
        )
        .with_remediation(Remediation::CompleteSetup {
            step: "merchant_onboarding".to_owned(),
        })
    };
    let problem = match MerchantStatus::parse(raw) {
        MerchantStatus::Active => return,
        MerchantStatus::Inactive => disabled("inactive"),
        MerchantStatus::Disabled => disabled("disabled"),
        MerchantStatus::DisabledInactive => disabled("disabled and inactive"),
        MerchantStatus::ForDeletion => disabled("scheduled for deletion"),
        MerchantStatus::New => onboarding("the merchant is new"),
        MerchantStatus::ApplicationInProgress => onboarding("its application is in progress"),
        MerchantStatus::ApplicationSubmitted => onboarding("its application is submitted"),
        MerchantStatus::ApplicationAccepted => onboarding("its application was accepted"),
        MerchantStatus::ApplicationDenied => Problem::new(
            "merchant_application_denied",
            Status::ActionRequired,
            format!("the merchant's application to Violet was denied (merchant_status {raw})"),
        )
        .with_remediation(Remediation::ContactProvider {
            detail: "The merchant's application was denied; the merchant must contact Violet to appeal or re-apply.".to_owned(),
        }),
        MerchantStatus::Other(_) => Problem::unrecognized("merchant_status", raw),
    };
    f.push(problem);
}

// ---------------------------------------------------------------------------------------------
// The client's answers, mapped
// ---------------------------------------------------------------------------------------------

impl VioletClient {
    /// `GET /operations/connection_health?app_id=…&exclude_public=…`: every merchant's report,
    /// mapped, one [`Connection`] per merchant (Violet serves this report from a cache that is
    /// recomputed about every 24 h). Entries without a readable merchant id are left out (the
    /// provider's stream reports them as a `decode` error); a report whose every entry is left
    /// out is that error.
    pub async fn connection_health(&self) -> Result<Vec<Connection>> {
        self.connection_health_mapped().await?.into_result()
    }

    /// [`VioletClient::connection_health`], with the error naming what was left out. The body
    /// is decoded and mapped as it downloads ([`ReportSink`]): the report (tens of MB for a
    /// large app) is never held whole, only the connections it maps to.
    pub(crate) async fn connection_health_mapped(&self) -> Result<Mapped> {
        let observed_at = Utc::now();
        let name = self.settings().name.clone();
        let personal = self.settings().include_personal_data;
        self.report_into(move || ReportSink::new(name.clone(), observed_at, personal))
            .await
    }

    /// `GET /operations/connection_health/{merchant_id}`: one merchant's cached report, mapped.
    pub async fn merchant_health(&self, merchant_id: &str) -> Result<Connection> {
        self.merchant_mapped(merchant_id, false).await
    }

    /// `GET /operations/connection_health/{merchant_id}?refresh=true`: has Violet recompute one
    /// merchant's report now (which also updates what the list shows) and returns it, mapped.
    ///
    /// Violet calls this heavy (it may use the merchant's platform rate limits): call it when
    /// a change is suspected, never on a schedule. Polls never call it.
    pub async fn refresh_merchant(&self, merchant_id: &str) -> Result<Connection> {
        self.merchant_mapped(merchant_id, true).await
    }

    /// [`VioletClient::merchant_health`] for many merchants, at most `concurrency` requests in
    /// flight, yielding results as they complete (each error names its merchant).
    pub fn merchants_health<'a, I>(&'a self, merchant_ids: I) -> BoxStream<'a, Result<Connection>>
    where
        I: IntoIterator<Item = String> + 'a,
        I::IntoIter: Send + 'a,
    {
        self.settings()
            .concurrency
            .fan_out(merchant_ids, move |id| async move {
                self.merchant_health(&id).await
            })
            .boxed()
    }

    async fn merchant_mapped(&self, merchant_id: &str, refresh: bool) -> Result<Connection> {
        let observed_at = Utc::now();
        let resp = self.merchant(merchant_id, refresh).await?;
        decode_merchant(
            &self.settings().name,
            resp.body(),
            merchant_id,
            observed_at,
            self.settings().include_personal_data,
        )
        .map_err(|e| e.with_status(resp.status()).with_customer(merchant_id))
    }
}

/// Maps report entries one at a time, counting the ones left out.
struct ReportMapper {
    name: String,
    observed_at: DateTime<Utc>,
    include_personal_data: bool,
    out: Vec<Connection>,
    losses: Losses,
    index: usize,
}

impl ReportMapper {
    fn new(name: &str, observed_at: DateTime<Utc>, include_personal_data: bool) -> Self {
        ReportMapper {
            name: name.to_owned(),
            observed_at,
            include_personal_data,
            out: Vec::new(),
            losses: Losses::default(),
            index: 0,
        }
    }

    fn push(&mut self, item: wire::Item) {
        let ctx = MapContext {
            provider: &self.name,
            observed_at: self.observed_at,
            include_personal_data: self.include_personal_data,
        };
        match map_item(&item, &ctx, None) {
            Some(c) => self.out.push(c),
            None => self.losses.skipped.push(Skipped {
                index: self.index,
                id: None,
                reason: "the entry names no readable merchant_id".to_owned(),
            }),
        }
        self.index += 1;
    }

    fn finish(mut self) -> Mapped {
        self.out.shrink_to_fit();
        Mapped {
            lost: self
                .losses
                .to_error(&self.name, REPORT, None, "report entries"),
            connections: self.out,
        }
    }
}

/// Decode and map a report body held whole (see [`crate::decode_report`]): the connections,
/// and the `decode` error naming the entries left out.
pub(crate) fn decode_report(
    name: &str,
    body: &[u8],
    observed_at: DateTime<Utc>,
    include_personal_data: bool,
) -> Result<Mapped> {
    let mut m = ReportMapper::new(name, observed_at, include_personal_data);
    wire::decode_report(body, |item| m.push(item))
        .map_err(|e| Error::new(name, REPORT, ErrorKind::Decode, e.message))?;
    Ok(m.finish())
}

/// Body bytes gathered before the decoder is given them (and the download waits for it).
const REPORT_HANDOFF_BYTES: usize = 256 * 1024;

/// The report body's [`BodySink`]: the body is parsed by serde_json's reader
/// ([`wire::read_report`]) on a thread of its own, and every entry is mapped as soon as it is
/// read. Only ~256 KB of body, the entry being read and the mapped connections are held.
///
/// The hand-off is in lockstep: the sink gathers up to [`REPORT_HANDOFF_BYTES`], hands them
/// over and waits (on the blocking pool) until the decoder asks for more, so tokio sees the
/// decoding as blocking work while it runs and as nothing while the download waits for the
/// network. (A decoder parked on the blocking pool waiting for bytes would keep a paused test
/// clock from ever reaching a stalled download's timeout; a decoder on a plain thread working
/// unseen would let it jump past the provider's timeout.)
pub(crate) struct ReportSink {
    gathered: bytes::BytesMut,
    /// Hand over once this many bytes are gathered ([`REPORT_HANDOFF_BYTES`]).
    handoff: usize,
    tx: Option<std::sync::mpsc::Sender<Bytes>>,
    /// The decoder asks for more here; it is dropped when the decoder ends.
    wants: Arc<Mutex<std::sync::mpsc::Receiver<()>>>,
    result: Arc<Mutex<std::sync::mpsc::Receiver<std::result::Result<Mapped, String>>>>,
}

impl ReportSink {
    pub(crate) fn new(
        name: String,
        observed_at: DateTime<Utc>,
        include_personal_data: bool,
    ) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Bytes>();
        let (want_tx, want_rx) = std::sync::mpsc::sync_channel::<()>(1);
        let (result_tx, result_rx) = std::sync::mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("violet-report".into())
            .spawn(move || {
                let reader = ChunkReader {
                    rx,
                    want: want_tx,
                    chunk: Bytes::new(),
                    given: false,
                };
                let mut m = ReportMapper::new(&name, observed_at, include_personal_data);
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    wire::read_report(reader, |item| m.push(item)).map_err(|e| e.message)
                }));
                let r = match r {
                    Ok(Ok(())) => Ok(m.finish()),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err("decoding the report panicked".to_owned()),
                };
                let _ = result_tx.send(r);
            });
        if spawned.is_err() {
            // No thread: the result channel is closed, and the first hand-off says so.
            tracing::warn!("cannot start the report decoder thread");
        }
        ReportSink {
            gathered: bytes::BytesMut::new(),
            handoff: REPORT_HANDOFF_BYTES,
            tx: Some(tx),
            wants: Arc::new(Mutex::new(want_rx)),
            result: Arc::new(Mutex::new(result_rx)),
        }
    }

    /// Hand what was gathered to the decoder and wait until it asks for more (`Ok`) or ends
    /// (`Err`: it stopped at an error, or saw the end of the body).
    async fn hand_off(&mut self) -> std::result::Result<(), ()> {
        let chunk = self.gathered.split().freeze();
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(chunk).is_ok());
        if !sent {
            return Err(());
        }
        let wants = self.wants.clone();
        let asked = tokio::task::spawn_blocking(move || {
            wants.lock().map(|w| w.recv().is_ok()).unwrap_or(false)
        })
        .await;
        match asked {
            Ok(true) => Ok(()),
            _ => Err(()),
        }
    }

    /// The decoder's result (it has seen the end of the body, or stopped at an error).
    async fn outcome(&mut self) -> std::result::Result<Mapped, String> {
        self.tx = None;
        let result = self.result.clone();
        tokio::task::spawn_blocking(move || result.lock().ok().and_then(|r| r.recv().ok()))
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| Err("the report decoder did not finish".to_owned()))
    }
}

impl BodySink for ReportSink {
    type Output = Mapped;

    async fn feed(&mut self, chunk: Bytes) -> std::result::Result<(), String> {
        self.gathered.extend_from_slice(&chunk);
        if self.gathered.len() < self.handoff {
            return Ok(());
        }
        if self.hand_off().await.is_err() {
            // The decoder stopped before the end: the body is not a report, and its error
            // ends the request without reading the rest.
            return Err(match self.outcome().await {
                Err(e) => e,
                Ok(_) => "the report decoder stopped before the body ended".to_owned(),
            });
        }
        Ok(())
    }

    async fn finish(mut self) -> std::result::Result<Mapped, String> {
        if !self.gathered.is_empty() {
            // Whether it asks for more or ends, the result says what it made of the body.
            let _ = self.hand_off().await;
        }
        // Closing the channel is the end of the body for the reader.
        self.outcome().await
    }
}

/// A blocking [`std::io::Read`] over the hand-offs of a [`ReportSink`] (on the decoder's own
/// thread): each time it has used up what it was given it asks for more, and waits. The
/// channel's end is the body's end.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<Bytes>,
    want: std::sync::mpsc::SyncSender<()>,
    chunk: Bytes,
    /// Whether a hand-off came yet (the first is waited for without asking: the sink hands
    /// it over unasked).
    given: bool,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.try_recv() {
                Ok(c) => self.chunk = c,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return Ok(0),
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    // Used up: ask for more (the sink is waiting for this), then wait.
                    if self.given {
                        let _ = self.want.send(());
                    }
                    match self.rx.recv() {
                        Ok(c) => self.chunk = c,
                        Err(_) => return Ok(0),
                    }
                }
            }
        }
        self.given = true;
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        bytes::Buf::advance(&mut self.chunk, n);
        Ok(n)
    }
}

/// Decode and map a one-merchant body; `merchant_id` stands in when the body has none.
pub(crate) fn decode_merchant(
    name: &str,
    body: &[u8],
    merchant_id: &str,
    observed_at: DateTime<Utc>,
    include_personal_data: bool,
) -> Result<Connection> {
    let item = wire::decode_merchant(body)
        .map_err(|e| Error::new(name, MERCHANT, ErrorKind::Decode, e.message))?;
    let ctx = MapContext {
        provider: name,
        observed_at,
        include_personal_data,
    };
    map_item(&item, &ctx, Some(merchant_id)).ok_or_else(|| {
        Error::new(
            name,
            MERCHANT,
            ErrorKind::Decode,
            "the answer names no merchant",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::decode_item;
    use serde_json::{json, Value};

    const SECTIONS: [&str; 8] = [
        "connection",
        "scope_validation",
        "sync_status",
        "invalid_products",
        "offers_published",
        "payout_account",
        "migration",
        "commission_rate",
    ];

    fn ctx() -> MapContext<'static> {
        MapContext {
            provider: "violet",
            observed_at: "2024-05-01T12:00:00Z".parse().unwrap(),
            include_personal_data: false,
        }
    }

    /// A merchant for which every rule is satisfied.
    fn healthy() -> Value {
        json!({
            "merchant_id": 42,
            "merchant_name": "Acme Goods",
            "merchant_email": "a****e@acme.example",
            "merchant_status": "ACTIVE",
            "platform": "SHOPIFY",
            "store_url": "https://acme.myshopify.com",
            "distribution_type": "PRIVATE",
            "connection": {"status": "COMPLETE", "error": null, "results": {
                "isConnected": true, "hasActivePlatformPlan": true, "hasShippingMethods": true,
                "storeScopes": {"hasValidScopes": true, "requiredScopes": ["read_products"], "missingScopes": []},
                "connected": true}},
            "scope_validation": {"status": "COMPLETE", "error": null,
                "results": {"valid": true, "missing_scopes": []}},
            "sync_status": {"status": "COMPLETE", "error": null, "results": {
                "id": 1, "merchant_id": 42, "status": "COMPLETED", "abort": false,
                "total_products": 100, "total_products_synced": 100, "resync_required": false,
                "date_last_synced": "2024-04-30T08:00:00Z"}},
            "invalid_products": {"status": "COMPLETE", "error": null,
                "results": {"count": 0, "invalid_product": null}},
            "offers_published": {"status": "COMPLETE", "error": null,
                "results": {"sync_complete": true, "count": 100}},
            "payout_account": {"status": "COMPLETE", "error": null, "results": {
                "id": 9, "is_active": true, "payment_provider": "STRIPE", "errors": []}},
            "migration": {"status": "COMPLETE", "error": null, "results": "MIGRATED"},
            "commission_rate": {"status": "COMPLETE", "error": null, "default_rate": 10, "overrides": []}
        })
    }

    fn map_value(v: &Value) -> Connection {
        map_with(v, &ctx())
    }

    fn map_with(v: &Value, ctx: &MapContext<'_>) -> Connection {
        let item = decode_item(&v.to_string());
        let c = map_item(&item, ctx, None).expect("mapped");
        check_invariants(&c);
        c
    }

    /// DESIGN's invariants: status = worst of checks and problems; every status other than
    /// healthy has a problem at that severity.
    fn check_invariants(c: &Connection) {
        assert_eq!(c.status, c.worst_reported(), "{c:#?}");
        if !c.status.is_ok() {
            assert!(
                c.problems.iter().any(|p| p.severity == c.status),
                "status {} unexplained: {:#?}",
                c.status,
                c.problems
            );
        }
        for check in &c.checks {
            if !check.status.is_ok() {
                assert!(
                    c.problems.iter().any(|p| p.severity >= check.status),
                    "check {} unexplained",
                    check.name
                );
            }
        }
    }

    fn codes(c: &Connection) -> Vec<&str> {
        c.problems.iter().map(|p| p.code.as_str()).collect()
    }

    fn check<'a>(c: &'a Connection, name: &str) -> &'a Check {
        c.checks
            .iter()
            .find(|k| k.name == name)
            .unwrap_or_else(|| panic!("no check {name}"))
    }

    fn problem<'a>(c: &'a Connection, code: &str) -> &'a Problem {
        c.problems
            .iter()
            .find(|p| p.code == code)
            .unwrap_or_else(|| panic!("no problem {code}: {:#?}", c.problems))
    }

    #[test]
    fn healthy_merchant() {
        let c = map_value(&healthy());
        assert_eq!(c.status, Status::Healthy);
        assert!(c.problems.is_empty(), "{:#?}", c.problems);
        assert_eq!(c.id, "violet:42");
        assert_eq!(c.provider, "violet");
        assert_eq!(c.provider_connection_id.as_deref(), Some("42"));
        assert_eq!(
            c.customer,
            Customer {
                id: "42".into(),
                name: Some("Acme Goods".into()),
                email: None
            }
        );
        assert_eq!(c.platform, "shopify");
        assert_eq!(c.role, Role::Source);
        assert_eq!(c.provider_status, "ACTIVE");
        let names: Vec<&str> = c.checks.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, SECTIONS);
        assert!(c
            .checks
            .iter()
            .all(|k| k.status == Status::Healthy && k.detail.is_none()));
        assert_eq!(
            c.sync,
            Some(Box::new(SyncProgress {
                state: SyncState::Live,
                total: Some(100),
                synced: Some(100),
                last_synced_at: Some("2024-04-30T08:00:00Z".parse().unwrap()),
            }))
        );
        assert_eq!(c.data_as_of, Some("2024-04-30T08:00:00Z".parse().unwrap()));
        assert_eq!(c.observed_at, ctx().observed_at);
        assert_eq!(
            c.accounts,
            vec![Account {
                id: "42".into(),
                name: Some("Acme Goods".into()),
                store_url: Some("https://acme.myshopify.com".into())
            }]
        );
        assert_eq!(c.connected_at, None);
    }

    #[test]
    fn every_check_times_every_status() {
        // (status, check status, connection status, generic problem expected)
        let table: [(&str, Status, Status, Option<&str>); 7] = [
            ("COMPLETE", Status::Healthy, Status::Healthy, None),
            ("NOT_APPLICABLE", Status::Healthy, Status::Healthy, None),
            (
                "INCOMPLETE",
                Status::Degraded,
                Status::Degraded,
                Some("check_incomplete"),
            ),
            (
                "NEEDS_ATTENTION",
                Status::ActionRequired,
                Status::ActionRequired,
                Some("check_needs_attention"),
            ),
            (
                "ERROR",
                Status::Unknown,
                Status::Unknown,
                Some("check_error"),
            ),
            (
                "WOBBLY",
                Status::Unknown,
                Status::Unknown,
                Some("unrecognized_value"),
            ),
            (
                "needs_attention",
                Status::ActionRequired,
                Status::ActionRequired,
                Some("check_needs_attention"),
            ),
        ];
        for section in SECTIONS {
            for (raw, check_status, status, code) in table {
                let mut v = healthy();
                v[section]["status"] = json!(raw);
                v[section]["error"] = json!({"message": "boom", "code": 1});
                let c = map_value(&v);
                let k = check(&c, section);
                assert_eq!(k.status, check_status, "{section} {raw}");
                assert_eq!(k.detail.as_deref(), Some("boom"), "{section} {raw}");
                assert_eq!(c.status, status, "{section} {raw}: {:#?}", c.problems);
                let mut expected: Vec<&str> = code.into_iter().collect();
                // The migration check is about nothing else: NEEDS_ATTENTION means required.
                if section == "migration" && raw.eq_ignore_ascii_case("NEEDS_ATTENTION") {
                    expected = vec!["migration_required"];
                }
                assert_eq!(codes(&c), expected, "{section} {raw}");
                if let Some(code) = code {
                    let p = problem(&c, expected[0]);
                    if code == "unrecognized_value" {
                        assert_eq!(
                            p.message,
                            format!("unrecognized value \"WOBBLY\" for {section}.status")
                        );
                    } else if section != "migration" || code != "check_needs_attention" {
                        assert!(
                            p.message.contains(section) && p.message.ends_with(": boom"),
                            "{}",
                            p.message
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_merchant_status() {
        let disabled = Some(("merchant_disabled", Status::Disconnected));
        let onboarding = Some(("merchant_onboarding", Status::Pending));
        let table = [
            ("ACTIVE", Status::Healthy, None),
            ("INACTIVE", Status::Disconnected, disabled),
            ("DISABLED", Status::Disconnected, disabled),
            ("DISABLED_INACTIVE", Status::Disconnected, disabled),
            ("FOR_DELETION", Status::Disconnected, disabled),
            ("NEW", Status::Pending, onboarding),
            ("APPLICATION_IN_PROGRESS", Status::Pending, onboarding),
            ("APPLICATION_SUBMITTED", Status::Pending, onboarding),
            ("APPLICATION_ACCEPTED", Status::Pending, onboarding),
            (
                "APPLICATION_DENIED",
                Status::ActionRequired,
                Some(("merchant_application_denied", Status::ActionRequired)),
            ),
            (
                "SUSPENDED_BY_MOON",
                Status::Unknown,
                Some(("unrecognized_value", Status::Unknown)),
            ),
            ("disabled", Status::Disconnected, disabled),
            ("Application_Submitted", Status::Pending, onboarding),
        ];
        for documented in crate::wire::MerchantStatus::KNOWN
            .iter()
            .map(|s| s.as_str())
        {
            assert!(
                table.iter().any(|(raw, ..)| *raw == documented),
                "{documented} not tested"
            );
        }
        for (raw, status, problem_expected) in table {
            let mut v = healthy();
            v["merchant_status"] = json!(raw);
            let c = map_value(&v);
            assert_eq!(c.status, status, "{raw}");
            assert_eq!(c.provider_status, raw, "verbatim");
            match problem_expected {
                None => assert!(c.problems.is_empty(), "{raw}"),
                Some((code, sev)) => {
                    assert_eq!(codes(&c), [code], "{raw}");
                    let p = &c.problems[0];
                    assert_eq!(p.severity, sev);
                    assert!(p.message.contains(raw), "{raw}: {}", p.message);
                    match code {
                        "merchant_disabled" | "merchant_application_denied" => assert!(matches!(
                            p.remediation,
                            Some(Remediation::ContactProvider { .. })
                        )),
                        "merchant_onboarding" => assert_eq!(
                            p.remediation,
                            Some(Remediation::CompleteSetup {
                                step: "merchant_onboarding".into()
                            })
                        ),
                        _ => assert_eq!(p.remediation, None),
                    }
                }
            }
        }
        let mut v = healthy();
        v.as_object_mut().unwrap().remove("merchant_status");
        let c = map_value(&v);
        assert_eq!(
            (c.status, codes(&c)),
            (Status::Unknown, vec!["missing_value"])
        );
        assert_eq!(c.provider_status, "");
        v["merchant_status"] = json!(7);
        let c = map_value(&v);
        assert_eq!(
            (c.status, codes(&c)),
            (Status::Unknown, vec!["unrecognized_value"])
        );
        // A number is read as its text, then not recognized.
        assert_eq!(
            c.problems[0].message,
            "unrecognized value \"7\" for merchant_status"
        );
        v["merchant_status"] = json!({"a": 1});
        let c = map_value(&v);
        assert_eq!(
            (c.status, codes(&c)),
            (Status::Unknown, vec!["unrecognized_value"])
        );
        assert_eq!(
            c.problems[0].message,
            "unexpected object for merchant_status"
        );
    }

    #[test]
    fn every_sync_status() {
        let table = [
            ("COMPLETED", SyncState::Live, Status::Healthy, None),
            (
                "IN_PROGRESS",
                SyncState::Syncing,
                Status::Syncing,
                Some("sync_in_progress"),
            ),
            (
                "PENDING",
                SyncState::Syncing,
                Status::Syncing,
                Some("sync_in_progress"),
            ),
            (
                "NOT_STARTED",
                SyncState::Pending,
                Status::Pending,
                Some("sync_not_started"),
            ),
            (
                "FAILED",
                SyncState::Failed,
                Status::Degraded,
                Some("sync_failed"),
            ),
            (
                "ABORTED",
                SyncState::Unknown,
                Status::Unknown,
                Some("unrecognized_value"),
            ),
            (
                "in_progress",
                SyncState::Syncing,
                Status::Syncing,
                Some("sync_in_progress"),
            ),
        ];
        for (raw, state, status, code) in table {
            let mut v = healthy();
            v["sync_status"]["results"]["status"] = json!(raw);
            v["sync_status"]["results"]["total_products_synced"] = json!(40);
            let c = map_value(&v);
            let sync = c.sync.as_ref().unwrap();
            assert_eq!(sync.state, state, "{raw}");
            assert_eq!((sync.total, sync.synced), (Some(100), Some(40)));
            assert_eq!(c.status, status, "{raw}");
            assert_eq!(codes(&c), code.into_iter().collect::<Vec<_>>(), "{raw}");
            if let Some(code) = code {
                let p = problem(&c, code);
                let wait = matches!(code, "sync_in_progress" | "sync_not_started");
                assert_eq!(
                    p.remediation == Some(Remediation::WaitForSync),
                    wait,
                    "{raw}"
                );
            }
        }
        let mut v = healthy();
        v["sync_status"]["results"]["status"] = json!("IN_PROGRESS");
        v["sync_status"]["results"]["total_products_synced"] = json!(40);
        let c = map_value(&v);
        assert_eq!(
            c.problems[0].message,
            "waiting for the product sync to finish (40 of 100 products synced)"
        );
    }

    #[test]
    fn store_disconnected_and_platform_plan() {
        let mut v = healthy();
        v["connection"]["status"] = json!("NEEDS_ATTENTION");
        v["connection"]["results"]["isConnected"] = json!(false);
        v["connection"]["results"]["connected"] = json!(false);
        let c = map_value(&v);
        // The check's NEEDS_ATTENTION is worse than disconnected and not explained by it.
        assert_eq!(c.status, Status::ActionRequired);
        assert_eq!(codes(&c), ["store_disconnected", "check_needs_attention"]);
        let p = problem(&c, "store_disconnected");
        assert_eq!(p.severity, Status::Disconnected);
        assert_eq!(p.remediation, Some(Remediation::Reconnect { url: None }));
        assert!(
            p.message.contains("isConnected and connected"),
            "{}",
            p.message
        );

        let mut v = healthy();
        v["connection"]["results"]["connected"] = json!(false);
        let c = map_value(&v);
        assert_eq!(c.status, Status::Disconnected);
        assert_eq!(codes(&c), ["store_disconnected"]);

        let mut v = healthy();
        v["connection"]["status"] = json!("NEEDS_ATTENTION");
        v["connection"]["results"]["hasActivePlatformPlan"] = json!(false);
        let c = map_value(&v);
        assert_eq!(c.status, Status::ActionRequired);
        assert_eq!(codes(&c), ["platform_plan_inactive"]);
        assert_eq!(
            c.problems[0].remediation,
            Some(Remediation::CompleteSetup {
                step: "platform_plan".into()
            })
        );
    }

    #[test]
    fn missing_scopes_union() {
        let mut v = healthy();
        v["connection"]["status"] = json!("NEEDS_ATTENTION");
        v["connection"]["results"]["storeScopes"]["hasValidScopes"] = json!(false);
        v["connection"]["results"]["storeScopes"]["missingScopes"] =
            json!(["write_orders", "read_shipping"]);
        v["scope_validation"]["status"] = json!("NEEDS_ATTENTION");
        v["scope_validation"]["results"] =
            json!({"valid": false, "missing_scopes": ["read_shipping", "read_locales"]});
        let c = map_value(&v);
        assert_eq!(c.status, Status::ActionRequired);
        assert_eq!(codes(&c), ["missing_scopes"]);
        let p = &c.problems[0];
        assert_eq!(p.severity, Status::ActionRequired);
        assert_eq!(
            p.message,
            "the store connection lacks platform scopes: write_orders, read_shipping, read_locales"
        );
        assert_eq!(
            p.remediation,
            Some(Remediation::GrantScopes {
                missing: vec![
                    "write_orders".into(),
                    "read_shipping".into(),
                    "read_locales".into()
                ]
            })
        );

        // Only a flag, no list.
        let mut v = healthy();
        v["scope_validation"]["results"]["valid"] = json!(false);
        let c = map_value(&v);
        assert_eq!(
            (c.status, codes(&c)),
            (Status::ActionRequired, vec!["missing_scopes"])
        );
        assert_eq!(
            c.problems[0].remediation,
            Some(Remediation::GrantScopes { missing: vec![] })
        );

        // A list under a COMPLETE check: the results win.
        let mut v = healthy();
        v["connection"]["results"]["storeScopes"]["missingScopes"] = json!(["x"]);
        let c = map_value(&v);
        assert_eq!(
            (c.status, codes(&c)),
            (Status::ActionRequired, vec!["missing_scopes"])
        );

        // A list reported by an INCOMPLETE check with valid = true: non-blocking.
        let mut v = healthy();
        v["scope_validation"]["status"] = json!("INCOMPLETE");
        v["scope_validation"]["results"] =
            json!({"valid": true, "missing_scopes": ["read_locales"]});
        let c = map_value(&v);
        assert_eq!(
            (c.status, codes(&c)),
            (Status::Degraded, vec!["missing_scopes"])
        );

        // NOT_APPLICABLE sections contribute nothing.
        let mut v = healthy();
        v["scope_validation"]["status"] = json!("NOT_APPLICABLE");
        v["scope_validation"]["results"] =
            json!({"valid": false, "missing_scopes": ["read_locales"]});
        let c = map_value(&v);
        assert_eq!(c.status, Status::Healthy);
    }

    #[test]
    fn invalid_products_count() {
        let mut v = healthy();
        v["invalid_products"]["status"] = json!("INCOMPLETE");
        v["invalid_products"]["results"]["count"] = json!(7);
        let c = map_value(&v);
        assert_eq!(
            (c.status, codes(&c)),
            (Status::Degraded, vec!["invalid_products"])
        );
        assert_eq!(
            c.problems[0].message,
            "7 invalid products could not be synced"
        );
        let mut v = healthy();
        v["invalid_products"]["results"] = json!({"count": "1"});
        let c = map_value(&v);
        assert_eq!(
            c.problems[0].message,
            "1 invalid product could not be synced"
        );
        let mut v = healthy();
        v["invalid_products"]["results"] = json!({"invalid_products": [{"id": 1}, {"id": 2}]});
        let c = map_value(&v);
        assert_eq!(
            c.problems[0].message,
            "2 invalid products could not be synced"
        );
    }

    #[test]
    fn payout_account_rules() {
        let mut v = healthy();
        v["payout_account"]["status"] = json!("NEEDS_ATTENTION");
        v["payout_account"]["results"] = Value::Null;
        let c = map_value(&v);
        assert_eq!(
            (c.status, codes(&c)),
            (Status::ActionRequired, vec!["payout_account_missing"])
        );
        assert_eq!(
            c.problems[0].remediation,
            Some(Remediation::CompleteSetup {
                step: "payout_account".into()
            })
        );

        let mut v = healthy();
        v["payout_account"]["status"] = json!("NEEDS_ATTENTION");
        v["payout_account"]["results"]["is_active"] = json!(false);
        v["payout_account"]["results"]["errors"] = json!([
            {"error_message": "Bank account verification failed", "resolved": false},
            {"error_message": "old", "resolved": true},
            {"errorMessage": "Missing tax id"}
        ]);
        let c = map_value(&v);
        assert_eq!(
            (c.status, codes(&c)),
            (Status::ActionRequired, vec!["payout_account_error"])
        );
        assert_eq!(
            c.problems[0].message,
            "the merchant's payout account is not active and has 2 unresolved errors: Bank account verification failed; Missing tax id"
        );

        // camelCase results.
        let mut v = healthy();
        v["payout_account"]["results"] = json!({"isActive": false});
        let c = map_value(&v);
        assert_eq!(codes(&c), ["payout_account_error"]);
        assert_eq!(
            c.problems[0].message,
            "the merchant's payout account is not active"
        );

        // NOT_APPLICABLE: the results do not matter.
        v["payout_account"]["status"] = json!("NOT_APPLICABLE");
        assert_eq!(map_value(&v).status, Status::Healthy);

        // No results under COMPLETE: fine.
        let mut v = healthy();
        v["payout_account"]["results"] = Value::Null;
        assert_eq!(map_value(&v).status, Status::Healthy);
    }

    #[test]
    fn migration_results() {
        let table = [
            (
                "COMPLETE",
                json!("MIGRATION_REQUIRED"),
                Status::ActionRequired,
                vec!["migration_required"],
            ),
            ("COMPLETE", json!("migrated"), Status::Healthy, vec![]),
            ("COMPLETE", json!("NOT_APPLICABLE"), Status::Healthy, vec![]),
            (
                "INCOMPLETE",
                json!("MIGRATION_IN_PROGRESS"),
                Status::Degraded,
                vec!["migration_in_progress", "check_incomplete"],
            ),
            (
                "COMPLETE",
                json!("MIGRATION_IN_PROGRESS"),
                Status::Pending,
                vec!["migration_in_progress"],
            ),
            (
                "ERROR",
                json!("ERROR"),
                Status::Unknown,
                vec!["migration_error"],
            ),
            (
                "COMPLETE",
                json!("TELEPORTED"),
                Status::Unknown,
                vec!["unrecognized_value"],
            ),
            (
                "NEEDS_ATTENTION",
                Value::Null,
                Status::ActionRequired,
                vec!["migration_required"],
            ),
            (
                "COMPLETE",
                json!({"status": "MIGRATION_REQUIRED"}),
                Status::ActionRequired,
                vec!["migration_required"],
            ),
            ("COMPLETE", json!({"other": 1}), Status::Healthy, vec![]),
            (
                "COMPLETE",
                json!(5),
                Status::Unknown,
                vec!["unrecognized_value"],
            ),
            (
                "NOT_APPLICABLE",
                json!("MIGRATION_REQUIRED"),
                Status::Healthy,
                vec![],
            ),
        ];
        for (status, results, expected, expected_codes) in table {
            let mut v = healthy();
            v["migration"] = json!({"status": status, "results": results});
            let c = map_value(&v);
            assert_eq!(c.status, expected, "{status} {results}");
            assert_eq!(codes(&c), expected_codes, "{status} {results}");
        }
        let mut v = healthy();
        v["migration"] = json!({"status": "COMPLETE", "results": "MIGRATION_REQUIRED"});
        let c = map_value(&v);
        assert_eq!(
            c.problems[0].remediation,
            Some(Remediation::CompleteSetup {
                step: "migration".into()
            })
        );
    }

    #[test]
    fn commission_detail_falls_back_to_override_error() {
        let mut v = healthy();
        v["commission_rate"] = json!({"status": "NEEDS_ATTENTION", "error": null, "default_rate": 10,
            "overrides": [{"status": "COMPLETE", "error": {"message": "fine"}},
                          {"status": "NEEDS_ATTENTION", "error": {"message": "Commission rate override rejected"}}]});
        let c = map_value(&v);
        assert_eq!(
            check(&c, "commission_rate").detail.as_deref(),
            Some("Commission rate override rejected")
        );
        assert_eq!(codes(&c), ["check_needs_attention"]);
        assert_eq!(
            c.problems[0].message,
            "Violet's commission_rate check needs attention: Commission rate override rejected"
        );
    }

    #[test]
    fn extra_sections_become_checks() {
        let mut v = healthy();
        v["terms_of_service"] = json!({"status": "NEEDS_ATTENTION", "results": [], "error": {"message": "not accepted"}});
        v["channelConnection"] = json!({"status": "COMPLETE", "total_connected": 3});
        v["futureThing"] = json!({"status": "SPARKLY"});
        let c = map_value(&v);
        let names: Vec<&str> = c.checks.iter().skip(8).map(|k| k.name.as_str()).collect();
        assert_eq!(
            names,
            ["channel_connection", "future_thing", "terms_of_service"]
        );
        assert_eq!(check(&c, "terms_of_service").status, Status::ActionRequired);
        assert_eq!(check(&c, "future_thing").status, Status::Unknown);
        assert_eq!(c.status, Status::ActionRequired);
        assert_eq!(codes(&c), ["unrecognized_value", "check_needs_attention"]);
        assert_eq!(
            c.problems[1].message,
            "Violet's terms_of_service check needs attention: not accepted"
        );
    }

    #[test]
    fn null_and_missing_sections_add_no_check() {
        let mut v = healthy();
        for s in SECTIONS {
            v[s] = Value::Null;
        }
        let c = map_value(&v);
        assert!(c.checks.is_empty());
        assert_eq!(c.status, Status::Healthy);
        assert_eq!(c.sync, None);
        assert_eq!(c.data_as_of, None);

        let c = map_value(&json!({"merchant_id": "77"}));
        assert!(c.checks.is_empty());
        assert_eq!(c.platform, "unknown");
        assert_eq!(codes(&c), ["missing_value"]);

        // A section with results but no status: no check, the results still count.
        let mut v = healthy();
        v["invalid_products"] = json!({"results": {"count": 3}});
        let c = map_value(&v);
        assert!(c.checks.iter().all(|k| k.name != "invalid_products"));
        assert_eq!(codes(&c), ["invalid_products"]);

        // Sections and results of the wrong type.
        let mut v = healthy();
        v["connection"] = json!("broken");
        v["sync_status"]["results"] = json!([1]);
        let c = map_value(&v);
        assert_eq!(c.status, Status::Unknown);
        assert_eq!(
            c.problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>(),
            [
                "unexpected string for connection",
                "unexpected array for sync_status.results"
            ]
        );
    }

    #[test]
    fn unknown_platform_is_kept_lowercased() {
        let mut v = healthy();
        v["platform"] = json!("NEWSHOP_9000");
        let c = map_value(&v);
        assert_eq!(c.platform, "newshop_9000");
        assert_eq!(c.status, Status::Healthy);
        assert_eq!(c.id, "violet:42");
    }

    #[test]
    fn personal_data_only_with_opt_in() {
        let c = map_value(&healthy());
        assert_eq!(c.customer.email, None);
        let opt_in = MapContext {
            include_personal_data: true,
            ..ctx()
        };
        let c = map_with(&healthy(), &opt_in);
        assert_eq!(c.customer.email.as_deref(), Some("a****e@acme.example"));
    }

    #[test]
    fn provider_name_is_used() {
        let named = MapContext {
            provider: "violet-eu",
            ..ctx()
        };
        let c = map_with(&healthy(), &named);
        assert_eq!(c.id, "violet-eu:42");
        assert_eq!(c.provider, "violet-eu");
    }

    #[test]
    fn malformed_entries() {
        let item = decode_item(
            r#"{"merchant_id": 5, "connection": {"status": "COMPLETE", "status": "ERROR"}}"#,
        );
        let c = map_item(&item, &ctx(), None).unwrap();
        check_invariants(&c);
        assert_eq!(c.id, "violet:5");
        assert_eq!(c.status, Status::Unknown);
        assert_eq!(codes(&c), ["malformed_entry"]);
        assert!(
            c.problems[0].message.contains("duplicate field"),
            "{}",
            c.problems[0].message
        );
        assert!(map_item(&decode_item("42"), &ctx(), None).is_none());
        assert!(map_item(&decode_item(r#"{"merchant_name": "x"}"#), &ctx(), None).is_none());
        let c = map_item(&decode_item(r#"{"merchant_name": "x"}"#), &ctx(), Some("9")).unwrap();
        assert_eq!(c.id, "violet:9");
    }

    #[test]
    fn results_string_vs_object_for_object_sections() {
        // `results` as a string where an object is documented: unknown, never a failure.
        let mut v = healthy();
        v["connection"]["results"] = json!("OK");
        let c = map_value(&v);
        assert_eq!(c.status, Status::Unknown);
        assert_eq!(
            c.problems[0].message,
            "unexpected string for connection.results"
        );
        assert_eq!(check(&c, "connection").status, Status::Healthy);
    }

    /// A report decoded from chunks as they arrive ([`ReportSink`]) is the report decoded
    /// whole: the same connections and skipped entries, or the same document error (the same
    /// parser reads both, so even the line and column agree), whatever the chunk sizes.
    #[tokio::test]
    async fn a_report_read_in_chunks_is_the_report_read_whole() {
        let doc = include_str!("../tests/fixtures/doc_example.json");
        let one: Value = serde_json::from_str::<Vec<Value>>(doc).unwrap().remove(0);
        let many: Vec<Value> = (0..40)
            .map(|i| {
                let mut m = one.clone();
                m["merchant_id"] = json!(1000 + i);
                if i % 7 == 3 {
                    m["connection"] = json!("not an object");
                }
                if i % 11 == 5 {
                    m = json!({"merchant_name": "no id"});
                }
                m
            })
            .collect();
        let report = serde_json::to_string_pretty(&many).unwrap();
        let bodies: Vec<String> = vec![
            report.clone(),
            doc.to_owned(),
            "[]".to_owned(),
            " [ null, 5, \"x\", [1,2] ] \n".to_owned(),
            // Truncated mid-entry, mid-string, after the last entry.
            report[..report.len() / 2].to_owned(),
            report[..report.len() - 1].to_owned(),
            // Not a report, trailing bytes, a syntax error in the middle, empty.
            r#"{"merchant_id": 1}"#.to_owned(),
            format!("{report} x"),
            report.replacen("\"merchant_id\": 1010", "\"merchant_id\": 10x10", 1),
            String::new(),
            "<html>".to_owned(),
        ];
        let at = Utc::now();
        for body in &bodies {
            let whole = decode_report("violet", body.as_bytes(), at, false);
            // Byte by byte only for the short bodies (a channel hand-off per byte is slow).
            let sizes: &[usize] = if body.len() < 2048 {
                &[1, 17, 512]
            } else {
                &[331, 4096, 1 << 20]
            };
            for &size in sizes {
                let mut sink = ReportSink::new("violet".to_owned(), at, false);
                // Each chunk handed over as it comes: the reader sees these boundaries.
                sink.handoff = 1;
                let mut fed = Ok(());
                for chunk in body.as_bytes().chunks(size) {
                    fed = sink.feed(Bytes::copy_from_slice(chunk)).await;
                    if fed.is_err() {
                        break;
                    }
                }
                let streamed = match fed {
                    Ok(()) => sink.finish().await,
                    Err(e) => Err(e),
                };
                match (&whole, &streamed) {
                    (Ok(w), Ok(s)) => {
                        assert_eq!(w.connections, s.connections, "chunks of {size}");
                        assert_eq!(
                            w.lost.as_ref().map(|e| e.to_string()),
                            s.lost.as_ref().map(|e| e.to_string())
                        );
                    }
                    (Err(w), Err(s)) => {
                        // serde_json places a type error one column apart reading a slice
                        // and a reader; the rest of the message is the same.
                        let unplaced = |m: &str| m.split(" at line ").next().unwrap().to_owned();
                        assert_eq!(
                            unplaced(w.message()),
                            unplaced(s),
                            "chunks of {size}: {body:.40}"
                        );
                        assert!(s.contains(" at line "), "{s}");
                    }
                    _ => panic!(
                        "chunks of {size} disagree with the whole body: {whole:?} vs {streamed:?}"
                    ),
                }
            }
        }
        assert!(decode_report("violet", report.as_bytes(), at, false)
            .unwrap()
            .lost
            .is_some());
    }
}
