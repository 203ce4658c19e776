//! Sealing: what scopegate keeps in a browser's cookies is encrypted and authenticated (AES-256-GCM
//! from aws-lc, the crypto the TLS stack already uses), so a browser can neither read nor forge nor
//! alter it. Keys come as a list: the first seals, every one unseals, so an operator rotates by putting
//! a new key first and dropping the old one after the longest session has passed.
//!
//! A sealed value is `base64url(key id ‖ nonce ‖ ciphertext ‖ tag)`. The key id (4 bytes of a hash of
//! the key) picks the key without trying each; the 96-bit nonce is random per seal. The purpose
//! (`session` or `login`) is authenticated as associated data, so a login-state cookie can never be
//! replayed as a session and the other way round.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

const KEY_ID_LEN: usize = 4;
const TAG_LEN: usize = 16;
/// Refuse to even decode cookies longer than a browser would keep (4096 bytes per cookie).
const MAX_SEALED_LEN: usize = 4096;

/// What a sealed value is for; authenticated with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Session,
    Login,
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"scopegate session v1",
            Purpose::Login => b"scopegate login v1",
        }
    }
}

/// Why a sealed value did not open. Deliberately coarse: which byte was wrong helps only a forger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsealError {
    /// Not base64url, too short or too long.
    Malformed,
    /// Sealed with a key scopegate no longer (or never) had.
    UnknownKey,
    /// The tag does not verify: tampered, forged, or sealed for another purpose.
    Forged,
}

struct RingKey {
    id: [u8; KEY_ID_LEN],
    key: LessSafeKey,
}

/// The key ring.
pub struct Sealer {
    keys: Vec<RingKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

fn key_id(key: &[u8; 32]) -> [u8; KEY_ID_LEN] {
    let mut input = b"scopegate cookie key id".to_vec();
    input.extend_from_slice(key);
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&d.as_ref()[..KEY_ID_LEN]);
    id
}

impl Sealer {
    /// A ring of 32-byte keys, the first one sealing. `None` for an empty list.
    pub fn new(keys: &[[u8; 32]]) -> Option<Sealer> {
        let keys: Vec<RingKey> = keys
            .iter()
            .filter_map(|k| {
                let unbound = UnboundKey::new(&AES_256_GCM, k).ok()?;
                Some(RingKey {
                    id: key_id(k),
                    key: LessSafeKey::new(unbound),
                })
            })
            .collect();
        (!keys.is_empty()).then_some(Sealer { keys })
    }

    /// Encrypts and authenticates `plain` for `purpose` under the first key.
    pub fn seal(&self, purpose: Purpose, plain: &[u8]) -> String {
        let key = &self.keys[0];
        let nonce_bytes: [u8; NONCE_LEN] = crate::util::random_bytes();
        let mut out = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce_bytes);
        let mut body = plain.to_vec();
        // Sealing with a valid key and a fresh nonce cannot fail for inputs below AES-GCM's 64 GiB bound.
        if key
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(purpose.aad()),
                &mut body,
            )
            .is_err()
        {
            return String::new();
        }
        out.extend_from_slice(&body);
        crate::util::b64url(&out)
    }

    /// Decrypts a value sealed for `purpose` by any key of the ring.
    pub fn unseal(&self, purpose: Purpose, sealed: &str) -> Result<Vec<u8>, UnsealError> {
        if sealed.len() > MAX_SEALED_LEN {
            return Err(UnsealError::Malformed);
        }
        let raw = crate::util::b64url_decode(sealed).ok_or(UnsealError::Malformed)?;
        if raw.len() < KEY_ID_LEN + NONCE_LEN + TAG_LEN {
            return Err(UnsealError::Malformed);
        }
        let (id, rest) = raw.split_at(KEY_ID_LEN);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(UnsealError::UnknownKey)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| UnsealError::Malformed)?;
        let mut body = body.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(purpose.aad()), &mut body)
            .map_err(|_| UnsealError::Forged)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 32] = [1; 32];
    const B: [u8; 32] = [2; 32];

    #[test]
    fn sealed_values_open_only_unchanged_for_their_purpose_under_a_known_key() {
        let ring = Sealer::new(&[A]).unwrap();
        let sealed = ring.seal(Purpose::Session, b"alice");
        assert_eq!(ring.unseal(Purpose::Session, &sealed).unwrap(), b"alice");
        assert_ne!(
            ring.seal(Purpose::Session, b"alice"),
            sealed,
            "a fresh nonce per seal"
        );
        assert_eq!(
            ring.unseal(Purpose::Login, &sealed),
            Err(UnsealError::Forged),
            "a session is not a login state"
        );
        // Flip one bit anywhere after the key id: the tag no longer holds.
        let mut raw = crate::util::b64url_decode(&sealed).unwrap();
        for i in KEY_ID_LEN..raw.len() {
            raw[i] ^= 1;
            let tampered = crate::util::b64url(&raw);
            assert_eq!(
                ring.unseal(Purpose::Session, &tampered),
                Err(UnsealError::Forged),
                "byte {i}"
            );
            raw[i] ^= 1;
        }
        assert_eq!(
            ring.unseal(Purpose::Session, "not base64!"),
            Err(UnsealError::Malformed)
        );
        assert_eq!(
            ring.unseal(Purpose::Session, "AAAA"),
            Err(UnsealError::Malformed)
        );
        let other = Sealer::new(&[B]).unwrap();
        assert_eq!(
            other.unseal(Purpose::Session, &sealed),
            Err(UnsealError::UnknownKey)
        );
    }

    #[test]
    fn rotation_keeps_old_values_open_and_seals_with_the_new_key() {
        let old = Sealer::new(&[A]).unwrap();
        let sealed_old = old.seal(Purpose::Session, b"bob");
        let rotated = Sealer::new(&[B, A]).unwrap();
        assert_eq!(
            rotated.unseal(Purpose::Session, &sealed_old).unwrap(),
            b"bob"
        );
        let sealed_new = rotated.seal(Purpose::Session, b"bob");
        assert_eq!(
            old.unseal(Purpose::Session, &sealed_new),
            Err(UnsealError::UnknownKey),
            "sealed with the new first key"
        );
        let retired = Sealer::new(&[B]).unwrap();
        assert_eq!(
            retired.unseal(Purpose::Session, &sealed_old),
            Err(UnsealError::UnknownKey)
        );
    }
}
