//! The web client in a real browser (issue 15): headless Chromium loads
//! the page from holdfast's WebSocket door and is driven over the DevTools
//! protocol (a WebSocket, so the test's own client does it): it logs in
//! through the page's input line, sees the game's output with its colours,
//! masks the input when the game turns echo off, keeps a history, shows
//! the offline and online notices distinctly across a game restart, keeps
//! its connection through an upgrade of the proxy (`SIGUSR2`), and
//! reconnects and logs in again by itself when the proxy restarts.
//!
//! Needs `chromium`; `scripts/webclient.sh` installs it and runs this
//! (it is `#[ignore]`d in the default run). With `HOLDFAST_SCREENSHOT=PATH`
//! it also saves a screenshot of the page there.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Running (a zombie is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

/// Page loads and a browser start are slower than a telnet reply.
const BROWSER_WAIT: Duration = Duration::from_secs(30);

struct Browser {
    child: Option<Child>,
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        reap(&mut self.child);
    }
}

fn chromium() -> &'static str {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
        {
            return c;
        }
    }
    panic!("no chromium found: run scripts/webclient.sh, which installs it");
}

/// GET over HTTP/1.1 from the DevTools server (it keeps the connection
/// open, so the body is read by its Content-Length).
async fn http_get(addr: &str, path: &str) -> String {
    let fetch = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            out.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&out).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    return Some(body.to_string());
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

