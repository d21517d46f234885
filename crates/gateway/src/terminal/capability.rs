//! Terminal capabilities: the token in a terminal URL. The reference frontend's iframes send
//! no cookie or header, so the URL itself must carry the right to open that one terminal. It
//! names the session (and its uid, so a new Session of the same name is not matched), the VM
//! target, the user and an expiry, and is signed with HMAC-SHA256 under a key every replica
//! shares: any replica verifies what another minted, and nothing in it (no address) can be
//! changed without breaking the signature.
//!
//! Format: `base64url(JSON claims) "." base64url(tag)`, no padding.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// Shortest key accepted, in bytes (HMAC-SHA256's block is 64; 32 random bytes are plenty).
pub const MIN_KEY_BYTES: usize = 32;
/// Longest token verified; anything longer is refused before decoding.
const MAX_TOKEN_LEN: usize = 2048;

/// What a terminal URL allows: opening a terminal on `target` of `session` as `user` until
/// `expires`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Session name.
    #[serde(rename = "s")]
    pub session: String,
    /// Session uid.
    #[serde(rename = "u")]
    pub uid: String,
    /// VM target (`control-plane`, `worker-1`, ...).
    #[serde(rename = "t")]
    pub target: String,
    /// The user the session belongs to.
    #[serde(rename = "w")]
    pub user: String,
    /// Terminal id, for logs and the client.
    #[serde(rename = "i")]
    pub terminal_id: String,
    /// Expiry, seconds since the Unix epoch.
    #[serde(rename = "e")]
    pub expires: i64,
}

/// Why a token was refused. The client sees one message for all (nothing to probe).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the terminal link is malformed")]
    Malformed,
    #[error("the terminal link's signature does not match")]
    BadSignature,
    #[error("the terminal link expired")]
    Expired,
}

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("reading the terminal key file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the terminal key file {path} has no key")]
    Empty { path: String },
    #[error("line {line} of the terminal key file {path} is shorter than {MIN_KEY_BYTES} bytes")]
    Short { path: String, line: usize },
    #[error("no randomness for a terminal key")]
    Random,
}

/// Signs and verifies capabilities.
pub struct Signer {
    /// The first key signs; all verify (key rotation).
    keys: Vec<hmac::Key>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("keys", &self.keys.len()).finish()
    }
}

impl Signer {
    /// Keys from raw secrets; the first signs.
    pub fn new<K: AsRef<[u8]>>(secrets: &[K]) -> Self {
        Self {
            keys: secrets
                .iter()
                .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.as_ref()))
                .collect(),
        }
    }

    /// Keys from a file, one per non-empty line (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Self, KeyFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if line.len() < MIN_KEY_BYTES {
                return Err(KeyFileError::Short {
                    path: shown,
                    line: i + 1,
                });
            }
            keys.push(line.as_bytes().to_vec());
        }
        if keys.is_empty() {
            return Err(KeyFileError::Empty { path: shown });
        }
        Ok(Self::new(&keys))
    }

    /// A random key, known to this process only.
    pub fn random() -> Result<Self, KeyFileError> {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| KeyFileError::Random)?;
        Ok(Self::new(&[key]))
    }

    /// The token for `claims`.
    pub fn mint(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).expect("claims serialize");
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let tag = hmac::sign(&self.keys[0], payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The claims of `token` if a key signed it and it has not expired at `now` (seconds
    /// since the Unix epoch).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, Refused> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Refused::Malformed);
        }
        let (payload, tag) = token.split_once('.').ok_or(Refused::Malformed)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| Refused::Malformed)?;
        if !self
            .keys
            .iter()
            .any(|k| hmac::verify(k, payload.as_bytes(), &tag).is_ok())
        {
            return Err(Refused::BadSignature);
        }
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| Refused::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| Refused::Malformed)?;
        if claims.expires <= now {
            return Err(Refused::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            session: "alice-1".into(),
            uid: "0b7c".into(),
            target: "control-plane".into(),
            user: "alice".into(),
            terminal_id: "t-1".into(),
            expires: 1_000,
        }
    }

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let signer = Signer::new(&[b"k".repeat(32)]);
        let token = signer.mint(&claims());
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "URL-safe: {token}"
        );
        assert_eq!(signer.verify(&token, 999), Ok(claims()));
        assert_eq!(signer.verify(&token, 1_000), Err(Refused::Expired));
    }

    #[test]
    fn a_changed_claim_or_another_key_is_refused() {
        let signer = Signer::new(&[b"k".repeat(32)]);
        let token = signer.mint(&claims());
        let (_, tag) = token.split_once('.').unwrap();
        let mut forged = claims();
        forged.target = "worker-1".into();
        forged.expires = i64::MAX;
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            signer.verify(&format!("{forged_payload}.{tag}"), 0),
            Err(Refused::BadSignature)
        );
        let other = Signer::new(&[b"o".repeat(32)]);
        assert_eq!(other.verify(&token, 0), Err(Refused::BadSignature));
        for junk in ["", ".", "abc", "a.b", &"x".repeat(5000)] {
            assert!(signer.verify(junk, 0).is_err(), "{junk}");
        }
    }

    #[test]
    fn every_key_of_the_file_verifies_and_the_first_signs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let (new, old) = ("n".repeat(40), "o".repeat(40));
        std::fs::write(&path, format!("\n{new}\n  {old}  \n")).unwrap();
        let rotated = Signer::from_file(&path).unwrap();
        let by_old = Signer::new(&[old.as_bytes()]).mint(&claims());
        assert_eq!(rotated.verify(&by_old, 0), Ok(claims()));
        let by_new = rotated.mint(&claims());
        assert_eq!(Signer::new(&[new.as_bytes()]).verify(&by_new, 0), Ok(claims()));

        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(
            Signer::from_file(&path),
            Err(KeyFileError::Short { line: 1, .. })
        ));
        std::fs::write(&path, "\n \n").unwrap();
        assert!(matches!(
            Signer::from_file(&path),
            Err(KeyFileError::Empty { .. })
        ));
        assert!(matches!(
            Signer::from_file(&dir.path().join("missing")),
            Err(KeyFileError::Read { .. })
        ));
    }
}
