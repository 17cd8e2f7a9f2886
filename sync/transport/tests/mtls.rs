//! Real QUIC on loopback with real certificates: who gets in and who is refused.

use std::net::SocketAddr;

use yiciban_transport::identity::{CountyCa, NodeIdentity, NodeKey, SERVER_NAME};
use yiciban_transport::tls::{TlsMaterial, connection_identity};

fn material(ca: &CountyCa, id: &NodeIdentity, crls: Vec<Vec<u8>>) -> (TlsMaterial, Vec<u8>) {
    let key = NodeKey::generate().unwrap();
    let issued = ca.issue(&key.csr_pem().unwrap(), id, 30).unwrap();
    let m = TlsMaterial {
        ca_cert_pem: ca.cert_pem().into(),
        cert_pem: issued.cert_pem,
        key_pem: key.pem(),
        crls_der: crls,
    };
    (m, issued.serial)
}

fn county_id() -> NodeIdentity {
    NodeIdentity::new("county-430181000000", "county", "430181000000").unwrap()
}

fn village_id() -> NodeIdentity {
    NodeIdentity::new("village-430181101001", "village", "430181101001").unwrap()
}

/// Starts a county endpoint that accepts one connection and reports the peer identity or the
/// refusal as text.
fn county(
    server: &TlsMaterial,
) -> (
    SocketAddr,
    tokio::task::JoinHandle<Result<NodeIdentity, String>>,
) {
    let endpoint = quinn::Endpoint::server(
        server.quinn_server().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let incoming = endpoint.accept().await.ok_or("endpoint closed")?;
        let result = match incoming.await {
            Ok(conn) => connection_identity(&conn).map_err(|e| e.to_string()),
            Err(e) => Err(format!("handshake refused: {e}")),
        };
        endpoint.close(0u32.into(), b"done");
        result
    });
    (addr, task)
}

async fn dial(client: quinn::ClientConfig, addr: SocketAddr) -> Result<quinn::Connection, String> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(client);
    let connecting = endpoint
        .connect(addr, SERVER_NAME)
        .map_err(|e| e.to_string())?;
    let conn = connecting.await.map_err(|e| e.to_string())?;
    // A refused client certificate surfaces after the client's side of the handshake ends.
    let mut probe = conn.open_uni().await.map_err(|e| e.to_string())?;
    probe.write_all(b"hello").await.map_err(|e| e.to_string())?;
    probe.finish().map_err(|e| e.to_string())?;
    tokio::time::timeout(std::time::Duration::from_secs(5), conn.closed())
        .await
        .ok();
    Ok(conn)
}

#[tokio::test]
async fn enrolled_nodes_see_each_others_certified_identity() {
    let ca = CountyCa::create("430181000000").unwrap();
    let (server, _) = material(&ca, &county_id(), vec![]);
    let (client, _) = material(&ca, &village_id(), vec![]);
    let (addr, accepted) = county(&server);
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(client.quinn_client().unwrap());
    let conn = endpoint.connect(addr, SERVER_NAME).unwrap().await.unwrap();
    assert_eq!(connection_identity(&conn).unwrap(), county_id());
    let alpn = conn
        .handshake_data()
        .unwrap()
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .unwrap()
        .protocol;
    assert_eq!(alpn.as_deref(), Some(yiciban_sync::PROTOCOL.as_bytes()));
    assert_eq!(accepted.await.unwrap().unwrap(), village_id());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let ca = CountyCa::create("430181000000").unwrap();
    let other = CountyCa::create("430182000000").unwrap();
    let (server, _) = material(&ca, &county_id(), vec![]);
    let (mut stranger, _) = material(&other, &village_id(), vec![]);
    // The stranger trusts our CA for the server, but its own certificate is from elsewhere.
    stranger.ca_cert_pem = ca.cert_pem().into();
    let (addr, accepted) = county(&server);
    let _ = dial(stranger.quinn_client().unwrap(), addr).await;
    let refusal = accepted.await.unwrap().unwrap_err();
    assert!(refusal.contains("handshake refused"), "{refusal}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let ca = CountyCa::create("430181000000").unwrap();
    let (server, _) = material(&ca, &county_id(), vec![]);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            yiciban_transport::identity::first_cert_der(ca.cert_pem())
                .unwrap()
                .into(),
        )
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut anonymous = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    anonymous.alpn_protocols = vec![b"yiciban/1".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(anonymous).unwrap();
    let (addr, accepted) = county(&server);
    let _ = dial(quinn::ClientConfig::new(std::sync::Arc::new(crypto)), addr).await;
    let refusal = accepted.await.unwrap().unwrap_err();
    assert!(refusal.contains("handshake refused"), "{refusal}");
}

#[tokio::test]
async fn a_revoked_node_is_refused() {
    let ca = CountyCa::create("430181000000").unwrap();
    let (client, serial) = material(&ca, &village_id(), vec![]);
    let crl = ca.crl(&[serial], 1, 7).unwrap();
    let (server, _) = material(&ca, &county_id(), vec![crl]);
    let (addr, accepted) = county(&server);
    let _ = dial(client.quinn_client().unwrap(), addr).await;
    let refusal = accepted.await.unwrap().unwrap_err();
    assert!(refusal.contains("handshake refused"), "{refusal}");
}

/// Datagrams stay at QUIC's 1,200 bytes and no path MTU probe is sent: the probes cost ~11 KB
/// a connection, more than a small resync (see `tls::transport`).
#[tokio::test]
async fn a_connection_sends_no_path_mtu_probes() {
    let ca = CountyCa::create("430181000000").unwrap();
    let (server, _) = material(&ca, &county_id(), vec![]);
    let (client, _) = material(&ca, &village_id(), vec![]);
    let endpoint = quinn::Endpoint::server(
        server.quinn_server().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let accepted = tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let got = recv.read_to_end(1 << 20).await.unwrap();
        send.write_all(&got).await.unwrap();
        send.finish().unwrap();
        conn.closed().await;
        conn.stats()
    });
    let mut client_end = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client_end.set_default_client_config(client.quinn_client().unwrap());
    let conn = client_end
        .connect(addr, SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // Enough bytes, and time, for probing to have started had it been on.
    send.write_all(&vec![7u8; 64 * 1024]).await.unwrap();
    send.finish().unwrap();
    assert_eq!(recv.read_to_end(1 << 20).await.unwrap().len(), 64 * 1024);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let dialled = conn.stats();
    conn.close(0u32.into(), b"done");
    let served = accepted.await.unwrap();
    for (side, stats) in [("client", dialled), ("server", served)] {
        assert_eq!(stats.path.sent_plpmtud_probes, 0, "{side}: {stats:?}");
        assert_eq!(stats.path.current_mtu, 1200, "{side}");
    }
}
