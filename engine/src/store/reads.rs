//! Reads whose SQL is the same in SQLite and PostgreSQL, written once and
//! run through sqlx on the reader pool of the backend that runs.
//!
//! One text serves both: placeholders are numbered (`$1`, which both
//! drivers bind by number), a parameter tested for NULL is `CAST` first
//! (PostgreSQL wants its type; SQLite ignores it), and a flag is tested
//! bare (a `boolean` in PostgreSQL, 0 or 1 in SQLite; SQLite plans
//! `flag = TRUE` worse than `flag = 1` or `flag`).
//!
//! Nothing here may write, lock rows, or depend on the backend: what truly
//! differs (writes, claims and leases, notifications, statements shaped
//! for one planner) stays in `sqlite.rs` and `postgres.rs`.

use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};

use super::rows::*;
use super::*;

/// A backend's reader pool, with the reads the backends share.
pub(super) struct Reads<'p, DB: Database>(pub(super) &'p Pool<DB>);

// What the reads need of a database, each named: sqlx implements them per
// database (even an `Option`'s encoding), not once for all.
impl<DB> Reads<'_, DB>
where
    DB: Database,
    DB::Row: Columns,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
{
    // Tenants and keys.

    pub async fn tenant_count(&self) -> Result<i64> {
        sqlx::query("SELECT COUNT(*) AS n FROM tenants").fetch_one(self.0).await?.int("n")
    }

    pub async fn operator_tenant(&self) -> Result<Option<TenantId>> {
        let row = sqlx::query("SELECT id FROM tenants WHERE operator ORDER BY id LIMIT 1").fetch_optional(self.0).await?;
        row.map(|row| parse_id(row.text("id")?, TenantId::parse)).transpose()
    }

    pub async fn get_tenant(&self, id: &TenantId) -> Result<TenantRecord> {
        let row = sqlx::query("SELECT * FROM tenants WHERE id = $1").bind(id.as_str()).fetch_optional(self.0).await?;
        tenant_row(&not_found_if_none(row)?)
    }

    pub async fn list_tenants(&self, page: &PageRequest) -> Result<Page<TenantRecord>> {
        let rows = sqlx::query("SELECT * FROM tenants WHERE (CAST($1 AS TEXT) IS NULL OR id < $1) ORDER BY id DESC LIMIT $2")
            .bind(page.cursor.as_deref())
            .bind(page.limit())
            .fetch_all(self.0)
            .await?;
        let items = rows.iter().map(tenant_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_items(items, page, |t| t.id.to_string()))
    }

    pub async fn list_keys(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<KeyRecord>> {
        let rows =
            sqlx::query("SELECT * FROM api_keys WHERE tenant_id = $1 AND (CAST($2 AS TEXT) IS NULL OR id < $2) ORDER BY id DESC LIMIT $3")
                .bind(tenant.as_str())
                .bind(page.cursor.as_deref())
                .bind(page.limit())
                .fetch_all(self.0)
                .await?;
        let items = rows.iter().map(key_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_items(items, page, |k| k.id.to_string()))
    }

    pub async fn find_key(&self, hash: &KeyHash, now: i64) -> Result<Option<KeyRecord>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)")
            .bind(hash.0.as_str())
            .bind(now)
            .fetch_optional(self.0)
            .await?;
        row.as_ref().map(key_row).transpose()
    }

    // Scripts.

    pub async fn get_script(&self, tenant: &TenantId, id: &ScriptId) -> Result<ScriptRecord> {
        let row = sqlx::query(&format!("SELECT {SCRIPT_COLUMNS} FROM scripts WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(self.0)
            .await?;
        script_row(&not_found_if_none(row)?)
    }

    pub async fn script_code(&self, tenant: &TenantId, id: &ScriptId) -> Result<ScriptCode> {
        let row = sqlx::query("SELECT sha256, bytes, compiled FROM scripts WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(self.0)
            .await?;
        let row = not_found_if_none(row)?;
        Ok(ScriptCode { sha256: row.text("sha256")?, bytes: row.bytes("bytes")?, compiled: row.opt_bytes("compiled")? })
    }

    pub async fn list_scripts(&self, tenant: &TenantId, name: Option<&str>, page: &PageRequest) -> Result<Page<ScriptRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {SCRIPT_COLUMNS} FROM scripts
             WHERE tenant_id = $1 AND (CAST($2 AS TEXT) IS NULL OR id < $2) AND (CAST($4 AS TEXT) IS NULL OR name = $4)
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(tenant.as_str())
        .bind(page.cursor.as_deref())
        .bind(page.limit())
        .bind(name)
        .fetch_all(self.0)
        .await?;
        let items = rows.iter().map(script_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_items(items, page, |s| s.id.to_string()))
    }

    pub async fn script_hash_used(&self, sha256: &str) -> Result<bool> {
        sqlx::query("SELECT EXISTS (SELECT 1 FROM scripts WHERE sha256 = $1) AS used").bind(sha256).fetch_one(self.0).await?.flag("used")
    }

    // Configurations.

    /// The events a configuration selected when they were routed (its
    /// first delivery of each, replays aside), newest first, each with the
    /// delivery id to continue after.
    pub async fn events_selected_by(
        &self,
        tenant: &TenantId,
        config: &ConfigId,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, EventRecord)>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS}, d.id AS cursor_delivery FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE d.config_id = $2 AND d.tenant_id = $1 AND d.replay_of IS NULL AND (CAST($3 AS TEXT) IS NULL OR d.id < $3)
             ORDER BY d.id DESC LIMIT $4"
        ))
        .bind(tenant.as_str())
        .bind(config.as_str())
        .bind(before)
        .bind(limit)
        .fetch_all(self.0)
        .await?;
        rows.iter().map(|row| Ok((row.text("cursor_delivery")?, event_row(row)?))).collect()
    }

    pub async fn config_scripts(&self, tenant: &TenantId, id: &ConfigId) -> Result<Vec<ConfigScriptRecord>> {
        let rows = sqlx::query(
            "SELECT config_id, version, script_id, script_sha256, params, changed_at, changed_by FROM configuration_scripts
             WHERE tenant_id = $1 AND config_id = $2 ORDER BY version DESC",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_all(self.0)
        .await?;
        rows.iter().map(config_script_row).collect()
    }

    pub async fn config_script_at(&self, tenant: &TenantId, id: &ConfigId, version: i64) -> Result<Option<ConfigScriptRecord>> {
        let row = sqlx::query(
            "SELECT config_id, version, script_id, script_sha256, params, changed_at, changed_by FROM configuration_scripts
             WHERE tenant_id = $1 AND config_id = $2 AND version <= $3 ORDER BY version DESC LIMIT 1",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(version)
        .fetch_optional(self.0)
        .await?;
        row.as_ref().map(config_script_row).transpose()
    }

    pub async fn configs_without_script_history(&self, after: &str, limit: i64) -> Result<Vec<ConfigRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM configurations c
             WHERE id > $1 AND NOT EXISTS (SELECT 1 FROM configuration_scripts h WHERE h.config_id = c.id) ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.0)
        .await?;
        rows.iter().map(config_row).collect()
    }

    pub async fn list_catchers(&self, tenant: &TenantId) -> Result<Vec<CatcherRecord>> {
        let rows = sqlx::query("SELECT * FROM catchers WHERE tenant_id = $1 ORDER BY id DESC LIMIT 200")
            .bind(tenant.as_str())
            .fetch_all(self.0)
            .await?;
        rows.iter().map(catcher_row).collect()
    }

    pub async fn get_catcher(&self, tenant: &TenantId, id: &CatcherId) -> Result<CatcherRecord> {
        let row = sqlx::query("SELECT * FROM catchers WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(self.0)
            .await?;
        catcher_row(&not_found_if_none(row)?)
    }

    pub async fn caught(&self, tenant: &TenantId, id: &CatcherId) -> Result<Vec<Caught>> {
        self.get_catcher(tenant, id).await?;
        let rows = sqlx::query("SELECT * FROM caught_requests WHERE catcher_id = $1 ORDER BY id DESC LIMIT $2")
            .bind(id.as_str())
            .bind(CAUGHT_KEPT)
            .fetch_all(self.0)
            .await?;
        rows.iter().map(caught_row).collect()
    }

    /// A configuration's deliveries of the last hour and day counted by
    /// status (the newest [`STATS_BOUND`] of each), its oldest pending one
    /// and its failure streak.
    pub async fn config_stats(&self, id: &ConfigId, now: i64) -> Result<ConfigStats> {
        // Ids are `dlv_` and a UUIDv7, whose first 48 bits are the creation
        // time in ms: the (config_id, id) index reads a time window.
        let since = |ms: i64| format!("{}{:012x}", DeliveryId::PREFIX, ms.max(0));
        let (hour, day) = (since(now - 3_600_000), since(now - 86_400_000));
        // One statement, so one snapshot: the windows, the oldest pending
        // delivery and the failure streak agree with each other (separate
        // reads could count a failure of a delivery they did not see made).
        let rows = sqlx::query(
            "SELECT 'hour' AS part, status, COUNT(*) AS n, CAST(NULL AS BIGINT) AS since FROM
               (SELECT status FROM deliveries WHERE config_id = $1 AND id >= $2 ORDER BY id DESC LIMIT $4) h
             GROUP BY status
             UNION ALL
             SELECT 'day', status, COUNT(*), NULL FROM
               (SELECT status FROM deliveries WHERE config_id = $1 AND id >= $3 ORDER BY id DESC LIMIT $4) d
             GROUP BY status
             UNION ALL
             SELECT 'oldest', NULL, created_at, NULL FROM
               (SELECT created_at FROM deliveries WHERE config_id = $1 AND status = 'pending' ORDER BY id LIMIT 1) o
             UNION ALL
             SELECT 'streak', NULL, failures, since FROM failure_streaks WHERE config_id = $1",
        )
        .bind(id.as_str())
        .bind(hour.as_str())
        .bind(day.as_str())
        .bind(STATS_BOUND + 1)
        .fetch_all(self.0)
        .await?;
        let mut stats = ConfigStats::default();
        for row in &rows {
            match row.text("part")?.as_str() {
                "hour" => stats.last_hour.by_status.push((row.text("status")?, row.int("n")?)),
                "day" => stats.last_day.by_status.push((row.text("status")?, row.int("n")?)),
                "oldest" => stats.oldest_pending_at = Some(row.int("n")?),
                "streak" => stats.streak = Some(FailureStreak { failures: row.int("n")?, since: row.int("since")? }),
                _ => {}
            }
        }
        for counts in [&mut stats.last_hour, &mut stats.last_day] {
            counts.by_status.sort();
            counts.capped = counts.by_status.iter().map(|(_, n)| n).sum::<i64>() > STATS_BOUND;
        }
        Ok(stats)
    }

    /// Events the tenant stored in the calendar month (UTC) of `now`.
    pub async fn monthly_usage(&self, tenant: &TenantId, now: i64) -> Result<i64> {
        sqlx::query("SELECT CAST(COALESCE(SUM(events), 0) AS BIGINT) AS n FROM usage WHERE tenant_id = $1 AND month = $2")
            .bind(tenant.as_str())
            .bind(month_of(now).as_str())
            .fetch_one(self.0)
            .await?
            .int("n")
    }

    pub async fn backlog(&self) -> Result<Backlog> {
        let pending = sqlx::query("SELECT COUNT(*) AS n FROM deliveries WHERE status = 'pending'").fetch_one(self.0).await?.int("n")?;
        // Each configuration's oldest from the pending index (one seek
        // each), not a walk over the whole backlog.
        let oldest = sqlx::query(
            "SELECT MIN((SELECT d.created_at FROM deliveries d WHERE d.config_id = c.id AND d.status = 'pending' ORDER BY d.id LIMIT 1))
                 AS oldest FROM configurations c",
        )
        .fetch_one(self.0)
        .await?
        .opt_int("oldest")?;
        // Deliveries handed on unwritten are pending too (the store counts
        // this node's): the oldest event whose routing is not all written
        // is as old as the oldest of them can be.
        let unwritten = sqlx::query("SELECT e.received_at AS oldest FROM unrouted u JOIN events e ON e.seq = u.seq ORDER BY u.seq LIMIT 1")
            .fetch_optional(self.0)
            .await?;
        let oldest = match (oldest, unwritten.map(|row| row.int("oldest")).transpose()?) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let configs =
            sqlx::query("SELECT COUNT(*) AS total, COALESCE(SUM(CASE WHEN enabled THEN 1 ELSE 0 END), 0) AS enabled FROM configurations")
                .fetch_one(self.0)
                .await?;
        let (total, enabled) = (configs.int("total")?, configs.int("enabled")?);
        Ok(Backlog { pending, oldest_pending_at: oldest, configurations_enabled: enabled, configurations_disabled: total - enabled })
    }

    pub async fn get_config(&self, tenant: &TenantId, id: &ConfigId) -> Result<ConfigRecord> {
        let row = sqlx::query("SELECT * FROM configurations WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(self.0)
            .await?;
        config_row(&not_found_if_none(row)?)
    }

    pub async fn list_configs(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ConfigRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM configurations WHERE tenant_id = $1 AND (CAST($2 AS TEXT) IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(page.cursor.as_deref())
        .bind(page.limit())
        .fetch_all(self.0)
        .await?;
        let items = rows.iter().map(config_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_items(items, page, |c| c.id.to_string()))
    }

    /// Every tenant's configurations by id after `after`, for re-sealing.
    pub async fn configs_after(&self, after: &str, limit: i64) -> Result<Vec<ConfigRecord>> {
        let rows = sqlx::query("SELECT * FROM configurations WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(self.0)
            .await?;
        rows.iter().map(config_row).collect()
    }

    pub async fn enabled_configs(&self, tenant: &TenantId) -> Result<Vec<ConfigRecord>> {
        let rows = sqlx::query("SELECT * FROM configurations WHERE tenant_id = $1 AND enabled ORDER BY id")
            .bind(tenant.as_str())
            .fetch_all(self.0)
            .await?;
        rows.iter().map(config_row).collect()
    }

    // Events.

    pub async fn list_event_types(&self, tenant: &TenantId) -> Result<Vec<EventTypeRecord>> {
        let rows = sqlx::query("SELECT name, description, first_seen FROM event_types WHERE tenant_id = $1 ORDER BY name")
            .bind(tenant.as_str())
            .fetch_all(self.0)
            .await?;
        rows.iter().map(event_type_row).collect()
    }

    pub async fn get_event(&self, tenant: &TenantId, id: &str) -> Result<EventRecord> {
        let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.tenant_id = $1 AND e.id = $2"))
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(self.0)
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
        // Pending events come from the backlog's own index (a few rows),
        // not from a walk back through the tenant's whole history until a
        // page of them is found.
        let pending_only = if status == Some("pending") {
            "AND e.seq IN (SELECT d.event_seq FROM deliveries d
                           WHERE d.status = 'pending' AND d.config_id IN (SELECT c.id FROM configurations c WHERE c.tenant_id = $1)
                           UNION SELECT u.seq FROM unrouted u)"
        } else {
            ""
        };
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events e
             WHERE e.tenant_id = $1 {pending_only}
               AND (CAST($2 AS BIGINT) IS NULL OR e.seq < $2)
               AND (CAST($3 AS TEXT) IS NULL OR e.type = $3)
               AND (CAST($4 AS TEXT) IS NULL OR $4 = '' OR e.organization_unit = $4 OR substr(e.organization_unit, 1, length($5)) = $5)
               AND (CAST($6 AS BIGINT) IS NULL OR e.received_at >= $6)
               AND (CAST($7 AS BIGINT) IS NULL OR e.received_at < $7)
               AND (CAST($8 AS TEXT) IS NULL
                    OR ($8 = 'pending' AND (NOT {ROUTED} OR EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.status = 'pending')))
                    OR ($8 = 'failed' AND EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.status IN ('failed', 'script_error') AND {NEWEST}))
                    OR ($8 = 'done' AND {ROUTED} AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.status IN ('pending', 'failed', 'script_error') AND {NEWEST})))
             ORDER BY e.seq DESC LIMIT $9"
        ))
        .bind(tenant.as_str())
        .bind(cursor)
        .bind(filter.event_type.as_deref())
        .bind(filter.organization_unit.as_deref())
        .bind(ou_prefix.as_deref())
        .bind(filter.received_after)
        .bind(filter.received_before)
        .bind(status)
        .bind(page.limit())
        .fetch_all(self.0)
        .await?;
        let items = rows.iter().map(event_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_items(items, page, |e| e.seq.to_string()))
    }

    // Deliveries and attempts.

    pub async fn get_delivery(&self, tenant: &TenantId, id: &DeliveryId) -> Result<DeliveryRecord> {
        let row = sqlx::query(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.tenant_id = $1 AND d.id = $2"))
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(self.0)
            .await?;
        delivery_row(&not_found_if_none(row)?)
    }

    pub async fn list_deliveries(&self, tenant: &TenantId, filter: &DeliveryFilter, page: &PageRequest) -> Result<Page<DeliveryRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d
             WHERE d.tenant_id = $1
               AND (CAST($2 AS TEXT) IS NULL OR d.id < $2)
               AND (CAST($3 AS TEXT) IS NULL OR d.config_id = $3)
               AND (CAST($4 AS TEXT) IS NULL OR d.event_seq = (SELECT seq FROM events WHERE tenant_id = $1 AND id = $4))
               AND (CAST($5 AS TEXT) IS NULL OR d.status = $5)
               AND (CAST($6 AS BIGINT) IS NULL OR d.created_at >= $6)
               AND (CAST($7 AS BIGINT) IS NULL OR d.created_at < $7)
             ORDER BY d.id DESC LIMIT $8"
        ))
        .bind(tenant.as_str())
        .bind(page.cursor.as_deref())
        .bind(filter.configuration_id.as_ref().map(|c| c.as_str()))
        .bind(filter.event_id.as_deref())
        .bind(filter.status.map(DeliveryStatus::as_str))
        .bind(filter.created_after)
        .bind(filter.created_before)
        .bind(page.limit())
        .fetch_all(self.0)
        .await?;
        let items = rows.iter().map(delivery_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_items(items, page, |d| d.id.to_string()))
    }

    pub async fn deliveries_of_event(&self, tenant: &TenantId, event_seq: i64) -> Result<Vec<DeliveryRecord>> {
        let rows =
            sqlx::query(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.tenant_id = $1 AND d.event_seq = $2 ORDER BY d.id"))
                .bind(tenant.as_str())
                .bind(event_seq)
                .fetch_all(self.0)
                .await?;
        rows.iter().map(delivery_row).collect()
    }

    pub async fn get_attempt(&self, tenant: &TenantId, id: &AttemptId) -> Result<AttemptRecord> {
        let row = sqlx::query("SELECT * FROM attempts WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(self.0)
            .await?;
        attempt_row(&not_found_if_none(row)?, true)
    }

    pub async fn list_attempts(&self, tenant: &TenantId, filter: &AttemptFilter, page: &PageRequest) -> Result<Page<AttemptRecord>> {
        let rows = sqlx::query(
            "SELECT a.id, a.delivery_id, a.number, a.started_at, a.duration_ms, a.method, a.uri, a.response_status, a.outcome,
                    a.error, a.request_headers, a.response_headers
             FROM attempts a
             WHERE a.tenant_id = $1
               AND (CAST($2 AS TEXT) IS NULL OR a.id < $2)
               AND (CAST($3 AS TEXT) IS NULL OR a.delivery_id = $3)
               AND (CAST($4 AS TEXT) IS NULL OR a.delivery_id IN (SELECT id FROM deliveries WHERE tenant_id = $1 AND config_id = $4))
               AND (CAST($5 AS BIGINT) IS NULL OR a.started_at >= $5)
               AND (CAST($6 AS BIGINT) IS NULL OR a.started_at < $6)
             ORDER BY a.id DESC LIMIT $7",
        )
        .bind(tenant.as_str())
        .bind(page.cursor.as_deref())
        .bind(filter.delivery_id.as_ref().map(|d| d.as_str()))
        .bind(filter.configuration_id.as_ref().map(|c| c.as_str()))
        .bind(filter.started_after)
        .bind(filter.started_before)
        .bind(page.limit())
        .fetch_all(self.0)
        .await?;
        let items = rows.iter().map(|r| attempt_row(r, false)).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_items(items, page, |a| a.id.to_string()))
    }

    // Replay and recovery.

    pub async fn failed_deliveries(
        &self,
        tenant: &TenantId,
        config: &ConfigId,
        after: EventCursor,
        until: i64,
        limit: i64,
    ) -> Result<Vec<(EventCursor, DeliveryRecord)>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS}, e.received_at AS cursor_received_at
             FROM events e JOIN deliveries d ON d.event_seq = e.seq
             WHERE e.tenant_id = $1 AND (e.received_at, e.seq) > ($3, $4) AND e.received_at < $5
               AND d.tenant_id = $1 AND d.config_id = $2 AND d.status = 'failed' AND {NEWEST}
             ORDER BY e.received_at, e.seq LIMIT $6"
        ))
        .bind(tenant.as_str())
        .bind(config.as_str())
        .bind(after.received_at)
        .bind(after.seq)
        .bind(until)
        .bind(limit)
        .fetch_all(self.0)
        .await?;
        rows.iter()
            .map(|row| {
                let delivery = delivery_row(row)?;
                let cursor = EventCursor { received_at: row.int("cursor_received_at")?, seq: delivery.event_seq };
                Ok((cursor, delivery))
            })
            .collect()
    }

    pub async fn events_without_delivery(
        &self,
        tenant: &TenantId,
        config: &ConfigId,
        after: EventCursor,
        until: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events e
             WHERE e.tenant_id = $1 AND (e.received_at, e.seq) > ($3, $4) AND e.received_at < $5 AND {ROUTED}
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.config_id = $2)
             ORDER BY e.received_at, e.seq LIMIT $6"
        ))
        .bind(tenant.as_str())
        .bind(config.as_str())
        .bind(after.received_at)
        .bind(after.seq)
        .bind(until)
        .bind(limit)
        .fetch_all(self.0)
        .await?;
        rows.iter().map(event_row).collect()
    }
}
