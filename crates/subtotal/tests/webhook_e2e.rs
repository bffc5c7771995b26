//! End to end over loopback: the Subtotal simulator emits a signed webhook to a small axum
//! receiver that verifies it through `Provider::verify_webhook`; the event is confirmed by a
//! targeted refresh.

use std::sync::Arc;

use connhealth_core::{Provider, RefreshHint, Secret, Status, WebhookEvent, WebhookEventType};
use connhealth_subtotal::Subtotal;
use connhealth_testkit::SubtotalSim;

async fn receiver(
    provider: Arc<dyn Provider>,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<WebhookEvent>) {
    connhealth_testkit::webhooks::receiver(Arc::new(move |headers: &_, body: &[u8]| match provider
        .verify_webhook(headers, body, chrono::Utc::now())
    {
        None => Err(404),
        Some(r) => r.map_err(|e| e.http_status()),
    }))
    .await
    .unwrap()
}

fn subtotal(sim: &SubtotalSim, secret: Option<&str>) -> Subtotal {
    let mut b = Subtotal::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new(sim.api_key()))
        .customers(sim.customer_ids())
        .resolve_retailer_names(false);
    if let Some(s) = secret {
        b = b.webhook_secret(Secret::new(s));
    }
    b.build().unwrap()
}

#[tokio::test]
async fn a_signed_unauthenticated_event_arrives_typed_and_is_confirmed_by_a_pull() {
    let sim = SubtotalSim::start_generated(3, 51).await.unwrap();
    let provider = Arc::new(subtotal(&sim, Some("whsec_subtotal_dest")));
    let (url, mut rx) = receiver(provider.clone()).await;
    let emitter = sim.emit_webhooks_to(&url, "whsec_subtotal_dest");

    let customer = sim.customer_ids()[0].clone();
    let conn = sim.connections_of(&customer)[0].clone();
    assert!(sim.set_status(&conn.connection_id, "unauthenticated"));
    emitter.flush().await;
    let d = emitter.deliveries();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].status, Some(202), "{d:?}");

    let ev = rx.recv().await.unwrap();
    assert_eq!(ev.provider, "subtotal");
    assert_eq!(ev.event_id, d[0].event_id);
    assert_eq!(ev.event_type, WebhookEventType::ConnectionUnauthenticated);
    assert_eq!(ev.customer_id.as_deref(), Some(customer.as_str()));
    assert_eq!(
        ev.connection_id.as_deref(),
        Some(conn.connection_id.as_str())
    );
    assert_eq!(ev.status, Some(Status::ActionRequired));

    let confirmed = provider
        .refresh(
            ev.refresh_target().unwrap(),
            RefreshHint::Connection(ev.connection_id.clone().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(confirmed[0].status, Status::ActionRequired);
}

#[tokio::test]
async fn a_webhook_signed_with_another_secret_is_refused_and_none_configured_is_404() {
    let sim = SubtotalSim::start_generated(2, 52).await.unwrap();
    let (url, mut rx) = receiver(Arc::new(subtotal(&sim, Some("the-real-secret")))).await;
    let emitter = sim.emit_webhooks_to(&url, "an-attackers-guess");
    let conn = sim.connection_ids()[0].clone();
    assert!(sim.set_status(&conn, "disconnected"));
    emitter.flush().await;
    assert_eq!(emitter.deliveries()[0].status, Some(401));
    assert!(rx.try_recv().is_err(), "nothing accepted");

    let (url, _rx) = receiver(Arc::new(subtotal(&sim, None))).await;
    let emitter = sim.emit_webhooks_to(&url, "the-real-secret");
    assert!(sim.set_status(&conn, "active"));
    emitter.flush().await;
    assert_eq!(emitter.deliveries()[0].status, Some(404));
}
