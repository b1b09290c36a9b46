//! `wss://`: a rustls server with a self-signed certificate in front of
//! `tether::accept`, and `tether::connect_with` trusting (or not) that
//! certificate.

mod common;

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use rustls::{
    RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
};
use tether::{ClientConfig, Error, Message, ServerConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use common::*;

/// A self-signed certificate for `localhost` and 127.0.0.1.
fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    (certified.cert.der().clone(), key.into())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS echo server; the returned count tells how many TLS handshakes failed.
async fn spawn_tls_echo_server(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (failures_tx, failures) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let failures_tx = failures_tx.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(error) => {
                        let _ = failures_tx.send(error.to_string());
                        return;
                    }
                };
                if let Ok((mut ws, _)) = tether::accept(tls, &ServerConfig::default()).await {
                    echo(&mut ws).await;
                }
            });
        }
    });
    (addr, failures)
}

#[tokio::test]
async fn wss_round_trips_text_and_binary() {
    let (cert, key) = certificate();
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let (addr, _failures) = spawn_tls_echo_server(cert, key).await;
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut config = ClientConfig::default();
    config.tls = Some(Arc::new(tls));
    let url = format!("wss://localhost:{}/secure", addr.port());
    let (mut ws, _) = within("connect", tether::connect_with(&url, &config))
        .await
        .unwrap();
    assert!(matches!(ws.transport(), tether::MaybeTls::Tls(_)));
    let big = Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<_>>());
    for message in [
        Message::text("over TLS"),
        Message::binary(vec![0u8, 0xff, 0x80]),
        Message::Binary(big),
    ] {
        ws.send(message.clone()).await.unwrap();
        assert_eq!(next(&mut ws).await, message);
    }
    ws.close(tether::CloseCode::NORMAL, "").await.unwrap();
    assert!(matches!(next(&mut ws).await, Message::Close(Some(_))));
    expect_end(&mut ws).await;
}

#[tokio::test]
async fn wss_with_default_roots_rejects_a_self_signed_certificate() {
    let (cert, key) = certificate();
    let (addr, mut failures) = spawn_tls_echo_server(cert, key).await;
    let url = format!("wss://localhost:{}/", addr.port());
    let result = within(
        "connect with web PKI roots",
        tether::connect_with(&url, &ClientConfig::default()),
    )
    .await;
    let error = match result {
        Ok(_) => panic!("a self-signed certificate was trusted"),
        Err(Error::Io(error)) => error,
        Err(other) => panic!("expected a TLS (I/O) error, got {other:?}"),
    };
    let tls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a rustls error: {error:?}"));
    assert!(
        matches!(
            tls_error,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{tls_error:?}"
    );
    // The server saw the handshake fail too, rather than hang.
    within("server failure", failures.recv()).await.unwrap();
}
