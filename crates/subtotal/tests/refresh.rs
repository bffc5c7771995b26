//! `Provider::refresh` against the testkit's Subtotal simulator over loopback HTTP.

use connhealth_core::{ErrorKind, Provider, RefreshHint, Secret, Status};
use connhealth_subtotal::Subtotal;
use connhealth_testkit::subtotal::{GET_CONNECTION, LIST_CONNECTIONS};
use connhealth_testkit::SubtotalSim;

fn subtotal(sim: &SubtotalSim, customers: Vec<String>) -> Subtotal {
    Subtotal::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new(sim.api_key()))
        .customers(customers)
        .resolve_retailer_names(false)
        .build()
        .unwrap()
}

#[tokio::test]
async fn refresh_of_one_connection_reads_only_that_connection() {
    let sim = SubtotalSim::start_generated(4, 31).await.unwrap();
    let customer = sim.customer_ids()[0].clone();
    let conn = sim.connections_of(&customer)[0].clone();
    assert!(sim.set_status(&conn.connection_id, "unauthenticated"));
    let s = subtotal(&sim, vec![customer.clone()]);

    let got = s
        .refresh(
            &customer,
            RefreshHint::Connection(conn.connection_id.clone()),
        )
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].provider_connection_id.as_deref(),
        Some(conn.connection_id.as_str())
    );
    assert_eq!(got[0].status, Status::ActionRequired);
    assert_eq!(sim.stats().requests(GET_CONNECTION), 1);
    assert_eq!(sim.stats().requests(LIST_CONNECTIONS), 0);
}

#[tokio::test]
async fn refresh_of_a_customer_lists_its_connections_even_unconfigured() {
    let sim = SubtotalSim::start_generated(4, 32).await.unwrap();
    let customer = sim.customer_ids()[1].clone();
    // Configured with no customers at all: a refresh still reads the one it is asked for.
    let s = subtotal(&sim, vec![]);
    let got = s.refresh(&customer, RefreshHint::Customer).await.unwrap();
    assert_eq!(got.len(), sim.connections_of(&customer).len());
    assert!(got.iter().all(|c| c.customer.id == customer));
    assert_eq!(sim.stats().requests(LIST_CONNECTIONS), 1);
}

#[tokio::test]
async fn refresh_of_an_unknown_connection_is_a_typed_error_naming_the_customer() {
    let sim = SubtotalSim::start_generated(2, 33).await.unwrap();
    let s = subtotal(&sim, vec![]);
    let e = s
        .refresh("cus_x", RefreshHint::Connection("01NOPE".into()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(e.customer_id(), Some("cus_x"));
}