impl Browser {
    async fn open(dir: &TempDir, url: &str) -> Browser {
        let profile = dir.path("chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        let child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=820,640",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let port_file = profile.join("DevToolsActivePort");
        let t0 = Instant::now();
        let port = loop {
            if let Ok(s) = std::fs::read_to_string(&port_file) {
                if let Some(p) = s.lines().next().filter(|p| !p.is_empty()) {
                    break p.to_string();
                }
            }
            assert!(t0.elapsed() < BROWSER_WAIT, "chromium did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let addr = format!("127.0.0.1:{port}");
        let ws_url = loop {
            let list: Value =
                serde_json::from_str(&http_get(&addr, "/json/list").await).unwrap_or(Value::Null);
            let page = list.as_array().and_then(|l| {
                l.iter()
                    .find(|t| {
                        t["type"] == "page" && t["url"].as_str().unwrap_or("").starts_with("http")
                    })
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(String::from))
            });
            if let Some(u) = page {
                break u;
            }
            assert!(t0.elapsed() < BROWSER_WAIT, "no page target: {list}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let tcp = TcpStream::connect(&addr).await.expect("DevTools port");
        let (ws, _) = tokio_tungstenite::client_async(ws_url.as_str(), tcp)
            .await
            .expect("DevTools WebSocket");
        Browser {
            child: Some(child),
            ws,
            next_id: 1,
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).await.unwrap();
        let t0 = Instant::now();
        loop {
            let m = tokio::time::timeout(BROWSER_WAIT, self.ws.next())
                .await
                .expect("DevTools answer")
                .expect("DevTools open")
                .unwrap();
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
            assert!(t0.elapsed() < BROWSER_WAIT);
        }
    }

    /// Evaluates `js` in the page; its value.
    async fn eval(&mut self, js: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": js, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    async fn text(&mut self, selector: &str) -> String {
        let js = format!(
            "[...document.querySelectorAll({selector:?})].map(e => e.textContent).join('\\n')"
        );
        self.eval(&js).await.as_str().unwrap_or("").to_string()
    }

    /// Waits until the elements matching `selector` contain `needle`.
    async fn wait_for(&mut self, selector: &str, needle: &str) {
        let t0 = Instant::now();
        loop {
            let t = self.text(selector).await;
            if t.contains(needle) {
                return;
            }
            assert!(
                t0.elapsed() < BROWSER_WAIT,
                "the page never showed {needle:?} in {selector}; it shows:\n{}",
                self.text("#out").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `js` evaluates to `want`.
    async fn wait_js(&mut self, js: &str, want: Value) {
        let t0 = Instant::now();
        loop {
            let v = self.eval(js).await;
            if v == want {
                return;
            }
            if t0.elapsed() > BROWSER_WAIT {
                let shown = self.text("#out").await;
                panic!("{js} stayed {v}, not {want}; the page shows:\n{shown}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `line` into the input and presses Enter, as a player would.
    async fn type_line(&mut self, line: &str) {
        self.call(
            "Runtime.evaluate",
            json!({"expression": "document.getElementById('in').focus()"}),
        )
        .await;
        self.call("Input.insertText", json!({"text": line})).await;
        for t in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": t, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}),
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium: scripts/webclient.sh"]
async fn web_client_logs_in_shows_notices_across_a_restart_and_reconnects() {
    let dir = TempDir::new("webclient");
    let mut game = Game::start(&dir, &[]);
    let mut proxy = Proxy::start(
        &dir,
        &config_for(
            &[&game],
            "[listen]\naddrs = [\"127.0.0.1:0\"]\nws_addrs = [\"127.0.0.1:0\"]\n",
        ),
    );
    let url = format!("http://{}/", proxy.door("ws"));
    let mut b = Browser::open(&dir, &url).await;
    b.wait_for("#out", "connect <name>").await;
    b.type_line("connect Alice alicepw").await;
    b.wait_for("#out", "Last connect was from 127.0.0.1").await;
    let shown = b.text("#out").await;
    assert!(
        !shown.contains("alicepw"),
        "the password is on screen:\n{shown}"
    );

    // Colours: 16, 256 and truecolour SGR become styles.
    b.type_line("echo \u{1b}[31mred\u{1b}[0m \u{1b}[38;5;208morange\u{1b}[0m \u{1b}[38;2;80;160;255mdeep\u{1b}[0m")
        .await;
    b.wait_for("#out", "red orange deep").await;
    let colours = b
        .eval(
            "['red','orange','deep'].map(w => { const s = [...document.querySelectorAll('#out span')].filter(e => e.textContent === w).pop(); return s ? getComputedStyle(s).color : null; })",
        )
        .await;
    assert_eq!(
        colours,
        json!(["rgb(204, 51, 51)", "rgb(255, 135, 0)", "rgb(80, 160, 255)"]),
    );

    // Echo off masks the input line; echo on unmasks it.
    b.type_line("echooff").await;
    b.wait_for("#out", "Echo is off.").await;
    b.wait_js("document.getElementById('in').type", json!("password"))
        .await;
    b.type_line("echoon").await;
    b.wait_for("#out", "Echo is on.").await;
    b.wait_js("document.getElementById('in').type", json!("text"))
        .await;

    // History: Up brings back earlier commands; what was typed masked is
    // not kept.
    b.type_line("think one").await;
    b.wait_for("#out div:not(.echo)", "one").await;
    for want in ["think one", "echooff"] {
        b.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyDown", "key": "ArrowUp", "code": "ArrowUp", "windowsVirtualKeyCode": 38}),
        )
        .await;
        assert_eq!(b.eval("document.getElementById('in').value").await, want);
    }
    b.eval("document.getElementById('in').value = ''").await;

    game.kill();
    b.wait_for("#out .notice", "Test MUSH is down.").await;
    game.restart();
    b.wait_for("#out .notice", "You have been logged back in.")
        .await;
    b.type_line("say hello from the browser").await;
    b.wait_for("#out", "You say, \"hello from the browser\"")
        .await;
    // Ordinary game lines are not notices.
    assert!(!b.text("#out .notice").await.contains("You say"));

    if let Some(path) = std::env::var_os("HOLDFAST_SCREENSHOT") {
        let shot = b
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(PathBuf::from(path), png).unwrap();
    }
    proxy.assert_no_passwords();

    // An upgrade: the page's WebSocket crosses to the new process; the
    // page notices nothing.
    let old = proxy.pid();
    signal(old, "USR2");
    let t0 = Instant::now();
    let new = loop {
        let s = std::fs::read_to_string(&proxy.ready).unwrap_or_default();
        let pid = s
            .lines()
            .find_map(|l| l.strip_prefix("pid ")?.trim().parse::<u32>().ok());
        if let Some(p) = pid.filter(|p| *p != old) {
            break p;
        }
        assert!(t0.elapsed() < BROWSER_WAIT, "no upgrade:\n{}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    while alive(old) {
        assert!(t0.elapsed() < BROWSER_WAIT, "the old process did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.stop(), Some(0), "the old process exits 0");
    b.type_line("say across the upgrade").await;
    b.wait_for("#out div:not(.echo)", "You say, \"across the upgrade\"")
        .await;
    let local = b.text("#out .local").await;
    assert!(!local.contains("connection lost"), "{local}");

    // The proxy itself goes away and comes back on the same address: the
    // page reconnects on its own and logs in again with the line it kept.
    let ws_addr = proxy.door("ws");
    signal(new, "TERM");
    let t0 = Instant::now();
    while alive(new) {
        assert!(t0.elapsed() < BROWSER_WAIT, "the new process did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.wait_for("#out .local", "[connection lost; reconnecting in")
        .await;
    let proxy = Proxy::start(
        &dir,
        &config_for(
            &[&game],
            &format!("[listen]\naddrs = [\"127.0.0.1:0\"]\nws_addrs = [\"{ws_addr}\"]\n"),
        ),
    );
    b.wait_for("#out .local", "(logging in again)").await;
    b.wait_js(
        "document.getElementById('out').textContent.split('Last connect was from').length - 1 >= 2",
        json!(true),
    )
    .await;
    b.type_line("say reconnected").await;
    b.wait_for("#out div:not(.echo)", "You say, \"reconnected\"")
        .await;
    proxy.assert_no_passwords();
}
