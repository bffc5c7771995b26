//! Security: secrets and personal data never leave through `Debug`, errors, logs or reports;
//! credentials never follow a redirect to another origin; plain `http://` only on loopback; ids
//! stay inside their path segment or query value; oversized headers and bodies are typed
//! errors. Over real HTTP on loopback, against the testkit simulators and a raw TCP server
//! (for redirects and malformed heads).
//!
//! (`serve` off loopback without a token is refused by `Server::new`: tested in crates/server.)

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use connhealth::channel3::Channel3;
use connhealth::http::{HeaderName, HttpClient, HttpConfig, Method, RetryPolicy};
use connhealth::simulators;
use connhealth::subtotal::Subtotal;
use connhealth::violet::Violet;
use connhealth::{Aggregator, Error, ErrorKind, HealthReport, Outcome, Provider, Secret, Status};
use connhealth_testkit::data::{Channel3Customer, Channel3Sync, SubtotalConnection};
use connhealth_testkit::{channel3 as c3sim, subtotal as stsim, violet as vsim};
use connhealth_testkit::{Fault, FaultRule, Fleet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The header of every JWT the simulators mint (`{"alg":"HS256","typ":"JWT"}`): any access,
/// refresh or connection token that leaked would carry it.
const JWT_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
const WRONG_C3_KEY: &str = "c3_sk_wrong_5f2a9c11d0";
const WRONG_ST_KEY: &str = "st_wrong_77aa01bc9e";
const WRONG_PASSWORD: &str = "wrong-violet-pass-4411";
const LONG: Duration = Duration::from_secs(3600);

// ---- log capture ------------------------------------------------------------------------

#[derive(Clone)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One global TRACE subscriber (and the `log` bridge, for reqwest/hyper) writing into a buffer,
/// installed once for this test binary; every test's logs land in it.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        use tracing_subscriber::util::SubscriberInitExt as _;
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Buf(buf.clone());
        tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
            .try_init()
            .expect("the log capture is the only global subscriber");
        buf
    })
}

fn captured() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

// ---- helpers ----------------------------------------------------------------------------

/// Every credential and personal value the fleet knows, with what it is.
fn secrets(fleet: &Fleet) -> Vec<(String, String)> {
    let mut s = vec![
        (
            "channel3 api key".into(),
            fleet.channel3.api_key().to_owned(),
        ),
        (
            "subtotal api key".into(),
            fleet.subtotal.api_key().to_owned(),
        ),
        (
            "violet app secret".into(),
            fleet.violet.app_secret().to_owned(),
        ),
        ("violet password".into(), fleet.violet.password().to_owned()),
        ("violet username".into(), fleet.violet.username().to_owned()),
        ("a sim-minted token".into(), JWT_HEADER.to_owned()),
        ("a wrong channel3 key".into(), WRONG_C3_KEY.to_owned()),
        ("a wrong subtotal key".into(), WRONG_ST_KEY.to_owned()),
        ("a wrong violet password".into(), WRONG_PASSWORD.to_owned()),
    ];
    // Personal data: customers' e-mails and mobiles (reports leave them out by default).
    for c in fleet.subtotal.customer_ids() {
        for conn in fleet.subtotal.connections_of(&c) {
            for pd in [conn.email, conn.mobile].into_iter().flatten() {
                s.push(("a subtotal customer's e-mail or mobile".into(), pd));
            }
        }
    }
    for id in fleet.violet.merchant_ids() {
        if let Some(email) = fleet.violet.merchant(id).and_then(|m| {
            m.get("merchant_email")
                .and_then(|e| e.as_str())
                .map(str::to_owned)
        }) {
            if email.contains('@') {
                s.push(("a violet merchant's e-mail".into(), email));
            }
        }
    }
    s
}

fn assert_clean(what: &str, text: &str, secrets: &[(String, String)]) {
    for (name, value) in secrets {
        assert!(
            !text.contains(value.as_str()),
            "{name} ({value}) leaked into {what}:\n{}",
            excerpt(text, value)
        );
    }
}

fn excerpt(text: &str, needle: &str) -> String {
    let at = text.find(needle).unwrap_or(0);
    let start = text[..at]
        .char_indices()
        .rev()
        .nth(300)
        .map_or(0, |(i, _)| i);
    text[start..].chars().take(700).collect()
}

fn c3(fleet: &Fleet, key: &str) -> Channel3 {
    Channel3::builder()
        .base_url(fleet.channel3.base_url())
        .api_key(Secret::new(key))
        .customers(fleet.channel3.customer_ids())
        .request_timeout(LONG)
        .connect_timeout(LONG)
        .build()
        .unwrap()
}

fn violet(fleet: &Fleet, password: &str) -> Violet {
    Violet::builder()
        .base_url(fleet.violet.base_url())
        .app_id(fleet.violet.app_id())
        .app_secret(Secret::new(fleet.violet.app_secret()))
        .username(fleet.violet.username())
        .password(Secret::new(password))
        .exclude_public(false)
        .without_timers()
        .build()
        .unwrap()
}

fn subtotal(fleet: &Fleet, key: &str) -> Subtotal {
    Subtotal::builder()
        .base_url(fleet.subtotal.base_url())
        .api_key(Secret::new(key))
        .customers(fleet.subtotal.customer_ids())
        .without_timers()
        .build()
        .unwrap()
}

