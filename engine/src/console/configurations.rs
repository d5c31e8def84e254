//! Configuration pages: the list, one configuration with its actions
//! (enable, disable, test send, rotate the secret, recover failures,
//! delete), and the form that creates and edits every field the API has.
//!
//! The form is a view of `ConfigurationInput`: it turns fields into the
//! API's JSON and shows the API's refusal at the field it names. An edit
//! quotes the version it was read at (`If-Match`): a change made meanwhile
//! is explained, never overwritten.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::client::{Call, Payload, Refusal};
use super::page::{self, action_button, csrf, json as json_block, segment, state, text, time};
use super::session::{Form, Posted, Session};
use super::{Console, State};
use crate::model::auth::Scope;

pub fn router() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/configurations", get(list))
        .route("/console/configurations/new", get(new_form).post(create))
        .route("/console/configurations/{id}", get(show))
        .route("/console/configurations/{id}/edit", get(edit_form).post(update))
        .route("/console/configurations/{id}/{action}", post(act))
}

impl Console {
    /// A GET of the API as `session`.
    pub async fn get(&self, session: &Session, path: &str) -> Result<Value, Refusal> {
        self.api.send(self.call(session, Method::GET, path.to_owned(), None)).await
    }

    /// A call as `session`, with a JSON body or none.
    pub fn call<'a>(&self, session: &'a Session, method: Method, path: String, body: Option<Value>) -> Call<'a> {
        let body = body.map_or(Payload::Empty, Payload::Json);
        Call { key: &session.key, host: session.host.as_deref(), method, path, body, if_match: None }
    }
}

#[derive(Deserialize)]
struct PageQuery {
    cursor: Option<String>,
}

async fn list(axum::extract::State(console): State, session: Session, Query(q): Query<PageQuery>) -> Response {
    let shell = session.shell("Configurations");
    let mut path = "/v1/configurations?limit=100".to_owned();
    if let Some(cursor) = &q.cursor {
        path += &format!("&cursor={}", segment(cursor));
    }
    let answer = match console.get(&session, &path).await {
        Ok(answer) => answer,
        Err(refusal) => return shell.refusal(&refusal),
    };
    shell.render(html! {
        @if session.may(Scope::ConfigurationsWrite) {
            p { a.button href="/console/configurations/new" { "New configuration" } }
        }
        (table(&answer))
        (page::next_page(&answer, "/console/configurations", &[]))
    })
}

/// Configurations as a table: what each is, where it sends, its state.
pub fn table(answer: &Value) -> Markup {
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    html! {
        @if items.is_empty() {
            p.muted { "No configurations yet." }
        } @else {
            table.list {
                thead { tr { th { "Name" } th { "Endpoint" } th { "Event types" } th { "State" } th { "Version" } } }
                tbody {
                    @for c in &items {
                        tr {
                            td { a href={"/console/configurations/" (text(&c["id"]))} { (text(&c["name"])) } }
                            td.url { (text(&c["endpoint"])) }
                            td { (list_of(&c["event_types"])) }
                            td {
                                (state(text(&c["status"])))
                                @if let Some(reason) = c["disabled_reason"].as_str() { " " span.muted { (reason) } }
                            }
                            td { (c["version"]) }
                        }
                    }
                }
            }
        }
    }
}

