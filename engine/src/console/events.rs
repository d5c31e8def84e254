//! Event pages: search by type, organization unit, state and time; one
//! event with its deliveries, their attempts (request and response, as the
//! API redacts them), script logs and decisions; replay. And a
//! configuration's deliveries.
//!
//! Payloads, headers and bodies are shown as text: whatever a service or a
//! receiver sent, escaped.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::page::{self, action_button, json as json_block, segment, state, text, time};
use super::session::{Posted, Session};
use super::{Console, State};
use crate::model::auth::Scope;

pub fn router() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/events", get(search))
        .route("/console/events/{id}", get(show))
        .route("/console/events/{id}/replay", post(replay))
        .route("/console/deliveries", get(deliveries))
}

#[derive(Deserialize, Default)]
struct Search {
    #[serde(rename = "type", default)]
    event_type: String,
    #[serde(default)]
    organization_unit: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    configuration_id: String,
    cursor: Option<String>,
}

impl Search {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("type", self.event_type.clone()),
            ("organization_unit", self.organization_unit.clone()),
            ("status", self.status.clone()),
            ("since", self.since.clone()),
            ("until", self.until.clone()),
            ("configuration_id", self.configuration_id.clone()),
        ]
    }

    /// The API's query string for these filters.
    fn query(&self, limit: u32) -> String {
        let mut q = format!("limit={limit}");
        for (k, v) in self.pairs().into_iter().filter(|(_, v)| !v.trim().is_empty()) {
            q += &format!("&{k}={}", segment(v.trim()));
        }
        if let Some(cursor) = &self.cursor {
            q += &format!("&cursor={}", segment(cursor));
        }
        q
    }
}

async fn search(axum::extract::State(console): State, session: Session, Query(q): Query<Search>) -> Response {
    let shell = session.shell("Events");
    let mut filter = Search { configuration_id: String::new(), ..q };
    let answer = console.get(&session, &format!("/v1/events?{}", filter.query(50))).await;
    filter.cursor = None;
    let body = html! {
        form.filters method="get" action="/console/events" {
            label { "Type " input type="text" name="type" value=(filter.event_type) placeholder="order.paid"; }
            label { "Organization unit " input type="text" name="organization_unit" value=(filter.organization_unit); }
            label { "State "
                select name="status" {
                    @for s in ["", "pending", "done", "failed"] {
                        option value=(s) selected[filter.status == s] { @if s.is_empty() { "any" } @else { (s) } }
                    }
                }
            }
            label { "Since " input type="text" name="since" value=(filter.since) placeholder="2026-12-01T00:00:00Z"; }
            label { "Until " input type="text" name="until" value=(filter.until); }
            button type="submit" { "Search" }
        }
        @match &answer {
            Err(refusal) => (page::refusal_box(refusal)),
            Ok(answer) => {
                @let items = answer["items"].as_array().cloned().unwrap_or_default();
                @if items.is_empty() { p.muted { "No events match." } } @else {
                    table.list {
                        thead { tr { th { "Event" } th { "Type" } th { "Organization unit" } th { "Received" } th { "Routed" } } }
                        tbody {
                            @for e in &items {
                                tr {
                                    td { a href={"/console/events/" (segment(text(&e["id"])))} { (text(&e["id"])) } }
                                    td { (text(&e["type"])) }
                                    td { (text(&e["organization_unit"])) }
                                    td { (time(&e["received_at"])) }
                                    td { @if e["routed"].as_bool() == Some(true) { "yes" } @else { (state("pending")) } }
                                }
                            }
                        }
                    }
                }
                (page::next_page(answer, "/console/events", &filter.pairs()))
            }
        }
    };
    shell.render(body)
}

