//! `sluice catch` as a real process on 127.0.0.1: it prints the address it
//! bound, verifies signatures, answers as told, prints each request (one JSON
//! line with `--json`) without credentials, and stops cleanly on SIGTERM.
#![cfg(unix)] // SIGTERM is sent with kill(1).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const TOKEN: &str = "sk_live_do_not_print_me";
/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(30);

/// Signed here, apart from the engine's `sign` module, so that a mistake
/// shared by signer and verifier cannot pass.
fn hmac(secret: &str, parts: &[&[u8]]) -> Vec<u8> {
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").expect("whsec_")).expect("base64");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn standard_webhooks(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let signed = hmac(secret, &[format!("{id}.{timestamp}.").as_bytes(), body]);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(signed))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs() as i64
}

/// Lines a pipe yields, read on a thread so that waits can time out.
fn lines(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A running `sluice catch`; killed if a test fails before stopping it.
struct Catcher {
    child: Child,
    url: String,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Catcher {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["catch", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice catch");
        let stdout = lines(child.stdout.take().expect("stdout"));
        let stderr = lines(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + WAIT;
        let url = loop {
            let line = stderr
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("sluice catch printed the address it listens on");
            if let Some(addr) = line.strip_prefix("sluice catch listening on ") {
                break addr.to_owned();
            }
        };
        assert!(url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"), "{url}");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("client");
        Self { child, url, stdout, stderr, runtime, client }
    }

    /// Sends a request; answers its status and body.
    fn send(&self, request: reqwest::RequestBuilder) -> (u16, String) {
        self.runtime.block_on(async {
            let response = request.send().await.expect("sluice catch answers");
            let status = response.status().as_u16();
            (status, response.text().await.expect("body"))
        })
    }

    /// A signed POST to `/hooks?key=1`, with a bearer token.
    fn post(&self, body: &[u8], signed_with: &str, timestamp: i64) -> (u16, String) {
        let id = "evt_2f9c1a";
        self.send(
            self.client
                .post(format!("{}/hooks?key=1", self.url))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("webhook-id", id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", standard_webhooks(signed_with, id, timestamp, body))
                .body(body.to_vec()),
        )
    }

    fn stdout_line(&self) -> String {
        self.stdout.recv_timeout(WAIT).expect("sluice catch printed a line")
    }

    fn json_line(&self) -> serde_json::Value {
        let line = self.stdout_line();
        assert!(!line.contains(TOKEN), "{line}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"))
    }

    /// The readable block of one request, up to its `answered` line.
    fn block(&self) -> String {
        let mut block = String::new();
        loop {
            let line = self.stdout_line();
            block.push_str(&line);
            block.push('\n');
            if line.starts_with("answered ") {
                return block;
            }
        }
    }

    /// SIGTERM, then the exit status and what stderr said meanwhile.
    fn terminate(mut self) -> (ExitStatus, String) {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("run kill");
        assert!(sent.success());
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "sluice catch did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader thread hangs up at the end of the pipe, once the process is gone.
        let mut stderr = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            stderr.push(line);
        }
        (status, stderr.join("\n"))
    }
}

impl Drop for Catcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn verifies_signatures_acks_and_prints_one_json_line_per_request() {
    let catcher = Catcher::start(&["--secret", OTHER_SECRET, "--secret", SECRET, "--json"]);
    let body = br#"{"type":"order.paid","amount":150}"#;

    assert_eq!(catcher.post(body, SECRET, now()), (200, "[ACK]".to_owned()));
    let good = catcher.json_line();
    assert_eq!(good["method"], "POST");
    assert_eq!(good["path"], "/hooks");
    assert_eq!(good["query"], "key=***", "credential-like parameters are hidden");
    assert_eq!(good["headers"]["authorization"], "Bearer ***");
    assert_eq!(good["headers"]["webhook-id"], "evt_2f9c1a");
    assert_eq!(good["body_format"], "json");
    assert_eq!(good["body"]["amount"], 150);
    assert_eq!(good["signatures"]["standard_webhooks"]["verdict"], "valid");
    assert_eq!(good["signatures"]["standard_webhooks"]["secret"], 2, "named by its position");
    assert_eq!(good["signatures"]["x_signature"], serde_json::Value::Null);
    assert_eq!((good["status"].as_u64(), good["answer"].as_str()), (Some(200), Some("[ACK]")));

    // Signed with a secret sluice catch was not given: still acknowledged
    // (it is a receiver to look at), but said to be invalid.
    assert_eq!(catcher.post(body, "whsec_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", now()), (200, "[ACK]".to_owned()));
    let bad = catcher.json_line();
    assert_eq!(bad["signatures"]["standard_webhooks"]["verdict"], "invalid");
    assert_eq!(bad["signatures"]["standard_webhooks"]["reason"], "no_match");
    assert_eq!(bad["headers"]["authorization"], "Bearer ***");

    // Right secret, but ten minutes old.
    assert_eq!(catcher.post(body, SECRET, now() - 600).0, 200);
    let stale = catcher.json_line();
    assert_eq!(stale["signatures"]["standard_webhooks"]["verdict"], "invalid");
    assert_eq!(stale["signatures"]["standard_webhooks"]["reason"], "stale_timestamp");

    // The X-Signature profile, and a body that is not JSON.
    let form = b"a=1&b=2";
    let x_signature = hex::encode(hmac(SECRET, &[form]));
    let (status, answer) =
        catcher.send(catcher.client.put(format!("{}/other", catcher.url)).header("x-signature", x_signature).body(form.to_vec()));
    assert_eq!((status, answer.as_str()), (200, "[ACK]"));
    let x = catcher.json_line();
    assert_eq!((x["method"].as_str(), x["body"].as_str()), (Some("PUT"), Some("a=1&b=2")));
    assert_eq!(x["body_format"], "text");
    assert_eq!(x["signatures"]["x_signature"]["verdict"], "valid");
    assert_eq!(x["signatures"]["standard_webhooks"], serde_json::Value::Null);

    let (status, stderr) = catcher.terminate();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("sluice catch stopped"), "{stderr}");
}

#[test]
fn answers_the_given_status_and_prints_readable_blocks() {
    let catcher = Catcher::start(&["--status", "503"]);
    let (status, answer) = catcher.post(br#"{"a":[1,2]}"#, SECRET, now());
    assert_eq!((status, answer.as_str()), (503, ""));
    let block = catcher.block();
    assert!(block.starts_with("=== POST /hooks?key=***  ("), "{block}");
    assert!(block.contains("authorization: Bearer ***\n"), "{block}");
    assert!(!block.contains(TOKEN), "{block}");
    assert!(block.contains("{\n  \"a\": [\n    1,\n    2\n  ]\n}\n"), "{block}");
    assert!(block.contains("signature (Standard Webhooks): not checked (no --secret given)\n"), "{block}");
    assert!(block.contains("answered 503 (empty body)\n"), "{block}");
    drop(catcher);

    let loose = Catcher::start(&["--mode", "loose"]);
    let (status, answer) = loose.send(loose.client.get(format!("{}/", loose.url)));
    assert_eq!((status, answer.as_str()), (200, ""));
    let block = loose.block();
    assert!(block.contains("(empty body)\n"), "{block}");
    assert!(block.contains("signature: none"), "{block}");
    let (status, stderr) = loose.terminate();
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn a_malformed_secret_is_refused_before_listening() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["catch", "--listen", "127.0.0.1:0", "--secret", "not-a-secret"])
        .stdin(Stdio::null())
        .output()
        .expect("run sluice catch");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("whsec_"), "{stderr}");
}
