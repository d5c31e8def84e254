//! A real headless Chromium, driven over WebDriver (chromedriver, started
//! per browser on a free loopback port) with fantoccini: what the console's
//! tests click through. Screenshots go to `target/console-screenshots/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::process::{Child, Command};

/// A browser session; chromedriver (and its Chromium) die with it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    /// Where screenshots go.
    pub shots: PathBuf,
}

/// The Chromium and chromedriver Debian installs (`chromium`,
/// `chromium-driver`), or those named by `CHROMIUM` and `CHROMEDRIVER`.
fn program(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

impl Browser {
    pub async fn start() -> Browser {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("its address").port()
        };
        let driver_path = program("CHROMEDRIVER", "/usr/bin/chromedriver");
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{driver_path}: {e}; install Debian's chromium and chromium-driver (scripts/setup.sh does)"));
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": program("CHROMIUM", "/usr/bin/chromium"),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", "--no-first-run", "--disable-extensions"],
            }
        });
        let capabilities = capabilities.as_object().expect("an object").clone();
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&url).await {
                Ok(client) => {
                    let shots = crate::root().join("target/console-screenshots");
                    std::fs::create_dir_all(&shots).expect("screenshot folder");
                    return Browser { client, driver, shots };
                }
                Err(e) => last = Some(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver on port {port} never answered: {last:?}");
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    }

    /// The element matching `css`, waiting up to 10 s for it.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        let found = tokio::time::timeout(Duration::from_secs(10), self.client.wait().for_element(Locator::Css(css))).await;
        match found {
            Ok(Ok(element)) => element,
            _ => panic!("no `{css}` on {}:\n{}", self.url().await, self.text().await),
        }
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear a field");
        field.send_keys(value).await.expect("type into a field");
    }

    pub async fn select(&self, css: &str, value: &str) {
        self.find(css).await.select_by_value(value).await.unwrap_or_else(|e| panic!("{css} = {value}: {e}"));
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Clicks the button whose text is `label` and waits for the page it
    /// leads to.
    pub async fn press(&self, label: &str) {
        self.press_then(label, false).await;
    }

    /// Clicks the button whose text is `label`, accepts the question it
    /// asks, and waits for the page it leads to.
    pub async fn press_and_confirm(&self, label: &str) {
        self.press_then(label, true).await;
    }

    async fn press_then(&self, label: &str, confirm: bool) {
        let old = self.find("html").await;
        let xpath = format!("//button[normalize-space(.)='{label}']");
        match self.client.find(Locator::XPath(&xpath)).await {
            Ok(button) => button.click().await.unwrap_or_else(|e| panic!("press {label}: {e}")),
            Err(_) => panic!("no button `{label}` on {}:\n{}", self.url().await, self.text().await),
        }
        if confirm {
            self.client.accept_alert().await.unwrap_or_else(|e| panic!("{label} asked nothing: {e}"));
        }
        // The old page's root goes stale once the next page has replaced it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while old.tag_name().await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "pressing `{label}` led nowhere from {}", self.url().await);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.find("body").await;
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default()
    }

    /// Reloads until the page's text contains `needle` (30 s at most).
    pub async fn reload_until(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.text().await;
            if text.contains(needle) {
                return text;
            }
            assert!(tokio::time::Instant::now() < deadline, "`{needle}` never showed on {}:\n{text}", self.url().await);
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.client.refresh().await.expect("reload");
        }
    }

    /// Saves a screenshot as `<name>.png`.
    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("write a screenshot");
    }

    pub async fn close(self) {
        let Browser { client, mut driver, .. } = self;
        let _ = client.close().await;
        let _ = driver.kill().await;
    }
}
