//! Comparing secrets (tokens, passwords) in constant time: [`secret_eq`] is the one compare the
//! code base uses for them.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether `given` is `expected`, in time that depends on neither their contents nor their
/// lengths: both are hashed to SHA-256 first (fixed 32 bytes), then the digests are compared
/// with `subtle`'s constant-time `ct_eq`. A length mismatch is not an early exit, so the time
/// says nothing about the secret's length either.
pub fn secret_eq(given: &[u8], expected: &[u8]) -> bool {
    bool::from(digest(given).ct_eq(&digest(expected)))
}

/// The SHA-256 digest of a secret: what [`secret_eq`] compares, and what a server keeps of
/// its tokens so that it can compare them with [`digest_in`].
pub fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Whether `given` (a [`digest`]) is one of `known`: every entry is compared, in constant
/// time, so the time says neither which one matched nor whether one did.
pub fn digest_in(given: &[u8; 32], known: &[[u8; 32]]) -> bool {
    bool::from(
        known
            .iter()
            .fold(subtle::Choice::from(0), |acc, k| acc | k.ct_eq(given)),
    )
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

    #[test]
    fn a_digest_is_found_among_known_ones_only_when_there() {
        let known = [digest(b"first-token"), digest(b"second-token")];
        assert!(digest_in(&digest(b"second-token"), &known));
        assert!(!digest_in(&digest(b"third-token"), &known));
        assert!(!digest_in(&digest(b"first-token"), &[]));
    }
}
