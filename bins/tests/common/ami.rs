//! A scriptable Asterisk Manager Interface server on loopback: greeting, plain and MD5
//! (`Challenge`) login, `Ping`, `CoreShowChannels` answered from a script, then a capture's
//! messages streamed in random chunks; the connection is dropped or kept as the script says.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ami_proto::{AmiFramer, AmiMessage, Frame, md5_key};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::random_chunks;

/// The user and secret the server accepts.
pub const USER: &str = "relay";
/// The secret.
pub const SECRET: &str = "s3cret";
const CHALLENGE: &str = "529913441";

/// A capture folder under `fixtures/asterisk`.
pub fn capture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/asterisk")
        .join(name)
}

/// Every capture folder (those with an `ami.raw` and a `truth.json`).
pub fn captures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(capture_dir(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("ami.raw").exists() && p.join("truth.json").exists())
        .collect();
    v.sort();
    v
}

/// The messages of a capture as the server sends them after a login: every message frame
/// after the greeting, except the answer to the capture's own `Login`, each with its blank line.
pub fn capture_messages(dir: &Path) -> Vec<Vec<u8>> {
    let raw = std::fs::read(dir.join("ami.raw")).unwrap();
    let mut framer = AmiFramer::default();
    framer.push(&raw);
    let mut out = Vec::new();
    let mut first_response = true;
    while let Some(frame) = framer.next_frame() {
        if let Frame::Message { bytes, .. } = frame {
            let msg = AmiMessage::parse(bytes).unwrap();
            if first_response && msg.response().is_some() {
                first_response = false;
                continue;
            }
            let mut m = bytes.to_vec();
            m.extend_from_slice(b"\r\n");
            out.push(m);
        }
    }
    out
}

/// The channels alive after `messages` (created and not hung up), as `CoreShowChannel` event
/// bodies (no ActionID, no blank line), in creation order.
pub fn live_channels(messages: &[Vec<u8>]) -> Vec<String> {
    let mut live: Vec<(String, String, String)> = Vec::new();
    for m in messages {
        let msg = AmiMessage::parse(m).unwrap();
        let uid = msg.get_str("Uniqueid").unwrap_or_default().to_owned();
        match msg.event() {
            Some("Newchannel") => live.push((
                uid,
                msg.get_str("Channel").unwrap_or_default().to_owned(),
                msg.get_str("Linkedid").unwrap_or_default().to_owned(),
            )),
            Some("Hangup") => live.retain(|(u, _, _)| *u != uid),
            Some(_) if !uid.is_empty() => {
                // Channels change Linkedid when they join an older call, and names on renames.
                if let Some(c) = live.iter_mut().find(|(u, _, _)| *u == uid) {
                    if let Some(l) = msg.get_str("Linkedid").filter(|l| !l.is_empty()) {
                        c.2 = l.to_owned();
                    }
                    if let Some(n) = msg.get_str("Channel").filter(|n| !n.is_empty()) {
                        c.1 = n.to_owned();
                    }
                }
            }
            _ => {}
        }
    }
    live.into_iter()
        .map(|(uid, chan, linked)| {
            format!(
                "Event: CoreShowChannel\r\nChannel: {chan}\r\nUniqueid: {uid}\r\nLinkedid: {linked}\r\nChannelState: 6\r\nChannelStateDesc: Up\r\nDuration: 00:00:05\r\n"
            )
        })
        .collect()
}

/// What one connection does after the login and the `CoreShowChannels` answer.
#[derive(Debug, Clone)]
pub struct Session {
    /// `CoreShowChannel` bodies to answer with.
    pub channels: Vec<String>,
    /// Bytes to stream, in random chunks.
    pub stream: Vec<u8>,
    /// Then, after this pause, these bytes (nothing when empty).
    pub pause: Duration,
    /// What follows the pause.
    pub later: Vec<u8>,
    /// Close the connection once streamed (else keep answering actions).
    pub drop_after: bool,
}

