//! The async client against a tiny AMI server on loopback: plain and MD5 login, a real capture
//! replayed in random chunks, a connection dropped mid-message, reconnect and resync, a wrong
//! password, a server that stops answering `Ping`.
#![cfg(feature = "tokio")]
// Tests may unwrap, index and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ami_proto::client::TlsOptions;
use ami_proto::client::{Auth, Client, ClientConfig, ClientError, ClientEvent};
use ami_proto::{AmiFramer, AmiMessage, Frame, md5_key};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/asterisk/01_answered_caller_hangup/ami.raw"
);
const SECRET: &str = "labsecret";
const CHALLENGE: &str = "840261123";

/// The capture's bytes after its greeting and the answer to its own login, and the messages
/// they hold.
fn capture() -> (Vec<u8>, Vec<AmiMessage<'static>>) {
    let raw = std::fs::read(CAPTURE).unwrap();
    let mut framer = AmiFramer::default();
    framer.push(&raw);
    let mut start = None;
    let mut msgs = Vec::new();
    while let Some(frame) = framer.next_frame() {
        match frame {
            Frame::Message {
                bytes,
                number,
                offset,
            } if number >= 3 => {
                start.get_or_insert_with(|| usize::try_from(offset).unwrap());
                msgs.push(AmiMessage::parse(bytes).unwrap().into_owned());
            }
            Frame::Greeting { .. } | Frame::Message { .. } => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
    (raw[start.unwrap()..].to_vec(), msgs)
}

/// A small deterministic generator for chunk sizes.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// What the server does on one connection after answering `CoreShowChannels`.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    /// Replay the capture in random chunks, then half a message, then close.
    ReplayAndDrop,
    /// Replay the capture at once, then keep answering actions.
    ReplayAndStay,
    /// Keep answering actions.
    Stay,
    /// Stop answering (reading stays open).
    Mute,
}

struct Server {
    listener: TcpListener,
    accepted: Arc<AtomicUsize>,
    replay: Vec<u8>,
    /// What each connection does (by index; the last entry repeats).
    script: Vec<Then>,
    /// `Some`: speak TLS.
    tls: Option<TlsAcceptor>,
}

impl Server {
    async fn bind(script: Vec<Then>) -> (u16, Arc<AtomicUsize>) {
        Self::bind_tls(script, None).await
    }

    async fn bind_tls(script: Vec<Then>, tls: Option<TlsAcceptor>) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let server = Self {
            listener,
            accepted: Arc::clone(&accepted),
            replay: capture().0,
            script,
            tls,
        };
        tokio::spawn(server.run());
        (port, accepted)
    }

    async fn run(self) {
        let replay = Arc::new(self.replay);
        loop {
            let (stream, _) = self.listener.accept().await.unwrap();
            let n = self.accepted.fetch_add(1, Ordering::SeqCst);
            let then = *self.script.get(n).or_else(|| self.script.last()).unwrap();
            let replay = Arc::clone(&replay);
            let seed = n as u64 + 1;
            match &self.tls {
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        if let Ok(tls) = acceptor.accept(stream).await {
                            serve(tls, then, replay, seed).await;
                        }
                    });
                }
                None => {
                    tokio::spawn(serve(stream, then, replay, seed));
                }
            }
        }
    }
}

