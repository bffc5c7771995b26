//! End to end over loopback: the Violet simulator emits a signed webhook to a small receiver
//! that verifies it through `Provider::verify_webhook`; the event triggers one targeted pull.

use std::sync::Arc;

use connhealth_core::{Provider, RefreshHint, Secret, WebhookEvent, WebhookEventType};
use connhealth_testkit::violet::CONNECTION_HEALTH_MERCHANT;
use connhealth_testkit::VioletSim;
use connhealth_violet::Violet;

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

fn violet(sim: &VioletSim) -> Violet {
    Violet::builder()
        .name("violet-live")
        .base_url(sim.base_url())
        .app_id(sim.app_id())
        .app_secret(Secret::new(sim.app_secret()))
        .username(sim.username())
        .password(Secret::new(sim.password()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn merchant_disconnected_arrives_typed_and_triggers_one_targeted_pull() {
    let sim = VioletSim::start_generated(4, 61).await.unwrap();
    let provider = Arc::new(violet(&sim));
    let (url, mut rx) = receiver(provider.clone()).await;
    // Violet signs with the app secret, which is the webhook secret by default.
    let emitter = sim.emit_webhooks_to(&url, sim.app_secret());

    let id = sim.merchant_ids()[2];
    assert!(sim.remove_merchant(id));
    emitter.flush().await;
    assert_eq!(emitter.deliveries()[0].status, Some(202));

    let ev = rx.recv().await.unwrap();
    assert_eq!(ev.provider, "violet-live");
    assert_eq!(ev.event_type, WebhookEventType::MerchantDisconnected);
    assert_eq!(ev.event_id, emitter.deliveries()[0].event_id);
    let target = ev.refresh_target().unwrap().to_owned();
    assert_eq!(target, id.to_string());

    let before = sim.stats().requests(CONNECTION_HEALTH_MERCHANT);
    let e = provider
        .refresh(&target, RefreshHint::Customer)
        .await
        .unwrap_err();
    // The merchant is gone: the pull says so, typed, naming the merchant.
    assert_eq!(e.kind(), connhealth_core::ErrorKind::NotFound, "{e}");
    assert_eq!(sim.stats().requests(CONNECTION_HEALTH_MERCHANT), before + 1);
    assert_eq!(sim.health_refreshes(), 1, "one recompute of that merchant");
}

#[tokio::test]
async fn status_and_check_changes_emit_the_matching_topics() {
    let sim = VioletSim::start_generated(3, 62).await.unwrap();
    let provider = Arc::new(violet(&sim));
    let (url, mut rx) = receiver(provider).await;
    let emitter = sim.emit_webhooks_to(&url, sim.app_secret());
    let id = sim.merchant_ids()[0];
    assert!(sim.set_merchant_status(id, "DISABLED"));
    assert!(sim.set_check_status(id, "sync_status", "FAILED"));
    assert!(sim.set_check_status(id, "payout_account", "NEEDS_ATTENTION"));
    emitter.flush().await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(rx.recv().await.unwrap().event_type);
    }
    assert_eq!(
        got,
        [
            WebhookEventType::MerchantDisabled,
            WebhookEventType::ProductSyncFailed,
            WebhookEventType::MerchantNeedsAttention
        ]
    );

    // Signed with the wrong secret: refused, nothing accepted.
    let emitter = sim.emit_webhooks_to(&url, "not-the-app-secret");
    assert!(sim.set_merchant_status(id, "ACTIVE"));
    emitter.flush().await;
    assert_eq!(emitter.deliveries()[0].status, Some(401));
    assert!(rx.try_recv().is_err());
}
