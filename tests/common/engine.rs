//! The engine under test: a real `sluice serve` process on a loopback port
//! with its own data directory, and a small client for its API.
//!
//! Its store is the embedded SQLite file unless `SLUICE_TEST_BACKEND=postgres`:
//! then every engine gets a fresh database of its own on the server at
//! `SLUICE_TEST_POSTGRES` (default [`DEFAULT_POSTGRES`]), dropped with it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::postgres::PgConnection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The operator's admin key every test engine starts with.
pub const ADMIN_KEY: &str = "sk_e2e_operator_admin_key_0123456789abcdef";

/// The key sealing secrets at rest of every test engine on PostgreSQL,
/// where one must be given (the nodes of a cluster share it). On SQLite the
/// engines generate their own, as a fresh installation does.
pub const POSTGRES_SECRET_KEY: &str = "ZTJlLXRlc3RzLXBvc3RncmVzLXNlY3JldC1rZXkhISE=";

/// The reserved range test engines may deliver to: receivers' loopback.
pub const LOOPBACK: &str = "127.0.0.0/8";

/// The PostgreSQL server used when `SLUICE_TEST_POSTGRES` is unset: a local
/// one with trust authentication, as `.ci/run` starts it.
pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The engine binary Cargo built beside the test executable (tests run from
/// `target/<profile>/deps/`, binaries sit in `target/<profile>/`).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(format!("sluice-e2e{}", std::env::consts::EXE_SUFFIX)))
        .expect("target directory");
    assert!(path.exists(), "{} is missing: run the tests with `cargo test`, which builds it", path.display());
    path
}

/// A running `sluice serve`. Killed (SIGKILL) when dropped, and its
/// database dropped after it when the engine created it.
pub struct Engine {
    child: Option<Child>,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// `SLUICE_DATABASE_URL` and `SLUICE_NODE_ID` on PostgreSQL: both kept
    /// across restarts, the node id so that a restarted node takes back the
    /// leases it held (another id would leave them until they expire).
    postgres: Option<(String, String)>,
    /// The database this engine created, held only to be dropped (after the
    /// process is gone: see `Drop for Engine`).
    _database: Option<PostgresDatabase>,
    pub url: String,
    /// `/metrics` on its own listener, when `SLUICE_METRICS_LISTEN` is set.
    pub metrics_url: Option<String>,
    /// The size of the small disk the data directory is on, when it is on
    /// one: see [`Engine::start_on_small_disk`].
    small_disk: Option<String>,
}

impl Engine {
    /// Starts an engine on a fresh data directory (and a fresh database on
    /// the PostgreSQL backend).
    pub async fn start() -> Engine {
        Self::start_with(&[]).await
    }

    /// Starts an engine with extra `SLUICE_*` settings, which override the
    /// harness's own (`SLUICE_ALLOW_DESTINATIONS` is [`LOOPBACK`] unless
    /// given: `("SLUICE_ALLOW_DESTINATIONS", "")` allows no reserved range).
    pub async fn start_with(env: &[(&str, &str)]) -> Engine {
        match Backend::from_env() {
            Backend::Sqlite => Self::launch(None, None, env, None).await,
            Backend::Postgres => {
                let database = PostgresDatabase::create().await;
                let url = database.url().to_owned();
                Self::launch(Some(url), Some(database), env, None).await
            }
        }
    }

    /// Starts an engine (SQLite) whose data directory is a file system of
    /// its own, `size` big (`"4m"`): a `tmpfs` mounted in a user and mount
    /// namespace of the engine's own (`unshare`, which needs no root), so
    /// that its writes meet a real `ENOSPC` and nothing outlives it.
    /// The disk lives as long as the process: no restart.
    pub async fn start_on_small_disk(size: &str) -> Engine {
        Self::launch(None, None, &[], Some(size)).await
    }

    /// Makes the small disk `size` big (an operator growing the volume),
    /// its files kept.
    pub fn grow_disk(&self, size: &str) {
        let pid = self.child.as_ref().and_then(Child::id).expect("a running engine");
        let data = self.dir.path().join("data");
        let status = std::process::Command::new("nsenter")
            .args(["-t", &pid.to_string(), "--user", "--mount", "--preserve-credentials", "mount", "-o", &format!("remount,size={size}")])
            .arg(&data)
            .status()
            .expect("run nsenter");
        assert!(status.success(), "growing the engine's disk failed: {status}");
    }

