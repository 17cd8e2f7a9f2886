//! `yiciban`: the one binary of every node. Its role comes from its config.
//!
//! ```text
//! yiciban demo [--dir DIR] [--base-port P]   start the demo nodes, print URLs and logins
//! yiciban serve --config FILE                run one node
//! yiciban check --config FILE                check a config and its catalogue
//! yiciban user add --config FILE --username U --role R [--name N]   (password on stdin)
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod demo;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use yiciban_core::catalog::Catalog;
use yiciban_core::config::Config;
use yiciban_core::node::Node;
use yiciban_core::store::Store;
use yiciban_core::users::Role;

#[derive(Debug, Parser)]
#[command(
    name = "yiciban",
    version,
    about = "一次办: offline-first node for village and township service centres"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node from its config file.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a config file and its catalogue, then exit.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Start the demo nodes on loopback with demo users (resumes an existing DIR).
    Demo {
        #[arg(long, default_value = "yiciban-demo")]
        dir: PathBuf,
        #[arg(long, default_value_t = 18080)]
        base_port: u16,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user to a node's store (the node must be stopped). Reads the password from stdin.
    Add {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        username: String,
        /// clerk, reviewer, approver, county_admin, security_admin or auditor
        #[arg(long)]
        role: String,
        /// Display name; the username if omitted.
        #[arg(long)]
        name: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One clear line with its causes, not a backtrace: an operator reads this.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("YICIBAN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("YICIBAN_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let node = open_node(&config)?;
            serve(node, shutdown_signal()).await
        }
        Command::Check { config } => {
            let cfg = Config::load(&config)?;
            let catalog = Catalog::load(&cfg.catalog_path())?;
            println!(
                "ok: node {} ({}, division {}), catalogue {} with {} items",
                cfg.node.id,
                cfg.node.role.as_str(),
                cfg.node.division,
                cfg.catalog_path().display(),
                catalog.items().len()
            );
            Ok(())
        }
        Command::Demo { dir, base_port } => demo::run(&dir, base_port).await,
        Command::User {
            command:
                UserCommand::Add {
                    config,
                    username,
                    role,
                    name,
                },
        } => {
            let cfg = Config::load(&config)?;
            let Some(role) = Role::parse(&role) else {
                bail!(
                    "unknown role {role:?}; roles are clerk, reviewer, approver, county_admin, security_admin, auditor"
                );
            };
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            let store = Store::open(
                &cfg.store_path(),
                cfg.store.group_commit_max,
                cfg.store.blob_max_bytes,
            )?;
            let display = name.unwrap_or_else(|| username.clone());
            yiciban_core::node::add_user(
                &store,
                &username,
                &display,
                role,
                password.trim_end_matches(['\r', '\n']),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("user {username} ({}) added", role.as_str());
            Ok(())
        }
    }
}

/// Loads config and catalogue and opens the store: everything a node needs before it listens.
pub fn open_node(config: &Path) -> Result<Arc<Node>> {
    let cfg = Config::load(config)?;
    let catalog = Catalog::load(&cfg.catalog_path())?;
    let store = Store::open(
        &cfg.store_path(),
        cfg.store.group_commit_max,
        cfg.store.blob_max_bytes,
    )?;
    Ok(Node::new(cfg, catalog, store)?)
}

/// Serves one node's HTTP until `shutdown`.
pub async fn serve(
    node: Arc<Node>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = node.config.http.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(node = %node.config.node.id, role = node.tier().as_str(), %addr, "serving");
    yiciban_web::serve(listener, yiciban_web::AppState::new(node), shutdown).await?;
    Ok(())
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
