//! The PostgreSQL backend: one database shared by several engine nodes.
//!
//! Every method is one transaction, most of them one statement: PostgreSQL
//! serializes what must be serialized with row locks, so nodes need no other
//! coordination. The two writes every event makes, its ingest (for tenants
//! without a quota) and its attempts, wait a moment in a queue and are
//! written in groups: one commit for many callers, as the SQLite writer
//! does. Delivery leases carry the [`NodeId`] of the node that took
//! them; claims skip rows another node is claiming (`FOR UPDATE SKIP
//! LOCKED`). Writers that could race on one event (routing, replays, the
//! purge) lock the event's row first, always in `seq` order. Reads whose SQL
//! SQLite shares are in `reads`, not here.

use std::str::FromStr;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::mpsc;

use super::rows::*;
use super::*;
use crate::telemetry;
use crate::telemetry::streak::Streak;

/// Connections per node. The database does the work; more connections
/// than its cores mostly queue inside it.
const POOL_SIZE: u32 = 16;
/// The channel the schema's triggers announce changes on.
const CHANGES: &str = "sluice_changes";
/// Takes the bootstrap's advisory lock: nodes starting together on an empty
/// database make one operator tenant.
const BOOTSTRAP_LOCK: i64 = 0x736c_7569_6365; // "sluice"
/// Taken by the node walking the payload purge: two nodes' walks would
/// clear the same rows, perhaps in another order.
const PAYLOAD_PURGE_LOCK: i64 = 0x736c_7569_6370; // "sluicp"
/// Ingests of tenants without a quota spread their usage count over this
/// many rows, so that they do not queue on one row lock.
const USAGE_SHARDS: i64 = 16;

#[derive(Clone)]
pub struct PostgresStore {
    pub(super) pool: PgPool,
    pub(super) node: NodeId,
    /// Ingests of tenants without a quota wait here for the next group write.
    ingests: mpsc::Sender<IngestJob>,
    /// Attempts wait here for the next group write.
    attempts: mpsc::Sender<AttemptJob>,
    /// This node's epoch (see [`Epoch`]), as its row in `nodes` holds it.
    epoch: Arc<AtomicI64>,
    /// When its last heartbeat that went through was sent.
    beats: Arc<Beats>,
}

/// This node's heartbeats as it sees them: whether its epoch may have
/// ended while it could not reach the database.
struct Beats {
    opened: std::time::Instant,
    /// When the last heartbeat that went through was sent, in ms since
    /// `opened`: no node can have taken this one for dead before
    /// [`NODE_SILENT_MS`] after it.
    sent_ok: AtomicU64,
    /// One heartbeat at a time: two that found the epoch ended would each
    /// start a new one, ending the other's.
    one: tokio::sync::Mutex<()>,
}

/// A node whose last heartbeat went through longer ago than this confirms
/// its epoch before it takes new claims: a third of the silence after
/// which the others take it for dead.
const CONFIRM_AFTER_MS: u64 = NODE_SILENT_MS as u64 / 3;

impl Beats {
    fn new() -> Self {
        Self { opened: std::time::Instant::now(), sent_ok: AtomicU64::new(0), one: tokio::sync::Mutex::new(()) }
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// Whether no heartbeat has gone through for [`CONFIRM_AFTER_MS`].
    fn stale(&self) -> bool {
        self.now_ms() > self.sent_ok.load(Ordering::Acquire) + CONFIRM_AFTER_MS
    }
}

/// An ingest request to store, and who waits for its answer.
type IngestJob = (TenantId, Vec<Event>, tokio::sync::oneshot::Sender<Result<Vec<Ingested>>>);

/// Most ingest requests stored in one statement.
const MAX_INGEST_GROUP: usize = 64;

/// An attempt to record, and who waits for its failure streak.
type AttemptJob = (NewAttempt, tokio::sync::oneshot::Sender<Result<Recorded>>);

/// Most attempts written in one transaction.
const MAX_ATTEMPT_GROUP: usize = 256;

impl Columns for PgRow {
    fn text(&self, col: &str) -> Result<String> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<i64> {
        Ok(self.try_get(col)?)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        Ok(self.try_get(col)?)
    }
    fn flag(&self, col: &str) -> Result<bool> {
        Ok(self.try_get(col)?)
    }
    fn bytes(&self, col: &str) -> Result<Vec<u8>> {
        Ok(self.try_get(col)?)
    }
    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.try_get(col)?)
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_unique_violation())
}

/// Maps a unique-constraint failure to [`StoreError::Conflict`] on `what`.
fn conflict_on(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| if is_unique_violation(&e) { StoreError::Conflict(what) } else { e.into() }
}

/// Reads a change notification: `<kind> <tenant> <id>`.
fn parse_change(payload: &str) -> Option<Change> {
    let mut parts = payload.split(' ');
    let (kind, tenant, id) = (parts.next()?, parts.next()?, parts.next()?);
    Some(match kind {
        "config" => Change::Config { tenant: TenantId::parse(tenant).ok()?, id: ConfigId::parse(id).ok()? },
        "key" => Change::Key { id: KeyId::parse(id).ok()? },
        "tenant" => Change::Tenant { id: TenantId::parse(id).ok()? },
        _ => return None,
    })
}

