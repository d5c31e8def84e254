//! Console sessions: signing in with an API key or a portal link, the
//! session cookie, and the checks every form submission passes.
//!
//! A session is an API key held in a cookie sealed under the engine's
//! secret key (XChaCha20-Poly1305: nobody can read or forge it, any node
//! opens it), `HttpOnly`, `SameSite=Strict`, `Secure` over HTTPS, expiring.
//! Its key is checked against the store on use, so revoking the key ends
//! the session. A portal link's session runs on a key of its own that
//! expires with it. This module owns the cookie and the cross-site
//! request checks; it must never show a key or put one in a URL or a log.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::html;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::page::{self, Shell};
use super::{Console, State};
use crate::model::auth::{Principal, Scope};
use crate::model::timestamp::now_ms;

const COOKIE: &str = "sluice_session";

/// How long a session signed in with a key lasts.
const KEY_SESSION_MS: i64 = 8 * 3600 * 1000;

pub fn router() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", axum::routing::post(sign_out))
        .route("/console/portal/{token}", get(portal_page).post(portal_open))
}

/// What the sealed cookie holds.
#[derive(Serialize, Deserialize)]
struct Sealed {
    key: String,
    expires_at: i64,
}

/// A signed-in caller, from its cookie.
pub struct Session {
    pub key: String,
    pub principal: Principal,
    /// The operator's tenant manages tenants.
    pub operator: bool,
    pub expires_at: i64,
    /// The token forms carry back (see [`Form`]).
    pub csrf: String,
    /// The `Host` the browser used.
    pub host: Option<String>,
}

impl Session {
    pub fn may(&self, scope: Scope) -> bool {
        self.principal.may(scope)
    }
}

/// Not signed in (or no longer): to the sign-in page, then back.
pub struct SignInFirst(String);

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        let next = form_urlencoded::byte_serialize(self.0.as_bytes()).collect::<String>();
        let mut response = Redirect::to(&format!("/console/sign-in?next={next}")).into_response();
        response.headers_mut().insert(header::SET_COOKIE, expired_cookie());
        response
    }
}

impl FromRequestParts<Arc<Console>> for Session {
    type Rejection = SignInFirst;

    async fn from_request_parts(parts: &mut Parts, console: &Arc<Console>) -> Result<Self, SignInFirst> {
        let here = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/console");
        let back = || SignInFirst(if parts.method == axum::http::Method::GET { here.to_owned() } else { "/console".to_owned() });
        let raw = cookie(&parts.headers, COOKIE).ok_or_else(back)?;
        let sealed: Sealed = console.app.open_session(raw).and_then(|plain| serde_json::from_slice(&plain).ok()).ok_or_else(back)?;
        if sealed.expires_at <= now_ms() {
            return Err(back());
        }
        let principal = console.app.authenticate(&sealed.key).await.ok().flatten().ok_or_else(back)?;
        Ok(Session {
            operator: console.app.is_operator(&principal.tenant),
            principal,
            key: sealed.key,
            expires_at: sealed.expires_at,
            csrf: csrf_token(raw),
            host: parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned),
        })
    }
}

/// A form a signed-in session submitted from one of the console's own
/// pages, checked as [`Form::read`] checks it; anything else never reaches
/// the handler.
pub struct Posted {
    pub session: Session,
    pub form: Form,
}

/// The largest form the console reads (a configuration with certificates).
const MAX_FORM_BYTES: usize = 1 << 20;

impl axum::extract::FromRequest<Arc<Console>> for Posted {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, console: &Arc<Console>) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let session = Session::from_request_parts(&mut parts, console).await.map_err(IntoResponse::into_response)?;
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES).await.map_err(|_| {
            (StatusCode::PAYLOAD_TOO_LARGE, page::bare("Too large", html! { p { "This form is too large." } })).into_response()
        })?;
        let form = Form::read(&parts.headers, &bytes, Some(&session)).map_err(IntoResponse::into_response)?;
        Ok(Posted { session, form })
    }
}

/// A form's fields, from an `application/x-www-form-urlencoded` body that
/// came from one of the console's own pages: the request is same-origin
/// (by `Sec-Fetch-Site`, else `Origin`) and, with a session, carries the
/// session's token. A cross-site submission never reaches a handler.
pub struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    /// Reads and checks a submission; `session` is `None` only for signing in.
    pub fn read(headers: &HeaderMap, body: &Bytes, session: Option<&Session>) -> Result<Self, Refused> {
        if !same_origin(headers) {
            return Err(Refused("This form was sent from another site, so it was not carried out."));
        }
        let fields: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let form = Self { fields };
        if let Some(session) = session {
            let presented = form.get("_csrf");
            if !constant_time_eq(presented.as_bytes(), session.csrf.as_bytes()) {
                return Err(Refused("This form is out of date (or was not sent by the console). Reload the page and try again."));
            }
        }
        Ok(form)
    }

    /// Checks a submission whose fields were read otherwise (a file upload):
    /// same origin, and the session's token in `presented`.
    pub fn check(headers: &HeaderMap, presented: &str, session: &Session) -> Result<(), Refused> {
        if !same_origin(headers) {
            return Err(Refused("This form was sent from another site, so it was not carried out."));
        }
        if !constant_time_eq(presented.as_bytes(), session.csrf.as_bytes()) {
            return Err(Refused("This form is out of date (or was not sent by the console). Reload the page and try again."));
        }
        Ok(())
    }

    /// The field's value, trimmed; empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).unwrap_or("")
    }

    /// The field's value as sent (multi-line text keeps its spaces).
    pub fn raw(&self, name: &str) -> &str {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
    }

    /// Every value of a repeated field (checkboxes).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|(k, _)| k == name)
    }
}

