//! A headless Chromium driven over the DevTools protocol (a WebSocket,
//! so the test's own client does it), for the web client tests
//! (`tests/webclient.rs`, `tests/webclient_close.rs`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::common::{proc, reap, TempDir};

pub fn signal(pid: u32, sig: &str) {
    assert!(proc::send_signal(pid, sig), "kill -{sig} {pid}");
}

/// Page loads and a browser start are slower than a telnet reply.
pub const BROWSER_WAIT: Duration = Duration::from_secs(30);

pub struct Browser {
    child: Option<Child>,
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        reap(&mut self.child);
    }
}

pub fn chromium() -> &'static str {
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
    pub async fn open(dir: &TempDir, url: &str) -> Browser {
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

    pub async fn call(&mut self, method: &str, params: Value) -> Value {
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
    pub async fn eval(&mut self, js: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": js, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    pub async fn text(&mut self, selector: &str) -> String {
        let js = format!(
            "[...document.querySelectorAll({selector:?})].map(e => e.textContent).join('\\n')"
        );
        self.eval(&js).await.as_str().unwrap_or("").to_string()
    }

    /// Waits until the elements matching `selector` contain `needle`.
    pub async fn wait_for(&mut self, selector: &str, needle: &str) {
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
    pub async fn wait_js(&mut self, js: &str, want: Value) {
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
    pub async fn type_line(&mut self, line: &str) {
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