    /// Starts a node on an existing PostgreSQL database, whatever
    /// `SLUICE_TEST_BACKEND` says: several of them form a cluster. The
    /// database is not dropped with this engine; whoever created it (a
    /// [`PostgresDatabase`]) drops it. Give each node its own
    /// `("SLUICE_NODE_ID", …)` in `env`; without one it gets a unique id,
    /// kept across restarts.
    pub async fn start_on_database(url: &str, env: &[(&str, &str)]) -> Engine {
        Self::launch(Some(url.to_owned()), None, env, None).await
    }

    async fn launch(
        database_url: Option<String>,
        database: Option<PostgresDatabase>,
        env: &[(&str, &str)],
        small_disk: Option<&str>,
    ) -> Engine {
        let dir = tempfile::tempdir().expect("temporary data directory");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let postgres = database_url.map(|url| (url, format!("e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])));
        let small_disk = small_disk.map(str::to_owned);
        let mut engine = Engine { child: None, dir, env, postgres, _database: database, url: String::new(), metrics_url: None, small_disk };
        engine.spawn().await;
        engine
    }

    /// The PostgreSQL database this engine runs on (`None` on SQLite), for
    /// starting more nodes on it with [`Engine::start_on_database`].
    pub fn database_url(&self) -> Option<&str> {
        self.postgres.as_ref().map(|(url, _)| url.as_str())
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites a configuration's stored spec (JSON) in the engine's own
    /// database, behind the API's back: how rows saved by an older version
    /// (before a validation existed, before specs were sealed) look to this
    /// one. The sealed spec is opened with the engine's key and written back
    /// edited, in the clear, as such a version wrote it. The engine sees it
    /// the next time it loads the configuration (enable it through the API).
    pub async fn edit_stored_config(&self, id: &str, edit: impl FnOnce(&mut Value)) {
        use sluice::{Keyring, MasterKey};
        use sqlx::Connection;
        let key: MasterKey = match &self.postgres {
            Some(_) => POSTGRES_SECRET_KEY.parse().expect("the test key"),
            None => std::fs::read_to_string(self.dir.path().join("data/secret.key")).expect("the key file").parse().expect("a key"),
        };
        let keys = Keyring::new(&key, &[]);
        let open = |tenant: &str, spec: String| -> Value {
            let plain = if Keyring::is_sealed(&spec) {
                let context = format!("configuration/{tenant}/{id}");
                String::from_utf8(keys.open(&spec, context.as_bytes()).expect("the engine's key opens it")).expect("UTF-8")
            } else {
                spec
            };
            serde_json::from_str(&plain).expect("spec JSON")
        };
        match &self.postgres {
            Some((url, _)) => {
                let mut c = sqlx::PgConnection::connect(url).await.expect("connect to the engine's database");
                let (tenant, spec): (String, String) = sqlx::query_as("SELECT tenant_id, spec FROM configurations WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut c)
                    .await
                    .expect("the row");
                let mut spec = open(&tenant, spec);
                edit(&mut spec);
                sqlx::query("UPDATE configurations SET spec = $1 WHERE id = $2")
                    .bind(spec.to_string())
                    .bind(id)
                    .execute(&mut c)
                    .await
                    .expect("update");
            }
            None => {
                let url = format!("sqlite://{}", self.dir.path().join("data/sluice.db").display());
                let mut c = sqlx::SqliteConnection::connect(&url).await.expect("open the engine's database");
                let (tenant, spec): (String, String) = sqlx::query_as("SELECT tenant_id, spec FROM configurations WHERE id = ?")
                    .bind(id)
                    .fetch_one(&mut c)
                    .await
                    .expect("the row");
                let mut spec = open(&tenant, spec);
                edit(&mut spec);
                sqlx::query("UPDATE configurations SET spec = ? WHERE id = ?")
                    .bind(spec.to_string())
                    .bind(id)
                    .execute(&mut c)
                    .await
                    .expect("update");
            }
        }
    }

    /// Runs one SQL statement on the engine's own database, behind its
    /// back (SQL both backends take): how rows an older version left look.
    pub async fn execute_sql(&self, sql: &str) {
        use sqlx::Connection;
        match &self.postgres {
            Some((url, _)) => {
                let mut c = sqlx::PgConnection::connect(url).await.expect("connect to the engine's database");
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            None => {
                let url = format!("sqlite://{}", self.dir.path().join("data/sluice.db").display());
                let mut c = sqlx::SqliteConnection::connect(&url).await.expect("open the engine's database");
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("engine log file");
        let data = self.dir.path().join("data");
        let mut command = match &self.small_disk {
            None => Command::new(binary()),
            Some(size) => {
                // The shell becomes the engine (`exec`): the child's pid is the engine's.
                let mut wrapped = Command::new("unshare");
                wrapped
                    .args(["--user", "--map-root-user", "--mount", "--propagation", "private", "sh", "-c"])
                    .arg(r#"mkdir -p "$1" && mount -t tmpfs -o "size=$2" sluice-small-disk "$1" && shift 2 && exec "$@""#)
                    .arg("sh")
                    .arg(&data)
                    .arg(size)
                    .arg(binary());
                wrapped
            }
        };
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("SLUICE_ADMIN_KEY", ADMIN_KEY)
            .env("SLUICE_LOG", "sluice=debug,info")
            // Receivers listen on 127.0.0.1, which sluice refuses by default.
            .env("SLUICE_ALLOW_DESTINATIONS", LOOPBACK)
            // The backend is the harness's choice, never the shell's.
            .env_remove("SLUICE_DATABASE_URL")
            .env_remove("SLUICE_NODE_ID")
            .env_remove("SLUICE_SECRET_KEY")
            .env_remove("SLUICE_OLD_SECRET_KEYS");
        if let Some((url, node_id)) = &self.postgres {
            command.env("SLUICE_DATABASE_URL", url).env("SLUICE_NODE_ID", node_id).env("SLUICE_SECRET_KEY", POSTGRES_SECRET_KEY);
        }
        let mut child = command
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start the engine binary");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut metrics = None;
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("engine stdout") {
                if let Some(url) = line.strip_prefix("metrics on ") {
                    metrics = Some(url.to_owned());
                }
                if let Some(url) = line.strip_prefix("listening on ") {
                    return Some(url.to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the engine did not start; its log:\n{}", self.log()));
        // Keep draining stdout so the engine never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.url = url;
        self.metrics_url = metrics;
        self.child = Some(child);
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("engine.log")
    }

    /// What the engine logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("SIGKILL the engine");
        }
    }

    /// Starts the engine again on the same data directory, database and
    /// node id (a new port).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// Starts the engine again on the same data directory with these
    /// extra settings instead of those it was started with.
    pub async fn restart_with(&mut self, env: &[(&str, &str)]) {
        self.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.restart().await;
    }

    /// A client holding the operator's admin key.
    pub fn admin(&self) -> Api {
        self.api(ADMIN_KEY)
    }

    pub fn api(&self, key: &str) -> Api {
        Api { http: reqwest::Client::new(), base: self.url.clone(), key: Some(key.to_owned()) }
    }

    /// A client that sends no `Authorization` header.
    pub fn anonymous(&self) -> Api {
        Api { http: reqwest::Client::new(), base: self.url.clone(), key: None }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The process must be gone before its database is dropped, or it
        // could reconnect in between; `kill_on_drop` alone does not wait.
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // `_database`, if any, is dropped next, with the other fields.
    }
}

/// The store engines run on, from `SLUICE_TEST_BACKEND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Unset or `sqlite`: the embedded SQLite file in the data directory.
    Sqlite,
    /// `postgres`: a fresh database per engine on [`postgres_server`].
    Postgres,
}

impl Backend {
    /// Panics on a value it does not know, so that a typo never silently
    /// runs the suite on the wrong backend.
    pub fn from_env() -> Backend {
        let value = std::env::var_os("SLUICE_TEST_BACKEND").unwrap_or_default();
        match value.to_string_lossy().as_ref() {
            "" | "sqlite" => Backend::Sqlite,
            "postgres" => Backend::Postgres,
            other => panic!("SLUICE_TEST_BACKEND is `sqlite` (the default) or `postgres`, not `{other}`"),
        }
    }
}

/// The PostgreSQL server test databases are created on: `SLUICE_TEST_POSTGRES`
/// or [`DEFAULT_POSTGRES`]. The URL names a database to connect to for
/// `CREATE DATABASE`, not the one the engines use.
pub fn postgres_server() -> String {
    std::env::var("SLUICE_TEST_POSTGRES").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_POSTGRES.to_owned())
}

/// A new, empty database on [`postgres_server`]; returns its URL. Nothing
/// drops it: prefer [`PostgresDatabase::create`], whose guard does.
pub async fn fresh_postgres_database() -> String {
    PostgresDatabase::create().await.keep()
}

/// A database of its own on the test server (`sluice_e2e_<uuid>`), dropped
/// with this guard, best effort: close every engine on it first.
pub struct PostgresDatabase {
    url: String,
    name: String,
    server: String,
    keep: bool,
}

impl PostgresDatabase {
    /// Creates the database. Panics, never skips, when the server cannot be
    /// reached: a test asked for PostgreSQL must not pass without it.
    pub async fn create() -> PostgresDatabase {
        let server = postgres_server();
        let name = format!("sluice_e2e_{}", uuid::Uuid::new_v4().simple());
        let mut url = url::Url::parse(&server).unwrap_or_else(|e| panic!("SLUICE_TEST_POSTGRES is not a URL ({e}): {}", redacted(&server)));
        url.set_path(&format!("/{name}"));
        let mut admin = connect(&server).await;
        // The name is ours (letters, digits, `_`), so quoting is all it needs.
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {}: {e}", redacted(&server)));
        let _ = sqlx::Connection::close(admin).await;
        PostgresDatabase { url: url.into(), name, server, keep: false }
    }

    /// The URL engines connect with (`SLUICE_DATABASE_URL`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Gives the database up: it outlives the guard.
    fn keep(mut self) -> String {
        self.keep = true;
        std::mem::take(&mut self.url)
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // Drop may run on a thread of the test's runtime, where starting
        // another runtime panics: a thread of its own with a small runtime
        // does the work, joined so that the last test of a binary does not
        // exit before it. FORCE ends connections a killed engine left open.
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropper = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let work = async {
                    let mut admin = <PgConnection as sqlx::Connection>::connect(&server).await?;
                    let dropped = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut admin).await;
                    let _ = sqlx::Connection::close(admin).await;
                    dropped.map(drop)
                };
                match tokio::time::timeout(Duration::from_secs(20), work).await {
                    Ok(result) => result.map_err(|e: sqlx::Error| e.to_string()),
                    Err(_) => Err("timed out".to_owned()),
                }
            })
        });
        if let Ok(Err(e)) = dropper.join() {
            eprintln!("could not drop the test database {}: {e}", self.name);
        }
    }
}

/// A connection to the test server, or a panic saying how to provide one.
async fn connect(server: &str) -> PgConnection {
    let connecting = <PgConnection as sqlx::Connection>::connect(server);
    match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Ok(Ok(connection)) => connection,
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "no answer in 10 s".to_owned(),
            };
            panic!(
                "the PostgreSQL tests need a server: cannot connect to {} ({why}). Start one on \
                 127.0.0.1:5432 (user postgres, trust authentication) or set SLUICE_TEST_POSTGRES \
                 to the URL of one that allows CREATE DATABASE",
                redacted(server)
            )
        }
    }
}