impl PostgresStore {
    pub async fn open(url: &str, node: NodeId) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("sluice");
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        // sqlx takes an advisory lock: nodes starting together migrate once.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        // Alive before it claims anything: its writes check its epoch.
        let epoch = register(&pool, &node, 0).await?;
        let (attempts, queue) = mpsc::channel(4096);
        tokio::spawn(write_attempts(pool.clone(), node.clone(), queue));
        let (ingests, queue) = mpsc::channel(1024);
        tokio::spawn(write_ingests(pool.clone(), node.clone(), queue));
        Ok(Self { pool, node, ingests, attempts, epoch: Arc::new(AtomicI64::new(epoch)), beats: Arc::new(Beats::new()) })
    }

    pub fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn watch(&self) -> Result<Option<mpsc::Receiver<Change>>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANGES).await?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            let mut failing = Streak::default();
            loop {
                let change = match listener.try_recv().await {
                    Ok(Some(n)) => {
                        if let Some(failures) = failing.succeeded() {
                            tracing::info!(failures, "listening for other nodes' changes works again");
                        }
                        match parse_change(n.payload()) {
                            Some(change) => change,
                            None => continue,
                        }
                    }
                    // The connection dropped; the next call reconnects.
                    Ok(None) => Change::Lost,
                    Err(e) => {
                        if let Some(failures) = failing.failed() {
                            tracing::warn!(error = %e, failures, "listening for other nodes' changes failed; retrying every second, logged ever more rarely");
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Change::Lost
                    }
                };
                if tx.send(change).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    // Tenants and keys.

    pub async fn bootstrap(&self, admin: NewKey, tenant_name: &str) -> Result<Option<TenantId>> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(BOOTSTRAP_LOCK).execute(&mut *tx).await?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE operator)").fetch_one(&mut *tx).await?;
        if exists {
            return Ok(None);
        }
        let now = now_ms();
        sqlx::query("INSERT INTO tenants (id, name, operator, created_at) VALUES ($1, $2, true, $3)")
            .bind(admin.tenant_id.as_str())
            .bind(tenant_name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let tenant = admin.tenant_id.clone();
        insert_key(&mut tx, admin, now).await?;
        tx.commit().await?;
        Ok(Some(tenant))
    }

    pub async fn create_tenant(&self, name: &str, monthly_quota: Option<i64>) -> Result<TenantRecord> {
        let record = TenantRecord { id: TenantId::generate(), name: name.to_owned(), monthly_quota, created_at: now_ms() };
        sqlx::query("INSERT INTO tenants (id, name, monthly_quota, created_at) VALUES ($1, $2, $3, $4)")
            .bind(record.id.as_str())
            .bind(&record.name)
            .bind(record.monthly_quota)
            .bind(record.created_at)
            .execute(&self.pool)
            .await
            .map_err(conflict_on("tenant name"))?;
        Ok(record)
    }

    pub async fn update_tenant(&self, id: &TenantId, name: &str, monthly_quota: Option<i64>) -> Result<TenantRecord> {
        let row =
            sqlx::query("UPDATE tenants SET name = $1, monthly_quota = $2 WHERE id = $3 RETURNING id, name, monthly_quota, created_at")
                .bind(name)
                .bind(monthly_quota)
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(conflict_on("tenant name"))?;
        tenant_row(&not_found_if_none(row)?)
    }

    pub async fn create_key(&self, key: NewKey) -> Result<KeyRecord> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        let tenant_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)")
            .bind(key.tenant_id.as_str())
            .fetch_one(&mut *tx)
            .await?;
        if !tenant_exists {
            return Err(StoreError::NotFound);
        }
        let record = insert_key(&mut tx, key, now).await?;
        tx.commit().await?;
        Ok(record)
    }

    pub async fn create_catcher(&self, catcher: CatcherRecord, hash: KeyHash) -> Result<CatcherRecord> {
        let inserted = sqlx::query(
            "INSERT INTO catchers (id, tenant_id, name, hash, answer_status, answer_body, created_at)
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $2)",
        )
        .bind(catcher.id.as_str())
        .bind(catcher.tenant_id.as_str())
        .bind(&catcher.name)
        .bind(&hash.0)
        .bind(catcher.answer_status)
        .bind(&catcher.answer_body)
        .bind(catcher.created_at)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(catcher)
    }

    pub async fn delete_catcher(&self, tenant: &TenantId, id: &CatcherId) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM catchers WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    pub async fn catch(&self, hash: &KeyHash, caught: Caught) -> Result<Option<CatcherRecord>> {
        let mut tx = self.begin().await?;
        let Some(row) = sqlx::query("SELECT * FROM catchers WHERE hash = $1").bind(&hash.0).fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        let catcher = catcher_row(&row)?;
        sqlx::query(
            "INSERT INTO caught_requests (id, catcher_id, received_at, method, uri, headers, body, body_size) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(caught.id.as_str())
        .bind(catcher.id.as_str())
        .bind(caught.received_at)
        .bind(&caught.method)
        .bind(&caught.uri)
        .bind(&caught.headers)
        .bind(text::encode_bytes(&caught.body).as_ref())
        .bind(caught.body_size)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM caught_requests WHERE catcher_id = $1 AND id < (SELECT id FROM caught_requests WHERE catcher_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
        )
        .bind(catcher.id.as_str())
        .bind(CAUGHT_KEPT - 1)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(catcher))
    }

    pub async fn create_portal_link(&self, link: &NewPortalLink) -> Result<()> {
        let scopes: Vec<&str> = link.scopes.iter().map(|s| s.as_str()).collect();
        let inserted = sqlx::query(
            "INSERT INTO portal_links (id, tenant_id, hash, scopes, session_ms, expires_at, created_by, created_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $2)",
        )
        .bind(link.id.as_str())
        .bind(link.tenant_id.as_str())
        .bind(&link.hash.0)
        .bind(scopes.join(" "))
        .bind(link.session_ms)
        .bind(link.expires_at)
        .bind(link.created_by.as_ref().map(KeyId::as_str))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    pub async fn redeem_portal_link(&self, hash: &KeyHash, session: SessionKey, now: i64) -> Result<KeyRecord> {
        let mut tx = self.begin().await?;
        // The row lock of the UPDATE makes a second redemption wait, then
        // find it used.
        let link = sqlx::query(
            "UPDATE portal_links SET used_at = $1, session_key = $2
             WHERE hash = $3 AND used_at IS NULL AND expires_at > $1
             RETURNING id, tenant_id, scopes, session_ms",
        )
        .bind(now)
        .bind(session.id.as_str())
        .bind(&hash.0)
        .fetch_optional(&mut *tx)
        .await?;
        let link = not_found_if_none(link)?;
        let key = session_key(
            session,
            &link.try_get::<String, _>("id")?,
            &link.try_get::<String, _>("tenant_id")?,
            &link.try_get::<String, _>("scopes")?,
            now + link.try_get::<i64, _>("session_ms")?,
        )?;
        let record = insert_key(&mut tx, key, now).await?;
        tx.commit().await?;
        Ok(record)
    }

    pub async fn revoke_key(&self, tenant: &TenantId, id: &KeyId) -> Result<KeyRecord> {
        let row = sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE tenant_id = $2 AND id = $3 RETURNING *")
            .bind(now_ms())
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        key_row(&not_found_if_none(row)?)
    }

    // Scripts.

    pub async fn insert_script(&self, tenant: &TenantId, script: &ScriptRecord, bytes: &[u8], compiled: Option<&[u8]>) -> Result<i64> {
        // Two uploads of one name at once may pick the same number; the
        // unique index refuses the second, which takes the next one.
        for _ in 0..8 {
            let inserted = sqlx::query_scalar(
                "INSERT INTO scripts (id, tenant_id, name, sha256, size, wit_version, bytes, compiled, created_at, created_by, version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                         (SELECT COALESCE(MAX(version), 0) + 1 FROM scripts WHERE tenant_id = $2 AND name = $3))
                 RETURNING version",
            )
            .bind(script.id.as_str())
            .bind(tenant.as_str())
            .bind(&script.name)
            .bind(&script.sha256)
            .bind(script.size)
            .bind(&script.wit_version)
            .bind(bytes)
            .bind(compiled)
            .bind(script.created_at)
            .bind(script.created_by.as_ref().map(|k| k.as_str()))
            .fetch_one(&self.pool)
            .await;
            match inserted {
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => continue,
                other => return Ok(other?),
            }
        }
        Err(StoreError::Conflict("script version"))
    }

    pub async fn delete_script(&self, tenant: &TenantId, id: &ScriptId) -> Result<()> {
        let mut tx = self.begin().await?;
        // The row lock holds off configurations that would start using it.
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM scripts WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        not_found_if_none(found)?;
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM configurations WHERE tenant_id = $1 AND script_id = $2")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?;
        if users > 0 {
            return Err(StoreError::InUse(users));
        }
        sqlx::query("DELETE FROM scripts WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // Configurations.

    pub async fn insert_config(&self, tenant: &TenantId, id: &ConfigId, write: &ConfigWrite) -> Result<ConfigRecord> {
        let mut tx = self.begin().await?;
        check_script_owner(&mut tx, tenant, write.script_id.as_ref()).await?;
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO configurations (id, tenant_id, name, version, enabled, script_id, spec, created_at, updated_at)
             VALUES ($1, $2, $3, 1, false, $4, $5, $6, $6) RETURNING *",
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(&write.name)
        .bind(write.script_id.as_ref().map(|s| s.as_str()))
        .bind(&write.spec)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(conflict_on("configuration name"))?;
        let record = config_row(&row)?;
        insert_config_script(&mut tx, tenant, id, record.version, write).await?;
        tx.commit().await?;
        Ok(record)
    }

    pub async fn record_config_script(&self, tenant: &TenantId, id: &ConfigId, version: i64, write: &ConfigWrite) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_config_script(&mut tx, tenant, id, version, write).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a spec by the same settings sealed anew, if it is still
    /// `old`. The settings are the same: no version, no change announced.
    pub async fn reseal_config(&self, tenant: &TenantId, id: &ConfigId, old: &str, new: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE configurations SET spec = $1 WHERE tenant_id = $2 AND id = $3 AND spec = $4")
            .bind(new)
            .bind(tenant.as_str())
            .bind(id.as_str())
            .bind(old)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn update_config(&self, tenant: &TenantId, id: &ConfigId, expected: i64, write: &ConfigWrite) -> Result<ConfigRecord> {
        let mut tx = self.begin().await?;
        check_script_owner(&mut tx, tenant, write.script_id.as_ref()).await?;
        let row = sqlx::query(
            "UPDATE configurations SET name = $1, script_id = $2, spec = $3, version = version + 1, updated_at = $4
             WHERE tenant_id = $5 AND id = $6 AND version = $7 RETURNING *",
        )
        .bind(&write.name)
        .bind(write.script_id.as_ref().map(|s| s.as_str()))
        .bind(&write.spec)
        .bind(now_ms())
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(expected)
        .fetch_optional(&mut *tx)
        .await
        .map_err(conflict_on("configuration name"))?;
        let Some(row) = row else { return Err(stale_or_missing(&mut tx, tenant, id).await) };
        let record = config_row(&row)?;
        insert_config_script(&mut tx, tenant, id, record.version, write).await?;
        tx.commit().await?;
        Ok(record)
    }

    pub async fn set_config_enabled(
        &self,
        tenant: &TenantId,
        id: &ConfigId,
        expected: Option<i64>,
        enabled: bool,
        reason: Option<&str>,
    ) -> Result<ConfigRecord> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE configurations SET enabled = $1, disabled_reason = $2, version = version + 1, updated_at = $3
             WHERE tenant_id = $4 AND id = $5 AND ($6::bigint IS NULL OR version = $6) RETURNING *",
        )
        .bind(enabled)
        .bind(if enabled { None } else { reason })
        .bind(now_ms())
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(expected)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Err(stale_or_missing(&mut tx, tenant, id).await) };
        let record = config_row(&row)?;
        if enabled {
            // Enabled again: its failures so far no longer count.
            sqlx::query("DELETE FROM failure_streaks WHERE config_id = $1").bind(id.as_str()).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(record)
    }

    pub async fn delete_config(&self, tenant: &TenantId, id: &ConfigId, expected: Option<i64>) -> Result<()> {
        let mut tx = self.begin().await?;
        let deleted = sqlx::query("DELETE FROM configurations WHERE tenant_id = $1 AND id = $2 AND ($3::bigint IS NULL OR version = $3)")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .bind(expected)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(stale_or_missing(&mut tx, tenant, id).await);
        }
        // Its open deliveries end here, with a state that says why: nothing
        // would ever claim them again.
        sqlx::query(concat!(
            "UPDATE deliveries SET status = 'failed', error_kind = '",
            config_deleted!(kind),
            "', reason = '",
            config_deleted!(reason),
            "', undecided = false, next_attempt_at = NULL, lease_until = NULL, lease_owner = NULL, updated_at = $1
             WHERE tenant_id = $2 AND config_id = $3 AND status = 'pending'",
        ))
        .bind(now_ms())
        .bind(tenant.as_str())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // Events.

    pub async fn put_event_type(&self, tenant: &TenantId, name: &str, description: Option<&str>) -> Result<EventTypeRecord> {
        let row = sqlx::query(
            "INSERT INTO event_types (tenant_id, name, description, first_seen) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, name) DO UPDATE SET description = excluded.description
             RETURNING name, description, first_seen",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(description)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        event_type_row(&row)
    }

    /// Without a quota, queued for the next group write (one statement for
    /// the requests that arrived meanwhile). With one, a transaction of its
    /// own: the tenant's ingests take turns on usage shard 0, and the batch
    /// rolls back if it goes over, so the quota holds exactly.
    pub async fn ingest(&self, tenant: &TenantId, quota: Option<i64>, events: Vec<Event>) -> Result<Vec<Ingested>> {
        let Some(quota) = quota else {
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.ingests.send((tenant.clone(), events, reply)).await.map_err(|_| StoreError::Closed)?;
            return answer.await.map_err(|_| StoreError::Closed)?;
        };
        let mut tx = self.begin().await?;
        let now = now_ms();
        let stored = insert_events(&mut *tx, &self.node, &[(tenant, &events)], now, true).await?;
        let used: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(events), 0)::bigint FROM usage WHERE tenant_id = $1 AND month = $2")
            .bind(tenant.as_str())
            .bind(month_of(now))
            .fetch_one(&mut *tx)
            .await?;
        let count = stored.len() as i64;
        if used > quota && count > 0 {
            // Dropping the transaction rolls the batch back.
            return Err(StoreError::QuotaExceeded { quota, used: used - count });
        }
        tx.commit().await?;
        Ok(ingested(&[(tenant, &events)], stored).remove(0))
    }

    pub async fn record_routing(&self, routed: Vec<Routed>) -> Result<Vec<bool>> {
        let seqs: Vec<i64> = routed.iter().map(|r| r.event_seq).collect();
        let tenants: Vec<&str> = routed.iter().map(|r| r.tenant.as_str()).collect();
        // Marked routed now: all its rows are written now. The others hand
        // rows on under the claim this node took at ingest, which stands.
        let mark: Vec<bool> = routed.iter().map(|r| r.handed == 0).collect();
        let resumed: Vec<bool> = routed.iter().map(|r| r.resumed).collect();
        let epochs: Vec<i64> = routed.iter().map(|r| r.epoch.0).collect();
        let mut rows = DeliveryRows::default();
        for r in &routed {
            for d in &r.deliveries {
                rows.push(&r.tenant, r.event_seq, d);
            }
        }
        // One statement: take the events to mark that are still unrouted and
        // this node's (or whose claim ran out), locked in `seq` order (no
        // deadlock with another node routing some of them), skipping those
        // another node took first; mark them routed (delete their `unrouted`
        // rows), and insert the deliveries of those taken and of those
        // handing rows on (resumed: only to configurations without one)
        // under a claim of this node's present epoch, whose row stays locked
        // until the statement ends (see [`Epoch`]).
        let taken: Vec<i64> = sqlx::query_scalar(
            "WITH r AS (SELECT * FROM unnest($16::bigint[], $17::text[], $20::boolean[], $21::boolean[], $22::bigint[])
                          AS r(seq, tenant_id, mark, resumed, epoch)),
             node AS MATERIALIZED (
                SELECT epoch FROM nodes WHERE id = $14 AND EXISTS (SELECT 1 FROM r WHERE NOT r.mark) FOR KEY SHARE),
             taken AS MATERIALIZED (
                SELECT u.seq, r.resumed FROM unrouted u JOIN events e ON e.seq = u.seq
                  JOIN r ON e.seq = r.seq AND e.tenant_id = r.tenant_id
                WHERE r.mark AND (u.claimed_by = $14 OR u.claimed_until IS NULL OR u.claimed_until < $15)
                ORDER BY u.seq FOR UPDATE OF u),
             marked AS (
                DELETE FROM unrouted WHERE seq IN (SELECT seq FROM taken)),
             kept AS (
                SELECT seq, resumed FROM taken UNION ALL SELECT seq, resumed FROM r WHERE NOT r.mark AND r.epoch = (SELECT epoch FROM node)),
             added AS (
                INSERT INTO deliveries (id, tenant_id, event_seq, config_id, config_version, status, reason, error_kind,
                                        script_logs, body, headers, next_attempt_at, lease_until, lease_owner,
                                        created_at, updated_at, undecided, fuel_used)
                SELECT d.id, d.tenant_id, d.event_seq, d.config_id, d.config_version, d.status, d.reason, d.error_kind,
                       d.script_logs, d.body, d.headers, d.next_attempt_at, d.lease_until,
                       CASE WHEN d.lease_until IS NULL THEN NULL ELSE $14 END, $15, $15, d.undecided, d.fuel_used
                FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[],
                            $9::text[], $10::text[], $11::text[], $12::bigint[], $13::bigint[], $18::boolean[], $19::bigint[])
                     AS d(id, tenant_id, event_seq, config_id, config_version, status, reason, error_kind,
                          script_logs, body, headers, next_attempt_at, lease_until, undecided, fuel_used)
                JOIN kept t ON t.seq = d.event_seq
                WHERE NOT (t.resumed AND EXISTS (SELECT 1 FROM deliveries x WHERE x.event_seq = d.event_seq AND x.config_id = d.config_id)))
             SELECT seq FROM kept",
        )
        .bind(&rows.id)
        .bind(&rows.tenant)
        .bind(&rows.event_seq)
        .bind(&rows.config_id)
        .bind(&rows.config_version)
        .bind(&rows.status)
        .bind(&rows.reason)
        .bind(&rows.error_kind)
        .bind(&rows.script_logs)
        .bind(&rows.body)
        .bind(&rows.headers)
        .bind(&rows.next_attempt_at)
        .bind(&rows.lease_until)
        // Leased rows (handed straight to this node's sender) carry its id.
        .bind(self.node.as_str())
        .bind(now_ms())
        .bind(&seqs)
        .bind(&tenants)
        .bind(&rows.undecided)
        .bind(&rows.fuel_used)
        .bind(&mark)
        .bind(&resumed)
        .bind(&epochs)
        .fetch_all(&self.pool)
        .await?;
        let taken: std::collections::HashSet<i64> = taken.into_iter().collect();
        Ok(routed.iter().map(|r| taken.contains(&r.event_seq)).collect())
    }

    // Deliveries and attempts.

    pub async fn claim_due(&self, now: i64, lease_ms: i64, limit: i64, skip: &ClaimSkip) -> Result<Vec<DueDelivery>> {
        let skip_tenants: Vec<&str> = skip.tenants.iter().map(|t| t.as_str()).collect();
        let skip_configs: Vec<&str> = skip.configs.iter().map(|c| c.as_str()).collect();
        let rows = sqlx::query(&format!(
            // Per configuration that may be claimed for, its first due ones
            // through its own range of `deliveries_due`: one left alone
            // (queue full, breaker open) costs nothing however long its
            // backlog, and no backlog costs more than `$3` rows. Only the
            // configurations with deliveries waiting are visited, found by
            // skipping through that index from one's range to the next
            // (`waiting`, with each one's first due time), and only those
            // whose first is due are looked up: as SQLite's claim.
            "WITH RECURSIVE waiting AS (
                (SELECT config_id, next_attempt_at FROM deliveries WHERE status = 'pending' AND lease_until IS NULL
                 ORDER BY config_id, next_attempt_at LIMIT 1)
                UNION ALL
                SELECT n.config_id, n.next_attempt_at FROM waiting w CROSS JOIN LATERAL (
                    SELECT config_id, next_attempt_at FROM deliveries
                    WHERE status = 'pending' AND lease_until IS NULL AND config_id > w.config_id
                    ORDER BY config_id, next_attempt_at LIMIT 1) n),
             due AS (
                SELECT d.tenant_id, d.id, d.next_attempt_at FROM waiting w
                JOIN configurations c ON c.id = w.config_id CROSS JOIN LATERAL (
                    SELECT tenant_id, id, next_attempt_at FROM deliveries
                    WHERE config_id = c.id AND status = 'pending' AND lease_until IS NULL AND next_attempt_at <= $2
                    ORDER BY next_attempt_at LIMIT $3
                    FOR UPDATE SKIP LOCKED) d
                WHERE w.next_attempt_at <= $2 AND c.enabled AND NOT (c.tenant_id = ANY($5)) AND NOT (c.id = ANY($6))
                ORDER BY d.next_attempt_at LIMIT $3),
             lost AS (
                SELECT tenant_id, id, next_attempt_at FROM deliveries
                WHERE status = 'pending' AND lease_until IS NOT NULL AND lease_until < $2 AND next_attempt_at <= $2
                  AND config_id IN (SELECT id FROM configurations WHERE enabled)
                  AND NOT (tenant_id = ANY($5)) AND NOT (config_id = ANY($6))
                ORDER BY lease_until LIMIT $3
                FOR UPDATE SKIP LOCKED),
             chosen AS MATERIALIZED (
                SELECT tenant_id, id FROM (SELECT * FROM due UNION ALL SELECT * FROM lost) c ORDER BY next_attempt_at LIMIT $3),
             d AS (
                UPDATE deliveries SET lease_until = $1, lease_owner = $4
                FROM chosen WHERE deliveries.tenant_id = chosen.tenant_id AND deliveries.id = chosen.id
                RETURNING deliveries.*)
             SELECT {DELIVERY_COLUMNS}, {EVENT_COLUMNS} FROM d JOIN events e ON e.seq = d.event_seq
             ORDER BY d.next_attempt_at"
        ))
        .bind(now + lease_ms)
        .bind(now)
        .bind(limit)
        .bind(self.node.as_str())
        .bind(&skip_tenants)
        .bind(&skip_configs)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let delivery = delivery_row(row)?;
                let event = event_row(row)?;
                Ok(DueDelivery { delivery, tenant_id: event.tenant_id, event: event.event })
            })
            .collect()
    }

    pub async fn record_decision(&self, tenant: &TenantId, d: NewDelivery) -> Result<bool> {
        let updated = sqlx::query(
            "UPDATE deliveries SET status = $1, reason = $2, error_kind = $3, script_logs = $4, body = $5, headers = $6,
                                   config_version = $7, undecided = false, updated_at = $8, fuel_used = $11,
                                   next_attempt_at = CASE WHEN $1 = 'pending' THEN next_attempt_at END,
                                   lease_until = CASE WHEN $1 = 'pending' THEN lease_until END,
                                   lease_owner = CASE WHEN $1 = 'pending' THEN lease_owner END
             WHERE tenant_id = $9 AND id = $10 AND undecided AND status = 'pending'",
        )
        .bind(d.status.as_str())
        .bind(&d.reason)
        .bind(&d.error_kind)
        .bind(&d.script_logs)
        .bind(&d.body)
        .bind(&d.headers)
        .bind(d.config_version)
        .bind(now_ms())
        .bind(tenant.as_str())
        .bind(d.id.as_str())
        .bind(d.fuel_used)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    pub async fn hurry_undecided(&self, tenant: &TenantId, config: &ConfigId, now: i64, limit: i64) -> Result<u64> {
        let hurried = sqlx::query(
            // Materialized: as a plain `IN (…)` the planner may run the
            // limited choice more than once, and bring forward more.
            "WITH chosen AS MATERIALIZED (
                SELECT tenant_id, id FROM deliveries
                WHERE config_id = $3 AND undecided AND next_attempt_at > $1
                  AND tenant_id = $2 AND status = 'pending' AND lease_until IS NULL
                ORDER BY next_attempt_at LIMIT $4
                FOR UPDATE SKIP LOCKED)
             UPDATE deliveries d SET next_attempt_at = $1
             FROM chosen WHERE d.tenant_id = chosen.tenant_id AND d.id = chosen.id",
        )
        .bind(now)
        .bind(tenant.as_str())
        .bind(config.as_str())
        .bind(limit)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(hurried)
    }

    pub async fn release_delivery(&self, tenant: &TenantId, id: &DeliveryId, next_attempt_at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE deliveries SET lease_until = NULL, lease_owner = NULL, next_attempt_at = $1, updated_at = $2
             WHERE tenant_id = $3 AND id = $4 AND status = 'pending'",
        )
        .bind(next_attempt_at)
        .bind(now_ms())
        .bind(tenant.as_str())
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// This node's own (it tells those it still holds apart itself), and
    /// others' whose claim ran out or never was taken.
    pub async fn unrouted_events(&self, after_seq: i64, received_before: i64, now: i64, limit: i64) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM unrouted r JOIN events e ON e.seq = r.seq
             WHERE r.seq > $1 AND e.received_at < $2
               AND (r.claimed_by = $3 OR r.claimed_until IS NULL OR r.claimed_until < $4)
             ORDER BY r.seq LIMIT $5"
        ))
        .bind(after_seq)
        .bind(received_before)
        .bind(self.node.as_str())
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_row).collect()
    }

    /// A start-up query: found through the pending deliveries' index, so
    /// that taking and dropping a lease (every send) maintains no other.
    pub async fn release_leases(&self) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let released = release_node(&mut tx, self.node.as_str()).await?;
        tx.commit().await?;
        Ok(released)
    }

    /// The times compared are the database server's, so that the nodes'
    /// clocks need not agree. A node that finds its row gone was taken for
    /// dead: it starts a new epoch.
    pub async fn keep_alive(&self, judge: bool) -> Result<Vec<String>> {
        self.beat().await?;
        if !judge {
            return Ok(Vec::new());
        }
        // Deleted and released in one transaction: a node that finds a
        // silent one (two at once: one of them) releases all it held.
        let mut tx = self.pool.begin().await?;
        let silent: Vec<String> = sqlx::query_scalar(&format!("DELETE FROM nodes WHERE seen_at < {SERVER_MS} - $1 RETURNING id"))
            .bind(NODE_SILENT_MS)
            .fetch_all(&mut *tx)
            .await?;
        for node in &silent {
            release_node(&mut tx, node).await?;
        }
        tx.commit().await?;
        Ok(silent)
    }

    /// Says this node is alive; if the others took it for dead meanwhile,
    /// starts a new epoch.
    async fn beat(&self) -> Result<()> {
        let _one = self.beats.one.lock().await;
        self.beat_held().await
    }

    /// [`Self::beat`], its lock held by the caller.
    async fn beat_held(&self) -> Result<()> {
        let sent = self.beats.now_ms();
        let epoch = self.epoch.load(Ordering::Acquire);
        let beat = sqlx::query(&format!("UPDATE nodes SET seen_at = {SERVER_MS} WHERE id = $1 AND epoch = $2"))
            .bind(self.node.as_str())
            .bind(epoch)
            .execute(&self.pool)
            .await?;
        if beat.rows_affected() == 0 {
            self.epoch.store(register(&self.pool, &self.node, epoch).await?, Ordering::Release);
            tracing::warn!(
                node = %self.node,
                "the other nodes took this node for dead (silent too long) and took its events and deliveries over; \
                 what it still held from before is left to them"
            );
        }
        self.beats.sent_ok.fetch_max(sent, Ordering::AcqRel);
        Ok(())
    }

    /// The epoch to take new claims in: the present one, confirmed first
    /// if this node has not been heard for a while (it could not reach the
    /// database, and may have been taken for dead meanwhile). Claims taken
    /// in an ended epoch hand nothing on: their events would wait for the
    /// recovery scan, and be sent twice.
    pub async fn live_epoch(&self) -> Result<Epoch> {
        if self.beats.stale() {
            let _one = self.beats.one.lock().await;
            // The requests that waited here behind the one that confirmed
            // it need not each confirm it again.
            if self.beats.stale() {
                self.beat_held().await?;
            }
        }
        Ok(self.epoch())
    }

    pub async fn write_pending(&self, unwritten: Vec<Arc<Unwritten>>, next_attempt_at: i64, lease_until: Option<i64>) -> Result<()> {
        let rows: Vec<Settled> = unwritten
            .iter()
            .map(|u| Settled { unwritten: u, status: DeliveryStatus::Pending, attempts: 0, next_attempt_at: Some(next_attempt_at) })
            .collect();
        let mut tx = self.pool.begin().await?;
        let void = void_handed_on(&mut tx, self.node.as_str(), &rows.iter().map(|r| Some(r.unwritten.epoch)).collect::<Vec<_>>()).await?;
        let rows: Vec<Settled> = rows.into_iter().zip(void).filter(|(_, void)| !void).map(|(row, _)| row).collect();
        if !rows.is_empty() {
            write_unwritten(&mut tx, &rows, lease_until.map(|until| (until, self.node.as_str()))).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Queued for the next group write: attempts finish far more often
    /// than one transaction each could commit, and their callers can wait
    /// a moment.
    pub async fn record_attempt(&self, a: NewAttempt) -> Result<Recorded> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.attempts.send((a, reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub async fn reserve_send_slot(&self, config: &ConfigId, interval: Duration) -> Result<Duration> {
        // The database's clock, so that nodes' clocks need not agree.
        let interval_us = interval.as_micros().min(i64::MAX as u128) as i64;
        let wait_us: i64 = sqlx::query_scalar(
            "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS us)
             INSERT INTO send_slots (config_id, next_start) SELECT $1, us + $2 FROM now
             ON CONFLICT (config_id) DO UPDATE SET next_start = GREATEST(send_slots.next_start, (SELECT us FROM now)) + $2
             RETURNING next_start - $2 - (SELECT us FROM now)",
        )
        .bind(config.as_str())
        .bind(interval_us)
        .fetch_one(&self.pool)
        .await?;
        Ok(Duration::from_micros(wait_us.max(0) as u64))
    }

    // Replay and recovery.

    pub async fn add_deliveries(&self, tenant: &TenantId, rows: Vec<AddedDelivery>) -> Result<Vec<bool>> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        // With its event locked, a row's condition cannot change under it:
        // racing replays of one event take turns, and the second sees the first.
        let seqs: Vec<i64> = rows.iter().map(|r| r.event_seq).collect();
        lock_events(&mut tx, &seqs).await?;
        let mut added = Vec::with_capacity(rows.len());
        for r in &rows {
            let d = &r.delivery;
            let inserted = sqlx::query(
                "INSERT INTO deliveries (id, tenant_id, event_seq, config_id, config_version, status, reason, error_kind,
                                         script_logs, body, headers, next_attempt_at, lease_until, lease_owner, replay_of,
                                         created_at, updated_at, undecided, fuel_used)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, CASE WHEN $13::bigint IS NULL THEN NULL ELSE $16 END,
                        $14, $15, $15, $17, $18
                 WHERE EXISTS (SELECT 1 FROM events WHERE seq = $3 AND tenant_id = $2)
                   AND NOT EXISTS (SELECT 1 FROM unrouted WHERE seq = $3)
                   AND (SELECT id FROM deliveries WHERE event_seq = $3 AND config_id = $4 ORDER BY id DESC LIMIT 1)
                       IS NOT DISTINCT FROM $14::text",
            )
            .bind(d.id.as_str())
            .bind(tenant.as_str())
            .bind(r.event_seq)
            .bind(d.config_id.as_str())
            .bind(d.config_version)
            .bind(d.status.as_str())
            .bind(&d.reason)
            .bind(&d.error_kind)
            .bind(&d.script_logs)
            .bind(&d.body)
            .bind(&d.headers)
            .bind(d.next_attempt_at)
            .bind(d.lease_until)
            .bind(r.replay_of.as_ref().map(|id| id.as_str()))
            .bind(now)
            .bind(self.node.as_str())
            .bind(d.undecided)
            .bind(d.fuel_used)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            added.push(inserted == 1);
        }
        tx.commit().await?;
        Ok(added)
    }

    // Retention.

    pub async fn purge_payloads(&self, before: i64, limit: i64, from: &PayloadCursor) -> Result<PurgedPayloads> {
        let mut tx = self.begin().await?;
        let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(PAYLOAD_PURGE_LOCK).fetch_one(&mut *tx).await?;
        if !ours {
            // Another node is walking: this purge is its.
            return Ok(PurgedPayloads { payloads: 0, resume: None });
        }
        let mut chunk = payload_walk::Chunk::new(limit, from);
        let tenants: Vec<(String, String)> = sqlx::query_as(
            "SELECT t.id, coalesce(p.purged_to, '') FROM tenants t LEFT JOIN payload_purges p ON p.tenant_id = t.id
             WHERE t.id > $1 ORDER BY t.id LIMIT $2",
        )
        .bind(chunk.after())
        .bind(chunk.tenants_to_list())
        .fetch_all(&mut *tx)
        .await?;
        for (tenant, from) in tenants {
            let Some(fetch) = chunk.next_fetch() else { break };
            let rows: Vec<(String, i64, bool)> = sqlx::query_as(
                "SELECT id, started_at, request_body IS NOT NULL OR response_body IS NOT NULL FROM attempts
                 WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(&tenant)
            .bind(&from)
            .bind(fetch)
            .fetch_all(&mut *tx)
            .await?;
            let rows = rows.into_iter().map(|(id, started_at, has_bodies)| payload_walk::Walked { id, started_at, has_bodies }).collect();
            let step = payload_walk::step(rows, before, fetch);
            if !step.clear.is_empty() {
                sqlx::query("UPDATE attempts SET request_body = NULL, response_body = NULL WHERE tenant_id = $1 AND id = ANY($2)")
                    .bind(&tenant)
                    .bind(&step.clear)
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some(to) = &step.walked_to {
                sqlx::query(
                    "INSERT INTO payload_purges (tenant_id, purged_to) VALUES ($1, $2)
                     ON CONFLICT (tenant_id) DO UPDATE SET purged_to = excluded.purged_to",
                )
                .bind(&tenant)
                .bind(to)
                .execute(&mut *tx)
                .await?;
            }
            if !chunk.record(&tenant, &step) {
                break;
            }
        }
        tx.commit().await?;
        Ok(chunk.finish())
    }

    pub async fn purge_events(&self, before: i64, limit: i64, from: EventCursor) -> Result<(PurgedEvents, Option<EventCursor>)> {
        let read_limit = event_walk::read_limit(limit);
        let mut tx = self.begin().await?;
        let scanned: Vec<(i64, i64, bool)> = sqlx::query_as(&event_walk::scan_sql(["$1", "$2", "$3", "$4"]))
            .bind(before)
            .bind(from.received_at)
            .bind(from.seq)
            .bind(read_limit)
            .fetch_all(&mut *tx)
            .await?;
        let scanned: Vec<event_walk::Scanned> =
            scanned.into_iter().map(|(seq, received_at, may_go)| event_walk::Scanned { seq, received_at, may_go }).collect();
        let (candidates, resume) = event_walk::page(&scanned, limit, read_limit);
        if candidates.is_empty() {
            return Ok((PurgedEvents::default(), resume));
        }
        // Locked, and checked again under the lock: a replay adding a
        // delivery waits, then finds no event. Skipped if locked: another
        // node is purging or routing it (the next purge sees it again).
        let seqs: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT e.seq FROM events e
             WHERE e.seq = ANY($1) AND {ROUTED}
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.status = 'pending')
             ORDER BY e.seq FOR UPDATE SKIP LOCKED"
        ))
        .bind(&candidates)
        .fetch_all(&mut *tx)
        .await?;
        if seqs.is_empty() {
            return Ok((PurgedEvents::default(), resume));
        }
        let mut purged = PurgedEvents::default();
        // Children first: no row is left pointing at one that is gone.
        let (attempts, payloads): (i64, i64) = sqlx::query_as(
            "WITH gone AS (DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_seq = ANY($1))
                           RETURNING request_body IS NOT NULL OR response_body IS NOT NULL AS had_bodies)
             SELECT count(*), count(*) FILTER (WHERE had_bodies) FROM gone",
        )
        .bind(&seqs)
        .fetch_one(&mut *tx)
        .await?;
        (purged.attempts, purged.payloads) = (attempts as u64, payloads as u64);
        for (sql, count) in [
            ("DELETE FROM deliveries WHERE event_seq = ANY($1)", &mut purged.deliveries),
            ("DELETE FROM events WHERE seq = ANY($1)", &mut purged.events),
        ] {
            *count = sqlx::query(sql).bind(&seqs).execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok((purged, resume))
    }
}

