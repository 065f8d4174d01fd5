//! The JetStream sink against real `nats-server -js` processes started by each test (free
//! loopback port, own store directory): delivery with headers and subjects, duplicates dropped
//! by `Nats-Msg-Id`, a server down and back, no stream, authentication and TLS.
//!
//! Every wait polls with a deadline; no fixed sleep is an assertion.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::disallowed_methods
)]

mod common;
#[path = "support/nats_server.rs"]
mod nats_server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use call_assembler::Call;
use cdr_sinks::backoff::RetryPolicy;
use cdr_sinks::engine::{SinkStats, SinkWorker, run_worker};
use cdr_sinks::nats::{NatsConfig, NatsSink, SCHEMA, SubjectTemplate};
use cdr_sinks::{Outgoing, Sink, SinkError};
use futures_util::StreamExt as _;
use nats_server::{NatsProc, Operator};
use tokio::sync::{Notify, watch};

const DEADLINE: Duration = Duration::from_secs(60);
const SINK: &str = "nats";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cdr-sinks-nats-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn quick_policy() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(300),
        ..RetryPolicy::default()
    }
}

/// Settings for the test's server: stream `stream`, created by the sink, short timeouts.
fn config(url: &str, stream: &str) -> NatsConfig {
    let mut c = NatsConfig::new(vec![url.to_owned()]);
    c.stream = stream.into();
    c.create_stream = true;
    c.server.timeout = Duration::from_secs(2);
    c
}

/// `n` real SMDR calls at `site`.
fn calls(n: usize, site: &str) -> Vec<Call> {
    let mut v = common::smdr_calls(n);
    for c in &mut v {
        c.site = site.into();
    }
    v
}

struct Worker {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    wake: Arc<Notify>,
}

