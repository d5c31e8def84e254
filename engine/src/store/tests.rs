//! The store's behaviour, run against both backends: a SQLite file in a
//! scratch directory, and a fresh database on the PostgreSQL server at
//! `SLUICE_TEST_POSTGRES` (default: the local one). Neither skips itself:
//! without a PostgreSQL server the PostgreSQL tests fail, saying so.

use std::time::Duration;

use super::*;
use crate::model::event::EventInput;
use crate::pipeline::retention::{self, Retention};

const DAY: i64 = 24 * 3600 * 1000;

/// Runs an async test body once per backend, as two tests.
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$body(super::Scratch::sqlite().await).await;
            }
            #[tokio::test]
            async fn postgres() {
                super::$body(super::Scratch::postgres().await).await;
            }
        }
    };
}

/// An event as the API would store it: `payload` is JSON text.
fn event_of(id: &str, kind: &str, payload: &str) -> Event {
    let json = format!(
        r#"{{"id": "{id}", "type": "{kind}", "organization_unit": "emea", "occurred_at": "2026-11-22T11:30:00Z", "payload": {payload}}}"#
    );
    EventInput::from_json(&json).unwrap().validate(|| unreachable!("the id is given")).unwrap()
}

/// The keys every scratch store (and every node of one) shares.
fn test_keys() -> Arc<Keyring> {
    Arc::new(Keyring::new(&"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=".parse().unwrap(), &[]))
}

