//! The tenant's event types: every type its events carried, with the
//! descriptions admins gave them; describe one, or a type to come.

use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::html;
use serde_json::json;

use super::page::{csrf, segment, text, time};
use super::session::{Posted, Session};
use super::{Console, State};
use crate::model::auth::Scope;

pub fn router() -> Router<Arc<Console>> {
    Router::new().route("/console/event-types", get(list).post(describe))
}

async fn list(axum::extract::State(console): State, session: Session) -> Response {
    let shell = session.shell("Event types");
    let answer = match console.get(&session, "/v1/event-types").await {
        Ok(answer) => answer,
        Err(refusal) => return shell.refusal(&refusal),
    };
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    shell.render(html! {
        @if items.is_empty() { p.muted { "No events yet." } } @else {
            table.list {
                thead { tr { th { "Type" } th { "Description" } th { "First seen" } } }
                tbody {
                    @for t in &items {
                        tr {
                            td { a href={"/console/events?type=" (segment(text(&t["name"])))} { (text(&t["name"])) } }
                            td { (text(&t["description"])) }
                            td { (time(&t["first_seen"])) }
                        }
                    }
                }
            }
        }
        @if session.may(Scope::ConfigurationsWrite) {
            section {
                h2 { "Describe a type" }
                form method="post" action="/console/event-types" {
                    (csrf(&session))
                    label { "Type " input type="text" name="name" required placeholder="order.paid"; }
                    label { "Description " input type="text" name="description"; }
                    button type="submit" { "Save" }
                }
            }
        }
    })
}

async fn describe(axum::extract::State(console): State, Posted { session, form }: Posted) -> Response {
    let path = format!("/v1/event-types/{}", segment(form.get("name")));
    let input = json!({"description": form.get("description")});
    match console.api.send(console.call(&session, Method::PUT, path, Some(input))).await {
        Ok(_) => Redirect::to("/console/event-types").into_response(),
        Err(refusal) => session.shell("Event types").refusal(&refusal),
    }
}
