//! The SQLite backend: one file in WAL mode, a pool of readers, and one
//! writer task that commits hot-path writes in groups.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use serde_json::value::RawValue;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::event::{EventId, EventType, OrgUnit, Source};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A unit of work for the writer: runs inside the group's transaction and
/// hands back how to answer its caller once the group commits.
type Job = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Reply> + Send>;

struct Reply {
    failed: bool,
    send: Box<dyn FnOnce(std::result::Result<(), String>) + Send>,
}

/// Most jobs committed together.
const MAX_GROUP: usize = 512;

#[derive(Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    writer: mpsc::Sender<Job>,
}

impl SqliteStore {
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses nothing when the process dies (a commit
            // is in the WAL file before the call returns); FULL also
            // survives power loss. Group commit makes FULL affordable.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("cache_size", "-32768");
        let mut conn = SqliteConnection::connect_with(&options).await?;
        sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options.read_only(true))
            .await?;
        let (writer, jobs) = mpsc::channel(4096);
        tokio::spawn(write_loop(conn, jobs));
        Ok(Self { read, writer })
    }

    pub async fn close(&self) {
        // The writer ends when every sender is gone; readers close here.
        self.read.close().await;
    }

    /// Runs `f` in the writer's next group transaction.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let result = f(conn).await;
                Reply {
                    failed: result.is_err(),
                    send: Box::new(move |commit| {
                        let _ = tx.send(match commit {
                            Ok(()) => result,
                            Err(e) => Err(StoreError::Commit(e)),
                        });
                    }),
                }
            })
        });
        self.writer.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// Takes jobs as they come, up to [`MAX_GROUP`] at a time, and commits each