fn all_error_texts(report: &HealthReport) -> Vec<String> {
    report
        .providers
        .iter()
        .flat_map(|p| p.errors.iter())
        .map(|e| format!("{} {:?}", e.message, e))
        .collect()
}

fn error_texts(e: &Error) -> String {
    format!("{e} | {e:?} | {:?}", e.to_report())
}

// ---- secrets and personal data -----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn no_secret_or_personal_data_in_debug_errors_logs_or_reports() {
    let _ = logs();
    let fleet = Fleet::start(6, 31).await.unwrap();
    let secrets = secrets(&fleet);
    let mut texts: Vec<(String, String)> = Vec::new();

    // Debug of every builder, provider and client, before and after use.
    let c3_builder = simulators::channel3(&fleet.channel3);
    let v_builder = simulators::violet(&fleet.violet);
    let st_builder = simulators::subtotal(&fleet.subtotal);
    texts.push((
        "builder Debug".into(),
        format!("{c3_builder:?} {v_builder:?} {st_builder:?}"),
    ));

    let providers = (
        c3(&fleet, fleet.channel3.api_key()),
        violet(&fleet, fleet.violet.password()),
        subtotal(&fleet, fleet.subtotal.api_key()),
    );
    let debug_all = |p: &(Channel3, Violet, Subtotal)| {
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            p.0,
            p.1,
            p.2,
            p.0.client(),
            p.1.client(),
            p.2.client(),
            p.0.client().http(),
            p.2.client().http()
        )
    };
    texts.push(("provider Debug (fresh)".into(), debug_all(&providers)));

    // A full, healthy aggregation.
    let agg = Aggregator::new()
        .with_provider(providers.0.clone())
        .with_provider(c3(&fleet, fleet.channel3.api_key()).clone())
        .with_timeout(Duration::from_secs(60));
    texts.push(("Aggregator Debug".into(), format!("{agg:?}")));
    let ok = Aggregator::new()
        .with_provider(c3(&fleet, fleet.channel3.api_key()))
        .with_provider(violet(&fleet, fleet.violet.password()))
        .with_provider(subtotal(&fleet, fleet.subtotal.api_key()))
        .run()
        .await;
    assert!(
        ok.providers.iter().all(|p| p.outcome == Outcome::Ok),
        "{:?}",
        ok.providers
    );
    texts.push((
        "a healthy report".into(),
        serde_json::to_string(&ok).unwrap(),
    ));
    texts.push((
        "a healthy report (pretty)".into(),
        serde_json::to_string_pretty(&ok).unwrap(),
    ));

    // Tokens held: Violet logged in, Subtotal minted a connection token.
    providers.1.client().authenticate().await.unwrap();
    let st_conn = fleet
        .subtotal
        .customer_ids()
        .iter()
        .flat_map(|c| fleet.subtotal.connections_of(c))
        .next()
        .unwrap()
        .connection_id;
    let updated = providers.2.client().disconnect(&st_conn).await.unwrap();
    texts.push(("a PATCH answer's Debug".into(), format!("{updated:?}")));
    texts.push(("provider Debug (tokens held)".into(), debug_all(&providers)));

    // A token refused (401) and renewed: Violet's token expired, Subtotal's revoked.
    fleet.violet.expire_all_tokens();
    fleet.subtotal.revoke_tokens();
    let fetched = providers.1.fetch().await;
    assert_eq!(fetched.outcome(), Outcome::Ok, "{:?}", fetched.errors);
    providers.2.client().disconnect(&st_conn).await.unwrap();

    // Providers echoing the credential in their error bodies.
    let echo = |secret: &str| Fault::Status {
        status: 500,
        retry_after: None,
        body: Some(format!(
            r#"{{"detail":"upstream rejected key {secret} for this request"}}"#
        )),
    };
    fleet
        .channel3
        .faults()
        .push(FaultRule::new(echo(fleet.channel3.api_key())).route(c3sim::LIST_CONNECTIONS));
    fleet
        .subtotal
        .faults()
        .push(FaultRule::new(echo(fleet.subtotal.api_key())).route(stsim::LIST_CONNECTIONS));
    fleet.violet.faults().push(
        FaultRule::new(Fault::Status {
            status: 500,
            retry_after: None,
            body: Some(format!(
                r#"{{"status":500,"message":"app secret {} was refused","error_code":9}}"#,
                fleet.violet.app_secret()
            )),
        })
        .route(vsim::CONNECTION_HEALTH),
    );
    let echoed = Aggregator::new()
        .with_provider(c3(&fleet, fleet.channel3.api_key()))
        .with_provider(violet(&fleet, fleet.violet.password()))
        .with_provider(subtotal(&fleet, fleet.subtotal.api_key()))
        .run()
        .await;
    assert!(
        echoed
            .providers
            .iter()
            .all(|p| p.outcome == Outcome::Failed),
        "{:?}",
        echoed.providers
    );
    assert!(
        all_error_texts(&echoed)
            .iter()
            .any(|t| t.contains("[redacted]")),
        "the echoed key is replaced"
    );
    texts.push((
        "a report of echoed keys".into(),
        serde_json::to_string(&echoed).unwrap(),
    ));
    texts.extend(
        all_error_texts(&echoed)
            .into_iter()
            .map(|t| ("an echoed-key error".into(), t)),
    );
    let e = providers
        .0
        .client()
        .list_connections(&fleet.channel3.customer_ids()[0])
        .await
        .unwrap_err();
    texts.push(("a channel3 client error".into(), error_texts(&e)));
    fleet.clear_faults();

    // The Violet login answering 500 with the credentials echoed back.
    fleet.violet.faults().push(
        FaultRule::new(Fault::Status {
            status: 500,
            retry_after: None,
            body: Some(format!(
                r#"{{"status":500,"message":"login {} / {} / {} failed","error_code":9}}"#,
                fleet.violet.username(),
                fleet.violet.password(),
                fleet.violet.app_secret()
            )),
        })
        .route(vsim::LOGIN),
    );
    let e = violet(&fleet, fleet.violet.password())
        .client()
        .authenticate()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ServerError);
    texts.push(("a violet login 500 error".into(), error_texts(&e)));
    fleet.clear_faults();

    // Wrong credentials everywhere: refused, reported, never printed.
    let refused = Aggregator::new()
        .with_provider(c3(&fleet, WRONG_C3_KEY))
        .with_provider(violet(&fleet, WRONG_PASSWORD))
        .with_provider(subtotal(&fleet, WRONG_ST_KEY))
        .run()
        .await;
    let kinds: Vec<ErrorKind> = refused
        .providers
        .iter()
        .flat_map(|p| p.errors.iter().map(|e| e.kind))
        .collect();
    assert!(
        kinds.contains(&ErrorKind::Forbidden) && kinds.contains(&ErrorKind::Authentication),
        "{kinds:?}"
    );
    assert_eq!(refused.overall, Status::Unknown);
    texts.push((
        "a report of refused credentials".into(),
        serde_json::to_string(&refused).unwrap(),
    ));
    texts.extend(
        all_error_texts(&refused)
            .into_iter()
            .map(|t| ("a refused-credentials error".into(), t)),
    );
    let e = violet(&fleet, WRONG_PASSWORD)
        .client()
        .authenticate()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Authentication);
    texts.push(("a violet login refusal".into(), error_texts(&e)));
    let e = subtotal(&fleet, WRONG_ST_KEY)
        .client()
        .disconnect(&st_conn)
        .await
        .unwrap_err();
    texts.push(("a subtotal PATCH refusal".into(), error_texts(&e)));

    // A failing PATCH (500): not retried, typed, clean.
    fleet
        .subtotal
        .faults()
        .on(stsim::UPDATE_CONNECTION, Fault::status(500));
    let e = providers.2.client().disconnect(&st_conn).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ServerError);
    texts.push(("a subtotal PATCH 500".into(), error_texts(&e)));
    fleet.clear_faults();

    // Config errors never echo a credential.
    for e in [
        Channel3::builder()
            .base_url("https://user:hunter2-secret@partners.example")
            .api_key(Secret::new("k"))
            .build()
            .unwrap_err(),
        Subtotal::builder()
            .base_url("https://user:hunter2-secret@api.example")
            .api_key(Secret::new("k"))
            .customers(vec![])
            .build()
            .unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!error_texts(&e).contains("hunter2"), "{e}");
    }

    // A request being built, with a secret header: its Debug shows no secret.
    let http = HttpClient::new("t", &HttpConfig::new(fleet.channel3.base_url())).unwrap();
    let req = http
        .request(Method::GET, "GET /x", http.url(&["x"]).unwrap())
        .secret_header(
            HeaderName::from_static("x-api-key"),
            "",
            &Secret::new(fleet.channel3.api_key()),
        )
        .secret_header(
            HeaderName::from_static("authorization"),
            "Bearer ",
            &Secret::new(format!("{JWT_HEADER}.x.y")),
        );
    texts.push(("a Request's Debug".into(), format!("{req:?}")));
    texts.push((
        "provider Debug (after everything)".into(),
        debug_all(&providers),
    ));

    for (what, text) in &texts {
        assert_clean(what, text, &secrets);
    }

    // The logs of all of the above (at TRACE, reqwest and hyper included).
    let log = captured();
    if std::env::var_os("CONNHEALTH_DUMP_LOGS").is_some() {
        std::fs::write(
            std::env::temp_dir().join("connhealth-security-logs.txt"),
            &log,
        )
        .unwrap();
    }
    assert!(
        log.contains("provider error"),
        "the capture works:\n{}",
        &log[..log.len().min(2000)]
    );
    assert!(
        log.contains("renewing") || log.contains("refresh"),
        "the token renewal was logged"
    );
    assert_clean("the logs", &log, &secrets);
    fleet.shutdown().await;
}

