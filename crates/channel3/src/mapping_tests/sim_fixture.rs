//! The simulator's documented customer, fetched over loopback HTTP, maps exactly like the
//! documented fixture mapped offline (moved here from `tests/sim.rs` when `map` became private).

use connhealth_core::{Outcome, Provider, Secret};
use connhealth_testkit::{data, Channel3Sim};

use crate::map::map_connections;
use crate::wire::PartnerConnectionsResponse;
use crate::Channel3;

#[tokio::test]
async fn the_documented_customer_maps_like_the_fixture() {
    let sim = Channel3Sim::start_generated(1, 1).await.unwrap();
    let id = data::CHANNEL3_DOC_EXAMPLE_ID;
    let p = Channel3::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new(sim.api_key()))
        .customers([id])
        .build()
        .unwrap();
    let fetched = Provider::fetch(&p).await;
    assert_eq!(fetched.outcome(), Outcome::Ok);
    let fixture: PartnerConnectionsResponse = serde_json::from_str(include_str!(
        "../../tests/fixtures/list_connections_doc_example.json"
    ))
    .unwrap();
    let observed = fetched.connections[0].observed_at.get();
    let expected = map_connections(
        "channel3",
        &connhealth_core::Customer::new(id),
        &fixture,
        observed,
    );
    assert_eq!(fetched.connections, expected.connections);
}
