//! The webhook sink against a real HTTPS receiver with a generated CA, over HTTP/2 and HTTP/1.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cdr_sinks::SinkError;
use cdr_sinks::webhook::{WebhookConfig, WebhookSink, sign};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

struct Seen {
    version: Version,
    headers: hyper::HeaderMap,
    body: Bytes,
}

/// An HTTPS receiver on 127.0.0.1 with a certificate for `localhost` signed by a fresh CA;
/// returns its port, the CA's PEM and what it saw.
async fn https_receiver(alpn: &[&[u8]]) -> (u16, String, Arc<Mutex<Vec<Seen>>>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, s) = (acceptor.clone(), s.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let s = s.clone();
                    async move {
                        let version = req.version();
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await?.to_bytes();
                        s.lock().unwrap().push(Seen {
                            version,
                            headers,
                            body,
                        });
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, ca.pem(), seen)
}

fn config(port: u16, ca: Option<std::path::PathBuf>) -> WebhookConfig {
    WebhookConfig {
        url: format!("https://localhost:{port}/hook"),
        authorization: Some("Bearer t0ken".into()),
        secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        ca_file: ca,
        timeout: Duration::from_secs(10),
        ..WebhookConfig::default()
    }
}

fn ca_file(pem: &str, name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("cdr-sinks-ca-{name}-{}.pem", std::process::id()));
    std::fs::write(&path, pem).unwrap();
    path
}

#[tokio::test]
async fn posts_signed_json_over_http2_with_tls() {
    let (port, ca, seen) = https_receiver(&[b"h2", b"http/1.1"]).await;
    let sink = WebhookSink::new(&config(port, Some(ca_file(&ca, "h2")))).unwrap();
    let body = br#"{"id":"call-1","source":"smdr"}"#;
    sink.send("call-1", body, 1_700_000_000).await.unwrap();
    sink.send("call-2", body, 1_700_000_001).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let s = &seen[0];
    assert_eq!(s.version, Version::HTTP_2);
    assert_eq!(&s.body[..], body);
    assert_eq!(s.headers["authorization"], "Bearer t0ken");
    assert_eq!(s.headers["content-type"], "application/json");
    assert_eq!(s.headers["webhook-id"], "call-1");
    assert_eq!(s.headers["idempotency-key"], "call-1");
    assert_eq!(s.headers["webhook-timestamp"], "1700000000");
    let key = cdr_sinks::webhook::decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert_eq!(
        s.headers["webhook-signature"],
        sign(&key, "call-1", 1_700_000_000, body).as_str()
    );
}

#[tokio::test]
async fn falls_back_to_http1_when_the_receiver_has_no_h2() {
    let (port, ca, seen) = https_receiver(&[b"http/1.1"]).await;
    let sink = WebhookSink::new(&config(port, Some(ca_file(&ca, "h1")))).unwrap();
    sink.send("call-1", b"{}", 1).await.unwrap();
    assert_eq!(seen.lock().unwrap()[0].version, Version::HTTP_11);
}

#[tokio::test]
async fn an_untrusted_certificate_is_an_unreachable_receiver() {
    let (port, _ca, seen) = https_receiver(&[b"h2", b"http/1.1"]).await;
    let sink = WebhookSink::new(&config(port, None)).unwrap();
    let err = sink.send("call-1", b"{}", 1).await.unwrap_err();
    assert!(matches!(err, SinkError::Unreachable(_)), "{err:?}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = WebhookSink::new(&WebhookConfig {
        url: format!("http://127.0.0.1:{port}/"),
        ..WebhookConfig::default()
    })
    .unwrap();
    assert!(matches!(
        sink.send("x", b"{}", 1).await.unwrap_err(),
        SinkError::Unreachable(_)
    ));
}
