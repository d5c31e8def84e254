//! Authorization and TLS over real HTTPS on 127.0.0.1: bearer, static and no
//! token against a receiver whose certificate a test CA signed; a CA sluice
//! was not told about is refused; trust-all works and is flagged; mutual TLS
//! with a client certificate given as PEM or as PKCS#12, and a receiver that
//! demands one refuses a configuration without; certificates are checked on
//! save (expired, wrong password, wrong key) and one close to expiry is
//! flagged and warned about. The CA and every certificate are made here with
//! rcgen; the engine is a real process.

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use sluice_tests::engine::{Api, Engine, event_body};
use sluice_tests::tls::TlsReceiver;
use time::{Duration, OffsetDateTime};

/// One attempt, ending the delivery at once when it fails.
fn one_attempt() -> Value {
    json!({"max_attempts": 1, "initial_backoff_ms": 50, "max_backoff_ms": 100})
}

/// A certificate authority for one test.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM and DER.
struct Issued {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    key_der: Vec<u8>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA certificate");
        TestCa { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A certificate for `names`, valid from a day ago for `valid_for`.
    fn issue(&self, names: &[&str], common_name: &str, usage: ExtendedKeyUsagePurpose, valid_for: Duration) -> Issued {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("parameters");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + valid_for;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Issued { cert_pem: cert.pem(), cert_der: cert.der().clone(), key_pem: key.serialize_pem(), key_der: key.serialize_der() }
    }

    /// The receiver's certificate: 127.0.0.1 and localhost.
    fn server(&self) -> Issued {
        self.issue(&["127.0.0.1", "localhost"], "receiver", ExtendedKeyUsagePurpose::ServerAuth, Duration::days(30))
    }

    fn client(&self, name: &str, valid_for: Duration) -> Issued {
        self.issue(&[], name, ExtendedKeyUsagePurpose::ClientAuth, valid_for)
    }
}

impl Issued {
    fn chain_and_key(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (vec![self.cert_der.clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())))
    }

    /// `authorization` with the PEM pair.
    fn pem_authorization(&self) -> Value {
        json!({"type": "client_certificate", "certificate_pem": self.cert_pem, "private_key_pem": self.key_pem})
    }

