//! The admin command line: `sluice configurations|scripts|events|
//! deliveries|keys|tenants …` against a server's API. Each command is one
//! API call (a few for `update` and `tail`), shown as a table for people or,
//! with `--json`, as the API's own JSON for programs; a refusal shows the
//! API's status, code and message.
//!
//! This module owns the commands, their tables' columns and how a value is
//! shown. It speaks only HTTP to the API, never to the engine's own code,
//! and it must never print a secret but the one the API shows once (a new
//! key, a signing secret), nor text from the server raw: control characters
//! are shown escaped, so an event type cannot drive the terminal.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use comfy_table::{ContentArrangement, Table, presets};
use reqwest::Method;
use serde_json::{Map, Value, json};

/// Where the server is, the key, and how to print.
#[derive(Debug, Args)]
pub struct Connection {
    /// The server's URL.
    #[arg(long, global = true, env = "SLUICE_URL", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// An API key (or SLUICE_KEY).
    #[arg(long, global = true, env = "SLUICE_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// How many items a list shows, newest first.
#[derive(Debug, Args)]
pub struct Limit {
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

#[derive(Debug, Subcommand)]
pub enum Configurations {
    /// Lists export configurations.
    List(Limit),
    /// Shows one configuration.
    Show {
        id: String,
    },
    /// Creates a configuration from a JSON or TOML file (`-`: standard
    /// input); it starts disabled, and its signing secret is shown once.
    Create {
        file: PathBuf,
    },
    /// Replaces a configuration with a JSON or TOML file, at the version it
    /// has now (a change made meanwhile is refused, not overwritten).
    Update {
        id: String,
        file: PathBuf,
    },
    Enable {
        id: String,
    },
    Disable {
        id: String,
    },
    /// Sends one event through it now (a made-up one, or --event FILE) and
    /// shows the decision and the attempt.
    Test {
        id: String,
        #[arg(long)]
        event: Option<PathBuf>,
    },
    /// Replaces the signing secret with a new one, shown once; the old one
    /// keeps signing for the grace period.
    RotateSecret {
        id: String,
        /// How long the old secret keeps signing, in seconds (default a day).
        #[arg(long)]
        grace_seconds: Option<u64>,
    },
    /// Sends again the deliveries that failed in a window (RFC 3339 times).
    Recover {
        id: String,
        #[arg(long)]
        since: String,
        #[arg(long)]
        until: Option<String>,
        /// Also route the events that arrived while it was disabled.
        #[arg(long)]
        include_disabled_period: bool,
    },
    /// Its deliveries in the last hour and day, and its backlog.
    Stats {
        id: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Scripts {
    /// Lists script versions.
    List(Limit),
    Show {
        id: String,
    },
    /// Deletes a script version no configuration runs.
    Delete {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Events {
    /// Lists events, newest first.
    List {
        #[command(flatten)]
        limit: Limit,
        /// An exact event type.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// An organization unit and those beneath it.
        #[arg(long)]
        unit: Option<String>,
        /// pending, done or failed.
        #[arg(long)]
        status: Option<String>,
        /// Received at or after (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Received before (RFC 3339).
        #[arg(long)]
        until: Option<String>,
    },
    /// Shows an event and its deliveries.
    Show { id: String },
    /// Sends an event again (to every configuration that had it, or one).
    Replay {
        id: String,
        #[arg(long)]
        configuration: Option<String>,
    },
    /// Follows deliveries as they are made and settle, until Ctrl-C.
    Tail {
        /// Only this configuration's.
        #[arg(long)]
        configuration: Option<String>,
        /// Stop after printing this many lines.
        #[arg(long)]
        max: Option<usize>,
        /// How often to ask, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        every_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum Deliveries {
    /// Lists deliveries, newest first.
    List {
        #[command(flatten)]
        limit: Limit,
        #[arg(long)]
        configuration: Option<String>,
        /// pending, succeeded, failed, filtered, script_error.
        #[arg(long)]
        status: Option<String>,
    },
    /// Shows a delivery and its attempts.
    Show { id: String },
    /// Runs the recorded script version again on the stored event.
    Explain { id: String },
}

#[derive(Debug, Subcommand)]
pub enum Keys {
    /// Lists the tenant's API keys.
    List(Limit),
    /// Creates a key; its secret is shown once.
    Create {
        #[arg(long)]
        name: String,
        /// A scope; repeatable (events:write, configurations:read,
        /// configurations:write, scripts:write, logs:read, metrics:read, admin).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
    Revoke {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Tenants {
    /// Lists tenants (operator keys).
    List(Limit),
    /// Creates a tenant (operator keys).
    Create {
        name: String,
        /// Events per calendar month.
        #[arg(long)]
        quota: Option<i64>,
    },
    /// Renames a tenant or sets its quota (operator keys).
    Update {
        id: String,
        #[arg(long)]
        name: String,
        /// Events per calendar month; left out: unlimited.
        #[arg(long)]
        quota: Option<i64>,
    },
}

/// A column: its heading and where its value is in an item.
type Column = (&'static str, &'static str);

const CONFIGURATIONS: &[Column] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("STATUS", "/status"),
    ("ENDPOINT", "/endpoint"),
    ("EVENT TYPES", "/event_types"),
    ("VERSION", "/version"),
];
const SCRIPTS: &[Column] =
    &[("ID", "/id"), ("NAME", "/name"), ("VERSION", "/version"), ("SIZE", "/size"), ("WIT", "/wit_version"), ("CREATED", "/created_at")];
const EVENTS: &[Column] =
    &[("ID", "/id"), ("TYPE", "/type"), ("UNIT", "/organization_unit"), ("RECEIVED", "/received_at"), ("ROUTED", "/routed")];
const DELIVERIES: &[Column] = &[
    ("ID", "/id"),
    ("EVENT", "/event_id"),
    ("CONFIGURATION", "/configuration_id"),
    ("STATUS", "/status"),
    ("ATTEMPTS", "/attempts"),
    ("REASON", "/reason"),
    ("UPDATED", "/updated_at"),
];
const ATTEMPTS: &[Column] = &[
    ("#", "/number"),
    ("STARTED", "/started_at"),
    ("MS", "/duration_ms"),
    ("STATUS", "/response_status"),
    ("OUTCOME", "/outcome"),
    ("ERROR", "/error"),
];
const KEYS: &[Column] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("PREFIX", "/prefix"),
    ("SCOPES", "/scopes"),
    ("EXPIRES", "/expires_at"),
    ("REVOKED", "/revoked_at"),
];
const TENANTS: &[Column] = &[("ID", "/id"), ("NAME", "/name"), ("MONTHLY QUOTA", "/monthly_quota"), ("CREATED", "/created_at")];
const TAIL: &[Column] = &[
    ("UPDATED", "/updated_at"),
    ("DELIVERY", "/id"),
    ("EVENT", "/event_id"),
    ("CONFIGURATION", "/configuration_id"),
    ("STATUS", "/status"),
    ("ATTEMPTS", "/attempts"),
];

/// What a command prints: its answer, and how people read it.
struct Shown {
    answer: Value,
    view: View,
}

enum View {
    /// A list of items, one row each.
    Rows(&'static [Column]),
    /// One item, a field per line (nested values as compact JSON).
    Record,
    /// One item, then a list inside it as rows.
    RecordWith(&'static str, &'static [Column]),
}

/// A server's API, with a key.
pub struct Client {
    url: String,
    key: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(connection: &Connection) -> Result<Client, String> {
        let key = connection.key.clone().ok_or("no API key: pass --key or set SLUICE_KEY")?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().map_err(|e| e.to_string())?;
        Ok(Client { url: connection.server.trim_end_matches('/').to_owned(), key, http })
    }

    /// One call; the answer's JSON and headers, or the API's refusal.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> Result<(Value, reqwest::header::HeaderMap), String> {
        self.call_at(method, &format!("{}{path}", self.url), body, headers).await
    }

    async fn call_at(
        &self,
        method: Method,
        url: &str,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> Result<(Value, reqwest::header::HeaderMap), String> {
        let mut request = self.http.request(method, url).bearer_auth(&self.key);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.map_err(|e| format!("{}: {e}", self.url))?;
        let (status, headers) = (response.status(), response.headers().clone());
        let text = response.text().await.map_err(|e| format!("{}: {e}", self.url))?;
        let value: Value = if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if status.is_success() {
            return Ok((value, headers));
        }
        Err(match (value["code"].as_str(), value["message"].as_str()) {
            (Some(code), Some(message)) => match value["field"].as_str() {
                Some(field) => format!("{status} {code}: {message} (field `{field}`)"),
                None => format!("{status} {code}: {message}"),
            },
            _ => format!("{status}: {}", printable(&value.to_string())),
        })
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        Ok(self.call(Method::GET, path, None, &[]).await?.0)
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        Ok(self.call(Method::POST, path, Some(body), &[]).await?.0)
    }

    /// Up to `limit` items of a list, following its pages.
    async fn list(&self, path: &str, query: &[(&str, Option<String>)], limit: usize) -> Result<Value, String> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.url)).map_err(|e| format!("{}: not a URL: {e}", self.url))?;
        for (name, value) in query {
            if let Some(value) = value {
                url.query_pairs_mut().append_pair(name, value);
            }
        }
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        while items.len() < limit {
            let mut page = url.clone();
            page.query_pairs_mut().append_pair("limit", &(limit - items.len()).min(500).to_string());
            if let Some(c) = &cursor {
                page.query_pairs_mut().append_pair("cursor", c);
            }
            let (answer, _) = self.call_at(Method::GET, page.as_str(), None, &[]).await?;
            items.extend(answer["items"].as_array().cloned().unwrap_or_default());
            match answer["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        items.truncate(limit);
        Ok(Value::Array(items))
    }
}

fn configuration(id: &str) -> String {
    format!("/v1/configurations/{}", segment(id))
}

/// An id as one path segment: nothing in it can reach another path.
fn segment(id: &str) -> String {
    form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

pub async fn configurations(client: &Client, command: Configurations) -> Result<Output, String> {
    let shown = match command {
        Configurations::List(Limit { limit }) => {
            Shown { answer: client.list("/v1/configurations", &[], limit).await?, view: View::Rows(CONFIGURATIONS) }
        }
        Configurations::Show { id } => record(client.get(&configuration(&id)).await?),
        Configurations::Create { file } => record(client.post("/v1/configurations", read_spec(&file)?).await?),
        Configurations::Update { id, file } => {
            let spec = read_spec(&file)?;
            let (_, headers) = client.call(Method::GET, &configuration(&id), None, &[]).await?;
            let version = headers.get("etag").and_then(|v| v.to_str().ok()).ok_or("the server sent no ETag")?.to_owned();
            record(client.call(Method::PUT, &configuration(&id), Some(spec), &[("if-match", version)]).await?.0)
        }
        Configurations::Enable { id } => record(client.post(&format!("{}/enable", configuration(&id)), json!({})).await?),
        Configurations::Disable { id } => record(client.post(&format!("{}/disable", configuration(&id)), json!({})).await?),
        Configurations::Test { id, event } => {
            let body = match event {
                Some(file) => json!({"event": read_json(&file)?}),
                None => json!({}),
            };
            record(client.post(&format!("{}/test", configuration(&id)), body).await?)
        }
        Configurations::RotateSecret { id, grace_seconds } => {
            let mut body = Map::new();
            if let Some(s) = grace_seconds {
                body.insert("grace_period_ms".into(), json!(s.saturating_mul(1000)));
            }
            record(client.post(&format!("{}/rotate-secret", configuration(&id)), Value::Object(body)).await?)
        }
        Configurations::Recover { id, since, until, include_disabled_period } => record(
            client
                .post(
                    &format!("{}/recover", configuration(&id)),
                    json!({"since": since, "until": until, "include_disabled_period": include_disabled_period}),
                )
                .await?,
        ),
        Configurations::Stats { id } => record(client.get(&format!("{}/stats", configuration(&id))).await?),
        Configurations::Delete { id } => {
            client.call(Method::DELETE, &configuration(&id), None, &[]).await?;
            record(json!({"deleted": id}))
        }
    };
    Ok(print(shown))
}

pub async fn scripts(client: &Client, command: Scripts) -> Result<Output, String> {
    let shown = match command {
        Scripts::List(Limit { limit }) => Shown { answer: client.list("/v1/scripts", &[], limit).await?, view: View::Rows(SCRIPTS) },
        Scripts::Show { id } => record(client.get(&format!("/v1/scripts/{}", segment(&id))).await?),
        Scripts::Delete { id } => {
            client.call(Method::DELETE, &format!("/v1/scripts/{}", segment(&id)), None, &[]).await?;
            record(json!({"deleted": id}))
        }
    };
    Ok(print(shown))
}

pub async fn events(client: &Client, command: Events, json: bool) -> Result<Output, String> {
    let shown = match command {
        Events::List { limit: Limit { limit }, event_type, unit, status, since, until } => {
            let query = [("type", event_type), ("organization_unit", unit), ("status", status), ("since", since), ("until", until)];
            Shown { answer: client.list("/v1/events", &query, limit).await?, view: View::Rows(EVENTS) }
        }
        Events::Show { id } => {
            Shown { answer: client.get(&format!("/v1/events/{}", segment(&id))).await?, view: View::RecordWith("deliveries", DELIVERIES) }
        }
        Events::Replay { id, configuration } => {
            let body = match configuration {
                Some(c) => json!({"configuration_id": c}),
                None => json!({}),
            };
            Shown {
                answer: client.post(&format!("/v1/events/{}/replay", segment(&id)), body).await?,
                view: View::RecordWith("deliveries", &[("DELIVERY", "/id"), ("CONFIGURATION", "/configuration_id"), ("STATUS", "/status")]),
            }
        }
        Events::Tail { configuration, max, every_ms } => {
            return tail(client, configuration, max, Duration::from_millis(every_ms.max(100)), json).await;
        }
    };
    Ok(print(shown))
}

pub async fn deliveries(client: &Client, command: Deliveries) -> Result<Output, String> {
    let shown = match command {
        Deliveries::List { limit: Limit { limit }, configuration, status } => {
            let query = [("configuration_id", configuration), ("status", status)];
            Shown { answer: client.list("/v1/deliveries", &query, limit).await?, view: View::Rows(DELIVERIES) }
        }
        Deliveries::Show { id } => {
            let mut delivery = client.get(&format!("/v1/deliveries/{}", segment(&id))).await?;
            let attempts = client.list("/v1/attempts", &[("delivery_id", Some(id))], 500).await?;
            delivery["attempts_made"] = attempts;
            Shown { answer: delivery, view: View::RecordWith("attempts_made", ATTEMPTS) }
        }
        Deliveries::Explain { id } => record(client.get(&format!("/v1/deliveries/{}/explain", segment(&id))).await?),
    };
    Ok(print(shown))
}

pub async fn keys(client: &Client, command: Keys) -> Result<Output, String> {
    let shown = match command {
        Keys::List(Limit { limit }) => Shown { answer: client.list("/v1/keys", &[], limit).await?, view: View::Rows(KEYS) },
        Keys::Create { name, scopes } => record(client.post("/v1/keys", json!({"name": name, "scopes": scopes})).await?),
        Keys::Revoke { id } => record(client.call(Method::DELETE, &format!("/v1/keys/{}", segment(&id)), None, &[]).await?.0),
    };
    Ok(print(shown))
}

pub async fn tenants(client: &Client, command: Tenants) -> Result<Output, String> {
    let shown = match command {
        Tenants::List(Limit { limit }) => Shown { answer: client.list("/v1/tenants", &[], limit).await?, view: View::Rows(TENANTS) },
        Tenants::Create { name, quota } => record(client.post("/v1/tenants", json!({"name": name, "monthly_quota": quota})).await?),
        Tenants::Update { id, name, quota } => record(
            client
                .call(Method::PUT, &format!("/v1/tenants/{}", segment(&id)), Some(json!({"name": name, "monthly_quota": quota})), &[])
                .await?
                .0,
        ),
    };
    Ok(print(shown))
}

fn record(answer: Value) -> Shown {
    Shown { answer, view: View::Record }
}

/// Deliveries tracked by `tail` to see them change; beyond this many the
/// oldest are forgotten.
const TAIL_TRACKED: usize = 10_000;

/// Prints the newest deliveries each time they are made or change state.
async fn tail(client: &Client, configuration: Option<String>, max: Option<usize>, every: Duration, json: bool) -> Result<Output, String> {
    let mut seen: HashMap<String, (String, i64)> = HashMap::new();
    let mut order: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut first = true;
    let mut printed = 0usize;
    if !json {
        println!("{}", TAIL.iter().map(|(h, _)| *h).collect::<Vec<_>>().join("  "));
    }
    loop {
        let page = client.list("/v1/deliveries", &[("configuration_id", configuration.clone())], 100).await?;
        let mut fresh = Vec::new();
        for d in page.as_array().into_iter().flatten().rev() {
            let id = d["id"].as_str().unwrap_or_default().to_owned();
            let state = (d["status"].as_str().unwrap_or_default().to_owned(), d["attempts"].as_i64().unwrap_or(0));
            if seen.get(&id) == Some(&state) {
                continue;
            }
            if seen.insert(id.clone(), state).is_none() {
                order.push_back(id);
                if order.len() > TAIL_TRACKED
                    && let Some(old) = order.pop_front()
                {
                    seen.remove(&old);
                }
            }
            // What was there before the tail began is its starting point, not news.
            if !first {
                fresh.push(d.clone());
            }
        }
        if first {
            eprintln!("following deliveries (Ctrl-C to stop)");
        }
        first = false;
        for d in fresh {
            if json {
                println!("{d}");
            } else {
                println!("{}", TAIL.iter().map(|(_, p)| cell(d.pointer(p).unwrap_or(&Value::Null))).collect::<Vec<_>>().join("  "));
            }
            printed += 1;
            if max.is_some_and(|m| printed >= m) {
                return Ok(Output { answer: Value::Null, table: String::new() });
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// What a command answered, and the same for people.
pub struct Output {
    /// The API's JSON (`--json` prints it).
    pub answer: Value,
    /// Tables (printed without `--json`); empty when the command printed
    /// as it went (`events tail`).
    pub table: String,
}

fn print(shown: Shown) -> Output {
    Output { table: render(&shown), answer: shown.answer }
}

fn render(shown: &Shown) -> String {
    match shown.view {
        View::Rows(columns) => rows(shown.answer.as_array().map(Vec::as_slice).unwrap_or_default(), columns),
        View::Record => fields(&shown.answer, None),
        View::RecordWith(list, columns) => {
            let items = shown.answer[list].as_array().map(Vec::as_slice).unwrap_or_default();
            format!("{}\n{list}:\n{}", fields(&shown.answer, Some(list)), rows(items, columns))
        }
    }
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    t
}

fn rows(items: &[Value], columns: &[Column]) -> String {
    if items.is_empty() {
        return "(none)".into();
    }
    let mut t = table();
    t.set_header(columns.iter().map(|(h, _)| *h));
    for item in items {
        t.add_row(columns.iter().map(|(_, p)| cell(item.pointer(p).unwrap_or(&Value::Null))));
    }
    trimmed(t)
}

/// One item's fields, a line each; `skip` is shown apart.
fn fields(item: &Value, skip: Option<&str>) -> String {
    let Some(object) = item.as_object() else { return cell(item) };
    let mut t = table();
    for (name, value) in object.iter().filter(|(n, _)| Some(n.as_str()) != skip) {
        match value.as_object() {
            // A nested object (a spec, a key): one line per field of it.
            Some(inner) if !inner.is_empty() => {
                for (k, v) in inner {
                    t.add_row([format!("{}.{}", printable(name), printable(k)), cell(v)]);
                }
            }
            _ => {
                t.add_row([printable(name), cell(value)]);
            }
        }
    }
    trimmed(t)
}

/// The table without the style's one-space margin on the left and its
/// padding on the right.
fn trimmed(t: Table) -> String {
    t.to_string().lines().map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end()).collect::<Vec<_>>().join("\n")
}

/// A value as one cell: text as it is (escaped), lists joined, nothing as `-`.
fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => "-".to_owned(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.iter().all(Value::is_string) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    };
    let text = printable(&text);
    const WIDE: usize = 80;
    if text.chars().count() > WIDE { format!("{}…", text.chars().take(WIDE - 1).collect::<String>()) } else { text }
}

/// Text from the server, safe for a terminal: control characters (NUL, ESC,
/// newlines) shown as escapes.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// A configuration from a JSON or TOML file (`-`: standard input).
fn read_spec(path: &Path) -> Result<Value, String> {
    let text = read_text(path)?;
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    if is_toml {
        return toml::from_str::<Value>(&text).map_err(|e| format!("{}: not TOML: {e}", path.display()));
    }
    serde_json::from_str(&text).or_else(|json_error| {
        // Standard input or an unnamed file: TOML if it reads as TOML.
        toml::from_str::<Value>(&text).map_err(|_| format!("{}: neither JSON nor TOML: {json_error}", path.display()))
    })
}

fn read_json(path: &Path) -> Result<Value, String> {
    serde_json::from_str(&read_text(path)?).map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

fn read_text(path: &Path) -> Result<String, String> {
    if path == Path::new("-") {
        return std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read standard input: {e}"));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_server_cannot_drive_the_terminal() {
        assert_eq!(printable("order.paid\u{1b}[2J\0x"), "order.paid\\u{1b}[2J\\u{0}x");
        assert_eq!(cell(&json!("a\nb")), "a\\nb");
        assert_eq!(cell(&json!(["a", "b"])), "a, b");
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(cell(&json!("x".repeat(200))).chars().count(), 80);
    }

    #[test]
    fn ids_stay_one_path_segment() {
        assert_eq!(configuration("../keys"), "/v1/configurations/..%2Fkeys");
        assert_eq!(segment("cfg_1?x=1"), "cfg_1%3Fx%3D1");
    }

    #[test]
    fn a_configuration_file_is_json_or_toml() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        let toml = dir.join("c.toml");
        std::fs::write(&toml, "name = \"x\"\nendpoint = \"https://r.example\"\nevent_types = [\"a.*\"]\n[retry]\nmax_attempts = 3\n")
            .unwrap();
        assert_eq!(read_spec(&toml).unwrap()["retry"]["max_attempts"], 3);
        let json = dir.join("c.json");
        std::fs::write(&json, r#"{"name": "x"}"#).unwrap();
        assert_eq!(read_spec(&json).unwrap()["name"], "x");
        std::fs::write(&json, "{not json").unwrap();
        assert!(read_spec(&json).unwrap_err().contains("neither JSON nor TOML"));
    }
}
