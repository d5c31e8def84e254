//! Previewing a candidate before switching a configuration over: pick a
//! script version and/or parameters, run `POST /v1/configurations/{id}/
//! preview` over the last events it selected, read the differences event
//! by event, then switch (an `If-Match`-guarded update quoting the version
//! the preview ran against: a change made meanwhile refuses the switch).

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde_json::{Map, Value, json};

use super::configurations::Draft;
use super::page::{self, csrf, json as json_block, segment, state, text};
use super::session::{Posted, Session};
use super::{Console, State};
use crate::model::auth::Scope;

pub fn router() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/configurations/{id}/preview", get(form_page).post(run))
        .route("/console/configurations/{id}/switch", post(switch))
}

/// `name=value` lines as a JSON object (the rest of a line after the
/// first `=` is the value).
fn params(raw: &str) -> Map<String, Value> {
    raw.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.split_once('=').unwrap_or((l, "")))
        .map(|(k, v)| (k.trim().to_owned(), Value::from(v.trim())))
        .collect()
}

fn params_text(v: &Value) -> String {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

async fn form_page(axum::extract::State(console): State, session: Session, Path(id): Path<String>) -> Response {
    let c = match console.get(&session, &format!("/v1/configurations/{}", segment(&id))).await {
        Ok(c) => c,
        Err(refusal) => return session.shell("Preview").refusal(&refusal),
    };
    let candidate = (text(&c["script"]["id"]).to_owned(), params_text(&c["script"]["params"]), "100".to_owned());
    page_with(&console, &session, &id, &c, candidate, None).await
}

/// The preview form, and a preview's answer under it.
async fn page_with(
    console: &Console,
    session: &Session,
    id: &str,
    c: &Value,
    (script, params, last): (String, String, String),
    lines: Option<Result<Vec<Value>, super::client::Refusal>>,
) -> Response {
    let scripts = console.get(session, "/v1/scripts?limit=200").await.unwrap_or_default();
    let base = format!("/console/configurations/{}", segment(id));
    let shell = session.shell(&format!("Preview a change to {}", text(&c["name"])));
    shell.render(html! {
        p.muted { "Runs the configured script and the candidate on stored events the configuration selected; sends nothing and stores nothing." }
        form method="post" action={(base) "/preview"} {
            (csrf(session))
            input type="hidden" name="version" value=(c["version"]);
            label { "Candidate script"
                select name="script_id" {
                    @for s in scripts["items"].as_array().into_iter().flatten() {
                        option value=(text(&s["id"])) selected[text(&s["id"]) == script] {
                            (text(&s["name"])) " v" (s["version"]) " — " (text(&s["id"]))
                            @if text(&s["id"]) == text(&c["script"]["id"]) { " (configured)" }
                        }
                    }
                }
            }
            label { "Candidate parameters (`name=value`, one a line)" textarea name="params" rows="3" { (params) } }
            label { "Over the last N events it selected" input type="text" inputmode="numeric" name="last" value=(last); }
            button type="submit" { "Preview" }
        }
        @match &lines {
            None => {}
            Some(Err(refusal)) => (page::refusal_box(refusal)),
            Some(Ok(lines)) => (report(session, &base, c, &script, &params, lines)),
        }
        p { a href=(base) { "← Back to the configuration" } }
    })
}

/// The summary, the events whose decision or request changes, and the switch.
fn report(session: &Session, base: &str, c: &Value, script: &str, params: &str, lines: &[Value]) -> Markup {
    let summary = lines.iter().find_map(|l| l.get("summary"));
    let failure = lines.iter().find_map(|l| l.get("error"));
    let changed: Vec<&Value> = lines.iter().filter(|l| l.get("event_id").is_some() && l["change"] != "unchanged").collect();
    html! {
        @if let Some(e) = failure { div.error role="alert" { (text(&e["message"])) " " code { (text(&e["code"])) } } }
        @if let Some(s) = summary {
            section.summary {
                h2 { "Summary" }
                p {
                    (s["events"]) " events: " (s["unchanged"]) " unchanged, "
                    (s["newly_delivered"]) " newly delivered, " (s["newly_skipped"]) " newly skipped, "
                    (s["changed_request"]) " with a changed request, " (s["new_errors"]) " new errors"
                    @if s["not_stored"].as_u64().unwrap_or(0) > 0 { ", " (s["not_stored"]) " no longer stored" }
                    "."
                }
                p.muted { "Fuel: " (s["current_fuel"]) " now, " (s["candidate_fuel"]) " with the candidate."
                    @if s["truncated"].as_bool() == Some(true) { " The window held more events than a preview runs on." } }
            }
        }
        @if !changed.is_empty() {
            table.list.preview {
                thead { tr { th { "Event" } th { "Change" } th { "Now" } th { "Candidate" } th { "Differences" } } }
                tbody {
                    @for l in &changed {
                        tr {
                            td { a href={"/console/events/" (segment(text(&l["event_id"])))} { (text(&l["event_id"])) } }
                            td { (state(text(&l["change"]))) }
                            td { (verdict(&l["current"])) }
                            td { (verdict(&l["candidate"])) }
                            td {
                                @if let Some(changes) = l["body_changes"].as_array() { (json_block(&Value::from(changes.clone()))) }
                                @if !l["headers"].is_null() { (json_block(&l["headers"])) }
                                @if let Some(m) = l["message"].as_str() { span.muted { (m) } }
                            }
                        }
                    }
                }
            }
        }
        @if summary.is_some() && session.may(Scope::ConfigurationsWrite) {
            form method="post" action={(base) "/switch"} data-confirm="Switch the configuration to this candidate?" {
                (csrf(session))
                input type="hidden" name="version" value=(c["version"]);
                input type="hidden" name="script_id" value=(script);
                input type="hidden" name="params" value=(params);
                button type="submit" { "Switch the configuration to this candidate" }
            }
        }
    }
}

fn verdict(v: &Value) -> Markup {
    html! {
        @if v.is_null() { span.muted { "—" } } @else {
            (state(text(&v["action"])))
            @if let Some(r) = v["reason"].as_str() { " " (r) }
            @if let Some(k) = v["error_kind"].as_str() { " " code { (k) } }
        }
    }
}

async fn run(axum::extract::State(console): State, Path(id): Path<String>, Posted { session, form }: Posted) -> Response {
    let c = match console.get(&session, &format!("/v1/configurations/{}", segment(&id))).await {
        Ok(c) => c,
        Err(refusal) => return session.shell("Preview").refusal(&refusal),
    };
    let (script, params_raw, last) = (form.get("script_id").to_owned(), form.raw("params").to_owned(), form.get("last").to_owned());
    let last_n = last.parse::<u64>().unwrap_or(100);
    let request = json!({
        "candidate": {"script_id": (!script.is_empty()).then_some(&script), "params": params(&params_raw)},
        "window": {"last": last_n},
    });
    let call = console.call(&session, Method::POST, format!("/v1/configurations/{}/preview", segment(&id)), Some(request));
    let lines = console.api.send_lines(call).await;
    page_with(&console, &session, &id, &c, (script, params_raw, last), Some(lines)).await
}

async fn switch(axum::extract::State(console): State, Path(id): Path<String>, Posted { session, form }: Posted) -> Response {
    let path = format!("/v1/configurations/{}", segment(&id));
    let c = match console.get(&session, &path).await {
        Ok(c) => c,
        Err(refusal) => return session.shell("Switch").refusal(&refusal),
    };
    let mut draft = Draft::from_view(&c);
    draft.script_id = form.get("script_id").to_owned();
    draft.script_params = form.raw("params").to_owned();
    let result = match draft.to_input() {
        Ok(input) => {
            let mut call = console.call(&session, Method::PUT, path, Some(input));
            // The version the preview ran against: a change since refuses.
            call.if_match = form.get("version").parse().ok();
            console.api.send(call).await
        }
        Err(refusal) => Err(refusal),
    };
    match result {
        Ok(_) => Redirect::to(&format!("/console/configurations/{}", segment(&id))).into_response(),
        Err(e) if e.code == "stale_version" => session.shell("Not switched").render_with(
            StatusCode::CONFLICT,
            html! {
                div.error role="alert" {
                    strong { "The configuration changed after the preview ran; nothing was switched." }
                    p { (e.message) }
                }
                p { a href={"/console/configurations/" (segment(&id)) "/preview"} { "Preview again against the current version" } }
            },
        ),
        Err(e) => session.shell("Not switched").refusal(&e),
    }
}
