//! How a call's JSON is kept in the database: compressed with zstd and a dictionary trained on
//! real calls, so that the call store costs a few hundred bytes per call instead of the JSON's
//! 1.6 KB (an SMDR call with its records; BENCHMARKS.md, "Backfill").
//!
//! Only the stored form changes: [`decode`] gives back the exact bytes [`encode`] was given, and
//! every sink, the web page and the API see the JSON as before. A body stored as plain JSON (by
//! an earlier version, before this module) is read as it is: plain JSON starts with `{`, a zstd
//! frame with its magic number, so the two never mix up and no migration is needed.
//!
//! The dictionary (`calls-v1.zdict`, 16 KB) is compiled in. Its id is written in every frame;
//! a later dictionary gets a new id and file, and this one stays for the bodies written with it.
//! It was trained by `cargo run --release -p cdr-benches --bin train_dict` (see that binary)
//! over the calls of the repository's SMDR and Asterisk captures.
//!
//! ```
//! let json = br#"{"id":"36e4e411-67dc-5b3c-b72b-5f5131f75e0e","source":"smdr","call_id":"1"}"#;
//! let stored = cdr_sinks::body::encode(json)?;
//! assert!(stored.len() < json.len());
//! assert_eq!(cdr_sinks::body::decode(&stored)?, json);
//! // A body an earlier version stored uncompressed reads as it is.
//! assert_eq!(cdr_sinks::body::decode(json)?, json);
//! # Ok::<(), cdr_sinks::body::BodyError>(())
//! ```

use std::cell::RefCell;
use std::sync::OnceLock;

use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

/// The dictionary every new body is compressed with.
pub const DICTIONARY: &[u8] = include_bytes!("calls-v1.zdict");

/// The zstd level: 3, zstd's default. Higher levels save about 30 bytes a call more and cost
/// twice the time at every commit.
const LEVEL: i32 = 3;

/// The most bytes a stored body may decompress to: far above any real call (an SMDR call has at
/// most `SMDR_MAX_RECORDS_PER_CALL` records, and a call of 130,000 records is about 45 MB of
/// JSON), so that a damaged frame claiming more is refused instead of allocated.
pub const MAX_BODY: usize = 256 << 20;

/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// A stored body that cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// zstd could not compress or decompress it (a damaged frame, a frame of an unknown
    /// dictionary).
    #[error("stored call body: {0}")]
    Zstd(#[from] std::io::Error),
    /// The frame does not say how large it is, or says more than [`MAX_BODY`].
    #[error("stored call body: frame content size missing or over {MAX_BODY} bytes")]
    Size,
}

fn encoder_dictionary() -> &'static EncoderDictionary<'static> {
    static D: OnceLock<EncoderDictionary<'static>> = OnceLock::new();
    D.get_or_init(|| EncoderDictionary::copy(DICTIONARY, LEVEL))
}

fn decoder_dictionary() -> &'static DecoderDictionary<'static> {
    static D: OnceLock<DecoderDictionary<'static>> = OnceLock::new();
    D.get_or_init(|| DecoderDictionary::copy(DICTIONARY))
}

thread_local! {
    // One context per thread, kept: making one per call costs more than compressing the call.
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// The stored form of the call JSON `json`: a zstd frame (with its content size and the
/// dictionary's id).
pub fn encode(json: &[u8]) -> Result<Vec<u8>, BodyError> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let c = match &mut *c {
            Some(c) => c,
            None => c.insert(Compressor::with_prepared_dictionary(encoder_dictionary())?),
        };
        Ok(c.compress(json)?)
    })
}

/// The call JSON of a stored body: decompressed if it is a zstd frame, as it is otherwise (a
/// body stored uncompressed by an earlier version).
pub fn decode(stored: &[u8]) -> Result<Vec<u8>, BodyError> {
    if !stored.starts_with(&ZSTD_MAGIC) {
        return Ok(stored.to_vec());
    }
    let size = zstd::zstd_safe::get_frame_content_size(stored)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n <= MAX_BODY)
        .ok_or(BodyError::Size)?;
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        let d = match &mut *d {
            Some(d) => d,
            None => d.insert(Decompressor::with_prepared_dictionary(decoder_dictionary())?),
        };
        Ok(d.decompress(stored, size)?)
    })
}

/// [`decode`] for a body read in a query: its error as SQLite's conversion error, so that a
/// damaged body fails the read that met it like any other bad column.
pub fn decode_column(stored: Vec<u8>) -> rusqlite::Result<Vec<u8>> {
    if !stored.starts_with(&ZSTD_MAGIC) {
        return Ok(stored);
    }
    decode(&stored).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_frame_is_an_error_not_a_panic() {
        let mut stored = encode(br#"{"id":"x","source":"smdr"}"#).expect("encode");
        let n = stored.len();
        stored.truncate(n - 3);
        assert!(decode(&stored).is_err());
        // A frame header claiming more than MAX_BODY is refused before any allocation.
        let mut big = ZSTD_MAGIC.to_vec();
        big.extend_from_slice(&[0xE0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]);
        assert!(matches!(decode(&big), Err(BodyError::Size)));
    }

    #[test]
    fn the_dictionary_is_a_zstd_dictionary_with_an_id() {
        assert_eq!(DICTIONARY.get(..4), Some(&[0x37, 0xA4, 0x30, 0xEC][..]));
        let stored = encode(br#"{"id":"y"}"#).expect("encode");
        assert_ne!(
            zstd::zstd_safe::get_dict_id_from_frame(&stored),
            None,
            "frames name their dictionary"
        );
    }
}
