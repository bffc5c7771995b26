//! `Provider::refresh` against the testkit's Channel3 simulator over loopback HTTP.

use connhealth_channel3::Channel3;
use connhealth_core::{ErrorKind, Provider, RefreshHint, Secret};
use connhealth_testkit::channel3::{LIST_CONNECTIONS, LIST_MERCHANTS};
use connhealth_testkit::Channel3Sim;

#[tokio::test]
async fn refresh_reads_a_customer_that_is_not_in_the_configured_list() {
    let sim = Channel3Sim::start_generated(5, 41).await.unwrap();
    let ids = sim.customer_ids();
    let (listed, unlisted) = (ids[0].clone(), ids[3].clone());
    let c3 = Channel3::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new(sim.api_key()))
        .customers([listed])
        .build()
        .unwrap();

    let got = c3.refresh(&unlisted, RefreshHint::Customer).await.unwrap();
    let want = sim.connections(&unlisted).unwrap().len();
    assert!(want > 0, "the generated customer has connections");
    assert_eq!(got.len(), want);
    assert!(got.iter().all(|c| c.customer.id == unlisted));
    assert_eq!(sim.stats().requests(LIST_CONNECTIONS), 1);
    assert_eq!(sim.stats().requests(LIST_MERCHANTS), 0, "no discovery");
}

#[tokio::test]
async fn refresh_of_an_unknown_customer_is_a_typed_error() {
    let sim = Channel3Sim::start_generated(2, 42).await.unwrap();
    let c3 = Channel3::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new(sim.api_key()))
        .build()
        .unwrap();
    let e = c3
        .refresh("cus_nobody", RefreshHint::Customer)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(e.customer_id(), Some("cus_nobody"));
}
