//! Tamper evidence, the write side: the hash each event row carries, chained within its
//! stream and written at append, and the link of the global chain built from them.
//!
//! Stream hash of an event (hex of SHA-256):
//! `prev ‖ lp(aggregate_type) ‖ lp(aggregate_id) ‖ be64(sequence) ‖ lp(event_type) ‖
//!  lp(event_version) ‖ lp(payload) ‖ lp(metadata)`, where `prev` is the stream's previous
//! hash (32 zero bytes for sequence 1), `lp(x)` is `be64(len(x)) ‖ x`, and payload and
//! metadata are the stored JSON text exactly as stored (never re-serialized).
//! Chain link: `SHA-256(previous link ‖ stream hash)`, 32 zero bytes before the first.

use sha2::{Digest, Sha256};

pub const ZERO: [u8; 32] = [0; 32];

fn lp(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// The stream hash of one event, given its stream's previous hash.
#[allow(clippy::too_many_arguments)]
pub fn stream_hash(
    prev: &[u8; 32],
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
    event_type: &str,
    event_version: &str,
    payload: &str,
    metadata: &str,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    lp(&mut hasher, aggregate_type.as_bytes());
    lp(&mut hasher, aggregate_id.as_bytes());
    hasher.update(sequence.to_be_bytes());
    lp(&mut hasher, event_type.as_bytes());
    lp(&mut hasher, event_version.as_bytes());
    lp(&mut hasher, payload.as_bytes());
    lp(&mut hasher, metadata.as_bytes());
    hasher.finalize().into()
}

/// The next link of the global chain.
pub fn chain_link(prev: &[u8; 32], stream_hash: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(stream_hash);
    hasher.finalize().into()
}

pub fn to_hex(bytes: &[u8; 32]) -> String {
    hex::encode(bytes)
}

pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_what_is_not_a_hash() {
        let hash = chain_link(&ZERO, &[7; 32]);
        assert_eq!(from_hex(&to_hex(&hash)), Some(hash));
        assert_eq!(from_hex(&to_hex(&hash).to_uppercase()), Some(hash));
        let short = &to_hex(&hash)[..62];
        for bad in [
            "",
            short,
            &format!("{}zz", short),
            &format!("{}00", to_hex(&hash)),
        ] {
            assert_eq!(from_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn hashes_follow_the_documented_layout() {
        let mut expected = Sha256::new();
        expected.update([0u8; 32]);
        for part in ["User", "u1"] {
            expected.update((part.len() as u64).to_be_bytes());
            expected.update(part.as_bytes());
        }
        expected.update(1i64.to_be_bytes());
        for part in ["UserRegistered", "1", "{\"a\":1}", "{}"] {
            expected.update((part.len() as u64).to_be_bytes());
            expected.update(part.as_bytes());
        }
        let expected: [u8; 32] = expected.finalize().into();
        assert_eq!(
            stream_hash(
                &ZERO,
                "User",
                "u1",
                1,
                "UserRegistered",
                "1",
                "{\"a\":1}",
                "{}"
            ),
            expected
        );
        assert_eq!(from_hex(&to_hex(&expected)), Some(expected));
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn length_prefixes_keep_field_boundaries_apart() {
        let a = stream_hash(&ZERO, "ab", "c", 1, "t", "1", "{}", "{}");
        let b = stream_hash(&ZERO, "a", "bc", 1, "t", "1", "{}", "{}");
        assert_ne!(a, b);
    }
}
