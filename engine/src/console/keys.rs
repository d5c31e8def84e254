//! Keys and portal links (admin sessions): create a key with scopes (its
//! secret shown once), revoke one, and make a portal link for the tenant.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::page::{self, action_button, csrf, segment, text, time};
use super::session::{Form, Posted, Session};
use super::{Console, State};
use crate::model::auth::Scope;

pub fn router() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/keys", get(list).post(create))
        .route("/console/keys/{id}/revoke", post(revoke))
        .route("/console/portal-links", post(portal_link))
        .route("/console/tenants", get(tenants).post(create_tenant))
        .route("/console/tenants/{id}", post(update_tenant))
        .route("/console/tenants/{id}/portal-link", post(tenant_portal_link))
}

fn scope_boxes(name: &str, checked: &[Scope]) -> Markup {
    html! {
        @for s in Scope::ALL {
            label.check { input type="checkbox" name=(name) value=(s.as_str()) checked[checked.contains(&s)]; (s.as_str()) }
        }
    }
}

async fn list(axum::extract::State(console): State, session: Session) -> Response {
    let shell = session.shell("Keys");
    let answer = match console.get(&session, "/v1/keys?limit=200").await {
        Ok(answer) => answer,
        Err(refusal) => return shell.refusal(&refusal),
    };
    shell.render(html! {
        table.list {
            thead { tr { th { "Name" } th { "Prefix" } th { "Scopes" } th { "Created" } th { "Expires" } th { "" } } }
            tbody {
                @for k in answer["items"].as_array().into_iter().flatten() {
                    tr {
                        td { (text(&k["name"])) }
                        td { code { (text(&k["prefix"])) "…" } }
                        td { (k["scopes"].as_array().map(|s| s.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")).unwrap_or_default()) }
                        td { (time(&k["created_at"])) }
                        td { (time(&k["expires_at"])) }
                        td {
                            @if k["revoked_at"].is_string() { span.muted { "revoked" } } @else {
                                (action_button(&session, &format!("/console/keys/{}/revoke", segment(text(&k["id"]))), "Revoke", Some("Revoke this key? Whatever uses it stops working at once.")))
                            }
                        }
                    }
                }
            }
        }
        (page::next_page(&answer, "/console/keys", &[]))
        section {
            h2 { "New key" }
            form method="post" action="/console/keys" {
                (csrf(&session))
                label { "Name " input type="text" name="name" required; }
                fieldset.scopes { legend { "Scopes" } (scope_boxes("scopes", &[])) }
                button type="submit" { "Create key" }
            }
        }
        section {
            h2 { "Portal link" }
            p.muted { "A single-use link that opens this console for this tenant with the scopes ticked; hand it to a customer." }
            form method="post" action="/console/portal-links" {
                (csrf(&session))
                fieldset.scopes { legend { "Scopes" } (scope_boxes("scopes", &[Scope::ConfigurationsRead, Scope::ConfigurationsWrite, Scope::LogsRead])) }
                label { "Valid for (seconds) " input type="text" inputmode="numeric" name="valid_for_seconds" value="900"; }
                label { "Session lasts (seconds) " input type="text" inputmode="numeric" name="session_seconds" value="3600"; }
                button type="submit" { "Make a portal link" }
            }
        }
    })
}

async fn create(axum::extract::State(console): State, Posted { session, form }: Posted) -> Response {
    let input = json!({"name": form.get("name"), "scopes": form.all("scopes")});
    match console.api.send(console.call(&session, Method::POST, "/v1/keys".into(), Some(input))).await {
        Ok(created) => session.shell("Key created").render(html! {
            p { "The key's secret, shown this once:" }
            pre.secret { (text(&created["secret"])) }
            p { a href="/console/keys" { "← Keys" } }
        }),
        Err(refusal) => session.shell("Keys").refusal(&refusal),
    }
}

async fn revoke(axum::extract::State(console): State, Path(id): Path<String>, Posted { session, .. }: Posted) -> Response {
    match console.api.send(console.call(&session, Method::DELETE, format!("/v1/keys/{}", segment(&id)), None)).await {
        Ok(_) => Redirect::to("/console/keys").into_response(),
        Err(refusal) => session.shell("Keys").refusal(&refusal),
    }
}

async fn portal_link(axum::extract::State(console): State, Posted { session, form }: Posted) -> Response {
    let seconds = |name: &str| form.get(name).parse::<u64>().ok();
    let input = json!({
        "scopes": form.all("scopes"),
        "valid_for_seconds": seconds("valid_for_seconds"),
        "session_seconds": seconds("session_seconds"),
    });
    show_link(&console, &session, "/v1/portal-links".into(), input).await
}

/// Asks the API for a portal link and shows its URL once.
async fn show_link(console: &Console, session: &Session, path: String, input: Value) -> Response {
    match console.api.send(console.call(session, Method::POST, path, Some(input))).await {
        Ok(link) => session.shell("Portal link").render(html! {
            p { "Single use, until " (time(&link["expires_at"])) ". Shown this once:" }
            pre.secret { (text(&link["url"])) }
            p { a href="/console/keys" { "← Keys" } }
        }),
        Err(refusal) => session.shell("Portal link").refusal(&refusal),
    }
}

async fn tenants(axum::extract::State(console): State, session: Session) -> Response {
    let shell = session.shell("Tenants");
    let answer = match console.get(&session, "/v1/tenants?limit=200").await {
        Ok(answer) => answer,
        Err(refusal) => return shell.refusal(&refusal),
    };
    shell.render(html! {
        table.list {
            thead { tr { th { "Name" } th { "Id" } th { "Monthly quota" } th { "Created" } th { "" } } }
            tbody {
                @for t in answer["items"].as_array().into_iter().flatten() {
                    tr {
                        td { (text(&t["name"])) }
                        td { code { (text(&t["id"])) } }
                        td {
                            form.inline method="post" action={"/console/tenants/" (segment(text(&t["id"])))} {
                                (csrf(&session))
                                input type="hidden" name="name" value=(text(&t["name"]));
                                input.quota type="text" inputmode="numeric" name="monthly_quota" placeholder="unlimited"
                                    value=(t["monthly_quota"].as_i64().map(|q| q.to_string()).unwrap_or_default());
                                button type="submit" { "Set quota" }
                            }
                        }
                        td { (time(&t["created_at"])) }
                        td { (action_button(&session, &format!("/console/tenants/{}/portal-link", segment(text(&t["id"]))), "Portal link (admin)", None)) }
                    }
                }
            }
        }
        (page::next_page(&answer, "/console/tenants", &[]))
        section {
            h2 { "New tenant" }
            form method="post" action="/console/tenants" {
                (csrf(&session))
                label { "Name " input type="text" name="name" required; }
                label { "Monthly quota (events; empty: unlimited) " input type="text" inputmode="numeric" name="monthly_quota"; }
                button type="submit" { "Create tenant" }
            }
        }
    })
}

async fn create_tenant(axum::extract::State(console): State, Posted { session, form }: Posted) -> Response {
    let input = json!({"name": form.get("name"), "monthly_quota": quota(&form)});
    match console.api.send(console.call(&session, Method::POST, "/v1/tenants".into(), Some(input))).await {
        Ok(_) => Redirect::to("/console/tenants").into_response(),
        Err(refusal) => session.shell("Tenants").refusal(&refusal),
    }
}

async fn tenant_portal_link(axum::extract::State(console): State, Path(id): Path<String>, Posted { session, .. }: Posted) -> Response {
    let path = format!("/v1/tenants/{}/portal-links", segment(&id));
    show_link(&console, &session, path, json!({"scopes": ["admin"]})).await
}

/// The quota field: empty for unlimited; what is not a number goes to the
/// API as typed, to be refused there.
fn quota(form: &Form) -> Value {
    let raw = form.get("monthly_quota");
    if raw.is_empty() { Value::Null } else { raw.parse::<i64>().map(Value::from).unwrap_or_else(|_| raw.into()) }
}

async fn update_tenant(axum::extract::State(console): State, Path(id): Path<String>, Posted { session, form }: Posted) -> Response {
    let input = json!({"name": form.get("name"), "monthly_quota": quota(&form)});
    match console.api.send(console.call(&session, Method::PUT, format!("/v1/tenants/{}", segment(&id)), Some(input))).await {
        Ok(_) => Redirect::to("/console/tenants").into_response(),
        Err(refusal) => session.shell("Tenants").refusal(&refusal),
    }
}
