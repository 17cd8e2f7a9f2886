//! `yiciban demo`: a county (HTTP port P, QUIC UDP port P), a town (P+1) and a village (P+2)
//! on loopback, each its own `yiciban serve` process with its own store, enrolled with the
//! county's CA and replicating over QUIC with mutual TLS.
//!
//! The first run writes `DIR/{county,town,village}.toml`, creates the county CA, the demo
//! users on every node, and enrols the town and the village through the county's real
//! enrolment endpoint. A later run resumes. Each config also starts alone with
//! `yiciban serve --config DIR/NODE.toml`, so one node can be stopped and started again
//! while the others keep running.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

/// The demo users, created on every node; demo mode only.
const DEMO_PASSWORD: &str = "yiciban-demo";
const DEMO_USERS: [(&str, &str, &str); 4] = [
    ("clerk", "村受理员（演示）", "clerk"),
    ("reviewer", "镇审核员（演示）", "reviewer"),
    ("approver", "县审批员（演示）", "approver"),
    ("admin", "县管理员（演示）", "county_admin"),
];

const COUNTY_DIV: &str = "430181000000";
const TOWN_DIV: &str = "430181101000";
const VILLAGE_DIV: &str = "430181101001";

/// One demo node.
struct DemoNode {
    name: &'static str,
    id: String,
    role: &'static str,
    title: &'static str,
    division: &'static str,
    http_port: u16,
}

fn nodes(base_port: u16) -> [DemoNode; 3] {
    [
        DemoNode {
            name: "county",
            id: format!("county-{COUNTY_DIV}"),
            role: "county",
            title: "浏阳市政务服务中心（演示）",
            division: COUNTY_DIV,
            http_port: base_port,
        },
        DemoNode {
            name: "town",
            id: format!("town-{TOWN_DIV}"),
            role: "town",
            title: "集里街道便民服务中心（演示）",
            division: TOWN_DIV,
            http_port: base_port + 1,
        },
        DemoNode {
            name: "village",
            id: format!("village-{VILLAGE_DIV}"),
            role: "village",
            title: "集里街道示范村便民服务站（演示）",
            division: VILLAGE_DIV,
            http_port: base_port + 2,
        },
    ]
}

fn toml(n: &DemoNode, county_quic: u16) -> String {
    let sync = if n.role == "county" {
        format!("listen = \"127.0.0.1:{county_quic}\"")
    } else {
        format!("county = \"127.0.0.1:{county_quic}\"\nbackoff_max_secs = 5")
    };
    format!(
        r#"# Demo {name} node, written by `yiciban demo`. Start it alone with
#   yiciban serve --config {name}.toml
demo = true

[node]
id = "{id}"
role = "{role}"
name = "{title}"
division = "{division}"
town_division = "{TOWN_DIV}"
county_division = "{COUNTY_DIV}"
utc_offset_hours = 8

[http]
listen = "127.0.0.1:{port}"

[store]
path = "{name}.redb"

[catalog]
path = "catalog.toml"

# Reports every 5 s; the county flags a node quiet for 20 s (production: 60 s and 600 s).
[health]
every_secs = 5
not_seen_secs = 20

[sync]
{sync}
tls_dir = "tls-{name}"
"#,
        name = n.name,
        id = n.id,
        role = n.role,
        title = n.title,
        division = n.division,
        port = n.http_port,
    )
}

