//! Hosted catchers: make a test endpoint on the engine itself, point a
//! configuration at it, and watch deliveries arrive, their signatures
//! checked. The requests page reloads itself while it is watched.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde_json::{Value, json};

use super::page::{action_button, csrf, json as json_block, segment, text, time};
use super::session::{Posted, Session};
use super::{Console, State};
use crate::model::auth::Scope;

pub fn router() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/catchers", get(list).post(create))
        .route("/console/catchers/{id}", get(show))
        .route("/console/catchers/{id}/delete", post(delete))
}

async fn list(axum::extract::State(console): State, session: Session) -> Response {
    let shell = session.shell("Catchers");
    let answer = match console.get(&session, "/v1/catchers").await {
        Ok(answer) => answer,
        Err(refusal) => return shell.refusal(&refusal),
    };
    let items = answer.as_array().cloned().unwrap_or_default();
    shell.render(html! {
        p.muted { "A catcher is a test endpoint on this engine: point a configuration at its URL and watch what sluice sends, signatures checked, with no receiver of your own." }
        @if items.is_empty() { p.muted { "No catchers yet." } } @else {
            table.list {
                thead { tr { th { "Name" } th { "Answers" } th { "Created" } } }
                tbody {
                    @for c in &items {
                        tr {
                            td { a href={"/console/catchers/" (segment(text(&c["id"])))} { (text(&c["name"])) } }
                            td { (c["status"]) " " code { (text(&c["body"])) } }
                            td { (time(&c["created_at"])) }
                        }
                    }
                }
            }
        }
        @if session.may(Scope::ConfigurationsWrite) {
            section {
                h2 { "New catcher" }
                form method="post" action="/console/catchers" {
                    (csrf(&session))
                    label { "Name " input type="text" name="name" value="catcher"; }
                    div.row {
                        label { "Answer status " input type="text" inputmode="numeric" name="status" value="200"; }
                        label { "Answer body " input type="text" name="body" value="[ACK]"; }
                    }
                    button type="submit" { "Create catcher" }
                }
            }
        }
    })
}

async fn create(axum::extract::State(console): State, Posted { session, form }: Posted) -> Response {
    let status = form.get("status").parse::<u16>().map(Value::from).unwrap_or_else(|_| form.get("status").into());
    let input = json!({"name": form.get("name"), "status": status, "body": form.raw("body")});
    match console.api.send(console.call(&session, Method::POST, "/v1/catchers".into(), Some(input))).await {
        Ok(created) => {
            let url = text(&created["url"]);
            session.shell("Catcher created").render(html! {
                p { "Its URL, shown this once:" }
                pre.secret { (url) }
                div.actions {
                    a.button href={"/console/configurations/new?endpoint=" (segment(url)) "&name=" (segment(text(&created["name"])))} { "Point a new configuration at it" }
                    a.button href={"/console/catchers/" (segment(text(&created["id"])))} { "Watch it" }
                }
            })
        }
        Err(refusal) => session.shell("Catchers").refusal(&refusal),
    }
}

async fn show(axum::extract::State(console): State, session: Session, Path(id): Path<String>) -> Response {
    let shell = session.shell("Catcher");
    let requests = match console.get(&session, &format!("/v1/catchers/{}/requests", segment(&id))).await {
        Ok(requests) => requests,
        Err(refusal) => return shell.refusal(&refusal),
    };
    let items = requests.as_array().cloned().unwrap_or_default();
    shell.render(html! {
        div.watch data-refresh="2" {
            p.muted { (items.len()) " request(s), newest first; this page reloads every 2 seconds while no request is opened." }
            @for r in &items {
                details.attempt {
                    summary {
                        (time(&r["received_at"])) " · " (text(&r["method"])) " " span.url { (text(&r["uri"])) } " · "
                        @match r["signature"]["verdict"].as_str() {
                            Some("valid") => { span.state.ok { "signature valid" } " signed by " (text(&r["signature"]["configuration"])) }
                            Some("invalid") => { span.state.bad { "signature invalid" } " " (text(&r["signature"]["reason"])) }
                            Some("not_checked") => { span.state.wait { "signature not checked" } " " (text(&r["signature"]["reason"])) }
                            _ => { span.state { "unsigned" } }
                        }
                    }
                    div.pair {
                        div { h4 { "Headers" } (json_block(&r["headers"])) }
                        div { h4 { "Body" } pre.body { (text(&r["body"])) } }
                    }
                }
            }
        }
        @if session.may(Scope::ConfigurationsWrite) {
            div.actions { (action_button(&session, &format!("/console/catchers/{}/delete", segment(&id)), "Delete this catcher", Some("Delete the catcher and what it recorded?"))) }
        }
    })
}

async fn delete(axum::extract::State(console): State, Path(id): Path<String>, Posted { session, .. }: Posted) -> Response {
    match console.api.send(console.call(&session, Method::DELETE, format!("/v1/catchers/{}", segment(&id)), None)).await {
        Ok(_) => Redirect::to("/console/catchers").into_response(),
        Err(refusal) => session.shell("Catcher").refusal(&refusal),
    }
}