fn answer(id: &str, lines: &str) -> String {
    format!("Response: Success\r\nActionID: {id}\r\n{lines}\r\n")
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    then: Then,
    replay: Arc<Vec<u8>>,
    seed: u64,
) {
    stream
        .write_all(b"Asterisk Call Manager/9.0.0\r\n")
        .await
        .unwrap();
    let mut framer = AmiFramer::default();
    let mut buf = vec![0u8; 4096];
    let mut logged_in = false;
    let mut replayed = false;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        framer.push(&buf[..n]);
        let mut actions = Vec::new();
        while let Some(frame) = framer.next_frame() {
            if let Frame::Message { bytes, .. } = frame {
                actions.push(AmiMessage::parse(bytes).unwrap().into_owned());
            }
        }
        for action in actions {
            let id = action.action_id().unwrap_or("").to_owned();
            let reply = match action.action().unwrap_or("") {
                "Challenge" => {
                    assert_eq!(action.get_str("AuthType"), Some("MD5"));
                    answer(&id, &format!("Challenge: {CHALLENGE}\r\n"))
                }
                "Login" => {
                    assert_eq!(action.get_str("Username"), Some("lab"));
                    assert_eq!(action.get_str("Events"), Some("call,agent,cdr,dialplan"));
                    let ok = match action.get_str("AuthType") {
                        Some("MD5") => {
                            assert!(action.get("Secret").is_none());
                            action.get_str("Key") == Some(md5_key(CHALLENGE, SECRET).as_str())
                        }
                        _ => action.get_str("Secret") == Some(SECRET),
                    };
                    if !ok {
                        let no = format!(
                            "Response: Error\r\nActionID: {id}\r\nMessage: Authentication failed\r\n\r\n"
                        );
                        let _ = stream.write_all(no.as_bytes()).await;
                        return;
                    }
                    logged_in = true;
                    answer(&id, "Message: Authentication accepted\r\n")
                }
                _ if !logged_in => panic!("action before login: {action:?}"),
                "Ping" if then == Then::Mute => continue,
                "Ping" => answer(&id, "Ping: Pong\r\nTimestamp: 1795355648.000000\r\n"),
                "CoreShowChannels" => {
                    let mut out =
                        answer(&id, "EventList: start\r\nMessage: Channels will follow\r\n");
                    for (ch, uid) in [
                        ("PJSIP/2001-00000001", "1.1"),
                        ("PJSIP/2002-00000002", "1.2"),
                    ] {
                        out.push_str(&format!(
                            "Event: CoreShowChannel\r\nActionID: {id}\r\nChannel: {ch}\r\n\
                             Uniqueid: {uid}\r\nLinkedid: 1.1\r\n\r\n"
                        ));
                    }
                    out.push_str(&format!(
                        "Event: CoreShowChannelsComplete\r\nActionID: {id}\r\n\
                         EventList: Complete\r\nListItems: 2\r\n\r\n"
                    ));
                    stream.write_all(out.as_bytes()).await.unwrap();
                    if then == Then::ReplayAndStay && !replayed {
                        replayed = true;
                        stream.write_all(&replay).await.unwrap();
                        continue;
                    }
                    if then == Then::ReplayAndDrop {
                        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ seed);
                        let mut rest = &replay[..];
                        while !rest.is_empty() {
                            let n = (rng.next() % 700 + 1) as usize;
                            let (chunk, tail) = rest.split_at(n.min(rest.len()));
                            stream.write_all(chunk).await.unwrap();
                            if rng.next() % 8 == 0 {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                            rest = tail;
                        }
                        // Half a message, then the connection goes.
                        let _ = stream
                            .write_all(b"Event: Hangup\r\nChannel: PJSIP/2001-00000001\r\nUniq")
                            .await;
                        // Close the sending side first and read what the client still sends
                        // until it closes too: dropping a socket with unread input makes the
                        // kernel reset the connection, and the client would see a reset
                        // instead of the server closing.
                        let _ = stream.shutdown().await;
                        let mut sink = [0u8; 4096];
                        let drain = async {
                            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                        };
                        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
                        return;
                    }
                    continue;
                }
                other => panic!("unexpected action {other}"),
            };
            stream.write_all(reply.as_bytes()).await.unwrap();
        }
    }
}

