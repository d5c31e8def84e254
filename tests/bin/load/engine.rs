//! The engine under load: this same executable run as `sluice-load serve`
//! in a child process with a fresh data directory (on SQLite, or as one
//! node of several on a PostgreSQL database), and the API calls that
//! route `order.*` events through the `paid-orders` script to the sink
//! (or, for the failure runs, one configuration per organization unit, each
//! to its own path of the sink; for the chaos runs, tenants of their own,
//! each with its own key, scripts and configurations).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::generator;

/// The operator's admin key the engine is started with.
pub const ADMIN_KEY: &str = "sk_load_operator_admin_key_0123456789abcdef";
/// The secret key of engines on PostgreSQL (a benchmark's throwaway database).
const LOAD_SECRET_KEY: &str = "bG9hZC1iZW5jaG1hcmstc2VjcmV0LWtleS0zMmJ5dGU=";

/// How long the engine may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The script every event goes through, built by `scripts/build.sh`.
pub const SCRIPT: &str = "paid-orders";

/// Where `scripts/build.sh` puts the script `name`.
pub fn script_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../target/scripts/{name}.wasm"))
}

/// The bytes of [`SCRIPT`], or why they cannot be read.
pub fn read_script() -> Result<Vec<u8>, String> {
    read_named_script(SCRIPT)
}

/// The bytes of the script `name`, or why they cannot be read.
pub fn read_named_script(name: &str) -> Result<Vec<u8>, String> {
    let path = script_path(name);
    std::fs::read(&path).map_err(|e| format!("{}: {e}; run ./scripts/build.sh first", path.display()))
}

/// What makes an engine a node on PostgreSQL rather than an engine on
/// its own SQLite file.
#[derive(Debug, Clone)]
pub struct Node {
    /// The run's own database.
    pub database_url: String,
    /// Distinct per node: the cluster tells its members apart by it.
    pub id: String,
}

