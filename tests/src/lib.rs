//! # yiciban-tests
//!
//! Cross-process test support: start real `yiciban` binaries on loopback, kill them with
//! SIGKILL, talk to them over HTTP; and [`workload`], the seeded case generator the tests and
//! the benchmarks share.
//!
//! The binary is taken from `YICIBAN_BIN`, or `target/debug/yiciban` of this workspace
//! (`scripts/test.sh` builds it first). A missing binary is a test failure, never a skip.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cluster;
pub mod coldstart;
pub mod countyyear;
pub mod fanin;
pub mod relay;
pub mod rogue;
pub mod workload;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// The demo password the demo command gives its users.
pub const DEMO_PASSWORD: &str = "yiciban-demo";

/// Path of the `yiciban` binary under test.
///
/// Without `YICIBAN_BIN`, a program that sits beside a `yiciban` binary (the bench driver in
/// `target/release`) runs that one: `target/release/yiciban-bench` run by hand used to drive
/// a debug node and measure it.
pub fn binary() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("YICIBAN_BIN") {
        return Ok(PathBuf::from(path));
    }
    if let Some(beside) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("yiciban")))
        .filter(|path| path.is_file())
    {
        return Ok(beside);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("target/debug/yiciban");
    if !path.exists() {
        bail!(
            "{} is missing: build it with `cargo build -p yiciban` (scripts/test.sh does) or set YICIBAN_BIN",
            path.display()
        );
    }
    Ok(path)
}

/// Where Debian's `faketime` package puts its library for programs with threads.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

static FAKE_TIME: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// From now on, every `yiciban` process this test program starts (nodes and CLI commands)
/// runs with its wall clock starting at `utc` (`2026-12-07 02:00:00`, UTC) under libfaketime
/// (`scripts/test.sh` installs it); monotonic timers keep the real clock. One test program
/// a fake time: set it in a test file of its own. A missing library is a failure, not a skip.
pub fn fake_time(utc: &str) -> Result<()> {
    if !Path::new(LIBFAKETIME).exists() {
        bail!("{LIBFAKETIME} is missing: install Debian's faketime package (scripts/test.sh does)");
    }
    *FAKE_TIME.lock().unwrap_or_else(|e| e.into_inner()) = Some(utc.to_string());
    Ok(())
}

/// A command for the binary under test, under the fake time if one is set.
fn yiciban_command() -> Result<Command> {
    let mut cmd = Command::new(binary()?);
    if let Some(at) = FAKE_TIME.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        cmd.env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME", format!("@{at}"))
            .env("DONT_FAKE_MONOTONIC", "1")
            .env("TZ", "UTC");
    }
    Ok(cmd)
}

/// A base port P such that P..P+3 are free on loopback now.
pub fn free_base_port() -> Result<u16> {
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0")?;
        let base = probe.local_addr()?.port();
        drop(probe);
        if base > 60_000 {
            continue;
        }
        if (0..3).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return Ok(base);
        }
    }
    bail!("no free run of ports on loopback")
}

/// A running node process, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    pub base_url: String,
}

impl NodeProcess {
    /// A village node alone (no replication) in DIR, serving HTTP on P+2 as the demo's
    /// village does, with the demo catalogue and the users clerk, reviewer and admin
    /// (password [`DEMO_PASSWORD`]). A second call on the same DIR resumes it.
    pub fn village(dir: &Path, base_port: u16) -> Result<Self> {
        let port = base_port + 2;
        std::fs::create_dir_all(dir)?;
        let config = dir.join("village.toml");
        if !config.exists() {
            std::fs::write(dir.join("catalog.toml"), yiciban_core::DEMO_CATALOG)?;
            std::fs::write(&config, village_toml(port, None))?;
            for (user, role) in [
                ("clerk", "clerk"),
                ("reviewer", "reviewer"),
                ("admin", "county_admin"),
            ] {
                cluster::add_user(&config, user, role)?;
            }
        }
        Self::serve(&config, port)
    }

