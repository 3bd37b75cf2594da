//! The format of Halberd's own API keys, and its offline check.
//!
//! `hbd_` + a 12-character public key id + `_` + a 32-character secret + a
//! 6-character checksum, all base62. The secret carries 32 × log2(62) ≈ 190 bits.
//! The checksum (CRC-32 of everything before it, in base62) lets a secret scanner
//! tell a real Halberd key from a string of the same shape without asking the
//! server, the way GitHub's token format does. The id lets the server find the
//! stored hash without comparing against every key.

/// The fixed prefix of every Halberd key.
pub const PREFIX: &str = "hbd_";
pub const ID_LEN: usize = 12;
pub const SECRET_LEN: usize = 32;
pub const CHECKSUM_LEN: usize = 6;
/// Length of a whole key.
pub const KEY_LEN: usize = PREFIX.len() + ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A key whose shape and checksum are right. Says nothing of whether the server
/// knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    pub id: &'a str,
}

/// Builds a key from its id and secret (both base62, of the lengths above).
pub fn format_key(id: &str, secret: &str) -> String {
    let mut key = String::with_capacity(KEY_LEN);
    key.push_str(PREFIX);
    key.push_str(id);
    key.push('_');
    key.push_str(secret);
    key.push_str(&checksum(key.as_bytes()));
    key
}

/// Checks shape and checksum; returns the key id.
pub fn parse_key(key: &str) -> Option<ParsedKey<'_>> {
    if key.len() != KEY_LEN || !key.is_ascii() || !key.starts_with(PREFIX) {
        return None;
    }
    let body = &key[PREFIX.len()..];
    let (id, rest) = body.split_at(ID_LEN);
    let rest = rest.strip_prefix('_')?;
    if !id
        .bytes()
        .chain(rest.bytes())
        .all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    let (_, sum) = key.split_at(KEY_LEN - CHECKSUM_LEN);
    if checksum(&key.as_bytes()[..KEY_LEN - CHECKSUM_LEN]) != sum {
        return None;
    }
    Some(ParsedKey { id })
}

/// Maps uniformly random bytes to base62 characters, dropping the bytes that
/// would bias the result (those of 248 and above), until `len` characters are
/// made. Returns `None` when `random` runs out first.
pub fn base62_from_random(random: &[u8], len: usize) -> Option<String> {
    let s: String = random
        .iter()
        .filter(|&&b| b < 248)
        .take(len)
        .map(|&b| BASE62[usize::from(b % 62)] as char)
        .collect();
    (s.len() == len).then_some(s)
}

fn checksum(data: &[u8]) -> String {
    let mut n = u64::from(crc32fast::hash(data));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "a1B2c3D4e5F6";
    const SECRET: &str = "0123456789abcdefghijABCDEFGHIJkl";

    #[test]
    fn round_trip() {
        let key = format_key(ID, SECRET);
        assert_eq!(key.len(), KEY_LEN);
        assert!(key.starts_with("hbd_a1B2c3D4e5F6_0123456789"));
        assert_eq!(parse_key(&key), Some(ParsedKey { id: ID }));
    }

    #[test]
    fn any_single_change_breaks_the_checksum() {
        let key = format_key(ID, SECRET);
        for i in PREFIX.len()..key.len() {
            if i == PREFIX.len() + ID_LEN {
                continue; // the separator
            }
            let mut bytes = key.clone().into_bytes();
            bytes[i] = if bytes[i] == b'x' { b'y' } else { b'x' };
            let changed = String::from_utf8(bytes).unwrap();
            assert_eq!(parse_key(&changed), None, "changed byte {i}");
        }
    }

    #[test]
    fn wrong_shapes_are_refused() {
        let key = format_key(ID, SECRET);
        assert_eq!(parse_key(&key[1..]), None);
        assert_eq!(parse_key(&format!("{key}x")), None);
        assert_eq!(parse_key(&key.replace("hbd_", "hbx_")), None);
        assert_eq!(parse_key(""), None);
        assert_eq!(parse_key("hbd_ü"), None);
        // Right length in bytes, but not ASCII: must not be sliced mid-character.
        let wide = format!(
            "hbd_{}é{}",
            "a".repeat(ID_LEN - 1),
            "b".repeat(KEY_LEN - PREFIX.len() - ID_LEN - 1)
        );
        assert_eq!(wide.len(), KEY_LEN);
        assert_eq!(parse_key(&wide), None);
    }

    #[test]
    fn base62_rejects_biased_bytes() {
        assert_eq!(
            base62_from_random(&[0, 61, 62, 255, 1], 4).as_deref(),
            Some("0z01")
        );
        assert_eq!(base62_from_random(&[250, 251], 1), None);
    }
}
