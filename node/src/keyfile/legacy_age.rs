//! Reader for the passphrase-protected key files earlier versions wrote: an age v1 file
//! (<https://age-encryption.org/v1>) with one scrypt recipient, in ASCII armor, holding a PKCS#8
//! PEM key. It exists only so that such a file can be opened once and rewritten as encrypted
//! PKCS#8 ([`super::read_secret_key_with`] migrates it); nothing writes this format any more.
//!
//! Only what such a key file uses is accepted: the armored form, exactly one `scrypt` stanza, a
//! payload of one chunk. The header MAC and every AEAD tag are checked; a wrong passphrase and a
//! damaged file are both [`AgeError::Decrypt`].

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::Mac as _;
use sha2::Sha256;

/// The armor's first line.
pub const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";
const ARMOR_END: &str = "-----END AGE ENCRYPTED FILE-----";
const VERSION_LINE: &str = "age-encryption.org/v1";
const SCRYPT_LABEL: &[u8] = b"age-encryption.org/v1/scrypt";
/// The largest scrypt work factor accepted (2^22 × 1 KiB of memory): age calibrates the work
/// factor to about a second, which is far below this on any machine in service.
const MAX_LOG_N: u8 = 22;
/// One payload chunk holds at most this much plaintext; a key file is far smaller.
const CHUNK: usize = 64 * 1024;

/// Why an age key file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AgeError {
    /// The file does not have the shape of an armored, passphrase-protected age file.
    #[error("not a passphrase-protected age file: {0}")]
    Format(&'static str),
    /// The passphrase is wrong or the file was altered.
    #[error("the passphrase is wrong (or the file is damaged)")]
    Decrypt,
}

fn b64_nopad(s: &str) -> Result<Vec<u8>, AgeError> {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s)
        .map_err(|_| AgeError::Format("bad base64 in the header"))
}

fn hkdf(ikm: &[u8], salt: &[u8], info: &[u8]) -> Result<[u8; 32], AgeError> {
    let mut out = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, &mut out)
        .map_err(|_| AgeError::Decrypt)?;
    Ok(out)
}

/// Removes the ASCII armor, returning the binary age file.
fn dearmor(text: &str) -> Result<Vec<u8>, AgeError> {
    let body = text
        .trim()
        .strip_prefix(ARMOR_BEGIN)
        .and_then(|rest| rest.trim_end().strip_suffix(ARMOR_END))
        .ok_or(AgeError::Format("missing armor lines"))?;
    let joined: String = body.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(joined)
        .map_err(|_| AgeError::Format("bad base64 in the armor"))
}

