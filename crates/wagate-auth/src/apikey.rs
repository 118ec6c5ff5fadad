//! API keys: `wag_` + 30 random base62 characters + a 6-character base62 checksum.
//!
//! The checksum is the CRC-32 (IEEE) of the 30 random characters, written in base62
//! (alphabet `0-9A-Za-z`) and left-padded with `0` to six characters, so a secret scanner can
//! tell a real key from a look-alike without asking the gateway. Only the SHA-256 of the whole
//! key string is stored.

use std::fmt;

use rand::Rng;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use wagate_core::hex;

/// Every key starts with this.
pub const PREFIX: &str = "wag_";
/// Number of random characters after the prefix.
pub const RANDOM_LEN: usize = 30;
/// Number of checksum characters at the end.
pub const CHECKSUM_LEN: usize = 6;
/// Total length of a key.
pub const KEY_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly generated key: the secret to show the user once, and the hash to store.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    /// The whole key string (`wag_...`). Show it once; never log or store it.
    pub secret: String,
    /// SHA-256 of `secret`.
    pub hash: [u8; 32],
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey").field("secret", &"[redacted]").field("hash", &hex(&self.hash)).finish()
    }
}

/// Why a string is not a well-formed API key. Messages never contain the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyFormatError {
    #[error("API key does not start with `wag_`")]
    Prefix,
    #[error("API key has the wrong length")]
    Length,
    #[error("API key contains characters outside [A-Za-z0-9]")]
    Charset,
    #[error("API key checksum does not match")]
    Checksum,
}

/// A new random key (30 characters from the operating system's CSPRNG, ~178 bits).
pub fn generate() -> GeneratedKey {
    let mut rng = OsRng;
    let random: String = (0..RANDOM_LEN).map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char).collect();
    let mut secret = String::with_capacity(KEY_LEN);
    secret.push_str(PREFIX);
    secret.push_str(&random);
    secret.push_str(&checksum(random.as_bytes()));
    let hash = hash(&secret);
    GeneratedKey { secret, hash }
}

/// Checks the format of `token` (prefix, length, charset, checksum) without any lookup, and
/// returns the SHA-256 to look the key up by.
pub fn parse(token: &str) -> Result<[u8; 32], ApiKeyFormatError> {
    let rest = token.strip_prefix(PREFIX).ok_or(ApiKeyFormatError::Prefix)?;
    if rest.len() != RANDOM_LEN + CHECKSUM_LEN {
        return Err(ApiKeyFormatError::Length);
    }
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiKeyFormatError::Charset);
    }
    let (random, sum) = rest.split_at(RANDOM_LEN);
    if checksum(random.as_bytes()).as_bytes() != sum.as_bytes() {
        return Err(ApiKeyFormatError::Checksum);
    }
    Ok(hash(token))
}

/// Whether `token` claims to be an API key (starts with `wag_`); it may still be malformed.
pub fn looks_like_api_key(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// SHA-256 of the whole key string, as stored.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// CRC-32 of `random` in base62, left-padded with `0` to [`CHECKSUM_LEN`] characters.
fn checksum(random: &[u8]) -> String {
    let mut n = crc32fast::hash(random);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    debug_assert_eq!(n, 0, "62^6 > 2^32");
    out.iter().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_parse_round_trip() {
        for _ in 0..200 {
            let key = generate();
            assert_eq!(key.secret.len(), KEY_LEN);
            assert!(key.secret.starts_with("wag_"));
            assert!(key.secret[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
            assert!(looks_like_api_key(&key.secret));
            assert_eq!(parse(&key.secret), Ok(key.hash));
            assert_eq!(key.hash, hash(&key.secret));
        }
    }

    #[test]
    fn keys_differ() {
        let a = generate();
        let b = generate();
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn hash_is_sha256_of_whole_string() {
        // SHA-256("abc")
        assert_eq!(hex(&hash("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn checksum_is_padded_crc32_in_base62() {
        // CRC-32("") = 0
        assert_eq!(checksum(b""), "000000");
        // CRC-32("123456789") = 0xCBF43926, in base62 (0-9A-Za-z) "3jZRME"
        assert_eq!(checksum(b"123456789"), "3jZRME");
        // u32::MAX fits in six base62 digits.
        assert_eq!(checksum(b"123456789").len(), 6);
    }

    #[test]
    fn checksum_catches_every_one_character_change() {
        let key = generate();
        let bytes = key.secret.as_bytes();
        for i in PREFIX.len()..KEY_LEN {
            for &c in BASE62.iter().filter(|&&c| c != bytes[i]) {
                let mut changed = bytes.to_vec();
                changed[i] = c;
                let changed = String::from_utf8(changed).unwrap();
                assert_eq!(parse(&changed), Err(ApiKeyFormatError::Checksum), "position {i}");
            }
        }
    }

    #[test]
    fn rejects_bad_prefix_length_and_charset() {
        let key = generate().secret;
        assert_eq!(parse(&key.replacen("wag_", "wagx", 1)), Err(ApiKeyFormatError::Prefix));
        assert_eq!(parse(&key.replacen("wag_", "WAG_", 1)), Err(ApiKeyFormatError::Prefix));
        assert_eq!(parse(""), Err(ApiKeyFormatError::Prefix));
        assert_eq!(parse("wag_"), Err(ApiKeyFormatError::Length));
        assert_eq!(parse(&key[..KEY_LEN - 1]), Err(ApiKeyFormatError::Length));
        assert_eq!(parse(&format!("{key}A")), Err(ApiKeyFormatError::Length));
        assert_eq!(parse(&format!(" {key}")), Err(ApiKeyFormatError::Prefix));
        let mut dash = key.clone().into_bytes();
        dash[10] = b'-';
        assert_eq!(parse(std::str::from_utf8(&dash).unwrap()), Err(ApiKeyFormatError::Charset));
        // A multi-byte character keeping the byte length still fails (charset, not a panic).
        let multibyte = format!("{}é{}", &key[..10], &key[12..]);
        assert_eq!(multibyte.len(), KEY_LEN);
        assert_eq!(parse(&multibyte), Err(ApiKeyFormatError::Charset));
        assert!(!looks_like_api_key("eyJhbGciOi"));
    }

    #[test]
    fn debug_redacts_the_secret() {
        let key = generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.secret));
        assert!(!shown.contains(&key.secret[4..20]));
        assert!(shown.contains("redacted"));
    }
}