impl Session {
    /// Lists `channels`, streams `stream`, and closes (`drop_after`) or stays.
    pub fn new(channels: Vec<String>, stream: Vec<u8>, drop_after: bool) -> Self {
        Self {
            channels,
            stream,
            pause: Duration::ZERO,
            later: Vec::new(),
            drop_after,
        }
    }
}

/// The server. Connections past the script's end get an empty channel list and no stream.
pub struct AmiServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// How each connection logged in (`plain` or `md5`), in order.
    pub logins: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AmiServer {
    /// Starts serving `script` (one [`Session`] per connection, in order).
    pub async fn start(script: Vec<Session>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let logins = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let accepted = accepted.clone();
            let logins = logins.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let n = accepted.fetch_add(1, Ordering::SeqCst);
                    let session = script
                        .get(n)
                        .cloned()
                        .unwrap_or_else(|| Session::new(Vec::new(), Vec::new(), false));
                    tokio::spawn(serve(stream, session, n as u64 + 7, logins.clone()));
                }
            })
        };
        Self {
            port,
            accepted,
            logins,
            task,
        }
    }

    /// Waits until `n` connections were accepted.
    pub async fn wait_accepted(&self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.accepted.load(Ordering::SeqCst) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} AMI connections",
                self.accepted.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for AmiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(id: &str, lines: &str) -> String {
    format!("Response: Success\r\nActionID: {id}\r\n{lines}\r\n")
}

async fn serve(
    mut stream: TcpStream,
    session: Session,
    seed: u64,
    logins: Arc<Mutex<Vec<String>>>,
) {
    if stream
        .write_all(b"Asterisk Call Manager/9.0.0\r\n")
        .await
        .is_err()
    {
        return;
    }
    let mut framer = AmiFramer::default();
    let mut buf = vec![0u8; 4096];
    let mut logged_in = false;
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
                "Challenge" => answer(&id, &format!("Challenge: {CHALLENGE}\r\n")),
                "Login" => {
                    let md5 = action.get_str("AuthType") == Some("MD5");
                    let ok = action.get_str("Username") == Some(USER)
                        && if md5 {
                            action.get_str("Key") == Some(md5_key(CHALLENGE, SECRET).as_str())
                        } else {
                            action.get_str("Secret") == Some(SECRET)
                        };
                    if !ok {
                        let no = format!(
                            "Response: Error\r\nActionID: {id}\r\nMessage: Authentication failed\r\n\r\n"
                        );
                        let _ = stream.write_all(no.as_bytes()).await;
                        return;
                    }
                    logins
                        .lock()
                        .unwrap()
                        .push(if md5 { "md5" } else { "plain" }.to_owned());
                    logged_in = true;
                    answer(&id, "Message: Authentication accepted\r\n")
                }
                _ if !logged_in => return,
                "Ping" => answer(&id, "Ping: Pong\r\nTimestamp: 1795355648.000000\r\n"),
                "CoreShowChannels" => {
                    let mut out =
                        answer(&id, "EventList: start\r\nMessage: Channels will follow\r\n");
                    for c in &session.channels {
                        out.push_str(c);
                        out.push_str(&format!("ActionID: {id}\r\n\r\n"));
                    }
                    out.push_str(&format!(
                        "Event: CoreShowChannelsComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: {}\r\n\r\n",
                        session.channels.len()
                    ));
                    if stream.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                    for chunk in random_chunks(&session.stream, seed, 700) {
                        if stream.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                    if !session.later.is_empty() {
                        tokio::time::sleep(session.pause).await;
                        for chunk in random_chunks(&session.later, seed + 1, 700) {
                            if stream.write_all(chunk).await.is_err() {
                                return;
                            }
                        }
                    }
                    if session.drop_after {
                        let _ = stream.shutdown().await;
                        return;
                    }
                    continue;
                }
                "Logoff" => {
                    let _ = stream
                        .write_all(answer(&id, "Message: Thanks for all the fish.\r\n").as_bytes())
                        .await;
                    return;
                }
                _ => answer(&id, "Message: ok\r\n"),
            };
            if stream.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}
