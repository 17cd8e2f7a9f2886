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
//! yiciban audit verify --config FILE          check the audit chain (exit 1 at the first problem)
//! yiciban audit verify --config FILE --node ID   at the county: check ID's replicated chain
//! yiciban audit list --config FILE [--last N] print the newest audit entries
//! yiciban verify CODE [--ca FILE] [--config FILE]   check a result's seal offline (exit 1 if not)
//! yiciban user add --config COUNTY --for-node ID --username U --role R   a user of node ID's directory
//! yiciban user reset-password|disable --config FILE --username U [--for-node ID]
//! yiciban revoke --config COUNTY --node-id ID   revoke a node's certificates (county may run)
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
    /// Check a printed result's code (its QR) against the county CA, offline. Exits 0 and
    /// prints the summary when the seal holds, 1 with the reason when it does not.
    Verify {
        /// The result code (`YCB1.…`), or `-` to read it from stdin.
        payload: String,
        /// The county CA certificate (PEM).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// A node config: its TLS folder's `ca.pem` is used when `--ca` is not given.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The audit trail: check its hash chain, list its entries (the node must be stopped).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Documents refused for good (同步隔离): by this node from a peer, or by a peer from
    /// this node (the node must be stopped).
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// At the county: revoke every certificate issued to a node. Writes `crl.der`; a running
    /// county reloads it within seconds and refuses the node's next handshake.
    Revoke {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        node_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the chain: exit 0 with the count and head hash when intact, 1 with the first
    /// altered, missing or misplaced entry. At the county, also each copy of a node's chain
    /// it holds.
    Verify {
        #[arg(long)]
        config: PathBuf,
        /// At the county: check only the copy of this node's chain.
        #[arg(long)]
        node: Option<String>,
    },
    /// Print the newest entries, oldest first.
    List {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 50)]
        last: usize,
    },
}

#[derive(Debug, Subcommand)]
enum QuarantineCommand {
    /// Print every quarantined document, newest first, and at the county what each node sent
    /// that was refused or kept as forged.
    List {
        #[arg(long)]
        config: PathBuf,
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
        /// At the county: add the user to this node's directory (it replicates to that node
        /// only) instead of the county's own users.
        #[arg(long)]
        for_node: Option<String>,
    },
    /// Set a user's password (read from stdin); with `--for-node` in that node's directory.
    ResetPassword {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        username: String,
        #[arg(long)]
        for_node: Option<String>,
    },
    /// Disable a user; with `--for-node` in that node's directory.
    Disable {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        username: String,
        #[arg(long)]
        for_node: Option<String>,
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

/// Counts every warning and error logged, for the health report's `errors_24h`.
struct ErrorCounter;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ErrorCounter {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if *event.metadata().level() <= tracing::Level::WARN {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            yiciban_core::health::note_error(now);
        }
    }
}

/// The log filter when `YICIBAN_LOG` is not set. automerge marks its load and apply functions
/// `#[tracing::instrument]` at INFO: with plain `info` every document load opened and
/// formatted a span, about a fifth of the county's time while it took in new cases (perf).
const DEFAULT_LOG_FILTER: &str = "info,automerge=warn";

/// Logs to stderr, filtered by `YICIBAN_LOG` (default [`DEFAULT_LOG_FILTER`]); one JSON object
/// a line when `YICIBAN_LOG_FORMAT=json`.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_env("YICIBAN_LOG")
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let json = std::env::var("YICIBAN_LOG_FORMAT").is_ok_and(|v| v == "json");
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(ErrorCounter);
    if json {
        registry.with(fmt.json()).init();
    } else {
        registry.with(fmt).init();
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
            match cfg.calendar_path() {
                Some(path) => {
                    yiciban_core::calendar::Calendar::load(&path)?;
                    println!("ok: working-day calendar {}", path.display());
                }
                None => {
                    println!("ok: working-day calendar: the demo calendar (no [calendar] path)")
                }
            }
            Ok(())
        }
        Command::Demo { dir, base_port } => demo::run(&dir, base_port).await,
        Command::Verify {
            payload,
            ca,
            config,
        } => verify(&payload, ca.as_deref(), config.as_deref()),
        Command::Audit {
            command: AuditCommand::Verify { config, node },
        } => match node {
            Some(node) => audit_verify_replica(&config, &node),
            None => audit_verify(&config),
        },
        Command::Audit {
            command: AuditCommand::List { config, last },
        } => audit_list(&config, last),
        Command::Quarantine {
            command: QuarantineCommand::List { config },
        } => quarantine_list(&config),
        Command::User {
            command:
                UserCommand::Add {
                    config,
                    username,
                    role,
                    name,
                    for_node,
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
            )?
            .for_node(&cfg.node.id);
            let display = name.unwrap_or_else(|| username.clone());
            if let Some(node) = for_node {
                let new = yiciban_core::admin::NewDirectoryUser {
                    username: username.clone(),
                    display_name: display,
                    role: role.as_str().to_string(),
                    password: password.trim_end_matches(['\r', '\n']).to_string(),
                };
                yiciban_core::admin::add_directory_user(
                    &store,
                    cfg.node.role,
                    &node,
                    &new,
                    yiciban_core::store::CONSOLE_USER,
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!(
                    "user {username} ({}) added to the directory of {node}",
                    role.as_str()
                );
                return Ok(());
            }
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
        Command::User {
            command:
                UserCommand::ResetPassword {
                    config,
                    username,
                    for_node,
                },
        } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\r', '\n']).to_string();
            change_user(
                &config,
                &username,
                for_node.as_deref(),
                yiciban_core::admin::DirectoryChange::Password(password),
            )
            .await?;
            println!("password of {username} set");
            Ok(())
        }
        Command::User {
            command:
                UserCommand::Disable {
                    config,
                    username,
                    for_node,
                },
        } => {
            change_user(
                &config,
                &username,
                for_node.as_deref(),
                yiciban_core::admin::DirectoryChange::Disabled(true),
            )
            .await?;
            println!("user {username} disabled");
            Ok(())
        }
        Command::Revoke { config, node_id } => {
            let cfg = Config::load(&config)?;
            if cfg.node.role != Tier::County {
                bail!("certificates are revoked at the county");
            }
            let n = TlsDir::new(cfg.tls_dir()).revoke(&node_id)?;
            println!(
                "revoked {n} more certificate(s) of {node_id}; {} updated (a running county refuses the node within seconds)",
                TlsDir::new(cfg.tls_dir()).path("crl.der").display()
            );
            Ok(())
        }
    }
}

