//! Replay and recovery: sending events again.
//!
//! A replay is a new delivery of an event to a configuration, made from the
//! decision recorded on the event's newest delivery to it: the body and
//! headers its script chose are reused and the script does not run again (a
//! script is a pure function of the event, so its decision stands). The new
//! delivery keeps the event id, so the receiver sees the same `webhook-id`
//! and `idempotency-key` and can dedupe; it records the delivery it
//! replays in `replay_of`, starts with no attempts (the configuration's
//! retry policy applies afresh), and is due at once: the retry poller
//! sends it within its interval.
//!
//! What is replayed, per configuration the event has deliveries to (its
//! newest one decides):
//! - `succeeded` or `failed`: replayed with the recorded decision;
//! - `filtered` or `script_error`: skipped, unless the caller names the
//!   configuration: then its current script decides again (it may have
//!   been fixed since), and the new delivery is sent, filtered or errored
//!   accordingly;
//! - `pending`: skipped (named: refused), it is being delivered;
//! - a configuration now disabled or deleted: skipped (named: refused).
//!
//! Recovery does this for one configuration over a window of received
//! events: every event whose newest delivery to it failed is replayed, and,
//! on request, the events that arrived while it was disabled (no delivery
//! to it at all) are routed to it now, its script deciding as on ingest.
//! Each call adds at most [`MAX_RECOVERED`] deliveries; a truncated
//! recovery is continued by calling again with the same window, since
//! what was re-queued no longer qualifies.
//!
//! This module owns what gets replayed. It must never send anything itself
//! (the deliverer does) and never read another tenant's events or
//! configurations.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::model::ids::{ConfigId, DeliveryId, TenantId};
use crate::model::timestamp;
use crate::pipeline::configs::{ActiveConfig, ConfigCache};
use crate::pipeline::decide::{Pause, decide};
use crate::sandbox::Sandbox;
use crate::store::{AddedDelivery, DeliveryRecord, DeliveryStatus, EventCursor, EventRecord, NewDelivery, Store, StoreError};

/// Most deliveries one recovery call adds.
pub const MAX_RECOVERED: usize = 10_000;
/// Rows read, decided and written per step of a recovery.
const CHUNK: usize = 500;

/// Why a replay or recovery was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// No such event in the tenant.
    #[error("no such event")]
    UnknownEvent,
    /// No such configuration in the tenant.
    #[error("no such configuration")]
    UnknownConfiguration,
    /// The event was accepted but its deliveries are not recorded yet.
    #[error("the event is still being routed; replay it once its deliveries are recorded")]
    NotRouted,
    /// The named configuration has no delivery of the event.
    #[error(
        "configuration {0} never took this event; to route events that arrived while it was disabled, \
         recover it with include_disabled_period"
    )]
    NotMatched(ConfigId),
    /// The configuration is disabled: nothing would be sent.
    #[error("configuration {0} is disabled; enable it first")]
    ConfigurationDisabled(ConfigId),
    /// The newest delivery to the named configuration is still pending.
    #[error("delivery {0} of this event to the configuration is still pending")]
    StillPending(DeliveryId),
    /// The recovery window is empty or inverted.
    #[error("`since` must be before `until`")]
    EmptyWindow,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReplayError {
    /// The stable code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownEvent | Self::UnknownConfiguration => "not_found",
            Self::NotRouted => "event_not_routed",
            Self::NotMatched(_) => "not_matched",
            Self::ConfigurationDisabled(_) => "configuration_disabled",
            Self::StillPending(_) => "delivery_pending",
            Self::EmptyWindow => "invalid_window",
            Self::Store(_) => "internal",
        }
    }
}

/// The outcome of replaying one event.
#[derive(Debug)]
pub struct Replayed {
    pub event_id: String,
    /// The new deliveries.
    pub deliveries: Vec<ReplayedDelivery>,
    /// Configurations the event was not replayed to, and why.
    pub skipped: Vec<Skipped>,
}

#[derive(Debug)]
pub struct ReplayedDelivery {
    pub id: DeliveryId,
    pub configuration_id: ConfigId,
    /// `pending` (to be sent), or, when the script decided again, possibly
    /// `filtered` or `script_error`.
    pub status: DeliveryStatus,
    pub replay_of: DeliveryId,
}

#[derive(Debug)]
pub struct Skipped {
    pub configuration_id: ConfigId,
    pub reason: SkipReason,
}

/// Why a configuration was left out of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Its newest delivery is still pending.
    Pending,
    /// Its script filtered the event (name the configuration to replay).
    Filtered,
    /// Its script failed on the event (name the configuration to replay).
    ScriptError,
    ConfigurationDisabled,
    ConfigurationDeleted,
    /// Another replay of the same delivery was recorded meanwhile.
    Superseded,
}

/// What to recover.
#[derive(Debug, Clone, Copy)]
pub struct RecoverRequest {
    /// Events received from `since` (Unix ms, inclusive)…
    pub since: i64,
    /// …until `until` (exclusive).
    pub until: i64,
    /// Also route the events that have no delivery to the configuration
    /// (they arrived while it was disabled).
    pub include_disabled_period: bool,
}

