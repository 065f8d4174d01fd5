//! [`AmiMessage`]: one frame's headers, in order, borrowed from the frame.

use std::borrow::Cow;
use std::fmt;

use crate::parse::{self, END_COMMAND, Shape, Span};
use crate::{BuildError, DEFAULT_MAX_HEADERS, ParseError, Timestamp};

/// Reusable storage for the header index of parsed messages, so that parsing a stream does not
/// allocate per message.
///
/// [`AmiMessage::parse_with`] borrows it for as long as the message lives; the next parse reuses
/// its allocation. It holds at most `max_headers` entries of 16 bytes.
#[derive(Debug, Clone)]
pub struct HeaderBuf {
    spans: Vec<Span>,
    max_headers: usize,
}

impl Default for HeaderBuf {
    fn default() -> Self {
        Self::with_max_headers(DEFAULT_MAX_HEADERS)
    }
}

impl HeaderBuf {
    /// Storage for messages of up to [`DEFAULT_MAX_HEADERS`] headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Storage for messages of up to `max_headers` headers; a message with more is an error
    /// ([`crate::ParseErrorKind::TooManyHeaders`]).
    pub fn with_max_headers(max_headers: usize) -> Self {
        Self {
            spans: Vec::new(),
            max_headers,
        }
    }

    /// The maximum number of headers of a message.
    pub fn max_headers(&self) -> usize {
        self.max_headers
    }
}

/// One AMI frame, parsed: the greeting, or a message's headers in order (repeated keys kept),
/// plus the raw output of an old-style `Response: Follows` command.
///
/// Header names are checked printable ASCII and come out as `&str`; values stay bytes, since
/// Asterisk passes on whatever bytes a channel carried (caller names in cp1251, characters cut in
/// half by a fixed-size buffer). Lookups ignore the case of names (`UniqueID`, `Uniqueid` and
/// `uniqueid` are one name), as Asterisk's own do.
///
/// The message borrows the frame (and, from [`AmiMessage::parse_with`], the header index);
/// [`AmiMessage::into_owned`] copies both. Two messages are equal when they have the same
/// headers (names compared exactly), the same command output and the same greeting, whatever
/// their line endings.
#[derive(Clone)]
pub struct AmiMessage<'a> {
    bytes: Cow<'a, [u8]>,
    spans: Cow<'a, [Span]>,
    shape: Shape,
}

impl<'a> AmiMessage<'a> {
    /// Parses one frame (as [`crate::Frame::Message`], [`crate::Frame::Greeting`] or
    /// [`crate::Frame::Truncated`] give it; its terminating blank line may be included or not)
    /// with at most [`DEFAULT_MAX_HEADERS`] headers. Allocates the header index; a stream should
    /// use [`AmiMessage::parse_with`]. Offsets in the error are from the start of `frame`.
    pub fn parse(frame: &'a [u8]) -> Result<Self, ParseError> {
        let mut spans = Vec::new();
        let shape = parse::parse_frame(frame, &mut spans, DEFAULT_MAX_HEADERS)?;
        Ok(Self {
            bytes: Cow::Borrowed(frame),
            spans: Cow::Owned(spans),
            shape,
        })
    }

    /// Like [`AmiMessage::parse`], keeping the header index in `buf` (no allocation once `buf`
    /// has grown to the largest message), with `buf`'s maximum number of headers.
    pub fn parse_with(frame: &'a [u8], buf: &'a mut HeaderBuf) -> Result<Self, ParseError> {
        let shape = parse::parse_frame(frame, &mut buf.spans, buf.max_headers)?;
        Ok(Self {
            bytes: Cow::Borrowed(frame),
            spans: Cow::Borrowed(&buf.spans),
            shape,
        })
    }

