//! The console: the engine's web pages for admins and tenants, served at
//! `/console` by `sluice serve` itself. Pages are rendered on the server
//! (maud: every interpolated value is HTML-escaped), with one small script
//! file and one style sheet embedded in the binary; no Node, no CDN.
//!
//! Every page is a view of the HTTP API: it calls the API in-process with
//! its session's key (`client`), so a session can see and do exactly what
//! its key's scopes allow, and the API's validation errors are the ones
//! shown. This module owns sessions (`session`), the page shell (`page`)
//! and the pages. It must never reach the service or the store for
//! anything but signing in, and never put a value from outside on a page
//! unescaped.

mod catchers;
mod client;
mod configurations;
mod event_types;
mod events;
mod keys;
mod overview;
mod page;
mod previews;
mod scripts;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::service::App;

/// What every console handler shares.
pub struct Console {
    app: Arc<App>,
    api: client::Api,
    /// Cookies carry `Secure` when the engine is reached over HTTPS.
    secure_cookies: bool,
}

type State = axum::extract::State<Arc<Console>>;

/// The console's routes, to merge beside the API's (`api` is the API's own
/// router, which the pages call in-process).
pub fn router(app: Arc<App>, api: Router) -> Router {
    let secure_cookies = app.limits().public_url.as_deref().is_some_and(|u| u.starts_with("https://"));
    let max_script_bytes = app.max_script_bytes();
    let console = Arc::new(Console { app, api: client::Api::new(api), secure_cookies });
    Router::new()
        .route("/console", get(overview::show))
        .route("/console/assets/console.css", get(page::style))
        .route("/console/assets/console.js", get(page::script))
        .merge(session::router())
        .merge(configurations::router())
        .merge(events::router())
        .merge(event_types::router())
        .merge(keys::router())
        .merge(scripts::router(max_script_bytes))
        .merge(previews::router())
        .merge(catchers::router())
        .route("/console/{*rest}", get(page::not_found))
        .route("/", get(|| async { Redirect::to("/console") }))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(console)
}

/// A policy that lets the page load only its own style sheet and script
/// (no inline script, no other origin), never be framed, and never tell
/// another site where it came from (portal links carry a token).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}
