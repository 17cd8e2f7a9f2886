//! `yiciban demo`: writes one config per node under DIR (resuming an existing DIR), creates
//! the demo users and serves. The village serves HTTP on P+2; the town will take P+1 and the
//! county P once replication lands.

use std::path::Path;

use anyhow::{Context, Result};
use yiciban_core::node::NodeError;
use yiciban_core::users::Role;

/// The demo users; demo mode only.
const DEMO_PASSWORD: &str = "yiciban-demo";
const DEMO_USERS: [(&str, &str, Role); 3] = [
    ("clerk", "村受理员（演示）", Role::Clerk),
    ("reviewer", "镇审核员（演示）", Role::Reviewer),
    ("admin", "县管理员（演示）", Role::CountyAdmin),
];

fn village_toml(base_port: u16) -> String {
    format!(
        r#"# Demo village node, written by `yiciban demo`. Start it alone with
#   yiciban serve --config village.toml
demo = true

[node]
id = "village-430181101001"
role = "village"
name = "浏阳市集里街道示范村便民服务站"
division = "430181101001"
town_division = "430181101000"
county_division = "430181000000"
utc_offset_hours = 8

[http]
listen = "127.0.0.1:{port}"

[store]
path = "village.redb"

[catalog]
path = "catalog.toml"
"#,
        port = base_port + 2
    )
}

pub async fn run(dir: &Path, base_port: u16) -> Result<()> {
    let port = base_port.checked_add(2).context("base port too high")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = dir.join("village.toml");
    let resumed = config.exists();
    if !resumed {
        std::fs::write(&config, village_toml(base_port))?;
    }
    let catalog = dir.join("catalog.toml");
    if !catalog.exists() {
        std::fs::write(&catalog, yiciban_core::DEMO_CATALOG)?;
    }
    let node = crate::open_node(&config)?;
    for (username, name, role) in DEMO_USERS {
        match node.add_user(username, name, role, DEMO_PASSWORD).await {
            Ok(()) | Err(NodeError::Conflict(_)) => {}
            Err(e) => return Err(anyhow::anyhow!("creating demo user {username}: {e}")),
        }
    }
    let url = format!("http://127.0.0.1:{port}/");
    println!(
        "yiciban demo ({}) in {}\n\n  village  {url}   config {}\n\n  logins (password {DEMO_PASSWORD}): clerk (受理员), reviewer (审核员), admin (管理员)\n  API:     curl -c jar -H 'content-type: application/json' -d '{{\"username\":\"clerk\",\"password\":\"{DEMO_PASSWORD}\"}}' {url}api/v1/login\n\nCtrl-C stops the node; running the same command again resumes it.",
        if resumed { "resumed" } else { "created" },
        dir.display(),
        config.display(),
    );
    crate::serve(node, crate::shutdown_signal()).await
}
