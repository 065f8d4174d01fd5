//! Actions (what a client sends), their `ActionID`s, and matching responses to them.

use std::fmt::{self, Write as _};
use std::ops::{BitOr, BitOrAssign};

use md5::{Digest, Md5};

use crate::message::{check_header, push_header};
use crate::{AmiMessage, BuildError};

/// The `ActionID` of an action: the value Asterisk copies into the response (and into the
/// events of a list answer), so that answers can be matched to actions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActionId(String);

impl ActionId {
    /// An id from text: not empty, no `\r` or `\n`.
    pub fn new(id: impl Into<String>) -> Result<Self, BuildError> {
        let id = id.into();
        if id.is_empty() || id.contains(['\r', '\n']) {
            return Err(BuildError::InvalidActionId(id));
        }
        Ok(Self(id))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `msg` answers the action with this id: its `ActionID` (any case of the name)
    /// equals this id exactly.
    pub fn matches(&self, msg: &AmiMessage<'_>) -> bool {
        msg.get("ActionID") == Some(self.0.as_bytes())
    }
}

impl fmt::Display for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Makes `ActionID`s: `<prefix><n>`, with `n` counting up from a seed. Deterministic: the same
/// prefix and seed give the same ids (seed from configuration, or from a random number the
/// caller draws, so that ids differ across reconnects).
#[derive(Debug, Clone)]
pub struct ActionIdGen {
    prefix: String,
    next: u64,
}

impl ActionIdGen {
    /// Ids `<prefix><seed>`, `<prefix><seed + 1>`, ... (wrapping). The prefix may be empty and
    /// must hold no `\r` or `\n`.
    pub fn new(prefix: impl Into<String>, seed: u64) -> Result<Self, BuildError> {
        let prefix = prefix.into();
        if prefix.contains(['\r', '\n']) {
            return Err(BuildError::InvalidActionId(prefix));
        }
        Ok(Self { prefix, next: seed })
    }

    /// The next id.
    pub fn next_id(&mut self) -> ActionId {
        let id = ActionId(format!("{}{}", self.prefix, self.next));
        self.next = self.next.wrapping_add(1);
        id
    }
}

/// Which event classes a session receives (`Events:` of `Login`, `EventMask:` of `Events`).
/// Combine with `|`; [`EventMask::OFF`] writes `off` and [`EventMask::ON`] writes `on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventMask(u32);

impl EventMask {
    /// No events.
    pub const OFF: Self = Self(0);
    /// `system`.
    pub const SYSTEM: Self = Self(1);
    /// `call`: channel, bridge, dial, hangup and CEL events.
    pub const CALL: Self = Self(1 << 1);
    /// `log`.
    pub const LOG: Self = Self(1 << 2);
    /// `verbose`.
    pub const VERBOSE: Self = Self(1 << 3);
    /// `command`.
    pub const COMMAND: Self = Self(1 << 4);
    /// `agent`: queue agent events.
    pub const AGENT: Self = Self(1 << 5);
    /// `user`: `UserEvent`.
    pub const USER: Self = Self(1 << 6);
    /// `config`.
    pub const CONFIG: Self = Self(1 << 7);
    /// `dtmf`.
    pub const DTMF: Self = Self(1 << 8);
    /// `reporting`.
    pub const REPORTING: Self = Self(1 << 9);
    /// `cdr`: `Cdr` events.
    pub const CDR: Self = Self(1 << 10);
    /// `dialplan`: `Newexten`, `VarSet`.
    pub const DIALPLAN: Self = Self(1 << 11);
    /// `originate`.
    pub const ORIGINATE: Self = Self(1 << 12);
    /// `agi`.
    pub const AGI: Self = Self(1 << 13);
    /// `cc`.
    pub const CC: Self = Self(1 << 14);
    /// `aoc`.
    pub const AOC: Self = Self(1 << 15);
    /// `test`.
    pub const TEST: Self = Self(1 << 16);
    /// `security`.
    pub const SECURITY: Self = Self(1 << 17);
    /// `message`.
    pub const MESSAGE: Self = Self(1 << 18);
    /// Every class (`on`).
    pub const ON: Self = Self((1 << 19) - 1);
    /// What call tracking uses: `call` (channels, bridges, transfers, CEL), `cdr`, `dialplan`
    /// (`VarSet`, for recording file names) and `agent` (queues).
    pub const CALL_TRACKING: Self =
        Self(Self::CALL.0 | Self::CDR.0 | Self::DIALPLAN.0 | Self::AGENT.0);

