//! `yiciban`: the one binary of every node. Its role comes from its config.
//!
//! ```text
//! yiciban demo [--dir DIR] [--base-port P]   start the demo nodes, print URLs and logins
//! yiciban serve --config FILE                run one node
//! yiciban check --config FILE                check a config and its catalogue
//! yiciban user add --config FILE --username U --role R [--name N]   (password on stdin)
//! yiciban init --role county --config FILE    create the county CA and the county's certificate
//! yiciban token --config FILE --node-id ID --role R --division D   one-time enrolment token
//! yiciban enroll --config FILE --county HOST:PORT --token T        get this node's certificate
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod demo;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use yiciban_core::catalog::Catalog;
use yiciban_core::catalog::Tier;
use yiciban_core::config::Config;
use yiciban_core::enrol::{self, TlsDir};
use yiciban_core::node::Node;
use yiciban_core::store::Store;
use yiciban_core::users::Role;
use yiciban_transport::identity::{NodeIdentity, NodeKey};

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
    /// Create the county's certificate authority and the county node's own certificate
    /// (the node must be stopped; never overwrites an existing CA).
    Init {
        /// Must be `county`: only the county is a certificate authority.
        #[arg(long)]
        role: String,
        #[arg(long)]
        config: PathBuf,
    },
    /// Issue a one-time enrolment token at the county (the county node must be stopped).
    Token {
        #[arg(long)]
        config: PathBuf,
        /// The node id the certificate will carry (as in that node's config).
        #[arg(long)]
        node_id: String,
        /// village or town
        #[arg(long)]
        role: String,
        /// The node's 12-digit division code.
        #[arg(long)]
        division: String,
        /// Days the token stays valid.
        #[arg(long, default_value_t = 7)]
        days: u64,
    },
    /// Get this node's certificate from the county with a token (the county must be running).
    Enroll {
        #[arg(long)]
        config: PathBuf,
        /// The county's HTTP address, HOST:PORT.
        #[arg(long)]
        county: String,
        #[arg(long)]
        token: String,
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
        Command::Init { role, config } => {
            let cfg = Config::load(&config)?;
            if role != "county" || cfg.node.role != Tier::County {
                bail!(
                    "only the county is a certificate authority: run `yiciban init --role county` with a county config (this config's role is {})",
                    cfg.node.role.as_str()
                );
            }
            init_county(&cfg)?;
            println!(
                "county CA created in {}; issue tokens with `yiciban token`",
                cfg.tls_dir().display()
            );
            Ok(())
        }
        Command::Token {
            config,
            node_id,
            role,
            division,
            days,
        } => {
            let cfg = Config::load(&config)?;
            let token = issue_token(&cfg, &node_id, &role, &division, days).await?;
            println!("{token}");
            Ok(())
        }
        Command::Enroll {
            config,
            county,
            token,
        } => {
            let cfg = Config::load(&config)?;
            enroll(&cfg, &county, &token).await?;
            println!(
                "enrolled: certificate for {} saved in {}",
                cfg.node.id,
                cfg.tls_dir().display()
            );
            Ok(())
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

/// Creates the county CA and the county node's certificate.
pub fn init_county(cfg: &Config) -> Result<()> {
    let identity = NodeIdentity::new(&cfg.node.id, "county", &cfg.node.division)?;
    TlsDir::new(cfg.tls_dir()).init_county(&identity)?;
    Ok(())
}

/// Issues a one-time enrolment token in a (stopped) county's store.
pub async fn issue_token(
    cfg: &Config,
    node_id: &str,
    role: &str,
    division: &str,
    days: u64,
) -> Result<String> {
    if cfg.node.role != Tier::County {
        bail!(
            "tokens are issued at the county; this config's role is {}",
            cfg.node.role.as_str()
        );
    }
    if !matches!(role, "village" | "town") {
        bail!("a token is for a village or a town node, not {role:?}");
    }
    let identity = NodeIdentity::new(node_id, role, division)?;
    let store = Store::open(
        &cfg.store_path(),
        cfg.store.group_commit_max,
        cfg.store.blob_max_bytes,
    )?;
    Ok(enrol::create_token(
        &store,
        &identity,
        std::time::Duration::from_secs(days.saturating_mul(24 * 3600)),
    )
    .await?)
}

/// Asks the county at `county` (its HTTP address) for this node's certificate.
pub async fn enroll(cfg: &Config, county: &str, token: &str) -> Result<()> {
    let want = NodeIdentity::new(&cfg.node.id, cfg.node.role.as_str(), &cfg.node.division)?;
    let tls = TlsDir::new(cfg.tls_dir());
    if tls.is_enrolled() {
        bail!(
            "this node already has a certificate in {}; move it away to enrol again",
            tls.dir.display()
        );
    }
    let key = NodeKey::generate()?;
    let request = enrol::request(token, &key)?;
    let url = format!("http://{county}/api/v1/enroll");
    let response = reqwest::Client::new()
        .post(&url)
        .json(&request)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .with_context(|| format!("cannot reach the county at {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("the county refused the enrolment ({status}): {body}");
    }
    let answer: enrol::EnrolAnswer = response
        .json()
        .await
        .context("the county's answer is not an enrolment answer")?;
    enrol::check_answer(token, &answer, &want)?;
    tls.save_enrolment(&key, &answer)?;
    Ok(())
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
    // Kept for the life of the server: the endpoint's tasks run as long as it exists.
    let _endpoint = node
        .start_sync()
        .map_err(|e| anyhow::anyhow!("cannot start replication: {e}"))?;
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