impl Worker {
    fn start(db: &Path, sink: NatsSink) -> Self {
        let wake = Arc::new(Notify::new());
        let (stop, stop_rx) = watch::channel(false);
        let worker = SinkWorker {
            name: SINK.to_owned(),
            sink,
            policy: quick_policy(),
            stats: Arc::new(SinkStats::default()),
        };
        let task = tokio::spawn({
            let (db, wake) = (db.to_path_buf(), wake.clone());
            async move { run_worker(db, worker, wake, stop_rx).await.unwrap() }
        });
        Self { stop, task, wake }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

async fn wait_delivered(db: &Path, n: u64) {
    let start = Instant::now();
    loop {
        let c = common::counts(db, SINK);
        assert_eq!(c.dead, 0, "nothing is dead-lettered");
        if c.delivered == n && c.pending == 0 {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {n} deliveries: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every message of `stream`: (subject, Nats-Msg-Id, schema header, body as JSON).
async fn messages(url: &str, stream: &str) -> Vec<(String, String, String, serde_json::Value)> {
    messages_of(async_nats::connect(url).await.unwrap(), stream).await
}

/// [`messages`] through a connected client.
async fn messages_of(
    client: async_nats::Client,
    stream: &str,
) -> Vec<(String, String, String, serde_json::Value)> {
    let js = jetstream::new(client);
    let mut s = js.get_stream(stream).await.unwrap();
    let n = s.info().await.unwrap().state.messages;
    let consumer = s
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut batch = consumer
        .fetch()
        .max_messages(usize::try_from(n).unwrap())
        .messages()
        .await
        .unwrap();
    while let Some(m) = batch.next().await {
        let m = m.unwrap();
        let h = m.headers.clone().unwrap_or_default();
        let get = |k: &str| h.get(k).map(|v| v.as_str().to_owned()).unwrap_or_default();
        out.push((
            m.subject.to_string(),
            h.get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default(),
            get("Cdr-Schema"),
            serde_json::from_slice(&m.payload).unwrap(),
        ));
    }
    assert_eq!(out.len() as u64, n, "every message fetched");
    out
}

/// Calls committed to an outbox reach the stream, one message each, on `cdr.smdr.<site>`,
/// with the call's id as `Nats-Msg-Id`, the schema headers and the outbox's body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_each_call_once_with_its_id_and_headers() {
    let dir = scratch("deliver");
    let server = NatsProc::start(&dir.join("nats"), "");
    let db = dir.join("outbox.db");
    let sent = calls(300, "site one");
    common::commit(&db, SINK, &sent);
    let w = Worker::start(
        &db,
        NatsSink::new(&config(&server.url(), "DELIVER")).unwrap(),
    );
    wait_delivered(&db, 300).await;
    w.stop().await;
    let got = messages(&server.url(), "DELIVER").await;
    assert_eq!(got.len(), 300);
    for ((subject, id, schema, body), call) in got.iter().zip(&sent) {
        assert_eq!(subject, "cdr.smdr.site_one");
        assert_eq!(id, &call.id);
        assert_eq!(schema, SCHEMA);
        assert_eq!(body, &serde_json::to_value(call).unwrap());
    }
}

/// The same calls published twice (two relays on one source, each with its own outbox): the
/// stream keeps one message per id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_twice_is_one_message() {
    let dir = scratch("dup");
    let server = NatsProc::start(&dir.join("nats"), "");
    let sent = calls(200, "a");
    let (db1, db2) = (dir.join("one.db"), dir.join("two.db"));
    common::commit(&db1, SINK, &sent);
    common::commit(&db2, SINK, &sent);
    let w1 = Worker::start(&db1, NatsSink::new(&config(&server.url(), "DUP")).unwrap());
    wait_delivered(&db1, 200).await;
    let w2 = Worker::start(&db2, NatsSink::new(&config(&server.url(), "DUP")).unwrap());
    wait_delivered(&db2, 200).await;
    w1.stop().await;
    w2.stop().await;
    let got = messages(&server.url(), "DUP").await;
    let ids: Vec<&str> = got.iter().map(|m| m.1.as_str()).collect();
    let want: Vec<&str> = sent.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, want, "each id once, in commit order");
}

/// The server killed with calls pending and new ones committed while it is down: nothing is
/// delivered or lost until it is back, then everything is, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_then_up_loses_nothing() {
    let dir = scratch("outage");
    let mut server = NatsProc::start(&dir.join("nats"), "");
    let db = dir.join("outbox.db");
    let sent = calls(300, "a");
    common::commit(&db, SINK, &sent[..100]);
    let w = Worker::start(
        &db,
        NatsSink::new(&config(&server.url(), "OUTAGE")).unwrap(),
    );
    wait_delivered(&db, 100).await;
    server.kill();
    common::commit(&db, SINK, &sent[100..]);
    w.wake.notify_one();
    // Attempts fail while it is down; none is dead-lettered, none is counted delivered.
    let start = Instant::now();
    while common::counts(&db, SINK).pending < 200 {
        assert!(start.elapsed() < DEADLINE);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = common::counts(&db, SINK);
    assert_eq!((c.delivered, c.pending, c.dead), (100, 200, 0));
    server.restart();
    wait_delivered(&db, 300).await;
    w.stop().await;
    let got = messages(&server.url(), "OUTAGE").await;
    let mut ids: Vec<&str> = got.iter().map(|m| m.1.as_str()).collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = sent.iter().map(|c| c.id.as_str()).collect();
    want.sort_unstable();
    assert_eq!(ids, want, "every call once");
}

/// One delivery straight through the sink (not the engine): what it answers.
async fn deliver_one(sink: &NatsSink, call: &Call) -> Result<(), SinkError> {
    let item = Outgoing::with_call(
        cdr_sinks::outbox::Pending {
            call_id: call.id.clone(),
            attempts: 0,
            created_ms: 0,
            next_ms: 0,
            body: serde_json::to_vec(call).unwrap(),
            seq: 1,
        },
        call.clone(),
    );
    let mut r = sink.deliver(std::slice::from_ref(&item)).await?;
    r.pop().unwrap()
}

/// No stream for the subject (and the sink not asked to create one): retryable, the sink
/// blocked, nothing dead; once the stream exists, delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stream_is_retryable() {
    let dir = scratch("nostream");
    let server = NatsProc::start(&dir.join("nats"), "");
    let mut c = config(&server.url(), "LATE");
    c.create_stream = false;
    let sink = NatsSink::new(&c).unwrap();
    let call = &calls(1, "a")[0];
    let e = deliver_one(&sink, call).await.unwrap_err();
    assert!(
        matches!(e, SinkError::Unreachable(_)),
        "no responders is retryable: {e}"
    );
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.create_stream(c.stream_config()).await.unwrap();
    deliver_one(&sink, call).await.unwrap();
    assert_eq!(messages(&server.url(), "LATE").await.len(), 1);
}

/// A stream the server refuses to create as configured (its subjects overlap another
/// stream's; three replicas on a server that is not clustered): the sink pauses with the
/// server's reason and the settings to check, not retried as "unreachable"; once the conflict
/// is gone the same sink creates its stream and delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_server_refuses_pauses_the_sink() {
    let dir = scratch("refused");
    let server = NatsProc::start(&dir.join("nats"), "");
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.create_stream(jetstream::stream::Config {
        name: "OTHER".into(),
        subjects: vec!["cdr.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let call = &calls(1, "a")[0];
    let sink = NatsSink::new(&config(&server.url(), "MINE")).unwrap();
    for _ in 0..2 {
        let e = deliver_one(&sink, call).await.unwrap_err();
        let SinkError::Paused { reason, .. } = &e else {
            panic!("a configuration error, not {e:?}")
        };
        assert!(
            reason.contains("overlap")
                && reason.contains("MINE")
                && reason.contains("NATS_SUBJECT"),
            "{reason}"
        );
    }

    let mut three = config(&server.url(), "THREE");
    three.replicas = 3;
    three.subject = SubjectTemplate::parse("three.{site}").unwrap();
    let e = deliver_one(&NatsSink::new(&three).unwrap(), call)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SinkError::Paused { reason, .. } if reason.contains("replicas")),
        "{e}"
    );

    js.delete_stream("OTHER").await.unwrap();
    deliver_one(&sink, call).await.unwrap();
    assert_eq!(messages(&server.url(), "MINE").await.len(), 1);
}

/// User and password, then a token: the right ones deliver, wrong ones pause the sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_password_and_token() {
    let dir = scratch("auth");
    let call = &calls(1, "a")[0];
    let server = NatsProc::start(
        &dir.join("userpass"),
        "authorization { user: relay, password: \"s3cret pw\" }",
    );
    let mut c = config(&server.url(), "AUTH");
    c.server.auth.user = Some("relay".into());
    c.server.auth.password = Some("s3cret pw".into());
    deliver_one(&NatsSink::new(&c).unwrap(), call)
        .await
        .unwrap();
    c.server.auth.password = Some("wrong".into());
    let e = deliver_one(&NatsSink::new(&c).unwrap(), call)
        .await
        .unwrap_err();
    assert!(matches!(e, SinkError::Paused { .. }), "{e}");
    assert!(!e.to_string().contains("wrong"), "no password shown: {e}");
    drop(server);