/// Locks events' rows in `seq` order, so that two writers locking
/// overlapping sets cannot deadlock.
async fn lock_events(tx: &mut Transaction<'static, Postgres>, seqs: &[i64]) -> Result<()> {
    sqlx::query("SELECT 1 FROM events WHERE seq = ANY($1) ORDER BY seq FOR UPDATE").bind(seqs).execute(&mut **tx).await?;
    Ok(())
}

/// Inserts a key, its tenant known to exist.
async fn insert_key(tx: &mut Transaction<'static, Postgres>, key: NewKey, now: i64) -> Result<KeyRecord> {
    let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, hash, scopes, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(key.id.as_str())
    .bind(key.tenant_id.as_str())
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(&key.hash.0)
    .bind(scopes.join(" "))
    .bind(now)
    .bind(key.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(key.into_record(now))
}

/// New delivery rows as columns, for `unnest`.
#[derive(Default)]
struct DeliveryRows {
    id: Vec<String>,
    tenant: Vec<String>,
    event_seq: Vec<i64>,
    config_id: Vec<String>,
    config_version: Vec<i64>,
    status: Vec<&'static str>,
    reason: Vec<Option<String>>,
    error_kind: Vec<Option<String>>,
    script_logs: Vec<Option<String>>,
    body: Vec<Option<String>>,
    headers: Vec<Option<String>>,
    undecided: Vec<bool>,
    next_attempt_at: Vec<Option<i64>>,
    lease_until: Vec<Option<i64>>,
    fuel_used: Vec<Option<i64>>,
}

impl DeliveryRows {
    fn push(&mut self, tenant: &TenantId, event_seq: i64, d: &NewDelivery) {
        self.id.push(d.id.to_string());
        self.tenant.push(tenant.to_string());
        self.event_seq.push(event_seq);
        self.config_id.push(d.config_id.to_string());
        self.config_version.push(d.config_version);
        self.status.push(d.status.as_str());
        self.reason.push(d.reason.clone());
        self.error_kind.push(d.error_kind.clone());
        self.script_logs.push(d.script_logs.clone());
        self.body.push(d.body.clone());
        self.headers.push(d.headers.clone());
        self.undecided.push(d.undecided);
        self.next_attempt_at.push(d.next_attempt_at);
        self.lease_until.push(d.lease_until);
        self.fuel_used.push(d.fuel_used);
    }
}

/// Records the script a configuration runs from `version` on, unless its
/// newest record says the same.
async fn insert_config_script(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: &TenantId,
    id: &ConfigId,
    version: i64,
    write: &ConfigWrite,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO configuration_scripts (config_id, version, tenant_id, script_id, script_sha256, params, changed_at, changed_by)
         SELECT $1, $2, $3, $4, (SELECT sha256 FROM scripts WHERE id = $4 AND tenant_id = $3), $5, $6, $7
         WHERE NOT EXISTS (SELECT 1 FROM (SELECT script_id, params FROM configuration_scripts
                                          WHERE config_id = $1 ORDER BY version DESC LIMIT 1) newest
                           WHERE newest.script_id IS NOT DISTINCT FROM $4 AND newest.params = $5)
         ON CONFLICT DO NOTHING",
    )
    .bind(id.as_str())
    .bind(version)
    .bind(tenant.as_str())
    .bind(write.script_id.as_ref().map(|s| s.as_str()))
    .bind(&write.script_params)
    .bind(now_ms())
    .bind(write.changed_by.as_ref().map(|k| k.as_str()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A script a configuration names must be the tenant's own.
async fn check_script_owner(tx: &mut Transaction<'static, Postgres>, tenant: &TenantId, script: Option<&ScriptId>) -> Result<()> {
    let Some(script) = script else { return Ok(()) };
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM scripts WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_str())
        .bind(script.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    found.map(|_| ()).ok_or(StoreError::UnknownReference("script"))
}

/// After a conditional write matched nothing: was the row missing or stale?
async fn stale_or_missing(tx: &mut Transaction<'static, Postgres>, tenant: &TenantId, id: &ConfigId) -> StoreError {
    let current: std::result::Result<Option<i64>, _> =
        sqlx::query_scalar("SELECT version FROM configurations WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(&mut **tx)
            .await;
    match current {
        Ok(Some(current)) => StoreError::StaleVersion { current },
        Ok(None) => StoreError::NotFound,
        Err(e) => e.into(),
    }
}

/// The database server's clock in ms: nodes' liveness is judged on it.
const SERVER_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Says `node` is alive in a new epoch, later than `after` (the one it had):
/// returns the epoch.
async fn register(pool: &PgPool, node: &NodeId, after: i64) -> Result<i64> {
    Ok(sqlx::query_scalar(&format!(
        "INSERT INTO nodes (id, seen_at, epoch) VALUES ($1, {SERVER_MS}, greatest({SERVER_MS}, $2 + 1))
         ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, epoch = greatest(excluded.epoch, nodes.epoch + 1)
         RETURNING epoch"
    ))
    .bind(node.as_str())
    .bind(after)
    .fetch_one(pool)
    .await?)
}

/// Which of a group's deliveries handed on unwritten (`None`: not one) may
/// no longer be written: handed on in an epoch of this node that has ended,
/// their claims taken over by other nodes, which route and send them
/// anew. Locks this node's row until the transaction ends, so that no node
/// takes it for dead while the rest are written.
async fn void_handed_on(tx: &mut Transaction<'static, Postgres>, node: &str, epochs: &[Option<Epoch>]) -> Result<Vec<bool>> {
    if epochs.iter().all(Option::is_none) {
        return Ok(vec![false; epochs.len()]);
    }
    let live: Option<i64> =
        sqlx::query_scalar("SELECT epoch FROM nodes WHERE id = $1 FOR KEY SHARE").bind(node).fetch_optional(&mut **tx).await?;
    let void: Vec<bool> = epochs.iter().map(|e| e.is_some_and(|e| Some(e.0) != live)).collect();
    let count = void.iter().filter(|v| **v).count();
    if count > 0 {
        tracing::warn!(
            node,
            deliveries = count,
            "deliveries this node handed on before the others took it for dead are not written; the nodes that took its events over send them"
        );
    }
    Ok(void)
}

/// Releases what `node` holds: its deliveries' leases (they are due at
/// once) and its events' routing claims (run out, not cleared: the
/// recovery scan routes those events again, as resumed).
async fn release_node(tx: &mut Transaction<'static, Postgres>, node: &str) -> Result<u64> {
    let released =
        sqlx::query("UPDATE deliveries SET lease_until = NULL, lease_owner = NULL WHERE lease_owner = $1 AND status = 'pending'")
            .bind(node)
            .execute(&mut **tx)
            .await?;
    let claims =
        sqlx::query("UPDATE unrouted SET claimed_until = 0, claimed_by = NULL WHERE claimed_by = $1").bind(node).execute(&mut **tx).await?;
    Ok(released.rows_affected() + claims.rows_affected())
}

/// The row of a delivery handed on unwritten, as it is to be written.
struct Settled<'a> {
    unwritten: &'a Unwritten,
    status: DeliveryStatus,
    attempts: i64,
    next_attempt_at: Option<i64>,
}

/// Writes the rows of deliveries handed on unwritten, and marks their
/// events routed where they were the last rows their routing awaited. With
/// a `lease` (until when, to which node) it only shows them (pending, held
/// by their sender) and leaves rows already written alone; without, it
/// settles the rows a lease wrote, if still pending. A delivery whose
/// configuration was deleted meanwhile is written failed, as the deletion
/// ended the others.
async fn write_unwritten(tx: &mut Transaction<'static, Postgres>, rows: &[Settled<'_>], lease: Option<(i64, &str)>) -> Result<()> {
    let mut d = DeliveryRows::default();
    let mut attempts = Vec::with_capacity(rows.len());
    let mut routed_at = Vec::with_capacity(rows.len());
    let mut awaiting = Vec::with_capacity(rows.len());
    for row in rows {
        let u = row.unwritten;
        d.push(&u.tenant, u.event_seq, &u.delivery);
        if let (Some(status), Some(at)) = (d.status.last_mut(), d.next_attempt_at.last_mut()) {
            *status = row.status.as_str();
            *at = row.next_attempt_at;
        }
        attempts.push(row.attempts);
        routed_at.push(u.routed_at);
        awaiting.push(u.awaiting);
    }
    // Settled by its first attempt, never shown: nothing to meet but a
    // plain insert (most rows; `ON CONFLICT` and the configuration's test
    // cost the server more than the rest of the statement).
    let plain = lease.is_none()
        && rows.iter().all(|r| r.status != DeliveryStatus::Pending && !r.unwritten.shown.load(std::sync::atomic::Ordering::Relaxed));
    let (status, reason, error_kind, next_attempt_at, lease_until, lease_owner, gone, upsert) = if plain {
        ("d.status", "d.reason", "d.error_kind", "d.next_attempt_at", "NULL::bigint", "NULL::text", "", "")
    } else {
        (
            "CASE WHEN g.gone THEN 'failed' ELSE d.status END",
            concat!("CASE WHEN g.gone THEN '", config_deleted!(reason), "' ELSE d.reason END"),
            concat!("CASE WHEN g.gone THEN '", config_deleted!(kind), "' ELSE d.error_kind END"),
            "CASE WHEN g.gone THEN NULL ELSE d.next_attempt_at END",
            "CASE WHEN g.gone THEN NULL ELSE $18::bigint END",
            "CASE WHEN g.gone THEN NULL ELSE $19::text END",
            "CROSS JOIN LATERAL (SELECT d.status = 'pending' AND NOT EXISTS (SELECT 1 FROM configurations c WHERE c.id = d.config_id)
                                 AS gone) g",
            "ON CONFLICT (tenant_id, id) DO UPDATE
               SET status = excluded.status, attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,
                   lease_until = NULL, lease_owner = NULL, updated_at = excluded.updated_at
               WHERE $18::bigint IS NULL AND deliveries.status = 'pending' AND deliveries.attempts <= excluded.attempts",
        )
    };
    // The statement's snapshot does not see the rows it inserts: counted
    // apart (`xmax = 0`: inserted, not an update of a row it sees).
    let sql = format!(
        "WITH ins AS (
            INSERT INTO deliveries (id, tenant_id, event_seq, config_id, config_version, status, reason, error_kind,
                                    script_logs, body, headers, attempts, next_attempt_at, created_at, updated_at,
                                    undecided, fuel_used, lease_until, lease_owner)
            SELECT d.id, d.tenant_id, d.event_seq, d.config_id, d.config_version, {status}, {reason}, {error_kind},
                   d.script_logs, d.body, d.headers, d.attempts, {next_attempt_at}, d.created_at, $16, false, d.fuel_used,
                   {lease_until}, {lease_owner}
            FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[],
                        $9::text[], $10::text[], $11::text[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[])
                 AS d(id, tenant_id, event_seq, config_id, config_version, status, reason, error_kind,
                      script_logs, body, headers, attempts, next_attempt_at, created_at, fuel_used)
            {gone}
            {upsert}
            RETURNING event_seq, xmax = 0 AS inserted)
         DELETE FROM unrouted u
         USING (SELECT seq, max(awaiting) AS awaiting FROM unnest($3::bigint[], $17::bigint[]) AS w(seq, awaiting) GROUP BY seq) w
         WHERE u.seq = w.seq AND u.seq IN (SELECT event_seq FROM ins)
           AND w.awaiting <= (SELECT count(*) FROM deliveries x WHERE x.event_seq = u.seq)
                             + (SELECT count(*) FROM ins WHERE ins.event_seq = u.seq AND ins.inserted)",
    );
    let query = sqlx::query(&sql)
        .bind(&d.id)
        .bind(&d.tenant)
        .bind(&d.event_seq)
        .bind(&d.config_id)
        .bind(&d.config_version)
        .bind(&d.status)
        .bind(&d.reason)
        .bind(&d.error_kind)
        .bind(&d.script_logs)
        .bind(&d.body)
        .bind(&d.headers)
        .bind(&attempts)
        .bind(&d.next_attempt_at)
        .bind(&routed_at)
        .bind(&d.fuel_used)
        .bind(now_ms())
        .bind(&awaiting);
    let query = match plain {
        true => query,
        false => query.bind(lease.map(|(until, _)| until)).bind(lease.map(|(_, node)| node)),
    };
    query.execute(&mut **tx).await?;
    Ok(())
}

