//! Zero-copy parsing of Avaya IP Office SMDR (Station Message Detail Recording) records.
//!
//! IP Office writes one CSV line per call segment (17 to 37 fields, CRLF) to a TCP peer. This
//! crate turns those bytes into typed [`SmdrRecord`]s that borrow their text from the input, and
//! writes records back ([`SmdrRecord::write`]) so that `parse(write(r)) == r`.
//!
//! What it does:
//! * frames lines from a byte stream with a bounded buffer ([`SmdrFramer`]), or parses from the
//!   front of a buffer you own ([`parse_smdr`], httparse style: [`Parsed::Complete`] with the
//!   bytes consumed, or [`Parsed::Incomplete`]);
//! * parses every field IP Office has defined (see [`Field`]), typed where a type exists
//!   (timestamps, `HH:MM:SS` and second counts as `u32` seconds, direction, flags, devices,
//!   server IPs), keeping text fields as bytes ([`Text`]) so records with non-UTF-8 bytes parse;
//! * reports a malformed line as a [`ParseError`] naming the byte offset and what was expected.
//!   It never panics on any input.
//!
//! What it does not do: no IO, no clock, no async runtime, no allocation while parsing. Grouping
//! records into calls is `call-assembler`'s job.
//!
//! # Example
//!
//! A buffer holding one whole line and the start of the next, as one TCP read may give them:
//!
//! ```
//! use smdr_parse::{DeviceKind, Direction, Parsed, parse_smdr};
//!
//! let buf: &[u8] = b"2018/01/04 23:43:36,00:34:11,10,6047535970,I,206,6040116587,,0,\
//!     1017747,0,E241,Volunteer8,T9005,Line 5.0,0,0\r\n2018/01/05 00:16";
//! let Parsed::Complete { value: record, consumed } = parse_smdr(buf)? else {
//!     unreachable!("the first line is complete");
//! };
//! assert_eq!(record.call_id, 1017747);
//! assert_eq!(record.direction, Direction::Inbound);
//! assert_eq!(record.caller, "6047535970");
//! assert_eq!(record.called_number, "206");
//! assert_eq!((record.ring_time, record.connected_time), (10, 34 * 60 + 11));
//! let party1 = record.party1_device.map(|d| (d.kind, d.number));
//! assert_eq!(party1, Some((DeviceKind::Extension, 241)));
//! assert_eq!(record.field_count, 17);
//! // The rest is not a whole line yet: read more bytes and call again from there.
//! assert_eq!(parse_smdr(&buf[consumed..])?, Parsed::Incomplete);
//! # Ok::<(), smdr_parse::ParseError>(())
//! ```
//!
//! A stream read in pieces goes through a [`SmdrFramer`] (here the first lines of a capture):
//!
//! ```
//! use smdr_parse::{Direction, DeviceKind, Frame, SmdrFramer, SmdrRecord};
//!
//! let bytes = include_bytes!("../testdata/ccbc_rw180105_first20.txt");
//! let mut framer = SmdrFramer::default();
//! framer.push(bytes);
//! let mut records = Vec::new();
//! while let Some(frame) = framer.next_frame() {
//!     if let Frame::Line { line, .. } = frame {
//!         // Records borrow from the framer's buffer; keep an owned copy past the loop.
//!         records.push(SmdrRecord::parse(line)?.into_owned());
//!     }
//! }
//! assert_eq!(records.len(), 20);
//! let first = &records[0];
//! assert_eq!(first.call_id, 1017682);
//! assert_eq!(first.connected_time, 5 * 3600 + 15 * 60 + 59);
//! assert_eq!(first.direction, Direction::Outbound);
//! assert_eq!(first.party1_device.unwrap().kind, DeviceKind::Extension);
//! assert_eq!(first.party1_name, "Agent8");
//! assert_eq!(first.field_count, 34);
//! # Ok::<(), smdr_parse::ParseError>(())
//! ```
#![deny(missing_docs)]
#![deny(clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod error;
mod framer;
mod parse;
mod record;
#[cfg(feature = "serde")]
mod serde_impl;
mod text;
mod write;

pub use error::{ParseError, ParseErrorKind};
pub use framer::{DEFAULT_MAX_LINE, Frame, Parsed, SmdrFramer, parse_smdr, skip_line};
pub use parse::{KNOWN_FIELDS, MIN_FIELDS};
pub use record::{Device, DeviceKind, Direction, Field, SmdrRecord};
pub use text::Text;

impl<'a> SmdrRecord<'a> {
    /// Parses one line (its `\r\n` or `\n` and trailing spaces are ignored) into a record that
    /// borrows from it. Offsets in the error are from the start of `line`.
    pub fn parse(line: &'a [u8]) -> Result<Self, ParseError> {
        parse::parse_record(line)
    }
}