    /// Builds a message from headers, through its wire form (so it is exactly what parsing that
    /// form gives). Names must be valid header names and values must hold no `\r` or `\n`.
    pub fn from_headers<N, V>(
        headers: impl IntoIterator<Item = (N, V)>,
    ) -> Result<AmiMessage<'static>, BuildError>
    where
        N: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let mut out = Vec::new();
        for (name, value) in headers {
            write_header(&mut out, name.as_ref(), value.as_ref())?;
        }
        out.extend_from_slice(b"\r\n");
        let mut spans = Vec::new();
        let shape =
            parse::parse_frame(&out, &mut spans, usize::MAX).map_err(|_| BuildError::NoHeaders)?;
        Ok(AmiMessage {
            bytes: Cow::Owned(out),
            spans: Cow::Owned(spans),
            shape,
        })
    }

    /// An owned copy that no longer borrows the frame or the header storage.
    pub fn into_owned(self) -> AmiMessage<'static> {
        AmiMessage {
            bytes: Cow::Owned(self.bytes.into_owned()),
            spans: Cow::Owned(self.spans.into_owned()),
            shape: self.shape,
        }
    }

    /// The frame's bytes, as they were parsed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn slice(&self, start: u32, end: u32) -> &[u8] {
        self.bytes
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    fn name_bytes(&self, s: &Span) -> &[u8] {
        self.slice(s.name_start, s.name_end)
    }

    fn value(&self, s: &Span) -> &[u8] {
        self.slice(s.value_start, s.value_end)
    }

    fn name(&self, s: &Span) -> &str {
        // Names are checked printable ASCII by the parser.
        std::str::from_utf8(self.name_bytes(s)).unwrap_or_default()
    }

    /// Whether this frame is the greeting.
    pub fn is_greeting(&self) -> bool {
        matches!(self.shape, Shape::Greeting(..))
    }

    /// The greeting line's bytes, if this frame is the greeting.
    pub fn greeting_line(&self) -> Option<&[u8]> {
        match self.shape {
            Shape::Greeting(s, e) => Some(self.slice(s, e)),
            _ => None,
        }
    }

    /// The greeting line (`Asterisk Call Manager/9.0.0`), if this frame is the greeting and the
    /// line is UTF-8 (see [`AmiMessage::greeting_line`] for its bytes).
    pub fn greeting(&self) -> Option<&str> {
        std::str::from_utf8(self.greeting_line()?).ok()
    }

    /// The AMI version the greeting announces (`9.0.0`), if this frame is the greeting.
    pub fn greeting_version(&self) -> Option<&str> {
        let line = self.greeting()?;
        line.get(parse::GREETING_PREFIX.len()..)
    }

    /// The output of an old-style command (`Response: Follows` up to `--END COMMAND--`, before
    /// Asterisk 14), as raw bytes: everything after the `Privilege` and `ActionID` headers up
    /// to the marker. Newer Asterisk sends each line as an `Output` header instead
    /// (see [`AmiMessage::get_all`]).
    pub fn command_output(&self) -> Option<&[u8]> {
        match self.shape {
            Shape::Command(s, e) => Some(self.slice(s, e)),
            _ => None,
        }
    }

    /// The number of headers.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there is no header (only the greeting has none).
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The `i`-th header (0-based): its name and value.
    pub fn header(&self, i: usize) -> Option<(&str, &[u8])> {
        let s = self.spans.get(i)?;
        Some((self.name(s), self.value(s)))
    }

    /// The headers in order, repeated names included.
    pub fn headers(&self) -> Headers<'_> {
        Headers {
            msg: self,
            spans: self.spans.iter(),
        }
    }

    /// The value of the first header named `name` (in any case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let name = name.as_bytes();
        self.spans
            .iter()
            .find(|s| self.name_bytes(s).eq_ignore_ascii_case(name))
            .map(|s| self.value(s))
    }

    /// The value of the first header named `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.get(name)?).ok()
    }

    /// The value of the first header named `name`, parsed (`Cause: 16` as a `u16`).
    pub fn get_parsed<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.get_str(name)?.parse().ok()
    }

    /// The values of every header named `name`, in order (`ChanVariable`, `Variable`, `Output`).
    pub fn get_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.spans
            .iter()
            .filter(move |s| self.name_bytes(s).eq_ignore_ascii_case(name.as_bytes()))
            .map(|s| self.value(s))
    }

    /// Whether a header named `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The value of the first header whose name is `prefix` followed by `name` (both in any
    /// case): `get_prefixed("Dest", "Uniqueid")` finds `DestUniqueid`. No allocation.
    pub fn get_prefixed(&self, prefix: &str, name: &str) -> Option<&[u8]> {
        let (p, n) = (prefix.as_bytes(), name.as_bytes());
        self.spans
            .iter()
            .find(|s| {
                let h = self.name_bytes(s);
                h.len() == p.len().saturating_add(n.len())
                    && h.split_at_checked(p.len()).is_some_and(|(hp, hn)| {
                        hp.eq_ignore_ascii_case(p) && hn.eq_ignore_ascii_case(n)
                    })
            })
            .map(|s| self.value(s))
    }

    /// The value of the first of `names` that is present, as UTF-8 (for fields whose name
    /// changed between Asterisk versions).
    pub(crate) fn first_str(&self, names: &[&str]) -> Option<&str> {
        names
            .iter()
            .find_map(|n| self.get(n))
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value of the first of `names` that is present.
    pub(crate) fn first(&self, names: &[&str]) -> Option<&[u8]> {
        names.iter().find_map(|n| self.get(n))
    }

    /// The `Event` header: the event's name, if this is an event.
    pub fn event(&self) -> Option<&str> {
        self.get_str("Event")
    }

    /// The `Response` header (`Success`, `Error`, `Follows`, `Goodbye`, ...), if present.
    /// `OriginateResponse` events carry one too.
    pub fn response(&self) -> Option<&str> {
        self.get_str("Response")
    }

    /// The `Action` header, if this is an action (what a client sends).
    pub fn action(&self) -> Option<&str> {
        self.get_str("Action")
    }

    /// The `ActionID` header, which links responses (and the events of a list) to an action.
    pub fn action_id(&self) -> Option<&str> {
        self.get_str("ActionID")
    }

    /// The `Timestamp` header (with `timestampevents = yes`): seconds since the epoch.
    pub fn timestamp(&self) -> Option<Timestamp> {
        Timestamp::parse(self.get("Timestamp")?)
    }

    /// How many `Event` headers the message holds. More than one happens when a capture lost
    /// the blank line between two events; see [`AmiMessage::split_events`].
    pub fn event_count(&self) -> usize {
        self.get_all("Event").count()
    }

    /// The message cut before each `Event` header after the first: one message per event when
    /// blank lines between events were lost (headers before the first `Event` stay with it).
    /// A message with at most one `Event` comes back whole. Borrows; no allocation.
    pub fn split_events(&self) -> impl Iterator<Item = AmiMessage<'_>> + '_ {
        let mut start = 0usize;
        let spans: &[Span] = &self.spans;
        std::iter::from_fn(move || {
            if start >= spans.len() {
                return None;
            }
            let first_event = spans
                .get(start..)
                .unwrap_or_default()
                .iter()
                .position(|s| self.name_bytes(s).eq_ignore_ascii_case(b"Event"))
                .map_or(spans.len(), |k| start.saturating_add(k));
            let next = spans
                .get(first_event.saturating_add(1)..)
                .unwrap_or_default()
                .iter()
                .position(|s| self.name_bytes(s).eq_ignore_ascii_case(b"Event"))
                .map_or(spans.len(), |k| {
                    first_event.saturating_add(1).saturating_add(k)
                });
            let part = spans.get(start..next).unwrap_or_default();
            let whole = start == 0 && next == spans.len();
            start = next;
            Some(AmiMessage {
                bytes: Cow::Borrowed(&self.bytes),
                spans: Cow::Borrowed(part),
                shape: if whole { self.shape } else { Shape::Headers },
            })
        })
    }

    /// Appends the message's wire form to `out`: the greeting line, or each header as
    /// `Name: value\r\n` (then the command output and `--END COMMAND--\r\n`, if any), then the
    /// blank line. Parsing the output gives back an equal message.
    pub fn write(&self, out: &mut Vec<u8>) {
        if let Some(line) = self.greeting_line() {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
            return;
        }
        for (name, value) in self.headers() {
            push_header(out, name, value);
        }
        if let Some(output) = self.command_output() {
            // As Asterisk writes it: the marker right after the output, which ends in a line
            // break unless the command's output did not.
            out.extend_from_slice(output);
            out.extend_from_slice(END_COMMAND);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The message's wire form as a new buffer (see [`AmiMessage::write`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len().saturating_add(2));
        self.write(&mut out);
        out
    }
}

/// Appends `name: value\r\n` (no checks).
pub(crate) fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Checks that `name: value` parses back as the same header and injects nothing.
pub(crate) fn check_header(name: &str, value: &[u8]) -> Result<(), BuildError> {
    if !parse::is_valid_name(name.as_bytes()) {
        return Err(BuildError::InvalidName(name.to_owned()));
    }
    if value.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(BuildError::InvalidValue(name.to_owned()));
    }
    Ok(())
}

