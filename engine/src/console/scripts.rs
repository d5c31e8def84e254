//! Script pages: upload (a new version of its name), the versions of each
//! name with the configurations that run them, and a script run on an
//! event, pasted or stored, showing its decision, log lines and fuel.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, Path};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::client::{Call, Payload};
use super::page::{self, csrf, json as json_block, segment, state, text, time};
use super::session::{Form, Posted, Session};
use super::{Console, State};
use crate::model::auth::Scope;

pub fn router(max_script_bytes: usize) -> Router<Arc<Console>> {
    Router::new()
        .route("/console/scripts", get(list))
        .route("/console/scripts/upload", post(upload).layer(DefaultBodyLimit::max(max_script_bytes + (64 << 10))))
        .route("/console/scripts/{id}", get(show))
        .route("/console/scripts/{id}/run", post(run))
}

/// Which configurations run each script id: `(script id, configuration
/// id, name)`, from the first 500 configurations.
async fn users(console: &Console, session: &Session) -> Vec<(String, String, String)> {
    let Ok(configs) = console.get(session, "/v1/configurations?limit=500").await else { return Vec::new() };
    configs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let script = c["script"]["id"].as_str()?;
            Some((script.to_owned(), text(&c["id"]).to_owned(), text(&c["name"]).to_owned()))
        })
        .collect()
}

fn used_by(users: &[(String, String, String)], script: &str) -> Markup {
    let using: Vec<_> = users.iter().filter(|(s, _, _)| s == script).collect();
    html! {
        @if using.is_empty() { span.muted { "no configuration" } }
        @for (i, (_, id, name)) in using.iter().enumerate() {
            @if i > 0 { ", " }
            a href={"/console/configurations/" (segment(id))} { (name) }
        }
    }
}

#[derive(Deserialize)]
struct ListQuery {
    cursor: Option<String>,
}

async fn list(
    axum::extract::State(console): State,
    session: Session,
    axum::extract::Query(q): axum::extract::Query<ListQuery>,
) -> Response {
    let shell = session.shell("Scripts");
    let mut path = "/v1/scripts?limit=100".to_owned();
    if let Some(cursor) = &q.cursor {
        path += &format!("&cursor={}", segment(cursor));
    }
    let answer = match console.get(&session, &path).await {
        Ok(answer) => answer,
        Err(refusal) => return shell.refusal(&refusal),
    };
    let users = users(&console, &session).await;
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    shell.render(html! {
        @if session.may(Scope::ScriptsWrite) {
            section {
                h2 { "Upload" }
                p.muted { "A component built with the SDK (" code { "sluice script build" } "). Under a name already used, it becomes that name's next version; configurations keep the version they name until they are moved." }
                form method="post" action="/console/scripts/upload" enctype="multipart/form-data" {
                    (csrf(&session))
                    label { "Name " input type="text" name="name" required placeholder="paid-orders"; }
                    label { "Component (.wasm) " input type="file" name="file" accept=".wasm,application/wasm" required; }
                    button type="submit" { "Upload" }
                }
            }
        }
        @if items.is_empty() { p.muted { "No scripts yet." } } @else {
            table.list {
                thead { tr { th { "Name" } th { "Version" } th { "Id" } th { "Size" } th { "WIT" } th { "Uploaded" } th { "Used by" } } }
                tbody {
                    @for s in &items {
                        tr {
                            td { a href={"/console/scripts/" (segment(text(&s["id"])))} { (text(&s["name"])) } }
                            td { (s["version"]) }
                            td { code { (text(&s["id"])) } }
                            td { (s["size"]) " B" }
                            td { (text(&s["wit_version"])) }
                            td { (time(&s["created_at"])) }
                            td { (used_by(&users, text(&s["id"]))) }
                        }
                    }
                }
            }
        }
        (page::next_page(&answer, "/console/scripts", &[]))
    })
}

/// A sample event to run a script on, as the run form shows it.
const SAMPLE: &str = r#"{
  "type": "order.paid",
  "organization_unit": "shop/eu",
  "occurred_at": "2026-12-01T10:00:00Z",
  "payload": {"id": "o-1", "amount": 150}
}"#;

async fn show(axum::extract::State(console): State, session: Session, Path(id): Path<String>) -> Response {
    render_script(&console, &session, &id, SAMPLE, "", "", None).await
}

/// A script's page, with the run form (and a run's result).
async fn render_script(
    console: &Console,
    session: &Session,
    id: &str,
    event: &str,
    event_id: &str,
    params: &str,
    ran: Option<Result<Value, super::client::Refusal>>,
) -> Response {
    let shell = session.shell("Script");
    let script = match console.get(session, &format!("/v1/scripts/{}", segment(id))).await {
        Ok(script) => script,
        Err(refusal) => return shell.refusal(&refusal),
    };
    let versions =
        console.get(session, &format!("/v1/scripts?limit=100&name={}", segment(text(&script["name"])))).await.unwrap_or_default();
    let users = users(console, session).await;
    let title = format!("{} v{}", text(&script["name"]), script["version"]);
    session.shell(&title).render(html! {
        dl.fields {
            dt { "Id" } dd { code { (text(&script["id"])) } }
            dt { "sha256" } dd { code { (text(&script["sha256"])) } }
            dt { "Size" } dd { (script["size"]) " bytes" }
            dt { "WIT world" } dd { (text(&script["wit_version"])) }
            dt { "Uploaded" } dd { (time(&script["created_at"])) }
            dt { "Used by" } dd { (used_by(&users, text(&script["id"]))) }
        }
        h2 { "Versions of " (text(&script["name"])) }
        table.list {
            thead { tr { th { "Version" } th { "Id" } th { "Uploaded" } th { "Used by" } } }
            tbody {
                @for v in versions["items"].as_array().into_iter().flatten() {
                    tr {
                        td { a href={"/console/scripts/" (segment(text(&v["id"])))} { "v" (v["version"]) } }
                        td { code { (text(&v["id"])) } }
                        td { (time(&v["created_at"])) }
                        td { (used_by(&users, text(&v["id"]))) }
                    }
                }
            }
        }
        @if session.may(Scope::ScriptsWrite) {
            section {
                h2 { "Run it on an event" }
                form method="post" action={"/console/scripts/" (segment(id)) "/run"} {
                    (csrf(session))
                    label { "A stored event's id (leave empty to use the event below)" input type="text" name="event_id" value=(event_id); }
                    label { "Event (as posted to /v1/events)" textarea name="event" rows="8" { (event) } }
                    label { "Parameters (`name=value`, one a line)" textarea name="params" rows="2" { (params) } }
                    button type="submit" { "Run" }
                }
                @if let Some(ran) = &ran { (outcome(ran)) }
            }
        }
    })
}

