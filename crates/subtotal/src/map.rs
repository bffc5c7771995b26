//! Subtotal → connhealth mapping: the only place that knows Subtotal's vocabulary.
//!
//! The rules are written once, in the crate documentation ("How an answer maps"); the
//! code here follows them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use connhealth_core::{Account, Check, Connection, Customer, Problem, Remediation, Role, Status};
use url::Url;

use crate::wire::{ConnectionResponse, ConnectionStatus};

/// Everything the mapping needs besides the item itself.
#[derive(Debug, Clone, Copy)]
pub struct MapContext<'a> {
    /// The provider's configured name (`subtotal` by default).
    pub provider: &'a str,
    /// When the data was read (one timestamp per fetch).
    pub observed_at: DateTime<Utc>,
    /// The Link URL base for re-authentication links, when configured.
    pub link_url: Option<&'a Url>,
    /// Copy the customer's e-mail into [`Customer::email`].
    pub include_personal_data: bool,
    /// Retailer names by retailer id, from `GET /retailers` (`None` or empty when unknown).
    pub retailer_names: Option<&'a HashMap<String, String>>,
}

/// Map one Subtotal connection. `queried_customer` is the customer id the list was requested
/// for; it is used when the item carries no `customer_id`. Returns `None` for an item without
/// a `connection_id` (the caller logs it).
pub fn map_connection(
    item: &ConnectionResponse,
    queried_customer: Option<&str>,
    ctx: &MapContext<'_>,
) -> Option<Connection> {
    let connection_id = item
        .connection_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())?;
    let customer_id = item
        .customer_id
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(queried_customer)
        .unwrap_or_default();
    let retailer_id = item
        .retailer_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let retailer_name = retailer_id
        .and_then(|r| ctx.retailer_names.and_then(|names| names.get(r)))
        .map(String::as_str);
    let platform = retailer_name
        .map(platform_slug)
        .filter(|s| !s.is_empty())
        .or_else(|| retailer_id.map(str::to_lowercase))
        .unwrap_or_else(|| "unknown".to_owned());
    let retailer_label = retailer_name.or(retailer_id).unwrap_or("the retailer");

    let link = ctx.link_url.map(|base| link_for(base, connection_id));
    let (base, problem) = match &item.status {
        Some(ConnectionStatus::Active) => (Status::Healthy, None),
        Some(ConnectionStatus::Initialized) => {
            let how = match &link {
                Some(url) => format!("send them {url} to finish"),
                None => how_to_get_link(connection_id),
            };
            (
                Status::Pending,
                Some(
                    Problem::new(
                        "connection_initialized",
                        Status::Pending,
                        format!(
                            "the customer began linking their {retailer_label} account but has not finished; {how}"
                        ),
                    )
                    .with_remediation(Remediation::CompleteSetup {
                        step: "link".to_owned(),
                    }),
                ),
            )
        }
        Some(ConnectionStatus::Unauthenticated) => {
            let how = match &link {
                Some(url) => format!("send them {url}"),
                None => how_to_get_link(connection_id),
            };
            (
                Status::ActionRequired,
                Some(
                    Problem::new(
                        "reauthentication_required",
                        Status::ActionRequired,
                        format!(
                            "the customer must sign in to their {retailer_label} account again (e.g. after a password change); {how}"
                        ),
                    )
                    .with_remediation(Remediation::Reauthenticate { url: link.clone() }),
                ),
            )
        }
        Some(ConnectionStatus::Disconnected) => {
            let how = match &link {
                Some(url) => format!("to reconnect, send them {url}"),
                None => format!("to reconnect, {}", how_to_get_link(connection_id)),
            };
            (
                Status::Disconnected,
                Some(
                    Problem::new(
                        "connection_disconnected",
                        Status::Disconnected,
                        format!("the {retailer_label} account is disconnected; {how}"),
                    )
                    .with_remediation(Remediation::Reconnect { url: link.clone() }),
                ),
            )
        }
        Some(ConnectionStatus::Other(v)) => {
            (Status::Unknown, Some(Problem::unrecognized("status", v)))
        }
        None => (
            Status::Unknown,
            Some(Problem::new(
                "unrecognized_value",
                Status::Unknown,
                "no status reported for the connection",
            )),
        ),
    };

    let mut checks = Vec::new();
    if item.is_simulated == Some(true) {
        checks.push(Check {
            name: "simulated".to_owned(),
            status: Status::Healthy,
            detail: Some("simulated connection (is_simulated)".to_owned()),
        });
    }
    let accounts = retailer_id
        .map(|id| Account {
            id: id.to_owned(),
            name: retailer_name.map(str::to_owned),
            store_url: None,
        })
        .into_iter()
        .collect();

    let customer = Customer {
        id: customer_id.to_owned(),
        name: None,
        email: if ctx.include_personal_data {
            item.email
                .as_deref()
                .filter(|e| !e.is_empty())
                .map(Box::from)
        } else {
            None
        },
    };
    let mut conn = Connection::new(
        ctx.provider,
        Some(connection_id),
        customer,
        platform,
        Role::Account,
        base,
        ctx.observed_at,
    );
    conn.provider_status = item
        .status
        .as_ref()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default();
    conn.checks = checks.into();
    conn.problems = problem.into_iter().collect();
    conn.accounts = accounts;
    conn.status = conn.status.max(conn.worst_reported());
    Some(conn)
}

