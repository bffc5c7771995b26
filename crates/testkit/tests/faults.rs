//! Fault injection and request statistics, over real HTTP on loopback.

use std::time::Duration;

use connhealth_testkit::channel3::{LIST_CONNECTIONS, LIST_MERCHANTS};
use connhealth_testkit::{Channel3Sim, Fault, FaultRule, SubtotalSim, VioletSim};
use serde_json::Value;

const DOC: &str = "/v0/partner/merchants/cus_doc_example/connections";

async fn get(sim: &Channel3Sim, client: &reqwest::Client, path: &str) -> reqwest::Response {
    client
        .get(format!("{}{}", sim.base_url(), path))
        .header("x-api-key", sim.api_key())
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn status_429_with_retry_after_fires_n_times_then_stops() {
    let sim = Channel3Sim::start_generated(3, 1).await.expect("start");
    let c = reqwest::Client::new();
    sim.faults().push(FaultRule {
        route: Some(LIST_CONNECTIONS.into()),
        path_contains: None,
        fault: Fault::Status {
            status: 429,
            retry_after: Some("2".into()),
            body: None,
        },
        times: Some(2),
    });
    for _ in 0..2 {
        let r = get(&sim, &c, DOC).await;
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(
            r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
            Some("2")
        );
        let body: Value = r.json().await.expect("json error body");
        assert_eq!(body["detail"], "Too Many Requests");
    }
    let r = get(&sim, &c, DOC).await;
    assert_eq!(r.status().as_u16(), 200);
    // Other routes were never affected.
    sim.faults().push(
        FaultRule::new(Fault::status(503))
            .route(LIST_CONNECTIONS)
            .times(1),
    );
    assert_eq!(
        get(&sim, &c, "/v0/partner/merchants")
            .await
            .status()
            .as_u16(),
        200
    );
    assert_eq!(get(&sim, &c, DOC).await.status().as_u16(), 503);
    assert_eq!(get(&sim, &c, DOC).await.status().as_u16(), 200);
    assert!(sim.faults().rules().is_empty());
    assert_eq!(sim.stats().requests(LIST_CONNECTIONS), 5);
}

#[tokio::test]
async fn status_with_custom_body_and_clear() {
    let sim = SubtotalSim::start_generated(2, 1).await.expect("start");
    sim.faults().on(
        connhealth_testkit::subtotal::RETAILERS,
        Fault::Status {
            status: 502,
            retry_after: None,
            body: Some("<html>bad gateway</html>".into()),
        },
    );
    let c = reqwest::Client::new();
    let url = format!("{}/retailers", sim.base_url());
    for _ in 0..3 {
        let r = c
            .get(&url)
            .header("x-api-key", sim.api_key())
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 502);
        assert!(r.headers().get("retry-after").is_none());
        assert_eq!(r.text().await.expect("text"), "<html>bad gateway</html>");
    }
    sim.faults().clear();
    let r = c
        .get(&url)
        .header("x-api-key", sim.api_key())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test(start_paused = true)]
async fn hang_times_out_on_the_client() {
    let sim = Channel3Sim::start_generated(3, 1).await.expect("start");
    sim.faults().on(LIST_CONNECTIONS, Fault::Hang);
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let started = tokio::time::Instant::now();
    let err = c
        .get(format!("{}{DOC}", sim.base_url()))
        .header("x-api-key", sim.api_key())
        .send()
        .await
        .expect_err("must time out");
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() >= Duration::from_secs(30));
    assert_eq!(sim.stats().requests(LIST_CONNECTIONS), 1);
    // Shutting down answers the hung request and stops the server.
    sim.shutdown().await;
}

#[tokio::test]
async fn drop_mid_body_is_a_body_error() {
    let sim = Channel3Sim::start_generated(3, 1).await.expect("start");
    sim.faults().on(LIST_CONNECTIONS, Fault::DropMidBody);
    let c = reqwest::Client::new();
    let r = get(&sim, &c, DOC).await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.bytes().await.is_err());
}

#[tokio::test]
async fn malformed_and_truncated_bodies_fail_to_parse() {
    let sim = Channel3Sim::start_generated(3, 1).await.expect("start");
    let c = reqwest::Client::new();
    let full = get(&sim, &c, DOC).await.bytes().await.expect("bytes");

    sim.faults()
        .push(FaultRule::new(Fault::MalformedJson).times(1));
    let r = get(&sim, &c, DOC).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert!(r.json::<Value>().await.is_err());

    sim.faults()
        .push(FaultRule::new(Fault::TruncatedBody).times(1));
    let r = get(&sim, &c, DOC).await;
    assert_eq!(r.status().as_u16(), 200);
    let body = r.bytes().await.expect("complete HTTP body");
    assert_eq!(body.len(), full.len() / 2);
    assert_eq!(&full[..body.len()], &body[..]);
    assert!(serde_json::from_slice::<Value>(&body).is_err());
}

