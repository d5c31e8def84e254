//! The script author's loop, one command each: scaffold a script crate
//! anywhere (`new`), build it to a component (`build`), upload it as a new
//! version (`push`) and see what it would change (`preview`). `test` (in
//! the CLI) runs it on one event.
//!
//! The scaffold carries its own copy of the SDK and the WIT world, taken
//! from the sources this binary was built from: it builds wherever it is,
//! with no checkout of sluice and no registry holding the SDK. This module
//! talks to a server only through its public API; it must never reach into
//! the engine.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The SDK's sources, as this binary was built with them.
const SDK_FILES: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("src/decision.rs", include_str!("../../../sdk/src/decision.rs")),
    ("src/error.rs", include_str!("../../../sdk/src/error.rs")),
    ("src/event.rs", include_str!("../../../sdk/src/event.rs")),
    ("src/export.rs", include_str!("../../../sdk/src/export.rs")),
    ("src/host.rs", include_str!("../../../sdk/src/host.rs")),
    ("src/log.rs", include_str!("../../../sdk/src/log.rs")),
    ("src/params.rs", include_str!("../../../sdk/src/params.rs")),
    ("src/pointer.rs", include_str!("../../../sdk/src/pointer.rs")),
    ("src/testing.rs", include_str!("../../../sdk/src/testing.rs")),
    ("README.md", include_str!("../../../sdk/README.md")),
];

/// The WIT world the SDK's bindings are generated from (its `path` is
/// `../wit/0.1`, relative to the SDK's folder).
const WIT_WORLD: &str = include_str!("../../../wit/0.1/world.wit");

/// The SDK's manifest outside sluice's workspace: the versions the
/// workspace pins, written out.
const SDK_MANIFEST: &str = r#"[package]
name = "sluice-sdk"
description = "Write sluice export scripts in Rust (a copy made by `sluice script new`)."
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
serde = { version = "1", features = ["derive"] }
serde_json = "1"

[target.'cfg(target_arch = "wasm32")'.dependencies]
wit-bindgen = { version = "=0.49.0", default-features = false, features = ["macros", "realloc"] }
"#;

const SCRIPT_SOURCE: &str = r#"//! An export script: decides, per event its configuration selects, whether
//! it is delivered. Here: events whose payload `amount` is at least the
//! parameter `min_amount` (default 0).

use sluice_sdk::{Decision, Error, Event, info, params};

fn filter(event: &Event) -> Result<Decision, Error> {
    let min: f64 = params::parse("min_amount")?.unwrap_or(0.0);
    let Some(amount) = event.get::<f64>("/amount")? else {
        return Ok(Decision::skip("no amount"));
    };
    info!("{} has amount {amount}", event.id());
    Ok(if amount >= min { Decision::deliver() } else { Decision::skip(format!("amount {amount} is below {min}")) })
}

sluice_sdk::export_filter!(filter);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestHost;

    fn sample() -> Event {
        let json = include_str!("../sample-event.json");
        let value: serde_json::Value = serde_json::from_str(json).expect("sample-event.json is JSON");
        Event::builder(value["type"].as_str().unwrap_or("order.paid")).payload(value["payload"].clone()).build()
    }

    #[test]
    fn delivers_the_sample_at_its_amount_and_skips_it_above() {
        let host = TestHost::new().param("min_amount", "100");
        assert!(host.run(filter, &sample()).decision().is_deliver());
        let higher = TestHost::new().param("min_amount", "1000");
        assert!(!higher.run(filter, &sample()).decision().is_deliver());
    }
}
"#;

const SAMPLE_EVENT: &str = r#"{
  "id": "evt-sample-1",
  "type": "order.paid",
  "organization_unit": "emea/nl/store-12",
  "occurred_at": "2026-01-01T12:00:00Z",
  "payload": {"order": "o-1", "amount": 120}
}
"#;

/// The crate's build settings for wasm: a 64 KiB stack instead of Rust's
/// default 1 MiB (see the SDK's README, "Building it").
const CARGO_CONFIG: &str = r#"# A 64 KiB stack instead of Rust's default 1 MiB: every event runs in a fresh
# instance whose memory is restored afterwards, and on kernels before Linux 6.7
# a smaller memory restores faster. Raise it for deeply recursive scripts.
[target.wasm32-unknown-unknown]
rustflags = ["-C", "link-arg=-zstack-size=65536"]
"#;

