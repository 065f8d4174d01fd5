//! `nats-server` processes of a test's own: one server with JetStream, or a cluster of them,
//! on free loopback ports with their own store directories; killed (SIGKILL) when dropped.
//!
//! Shared by the cdr-sinks and the bins tests (`#[path]` includes this file).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `nats-server -js` process, restartable with the same configuration and store.
pub struct NatsProc {
    child: Option<Child>,
    /// Its directory: configuration, store, logs.
    pub dir: PathBuf,
    /// The client port.
    pub port: u16,
    starts: u32,
}

impl NatsProc {
    /// A server with JetStream in `dir` (made empty), on a free port; `extra` is added to its
    /// configuration file (authorization, tls, cluster blocks). Waits until it accepts clients.
    pub fn start(dir: &Path, extra: &str) -> Self {
        Self::start_on(dir, free_port(), extra)
    }

    /// Like [`NatsProc::start`], on `port`.
    pub fn start_on(dir: &Path, port: u16, extra: &str) -> Self {
        let mut p = Self::configure(dir, port, extra);
        p.run();
        p.wait_ready();
        p
    }

    /// Writes the configuration but does not start the server (a cluster starts its nodes
    /// together, then waits for them).
    pub fn configure(dir: &Path, port: u16, extra: &str) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("store")).unwrap();
        let conf = format!(
            "listen: \"127.0.0.1:{port}\"\n\
             jetstream {{ store_dir: \"{store}\" }}\n\
             {extra}\n",
            store = dir.join("store").display()
        );
        std::fs::write(dir.join("nats.conf"), conf).unwrap();
        Self {
            child: None,
            dir: dir.to_path_buf(),
            port,
            starts: 0,
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the process (again, after [`NatsProc::kill`]).
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.join(format!("nats-{}.log", self.starts))).unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(self.dir.join("nats.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("nats-server is installed (scripts/test.sh installs it)");
        self.child = Some(child);
    }

    /// What the current process logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("nats-{}.log", self.starts)))
            .unwrap_or_default()
    }

    /// Waits until the server accepts TCP connections and says it is ready.
    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if self.log().contains("Server is ready")
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("nats-server exited with {status}:\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "nats-server not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again with the same configuration and store.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
        self.wait_ready();
    }
}

impl Drop for NatsProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JetStream cluster of `n` servers on loopback, each with its own store.
pub struct NatsCluster {
    /// The nodes.
    pub nodes: Vec<NatsProc>,
}

impl NatsCluster {
    /// Starts `n` clustered servers under `dir` and waits until each accepts clients.
    pub fn start(dir: &Path, n: usize) -> Self {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, r)| format!("\"nats-route://127.0.0.1:{r}\""))
            .collect();
        let mut nodes: Vec<NatsProc> = ports
            .iter()
            .enumerate()
            .map(|(i, (port, route))| {
                let extra = format!(
                    "server_name: n{i}\n\
                     cluster {{ name: cdr-test, listen: \"127.0.0.1:{route}\", routes: [{}] }}\n",
                    routes.join(", ")
                );
                NatsProc::configure(&dir.join(format!("n{i}")), *port, &extra)
            })
            .collect();
        for node in &mut nodes {
            node.run();
        }
        for node in &mut nodes {
            node.wait_ready();
        }
        Self { nodes }
    }

    /// Every node's URL, comma separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsProc::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A NATS server in operator mode (decentralised JWT authentication, what `nsc` sets up): an
/// operator key the server trusts, one account signed by it with JetStream enabled, and users
/// of that account in `.creds` files. The JWTs are made here as nats-io/jwt encodes them (a
/// `{"typ":"JWT","alg":"ed25519-nkey"}` header, the claims, the issuer NKey's Ed25519 signature
/// of both, each in unpadded base64url); `nsc` is not needed.
pub struct Operator {
    operator: nkeys::KeyPair,
    account: nkeys::KeyPair,
    /// The system account JetStream needs in operator mode.
    system: nkeys::KeyPair,
}

impl Operator {
    /// A new operator and account.
    pub fn new() -> Self {
        Self {
            operator: nkeys::KeyPair::new_operator(),
            account: nkeys::KeyPair::new_account(),
            system: nkeys::KeyPair::new_account(),
        }
    }

    /// The server configuration: the operator key trusted, the account's JWT preloaded in a
    /// memory resolver.
    pub fn server_config(&self) -> String {
        let account = jwt(
            &self.operator,
            &self.account.public_key(),
            "cdr",
            serde_json::json!({
                "type": "account",
                "version": 2,
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                    "wildcards": true, "conn": -1, "leaf": -1,
                    "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
                },
                "default_permissions": { "pub": {}, "sub": {} }
            }),
        );
        let system = jwt(
            &self.operator,
            &self.system.public_key(),
            "SYS",
            serde_json::json!({ "type": "account", "version": 2 }),
        );
        format!(
            "trusted_keys: [\"{}\"]\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{ {}: \"{account}\", {sys}: \"{system}\" }}\n",
            self.operator.public_key(),
            self.account.public_key(),
            sys = self.system.public_key(),
        )
    }

    /// A `.creds` file's text for a new user of the account (its JWT and NKey seed, in the
    /// layout `nsc` writes).
    pub fn user_creds(&self) -> String {
        let user = nkeys::KeyPair::new_user();
        let token = jwt(
            &self.account,
            &user.public_key(),
            "relay",
            serde_json::json!({
                "type": "user",
                "version": 2,
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1
            }),
        );
        format!(
            "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n",
            user.seed().unwrap()
        )
    }
}

/// A JWT for `subject` issued (signed) by `issuer`, with `nats` as its NATS claims.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "jti": format!("{subject}-{iat}"),
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!(
        "{}.{}",
        b64.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#),
        b64.encode(claims.to_string())
    );
    let sig = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64.encode(sig))
}
