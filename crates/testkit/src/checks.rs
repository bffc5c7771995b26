//! What every mapped [`Connection`] promises, checked in one place for every adapter's tests.
//!
//! The rules, from DESIGN.md: the id is `"{provider}:{provider_connection_id}"` or
//! `"{provider}:{customer_id}:{platform}"`; the platform is a non-empty lowercase slug; the
//! status is the worst of everything known, so it is **never better than** a problem's
//! severity or a check's status (`status >= worst_reported()`; not `==`: a `not_connected`
//! connection reports nothing and is still not `healthy`); every status other than `healthy`
//! and `not_connected` is explained by a problem of exactly that status; problem codes are
//! stable snake_case with a message; and the connection survives a JSON round trip.

use connhealth_core::Connection;

/// Every broken promise of `c`, in words (empty when it is well formed).
pub fn well_formed(c: &Connection) -> Vec<String> {
    let mut bad = Vec::new();
    let expected_id = Connection::make_id(
        &c.provider,
        c.provider_connection_id.as_deref(),
        &c.customer.id,
        &c.platform,
    );
    if c.id != expected_id {
        bad.push(format!("id {:?} is not {expected_id:?}", c.id));
    }
    if c.provider.is_empty() {
        bad.push(format!("{}: empty provider", c.id));
    }
    if c.platform.is_empty() || c.platform != c.platform.to_lowercase() {
        bad.push(format!(
            "{}: platform {:?} is not a lowercase slug",
            c.id, c.platform
        ));
    }
    if c.status < c.worst_reported() {
        bad.push(format!(
            "{} is {} but reports {}",
            c.id,
            c.status,
            c.worst_reported()
        ));
    }
    if !c.status.is_ok() && !c.problems.iter().any(|p| p.severity == c.status) {
        bad.push(format!(
            "{} is {} without a problem of that status: {:?}",
            c.id,
            c.status,
            c.problems
                .iter()
                .map(|p| (&p.code, p.severity))
                .collect::<Vec<_>>()
        ));
    }
    for p in &c.problems {
        if p.message.is_empty()
            || p.code.is_empty()
            || !p
                .code
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch == '_')
        {
            bad.push(format!(
                "{}: problem code {:?} / empty message",
                c.id, p.code
            ));
        }
    }
    for ch in &c.checks {
        if ch.name.is_empty() {
            bad.push(format!("{}: a check without a name", c.id));
        }
    }
    match serde_json::to_string(c).map(|j| serde_json::from_str::<Connection>(&j)) {
        Ok(Ok(back)) if back == *c => {}
        _ => bad.push(format!("{}: does not survive a JSON round trip", c.id)),
    }
    bad
}

/// Panics, naming every broken promise, unless `c` is well formed (see [`well_formed`]).
/// Inside a proptest property the panic is a failing case (and is shrunk).
#[track_caller]
pub fn assert_well_formed(c: &Connection) {
    let bad = well_formed(c);
    assert!(bad.is_empty(), "malformed connection: {bad:#?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use connhealth_core::{Customer, Problem, Role, Status};

    fn conn(status: Status) -> Connection {
        Connection::new(
            "p",
            Some("c1"),
            Customer::new("cus"),
            "shopify",
            Role::Source,
            status,
            chrono::Utc::now(),
        )
    }

    #[test]
    fn ok_statuses_need_no_problem_others_need_one_of_their_status() {
        assert!(well_formed(&conn(Status::Healthy)).is_empty());
        // `==` with worst_reported would wrongly refuse this one (it reports nothing).
        assert!(well_formed(&conn(Status::NotConnected)).is_empty());
        let mut c = conn(Status::Degraded);
        assert_eq!(well_formed(&c).len(), 1, "{:?}", well_formed(&c));
        c.problems
            .push(Problem::new("sync_pending", Status::Pending, "waiting"));
        assert_eq!(
            well_formed(&c).len(),
            1,
            "a lesser problem does not explain it"
        );
        c.problems
            .push(Problem::new("partial_sync", Status::Degraded, "3 of 5"));
        assert!(well_formed(&c).is_empty());
        c.problems
            .push(Problem::new("missing_scopes", Status::ActionRequired, "x"));
        assert!(well_formed(&c)[0].contains("reports action_required"));
        let mut c = conn(Status::Healthy);
        c.platform = "Shopify".into();
        c.id = "p:c2".into();
        assert_eq!(well_formed(&c).len(), 2);
    }
}
