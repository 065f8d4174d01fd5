//! Comparing secrets (tokens, passwords) in constant time: [`secret_eq`] is the one compare the
//! code base uses for them.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether `given` is `expected`, in time that depends on neither their contents nor their
/// lengths: both are hashed to SHA-256 first (fixed 32 bytes), then the digests are compared
/// with `subtle`'s constant-time `ct_eq`. A length mismatch is not an early exit, so the time
/// says nothing about the secret's length either.
pub fn secret_eq(given: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(given);
    let b = Sha256::digest(expected);
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_when_equal() {
        assert!(secret_eq(b"s3cret", b"s3cret"));
        assert!(secret_eq(b"", b""));
        assert!(!secret_eq(b"s3cret", b"s3creT"));
        assert!(!secret_eq(b"s3cre", b"s3cret"), "a prefix");
        assert!(!secret_eq(b"s3cret\0", b"s3cret"));
        assert!(!secret_eq(b"", b"x"));
    }
}
