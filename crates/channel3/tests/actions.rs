//! The `connect_link` action against the testkit's Channel3 simulator over loopback HTTP.

use connhealth_channel3::Channel3;
use connhealth_core::{ActionError, ActionKind, ErrorKind, Provider, Secret, Status};
use connhealth_testkit::channel3::CREATE_SESSION;
use connhealth_testkit::data::CHANNEL3_REDIRECT_PREFIX;
use connhealth_testkit::{Channel3Sim, Fault, FaultRule};

fn redirect() -> String {
    format!("{CHANNEL3_REDIRECT_PREFIX}callback")
}

fn c3(sim: &Channel3Sim, redirect: Option<String>) -> Channel3 {
    let mut b = Channel3::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new(sim.api_key()));
    if let Some(r) = redirect {
        b = b.connect_redirect_uri(r);
    }
    b.build().unwrap()
}

#[tokio::test]
async fn connect_link_mints_a_session_for_the_platform_and_says_it_is_single_use() {
    let sim = Channel3Sim::start_generated(4, 51).await.unwrap();
    let p = c3(&sim, Some(redirect()));
    let fetched = p.fetch().await;
    let conn = fetched
        .connections
        .iter()
        .find(|c| c.status == Status::NotConnected)
        .expect("a generated merchant has a platform it never connected");
    let healthy = fetched
        .connections
        .iter()
        .find(|c| c.status == Status::Healthy)
        .expect("and a healthy one");
    assert!(
        p.actions(healthy).is_empty(),
        "nothing to do for a healthy one"
    );
    let listed = p.actions(conn);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].kind, ActionKind::ConnectLink);
    assert!(!listed[0].destructive);

    let out = p.act(conn, ActionKind::ConnectLink).await.unwrap();
    assert!(out.ok);
    let sessions = sim.sessions();
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s.customer_id, conn.customer.id);
    assert_eq!(s.platform.as_deref(), Some(conn.platform.as_str()));
    assert_eq!(s.redirect_uri, redirect());
    assert_eq!(out.url.as_deref(), Some(s.url.as_str()));
    assert!(out.message.contains("single-use"), "{}", out.message);
    assert!(out.message.contains("30 minutes"), "{}", out.message);
    // The expiry the answer gave, not a guess.
    let at = chrono::DateTime::parse_from_rfc3339(&s.expires_at).unwrap();
    let shown = at
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(out.message.contains(&shown), "{} / {shown}", out.message);
    assert!(!out.message.contains(&s.token), "no token in the message");
    assert!(!format!("{out:?}").contains(&s.token));
}

#[tokio::test]
async fn without_a_redirect_uri_or_for_a_healthy_connection_nothing_is_sent() {
    let sim = Channel3Sim::start_generated(3, 52).await.unwrap();
    let p = c3(&sim, None);
    let fetched = p.fetch().await;
    let conn = fetched
        .connections
        .iter()
        .find(|c| c.status == Status::NotConnected)
        .unwrap();
    assert!(p.actions(conn).is_empty());
    let e = p.act(conn, ActionKind::ConnectLink).await.unwrap_err();
    assert!(matches!(e, ActionError::Unsupported { .. }), "{e}");
    let e = c3(&sim, Some(redirect()))
        .act(conn, ActionKind::Disconnect)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ActionError::Unsupported {
                kind: ActionKind::Disconnect,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(sim.stats().requests(CREATE_SESSION), 0);
}

#[tokio::test]
async fn a_session_answer_without_url_is_a_typed_error_naming_the_endpoint() {
    let sim = Channel3Sim::start_generated(3, 53).await.unwrap();
    let p = c3(&sim, Some(redirect()));
    let fetched = p.fetch().await;
    let conn = fetched
        .connections
        .iter()
        .find(|c| c.status == Status::NotConnected)
        .unwrap();
    sim.faults().push(
        FaultRule::new(Fault::Status {
            status: 200,
            retry_after: None,
            body: Some(r#"{"token":"cs_x","expires_at":"2030-01-01T00:00:00Z"}"#.into()),
        })
        .route(CREATE_SESSION),
    );
    let e = p.act(conn, ActionKind::ConnectLink).await.unwrap_err();
    let pe = e.provider_error().expect("a provider error");
    assert_eq!(pe.kind(), ErrorKind::Decode);
    assert_eq!(
        pe.endpoint(),
        "POST /v0/partner/merchants/{customer_id}/connections/sessions"
    );
    assert_eq!(pe.provider(), "channel3");
    assert!(e.to_string().contains("url"), "{e}");
    assert!(!e.to_string().contains("cs_x"), "no token in errors: {e}");
}

#[test]
fn a_redirect_uri_that_is_not_a_url_is_a_config_error() {
    let e = Channel3::builder()
        .api_key(Secret::new("k"))
        .connect_redirect_uri("not a url")
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("connect_redirect_uri"), "{e}");
}
