//! The HTTP API under `/v1`: one file per resource, each with its handlers
//! and its `router()`; requests parsed at the edge (`extract`), answers
//! shaped by `views`, failures mapped once (`error`), and the OpenAPI
//! document generated from the handlers' own annotations (`doc`).
//!
//! This module owns everything HTTP-facing. It must never run SQL or
//! scripts itself: it calls [`crate::service`] only, and it must never
//! answer with a secret beyond the one-time key and signing secret shown at
//! creation. Every route is added through a resource's `router()`, which
//! documents it: the router and the document cannot drift apart.

mod attempts;
mod catchers;
mod configurations;
mod deliveries;
mod doc;
mod error;
mod event_types;
mod events;
mod extract;
mod health;
mod keys;
mod metrics;
mod portal_links;
mod scripts;
mod tenants;
mod views;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;

use crate::service::App;

pub use error::ApiError;
pub use metrics::open_router as metrics_router;

/// The whole HTTP surface.
pub fn router(app: Arc<App>) -> Router {
    let (router, _) = routes(app.limits().max_body_bytes, app.max_script_bytes()).split_for_parts();
    router.fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") }).with_state(app)
}

/// The OpenAPI document of [`router`], as served at `/v1/openapi.json`.
pub fn document() -> &'static serde_json::Value {
    static DOCUMENT: OnceLock<serde_json::Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| doc::finish(routes(0, 0).into_openapi()))
}

/// Every operation, documented, with its body limit.
fn routes(body_limit: usize, script_limit: usize) -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::with_openapi(doc::base())
        .merge(health::router())
        .merge(metrics::router())
        .merge(scripts::router())
        .merge(configurations::router())
        .merge(event_types::router())
        .merge(events::router())
        .merge(deliveries::router())
        .merge(attempts::router())
        .merge(keys::router())
        .merge(portal_links::router())
        .merge(catchers::router())
        .merge(tenants::router())
        .layer(DefaultBodyLimit::max(body_limit))
        // Scripts are larger than any JSON body.
        .merge(scripts::upload_router().layer(DefaultBodyLimit::max(script_limit)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The paths axum routes, read from the router itself (its `Debug`
    /// lists them): whatever way a route was added, it shows up here. The
    /// fallback's own router (after `fallback_router`) is not a route.
    fn routed_paths(router: &Router<Arc<App>>) -> BTreeSet<String> {
        let text = format!("{router:?}");
        let routes = text.split("fallback_router").next().unwrap_or_default();
        routes.split('"').filter(|s| s.starts_with('/') && !s.contains(' ')).map(str::to_owned).collect()
    }

    #[test]
    fn every_routed_path_is_documented_and_every_documented_path_routed() {
        let (router, document) = routes(1, 1).split_for_parts();
        let documented: BTreeSet<String> = document.paths.paths.keys().cloned().collect();
        let routed = routed_paths(&router);
        assert!(routed.len() > 20, "the router's paths could not be read: {routed:?}");
        assert_eq!(routed, documented, "routed (left) and documented (right) paths differ");
    }

    #[test]
    fn a_route_added_without_documentation_is_caught() {
        let (router, document) = routes(1, 1).route("/v1/undocumented", axum::routing::get(|| async {})).split_for_parts();
        let documented: BTreeSet<String> = document.paths.paths.keys().cloned().collect();
        assert!(routed_paths(&router).difference(&documented).any(|p| p == "/v1/undocumented"));
    }

    #[test]
    fn every_operation_names_its_scope_or_is_public() {
        let document = document();
        let mut operations = 0;
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                operations += 1;
                let public = op["security"] == serde_json::json!([]);
                let scope = op["x-scope"].as_str();
                assert!(public != scope.is_some(), "{method} {path}: public {public}, scope {scope:?}");
                if let Some(scope) = scope {
                    assert_eq!(op["security"], serde_json::json!([{"bearer": [scope]}]), "{method} {path}");
                    assert!(crate::model::auth::Scope::parse(scope).is_some(), "{method} {path}: unknown scope {scope}");
                }
                assert!(op["responses"]["default"].is_object(), "{method} {path}: no error answer");
            }
        }
        assert!(operations >= 34, "{operations} operations");
    }
}