/// The sanity check behind `JWT_HEADER`: the tokens the simulators mint really start with it.
#[tokio::test]
async fn minted_tokens_carry_the_jwt_header() {
    let fleet = Fleet::start(2, 3).await.unwrap();
    let login = raw_http(
        fleet.violet.addr(),
        &format!(
            "POST /v1/login HTTP/1.1\r\nHost: x\r\nX-Violet-App-Id: {}\r\nX-Violet-App-Secret: {}\r\nContent-Type: application/json\r\nContent-Length: {{len}}\r\nConnection: close\r\n\r\n{{body}}",
            fleet.violet.app_id(),
            fleet.violet.app_secret()
        ),
        &serde_json::json!({"username": fleet.violet.username(), "password": fleet.violet.password()}).to_string(),
    )
    .await;
    assert!(
        login.contains(&format!("\"token\":\"{JWT_HEADER}.")),
        "{login}"
    );
    let conn = fleet.subtotal.connection_ids()[0].clone();
    let minted = raw_http(
        fleet.subtotal.addr(),
        &format!(
            "POST /connections/{conn}/token HTTP/1.1\r\nHost: x\r\nx-api-key: {}\r\nContent-Type: application/json\r\nContent-Length: {{len}}\r\nConnection: close\r\n\r\n{{body}}",
            fleet.subtotal.api_key()
        ),
        r#"{"scope":"access"}"#,
    )
    .await;
    assert!(
        minted.contains(&format!("\"connection_token\":\"{JWT_HEADER}.")),
        "{minted}"
    );
    fleet.shutdown().await;
}