fn how_to_get_link(connection_id: &str) -> String {
    format!(
        "no Link URL is configured: send the customer the retailer's Link URL from the Subtotal dashboard \
         (https://link.subtotal.com/…) with ?connection_id={connection_id} appended, or set link_url"
    )
}

/// The Link URL for one connection: `base` with `connection_id=<id>` in its query. Other query
/// parameters (e.g. `redirect_url`) are kept; an existing `connection_id` is replaced.
pub(crate) fn link_for(base: &Url, connection_id: &str) -> String {
    let mut url = base.clone();
    let kept: Vec<(String, String)> = base
        .query_pairs()
        .filter(|(k, _)| k != "connection_id")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = url.query_pairs_mut();
        q.clear();
        q.extend_pairs(kept);
        q.append_pair("connection_id", connection_id);
    }
    url.to_string()
}

/// A retailer name as a platform slug: lowercased; apostrophes dropped; every other run of
/// characters that are not letters or digits becomes one `_`; no leading or trailing `_`.
/// `"Walmart"` → `walmart`, `"Best Buy"` → `best_buy`, `"Sam's Club"` → `sams_club`,
/// `"Bed Bath & Beyond"` → `bed_bath_beyond`.
pub(crate) fn platform_slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending_sep = false;
    for ch in name.chars() {
        if ch == '\'' || ch == '\u{2019}' {
            continue;
        }
        if ch.is_alphanumeric() {
            if pending_sep && !out.is_empty() {
                out.push('_');
            }
            pending_sep = false;
            out.extend(ch.to_lowercase());
        } else {
            pending_sep = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(
        link: Option<&'a Url>,
        names: Option<&'a HashMap<String, String>>,
        pd: bool,
    ) -> MapContext<'a> {
        MapContext {
            provider: "subtotal",
            observed_at: DateTime::parse_from_rfc3339("2025-01-02T03:04:05Z")
                .unwrap()
                .with_timezone(&Utc),
            link_url: link,
            include_personal_data: pd,
            retailer_names: names,
        }
    }

    fn item(status: Option<&str>) -> ConnectionResponse {
        ConnectionResponse {
            connection_id: Some("01J51S0JYV6N7K1030CV1ZKSCA".into()),
            customer_id: Some("cus-1".into()),
            retailer_id: Some("01J7SC0NN73R6F5VVSP3ZKPDA3".into()),
            status: status.map(ConnectionStatus::parse),
            email: Some("alice@example.com".into()),
            mobile: Some("+1234567890".into()),
            is_simulated: None,
        }
    }

    /// (raw status, link configured, status, problem code, remediation)
    type Row<'a> = (
        Option<&'a str>,
        bool,
        Status,
        Option<&'a str>,
        Option<Remediation>,
    );

    #[test]
    fn status_table() {
        let link = Url::parse("https://link.subtotal.com/abc123").unwrap();
        let with_link =
            "https://link.subtotal.com/abc123?connection_id=01J51S0JYV6N7K1030CV1ZKSCA".to_owned();
        // (raw status, link configured, status, problem code, remediation)
        let table: Vec<Row<'_>> = vec![
            (Some("active"), true, Status::Healthy, None, None),
            (Some("active"), false, Status::Healthy, None, None),
            (
                Some("initialized"),
                true,
                Status::Pending,
                Some("connection_initialized"),
                Some(Remediation::CompleteSetup {
                    step: "link".into(),
                }),
            ),
            (
                Some("initialized"),
                false,
                Status::Pending,
                Some("connection_initialized"),
                Some(Remediation::CompleteSetup {
                    step: "link".into(),
                }),
            ),
            (
                Some("unauthenticated"),
                true,
                Status::ActionRequired,
                Some("reauthentication_required"),
                Some(Remediation::Reauthenticate {
                    url: Some(with_link.clone()),
                }),
            ),
            (
                Some("unauthenticated"),
                false,
                Status::ActionRequired,
                Some("reauthentication_required"),
                Some(Remediation::Reauthenticate { url: None }),
            ),
            (
                Some("disconnected"),
                true,
                Status::Disconnected,
                Some("connection_disconnected"),
                Some(Remediation::Reconnect {
                    url: Some(with_link.clone()),
                }),
            ),
            (
                Some("disconnected"),
                false,
                Status::Disconnected,
                Some("connection_disconnected"),
                Some(Remediation::Reconnect { url: None }),
            ),
            (
                Some("Unauthenticated"),
                false,
                Status::Unknown,
                Some("unrecognized_value"),
                None,
            ),
            (
                Some("paused"),
                true,
                Status::Unknown,
                Some("unrecognized_value"),
                None,
            ),
            (
                None,
                true,
                Status::Unknown,
                Some("unrecognized_value"),
                None,
            ),
        ];
        for (raw, has_link, status, code, remediation) in table {
            let c = map_connection(
                &item(raw),
                None,
                &ctx(has_link.then_some(&link), None, false),
            )
            .unwrap();
            assert_eq!(c.status, status, "{raw:?}");
            assert_eq!(c.provider_status, raw.unwrap_or(""), "{raw:?}");
            assert_eq!(c.problems.first().map(|p| p.code.as_str()), code, "{raw:?}");
            assert_eq!(c.problems.len(), usize::from(code.is_some()));
            assert_eq!(
                c.problems.first().and_then(|p| p.remediation.clone()),
                remediation,
                "{raw:?}"
            );
            for p in &c.problems {
                assert_eq!(p.severity, status);
                if has_link && p.code != "unrecognized_value" {
                    assert!(p.message.contains(&with_link), "{}", p.message);
                }
                if !has_link && p.code != "unrecognized_value" {
                    assert!(
                        p.message
                            .contains("?connection_id=01J51S0JYV6N7K1030CV1ZKSCA"),
                        "{}",
                        p.message
                    );
                }
                assert!(!p.message.contains("alice"));
            }
        }
    }

    #[test]
    fn unknown_status_names_the_value() {
        let c = map_connection(&item(Some("paused")), None, &ctx(None, None, false)).unwrap();
        assert_eq!(
            c.problems[0].message,
            "unrecognized value \"paused\" for status"
        );
        assert_eq!(c.provider_status, "paused");
    }

    #[test]
    fn identity_platform_customer_accounts() {
        let c = map_connection(
            &item(Some("active")),
            Some("queried"),
            &ctx(None, None, false),
        )
        .unwrap();
        assert_eq!(c.id, "subtotal:01J51S0JYV6N7K1030CV1ZKSCA");
        assert_eq!(c.provider, "subtotal");
        assert_eq!(
            c.provider_connection_id.as_deref(),
            Some("01J51S0JYV6N7K1030CV1ZKSCA")
        );
        assert_eq!(c.role, Role::Account);
        assert_eq!(c.platform, "01j7sc0nn73r6f5vvsp3zkpda3");
        assert_eq!(c.customer, Customer::new("cus-1"));
        assert_eq!(
            c.accounts,
            vec![Account {
                id: "01J7SC0NN73R6F5VVSP3ZKPDA3".into(),
                name: None,
                store_url: None
            }]
        );
        assert!(c.checks.is_empty());

        let mut names = HashMap::new();
        names.insert(
            "01J7SC0NN73R6F5VVSP3ZKPDA3".to_owned(),
            "Sam's Club".to_owned(),
        );
        let c =
            map_connection(&item(Some("active")), None, &ctx(None, Some(&names), true)).unwrap();
        assert_eq!(c.platform, "sams_club");
        assert_eq!(c.accounts[0].name.as_deref(), Some("Sam's Club"));
        assert_eq!(c.customer.email.as_deref(), Some("alice@example.com"));

        // Customer id falls back to the queried one; a missing retailer is "unknown".
        let mut it = item(Some("active"));
        it.customer_id = None;
        it.retailer_id = None;
        let c = map_connection(&it, Some("queried"), &ctx(None, None, false)).unwrap();
        assert_eq!(c.customer.id, "queried");
        assert_eq!(c.platform, "unknown");
        assert!(c.accounts.is_empty());

        // No connection id: not mapped.
        let mut it = item(Some("active"));
        it.connection_id = Some("  ".into());
        assert!(map_connection(&it, None, &ctx(None, None, false)).is_none());
        it.connection_id = None;
        assert!(map_connection(&it, None, &ctx(None, None, false)).is_none());
    }

    #[test]
    fn simulated_adds_a_healthy_check() {
        let mut it = item(Some("unauthenticated"));
        it.is_simulated = Some(true);
        let c = map_connection(&it, None, &ctx(None, None, false)).unwrap();
        assert_eq!(
            c.checks,
            vec![Check {
                name: "simulated".into(),
                status: Status::Healthy,
                detail: Some("simulated connection (is_simulated)".into())
            }]
        );
        assert_eq!(c.status, Status::ActionRequired);
        it.is_simulated = Some(false);
        assert!(map_connection(&it, None, &ctx(None, None, false))
            .unwrap()
            .checks
            .is_empty());
    }

    #[test]
    fn link_urls_respect_existing_queries() {
        let base = Url::parse("https://link.subtotal.com/abc123").unwrap();
        assert_eq!(
            link_for(&base, "01J"),
            "https://link.subtotal.com/abc123?connection_id=01J"
        );
        let base =
            Url::parse("https://link.subtotal.com/abc?redirect_url=https%3A%2F%2Fx.example%2Fdone&connection_id=old")
                .unwrap();
        assert_eq!(
            link_for(&base, "a&b=c d"),
            "https://link.subtotal.com/abc?redirect_url=https%3A%2F%2Fx.example%2Fdone&connection_id=a%26b%3Dc+d"
        );
        let base = Url::parse("https://link.subtotal.com/abc#frag").unwrap();
        assert_eq!(
            link_for(&base, "x"),
            "https://link.subtotal.com/abc?connection_id=x#frag"
        );
    }

    #[test]
    fn slugs() {
        for (name, slug) in [
            ("Walmart", "walmart"),
            ("Best Buy", "best_buy"),
            ("  Sam's Club ", "sams_club"),
            ("Bed Bath & Beyond", "bed_bath_beyond"),
            ("Lowe’s", "lowes"),
            ("Crème-Brûlée Co.", "crème_brûlée_co"),
            ("!!!", ""),
        ] {
            assert_eq!(platform_slug(name), slug, "{name}");
        }
    }

    #[test]
    fn empty_slug_falls_back_to_the_retailer_id() {
        let mut names = HashMap::new();
        names.insert("01J7SC0NN73R6F5VVSP3ZKPDA3".to_owned(), "???".to_owned());
        let c =
            map_connection(&item(Some("active")), None, &ctx(None, Some(&names), false)).unwrap();
        assert_eq!(c.platform, "01j7sc0nn73r6f5vvsp3zkpda3");
    }
}
