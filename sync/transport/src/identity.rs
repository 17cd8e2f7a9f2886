//! The county CA, node keys, certificates with the node's identity, and revocation lists.
//!
//! The identity travels as one URI in the certificate's subject alternative names:
//! `yiciban://node/{role}/{division}/{node_id}`. Every certificate also names the DNS SAN
//! [`SERVER_NAME`], which clients ask for: what authenticates a peer is the chain to the
//! county CA (and the revocation list), not a host name, since villages reach the county
//! through whatever address the link of the day gives.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

/// The DNS name every node certificate carries and every client asks for.
pub const SERVER_NAME: &str = "node.yiciban";
const URI_PREFIX: &str = "yiciban://node/";
/// The roles a certificate may carry.
pub const ROLES: [&str; 3] = ["village", "town", "county"];

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the certificate is not valid X.509")]
    NotX509,
    #[error("the certificate carries no yiciban node identity")]
    NoIdentity,
    #[error("invalid node identity: {0}")]
    Invalid(String),
    #[error("PEM: {0}")]
    Pem(String),
}

/// Who a node is, as the county certified it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    pub node_id: String,
    pub role: String,
    /// 12-digit division code (GB/T 2260).
    pub division: String,
}

impl NodeIdentity {
    pub fn new(node_id: &str, role: &str, division: &str) -> Result<Self, IdentityError> {
        if node_id.is_empty()
            || node_id.len() > 64
            || !node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(IdentityError::Invalid(format!("node id {node_id:?}")));
        }
        if !ROLES.contains(&role) {
            return Err(IdentityError::Invalid(format!("role {role:?}")));
        }
        if division.len() != 12 || !division.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdentityError::Invalid(format!("division {division:?}")));
        }
        Ok(Self {
            node_id: node_id.into(),
            role: role.into(),
            division: division.into(),
        })
    }

    fn uri(&self) -> String {
        format!(
            "{URI_PREFIX}{}/{}/{}",
            self.role, self.division, self.node_id
        )
    }

    fn from_uri(uri: &str) -> Result<Self, IdentityError> {
        let rest = uri
            .strip_prefix(URI_PREFIX)
            .ok_or(IdentityError::NoIdentity)?;
        let mut parts = rest.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(role), Some(division), Some(node_id), None) => Self::new(node_id, role, division),
            _ => Err(IdentityError::Invalid(uri.into())),
        }
    }
}

/// A node's private key; it never leaves the node. Enrolment sends only its CSR.
#[derive(Debug)]
pub struct NodeKey {
    key: KeyPair,
}

impl NodeKey {
    pub fn generate() -> Result<Self, IdentityError> {
        Ok(Self {
            key: KeyPair::generate_for(&rcgen::PKCS_ED25519)?,
        })
    }

    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        Ok(Self {
            key: KeyPair::from_pem(pem)?,
        })
    }

    pub fn pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Signs `msg` with this key: Ed25519, 64 bytes. What is signed is the caller's business;
    /// callers put a context string of their own in front of `msg` (see [`verify_signed`]).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, IdentityError> {
        use rcgen::SigningKey;
        Ok(self.key.sign(msg)?)
    }

    /// A certificate signing request for this key (the county fills in the identity).
    pub fn csr_pem(&self) -> Result<String, IdentityError> {
        let params = CertificateParams::new(Vec::<String>::new())?;
        Ok(params.serialize_request(&self.key)?.pem()?)
    }
}

/// A certificate the county issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    /// The serial number, for revocation.
    pub serial: Vec<u8>,
}

/// The county's certificate authority.
#[derive(Debug)]
pub struct CountyCa {
    cert_pem: String,
    key: KeyPair,
}

/// 16 random bytes, positive as a DER INTEGER: unique enough to revoke by.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