/// The outcome of a recovery.
#[derive(Debug)]
pub struct Recovered {
    pub configuration_id: ConfigId,
    pub since: i64,
    pub until: i64,
    /// Failed deliveries replayed.
    pub failed_requeued: u64,
    /// Present when the disabled period was included: the new deliveries
    /// by the script's decision.
    pub disabled_period: Option<LateRouted>,
    /// More remained than one call adds: call again with the same window.
    pub truncated: bool,
    /// The most deliveries one call adds.
    pub max_deliveries: usize,
}

/// Deliveries made by routing events late.
#[derive(Debug, Default)]
pub struct LateRouted {
    /// To be sent.
    pub pending: u64,
    pub filtered: u64,
    pub script_error: u64,
}

/// Replays and recovers, for the service: reads through the store and the
/// configuration cache, decides again in the sandbox where asked, and
/// records new deliveries for the retry poller to send.
pub struct Replayer {
    store: Store,
    configs: Arc<ConfigCache>,
    sandbox: Arc<Sandbox>,
}

impl Replayer {
    pub fn new(store: Store, configs: Arc<ConfigCache>, sandbox: Arc<Sandbox>) -> Self {
        Self { store, configs, sandbox }
    }

    /// Replays one event: to every configuration it was delivered to (or
    /// failed to), or to the one named. See the module docs.
    pub async fn replay_event(&self, tenant: &TenantId, event_id: &str, only: Option<&ConfigId>) -> Result<Replayed, ReplayError> {
        let event = self.store.get_event(tenant, event_id).await.map_err(|e| match e {
            StoreError::NotFound => ReplayError::UnknownEvent,
            e => e.into(),
        })?;
        let named = match only {
            Some(id) => Some(self.config(tenant, id).await?.ok_or(ReplayError::UnknownConfiguration)?),
            None => None,
        };
        if !event.routed {
            return Err(ReplayError::NotRouted);
        }
        // Oldest first: the last one per configuration is its newest.
        let mut newest = BTreeMap::new();
        for d in self.store.deliveries_of_event(tenant, event.seq).await? {
            newest.insert(d.configuration_id.clone(), d);
        }
        let now = timestamp::now_ms();
        let mut rows = Vec::new();
        let mut skipped = Vec::new();
        match named {
            Some(config) => {
                let latest = newest.remove(&config.id).ok_or_else(|| ReplayError::NotMatched(config.id.clone()))?;
                if !config.enabled {
                    return Err(ReplayError::ConfigurationDisabled(config.id.clone()));
                }
                match latest.status {
                    DeliveryStatus::Pending => return Err(ReplayError::StillPending(latest.id)),
                    DeliveryStatus::Succeeded | DeliveryStatus::Failed => rows.push(reuse(&latest, now)),
                    DeliveryStatus::Filtered | DeliveryStatus::ScriptError => {
                        let mut decided = self.decide(config, vec![event.clone()]).await?;
                        if let Some((seq, d)) = decided.pop() {
                            rows.push(AddedDelivery { event_seq: seq, delivery: d, replay_of: Some(latest.id) });
                        }
                    }
                }
            }
            None => {
                for (config_id, latest) in newest {
                    let skip = match latest.status {
                        DeliveryStatus::Pending => Some(SkipReason::Pending),
                        DeliveryStatus::Filtered => Some(SkipReason::Filtered),
                        DeliveryStatus::ScriptError => Some(SkipReason::ScriptError),
                        DeliveryStatus::Succeeded | DeliveryStatus::Failed => match self.config(tenant, &config_id).await? {
                            None => Some(SkipReason::ConfigurationDeleted),
                            Some(c) if !c.enabled => Some(SkipReason::ConfigurationDisabled),
                            Some(_) => None,
                        },
                    };
                    match skip {
                        Some(reason) => skipped.push(Skipped { configuration_id: config_id, reason }),
                        None => rows.push(reuse(&latest, now)),
                    }
                }
            }
        }
        let added = self.store.add_deliveries(tenant, rows.clone()).await?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for (row, added) in rows.into_iter().zip(added) {
            let Some(replay_of) = row.replay_of else { continue };
            if added {
                deliveries.push(ReplayedDelivery {
                    id: row.delivery.id,
                    configuration_id: row.delivery.config_id,
                    status: row.delivery.status,
                    replay_of,
                });
            } else {
                skipped.push(Skipped { configuration_id: row.delivery.config_id, reason: SkipReason::Superseded });
            }
        }
        Ok(Replayed { event_id: event.event.id.to_string(), deliveries, skipped })
    }