/// Records one attempt in one statement: the attempt (with its bodies),
/// its delivery, and the streak. (The first attempt of a delivery handed on
/// unwritten goes as a group of one: its row comes first.)
async fn record_one(pool: &PgPool, node: &str, a: NewAttempt) -> Result<Recorded> {
    if a.unwritten.is_some() {
        return Ok(record_group(pool, node, &[&a]).await?.pop().unwrap_or(Recorded::Void));
    }
    let status = a.outcome.settles_as();
    let streak = if a.outcome == AttemptOutcome::Succeeded {
        "DELETE FROM failure_streaks WHERE config_id = $19 RETURNING 0::bigint AS failures, 0::bigint AS since"
    } else {
        "INSERT INTO failure_streaks (config_id, failures, since) VALUES ($19, 1, $18)
         ON CONFLICT (config_id) DO UPDATE SET failures = failure_streaks.failures + 1 RETURNING failures, since"
    };
    let row = sqlx::query(&format!(
        "WITH attempt AS (
            INSERT INTO attempts (id, tenant_id, delivery_id, number, started_at, duration_ms, method, uri,
                                  response_status, outcome, error, request_headers, response_headers, request_body, response_body)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)),
         delivery AS (
            UPDATE deliveries SET status = $16, attempts = $4, next_attempt_at = $17, lease_until = NULL, lease_owner = NULL,
                                  updated_at = $18
            WHERE id = $3 AND tenant_id = $2 AND status = 'pending' AND attempts < $4)
         {streak}"
    ))
    .bind(a.id.as_str())
    .bind(a.tenant_id.as_str())
    .bind(a.delivery_id.as_str())
    .bind(a.number)
    .bind(a.started_at)
    .bind(a.duration_ms)
    .bind(&a.method)
    .bind(&a.uri)
    .bind(a.response_status)
    .bind(a.outcome.as_str())
    .bind(a.error.as_deref().map(text::encode))
    .bind(&a.request_headers)
    .bind(&a.response_headers)
    .bind(a.request_body.as_deref().map(text::encode))
    .bind(a.response_body.as_deref().map(text::encode_bytes))
    .bind(status.as_str())
    .bind(a.next_attempt_at)
    .bind(now_ms())
    .bind(a.config_id.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(Recorded::Logged(match row {
        Some(row) => FailureStreak { failures: row.try_get("failures")?, since: row.try_get("since")? },
        None => FailureStreak::default(),
    }))
}