/// Creates the script crate `name` in a new folder `dir` (default `./name`).
pub fn new(name: &str, dir: Option<&Path>) -> Result<PathBuf, String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(format!("{name:?} is not a crate name: lowercase letters, digits, `-` and `_`, starting with a letter"));
    }
    let dir = dir.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        return Err(format!("{} exists already", dir.display()));
    }
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
# A copy of the SDK sluice was built with, and its WIT world (vendor/wit).
sluice-sdk = {{ path = "vendor/sluice-sdk" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# `sluice script build` builds with this profile for wasm32-unknown-unknown.
[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = true

# A crate of its own, even when made inside another workspace.
[workspace]
"#
    );
    let mut files: Vec<(PathBuf, &str)> = vec![
        ("Cargo.toml".into(), manifest.as_str()),
        ("src/lib.rs".into(), SCRIPT_SOURCE),
        ("sample-event.json".into(), SAMPLE_EVENT),
        (".gitignore".into(), "/target\n"),
        (".cargo/config.toml".into(), CARGO_CONFIG),
        ("vendor/sluice-sdk/Cargo.toml".into(), SDK_MANIFEST),
        ("vendor/wit/0.1/world.wit".into(), WIT_WORLD),
    ];
    files.extend(SDK_FILES.iter().map(|(path, text)| (Path::new("vendor/sluice-sdk").join(path), *text)));
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(dir)
}

/// Builds the script crate in `dir` for wasm and makes it a component;
/// returns where the component is.
pub fn build(dir: &Path) -> Result<PathBuf, String> {
    // Absolute, as cargo runs in the crate's folder (below).
    let dir = &std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let manifest_path = dir.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path).map_err(|e| format!("no script crate in {}: {e}", dir.display()))?;
    let manifest: toml::Table = toml::from_str(&manifest).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let name = manifest
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| format!("{} names no package", manifest_path.display()))?
        .to_owned();
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(set) => std::path::absolute(PathBuf::from(set)).map_err(|e| format!("CARGO_TARGET_DIR: {e}"))?,
        None => dir.join("target"),
    };
    let mut cargo = wasm_cargo()?;
    // Cargo reads `.cargo/config.toml` from the folder it runs in, not the
    // manifest's: run it in the crate.
    cargo.current_dir(dir).arg("--manifest-path").arg(&manifest_path).arg("--target-dir").arg(&target_dir);
    let status = cargo.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build failed ({status})"));
    }
    let core = target_dir.join("wasm32-unknown-unknown/release").join(format!("{}.wasm", name.replace('-', "_")));
    let module = std::fs::read(&core).map_err(|e| format!("cannot read {}: {e}", core.display()))?;
    let component = crate::sandbox::componentize(&module).map_err(|e| format!("{}: {e}", core.display()))?;
    let out = target_dir.join(format!("{name}.wasm"));
    std::fs::write(&out, component).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(out)
}

/// `cargo build --release` for wasm32-unknown-unknown: rustup's target when
/// installed, else Debian's rustc-web building std from source.
fn wasm_cargo() -> Result<Command, String> {
    let rustup_has_target = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "wasm32-unknown-unknown"));
    let args = ["build", "--release", "--target", "wasm32-unknown-unknown"];
    if rustup_has_target {
        let mut cargo = Command::new("cargo");
        cargo.args(args);
        return Ok(cargo);
    }
    let debian = ["/usr/bin/cargo", "/usr/bin/rustc", "/usr/lib/rustlib/src"].iter().all(|p| Path::new(p).exists());
    if debian {
        let mut cargo = Command::new("/usr/bin/cargo");
        // Debian's cargo and rustc, not rustup's proxies first on PATH.
        cargo.env_remove("RUSTUP_TOOLCHAIN").env("RUSTC", "/usr/bin/rustc").env("RUSTC_BOOTSTRAP", "1");
        cargo.args(args).args(["-Z", "build-std=std,panic_abort"]);
        return Ok(cargo);
    }
    Err("no toolchain here builds wasm32-unknown-unknown. Install one:\n  rustup target add wasm32-unknown-unknown\n\
         or, on Debian (where rustup cannot download targets):\n  apt-get install rustc-web cargo-web rust-web-src rust-web-llvm lld-22"
        .into())
}

/// Where a server is and the key to use.
pub struct Server {
    pub url: String,
    pub key: String,
}

impl Server {
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
        let response = request.bearer_auth(&self.key).send().await.map_err(|e| format!("{}: {e}", self.url))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let error: Value = serde_json::from_str(&body).unwrap_or_default();
        Err(match (error["code"].as_str(), error["message"].as_str()) {
            (Some(code), Some(message)) => format!("{status}: {code}: {message}"),
            _ => format!("{status}: {body}"),
        })
    }
}

/// Uploads a component as the next version of `name`; answers the script's view.
pub async fn push(server: &Server, component: &Path, name: &str) -> Result<Value, String> {
    let bytes = std::fs::read(component).map_err(|e| format!("cannot read {}: {e}", component.display()))?;
    let mut url = reqwest::Url::parse(&format!("{}/v1/scripts", server.url.trim_end_matches('/')))
        .map_err(|e| format!("{}: not a URL: {e}", server.url))?;
    url.query_pairs_mut().append_pair("name", name);
    let request = reqwest::Client::new().post(url).header("content-type", "application/wasm").body(bytes);
    let answer = server.send(request).await?.text().await.map_err(|e| format!("{}: {e}", server.url))?;
    serde_json::from_str(&answer).map_err(|e| format!("the answer is not JSON: {e}"))
}

