//! HMAC-SHA256 signatures for the embedded store's URLs: what a URL allows (method,
//! key, expiry, and for uploads the exact size and type) is signed, so a client can
//! change none of it.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl Signer {
    /// A key of its own derived from the server's token secret, so every node signs
    /// alike and a URL signature can never stand in for a token signature.
    pub fn derive(secret: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"parley blob url signing v1\0");
        hasher.update(secret);
        Self {
            key: hasher.finalize().into(),
        }
    }

    fn mac(&self, parts: &[&str]) -> HmacSha256 {
        // `new_from_slice` accepts any key length for HMAC.
        let mut mac = match HmacSha256::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable_hmac(),
        };
        for part in parts {
            // Length-prefixed, so no two different lists sign the same bytes.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    /// Hex signature over `parts`.
    pub fn sign(&self, parts: &[&str]) -> String {
        hex::encode(self.mac(parts).finalize().into_bytes())
    }

    /// Whether `signature` is the signature of `parts`, compared in constant time.
    pub fn verify(&self, parts: &[&str], signature: &str) -> bool {
        match hex::decode(signature) {
            Ok(bytes) => self.mac(parts).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // HMAC takes keys of every length; this cannot happen.
    panic!("HMAC refused a 32-byte key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_its_own_parts() {
        let signer = Signer::derive(b"secret");
        let sig = signer.sign(&["GET", "files/x", "100"]);
        assert!(signer.verify(&["GET", "files/x", "100"], &sig));
        assert!(!signer.verify(&["GET", "files/x", "101"], &sig));
        assert!(!signer.verify(&["GET", "files/x1", "00"], &sig));
        assert!(!Signer::derive(b"other").verify(&["GET", "files/x", "100"], &sig));
        assert!(!signer.verify(&["GET", "files/x", "100"], "zz"));
    }
}