fn postgres_server() -> String {
    std::env::var("SLUICE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A store of its own, removed afterwards.
struct Scratch {
    store: Store,
    place: Place,
}

enum Place {
    Dir(tempfile::TempDir),
    /// The server URL and the database's name.
    Database(String, String),
}

impl Scratch {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("sluice.db"), test_keys()).await.unwrap();
        Self { store, place: Place::Dir(dir) }
    }

    async fn postgres() -> Self {
        let server = postgres_server();
        let name = format!("sluice_store_test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("the PostgreSQL tests need a server at {server} (set SLUICE_TEST_POSTGRES): {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
        let place = Place::Database(server, name);
        let store = Store::open_postgres(&Self::url_of(&place), NodeId::parse("node-a").unwrap(), test_keys()).await.unwrap();
        Self { store, place }
    }

    fn url_of(place: &Place) -> String {
        match place {
            Place::Database(server, name) => {
                let mut url = reqwest::Url::parse(server).unwrap();
                url.set_path(name);
                url.to_string()
            }
            Place::Dir(_) => unreachable!("a SQLite scratch store has no URL"),
        }
    }

    /// Another node on the same PostgreSQL database.
    async fn node(&self, id: &str) -> Store {
        Store::open_postgres(&Self::url_of(&self.place), NodeId::parse(id).unwrap(), test_keys()).await.unwrap()
    }

    async fn tenant(&self, name: &str) -> TenantId {
        self.store.create_tenant(name, None).await.unwrap().id
    }

    /// Runs a statement behind the store's back.
    async fn execute(&self, sql: &str) {
        match &self.store.backend {
            Backend::Sqlite(db) => db
                .write({
                    let sql = sql.to_owned();
                    move |c| Ok(c.execute_batch(&sql)?)
                })
                .await
                .unwrap(),
            Backend::Postgres(db) => {
                sqlx::query(sql).execute(&db.pool).await.unwrap();
            }
        }
    }

    async fn count(&self, table: &str) -> i64 {
        self.count_where(table, "TRUE").await
    }

    /// The rows of `table` that meet the SQL condition `cond`.
    async fn count_where(&self, table: &str, cond: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {cond}");
        match &self.store.backend {
            Backend::Sqlite(db) => sqlx::query_scalar(&sql).fetch_one(&db.read).await.unwrap(),
            Backend::Postgres(db) => sqlx::query_scalar(&sql).fetch_one(&db.pool).await.unwrap(),
        }
    }

    async fn ingest(&self, tenant: &TenantId, id: &str) -> i64 {
        let event = event_of(id, "order.paid", "{}");
        match self.store.ingest(tenant, None, vec![event]).await.unwrap()[..] {
            [Ingested::Stored { seq }] => seq,
            ref other => panic!("{other:?}"),
        }
    }

    /// Backdates an event: the API never does.
    async fn received_at(&self, tenant: &TenantId, id: &str, at: i64) {
        match &self.store.backend {
            Backend::Sqlite(db) => {
                let (tenant, id) = (tenant.to_string(), id.to_owned());
                db.write(move |c| {
                    Ok(c.execute("UPDATE events SET received_at = ?1 WHERE tenant_id = ?2 AND id = ?3", rusqlite::params![at, tenant, id])?)
                })
                .await
                .unwrap();
            }
            Backend::Postgres(db) => {
                sqlx::query("UPDATE events SET received_at = $1 WHERE tenant_id = $2 AND id = $3")
                    .bind(at)
                    .bind(tenant.as_str())
                    .bind(id)
                    .execute(&db.pool)
                    .await
                    .unwrap();
            }
        }
    }

    async fn route(&self, tenant: &TenantId, seq: i64, config: &ConfigId, status: DeliveryStatus) -> DeliveryId {
        let d = delivery(config, status);
        let id = d.id.clone();
        let recorded = self.store.record_routing(vec![Routed::written(tenant.clone(), seq, vec![d])]).await.unwrap();
        assert_eq!(recorded, vec![true]);
        id
    }

    async fn attempt(&self, tenant: &TenantId, delivery: &DeliveryId, number: i64, started_at: i64, outcome: AttemptOutcome) -> AttemptId {
        self.attempt_to(&self.store, tenant, delivery, &ConfigId::generate(), number, started_at, outcome).await.0
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt_to(
        &self,
        store: &Store,
        tenant: &TenantId,
        delivery: &DeliveryId,
        config: &ConfigId,
        number: i64,
        started_at: i64,
        outcome: AttemptOutcome,
    ) -> (AttemptId, FailureStreak) {
        let attempt = new_attempt(tenant, delivery, config, number, started_at, outcome);
        let id = attempt.id.clone();
        (id, logged(store.record_attempt(attempt).await.unwrap()))
    }

    /// An enabled configuration without a script.
    async fn config(&self, tenant: &TenantId, name: &str) -> ConfigId {
        let id = ConfigId::generate();
        let write = ConfigWrite { name: name.into(), script_id: None, script_params: "{}".into(), spec: "{}".into(), changed_by: None };
        self.store.insert_config(tenant, &id, &write).await.unwrap();
        self.store.set_config_enabled(tenant, &id, None, true, None).await.unwrap();
        id
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        match &self.place {
            // Removed by its own drop.
            Place::Dir(_) => {}
            Place::Database(server, name) => {
                // Best effort, on a thread of its own: Drop cannot await.
                let (server, name) = (server.clone(), name.clone());
                let _ = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                    rt.block_on(async {
                        if let Ok(mut c) = <sqlx::PgConnection as sqlx::Connection>::connect(&server).await {
                            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut c).await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

/// A script row to store (its version is assigned on insert).
fn script_record(name: &str) -> ScriptRecord {
    ScriptRecord {
        id: ScriptId::generate(),
        name: name.into(),
        version: 0,
        sha256: "0".repeat(64),
        size: 1,
        wit_version: "0.1.0".into(),
        created_at: now_ms(),
        created_by: None,
    }
}

fn delivery(config: &ConfigId, status: DeliveryStatus) -> NewDelivery {
    NewDelivery {
        id: DeliveryId::generate(),
        config_id: config.clone(),
        config_version: 1,
        status,
        reason: None,
        error_kind: None,
        script_logs: None,
        body: Some("{\"decided\":true}".into()),
        headers: None,
        undecided: false,
        next_attempt_at: (status == DeliveryStatus::Pending).then(now_ms),
        lease_until: None,
        fuel_used: Some(4321),
    }
}

/// A column's raw value (text or blob), read behind the store's back.
enum Raw {
    Text(String),
    Blob(Vec<u8>),
}

impl Scratch {
    /// What `table.column` holds for the row `id`, as the database has it.
    async fn raw(&self, table: &str, column: &str, id: &str) -> Raw {
        let sql = |mark: &str| format!("SELECT {column} FROM {table} WHERE id = {mark}");
        let row = match &self.store.backend {
            Backend::Sqlite(db) => sqlx::query(&sql("?")).bind(id).fetch_one(&db.read).await.map(RawRow::Sqlite),
            Backend::Postgres(db) => sqlx::query(&sql("$1")).bind(id).fetch_one(&db.pool).await.map(RawRow::Postgres),
        };
        row.unwrap().get()
    }

    /// Overwrites `table.column` of row `id`, as someone with access to the
    /// database (and not to the keys) could.
    async fn overwrite(&self, table: &str, column: &str, id: &str, value: Raw) {
        match &self.place {
            Place::Dir(dir) => {
                let db = rusqlite::Connection::open(dir.path().join("sluice.db")).unwrap();
                db.busy_timeout(Duration::from_secs(10)).unwrap();
                let sql = format!("UPDATE {table} SET {column} = ?1 WHERE id = ?2");
                let n = match value {
                    Raw::Text(t) => db.execute(&sql, rusqlite::params![t, id]),
                    Raw::Blob(b) => db.execute(&sql, rusqlite::params![b, id]),
                };
                assert_eq!(n.unwrap(), 1);
            }
            Place::Database(..) => {
                let Backend::Postgres(db) = &self.store.backend else { unreachable!() };
                let sql = format!("UPDATE {table} SET {column} = $1 WHERE id = $2");
                let q = match value {
                    Raw::Text(t) => sqlx::query(&sql).bind(t).bind(id),
                    Raw::Blob(b) => sqlx::query(&sql).bind(b).bind(id),
                };
                assert_eq!(q.execute(&db.pool).await.unwrap().rows_affected(), 1);
            }
        }
    }

    /// The same database seen through other keys.
    fn with_keys(&self, keys: Arc<Keyring>) -> Store {
        Store { backend: self.store.backend.clone(), keys, unwritten: Arc::default() }
    }
}

enum RawRow {
    Sqlite(sqlx::sqlite::SqliteRow),
    Postgres(sqlx::postgres::PgRow),
}

impl RawRow {
    fn get(self) -> Raw {
        use sqlx::Row as _;
        match self {
            Self::Sqlite(r) => r.try_get::<String, _>(0).map(Raw::Text).unwrap_or_else(|_| Raw::Blob(r.get(0))),
            Self::Postgres(r) => r.try_get::<String, _>(0).map(Raw::Text).unwrap_or_else(|_| Raw::Blob(r.get(0))),
        }
    }
}

impl Raw {
    fn text(self) -> String {
        match self {
            Raw::Text(t) => t,
            Raw::Blob(b) => panic!("a blob of {} bytes, not text", b.len()),
        }
    }
    fn blob(self) -> Vec<u8> {
        match self {
            Raw::Blob(b) => b,
            Raw::Text(t) => panic!("text, not a blob: {t}"),
        }
    }
}

both_backends!(configurations_are_sealed_at_rest_and_open_only_in_their_row, sealed_configs);
async fn sealed_configs(s: Scratch) {
    let tenant = s.tenant("t").await;
    let spec = r#"{"authorization":{"type":"bearer","token":"tok-PLAIN-123"},"signing":{"secret":"whsec_PLAINsecret"}}"#;
    let write =
        |spec: &str| ConfigWrite { name: "erp".into(), script_id: None, script_params: "{}".into(), spec: spec.into(), changed_by: None };
    let (a, b) = (ConfigId::generate(), ConfigId::generate());
    assert_eq!(s.store.insert_config(&tenant, &a, &write(spec)).await.unwrap().spec, spec);
    s.store.insert_config(&tenant, &b, &ConfigWrite { name: "other".into(), ..write("{}") }).await.unwrap();

    let stored = s.raw("configurations", "spec", a.as_str()).await.text();
    assert!(Keyring::is_sealed(&stored), "{stored}");
    assert!(!stored.contains("PLAIN"), "{stored}");
    assert_eq!(s.store.get_config(&tenant, &a).await.unwrap().spec, spec);
    assert_eq!(s.store.enabled_configs(&tenant).await.unwrap().len(), 0);
    s.store.set_config_enabled(&tenant, &a, None, true, None).await.unwrap();
    assert_eq!(s.store.enabled_configs(&tenant).await.unwrap()[0].spec, spec);
    let page = s.store.list_configs(&tenant, &PageRequest { limit: 10, cursor: None }).await.unwrap();
    assert!(page.items.iter().any(|r| r.spec == spec));

    // Moved into another row, it does not open there.
    s.overwrite("configurations", "spec", b.as_str(), Raw::Text(stored.clone())).await;
    assert!(matches!(s.store.get_config(&tenant, &b).await, Err(StoreError::Corrupt(_))));
    // Stored before sealing existed: read as it is.
    s.overwrite("configurations", "spec", b.as_str(), Raw::Text("{}".into())).await;
    assert_eq!(s.store.get_config(&tenant, &b).await.unwrap().spec, "{}");

    // Another key does not open it; a rotation reads it and rewrites it with the new key.
    let new_key: crate::model::secrets::MasterKey = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=".parse().unwrap();
    let stranger = s.with_keys(Arc::new(Keyring::new(&new_key, &[])));
    let err = stranger.get_config(&tenant, &a).await.unwrap_err();
    assert!(err.to_string().contains("not among the configured secret keys") && !err.to_string().contains("PLAIN"), "{err}");
    let old_key: crate::model::secrets::MasterKey = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=".parse().unwrap();
    let rotated = s.with_keys(Arc::new(Keyring::new(&new_key, &[old_key])));
    let current = rotated.get_config(&tenant, &a).await.unwrap();
    assert_eq!(current.spec, spec);
    rotated.update_config(&tenant, &a, current.version, &write(spec)).await.unwrap();
    let resealed = s.raw("configurations", "spec", a.as_str()).await.text();
    assert_eq!(Keyring::sealed_with(&resealed), Some(Keyring::new(&new_key, &[]).current_id()));
    assert_eq!(stranger.get_config(&tenant, &a).await.unwrap().spec, spec, "the new key alone reads it now");

    // A start-up pass moves every row to the current key without a version
    // change: the plaintext one, and one sealed under the old key.
    let c = ConfigId::generate();
    s.store.insert_config(&tenant, &c, &ConfigWrite { name: "third".into(), ..write(spec) }).await.unwrap();
    let version = s.store.get_config(&tenant, &c).await.unwrap().version;
    assert_eq!(rotated.reseal_configs().await.unwrap(), Resealed { resealed: 2, unreadable: 0 });
    assert_eq!(rotated.reseal_configs().await.unwrap(), Resealed::default(), "nothing left to do");
    for id in [&a, &b, &c] {
        let stored = s.raw("configurations", "spec", id.as_str()).await.text();
        assert_eq!(Keyring::sealed_with(&stored), Some(rotated.keys.current_id()), "{id}");
        stranger.get_config(&tenant, id).await.unwrap();
    }
    assert_eq!(stranger.get_config(&tenant, &c).await.unwrap().version, version);
    // A row no held key opens is left as it is, and counted.
    assert_eq!(s.store.reseal_configs().await.unwrap(), Resealed { resealed: 0, unreadable: 3 });
}

both_backends!(compiled_code_is_handed_out_only_with_its_tag, tagged_code);
async fn tagged_code(s: Scratch) {
    let tenant = s.tenant("t").await;
    let (bytes, code) = (b"\0asm uploaded bytes".to_vec(), b"\x7fELF native code".to_vec());
    let record = ScriptRecord { size: bytes.len() as i64, ..script_record("s") };
    s.store.insert_script(&tenant, &record, &bytes, Some(&code)).await.unwrap();
    let id = record.id.as_str();
    assert_eq!(s.store.script_code(&tenant, &record.id).await.unwrap().compiled, Some(code.clone()));
    let framed = s.raw("scripts", "compiled", id).await.blob();
    assert!(framed.ends_with(&code) && framed.len() > code.len(), "stored with its tag");

    // Native code planted in the database, or altered there, is not handed out.
    let evil = b"\x7fELF planted code".to_vec();
    s.overwrite("scripts", "compiled", id, Raw::Blob(evil.clone())).await;
    let read = s.store.script_code(&tenant, &record.id).await.unwrap();
    assert_eq!((read.compiled, read.bytes), (None, bytes.clone()), "untagged: compile the bytes");
    let mut altered = framed.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    s.overwrite("scripts", "compiled", id, Raw::Blob(altered)).await;
    assert_eq!(s.store.script_code(&tenant, &record.id).await.unwrap().compiled, None, "altered code");
    // A tag made for other uploaded bytes does not vouch for these.
    s.overwrite("scripts", "compiled", id, Raw::Blob(framed.clone())).await;
    s.overwrite("scripts", "bytes", id, Raw::Blob(b"\0asm other bytes".to_vec())).await;
    assert_eq!(s.store.script_code(&tenant, &record.id).await.unwrap().compiled, None, "other bytes");
    s.overwrite("scripts", "bytes", id, Raw::Blob(bytes)).await;
    let stranger = s.with_keys(Arc::new(Keyring::new(&"ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=".parse().unwrap(), &[])));
    assert_eq!(stranger.script_code(&tenant, &record.id).await.unwrap().compiled, None, "tagged under another key");
    assert_eq!(s.store.script_code(&tenant, &record.id).await.unwrap().compiled, Some(code), "restored");
}

/// For [`Scratch::count_where`] on `attempts`: those that still hold a body.
const HOLDS_BODIES: &str = "request_body IS NOT NULL OR response_body IS NOT NULL";

both_backends!(the_purge_removes_exactly_what_is_past_each_window, purge);
async fn purge(s: Scratch) {
    let store = &s.store;
    let (tenant, config) = (s.tenant("t").await, ConfigId::generate());
    let now = now_ms();

    // Old and delivered: goes, with its delivery, attempt and payload.
    let seq = s.ingest(&tenant, "old-done").await;
    let d_done = s.route(&tenant, seq, &config, DeliveryStatus::Pending).await;
    let a_done = s.attempt(&tenant, &d_done, 1, now - 70 * DAY, AttemptOutcome::Succeeded).await;
    s.received_at(&tenant, "old-done", now - 70 * DAY).await;
    // Old and filtered (no attempt): goes.
    let seq = s.ingest(&tenant, "old-filtered").await;
    let d_filtered = s.route(&tenant, seq, &config, DeliveryStatus::Filtered).await;
    s.received_at(&tenant, "old-filtered", now - 61 * DAY).await;
    // Old but a delivery still pending (retrying): kept, only its old payload goes.
    let seq = s.ingest(&tenant, "old-pending").await;
    let d_pending = s.route(&tenant, seq, &config, DeliveryStatus::Pending).await;
    let a_pending = s.attempt(&tenant, &d_pending, 1, now - 61 * DAY, AttemptOutcome::Retry).await;
    s.received_at(&tenant, "old-pending", now - 61 * DAY).await;
    // Old but never routed: kept.
    s.ingest(&tenant, "old-unrouted").await;
    s.received_at(&tenant, "old-unrouted", now - 90 * DAY).await;
    // Within the event window: kept; its payload older than 15 days goes, the newer one stays.
    let seq = s.ingest(&tenant, "recent").await;
    let d_recent = s.route(&tenant, seq, &config, DeliveryStatus::Pending).await;
    let a_recent_old = s.attempt(&tenant, &d_recent, 1, now - 20 * DAY, AttemptOutcome::Retry).await;
    let a_recent_new = s.attempt(&tenant, &d_recent, 2, now - DAY, AttemptOutcome::Succeeded).await;
    s.received_at(&tenant, "recent", now - 20 * DAY).await;
    // Just inside both windows, to the millisecond.
    let seq = s.ingest(&tenant, "edge").await;
    let d_edge = s.route(&tenant, seq, &config, DeliveryStatus::Pending).await;
    let a_edge = s.attempt(&tenant, &d_edge, 1, now - 15 * DAY, AttemptOutcome::Succeeded).await;
    s.received_at(&tenant, "edge", now - 60 * DAY).await;

    // Chunks are bounded: one row, then one event, oldest first.
    let first = store.purge_payloads(now - 15 * DAY, 1, &PayloadCursor::default()).await.unwrap();
    assert_eq!((first.payloads, first.resume.is_some()), (1, true));
    assert!(store.get_attempt(&tenant, &a_done).await.unwrap().request_body.is_none(), "the oldest payload went first");
    // Past old-unrouted (kept), one event: old-done.
    let (first, resume) = store.purge_events(now - 60 * DAY, 1, EventCursor::from(i64::MIN)).await.unwrap();
    assert_eq!(first, PurgedEvents { events: 1, deliveries: 1, attempts: 1, payloads: 0 });
    assert!(resume.is_some());
    assert!(matches!(store.get_event(&tenant, "old-done").await, Err(StoreError::NotFound)));

    let retention =
        Retention { events: Duration::from_secs(60 * 24 * 3600), payloads: Duration::from_secs(15 * 24 * 3600), ..Retention::default() };
    let rest = retention::purge_once(store, &retention, now).await.unwrap();
    assert_eq!(rest.payloads, 2, "old-pending's and recent's first payloads");
    assert_eq!(rest.events, PurgedEvents { events: 1, deliveries: 1, attempts: 0, payloads: 0 }, "old-filtered");

    for gone in ["old-done", "old-filtered"] {
        assert!(matches!(store.get_event(&tenant, gone).await, Err(StoreError::NotFound)), "{gone}");
    }
    for kept in ["old-pending", "old-unrouted", "recent", "edge"] {
        store.get_event(&tenant, kept).await.unwrap_or_else(|e| panic!("{kept}: {e}"));
    }
    for gone in [&d_done, &d_filtered] {
        assert!(matches!(store.get_delivery(&tenant, gone).await, Err(StoreError::NotFound)));
    }
    for kept in [&d_pending, &d_recent, &d_edge] {
        store.get_delivery(&tenant, kept).await.unwrap();
    }
    assert!(matches!(store.get_attempt(&tenant, &a_done).await, Err(StoreError::NotFound)));
    for (attempt, body_kept) in [(&a_pending, false), (&a_recent_old, false), (&a_recent_new, true), (&a_edge, true)] {
        let a = store.get_attempt(&tenant, attempt).await.unwrap();
        assert_eq!(a.request_body.is_some(), body_kept, "{attempt}");
        assert_eq!(a.response_body.is_some(), body_kept, "{attempt}");
        assert_eq!(a.request_headers["webhook-id"], "x", "headers stay with the attempt");
    }
    assert_eq!(
        (s.count("events").await, s.count("deliveries").await, s.count("attempts").await, s.count_where("attempts", HOLDS_BODIES).await),
        (4, 3, 4, 2)
    );

    // Nothing more at the same moment; a hundred days later, all but the pending and the unrouted.
    assert_eq!(retention::purge_once(store, &retention, now).await.unwrap(), retention::Purged::default());
    let later = retention::purge_once(store, &retention, now + 100 * DAY).await.unwrap();
    assert_eq!(later.events.events, 2, "recent and edge");
    assert_eq!(later.payloads, 2);
    assert_eq!(
        (s.count("events").await, s.count("deliveries").await, s.count("attempts").await, s.count_where("attempts", HOLDS_BODIES).await),
        (2, 1, 1, 0)
    );
}

both_backends!(the_payload_purge_walks_every_tenant_and_goes_on_where_it_stopped, payload_walk);
async fn payload_walk(s: Scratch) {
    let store = &s.store;
    let (a, b) = (s.tenant("a").await, s.tenant("b").await);
    let now = now_ms();
    let (mut old, mut recent) = (Vec::new(), Vec::new());
    for (tenant, n) in [(&a, 3), (&b, 2)] {
        let seq = s.ingest(tenant, "e").await;
        let d = s.route(tenant, seq, &ConfigId::generate(), DeliveryStatus::Pending).await;
        for number in 1..=n {
            old.push((tenant.clone(), s.attempt(tenant, &d, number, now - 20 * DAY, AttemptOutcome::Retry).await));
        }
        recent.push((tenant.clone(), s.attempt(tenant, &d, n + 1, now - DAY, AttemptOutcome::Retry).await));
    }

    // Two attempts walked per chunk: `a`'s first two; its third, then `b`'s
    // first; `b`'s second, and every walk has met a recent attempt.
    let mut chunks = Vec::new();
    let mut from = PayloadCursor::default();
    loop {
        let chunk = store.purge_payloads(now - 15 * DAY, 2, &from).await.unwrap();
        chunks.push((chunk.payloads, chunk.resume.is_none()));
        match chunk.resume {
            Some(next) if chunks.len() < 5 => from = next,
            _ => break,
        }
    }
    assert_eq!(chunks, [(2, false), (2, false), (1, true)]);
    for (tenant, attempt) in &old {
        assert!(store.get_attempt(tenant, attempt).await.unwrap().request_body.is_none(), "{attempt}");
    }
    for (tenant, attempt) in &recent {
        assert!(store.get_attempt(tenant, attempt).await.unwrap().request_body.is_some(), "{attempt}");
    }
    // Each walk stopped before its recent attempt, and starts there again.
    assert_eq!(s.count("payload_purges").await, 2);
    let start = PayloadCursor::default();
    let done = |payloads| PurgedPayloads { payloads, resume: None };
    // `a` and `b`, each a visit of a share of 3, and no tenant after them.
    assert_eq!(store.purge_payloads(now - 15 * DAY, 3, &start).await.unwrap(), done(0));
    assert_eq!(store.purge_payloads(now + DAY, 10, &start).await.unwrap(), done(2));
    assert_eq!(s.count_where("attempts", HOLDS_BODIES).await, 0);
}

both_backends!(the_event_purge_reads_kept_events_once_a_purge_not_once_a_chunk, purge_past_kept);
async fn purge_past_kept(s: Scratch) {
    let store = &s.store;
    let tenant = s.tenant("a").await;
    let config = s.config(&tenant, "c").await;
    let now = now_ms();
    // 45 old events kept (never routed), then three old ones that go.
    let kept: Vec<String> = (0..45).map(|i| format!("k{i:02}")).collect();
    let names = kept.iter().map(String::as_str).chain(["p1", "p2", "p3"]);
    for (i, name) in names.enumerate() {
        let seq = s.ingest(&tenant, name).await;
        if name.starts_with('p') {
            s.route(&tenant, seq, &config, DeliveryStatus::Filtered).await;
        }
        s.received_at(&tenant, name, now - 90 * DAY + i as i64).await;
    }
    s.ingest(&tenant, "recent").await;

    let (mut from, mut chunks) = (EventCursor::from(i64::MIN), Vec::new());
    loop {
        let (chunk, resume) = store.purge_events(now - 60 * DAY, 1, from).await.unwrap();
        chunks.push(chunk.events);
        match resume {
            Some(next) if chunks.len() < 10 => from = next,
            _ => break,
        }
    }
    // One event a chunk, at most 20 read, each chunk from where the last
    // stopped: k00-k19, k20-k39, k40-k44 and p1, then p2, then p3.
    assert_eq!(chunks, [0, 0, 1, 1, 1]);
    for kept in kept.iter().map(String::as_str).chain(["recent"]) {
        store.get_event(&tenant, kept).await.unwrap_or_else(|e| panic!("{kept}: {e}"));
    }
    for gone in ["p1", "p2", "p3"] {
        assert!(matches!(store.get_event(&tenant, gone).await, Err(StoreError::NotFound)), "{gone}");
    }
}

both_backends!(a_payload_purge_chunk_visits_a_bounded_number_of_tenants_and_the_next_goes_on_after_them, payload_walk_many);
async fn payload_walk_many(s: Scratch) {
    let store = &s.store;
    let now = now_ms();
    // Many tenants, one old attempt each: a chunk visits as many as its
    // share, never all of them, and never one twice in a purge.
    let mut old = Vec::new();
    for i in 0..12 {
        let tenant = s.tenant(&format!("t{i:02}")).await;
        let seq = s.ingest(&tenant, "e").await;
        let d = s.route(&tenant, seq, &ConfigId::generate(), DeliveryStatus::Pending).await;
        old.push((tenant.clone(), s.attempt(&tenant, &d, 1, now - 20 * DAY, AttemptOutcome::Retry).await));
    }
    let (mut from, mut chunks) = (PayloadCursor::default(), Vec::new());
    loop {
        let chunk = store.purge_payloads(now - 15 * DAY, 4, &from).await.unwrap();
        chunks.push(chunk.payloads);
        match chunk.resume {
            Some(next) if chunks.len() < 10 => from = next,
            _ => break,
        }
    }
    // Four visits a chunk. The last walk of each reads one attempt, a full
    // fetch, which cannot tell the tenant's last attempt from more to come:
    // the next chunk starts at that tenant again.
    assert_eq!(chunks, [4, 3, 3, 2]);
    for (tenant, attempt) in &old {
        assert!(store.get_attempt(tenant, attempt).await.unwrap().request_body.is_none(), "{attempt}");
    }

    // With nothing left to purge, a chunk still stops at its share.
    let chunk = store.purge_payloads(now - 15 * DAY, 5, &PayloadCursor::default()).await.unwrap();
    assert_eq!(chunk.payloads, 0);
    assert!(chunk.resume.is_some(), "five of twelve tenants visited");
}

both_backends!(added_deliveries_are_recorded_once_and_only_in_their_tenant, added_deliveries);
async fn added_deliveries(s: Scratch) {
    let store = &s.store;
    let (tenant, other) = (s.tenant("t").await, s.tenant("other").await);
    let (config, late_config) = (ConfigId::generate(), ConfigId::generate());
    let seq = s.ingest(&tenant, "e1").await;
    let failed = s.route(&tenant, seq, &config, DeliveryStatus::Failed).await;
    let unrouted = s.ingest(&tenant, "e2").await;
    let add = |config: &ConfigId, seq: i64, replay_of: Option<&DeliveryId>| AddedDelivery {
        event_seq: seq,
        delivery: delivery(config, DeliveryStatus::Pending),
        replay_of: replay_of.cloned(),
    };
    let all = EventCursor::from(0);

    assert_eq!(store.failed_deliveries(&tenant, &config, all, i64::MAX, 10).await.unwrap().len(), 1);
    let replay = add(&config, seq, Some(&failed));
    let replay_id = replay.delivery.id.clone();
    // Two replays of the same delivery racing: the first one counts.
    assert_eq!(store.add_deliveries(&tenant, vec![replay, add(&config, seq, Some(&failed))]).await.unwrap(), vec![true, false]);
    let recorded = store.get_delivery(&tenant, &replay_id).await.unwrap();
    assert_eq!(recorded.replay_of.as_ref(), Some(&failed));
    assert_eq!((recorded.status, recorded.attempts, recorded.body.as_deref()), (DeliveryStatus::Pending, 0, Some("{\"decided\":true}")));
    assert!(store.failed_deliveries(&tenant, &config, all, i64::MAX, 10).await.unwrap().is_empty(), "superseded by the replay");
    // Another tenant cannot add to this tenant's event; nobody adds to an unrouted one.
    assert_eq!(store.add_deliveries(&other, vec![add(&config, seq, Some(&replay_id))]).await.unwrap(), vec![false]);
    assert_eq!(store.add_deliveries(&tenant, vec![add(&late_config, unrouted, None)]).await.unwrap(), vec![false]);

    // The replay fails too: it is now the one to recover.
    s.attempt(&tenant, &replay_id, 1, now_ms(), AttemptOutcome::Failed).await;
    let found = store.failed_deliveries(&tenant, &config, all, i64::MAX, 10).await.unwrap();
    assert_eq!(found.iter().map(|(_, d)| d.id.clone()).collect::<Vec<_>>(), vec![replay_id]);
    assert!(store.failed_deliveries(&other, &config, all, i64::MAX, 10).await.unwrap().is_empty());
    assert!(store.failed_deliveries(&tenant, &config, found[0].0, i64::MAX, 10).await.unwrap().is_empty(), "the cursor moves past it");

    // A late decision for a configuration the event has no delivery to: once.
    let missed = store.events_without_delivery(&tenant, &late_config, all, i64::MAX, 10).await.unwrap();
    assert_eq!(missed.iter().map(|e| e.event.id.as_str()).collect::<Vec<_>>(), vec!["e1"], "routed events only");
    assert_eq!(store.add_deliveries(&tenant, vec![add(&late_config, seq, None)]).await.unwrap(), vec![true]);
    assert_eq!(store.add_deliveries(&tenant, vec![add(&late_config, seq, None)]).await.unwrap(), vec![false]);
    assert!(store.events_without_delivery(&tenant, &late_config, all, i64::MAX, 10).await.unwrap().is_empty());
    assert!(store.events_without_delivery(&other, &ConfigId::generate(), all, i64::MAX, 10).await.unwrap().is_empty());
}

both_backends!(failure_streaks_count_until_a_success_or_enabling, failure_streaks);
async fn failure_streaks(s: Scratch) {
    let tenant = s.tenant("t").await;
    let config = s.config(&tenant, "c").await;
    let seq = s.ingest(&tenant, "e1").await;
    let d = s.route(&tenant, seq, &config, DeliveryStatus::Pending).await;
    let now = now_ms();
    let mut counted = Vec::new();
    for (n, outcome) in [AttemptOutcome::Retry, AttemptOutcome::Retry, AttemptOutcome::Failed].into_iter().enumerate() {
        counted.push(s.attempt_to(&s.store, &tenant, &d, &config, n as i64 + 1, now, outcome).await.1.failures);
    }
    assert_eq!(counted, [1, 2, 3]);
    let (_, streak) = s.attempt_to(&s.store, &tenant, &d, &config, 4, now, AttemptOutcome::Retry).await;
    assert!(streak.since <= now_ms() && streak.since >= now - 60_000, "since the first failure: {streak:?}");
    let (_, after_success) = s.attempt_to(&s.store, &tenant, &d, &config, 5, now, AttemptOutcome::Succeeded).await;
    assert_eq!(after_success, FailureStreak::default());
    assert_eq!(s.attempt_to(&s.store, &tenant, &d, &config, 6, now, AttemptOutcome::Retry).await.1.failures, 1);
    // Disabled for failing, then enabled: a fresh start.
    s.store.set_config_enabled(&tenant, &config, None, false, Some("failing")).await.unwrap();
    s.store.set_config_enabled(&tenant, &config, None, true, None).await.unwrap();
    assert_eq!(s.attempt_to(&s.store, &tenant, &d, &config, 7, now, AttemptOutcome::Retry).await.1.failures, 1);
}

/// The streak after an attempt that was logged (every attempt but the
/// first of a delivery handed on in an ended epoch).
fn logged(recorded: Recorded) -> FailureStreak {
    match recorded {
        Recorded::Logged(streak) => streak,
        Recorded::Void => panic!("the attempt was not written"),
    }
}

/// An attempt of `delivery`, as the deliverer logs it.
fn new_attempt(
    tenant: &TenantId,
    delivery: &DeliveryId,
    config: &ConfigId,
    number: i64,
    started_at: i64,
    outcome: AttemptOutcome,
) -> NewAttempt {
    NewAttempt {
        id: AttemptId::generate(),
        tenant_id: tenant.clone(),
        delivery_id: delivery.clone(),
        config_id: config.clone(),
        number,
        started_at,
        duration_ms: 3,
        method: "POST".into(),
        uri: "http://receiver.test/".into(),
        response_status: Some(if outcome == AttemptOutcome::Succeeded { 200 } else { 503 }),
        outcome,
        error: None,
        request_headers: r#"{"webhook-id":"x"}"#.into(),
        response_headers: Some("{}".into()),
        request_body: Some("{\"request\":1}".into()),
        response_body: Some("[ACK]".into()),
        next_attempt_at: (outcome == AttemptOutcome::Retry).then_some(started_at + 1000),
        unwritten: None,
    }
}

both_backends!(attempts_recorded_together_count_streaks_in_order, streaks_together);
async fn streaks_together(s: Scratch) {
    let tenant = s.tenant("t").await;
    let config = s.config(&tenant, "c").await;
    let now = now_ms();
    let mut deliveries = Vec::new();
    for n in 0..7 {
        let seq = s.ingest(&tenant, &format!("e{n}")).await;
        deliveries.push(s.route(&tenant, seq, &config, DeliveryStatus::Pending).await);
    }
    // A streak of two to begin with.
    for d in &deliveries[..2] {
        s.attempt_to(&s.store, &tenant, d, &config, 1, now, AttemptOutcome::Retry).await;
    }
    // Then five attempts queued at once, which the store may record in one
    // group: each answer must be what recording them one by one would give.
    use AttemptOutcome::{Retry, Succeeded};
    let outcomes = [Succeeded, Retry, Succeeded, Retry, Retry];
    let sent: Vec<_> = deliveries[2..]
        .iter()
        .zip(outcomes)
        .map(|(d, outcome)| {
            let (store, attempt) = (s.store.clone(), new_attempt(&tenant, d, &config, 1, now, outcome));
            tokio::spawn(async move { logged(store.record_attempt(attempt).await.unwrap()).failures })
        })
        .collect();
    let mut streaks = Vec::new();
    for handle in sent {
        streaks.push(handle.await.unwrap());
    }
    assert_eq!(streaks, [0, 1, 0, 1, 2], "a success clears the streak, each failure counts from there");
    let after = s.attempt_to(&s.store, &tenant, &deliveries[0], &config, 2, now, AttemptOutcome::Retry).await.1;
    assert_eq!(after.failures, 3, "the streak carries on after the group");
}

both_backends!(send_slots_space_requests_by_the_interval, send_slots);
async fn send_slots(s: Scratch) {
    let (config, other) = (ConfigId::generate(), ConfigId::generate());
    let interval = Duration::from_secs(10);
    let first = s.store.reserve_send_slot(&config, interval).await.unwrap();
    let second = s.store.reserve_send_slot(&config, interval).await.unwrap();
    let third = s.store.reserve_send_slot(&config, interval).await.unwrap();
    assert!(first < Duration::from_secs(1), "{first:?}");
    // The calls take far less than a second, so each slot is one interval on.
    assert!(second > Duration::from_secs(9) && second <= interval, "{second:?}");
    assert!(third > Duration::from_secs(19) && third <= 2 * interval, "{third:?}");
    assert!(s.store.reserve_send_slot(&other, interval).await.unwrap() < Duration::from_secs(1), "slots are per configuration");
}

both_backends!(free_text_is_stored_as_received, free_text);
async fn free_text(s: Scratch) {
    const ODD: &str = "a\0b\u{FFFF}0c\u{FFFF}";
    let tenant = s.store.create_tenant(&format!("tenant {ODD}"), None).await.unwrap();
    assert_eq!(tenant.name, format!("tenant {ODD}"));
    assert_eq!(s.store.get_tenant(&tenant.id).await.unwrap().name, tenant.name);
    let tenant = tenant.id;
    let key = NewKey {
        id: KeyId::generate(),
        tenant_id: tenant.clone(),
        name: ODD.into(),
        prefix: "sk_test".into(),
        hash: crate::model::auth::KeyHash("h".repeat(64)),
        scopes: vec![],
        expires_at: None,
    };
    assert_eq!(s.store.create_key(key).await.unwrap().name, ODD);
    assert_eq!(s.store.list_keys(&tenant, &PageRequest { limit: 10, cursor: None }).await.unwrap().items[0].name, ODD);
    let script = script_record(ODD);
    s.store.insert_script(&tenant, &script, b"\0", None).await.unwrap();
    assert_eq!(s.store.get_script(&tenant, &script.id).await.unwrap().name, ODD);
    let config = ConfigId::generate();
    let write = ConfigWrite { name: ODD.into(), script_id: None, script_params: "{}".into(), spec: "{}".into(), changed_by: None };
    assert_eq!(s.store.insert_config(&tenant, &config, &write).await.unwrap().name, ODD);
    let disabled = s.store.set_config_enabled(&tenant, &config, None, false, Some(ODD)).await.unwrap();
    assert_eq!(disabled.disabled_reason.as_deref(), Some(ODD));
    let described = s.store.put_event_type(&tenant, "order.paid", Some(ODD)).await.unwrap();
    assert_eq!(described.description.as_deref(), Some(ODD));
    assert_eq!(s.store.list_event_types(&tenant).await.unwrap()[0].description.as_deref(), Some(ODD));

    let seq = s.ingest(&tenant, "evt_1").await;
    let mut d = delivery(&config, DeliveryStatus::Filtered);
    d.reason = Some(format!("skip {ODD}"));
    d.error_kind = Some(ODD.into());
    let delivery_id = d.id.clone();
    assert_eq!(s.store.record_routing(vec![Routed::written(tenant.clone(), seq, vec![d])]).await.unwrap(), vec![true]);
    let stored = s.store.get_delivery(&tenant, &delivery_id).await.unwrap();
    assert_eq!((stored.reason.as_deref(), stored.error_kind.as_deref()), (Some(format!("skip {ODD}").as_str()), Some(ODD)));

    // Attempts, alone and in groups (PostgreSQL writes those apart).
    for (n, body) in [&b"ok\0tail"[..], b"\xff\xfe\0 not utf-8", ODD.as_bytes()].into_iter().enumerate() {
        let id = AttemptId::generate();
        s.store
            .record_attempt(NewAttempt {
                id: id.clone(),
                tenant_id: tenant.clone(),
                delivery_id: delivery_id.clone(),
                config_id: config.clone(),
                number: n as i64 + 1,
                started_at: now_ms(),
                duration_ms: 1,
                method: "POST".into(),
                uri: "http://receiver.test/".into(),
                response_status: Some(200),
                outcome: AttemptOutcome::Retry,
                error: Some(format!("error {ODD}")),
                request_headers: "{}".into(),
                response_headers: Some("{}".into()),
                request_body: Some(ODD.into()),
                response_body: Some(body.to_vec()),
                next_attempt_at: Some(now_ms()),
                unwritten: None,
            })
            .await
            .unwrap();
        let a = s.store.get_attempt(&tenant, &id).await.unwrap();
        assert_eq!(a.error, Some(format!("error {ODD}")));
        assert_eq!(a.request_body.as_deref(), Some(ODD));
        assert_eq!(a.response_body.as_deref(), Some(&*String::from_utf8_lossy(body)));
        let exact = a.response_body_base64.map(|b| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).unwrap());
        assert_eq!(exact.as_deref(), std::str::from_utf8(body).is_err().then_some(body), "base64 only when not UTF-8");
    }
    if let Backend::Postgres(db) = &s.store.backend {
        let attempts: Vec<NewAttempt> = (0..2)
            .map(|n| NewAttempt {
                id: AttemptId::generate(),
                tenant_id: tenant.clone(),
                delivery_id: delivery_id.clone(),
                config_id: config.clone(),
                number: 10 + n,
                started_at: now_ms(),
                duration_ms: 1,
                method: "POST".into(),
                uri: "http://receiver.test/".into(),
                response_status: Some(200),
                outcome: AttemptOutcome::Retry,
                error: Some(ODD.into()),
                request_headers: "{}".into(),
                response_headers: None,
                request_body: Some(ODD.into()),
                response_body: Some(b"\0\xff".to_vec()),
                next_attempt_at: None,
                unwritten: None,
            })
            .collect();
        postgres::record_group(&db.pool, "node-a", &attempts.iter().collect::<Vec<_>>()).await.unwrap();
        let a = s.store.get_attempt(&tenant, &attempts[1].id).await.unwrap();
        assert_eq!((a.error.as_deref(), a.request_body.as_deref()), (Some(ODD), Some(ODD)));
        assert_eq!(a.response_body_base64.as_deref(), Some("AP8="));
    }
}

/// Two nodes on one database: claims never overlap, a node's restart frees
/// only its own leases, streaks and rate slots are shared, and a change made
/// through one node reaches the other.
#[tokio::test]
async fn postgres_nodes_share_work_and_state() {
    let s = Scratch::postgres().await;
    let (a, b) = (s.store.clone(), s.node("node-b").await);
    let mut b_changes = b.watch().await.unwrap().expect("PostgreSQL announces changes");
    let tenant = s.tenant("t").await;
    let config = s.config(&tenant, "c").await;
    let mut all = std::collections::BTreeSet::new();
    for i in 0..60 {
        let seq = s.ingest(&tenant, &format!("e{i}")).await;
        all.insert(s.route(&tenant, seq, &config, DeliveryStatus::Pending).await);
    }

    // Both nodes claim at once, in small bites, until nothing is left.
    let claim_all = |store: Store| async move {
        let mut mine = Vec::new();
        loop {
            let due = store.claim_due(now_ms(), 60_000, 7, &Default::default()).await.unwrap();
            if due.is_empty() {
                return mine;
            }
            mine.extend(due.into_iter().map(|d| d.delivery.id));
        }
    };
    let (by_a, by_b) = tokio::join!(claim_all(a.clone()), claim_all(b.clone()));
    let mut claimed: Vec<_> = by_a.iter().chain(&by_b).cloned().collect();
    claimed.sort();
    let unique: std::collections::BTreeSet<_> = claimed.iter().cloned().collect();
    assert_eq!(claimed.len(), unique.len(), "a delivery was claimed twice");
    assert_eq!(unique, all, "every due delivery was claimed");

    // Node A restarts: its leases are free again, node B's are not.
    assert_eq!(a.release_leases().await.unwrap(), by_a.len() as u64);
    let again: Vec<_> = b.claim_due(now_ms(), 60_000, 100, &Default::default()).await.unwrap().into_iter().map(|d| d.delivery.id).collect();
    assert_eq!(again.iter().cloned().collect::<std::collections::BTreeSet<_>>(), by_a.iter().cloned().collect());

    // One streak for both nodes.
    let d = by_b[0].clone();
    let now = now_ms();
    assert_eq!(s.attempt_to(&a, &tenant, &d, &config, 1, now, AttemptOutcome::Retry).await.1.failures, 1);
    assert_eq!(s.attempt_to(&b, &tenant, &d, &config, 2, now, AttemptOutcome::Retry).await.1.failures, 2);
    assert_eq!(s.attempt_to(&a, &tenant, &d, &config, 3, now, AttemptOutcome::Retry).await.1.failures, 3);

    // One rate limit for both nodes.
    let interval = Duration::from_secs(10);
    let slot_config = ConfigId::generate();
    assert!(a.reserve_send_slot(&slot_config, interval).await.unwrap() < Duration::from_secs(1));
    assert!(b.reserve_send_slot(&slot_config, interval).await.unwrap() > Duration::from_secs(9));

    // A configuration disabled through A: B hears of it.
    a.set_config_enabled(&tenant, &config, None, false, Some("by hand")).await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match b_changes.recv().await {
                Some(Change::Config { tenant: t, id }) if id == config => return t,
                Some(_) => continue,
                None => panic!("the change stream ended"),
            }
        }
    })
    .await
    .expect("node B hears of the change within seconds");
    assert_eq!(heard, tenant);
    b.close().await;
}

/// Nodes starting together on an empty database make one operator tenant.
#[tokio::test]
async fn postgres_bootstrap_happens_once() {
    let s = Scratch::postgres().await;
    let b = s.node("node-b").await;
    let key = |n: u8| NewKey {
        id: KeyId::generate(),
        tenant_id: TenantId::generate(),
        name: "first admin key".into(),
        prefix: "sk_x".into(),
        hash: KeyHash(format!("hash-{n}")),
        scopes: vec![crate::model::auth::Scope::Admin],
        expires_at: None,
    };
    let (first, second) = tokio::join!(s.store.bootstrap(key(1), "operator"), b.bootstrap(key(2), "operator"));
    let made: Vec<_> = [first.unwrap(), second.unwrap()].into_iter().flatten().collect();
    assert_eq!(made.len(), 1, "exactly one node bootstraps");
    assert_eq!(s.store.operator_tenant().await.unwrap(), Some(made[0].clone()));
    assert_eq!(s.count("tenants").await, 1);
    b.close().await;
}

/// PostgreSQL writes attempts in groups: a group's rows all land, and each
/// attempt's streak counts in the group's order, on top of what is stored.
#[tokio::test]
async fn postgres_attempt_groups_count_streaks_in_order() {
    let s = Scratch::postgres().await;
    let Backend::Postgres(db) = &s.store.backend else { unreachable!("a PostgreSQL scratch store") };
    let tenant = s.tenant("t").await;
    let (c1, c2) = (s.config(&tenant, "one").await, s.config(&tenant, "two").await);
    let mut deliveries = Vec::new();
    for i in 0..7 {
        let seq = s.ingest(&tenant, &format!("e{i}")).await;
        deliveries.push(s.route(&tenant, seq, if i < 4 { &c1 } else { &c2 }, DeliveryStatus::Pending).await);
    }
    let now = now_ms();
    // c2 fails twice before the group, one attempt at a time.
    s.attempt_to(&s.store, &tenant, &deliveries[4], &c2, 1, now, AttemptOutcome::Retry).await;
    s.attempt_to(&s.store, &tenant, &deliveries[4], &c2, 2, now, AttemptOutcome::Retry).await;

    let attempt = |d: usize, config: &ConfigId, outcome| NewAttempt {
        id: AttemptId::generate(),
        tenant_id: tenant.clone(),
        delivery_id: deliveries[d].clone(),
        config_id: config.clone(),
        number: 1,
        started_at: now,
        duration_ms: 1,
        method: "POST".into(),
        uri: "http://receiver.test/".into(),
        response_status: Some(500),
        outcome,
        error: None,
        request_headers: "{}".into(),
        response_headers: None,
        request_body: Some("{}".into()),
        response_body: None,
        next_attempt_at: (outcome == AttemptOutcome::Retry).then_some(now + 1000),
        unwritten: None,
    };
    use AttemptOutcome::{Failed, Retry, Succeeded};
    let group = [
        attempt(0, &c1, Retry),
        attempt(5, &c2, Retry),
        attempt(1, &c1, Failed),
        attempt(2, &c1, Succeeded),
        attempt(3, &c1, Retry),
        attempt(6, &c2, Failed),
    ];
    let streaks = postgres::record_group(&db.pool, "node-a", &group.iter().collect::<Vec<_>>()).await.unwrap();
    assert_eq!(streaks.into_iter().map(|r| logged(r).failures).collect::<Vec<_>>(), [1, 3, 2, 0, 1, 4]);

    // Every row landed, and the deliveries moved on.
    for a in &group {
        let stored = s.store.get_attempt(&tenant, &a.id).await.unwrap();
        assert_eq!(stored.request_body.as_deref(), Some("{}"));
    }
    let status = |d: usize| {
        let store = s.store.clone();
        let (tenant, id) = (tenant.clone(), deliveries[d].clone());
        async move { store.get_delivery(&tenant, &id).await.unwrap().status }
    };
    assert_eq!(
        [status(0).await, status(1).await, status(2).await, status(6).await],
        [DeliveryStatus::Pending, DeliveryStatus::Failed, DeliveryStatus::Succeeded, DeliveryStatus::Failed]
    );
    // What is stored goes on from there.
    assert_eq!(s.attempt_to(&s.store, &tenant, &deliveries[3], &c1, 2, now, Retry).await.1.failures, 2);
    assert_eq!(s.attempt_to(&s.store, &tenant, &deliveries[6], &c2, 2, now, Retry).await.1.failures, 5);
}

/// PostgreSQL stores concurrent ingest requests in one statement: a
/// repeated (tenant, id) is stored once, for the first request that has it,
/// and each tenant's usage counts its own.
#[tokio::test]
async fn postgres_ingest_groups_store_each_event_once() {
    let s = Scratch::postgres().await;
    let Backend::Postgres(db) = &s.store.backend else { unreachable!("a PostgreSQL scratch store") };
    let (t1, t2) = (s.tenant("one").await, s.tenant("two").await);
    let event = |id: &str| event_of(id, "order.paid", "{}");
    s.ingest(&t1, "before").await;
    let (r1, r2, r3) = (vec![event("a"), event("b")], vec![event("a")], vec![event("a"), event("c"), event("before")]);
    let requests: Vec<(&TenantId, &[Event])> = vec![(&t1, &r1), (&t2, &r2), (&t1, &r3)];
    let stored = postgres::insert_events(&db.pool, &db.node, &requests, now_ms(), false).await.unwrap();
    let answers = postgres::ingested(&requests, stored);
    let kinds: Vec<Vec<bool>> = answers.iter().map(|a| a.iter().map(|i| matches!(i, Ingested::Stored { .. })).collect()).collect();
    assert_eq!(kinds, vec![vec![true, true], vec![true], vec![false, true, false]]);
    for (tenant, id) in [(&t1, "a"), (&t1, "b"), (&t1, "c"), (&t2, "a")] {
        s.store.get_event(tenant, id).await.unwrap_or_else(|e| panic!("{id}: {e}"));
    }
    let usage: Vec<(String, i64)> =
        sqlx::query_as("SELECT tenant_id, SUM(events)::bigint FROM usage GROUP BY tenant_id ORDER BY SUM(events)")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(usage, vec![(t2.to_string(), 1), (t1.to_string(), 4)]);
    assert_eq!(s.store.list_event_types(&t2).await.unwrap().len(), 1, "each tenant's catalog");
}

both_backends!(deleting_a_configuration_ends_its_open_deliveries, delete_ends_deliveries);
async fn delete_ends_deliveries(s: Scratch) {
    let tenant = s.tenant("t").await;
    let (doomed, kept) = (s.config(&tenant, "doomed").await, s.config(&tenant, "kept").await);
    let seq = s.ingest(&tenant, "e1").await;
    let open = s.route(&tenant, seq, &doomed, DeliveryStatus::Pending).await;
    let seq2 = s.ingest(&tenant, "e2").await;
    let other = s.route(&tenant, seq2, &kept, DeliveryStatus::Pending).await;
    s.store.delete_config(&tenant, &doomed, None).await.unwrap();
    let ended = s.store.get_delivery(&tenant, &open).await.unwrap();
    assert_eq!(ended.status, DeliveryStatus::Failed);
    assert_eq!(ended.error_kind.as_deref(), Some("configuration_deleted"));
    assert_eq!(ended.next_attempt_at, None);
    assert_eq!(s.store.get_delivery(&tenant, &other).await.unwrap().status, DeliveryStatus::Pending, "another configuration's");

    // The attempt that was in flight finishes late: logged, and the
    // delivery keeps its newer state.
    s.attempt_to(&s.store, &tenant, &open, &doomed, 1, now_ms(), AttemptOutcome::Retry).await;
    let after = s.store.get_delivery(&tenant, &open).await.unwrap();
    assert_eq!((after.status, after.attempts), (DeliveryStatus::Failed, 0));
    let logged = s
        .store
        .list_attempts(
            &tenant,
            &AttemptFilter { delivery_id: Some(open.clone()), ..Default::default() },
            &PageRequest { limit: 10, cursor: None },
        )
        .await
        .unwrap();
    assert_eq!(logged.items.len(), 1);
}

both_backends!(an_older_attempt_never_overwrites_a_newer_one, late_attempts);
async fn late_attempts(s: Scratch) {
    let tenant = s.tenant("t").await;
    let config = s.config(&tenant, "c").await;
    let seq = s.ingest(&tenant, "e1").await;
    let d = s.route(&tenant, seq, &config, DeliveryStatus::Pending).await;
    s.attempt_to(&s.store, &tenant, &d, &config, 2, now_ms(), AttemptOutcome::Succeeded).await;
    // Attempt 1 of another sender (its lease had run out) answers last.
    s.attempt_to(&s.store, &tenant, &d, &config, 1, now_ms(), AttemptOutcome::Retry).await;
    let after = s.store.get_delivery(&tenant, &d).await.unwrap();
    assert_eq!((after.status, after.attempts), (DeliveryStatus::Succeeded, 2));
}

both_backends!(an_undecided_delivery_is_decided_once, undecided);
async fn undecided(s: Scratch) {
    let tenant = s.tenant("t").await;
    let config = s.config(&tenant, "c").await;
    let seq = s.ingest(&tenant, "e1").await;
    let mut d = delivery(&config, DeliveryStatus::Pending);
    d.undecided = true;
    d.body = None;
    let id = d.id.clone();
    s.store.record_routing(vec![Routed::written(tenant.clone(), seq, vec![d.clone()])]).await.unwrap();
    let stored = s.store.get_delivery(&tenant, &id).await.unwrap();
    assert!(stored.undecided && stored.status == DeliveryStatus::Pending);
    let claimed = s.store.claim_due(now_ms(), 60_000, 10, &Default::default()).await.unwrap();
    assert!(claimed[0].delivery.undecided, "the sender sees it must decide first");

    let mut decided = d.clone();
    decided.undecided = false;
    decided.status = DeliveryStatus::Filtered;
    decided.reason = Some("not for us".into());
    assert!(s.store.record_decision(&tenant, decided.clone()).await.unwrap());
    assert!(!s.store.record_decision(&tenant, decided).await.unwrap(), "once only");
    let stored = s.store.get_delivery(&tenant, &id).await.unwrap();
    assert_eq!((stored.status, stored.undecided, stored.reason.as_deref()), (DeliveryStatus::Filtered, false, Some("not for us")));
}

both_backends!(undecided_deliveries_are_brought_forward, hurry);
async fn hurry(s: Scratch) {
    let tenant = s.tenant("t").await;
    let (paused, other) = (s.config(&tenant, "paused").await, s.config(&tenant, "other").await);
    let later = now_ms() + 600_000;
    let mut ids = Vec::new();
    for (i, config) in [&paused, &paused, &other].into_iter().enumerate() {
        let seq = s.ingest(&tenant, &format!("e{i}")).await;
        let mut d = delivery(config, DeliveryStatus::Pending);
        (d.undecided, d.next_attempt_at) = (true, Some(later));
        ids.push(d.id.clone());
        s.store.record_routing(vec![Routed::written(tenant.clone(), seq, vec![d])]).await.unwrap();
    }
    let now = now_ms();
    assert_eq!(s.store.hurry_undecided(&tenant, &paused, now, 1).await.unwrap(), 1, "a few at a time");
    assert_eq!(s.store.hurry_undecided(&tenant, &paused, now, 10).await.unwrap(), 1);
    assert_eq!(s.store.get_delivery(&tenant, &ids[0]).await.unwrap().next_attempt_at, Some(now));
    assert_eq!(s.store.get_delivery(&tenant, &ids[1]).await.unwrap().next_attempt_at, Some(now));
    assert_eq!(s.store.get_delivery(&tenant, &ids[2]).await.unwrap().next_attempt_at, Some(later), "another configuration's wait");
    assert_eq!(s.store.hurry_undecided(&tenant, &paused, now, 10).await.unwrap(), 0, "nothing later any more");
}

both_backends!(a_claim_skips_full_tenants_and_configurations, claim_skips);
async fn claim_skips(s: Scratch) {
    let (a, b) = (s.tenant("a").await, s.tenant("b").await);
    let (a1, a2, b1) = (s.config(&a, "a1").await, s.config(&a, "a2").await, s.config(&b, "b1").await);
    for (tenant, config, id) in [(&a, &a1, "x1"), (&a, &a2, "x2"), (&b, &b1, "x3")] {
        let seq = s.ingest(tenant, id).await;
        s.route(tenant, seq, config, DeliveryStatus::Pending).await;
    }
    let skip = ClaimSkip { tenants: vec![b.clone()], configs: vec![a1.clone()] };
    let claimed = s.store.claim_due(now_ms(), 60_000, 10, &skip).await.unwrap();
    let configs: Vec<_> = claimed.iter().map(|d| d.delivery.configuration_id.clone()).collect();
    assert_eq!(configs, vec![a2]);
}

both_backends!(a_claim_takes_the_earliest_due_across_configurations, claim_across_configurations);
async fn claim_across_configurations(s: Scratch) {
    let tenant = s.tenant("a").await;
    let (busy, quiet) = (s.config(&tenant, "busy").await, s.config(&tenant, "quiet").await);
    let now = now_ms();
    // `busy` has a backlog of five, due at now-100..now-96; `quiet` one,
    // due between its second and third.
    let mut due = Vec::new();
    for (i, config, at) in [(0, &busy, 100), (1, &busy, 99), (2, &quiet, 98), (3, &busy, 97), (4, &busy, 96), (5, &busy, 95)] {
        let seq = s.ingest(&tenant, &format!("e{i}")).await;
        let mut d = delivery(config, DeliveryStatus::Pending);
        (d.next_attempt_at, d.lease_until) = (Some(now - at), None);
        due.push(d.id.clone());
        s.store.record_routing(vec![Routed::written(tenant.clone(), seq, vec![d])]).await.unwrap();
    }
    let claim = |limit, skip: ClaimSkip| {
        let store = s.store.clone();
        async move { store.claim_due(now, 60_000, limit, &skip).await.unwrap().into_iter().map(|d| d.delivery.id).collect::<Vec<_>>() }
    };
    assert_eq!(claim(3, ClaimSkip::default()).await, due[..3].to_vec(), "the earliest three, whichever configuration");
    let skip_busy = ClaimSkip { tenants: vec![], configs: vec![busy.clone()] };
    assert!(claim(3, skip_busy.clone()).await.is_empty(), "quiet's one is leased already; busy's are left alone");
    assert_eq!(claim(2, ClaimSkip::default()).await, due[3..5].to_vec());
    assert_eq!(claim(10, ClaimSkip::default()).await, due[5..].to_vec());
}

both_backends!(a_claim_takes_what_is_due_of_each_configuration_with_deliveries_waiting, claim_among_waiting);
async fn claim_among_waiting(s: Scratch) {
    let tenant = s.tenant("a").await;
    let now = now_ms();
    // Configurations in the order the claim skips through them, each with
    // deliveries due (-) or due later (+): it must pass the ones with
    // nothing due, nothing waiting or disabled, and go on after them.
    let mut expected = Vec::new();
    for (name, waiting, enabled) in [
        ("later", vec![60_000], true),
        ("two-due", vec![-20, -10], true),
        ("disabled", vec![-30], false),
        ("nothing", vec![], true),
        ("due-and-later", vec![-5, 60_000], true),
        ("later-again", vec![120_000], true),
        ("last-due", vec![-1], true),
    ] {
        let config = s.config(&tenant, name).await;
        if !enabled {
            s.store.set_config_enabled(&tenant, &config, None, false, None).await.unwrap();
        }
        for (i, at) in waiting.into_iter().enumerate() {
            let seq = s.ingest(&tenant, &format!("{name}-{i}")).await;
            let mut d = delivery(&config, DeliveryStatus::Pending);
            (d.next_attempt_at, d.lease_until) = (Some(now + at), None);
            if enabled && at < 0 {
                expected.push((at, d.id.clone()));
            }
            s.store.record_routing(vec![Routed::written(tenant.clone(), seq, vec![d])]).await.unwrap();
        }
    }
    expected.sort();
    let expected: Vec<_> = expected.into_iter().map(|(_, id)| id).collect();
    let claimed = s.store.claim_due(now, 60_000, 10, &ClaimSkip::default()).await.unwrap();
    let claimed: Vec<_> = claimed.into_iter().map(|d| d.delivery.id).collect();
    assert_eq!(claimed, expected, "every enabled configuration's due deliveries, earliest first");
    let later = s.store.claim_due(now + 60_000, 60_000, 10, &ClaimSkip::default()).await.unwrap();
    assert_eq!(later.len(), 2, "the two due a minute later: {later:?}");
}

both_backends!(a_claim_takes_what_is_due_and_what_a_lost_sender_held, claim_due_and_lost);
async fn claim_due_and_lost(s: Scratch) {
    let tenant = s.tenant("a").await;
    let config = s.config(&tenant, "c").await;
    let now = now_ms();
    let mut ids = Vec::new();
    // Due and unleased; leased by a live sender; leased by one whose lease ran out.
    for (i, lease_until) in [None, Some(now + 60_000), Some(now - 1)].into_iter().enumerate() {
        let seq = s.ingest(&tenant, &format!("e{i}")).await;
        let mut d = delivery(&config, DeliveryStatus::Pending);
        (d.next_attempt_at, d.lease_until) = (Some(now - 10 + i as i64), lease_until);
        ids.push(d.id.clone());
        s.store.record_routing(vec![Routed::written(tenant.clone(), seq, vec![d])]).await.unwrap();
    }
    let claimed = s.store.claim_due(now, 60_000, 10, &ClaimSkip::default()).await.unwrap();
    let claimed: Vec<_> = claimed.into_iter().map(|d| d.delivery.id).collect();
    assert_eq!(claimed, vec![ids[0].clone(), ids[2].clone()], "in order of when they were due");
    assert!(s.store.claim_due(now, 60_000, 10, &ClaimSkip::default()).await.unwrap().is_empty(), "leased now");
}

/// The claim runs on the writer at every poll: it must read the deliveries
/// due, never the whole history of the configurations it may claim for.
#[tokio::test]
async fn the_sqlite_claim_reads_only_pending_deliveries() {
    let s = Scratch::sqlite().await;
    let Place::Dir(dir) = &s.place else { unreachable!() };
    let conn = rusqlite::Connection::open(dir.path().join("sluice.db")).unwrap();
    let plan: Vec<String> = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {}", super::sqlite::CLAIM_DUE))
        .unwrap()
        .query_map(rusqlite::params![0, 0, 10, "[]", "[]"], |row| row.get(3))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    // Waiting deliveries are read per configuration, through its own range.
    assert!(plan.iter().any(|step| step.contains("USING INDEX deliveries_due (config_id=?")), "{plan:#?}");
    let reads: Vec<&String> = plan.iter().filter(|step| step.contains(" deliveries ") || step.contains(" d ")).collect();
    assert!(reads.iter().any(|r| r.contains("deliveries_due")) && reads.iter().any(|r| r.contains("deliveries_leased")), "{plan:#?}");
    assert!(reads.iter().all(|r| r.contains("deliveries_due") || r.contains("deliveries_leased") || r.contains("(id=?)")), "{plan:#?}");
    // Configurations are looked up one by one, those with deliveries
    // waiting: never all of them, at every poll.
    let configurations: Vec<&String> =
        plan.iter().filter(|step| step.split_whitespace().nth(1).is_some_and(|table| table == "c" || table == "configurations")).collect();
    assert!(
        !configurations.is_empty() && configurations.iter().all(|step| step.starts_with("SEARCH") && step.contains("(id=?)")),
        "{plan:#?}"
    );
}

both_backends!(scripts_are_numbered_per_name_and_configurations_keep_their_script_history, script_versions);
async fn script_versions(s: Scratch) {
    let (tenant, other) = (s.tenant("t").await, s.tenant("u").await);
    let script = script_record;
    let mut versions = Vec::new();
    for name in ["a", "a", "b", "a"] {
        versions.push(s.store.insert_script(&tenant, &script(name), b"\0", None).await.unwrap());
    }
    assert_eq!(versions, [1, 2, 1, 3]);
    assert_eq!(s.store.insert_script(&other, &script("a"), b"\0", None).await.unwrap(), 1, "numbered per tenant");
    let page = PageRequest { limit: 10, cursor: None };
    let listed = s.store.list_scripts(&tenant, Some("a"), &page).await.unwrap().items;
    assert_eq!(listed.iter().map(|s| s.version).collect::<Vec<_>>(), [3, 2, 1]);
    assert_eq!(s.store.list_scripts(&tenant, None, &page).await.unwrap().items.len(), 4);
    let (first, second) = (&listed[2].id, &listed[1].id);

    let config = ConfigId::generate();
    let write = |script: Option<&ScriptId>, params: &str| ConfigWrite {
        name: "c".into(),
        script_id: script.cloned(),
        script_params: params.into(),
        spec: "{}".into(),
        changed_by: None,
    };
    s.store.insert_config(&tenant, &config, &write(Some(first), r#"{"k":"1"}"#)).await.unwrap();
    // Enabling makes version 2; the same script saved again (3) records nothing.
    s.store.set_config_enabled(&tenant, &config, Some(1), true, None).await.unwrap();
    s.store.update_config(&tenant, &config, 2, &write(Some(first), r#"{"k":"1"}"#)).await.unwrap();
    s.store.update_config(&tenant, &config, 3, &write(Some(second), r#"{"k":"1"}"#)).await.unwrap();
    s.store.update_config(&tenant, &config, 4, &write(Some(second), r#"{"k":"2"}"#)).await.unwrap();
    s.store.update_config(&tenant, &config, 5, &write(None, "{}")).await.unwrap();
    let history = s.store.config_scripts(&tenant, &config).await.unwrap();
    assert_eq!(history.iter().map(|h| h.version).collect::<Vec<_>>(), [6, 5, 4, 1]);
    let at = |v| {
        let store = s.store.clone();
        let (tenant, config) = (tenant.clone(), config.clone());
        async move { store.config_script_at(&tenant, &config, v).await.unwrap().map(|h| (h.script_id, h.params)) }
    };
    assert_eq!(at(3).await, Some((Some(first.clone()), r#"{"k":"1"}"#.to_owned())));
    assert_eq!(at(4).await, Some((Some(second.clone()), r#"{"k":"1"}"#.to_owned())));
    assert_eq!(at(5).await, Some((Some(second.clone()), r#"{"k":"2"}"#.to_owned())));
    assert_eq!(at(9).await, Some((None, "{}".to_owned())));
    assert_eq!(at(0).await, None);
    assert!(s.store.config_scripts(&other, &config).await.unwrap().is_empty(), "another tenant's");
    assert!(s.store.config_script_at(&other, &config, 3).await.unwrap().is_none());

    // A delivery keeps the fuel its script used.
    let seq = s.ingest(&tenant, "evt_fuel").await;
    let d = delivery(&config, DeliveryStatus::Filtered);
    let id = d.id.clone();
    s.store.record_routing(vec![Routed::written(tenant.clone(), seq, vec![d])]).await.unwrap();
    assert_eq!(s.store.get_delivery(&tenant, &id).await.unwrap().fuel_used, Some(4321));
}

both_backends!(a_portal_link_opens_one_expiring_session_once, portal_links);
async fn portal_links(s: Scratch) {
    use crate::model::auth::{KeySecret, PortalToken, Scope};
    use crate::model::ids::PortalLinkId;
    let tenant = s.tenant("t").await;
    let link = |token: &PortalToken, expires_at: i64| NewPortalLink {
        id: PortalLinkId::generate(),
        tenant_id: tenant.clone(),
        hash: token.hash(),
        scopes: vec![Scope::LogsRead, Scope::ConfigurationsRead],
        session_ms: 60_000,
        expires_at,
        created_by: None,
    };
    let session = || {
        let secret = KeySecret::generate();
        (SessionKey { id: KeyId::generate(), prefix: secret.display_prefix(), hash: secret.hash() }, secret)
    };
    let (live, expired) = (PortalToken::generate(), PortalToken::generate());
    s.store.create_portal_link(link(&live, now_ms() + 60_000)).await.unwrap();
    s.store.create_portal_link(link(&expired, now_ms() - 1)).await.unwrap();
    let unknown_tenant = NewPortalLink { tenant_id: TenantId::generate(), ..link(&PortalToken::generate(), now_ms() + 60_000) };
    assert!(matches!(s.store.create_portal_link(unknown_tenant).await, Err(StoreError::NotFound)));

    // Two redemptions at once: exactly one opens a session.
    let ((first, first_secret), (second, second_secret)) = (session(), session());
    let hash = live.hash();
    let (a, b) = tokio::join!(s.store.redeem_portal_link(&hash, first), s.store.redeem_portal_link(&hash, second));
    let (opened, secret) = match (a, b) {
        (Ok(k), Err(StoreError::NotFound)) => (k, first_secret),
        (Err(StoreError::NotFound), Ok(k)) => (k, second_secret),
        other => panic!("one redemption only: {other:?}"),
    };
    assert_eq!(opened.tenant_id, tenant);
    assert_eq!(opened.scopes, [Scope::LogsRead, Scope::ConfigurationsRead]);
    let expires_at = opened.expires_at.expect("a session key expires");
    assert!((now_ms() + 55_000..=now_ms() + 60_000).contains(&expires_at), "{expires_at}");
    assert_eq!(s.store.find_key(&secret.hash()).await.unwrap().map(|k| k.id), Some(opened.id.clone()));
    assert!(matches!(s.store.redeem_portal_link(&expired.hash(), session().0).await, Err(StoreError::NotFound)));
    assert!(matches!(s.store.redeem_portal_link(&PortalToken::generate().hash(), session().0).await, Err(StoreError::NotFound)));

    // An expired key is no key.
    s.execute(&format!("UPDATE api_keys SET expires_at = {} WHERE id = '{}'", now_ms() - 1, opened.id.as_str())).await;
    assert!(s.store.find_key(&secret.hash()).await.unwrap().is_none());
}

/// Rows written before deliveries and attempts were keyed by tenant
/// (PostgreSQL 0009), and before attempts held their own bodies.
const OLDER_ROWS: &str = "
    INSERT INTO tenants (id, name, created_at) VALUES ('ten_0000000000007000800000000000000a', 'older', 1);
    INSERT INTO events (tenant_id, id, type, organization_unit, occurred_at_ns, received_at, payload)
        VALUES ('ten_0000000000007000800000000000000a', 'evt-1', 'order.paid', 'emea', 1, 2, '{\"n\":1}');
    INSERT INTO deliveries (id, tenant_id, event_seq, config_id, config_version, status, attempts, created_at, updated_at)
        SELECT 'dlv_0000000000007000800000000000000d', tenant_id, seq, 'cfg_0000000000007000800000000000000c', 1,
               'succeeded', 1, 3, 4 FROM events;
    INSERT INTO attempts (id, tenant_id, delivery_id, number, started_at, duration_ms, method, uri, response_status,
                          outcome, request_headers)
        VALUES ('att_0000000000007000800000000000000e', 'ten_0000000000007000800000000000000a',
                'dlv_0000000000007000800000000000000d', 1, 5, 6, 'POST', 'https://receiver.example/in', 200,
                'succeeded', '{}');
    INSERT INTO attempt_payloads (attempt_id, request_body, response_body, created_at)
        VALUES ('att_0000000000007000800000000000000e', '{\"n\":1}', 'ok', 5);";

/// What [`OLDER_ROWS`] wrote, read through the store after the upgrade.
async fn older_rows_are_kept(store: &Store) {
    let tenant = TenantId::parse("ten_0000000000007000800000000000000a").unwrap();
    let delivery = DeliveryId::parse("dlv_0000000000007000800000000000000d").unwrap();
    let attempt = AttemptId::parse("att_0000000000007000800000000000000e").unwrap();
    let page = PageRequest { limit: 10, cursor: None };
    let d = store.get_delivery(&tenant, &delivery).await.unwrap();
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Succeeded, 1));
    let listed = store.list_deliveries(&tenant, &DeliveryFilter::default(), &page).await.unwrap();
    assert_eq!(listed.items.iter().map(|d| &d.id).collect::<Vec<_>>(), [&delivery]);
    let a = store.get_attempt(&tenant, &attempt).await.unwrap();
    assert_eq!((a.delivery_id, a.request_body.as_deref(), a.response_body.as_deref()), (delivery.clone(), Some("{\"n\":1}"), Some("ok")));
    let filter = AttemptFilter { delivery_id: Some(delivery), ..AttemptFilter::default() };
    assert_eq!(store.list_attempts(&tenant, &filter, &page).await.unwrap().items.len(), 1);
    let other = store.create_tenant("other", None).await.unwrap().id;
    assert!(matches!(store.get_attempt(&other, &attempt).await, Err(StoreError::NotFound)), "keyed by tenant");
}

#[tokio::test]
async fn a_sqlite_database_from_before_inline_bodies_keeps_its_attempts_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.db");
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options).await.unwrap();
        let mut older = sqlx::migrate!("./migrations/sqlite");
        older.migrations = older.migrations.iter().filter(|m| m.version <= 14).cloned().collect::<Vec<_>>().into();
        older.run(&mut conn).await.unwrap();
        sqlx::raw_sql(OLDER_ROWS).execute(&mut conn).await.unwrap();
    }
    let store = Store::open_sqlite(&path, test_keys()).await.unwrap();
    older_rows_are_kept(&store).await;
    store.close().await;
}

#[tokio::test]
async fn a_postgres_database_from_before_tenant_keys_keeps_its_deliveries_and_attempts() {
    let server = postgres_server();
    let name = format!("sluice_store_upgrade_{}", uuid::Uuid::now_v7().simple());
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&server).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
    let place = Place::Database(server, name.clone());
    let url = Scratch::url_of(&place);
    {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
        let mut older = sqlx::migrate!("./migrations/postgres");
        older.migrations = older.migrations.iter().filter(|m| m.version <= 9).cloned().collect::<Vec<_>>().into();
        older.run(&mut conn).await.unwrap();
        sqlx::raw_sql(OLDER_ROWS).execute(&mut conn).await.unwrap();
    }
    let store = Store::open_postgres(&url, NodeId::parse("node-a").unwrap(), test_keys()).await.unwrap();
    older_rows_are_kept(&store).await;
    store.close().await;
    drop(store);
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin).await.unwrap();
}

both_backends!(a_refused_write_undoes_only_its_own_rows_among_concurrent_ones, refused_among_others);
async fn refused_among_others(s: Scratch) {
    let (busy, over) = (s.tenant("busy").await, s.tenant("over").await);
    let event = |id: String| event_of(&id, "order.paid", "{}");
    // Writes that land in the same groups as the refused one, on both sides of it.
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (store, tenant, e) = (s.store.clone(), busy.clone(), event(format!("busy-{i}")));
        writes.spawn(async move { store.ingest(&tenant, None, vec![e]).await.map(|_| ()) });
        if i == 20 {
            let (store, tenant) = (s.store.clone(), over.clone());
            let batch = (0..3).map(|n| event(format!("over-{n}"))).collect();
            writes.spawn(async move { store.ingest(&tenant, Some(1), batch).await.map(|_| ()) });
        }
    }
    let mut refused = 0;
    while let Some(done) = writes.join_next().await {
        match done.unwrap() {
            Ok(()) => {}
            Err(StoreError::QuotaExceeded { quota: 1, used: 0 }) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(refused, 1, "only the batch over its quota is refused");
    for i in 0..40 {
        s.store.get_event(&busy, &format!("busy-{i}")).await.unwrap();
    }
    for n in 0..3 {
        assert!(matches!(s.store.get_event(&over, &format!("over-{n}")).await, Err(StoreError::NotFound)), "over-{n}");
    }
    assert_eq!(s.count("events").await, 40);
    assert_eq!(s.count("unrouted").await, 40);
}

/// A routing that hands `handed` deliveries on unwritten, besides writing
/// `written`.
fn handing_on(s: &Scratch, tenant: &TenantId, seq: i64, written: Vec<NewDelivery>, handed: usize) -> Routed {
    Routed { tenant: tenant.clone(), event_seq: seq, deliveries: written, handed, resumed: false, epoch: s.store.epoch() }
}

both_backends!(deliveries_handed_on_are_written_by_their_first_turn, handed_on);
async fn handed_on(s: Scratch) {
    let tenant = s.tenant("acme").await;
    let seq = s.ingest(&tenant, "evt_handed").await;
    let (a, b, c) = (s.config(&tenant, "a").await, s.config(&tenant, "b").await, s.config(&tenant, "c").await);
    let now = now_ms();
    let routing = handing_on(&s, &tenant, seq, vec![delivery(&c, DeliveryStatus::Filtered)], 2);
    assert_eq!(s.store.record_routing(vec![routing]).await.unwrap(), vec![true]);
    assert_eq!(s.count("deliveries").await, 1, "only the filtered one is written at routing");
    assert_eq!(s.count("unrouted").await, 1, "unrouted until the rows handed on are written");
    let pending = || async { s.store.backlog().await.unwrap().pending };

    // A row shows it while it waits; the first attempt settles that row.
    // The event waits for the other delivery. The backlog counts it once
    // all along: unwritten, then by its row.
    let first = s.store.unwritten(tenant.clone(), seq, delivery(&a, DeliveryStatus::Pending), 3, s.store.epoch());
    assert_eq!(pending().await, 1, "unwritten, counted by the store");
    assert!(first.mark_shown());
    s.store.write_pending(vec![first.clone()], now, Some(now + 60_000)).await.unwrap();
    assert_eq!(pending().await, 1, "shown by its row");
    let row = s.store.get_delivery(&tenant, &first.delivery.id).await.unwrap();
    assert_eq!((row.status, row.attempts), (DeliveryStatus::Pending, 0));
    assert!(!s.store.get_event(&tenant, "evt_handed").await.unwrap().routed, "the other is unwritten still");
    let attempt = new_attempt(&tenant, &first.delivery.id, &a, 1, now, AttemptOutcome::Retry);
    s.store.record_attempt(NewAttempt { unwritten: Some(first.clone()), ..attempt.clone() }).await.unwrap();
    let row = s.store.get_delivery(&tenant, &first.delivery.id).await.unwrap();
    assert_eq!((row.status, row.attempts, row.next_attempt_at), (DeliveryStatus::Pending, 1, attempt.next_attempt_at));
    assert_eq!(row.body.as_deref(), Some("{\"decided\":true}"), "the decision is kept");
    assert_eq!(s.count("attempts").await, 1);
    // A late row to show it changes nothing.
    s.store.write_pending(vec![first.clone()], now, Some(now + 60_000)).await.unwrap();
    assert_eq!(s.store.get_delivery(&tenant, &first.delivery.id).await.unwrap().attempts, 1);
    assert!(!s.store.get_event(&tenant, "evt_handed").await.unwrap().routed);
    drop(first);
    assert_eq!(pending().await, 1);

    // The other, held back unattempted: its release writes it pending, due
    // then, and with that last row the event is routed.
    let second = s.store.unwritten(tenant.clone(), seq, delivery(&b, DeliveryStatus::Pending), 3, s.store.epoch());
    assert_eq!(pending().await, 2);
    s.store.write_pending(vec![second.clone()], now + 5_000, None).await.unwrap();
    drop(second.clone());
    let row = s.store.get_delivery(&tenant, &second.delivery.id).await.unwrap();
    assert_eq!((row.status, row.attempts, row.next_attempt_at), (DeliveryStatus::Pending, 0, Some(now + 5_000)));
    assert!(s.store.get_event(&tenant, "evt_handed").await.unwrap().routed);
    assert_eq!(s.count("unrouted").await, 0);
    assert_eq!(s.store.deliveries_of_event(&tenant, seq).await.unwrap().len(), 3);
    drop(second);
    assert_eq!(pending().await, 2, "both rows pending, nothing unwritten");
}

both_backends!(an_event_left_unwritten_is_resumed_once, resumed_routing);
async fn resumed_routing(s: Scratch) {
    let tenant = s.tenant("acme").await;
    let seq = s.ingest(&tenant, "evt_resumed").await;
    let (a, b) = (s.config(&tenant, "a").await, s.config(&tenant, "b").await);
    let now = now_ms();
    // Both handed on (nothing written), one attempt written, then the other
    // was dropped unwritten (a failed write, or the node died).
    assert_eq!(s.store.record_routing(vec![handing_on(&s, &tenant, seq, Vec::new(), 2)]).await.unwrap(), vec![true]);
    let first = s.store.unwritten(tenant.clone(), seq, delivery(&a, DeliveryStatus::Pending), 2, s.store.epoch());
    let attempt = new_attempt(&tenant, &first.delivery.id, &a, 1, now, AttemptOutcome::Succeeded);
    s.store.record_attempt(NewAttempt { unwritten: Some(first.clone()), ..attempt }).await.unwrap();

    // This node's scan finds it (the pipeline knows it holds it no longer).
    let found = s.store.unrouted_events(0, i64::MAX, now, 10).await.unwrap();
    assert_eq!(found.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![seq]);
    // The resumed routing adds only the missing row, and routes it once.
    let mut resumed =
        Routed::written(tenant.clone(), seq, vec![delivery(&a, DeliveryStatus::Pending), delivery(&b, DeliveryStatus::Pending)]);
    resumed.resumed = true;
    assert_eq!(s.store.record_routing(vec![resumed.clone()]).await.unwrap(), vec![true]);
    assert_eq!(s.store.record_routing(vec![resumed]).await.unwrap(), vec![false], "routed once");
    let rows = s.store.deliveries_of_event(&tenant, seq).await.unwrap();
    let mut states: Vec<_> = rows.iter().map(|d| (d.configuration_id == a, d.status)).collect();
    states.sort_by_key(|(is_a, _)| *is_a);
    assert_eq!(states, vec![(false, DeliveryStatus::Pending), (true, DeliveryStatus::Succeeded)]);
    assert!(s.store.get_event(&tenant, "evt_resumed").await.unwrap().routed);
    assert!(s.store.unrouted_events(0, i64::MAX, now, 10).await.unwrap().is_empty());
}

/// The node that stores an event claims it: another node's scan and
/// routing leave it until the claim runs out or its node restarts.
#[tokio::test]
async fn postgres_a_stored_event_is_its_nodes_until_the_claim_runs_out() {
    let s = Scratch::postgres().await;
    let (a, b) = (s.store.clone(), s.node("node-b").await);
    let tenant = s.tenant("acme").await;
    let seq = s.ingest(&tenant, "evt_claimed").await;
    let config = s.config(&tenant, "c").await;
    let now = now_ms();
    let seqs = |found: Vec<EventRecord>| found.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(a.unrouted_events(0, i64::MAX, now, 10).await.unwrap()), vec![seq], "its own");
    assert!(b.unrouted_events(0, i64::MAX, now, 10).await.unwrap().is_empty(), "another node's, claimed");
    let later = now + ROUTING_CLAIM_MS + 1;
    assert_eq!(seqs(b.unrouted_events(0, i64::MAX, later, 10).await.unwrap()), vec![seq], "once the claim ran out");
    let mut resumed = Routed::written(tenant.clone(), seq, vec![delivery(&config, DeliveryStatus::Pending)]);
    resumed.resumed = true;
    assert_eq!(b.record_routing(vec![resumed.clone()]).await.unwrap(), vec![false], "node B may not take it yet");
    assert_eq!(s.count("deliveries").await, 0);

    // Node A restarts: its claims run out at once.
    a.release_leases().await.unwrap();
    assert_eq!(seqs(b.unrouted_events(0, i64::MAX, now, 10).await.unwrap()), vec![seq]);
    assert_eq!(b.record_routing(vec![resumed]).await.unwrap(), vec![true]);
    assert_eq!(s.count("deliveries").await, 1);
    assert!(a.get_event(&tenant, "evt_claimed").await.unwrap().routed);
}

/// A node the others took for dead lost its claims to them: what it had
/// handed on before writes nothing when it speaks again (the event is
/// routed once, by the node that took it over), and what it hands on in
/// its new epoch is written as ever.
#[tokio::test]
async fn postgres_a_node_taken_for_dead_writes_nothing_it_handed_on_before() {
    let s = Scratch::postgres().await;
    let (a, b) = (s.store.clone(), s.node("node-b").await);
    let tenant = s.tenant("acme").await;
    let (one, two) = (s.config(&tenant, "one").await, s.config(&tenant, "two").await);
    let now = now_ms();
    let handed = s.ingest(&tenant, "evt_handed").await;
    let unrouted = s.ingest(&tenant, "evt_unrouted").await;
    let before = a.epoch();
    assert_eq!(a.record_routing(vec![handing_on(&s, &tenant, handed, Vec::new(), 1)]).await.unwrap(), vec![true]);
    let in_flight = a.unwritten(tenant.clone(), handed, delivery(&one, DeliveryStatus::Pending), 1, before);
    let shown = a.unwritten(tenant.clone(), handed, delivery(&two, DeliveryStatus::Pending), 1, before);

    // Node A falls silent; B takes it for dead and its claims over.
    s.execute("UPDATE nodes SET seen_at = 0 WHERE id = 'node-a'").await;
    assert_eq!(b.keep_alive(true).await.unwrap(), vec!["node-a".to_string()]);

    // A's first attempt, and a row to show a delivery waiting: neither is
    // written, before or after A speaks again.
    // (It failed for good: the answer is for B to count, not A.)
    let attempt = new_attempt(&tenant, &in_flight.delivery.id, &one, 1, now, AttemptOutcome::Failed);
    let recorded = a.record_attempt(NewAttempt { unwritten: Some(in_flight.clone()), ..attempt }).await.unwrap();
    assert_eq!(recorded, Recorded::Void);
    a.write_pending(vec![shown.clone()], now, Some(now + 60_000)).await.unwrap();
    assert_eq!((s.count("deliveries").await, s.count("attempts").await), (0, 0));
    a.keep_alive(false).await.unwrap();
    assert_ne!(a.epoch(), before, "a new epoch");
    a.write_pending(vec![shown], now, Some(now + 60_000)).await.unwrap();
    assert_eq!(s.count("deliveries").await, 0);
    // Nor do an event's rows written beside deliveries handed on under the
    // old claim.
    let mixed = Routed { epoch: before, ..handing_on(&s, &tenant, unrouted, vec![delivery(&two, DeliveryStatus::Filtered)], 1) };
    assert_eq!(a.record_routing(vec![mixed]).await.unwrap(), vec![false]);
    assert_eq!(s.count("deliveries").await, 0);

    // B routes both events, resumed: one row per configuration.
    let scanned: Vec<i64> = b.unrouted_events(0, i64::MAX, now, 10).await.unwrap().into_iter().map(|e| e.seq).collect();
    assert_eq!(scanned, vec![handed, unrouted]);
    for seq in [handed, unrouted] {
        let mut resumed =
            Routed::written(tenant.clone(), seq, vec![delivery(&one, DeliveryStatus::Pending), delivery(&two, DeliveryStatus::Pending)]);
        resumed.resumed = true;
        assert_eq!(b.record_routing(vec![resumed]).await.unwrap(), vec![true]);
    }
    assert_eq!(s.count("deliveries").await, 4);

    // In its new epoch A hands on and writes as ever.
    let fresh = s.ingest(&tenant, "evt_fresh").await;
    assert_eq!(a.record_routing(vec![handing_on(&s, &tenant, fresh, Vec::new(), 1)]).await.unwrap(), vec![true]);
    let next = a.unwritten(tenant.clone(), fresh, delivery(&one, DeliveryStatus::Pending), 1, a.epoch());
    let attempt = new_attempt(&tenant, &next.delivery.id, &one, 1, now, AttemptOutcome::Succeeded);
    let recorded = a.record_attempt(NewAttempt { unwritten: Some(next), ..attempt }).await.unwrap();
    assert_eq!(recorded, Recorded::Logged(FailureStreak::default()));
    assert_eq!((s.count("deliveries").await, s.count("attempts").await), (5, 1));
    assert!(a.get_event(&tenant, "evt_fresh").await.unwrap().routed);
}

both_backends!(a_delivery_written_after_its_configuration_was_deleted_fails, written_after_delete);
async fn written_after_delete(s: Scratch) {
    let tenant = s.tenant("acme").await;
    let seq = s.ingest(&tenant, "evt_gone").await;
    let config = s.config(&tenant, "gone").await;
    let now = now_ms();
    assert_eq!(s.store.record_routing(vec![handing_on(&s, &tenant, seq, Vec::new(), 1)]).await.unwrap(), vec![true]);
    s.store.delete_config(&tenant, &config, None).await.unwrap();
    // Its request was in flight: the answer is logged, the delivery ends.
    let unwritten = s.store.unwritten(tenant.clone(), seq, delivery(&config, DeliveryStatus::Pending), 1, s.store.epoch());
    let attempt = new_attempt(&tenant, &unwritten.delivery.id, &config, 1, now, AttemptOutcome::Retry);
    s.store.record_attempt(NewAttempt { unwritten: Some(unwritten.clone()), ..attempt }).await.unwrap();
    let row = s.store.get_delivery(&tenant, &unwritten.delivery.id).await.unwrap();
    assert_eq!((row.status, row.error_kind.as_deref(), row.next_attempt_at), (DeliveryStatus::Failed, Some("configuration_deleted"), None));
    assert_eq!(s.count("attempts").await, 1);
    assert!(s.store.get_event(&tenant, "evt_gone").await.unwrap().routed);
}

both_backends!(an_ingest_refused_leaves_its_types_out_of_the_catalog, catalog_after_refusal);
async fn catalog_after_refusal(s: Scratch) {
    let tenant = s.tenant("acme").await;
    let event = |id: &str, kind: &str| event_of(id, kind, "{}");
    let names = || async { s.store.list_event_types(&tenant).await.unwrap().into_iter().map(|t| t.name).collect::<Vec<_>>() };
    // Over the quota: nothing is stored, its type not catalogued either.
    let refused = s.store.ingest(&tenant, Some(0), vec![event("e1", "order.refused")]).await;
    assert!(matches!(refused, Err(StoreError::QuotaExceeded { .. })), "{refused:?}");
    assert!(names().await.is_empty());
    // The same type stored later is catalogued, once however often it comes.
    for (id, kind) in [("e2", "order.refused"), ("e3", "order.refused"), ("e4", "order.paid"), ("e5", "order.refused")] {
        s.store.ingest(&tenant, None, vec![event(id, kind)]).await.unwrap();
    }
    assert_eq!(names().await, vec!["order.paid", "order.refused"]);
    // A repeated event (nothing stored) of a new type catalogues nothing.
    s.store.ingest(&tenant, None, vec![event("e2", "order.repeated")]).await.unwrap();
    assert_eq!(names().await, vec!["order.paid", "order.refused"]);
}

/// A full disk (here the database held at its present size with
/// `max_page_count`, which fails a write as a full disk does, with
/// `SQLITE_FULL`, and as SQLite may on a full disk, rolling back the whole
/// transaction): every write that fails does so as the store being
/// unavailable (the API's 503: a request to make again; it was a 500), no
/// write is half-done, none is answered failed yet stored nor stored yet
/// failed, and once there is room the same writes go through.
/// A write that changed no row (the retry poller's claim when nothing is
/// due, every 250 ms on an idle node) is answered without flushing the log;
/// one that changed a row is flushed before it is answered.
#[tokio::test]
async fn sqlite_flushes_the_log_for_writes_that_changed_rows_only() {
    let s = Scratch::sqlite().await;
    let Backend::Sqlite(db) = &s.store.backend else { unreachable!("a SQLite scratch store") };
    let tenant = s.tenant("acme").await;
    let flushed = db.syncs();
    assert!(flushed > 0, "the tenant's row was flushed");
    for _ in 0..5 {
        assert!(s.store.claim_due(now_ms(), 60_000, 10, &Default::default()).await.unwrap().is_empty());
    }
    assert_eq!(db.syncs(), flushed, "claims that changed nothing");
    s.store.ingest(&tenant, None, vec![event_of("e-1", "order.paid", "{}")]).await.unwrap();
    assert_eq!(db.syncs(), flushed + 1, "an ingest is flushed before it is answered");
    assert!(s.store.claim_due(now_ms(), 60_000, 10, &Default::default()).await.unwrap().is_empty());
    assert_eq!(db.syncs(), flushed + 1);
}

#[tokio::test]
async fn a_full_sqlite_database_fails_writes_as_unavailable_and_takes_them_once_there_is_room() {
    let s = Scratch::sqlite().await;
    let tenant = s.tenant("acme").await;
    s.ingest(&tenant, "before").await;
    let pages: i64 = match &s.store.backend {
        Backend::Sqlite(db) => sqlx::query_scalar("PRAGMA page_count").fetch_one(&db.read).await.unwrap(),
        Backend::Postgres(_) => unreachable!("a SQLite scratch store"),
    };
    s.execute(&format!("PRAGMA max_page_count = {pages}")).await;
    let event = |id: &str, pad: usize| event_of(id, "order.paid", &format!(r#"{{"pad": "{}"}}"#, "x".repeat(pad)));
    // Fill the room left in the pages there are.
    let mut filled = 0;
    while s.store.ingest(&tenant, None, vec![event(&format!("fill-{filled}"), 2000)]).await.is_ok() {
        filled += 1;
        assert!(filled < 1000, "the database never filled");
    }
    // Concurrent requests, large and small, queued behind a write that
    // holds the writer, so that they share groups (a group ends at its
    // first failing job).
    let ids: Vec<(String, usize)> =
        (0..60).map(|i| if i % 2 == 0 { (format!("large-{i}"), 20_000) } else { (format!("small-{i}"), 0) }).collect();
    let posts = |s: &Scratch| {
        let store = s.store.clone();
        let mut posts = tokio::task::JoinSet::new();
        posts.spawn(async move {
            let Backend::Sqlite(db) = &store.backend else { unreachable!("a SQLite scratch store") };
            (
                "hold".to_owned(),
                db.write(|_| {
                    std::thread::sleep(Duration::from_millis(200));
                    Ok(())
                })
                .await
                .map(|()| vec![]),
            )
        });
        for (id, pad) in &ids {
            let (store, tenant, e, id) = (s.store.clone(), tenant.clone(), event(id, *pad), id.clone());
            posts.spawn(async move { (id, store.ingest(&tenant, None, vec![e]).await) });
        }
        posts.join_all()
    };
    let mut stored = 0;
    for (id, answer) in posts(&s).await.into_iter().filter(|(id, _)| id != "hold") {
        let found = s.store.get_event(&tenant, &id).await;
        match answer {
            Err(e) => {
                assert!(e.is_unavailable(), "{id}: a full database is the store's fault, not the request's: {e}");
                assert!(matches!(found, Err(StoreError::NotFound)), "{id}: answered failed, yet stored");
            }
            Ok(answer) => {
                assert!(id.starts_with("small"), "{id}: stored with no room: {answer:?}");
                assert!(found.is_ok(), "{id}: answered stored, yet not found");
                stored += 1;
            }
        }
    }
    assert_eq!(s.count("events").await, 1 + filled + stored, "nothing half-written");
    assert_eq!(s.count("unrouted").await, 1 + filled + stored);
    // Reads, and writes that need no room, still work.
    assert_eq!(s.store.get_event(&tenant, "before").await.unwrap().event.id.as_str(), "before");
    assert!(matches!(s.store.ingest(&tenant, None, vec![event("before", 0)]).await.unwrap()[..], [Ingested::Duplicate]));

    s.execute("PRAGMA max_page_count = 1073741823").await;
    for (id, answer) in posts(&s).await.into_iter().filter(|(id, _)| id != "hold") {
        assert!(matches!(answer.unwrap_or_else(|e| panic!("{id}: {e}"))[..], [Ingested::Stored { .. } | Ingested::Duplicate]));
    }
    assert_eq!(s.count("events").await, 1 + filled + ids.len() as i64);
}
