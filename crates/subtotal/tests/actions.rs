//! The `reauth_link` and `disconnect` actions against the testkit's Subtotal simulator over
//! loopback HTTP, failures between the two steps of a disconnect included.

use std::time::Duration;

use connhealth_core::{ActionError, ActionKind, Connection, ErrorKind, Provider, Secret, Status};
use connhealth_subtotal::Subtotal;
use connhealth_testkit::subtotal::{CREATE_TOKEN, UPDATE_CONNECTION};
use connhealth_testkit::{Fault, FaultRule, SubtotalSim};

const LINK: &str = "https://link.subtotal.com/abc123";

fn subtotal(sim: &SubtotalSim, customers: Vec<String>, link: bool) -> Subtotal {
    let mut b = Subtotal::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new(sim.api_key()))
        .customers(customers)
        // The action must not retry the PATCH even when the builder allows it for others.
        .retry_patch(true)
        .request_timeout(Duration::from_secs(2));
    if link {
        b = b.link_url(LINK);
    }
    b.build().unwrap()
}

async fn one(s: &Subtotal, sim: &SubtotalSim, status: &str) -> Connection {
    let customer = s.customers()[0].clone();
    let id = sim.connections_of(&customer)[0].connection_id.clone();
    assert!(sim.set_status(&id, status));
    s.fetch()
        .await
        .connections
        .into_iter()
        .find(|c| c.provider_connection_id.as_deref() == Some(id.as_str()))
        .unwrap()
}

fn kinds(s: &Subtotal, c: &Connection) -> Vec<ActionKind> {
    s.actions(c).into_iter().map(|a| a.kind).collect()
}

#[tokio::test]
async fn which_connection_offers_which_action() {
    let sim = SubtotalSim::start_generated(1, 71).await.unwrap();
    let s = subtotal(&sim, sim.customer_ids(), true);
    let active = one(&s, &sim, "active").await;
    assert_eq!(kinds(&s, &active), [ActionKind::Disconnect]);
    assert!(s.actions(&active)[0].destructive);
    let unauth = one(&s, &sim, "unauthenticated").await;
    assert_eq!(
        kinds(&s, &unauth),
        [ActionKind::ReauthLink, ActionKind::Disconnect]
    );
    let gone = one(&s, &sim, "disconnected").await;
    assert_eq!(kinds(&s, &gone), [ActionKind::ReauthLink]);
    // Without a Link URL there is no link to give.
    let no_link = subtotal(&sim, sim.customer_ids(), false);
    assert!(no_link.actions(&gone).is_empty());
    let e = no_link
        .act(&gone, ActionKind::ReauthLink)
        .await
        .unwrap_err();
    assert!(matches!(e, ActionError::Unsupported { .. }), "{e}");
    let e = s.act(&gone, ActionKind::Disconnect).await.unwrap_err();
    assert!(matches!(e, ActionError::Unsupported { .. }), "{e}");
    assert_eq!(sim.stats().requests(UPDATE_CONNECTION), 0);
}

#[tokio::test]
async fn reauth_link_is_the_link_url_with_the_connection_id() {
    let sim = SubtotalSim::start_generated(1, 72).await.unwrap();
    let s = subtotal(&sim, sim.customer_ids(), true);
    let c = one(&s, &sim, "unauthenticated").await;
    let id = c.provider_connection_id.as_deref().unwrap().to_owned();
    let out = s.act(&c, ActionKind::ReauthLink).await.unwrap();
    assert!(out.ok);
    assert_eq!(
        out.url.as_deref(),
        Some(format!("{LINK}?connection_id={id}").as_str())
    );
    assert!(out.message.contains(&id));
}

