//! # yiciban-transport
//!
//! The network shell around [`yiciban_sync`]: QUIC (quinn) with rustls mutual TLS (`ring`
//! provider, TLS 1.3 only, ALPN `yiciban/1`), and the county certificate authority that gives
//! every node its certificate.
//!
//! A node's identity — node id, role and division code — is written by the county into the
//! certificate it issues and is read back only from a certificate that verified against the
//! county CA ([`identity::peer_identity`]). Nothing a peer says about itself in a message is
//! trusted for scope.
//!
//! ```
//! use yiciban_transport::identity::{CountyCa, NodeIdentity, NodeKey};
//! let ca = CountyCa::create("430181000000").unwrap();
//! let key = NodeKey::generate().unwrap();
//! let village = NodeIdentity::new("village-430181101001", "village", "430181101001").unwrap();
//! let issued = ca.issue(&key.csr_pem().unwrap(), &village, 365).unwrap();
//! let der = yiciban_transport::identity::first_cert_der(&issued.cert_pem).unwrap();
//! assert_eq!(yiciban_transport::identity::peer_identity(&der).unwrap(), village);
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod identity;
pub mod tls;