fn config(port: u16, secret: &str, auth: Auth) -> ClientConfig {
    let mut cfg = ClientConfig::new("127.0.0.1", port, "lab", secret);
    cfg.auth = auth;
    cfg.ping_interval = Duration::from_millis(50);
    cfg.ping_timeout = Duration::from_millis(500);
    cfg.min_backoff = Duration::from_millis(20);
    cfg.max_backoff = Duration::from_millis(200);
    cfg.channel_capacity = 8;
    cfg
}

async fn next(client: &mut Client) -> ClientEvent {
    tokio::time::timeout(Duration::from_secs(10), client.next_event())
        .await
        .expect("an event within 10 s")
        .expect("the client is running")
}

fn channel_names<'a>(channels: &'a [AmiMessage<'static>]) -> Vec<&'a str> {
    channels
        .iter()
        .map(|c| c.get_str("Channel").unwrap())
        .collect()
}

async fn replay_drop_reconnect_resync(auth: Auth) {
    let (port, accepted) = Server::bind(vec![Then::ReplayAndDrop, Then::Stay]).await;
    let (_, expected) = capture();
    let mut client = Client::spawn(config(port, SECRET, auth)).unwrap();

    let mut messages = Vec::new();
    let mut log = Vec::new();
    let mut resyncs = 0;
    while resyncs < 2 {
        // A slow consumer now and then: reading must not depend on it.
        if log.len() % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match next(&mut client).await {
            ClientEvent::Message(m) => messages.push(m),
            ClientEvent::Connected { version } => log.push(format!("connected {version}")),
            ClientEvent::Resync { channels } => {
                resyncs += 1;
                log.push(format!("resync {:?}", channel_names(&channels)));
            }
            ClientEvent::Disconnected { reason, .. } => log.push(format!("disconnected {reason}")),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        log,
        [
            "connected 9.0.0",
            r#"resync ["PJSIP/2001-00000001", "PJSIP/2002-00000002"]"#,
            "disconnected closed by the server",
            "connected 9.0.0",
            r#"resync ["PJSIP/2001-00000001", "PJSIP/2002-00000002"]"#,
        ]
    );
    assert_eq!(messages.len(), expected.len());
    assert!(messages == expected, "the capture's messages, in order");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(client.dropped(), 0);
    assert_eq!(client.malformed(), 0);

    // Pings keep the second connection alive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quiet = tokio::time::timeout(Duration::from_millis(50), client.next_event()).await;
    assert!(
        quiet.is_err(),
        "no event while the connection is healthy: {quiet:?}"
    );
    client.shutdown().await;
}

#[tokio::test]
async fn plain_login_replay_drop_reconnect_resync() {
    replay_drop_reconnect_resync(Auth::Plain).await;
}

#[tokio::test]
async fn md5_login_replay_drop_reconnect_resync() {
    replay_drop_reconnect_resync(Auth::Md5).await;
}

#[tokio::test]
async fn wrong_password_is_reported_and_retried_with_backoff() {
    for auth in [Auth::Plain, Auth::Md5] {
        let (port, accepted) = Server::bind(vec![Then::Stay]).await;
        let mut client = Client::spawn(config(port, "wrong", auth)).unwrap();
        let mut delays = Vec::new();
        let started = tokio::time::Instant::now();
        while started.elapsed() < Duration::from_millis(700) {
            match tokio::time::timeout(Duration::from_millis(100), client.next_event()).await {
                Ok(Some(ClientEvent::Disconnected { reason, retry_in })) => {
                    assert_eq!(
                        reason,
                        ClientError::LoginRejected("Authentication failed".into())
                    );
                    assert!(reason.is_login_rejected());
                    delays.push(retry_in);
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => {}
            }
        }
        // 20, 40, 80, 160, 200, 200 ms ...: a handful of attempts, not a busy loop.
        let attempts = accepted.load(Ordering::SeqCst);
        assert!((3..=8).contains(&attempts), "{attempts} attempts");
        assert_eq!(
            delays.get(..4),
            Some(&[20, 40, 80, 160].map(Duration::from_millis)[..])
        );
        client.shutdown().await;
    }
}

#[tokio::test]
async fn missing_pong_means_a_dead_connection() {
    let (port, accepted) = Server::bind(vec![Then::Mute, Then::Stay]).await;
    let mut client = Client::spawn(config(port, SECRET, Auth::Plain)).unwrap();
    let mut log = Vec::new();
    while log.len() < 5 {
        log.push(match next(&mut client).await {
            ClientEvent::Connected { .. } => "connected".to_owned(),
            ClientEvent::Resync { .. } => "resync".to_owned(),
            ClientEvent::Disconnected { reason, .. } => format!("disconnected {reason}"),
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(
        log,
        [
            "connected",
            "resync",
            "disconnected no answer to Ping for 500ms",
            "connected",
            "resync"
        ]
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    client.shutdown().await;
}

#[tokio::test]
async fn a_stalled_consumer_never_stalls_the_socket() {
    let (port, accepted) = Server::bind(vec![Then::ReplayAndStay]).await;
    let (_, expected) = capture();
    let mut cfg = config(port, SECRET, Auth::Plain);
    cfg.channel_capacity = 1;
    cfg.max_pending_bytes = 8 * 1024;
    let mut client = Client::spawn(cfg).unwrap();
    // Nobody reads for a while: the client keeps reading (and answering pings' Pongs), queues
    // up to the cap, and drops the rest.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(client.dropped() > 0);
    let mut log = Vec::new();
    let mut messages = 0;
    loop {
        match next(&mut client).await {
            ClientEvent::Message(_) => messages += 1,
            ClientEvent::Connected { .. } => log.push("connected".to_owned()),
            ClientEvent::Resync { channels } => {
                log.push(format!("resync {}", channels.len()));
                if log.len() == 4 {
                    break;
                }
            }
            ClientEvent::Overflow { dropped } => {
                assert_eq!(dropped, client.dropped());
                log.push("overflow".to_owned());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(log, ["connected", "resync 2", "overflow", "resync 2"]);
    assert!(messages > 0);
    assert_eq!(
        messages + usize::try_from(client.dropped()).unwrap(),
        expected.len()
    );
    // Still connected: the pings were answered throughout.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    client.shutdown().await;
}

/// A TLS acceptor with a certificate for `localhost` signed by a fresh CA, and the CA's PEM.
fn tls_acceptor() -> (TlsAcceptor, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
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
    (TlsAcceptor::from(Arc::new(tls)), ca.pem())
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let (acceptor, ca_pem) = tls_acceptor();
    let (port, _) = Server::bind_tls(vec![Then::Stay], Some(acceptor)).await;
    let ca_file = std::env::temp_dir().join(format!("ami-proto-client-ca-{port}.pem"));
    std::fs::write(&ca_file, ca_pem).unwrap();

    // Without the CA the server is not trusted: a clear TLS error, then a retry.
    let mut tls = TlsOptions::default();
    tls.server_name = Some("localhost".into());
    let mut cfg = config(port, SECRET, Auth::Md5);
    cfg.tls = Some(tls.clone());
    let mut client = Client::spawn(cfg.clone()).unwrap();
    match next(&mut client).await {
        ClientEvent::Disconnected {
            reason: ClientError::Tls(why),
            ..
        } => assert!(why.contains("certificate"), "{why}"),
        other => panic!("unexpected {other:?}"),
    }
    client.shutdown().await;

    tls.ca_file = Some(ca_file.clone());
    cfg.tls = Some(tls);
    let mut client = Client::spawn(cfg).unwrap();
    assert_eq!(
        next(&mut client).await,
        ClientEvent::Connected {
            version: "9.0.0".into()
        }
    );
    assert!(
        matches!(next(&mut client).await, ClientEvent::Resync { channels } if channels.len() == 2)
    );
    client.shutdown().await;
    let _ = std::fs::remove_file(ca_file);
}