// ---- URL rules ----------------------------------------------------------------------------

#[test]
fn plain_http_is_refused_off_loopback() {
    let refused = [
        "http://partners.trychannel3.com",
        "http://example.com:8080",
        "http://10.0.0.5",
        "http://0.0.0.0:80",
        "http://127.0.0.1.nip.io",
        "http://localhost.example.com",
        "http://[::ffff:10.0.0.1]",
        "ftp://127.0.0.1",
        "file:///etc/passwd",
        "https://user:pw@partners.example",
        "https://partners.example/?key=1",
        "not a url",
    ];
    for url in refused {
        let errs = [
            Channel3::builder()
                .base_url(url)
                .api_key(Secret::new("k"))
                .build()
                .err(),
            Violet::builder()
                .base_url(url)
                .app_id(1)
                .app_secret(Secret::new("s"))
                .username("u@example.com")
                .password(Secret::new("p"))
                .build()
                .err(),
            Subtotal::builder()
                .base_url(url)
                .api_key(Secret::new("k"))
                .customers(vec![])
                .build()
                .err(),
        ];
        for e in errs {
            let e = e.unwrap_or_else(|| panic!("{url} was accepted"));
            assert_eq!(e.kind(), ErrorKind::Config, "{url}: {e}");
        }
    }
    for url in [
        "http://127.0.0.1:1",
        "http://localhost:1",
        "http://[::1]:1",
        "http://127.8.9.10",
        "https://partners.example",
    ] {
        assert!(
            Channel3::builder()
                .base_url(url)
                .api_key(Secret::new("k"))
                .build()
                .is_ok(),
            "{url}"
        );
        assert!(
            Subtotal::builder()
                .base_url(url)
                .api_key(Secret::new("k"))
                .customers(vec![])
                .build()
                .is_ok(),
            "{url}"
        );
    }
    // Subtotal's Link URL (put into reports) must be https as well.
    let e = Subtotal::builder()
        .api_key(Secret::new("k"))
        .customers(vec![])
        .link_url("http://link.subtotal.com/abc")
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
}

// ---- ids stay inside their segment ------------------------------------------------------------

const ODD_IDS: [(&str, &str); 7] = [
    ("../x", "..%2Fx"),
    ("a?b=c", "a%3Fb%3Dc"),
    ("h#f", "h%23f"),
    ("p%2Fq", "p%252Fq"),
    ("sp ace", "sp%20ace"),
    ("ünï", "%C3%BCn%C3%AF"),
    ("a/b", "a%2Fb"),
];

#[tokio::test]
async fn channel3_customer_ids_stay_in_one_path_segment() {
    let fleet = Fleet::start(1, 5).await.unwrap();
    for (i, (id, _)) in ODD_IDS.iter().enumerate() {
        let mut c = Channel3Customer::new(*id, format!("Odd {i}"));
        let g = c.connection_mut("google").unwrap();
        g.status = "active".into();
        g.id = Some(format!("conn-odd-{i}"));
        g.sync = Some(Channel3Sync {
            state: "live".into(),
            last_synced_at: None,
            total_products: Some(10 + i as u64),
            synced_products: Some(10 + i as u64),
        });
        fleet.channel3.add_customer(c);
    }
    // Also the plain customer that shares a prefix with `../x`'s target.
    let ids: Vec<&str> = ODD_IDS.iter().map(|(id, _)| *id).collect();
    let p = simulators::channel3(&fleet.channel3)
        .customers(ids.clone())
        .build()
        .unwrap();
    let fetched = p.fetch().await;
    assert_eq!(fetched.outcome(), Outcome::Ok, "{:?}", fetched.errors);
    let raw = fleet.channel3.stats().raw_paths();
    assert_eq!(raw.len(), ODD_IDS.len(), "{raw:?}");
    for (i, (id, enc)) in ODD_IDS.iter().enumerate() {
        let want = format!("/v0/partner/merchants/{enc}/connections");
        assert!(raw.contains(&want), "{id}: {want} not in {raw:?}");
        let mine: Vec<_> = fetched
            .connections
            .iter()
            .filter(|c| c.customer.id == *id)
            .collect();
        assert_eq!(
            mine.len(),
            fleet.channel3.connections(id).unwrap().len(),
            "{id}"
        );
        let g = fetched
            .connections
            .iter()
            .find(|c| c.id == format!("channel3:conn-odd-{i}"))
            .unwrap();
        assert_eq!(g.customer.id, *id);
        assert_eq!(g.sync.as_ref().and_then(|s| s.total), Some(10 + i as u64));
        assert_eq!(g.status, Status::Healthy);
    }
    for raw_path in &raw {
        // Exactly /v0/partner/merchants/{one segment}/connections, no query, no fragment.
        let segs: Vec<&str> = raw_path.split('/').collect();
        assert_eq!(segs.len(), 6, "{raw_path}");
        assert!(
            !raw_path.contains('?') && !raw_path.contains('#'),
            "{raw_path}"
        );
    }
    // `.` and `..` cannot be a segment at all: refused before any request.
    for bad in [".", "..", ""] {
        let e = simulators::channel3(&fleet.channel3)
            .customers([bad])
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{bad:?}");
        let e = p.client().list_connections(bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest, "{bad:?}");
    }
    assert_eq!(fleet.channel3.stats().raw_paths().len(), ODD_IDS.len());
    fleet.shutdown().await;
}