/// What a preview is asked for.
pub struct PreviewRequest {
    pub configuration: String,
    pub script: Option<String>,
    pub params: Option<std::collections::BTreeMap<String, String>>,
    pub last: Option<u64>,
}

/// Runs a preview; answers its summary and the lines of the events whose
/// decision or request changes (at most `keep`).
pub async fn preview(server: &Server, req: &PreviewRequest, keep: usize) -> Result<(Value, Vec<Value>), String> {
    let mut candidate = serde_json::Map::new();
    if let Some(script) = &req.script {
        candidate.insert("script_id".into(), script.clone().into());
    }
    if let Some(params) = &req.params {
        candidate.insert("params".into(), serde_json::to_value(params).unwrap_or_default());
    }
    let mut body = serde_json::json!({"candidate": candidate});
    if let Some(last) = req.last {
        body["window"] = serde_json::json!({"last": last});
    }
    let url = format!("{}/v1/configurations/{}/preview", server.url.trim_end_matches('/'), req.configuration);
    let request = reqwest::Client::new().post(url).header("content-type", "application/json").body(body.to_string());
    let mut response = server.send(request).await?;
    let (mut pending, mut changed, mut summary) = (Vec::new(), Vec::new(), None);
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("the preview stopped: {e}"))? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line: Value = serde_json::from_slice(&line).map_err(|e| format!("a preview line is not JSON: {e}"))?;
            if let Some(error) = line.get("error") {
                return Err(format!("the preview stopped: {}", error["message"].as_str().unwrap_or_default()));
            }
            if let Some(s) = line.get("summary") {
                summary = Some(s.clone());
            } else if line["change"] != "unchanged" && changed.len() < keep {
                changed.push(line);
            }
        }
    }
    Ok((summary.ok_or("the preview ended without a summary")?, changed))
}

/// One line for a person about a changed event.
pub fn describe(line: &Value) -> String {
    let verdict = |v: &Value| match v["action"].as_str() {
        Some("skip") => format!("skip ({})", v["reason"].as_str().unwrap_or_default()),
        Some("error") => format!("error {}", v["error_kind"].as_str().unwrap_or_default()),
        Some(action) => action.to_owned(),
        None => "-".to_owned(),
    };
    let mut out = format!(
        "{}: {}: {} -> {}",
        line["event_id"].as_str().unwrap_or_default(),
        line["change"].as_str().unwrap_or_default(),
        verdict(&line["current"]),
        verdict(&line["candidate"])
    );
    if let Some(changes) = line["body_changes"].as_array() {
        let paths: Vec<&str> = changes.iter().filter_map(|c| c["path"].as_str()).collect();
        out.push_str(&format!("; body differs at {}", paths.join(", ")));
    }
    if line.get("headers").is_some() {
        out.push_str("; headers differ");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_sdk_is_every_source_file_of_the_sdk() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/src");
        let mut on_disk: Vec<String> =
            std::fs::read_dir(&dir).expect("sdk/src").map(|e| format!("src/{}", e.expect("entry").file_name().to_string_lossy())).collect();
        let mut embedded: Vec<String> = SDK_FILES.iter().map(|(p, _)| (*p).to_owned()).filter(|p| p.starts_with("src/")).collect();
        on_disk.sort();
        embedded.sort();
        assert_eq!(embedded, on_disk, "a file added to sdk/src must be added to SDK_FILES");
    }

    #[test]
    fn the_vendored_manifest_pins_what_the_workspace_pins() {
        let workspace: toml::Table = toml::from_str(include_str!("../../../Cargo.toml")).expect("workspace manifest");
        let pinned = workspace["workspace"]["dependencies"]["wit-bindgen"]["version"].as_str().expect("wit-bindgen version");
        assert!(SDK_MANIFEST.contains(&format!("version = \"{pinned}\"")), "wit-bindgen {pinned}");
    }

    #[test]
    fn names_that_are_not_crate_names_are_refused_and_nothing_is_written() {
        let scratch = tempfile::tempdir().expect("temporary directory");
        let base = scratch.path().join("scripts");
        for bad in ["", "Upper", "1st", "has space", "../escape", "semi;colon"] {
            assert!(new(bad, Some(&base)).is_err(), "{bad:?}");
        }
        assert!(!base.exists());
        let made = new("good-name", Some(&base)).expect("made");
        assert!(made.join("vendor/sluice-sdk/src/lib.rs").exists() && made.join("vendor/wit/0.1/world.wit").exists());
        assert!(new("good-name", Some(&base)).is_err(), "an existing folder is left alone");
    }
}
