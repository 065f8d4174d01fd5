//! Asterisk Manager Interface (AMI) protocol, IO-free core: framing the byte stream, parsing
//! messages into borrowed views, typed views of the events call tracking needs, and writing
//! actions.
//!
//! Asterisk's AMI (TCP 5038, TLS 5039) sends a one-line greeting, then messages of
//! `Key: Value` lines ending in a blank line: responses to the client's actions and, once
//! logged in, events. This crate turns those bytes into [`AmiMessage`]s that borrow from the
//! input, and writes [`Action`]s.
//!
//! What it does:
//! * frames a stream with a bounded buffer ([`AmiFramer`]: the greeting as its own frame, CRLF
//!   or bare LF, extra blank lines, old `Response: Follows` command output up to
//!   `--END COMMAND--`, limits on message size and header count, a truncated last frame never
//!   reported as complete), or parses from the front of a buffer you own ([`parse_ami`],
//!   httparse style: [`Parsed::Complete`] with the bytes consumed, or [`Parsed::Incomplete`]);
//! * parses a frame with nom into its headers, in order, repeated names kept, looked up without
//!   regard to case, values kept as bytes (not every value Asterisk sends is UTF-8), with no
//!   allocation per message when the header index is reused ([`HeaderBuf`]);
//! * offers typed views ([`Event`], from [`AmiMessage::typed`]) of channel, dial, bridge,
//!   hangup, transfer, rename, `VarSet`, `Cdr` and `CEL` events across Asterisk 1.4 to 22
//!   field names, and of responses;
//! * writes actions ([`Action`]: `Login` plain or MD5 challenge, `Events`, `Ping`,
//!   `CoreShowChannels`, `Logoff`, any other) with an `ActionID` from [`ActionIdGen`], and
//!   matches responses to them ([`ActionId::matches`]);
//! * reports malformed input as a [`ParseError`] naming the byte offset. It never panics on any
//!   input.
//!
//! What the core does not do: no IO, no clock, no async runtime. TCP, TLS, login, keepalive,
//! reconnect and the resync after it live in the optional `client` module, behind the `tokio`
//! feature; without that feature the crate depends on no runtime. Joining events into calls is
//! `call-assembler`'s job.
//!
//! # Example
//!
//! A buffer holding one whole message and the start of the next, as one TCP read may give
//! them, and an action written:
//!
//! ```
//! use ami_proto::{Action, ActionId, Event, Parsed, parse_ami};
//!
//! let buf: &[u8] = b"Event: Hangup\r\nChannel: PJSIP/2001-00000003\r\n\
//!     Uniqueid: 1795355648.117\r\nLinkedid: 1795355648.116\r\nCause: 16\r\n\
//!     Cause-txt: Normal Clearing\r\n\r\nEvent: Newch";
//! let Parsed::Complete { value: msg, consumed } = parse_ami(buf)? else {
//!     unreachable!("the first message is complete");
//! };
//! assert_eq!(msg.get_str("UNIQUEID"), Some("1795355648.117")); // names ignore case
//! let Event::Hangup(hangup) = msg.typed() else {
//!     unreachable!("a Hangup event");
//! };
//! assert_eq!(hangup.channel().name(), Some("PJSIP/2001-00000003"));
//! assert_eq!(hangup.channel().linkedid(), Some("1795355648.116"));
//! assert_eq!((hangup.cause(), hangup.cause_txt()), (Some(16), Some("Normal Clearing")));
//! // The rest is not a whole message yet: read more bytes and call again from there.
//! assert_eq!(parse_ami(&buf[consumed..])?, Parsed::Incomplete);
//!
//! let ping = Action::ping(ActionId::new("p1").expect("a valid id"));
//! assert_eq!(ping.to_bytes(), b"Action: Ping\r\nActionID: p1\r\n\r\n");
//! # Ok::<(), ami_proto::ParseError>(())
//! ```
//!
//! A stream read in pieces goes through an [`AmiFramer`] (here the start of a capture):
//!
//! ```
//! use ami_proto::{AmiFramer, AmiMessage, CelEventKind, Event, Frame, HeaderBuf};
//!
//! let bytes = include_bytes!("../testdata/answered_call_first8.ami");
//! let mut framer = AmiFramer::default();
//! let mut headers = HeaderBuf::new();
//! framer.push(bytes);
//! let mut greeting = None;
//! let mut events = Vec::new();
//! while let Some(frame) = framer.next_frame() {
//!     match frame {
//!         Frame::Greeting { line, .. } => greeting = Some(line.to_vec()),
//!         Frame::Message { bytes, .. } => {
//!             let msg = AmiMessage::parse_with(bytes, &mut headers)?;
//!             match msg.typed() {
//!                 Event::Newchannel(n) => {
//!                     let ch = n.channel();
//!                     events.push(format!(
//!                         "new {} uid={} linked={}",
//!                         ch.name().unwrap_or("?"),
//!                         ch.uniqueid().unwrap_or("?"),
//!                         ch.linkedid().unwrap_or("?"),
//!                     ));
//!                 }
//!                 Event::Cel(c) if c.kind() == CelEventKind::ChanStart => {
//!                     events.push(format!("cel CHAN_START {}", c.uniqueid().unwrap_or("?")));
//!                 }
//!                 Event::Response(r) => events.push(format!(
//!                     "response {:?} to {}",
//!                     r.status(),
//!                     r.action_id().unwrap_or("?")
//!                 )),
//!                 _ => {}
//!             }
//!         }
//!         Frame::Error { .. } | Frame::Truncated { .. } => unreachable!(),
//!     }
//! }
//! assert!(framer.finish().is_none(), "the excerpt ends on a message boundary");
//! assert_eq!(greeting.as_deref(), Some(&b"Asterisk Call Manager/9.0.0"[..]));
//! assert_eq!(
//!     events,
//!     [
//!         "response Some(Success) to a1",
//!         "response Some(Success) to orig2",
//!         "cel CHAN_START 1795355648.116",
//!         "new Local/2001@internal-0000002c;1 uid=1795355648.116 linked=1795355648.116",
//!         "cel CHAN_START 1795355648.117",
//!         "new Local/2001@internal-0000002c;2 uid=1795355648.117 linked=1795355648.116",
//!     ]
//! );
//! # Ok::<(), ami_proto::ParseError>(())
//! ```
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod action;
mod cel;
mod error;
mod event;
mod framer;
mod message;
mod parse;
mod time;

pub use action::{Action, ActionId, ActionIdGen, EventMask, md5_key};
pub use cel::{CelEventKind, CelExtra, CelView};
pub use error::{BuildError, ExtraError, ParseError, ParseErrorKind};
pub use event::{
    ActionView, AttendedTransferView, BlindTransferView, BridgeView, CdrView, ChannelEventView,
    ChannelSnapshot, CoreShowChannelView, DialView, Event, HangupView, LegacyBridgeView,
    LegacyTransferView, ListCompleteView, MasqueradeView, RenameView, ResponseStatus, ResponseView,
    VarSetView,
};
pub use framer::{
    AmiFramer, DEFAULT_MAX_HEADERS, DEFAULT_MAX_MESSAGE, Frame, Limits, Parsed, parse_ami,
    skip_message,
};
pub use message::{AmiMessage, HeaderBuf, Headers};
pub use time::{Timestamp, parse_local_datetime};

#[cfg(feature = "tokio")]
pub mod client;
