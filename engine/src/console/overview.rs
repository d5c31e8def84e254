//! The first page: per configuration, its state (enabled, disabled and
//! why, its receiver failing or down and probed), its deliveries and
//! success rate over the last hour and day, and its oldest pending
//! delivery; each read from `GET /v1/configurations/{id}/stats`.

use axum::response::Response;
use maud::{Markup, html};
use serde_json::Value;

use super::State;
use super::page::{segment, state, text, time};
use super::session::Session;
use crate::model::auth::Scope;

pub async fn show(axum::extract::State(console): State, session: Session) -> Response {
    let shell = session.shell("Overview");
    if !session.may(Scope::ConfigurationsRead) {
        return shell.render(html! { p { "This session may not read configurations." } });
    }
    let answer = match console.get(&session, "/v1/configurations?limit=100").await {
        Ok(answer) => answer,
        Err(refusal) => return shell.refusal(&refusal),
    };
    let configs = answer["items"].as_array().cloned().unwrap_or_default();
    let mut rows = Vec::with_capacity(configs.len());
    for c in &configs {
        let stats = console.get(&session, &format!("/v1/configurations/{}/stats", segment(text(&c["id"])))).await.unwrap_or(Value::Null);
        rows.push(row(c, &stats));
    }
    shell.render(html! {
        @if configs.is_empty() {
            p.muted { "No configurations yet." }
            @if session.may(Scope::ConfigurationsWrite) { p { a.button href="/console/configurations/new" { "New configuration" } } }
        } @else {
            table.list.overview {
                thead { tr {
                    th { "Configuration" } th { "State" } th { "Receiver" }
                    th { "Last hour" } th { "Last day" } th { "Oldest pending" }
                } }
                tbody { @for r in rows { (r) } }
            }
            @if answer["next_cursor"].is_string() { p { a href="/console/configurations" { "All configurations →" } } }
        }
        @if session.may(Scope::LogsRead) {
            p { a href="/console/events?status=failed" { "Events with failed deliveries" } " · "
                a href="/console/events?status=pending" { "Events still pending" } }
        }
    })
}

fn row(c: &Value, stats: &Value) -> Markup {
    let receiver = &stats["receiver"];
    html! {
        tr {
            td { a href={"/console/configurations/" (segment(text(&c["id"])))} { (text(&c["name"])) } br; span.url.muted { (text(&c["endpoint"])) } }
            td {
                (state(text(&c["status"])))
                @if let Some(reason) = c["disabled_reason"].as_str() { br; span.muted { (reason) } }
            }
            td {
                @match receiver["state"].as_str() {
                    Some("down") => { span.state.bad { "down, probing" } br; span.muted { (receiver["failures"]) " failures since " (time(&receiver["failing_since"])) } }
                    Some("failing") => { span.state.wait { "failing" } br; span.muted { (receiver["failures"]) " in a row" } }
                    Some(s) => { (state(s)) }
                    None => { span.muted { "—" } }
                }
            }
            td { (window(&stats["last_hour"])) }
            td { (window(&stats["last_day"])) }
            td { (time(&stats["oldest_pending_at"])) }
        }
    }
}

/// A window's deliveries and success rate.
fn window(w: &Value) -> Markup {
    let rate = w["success_rate"].as_f64().map(|r| format!("{:.1} % succeeded", r * 100.0));
    html! {
        @if w.is_null() { span.muted { "—" } } @else {
            (w["total"]) @if w["capped"].as_bool() == Some(true) { "+" } " deliveries"
            @if let Some(rate) = rate { br; span.muted { (rate) } }
            @let pending = w["by_status"]["pending"].as_i64().unwrap_or(0);
            @if pending > 0 { br; span.muted { (pending) " pending" } }
        }
    }
}