    const NAMES: [(Self, &'static str); 19] = [
        (Self::SYSTEM, "system"),
        (Self::CALL, "call"),
        (Self::LOG, "log"),
        (Self::VERBOSE, "verbose"),
        (Self::COMMAND, "command"),
        (Self::AGENT, "agent"),
        (Self::USER, "user"),
        (Self::CONFIG, "config"),
        (Self::DTMF, "dtmf"),
        (Self::REPORTING, "reporting"),
        (Self::CDR, "cdr"),
        (Self::DIALPLAN, "dialplan"),
        (Self::ORIGINATE, "originate"),
        (Self::AGI, "agi"),
        (Self::CC, "cc"),
        (Self::AOC, "aoc"),
        (Self::TEST, "test"),
        (Self::SECURITY, "security"),
        (Self::MESSAGE, "message"),
    ];

    /// Whether every class of `other` is in this mask.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The mask as AMI writes it: `off`, `on`, or the class names joined by `,`.
    pub fn to_header_value(self) -> String {
        if self.0 == 0 {
            return "off".to_owned();
        }
        if self.contains(Self::ON) {
            return "on".to_owned();
        }
        let names: Vec<&str> = Self::NAMES
            .iter()
            .filter(|(m, _)| self.contains(*m))
            .map(|(_, n)| *n)
            .collect();
        names.join(",")
    }
}

impl BitOr for EventMask {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for EventMask {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// The `Key` of an MD5 challenge login: the lowercase hex MD5 of the challenge followed by
/// the secret.
pub fn md5_key(challenge: &str, secret: &str) -> String {
    let mut h = Md5::new();
    h.update(challenge.as_bytes());
    h.update(secret.as_bytes());
    let mut out = String::with_capacity(32);
    for b in h.finalize() {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Header values that [`Action`]'s `Debug` does not show.
const SECRET_HEADERS: [&str; 2] = ["Secret", "Key"];

/// An action to send: `Action: <name>`, then `ActionID`, then its headers, in order.
///
/// Constructors exist for the actions a call-tracking client needs; [`Action::new`] and
/// [`Action::header`] make any other. Every header is checked when added (names must be
/// header names, values must hold no line break, so no value can inject a header), so writing
/// cannot fail and parsing the bytes gives back exactly [`Action::headers`]. `Debug` hides
/// `Secret` and `Key`.
///
/// ```
/// use ami_proto::{Action, ActionIdGen, AmiMessage, EventMask};
/// let mut ids = ActionIdGen::new("relay-", 1).unwrap();
/// let login = Action::login(ids.next_id(), "lab", "labsecret")
///     .unwrap()
///     .with_events(EventMask::CALL | EventMask::CDR);
/// assert_eq!(
///     login.to_bytes(),
///     b"Action: Login\r\nActionID: relay-1\r\nUsername: lab\r\nSecret: labsecret\r\n\
///       Events: call,cdr\r\n\r\n"
/// );
/// let bytes = login.to_bytes();
/// let parsed = AmiMessage::parse(&bytes).unwrap();
/// assert!(parsed.headers().eq(login.headers()));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Action {
    id: ActionId,
    /// The wire form of every header line, `Action` and `ActionID` first.
    bytes: Vec<u8>,
    /// `(name, value)` as offsets into `bytes`.
    spans: Vec<(usize, usize, usize, usize)>,
}

impl Action {
    /// `Action: <name>` with `ActionID: <id>`.
    pub fn new(name: &str, id: ActionId) -> Result<Self, BuildError> {
        check_header("Action", name.as_bytes())?;
        Ok(Self::start(name, id))
    }

    /// An action whose name is known to be valid (the `ActionId` was checked when made).
    fn fixed(name: &'static str, id: ActionId) -> Self {
        Self::start(name, id)
    }

    fn start(name: &str, id: ActionId) -> Self {
        let mut a = Self {
            id,
            bytes: Vec::with_capacity(128),
            spans: Vec::with_capacity(6),
        };
        a.push_unchecked("Action", name.as_bytes());
        let id = a.id.0.clone();
        a.push_unchecked("ActionID", id.as_bytes());
        a
    }

    /// Appends a header known to be valid.
    fn push_unchecked(&mut self, name: &str, value: &[u8]) {
        let start = self.bytes.len();
        push_header(&mut self.bytes, name, value);
        let name_end = start.saturating_add(name.len());
        let value_start = name_end.saturating_add(2);
        self.spans.push((
            start,
            name_end,
            value_start,
            value_start.saturating_add(value.len()),
        ));
    }

    fn push(&mut self, name: &str, value: &[u8]) -> Result<(), BuildError> {
        check_header(name, value)?;
        self.push_unchecked(name, value);
        Ok(())
    }

    /// The action with one more header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Result<Self, BuildError> {
        self.push(name, value.as_ref())?;
        Ok(self)
    }

    /// `Login` with a plain-text secret.
    pub fn login(id: ActionId, username: &str, secret: &str) -> Result<Self, BuildError> {
        Self::fixed("Login", id)
            .header("Username", username)?
            .header("Secret", secret)
    }

    /// `Challenge` with `AuthType: MD5`: asks for the challenge of an MD5 login.
    pub fn challenge(id: ActionId) -> Self {
        let mut a = Self::fixed("Challenge", id);
        a.push_unchecked("AuthType", b"MD5");
        a
    }

    /// `Login` with `AuthType: MD5` and `Key: md5(challenge + secret)` (see [`md5_key`]), for
    /// the challenge from the response to [`Action::challenge`].
    pub fn login_md5(
        id: ActionId,
        username: &str,
        challenge: &str,
        secret: &str,
    ) -> Result<Self, BuildError> {
        let mut a = Self::fixed("Login", id);
        a.push_unchecked("AuthType", b"MD5");
        a.push("Username", username.as_bytes())?;
        a.push_unchecked("Key", md5_key(challenge, secret).as_bytes());
        Ok(a)
    }

    /// Adds `Events: <mask>` (to a `Login`: which events the session receives).
    pub fn with_events(self, mask: EventMask) -> Self {
        self.with_mask("Events", mask)
    }

    /// `Events` with `EventMask: <mask>`: changes which events the session receives.
    pub fn events(id: ActionId, mask: EventMask) -> Self {
        Self::fixed("Events", id).with_mask("EventMask", mask)
    }

    fn with_mask(mut self, name: &str, mask: EventMask) -> Self {
        self.push_unchecked(name, mask.to_header_value().as_bytes());
        self
    }

    /// `Ping`: keeps the session alive; the answer is `Response: Success` with `Ping: Pong`.
    pub fn ping(id: ActionId) -> Self {
        Self::fixed("Ping", id)
    }

    /// `CoreShowChannels`: one `CoreShowChannel` event per live channel, then
    /// `CoreShowChannelsComplete`, all with this action's `ActionID`.
    pub fn core_show_channels(id: ActionId) -> Self {
        Self::fixed("CoreShowChannels", id)
    }

    /// `Logoff`: the answer is `Response: Goodbye`, then the server closes the connection.
    pub fn logoff(id: ActionId) -> Self {
        Self::fixed("Logoff", id)
    }

    /// The action's `ActionID`.
    pub fn action_id(&self) -> &ActionId {
        &self.id
    }

    /// The action's name.
    pub fn name(&self) -> &str {
        self.headers()
            .next()
            .map_or("", |(_, v)| std::str::from_utf8(v).unwrap_or_default())
    }

    /// The headers in the order they are written, `Action` and `ActionID` first.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.spans.iter().map(|&(ns, ne, vs, ve)| {
            (
                std::str::from_utf8(self.bytes.get(ns..ne).unwrap_or_default()).unwrap_or_default(),
                self.bytes.get(vs..ve).unwrap_or_default(),
            )
        })
    }

