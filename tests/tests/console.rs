//! The console in a real headless Chromium (WebDriver), against a real
//! engine and real receivers on 127.0.0.1: the journeys an admin and a
//! portal user walk, hostile content, and the session's protections.
//! Screenshots of each page go to `target/console-screenshots/`.

use std::time::Duration;

use fantoccini::Locator;
use serde_json::{Value, json};
use sluice_tests::browser::Browser;
use sluice_tests::engine::{Engine, event_body};
use sluice_tests::receiver::{Behaviour, Receiver};

const ANSWERING: Behaviour = Behaviour { status: 200, delay: Duration::ZERO };
const FAILING: Behaviour = Behaviour { status: 500, delay: Duration::ZERO };

/// A path segment as the console writes it in links.
fn segment(raw: &str) -> String {
    raw.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

async fn sign_in(b: &Browser, engine: &Engine, key: &str) {
    b.goto(&format!("{}/console/sign-in", engine.url)).await;
    b.fill("#key", key).await;
    b.press("Sign in").await;
    b.find("header.top").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_configures_delivers_sees_a_failure_retried_and_replays() {
    let engine = Engine::start().await;
    let admin = engine.admin();
    let receiver = Receiver::start().await;
    let script = admin.upload_script("paid-orders").await;
    let b = Browser::start().await;
    println!("screenshots: {}", b.shots.display());

    // Not signed in: the root leads to the console, which asks for a key.
    b.goto(&format!("{}/", engine.url)).await;
    assert!(b.url().await.contains("/console/sign-in"), "{}", b.url().await);
    b.shot("01-sign-in").await;
    b.fill("#key", "sk_not-a-key-at-all").await;
    b.press("Sign in").await;
    assert!(b.text().await.contains("unknown, revoked or expired"));
    b.fill("#key", admin.key().expect("admin key")).await;
    b.press("Sign in").await;
    assert!(b.find("main h1").await.text().await.unwrap().contains("Overview"));

    // A configuration with a script, a bearer token and quick retries.
    b.goto(&format!("{}/console/configurations/new", engine.url)).await;
    b.fill("input[name=name]", "erp").await;
    b.fill("input[name=endpoint]", &format!("{}/hook", receiver.url)).await;
    b.fill("textarea[name=event_types]", "order.*").await;
    b.fill("input[name=script_id]", &script).await;
    b.fill("textarea[name=script_params]", "min_amount=100").await;
    b.select("select[name=auth_type]", "bearer").await;
    b.fill("input[name=auth_token]", "tok-console-123").await;
    b.fill("input[name=retry_max_attempts]", "3").await;
    b.fill("input[name=retry_initial_backoff_ms]", "1000").await;
    b.fill("input[name=retry_max_backoff_ms]", "2000").await;
    // A mistake first: the API's refusal is shown at its field.
    b.fill("input[name=deadline]", "soon").await;
    b.shot("02-configuration-form").await;
    b.press("Save").await;
    let refused = b.find(".field-error").await.text().await.unwrap();
    assert!(refused.contains("ISO 8601"), "{refused}");
    b.fill("input[name=deadline]", "PT5S").await;
    // The token field is a password field: typed again after a refusal.
    b.fill("input[name=auth_token]", "tok-console-123").await;
    b.press("Save").await;
    let created = b.text().await;
    assert!(created.contains("Configuration created") && created.contains("whsec_"), "{created}");
    b.click("a.button").await;
    b.press("Enable").await;
    let page = b.reload_until("enabled").await;
    assert!(page.contains("bearer (token set)") && !page.contains("tok-console-123"), "{page}");
    let config = b.url().await.rsplit('/').next().unwrap().to_owned();
    b.shot("03-configuration").await;

    // Services post events; the console shows them delivered, with attempts.
    admin
        .ingest(&[
            event_body("ord-1", "order.paid", "shop/eu", json!({"amount": 150})),
            event_body("ord-2", "order.paid", "shop/eu", json!({"amount": 5})),
        ])
        .await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].header("authorization"), Some("Bearer tok-console-123"));
    b.goto(&format!("{}/console/events", engine.url)).await;
    b.reload_until("ord-2").await;
    b.shot("04-events").await;
    b.goto(&format!("{}/console/events/ord-1", engine.url)).await;
    let page = b.reload_until("succeeded").await;
    assert!(page.contains("Attempt 1") && page.contains("shop/eu"), "{page}");
    b.click("details.attempt summary").await;
    let page = b.text().await;
    assert!(page.contains("\"Bearer ***\"") || page.contains("***"), "credentials are redacted: {page}");
    assert!(!page.contains("tok-console-123"), "{page}");
    b.shot("05-event").await;
    b.goto(&format!("{}/console/events/ord-2", engine.url)).await;
    let page = b.reload_until("filtered").await;
    assert!(page.contains("amount 5 is below 100"), "{page}");

    // The receiver fails: the failure and the retry show, then the success.
    receiver.set(FAILING);
    admin.ingest(&[event_body("ord-3", "order.paid", "shop/eu", json!({"amount": 300}))]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while receiver.arrived() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the failing attempt never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.set(ANSWERING);
    b.goto(&format!("{}/console/events/ord-3", engine.url)).await;
    let page = b.reload_until("Attempt 1: retry 500").await;
    assert!(page.contains("Attempt 1: retry 500"), "{page}");
    b.shot("06-event-retrying").await;
    let page = b.reload_until("Attempt 2: succeeded 200").await;
    assert!(page.contains("succeeded"), "{page}");

    // Replay ord-1 from its page (the button asks first).
    b.goto(&format!("{}/console/events/ord-1", engine.url)).await;
    b.press_and_confirm("Replay to every configuration").await;
    let page = b.reload_until("replays").await;
    assert!(page.contains("replays"), "{page}");
    receiver.wait_for(4).await;
    let event = admin.wait_for("/v1/events/ord-1", |e| e["deliveries"].as_array().is_some_and(|d| d.len() == 2)).await;
    assert!(event["deliveries"].as_array().unwrap().iter().any(|d| d["replay_of"].is_string()), "{event}");

    // Deliveries of the configuration, the keys page, the overview.
    b.goto(&format!("{}/console/deliveries?configuration_id={config}", engine.url)).await;
    let page = b.reload_until("ord-3").await;
    assert!(page.contains("ord-1") && page.contains("filtered"), "{page}");
    b.goto(&format!("{}/console/keys", engine.url)).await;
    assert!(b.text().await.contains("first admin key"));
    b.shot("07-keys").await;
    b.goto(&format!("{}/console", engine.url)).await;
    let page = b.text().await;
    // ord-1, its replay and ord-3 succeeded; ord-2 was filtered.
    assert!(page.contains("erp") && page.contains("4 deliveries") && page.contains("100.0 % succeeded"), "{page}");
    b.shot("08-overview").await;

    // Edit under If-Match: a change made meanwhile is explained, not overwritten.
    b.goto(&format!("{}/console/configurations/{config}/edit", engine.url)).await;
    b.fill("input[name=description]", "from the console").await;
    let current = admin.get(&format!("/v1/configurations/{config}")).await.expect(200);
    let mut changed = current.clone();
    changed["description"] = json!("changed elsewhere");
    let stripped: Value = json!({"name": "erp", "endpoint": current["endpoint"], "event_types": ["order.*"],
        "description": "changed elsewhere", "script": current["script"], "authorization": {"type": "bearer"}});
    admin.put(&format!("/v1/configurations/{config}"), current["version"].as_i64().unwrap(), &stripped).await.expect(200);
    b.press("Save").await;
    let page = b.text().await;
    assert!(page.contains("Someone changed this configuration"), "{page}");
    assert_eq!(admin.get(&format!("/v1/configurations/{config}")).await.expect(200)["description"], "changed elsewhere");
    b.shot("09-conflict").await;
    b.press("Save").await;
    b.reload_until("from the console").await;

    // Signing out ends the session.
    b.press("Sign out").await;
    b.goto(&format!("{}/console/configurations", engine.url)).await;
    assert!(b.url().await.contains("/console/sign-in"), "{}", b.url().await);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_link_opens_one_tenant_once_with_its_scopes() {
    let engine = Engine::start().await;
    let admin = engine.admin();
    let receiver = Receiver::start().await;
    let alpha = admin.enabled_config(json!({"name": "alpha-erp", "endpoint": receiver.url, "event_types": ["*"]})).await;
    admin.ingest(&[event_body("alpha-1", "order.paid", "shop", json!({}))]).await;
    let (beta, beta_key) = admin.tenant_with_key("beta", &["admin"]).await;
    let beta_api = engine.api(&beta_key);
    beta_api.enabled_config(json!({"name": "beta-erp", "endpoint": receiver.url, "event_types": ["*"]})).await;
    beta_api.ingest(&[event_body("beta-1", "order.paid", "shop", json!({}))]).await;

    // The operator makes a read-only link for beta.
    let link =
        admin.post(&format!("/v1/tenants/{beta}/portal-links"), &json!({"scopes": ["configurations:read", "logs:read"]})).await.expect(201);
    assert_eq!(link["tenant_id"], beta.as_str());
    let url = link["url"].as_str().expect("url").to_owned();
    assert!(url.starts_with(&format!("{}/console/portal/pt_", engine.url)), "{url}");
    // The same through a tenant's own admin key, for its own tenant only.
    let own = beta_api.post("/v1/portal-links", &json!({})).await.expect(201);
    assert_eq!(own["tenant_id"], beta.as_str());
    beta_api.post(&format!("/v1/tenants/{beta}/portal-links"), &json!({})).await.expect_error(403, "forbidden");
    admin.post("/v1/portal-links", &json!({"valid_for_seconds": 5})).await.expect_error(422, "invalid_duration");
    admin.post("/v1/portal-links", &json!({"scopes": ["everything"]})).await.expect_error(400, "invalid_request");
    engine
        .api(&beta_key)
        .post("/v1/tenants/ten_00000000000000000000000000000000/portal-links", &json!({}))
        .await
        .expect_error(403, "forbidden");

    let b = Browser::start().await;
    b.goto(&url).await;
    b.shot("10-portal-link").await;
    b.press("Open the console").await;
    let page = b.reload_until("beta-erp").await;
    assert!(!page.contains("alpha-erp"), "{page}");
    assert!(page.contains(&beta), "the header names the tenant: {page}");
    b.shot("11-portal-overview").await;
    // Read-only: no keys, no edits.
    assert!(b.client.find_all(Locator::Css("a[href='/console/keys']")).await.unwrap().is_empty());
    assert!(b.client.find_all(Locator::Css("a[href='/console/configurations/new']")).await.unwrap().is_empty());
    b.goto(&format!("{}/console/events", engine.url)).await;
    let page = b.reload_until("beta-1").await;
    assert!(!page.contains("alpha-1"), "{page}");
    // Another tenant's ids typed into the URL: not found.
    let alpha_id = alpha["id"].as_str().unwrap();
    b.goto(&format!("{}/console/configurations/{alpha_id}", engine.url)).await;
    assert!(b.text().await.contains("Not found"), "{}", b.text().await);
    b.goto(&format!("{}/console/events/alpha-1", engine.url)).await;
    assert!(b.text().await.contains("Not found"), "{}", b.text().await);
    b.shot("12-portal-not-found").await;
    // What the scopes do not allow, the API refuses, and the page says so.
    b.goto(&format!("{}/console/keys", engine.url)).await;
    assert!(b.text().await.contains("may not do that"), "{}", b.text().await);

    // Single use.
    b.goto(&url).await;
    b.press("Open the console").await;
    assert!(b.text().await.contains("used already or has expired"), "{}", b.text().await);
    b.close().await;

    // The session's key is listed with its expiry; revoking it ends it.
    let keys = beta_api.get("/v1/keys").await.expect(200);
    let session_key = keys["items"].as_array().unwrap().iter().find(|k| k["expires_at"].is_string()).expect("the session's key").clone();
    assert_eq!(session_key["scopes"], json!(["configurations:read", "logs:read"]));
    assert!(session_key["name"].as_str().unwrap().contains("portal link"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_content_is_shown_as_text_and_runs_nothing() {
    let engine = Engine::start().await;
    let admin = engine.admin();
    let receiver = Receiver::start().await;
    receiver.set_answer("<script>window.pwned='response'</script>", &[("x-evil", "<img src=x onerror=window.pwned='header'>")]);
    admin.enabled_config(json!({"name": "<b>bold</b> \"quoted\"", "endpoint": receiver.url, "event_types": ["*"]})).await;
    let id = "<script>window.pwned='id'</script>\"><img/src=x/onerror=window.pwned='id2'>";
    let mut event = event_body(
        id,
        "order.paid",
        "shop/<script>window.pwned='unit'</script>",
        json!({"html": "<script>window.pwned='payload'</script>", "attr": "\"><img src=x onerror=\"window.pwned='attr'\">"}),
    );
    event["source"] = json!({"application": "<script>window.pwned='app'</script>", "user": "\" onmouseover=\"window.pwned='user'"});
    admin.ingest(&[event.clone()]).await;
    // A type cannot carry markup at all: refused at the edge.
    let bad_type = event_body("bad-type", "<script>alert(1)</script>", "shop", json!({}));
    admin.post("/v1/events", &json!([bad_type])).await.expect_error(422, "invalid_event");
    receiver.wait_for(1).await;

    let b = Browser::start().await;
    sign_in(&b, &engine, admin.key().unwrap()).await;
    for page in [format!("/console/events/{}", segment(id)), "/console/events".to_owned(), "/console".to_owned()] {
        b.goto(&format!("{}{page}", engine.url)).await;
        if page.starts_with("/console/events/") {
            b.reload_until("succeeded").await;
            b.click("details.attempt summary").await;
        }
        let text = b.text().await;
        let shown = if page == "/console" { "<b>bold</b> \"quoted\"" } else { "<script>window.pwned=" };
        assert!(text.contains(shown), "{page} shows the markup as text: {text}");
        let ran = b.client.execute("return typeof window.pwned", vec![]).await.expect("run a check");
        assert_eq!(ran, json!("undefined"), "{page}: something ran");
        let injected = b
            .client
            .execute("return document.querySelectorAll('img, [onerror], [onmouseover], script:not([src]), b').length", vec![])
            .await
            .expect("count elements");
        assert_eq!(injected, json!(0), "{page}: markup from outside became elements");
    }
    let text = b.text().await;
    assert!(text.contains("<b>bold</b> \"quoted\""), "{text}");
    b.goto(&format!("{}/console/events/{}", engine.url, segment(id))).await;
    b.click("details.attempt summary").await;
    let text = b.text().await;
    for shown in ["<script>window.pwned='payload'</script>", "<script>window.pwned='response'</script>", "onmouseover=", "shop/<script>"] {
        assert!(text.contains(shown), "`{shown}` shown as text: {text}");
    }
    b.shot("13-hostile-event").await;
    b.close().await;
}

/// A client that does not follow redirects, to read the console's answers.
fn plain() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

fn hidden_csrf(page: &str) -> String {
    let at = page.find("name=\"_csrf\" value=\"").expect("a form token") + "name=\"_csrf\" value=\"".len();
    page[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_sealed_cookies_and_cross_site_forms_are_refused() {
    let engine = Engine::start().await;
    let admin = engine.admin();
    let receiver = Receiver::start().await;
    let config = admin.enabled_config(json!({"name": "erp", "endpoint": receiver.url, "event_types": ["*"]})).await;
    let config = config["id"].as_str().unwrap().to_owned();
    let http = plain();
    let origin = engine.url.clone();

    // Pages carry a policy that allows no inline script, and no framing.
    let answer = http.get(format!("{}/console", engine.url)).send().await.unwrap();
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()["location"], "/console/sign-in?next=%2Fconsole");
    let answer = http.get(format!("{}/console/sign-in", engine.url)).send().await.unwrap();
    let csp = answer.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"), "{csp}");

    // Signing in from another site is refused; from the console, a cookie.
    let key = admin.key().unwrap().to_owned();
    let form = format!("key={key}&next=%2Fconsole");
    let sign_in = |origin: String| {
        http.post(format!("{}/console/sign-in", engine.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", origin)
            .body(form.clone())
            .send()
    };
    assert_eq!(sign_in("http://evil.example".into()).await.unwrap().status(), 403);
    let answer = sign_in(origin.clone()).await.unwrap();
    assert_eq!(answer.status(), 303);
    let set_cookie = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age="] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains(&key[3..]), "the cookie does not show the key: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let page = http.get(format!("{}/console/configurations/{config}", engine.url)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let token = hidden_csrf(&page.text().await.unwrap());
    let disable = |token: String, site: &'static str| {
        http.post(format!("{}/console/configurations/{config}/disable", engine.url))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", site)
            .body(format!("_csrf={token}"))
            .send()
    };
    // Without the page's token, or from another site: refused, nothing done.
    assert_eq!(disable("forged".into(), "same-origin").await.unwrap().status(), 403);
    assert_eq!(disable(token.clone(), "cross-site").await.unwrap().status(), 403);
    assert_eq!(admin.get(&format!("/v1/configurations/{config}")).await.expect(200)["status"], "enabled");
    assert_eq!(disable(token, "same-origin").await.unwrap().status(), 303);
    assert_eq!(admin.get(&format!("/v1/configurations/{config}")).await.expect(200)["status"], "disabled");

    // A tampered cookie is no session.
    let mut tampered = cookie.clone();
    tampered.pop();
    tampered.push(if cookie.ends_with('A') { 'B' } else { 'A' });
    let answer = http.get(format!("{}/console", engine.url)).header("cookie", tampered).send().await.unwrap();
    assert_eq!(answer.status(), 303);

    // Revoking the key ends the sessions signed in with it.
    let other = admin.post("/v1/keys", &json!({"name": "short-lived", "scopes": ["logs:read"]})).await.expect(201);
    let secret = other["secret"].as_str().unwrap();
    let answer = http
        .post(format!("{}/console/sign-in", engine.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", origin)
        .body(format!("key={secret}"))
        .send()
        .await
        .unwrap();
    let cookie = answer.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let events = |cookie: String| http.get(format!("{}/console/events", engine.url)).header("cookie", cookie).send();
    assert_eq!(events(cookie.clone()).await.unwrap().status(), 200);
    admin.delete(&format!("/v1/keys/{}", other["id"].as_str().unwrap())).await.expect(200);
    assert_eq!(events(cookie).await.unwrap().status(), 303);

    // The console answers unknown pages as pages, and the API as JSON.
    let answer = http.get(format!("{}/console/nothing/here", engine.url)).send().await.unwrap();
    assert_eq!(answer.status(), 404);
    assert!(answer.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_uploaded_listed_with_their_users_and_run_on_events() {
    let engine = Engine::start().await;
    let admin = engine.admin();
    let receiver = Receiver::start().await;
    let b = Browser::start().await;
    sign_in(&b, &engine, admin.key().unwrap()).await;
    let wasm = sluice_tests::root().join("target/scripts/paid-orders.wasm");
    let wasm = wasm.canonicalize().expect("scripts/build.sh built paid-orders");

    // Two uploads under one name: versions 1 and 2.
    for version in [1, 2] {
        b.goto(&format!("{}/console/scripts", engine.url)).await;
        b.fill("input[name=name]", "paid-orders").await;
        b.find("input[name=file]").await.send_keys(wasm.to_str().unwrap()).await.expect("choose the file");
        b.press("Upload").await;
        let title = b.find("main h1").await.text().await.unwrap();
        assert_eq!(title, format!("paid-orders v{version}"));
    }
    let scripts = admin.get("/v1/scripts?name=paid-orders").await.expect(200);
    let v1 = scripts["items"].as_array().unwrap().iter().find(|s| s["version"] == 1).unwrap()["id"].as_str().unwrap().to_owned();
    admin
        .enabled_config(json!({"name": "erp", "endpoint": receiver.url, "event_types": ["*"],
            "script": {"id": v1, "params": {"min_amount": "100"}}}))
        .await;
    b.goto(&format!("{}/console/scripts", engine.url)).await;
    let page = b.text().await;
    assert_eq!(page.matches("paid-orders").count(), 2, "{page}");
    assert!(page.contains("erp") && page.contains("no configuration"), "v1 is used, v2 is not: {page}");

    // Run v1 on the sample event, with parameters that deliver, then skip.
    b.goto(&format!("{}/console/scripts/{v1}", engine.url)).await;
    b.fill("textarea[name=params]", "min_amount=100").await;
    b.press("Run").await;
    let page = b.text().await;
    assert!(page.contains("Decision: deliver") && page.contains("order amount 150"), "{page}");
    b.fill("textarea[name=params]", "min_amount=1000").await;
    b.press("Run").await;
    let page = b.text().await;
    assert!(page.contains("Decision: skip amount 150 is below 1000"), "{page}");
    b.shot("14-script-run").await;

    // On a stored event, by id; and a broken event is the API's refusal.
    admin.ingest(&[event_body("big-order", "order.paid", "shop", json!({"amount": 12345678901234567890u64}))]).await;
    b.fill("input[name=event_id]", "big-order").await;
    b.fill("textarea[name=params]", "").await;
    b.press("Run").await;
    let page = b.text().await;
    assert!(page.contains("Decision: deliver") && page.contains("12345678901234567890"), "{page}");
    b.fill("input[name=event_id]", "").await;
    b.fill("textarea[name=event]", "{\"type\": \"order paid\"").await;
    b.press("Run").await;
    assert!(b.find(".error").await.text().await.unwrap().contains("malformed_json"), "{}", b.text().await);
    b.fill("input[name=event_id]", "no-such-event").await;
    b.press("Run").await;
    assert!(b.text().await.contains("not_found"), "{}", b.text().await);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_shows_what_a_candidate_changes_then_the_configuration_switches() {
    let engine = Engine::start().await;
    let admin = engine.admin();
    let receiver = Receiver::start().await;
    let script = admin.upload_script("paid-orders").await;
    let config = admin
        .enabled_config(json!({"name": "erp", "endpoint": receiver.url, "event_types": ["*"],
            "script": {"id": script, "params": {"min_amount": "100"}}}))
        .await;
    let id = config["id"].as_str().unwrap().to_owned();
    let amounts = [10, 40, 60, 75, 99, 100, 150, 20, 55, 500];
    let events: Vec<Value> =
        amounts.iter().enumerate().map(|(i, a)| event_body(&format!("p-{i}"), "order.paid", "shop", json!({"amount": a}))).collect();
    admin.ingest(&events).await;
    receiver.wait_for(3).await;
    admin.wait_for(&format!("/v1/deliveries?configuration_id={id}"), |d| d["items"].as_array().is_some_and(|i| i.len() == 10)).await;
    // Independently: with 50 instead of 100, the amounts in [50, 100) are newly delivered.
    let newly: Vec<String> = amounts.iter().enumerate().filter(|(_, a)| (50..100).contains(*a)).map(|(i, _)| format!("p-{i}")).collect();

    let b = Browser::start().await;
    sign_in(&b, &engine, admin.key().unwrap()).await;
    b.goto(&format!("{}/console/configurations/{id}", engine.url)).await;
    b.click("a.button[href$='/preview']").await;
    b.fill("textarea[name=params]", "min_amount=50").await;
    b.press("Preview").await;
    let page = b.text().await;
    assert!(
        page.contains(&format!("10 events: {} unchanged, {} newly delivered, 0 newly skipped", 10 - newly.len(), newly.len())),
        "{page}"
    );
    let rows = b.client.find_all(Locator::Css("table.preview tbody tr")).await.unwrap();
    assert_eq!(rows.len(), newly.len(), "{page}");
    for event in &newly {
        assert!(page.contains(event.as_str()), "{event}: {page}");
    }
    assert_eq!(receiver.received().len(), 3, "a preview sends nothing");
    b.shot("15-preview").await;

    b.press_and_confirm("Switch the configuration to this candidate").await;
    let switched = admin.get(&format!("/v1/configurations/{id}")).await.expect(200);
    assert_eq!(switched["script"]["params"], json!({"min_amount": "50"}), "{switched}");
    assert_eq!(switched["version"], config["version"].as_i64().unwrap() + 2, "enable, then the switch");
    admin.ingest(&[event_body("after", "order.paid", "shop", json!({"amount": 70}))]).await;
    receiver.wait_for(4).await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosted_catcher_shows_deliveries_arriving_with_their_signatures_checked() {
    // Loopback refused, as in production: the catcher is a case of its own.
    let engine = Engine::start_with(&[("SLUICE_ALLOW_DESTINATIONS", "")]).await;
    let admin = engine.admin();
    let b = Browser::start().await;
    sign_in(&b, &engine, admin.key().unwrap()).await;
    b.goto(&format!("{}/console/catchers", engine.url)).await;
    b.fill("input[name=name]", "my-catcher").await;
    b.press("Create catcher").await;
    let url = b.find("pre.secret").await.text().await.unwrap();
    assert!(url.starts_with(&format!("{}/catch/ct_", engine.url)), "{url}");
    b.click("a.button[href^='/console/configurations/new']").await;
    assert_eq!(b.find("input[name=endpoint]").await.prop("value").await.unwrap().as_deref(), Some(url.as_str()));
    b.press("Save").await;
    assert!(b.text().await.contains("Configuration created"), "{}", b.text().await);
    b.click("a.button").await;
    b.press("Enable").await;
    admin.ingest(&[event_body("caught-1", "order.paid", "shop", json!({"note": "<i>hello</i>"}))]).await;

    b.goto(&format!("{}/console/catchers", engine.url)).await;
    b.click("table.list a").await;
    // The page reloads itself: the delivery shows up without a click.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = b.text().await;
        if text.contains("signed by my-catcher") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the delivery never showed: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.click("details.attempt summary").await;
    let text = b.text().await;
    assert!(text.contains("caught-1") && text.contains("<i>hello</i>") && text.contains("webhook-signature"), "{text}");
    b.shot("16-catcher").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_uploaded_as_a_pkcs12_file_and_its_expiry_shown() {
    use base64::Engine as _;
    let engine = Engine::start().await;
    let admin = engine.admin();
    let receiver = Receiver::start().await;
    // A client certificate valid for 20 days (so: expiring), as a .p12 file.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("parameters");
    params.distinguished_name.push(rcgen::DnType::CommonName, "console-client");
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(20);
    let cert = params.self_signed(&key).expect("certificate");
    let chain = p12_keystore::PrivateKeyChain::new(
        b"client-key".as_slice(),
        p12_keystore::PrivateKey::from_der(&key.serialize_der()).expect("PKCS#8 key"),
        [p12_keystore::Certificate::from_der(cert.der()).expect("certificate")],
    );
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry("client", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client.p12");
    std::fs::write(&file, store.writer("p12-Passw0rd!").write().expect("PKCS#12")).unwrap();

    let b = Browser::start().await;
    sign_in(&b, &engine, admin.key().unwrap()).await;
    b.goto(&format!("{}/console/configurations/new", engine.url)).await;
    b.fill("input[name=name]", "mtls").await;
    b.fill("input[name=endpoint]", &receiver.url).await;
    b.select("select[name=auth_type]", "client_certificate").await;
    b.find("#p12-file").await.send_keys(file.to_str().unwrap()).await.expect("choose the file");
    // The page's script reads the file into the form.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while b.find("textarea[name=pkcs12_base64]").await.prop("value").await.unwrap().unwrap_or_default().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the file was never read into the form");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let filled = b.find("textarea[name=pkcs12_base64]").await.prop("value").await.unwrap().unwrap();
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(&filled).unwrap(), std::fs::read(&file).unwrap());
    b.fill("input[name=pkcs12_password]", "wrong").await;
    b.press("Save").await;
    assert!(b.find(".field-error").await.text().await.unwrap().to_lowercase().contains("password"), "{}", b.text().await);
    // The refused form comes back with the file's content still in it.
    let kept = b.find("textarea[name=pkcs12_base64]").await.prop("value").await.unwrap().unwrap();
    assert_eq!(kept, filled);
    b.fill("input[name=pkcs12_password]", "p12-Passw0rd!").await;
    b.press("Save").await;
    assert!(b.text().await.contains("Configuration created"), "{}", b.text().await);
    b.click("a.button").await;
    let page = b.text().await;
    assert!(page.contains("client_certificate") && page.contains("certificate expires") && page.contains("expiring"), "{page}");
    assert!(!page.contains("PRIVATE KEY"), "{page}");
    b.shot("17-client-certificate").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_types_are_listed_and_described() {
    let engine = Engine::start().await;
    let admin = engine.admin();
    admin.ingest(&[event_body("t-1", "invoice.sent", "shop", json!({}))]).await;
    let b = Browser::start().await;
    sign_in(&b, &engine, admin.key().unwrap()).await;
    b.goto(&format!("{}/console/event-types", engine.url)).await;
    assert!(b.text().await.contains("invoice.sent"));
    b.fill("input[name=name]", "invoice.sent").await;
    b.fill("input[name=description]", "An invoice left <b>accounting</b>").await;
    b.press("Save").await;
    assert!(b.text().await.contains("An invoice left <b>accounting</b>"), "{}", b.text().await);
    b.fill("input[name=name]", "not a type").await;
    b.press("Save").await;
    assert!(b.text().await.contains("invalid_event_type"), "{}", b.text().await);

    // Tenants and their quotas (the operator's).
    b.goto(&format!("{}/console/tenants", engine.url)).await;
    b.fill("section input[name=name]", "gamma").await;
    b.fill("section input[name=monthly_quota]", "5").await;
    b.press("Create tenant").await;
    let row = "//tr[td[normalize-space(.)='gamma']]";
    let quota = b.client.find(Locator::XPath(&format!("{row}//input[@name='monthly_quota']"))).await.expect("gamma's quota field");
    assert_eq!(quota.prop("value").await.unwrap().as_deref(), Some("5"));
    quota.clear().await.unwrap();
    quota.send_keys("7").await.unwrap();
    b.client.find(Locator::XPath(&format!("{row}//button"))).await.unwrap().click().await.unwrap();
    let tenants = admin
        .wait_for("/v1/tenants", |t| t["items"].as_array().unwrap().iter().any(|t| t["name"] == "gamma" && t["monthly_quota"] == 7))
        .await;
    assert!(tenants.to_string().contains("gamma"));
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_https_cookies_are_secure_and_links_use_the_public_url() {
    let engine = Engine::start_with(&[("SLUICE_PUBLIC_URL", "https://sluice.example")]).await;
    let admin = engine.admin();
    let answer = plain()
        .post(format!("{}/console/sign-in", engine.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", &engine.url)
        .body(format!("key={}", admin.key().unwrap()))
        .send()
        .await
        .unwrap();
    let set_cookie = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
    let link = admin.post("/v1/portal-links", &json!({})).await.expect(201);
    assert!(link["url"].as_str().unwrap().starts_with("https://sluice.example/console/portal/pt_"), "{link}");
    let catcher = admin.post("/v1/catchers", &json!({})).await.expect(201);
    let url = catcher["url"].as_str().unwrap();
    assert!(url.starts_with("https://sluice.example/catch/ct_"), "{url}");
    // The engine knows that origin as its own: a configuration may name it.
    admin.post("/v1/configurations", &json!({"name": "c", "endpoint": url, "event_types": ["*"]})).await.expect(201);
}
