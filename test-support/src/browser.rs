//! A headless Chromium driven over WebDriver, for tests of the web UI: one
//! `chromedriver` per [`Browser`] on a free loopback port, one session with a
//! throwaway profile, and helpers that poll for DOM states instead of
//! sleeping (each fails with what it waited for and the last value seen).
//!
//! The driver runs in its own process group and the browser is its child:
//! dropping a [`Browser`] ends the session (a blocking `DELETE` to the
//! driver, so it works whatever the test's runtime is doing) and then kills
//! the whole group, so no Chromium outlives its test.
//!
//! It does not know anything about Osprey's pages; the tests do.

use anyhow::{bail, Context};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub use fantoccini::cookies::Cookie;

/// Default paths of Debian's `chromium` and `chromium-driver` packages.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long the driver gets to answer `/status`, and the session to open
/// (Chromium's first start on a loaded machine takes seconds).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Between two probes of a waiting helper.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long [`Drop`] waits for the driver to end the session.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A headless Chromium session and the `chromedriver` serving it.
pub struct Browser {
    client: Client,
    driver: tokio::process::Child,
    driver_addr: SocketAddr,
    session_id: Option<String>,
    /// Chromium's profile and the driver's log.
    dir: TempDir,
}

impl Browser {
    /// Starts `chromedriver` (`OSPREY_CHROMEDRIVER`, else
    /// `/usr/bin/chromedriver`) and opens a headless session of Chromium
    /// (`OSPREY_CHROMIUM`, else `/usr/bin/chromium`) with a fresh profile.
    pub async fn start() -> anyhow::Result<Browser> {
        let chromium = program("OSPREY_CHROMIUM", CHROMIUM)?;
        let chromedriver = program("OSPREY_CHROMEDRIVER", CHROMEDRIVER)?;
        let dir = tempfile::Builder::new()
            .prefix("osprey-browser-")
            .tempdir()?;
        let profile = dir.path().join("profile");
        std::fs::create_dir_all(&profile)?;
        let log_path = dir.path().join("chromedriver.log");
        let log = std::fs::File::create(&log_path)?;
        // The port is free now; the driver binds it a moment later. Another
        // process taking it in between shows as a driver that never answers.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let driver_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut driver = tokio::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own group, with Chromium in it: `Drop` kills them together.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        wait_for_driver(&mut driver, driver_addr, &log_path).await?;

        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_owned(), json!("chrome"));
        // A page's `confirm()` must not wedge a test that clicks through it.
        capabilities.insert("unhandledPromptBehavior".to_owned(), json!("accept"));
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        // Plain http on loopback: no TLS connector needed.
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let driver_url = format!("http://{driver_addr}");
        let connect = builder.connect(&driver_url);
        let client = match tokio::time::timeout(START_TIMEOUT, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => bail!(
                "opening a Chromium session: {error}; chromedriver log: {}",
                log_tail(&log_path)
            ),
            Err(_) => bail!(
                "no Chromium session within {START_TIMEOUT:?}; chromedriver log: {}",
                log_tail(&log_path)
            ),
        };
        let session_id = client.session_id().await.ok().flatten();
        Ok(Browser {
            client,
            driver,
            driver_addr,
            session_id,
            dir,
        })
    }

    /// The fantoccini client, for what the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("navigating to {url}"))
    }

    /// The address of the current page.
    pub async fn current_url(&self) -> anyhow::Result<String> {
        Ok(self.client.current_url().await?.to_string())
    }

    /// Waits until an element matches `css`; returns the first.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> anyhow::Result<Element> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.client.find(Locator::Css(css)).await {
                Ok(element) => return Ok(element),
                Err(error) => error.to_string(),
            };
            if Instant::now() >= deadline {
                let url = self.current_url().await.unwrap_or_default();
                bail!("no element matched {css:?} within {timeout:?} on {url}: {last}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until the first element matching `css` has `attr` == `value`;
    /// on timeout the error names the last value seen (or that nothing
    /// matched). The element is looked up again on every probe, so a page
    /// that replaces it is followed.
    pub async fn wait_until_attr(
        &self,
        css: &str,
        attr: &str,
        value: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.attr(css, attr).await {
                Ok(Some(seen)) if seen == value => return Ok(()),
                Ok(Some(seen)) => format!("{attr}={seen:?}"),
                Ok(None) => format!("no attribute {attr}"),
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() >= deadline {
                let url = self.current_url().await.unwrap_or_default();
                bail!(
                    "{css:?} did not get {attr}={value:?} within {timeout:?} on {url}; \
                     last seen: {last}"
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Polls `probe` until it returns `Ok`; on timeout fails naming `what`
    /// and the last `Err` (a description of the state seen).
    pub async fn wait_until<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match probe().await {
                Ok(value) => return Ok(value),
                Err(last) => last,
            };
            if Instant::now() >= deadline {
                bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// An attribute of the first element matching `css` (`None`: absent).
    pub async fn attr(&self, css: &str, attr: &str) -> anyhow::Result<Option<String>> {
        let element = self.find(css).await?;
        Ok(element.attr(attr).await?)
    }

    /// The classes of the first element matching `css`.
    pub async fn classes(&self, css: &str) -> anyhow::Result<Vec<String>> {
        let classes = self.attr(css, "class").await?.unwrap_or_default();
        Ok(classes.split_whitespace().map(str::to_owned).collect())
    }

    /// Whether the first element matching `css` is shown (not hidden by
    /// CSS), as WebDriver judges it.
    pub async fn is_displayed(&self, css: &str) -> anyhow::Result<bool> {
        Ok(self.find(css).await?.is_displayed().await?)
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        Ok(self.find(css).await?.text().await?)
    }

    /// Every element matching `css` (none is not an error).
    pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        Ok(self.client.find_all(Locator::Css(css)).await?)
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.find(css)
            .await?
            .click()
            .await
            .with_context(|| format!("clicking {css:?}"))
    }

    /// Replaces the value of the input matching `css` by typing `value`.
    pub async fn fill(&self, css: &str, value: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        element.clear().await?;
        element
            .send_keys(value)
            .await
            .with_context(|| format!("typing into {css:?}"))
    }

    /// Runs `script` in the page (`arguments` holds `args`); returns what
    /// it `return`s.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        Ok(self.client.execute(script, args).await?)
    }

    /// Writes a PNG of the viewport to `path`, creating its directories.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let png = self.client.screenshot().await?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// The cookies the browser holds for the current page, as WebDriver
    /// reports them (with their `HttpOnly` and `SameSite` flags).
    pub async fn cookies(&self) -> anyhow::Result<Vec<Cookie<'static>>> {
        Ok(self.client.get_all_cookies().await?)
    }

    /// Where the driver's log is kept while the browser lives.
    pub fn driver_log(&self) -> PathBuf {
        self.dir.path().join("chromedriver.log")
    }

    async fn find(&self, css: &str) -> anyhow::Result<Element> {
        self.client
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("finding {css:?}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Best effort: a closed session lets Chromium exit cleanly (and
        // remove its profile lock); the group kill covers the rest.
        if let Some(session) = &self.session_id {
            let _ = delete_session(self.driver_addr, session);
        }
        if let Some(pid) = self.driver.id() {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = self.driver.start_kill();
    }
}

/// The program at `$var`, else at `default`; an error when it is missing.
fn program(var: &str, default: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    if !path.is_file() {
        bail!(
            "{} not found (set {var} or run scripts/install-deps.sh)",
            path.display()
        );
    }
    Ok(path)
}

/// Waits until the driver answers `GET /status` with `"ready": true`.
async fn wait_for_driver(
    driver: &mut tokio::process::Child,
    addr: SocketAddr,
    log_path: &Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = driver.try_wait()? {
            bail!("chromedriver exited with {status}: {}", log_tail(log_path));
        }
        let answer = tokio::task::spawn_blocking(move || http_request(addr, "GET", "/status"))
            .await
            .context("the /status probe panicked")?;
        if let Ok(body) = answer {
            if body.contains("\"ready\":true") || body.contains("\"ready\": true") {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "chromedriver did not answer /status on {addr} within {START_TIMEOUT:?}: {}",
                log_tail(log_path)
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn delete_session(addr: SocketAddr, session: &str) -> std::io::Result<String> {
    http_request(addr, "DELETE", &format!("/session/{session}"))
}

/// A bodiless HTTP/1.1 request on loopback; returns the answer's head and
/// body. Blocking on purpose: `Drop` cannot await, and the driver's answers
/// are small. The driver keeps connections open whatever `Connection` says,
/// so the body is read up to its `Content-Length`.
fn http_request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, CLOSE_TIMEOUT)?;
    stream.set_read_timeout(Some(CLOSE_TIMEOUT))?;
    stream.set_write_timeout(Some(CLOSE_TIMEOUT))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
        if complete(&answer) {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Whether `answer` holds a whole HTTP answer: its head and as many body
/// bytes as its `Content-Length` says (no header: the head is enough).
fn complete(answer: &[u8]) -> bool {
    let Some(head_end) = answer.windows(4).position(|window| window == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    answer.len() >= head_end + 4 + length
}

/// The end of the driver's log, for error messages.
fn log_tail(path: &Path) -> String {
    let log = std::fs::read(path).unwrap_or_default();
    let start = log.len().saturating_sub(4000);
    String::from_utf8_lossy(&log[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page that changes itself after a moment, like a live page does.
    const PAGE: &str = "<main id='m' data-status='running'><input id='i'>\
        <button id='b' onclick=\"document.getElementById('m').dataset.status='done'\">go</button>\
        <p id='p' class='a b'>hello</p><p id='h' style='display:none'>hidden</p></main>\
        <script>setTimeout(function(){document.getElementById('p').textContent='later'},300)</script>";

    #[tokio::test]
    async fn drives_a_data_url_page() -> anyhow::Result<()> {
        let browser = Browser::start().await?;
        let url = format!("data:text/html,{}", percent(PAGE));
        browser.goto(&url).await?;
        browser.wait_for("#m", Duration::from_secs(10)).await?;
        browser
            .wait_until_attr("#m", "data-status", "running", Duration::from_secs(5))
            .await?;
        assert!(browser.is_displayed("#b").await?);
        assert!(!browser.is_displayed("#h").await?);
        assert_eq!(browser.classes("#p").await?, ["a", "b"]);
        assert!(browser.classes("#m").await?.is_empty());
        browser.fill("#i", "typed").await?;
        let typed = browser
            .execute("return document.getElementById('i').value", vec![])
            .await?;
        assert_eq!(typed, json!("typed"));
        browser.click("#b").await?;
        browser
            .wait_until_attr("#m", "data-status", "done", Duration::from_secs(5))
            .await?;
        browser
            .wait_until("the text to change", Duration::from_secs(5), || async {
                match browser.text("#p").await {
                    Ok(text) if text == "later" => Ok(()),
                    Ok(text) => Err(text),
                    Err(error) => Err(format!("{error:#}")),
                }
            })
            .await?;

        // A timeout names the last value seen.
        let error = browser
            .wait_until_attr("#m", "data-status", "never", Duration::from_millis(200))
            .await
            .expect_err("the attribute never takes that value");
        assert!(format!("{error}").contains("\"done\""), "{error}");
        let error = browser
            .wait_for("#absent", Duration::from_millis(200))
            .await
            .expect_err("nothing matches");
        assert!(format!("{error}").contains("#absent"), "{error}");

        let shot = browser.dir.path().join("shots/page.png");
        browser.screenshot(&shot).await?;
        let png = std::fs::read(&shot)?;
        assert!(png.starts_with(b"\x89PNG"), "a PNG file");
        Ok(())
    }

    /// `cookies()` sees an HttpOnly cookie that the page's script cannot.
    #[tokio::test]
    async fn reports_http_only_cookies() -> anyhow::Result<()> {
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(|| async {
                (
                    [
                        ("set-cookie", "secret=1; HttpOnly; SameSite=Strict; Path=/"),
                        ("content-type", "text/html"),
                    ],
                    "<p id='p'>cookie set</p>",
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // Aborted at the end of the test; it serves nothing else.
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let browser = Browser::start().await?;
        browser.goto(&format!("http://{addr}/")).await?;
        browser.wait_for("#p", Duration::from_secs(10)).await?;
        let cookies = browser.cookies().await?;
        let secret = cookies
            .iter()
            .find(|cookie| cookie.name() == "secret")
            .context("the cookie is set")?;
        assert_eq!(secret.http_only(), Some(true), "{secret:?}");
        let visible = browser.execute("return document.cookie", vec![]).await?;
        assert_eq!(
            visible,
            json!(""),
            "an HttpOnly cookie is hidden from scripts"
        );
        drop(browser);
        server.abort();
        Ok(())
    }

    /// Percent-encodes what a `data:` URL cannot hold literally.
    fn percent(text: &str) -> String {
        text.bytes()
            .map(|byte| match byte {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (byte as char).to_string()
                }
                _ => format!("%{byte:02X}"),
            })
            .collect()
    }
}