fn list_of(v: &Value) -> String {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

async fn show(axum::extract::State(console): State, session: Session, Path(id): Path<String>) -> Response {
    let shell = session.shell("Configuration");
    let c = match console.get(&session, &format!("/v1/configurations/{}", segment(&id))).await {
        Ok(c) => c,
        Err(refusal) => return shell.refusal(&refusal),
    };
    let history = console.get(&session, &format!("/v1/configurations/{}/scripts", segment(&id))).await.ok();
    let base = format!("/console/configurations/{}", segment(&id));
    let write = session.may(Scope::ConfigurationsWrite);
    session.shell(text(&c["name"])).render(html! {
        p {
            (state(text(&c["status"])))
            @if let Some(reason) = c["disabled_reason"].as_str() { " " span.muted { (reason) } }
            " " span.muted { "version " (c["version"]) " · " code { (text(&c["id"])) } }
        }
        @if write {
            div.actions {
                a.button href={(base) "/edit"} { "Edit" }
                @if session.may(Scope::LogsRead) { a.button href={(base) "/preview"} { "Preview a script change" } }
                @if text(&c["status"]) == "enabled" {
                    (action_button(&session, &format!("{base}/disable"), "Disable", None))
                } @else {
                    (action_button(&session, &format!("{base}/enable"), "Enable", None))
                }
                (action_button(&session, &format!("{base}/test"), "Send a test event", None))
                (action_button(&session, &format!("{base}/rotate-secret"), "Rotate the signing secret",
                    Some("The current secret keeps working for 24 hours. Rotate?")))
                (action_button(&session, &format!("{base}/delete"), "Delete", Some("Delete this configuration?")))
            }
        }
        (details(&c))
        @if write {
            section {
                h2 { "Recover failures" }
                p.muted { "Send again every delivery of this configuration that failed in a window (RFC 3339 times)." }
                form method="post" action={(base) "/recover"} {
                    (csrf(&session))
                    label { "Since " input type="text" name="since" placeholder="2026-12-01T00:00:00Z" required; }
                    label { "Until " input type="text" name="until" placeholder="optional"; }
                    button type="submit" { "Recover" }
                }
            }
        }
        @if let Some(history) = history {
            section {
                h2 { "Script history" }
                @if history.as_array().is_none_or(Vec::is_empty) {
                    p.muted { "No script has run on this configuration." }
                } @else {
                    table.list {
                        thead { tr { th { "From version" } th { "Script" } th { "Parameters" } th { "Changed" } } }
                        tbody {
                            @for h in history.as_array().into_iter().flatten() {
                                tr {
                                    td { (h["version"]) }
                                    td { code { (h["script_id"].as_str().unwrap_or("none")) } }
                                    td { (json_block(&h["params"])) }
                                    td { (time(&h["changed_at"])) }
                                }
                            }
                        }
                    }
                }
            }
        }
        p { a href={"/console/deliveries?configuration_id=" (segment(&id))} { "Deliveries of this configuration →" } }
    })
}

/// Every field, as the API answers it (secrets already left out).
fn details(c: &Value) -> Markup {
    let auth = &c["authorization"];
    html! {
        dl.fields {
            dt { "Endpoint" } dd.url { (text(&c["endpoint"])) }
            @if let Some(d) = c["description"].as_str() { dt { "Description" } dd { (d) } }
            dt { "Event types" } dd { (list_of(&c["event_types"])) }
            dt { "Organization units" } dd {
                "include: " (or_all(&c["organization_units"]["include"])) "; exclude: " (or_none(&c["organization_units"]["exclude"]))
            }
            dt { "Authorization" } dd {
                (text(&auth["type"]))
                @if auth["token_set"].as_bool() == Some(true) { " (token set)" }
                @if let Some(at) = auth["certificate_expires_at"].as_str() {
                    " · certificate expires " (at)
                    @if auth["certificate_expiring"].as_bool() == Some(true) { " " span.state.bad { "expiring" } }
                }
            }
            dt { "TLS trust" } dd { (text(&c["tls"]["trust"])) @if c["trust_all_tls"].as_bool() == Some(true) { " " span.state.bad { "trusts any certificate" } } }
            dt { "Signing" } dd {
                (list_of(&c["signing"]["profiles"]))
                @if let Some(at) = c["signing"]["previous_secret_expires_at"].as_str() { " · previous secret valid until " (at) }
            }
            dt { "Headers" } dd { (json_block(&c["headers"])) }
            dt { "Query" } dd { (json_block(&c["query"])) }
            dt { "Response mode" } dd { (text(&c["response_mode"])) }
            dt { "Deadline" } dd { (c["deadline_ms"]) " ms" }
            dt { "Retry" } dd { (c["retry"]["max_attempts"]) " attempts, backoff " (c["retry"]["initial_backoff_ms"]) "–" (c["retry"]["max_backoff_ms"]) " ms" }
            dt { "Rate limit" } dd { @if c["rate_limit"].is_null() { "none" } @else { (c["rate_limit"]["per_second"]) " per second" } }
            dt { "In flight at most" } dd { (c["max_in_flight"]) }
            dt { "Disabled automatically" } dd { "after " (c["auto_disable"]["after_failures"]) " failures over " (c["auto_disable"]["failing_for_ms"]) " ms" }
            dt { "Script" } dd {
                @if c["script"].is_null() { "none" } @else {
                    code { (text(&c["script"]["id"])) } (json_block(&c["script"]["params"]))
                }
            }
        }
    }
}

fn or_all(v: &Value) -> String {
    let l = list_of(v);
    if l.is_empty() { "all".into() } else { l }
}

fn or_none(v: &Value) -> String {
    let l = list_of(v);
    if l.is_empty() { "none".into() } else { l }
}

/// What a button on a configuration's page does.
async fn act(
    axum::extract::State(console): State,
    Path((id, action)): Path<(String, String)>,
    Posted { session, form }: Posted,
) -> Response {
    let base = format!("/v1/configurations/{}", segment(&id));
    let (method, path, body) = match action.as_str() {
        "enable" | "disable" | "test" | "rotate-secret" => (Method::POST, format!("{base}/{action}"), None),
        "delete" => (Method::DELETE, base, None),
        "recover" => {
            let mut window = Map::new();
            window.insert("since".into(), form.get("since").into());
            if !form.get("until").is_empty() {
                window.insert("until".into(), form.get("until").into());
            }
            (Method::POST, format!("{base}/recover"), Some(Value::Object(window)))
        }
        _ => return page::not_found().await,
    };
    let shell = session.shell("Configuration");
    let answer = match console.api.send(console.call(&session, method, path, body)).await {
        Ok(answer) => answer,
        Err(refusal) => return shell.refusal(&refusal),
    };
    let back = format!("/console/configurations/{}", segment(&id));
    match action.as_str() {
        "delete" => Redirect::to("/console/configurations").into_response(),
        "test" => session.shell("Test send").render(html! {
            h2 { "Decision" }
            p { (state(text(&answer["decision"]["status"]))) " " (text(&answer["decision"]["reason"])) " " (text(&answer["decision"]["error_kind"])) }
            h2 { "Attempt" }
            @if answer["attempt"].is_null() { p.muted { "No request was sent." } } @else {
                p { (state(if answer["attempt"]["succeeded"].as_bool() == Some(true) { "succeeded" } else { "failed" }))
                    " " (text(&answer["attempt"]["method"])) " " span.url { (text(&answer["attempt"]["uri"])) } }
                (json_block(&answer["attempt"]))
            }
            h2 { "Event sent" } (json_block(&answer["event"]))
            p { a href=(back) { "← Back to the configuration" } }
        }),
        "rotate-secret" => session.shell("New signing secret").render(html! {
            p { "The new secret, shown this once:" }
            pre.secret { (text(&answer["signing"]["secret"])) }
            p { a href=(back) { "← Back to the configuration" } }
        }),
        "recover" => session.shell("Recovery").render(html! {
            (json_block(&answer))
            p { a href=(back) { "← Back to the configuration" } }
        }),
        _ => Redirect::to(&back).into_response(),
    }
}

// The form.

/// A configuration as the form holds it: text, as typed.
#[derive(Default)]
pub struct Draft {
    name: String,
    description: String,
    endpoint: String,
    event_types: String,
    ou_include: String,
    ou_exclude: String,
    pub script_id: String,
    pub script_params: String,
    auth_type: String,
    auth_token: String,
    auth_token_set: bool,
    certificate_pem: String,
    private_key_pem: String,
    pkcs12_base64: String,
    pkcs12_password: String,
    certificate_expires_at: String,
    tls_trust: String,
    ca_pem: String,
    signing_profiles: Vec<String>,
    signing_secret: String,
    headers: String,
    query: String,
    response_mode: String,
    deadline: String,
    retry_max_attempts: String,
    retry_initial_backoff_ms: String,
    retry_max_backoff_ms: String,
    rate_limit: String,
    max_in_flight: String,
    auto_disable_after: String,
    auto_disable_for_ms: String,
}

fn lines(v: &Value) -> String {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n")).unwrap_or_default()
}

fn pairs(v: &Value, sep: &str) -> String {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}{sep}{}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

fn number(v: &Value) -> String {
    v.as_i64().map(|n| n.to_string()).unwrap_or_default()
}

impl Draft {
    fn new() -> Self {
        Self {
            auth_type: "none".into(),
            tls_trust: "system".into(),
            signing_profiles: vec!["standard_webhooks".into()],
            response_mode: "loose".into(),
            ..Self::default()
        }
    }

    /// From the API's answer, for editing.
    pub fn from_view(c: &Value) -> Self {
        let auth = &c["authorization"];
        Self {
            name: text(&c["name"]).into(),
            description: text(&c["description"]).into(),
            endpoint: text(&c["endpoint"]).into(),
            event_types: lines(&c["event_types"]),
            ou_include: lines(&c["organization_units"]["include"]),
            ou_exclude: lines(&c["organization_units"]["exclude"]),
            script_id: text(&c["script"]["id"]).into(),
            script_params: pairs(&c["script"]["params"], "="),
            auth_type: auth["type"].as_str().unwrap_or("none").into(),
            auth_token: String::new(),
            auth_token_set: auth["token_set"].as_bool() == Some(true),
            certificate_pem: text(&auth["certificate_pem"]).into(),
            private_key_pem: String::new(),
            pkcs12_base64: String::new(),
            pkcs12_password: String::new(),
            certificate_expires_at: text(&auth["certificate_expires_at"]).into(),
            tls_trust: c["tls"]["trust"].as_str().unwrap_or("system").into(),
            ca_pem: text(&c["tls"]["ca_pem"]).into(),
            signing_profiles: c["signing"]["profiles"].as_array().into_iter().flatten().filter_map(Value::as_str).map(Into::into).collect(),
            signing_secret: String::new(),
            headers: pairs(&c["headers"], ": "),
            query: pairs(&c["query"], "="),
            response_mode: c["response_mode"].as_str().unwrap_or("loose").into(),
            deadline: number(&c["deadline_ms"]),
            retry_max_attempts: number(&c["retry"]["max_attempts"]),
            retry_initial_backoff_ms: number(&c["retry"]["initial_backoff_ms"]),
            retry_max_backoff_ms: number(&c["retry"]["max_backoff_ms"]),
            rate_limit: number(&c["rate_limit"]["per_second"]),
            max_in_flight: number(&c["max_in_flight"]),
            auto_disable_after: number(&c["auto_disable"]["after_failures"]),
            auto_disable_for_ms: number(&c["auto_disable"]["failing_for_ms"]),
        }
    }

    fn from_form(f: &Form) -> Self {
        Self {
            name: f.get("name").into(),
            description: f.get("description").into(),
            endpoint: f.get("endpoint").into(),
            event_types: f.raw("event_types").into(),
            ou_include: f.raw("ou_include").into(),
            ou_exclude: f.raw("ou_exclude").into(),
            script_id: f.get("script_id").into(),
            script_params: f.raw("script_params").into(),
            auth_type: f.get("auth_type").into(),
            auth_token: f.get("auth_token").into(),
            auth_token_set: f.has("auth_token_set"),
            certificate_pem: f.raw("certificate_pem").trim().into(),
            private_key_pem: f.raw("private_key_pem").trim().into(),
            pkcs12_base64: f.raw("pkcs12_base64").split_whitespace().collect(),
            pkcs12_password: f.raw("pkcs12_password").into(),
            certificate_expires_at: String::new(),
            tls_trust: f.get("tls_trust").into(),
            ca_pem: f.raw("ca_pem").trim().into(),
            signing_profiles: f.all("signing_profiles").into_iter().map(Into::into).collect(),
            signing_secret: f.get("signing_secret").into(),
            headers: f.raw("headers").into(),
            query: f.raw("query").into(),
            response_mode: f.get("response_mode").into(),
            deadline: f.get("deadline").into(),
            retry_max_attempts: f.get("retry_max_attempts").into(),
            retry_initial_backoff_ms: f.get("retry_initial_backoff_ms").into(),
            retry_max_backoff_ms: f.get("retry_max_backoff_ms").into(),
            rate_limit: f.get("rate_limit").into(),
            max_in_flight: f.get("max_in_flight").into(),
            auto_disable_after: f.get("auto_disable_after").into(),
            auto_disable_for_ms: f.get("auto_disable_for_ms").into(),
        }
    }

    /// The API's `ConfigurationInput`. What cannot be read (a word where a
    /// number goes, a line without `=`) is refused here, at its field.
    pub fn to_input(&self) -> Result<Value, Refusal> {
        let mut input = Map::new();
        input.insert("name".into(), self.name.clone().into());
        if !self.description.is_empty() {
            input.insert("description".into(), self.description.clone().into());
        }
        input.insert("endpoint".into(), self.endpoint.clone().into());
        input.insert("event_types".into(), split_list(&self.event_types).into());
        input
            .insert("organization_units".into(), json!({"include": split_list(&self.ou_include), "exclude": split_list(&self.ou_exclude)}));
        if !self.script_id.is_empty() {
            input.insert("script".into(), json!({"id": self.script_id, "params": split_pairs(&self.script_params, '=', "script.params")?}));
        }
        let token = (!self.auth_token.is_empty()).then(|| self.auth_token.clone());
        let authorization = match self.auth_type.as_str() {
            "bearer" | "token" => json!({"type": self.auth_type, "token": token}),
            "client_certificate" if !self.pkcs12_base64.is_empty() => json!({
                "type": "client_certificate",
                "pkcs12_base64": self.pkcs12_base64,
                "password": self.pkcs12_password,
            }),
            "client_certificate" => json!({
                "type": "client_certificate",
                "certificate_pem": (!self.certificate_pem.is_empty()).then(|| self.certificate_pem.clone()),
                "private_key_pem": (!self.private_key_pem.is_empty()).then(|| self.private_key_pem.clone()),
            }),
            _ => json!({"type": "none"}),
        };
        input.insert("authorization".into(), authorization);
        input.insert(
            "tls".into(),
            match self.tls_trust.as_str() {
                "custom_ca" => json!({"trust": "custom_ca", "ca_pem": self.ca_pem}),
                "trust_all" => json!({"trust": "trust_all"}),
                _ => json!({"trust": "system"}),
            },
        );
        let mut signing = Map::new();
        signing.insert("profiles".into(), self.signing_profiles.clone().into());
        if !self.signing_secret.is_empty() {
            signing.insert("secret".into(), self.signing_secret.clone().into());
        }
        input.insert("signing".into(), Value::Object(signing));
        input.insert("headers".into(), split_pairs(&self.headers, ':', "headers")?);
        input.insert("query".into(), split_pairs(&self.query, '=', "query")?);
        input.insert("response_mode".into(), self.response_mode.clone().into());
        if !self.deadline.is_empty() {
            let deadline = self.deadline.parse::<u64>().map(Value::from).unwrap_or_else(|_| self.deadline.clone().into());
            input.insert("deadline".into(), deadline);
        }
        let retry = [&self.retry_max_attempts, &self.retry_initial_backoff_ms, &self.retry_max_backoff_ms];
        if retry.iter().any(|f| !f.is_empty()) {
            input.insert(
                "retry".into(),
                json!({
                    "max_attempts": whole(&self.retry_max_attempts, "retry.max_attempts")?,
                    "initial_backoff_ms": whole(&self.retry_initial_backoff_ms, "retry.initial_backoff_ms")?,
                    "max_backoff_ms": whole(&self.retry_max_backoff_ms, "retry.max_backoff_ms")?,
                }),
            );
        }
        if !self.rate_limit.is_empty() {
            input.insert("rate_limit".into(), json!({"per_second": whole(&self.rate_limit, "rate_limit.per_second")?}));
        }
        if !self.max_in_flight.is_empty() {
            input.insert("max_in_flight".into(), whole(&self.max_in_flight, "max_in_flight")?.into());
        }
        if !self.auto_disable_after.is_empty() || !self.auto_disable_for_ms.is_empty() {
            input.insert(
                "auto_disable".into(),
                json!({
                    "after_failures": whole(&self.auto_disable_after, "auto_disable.after_failures")?,
                    "failing_for_ms": if self.auto_disable_for_ms.is_empty() { 0 } else { whole(&self.auto_disable_for_ms, "auto_disable.failing_for_ms")? },
                }),
            );
        }
        Ok(Value::Object(input))
    }
}

/// One item a line, or comma-separated.
fn split_list(raw: &str) -> Vec<String> {
    raw.split(['\n', ',']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// `name<sep>value` lines as a JSON object.
fn split_pairs(raw: &str, sep: char, field: &str) -> Result<Value, Refusal> {
    let mut map = Map::new();
    for line in raw.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((k, v)) = line.split_once(sep) else {
            return Err(form_refusal(field, format!("each line is `name{sep}value`: `{line}` is not")));
        };
        map.insert(k.trim().to_owned(), v.trim().into());
    }
    Ok(Value::Object(map))
}

fn whole(raw: &str, field: &str) -> Result<u64, Refusal> {
    raw.parse().map_err(|_| form_refusal(field, format!("`{field}` is a whole number")))
}

fn form_refusal(field: &str, message: String) -> Refusal {
    Refusal { status: StatusCode::UNPROCESSABLE_ENTITY, code: "invalid_form".into(), message, field: Some(field.into()) }
}

/// The API's refusal shown at the field it names, if it names `field`.
fn at(error: Option<&Refusal>, field: &str) -> Markup {
    match error.and_then(|e| e.field.as_deref().filter(|f| *f == field || f.starts_with(&format!("{field}.")))) {
        Some(_) => html! { p.field-error role="alert" { (error.map(|e| e.message.as_str()).unwrap_or_default()) } },
        None => html! {},
    }
}

fn form(session: &Session, action: &str, d: &Draft, version: Option<i64>, error: Option<&Refusal>) -> Markup {
    let selected = |a: &str, b: &str| a == b;
    html! {
        @if let Some(e) = error {
            (page::refusal_box(e))
        }
        form.config method="post" action=(action) {
            (csrf(session))
            @if let Some(v) = version { input type="hidden" name="version" value=(v); }
            fieldset {
                legend { "Where events go" }
                label { "Name" input type="text" name="name" value=(d.name) required; } (at(error, "name"))
                label { "Description" input type="text" name="description" value=(d.description); }
                label { "Endpoint URL" input type="url" name="endpoint" value=(d.endpoint) required placeholder="https://receiver.example/hook"; } (at(error, "endpoint"))
                label { "Event types (one a line; `order.*` or `*`)" textarea name="event_types" rows="3" { (d.event_types) } } (at(error, "event_types"))
                label { "Organization units included (one a line; none: all)" textarea name="ou_include" rows="2" { (d.ou_include) } }
                label { "Organization units excluded" textarea name="ou_exclude" rows="2" { (d.ou_exclude) } } (at(error, "organization_units"))
            }
            fieldset {
                legend { "Script" }
                label { "Script id (empty: none)" input type="text" name="script_id" value=(d.script_id) placeholder="scr_…"; } (at(error, "script"))
                label { "Parameters (`name=value`, one a line)" textarea name="script_params" rows="3" { (d.script_params) } }
            }
            fieldset {
                legend { "How the receiver authenticates sluice" }
                label { "Authorization"
                    select name="auth_type" {
                        @for (v, l) in [("none", "none"), ("bearer", "Bearer token"), ("token", "static token"), ("client_certificate", "client certificate")] {
                            option value=(v) selected[selected(&d.auth_type, v)] { (l) }
                        }
                    }
                }
                label { "Token" @if d.auth_token_set { " (set; leave empty to keep it)" }
                    input type="password" name="auth_token" autocomplete="off" value=(d.auth_token); }
                @if d.auth_token_set { input type="hidden" name="auth_token_set" value="1"; }
                label { "Client certificate chain (PEM)" @if !d.certificate_expires_at.is_empty() { " — expires " (d.certificate_expires_at) }
                    textarea name="certificate_pem" rows="3" { (d.certificate_pem) } }
                label { "Client private key (PEM; empty keeps the stored one)" textarea name="private_key_pem" rows="3" { (d.private_key_pem) } }
                label { "…or a PKCS#12 file (.p12, .pfx)" input #p12-file type="file" accept=".p12,.pfx,application/x-pkcs12" data-fills="pkcs12_base64"; }
                label { "PKCS#12 as base64 (filled in from the file)" textarea name="pkcs12_base64" rows="2" { (d.pkcs12_base64) } }
                label { "PKCS#12 password" input type="password" name="pkcs12_password" autocomplete="off" value=(d.pkcs12_password); }
                (at(error, "authorization"))
                label { "TLS trust"
                    select name="tls_trust" {
                        @for (v, l) in [("system", "system roots"), ("custom_ca", "a CA of my own"), ("trust_all", "any certificate (testing only)")] {
                            option value=(v) selected[selected(&d.tls_trust, v)] { (l) }
                        }
                    }
                }
                label { "CA certificate (PEM)" textarea name="ca_pem" rows="3" { (d.ca_pem) } } (at(error, "tls"))
            }
            fieldset {
                legend { "Signing" }
                @for (v, l) in [("standard_webhooks", "Standard Webhooks (webhook-signature)"), ("x_signature", "X-Signature (hex HMAC-SHA256)")] {
                    label.check { input type="checkbox" name="signing_profiles" value=(v) checked[d.signing_profiles.iter().any(|p| p == v)]; (l) }
                }
                label { "Secret (`whsec_…`; empty: generated, or the stored one kept)" input type="password" name="signing_secret" autocomplete="off" value=(d.signing_secret); }
                (at(error, "signing"))
            }
            fieldset {
                legend { "Request" }
                label { "Headers (`Name: value`, one a line; `***` keeps a stored credential)" textarea name="headers" rows="3" { (d.headers) } } (at(error, "headers"))
                label { "Query parameters (`name=value`, one a line)" textarea name="query" rows="2" { (d.query) } } (at(error, "query"))
            }
            fieldset {
                legend { "Acknowledgement, deadline, retries" }
                label { "Response mode"
                    select name="response_mode" {
                        option value="loose" selected[selected(&d.response_mode, "loose")] { "any 2xx" }
                        option value="normal" selected[selected(&d.response_mode, "normal")] { "200 with [ACK]" }
                    }
                }
                label { "Deadline (ms or `PT2S`)" input type="text" name="deadline" value=(d.deadline); } (at(error, "deadline"))
                div.row {
                    label { "Attempts" input type="text" inputmode="numeric" name="retry_max_attempts" value=(d.retry_max_attempts); }
                    label { "First backoff (ms)" input type="text" inputmode="numeric" name="retry_initial_backoff_ms" value=(d.retry_initial_backoff_ms); }
                    label { "Longest backoff (ms)" input type="text" inputmode="numeric" name="retry_max_backoff_ms" value=(d.retry_max_backoff_ms); }
                }
                (at(error, "retry"))
                div.row {
                    label { "Rate limit (per second; empty: none)" input type="text" inputmode="numeric" name="rate_limit" value=(d.rate_limit); }
                    label { "In flight at most" input type="text" inputmode="numeric" name="max_in_flight" value=(d.max_in_flight); }
                }
                (at(error, "rate_limit")) (at(error, "max_in_flight"))
                div.row {
                    label { "Disable after failures (0: never)" input type="text" inputmode="numeric" name="auto_disable_after" value=(d.auto_disable_after); }
                    label { "…failing for at least (ms)" input type="text" inputmode="numeric" name="auto_disable_for_ms" value=(d.auto_disable_for_ms); }
                }
                (at(error, "auto_disable"))
            }
            button type="submit" { "Save" }
        }
    }
}

#[derive(Deserialize)]
struct Prefill {
    endpoint: Option<String>,
    name: Option<String>,
}

/// The form, empty or with an endpoint and name given (from a catcher).
async fn new_form(session: Session, Query(prefill): Query<Prefill>) -> Response {
    let draft = Draft {
        endpoint: prefill.endpoint.unwrap_or_default(),
        name: prefill.name.unwrap_or_default(),
        event_types: "*".into(),
        ..Draft::new()
    };
    session.shell("New configuration").render(form(&session, "/console/configurations/new", &draft, None, None))
}

async fn create(axum::extract::State(console): State, Posted { session, form: f }: Posted) -> Response {
    let draft = Draft::from_form(&f);
    let shell = session.shell("New configuration");
    let result = match draft.to_input() {
        Ok(input) => console.api.send(console.call(&session, Method::POST, "/v1/configurations".into(), Some(input))).await,
        Err(refusal) => Err(refusal),
    };
    match result {
        Ok(created) => session.shell("Configuration created").render(html! {
            p { "Saved, " (state(text(&created["status"]))) ". Its signing secret, shown this once:" }
            pre.secret { (text(&created["signing"]["secret"])) }
            p { a.button href={"/console/configurations/" (text(&created["id"]))} { "To the configuration" } }
        }),
        Err(e) => {
            let status = if e.status.is_server_error() { StatusCode::BAD_GATEWAY } else { e.status };
            shell.render_with(status, form(&session, "/console/configurations/new", &draft, None, Some(&e)))
        }
    }
}

async fn edit_form(axum::extract::State(console): State, session: Session, Path(id): Path<String>) -> Response {
    let shell = session.shell("Edit configuration");
    match console.get(&session, &format!("/v1/configurations/{}", segment(&id))).await {
        Ok(c) => shell.render(form(
            &session,
            &format!("/console/configurations/{}/edit", segment(&id)),
            &Draft::from_view(&c),
            c["version"].as_i64(),
            None,
        )),
        Err(refusal) => shell.refusal(&refusal),
    }
}

async fn update(axum::extract::State(console): State, Path(id): Path<String>, Posted { session, form: f }: Posted) -> Response {
    let draft = Draft::from_form(&f);
    let version = f.get("version").parse::<i64>().ok();
    let action = format!("/console/configurations/{}/edit", segment(&id));
    let shell = session.shell("Edit configuration");
    let result = match draft.to_input() {
        Ok(input) => {
            let mut call = console.call(&session, Method::PUT, format!("/v1/configurations/{}", segment(&id)), Some(input));
            call.if_match = version;
            console.api.send(call).await
        }
        Err(refusal) => Err(refusal),
    };
    match result {
        Ok(_) => Redirect::to(&format!("/console/configurations/{}", segment(&id))).into_response(),
        Err(e) if e.code == "stale_version" => {
            let current = console.get(&session, &format!("/v1/configurations/{}", segment(&id))).await.ok();
            let current_version = current.as_ref().and_then(|c| c["version"].as_i64());
            shell.render_with(
                StatusCode::CONFLICT,
                html! {
                    div.error role="alert" {
                        strong { "Someone changed this configuration while you were editing it; nothing was saved." }
                        p { (e.message) }
                        p { "Your changes are still in the form below. Saving it again now replaces the other change with yours." }
                    }
                    @if let Some(current) = &current {
                        details { summary { "The configuration as it is now" } (details(current)) }
                    }
                    (form(&session, &action, &draft, current_version.or(version), None))
                },
            )
        }
        Err(e) => {
            let status = if e.status.is_server_error() { StatusCode::BAD_GATEWAY } else { e.status };
            shell.render_with(status, form(&session, &action, &draft, version, Some(&e)))
        }
    }
}
