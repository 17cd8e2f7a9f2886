//! Node configuration (`village.toml`, later `town.toml`, `county.toml`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::case_doc::Divisions;
use crate::catalog::Tier;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: NodeSection,
    pub http: HttpSection,
    pub store: StoreSection,
    pub catalog: CatalogSection,
    /// The working-day calendar; without it the demo calendar (`config/calendar.toml`) counts.
    #[serde(default)]
    pub calendar: Option<CatalogSection>,
    /// Health reports and the county's alert thresholds.
    #[serde(default)]
    pub health: HealthSection,
    /// SMS notices; without the section only a county sends (to its log).
    #[serde(default)]
    pub notices: Option<NoticeSection>,
    /// Replication; a node without it runs alone.
    #[serde(default)]
    pub sync: Option<SyncSection>,
    #[serde(default)]
    pub demo: bool,
    /// Where relative paths point: the config file's folder. Set by [`Config::load`].
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[health]`: how often this node reports, and (at the county) when a node counts as quiet.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// Seconds between this node's health reports.
    pub every_secs: u64,
    /// At the county: a node with no report for longer than this raises "not seen".
    pub not_seen_secs: u64,
    /// At the county: free disk below this many MiB raises "disk low".
    pub disk_low_mib: u64,
    /// At the county: a clock off by more than this many seconds raises "clock off".
    pub clock_offset_secs: u64,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            every_secs: 60,
            not_seen_secs: 600,
            disk_low_mib: 1024,
            clock_offset_secs: 60,
        }
    }
}

impl HealthSection {
    pub fn thresholds(&self) -> crate::health::Thresholds {
        crate::health::Thresholds {
            not_seen_secs: self.not_seen_secs,
            disk_low_bytes: self.disk_low_mib << 20,
            clock_offset_ms: self.clock_offset_secs.saturating_mul(1000),
            ..crate::health::Thresholds::default()
        }
    }
}

/// `[notices]`: who sends SMS notices and how (see `crate::notice`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticeSection {
    /// Whether this node sends. Exactly one node of a county should: by default the county.
    pub send: bool,
    /// The SMS gateway (`http://…`); without it notices go to the log.
    #[serde(default)]
    pub webhook: Option<String>,
    /// Milliseconds between outbox rounds when all is well.
    #[serde(default = "default_notice_poll_ms")]
    pub poll_ms: u64,
    /// Seconds before a gateway request is given up (and tried again later).
    #[serde(default = "default_notice_timeout")]
    pub timeout_secs: u64,
    /// Division code → the duty phone (值班电话) of that village, town or county, which
    /// receives the staff warnings of late cases whose baton it holds.
    #[serde(default)]
    pub duty_phones: std::collections::BTreeMap<String, String>,
    /// Seconds between sweeps for late cases (staff warnings).
    #[serde(default = "default_sweep_secs")]
    pub sweep_secs: u64,
}

fn default_sweep_secs() -> u64 {
    600
}

fn default_notice_poll_ms() -> u64 {
    2000
}

fn default_notice_timeout() -> u64 {
    10
}