/// Decrypts an armored age file protected by `passphrase`, returning its plaintext.
pub fn decrypt(armored: &[u8], passphrase: &str) -> Result<Vec<u8>, AgeError> {
    let text = std::str::from_utf8(armored).map_err(|_| AgeError::Format("not text"))?;
    let file = dearmor(text)?;
    // The header is text up to the MAC line; the payload follows the MAC line's newline.
    let mac_at = find(&file, b"\n--- ").ok_or(AgeError::Format("no header MAC line"))?;
    let header_end = mac_at + 4; // up to and including "---"
    let header = file
        .get(..header_end)
        .ok_or(AgeError::Format("truncated header"))?;
    let rest = file
        .get(header_end + 1..)
        .ok_or(AgeError::Format("truncated header"))?;
    let nl = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(AgeError::Format("truncated header"))?;
    let mac = b64_nopad(
        std::str::from_utf8(rest.get(..nl).ok_or(AgeError::Format("truncated header"))?)
            .map_err(|_| AgeError::Format("not text"))?,
    )?;
    let payload = rest
        .get(nl + 1..)
        .ok_or(AgeError::Format("truncated payload"))?;

    let header_text =
        std::str::from_utf8(header).map_err(|_| AgeError::Format("header is not text"))?;
    let mut lines = header_text.split('\n');
    if lines.next() != Some(VERSION_LINE) {
        return Err(AgeError::Format("not an age v1 file"));
    }
    let stanza = lines.next().ok_or(AgeError::Format("no recipient"))?;
    let args: Vec<&str> = stanza.split(' ').collect();
    let (salt, log_n) = match args.as_slice() {
        ["->", "scrypt", salt, log_n] => (b64_nopad(salt)?, *log_n),
        _ => return Err(AgeError::Format("not protected by a passphrase (scrypt)")),
    };
    let log_n: u8 = log_n
        .parse()
        .map_err(|_| AgeError::Format("bad scrypt work factor"))?;
    if salt.len() != 16 || log_n == 0 || log_n > MAX_LOG_N {
        return Err(AgeError::Format("scrypt parameters out of range"));
    }
    // The stanza body: base64 lines, the last shorter than 64 characters, then "---".
    let mut body_b64 = String::new();
    for line in lines.by_ref() {
        if line == "---" {
            break;
        }
        body_b64.push_str(line);
        if line.len() < 64 {
            if lines.next() != Some("---") {
                return Err(AgeError::Format("more than one recipient"));
            }
            break;
        }
    }
    let wrapped = b64_nopad(&body_b64)?;

    let mut scrypt_salt = SCRYPT_LABEL.to_vec();
    scrypt_salt.extend_from_slice(&salt);
    let params = scrypt::Params::new(log_n, 8, 1, 32)
        .map_err(|_| AgeError::Format("scrypt parameters out of range"))?;
    let mut wrap_key = [0u8; 32];
    scrypt::scrypt(passphrase.as_bytes(), &scrypt_salt, &params, &mut wrap_key)
        .map_err(|_| AgeError::Decrypt)?;
    let file_key = ChaCha20Poly1305::new(&wrap_key.into())
        .decrypt(&[0u8; 12].into(), wrapped.as_slice())
        .map_err(|_| AgeError::Decrypt)?;
    if file_key.len() != 16 {
        return Err(AgeError::Decrypt);
    }

    let mac_key = hkdf(&file_key, b"", b"header")?;
    let mut hmac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(&mac_key)
        .map_err(|_| AgeError::Decrypt)?;
    hmac.update(header);
    hmac.verify_slice(&mac).map_err(|_| AgeError::Decrypt)?;

    let nonce = payload
        .get(..16)
        .ok_or(AgeError::Format("truncated payload"))?;
    let chunk = payload.get(16..).unwrap_or_default();
    if chunk.len() > CHUNK + 16 {
        return Err(AgeError::Format("payload larger than a key file"));
    }
    let payload_key = hkdf(&file_key, nonce, b"payload")?;
    // The only chunk is the last: counter 0, last-chunk flag 1.
    let mut chunk_nonce = [0u8; 12];
    chunk_nonce[11] = 1;
    ChaCha20Poly1305::new(&payload_key.into())
        .decrypt(&chunk_nonce.into(), chunk)
        .map_err(|_| AgeError::Decrypt)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Written by the age crate 0.11 (as earlier versions of `tg key generate --passphrase`
    /// did): seed `[7; 32]`, passphrase `legacy passphrase 1`, scrypt work factor 10 (age
    /// itself picks about 18 to 20; a small one keeps the test fast).
    pub(crate) const FIXTURE: &str = include_str!("legacy-age-fixture.key");

    #[test]
    fn opens_a_file_the_age_crate_wrote() {
        let pem = decrypt(FIXTURE.as_bytes(), "legacy passphrase 1").unwrap();
        assert!(pem.starts_with(b"-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn a_wrong_passphrase_or_an_altered_byte_is_refused() {
        assert!(matches!(
            decrypt(FIXTURE.as_bytes(), "legacy passphrase 2"),
            Err(AgeError::Decrypt)
        ));
        // Flip one character of the armored payload (the fourth body line).
        let mut lines: Vec<String> = FIXTURE.lines().map(str::to_owned).collect();
        let line = &mut lines[4];
        let c = if line.starts_with('A') { "B" } else { "A" };
        line.replace_range(0..1, c);
        let altered = lines.join("\n");
        assert!(decrypt(altered.as_bytes(), "legacy passphrase 1").is_err());
        assert!(matches!(
            decrypt(
                b"-----BEGIN AGE ENCRYPTED FILE-----\n-----END AGE ENCRYPTED FILE-----",
                "x"
            ),
            Err(AgeError::Format(_))
        ));
    }
}