    /// Recovers one configuration over a window of received events. See
    /// the module docs.
    pub async fn recover(&self, tenant: &TenantId, id: &ConfigId, req: RecoverRequest) -> Result<Recovered, ReplayError> {
        if req.since >= req.until {
            return Err(ReplayError::EmptyWindow);
        }
        let config = self.config(tenant, id).await?.ok_or(ReplayError::UnknownConfiguration)?;
        if !config.enabled {
            return Err(ReplayError::ConfigurationDisabled(config.id.clone()));
        }
        let mut out = Recovered {
            configuration_id: config.id.clone(),
            since: req.since,
            until: req.until,
            failed_requeued: 0,
            disabled_period: None,
            truncated: false,
            max_deliveries: MAX_RECOVERED,
        };
        let mut left = MAX_RECOVERED;

        // Failed deliveries: replayed with their recorded decisions.
        let mut after = EventCursor::from(req.since);
        loop {
            let found = self.store.failed_deliveries(tenant, &config.id, after, req.until, CHUNK as i64).await?;
            let Some((last, _)) = found.last() else { break };
            after = *last;
            let full = found.len() == CHUNK;
            if found.len() > left {
                out.truncated = true;
            }
            let now = timestamp::now_ms();
            let rows: Vec<AddedDelivery> = found.iter().take(left).map(|(_, d)| reuse(d, now)).collect();
            left -= rows.len();
            out.failed_requeued += count_added(&self.store.add_deliveries(tenant, rows).await?);
            if out.truncated || !full {
                break;
            }
            if left == 0 {
                // Full and out of room: truncated if anything follows.
                out.truncated = !self.store.failed_deliveries(tenant, &config.id, after, req.until, 1).await?.is_empty();
                break;
            }
        }

        // Events that arrived while it was disabled: routed to it now. Not
        // before it existed: a configuration is created disabled, but the
        // events before it were never its own.
        if req.include_disabled_period {
            let mut late = LateRouted::default();
            let mut after = EventCursor::from(req.since.max(self.store.get_config(tenant, &config.id).await?.created_at));
            while !out.truncated {
                let events = self.store.events_without_delivery(tenant, &config.id, after, req.until, CHUNK as i64).await?;
                let Some(last) = events.last() else { break };
                after = EventCursor { received_at: last.received_at, seq: last.seq };
                let full = events.len() == CHUNK;
                let mut selected: Vec<EventRecord> =
                    events.into_iter().filter(|e| config.spec.selects(&e.event.event_type, &e.event.organization_unit)).collect();
                // Out of room, the scan goes on only to tell whether anything is left.
                if selected.len() > left {
                    selected.truncate(left);
                    out.truncated = true;
                }
                left -= selected.len();
                if selected.is_empty() {
                    if full {
                        continue;
                    }
                    break;
                }
                let rows: Vec<AddedDelivery> = self
                    .decide(config.clone(), selected)
                    .await?
                    .into_iter()
                    .map(|(seq, d)| AddedDelivery { event_seq: seq, delivery: d, replay_of: None })
                    .collect();
                let statuses: Vec<DeliveryStatus> = rows.iter().map(|r| r.delivery.status).collect();
                let added = self.store.add_deliveries(tenant, rows).await?;
                for (status, added) in statuses.into_iter().zip(added) {
                    match (added, status) {
                        (false, _) => {}
                        (true, DeliveryStatus::Filtered) => late.filtered += 1,
                        (true, DeliveryStatus::ScriptError) => late.script_error += 1,
                        (true, _) => late.pending += 1,
                    }
                }
                if !full {
                    break;
                }
            }
            out.disabled_period = Some(late);
        }
        tracing::info!(
            configuration = %config.id,
            failed_requeued = out.failed_requeued,
            truncated = out.truncated,
            "recovery queued"
        );
        Ok(out)
    }

    /// The tenant's configuration, or `None`.
    async fn config(&self, tenant: &TenantId, id: &ConfigId) -> Result<Option<Arc<ActiveConfig>>, StoreError> {
        match self.configs.get(tenant, id).await {
            Ok(c) => Ok(Some(c)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs the configuration's script on each event (on a blocking thread:
    /// a script may use its whole budget) and returns the delivery rows,
    /// due at once and not leased, so that the retry poller sends them.
    async fn decide(&self, config: Arc<ActiveConfig>, events: Vec<EventRecord>) -> Result<Vec<(i64, NewDelivery)>, StoreError> {
        let sandbox = self.sandbox.clone();
        tokio::task::spawn_blocking(move || {
            let now = timestamp::now_ms();
            events
                .into_iter()
                .map(|e| {
                    let mut d = decide(&sandbox, &config, &e.event, now, Pause::Defer);
                    d.lease_until = None;
                    (e.seq, d)
                })
                .collect()
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("script thread: {e}")))
    }
}

/// A replay of `of` with its recorded decision, due at `now`.
fn reuse(of: &DeliveryRecord, now: i64) -> AddedDelivery {
    AddedDelivery {
        event_seq: of.event_seq,
        delivery: NewDelivery {
            id: DeliveryId::generate(),
            config_id: of.configuration_id.clone(),
            // The decision is the one that version's script made.
            config_version: of.configuration_version,
            status: DeliveryStatus::Pending,
            reason: None,
            error_kind: None,
            script_logs: None,
            body: of.body.clone(),
            headers: of.headers.clone(),
            undecided: false,
            next_attempt_at: Some(now),
            lease_until: None,
            fuel_used: of.fuel_used,
        },
        replay_of: Some(of.id.clone()),
    }
}

fn count_added(added: &[bool]) -> u64 {
    added.iter().filter(|a| **a).count() as u64
}
