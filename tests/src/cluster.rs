//! Three-node set-ups for cross-process tests and benchmarks: configs, CA, users, tokens,
//! enrolment through the real CLI.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::{DEMO_PASSWORD, cli};

pub const COUNTY_ID: &str = "county-430181000000";
pub const TOWN_ID: &str = "town-430181101000";
pub const VILLAGE_ID: &str = "village-430181101001";

/// A node config; `sync` is the body of its `[sync]` section.
pub fn node_toml(id: &str, role: &str, division: &str, port: u16, sync: &str) -> String {
    format!(
        r#"[node]
id = "{id}"
role = "{role}"
name = "{id}"
division = "{division}"
town_division = "430181101000"
county_division = "430181000000"

[http]
listen = "127.0.0.1:{port}"

[store]
path = "node.redb"

[catalog]
path = "catalog.toml"

[sync]
{sync}
"#
    )
}

/// A loopback UDP address free now.
pub fn free_udp_port() -> Result<SocketAddr> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?)
}

/// Writes a node's folder: config and catalogue. Returns the config path.
pub fn folder(root: &Path, name: &str, toml: &str) -> Result<PathBuf> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("catalog.toml"), yiciban_core::DEMO_CATALOG)?;
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, toml)?;
    Ok(config)
}

/// Adds a user with the demo password (the node must be stopped).
pub fn add_user(config: &Path, user: &str, role: &str) -> Result<()> {
    cli(
        &[
            "user",
            "add",
            "--config",
            &config.to_string_lossy(),
            "--username",
            user,
            "--role",
            role,
        ],
        Some(&format!("{DEMO_PASSWORD}\n")),
    )
    .map(|_| ())
}

/// Creates the county CA in a (stopped) county's folder.
pub fn init_county(config: &Path) -> Result<()> {
    cli(
        &[
            "init",
            "--role",
            "county",
            "--config",
            &config.to_string_lossy(),
        ],
        None,
    )
    .map(|_| ())
}

/// Issues a token at a (stopped) county.
pub fn token(county: &Path, id: &str, role: &str, division: &str) -> Result<String> {
    cli(
        &[
            "token",
            "--config",
            &county.to_string_lossy(),
            "--node-id",
            id,
            "--role",
            role,
            "--division",
            division,
        ],
        None,
    )
}

/// Enrols a (stopped) node with a running county at `county_http`.
pub fn enroll(config: &Path, county_http: &str, token: &str) -> Result<String> {
    cli(
        &[
            "enroll",
            "--config",
            &config.to_string_lossy(),
            "--county",
            county_http,
            "--token",
            token,
        ],
        None,
    )
}