/// A URL fit for a failure message: without its password.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.into()
        }
        Ok(u) => u.into(),
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// An answer: status, headers, JSON body (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The body, after asserting the status.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected answer: {}", self.body);
        self.body
    }

    /// Asserts an error answer with `status` and `code`.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Value {
        assert_eq!((self.status, self.body["code"].as_str()), (status, Some(code)), "unexpected answer: {}", self.body);
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()), "an error carries a message: {}", self.body);
        self.body
    }
}

/// The engine's API as one key sees it.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Api {
    /// The key this client presents, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    pub async fn send(&self, method: &str, path: &str, body: Option<(&str, Vec<u8>)>, headers: &[(&str, &str)]) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.base)).timeout(Duration::from_secs(30));
        if let Some(key) = &self.key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let res = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("answer body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, headers, body }
    }

    /// A request with this client's key, to send and read as the caller likes.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base)).timeout(Duration::from_secs(120));
        match &self.key {
            Some(key) => req.header("authorization", format!("Bearer {key}")),
            None => req,
        }
    }

    /// POSTs JSON to an endpoint that answers JSON lines (NDJSON); asserts
    /// 200 and returns the lines, each parsed.
    pub async fn post_lines(&self, path: &str, body: &Value) -> Vec<Value> {
        let res = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = res.status().as_u16();
        let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let text = res.text().await.expect("answer body");
        assert_eq!(status, 200, "{path}: {text}");
        assert_eq!(content_type, "application/x-ndjson");
        assert!(text.ends_with('\n'), "every line ends: {text}");
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a line that is not JSON ({e}): {l}"))).collect()
    }

    /// Like [`Api::send`] for a JSON POST, but `None` when the connection
    /// fails (the engine was killed under it).
    pub async fn try_post(&self, path: &str, body: &Value) -> Option<Answer> {
        let mut req = self.http.post(format!("{}{path}", self.base)).timeout(Duration::from_secs(30));
        if let Some(key) = &self.key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let res = req.header("content-type", "application/json").body(body.to_string()).send().await.ok()?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.ok()?;
        Some(Answer { status, headers, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) })
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, &[]).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send("DELETE", path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send("POST", path, Some(("application/json", body.to_string().into_bytes())), &[]).await
    }

    /// POST with a raw body, for malformed input.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Answer {
        self.send("POST", path, Some((content_type, body.into())), &[]).await
    }

    pub async fn put(&self, path: &str, version: i64, body: &Value) -> Answer {
        let if_match = format!("\"{version}\"");
        self.send("PUT", path, Some(("application/json", body.to_string().into_bytes())), &[("if-match", &if_match)]).await
    }

    /// Uploads a script built by `scripts/build.sh`; returns its id.
    pub async fn upload_script(&self, name: &str) -> String {
        let answer = self.post_raw(&format!("/v1/scripts?name={name}"), "application/wasm", crate::script_bytes(name)).await;
        answer.expect(201)["id"].as_str().expect("script id").to_owned()
    }

    /// Creates a configuration and enables it; returns its view as created
    /// (the only one carrying the signing secret).
    pub async fn enabled_config(&self, spec: Value) -> Value {
        let created = self.post("/v1/configurations", &spec).await.expect(201);
        let id = created["id"].as_str().expect("configuration id");
        self.post(&format!("/v1/configurations/{id}/enable"), &json!({})).await.expect(200);
        created
    }

    /// Posts events (an array); asserts they were all accepted.
    pub async fn ingest(&self, events: &[Value]) {
        let answer = self.post("/v1/events", &Value::from(events.to_vec())).await.expect(202);
        for e in answer["events"].as_array().expect("per-event results") {
            assert_eq!(e["status"], "accepted", "{answer}");
        }
    }

    /// Polls `path` until `done` holds of its body, for up to 30 s.
    pub async fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let body = self.get(path).await.expect(200);
            if done(&body) {
                return body;
            }
            assert!(tokio::time::Instant::now() < deadline, "{path} never reached the expected state; last: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every item of a list, following `next_cursor` page by page.
    pub async fn list_all(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page_path = match &cursor {
                Some(c) => format!("{path}{sep}limit=500&cursor={c}"),
                None => format!("{path}{sep}limit=500"),
            };
            let page = self.get(&page_path).await.expect(200);
            items.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return items,
            }
        }
    }

    /// Creates a tenant (operator only) and an admin key for it.
    pub async fn tenant_with_key(&self, name: &str, scopes: &[&str]) -> (String, String) {
        let tenant = self.post("/v1/tenants", &json!({"name": name})).await.expect(201);
        let tenant_id = tenant["id"].as_str().expect("tenant id").to_owned();
        let key = self.post(&format!("/v1/tenants/{tenant_id}/keys"), &json!({"name": "test", "scopes": scopes})).await.expect(201);
        (tenant_id, key["secret"].as_str().expect("key secret").to_owned())
    }
}

/// An event in the JSON shape services post.
pub fn event_body(id: &str, event_type: &str, unit: &str, payload: Value) -> Value {
    json!({
        "id": id,
        "type": event_type,
        "organization_unit": unit,
        "occurred_at": "2026-11-22T11:30:00+01:00",
        "source": {"application": "shop", "user": "customer/1000"},
        "payload": payload,
    })
}