/// Runs `yiciban ARGS` to completion; returns stdout. `input` goes to stdin.
async fn cli(exe: &Path, args: &[&str], input: Option<&str>) -> Result<String> {
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("YICIBAN_LOG", "warn")
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!(
            "`yiciban {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn spawn_serve(exe: &Path, config: &Path, log: &Path) -> Result<Child> {
    let log = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    Command::new(exe)
        .args(["serve", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))
}

/// Waits until the node answers on its HTTP port.
async fn wait_http(port: u16, child: &mut Child, name: &str) -> Result<()> {
    for _ in 0..300 {
        if let Some(status) = child.try_wait()? {
            bail!("the {name} node exited ({status}) while starting; see its log");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the {name} node did not answer on port {port} within 30 s")
}

pub async fn run(dir: &Path, base_port: u16) -> Result<()> {
    if base_port.checked_add(2).is_none() {
        bail!("base port too high");
    }
    let exe = std::env::current_exe().context("finding the yiciban binary")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let nodes = nodes(base_port);
    let path = |n: &DemoNode| -> PathBuf { dir.join(format!("{}.toml", n.name)) };
    let resumed = path(&nodes[0]).exists();
    for n in &nodes {
        if !path(n).exists() {
            std::fs::write(path(n), toml(n, base_port))?;
        }
    }
    let catalog = dir.join("catalog.toml");
    if !catalog.exists() {
        std::fs::write(&catalog, yiciban_core::DEMO_CATALOG)?;
    }
    let config_arg = |n: &DemoNode| path(n).to_string_lossy().into_owned();
    let enrolled = |n: &DemoNode| {
        dir.join(format!("tls-{}", n.name))
            .join("node.pem")
            .exists()
    };

    // The county CA, users on every node, tokens for nodes not yet enrolled: all before the
    // nodes start, since a running node holds its store.
    let county = &nodes[0];
    if !enrolled(county) {
        cli(
            &exe,
            &["init", "--role", "county", "--config", &config_arg(county)],
            None,
        )
        .await?;
    }
    for n in &nodes {
        for (user, name, role) in DEMO_USERS {
            let args = [
                "user",
                "add",
                "--config",
                &config_arg(n),
                "--username",
                user,
                "--role",
                role,
                "--name",
                name,
            ];
            match cli(&exe, &args, Some(&format!("{DEMO_PASSWORD}\n"))).await {
                Ok(_) => {}
                Err(e) if e.to_string().contains("already exists") => {}
                Err(e) => return Err(e),
            }
        }
    }
    let mut tokens = Vec::new();
    for n in &nodes[1..] {
        if !enrolled(n) {
            let args = [
                "token",
                "--config",
                &config_arg(county),
                "--node-id",
                &n.id,
                "--role",
                n.role,
                "--division",
                n.division,
                "--days",
                "1",
            ];
            tokens.push((n, cli(&exe, &args, None).await?));
        }
    }

    let mut children = Vec::new();
    let mut county_child = spawn_serve(&exe, &path(county), &dir.join("county.log"))?;
    wait_http(county.http_port, &mut county_child, "county").await?;
    children.push(("county", county_child));
    for (n, token) in tokens {
        let addr = format!("127.0.0.1:{}", county.http_port);
        cli(
            &exe,
            &[
                "enroll",
                "--config",
                &config_arg(n),
                "--county",
                &addr,
                "--token",
                &token,
            ],
            None,
        )
        .await?;
    }
    for n in &nodes[1..] {
        let mut child = spawn_serve(&exe, &path(n), &dir.join(format!("{}.log", n.name)))?;
        wait_http(n.http_port, &mut child, n.name).await?;
        children.push((n.name, child));
    }

    println!(
        "yiciban demo ({}) in {}\n",
        if resumed { "resumed" } else { "created" },
        dir.display()
    );
    for n in &nodes {
        println!(
            "  {:<8} http://127.0.0.1:{}/   config {}   log {}",
            n.name,
            n.http_port,
            path(n).display(),
            dir.join(format!("{}.log", n.name)).display()
        );
    }
    println!(
        "\n  county QUIC (UDP) 127.0.0.1:{base_port}; town and village are enrolled and replicate through it.\n  logins on every node (password {DEMO_PASSWORD}): clerk (村受理员), reviewer (镇审核员), approver (县审批员), admin (县管理员)\n  flow: file at the village as clerk → pass review at the town as reviewer → issue at the village.\n  API:  curl -c jar -H 'content-type: application/json' -d '{{\"username\":\"clerk\",\"password\":\"{DEMO_PASSWORD}\"}}' http://127.0.0.1:{}/api/v1/login\n\nCtrl-C stops all three; running the same command again resumes. A node stopped on its own is restarted with\n  yiciban serve --config {}/NODE.toml",
        nodes[2].http_port,
        dir.display()
    );
    supervise(children).await
}

/// Waits for Ctrl-C; reports a node that exits on its own (the others keep running).
async fn supervise(mut children: Vec<(&'static str, Child)>) -> Result<()> {
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                children.retain_mut(|(name, child)| match child.try_wait() {
                    Ok(Some(status)) => {
                        println!("the {name} node exited ({status}); the others keep running");
                        false
                    }
                    _ => true,
                });
            }
        }
    }
    for (_, child) in &mut children {
        if let Some(pid) = child.id() {
            // SIGTERM first, so each node shuts down cleanly.
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
    }
    for (name, child) in &mut children {
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(node = name, "did not stop in 10 s; killing");
                let _ = child.kill().await;
            }
        }
    }
    Ok(())
}
