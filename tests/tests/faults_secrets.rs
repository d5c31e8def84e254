//! Issue 13, faults 5 and 6: credentials and secrets at rest.
//!
//! A key that may only read configurations and logs sees `***` for every
//! credential (custom header and query values, the endpoint's own
//! `?token=`, the authorization token), in configurations, attempt logs
//! and test sends, while receivers get the real values; an update that
//! leaves them out (or sends `***` back) keeps them. In the database the
//! configuration rows hold none of them in plaintext, and the key that
//! seals them is made on first start (SQLite) or must be given
//! (PostgreSQL). Compiled code planted in the database is not loaded.
//!
//! Every test runs on the backend `SLUICE_TEST_BACKEND` picks and reads
//! that backend's database directly: the data directory's SQLite file, or
//! the PostgreSQL database the harness made for the engine.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::engine::{Api, Engine, PostgresDatabase, event_body};
use sluice_tests::receiver::Receiver;
use sqlx::{Connection as _, Row as _};

const URL_TOKEN: &str = "url-SECRET-111";
const HEADER_KEY: &str = "hdr-SECRET-222";
const QUERY_KEY: &str = "qry-SECRET-333";
const BEARER: &str = "bearer-SECRET-444";
/// A signing secret given on create (base64 of 32 bytes).
const SIGNING: &str = "whsec_c2lnbmluZy1TRUNSRVQtNTU1LXRoaXJ0eS10d28hIQ==";

/// Every credential's plaintext: none may show where it must not.
const PLAINTEXTS: [&str; 5] = [URL_TOKEN, HEADER_KEY, QUERY_KEY, BEARER, SIGNING];

#[track_caller]
fn assert_hidden(what: &str, text: &str) {
    for secret in PLAINTEXTS {
        assert!(!text.contains(secret), "{what} shows `{secret}`: {text}");
    }
    assert!(!text.contains("SECRET"), "{what} shows a credential: {text}");
}

fn spec(rx: &Receiver) -> Value {
    json!({
        "name": "erp",
        "endpoint": format!("{}/hook?token={URL_TOKEN}&v=1", rx.url),
        "event_types": ["order.*"],
        "headers": {"X-Api-Key": HEADER_KEY, "X-Tenant": "acme"},
        "query": {"key": QUERY_KEY, "page": "1"},
        "authorization": {"type": "bearer", "token": BEARER},
        "signing": {"secret": SIGNING},
    })
}

/// Asserts the receiver's `n`-th request carried every credential.
async fn assert_real_values_arrive(rx: &Receiver, n: usize) {
    let got = rx.wait_for(n).await;
    let request = &got[n - 1];
    let query = request.uri.query().unwrap_or_default();
    assert!(query.contains(&format!("token={URL_TOKEN}")) && query.contains(&format!("key={QUERY_KEY}")), "{query}");
    assert!(query.contains("v=1") && query.contains("page=1"), "{query}");
    assert_eq!(request.header("x-api-key"), Some(HEADER_KEY));
    assert_eq!(request.header("x-tenant"), Some("acme"));
    assert_eq!(request.header("authorization"), Some(format!("Bearer {BEARER}").as_str()));
}