impl CountyCa {
    /// A new CA for the county `division`, valid for 20 years.
    pub fn create(division: &str) -> Result<Self, IdentityError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("yiciban county CA {division}"));
        dn.push(DnType::OrganizationName, "yiciban");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(20 * 365);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key,
        })
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
        Ok(Self {
            cert_pem: cert_pem.into(),
            key: KeyPair::from_pem(key_pem)?,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, IdentityError> {
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?)
    }

    /// Signs a node's CSR with the identity the county decided (from the enrolment token),
    /// never with anything the CSR claims.
    pub fn issue(
        &self,
        csr_pem: &str,
        identity: &NodeIdentity,
        valid_days: i64,
    ) -> Result<Issued, IdentityError> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
        params
            .subject_alt_names
            .push(SanType::URI(identity.uri().try_into()?));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.node_id.clone());
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(valid_days);
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        let cert = params.signed_by(&csr.public_key, &self.issuer()?)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            serial: serial.to_bytes(),
        })
    }

    /// A revocation list (DER) naming `serials`, valid for `valid_days`.
    pub fn crl(
        &self,
        serials: &[Vec<u8>],
        number: u64,
        valid_days: i64,
    ) -> Result<Vec<u8>, IdentityError> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(valid_days),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: now - Duration::minutes(5),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer()?)?.der().to_vec())
    }
}

/// The DER of the first certificate in a PEM text.
pub fn first_cert_der(pem: &str) -> Result<Vec<u8>, IdentityError> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| IdentityError::Pem(e.to_string()))
}

/// The identity in a peer's certificate. Call only on a certificate the TLS layer verified.
pub fn peer_identity(cert_der: &[u8]) -> Result<NodeIdentity, IdentityError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|_| IdentityError::NotX509)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| IdentityError::NotX509)?
        .ok_or(IdentityError::NoIdentity)?;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name
            && uri.starts_with(URI_PREFIX)
        {
            return NodeIdentity::from_uri(uri);
        }
    }
    Err(IdentityError::NoIdentity)
}

/// A certificate's serial number (the bytes [`CountyCa::crl`] takes to revoke it).
pub fn cert_serial(cert_der: &[u8]) -> Result<Vec<u8>, IdentityError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|_| IdentityError::NotX509)?;
    Ok(cert.raw_serial().to_vec())
}

/// The Ed25519 public key of a node certificate (32 bytes).
pub fn cert_public_key(cert_der: &[u8]) -> Result<Vec<u8>, IdentityError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|_| IdentityError::NotX509)?;
    let key = cert.public_key().subject_public_key.data.to_vec();
    if key.len() != 32 {
        return Err(IdentityError::NotX509);
    }
    Ok(key)
}

/// Whether `signature` is an Ed25519 signature over `msg` by `public_key` (32 bytes), as
/// [`ed25519_verify_all`] checks it.
pub fn ed25519_verify(public_key: &[u8], msg: &[u8], signature: &[u8]) -> bool {
    ed25519_verify_all(&[Ed25519Check {
        public_key,
        msg,
        signature,
    }])
}

/// One Ed25519 signature to check: the signer's public key (32 bytes), the message and the
/// signature (64 bytes).
#[derive(Debug, Clone, Copy)]
pub struct Ed25519Check<'a> {
    pub public_key: &'a [u8],
    pub msg: &'a [u8],
    pub signature: &'a [u8],
}

/// Whether every signature of `checks` verifies (`true` for none). Each is held to the
/// cofactored equation (\[8\]\[s\]B = \[8\]R + \[8\]\[k\]A, `s` canonical), the one a batch checks,
/// so a signature gets the same answer alone and in any batch: nodes must agree on which
/// events count. Checked together, many cost about a third of checking them one by one.
pub fn ed25519_verify_all(checks: &[Ed25519Check<'_>]) -> bool {
    let mut keys = Vec::with_capacity(checks.len());
    let mut sigs = Vec::with_capacity(checks.len());
    let mut msgs = Vec::with_capacity(checks.len());
    for c in checks {
        let Ok(key) = <[u8; 32]>::try_from(c.public_key) else {
            return false;
        };
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&key) else {
            return false;
        };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(c.signature) else {
            return false;
        };
        keys.push(key);
        sigs.push(sig);
        msgs.push(c.msg);
    }
    ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok()
}

/// When a certificate stops being valid, in Unix milliseconds.
pub fn cert_not_after_ms(cert_der: &[u8]) -> Result<u64, IdentityError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|_| IdentityError::NotX509)?;
    let secs = cert.validity().not_after.timestamp();
    Ok(u64::try_from(secs).unwrap_or(0).saturating_mul(1000))
}