/// Appends `name: value\r\n` after checking it (see [`check_header`]).
pub(crate) fn write_header(out: &mut Vec<u8>, name: &str, value: &[u8]) -> Result<(), BuildError> {
    check_header(name, value)?;
    push_header(out, name, value);
    Ok(())
}

/// The headers of an [`AmiMessage`], in order: `(name, value)`.
#[derive(Clone)]
pub struct Headers<'m> {
    msg: &'m AmiMessage<'m>,
    spans: std::slice::Iter<'m, Span>,
}

impl<'m> Iterator for Headers<'m> {
    type Item = (&'m str, &'m [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let s = self.spans.next()?;
        Some((self.msg.name(s), self.msg.value(s)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl DoubleEndedIterator for Headers<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let s = self.spans.next_back()?;
        Some((self.msg.name(s), self.msg.value(s)))
    }
}

impl ExactSizeIterator for Headers<'_> {}

impl PartialEq for AmiMessage<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.greeting_line() == other.greeting_line()
            && self.command_output() == other.command_output()
            && self.headers().eq(other.headers())
    }
}

impl Eq for AmiMessage<'_> {}

impl fmt::Debug for AmiMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("AmiMessage");
        if let Some(g) = self.greeting_line() {
            d.field("greeting", &String::from_utf8_lossy(g));
        }
        d.field(
            "headers",
            &self
                .headers()
                .map(|(n, v)| (n, String::from_utf8_lossy(v)))
                .collect::<Vec<_>>(),
        );
        if let Some(o) = self.command_output() {
            d.field("command_output", &String::from_utf8_lossy(o));
        }
        d.finish()
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for AmiMessage<'_> {
    /// A list of `[name, value]` pairs (values as lossy UTF-8); the greeting as
    /// `[["greeting", line]]`, command output as a last `["output", text]` pair.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let extra = usize::from(self.is_greeting() || self.command_output().is_some());
        let mut seq = s.serialize_seq(Some(self.len().saturating_add(extra)))?;
        if let Some(g) = self.greeting_line() {
            seq.serialize_element(&("greeting", String::from_utf8_lossy(g)))?;
        }
        for (n, v) in self.headers() {
            seq.serialize_element(&(n, String::from_utf8_lossy(v)))?;
        }
        if let Some(o) = self.command_output() {
            seq.serialize_element(&("output", String::from_utf8_lossy(o)))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HANGUP: &[u8] = b"Event: Hangup\r\nPrivilege: call,all\r\nChannel: SIP/1-0001\r\n\
        Uniqueid: 1414510601.2\r\nCallerIDName: \xcf\xf0\xe8\r\nChanVariable: a=1\r\n\
        ChanVariable(SIP/1-0001): b=2\r\nChanVariable: c=3\r\nCause: 16\r\nCause-txt: Normal Clearing\r\n";

    #[test]
    fn lookups_ignore_case_and_keep_order() {
        let m = AmiMessage::parse(HANGUP).unwrap();
        assert_eq!(m.len(), 10);
        assert_eq!(m.event(), Some("Hangup"));
        assert_eq!(m.get("UniqueID"), Some(&b"1414510601.2"[..]));
        assert_eq!(m.get("uniqueid"), m.get("Uniqueid"));
        assert_eq!(m.get_parsed::<u16>("cause"), Some(16));
        assert_eq!(m.get("CallerIDName"), Some(&b"\xcf\xf0\xe8"[..]));
        assert_eq!(m.get_str("CallerIDName"), None, "not UTF-8");
        assert_eq!(
            m.get_all("ChanVariable").collect::<Vec<_>>(),
            vec![&b"a=1"[..], b"c=3"]
        );
        assert_eq!(
            m.get_prefixed("Cause-", "TXT"),
            Some(&b"Normal Clearing"[..])
        );
        assert_eq!(m.get_prefixed("Cause", "txt"), None);
        assert_eq!(m.header(9), Some(("Cause-txt", &b"Normal Clearing"[..])));
        assert_eq!(m.headers().next_back(), m.header(9));
        assert_eq!(m.header(10), None);
        assert!(m.contains("privilege") && !m.contains("Linkedid"));
        assert_eq!(m.event_count(), 1);
    }

    #[test]
    fn reused_storage_and_owned_copies() {
        let mut buf = HeaderBuf::new();
        let owned = {
            let m = AmiMessage::parse_with(HANGUP, &mut buf).unwrap();
            assert_eq!(m, AmiMessage::parse(HANGUP).unwrap());
            m.into_owned()
        };
        let m2 = AmiMessage::parse_with(b"Response: Success\nActionID: 1\n", &mut buf).unwrap();
        assert_eq!(m2.action_id(), Some("1"));
        assert_eq!(owned.get("Channel"), Some(&b"SIP/1-0001"[..]));
        let mut small = HeaderBuf::with_max_headers(3);
        assert!(AmiMessage::parse_with(HANGUP, &mut small).is_err());
    }

    #[test]
    fn write_round_trips() {
        for frame in [
            HANGUP,
            b"Asterisk Call Manager/1.3\n",
            b"Response: Follows\nPrivilege: Command\nout 1\n\nout 2--END COMMAND--\n\n",
            b"Response: Follows\n--END COMMAND--\n",
            b"K:  lead\r\nE:\n",
            b"Asterisk Call Manager/1.\xb8",
        ] {
            let m = AmiMessage::parse(frame).unwrap();
            let bytes = m.to_bytes();
            assert_eq!(AmiMessage::parse(&bytes).unwrap(), m, "{bytes:?}");
        }
    }

    #[test]
    fn from_headers_checks_names_and_values() {
        let m = AmiMessage::from_headers([("Event", "X"), ("Key", "a: b")]).unwrap();
        assert_eq!(m.to_bytes(), b"Event: X\r\nKey: a: b\r\n\r\n");
        assert!(AmiMessage::from_headers([("Bad:Name", "x")]).is_err());
        assert!(AmiMessage::from_headers([("Name", "x\r\nInjected: y")]).is_err());
    }

    #[test]
    fn split_events_cuts_merged_frames() {
        let m = AmiMessage::parse(
            b"Event: Newexten\nChannel: A\nEvent: DialEnd\nChannel: B\nDialStatus: ANSWER\n",
        )
        .unwrap();
        assert_eq!(m.event_count(), 2);
        let parts: Vec<_> = m.split_events().collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].event(), Some("Newexten"));
        assert_eq!(parts[0].len(), 2);
        assert_eq!(parts[1].event(), Some("DialEnd"));
        assert_eq!(parts[1].get("DialStatus"), Some(&b"ANSWER"[..]));
        let whole = AmiMessage::parse(HANGUP).unwrap();
        assert_eq!(
            whole.split_events().collect::<Vec<_>>(),
            vec![whole.clone()]
        );
    }
}
