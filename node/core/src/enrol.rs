//! Enrolment: how a node gets its certificate from the county (DESIGN.md §10).
//!
//! The county creates a one-time token naming the identity it will certify (node id, role,
//! division). The token is `ID.SECRET`; the secret never crosses the wire. The node sends its
//! CSR with an HMAC of it keyed by the secret; the county checks the HMAC, marks the token
//! used, signs the CSR with the identity from the token (never from the CSR) and answers with
//! the certificate and the CA, again under an HMAC, so a node that enrols over a plain link
//! still knows the answer came from the county that issued its token.
//!
//! The files live in the node's TLS folder ([`TlsDir`]): `ca.pem`, `node.pem`, `node.key`,
//! and at the county `ca.key`, `crl.der`, `issued.tsv` (one line per certificate issued:
//! node id, serial in hex, Unix ms) and `revoked.tsv` (the same for each one revoked, from
//! which `crl.der` is made). They are files, not store rows, so `yiciban revoke` works while
//! the county runs; the running county reloads `crl.der` when it changes
//! (`crate::sync_engine::watch_revocations`).

use std::path::PathBuf;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;
use yiciban_transport::identity::{CountyCa, IdentityError, NodeIdentity, NodeKey};
use yiciban_transport::tls::TlsMaterial;

use crate::store::{Store, StoreError};

