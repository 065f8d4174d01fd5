//! Errors: what was wrong and where.

/// A malformed frame: the byte offset of the fault and what was wrong.
///
/// "Needs more bytes" is never an error (see [`crate::Parsed::Incomplete`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: {kind}")]
pub struct ParseError {
    /// Byte offset of the fault, from the start of the frame (or of the buffer given to
    /// [`crate::parse_ami`]).
    pub offset: usize,
    /// What was wrong.
    pub kind: ParseErrorKind,
}

/// What was wrong with a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// A line of a message has no `:` (and is not command output).
    #[error("line has no `:`")]
    MissingColon,
    /// A header name is empty, starts with a space, or holds a byte that is not printable ASCII.
    #[error("invalid header name")]
    InvalidName,
    /// A blank line inside a message (a message ends at its first blank line).
    #[error("blank line inside a message")]
    BlankLine,
    /// The frame holds no header at all.
    #[error("empty message")]
    Empty,
    /// Bytes after the greeting line in a greeting frame.
    #[error("data after the greeting line")]
    DataAfterGreeting,
    /// A `Response: Follows` message without its `--END COMMAND--` line.
    #[error("command output without `--END COMMAND--`")]
    MissingEndCommand,
    /// More header lines than the configured maximum; the message is skipped.
    #[error("more than {max} headers")]
    TooManyHeaders {
        /// The configured maximum.
        max: usize,
    },
    /// A message longer than the configured maximum; it is skipped.
    #[error("message longer than {max} bytes")]
    MessageTooLarge {
        /// The configured maximum.
        max: usize,
    },
}

impl ParseError {
    pub(crate) const fn new(offset: usize, kind: ParseErrorKind) -> Self {
        Self { offset, kind }
    }

    /// The same error with `base` added to its offset (to report offsets within a stream).
    #[must_use]
    pub fn with_base(self, base: usize) -> Self {
        Self {
            offset: self.offset.saturating_add(base),
            kind: self.kind,
        }
    }
}

/// A header that cannot be written: it would not parse back as the same header, or would let a
/// value inject headers of its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A header name that is empty, starts with a space, or holds `:` or a byte that is not
    /// printable ASCII.
    #[error("invalid header name {0:?}")]
    InvalidName(String),
    /// A value holding `\r` or `\n` (for the header named here).
    #[error("value of {0:?} holds a line break")]
    InvalidValue(String),
    /// A message without a single header.
    #[error("a message needs at least one header")]
    NoHeaders,
    /// An ActionID (or prefix) that is empty or holds a line break.
    #[error("invalid ActionID {0:?}")]
    InvalidActionId(String),
}

/// The CEL `Extra` field could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtraError {
    /// It looks like JSON (starts with `{`) but does not parse as a JSON object.
    #[error("CEL Extra is not a valid JSON object: {0}")]
    Json(#[from] serde_json::Error),
}