#[tokio::test]
async fn violet_merchant_ids_stay_in_one_path_segment() {
    let fleet = Fleet::start(2, 9).await.unwrap();
    let v = violet(&fleet, fleet.violet.password());
    for (id, enc) in ODD_IDS {
        fleet.violet.stats().reset();
        let e = v.client().merchant_health(id).await.unwrap_err();
        // Not a merchant id the simulator knows: a typed refusal naming the merchant.
        assert!(
            matches!(e.kind(), ErrorKind::InvalidRequest | ErrorKind::NotFound),
            "{id}: {e}"
        );
        assert_eq!(e.customer_id(), Some(id));
        let raw = fleet.violet.stats().raw_paths();
        let health: Vec<&String> = raw
            .iter()
            .filter(|p| p.starts_with("/v1/operations/"))
            .collect();
        assert_eq!(health.len(), 1, "{id}: {raw:?}");
        let want = format!("/v1/operations/connection_health/{enc}?app_id=");
        assert!(
            health[0].starts_with(&want),
            "{id}: {} vs {want}",
            health[0]
        );
    }
    // A real merchant id still answers.
    let id = fleet.violet.merchant_ids()[0].to_string();
    let c = v.client().merchant_health(&id).await.unwrap();
    assert_eq!(c.id, format!("violet:{id}"));
    fleet.shutdown().await;
}

fn st_conn(connection_id: &str, customer_id: &str, status: &str) -> SubtotalConnection {
    SubtotalConnection {
        connection_id: connection_id.into(),
        customer_id: customer_id.into(),
        retailer_id: "walmart".into(),
        status: status.into(),
        email: None,
        mobile: None,
        is_simulated: None,
    }
}

#[tokio::test]
async fn subtotal_ids_stay_in_their_query_value_and_path_segment() {
    let fleet = Fleet::start(1, 6).await.unwrap();
    let sim = &fleet.subtotal;
    // Customers with odd ids, plus the customers an injected parameter would name.
    let mut customers = Vec::new();
    for (i, (id, _)) in ODD_IDS.iter().enumerate() {
        let cust = format!("{id}&customer_id=victim");
        sim.add_connection(st_conn(&format!("C-odd-{i}"), &cust, "active"));
        sim.add_connection(st_conn(&format!("C-plain-{i}"), id, "unauthenticated"));
        customers.push(cust);
        customers.push((*id).to_owned());
    }
    sim.add_connection(st_conn("C-victim", "victim", "disconnected"));
    let p = Subtotal::builder()
        .base_url(sim.base_url())
        .api_key(Secret::new(sim.api_key()))
        .customers(customers.clone())
        .resolve_retailer_names(false)
        .build()
        .unwrap();
    let fetched = p.fetch().await;
    assert_eq!(fetched.outcome(), Outcome::Ok, "{:?}", fetched.errors);
    assert_eq!(fetched.connections.len(), customers.len());
    assert!(
        !fetched
            .connections
            .iter()
            .any(|c| c.id == "subtotal:C-victim"),
        "no injected parameter"
    );
    for (i, (id, _)) in ODD_IDS.iter().enumerate() {
        let odd = fetched
            .connections
            .iter()
            .find(|c| c.id == format!("subtotal:C-odd-{i}"))
            .unwrap();
        assert_eq!(odd.customer.id, format!("{id}&customer_id=victim"));
        let plain = fetched
            .connections
            .iter()
            .find(|c| c.id == format!("subtotal:C-plain-{i}"))
            .unwrap();
        assert_eq!(plain.customer.id, *id);
        assert_eq!(plain.status, Status::ActionRequired);
    }
    let raw = sim.stats().raw_paths();
    for path in raw.iter().filter(|p| p.starts_with("/connections?")) {
        let query = path.trim_start_matches("/connections?");
        assert_eq!(query.matches('&').count(), 0, "one parameter only: {path}");
        assert!(
            query.starts_with("customer_id=") && !path.contains('#'),
            "{path}"
        );
    }
    assert_eq!(
        raw.iter()
            .filter(|p| p.starts_with("/connections?"))
            .count(),
        customers.len()
    );

    // Connection ids on GET and PATCH (and the token mint): one encoded path segment each.
    for (i, (id, enc)) in ODD_IDS.iter().enumerate() {
        let cid = format!("X{id}");
        sim.add_connection(st_conn(&cid, &format!("cus-{i}"), "active"));
        sim.stats().reset();
        let got = p.client().get_connection(&cid).await.unwrap();
        assert_eq!(got.connection_id.as_deref(), Some(cid.as_str()));
        let patched = p.client().disconnect(&cid).await.unwrap();
        assert_eq!(patched.connection_id.as_deref(), Some(cid.as_str()));
        assert_eq!(sim.connection(&cid).unwrap().status, "disconnected");
        let raw = sim.stats().raw_paths();
        assert_eq!(
            raw,
            [
                format!("/connections/X{enc}"),
                format!("/connections/X{enc}/token"),
                format!("/connections/X{enc}"),
            ],
            "{id}"
        );
    }
    for bad in [".", ".."] {
        let e = p.client().get_connection(bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
        let e = p.client().disconnect(bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    }
    fleet.shutdown().await;
}

// ---- a raw loopback server, for redirects and malformed answers --------------------------------

/// Answers every request with `respond(request)`, records the raw request text.
struct RawServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawServer {
    async fn start(respond: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let respond = Arc::new(respond);
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let log = log.clone();
                let respond = respond.clone();
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut sock).await else {
                        return;
                    };
                    log.lock().unwrap().push(req.clone());
                    let _ = sock.write_all(&respond(&req)).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        RawServer {
            addr,
            requests,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request(sock: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned());
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(text);
            }
        }
    }
}