/// Writes queued attempts in groups, one transaction each, until the store
/// is dropped. A group that fails (a row that cannot be written, a deadlock
/// with another node's group) is written again one attempt at a time, so
/// that one bad row fails only its own caller.
async fn write_attempts(pool: PgPool, node: NodeId, mut queue: mpsc::Receiver<AttemptJob>) {
    let mut jobs = Vec::with_capacity(MAX_ATTEMPT_GROUP);
    while queue.recv_many(&mut jobs, MAX_ATTEMPT_GROUP).await > 0 {
        let group = std::mem::take(&mut jobs);
        let began = std::time::Instant::now();
        let size = group.len();
        if group.len() > 1 {
            let attempts: Vec<&NewAttempt> = group.iter().map(|(a, _)| a).collect();
            match record_group(&pool, node.as_str(), &attempts).await {
                Ok(recorded) => {
                    telemetry::store_group("attempts", size, began.elapsed());
                    for ((_, reply), recorded) in group.into_iter().zip(recorded) {
                        let _ = reply.send(Ok(recorded));
                    }
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempts = group.len(), "writing a group of attempts failed; writing them one by one")
                }
            }
        }
        for (attempt, reply) in group {
            let _ = reply.send(record_one(&pool, node.as_str(), attempt).await);
        }
        telemetry::store_group("attempts", size, began.elapsed());
    }
}