#[tokio::test]
async fn disconnect_mints_a_token_then_patches_and_returns_the_disconnected_connection() {
    let sim = SubtotalSim::start_generated(1, 73).await.unwrap();
    // Retailer names whose slug is not the retailer id, so the poll's platform differs from
    // what the PATCH answer alone would give.
    let renamed: Vec<_> = sim
        .retailers()
        .into_iter()
        .map(|mut r| {
            r.name = format!("{} Outlet", r.name);
            r
        })
        .collect();
    sim.set_retailers(renamed);
    let s = subtotal(&sim, sim.customer_ids(), true);
    let c = one(&s, &sim, "active").await;
    assert!(c.platform.ends_with("_outlet"), "{}", c.platform);
    let id = c.provider_connection_id.as_deref().unwrap().to_owned();
    let out = s.act(&c, ActionKind::Disconnect).await.unwrap();
    assert!(out.ok, "{}", out.message);
    assert_eq!(sim.tokens_minted(), 1);
    assert_eq!(sim.connection(&id).unwrap().status, "disconnected");
    let got = out.connection.unwrap();
    assert_eq!(got.status, Status::Disconnected);
    assert_eq!(got.id, c.id);
    // The platform the poll resolved from the retailer's name is kept.
    assert_eq!(got.platform, c.platform);
    assert_eq!(got.accounts, c.accounts);
    // A second disconnect mints a fresh token (no cached one is reused).
    sim.set_status(&id, "active");
    s.act(&c, ActionKind::Disconnect).await.unwrap();
    assert_eq!(sim.tokens_minted(), 2);
}

async fn failing_patch(fault: Fault) -> (ActionError, SubtotalSim, String) {
    let sim = SubtotalSim::start_generated(1, 74).await.unwrap();
    let s = subtotal(&sim, sim.customer_ids(), true);
    let c = one(&s, &sim, "active").await;
    let id = c.provider_connection_id.as_deref().unwrap().to_owned();
    sim.faults()
        .push(FaultRule::new(fault).route(UPDATE_CONNECTION));
    let e = s.act(&c, ActionKind::Disconnect).await.unwrap_err();
    (e, sim, id)
}

fn assert_failed_at_patch(e: &ActionError, sim: &SubtotalSim, id: &str, kind: ErrorKind) {
    let pe = e.provider_error().expect("provider error");
    assert_eq!(pe.kind(), kind, "{e}");
    assert_eq!(pe.endpoint(), "PATCH /connections/{connection_id}");
    assert!(
        e.to_string()
            .contains("token was minted, then the PATCH failed"),
        "{e}"
    );
    assert_eq!(sim.tokens_minted(), 1);
    assert_eq!(
        sim.stats().requests(UPDATE_CONNECTION),
        1,
        "the PATCH is never retried"
    );
    assert_eq!(sim.connection(id).unwrap().status, "active");
}

#[tokio::test]
async fn a_5xx_on_the_patch_after_the_token_is_reported_at_that_step_and_not_retried() {
    let (e, sim, id) = failing_patch(Fault::status(500)).await;
    assert_failed_at_patch(&e, &sim, &id, ErrorKind::ServerError);
}

#[tokio::test]
async fn a_4xx_on_the_patch_after_the_token_is_reported_at_that_step() {
    let (e, sim, id) = failing_patch(Fault::status(422)).await;
    let pe = e.provider_error().unwrap();
    assert_eq!(pe.http_status(), Some(422));
    assert_eq!(pe.endpoint(), "PATCH /connections/{connection_id}");
    assert_eq!(sim.stats().requests(UPDATE_CONNECTION), 1);
    assert_eq!(sim.connection(&id).unwrap().status, "active");
}

#[tokio::test]
async fn a_timeout_on_the_patch_is_reported_at_that_step_and_not_retried() {
    let (e, sim, id) = failing_patch(Fault::Hang).await;
    assert_failed_at_patch(&e, &sim, &id, ErrorKind::Timeout);
}

#[tokio::test]
async fn a_failed_token_mint_sends_no_patch() {
    let sim = SubtotalSim::start_generated(1, 75).await.unwrap();
    let s = subtotal(&sim, sim.customer_ids(), true);
    let c = one(&s, &sim, "active").await;
    sim.faults()
        .push(FaultRule::new(Fault::status(403)).route(CREATE_TOKEN));
    let e = s.act(&c, ActionKind::Disconnect).await.unwrap_err();
    assert_eq!(
        e.provider_error().unwrap().endpoint(),
        "POST /connections/{connection_id}/token"
    );
    assert!(
        e.to_string().contains("minting the access token failed"),
        "{e}"
    );
    assert_eq!(sim.stats().requests(UPDATE_CONNECTION), 0);
}