/// A same-origin request, as browsers mark it. Browsers that send neither
/// header (none current) are refused for state changes.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site == "same-origin" || site == "none";
    }
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST)) else { return false };
    let (Ok(origin), Ok(host)) = (origin.to_str(), host.to_str()) else { return false };
    origin.split_once("://").is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

/// A form submission that is not carried out, and why.
pub struct Refused(&'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (StatusCode::FORBIDDEN, page::bare("Refused", html! { p { (self.0) } })).into_response()
    }
}

/// The token a session's forms carry: derived from the sealed cookie, which
/// another site can neither read nor guess.
fn csrf_token(cookie: &str) -> String {
    hex::encode(&Sha256::digest([b"sluice-console-form:".as_slice(), cookie.as_bytes()].concat())[..16])
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` that starts a session holding `key` until `expires_at`.
fn session_cookie(console: &Console, key: String, expires_at: i64) -> HeaderValue {
    let sealed = console.app.seal_session(&serde_json::to_vec(&Sealed { key, expires_at }).unwrap_or_default());
    let max_age = ((expires_at - now_ms()) / 1000).max(0);
    let secure = if console.secure_cookies { "; Secure" } else { "" };
    // Sealed text is base64url with `:` separators: a valid cookie value.
    HeaderValue::from_str(&format!("{COOKIE}={sealed}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"))
        .unwrap_or_else(|_| expired_cookie())
}

fn expired_cookie() -> HeaderValue {
    HeaderValue::from_static("sluice_session=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict")
}

/// Where to go after signing in: a console page, never another site.
fn next_page(raw: &str) -> String {
    if raw.starts_with("/console") && !raw.starts_with("//") && !raw.contains('\\') { raw.to_owned() } else { "/console".to_owned() }
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn sign_in_page(axum::extract::Query(q): axum::extract::Query<NextQuery>) -> Response {
    sign_in_form(q.next.as_deref().unwrap_or("/console"), None).into_response()
}

fn sign_in_form(next: &str, error: Option<&str>) -> maud::Markup {
    page::bare(
        "Sign in",
        html! {
            form.sign-in method="post" action="/console/sign-in" {
                h1 { "Sign in to sluice" }
                @if let Some(error) = error { p.error role="alert" { (error) } }
                label for="key" { "API key" }
                input #key type="password" name="key" autocomplete="off" required placeholder="sk_…";
                input type="hidden" name="next" value=(next_page(next));
                button type="submit" { "Sign in" }
                p.hint { "The first admin key is printed once when sluice first starts. A portal link signs you in by itself." }
            }
        },
    )
}

async fn sign_in(axum::extract::State(console): State, headers: HeaderMap, body: Bytes) -> Response {
    let form = match Form::read(&headers, &body, None) {
        Ok(form) => form,
        Err(refused) => return refused.into_response(),
    };
    let next = next_page(form.get("next"));
    let key = form.get("key");
    match console.app.authenticate(key).await {
        Ok(Some(_)) => {
            let cookie = session_cookie(&console, key.to_owned(), now_ms() + KEY_SESSION_MS);
            ([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response()
        }
        Ok(None) => (StatusCode::UNAUTHORIZED, sign_in_form(&next, Some("That key is unknown, revoked or expired."))).into_response(),
        Err(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, sign_in_form(&next, Some("The store cannot be reached; try again shortly."))).into_response()
        }
    }
}

/// Signing out is a form like any other: another site cannot sign one out.
async fn sign_out(_: Posted) -> Response {
    ([(header::SET_COOKIE, expired_cookie())], Redirect::to("/console/sign-in")).into_response()
}

/// A portal link asks before it is spent: link previewers and scanners
/// fetch URLs, and must not use up a single-use link.
async fn portal_page(Path(token): Path<String>) -> Response {
    page::bare(
        "Open the console",
        html! {
            form.sign-in method="post" action={"/console/portal/" (token)} {
                h1 { "sluice console" }
                p { "This single-use link opens the console for your organization." }
                button type="submit" { "Open the console" }
            }
        },
    )
    .into_response()
}

async fn portal_open(axum::extract::State(console): State, Path(token): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = Form::read(&headers, &body, None) {
        return refused.into_response();
    }
    match console.app.redeem_portal_link(&token).await {
        Ok(Some((secret, record))) => {
            let expires_at = record.expires_at.unwrap_or_else(now_ms);
            let cookie = session_cookie(&console, secret.expose().to_owned(), expires_at);
            ([(header::SET_COOKIE, cookie)], Redirect::to("/console")).into_response()
        }
        Ok(None) => (
            StatusCode::NOT_FOUND,
            page::bare("Link not valid", html! { p { "This link has been used already or has expired. Ask for a new one." } }),
        )
            .into_response(),
        Err(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, page::bare("Try again", html! { p { "The store cannot be reached; try again shortly." } }))
                .into_response()
        }
    }
}

/// The shell of a signed-in page.
impl Session {
    pub fn shell(&self, title: &str) -> Shell<'_> {
        Shell { title: title.to_owned(), session: self }
    }
}