    let server = NatsProc::start(&dir.join("token"), "authorization { token: \"t0ken\" }");
    let mut c = config(&server.url(), "AUTH");
    c.server.auth.token = Some("t0ken".into());
    deliver_one(&NatsSink::new(&c).unwrap(), call)
        .await
        .unwrap();
    c.server.auth.token = Some("nope".into());
    let e = deliver_one(&NatsSink::new(&c).unwrap(), call)
        .await
        .unwrap_err();
    assert!(matches!(e, SinkError::Paused { .. }), "{e}");
    // The token in the URL instead, masked when shown.
    let mut c = config(&format!("nats://t0ken@127.0.0.1:{}", server.port), "AUTH");
    c.server.auth = Default::default();
    let sink = NatsSink::new(&c).unwrap();
    assert!(!format!("{sink:?}").contains("t0ken"));
    deliver_one(&sink, call).await.unwrap();
    let client = async_nats::ConnectOptions::with_token("t0ken".into())
        .connect(server.url())
        .await
        .unwrap();
    assert_eq!(
        messages_of(client, "AUTH").await.len(),
        1,
        "one id, one message"
    );
}

/// An NKey user: the seed signs the server's nonce; a seed of another key is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey() {
    let dir = scratch("nkey");
    let user = nkeys::KeyPair::new_user();
    let server = NatsProc::start(
        &dir.join("nats"),
        &format!(
            "authorization {{ users: [ {{ nkey: \"{}\" }} ] }}",
            user.public_key()
        ),
    );
    let call = &calls(1, "a")[0];
    let mut c = config(&server.url(), "NKEY");
    c.server.auth.nkey_seed = Some(user.seed().unwrap());
    let sink = NatsSink::new(&c).unwrap();
    assert!(!format!("{sink:?}").contains(&user.seed().unwrap()));
    deliver_one(&sink, call).await.unwrap();
    c.server.auth.nkey_seed = Some(nkeys::KeyPair::new_user().seed().unwrap());
    let e = deliver_one(&NatsSink::new(&c).unwrap(), call)
        .await
        .unwrap_err();
    assert!(matches!(e, SinkError::Paused { .. }), "{e}");
}