/// Why a signature made by a node does not verify.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("the county CA certificate is not usable: {0}")]
    BadCa(String),
    #[error("the signer's certificate was not issued by this county CA ({0})")]
    NotFromCa(String),
    #[error("the signer's certificate is expired or not yet valid")]
    Expired,
    #[error("the signer's certificate carries no valid node identity: {0}")]
    Identity(IdentityError),
    #[error("the signature does not match what was signed")]
    BadSignature,
}

/// Verifies that `signature` is an Ed25519 signature over `msg` by the key of `cert_der`, a
/// node certificate the county CA `ca_der` issued that is valid at `now_unix_secs`; returns
/// the signer's identity. No network: the CA certificate is the only trust anchor.
pub fn verify_signed(
    ca_der: &[u8],
    cert_der: &[u8],
    msg: &[u8],
    signature: &[u8],
    now_unix_secs: u64,
) -> Result<NodeIdentity, SignatureError> {
    use rustls_pki_types::{CertificateDer, UnixTime};
    let ca = CertificateDer::from(ca_der);
    let anchor =
        webpki::anchor_from_trusted_cert(&ca).map_err(|e| SignatureError::BadCa(e.to_string()))?;
    let cert = CertificateDer::from(cert_der);
    let ee = webpki::EndEntityCert::try_from(&cert)
        .map_err(|e| SignatureError::NotFromCa(e.to_string()))?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now_unix_secs));
    ee.verify_for_usage(
        &[webpki::ring::ED25519],
        &[anchor],
        &[],
        time,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
            SignatureError::Expired
        }
        other => SignatureError::NotFromCa(format!("{other:?}")),
    })?;
    let identity = peer_identity(cert_der).map_err(SignatureError::Identity)?;
    ee.verify_signature(webpki::ring::ED25519, msg, signature)
        .map_err(|_| SignatureError::BadSignature)?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_read_back_from_the_issued_certificate_only() {
        let ca = CountyCa::create("430181000000").unwrap();
        let key = NodeKey::generate().unwrap();
        let town = NodeIdentity::new("town-430181101000", "town", "430181101000").unwrap();
        let issued = ca.issue(&key.csr_pem().unwrap(), &town, 30).unwrap();
        assert_eq!(
            peer_identity(&first_cert_der(&issued.cert_pem).unwrap()).unwrap(),
            town
        );
        assert!(matches!(
            peer_identity(b"junk"),
            Err(IdentityError::NotX509)
        ));
        assert!(NodeIdentity::new("v", "mayor", "430181101001").is_err());
        assert!(NodeIdentity::new("v/1", "village", "430181101001").is_err());
        let ca_der = first_cert_der(ca.cert_pem()).unwrap();
        assert!(matches!(
            peer_identity(&ca_der),
            Err(IdentityError::NoIdentity)
        ));
    }

    /// A county CA, a node key and the identity `village-1` to certify it with.
    fn village_1() -> (CountyCa, NodeKey, NodeIdentity) {
        let ca = CountyCa::create("430181000000").unwrap();
        let key = NodeKey::generate().unwrap();
        let id = NodeIdentity::new("village-1", "village", "430181101001").unwrap();
        (ca, key, id)
    }

    #[test]
    fn signatures_verify_alone_and_together_and_one_bad_fails_the_batch() {
        let (ca, key, id) = village_1();
        let issued = ca.issue(&key.csr_pem().unwrap(), &id, 30).unwrap();
        let public = cert_public_key(&first_cert_der(&issued.cert_pem).unwrap()).unwrap();
        let msgs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 40 + usize::from(i)]).collect();
        let sigs: Vec<Vec<u8>> = msgs.iter().map(|m| key.sign(m).unwrap()).collect();
        let checks: Vec<Ed25519Check<'_>> = msgs
            .iter()
            .zip(&sigs)
            .map(|(msg, signature)| Ed25519Check {
                public_key: &public,
                msg,
                signature,
            })
            .collect();
        assert!(ed25519_verify_all(&checks));
        assert!(ed25519_verify_all(&[]));
        for c in &checks {
            assert!(ed25519_verify(c.public_key, c.msg, c.signature));
        }
        let mut bad = checks.clone();
        bad[3].msg = &msgs[2];
        assert!(!ed25519_verify_all(&bad));
        assert!(!ed25519_verify(
            bad[3].public_key,
            bad[3].msg,
            bad[3].signature
        ));
        let mut flipped = sigs[1].clone();
        flipped[10] ^= 1;
        assert!(!ed25519_verify(&public, &msgs[1], &flipped));
        assert!(
            !ed25519_verify(&public[..31], &msgs[1], &sigs[1]),
            "short key"
        );
        assert!(
            !ed25519_verify(&public, &msgs[1], &sigs[1][..63]),
            "short signature"
        );
        // `s` at or past the group order is refused, not reduced.
        let mut high = sigs[1].clone();
        high[63] |= 0x80;
        assert!(!ed25519_verify(&public, &msgs[1], &high));
    }

    #[test]
    fn serials_differ_and_a_crl_is_produced() {
        let (ca, key, id) = village_1();
        let a = ca.issue(&key.csr_pem().unwrap(), &id, 30).unwrap();
        let b = ca.issue(&key.csr_pem().unwrap(), &id, 30).unwrap();
        assert_ne!(a.serial, b.serial);
        let der = first_cert_der(&a.cert_pem).unwrap();
        assert_eq!(cert_serial(&der).unwrap(), a.serial);
        assert!(!ca.crl(&[a.serial], 1, 7).unwrap().is_empty());
    }

    fn now() -> u64 {
        OffsetDateTime::now_utc().unix_timestamp().unsigned_abs()
    }

    #[test]
    fn a_signature_verifies_against_the_issuing_ca_only() {
        let ca = CountyCa::create("430181000000").unwrap();
        let key = NodeKey::generate().unwrap();
        let town = NodeIdentity::new("town-430181101000", "town", "430181101000").unwrap();
        let issued = ca.issue(&key.csr_pem().unwrap(), &town, 30).unwrap();
        let cert = first_cert_der(&issued.cert_pem).unwrap();
        let ca_der = first_cert_der(ca.cert_pem()).unwrap();
        let msg = b"ctx\nsummary";
        let sig = key.sign(msg).unwrap();
        assert_eq!(sig.len(), 64);
        assert_eq!(
            verify_signed(&ca_der, &cert, msg, &sig, now()).unwrap(),
            town
        );

        // Another message, another signature, another key: all fail.
        assert!(matches!(
            verify_signed(&ca_der, &cert, b"ctx\nsummarY", &sig, now()),
            Err(SignatureError::BadSignature)
        ));
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert!(matches!(
            verify_signed(&ca_der, &cert, msg, &bad, now()),
            Err(SignatureError::BadSignature)
        ));
        let other = NodeKey::generate().unwrap().sign(msg).unwrap();
        assert!(matches!(
            verify_signed(&ca_der, &cert, msg, &other, now()),
            Err(SignatureError::BadSignature)
        ));

        // Another county's CA does not vouch for this certificate.
        let other_ca = CountyCa::create("430182000000").unwrap();
        let other_ca_der = first_cert_der(other_ca.cert_pem()).unwrap();
        assert!(matches!(
            verify_signed(&other_ca_der, &cert, msg, &sig, now()),
            Err(SignatureError::NotFromCa(_))
        ));
        // A node's own certificate is not a CA.
        assert!(verify_signed(&cert, &cert, msg, &sig, now()).is_err());
        assert!(matches!(
            verify_signed(b"junk", &cert, msg, &sig, now()),
            Err(SignatureError::BadCa(_))
        ));
        assert!(matches!(
            verify_signed(&ca_der, b"junk", msg, &sig, now()),
            Err(SignatureError::NotFromCa(_))
        ));

        // Outside the certificate's validity period.
        let later = now() + 40 * 86_400;
        assert!(matches!(
            verify_signed(&ca_der, &cert, msg, &sig, later),
            Err(SignatureError::Expired)
        ));
        let before = now() - 3 * 86_400;
        assert!(matches!(
            verify_signed(&ca_der, &cert, msg, &sig, before),
            Err(SignatureError::Expired)
        ));
    }
}