fn outcome(ran: &Result<Value, super::client::Refusal>) -> Markup {
    match ran {
        Err(refusal) => page::refusal_box(refusal),
        Ok(run) => html! {
            div.run {
                @if let Some(decision) = run.get("decision") {
                    p { "Decision: " (state(text(&decision["action"])))
                        @if let Some(reason) = decision["reason"].as_str() { " " (reason) } }
                    @if !decision["body"].is_null() { h4 { "Body it would send" } (json_block(&decision["body"])) }
                    @if decision["headers"].as_array().is_some_and(|h| !h.is_empty()) { h4 { "Headers it adds" } (json_block(&decision["headers"])) }
                }
                @if let Some(error) = run.get("error") {
                    p { "Error: " (state("error")) " " code { (text(&error["kind"])) } " " (text(&error["message"])) }
                    (json_block(error))
                }
                p.muted { "Fuel used: " (run["fuel_used"]) }
                h4 { "Log lines" }
                @if run["logs"].as_array().is_none_or(Vec::is_empty) { p.muted { "none" } } @else {
                    table.list {
                        tbody {
                            @for line in run["logs"].as_array().into_iter().flatten() {
                                tr { td { (text(&line["level"])) } td { pre.body { (text(&line["message"])) } } }
                            }
                        }
                    }
                }
            }
        },
    }
}

/// A stored event in the shape it is posted in (its payload's text kept).
#[derive(Deserialize, Serialize)]
struct AsPosted<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    organization_unit: &'a str,
    occurred_at: &'a str,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    source: Option<&'a RawValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    related: Vec<&'a str>,
    #[serde(borrow)]
    payload: &'a RawValue,
}

async fn run(axum::extract::State(console): State, Path(id): Path<String>, Posted { session, form }: Posted) -> Response {
    let (event_id, params) = (form.get("event_id"), form.raw("params"));
    let mut event = form.raw("event").to_owned();
    if !event_id.is_empty() {
        let call = console.call(&session, Method::GET, format!("/v1/events/{}", segment(event_id)), None);
        match console.api.send_raw(call).await {
            Ok(raw) => match serde_json::from_slice::<AsPosted>(&raw).ok().and_then(|p| serde_json::to_string_pretty(&p).ok()) {
                Some(posted) => event = posted,
                None => event = String::new(),
            },
            Err(refusal) => return render_script(&console, &session, &id, &event, event_id, params, Some(Err(refusal))).await,
        }
    }
    let mut map = serde_json::Map::new();
    for line in params.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        map.insert(k.trim().to_owned(), v.trim().into());
    }
    // The event's text goes to the API as typed, inside the request.
    let request =
        format!(r#"{{"event": {}, "params": {}}}"#, if event.trim().is_empty() { "null" } else { event.as_str() }, Value::Object(map));
    let call = Call {
        body: Payload::Raw { bytes: request.into_bytes(), content_type: "application/json" },
        ..console.call(&session, Method::POST, format!("/v1/scripts/{}/test", segment(&id)), None)
    };
    let ran = console.api.send(call).await;
    render_script(&console, &session, &id, &event, event_id, params, Some(ran)).await
}

async fn upload(axum::extract::State(console): State, session: Session, headers: HeaderMap, mut multipart: Multipart) -> Response {
    let (mut token, mut name, mut file) = (String::new(), String::new(), Vec::new());
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let field_name = field.name().unwrap_or_default().to_owned();
                let Ok(bytes) = field.bytes().await else { break };
                match field_name.as_str() {
                    "_csrf" => token = String::from_utf8_lossy(&bytes).into_owned(),
                    "name" => name = String::from_utf8_lossy(&bytes).trim().to_owned(),
                    "file" => file = bytes.to_vec(),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    page::bare("Upload failed", html! { p { "The upload could not be read: " (e.to_string()) } }),
                )
                    .into_response();
            }
        }
    }
    if let Err(refused) = Form::check(&headers, &token, &session) {
        return refused.into_response();
    }
    let call = Call {
        body: Payload::Raw { bytes: file, content_type: "application/wasm" },
        ..console.call(&session, Method::POST, format!("/v1/scripts?name={}", segment(&name)), None)
    };
    match console.api.send(call).await {
        Ok(script) => Redirect::to(&format!("/console/scripts/{}", segment(text(&script["id"])))).into_response(),
        Err(refusal) => session.shell("Scripts").refusal(&refusal),
    }
}