/// Changes one user of a stopped node: in node `for_node`'s directory (at the county) or in
/// the node's own users.
async fn change_user(
    config: &Path,
    username: &str,
    for_node: Option<&str>,
    change: yiciban_core::admin::DirectoryChange,
) -> Result<()> {
    use yiciban_core::admin::DirectoryChange;
    let cfg = Config::load(config)?;
    let store = Store::open(
        &cfg.store_path(),
        cfg.store.group_commit_max,
        cfg.store.blob_max_bytes,
    )?
    .for_node(&cfg.node.id);
    match for_node {
        Some(node) => {
            yiciban_core::admin::change_directory_user(
                &store,
                cfg.node.role,
                node,
                username,
                change,
                yiciban_core::store::CONSOLE_USER,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(())
        }
        None => {
            let Some(mut user) = store.user(username)? else {
                bail!("no user {username:?} on this node");
            };
            match change {
                DirectoryChange::Password(p) => {
                    user.password_hash = yiciban_core::users::hash_password(&p)?;
                }
                DirectoryChange::Disabled(d) => user.disabled = d,
            }
            store
                .put_user(user, true, yiciban_core::store::CONSOLE_USER)
                .await?;
            Ok(())
        }
    }
}

/// `yiciban verify`: checks a result code against the county CA certificate.
fn verify(payload: &str, ca: Option<&Path>, config: Option<&Path>) -> Result<()> {
    // The revocations this node knows: at the county `revoked.tsv`, and the registry of
    // nodes in a stopped node's store.
    let revocations: std::collections::BTreeMap<String, u64> = match config {
        Some(config) => {
            let cfg = Config::load(config)?;
            let mut known = TlsDir::new(cfg.tls_dir()).revocations().unwrap_or_default();
            match Store::open(&cfg.store_path(), 1, cfg.store.blob_max_bytes) {
                Ok(store) => {
                    for n in store.registry().nodes() {
                        if let Some(at) = n.revoked_ms {
                            known.entry(n.id.clone()).or_insert(at);
                        }
                    }
                }
                Err(e) => eprintln!(
                    "注意 / note: 节点数据库无法打开，只核对证书吊销文件 / the store is not readable ({e}); checked against revoked.tsv only"
                ),
            }
            known
        }
        None => Default::default(),
    };
    let ca_path = match (ca, config) {
        (Some(ca), _) => ca.to_path_buf(),
        (None, Some(config)) => TlsDir::new(Config::load(config)?.tls_dir()).path("ca.pem"),
        (None, None) => {
            bail!("give the county CA certificate with --ca FILE, or a node's --config FILE")
        }
    };
    let ca_pem = std::fs::read_to_string(&ca_path).with_context(|| {
        format!(
            "cannot read the county CA certificate {}",
            ca_path.display()
        )
    })?;
    let mut text = payload.to_string();
    if payload == "-" {
        text.clear();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(std::io::stdin(), 64 * 1024),
            &mut text,
        )
        .context("reading the result code from stdin")?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let v = yiciban_core::seal::verify_against(&text, &ca_pem, now, &|node| {
        revocations.get(node).copied()
    })
    .map_err(|e| anyhow::anyhow!("无效 / invalid: {}", e.msg().both()))?;
    let s = &v.summary;
    println!("有效 / valid: 签章真实，内容未被改动 / genuine seal, unaltered");
    println!("受理编号 receipt_no: {}", s.receipt_no);
    println!("办理事项 item: {} ({})", s.item_name, s.item_code);
    println!("申请人 applicant: {} ({})", s.applicant, s.id_number);
    println!("决定 decision: {} ({})", s.decision_zh(), s.decision);
    if s.granted() && !s.result_name.is_empty() {
        println!("办理结果 result: {}", s.result_name);
    }
    println!("决定日期 decided_on: {}", s.decided_on);
    println!(
        "签章节点 signed_by: {} ({}, division {})",
        v.signer.node_id, v.signer.role, v.signer.division
    );
    println!("办件 case_id: {}", s.case_id);
    if v.revoked_later_ms.is_some() {
        println!("注意 note: {}", v.note_zh());
    }
    Ok(())
}

/// `yiciban quarantine list`: one line a quarantined document, then one a refusal.
fn quarantine_list(config: &Path) -> Result<()> {
    let store = audit_store(config)?;
    let quarantined = store.quarantined()?;
    println!(
        "隔离的办件文档 / quarantined documents: {}",
        quarantined.len()
    );
    for q in &quarantined {
        let receipt = if q.receipt_no.is_empty() {
            q.doc_id.as_str()
        } else {
            q.receipt_no.as_str()
        };
        let way = match q.direction {
            yiciban_core::store::quarantine::Direction::Received => "来自 from",
            yiciban_core::store::quarantine::Direction::Sent => "发往 to",
        };
        println!(
            "{}\t{receipt}\t{way} {}\t{} / {}",
            local_ms(q.at_ms),
            q.peer,
            q.reason,
            q.reason_en
        );
    }
    for (peer, refused) in store.refusals()? {
        println!(
            "节点 node {peer}: {} 件被拒收或伪造/无效 / refused or forged",
            refused.len()
        );
        for r in refused {
            println!(
                "  {}\t{}\t{}\t{} / {}",
                local_ms(r.at_ms),
                r.receipt_no,
                r.event_id.as_deref().unwrap_or("(document)"),
                r.reason,
                r.reason_en
            );
        }
    }
    Ok(())
}

/// Unix ms as UTC `2026-12-07 02:00:00`.
fn local_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(0))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// Opens a stopped node's store for the audit commands.
fn audit_store(config: &Path) -> Result<Store> {
    let cfg = Config::load(config)?;
    let path = cfg.store_path();
    match Store::open(&path, 1, cfg.store.blob_max_bytes) {
        Ok(store) => Ok(store),
        Err(yiciban_core::store::StoreError::InUse(_)) => bail!(
            "the store {} is locked by a running node: stop the node (or read the audit trail through it) and run this again",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot open the store {}", path.display())),
    }
}

/// `yiciban audit verify`: exit 0 when the chain is intact, 1 with its first problem. At the
/// county, one more line per node whose chain it holds a copy of; a broken copy exits 1 too.
fn audit_verify(config: &Path) -> Result<()> {
    let cfg = Config::load(config)?;
    let store = audit_store(config)?;
    match store.verify_audit()? {
        Ok(report) => println!(
            "audit trail intact: {} entries, head {}",
            report.count,
            report.head_hex()
        ),
        Err(problem) => bail!("audit trail broken: {problem}"),
    }
    if cfg.node.role != Tier::County {
        return Ok(());
    }
    let mut broken = 0;
    for node in store.audit_doc_nodes()? {
        if node == cfg.node.id {
            continue;
        }
        match store.verify_audit_replica(&node)? {
            Some(Ok(report)) => println!(
                "audit trail of {node} (copy held here): intact, {} entries, head {}",
                report.count,
                report.head_hex()
            ),
            Some(Err(problem)) => {
                broken += 1;
                println!("audit trail of {node} (copy held here): broken: {problem}");
            }
            None => {}
        }
    }
    if broken > 0 {
        bail!("{broken} replicated audit trails broken");
    }
    Ok(())
}

/// `yiciban audit verify --node ID` at the county: the copy of ID's chain it holds.
fn audit_verify_replica(config: &Path, node: &str) -> Result<()> {
    let cfg = Config::load(config)?;
    if cfg.node.role != Tier::County {
        bail!(
            "copies of other nodes' audit trails are kept at the county; this config's role is {}",
            cfg.node.role.as_str()
        );
    }
    let store = audit_store(config)?;
    match store.verify_audit_replica(node)? {
        Some(Ok(report)) => {
            println!(
                "audit trail of {node} intact: {} entries, head {}",
                report.count,
                report.head_hex()
            );
            Ok(())
        }
        Some(Err(problem)) => bail!("audit trail of {node} broken: {problem}"),
        None => bail!("the county holds no audit trail of {node}"),
    }
}

/// `yiciban audit list`: the newest entries, one a line.
fn audit_list(config: &Path, last: usize) -> Result<()> {
    let store = audit_store(config)?;
    println!("seq at node user action case detail hash");
    for entry in store.audit_tail(last)? {
        println!("{entry}");
    }
    Ok(())
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
    let store = Store::open(
        &cfg.store_path(),
        cfg.store.group_commit_max,
        cfg.store.blob_max_bytes,
    )?
    .for_node(&cfg.node.id);
    yiciban_core::admin::issue_token(
        &store,
        cfg.node.role,
        node_id,
        role,
        division,
        days,
        yiciban_core::store::CONSOLE_USER,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
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
    if let Some(path) = cfg.calendar_path() {
        yiciban_core::calendar::Calendar::load(&path)?;
    }
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
    if node.publish_calendar().await? {
        tracing::info!("the county's working-day calendar changed: published");
    }
    // The county lists itself and its revocations in the registry of nodes, so what it
    // signs is checked everywhere and nothing a revoked node signs after counts.
    node.publish_registry().await?;
    // Kept for the life of the server: the endpoint's tasks run as long as it exists.
    let endpoint = node
        .start_sync()
        .map_err(|e| anyhow::anyhow!("cannot start replication: {e}"))?;
    // Villages and towns send their audit trail up; the county keeps the copies.
    let exporter = (node.tier() != Tier::County)
        .then(|| tokio::spawn(yiciban_core::audit_doc::run_exporter(node.store.clone())));
    tokio::spawn(yiciban_core::health::run_reporter(
        node.clone(),
        std::time::Duration::from_secs(node.config.health.every_secs),
    ));
    // The legal-time projections (queue, supervision, statistics) are rebuilt here, in the
    // background, whenever the calendar or the catalogue changed since they were computed
    // (the store was just migrated, the county published a year): a look every few seconds,
    // one read of `meta-1` when nothing changed.
    let queue_node = node.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = yiciban_core::queue::ensure_fresh(&queue_node).await {
                tracing::warn!(error = %e, "legal-time projections not rebuilt; tried again shortly");
            }
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
    });
    let notices = node.config.notice_settings();
    let outbox = notices.send.then(|| {
        tracing::info!(webhook = ?notices.webhook, "this node sends the SMS notices");
        tokio::spawn(yiciban_core::notice::run_outbox(node.clone(), notices))
    });
    let node_store = node.store.clone();
    let served = yiciban_web::serve(listener, yiciban_web::AppState::new(node), shutdown).await;
    if let Some(outbox) = outbox {
        outbox.abort();
    }
    if let Some(exporter) = exporter {
        exporter.abort();
        // The entries logged since the last tick (at most EXPORT_EVERY ago) go into the segments
        // now: what the clerk did just before closing goes up with the next link.
        match yiciban_core::audit_doc::export_pending(&node_store).await {
            Ok(n) if n > 0 => tracing::info!(entries = n, "audit entries exported at stop"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "audit entries not exported at stop; exported at the next start")
            }
        }
    }
    // Tell the peers this node is leaving, so they drop the link now rather than at the
    // idle timeout; give the close a moment to go out.
    if let Some(endpoint) = endpoint {
        endpoint.close(0u32.into(), b"node stopping");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), endpoint.wait_idle()).await;
    }
    served?;
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
