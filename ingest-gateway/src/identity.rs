//! Proof of an identity for `/context`: who holds a session id may read the
//! session's anonymous profile, but an identified profile (one some event named
//! by `profileId`) gathers what every session and data source said of that
//! person, and anyone can send an event naming `alice@x.com` in a session of
//! their own. So its properties are answered only when the request carries
//! `profileIdHash`: the hex HMAC-SHA256 of the profile id under the data
//! source's identity secret, computed by the site's server (which knows who is
//! signed in), as Intercom's identity verification does. Without a secret, or
//! without a valid proof, the answer names the profile but holds none of its
//! data (`"redacted": true`).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// A data source's identity secret, ready to verify proofs.
#[derive(Debug, Clone)]
pub struct IdentityKey {
    secret: Vec<u8>,
}

impl IdentityKey {
    pub fn new(secret: &str) -> Self {
        Self {
            secret: secret.as_bytes().to_vec(),
        }
    }

    /// The proof for `profile_id`: 32 bytes.
    pub fn proof(&self, profile_id: &str) -> [u8; 32] {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            // HMAC takes keys of any length; this arm is never taken.
            Err(_) => return [0; 32],
        };
        mac.update(profile_id.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `presented` (hex, either case) is the proof for `profile_id`;
    /// compared in constant time.
    pub fn verifies(&self, profile_id: &str, presented: Option<&str>) -> bool {
        let Some(presented) = presented.and_then(crate::auth::decode_hex32) else {
            return false;
        };
        bool::from(self.proof(profile_id).ct_eq(&presented))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_proof_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        let key = IdentityKey::new("Jefe");
        assert_eq!(
            hex(&key.proof("what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn only_the_proof_of_that_id_under_that_secret_verifies() {
        let key = IdentityKey::new("is_secret");
        let alice = hex(&key.proof("alice@x.com"));
        assert!(key.verifies("alice@x.com", Some(&alice)));
        assert!(key.verifies("alice@x.com", Some(&alice.to_uppercase())));
        assert!(!key.verifies("bob@x.com", Some(&alice)));
        assert!(!IdentityKey::new("other").verifies("alice@x.com", Some(&alice)));
        for bad in [None, Some(""), Some("zz"), Some(&alice[..62])] {
            assert!(!key.verifies("alice@x.com", bad), "{bad:?}");
        }
    }
}