async fn show(axum::extract::State(console): State, session: Session, Path(id): Path<String>) -> Response {
    let shell = session.shell("Event");
    let call = console.call(&session, Method::GET, format!("/v1/events/{}", segment(&id)), None);
    let raw = match console.api.send_raw(call).await {
        Ok(raw) => raw,
        Err(refusal) => return shell.refusal(&refusal),
    };
    let event: Value = serde_json::from_slice(&raw).unwrap_or_default();
    // The payload as the service posted it (the API keeps its text).
    let payload = serde_json::from_slice::<AsPosted>(&raw).map(|p| p.payload.get().to_owned()).unwrap_or_default();
    let deliveries = event["deliveries"].as_array().cloned().unwrap_or_default();
    let mut sections = Vec::with_capacity(deliveries.len());
    for d in &deliveries {
        let attempts = console
            .get(&session, &format!("/v1/attempts?limit=100&delivery_id={}", segment(text(&d["id"]))))
            .await
            .map(|a| a["items"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default();
        let mut detailed = Vec::with_capacity(attempts.len());
        for a in &attempts {
            detailed.push(console.get(&session, &format!("/v1/attempts/{}", segment(text(&a["id"])))).await.unwrap_or_else(|_| a.clone()));
        }
        sections.push(delivery(d, &detailed));
    }
    let replay = format!("/console/events/{}/replay", segment(&id));
    session.shell(&format!("Event {}", text(&event["id"]))).render(html! {
        dl.fields {
            dt { "Type" } dd { (text(&event["type"])) }
            dt { "Organization unit" } dd { (text(&event["organization_unit"])) }
            dt { "Occurred" } dd { (time(&event["occurred_at"])) }
            dt { "Received" } dd { (time(&event["received_at"])) }
            @if !event["source"].is_null() { dt { "Source" } dd { (json_block(&event["source"])) } }
            @if event["related"].as_array().is_some_and(|r| !r.is_empty()) { dt { "Related" } dd { (json_block(&event["related"])) } }
        }
        h2 { "Payload" }
        pre.json { (payload) }
        @if session.may(Scope::ConfigurationsWrite) {
            div.actions { (action_button(&session, &replay, "Replay to every configuration", Some("Send this event again?"))) }
        }
        h2 { "Deliveries" }
        @if deliveries.is_empty() { p.muted { @if event["routed"].as_bool() == Some(true) { "No configuration selected this event." } @else { "Not routed yet." } } }
        @for s in sections { (s) }
    })
}

/// The part of an event's answer shown byte for byte.
#[derive(Deserialize)]
struct AsPosted<'a> {
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
}

/// One delivery: its decision, script logs and attempts.
fn delivery(d: &Value, attempts: &[Value]) -> Markup {
    html! {
        section.delivery id=(text(&d["id"])) {
            h3 {
                (state(text(&d["status"]))) " to "
                a href={"/console/configurations/" (segment(text(&d["configuration_id"])))} { code { (text(&d["configuration_id"])) } }
                " · " span.muted { (d["attempts"]) " attempt(s)" }
            }
            p.muted {
                code { (text(&d["id"])) } " · created " (time(&d["created_at"]))
                @if let Some(next) = d["next_attempt_at"].as_str() { " · next attempt " (time(&json!(next))) }
                @if let Some(of) = d["replay_of"].as_str() { " · replays " code { (of) } }
            }
            @if let Some(reason) = d["reason"].as_str() { p { "Reason: " (reason) } }
            @if let Some(kind) = d["error_kind"].as_str() { p { "Script error: " code { (kind) } } }
            @if d["script_logs"].as_array().is_some_and(|l| !l.is_empty()) {
                details { summary { "Script log" } (json_block(&d["script_logs"])) }
            }
            @for a in attempts {
                details.attempt {
                    summary {
                        "Attempt " (a["number"]) ": " (state(text(&a["outcome"])))
                        " " (a["response_status"].as_i64().map(|s| s.to_string()).unwrap_or_else(|| "no answer".into()))
                        " in " (a["duration_ms"]) " ms · " (time(&a["started_at"]))
                        @if let Some(e) = a["error"].as_str() { " · " span.error-text { (e) } }
                    }
                    p { (text(&a["method"])) " " span.url { (text(&a["uri"])) } }
                    div.pair {
                        div { h4 { "Request headers" } (json_block(&a["request_headers"]))
                              h4 { "Request body" } pre.body { (text(&a["request_body"])) } }
                        div { h4 { "Response headers" } (json_block(&a["response_headers"]))
                              h4 { "Response body" } pre.body { (text(&a["response_body"])) } }
                    }
                }
            }
        }
    }
}

async fn replay(axum::extract::State(console): State, Path(id): Path<String>, Posted { session, form }: Posted) -> Response {
    let only = form.get("configuration_id");
    let body = (!only.is_empty()).then(|| json!({"configuration_id": only}));
    let path = format!("/v1/events/{}/replay", segment(&id));
    match console.api.send(console.call(&session, Method::POST, path, body)).await {
        Ok(_) => Redirect::to(&format!("/console/events/{}", segment(&id))).into_response(),
        Err(refusal) => session.shell("Replay").refusal(&refusal),
    }
}

async fn deliveries(axum::extract::State(console): State, session: Session, Query(q): Query<Search>) -> Response {
    let shell = session.shell("Deliveries");
    let filter = Search { event_type: String::new(), organization_unit: String::new(), ..q };
    let answer = match console.get(&session, &format!("/v1/deliveries?{}", filter.query(50))).await {
        Ok(answer) => answer,
        Err(refusal) => return shell.refusal(&refusal),
    };
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    shell.render(html! {
        form.filters method="get" action="/console/deliveries" {
            input type="hidden" name="configuration_id" value=(filter.configuration_id);
            label { "State "
                select name="status" {
                    @for s in ["", "pending", "filtered", "script_error", "succeeded", "failed"] {
                        option value=(s) selected[filter.status == s] { @if s.is_empty() { "any" } @else { (s) } }
                    }
                }
            }
            label { "Since " input type="text" name="since" value=(filter.since); }
            label { "Until " input type="text" name="until" value=(filter.until); }
            button type="submit" { "Filter" }
        }
        @if items.is_empty() { p.muted { "No deliveries match." } } @else {
            table.list {
                thead { tr { th { "Event" } th { "State" } th { "Attempts" } th { "Created" } th { "Next attempt" } } }
                tbody {
                    @for d in &items {
                        tr {
                            td { a href={"/console/events/" (segment(text(&d["event_id"]))) "#" (text(&d["id"]))} { (text(&d["event_id"])) } }
                            td { (state(text(&d["status"]))) }
                            td { (d["attempts"]) }
                            td { (time(&d["created_at"])) }
                            td { (time(&d["next_attempt_at"])) }
                        }
                    }
                }
            }
        }
        (page::next_page(&answer, "/console/deliveries", &filter.pairs()))
    })
}