/// A running engine. Killed when dropped; its data directory goes with it.
pub struct Engine {
    // Declared before `dir`: the process dies before its directory is removed.
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl Engine {
    /// Starts `<this executable> serve` on a free loopback port: on its
    /// own SQLite file, or as `node` on PostgreSQL.
    pub async fn start(node: Option<&Node>) -> Result<Engine, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
        let log = std::fs::File::create(dir.path().join("engine.log")).map_err(|e| format!("cannot create the engine's log file: {e}"))?;
        let mut command = Command::new(exe);
        command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.path().join("data"));
        // Flags, not the variables: an engine that does not know them
        // refuses to start instead of quietly running on SQLite. The
        // variables from the caller's environment must not pick the store.
        command.env_remove("SLUICE_DATABASE_URL").env_remove("SLUICE_NODE_ID");
        // Nodes sharing PostgreSQL share the key that seals secrets at rest;
        // on SQLite it spares each run the warning about a generated key.
        command.env("SLUICE_SECRET_KEY", LOAD_SECRET_KEY);
        if let Some(node) = node {
            command.arg("--database-url").arg(&node.database_url).arg("--node-id").arg(&node.id);
        }
        let mut child = command
            // No stray ./sluice.toml from wherever the tool was started.
            .current_dir(dir.path())
            .env("SLUICE_ADMIN_KEY", ADMIN_KEY)
            .env("SLUICE_LOG", "warn")
            // The sink listens on 127.0.0.1, which sluice refuses by default.
            .env("SLUICE_ALLOW_DESTINATIONS", "127.0.0.0/8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the engine: {e}"))?;
        let stdout = child.stdout.take().ok_or("the engine's stdout is not piped")?;
        let mut engine = Engine { child, dir, url: String::new() };

        let mut lines = BufReader::new(stdout).lines();
        let listening = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("listening on ") {
                    return Some(url.trim().to_owned());
                }
            }
            None
        })
        .await;
        match listening {
            Ok(Some(url)) => engine.url = url,
            Ok(None) => return Err(format!("the engine exited before listening; its log:\n{}", engine.log_tail(30))),
            Err(_) => return Err(format!("the engine did not listen within {START_TIMEOUT:?}; its log:\n{}", engine.log_tail(30))),
        }
        // Keep draining stdout so the engine never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(engine)
    }

    /// The engine's process id, for CPU accounting.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Everything the engine logged (warnings and errors, at `SLUICE_LOG=warn`).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("engine.log")).unwrap_or_default()
    }

    /// The last `lines` lines the engine logged.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The engine's log lines without their timestamps, each distinct one
    /// once with how often it occurred, in order of first occurrence.
    pub fn log_digest(&self) -> Vec<(usize, String)> {
        let mut digest: Vec<(usize, String)> = Vec::new();
        let mut position: HashMap<String, usize> = HashMap::new();
        for line in self.log().lines() {
            // `<timestamp>  LEVEL target: message`
            let message = line.split_once(' ').map_or(line, |(_, rest)| rest).trim();
            match position.get(message) {
                Some(&at) => digest[at].0 += 1,
                None => {
                    position.insert(message.to_owned(), digest.len());
                    digest.push((1, message.to_owned()));
                }
            }
        }
        digest
    }

    /// Kills the engine (SIGKILL) and waits for it.
    pub async fn stop(mut self) {
        if let Err(e) = self.child.kill().await {
            eprintln!("cannot kill the engine: {e}");
        }
    }

    /// Uploads `script` and creates and enables a configuration sending
    /// every `order.*` event through it to `<sink>/hook`.
    pub async fn route_to(&self, http: &reqwest::Client, sink: &str, script: Vec<u8>) -> Result<(), String> {
        let script_id = self.upload(http, script).await?;
        let config = json!({
            "name": "load",
            "endpoint": format!("{sink}/hook"),
            "event_types": ["order.*"],
            "script": {"id": script_id, "params": {"min_amount": "0"}},
        });
        self.configure(http, config).await
    }

    /// Uploads `script` and creates and enables `units` configurations:
    /// configuration `n` takes the `order.paid` events of organization unit
    /// `load/t{n}` through the script to `<sink>` + [`spread_path`]`(n)`.
    /// Every other setting is the default, the retry policy too.
    pub async fn route_spread(&self, http: &reqwest::Client, sink: &str, script: Vec<u8>, units: usize) -> Result<(), String> {
        let script_id = self.upload(http, script).await?;
        for unit in 0..units {
            let config = json!({
                "name": format!("load-t{unit}"),
                "endpoint": format!("{sink}{}", spread_path(unit)),
                "event_types": ["order.paid"],
                "organization_units": {"include": [generator::unit_name(unit)]},
                "script": {"id": script_id, "params": {"min_amount": "0"}},
            });
            self.configure(http, config).await?;
        }
        Ok(())
    }

    /// Uploads the `paid-orders` script; its id.
    async fn upload(&self, http: &reqwest::Client, script: Vec<u8>) -> Result<String, String> {
        self.upload_as(http, ADMIN_KEY, SCRIPT, script).await
    }

    /// Uploads `script` as `name` with `key` (into that key's tenant); its id.
    pub async fn upload_as(&self, http: &reqwest::Client, key: &str, name: &str, script: Vec<u8>) -> Result<String, String> {
        let uploaded = self.call_as(http, key, &format!("/v1/scripts?name={name}"), "application/wasm", script, 201).await?;
        id_of(&uploaded, "script")
    }

    /// Creates the configuration `config` and enables it.
    async fn configure(&self, http: &reqwest::Client, config: Value) -> Result<(), String> {
        self.configure_as(http, ADMIN_KEY, config).await.map(drop)
    }

    /// Creates the configuration `config` with `key` (in that key's
    /// tenant) and enables it; its id.
    pub async fn configure_as(&self, http: &reqwest::Client, key: &str, config: Value) -> Result<String, String> {
        let created = self.call_as(http, key, "/v1/configurations", "application/json", config.to_string().into_bytes(), 201).await?;
        let config_id = id_of(&created, "configuration")?;
        let enable = format!("/v1/configurations/{config_id}/enable");
        self.call_as(http, key, &enable, "application/json", b"{}".to_vec(), 200).await?;
        Ok(config_id)
    }

    /// Creates a tenant named `name` (as the operator) and an admin key of
    /// its own; the key's secret.
    pub async fn create_tenant(&self, http: &reqwest::Client, name: &str) -> Result<String, String> {
        let body = json!({"name": name}).to_string().into_bytes();
        let tenant = self.call_as(http, ADMIN_KEY, "/v1/tenants", "application/json", body, 201).await?;
        let path = format!("/v1/tenants/{}/keys", id_of(&tenant, "tenant")?);
        let body = json!({"name": "load", "scopes": ["admin"]}).to_string().into_bytes();
        let key = self.call_as(http, ADMIN_KEY, &path, "application/json", body, 201).await?;
        key["secret"].as_str().map(str::to_owned).ok_or_else(|| format!("the key answer has no secret: {key}"))
    }

    /// GETs `path` (with its query) with `key`; the answer, which must be 200.
    pub async fn get_as(&self, http: &reqwest::Client, key: &str, path: &str) -> Result<Value, String> {
        let response = http.get(format!("{}{path}", self.url)).bearer_auth(key).send().await.map_err(|e| format!("GET {path}: {e}"))?;
        let got = response.status().as_u16();
        let text = response.text().await.map_err(|e| format!("GET {path}: reading the answer: {e}"))?;
        if got != 200 {
            return Err(format!("GET {path}: expected 200, got {got}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("GET {path}: the answer is not JSON: {e}"))
    }

    /// POSTs `body` to `path` with `key` and expects `status`.
    async fn call_as(
        &self,
        http: &reqwest::Client,
        key: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        status: u16,
    ) -> Result<Value, String> {
        let response = http
            .post(format!("{}{path}", self.url))
            .bearer_auth(key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let got = response.status().as_u16();
        let text = response.text().await.map_err(|e| format!("POST {path}: reading the answer: {e}"))?;
        if got != status {
            return Err(format!("POST {path}: expected {status}, got {got}: {text}"));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// The sink path configuration `unit` of [`Engine::route_spread`] delivers to.
pub fn spread_path(unit: usize) -> String {
    format!("/hook/t{unit}")
}

fn id_of(answer: &Value, what: &str) -> Result<String, String> {
    answer["id"].as_str().map(str::to_owned).ok_or_else(|| format!("the {what} answer has no id: {answer}"))
}
