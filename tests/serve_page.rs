//! The web page of `alexnet serve` in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed here when missing and running as root) driven over WebDriver.
//! A validation photo is chosen in the page's file input; the page must show one probability per
//! class, equal to the server's `:predict` answer to 4 decimals, and every layer's activation
//! picture, decoded. The screenshot goes to target/serve-page.png (and to docs/serve-page.png
//! with ALEXNET_UPDATE_SCREENSHOT=1).

mod common;
#[path = "common/http.rs"]
mod http;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

#[test]
fn the_page_shows_probabilities_and_activations_of_a_chosen_photo() {
    ensure_chromium();
    let tmp = common::temp_dir("serve-page");
    let base = tmp.path().join("models/alexnet/1");
    let run = tmp.path().join("run");
    let images = common::small_dataset(tmp.path(), 2);
    ok(common::train_command(&images, Some(&common::weights()), &run).args(["--quiet", "--epochs", "1"]));
    ok(common::alexnet().args(["export", "--run-dir"]).arg(&run).arg("--out").arg(&base));
    let server = http::Server::start(base.parent().unwrap(), &[]);
    let photo = first_file(&common::images().join("val/dog"));
    let expected = http::probabilities(&server.post_json("/v1/models/alexnet:predict", &http::instances(&[&photo])));

    let driver = Driver::start(&tmp.path().join("chromium-profile"));
    driver.cmd("POST", "/url", json!({ "url": server.url("/") }));
    let input = driver.cmd("POST", "/element", json!({ "using": "css selector", "value": "#file" }))[ELEMENT].as_str().unwrap().to_string();
    driver.cmd("POST", &format!("/element/{input}/value"), json!({ "text": photo.to_str().unwrap() }));

    // Rows of probabilities, and activation pictures that have loaded (naturalWidth > 0).
    let script = "return [Array.from(document.querySelectorAll('.probability b')).map(b => b.textContent), \
                  Array.from(document.querySelectorAll('img.activation')).map(i => [i.alt, i.complete ? i.naturalWidth : 0]), \
                  document.getElementById('status').textContent]";
    let mut page = Value::Null;
    let shown = common::poll_until(Duration::from_secs(60), Duration::from_millis(250), || {
        page = driver.cmd("POST", "/execute/sync", json!({ "script": script, "args": [] }));
        page[0].as_array().is_some_and(|p| p.len() == 2) && page[1].as_array().is_some_and(|l| l.len() >= 10 && l.iter().all(|x| x[1].as_u64() > Some(0)))
    });
    assert!(shown, "the page did not show 2 probabilities and the activation pictures: {page}");
    let shown: Vec<f32> = page[0].as_array().unwrap().iter().map(|t| t.as_str().unwrap().parse().unwrap()).collect();
    for (s, e) in shown.iter().zip(&expected[0]) {
        assert!((s - e).abs() <= 0.00005 + 1e-6, "the page shows {shown:?}, :predict answers {:?}", expected[0]);
    }
    let layers: Vec<&str> = page[1].as_array().unwrap().iter().map(|l| l[0].as_str().unwrap()).collect();
    assert_eq!(layers[..2], ["conv1", "norm1"]);
    assert!(page[2].as_str().unwrap().contains(photo.file_name().unwrap().to_str().unwrap()), "status line: {}", page[2]);

    let png = base64::engine::general_purpose::STANDARD.decode(driver.cmd("GET", "/screenshot", Value::Null).as_str().unwrap()).unwrap();
    std::fs::write(common::repo().join("target/serve-page.png"), &png).unwrap();
    if std::env::var_os("ALEXNET_UPDATE_SCREENSHOT").is_some() {
        std::fs::write(common::repo().join("docs/serve-page.png"), &png).unwrap();
    }
}

/// Installs Debian's chromium and chromium-driver when missing (as root), as scripts/provision does.
fn ensure_chromium() {
    if Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists() {
        return;
    }
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    assert!(root, "the browser test needs chromium and chromium-driver: apt-get install chromium chromium-driver (as root)");
    ok(Command::new("apt-get").arg("update").arg("-qq"));
    ok(Command::new("apt-get").args(["install", "-y", "-qq", "chromium", "chromium-driver"]).env("DEBIAN_FRONTEND", "noninteractive"));
}

/// chromedriver with one headless Chromium session, both stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(profile: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("/usr/bin/chromedriver").arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let mut driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
        let ready = common::poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
            ureq::get(&format!("{}/status", driver.url)).call().is_ok_and(|mut r| r.body_mut().read_to_string().is_ok_and(|t| t.contains("\"ready\":true")))
        });
        assert!(ready, "chromedriver did not start");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1200,1500",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps =
            json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args } } } });
        let session = driver.raw("POST", "/session", caps);
        driver.url = format!("{}/session/{}", driver.url, session["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {session}")));
        driver
    }

    /// A command of this session; its `value`.
    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        self.raw(method, path, body)
    }

    fn raw(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.url);
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(90))).build().into();
        let r = match method {
            "GET" => agent.get(&url).call(),
            _ => agent.post(&url).content_type("application/json").send(body.to_string().as_bytes()),
        };
        let mut r = r.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = r.status().as_u16();
        let v: Value = serde_json::from_str(&r.body_mut().with_config().limit(64 << 20).read_to_string().unwrap()).unwrap();
        assert_eq!(status, 200, "WebDriver {method} {path}: {v:.300}");
        v["value"].clone()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.url.contains("/session/") {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let _ = agent.delete(&self.url).call();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn first_file(dir: &Path) -> PathBuf {
    let mut f: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    f.sort();
    f.remove(0)
}

fn ok(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}