#[tokio::test]
async fn oversized_body_is_valid_json_of_at_least_n_bytes() {
    let sim = Channel3Sim::start_generated(3, 1).await.expect("start");
    let c = reqwest::Client::new();
    const N: usize = 3 * 1024 * 1024 + 17;
    sim.faults().on(LIST_CONNECTIONS, Fault::OversizedBody(N));
    let body = get(&sim, &c, DOC).await.bytes().await.expect("bytes");
    assert!(body.len() >= N, "{} < {N}", body.len());
    let v: Value = serde_json::from_slice(&body).expect("valid JSON");
    assert_eq!(v["connections"].as_array().map(Vec::len), Some(3));

    // A top-level array (Violet's report) stays a valid array.
    let violet = VioletSim::start_generated(5, 1).await.expect("violet");
    violet.faults().on(
        connhealth_testkit::violet::CONNECTION_HEALTH,
        Fault::OversizedBody(100_000),
    );
    let login: Value = c
        .post(format!("{}/login", violet.base_url()))
        .header("X-Violet-App-Id", violet.app_id().to_string())
        .header("X-Violet-App-Secret", violet.app_secret())
        .json(&serde_json::json!({"username": violet.username(), "password": violet.password()}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let body = c
        .get(format!(
            "{}/operations/connection_health?app_id={}",
            violet.base_url(),
            violet.app_id()
        ))
        .header("X-Violet-App-Id", violet.app_id().to_string())
        .header("X-Violet-App-Secret", violet.app_secret())
        .header(
            "X-Violet-Token",
            login["token"].as_str().unwrap_or_default(),
        )
        .send()
        .await
        .expect("report")
        .bytes()
        .await
        .expect("bytes");
    assert!(body.len() >= 100_000);
    let v: Value = serde_json::from_slice(&body).expect("valid JSON");
    assert_eq!(v.as_array().map(Vec::len), Some(4));
}

#[tokio::test]
async fn shape_faults_rewrite_the_real_response() {
    let sim = Channel3Sim::start_generated(3, 1).await.expect("start");
    let c = reqwest::Client::new();

    sim.faults()
        .push(FaultRule::new(Fault::UnknownEnums).times(1));
    let v: Value = get(&sim, &c, DOC).await.json().await.expect("json");
    let rows = v["connections"].as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["status"] == "quantum_entangled"));
    assert_eq!(rows[1]["sync"]["state"], "quantum_entangled");
    assert_eq!(rows[1]["platform"], "google");

    sim.faults()
        .push(FaultRule::new(Fault::MissingOptionals).times(1));
    let v: Value = get(&sim, &c, DOC).await.json().await.expect("json");
    let row = &v["connections"][1];
    assert!(row.get("id").is_none() && row.get("sync").is_none() && row.get("accounts").is_none());
    assert_eq!(row["status"], "active");

    sim.faults()
        .push(FaultRule::new(Fault::EmptyArrays).times(1));
    let v: Value = get(&sim, &c, DOC).await.json().await.expect("json");
    assert_eq!(v, serde_json::json!({"connections": []}));

    sim.faults()
        .push(FaultRule::new(Fault::DuplicateIds).times(1));
    let v: Value = get(&sim, &c, DOC).await.json().await.expect("json");
    let rows = v["connections"].as_array().expect("rows");
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[1]["id"], rows[4]["id"]);

    let v: Value = get(&sim, &c, DOC).await.json().await.expect("json");
    assert_eq!(v["connections"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn path_contains_targets_one_customer() {
    let sim = Channel3Sim::start_generated(3, 1).await.expect("start");
    let other = sim.customer_ids()[1].clone();
    sim.faults()
        .push(FaultRule::new(Fault::status(500)).path_contains("cus_doc_example"));
    let c = reqwest::Client::new();
    assert_eq!(get(&sim, &c, DOC).await.status().as_u16(), 500);
    let r = get(
        &sim,
        &c,
        &format!("/v0/partner/merchants/{other}/connections"),
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        get(&sim, &c, "/v0/partner/merchants")
            .await
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test(start_paused = true)]
async fn latency_uses_tokio_time_and_composes_with_a_status() {
    let sim = Channel3Sim::start_generated(3, 1).await.expect("start");
    sim.faults()
        .on(LIST_CONNECTIONS, Fault::Latency(Duration::from_secs(10)));
    sim.faults().push(
        FaultRule::new(Fault::LatencyBetween(
            Duration::from_secs(1),
            Duration::from_secs(2),
        ))
        .route(LIST_CONNECTIONS),
    );
    sim.faults().push(
        FaultRule::new(Fault::status(503))
            .route(LIST_CONNECTIONS)
            .times(1),
    );
    let c = reqwest::Client::new();
    let wall = std::time::Instant::now();
    let started = tokio::time::Instant::now();
    assert_eq!(get(&sim, &c, DOC).await.status().as_u16(), 503);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(11), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(13), "{elapsed:?}");
    let started = tokio::time::Instant::now();
    assert_eq!(get(&sim, &c, DOC).await.status().as_u16(), 200);
    assert!(started.elapsed() >= Duration::from_secs(11));
    // 22 s of simulated latency took far less real time.
    assert!(wall.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_sees_concurrency() {
    let sim = Channel3Sim::start_generated(3, 1).await.expect("start");
    sim.faults()
        .on(LIST_CONNECTIONS, Fault::Latency(Duration::from_millis(50)));
    let c = reqwest::Client::new();
    let url = format!("{}{DOC}", sim.base_url());
    let key = sim.api_key().to_string();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            let url = url.clone();
            let key = key.clone();
            tokio::spawn(async move {
                c.get(url)
                    .header("x-api-key", key)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("request"), 200);
    }
    assert_eq!(sim.stats().requests(LIST_CONNECTIONS), 20);
    let peak = sim.stats().max_in_flight(LIST_CONNECTIONS);
    assert!(peak > 1, "peak {peak}");
    assert!(peak <= 20);
    assert_eq!(sim.stats().in_flight(LIST_CONNECTIONS), 0);
    assert_eq!(sim.stats().max_in_flight(LIST_MERCHANTS), 0);
    // Concurrent requests needed several connections.
    assert!(sim.stats().tcp_connections() > 1);
}

#[tokio::test]
async fn stats_count_requests_raw_paths_and_connections() {
    let sim = Channel3Sim::start_generated(3, 1).await.expect("start");
    // One keep-alive client: sequential requests reuse one TCP connection.
    let c = reqwest::Client::new();
    get(&sim, &c, "/v0/partner/merchants?page=1&size=2").await;
    get(&sim, &c, DOC).await;
    get(&sim, &c, "/no/such/route").await;
    assert_eq!(sim.stats().requests(LIST_MERCHANTS), 1);
    assert_eq!(sim.stats().requests(LIST_CONNECTIONS), 1);
    assert_eq!(
        sim.stats().requests(connhealth_testkit::faults::UNMATCHED),
        1
    );
    assert_eq!(sim.stats().total_requests(), 3);
    assert_eq!(
        sim.stats().raw_paths(),
        vec![
            "/v0/partner/merchants?page=1&size=2".to_string(),
            DOC.to_string(),
            "/no/such/route".to_string()
        ]
    );
    assert_eq!(sim.stats().tcp_connections(), 1);

    // A client without connection reuse opens one connection per request.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    for _ in 0..3 {
        get(&sim, &fresh, DOC).await;
    }
    assert_eq!(sim.stats().tcp_connections(), 4);

    sim.stats().reset();
    assert_eq!(sim.stats().total_requests(), 0);
    assert_eq!(sim.stats().requests(LIST_CONNECTIONS), 0);
    assert!(sim.stats().raw_paths().is_empty());
    assert_eq!(sim.stats().tcp_connections(), 0);
}

#[tokio::test]
async fn dropping_a_sim_stops_its_server() {
    let sim = Channel3Sim::start_generated(1, 1).await.expect("start");
    let addr = sim.addr();
    drop(sim);
    // Give the server task a moment to observe the shutdown signal.
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("server still accepting after drop");
}

#[tokio::test]
async fn fault_specs_parse() {
    assert_eq!(
        "status:429:5".parse::<Fault>(),
        Ok(Fault::too_many_requests(5))
    );
    assert_eq!("drop_mid_body".parse::<Fault>(), Ok(Fault::DropMidBody));
    assert!("oversized-body".parse::<Fault>().is_err());
}
