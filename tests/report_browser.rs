//! The report and the live `/ui` in a real browser: headless Chromium driven over WebDriver
//! (chromedriver), checking what a person sees — the funnel numbers, a question's bar labels,
//! the login refusing a wrong key, an answer with `<script>` shown as text — and saving a
//! screenshot of each page under the test's output directory.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); without them
//! each test prints "skipped: no Chromium (...)" and passes.

mod report_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use report_support::*;
use serde_json::{json, Value};
use support::*;

/// Flags that let Chromium run headless here, as root, without reaching the network.
const CHROMIUM_FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,1600",
];

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// A headless Chromium session through chromedriver; both stop when dropped.
struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where screenshots go: this test target's output directory.
fn shots() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report_browser");
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Browser {
    /// Starts chromedriver and a session. `Err` says which program is missing (the test is
    /// then skipped); with both installed, any failure to start fails the test.
    async fn start() -> Result<Browser, String> {
        let chromium = which(&["chromium", "chromium-browser", "google-chrome"])
            .ok_or("no chromium on PATH")?;
        let chromedriver = which(&["chromedriver"]).ok_or("no chromedriver on PATH")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let mut b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _profile: tempfile::tempdir().expect("tempdir"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = b.http.get(format!("{}/status", b.base)).send().await;
            if let Ok(r) = ready {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not get ready in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", b._profile.path().display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}
        }}});
        let r: Value = b
            .http
            .post(format!("{}/session", b.base))
            .json(&caps)
            .send()
            .await
            .expect("POST /session")
            .json()
            .await
            .expect("the session's JSON");
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("Chromium did not start a session: {r}"));
        b.base = format!("{}/session/{id}", b.base);
        Ok(b)
    }

    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match v["value"].get("error") {
            Some(_) => Err(format!("WebDriver {path}: {v}")),
            None => Ok(v["value"].clone()),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The page's text once it contains `needle` (a click that submits a form or follows a
    /// link returns before the next page is there); panics after 30 s (a loaded CI machine).
    async fn wait_text(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < deadline {
            let found = self
                .try_call(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": "body"})),
                )
                .await;
            if let Ok(e) = found {
                let id = e
                    .as_object()
                    .and_then(|o| o.values().next())
                    .and_then(Value::as_str);
                if let Some(id) = id {
                    let path = format!("/element/{id}/text");
                    if let Ok(t) = self.try_call(reqwest::Method::GET, &path, None).await {
                        last = t.as_str().unwrap_or("").to_string();
                        if last.contains(needle) {
                            return last;
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page never showed {needle:?}; last text: {last}");
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn elements(&self, css: &str) -> Vec<String> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e.as_object()
                    .unwrap()
                    .values()
                    .next()
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    /// The rendered text of every element matching `css`.
    async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for id in self.elements(css).await {
            let t = self
                .call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
                .await;
            out.push(t.as_str().unwrap_or("").to_string());
        }
        out
    }

    /// What the page shows as text.
    async fn visible_text(&self) -> String {
        self.texts("body").await.join("\n")
    }

    async fn title(&self) -> String {
        self.call(reqwest::Method::GET, "/title", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    async fn fill(&self, css: &str, value: &str) {
        let id = self.elements(css).await.remove(0);
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": value })),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let id = self.elements(css).await.remove(0);
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn cookies(&self) -> Vec<Value> {
        self.call(reqwest::Method::GET, "/cookie", None)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Saves a PNG of the viewport; returns its path.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "a real screenshot"
        );
        let path = shots().join(name);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }
}

macro_rules! browser_or_skip {
    () => {
        match Browser::start().await {
            Ok(b) => b,
            Err(why) => {
                eprintln!("skipped: no Chromium ({why})");
                return;
            }
        }
    };
}

/// The funnel of `campaign` from `flowctl stats --json`, in the report's table order.
fn stats_funnel(env: &Env, campaign: &str) -> Vec<String> {
    let out = env.cmd().args(["stats", "--json"]).output().unwrap();
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    funnel_of(&s, Some(campaign))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_file_shows_the_funnel_the_titles_and_scripts_as_text() {
    let browser = browser_or_skip!();
    let env = Env::new();
    build(&env.db());
    let flow = env.write("flow.json", FLOW);
    let out = env.path("report.html");
    let status = env
        .cmd()
        .args(["report", "--flow-json"])
        .arg(&flow)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    browser.goto(&format!("file://{}", out.display())).await;
    let text = browser.visible_text().await;
    assert!(
        text.contains("Campaign spring") && text.contains("Campaign autumn"),
        "{text}"
    );
    let headings = browser.texts("section.campaign h2").await;
    let i = headings
        .iter()
        .position(|h| h == "Campaign spring")
        .unwrap();
    let spring = browser
        .texts(&format!("#campaign-{i} table.funnel td"))
        .await;
    assert_eq!(spring, stats_funnel(&env, "spring"));
    let labels = browser.texts("svg text.label").await;
    for want in ["★★★★★ Excellent", "★ Décevant", "Wi-Fi", "completed"] {
        assert!(labels.iter().any(|l| l == want), "{want} in {labels:?}");
    }
    // The script is text on the page and never ran.
    assert!(text.contains(SCRIPT), "{text}");
    assert!(text.contains(FORMULA));
    assert_eq!(browser.title().await, "flowctl report");
    assert!(!text.contains(PHONE) && text.contains("+212••••••159"));
    browser.screenshot("report.png").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_ui_refuses_a_wrong_key_then_shows_the_campaign() {
    let browser = browser_or_skip!();
    let env = Env::new();
    build(&env.db());
    let flow = env.write("flow.json", FLOW);
    let server = env.serve_with_env(
        &[("FLOWCTL_API_KEY", API_KEY)],
        &["--flow-json", flow.to_str().unwrap()],
    );
    browser.goto(&format!("{}/ui", server.url)).await;
    assert!(browser.visible_text().await.contains("API key"));
    browser.fill("#key", "not-the-key").await;
    browser.click("button[type=submit]").await;
    browser.wait_text("Wrong key.").await;
    assert!(
        browser.cookies().await.is_empty(),
        "no cookie for a wrong key"
    );
    browser.screenshot("ui-login-refused.png").await;

    browser.fill("#key", API_KEY).await;
    browser.click("button[type=submit]").await;
    let list = browser.wait_text("autumn").await;
    assert!(list.contains("spring"), "{list}");
    let cookies = browser.cookies().await;
    assert_eq!(cookies.len(), 1);
    assert_eq!(cookies[0]["httpOnly"], true);
    assert_eq!(cookies[0]["sameSite"], "Strict");
    browser.click("a[href='/ui/campaign/spring']").await;
    let text = browser.wait_text("Campaign spring").await;
    let cells = browser.texts("table.funnel td").await;
    assert_eq!(cells, stats_funnel(&env, "spring"));
    let labels = browser.texts("svg text.label").await;
    assert!(labels.iter().any(|l| l == "★★★★★ Excellent"), "{labels:?}");
    assert!(text.contains(SCRIPT), "the script shows as text: {text}");
    assert_eq!(browser.title().await, "flowctl — spring");
    browser.screenshot("ui-campaign.png").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_writes_a_report_a_browser_shows() {
    let browser = browser_or_skip!();
    let env = Env::new();
    let dir = env.path("demo");
    let out = env
        .cmd()
        .args(["demo", "--dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = dir.join("report.html");
    assert!(
        stdout.contains(&report.display().to_string()),
        "the demo prints the report's path: {stdout}"
    );
    browser.goto(&format!("file://{}", report.display())).await;
    let text = browser.visible_text().await;
    assert!(text.contains("Campaign demo"), "{text}");
    let expected = {
        let out = Command::new(bin())
            .env_clear()
            .env("FLOWCTL_DB", dir.join("flowctl.db"))
            .args(["stats", "--json"])
            .output()
            .unwrap();
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        funnel_of(&s, None)
    };
    assert_eq!(browser.texts("table.funnel td").await, expected);
    let labels = browser.texts("svg text.label").await;
    assert!(labels.iter().any(|l| l == "★★★★★ Excellent"), "{labels:?}");
    browser.screenshot("demo-report.png").await;
}
