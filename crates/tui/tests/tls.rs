//! The TUI's client over TLS on 127.0.0.1: a gRPC server with a self-signed
//! certificate made here; `--tls-ca` makes bare addresses use https and trust it.

use std::time::Duration;

use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test]
async fn tls_ca_makes_the_client_speak_https_and_trust_it() {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "nothing here").unwrap();
    let e = tui::client::set_tls_ca(Some(&junk)).unwrap_err();
    assert!(e.to_string().contains("--tls-ca"), "{e}");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    tui::client::set_tls_ca(Some(&ca)).unwrap();

    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let identity = Identity::from_pem(ck.cert.pem(), ck.key_pair.serialize_pem());
    let server = tokio::spawn(
        Server::builder()
            .tls_config(ServerTlsConfig::new().identity(identity))
            .unwrap()
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let addr = format!("127.0.0.1:{port}");
    assert_eq!(
        tui::client::endpoint(&addr).unwrap().uri().scheme_str(),
        Some("https")
    );
    let ch = tokio::time::timeout(Duration::from_secs(10), tui::client::connect(&addr))
        .await
        .expect("connect in time")
        .expect("TLS connect");
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        HealthClient::new(ch).check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .expect("answer in time")
    .expect("health over TLS");
    assert_eq!(r.into_inner().status, 1, "SERVING");
    server.abort();
}