fn response(status: &str, headers: &[(&str, String)], body: &str) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

/// Send a raw HTTP/1.1 request (`{len}` / `{body}` placeholders filled) and read the answer.
async fn raw_http(addr: SocketAddr, head: &str, body: &str) -> String {
    let req = head
        .replace("{len}", &body.len().to_string())
        .replace("{body}", body);
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    sock.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

// ---- redirects ------------------------------------------------------------------------------

const KEY: &str = "c3_sk_redirect_test_0042";

#[tokio::test]
async fn a_redirect_to_another_origin_is_not_followed_with_credentials() {
    let elsewhere = RawServer::start(|_| response("200 OK", &[], r#"{"connections":[]}"#)).await;
    // `localhost` is another origin than `127.0.0.1`, even on the same port.
    let targets = [
        elsewhere.url(),
        format!("http://localhost:{}", elsewhere.addr.port()),
    ];
    for target in targets {
        let t = target.clone();
        for status in [
            "301 Moved Permanently",
            "302 Found",
            "303 See Other",
            "307 Temporary Redirect",
            "308 Permanent Redirect",
        ] {
            let location = format!("{t}/v0/partner/merchants/c1/connections");
            let origin =
                RawServer::start(move |_| response(status, &[("Location", location.clone())], ""))
                    .await;
            let p = Channel3::builder()
                .base_url(origin.url())
                .api_key(Secret::new(KEY))
                .customers(["c1"])
                .build()
                .unwrap();
            let fetched = p.fetch().await;
            assert_eq!(fetched.outcome(), Outcome::Failed, "{status}");
            let e = &fetched.errors[0];
            assert_eq!(e.kind(), ErrorKind::Config, "{status}: {e}");
            assert!(
                e.to_string().contains("redirect") && e.to_string().contains("refused"),
                "{e}"
            );
            assert!(!error_texts(e).contains(KEY));
            // The key went to the configured origin only, once (a refusal is not retried).
            let seen = origin.requests();
            assert_eq!(seen.len(), 1, "{status}");
            assert!(seen[0].contains(KEY));
        }
    }
    assert!(
        elsewhere.requests().is_empty(),
        "nothing reached the other origin: {:?}",
        elsewhere.requests()
    );

    // Violet's login (a POST with the password in its body) and Subtotal's PATCH (a bearer
    // token): a 307/308 would repeat them, body and headers included, at the new location.
    let violet_origin = RawServer::start({
        let to = elsewhere.url();
        move |_| {
            response(
                "307 Temporary Redirect",
                &[("Location", format!("{to}/v1/login"))],
                "",
            )
        }
    })
    .await;
    let v = Violet::builder()
        .base_url(format!("{}/v1", violet_origin.url()))
        .app_id(7)
        .app_secret(Secret::new("violet-redirect-app-secret"))
        .username("owner@example.com")
        .password(Secret::new("violet-redirect-password"))
        .build()
        .unwrap();
    let e = v.client().authenticate().await.unwrap_err();
    assert!(e.to_string().contains("refused"), "{e}");
    assert_eq!(violet_origin.requests().len(), 1);

    let st_origin = RawServer::start({
        let to = elsewhere.url();
        move |req: &str| {
            if req.starts_with("POST ") {
                response(
                    "201 Created",
                    &[("Content-Type", "application/json".into())],
                    &format!(r#"{{"connection_token":"{JWT_HEADER}.e30.sig"}}"#),
                )
            } else {
                response(
                    "308 Permanent Redirect",
                    &[("Location", format!("{to}/connections/C1"))],
                    "",
                )
            }
        }
    })
    .await;
    let s = Subtotal::builder()
        .base_url(st_origin.url())
        .api_key(Secret::new("st_redirect_key_0099"))
        .customers(vec![])
        .build()
        .unwrap();
    let e = s.client().disconnect("C1").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(!error_texts(&e).contains(JWT_HEADER));
    let seen = st_origin.requests();
    assert_eq!(seen.len(), 2, "mint + PATCH, no repeat: {seen:?}");
    assert!(
        seen[1].starts_with("PATCH ")
            && seen[1]
                .to_ascii_lowercase()
                .contains("authorization: bearer")
    );

    assert!(
        elsewhere.requests().is_empty(),
        "nothing reached the other origin: {:?}",
        elsewhere.requests()
    );
}

#[tokio::test]
async fn a_redirect_within_the_origin_is_followed() {
    let origin = RawServer::start(|req: &str| {
        if req.starts_with("GET /old/") {
            response("302 Found", &[("Location", "/v0/partner/merchants/c1/connections".into())], "")
        } else {
            response("200 OK", &[("Content-Type", "application/json".into())], r#"{"connections":[{"platform":"shopify","category":"ingestion","status":"active","display_name":"S","id":"x1"}]}"#)
        }
    })
    .await;
    let p = Channel3::builder()
        .base_url(format!("{}/old", origin.url()))
        .api_key(Secret::new(KEY))
        .customers(["c1"])
        .build()
        .unwrap();
    let fetched = p.fetch().await;
    assert_eq!(fetched.outcome(), Outcome::Ok, "{:?}", fetched.errors);
    assert_eq!(fetched.connections[0].id, "channel3:x1");
    let seen = origin.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|r| r.contains(KEY)));
}

// ---- oversized and malformed answers ---------------------------------------------------------

async fn fetch_from(server: &RawServer, max_body: usize) -> connhealth::Fetched {
    Channel3::builder()
        .base_url(server.url())
        .api_key(Secret::new(KEY))
        .customers(["c1"])
        .retry(RetryPolicy::none())
        .max_body_bytes(max_body)
        .build()
        .unwrap()
        .fetch()
        .await
}

#[tokio::test]
async fn oversized_headers_and_bodies_are_typed_errors() {
    let cases: Vec<(&str, Vec<u8>, ErrorKind)> = vec![
        (
            "a 1 MiB header value",
            response("200 OK", &[("X-Huge", "a".repeat(1 << 20))], r#"{"connections":[]}"#),
            ErrorKind::Connection,
        ),
        (
            "500 headers",
            response(
                "200 OK",
                &(0..500).map(|i| ("X-Many", format!("v{i}"))).collect::<Vec<_>>(),
                r#"{"connections":[]}"#,
            ),
            ErrorKind::Connection,
        ),
        (
            "a declared 1 TB body",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\nConnection: close\r\n\r\n{\"connections\":[".to_vec(),
            ErrorKind::TooLarge,
        ),
        (
            "an undeclared body over the cap",
            format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{{\"connections\":[],\"pad\":\"{}\"}}", "x".repeat(200_000)).into_bytes(),
            ErrorKind::TooLarge,
        ),
        (
            "a chunked body over the cap",
            {
                let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
                for _ in 0..40 {
                    r.extend_from_slice(format!("2000\r\n{}\r\n", " ".repeat(0x2000)).as_bytes());
                }
                r.extend_from_slice(b"0\r\n\r\n");
                r
            },
            ErrorKind::TooLarge,
        ),
        ("not HTTP at all", b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec(), ErrorKind::Connection),
        ("an empty answer", Vec::new(), ErrorKind::Connection),
        (
            "a body shorter than declared",
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"connections\":[]}".to_vec(),
            ErrorKind::Connection,
        ),
        (
            "an invalid status line",
            b"HTTP/1.1 999999 Nope\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            ErrorKind::Connection,
        ),
    ];
    for (name, answer, kind) in cases {
        let server = RawServer::start(move |_| answer.clone()).await;
        let fetched = fetch_from(&server, 64 * 1024).await;
        assert_eq!(fetched.outcome(), Outcome::Failed, "{name}");
        let e = &fetched.errors[0];
        assert_eq!(e.kind(), kind, "{name}: {e}");
        assert!(
            e.to_string()
                .starts_with("channel3: GET /v0/partner/merchants/{customer_id}/connections"),
            "{e}"
        );
        assert_eq!(e.customer_id(), Some("c1"));
        assert!(!error_texts(e).contains(KEY));
        assert_eq!(
            server.requests().len(),
            1,
            "{name}: never retried with RetryPolicy::none"
        );
    }
}

/// The aggregator keeps everything else when one provider's answers are hostile.
#[tokio::test]
async fn a_hostile_server_does_not_affect_the_other_providers() {
    let fleet = Fleet::start(3, 8).await.unwrap();
    let hostile =
        RawServer::start(|_| response("200 OK", &[("X-Huge", "b".repeat(1 << 20))], "{}")).await;
    let bad = Channel3::builder()
        .name("channel3-hostile")
        .base_url(hostile.url())
        .api_key(Secret::new(KEY))
        .customers(["c1", "c2"])
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let report = Aggregator::new()
        .with_provider(bad)
        .with_provider(c3(&fleet, fleet.channel3.api_key()))
        .with_provider(subtotal(&fleet, fleet.subtotal.api_key()))
        .run()
        .await;
    assert_eq!(report.providers[0].outcome, Outcome::Failed);
    assert_eq!(report.providers[1].outcome, Outcome::Ok);
    assert_eq!(report.providers[2].outcome, Outcome::Ok);
    assert!(report.connections_of("channel3").count() > 0);
    assert!(report.overall >= Status::Unknown);
    fleet.shutdown().await;
}

/// A token answer with an absurd lifetime (provider input) is used, not a panic.
#[tokio::test]
async fn an_absurd_token_lifetime_never_panics() {
    for answer in [
        r#"{"connection_token":"opaque-token-1","expires_in":18446744073709551615}"#,
        r#"{"token":"opaque-token-2","expires_in":"9223372036854775807"}"#,
        r#"{"access_token":"opaque-token-3","expires_in":1e300}"#,
    ] {
        let server = RawServer::start(move |req: &str| {
            if req.starts_with("POST ") {
                response("201 Created", &[("Content-Type", "application/json".into())], answer)
            } else {
                response(
                    "200 OK",
                    &[("Content-Type", "application/json".into())],
                    r#"{"connection_id":"C1","customer_id":"c","retailer_id":"walmart","status":"disconnected"}"#,
                )
            }
        })
        .await;
        let s = Subtotal::builder()
            .base_url(server.url())
            .api_key(Secret::new("st_key_absurd_0001"))
            .customers(vec![])
            .build()
            .unwrap();
        let updated = s.client().disconnect("C1").await.unwrap();
        assert_eq!(updated.connection_id.as_deref(), Some("C1"), "{answer}");
        s.client().disconnect("C1").await.unwrap();
        let mints = server
            .requests()
            .iter()
            .filter(|r| r.starts_with("POST "))
            .count();
        assert_eq!(mints, 1, "{answer}: the token is cached, not minted again");
    }
}

/// A gzip "bomb": a small compressed body that inflates to `inflated` bytes. Deflate with fixed Huffman
/// codes: one literal 0, then copies of 258 bytes at distance 1 (13 bits each).
fn gzip_bomb(inflated: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u32,
        n: u32,
    }
    impl Bits {
        fn put(&mut self, value: u32, len: u32) {
            self.acc |= value << self.n;
            self.n += len;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// Huffman codes are packed most significant bit first.
        fn code(&mut self, code: u32, len: u32) {
            let rev = (0..len).fold(0, |r, i| r | (((code >> i) & 1) << (len - 1 - i)));
            self.put(rev, len);
        }
    }
    let mut b = Bits {
        out: vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255],
        acc: 0,
        n: 0,
    };
    b.put(1, 1); // BFINAL
    b.put(1, 2); // BTYPE = fixed Huffman
    b.code(0x30, 8); // literal 0
    let copies = (inflated - 1) / 258;
    for _ in 0..copies {
        b.code(0xC5, 8); // length 258 (symbol 285)
        b.code(0, 5); // distance 1
    }
    b.code(0, 7); // end of block
    if b.n > 0 {
        b.put(0, 8 - b.n);
    }
    let len = 1 + copies * 258;
    // CRC-32 of `len` zero bytes (table-driven), then ISIZE.
    let table: Vec<u32> = (0..256u32)
        .map(|i| {
            (0..8).fold(i, |c, _| {
                if c & 1 == 1 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                }
            })
        })
        .collect();
    let mut crc: u32 = !0;
    for _ in 0..len {
        crc = table[(crc & 0xff) as usize] ^ (crc >> 8);
    }
    b.out.extend_from_slice(&(!crc).to_le_bytes());
    b.out.extend_from_slice(&(len as u32).to_le_bytes());
    b.out
}

/// The body cap counts the body as decoded: a small gzip body that inflates past the cap is
/// `too_large`, not 4 MiB in memory.
#[tokio::test]
async fn a_compressed_body_is_capped_as_inflated() {
    let bomb = gzip_bomb(4 << 20);
    let compressed = bomb.len();
    assert!(
        compressed < 32 * 1024,
        "{compressed} bytes compressed: under the cap"
    );
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {compressed}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    head.extend_from_slice(&bomb);
    let server = RawServer::start(move |_| head.clone()).await;
    let fetched = fetch_from(&server, 256 * 1024).await;
    assert_eq!(fetched.outcome(), Outcome::Failed);
    assert_eq!(
        fetched.errors[0].kind(),
        ErrorKind::TooLarge,
        "{}",
        fetched.errors[0]
    );
    assert!(
        server.requests()[0]
            .to_ascii_lowercase()
            .contains("accept-encoding: gzip"),
        "the client asks for gzip"
    );
    // The same construction, small: it inflates fine (1 + 38 × 258 zeros, not JSON), so the
    // error above is the cap, not a broken stream.
    let small = gzip_bomb(10_000);
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        small.len()
    )
    .into_bytes();
    head.extend_from_slice(&small);
    let server = RawServer::start(move |_| head.clone()).await;
    let fetched = fetch_from(&server, 64 * 1024).await;
    assert_eq!(
        fetched.errors[0].kind(),
        ErrorKind::Decode,
        "{}",
        fetched.errors[0]
    );
    assert!(
        fetched.errors[0].to_string().contains("9805 bytes"),
        "{}",
        fetched.errors[0]
    );
}
