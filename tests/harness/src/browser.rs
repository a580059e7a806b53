//! A real headless browser for page tests: Debian's `chromium` driven through `chromedriver`
//! with the W3C WebDriver protocol (plain JSON over HTTP, so no client crate is needed).
//! `scripts/test.sh` installs both packages where they are missing.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

/// The key under which WebDriver returns an element's id.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser session; the driver stops when it is dropped.
pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless chromium session.
    pub async fn start() -> anyhow::Result<Self> {
        let port = crate::process::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("chromedriver (Debian's chromium-driver) is needed: {e}")
            })?;
        let mut browser =
            Self { driver, base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() };
        let status = crate::eventually(Duration::from_secs(20), || async {
            let r = browser.http.get(format!("{}/status", browser.base)).send().await.ok()?;
            let v: Value = r.json().await.ok()?;
            v["value"]["ready"].as_bool().filter(|r| *r)
        })
        .await;
        anyhow::ensure!(status.is_some(), "chromedriver did not become ready");
        let session = browser
            .call(
                reqwest::Method::POST,
                "/session",
                json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
                    "goog:chromeOptions": {"binary": "/usr/bin/chromium",
                        "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                 "--disable-dev-shm-usage", "--window-size=1280,900"]}}}}),
            )
            .await?;
        let id = session["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no session: {session}"))?;
        browser.base = format!("{}/session/{id}", browser.base);
        // Finding an element waits for it to appear (a page still loading after a click).
        browser.call(reqwest::Method::POST, "/timeouts", json!({"implicit": 10_000})).await?;
        Ok(browser)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
        if method != reqwest::Method::GET {
            request = request.json(&body);
        }
        let answer: Value = request.send().await?.json().await?;
        if answer["value"].get("error").is_some() {
            anyhow::bail!("WebDriver {path}: {}", answer["value"]);
        }
        Ok(answer["value"].clone())
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/url", json!({"url": url})).await.map(|_| ())
    }

    /// The current URL.
    pub async fn url(&self) -> anyhow::Result<String> {
        Ok(self
            .call(reqwest::Method::GET, "/url", Value::Null)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    async fn find(&self, css: &str) -> anyhow::Result<String> {
        let found = self
            .call(reqwest::Method::POST, "/element", json!({"using": "css selector", "value": css}))
            .await?;
        found[ELEMENT]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no element {css}"))
    }

    /// Types `text` into the element `css`.
    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let id = self.find(css).await?;
        self.call(reqwest::Method::POST, &format!("/element/{id}/value"), json!({"text": text}))
            .await
            .map(|_| ())
    }

    /// Clicks the element `css`.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let id = self.find(css).await?;
        self.call(reqwest::Method::POST, &format!("/element/{id}/click"), json!({}))
            .await
            .map(|_| ())
    }

    /// The visible text of the element `css`.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let id = self.find(css).await?;
        Ok(self
            .call(reqwest::Method::GET, &format!("/element/{id}/text"), Value::Null)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Waits (up to 10 s) until the page's URL ends with `suffix`: a click that submits a form
    /// returns before the next page has loaded.
    pub async fn wait_for_url(&self, suffix: &str) -> anyhow::Result<()> {
        let reached = crate::eventually(Duration::from_secs(10), || async {
            self.url().await.ok().filter(|u| u.ends_with(suffix))
        })
        .await;
        anyhow::ensure!(
            reached.is_some(),
            "the page never reached …{suffix} ({})",
            self.url().await?
        );
        Ok(())
    }

    /// Waits (up to 10 s) until the element `css` shows a text containing `needle`; that text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> anyhow::Result<String> {
        let text = crate::eventually(Duration::from_secs(10), || async {
            self.text(css).await.ok().filter(|t| t.contains(needle))
        })
        .await;
        text.ok_or_else(|| anyhow::anyhow!("{css} never showed {needle:?}"))
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> anyhow::Result<usize> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/elements",
                json!({"using": "css selector", "value": css}),
            )
            .await?;
        Ok(found.as_array().map_or(0, Vec::len))
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use base64::Engine;
        let png = self.call(reqwest::Method::GET, "/screenshot", Value::Null).await?;
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or_default())?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, bytes)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Best effort: end the session, then stop the driver (it takes the browser with it).
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
