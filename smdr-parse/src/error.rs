//! Errors: what was wrong and where.

use crate::Field;

/// A malformed record: the byte offset of the fault within the line and what was expected.
///
/// "Needs more bytes" is never an error (see [`crate::Parsed::Incomplete`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: {kind}")]
pub struct ParseError {
    /// Byte offset of the fault, from the start of the line (or of the buffer given to
    /// [`crate::parse_smdr`]).
    pub offset: usize,
    /// What was wrong.
    pub kind: ParseErrorKind,
}

/// What was wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The line has fewer than the 17 fields every IP Office record carries.
    #[error("{found} fields, expected at least 17")]
    TooFewFields {
        /// How many comma-separated fields the line had.
        found: usize,
    },
    /// A field does not have the shape its definition requires.
    #[error("{field}: expected {expected}")]
    InvalidField {
        /// Which field.
        field: Field,
        /// What it should have looked like.
        expected: &'static str,
    },
    /// No line terminator within the maximum line length; the line is skipped.
    #[error("line longer than {max} bytes")]
    LineTooLong {
        /// The configured maximum.
        max: usize,
    },
    /// The line holds nothing but whitespace.
    #[error("empty line")]
    EmptyLine,
}

impl ParseError {
    /// The same error with `base` added to its offset (to report offsets within a stream).
    #[must_use]
    pub fn with_base(self, base: usize) -> Self {
        Self {
            offset: self.offset.saturating_add(base),
            kind: self.kind,
        }
    }
}