/// Records a group of attempts in one transaction, and each one's failure
/// streak: a configuration's successes and failures in the group count in
/// their order. The first attempts of deliveries handed on in an epoch of
/// this node that has ended are not recorded (see [`Epoch`]): those are
/// [`Recorded::Void`].
pub(super) async fn record_group(pool: &PgPool, node: &str, attempts: &[&NewAttempt]) -> Result<Vec<Recorded>> {
    let mut tx = pool.begin().await?;
    let epochs: Vec<Option<Epoch>> = attempts.iter().map(|a| a.unwritten.as_ref().map(|u| u.epoch)).collect();
    let void = void_handed_on(&mut tx, node, &epochs).await?;
    let kept: Vec<&NewAttempt> = attempts.iter().zip(&void).filter(|(_, void)| !**void).map(|(a, _)| *a).collect();
    let mut streaks = if kept.is_empty() { Vec::new() } else { write_group(&mut tx, &kept).await? }.into_iter();
    tx.commit().await?;
    Ok(void.into_iter().map(|void| if void { Recorded::Void } else { Recorded::Logged(streaks.next().unwrap_or_default()) }).collect())
}

/// [`record_group`]'s writes, in its transaction.
async fn write_group(tx: &mut Transaction<'static, Postgres>, attempts: &[&NewAttempt]) -> Result<Vec<FailureStreak>> {
    let now = now_ms();
    let col = |f: fn(&NewAttempt) -> Option<String>| attempts.iter().map(|a| f(a)).collect::<Vec<_>>();
    let ids: Vec<&str> = attempts.iter().map(|a| a.id.as_str()).collect();
    let tenants: Vec<&str> = attempts.iter().map(|a| a.tenant_id.as_str()).collect();
    let deliveries: Vec<&str> = attempts.iter().map(|a| a.delivery_id.as_str()).collect();
    let numbers: Vec<i64> = attempts.iter().map(|a| a.number).collect();
    let started: Vec<i64> = attempts.iter().map(|a| a.started_at).collect();
    let durations: Vec<i64> = attempts.iter().map(|a| a.duration_ms).collect();
    let methods: Vec<&str> = attempts.iter().map(|a| a.method.as_str()).collect();
    let uris: Vec<&str> = attempts.iter().map(|a| a.uri.as_str()).collect();
    let statuses: Vec<Option<i64>> = attempts.iter().map(|a| a.response_status).collect();
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
    let request_headers: Vec<&str> = attempts.iter().map(|a| a.request_headers.as_str()).collect();
    let next: Vec<Option<i64>> = attempts.iter().map(|a| a.next_attempt_at).collect();
    let delivery_status: Vec<&str> = attempts.iter().map(|a| a.outcome.settles_as().as_str()).collect();

    // The rows of deliveries handed on unwritten, before their attempts
    // (which refer to them); the update below then finds them settled.
    let unwritten: Vec<Settled> = attempts
        .iter()
        .filter_map(|a| {
            let unwritten = a.unwritten.as_deref()?;
            Some(Settled { unwritten, status: a.outcome.settles_as(), attempts: a.number, next_attempt_at: a.next_attempt_at })
        })
        .collect();
    if !unwritten.is_empty() {
        write_unwritten(tx, &unwritten, None).await?;
    }
    // `d.status = a.was` rather than `d.status = 'pending'`: with the
    // constant, the planner may read the group's deliveries through the
    // pending index (whose predicate it then proves) and hash-join them.
    // That index keeps an entry for every delivery settled since the last
    // vacuum, and each group read them all (63,770 entries and 3,142 heap
    // pages for a group of 200 in a load run: 12.5 ms, against 0.6 ms by
    // primary key). Matched by key, the row is still checked for being
    // pending, by every node that races for it. Deliveries whose rows this
    // group has just written settled (handed on unwritten: most first
    // attempts) are left out of the update: with none left, the join ends
    // before reading `deliveries` at all. (Joined, they made the planner
    // hash-join a table of a few thousand rows read whole: 10,527 rows read
    // for a group of 145 in a load run, 9.6 ms, to update none of them.)
    sqlx::query(
        "WITH a AS MATERIALIZED (
            SELECT *, 'pending'::text AS was
            FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[],
                        $8::text[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                        $15::text[], $16::text[], $17::bigint[], $19::boolean[])
                     AS a(id, tenant_id, delivery_id, number, started_at, duration_ms, method, uri, response_status, outcome,
                          error, request_headers, response_headers, request_body, response_body, status, next_attempt_at,
                          written)),
         attempt AS (
            INSERT INTO attempts (id, tenant_id, delivery_id, number, started_at, duration_ms, method, uri,
                                  response_status, outcome, error, request_headers, response_headers, request_body, response_body)
            SELECT id, tenant_id, delivery_id, number, started_at, duration_ms, method, uri,
                   response_status, outcome, error, request_headers, response_headers, request_body, response_body FROM a)
         UPDATE deliveries d SET status = a.status, attempts = a.number, next_attempt_at = a.next_attempt_at,
                                 lease_until = NULL, lease_owner = NULL, updated_at = $18
         FROM (SELECT * FROM a WHERE NOT written) a
         WHERE d.id = a.delivery_id AND d.tenant_id = a.tenant_id AND d.status = a.was AND d.attempts < a.number",
    )
    .bind(&ids)
    .bind(&tenants)
    .bind(&deliveries)
    .bind(&numbers)
    .bind(&started)
    .bind(&durations)
    .bind(&methods)
    .bind(&uris)
    .bind(&statuses)
    .bind(&outcomes)
    .bind(col(|a| a.error.as_deref().map(|t| text::encode(t).into_owned())))
    .bind(&request_headers)
    .bind(col(|a| a.response_headers.clone()))
    .bind(col(|a| a.request_body.as_deref().map(|t| text::encode(t).into_owned())))
    .bind(col(|a| a.response_body.as_deref().map(|b| text::encode_bytes(b).into_owned())))
    .bind(&delivery_status)
    .bind(&next)
    .bind(now)
    .bind(attempts.iter().map(|a| a.unwritten.is_some()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;

    // Per configuration, in the group's order: how many of its attempts,
    // the ordinal of its last success, the failures after that. Each
    // attempt's ordinal among its configuration's.
    #[derive(Default)]
    struct Tally {
        count: i64,
        last_success: Option<i64>,
        trailing: i64,
    }
    let mut tally: std::collections::BTreeMap<&str, Tally> = Default::default();
    let mut ordinals = Vec::with_capacity(attempts.len());
    for a in attempts {
        let t = tally.entry(a.config_id.as_str()).or_default();
        ordinals.push(t.count);
        if a.outcome == AttemptOutcome::Succeeded {
            t.last_success = Some(t.count);
            t.trailing = 0;
        } else {
            t.trailing += 1;
        }
        t.count += 1;
    }
    let reset: Vec<&str> = tally.iter().filter(|(_, t)| t.last_success.is_some()).map(|(c, _)| *c).collect();
    let (failing, added): (Vec<&str>, Vec<i64>) = tally.iter().filter(|(_, t)| t.trailing > 0).map(|(c, t)| (*c, t.trailing)).unzip();
    if !reset.is_empty() {
        sqlx::query("DELETE FROM failure_streaks WHERE config_id = ANY($1)").bind(&reset).execute(&mut **tx).await?;
    }
    let mut totals: std::collections::HashMap<String, FailureStreak> = Default::default();
    if !failing.is_empty() {
        // In configuration order, as every node's groups lock them.
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "INSERT INTO failure_streaks (config_id, failures, since)
             SELECT c, f, $3 FROM unnest($1::text[], $2::bigint[]) AS u(c, f) ORDER BY c
             ON CONFLICT (config_id) DO UPDATE SET failures = failure_streaks.failures + excluded.failures
             RETURNING config_id, failures, since",
        )
        .bind(&failing)
        .bind(&added)
        .bind(now)
        .fetch_all(&mut **tx)
        .await?;
        totals = rows.into_iter().map(|(c, failures, since)| (c, FailureStreak { failures, since })).collect();
    }

    // Each attempt's streak as it stood after it: a failure after its
    // configuration's last success in the group counts up to the stored
    // total; a success is 0; a failure before a success counts within its
    // run (the success soon resets it anyway).
    let mut run: std::collections::HashMap<&str, i64> = Default::default();
    Ok(attempts
        .iter()
        .zip(ordinals)
        .map(|(a, ordinal)| {
            let config = a.config_id.as_str();
            let k = run.entry(config).or_default();
            if a.outcome == AttemptOutcome::Succeeded {
                *k = 0;
                return FailureStreak::default();
            }
            *k += 1;
            let t = &tally[config];
            match totals.get(config) {
                Some(total) if t.last_success.is_none_or(|last| ordinal > last) => {
                    FailureStreak { failures: total.failures - t.trailing + *k, since: total.since }
                }
                _ => FailureStreak { failures: *k, since: now },
            }
        })
        .collect())
}

