//! A real browser for the dashboard's tests: Debian's headless Chromium
//! driven through chromedriver (WebDriver) with `fantoccini`. Each
//! [`Browser`] starts its own chromedriver on a free port and its own
//! Chromium profile, so tests run in parallel; both end when it is closed
//! or dropped. `deploy/browser-tools.sh` installs the two programs.

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Longest any wait for the page may take before the test fails (pages
/// draw in well under a second; streams and agents take a few).
pub const PAGE_WAIT: Duration = Duration::from_secs(30);

/// Chromium's flags: headless (the new mode, the real browser), no
/// sandbox (tests run as root, in containers), /tmp instead of a small
/// /dev/shm, and the desktop size the dashboard is checked at.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
];

/// Where screenshots go: `target/ui-screenshots/` of the workspace.
pub fn screenshot_dir() -> PathBuf {
    workspace().join("target").join("ui-screenshots")
}

/// The workspace root (this crate's parent).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A headless Chromium session and the chromedriver that drives it.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    /// The chromedriver process (killed on drop).
    driver: Child,
    /// The dashboard's base URL (`http://127.0.0.1:PORT`).
    base: String,
    /// The Chromium profile directory of this session (removed on close).
    profile: PathBuf,
}

/// A free port on the loopback interface, for chromedriver.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("the bound address").port()
}

/// Waits until chromedriver answers its status endpoint.
async fn wait_for_driver(url: &str) {
    let started = Instant::now();
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(format!("{url}/status")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            started.elapsed() < PAGE_WAIT,
            "chromedriver did not start at {url}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium pointed at nothing yet;
    /// `base` is the controller's URL that [`Browser::open`] paths join.
    pub async fn start(base: &str) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting chromedriver (run deploy/browser-tools.sh to install it)");
        let url = format!("http://127.0.0.1:{port}");
        wait_for_driver(&url).await;
        let profile = std::env::temp_dir().join(format!("orch-ui-profile-{}", uuid::Uuid::new_v4().simple()));
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "args": args, "binary": chromium_binary() }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a WebDriver session with headless Chromium");
        Browser {
            client,
            driver,
            base: base.trim_end_matches('/').to_owned(),
            profile,
        }
    }

    /// Goes to `path` of the controller (`/ui/#/workers`).
    pub async fn open(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("opening {path}: {e}"));
    }

    /// Logs in through the dashboard's form and waits for the navigation.
    pub async fn log_in(&self, username: &str, password: &str) {
        self.open("/ui/").await;
        self.find("#username")
            .await
            .send_keys(username)
            .await
            .expect("typing the user name");
        self.find("#password")
            .await
            .send_keys(password)
            .await
            .expect("typing the password");
        self.click("#login button[type=submit]").await;
        self.wait_until(
            "the navigation after login",
            "!document.getElementById('nav').hidden",
        )
        .await;
    }

    /// The element `css` names, waiting for it to appear.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    /// Clicks the element `css` names.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("running {script}: {e}"))
    }

    /// Runs `script` (a function body, async: it may `await`) and returns
    /// what it returns.
    pub async fn eval_async(&self, script: &str) -> Value {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1]; \
             (async () => {{ {script} }})().then(done, (e) => done({{ error: String(e) }}));"
        );
        self.client
            .execute_async(&wrapped, vec![])
            .await
            .unwrap_or_else(|e| panic!("running {script}: {e}"))
    }

    /// Waits until the JavaScript expression `condition` is true.
    pub async fn wait_until(&self, what: &str, condition: &str) {
        let script = format!("try {{ return !!({condition}); }} catch (e) {{ return false; }}");
        let started = Instant::now();
        loop {
            if self.eval(&script, vec![]).await == json!(true) {
                return;
            }
            if started.elapsed() > PAGE_WAIT {
                let shot = self
                    .screenshot(&format!("timeout-{}", uuid::Uuid::new_v4().simple()))
                    .await;
                panic!(
                    "waited {PAGE_WAIT:?} for {what} ({condition}); screenshot {}",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the element `css` names shows `text`; returns its text.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> String {
        let condition = format!(
            "(document.querySelector({css}) || {{}}).textContent.includes({text})",
            css = json!(css),
            text = json!(text)
        );
        self.wait_until(&format!("{text:?} in {css}"), &condition).await;
        self.text(css).await
    }

    /// The text of the element `css` names.
    pub async fn text(&self, css: &str) -> String {
        let value = self
            .eval(
                "const el = document.querySelector(arguments[0]); return el ? el.textContent : null;",
                vec![json!(css)],
            )
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Saves a PNG of the page as `target/ui-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("creating the screenshot directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).expect("writing the screenshot");
        path
    }

    /// Saves a screenshot and, when `ORCH_UPDATE_SCREENSHOTS` is set,
    /// copies it to `docs/screenshots/NAME.png`, where the README shows it
    /// (so that a test run leaves the checkout as it found it).
    pub async fn screenshot_for_docs(&self, name: &str) -> PathBuf {
        let shot = self.screenshot(name).await;
        if std::env::var_os("ORCH_UPDATE_SCREENSHOTS").is_none() {
            return shot;
        }
        let docs = workspace().join("docs").join("screenshots");
        std::fs::create_dir_all(&docs).expect("creating docs/screenshots");
        let copy = docs.join(format!("{name}.png"));
        std::fs::copy(&shot, &copy).expect("copying the screenshot into docs/");
        copy
    }

    /// Resizes the window (the phone-width checks use 390 × 844).
    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resizing the window");
    }

    /// Ends the session, chromedriver and the profile.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The Chromium binary chromedriver starts (Debian's, unless
/// `ORCH_CHROMIUM` names another).
fn chromium_binary() -> String {
    std::env::var("ORCH_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}