/// group in one transaction. A job that fails is rolled back to its own
/// savepoint; the others still commit.
async fn write_loop(mut conn: SqliteConnection, mut jobs: mpsc::Receiver<Job>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while jobs.recv_many(&mut group, MAX_GROUP).await > 0 {
        let mut replies = Vec::with_capacity(group.len());
        let begun = sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await;
        if let Err(e) = begun {
            let message = e.to_string();
            for job in group.drain(..) {
                drop(job);
            }
            tracing::error!(error = %message, "cannot begin a write transaction");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        for job in group.drain(..) {
            let _ = sqlx::query("SAVEPOINT job").execute(&mut conn).await;
            let reply = job(&mut conn).await;
            if reply.failed {
                let _ = sqlx::query("ROLLBACK TO job").execute(&mut conn).await;
            }
            let _ = sqlx::query("RELEASE job").execute(&mut conn).await;
            replies.push(reply);
        }
        let commit = sqlx::query("COMMIT").execute(&mut conn).await.map(|_| ()).map_err(|e| e.to_string());
        if commit.is_err() {
            let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
        }
        for reply in replies {
            (reply.send)(commit.clone());
        }
    }
    let _ = conn.close().await;
}

fn not_found_if_none<T>(row: Option<T>) -> Result<T> {
    row.ok_or(StoreError::NotFound)
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn parse_id<T>(raw: String, parse: fn(&str) -> std::result::Result<T, crate::ids::IdError>) -> Result<T> {
    parse(&raw).map_err(corrupt)
}

fn tenant_row(row: &SqliteRow) -> Result<TenantRecord> {
    Ok(TenantRecord {
        id: parse_id(row.try_get("id")?, TenantId::parse)?,
        name: row.try_get("name")?,
        monthly_quota: row.try_get("monthly_quota")?,
        created_at: row.try_get("created_at")?,
    })
}

fn key_row(row: &SqliteRow) -> Result<KeyRecord> {
    let scopes: String = row.try_get("scopes")?;
    Ok(KeyRecord {
        id: parse_id(row.try_get("id")?, KeyId::parse)?,
        tenant_id: parse_id(row.try_get("tenant_id")?, TenantId::parse)?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        scopes: scopes.split_whitespace().filter_map(Scope::parse).collect(),
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn script_row(row: &SqliteRow) -> Result<ScriptRecord> {
    Ok(ScriptRecord {
        id: parse_id(row.try_get("id")?, ScriptId::parse)?,
        name: row.try_get("name")?,
        sha256: row.try_get("sha256")?,
        size: row.try_get("size")?,
        wit_version: row.try_get("wit_version")?,
        created_at: row.try_get("created_at")?,
    })
}

fn config_row(row: &SqliteRow) -> Result<ConfigRecord> {
    Ok(ConfigRecord {
        id: parse_id(row.try_get("id")?, ConfigId::parse)?,
        tenant_id: parse_id(row.try_get("tenant_id")?, TenantId::parse)?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        enabled: row.try_get("enabled")?,
        spec: row.try_get("spec")?,
        disabled_reason: row.try_get("disabled_reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const EVENT_COLUMNS: &str =
    "e.seq, e.tenant_id, e.id AS event_id, e.type, e.organization_unit, e.occurred_at_ns, e.received_at, e.source, e.related, e.payload, e.routed";

fn event_row(row: &SqliteRow) -> Result<EventRecord> {
    let source: Option<String> = row.try_get("source")?;
    let related: Option<String> = row.try_get("related")?;
    let related: Vec<String> = match related {
        Some(json) => serde_json::from_str(&json).map_err(corrupt)?,
        None => Vec::new(),
    };
    let occurred_ns: i64 = row.try_get("occurred_at_ns")?;
    let event = Event {
        id: EventId::parse(&row.try_get::<String, _>("event_id")?).map_err(corrupt)?,
        event_type: EventType::parse(&row.try_get::<String, _>("type")?).map_err(corrupt)?,
        organization_unit: OrgUnit::parse(&row.try_get::<String, _>("organization_unit")?).map_err(corrupt)?,
        occurred_at: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(occurred_ns)).map_err(corrupt)?,
        source: match source {
            Some(json) => Some(serde_json::from_str::<Source>(&json).map_err(corrupt)?),
            None => None,
        },
        related: related.iter().map(|r| EventId::parse(r)).collect::<std::result::Result<_, _>>().map_err(corrupt)?,
        payload: RawValue::from_string(row.try_get("payload")?).map_err(corrupt)?,
    };
    Ok(EventRecord {
        seq: row.try_get("seq")?,
        tenant_id: parse_id(row.try_get("tenant_id")?, TenantId::parse)?,
        event,
        received_at: row.try_get("received_at")?,
        routed: row.try_get("routed")?,
    })
}

const DELIVERY_COLUMNS: &str = "d.id, d.event_seq, d.config_id, d.config_version, d.status, d.reason, d.error_kind, d.script_logs, d.body, d.headers, d.attempts, d.next_attempt_at, d.created_at, d.updated_at, (SELECT id FROM events WHERE seq = d.event_seq) AS delivery_event_id";

fn delivery_row(row: &SqliteRow) -> Result<DeliveryRecord> {
    let status: String = row.try_get("status")?;
    let logs: Option<String> = row.try_get("script_logs")?;
    Ok(DeliveryRecord {
        id: parse_id(row.try_get("id")?, DeliveryId::parse)?,
        event_id: row.try_get("delivery_event_id")?,
        event_seq: row.try_get("event_seq")?,
        configuration_id: parse_id(row.try_get("config_id")?, ConfigId::parse)?,
        configuration_version: row.try_get("config_version")?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| corrupt(format!("delivery status {status}")))?,
        reason: row.try_get("reason")?,
        error_kind: row.try_get("error_kind")?,
        script_logs: match logs {
            Some(json) => serde_json::from_str(&json).map_err(corrupt)?,
            None => serde_json::Value::Array(Vec::new()),
        },
        body: row.try_get("body")?,
        headers: row.try_get("headers")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn attempt_row(row: &SqliteRow, with_bodies: bool) -> Result<AttemptRecord> {
    let json = |col: &str| -> Result<serde_json::Value> {
        let raw: Option<String> = row.try_get(col)?;
        match raw {
            Some(raw) => serde_json::from_str(&raw).map_err(corrupt),
            None => Ok(serde_json::Value::Object(Default::default())),
        }
    };
    Ok(AttemptRecord {
        id: parse_id(row.try_get("id")?, AttemptId::parse)?,
        delivery_id: parse_id(row.try_get("delivery_id")?, DeliveryId::parse)?,
        number: row.try_get("number")?,
        started_at: row.try_get("started_at")?,
        duration_ms: row.try_get("duration_ms")?,
        method: row.try_get("method")?,
        uri: row.try_get("uri")?,
        response_status: row.try_get("response_status")?,
        outcome: row.try_get("outcome")?,
        error: row.try_get("error")?,
        request_headers: json("request_headers")?,
        response_headers: json("response_headers")?,
        request_body: if with_bodies { row.try_get("request_body")? } else { None },
        response_body: if with_bodies { row.try_get("response_body")? } else { None },
    })
}

/// The UTC month of a Unix-millisecond time, `YYYY-MM`.
fn month_of(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

impl SqliteStore {
    // Tenants and keys.

    pub async fn tenant_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM tenants").fetch_one(&self.read).await?)
    }

    pub async fn bootstrap(&self, admin: NewKey, tenant_name: &str) -> Result<TenantId> {
        let name = tenant_name.to_owned();
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                sqlx::query("INSERT INTO tenants (id, name, operator, created_at) VALUES (?, ?, 1, ?)")
                    .bind(admin.tenant_id.as_str())
                    .bind(&name)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                let scopes: Vec<&str> = admin.scopes.iter().map(|s| s.as_str()).collect();
                sqlx::query("INSERT INTO api_keys (id, tenant_id, name, prefix, hash, scopes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
                    .bind(admin.id.as_str())
                    .bind(admin.tenant_id.as_str())
                    .bind(&admin.name)
                    .bind(&admin.prefix)
                    .bind(&admin.hash.0)
                    .bind(scopes.join(" "))
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                Ok(admin.tenant_id)
            })
        })
        .await
    }

    pub async fn operator_tenant(&self) -> Result<Option<TenantId>> {
        let id: Option<String> = sqlx::query_scalar("SELECT id FROM tenants WHERE operator = 1 ORDER BY id LIMIT 1")
            .fetch_optional(&self.read)
            .await?;
        id.map(|id| parse_id(id, TenantId::parse)).transpose()
    }

    pub async fn create_tenant(&self, name: &str, monthly_quota: Option<i64>) -> Result<TenantRecord> {
        let record = TenantRecord {
            id: TenantId::generate(),
            name: name.to_owned(),
            monthly_quota,
            created_at: now_ms(),
        };
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("INSERT INTO tenants (id, name, monthly_quota, created_at) VALUES (?, ?, ?, ?)")
                    .bind(record.id.as_str())
                    .bind(&record.name)
                    .bind(record.monthly_quota)
                    .bind(record.created_at)
                    .execute(&mut *c)
                    .await
                    .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict("tenant name") } else { e.into() })?;
                Ok(record)
            })
        })
        .await
    }

    pub async fn get_tenant(&self, id: &TenantId) -> Result<TenantRecord> {
        let row = sqlx::query("SELECT * FROM tenants WHERE id = ?").bind(id.as_str()).fetch_optional(&self.read).await?;
        tenant_row(&not_found_if_none(row)?)
    }

    pub async fn list_tenants(&self, page: &PageRequest) -> Result<Page<TenantRecord>> {
        let rows = sqlx::query("SELECT * FROM tenants WHERE (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?")
            .bind(&page.cursor)
            .bind(&page.cursor)
            .bind(page.limit())
            .fetch_all(&self.read)
            .await?;
        let items = rows.iter().map(tenant_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_items(items, page, |t| t.id.to_string()))
    }

    pub async fn create_key(&self, key: NewKey) -> Result<KeyRecord> {
        let record = KeyRecord {
            id: key.id,
            tenant_id: key.tenant_id,
            name: key.name,
            prefix: key.prefix,
            scopes: key.scopes,
            created_at: now_ms(),
            revoked_at: None,
        };
        let hash = key.hash.0;
        self.write(move |c| {
            Box::pin(async move {
                let scopes: Vec<&str> = record.scopes.iter().map(|s| s.as_str()).collect();
                let inserted = sqlx::query(
                    "INSERT INTO api_keys (id, tenant_id, name, prefix, hash, scopes, created_at)
                     SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM tenants WHERE id = ?)",
                )
                .bind(record.id.as_str())
                .bind(record.tenant_id.as_str())
                .bind(&record.name)
                .bind(&record.prefix)
                .bind(&hash)
                .bind(scopes.join(" "))
                .bind(record.created_at)
                .bind(record.tenant_id.as_str())
                .execute(&mut *c)
                .await?;
                if inserted.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(record)
            })
        })
        .await
    }

    pub async fn list_keys(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<KeyRecord>> {
        let rows = sqlx::query("SELECT * FROM api_keys WHERE tenant_id = ? AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?")
            .bind(tenant.as_str())
            .bind(&page.cursor)
            .bind(&page.cursor)
            .bind(page.limit())
            .fetch_all(&self.read)
            .await?;
        let items = rows.iter().map(key_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_items(items, page, |k| k.id.to_string()))
    }

    pub async fn revoke_key(&self, tenant: &TenantId, id: &KeyId) -> Result<KeyRecord> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.write(move |c| {
            Box::pin(async move {
                let row = sqlx::query(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE tenant_id = ? AND id = ? RETURNING *",
                )
                .bind(now_ms())
                .bind(tenant.as_str())
                .bind(id.as_str())
                .fetch_optional(&mut *c)
                .await?;
                key_row(&not_found_if_none(row)?)
            })
        })
        .await
    }

    pub async fn find_key(&self, hash: &KeyHash) -> Result<Option<KeyRecord>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE hash = ? AND revoked_at IS NULL")
            .bind(&hash.0)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(key_row).transpose()
    }

    // Scripts.

    pub async fn insert_script(&self, tenant: &TenantId, script: &ScriptRecord, bytes: &[u8]) -> Result<()> {
        let (tenant, script, bytes) = (tenant.clone(), script.clone(), bytes.to_vec());
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO scripts (id, tenant_id, name, sha256, size, wit_version, bytes, created_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(script.id.as_str())
                .bind(tenant.as_str())
                .bind(&script.name)
                .bind(&script.sha256)
                .bind(script.size)
                .bind(&script.wit_version)
                .bind(&bytes)
                .bind(script.created_at)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    pub async fn get_script(&self, tenant: &TenantId, id: &ScriptId) -> Result<ScriptRecord> {
        let row = sqlx::query("SELECT id, name, sha256, size, wit_version, created_at FROM scripts WHERE tenant_id = ? AND id = ?")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(&self.read)
            .await?;
        script_row(&not_found_if_none(row)?)
    }

    pub async fn script_bytes(&self, tenant: &TenantId, id: &ScriptId) -> Result<Vec<u8>> {
        let bytes = sqlx::query_scalar("SELECT bytes FROM scripts WHERE tenant_id = ? AND id = ?")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(&self.read)
            .await?;
        not_found_if_none(bytes)
    }

    pub async fn list_scripts(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ScriptRecord>> {
        let rows = sqlx::query(
            "SELECT id, name, sha256, size, wit_version, created_at FROM scripts
             WHERE tenant_id = ? AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?",
        )
        .bind(tenant.as_str())
        .bind(&page.cursor)
        .bind(&page.cursor)
        .bind(page.limit())
        .fetch_all(&self.read)
        .await?;
        let items = rows.iter().map(script_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_items(items, page, |s| s.id.to_string()))
    }

    pub async fn delete_script(&self, tenant: &TenantId, id: &ScriptId) -> Result<()> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.write(move |c| {
            Box::pin(async move {
                let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM configurations WHERE tenant_id = ? AND script_id = ?")
                    .bind(tenant.as_str())
                    .bind(id.as_str())
                    .fetch_one(&mut *c)
                    .await?;
                if users > 0 {
                    return Err(StoreError::InUse(users));
                }
                let done = sqlx::query("DELETE FROM scripts WHERE tenant_id = ? AND id = ?")
                    .bind(tenant.as_str())
                    .bind(id.as_str())
                    .execute(&mut *c)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
        })
        .await
    }

    // Configurations.

    pub async fn insert_config(&self, tenant: &TenantId, id: &ConfigId, write: &ConfigWrite) -> Result<ConfigRecord> {
        let (tenant, id) = (tenant.clone(), id.clone());
        let (name, script_id, spec) = (write.name.clone(), write.script_id.clone(), write.spec.clone());
        self.write(move |c| {
            Box::pin(async move {
                check_script_owner(c, &tenant, script_id.as_ref()).await?;
                let now = now_ms();
                let row = sqlx::query(
                    "INSERT INTO configurations (id, tenant_id, name, version, enabled, script_id, spec, created_at, updated_at)
                     VALUES (?, ?, ?, 1, 0, ?, ?, ?, ?) RETURNING *",
                )
                .bind(id.as_str())
                .bind(tenant.as_str())
                .bind(&name)
                .bind(script_id.as_ref().map(|s| s.as_str()))
                .bind(&spec)
                .bind(now)
                .bind(now)
                .fetch_one(&mut *c)
                .await
                .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict("configuration name") } else { e.into() })?;
                config_row(&row)
            })
        })
        .await
    }

    pub async fn get_config(&self, tenant: &TenantId, id: &ConfigId) -> Result<ConfigRecord> {
        let row = sqlx::query("SELECT * FROM configurations WHERE tenant_id = ? AND id = ?")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(&self.read)
            .await?;
        config_row(&not_found_if_none(row)?)
    }

    pub async fn list_configs(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ConfigRecord>> {
        let rows = sqlx::query("SELECT * FROM configurations WHERE tenant_id = ? AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?")
            .bind(tenant.as_str())
            .bind(&page.cursor)
            .bind(&page.cursor)
            .bind(page.limit())
            .fetch_all(&self.read)
            .await?;
        let items = rows.iter().map(config_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_items(items, page, |c| c.id.to_string()))
    }

    pub async fn update_config(&self, tenant: &TenantId, id: &ConfigId, expected: i64, write: &ConfigWrite) -> Result<ConfigRecord> {
        let (tenant, id) = (tenant.clone(), id.clone());
        let (name, script_id, spec) = (write.name.clone(), write.script_id.clone(), write.spec.clone());
        self.write(move |c| {
            Box::pin(async move {
                check_script_owner(c, &tenant, script_id.as_ref()).await?;
                let row = sqlx::query(
                    "UPDATE configurations SET name = ?, script_id = ?, spec = ?, version = version + 1, updated_at = ?
                     WHERE tenant_id = ? AND id = ? AND version = ? RETURNING *",
                )
                .bind(&name)
                .bind(script_id.as_ref().map(|s| s.as_str()))
                .bind(&spec)
                .bind(now_ms())
                .bind(tenant.as_str())
                .bind(id.as_str())
                .bind(expected)
                .fetch_optional(&mut *c)
                .await
                .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict("configuration name") } else { e.into() })?;
                match row {
                    Some(row) => config_row(&row),
                    None => Err(stale_or_missing(c, &tenant, &id).await),
                }
            })
        })
        .await
    }

    pub async fn set_config_enabled(
        &self,
        tenant: &TenantId,
        id: &ConfigId,
        expected: Option<i64>,
        enabled: bool,
        reason: Option<&str>,
    ) -> Result<ConfigRecord> {
        let (tenant, id, reason) = (tenant.clone(), id.clone(), reason.map(str::to_owned));
        self.write(move |c| {
            Box::pin(async move {
                let row = sqlx::query(
                    "UPDATE configurations SET enabled = ?, disabled_reason = ?, version = version + 1, updated_at = ?
                     WHERE tenant_id = ? AND id = ? AND (? IS NULL OR version = ?) RETURNING *",
                )
                .bind(enabled)
                .bind(if enabled { None } else { reason })
                .bind(now_ms())
                .bind(tenant.as_str())
                .bind(id.as_str())
                .bind(expected)
                .bind(expected)
                .fetch_optional(&mut *c)
                .await?;
                match row {
                    Some(row) => config_row(&row),
                    None => Err(stale_or_missing(c, &tenant, &id).await),
                }
            })
        })
        .await
    }

    pub async fn delete_config(&self, tenant: &TenantId, id: &ConfigId, expected: Option<i64>) -> Result<()> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.write(move |c| {
            Box::pin(async move {
                let done = sqlx::query("DELETE FROM configurations WHERE tenant_id = ? AND id = ? AND (? IS NULL OR version = ?)")
                    .bind(tenant.as_str())
                    .bind(id.as_str())
                    .bind(expected)
                    .bind(expected)
                    .execute(&mut *c)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(stale_or_missing(c, &tenant, &id).await);
                }
                Ok(())
            })
        })
        .await
    }

    pub async fn enabled_configs(&self, tenant: &TenantId) -> Result<Vec<ConfigRecord>> {
        let rows = sqlx::query("SELECT * FROM configurations WHERE tenant_id = ? AND enabled = 1 ORDER BY id")
            .bind(tenant.as_str())
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(config_row).collect()
    }

    // Events.

    pub async fn list_event_types(&self, tenant: &TenantId) -> Result<Vec<EventTypeRecord>> {
        let rows = sqlx::query("SELECT name, description, first_seen FROM event_types WHERE tenant_id = ? ORDER BY name")
            .bind(tenant.as_str())
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(EventTypeRecord {
                    name: r.try_get("name")?,
                    description: r.try_get("description")?,
                    first_seen: r.try_get("first_seen")?,
                })
            })
            .collect()
    }

    pub async fn put_event_type(&self, tenant: &TenantId, name: &str, description: Option<&str>) -> Result<EventTypeRecord> {
        let (tenant, name, description) = (tenant.clone(), name.to_owned(), description.map(str::to_owned));
        self.write(move |c| {
            Box::pin(async move {
                let row = sqlx::query(
                    "INSERT INTO event_types (tenant_id, name, description, first_seen) VALUES (?, ?, ?, ?)
                     ON CONFLICT (tenant_id, name) DO UPDATE SET description = excluded.description
                     RETURNING name, description, first_seen",
                )
                .bind(tenant.as_str())
                .bind(&name)
                .bind(&description)
                .bind(now_ms())
                .fetch_one(&mut *c)
                .await?;
                Ok(EventTypeRecord {
                    name: row.try_get("name")?,
                    description: row.try_get("description")?,
                    first_seen: row.try_get("first_seen")?,
                })
            })
        })
        .await
    }

    pub async fn ingest(&self, tenant: &TenantId, quota: Option<i64>, events: Vec<Event>) -> Result<Vec<Ingested>> {
        let tenant = tenant.clone();
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let mut out = Vec::with_capacity(events.len());
                let mut stored = 0i64;
                for e in &events {
                    let source = e.source.as_ref().map(serde_json::to_string).transpose().map_err(corrupt)?;
                    let related = (!e.related.is_empty())
                        .then(|| serde_json::to_string(&e.related))
                        .transpose()
                        .map_err(corrupt)?;
                    let seq: Option<i64> = sqlx::query_scalar(
                        "INSERT INTO events (tenant_id, id, type, organization_unit, occurred_at_ns, received_at, source, related, payload)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, id) DO NOTHING RETURNING seq",
                    )
                    .bind(tenant.as_str())
                    .bind(e.id.as_str())
                    .bind(e.event_type.as_str())
                    .bind(e.organization_unit.as_str())
                    .bind(e.occurred_at.unix_timestamp_nanos() as i64)
                    .bind(now)
                    .bind(source)
                    .bind(related)
                    .bind(e.payload.get())
                    .fetch_optional(&mut *c)
                    .await?;
                    match seq {
                        Some(seq) => {
                            stored += 1;
                            out.push(Ingested::Stored { seq });
                        }
                        None => out.push(Ingested::Duplicate),
                    }
                }
                if stored == 0 {
                    return Ok(out);
                }
                let used: i64 = sqlx::query_scalar(
                    "INSERT INTO usage (tenant_id, month, events) VALUES (?, ?, ?)
                     ON CONFLICT (tenant_id, month) DO UPDATE SET events = events + excluded.events RETURNING events",
                )
                .bind(tenant.as_str())
                .bind(month_of(now))
                .bind(stored)
                .fetch_one(&mut *c)
                .await?;
                if let Some(quota) = quota {
                    if used > quota {
                        // The savepoint rollback undoes the whole batch.
                        return Err(StoreError::QuotaExceeded { quota, used: used - stored });
                    }
                }
                let mut types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
                types.sort_unstable();
                types.dedup();
                for t in types {
                    sqlx::query("INSERT INTO event_types (tenant_id, name, first_seen) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
                        .bind(tenant.as_str())
                        .bind(t)
                        .bind(now)
                        .execute(&mut *c)
                        .await?;
                }
                Ok(out)
            })
        })
        .await
    }

    pub async fn get_event(&self, tenant: &TenantId, id: &str) -> Result<EventRecord> {
        let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.tenant_id = ? AND e.id = ?"))
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        event_row(&not_found_if_none(row)?)
    }

    pub async fn list_events(&self, tenant: &TenantId, filter: &EventFilter, page: &PageRequest) -> Result<Page<EventRecord>> {
        let cursor: Option<i64> = match &page.cursor {
            Some(c) => Some(c.parse().map_err(|_| StoreError::NotFound)?),
            None => None,
        };
        let status = filter.status.map(|s| match s {
            EventStatus::Pending => "pending",
            EventStatus::Done => "done",
            EventStatus::Failed => "failed",
        });
        let ou_prefix = filter.organization_unit.as_ref().map(|ou| format!("{ou}/"));
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events e
             WHERE e.tenant_id = ?1
               AND (?2 IS NULL OR e.seq < ?2)
               AND (?3 IS NULL OR e.type = ?3)
               AND (?4 IS NULL OR ?4 = '' OR e.organization_unit = ?4 OR substr(e.organization_unit, 1, length(?5)) = ?5)
               AND (?6 IS NULL OR e.received_at >= ?6)
               AND (?7 IS NULL OR e.received_at < ?7)
               AND (?8 IS NULL
                    OR (?8 = 'pending' AND (e.routed = 0 OR EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.status = 'pending')))
                    OR (?8 = 'failed' AND EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.status IN ('failed', 'script_error')))
                    OR (?8 = 'done' AND e.routed = 1 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.status IN ('pending', 'failed', 'script_error'))))
             ORDER BY e.seq DESC LIMIT ?9"
        ))
        .bind(tenant.as_str())
        .bind(cursor)
        .bind(&filter.event_type)
        .bind(&filter.organization_unit)
        .bind(&ou_prefix)
        .bind(filter.received_after)
        .bind(filter.received_before)
        .bind(status)
        .bind(page.limit())
        .fetch_all(&self.read)
        .await?;
        let items = rows.iter().map(event_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_items(items, page, |e| e.seq.to_string()))
    }

    pub async fn unrouted_events(&self, after_seq: i64, received_before: i64, limit: i64) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.routed = 0 AND e.seq > ? AND e.received_at < ? ORDER BY e.seq LIMIT ?"
        ))
        .bind(after_seq)
        .bind(received_before)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event_row).collect()
    }

    pub async fn record_routing(&self, tenant: &TenantId, event_seq: i64, deliveries: Vec<NewDelivery>) -> Result<()> {
        let tenant = tenant.clone();
        self.write(move |c| {
            Box::pin(async move {
                let marked = sqlx::query("UPDATE events SET routed = 1 WHERE seq = ? AND tenant_id = ? AND routed = 0")
                    .bind(event_seq)
                    .bind(tenant.as_str())
                    .execute(&mut *c)
                    .await?;
                if marked.rows_affected() == 0 {
                    // Routed already (a recovery scan raced the live path).
                    return Err(StoreError::Conflict("event routing"));
                }
                let now = now_ms();
                for d in deliveries {
                    sqlx::query(
                        "INSERT INTO deliveries (id, tenant_id, event_seq, config_id, config_version, status, reason, error_kind,
                                                 script_logs, body, headers, next_attempt_at, lease_until, created_at, updated_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(d.id.as_str())
                    .bind(tenant.as_str())
                    .bind(event_seq)
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
                    .bind(now)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    // Deliveries and attempts.

    pub async fn get_delivery(&self, tenant: &TenantId, id: &DeliveryId) -> Result<DeliveryRecord> {
        let row = sqlx::query(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.tenant_id = ? AND d.id = ?"))
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(&self.read)
            .await?;
        delivery_row(&not_found_if_none(row)?)
    }

    pub async fn list_deliveries(&self, tenant: &TenantId, filter: &DeliveryFilter, page: &PageRequest) -> Result<Page<DeliveryRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d
             WHERE d.tenant_id = ?1
               AND (?2 IS NULL OR d.id < ?2)
               AND (?3 IS NULL OR d.config_id = ?3)
               AND (?4 IS NULL OR d.event_seq = (SELECT seq FROM events WHERE tenant_id = ?1 AND id = ?4))
               AND (?5 IS NULL OR d.status = ?5)
               AND (?6 IS NULL OR d.created_at >= ?6)
               AND (?7 IS NULL OR d.created_at < ?7)
             ORDER BY d.id DESC LIMIT ?8"
        ))
        .bind(tenant.as_str())
        .bind(&page.cursor)
        .bind(filter.configuration_id.as_ref().map(|c| c.as_str()))
        .bind(&filter.event_id)
        .bind(filter.status.map(DeliveryStatus::as_str))
        .bind(filter.created_after)
        .bind(filter.created_before)
        .bind(page.limit())
        .fetch_all(&self.read)
        .await?;
        let items = rows.iter().map(delivery_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_items(items, page, |d| d.id.to_string()))
    }

    pub async fn deliveries_of_event(&self, tenant: &TenantId, event_seq: i64) -> Result<Vec<DeliveryRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.tenant_id = ? AND d.event_seq = ? ORDER BY d.id"
        ))
        .bind(tenant.as_str())
        .bind(event_seq)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(delivery_row).collect()
    }

    pub async fn claim_due(&self, now: i64, lease_ms: i64, limit: i64) -> Result<Vec<DueDelivery>> {
        let claimed: Vec<String> = self
            .write(move |c| {
                Box::pin(async move {
                    let ids = sqlx::query_scalar(
                        "UPDATE deliveries SET lease_until = ?1
                         WHERE id IN (SELECT id FROM deliveries
                                      WHERE status = 'pending' AND next_attempt_at <= ?2
                                        AND (lease_until IS NULL OR lease_until < ?2)
                                      ORDER BY next_attempt_at LIMIT ?3)
                         RETURNING id",
                    )
                    .bind(now + lease_ms)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&mut *c)
                    .await?;
                    Ok(ids)
                })
            })
            .await?;
        let mut out = Vec::with_capacity(claimed.len());
        for id in claimed {
            let row = sqlx::query(&format!(
                "SELECT {DELIVERY_COLUMNS}, d.tenant_id AS delivery_tenant, {EVENT_COLUMNS}
                 FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.id = ?"
            ))
            .bind(&id)
            .fetch_optional(&self.read)
            .await?;
            let Some(row) = row else { continue };
            let delivery = delivery_row(&row)?;
            let event = event_row(&row)?;
            out.push(DueDelivery {
                delivery,
                tenant_id: event.tenant_id,
                event: event.event,
            });
        }
        Ok(out)
    }

    pub async fn release_leases(&self) -> Result<u64> {
        self.write(|c| {
            Box::pin(async move {
                let done = sqlx::query("UPDATE deliveries SET lease_until = NULL WHERE status = 'pending' AND lease_until IS NOT NULL")
                    .execute(&mut *c)
                    .await?;
                Ok(done.rows_affected())
            })
        })
        .await
    }

    pub async fn record_attempt(&self, a: NewAttempt) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO attempts (id, tenant_id, delivery_id, number, started_at, duration_ms, method, uri,
                                           response_status, outcome, error, request_headers, response_headers)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
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
                .bind(&a.error)
                .bind(&a.request_headers)
                .bind(&a.response_headers)
                .execute(&mut *c)
                .await?;
                sqlx::query("INSERT INTO attempt_payloads (attempt_id, request_body, response_body, created_at) VALUES (?, ?, ?, ?)")
                    .bind(a.id.as_str())
                    .bind(&a.request_body)
                    .bind(&a.response_body)
                    .bind(a.started_at)
                    .execute(&mut *c)
                    .await?;
                let status = match a.outcome {
                    AttemptOutcome::Succeeded => DeliveryStatus::Succeeded,
                    AttemptOutcome::Retry => DeliveryStatus::Pending,
                    AttemptOutcome::Failed => DeliveryStatus::Failed,
                };
                sqlx::query(
                    "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?, lease_until = NULL, updated_at = ?
                     WHERE id = ? AND tenant_id = ?",
                )
                .bind(status.as_str())
                .bind(a.number)
                .bind(a.next_attempt_at)
                .bind(now_ms())
                .bind(a.delivery_id.as_str())
                .bind(a.tenant_id.as_str())
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    pub async fn get_attempt(&self, tenant: &TenantId, id: &AttemptId) -> Result<AttemptRecord> {
        let row = sqlx::query(
            "SELECT a.*, p.request_body, p.response_body FROM attempts a
             LEFT JOIN attempt_payloads p ON p.attempt_id = a.id WHERE a.tenant_id = ? AND a.id = ?",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_optional(&self.read)
        .await?;
        attempt_row(&not_found_if_none(row)?, true)
    }

    pub async fn list_attempts(&self, tenant: &TenantId, filter: &AttemptFilter, page: &PageRequest) -> Result<Page<AttemptRecord>> {
        let rows = sqlx::query(
            "SELECT a.* FROM attempts a
             WHERE a.tenant_id = ?1
               AND (?2 IS NULL OR a.id < ?2)
               AND (?3 IS NULL OR a.delivery_id = ?3)
               AND (?4 IS NULL OR a.delivery_id IN (SELECT id FROM deliveries WHERE tenant_id = ?1 AND config_id = ?4))
               AND (?5 IS NULL OR a.started_at >= ?5)
               AND (?6 IS NULL OR a.started_at < ?6)
             ORDER BY a.id DESC LIMIT ?7",
        )
        .bind(tenant.as_str())
        .bind(&page.cursor)
        .bind(filter.delivery_id.as_ref().map(|d| d.as_str()))
        .bind(filter.configuration_id.as_ref().map(|c| c.as_str()))
        .bind(filter.started_after)
        .bind(filter.started_before)
        .bind(page.limit())
        .fetch_all(&self.read)
        .await?;
        let items = rows.iter().map(|r| attempt_row(r, false)).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_items(items, page, |a| a.id.to_string()))
    }
}

/// A script a configuration names must be the tenant's own.
async fn check_script_owner(c: &mut SqliteConnection, tenant: &TenantId, script: Option<&ScriptId>) -> Result<()> {
    let Some(script) = script else { return Ok(()) };
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM scripts WHERE tenant_id = ? AND id = ?")
        .bind(tenant.as_str())
        .bind(script.as_str())
        .fetch_optional(&mut *c)
        .await?;
    found.map(|_| ()).ok_or(StoreError::UnknownReference("script"))
}

/// After a conditional write matched nothing: was the row missing or stale?
async fn stale_or_missing(c: &mut SqliteConnection, tenant: &TenantId, id: &ConfigId) -> StoreError {
    let current: std::result::Result<Option<i64>, _> =
        sqlx::query_scalar("SELECT version FROM configurations WHERE tenant_id = ? AND id = ?")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(&mut *c)
            .await;
    match current {
        Ok(Some(current)) => StoreError::StaleVersion { current },
        Ok(None) => StoreError::NotFound,
        Err(e) => e.into(),
    }
}