/// Stores queued ingest requests in groups, one statement each, until the
/// store is dropped. A group that fails is stored again one request at a
/// time, so that one bad request fails only its own caller.
async fn write_ingests(pool: PgPool, node: NodeId, mut queue: mpsc::Receiver<IngestJob>) {
    let mut jobs = Vec::with_capacity(MAX_INGEST_GROUP);
    while queue.recv_many(&mut jobs, MAX_INGEST_GROUP).await > 0 {
        let group = std::mem::take(&mut jobs);
        let requests: Vec<(&TenantId, &[Event])> = group.iter().map(|(t, e, _)| (t, e.as_slice())).collect();
        let began = std::time::Instant::now();
        let result = insert_events(&pool, &node, &requests, now_ms(), false).await;
        telemetry::store_group("ingest", requests.len(), began.elapsed());
        match result {
            Ok(stored) => {
                let answers = ingested(&requests, stored);
                for ((_, _, reply), answer) in group.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(e) if group.len() == 1 => {
                if let Some((_, _, reply)) = group.into_iter().next() {
                    let _ = reply.send(Err(e));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, requests = group.len(), "storing a group of ingests failed; storing them one by one");
                for (tenant, events, reply) in group {
                    let requests = [(&tenant, events.as_slice())];
                    let answer =
                        insert_events(&pool, &node, &requests, now_ms(), false).await.map(|stored| ingested(&requests, stored).remove(0));
                    let _ = reply.send(answer);
                }
            }
        }
    }
}

/// Stores the events of several ingest requests in one statement: the
/// events (a repeated id, stored before or earlier in the statement,
/// inserts nothing), each tenant's usage for the month and its catalog of
/// types. The events wait for routing claimed by `node`, which routes its
/// own (see [`ROUTING_CLAIM_MS`]). `quota_shard`: count usage on shard 0 (a
/// tenant with a quota); otherwise on a shard picked by sequence number.
/// Returns what was stored: (tenant, event id, seq).
pub(super) async fn insert_events<'c>(
    db: impl sqlx::Executor<'c, Database = Postgres>,
    node: &NodeId,
    requests: &[(&TenantId, &[Event])],
    now: i64,
    quota_shard: bool,
) -> Result<Vec<(String, String, i64)>> {
    let n = requests.iter().map(|(_, events)| events.len()).sum();
    let (mut tenants, mut ids, mut types, mut units, mut occurred, mut sources, mut related, mut payloads) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (tenant, events) in requests {
        for e in *events {
            tenants.push(tenant.as_str());
            ids.push(e.id.as_str());
            types.push(e.event_type.as_str());
            units.push(e.organization_unit.as_str());
            occurred.push(e.occurred_at.unix_timestamp_nanos() as i64);
            sources.push(e.source.as_ref().map(serde_json::to_string).transpose().map_err(corrupt)?);
            related.push((!e.related.is_empty()).then(|| serde_json::to_string(&e.related)).transpose().map_err(corrupt)?);
            payloads.push(e.payload.get());
        }
    }
    // Usage and types rows are taken in tenant order: two nodes' groups
    // cannot deadlock on them.
    Ok(sqlx::query_as(
        "WITH ins AS (
            INSERT INTO events (tenant_id, id, type, organization_unit, occurred_at_ns, received_at, source, related, payload)
            SELECT i.tenant, i.id, i.type, i.ou, i.occurred, $1, i.source, i.related, i.payload
            FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::text[])
                 WITH ORDINALITY AS i(tenant, id, type, ou, occurred, source, related, payload, n)
            ORDER BY i.n
            ON CONFLICT (tenant_id, id) DO NOTHING RETURNING tenant_id, id, seq, type),
         waiting AS (
            INSERT INTO unrouted (seq, claimed_until, claimed_by) SELECT seq, $13, $14 FROM ins),
         used AS (
            INSERT INTO usage (tenant_id, month, shard, events)
            SELECT tenant_id, $10, CASE WHEN $11 THEN 0 ELSE min(seq) % $12 END, count(*) FROM ins
            WHERE type NOT LIKE 'sluice.%' -- sluice's own notices are not the tenant's usage
            GROUP BY tenant_id ORDER BY tenant_id
            ON CONFLICT (tenant_id, month, shard) DO UPDATE SET events = usage.events + excluded.events),
         types AS (
            INSERT INTO event_types (tenant_id, name, first_seen)
            SELECT DISTINCT tenant_id, type, $1::bigint FROM ins ORDER BY 1, 2
            ON CONFLICT DO NOTHING)
         SELECT tenant_id, id, seq FROM ins",
    )
    .bind(now)
    .bind(&tenants)
    .bind(&ids)
    .bind(&types)
    .bind(&units)
    .bind(&occurred)
    .bind(&sources)
    .bind(&related)
    .bind(&payloads)
    .bind(month_of(now))
    .bind(quota_shard)
    .bind(USAGE_SHARDS)
    .bind(now + ROUTING_CLAIM_MS)
    .bind(node.as_str())
    .fetch_all(db)
    .await?)
}

/// Each request's answer, event by event: the first occurrence of a stored
/// (tenant, id) was stored; every other is a duplicate.
pub(super) fn ingested(requests: &[(&TenantId, &[Event])], stored: Vec<(String, String, i64)>) -> Vec<Vec<Ingested>> {
    let mut seqs: std::collections::HashMap<(String, String), i64> = stored.into_iter().map(|(t, id, seq)| ((t, id), seq)).collect();
    requests
        .iter()
        .map(|(tenant, events)| {
            events
                .iter()
                .map(|e| match seqs.remove(&(tenant.to_string(), e.id.as_str().to_owned())) {
                    Some(seq) => Ingested::Stored { seq },
                    None => Ingested::Duplicate,
                })
                .collect()
        })
        .collect()
}
