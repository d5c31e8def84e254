//! The page shell (head, navigation, the session's identity and sign-out),
//! the embedded assets, and the small renderings every page shares: times,
//! states, JSON, the API's refusals, pagination.
//!
//! Everything here goes through maud, which escapes every value it
//! interpolates; `PreEscaped` is used for nothing that came from outside.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::client::Refusal;
use super::session::Session;
use crate::model::auth::Scope;
use crate::model::timestamp::rfc3339;

const STYLE: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], STYLE).into_response()
}

pub async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], SCRIPT).into_response()
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · sluice" }
            link rel="stylesheet" href="/console/assets/console.css";
            script src="/console/assets/console.js" defer {}
        }
    }
}

/// A page without navigation (signing in, refusals).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare { main { (body) } }
        }
    }
}

pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, bare("Not found", html! { h1 { "Not found" } p { a href="/console" { "To the overview" } } })).into_response()
}

/// A signed-in page's frame.
pub struct Shell<'a> {
    pub title: String,
    pub session: &'a Session,
}

impl Shell<'_> {
    pub fn render(&self, body: Markup) -> Response {
        self.render_with(StatusCode::OK, body)
    }

    pub fn render_with(&self, status: StatusCode, body: Markup) -> Response {
        let s = self.session;
        let page = html! {
            (DOCTYPE)
            html lang="en" {
                (head(&self.title))
                body {
                    header.top {
                        a.brand href="/console" { "sluice" }
                        nav {
                            a href="/console" { "Overview" }
                            @if s.may(Scope::ConfigurationsRead) { a href="/console/configurations" { "Configurations" } }
                            @if s.may(Scope::LogsRead) { a href="/console/events" { "Events" } }
                            @if s.may(Scope::ConfigurationsRead) { a href="/console/event-types" { "Types" } }
                            @if s.may(Scope::ConfigurationsRead) { a href="/console/scripts" { "Scripts" } }
                            @if s.may(Scope::ConfigurationsRead) { a href="/console/catchers" { "Catchers" } }
                            @if s.may(Scope::Admin) { a href="/console/keys" { "Keys" } }
                            @if s.operator && s.may(Scope::Admin) { a href="/console/tenants" { "Tenants" } }
                        }
                        div.who {
                            span.tenant title="tenant" { (s.principal.tenant.as_str()) }
                            span.scopes {
                                @for scope in &s.principal.scopes { span.scope { (scope.as_str()) } }
                            }
                            span.muted title="the session ends then" { "until " (time(&Value::from(rfc3339::format(s.expires_at)))) }
                            form.inline method="post" action="/console/sign-out" {
                                (csrf(s))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                    main { h1 { (self.title) } (body) }
                }
            }
        };
        (status, page).into_response()
    }

    /// The API refused: not found, not allowed, or its own message.
    pub fn refusal(&self, refusal: &Refusal) -> Response {
        let status = if refusal.status.is_server_error() { StatusCode::BAD_GATEWAY } else { refusal.status };
        let body = match refusal.status {
            StatusCode::NOT_FOUND => html! { p.error role="alert" { "Not found." } },
            StatusCode::FORBIDDEN => html! {
                p.error role="alert" { "This session may not do that: " (refusal.message) }
            },
            _ => refusal_box(refusal),
        };
        Shell { title: if refusal.is_not_found() { "Not found".into() } else { self.title.clone() }, session: self.session }
            .render_with(status, body)
    }
}

/// The API's refusal, with its stable code.
pub fn refusal_box(refusal: &Refusal) -> Markup {
    html! {
        div.error role="alert" {
            strong { (refusal.message) }
            " " code { (refusal.code) }
        }
    }
}

/// The hidden field every form of a session carries.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="_csrf" value=(session.csrf); }
}

/// A button that posts to `action` (with the session's token), asking
/// first when `confirm` is given.
pub fn action_button(session: &Session, action: &str, label: &str, confirm: Option<&str>) -> Markup {
    html! {
        form.inline method="post" action=(action) data-confirm=[confirm] {
            (csrf(session))
            button type="submit" { (label) }
        }
    }
}

/// A string field of an API answer ("" when absent).
pub fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// An RFC 3339 time from an answer, shown as such (UTC).
pub fn time(v: &Value) -> Markup {
    match v.as_str() {
        Some(t) => html! { time datetime=(t) { (t.replace('T', " ").trim_end_matches('Z')) " UTC" } },
        None => html! { span.muted { "—" } },
    }
}

/// A state as a coloured label.
pub fn state(label: &str) -> Markup {
    let class = match label {
        "succeeded" | "enabled" | "done" | "deliver" | "up" => "ok",
        "failed" | "script_error" | "disabled" | "error" => "bad",
        "pending" | "retry" => "wait",
        _ => "plain",
    };
    html! { span class={"state " (class)} { (label) } }
}

/// JSON shown as text, indented.
pub fn json(v: &Value) -> Markup {
    html! { pre.json { (serde_json::to_string_pretty(v).unwrap_or_default()) } }
}

/// "Next page" for a list answered with `next_cursor`.
pub fn next_page(answer: &Value, path: &str, query: &[(&str, String)]) -> Markup {
    let Some(cursor) = answer["next_cursor"].as_str() else { return html! {} };
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in query.iter().filter(|(_, v)| !v.is_empty()) {
        q.append_pair(k, v);
    }
    q.append_pair("cursor", cursor);
    html! { p.pager { a href={(path) "?" (q.finish())} { "Older →" } } }
}

/// Text made safe for one URL path segment or query value: everything but
/// the unreserved characters percent-encoded.
pub fn segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