/// Waits until the delivery of `event` succeeded; returns its attempts.
async fn delivered(admin: &Api, event: &str) -> Vec<Value> {
    let found = admin.wait_for(&format!("/v1/events/{event}"), |e| e["deliveries"][0]["status"] == "succeeded").await;
    let delivery = found["deliveries"][0]["id"].as_str().expect("delivery id").to_owned();
    let page = admin.get(&format!("/v1/attempts?delivery_id={delivery}")).await.expect(200);
    page["items"].as_array().expect("items").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_credentials_redacted_and_updates_that_leave_them_out_keep_them() {
    let engine = Engine::start().await;
    let admin = engine.admin();
    let rx = Receiver::start().await;
    let created = admin.enabled_config(spec(&rx)).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let key = admin.post("/v1/keys", &json!({"name": "reader", "scopes": ["configurations:read", "logs:read"]})).await.expect(201);
    let reader = engine.api(key["secret"].as_str().expect("key secret"));

    // Configurations: one, and the list.
    let view = reader.get(&format!("/v1/configurations/{id}")).await.expect(200);
    assert_hidden("the configuration", &view.to_string());
    assert_eq!(view["endpoint"], format!("{}/hook?token=***&v=1", rx.url));
    assert_eq!(view["headers"], json!({"X-Api-Key": "***", "X-Tenant": "acme"}));
    assert_eq!(view["query"], json!({"key": "***", "page": "1"}));
    assert_eq!(view["authorization"], json!({"type": "bearer", "token_set": true}));
    assert_hidden("the configuration list", &reader.get("/v1/configurations").await.expect(200).to_string());

    // The receiver gets the real values; the attempt log shows none of them.
    admin.ingest(&[event_body("evt-1", "order.paid", "emea", json!({"amount": 1}))]).await;
    assert_real_values_arrive(&rx, 1).await;
    let attempts = delivered(&admin, "evt-1").await;
    let attempt_id = attempts[0]["id"].as_str().expect("attempt id");
    let attempt = reader.get(&format!("/v1/attempts/{attempt_id}")).await.expect(200);
    assert_hidden("the attempt", &attempt.to_string());
    let uri = attempt["uri"].as_str().expect("uri");
    assert!(uri.contains("token=***") && uri.contains("key=***") && uri.contains("page=1"), "{uri}");
    assert_eq!(attempt["request_headers"]["x-api-key"], "***");
    assert_eq!(attempt["request_headers"]["authorization"], "***");
    assert_eq!(attempt["request_headers"]["x-tenant"], "acme");
    assert_hidden("the attempt list", &reader.get("/v1/attempts").await.expect(200).to_string());

    // A test send answers the same way.
    let tried = admin.post(&format!("/v1/configurations/{id}/test"), &json!({})).await.expect(200);
    assert_hidden("the test send", &tried.to_string());
    assert!(tried["attempt"]["uri"].as_str().is_some_and(|u| u.contains("token=***")), "{tried}");
    assert_real_values_arrive(&rx, 2).await;

    // An update that leaves them out keeps them (the endpoint, required,
    // sent back as shown).
    let version = view["version"].as_i64().expect("version");
    let left_out = json!({
        "name": "erp",
        "description": "renamed nothing, changed the description",
        "endpoint": view["endpoint"],
        "event_types": ["order.*"],
        "authorization": {"type": "bearer"},
    });
    let updated = admin.put(&format!("/v1/configurations/{id}"), version, &left_out).await.expect(200);
    assert_hidden("the update's answer", &updated.to_string());
    admin.ingest(&[event_body("evt-2", "order.paid", "emea", json!({"amount": 2}))]).await;
    delivered(&admin, "evt-2").await;
    assert_real_values_arrive(&rx, 3).await;

    // The reader's view sent back as it is, `***` and all, keeps them too.
    let mut echoed = reader.get(&format!("/v1/configurations/{id}")).await.expect(200);
    let version = echoed["version"].as_i64().expect("version");
    let obj = echoed.as_object_mut().expect("object");
    for shown_only in ["id", "version", "status", "disabled_reason", "created_at", "updated_at", "trust_all_tls", "deadline_ms"] {
        obj.remove(shown_only);
    }
    obj.insert("authorization".into(), json!({"type": "bearer", "token": "***"}));
    admin.put(&format!("/v1/configurations/{id}"), version, &echoed).await.expect(200);
    admin.ingest(&[event_body("evt-3", "order.paid", "emea", json!({"amount": 3}))]).await;
    delivered(&admin, "evt-3").await;
    assert_real_values_arrive(&rx, 4).await;

    // `***` where nothing is stored is refused, not sent.
    let version = reader.get(&format!("/v1/configurations/{id}")).await.expect(200)["version"].as_i64().expect("version");
    let mut unknown = left_out.clone();
    unknown["headers"] = json!({"X-Other-Token": "***"});
    admin.put(&format!("/v1/configurations/{id}"), version, &unknown).await.expect_error(422, "invalid_header");

    // Credentials in the URL's userinfo are refused at save, without echoing them.
    let mut userinfo = spec(&rx);
    userinfo["name"] = json!("userinfo");
    userinfo["endpoint"] = json!(format!("http://user:{URL_TOKEN}@{}/hook", rx.url.trim_start_matches("http://")));
    let refused = admin.post("/v1/configurations", &userinfo).await.expect_error(422, "invalid_endpoint");
    assert_hidden("the refusal", &refused.to_string());

    // Nor do the engine's own logs (at debug) show any.
    assert_hidden("the engine's log", &engine.log());
}

/// The engine's database, opened behind its back.
enum Db {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Db {
    async fn open(engine: &Engine) -> Db {
        match engine.database_url() {
            Some(url) => Db::Postgres(sqlx::PgConnection::connect(url).await.expect("the engine's PostgreSQL database")),
            None => {
                let path = engine.data_dir().join("data").join("sluice.db");
                let url = format!("sqlite://{}", path.display());
                Db::Sqlite(sqlx::SqliteConnection::connect(&url).await.expect("the engine's SQLite file"))
            }
        }
    }

    async fn specs(&mut self) -> Vec<String> {
        let sql = "SELECT spec FROM configurations";
        match self {
            Db::Sqlite(c) => sqlx::query(sql).fetch_all(c).await.expect("specs").iter().map(|r| r.get(0)).collect(),
            Db::Postgres(c) => sqlx::query(sql).fetch_all(c).await.expect("specs").iter().map(|r| r.get(0)).collect(),
        }
    }

    async fn compiled(&mut self, script: &str) -> Vec<u8> {
        match self {
            Db::Sqlite(c) => {
                sqlx::query("SELECT compiled FROM scripts WHERE id = ?").bind(script).fetch_one(c).await.expect("script").get(0)
            }
            Db::Postgres(c) => {
                sqlx::query("SELECT compiled FROM scripts WHERE id = $1").bind(script).fetch_one(c).await.expect("script").get(0)
            }
        }
    }

    async fn set_compiled(&mut self, script: &str, code: &[u8]) {
        let done = match self {
            Db::Sqlite(c) => sqlx::query("UPDATE scripts SET compiled = ? WHERE id = ?")
                .bind(code)
                .bind(script)
                .execute(c)
                .await
                .map(|r| r.rows_affected()),
            Db::Postgres(c) => sqlx::query("UPDATE scripts SET compiled = $1 WHERE id = $2")
                .bind(code)
                .bind(script)
                .execute(c)
                .await
                .map(|r| r.rows_affected()),
        };
        assert_eq!(done.expect("update the script row"), 1);
    }

    async fn close(self) {
        let _ = match self {
            Db::Sqlite(c) => c.close().await,
            Db::Postgres(c) => c.close().await,
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_rows_hold_no_secret_in_plaintext_and_survive_a_restart() {
    let mut engine = Engine::start().await;
    let admin = engine.admin();
    let rx = Receiver::start().await;
    admin.enabled_config(spec(&rx)).await;
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["client.test".to_owned()]).expect("params").self_signed(&key).expect("certificate");
    let mut with_cert = spec(&rx);
    with_cert["name"] = json!("mtls");
    with_cert["event_types"] = json!(["never.*"]);
    with_cert["authorization"] =
        json!({"type": "client_certificate", "certificate_pem": cert.pem(), "private_key_pem": key.serialize_pem()});
    admin.post("/v1/configurations", &with_cert).await.expect(201);

    let mut db = Db::open(&engine).await;
    let specs = db.specs().await;
    assert_eq!(specs.len(), 2);
    for stored in &specs {
        assert!(stored.starts_with("sealed:v1:"), "{stored}");
        assert_hidden("a configuration row", stored);
        assert!(!stored.contains("PRIVATE KEY") && !stored.contains("whsec_"), "{stored}");
    }
    db.close().await;

    let key_file = engine.data_dir().join("data").join("secret.key");
    if engine.database_url().is_none() {
        // Zero set-up: a key was made on first start, private, and said so.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&key_file).expect("the generated key file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(engine.log().contains("generated one for sealing secrets at rest"), "{}", engine.log());
    } else {
        assert!(!key_file.exists(), "PostgreSQL nodes are given their key");
    }
    let key_text = std::fs::read_to_string(&key_file).unwrap_or_default();

    // After a restart the same key opens the rows and deliveries carry the secrets.
    engine.restart().await;
    let admin = engine.admin();
    admin.ingest(&[event_body("evt-1", "order.paid", "emea", json!({}))]).await;
    delivered(&admin, "evt-1").await;
    assert_real_values_arrive(&rx, 1).await;
    assert_eq!(std::fs::read_to_string(&key_file).unwrap_or_default(), key_text, "the key file is kept");
    let log = engine.log();
    assert_hidden("the engine's log", &log);
    if !key_text.is_empty() {
        assert!(!log.contains(key_text.trim()), "the log shows the secret key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_node_without_a_secret_key_refuses_to_start() {
    let database = PostgresDatabase::create().await;
    let dir = tempfile::tempdir().expect("data directory");
    let run = tokio::process::Command::new(sluice_tests::engine::binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("SLUICE_DATABASE_URL", database.url())
        .env("SLUICE_ADMIN_KEY", sluice_tests::engine::ADMIN_KEY)
        .env_remove("SLUICE_SECRET_KEY")
        .env_remove("SLUICE_OLD_SECRET_KEYS")
        .current_dir(dir.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run).await.expect("it stops at once").expect("the engine runs");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("SLUICE_SECRET_KEY"), "{said}");
    assert!(!dir.path().join("secret.key").exists(), "no node-local key for a cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_code_planted_in_the_database_is_not_loaded() {
    let mut engine = Engine::start().await;
    let admin = engine.admin();
    let rx = Receiver::start().await;
    // `reshape` delivers every event in the receiver's own shape;
    // `paid-orders` skips all but `order.paid`. Planting the second's code
    // in the first's row would silently filter `order.created` events.
    let reshape = admin.upload_script("reshape").await;
    let paid_orders = admin.upload_script("paid-orders").await;
    admin
        .enabled_config(json!({
            "name": "reshaped",
            "endpoint": rx.url,
            "event_types": ["order.*"],
            "script": {"id": reshape, "params": {"category": "OrderEvents"}},
        }))
        .await;

    let mut db = Db::open(&engine).await;
    let framed = db.compiled(&paid_orders).await;
    // Tagged, then wasmtime's code (an ELF image).
    let raw = framed.get(44..).expect("a tag, then the code").to_vec();
    assert!(raw.starts_with(b"\x7fELF"), "the stored code is tagged machine code");
    db.close().await;

    for (n, planted) in [raw, framed].into_iter().enumerate() {
        engine.kill().await;
        let mut db = Db::open(&engine).await;
        db.set_compiled(&reshape, &planted).await;
        db.close().await;
        engine.restart().await;
        let admin = engine.admin();
        let event = format!("evt-{n}");
        admin.ingest(&[event_body(&event, "order.created", "emea", json!({"id": n}))]).await;
        let found =
            admin.wait_for(&format!("/v1/events/{event}"), |e| e["deliveries"][0]["status"].as_str().is_some_and(|s| s != "pending")).await;
        assert_eq!(found["deliveries"][0]["status"], "succeeded", "planted code #{n} ran: {found}");
        let got = rx.wait_for(n + 1).await;
        assert_eq!(got[n].json()["EventType"], "OrderCreated", "the uploaded script's own decision");
    }
    assert!(engine.log().contains("stored compiled code refused"), "{}", engine.log());
}