    /// The pair as a PKCS#12 file (PBES2 with AES-256, HMAC-SHA256), base64.
    fn pkcs12_base64(&self, password: &str) -> String {
        let chain = p12_keystore::PrivateKeyChain::new(
            b"client-key".as_slice(),
            p12_keystore::PrivateKey::from_der(&self.key_der).expect("PKCS#8 key"),
            [p12_keystore::Certificate::from_der(&self.cert_der).expect("certificate")],
        );
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("client", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let der = store.writer(password).write().expect("PKCS#12");
        base64::engine::general_purpose::STANDARD.encode(der)
    }
}

/// The receiver's TLS settings as sluice is told them.
fn custom_ca(ca: &TestCa) -> Value {
    json!({"trust": "custom_ca", "ca_pem": ca.pem()})
}

/// The delivery of `event` once it is no longer pending.
async fn settled_delivery(api: &Api, event: &str) -> Value {
    let found = api
        .wait_for(&format!("/v1/events/{event}"), |e| {
            e["deliveries"][0]["status"].as_str().is_some_and(|s| s == "succeeded" || s == "failed")
        })
        .await;
    found["deliveries"][0].clone()
}

/// What the attempt log says of a delivery's only attempt.
async fn only_attempt_error(api: &Api, delivery: &Value) -> String {
    let id = delivery["id"].as_str().expect("delivery id");
    let page = api.get(&format!("/v1/attempts?delivery_id={id}")).await.expect(200);
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{page}");
    items[0]["error"].as_str().unwrap_or_default().to_owned()
}

/// Creates and enables a configuration for events of type `{name}.sent`
/// sent to `{url}/{name}`; returns its view.
async fn configure(api: &Api, url: &str, name: &str, extra: Value) -> Value {
    let mut spec = json!({
        "name": name,
        "endpoint": format!("{url}/{name}"),
        "event_types": [format!("{name}.sent")],
        "retry": one_attempt(),
    });
    for (k, v) in extra.as_object().expect("object") {
        spec[k] = v.clone();
    }
    api.enabled_config(spec).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_modes_over_https_and_which_receivers_are_trusted() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let ca = TestCa::new("sluice e2e CA");
    let (chain, key) = ca.server().chain_and_key();
    let rx = TlsReceiver::start(chain, key, None).await;

    let bearer =
        configure(&api, &rx.url, "bearer", json!({"tls": custom_ca(&ca), "authorization": {"type": "bearer", "token": "t"}})).await;
    configure(&api, &rx.url, "token", json!({"tls": custom_ca(&ca), "authorization": {"type": "token", "token": "t"}})).await;
    configure(&api, &rx.url, "none", json!({"tls": custom_ca(&ca), "authorization": {"type": "none"}})).await;
    let trust_all = configure(&api, &rx.url, "trustall", json!({"tls": {"trust": "trust_all"}})).await;
    // System roots know nothing of the test CA.
    let system = configure(&api, &rx.url, "system", json!({})).await;
    // Another CA than the one that signed the receiver's certificate.
    let other_ca = TestCa::new("another CA");
    configure(&api, &rx.url, "otherca", json!({"tls": custom_ca(&other_ca)})).await;

    assert_eq!(trust_all["trust_all_tls"], true, "{trust_all}");
    for view in [&bearer, &system] {
        assert_eq!(view["trust_all_tls"], false, "{view}");
    }
    assert_eq!(bearer["authorization"], json!({"type": "bearer", "token_set": true}), "the token is never shown");

    let names = ["bearer", "token", "none", "trustall", "system", "otherca"];
    let events: Vec<Value> = names.iter().map(|n| event_body(&format!("{n}-1"), &format!("{n}.sent"), "emea", json!({"n": n}))).collect();
    api.ingest(&events).await;

    for name in ["bearer", "token", "none", "trustall"] {
        let delivery = settled_delivery(&api, &format!("{name}-1")).await;
        assert_eq!(delivery["status"], "succeeded", "{name}: {delivery}");
    }
    for name in ["system", "otherca"] {
        let delivery = settled_delivery(&api, &format!("{name}-1")).await;
        assert_eq!(delivery["status"], "failed", "{name}: {delivery}");
        let error = only_attempt_error(&api, &delivery).await;
        assert!(error.contains("connection failed") && error.contains("certificate"), "{name}: the attempt log says {error:?}");
        assert!(error.contains("UnknownIssuer"), "{name}: {error:?}");
    }

    let received = rx.wait_for(4).await;
    let authorization_at = |path: &str| -> Option<Option<String>> {
        received.iter().find(|r| r.request.uri.path() == path).map(|r| r.request.header("authorization").map(str::to_owned))
    };
    assert_eq!(authorization_at("/bearer"), Some(Some("Bearer t".into())));
    assert_eq!(authorization_at("/token"), Some(Some("t".into())));
    assert_eq!(authorization_at("/none"), Some(None));
    assert_eq!(authorization_at("/trustall"), Some(None));
    assert_eq!(received.len(), 4, "nothing reached the receiver from an untrusting configuration: {received:?}");
    assert!(received.iter().all(|r| r.client_certificate.is_none()));
    // The refusals happened in the handshake: the server saw them fail.
    rx.wait_for_handshake_failures(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_pem_and_pkcs12_client_certificates() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let ca = TestCa::new("sluice e2e CA");
    let (chain, key) = ca.server().chain_and_key();
    let rx = TlsReceiver::start(chain, key, Some(ca.der())).await;

    let pem_client = ca.client("pem-client", Duration::days(365));
    let p12_client = ca.client("p12-client", Duration::days(365));
    let soon_client = ca.client("soon-client", Duration::days(10));
    let password = "p12-Passw0rd!";
    let p12 = p12_client.pkcs12_base64(password);

    let pem = configure(&api, &rx.url, "pem", json!({"tls": custom_ca(&ca), "authorization": pem_client.pem_authorization()})).await;
    let from_p12 = configure(
        &api,
        &rx.url,
        "pkcs",
        json!({"tls": custom_ca(&ca), "authorization": {"type": "client_certificate", "pkcs12_base64": p12, "password": password}}),
    )
    .await;
    let soon = configure(&api, &rx.url, "soon", json!({"tls": custom_ca(&ca), "authorization": soon_client.pem_authorization()})).await;
    configure(&api, &rx.url, "anonymous", json!({"tls": custom_ca(&ca)})).await;

    // Answers show the certificate and its expiry, never the key or the password.
    for (view, expiring) in [(&pem, false), (&from_p12, false), (&soon, true)] {
        let auth = &view["authorization"];
        assert_eq!(auth["type"], "client_certificate", "{auth}");
        assert_eq!(auth["private_key_pem_set"], true, "{auth}");
        assert_eq!(auth["certificate_expiring"], expiring, "{auth}");
        let expires = auth["certificate_expires_at"].as_str().expect("the expiry");
        OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339).expect("RFC 3339");
        let text = view.to_string();
        assert!(!text.contains("PRIVATE KEY") && !text.contains(password) && !text.contains("pkcs12"), "{text}");
    }
    let id = from_p12["id"].as_str().expect("id");
    let read = api.get(&format!("/v1/configurations/{id}")).await.expect(200);
    assert_eq!(read["authorization"]["certificate_pem"], p12_client.cert_pem.replace("\r\n", "\n"), "converted to PEM");
    assert!(!read.to_string().contains("PRIVATE KEY"), "{read}");

    let names = ["pem", "pkcs", "soon", "anonymous"];
    let events: Vec<Value> = names.iter().map(|n| event_body(&format!("{n}-1"), &format!("{n}.sent"), "emea", json!({}))).collect();
    api.ingest(&events).await;

    for name in ["pem", "pkcs", "soon"] {
        let delivery = settled_delivery(&api, &format!("{name}-1")).await;
        assert_eq!(delivery["status"], "succeeded", "{name}: {delivery}");
    }
    let delivery = settled_delivery(&api, "anonymous-1").await;
    assert_eq!(delivery["status"], "failed", "{delivery}");
    let error = only_attempt_error(&api, &delivery).await;
    // TLS 1.3: the client learns of the refusal from the server's alert
    // (or, depending on timing, from the connection it then closed).
    assert!(["CertificateRequired", "reset", "closed"].iter().any(|why| error.contains(why)), "the attempt log says {error:?}");

    let received = rx.wait_for(3).await;
    assert_eq!(received.len(), 3, "nothing arrived without a client certificate: {received:?}");
    let presented = |path: &str| received.iter().find(|r| r.request.uri.path() == path).and_then(|r| r.client_certificate.clone());
    assert_eq!(presented("/pem"), Some(pem_client.cert_der.to_vec()));
    assert_eq!(presented("/pkcs"), Some(p12_client.cert_der.to_vec()));
    assert_eq!(presented("/soon"), Some(soon_client.cert_der.to_vec()));
    let failures = rx.wait_for_handshake_failures(1).await;
    assert!(
        failures.iter().any(|f| f.to_lowercase().contains("certificate")),
        "the receiver refused the anonymous client in the handshake: {failures:?}"
    );
    // Loading the configuration whose certificate expires soon warned.
    let log = engine.log();
    assert!(log.contains("client certificate expires within 30 days"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_checked_on_save() {
    let engine = Engine::start().await;
    let api = engine.admin();
    let ca = TestCa::new("sluice e2e CA");
    let created = std::sync::atomic::AtomicUsize::new(0);
    let create = |authorization: Value| {
        let (api, n) = (api.clone(), created.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        async move {
            let spec = json!({
                "name": format!("mtls-{n}"),
                "endpoint": "https://127.0.0.1:9/hook",
                "event_types": ["x.*"],
                "authorization": authorization,
            });
            api.post("/v1/configurations", &spec).await
        }
    };

    let expired = ca.client("expired", Duration::minutes(-5));
    create(expired.pem_authorization()).await.expect_error(422, "certificate_expired");
    let body = create(json!({"type": "client_certificate", "pkcs12_base64": expired.pkcs12_base64("pw"), "password": "pw"}))
        .await
        .expect_error(422, "certificate_expired");
    assert!(body["message"].as_str().unwrap_or_default().contains("expired"), "{body}");

    let good = ca.client("good", Duration::days(365));
    let wrong_password = "not-the-Password-42";
    let body = create(json!({"type": "client_certificate", "pkcs12_base64": good.pkcs12_base64("right"), "password": wrong_password}))
        .await
        .expect_error(422, "invalid_client_certificate");
    assert!(!body.to_string().contains(wrong_password), "{body}");
    create(json!({"type": "client_certificate", "pkcs12_base64": "not base64 at all!", "password": "x"}))
        .await
        .expect_error(422, "invalid_client_certificate");
    create(json!({"type": "client_certificate", "pkcs12_base64": "Z2FyYmFnZQ==", "password": "x"}))
        .await
        .expect_error(422, "invalid_client_certificate");

    let other = ca.client("other", Duration::days(365));
    let body = create(json!({"type": "client_certificate", "certificate_pem": good.cert_pem, "private_key_pem": other.key_pem}))
        .await
        .expect_error(422, "invalid_client_certificate");
    let key_line = other.key_pem.lines().nth(1).expect("a line of the key");
    assert!(!body.to_string().contains(key_line), "{body}");
    // A key pasted where the certificate goes would be shown by every answer.
    let body = create(json!({"type": "client_certificate",
        "certificate_pem": format!("{}{}", good.cert_pem, good.key_pem), "private_key_pem": good.key_pem}))
    .await
    .expect_error(422, "invalid_client_certificate");
    assert!(!body.to_string().contains(key_line) && !body.to_string().contains(good.key_pem.lines().nth(1).unwrap_or("-")), "{body}");

    let soon = ca.client("soon", Duration::days(7));
    let flagged = create(soon.pem_authorization()).await.expect(201);
    assert_eq!(flagged["authorization"]["certificate_expiring"], true, "{flagged}");
    let fine = create(good.pem_authorization()).await.expect(201);
    assert_eq!(fine["authorization"]["certificate_expiring"], false, "{fine}");
}