/// A `.creds` file (a user JWT and its NKey seed) against a server in operator mode:
/// delivered; a user of an account the server does not know is refused (the sink paused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_file() {
    let dir = scratch("creds");
    let op = Operator::new();
    let server = NatsProc::start(&dir.join("nats"), &op.server_config());
    std::fs::write(dir.join("relay.creds"), op.user_creds()).unwrap();
    std::fs::write(dir.join("stranger.creds"), Operator::new().user_creds()).unwrap();
    let call = &calls(1, "a")[0];
    let mut c = config(&server.url(), "CREDS");
    c.server.auth.creds_file = Some(dir.join("relay.creds"));
    deliver_one(&NatsSink::new(&c).unwrap(), call)
        .await
        .unwrap();
    c.server.auth.creds_file = Some(dir.join("stranger.creds"));
    let e = deliver_one(&NatsSink::new(&c).unwrap(), call)
        .await
        .unwrap_err();
    assert!(matches!(e, SinkError::Paused { .. }), "{e}");
    let client = async_nats::ConnectOptions::with_credentials_file(dir.join("relay.creds"))
        .await
        .unwrap()
        .connect(server.url())
        .await
        .unwrap();
    assert_eq!(messages_of(client, "CREDS").await.len(), 1);
}

/// A certificate for `localhost` and 127.0.0.1 signed by a fresh CA: (CA, cert, key) PEM.
fn private_ca() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A TLS-only server with a private CA: trusted through the CA file, refused without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let dir = scratch("tls");
    let (ca, cert, key) = private_ca();
    for (name, pem) in [("ca.pem", &ca), ("cert.pem", &cert), ("key.pem", &key)] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    let server = NatsProc::start(
        &dir.join("nats"),
        &format!(
            "tls {{ cert_file: \"{}\", key_file: \"{}\" }}",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ),
    );
    let call = &calls(1, "a")[0];
    let url = format!("tls://127.0.0.1:{}", server.port);
    let mut c = config(&url, "TLS");
    let e = deliver_one(&NatsSink::new(&c).unwrap(), call)
        .await
        .unwrap_err();
    assert!(matches!(e, SinkError::Unreachable(_)), "unknown CA: {e}");
    c.server.ca_file = Some(dir.join("ca.pem"));
    deliver_one(&NatsSink::new(&c).unwrap(), call)
        .await
        .unwrap();
    let js = jetstream::new(
        async_nats::ConnectOptions::new()
            .add_root_certificates(dir.join("ca.pem"))
            .connect(url.as_str())
            .await
            .unwrap(),
    );
    let mut s = js.get_stream("TLS").await.unwrap();
    assert_eq!(s.info().await.unwrap().state.messages, 1);
}

/// A fixed subject and the default template check.
#[test]
fn subject_templates() {
    assert!(SubjectTemplate::parse("cdr.{source}.{site}").is_ok());
    assert!(SubjectTemplate::parse("cdr.{nope}").is_err());
}
