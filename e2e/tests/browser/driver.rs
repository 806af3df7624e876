//! A real Chromium under Debian's chromedriver: one chromedriver per test
//! on a free port, one headless browser session per page, and the few
//! page operations the scenarios use, each bounded by a deadline. Chromium
//! or chromedriver missing is a failure, never a skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use testkit::bin::Process;
use testkit::prelude::*;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Where Debian's packages put them.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Bound on starting chromedriver and a browser session.
const START_WAIT: Duration = Duration::from_secs(30);
/// Chromium's narrowest window.
const MIN_WINDOW_WIDTH: u32 = 500;
/// How often a page condition is polled.
const POLL: Duration = Duration::from_millis(50);

/// At most this many scenarios drive browsers at once: each Chromium costs
/// a core while it renders, and the machine has two.
static BROWSERS: Semaphore = Semaphore::const_new(2);

/// A chromedriver process (and the Chromiums it started), killed with its
/// whole process group on drop.
pub struct Driver {
    url: String,
    process: Process,
    _slot: SemaphorePermit<'static>,
}

impl Driver {
    pub async fn start() -> Driver {
        for (path, package) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
            assert!(
                Path::new(path).is_file(),
                "{path} is missing: `apt-get install -y chromium chromium-driver` \
                 (scripts/test.sh installs {package})"
            );
        }
        let slot = BROWSERS.acquire().await.expect("semaphore never closed");
        let port = free_port();
        let mut command = Command::new(CHROMEDRIVER);
        command
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that the browsers it starts go with it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let process = Process::spawn(&mut command);
        let deadline = Deadline::after(START_WAIT);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            deadline.check("chromedriver did not listen");
            tokio::time::sleep(POLL).await;
        }
        Driver {
            url: format!("http://127.0.0.1:{port}"),
            process,
            _slot: slot,
        }
    }

    /// A new headless browser (its own profile, so its own localStorage)
    /// with a window of `width` x `height`.
    pub async fn page(&self, name: &str, width: u32, height: u32) -> Page {
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--no-first-run",
                    "--lang=en-US",
                    format!("--window-size={width},{height}"),
                ],
            },
        });
        let mut capabilities = capabilities;
        if width < MIN_WINDOW_WIDTH {
            // Chromium's windows are at least 500 px wide: a phone's
            // screen is emulated instead.
            capabilities["goog:chromeOptions"]["mobileEmulation"] = json!({
                "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1 },
            });
        }
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let client = tokio::time::timeout(START_WAIT, builder.connect(&self.url))
            .await
            .unwrap_or_else(|_| panic!("no browser session within {START_WAIT:?}"))
            .unwrap_or_else(|e| panic!("starting Chromium through chromedriver: {e}"));
        Page {
            client,
            name: name.to_owned(),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.process.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        self.process.kill();
    }
}

/// One browser tab, seen through WebDriver.
pub struct Page {
    pub client: Client,
    pub name: String,
}

impl Page {
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("{}: opening {url}: {e}", self.name));
    }

    /// Runs `script` (a function body; `arguments` are `args`).
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("{}: script {script:?}: {e}", self.name))
    }

    /// Polls `script` until it returns something truthy (not null, false,
    /// 0 or ""); panics naming `what` after [`WAIT`].
    pub async fn wait_js(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        self.wait_js_within(WAIT, what, script, args).await
    }

    /// [`wait_js`](Page::wait_js) with a bound of its own.
    pub async fn wait_js_within(
        &self,
        within: Duration,
        what: &str,
        script: &str,
        args: Vec<Value>,
    ) -> Value {
        let deadline = Deadline::after(within);
        loop {
            let value = self.js(script, args.clone()).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if deadline.passed() {
                let status = self
                    .js(
                        "return document.body.dataset.status + ' | ' + \
                         document.getElementById('error-text').textContent",
                        vec![],
                    )
                    .await;
                self.screenshot(&format!("{}-timeout", self.name)).await;
                panic!(
                    "{}: timed out after {within:?} waiting for {what} (status | error: {status})",
                    self.name
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Types `text` into the field at `css`, as a user does (key by key).
    pub async fn type_into(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clearing a field");
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("{}: typing into {css}: {e}", self.name));
    }

    /// Presses Enter in the field at `css`.
    pub async fn press_enter(&self, css: &str) {
        self.find(css)
            .await
            .send_keys("\u{E007}")
            .await
            .unwrap_or_else(|e| panic!("{}: Enter in {css}: {e}", self.name));
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("{}: clicking {css}: {e}", self.name));
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{}: no {css}: {e}", self.name))
    }

    /// Saves a PNG of the page as `target/browser-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("{}: screenshot: {e}", self.name));
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("creating the screenshot folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("writing a screenshot");
        path
    }

    /// Ends the browser session (Chromium exits).
    pub async fn close(self) {
        let _ = tokio::time::timeout(WAIT, self.client.close()).await;
    }
}

/// `target/browser-screenshots`, beside the test binary's profile folder
/// (`target/<profile>/deps/<test>`).
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.ancestors()
        .nth(3)
        .expect("tests run from target/<profile>/deps")
        .join("browser-screenshots")
}
