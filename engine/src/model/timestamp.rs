//! Time as sluice keeps it: Unix milliseconds (UTC) everywhere inside,
//! RFC 3339 wherever a time is shown.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Timestamps are stored as Unix milliseconds and shown as RFC 3339.
pub mod rfc3339 {
    /// `2026-11-23T09:58:29.631Z`; milliseconds outside the calendar's range
    /// (never written by sluice) show as the number itself.
    pub fn format(ms: i64) -> String {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| ms.to_string())
    }
}