    /// Appends the action's wire form (its header lines, then the blank line) to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes);
        out.extend_from_slice(b"\r\n");
    }

    /// The action's wire form as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len().saturating_add(2));
        self.write(&mut out);
        out
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, String)> = self
            .headers()
            .map(|(n, v)| {
                let shown = if SECRET_HEADERS.iter().any(|s| s.eq_ignore_ascii_case(n)) {
                    "<redacted>".to_owned()
                } else {
                    String::from_utf8_lossy(v).into_owned()
                };
                (n, shown)
            })
            .collect();
        f.debug_struct("Action").field("headers", &headers).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, ResponseStatus};

    fn id(s: &str) -> ActionId {
        ActionId::new(s).unwrap()
    }

    #[test]
    fn md5_key_matches_asterisk() {
        // python3 -c 'import hashlib; print(hashlib.md5(b"145769581" + b"labsecret").hexdigest())'
        assert_eq!(
            md5_key("145769581", "labsecret"),
            "9a623790b981fa4c798f6e6f95e513d4"
        );
        assert_eq!(md5_key("", ""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn the_actions_a_client_sends() {
        assert_eq!(
            Action::challenge(id("c1")).to_bytes(),
            b"Action: Challenge\r\nActionID: c1\r\nAuthType: MD5\r\n\r\n"
        );
        assert_eq!(
            Action::login_md5(id("l1"), "lab", "145769581", "labsecret")
                .unwrap()
                .to_bytes(),
            b"Action: Login\r\nActionID: l1\r\nAuthType: MD5\r\nUsername: lab\r\n\
              Key: 9a623790b981fa4c798f6e6f95e513d4\r\n\r\n"
        );
        assert_eq!(
            Action::events(id("e"), EventMask::CALL_TRACKING).to_bytes(),
            b"Action: Events\r\nActionID: e\r\nEventMask: call,agent,cdr,dialplan\r\n\r\n"
        );
        assert_eq!(
            Action::events(id("e"), EventMask::OFF).to_bytes(),
            b"Action: Events\r\nActionID: e\r\nEventMask: off\r\n\r\n"
        );
        assert_eq!(
            Action::login(id("x"), "u", "s")
                .unwrap()
                .with_events(EventMask::ON)
                .to_bytes(),
            b"Action: Login\r\nActionID: x\r\nUsername: u\r\nSecret: s\r\nEvents: on\r\n\r\n"
        );
        assert_eq!(
            Action::ping(id("p")).to_bytes(),
            b"Action: Ping\r\nActionID: p\r\n\r\n"
        );
        assert_eq!(Action::ping(id("p")).name(), "Ping");
        assert_eq!(
            Action::core_show_channels(id("r")).to_bytes(),
            b"Action: CoreShowChannels\r\nActionID: r\r\n\r\n"
        );
        assert_eq!(
            Action::logoff(id("z")).to_bytes(),
            b"Action: Logoff\r\nActionID: z\r\n\r\n"
        );
    }

    #[test]
    fn values_cannot_inject_headers() {
        assert!(Action::login(id("x"), "u", "s\r\nAction: Originate").is_err());
        assert!(Action::ping(id("x")).header("Bad:Name", "v").is_err());
        assert!(ActionId::new("a\nb").is_err() && ActionId::new("").is_err());
        assert!(ActionIdGen::new("p\r", 0).is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let a = Action::login(id("x"), "u", "topsecret").unwrap();
        let shown = format!("{a:?}");
        assert!(
            !shown.contains("topsecret") && shown.contains("<redacted>"),
            "{shown}"
        );
        let k = Action::login_md5(id("x"), "u", "1", "s").unwrap();
        assert!(!format!("{k:?}").contains(&md5_key("1", "s")));
    }

    #[test]
    fn ids_and_correlation() {
        let mut ids = ActionIdGen::new("relay-", u64::MAX).unwrap();
        let first = ids.next_id();
        assert_eq!(first.as_str(), format!("relay-{}", u64::MAX));
        assert_eq!(ids.next_id().as_str(), "relay-0");
        let ping = Action::ping(first.clone());
        let reply = format!("Response: Success\r\nActionid: {first}\r\nPing: Pong\r\n\r\n");
        let m = AmiMessage::parse(reply.as_bytes()).unwrap();
        assert!(first.matches(&m));
        let Event::Response(r) = m.typed() else {
            panic!()
        };
        assert!(r.answers(ping.action_id()));
        assert_eq!(r.status(), Some(ResponseStatus::Success));
        assert!(!ids.next_id().matches(&m));
    }

    #[test]
    fn written_actions_parse_back_to_their_headers() {
        let a = Action::new("Originate", id("o1"))
            .unwrap()
            .header("Variable", "A=1")
            .unwrap()
            .header("Variable", "B=c: d")
            .unwrap()
            .header("Data", "")
            .unwrap();
        let bytes = a.to_bytes();
        let m = AmiMessage::parse(&bytes).unwrap();
        assert!(m.headers().eq(a.headers()));
        assert_eq!(m.action(), Some("Originate"));
        assert_eq!(m.get_all("Variable").count(), 2);
    }
}