    /// `yiciban demo --dir DIR --base-port P`: county on P, town on P+1, village on P+2;
    /// ready once the village answers.
    pub fn demo(dir: &Path, base_port: u16) -> Result<Self> {
        let mut cmd = yiciban_command()?;
        cmd.args(["demo", "--dir"])
            .arg(dir)
            .args(["--base-port", &base_port.to_string()]);
        Self::start(cmd, dir, base_port + 2)
    }

    /// Sends SIGTERM and waits (the demo stops its nodes on it).
    pub fn terminate(&mut self) -> Result<()> {
        Command::new("kill")
            .arg(self.child.id().to_string())
            .status()?;
        self.child.wait()?;
        Ok(())
    }

    /// `yiciban serve --config FILE`, listening on `port`.
    pub fn serve(config: &Path, port: u16) -> Result<Self> {
        let mut cmd = yiciban_command()?;
        cmd.args(["serve", "--config"]).arg(config);
        Self::start(cmd, config.parent().unwrap_or(Path::new(".")), port)
    }

    fn start(mut cmd: Command, log_dir: &Path, port: u16) -> Result<Self> {
        std::fs::create_dir_all(log_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join("node.log"))?;
        cmd.stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .stdin(Stdio::null());
        let child = cmd.spawn().context("starting yiciban")?;
        let mut node = Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
        };
        node.wait_ready(Duration::from_secs(60))?;
        Ok(node)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait()? {
                bail!("yiciban exited early with {status}");
            }
            if std::net::TcpStream::connect(self.base_url.trim_start_matches("http://")).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "yiciban did not listen on {} within {limit:?}",
            self.base_url
        )
    }

    /// SIGKILL: no shutdown, no flush. Waits until the process is gone.
    pub fn kill9(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A village config on `port`; with `county` (a QUIC address) it replicates.
pub fn village_toml(port: u16, county: Option<std::net::SocketAddr>) -> String {
    let sync = county
        .map(|c| format!("\n[sync]\ncounty = \"{c}\"\nbackoff_max_secs = 2\n"))
        .unwrap_or_default();
    format!(
        r#"demo = true

[node]
id = "village-430181101001"
role = "village"
name = "测试村便民服务站"
division = "430181101001"
town_division = "430181101000"
county_division = "430181000000"

[http]
listen = "127.0.0.1:{port}"

[store]
path = "village.redb"

[catalog]
path = "catalog.toml"
{sync}"#
    )
}

/// Runs `yiciban ARGS` to completion and returns its stdout; fails with its stderr.
pub fn cli(args: &[&str], stdin: Option<&str>) -> Result<String> {
    use std::io::Write;
    let mut child = yiciban_command()?
        .args(args)
        .env("YICIBAN_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting yiciban")?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "yiciban {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// An API client with its own session.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    csrf: String,
}

impl Api {
    pub async fn login(base: &str, username: &str, password: &str) -> Result<Self> {
        let http = reqwest::Client::builder().cookie_store(true).build()?;
        let resp = http
            .post(format!("{base}/api/v1/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if !status.is_success() {
            bail!("login as {username} failed: {status} {body}");
        }
        Ok(Self {
            http,
            base: base.to_string(),
            csrf: body["csrf_token"].as_str().unwrap_or_default().to_string(),
        })
    }

    /// POST JSON with the CSRF header; returns the status and the JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-csrf-token", &self.csrf)
            .json(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// PUT a text body with the CSRF header; returns the status and the JSON body.
    pub async fn put_text(&self, path: &str, body: &str) -> Result<(u16, Value)> {
        let resp = self
            .http
            .put(format!("{}{path}", self.base))
            .header("x-csrf-token", &self.csrf)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.to_string())
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// A page as text (HTML), with its status.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        match self.http.get(format!("{}{path}", self.base)).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.text().await.unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        }
    }

    /// Number of cases the node reports in its health.
    pub async fn case_count(&self) -> Result<u64> {
        let (_, health) = self.get("/api/v1/health").await?;
        health["cases"].as_u64().context("health has no case count")
    }
}