/// How long a token is valid by default, and a certificate.
pub const TOKEN_VALID: Duration = Duration::from_secs(7 * 24 * 3600);
pub const CERT_VALID_DAYS: i64 = 2 * 365;
/// Bounds on what an enrolment request may carry.
const MAX_CSR_BYTES: usize = 8 * 1024;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EnrolError {
    #[error("the enrolment token is malformed (expected ID.SECRET)")]
    MalformedToken,
    #[error("the enrolment token is not valid")]
    BadToken,
    #[error("the enrolment token {0}")]
    Refused(String),
    #[error(
        "the county's answer failed its check: it did not come from the county that issued the token"
    )]
    BadAnswer,
    #[error("certificate: {0}")]
    Identity(#[from] IdentityError),
    #[error("the certificate names {got}, this node's config says {want}")]
    WrongIdentity { got: String, want: String },
    #[error("TLS folder {path}: {reason}")]
    Files { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token as the county stores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub node_id: String,
    pub role: String,
    pub division: String,
    pub secret_hex: String,
    pub expires_ms: u64,
    pub used_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrolRequest {
    pub token_id: String,
    pub csr_pem: String,
    /// HMAC-SHA256 (hex) of the CSR, keyed by the token's secret.
    pub mac: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrolAnswer {
    pub cert_pem: String,
    pub ca_pem: String,
    /// HMAC-SHA256 (hex) of certificate and CA, keyed by the token's secret.
    pub mac: String,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// HMAC-SHA256 over `label` and length-prefixed `parts`, keyed by the token's secret.
fn keyed(secret: &[u8], label: &str, parts: &[&str]) -> Hmac<Sha256> {
    // HMAC takes a key of any length; this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(label.as_bytes());
    for p in parts {
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p.as_bytes());
    }
    m
}

fn mac(secret: &[u8], label: &str, parts: &[&str]) -> Vec<u8> {
    keyed(secret, label, parts).finalize().into_bytes().to_vec()
}

/// Constant-time check of a hex MAC.
fn verify_mac(secret: &[u8], label: &str, parts: &[&str], given_hex: &str) -> bool {
    hex::decode(given_hex)
        .is_ok_and(|given| keyed(secret, label, parts).verify_slice(&given).is_ok())
}

const REQUEST_LABEL: &str = "yiciban-enrol-request/1";
const ANSWER_LABEL: &str = "yiciban-enrol-answer/1";

/// Splits `ID.SECRET`.
pub fn parse_token(token: &str) -> Result<(String, Vec<u8>), EnrolError> {
    let (id, secret) = token
        .trim()
        .split_once('.')
        .ok_or(EnrolError::MalformedToken)?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(EnrolError::MalformedToken);
    }
    let secret = hex::decode(secret).map_err(|_| EnrolError::MalformedToken)?;
    if secret.len() != 32 {
        return Err(EnrolError::MalformedToken);
    }
    Ok((id.to_ascii_lowercase(), secret))
}

/// Creates a one-time token for `identity` (county only); returns `ID.SECRET`.
pub async fn create_token(
    store: &Store,
    identity: &NodeIdentity,
    valid: Duration,
) -> Result<String, EnrolError> {
    create_token_by(store, identity, valid, crate::store::CONSOLE_USER).await
}

/// [`create_token`] on behalf of `by`, the user the audit trail names.
pub async fn create_token_by(
    store: &Store,
    identity: &NodeIdentity,
    valid: Duration,
    by: &str,
) -> Result<String, EnrolError> {
    let id: [u8; 8] = rand::random();
    let secret: [u8; 32] = rand::random();
    let record = TokenRecord {
        node_id: identity.node_id.clone(),
        role: identity.role.clone(),
        division: identity.division.clone(),
        secret_hex: hex::encode(secret),
        expires_ms: unix_ms().saturating_add(u64::try_from(valid.as_millis()).unwrap_or(0)),
        used_ms: None,
    };
    store.put_token(&hex::encode(id), &record, by).await?;
    Ok(format!("{}.{}", hex::encode(id), hex::encode(secret)))
}

/// The node's side: a request for `key`'s certificate under `token`.
pub fn request(token: &str, key: &NodeKey) -> Result<EnrolRequest, EnrolError> {
    let (token_id, secret) = parse_token(token)?;
    let csr_pem = key.csr_pem()?;
    let mac = hex::encode(mac(&secret, REQUEST_LABEL, &[&csr_pem]));
    Ok(EnrolRequest {
        token_id,
        csr_pem,
        mac,
    })
}

/// The county's side: checks the request, uses the token up and issues the certificate.
pub async fn answer(
    store: &Store,
    ca: &CountyCa,
    req: &EnrolRequest,
) -> Result<EnrolAnswer, EnrolError> {
    if req.csr_pem.len() > MAX_CSR_BYTES || req.token_id.len() != 16 {
        return Err(EnrolError::BadToken);
    }
    let record = store.token(&req.token_id)?.ok_or(EnrolError::BadToken)?;
    let secret = hex::decode(&record.secret_hex).map_err(|_| EnrolError::BadToken)?;
    if !verify_mac(&secret, REQUEST_LABEL, &[&req.csr_pem], &req.mac) {
        return Err(EnrolError::BadToken);
    }
    match store.use_token(&req.token_id, unix_ms()).await {
        Ok(()) => {}
        Err(StoreError::Refused(why)) => return Err(EnrolError::Refused(why)),
        Err(e) => return Err(e.into()),
    }
    let identity = NodeIdentity::new(&record.node_id, &record.role, &record.division)?;
    let issued = ca.issue(&req.csr_pem, &identity, CERT_VALID_DAYS)?;
    let ca_pem = ca.cert_pem().to_string();
    let mac = hex::encode(mac(&secret, ANSWER_LABEL, &[&issued.cert_pem, &ca_pem]));
    tracing::info!(node = %identity.node_id, role = %identity.role, division = %identity.division, "node enrolled");
    Ok(EnrolAnswer {
        cert_pem: issued.cert_pem,
        ca_pem,
        mac,
    })
}

/// The node's side: checks the county's answer against the token and the node's config.
pub fn check_answer(
    token: &str,
    answer: &EnrolAnswer,
    want: &NodeIdentity,
) -> Result<(), EnrolError> {
    let (_, secret) = parse_token(token)?;
    if !verify_mac(
        &secret,
        ANSWER_LABEL,
        &[&answer.cert_pem, &answer.ca_pem],
        &answer.mac,
    ) {
        return Err(EnrolError::BadAnswer);
    }
    let der = yiciban_transport::identity::first_cert_der(&answer.cert_pem)?;
    let got = yiciban_transport::identity::peer_identity(&der)?;
    if &got != want {
        return Err(EnrolError::WrongIdentity {
            got: format!("{} ({}, {})", got.node_id, got.role, got.division),
            want: format!("{} ({}, {})", want.node_id, want.role, want.division),
        });
    }
    Ok(())
}

/// The county's list of issued certificates, and of revoked ones.
const ISSUED: &str = "issued.tsv";
const REVOKED: &str = "revoked.tsv";

/// A node's TLS folder.
#[derive(Debug, Clone)]
pub struct TlsDir {
    pub dir: PathBuf,
}

impl TlsDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> Result<String, EnrolError> {
        let path = self.path(name);
        std::fs::read_to_string(&path).map_err(|e| EnrolError::Files {
            path,
            reason: e.to_string(),
        })
    }

    fn write(&self, name: &str, text: &[u8], secret: bool) -> Result<(), EnrolError> {
        let path = self.path(name);
        let err = |e: std::io::Error| EnrolError::Files {
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, text).map_err(err)?;
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        }
        #[cfg(not(unix))]
        let _ = secret;
        std::fs::rename(&tmp, &path).map_err(err)
    }

    /// Whether this node holds a certificate.
    pub fn is_enrolled(&self) -> bool {
        self.path("node.pem").exists() && self.path("node.key").exists()
    }

    /// The county CA, for a county node.
    pub fn county_ca(&self) -> Result<CountyCa, EnrolError> {
        Ok(CountyCa::from_pem(
            &self.read("ca.pem")?,
            &self.read("ca.key")?,
        )?)
    }

    /// Creates the county CA and the county node's own certificate. Refuses to overwrite.
    pub fn init_county(&self, identity: &NodeIdentity) -> Result<(), EnrolError> {
        if self.path("ca.pem").exists() || self.path("ca.key").exists() {
            return Err(EnrolError::Files {
                path: self.path("ca.pem"),
                reason: "a county CA already exists here; it is never overwritten".into(),
            });
        }
        let ca = CountyCa::create(&identity.division)?;
        let key = NodeKey::generate()?;
        let issued = ca.issue(&key.csr_pem()?, identity, CERT_VALID_DAYS)?;
        let crl = ca.crl(&[], 1, 3650)?;
        self.write("ca.key", ca.key_pem().as_bytes(), true)?;
        self.write("ca.pem", ca.cert_pem().as_bytes(), false)?;
        self.write("crl.der", &crl, false)?;
        self.write("node.key", key.pem().as_bytes(), true)?;
        self.write("node.pem", issued.cert_pem.as_bytes(), false)?;
        Ok(())
    }

    /// At the county: remembers that a certificate with `serial` was issued to `node_id`.
    pub fn record_issued(&self, node_id: &str, serial: &[u8]) -> Result<(), EnrolError> {
        use std::io::Write;
        let path = self.path(ISSUED);
        let err = |e: std::io::Error| EnrolError::Files {
            path: path.clone(),
            reason: e.to_string(),
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        writeln!(file, "{node_id}\t{}\t{}", hex::encode(serial), unix_ms()).map_err(err)?;
        file.sync_all().map_err(err)
    }

    /// `(node id, serial)` of every line of `issued.tsv` or `revoked.tsv`.
    fn serials(&self, name: &str) -> Result<Vec<(String, Vec<u8>)>, EnrolError> {
        let text = match std::fs::read_to_string(self.path(name)) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(EnrolError::Files {
                    path: self.path(name),
                    reason: e.to_string(),
                });
            }
        };
        Ok(text
            .lines()
            .filter_map(|line| {
                let mut parts = line.split('\t');
                let node = parts.next()?;
                let serial = hex::decode(parts.next()?).ok()?;
                Some((node.to_string(), serial))
            })
            .collect())
    }

    /// Each revoked node with when the county first revoked one of its certificates (Unix
    /// ms, from `revoked.tsv`).
    pub fn revocations(&self) -> Result<std::collections::BTreeMap<String, u64>, EnrolError> {
        let text = match std::fs::read_to_string(self.path(REVOKED)) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
            Err(e) => {
                return Err(EnrolError::Files {
                    path: self.path(REVOKED),
                    reason: e.to_string(),
                });
            }
        };
        let mut out = std::collections::BTreeMap::new();
        for line in text.lines() {
            let mut parts = line.split('\t');
            let (Some(node), Some(_), Some(ms)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let Ok(ms) = ms.trim().parse::<u64>() else {
                continue;
            };
            let at = out.entry(node.to_string()).or_insert(ms);
            *at = (*at).min(ms);
        }
        Ok(out)
    }

    /// The nodes whose certificates the county revoked.
    pub fn revoked_nodes(&self) -> Result<std::collections::BTreeSet<String>, EnrolError> {
        Ok(self
            .serials(REVOKED)?
            .into_iter()
            .map(|(node, _)| node)
            .collect())
    }

    /// At the county: revokes every certificate issued to `node_id` and writes the new
    /// `crl.der`; returns how many were revoked now. An unknown node is an error.
    pub fn revoke(&self, node_id: &str) -> Result<usize, EnrolError> {
        let ca = self.county_ca()?;
        let issued: Vec<Vec<u8>> = self
            .serials(ISSUED)?
            .into_iter()
            .filter(|(n, _)| n == node_id)
            .map(|(_, s)| s)
            .collect();
        if issued.is_empty() {
            return Err(EnrolError::Refused(format!(
                "of {node_id}: no certificate was issued to that node here ({})",
                self.path(ISSUED).display()
            )));
        }
        let mut revoked = self.serials(REVOKED)?;
        let mut lines = String::new();
        for serial in issued {
            if !revoked.iter().any(|(_, s)| *s == serial) {
                lines.push_str(&format!(
                    "{node_id}\t{}\t{}\n",
                    hex::encode(&serial),
                    unix_ms()
                ));
                revoked.push((node_id.to_string(), serial));
            }
        }
        let added = lines.lines().count();
        let all: Vec<Vec<u8>> = revoked.into_iter().map(|(_, s)| s).collect();
        // The CRL number only grows: seconds since the epoch.
        let crl = ca.crl(&all, unix_ms() / 1000, 3650)?;
        let mut text = std::fs::read_to_string(self.path(REVOKED)).unwrap_or_default();
        text.push_str(&lines);
        self.write(REVOKED, text.as_bytes(), false)?;
        self.write("crl.der", &crl, false)?;
        Ok(added)
    }

    /// Stores what enrolment gave this node.
    pub fn save_enrolment(&self, key: &NodeKey, answer: &EnrolAnswer) -> Result<(), EnrolError> {
        self.write("node.key", key.pem().as_bytes(), true)?;
        self.write("ca.pem", answer.ca_pem.as_bytes(), false)?;
        self.write("node.pem", answer.cert_pem.as_bytes(), false)?;
        Ok(())
    }

    /// Everything the QUIC endpoint needs.
    pub fn material(&self) -> Result<TlsMaterial, EnrolError> {
        let crl_path = self.path("crl.der");
        let crls_der = match std::fs::read(&crl_path) {
            Ok(bytes) => vec![bytes],
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(EnrolError::Files {
                    path: crl_path,
                    reason: e.to_string(),
                });
            }
        };
        Ok(TlsMaterial {
            ca_cert_pem: self.read("ca.pem")?,
            cert_pem: self.read("node.pem")?,
            key_pem: self.read("node.key")?,
            crls_der,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoking_a_node_lists_every_serial_it_was_issued() {
        let dir = tempfile::tempdir().unwrap();
        let tls = TlsDir::new(dir.path());
        let county = NodeIdentity::new("county", "county", "430181000000").unwrap();
        tls.init_county(&county).unwrap();
        let before = std::fs::read(tls.path("crl.der")).unwrap();
        tls.record_issued("village-1", &[0x11, 2, 3]).unwrap();
        tls.record_issued("village-2", &[0x22, 2, 3]).unwrap();
        tls.record_issued("village-1", &[0x33, 2, 3]).unwrap();
        assert!(matches!(tls.revoke("nobody"), Err(EnrolError::Refused(_))));
        assert_eq!(tls.revoke("village-1").unwrap(), 2);
        assert_eq!(tls.revoke("village-1").unwrap(), 0);
        assert_ne!(std::fs::read(tls.path("crl.der")).unwrap(), before);
        assert_eq!(
            tls.revoked_nodes().unwrap().into_iter().collect::<Vec<_>>(),
            vec!["village-1".to_string()]
        );
        // The new list still loads as TLS material.
        assert_eq!(tls.material().unwrap().crls_der.len(), 1);
    }

    #[tokio::test]
    async fn enrolment_round_trip_and_every_tamper_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.redb"), 8, 1 << 20).unwrap();
        let ca = CountyCa::create("430181000000").unwrap();
        let id = NodeIdentity::new("village-1", "village", "430181101001").unwrap();
        let token = create_token(&store, &id, TOKEN_VALID).await.unwrap();
        let key = NodeKey::generate().unwrap();
        let req = request(&token, &key).unwrap();

        // A request under another secret is refused and does not use the token up.
        let mut forged = req.clone();
        forged.mac = hex::encode([0u8; 32]);
        assert!(matches!(
            answer(&store, &ca, &forged).await,
            Err(EnrolError::BadToken)
        ));

        let ans = answer(&store, &ca, &req).await.unwrap();
        check_answer(&token, &ans, &id).unwrap();
        // One altered byte of the certificate fails the answer's check.
        let mut altered = ans.clone();
        let flip = if &altered.cert_pem[40..41] == "A" {
            "B"
        } else {
            "A"
        };
        altered.cert_pem.replace_range(40..41, flip);
        assert!(matches!(
            check_answer(&token, &altered, &id),
            Err(EnrolError::BadAnswer)
        ));
        // The identity must be the one the node's config names.
        let other = NodeIdentity::new("village-2", "village", "430181101002").unwrap();
        assert!(matches!(
            check_answer(&token, &ans, &other),
            Err(EnrolError::WrongIdentity { .. })
        ));
        // The token is one-time.
        assert!(matches!(
            answer(&store, &ca, &req).await,
            Err(EnrolError::Refused(_))
        ));
        assert!(matches!(
            parse_token("nonsense"),
            Err(EnrolError::MalformedToken)
        ));
    }
}