impl Config {
    /// The notice settings in force: the section, or "the county sends to its log".
    pub fn notice_settings(&self) -> NoticeSection {
        self.notices.clone().unwrap_or(NoticeSection {
            send: self.node.role == Tier::County,
            webhook: None,
            poll_ms: default_notice_poll_ms(),
            timeout_secs: default_notice_timeout(),
            duty_phones: std::collections::BTreeMap::new(),
            sweep_secs: default_sweep_secs(),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub id: String,
    pub role: Tier,
    pub name: String,
    /// This node's own division code (12 digits).
    pub division: String,
    /// The town and county above it (for a town node, `town` is its own code).
    pub town_division: String,
    pub county_division: String,
    /// Local time zone, hours east of UTC (China: 8). Used for receipt dates.
    #[serde(default = "default_utc_offset")]
    pub utc_offset_hours: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    pub listen: SocketAddr,
    /// Minutes of inactivity before a session ends.
    #[serde(default = "default_idle_minutes")]
    pub idle_logout_minutes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub path: PathBuf,
    /// Most writes one commit may carry; 1 turns group commit off (the bench baseline).
    #[serde(default = "default_group_commit_max")]
    pub group_commit_max: usize,
    #[serde(default = "default_blob_max_bytes")]
    pub blob_max_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSection {
    pub path: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    /// Where this node accepts peers over QUIC (the county; a town that villages dial).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The county's QUIC address, which this node dials.
    #[serde(default)]
    pub county: Option<SocketAddr>,
    /// The TLS folder: `ca.pem`, `node.pem`, `node.key` (and `ca.key` at the county).
    #[serde(default = "default_tls_dir")]
    pub tls_dir: PathBuf,
    /// Most seconds between two dial attempts after failures.
    #[serde(default = "default_backoff_max")]
    pub backoff_max_secs: u64,
}

fn default_tls_dir() -> PathBuf {
    PathBuf::from("tls")
}
fn default_backoff_max() -> u64 {
    30
}

fn default_utc_offset() -> i32 {
    8
}
fn default_idle_minutes() -> u64 {
    30
}
fn default_group_commit_max() -> usize {
    256
}
fn default_blob_max_bytes() -> usize {
    5 * 1024 * 1024
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config {file}: {reason}")]
    Read { file: PathBuf, reason: String },
    #[error("config {file}: {place}: {reason}")]
    Invalid {
        file: PathBuf,
        place: String,
        reason: String,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            file: path.to_path_buf(),
            place: e
                .span()
                .map(|s| {
                    format!(
                        "line {}",
                        text[..s.start.min(text.len())].matches('\n').count() + 1
                    )
                })
                .unwrap_or_else(|| "document".into()),
            reason: e.message().to_string(),
        })?;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config
            .check()
            .map_err(|(place, reason)| ConfigError::Invalid {
                file: path.to_path_buf(),
                place,
                reason,
            })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), (String, String)> {
        for (place, code) in [
            ("node.division", &self.node.division),
            ("node.town_division", &self.node.town_division),
            ("node.county_division", &self.node.county_division),
        ] {
            if code.len() != 12 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err((
                    place.into(),
                    format!("{code:?} is not a 12-digit division code"),
                ));
            }
        }
        if self.node.id.is_empty()
            || !self
                .node
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(("node.id".into(), "use ASCII letters, digits and '-'".into()));
        }
        if !(-12..=14).contains(&self.node.utc_offset_hours) {
            return Err((
                "node.utc_offset_hours".into(),
                "must be between -12 and 14".into(),
            ));
        }
        if let Some(sync) = &self.sync {
            if sync.listen.is_none() && sync.county.is_none() {
                return Err((
                    "sync".into(),
                    "set `listen` (county), `county` (the address to dial), or both".into(),
                ));
            }
            if self.node.role != Tier::County && sync.county.is_none() {
                return Err((
                    "sync.county".into(),
                    "a village or town needs the county's address".into(),
                ));
            }
            if sync.backoff_max_secs == 0 {
                return Err(("sync.backoff_max_secs".into(), "must be at least 1".into()));
            }
        }
        if self.store.group_commit_max == 0 {
            return Err(("store.group_commit_max".into(), "must be at least 1".into()));
        }
        if self.health.every_secs == 0 || self.health.not_seen_secs == 0 {
            return Err((
                "health".into(),
                "every_secs and not_seen_secs must be at least 1".into(),
            ));
        }
        if let Some(n) = &self.notices {
            if let Some(url) = &n.webhook
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err((
                    "notices.webhook".into(),
                    "must be an http:// or https:// URL".into(),
                ));
            }
            if n.poll_ms == 0 || n.timeout_secs == 0 || n.sweep_secs == 0 {
                return Err((
                    "notices".into(),
                    "poll_ms, timeout_secs and sweep_secs must be at least 1".into(),
                ));
            }
        }
        Ok(())
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn store_path(&self) -> PathBuf {
        self.resolve(&self.store.path)
    }

    /// The TLS folder (`[sync] tls_dir`, default `tls` beside the config).
    pub fn tls_dir(&self) -> PathBuf {
        let dir = self
            .sync
            .as_ref()
            .map_or_else(default_tls_dir, |s| s.tls_dir.clone());
        self.resolve(&dir)
    }

    /// The scope of this node's own cases.
    pub fn scope(&self) -> crate::scope::Scope {
        crate::scope::Scope::of(self.node.role, &self.node.division)
    }

    pub fn catalog_path(&self) -> PathBuf {
        self.resolve(&self.catalog.path)
    }

    /// The calendar file the config names, if any.
    pub fn calendar_path(&self) -> Option<PathBuf> {
        self.calendar.as_ref().map(|c| self.resolve(&c.path))
    }

    /// Where a calendar published from the county's console is kept: the file the config
    /// names, else `calendar.toml` beside the config (read at start when no path is named).
    pub fn published_calendar_file(&self) -> PathBuf {
        self.calendar_path()
            .unwrap_or_else(|| self.base_dir.join("calendar.toml"))
    }

    /// The divisions a case accepted here belongs to.
    pub fn divisions(&self) -> Divisions {
        Divisions {
            village: self.node.division.clone(),
            town: self.node.town_division.clone(),
            county: self.node.county_division.clone(),
        }
    }
}
