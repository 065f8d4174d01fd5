//! JetStream API answers that no retry fixes: the server refuses to create a stream or a
//! consumer as configured (its subjects overlap another stream's, more than one replica on a
//! server that is not clustered, a filter subject outside the stream, JetStream not enabled).
//!
//! Mature clients report these as configuration errors rather than retrying them quietly for
//! ever: the JetStream sink pauses with the server's reason ([`crate::SinkError::Paused`],
//! logged at error level, calls kept, tried again after the backoff ceiling in case the stream
//! is fixed on the server), and `nats-relay` exits at start. Everything else (timeouts, no
//! leader yet, not enough live peers for the replicas) stays retryable: a cluster that is
//! starting or has lost a node answers that way for a while.

use async_nats::jetstream::ErrorCode;

/// The error codes (nats-server's `errors.json`) that say "not as configured".
const REFUSED: [u64; 16] = [
    10_013, // consumer name already in use
    10_016, // consumer expected to be durable, no durable name set
    10_017, // durable name does not match the subject
    10_018, // durable name not set
    10_021, // stream external API prefix overlaps
    10_022, // stream external delete prefix overlaps
    10_026, // maximum consumers limit reached
    10_027, // maximum streams limit reached
    10_039, // JetStream not enabled for the account
    10_052, // stream configuration is invalid
    10_058, // stream name already in use with a different configuration
    10_065, // subjects overlap with an existing stream
    10_074, // replicas > 1 not supported in non-clustered mode
    10_076, // JetStream not enabled
    10_093, // consumer filter subject is not a subset of the stream's subjects
    10_094, // invalid consumer delivery policy
];

/// Whether the JetStream API's answer `e` says the request cannot succeed as configured.
pub fn is_refused_as_configured(e: &async_nats::jetstream::Error) -> bool {
    let ErrorCode(code) = e.error_code();
    REFUSED.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: u64) -> async_nats::jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": 400,
            "err_code": code,
            "description": "x"
        }))
        .unwrap_or_else(|e| unreachable!("a JetStream error's JSON: {e}"))
    }

    #[test]
    fn overlaps_and_bad_replicas_are_configuration_but_no_leader_is_not() {
        assert!(is_refused_as_configured(&answer(10_065)));
        assert!(is_refused_as_configured(&answer(10_074)));
        assert!(is_refused_as_configured(&answer(10_093)));
        // Not enough peers, no leader, stream not found: a cluster starting or missing a node.
        for code in [10_005, 10_008, 10_023, 10_059, 0] {
            assert!(!is_refused_as_configured(&answer(code)), "{code}");
        }
    }
}
