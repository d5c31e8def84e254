//! Operational notices: a tenant's own trouble told to the tenant as events
//! of reserved `sluice.*` types in its own stream (a configuration
//! disabled, a delivery that exhausted its attempts, a receiver taken to be
//! down, its monthly quota 80 % or wholly used, a client certificate near
//! its expiry). A configuration that selects them delivers them like any event:
//! signed, retried, logged, its script deciding.
//!
//! This module owns the notices' types, ids and payloads. It must never
//! raise a notice about the delivery of a notice (a failing receiver of
//! notices would otherwise feed itself), and never block its caller: when
//! the service is behind, a notice is dropped with a warning.
//!
//! A notice's id is made from what it is about (the delivery, the streak's
//! start), so that two nodes seeing the same trouble store it once.

use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::model::event::{Event, EventId, EventType, OrgUnit, RESERVED_TYPE_PREFIX};
use crate::model::ids::{ConfigId, DeliveryId, TenantId};
use crate::model::timestamp::rfc3339;

/// A notice on its way to be stored in its tenant's stream.
#[derive(Debug)]
pub struct Notice {
    pub tenant: TenantId,
    pub event: Event,
}

/// Raises notices; the service stores and routes them.
#[derive(Debug, Clone)]
pub struct Notices(mpsc::Sender<Notice>);

/// Notices waiting to be stored.
const BACKLOG: usize = 1024;

impl Notices {
    pub fn channel() -> (Notices, mpsc::Receiver<Notice>) {
        let (tx, rx) = mpsc::channel(BACKLOG);
        (Notices(tx), rx)
    }

    /// A configuration was disabled by sluice (failing too long, `410 Gone`).
    pub fn configuration_disabled(&self, tenant: &TenantId, config: &ConfigId, name: &str, reason: &str, at: i64) {
        let payload = json!({"configuration_id": config, "configuration_name": name, "reason": reason, "disabled_at": rfc3339::format(at)});
        self.raise(tenant, format!("ntc_disabled_{}_{at}", config.as_str()), "sluice.configuration.disabled", payload);
    }

    /// A delivery failed its last attempt: no more are made unless replayed.
    pub fn delivery_failed(&self, tenant: &TenantId, failed: &FailedDelivery<'_>) {
        if failed.event_type.starts_with(RESERVED_TYPE_PREFIX) {
            return; // a notice about a notice: never
        }
        let payload = json!({
            "delivery_id": failed.delivery,
            "event_id": failed.event_id,
            "event_type": failed.event_type,
            "configuration_id": failed.config,
            "attempts": failed.attempts,
            "response_status": failed.status,
            "error": failed.error,
        });
        self.raise(tenant, format!("ntc_failed_{}", failed.delivery.as_str()), "sluice.delivery.failed", payload);
    }

    /// A configuration's receiver failed `failures` attempts in a row since
    /// `since` (Unix ms): its deliveries are held and it is probed alone.
    pub fn receiver_down(&self, tenant: &TenantId, config: &ConfigId, failures: i64, since: i64) {
        let payload = json!({"configuration_id": config, "failed_attempts": failures, "failing_since": rfc3339::format(since)});
        self.raise(tenant, format!("ntc_down_{}_{since}", config.as_str()), "sluice.receiver.down", payload);
    }

    /// The tenant's events this month reached `percent` of its monthly
    /// quota (100: further events are refused until the month ends).
    pub fn quota_reached(&self, tenant: &TenantId, month: &str, percent: u8, used: i64, quota: i64) {
        let payload = json!({"month": month, "percent": percent, "events": used, "monthly_quota": quota});
        self.raise(tenant, format!("ntc_quota_{month}_{percent}"), "sluice.quota.reached", payload);
    }

    /// A configuration's client certificate expires within 30 days (or has).
    pub fn certificate_expiring(&self, tenant: &TenantId, config: &ConfigId, name: &str, expires_at: OffsetDateTime) {
        let at = expires_at.unix_timestamp();
        let shown = rfc3339::format(at.saturating_mul(1000));
        let payload = json!({"configuration_id": config, "configuration_name": name, "expires_at": shown});
        self.raise(tenant, format!("ntc_cert_{}_{at}", config.as_str()), "sluice.certificate.expiring", payload);
    }

    fn raise(&self, tenant: &TenantId, id: String, event_type: &str, payload: Value) {
        let (Ok(id), Ok(event_type), Ok(unit)) = (EventId::parse(&id), EventType::parse(event_type), OrgUnit::parse("")) else {
            tracing::error!(%tenant, id, event_type, "a notice could not be made");
            return;
        };
        let Ok(payload) = serde_json::value::to_raw_value(&payload) else { return };
        let event = Event {
            id,
            event_type,
            organization_unit: unit,
            occurred_at: OffsetDateTime::now_utc(),
            source: None,
            related: Vec::new(),
            payload,
        };
        if let Err(e) = self.0.try_send(Notice { tenant: tenant.clone(), event }) {
            tracing::warn!(%tenant, event_type = %e.into_inner().event.event_type.as_str(), "too many notices waiting; one is dropped");
        }
    }
}

/// What a failed delivery's notice tells.
pub struct FailedDelivery<'a> {
    pub delivery: &'a DeliveryId,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub config: &'a ConfigId,
    pub attempts: u32,
    pub status: Option<u16>,
    pub error: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notices_carry_ids_made_from_their_subject_and_none_is_raised_about_a_notice() {
        let (notices, mut rx) = Notices::channel();
        let tenant = TenantId::generate();
        let config = ConfigId::generate();
        let delivery = DeliveryId::generate();
        let failed = |event_type| FailedDelivery {
            delivery: &delivery,
            event_id: "evt_1",
            event_type,
            config: &config,
            attempts: 3,
            status: Some(500),
            error: Some("answered 500"),
        };
        notices.delivery_failed(&tenant, &failed("sluice.receiver.down"));
        notices.delivery_failed(&tenant, &failed("order.paid"));
        notices.receiver_down(&tenant, &config, 20, 1_700_000_000_000);
        let first = rx.recv().await.expect("a notice");
        assert_eq!(first.event.event_type.as_str(), "sluice.delivery.failed");
        assert_eq!(first.event.id.as_str(), format!("ntc_failed_{}", delivery.as_str()));
        let second = rx.recv().await.expect("a notice");
        assert_eq!(second.event.id.as_str(), format!("ntc_down_{}_1700000000000", config.as_str()));
        assert!(rx.try_recv().is_err(), "nothing about the notice's own delivery");
    }
}
