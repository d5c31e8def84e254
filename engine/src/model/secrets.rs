//! Secrets at rest: the keys that seal what the store keeps of
//! configurations (tokens, signing secrets, private keys, credential headers
//! and query values), and that authenticate the machine code stored beside
//! scripts before it is loaded as native code.
//!
//! A [`Keyring`] holds the current key, which seals and tags, and older
//! keys, which still open and verify what they sealed: keys rotate without a
//! migration, each row moving to the current key when it is next written.
//! From each 32-byte [`MasterKey`] three values are derived with
//! HMAC-SHA256 over a label: an XChaCha20-Poly1305 key (sealing; random
//! 192-bit nonces, so nodes sharing a database need no nonce counter), an
//! HMAC-SHA256 key (compiled code), and a 4-byte [`KeyId`] stored with every
//! ciphertext and tag, so that reading picks the right key at once.
//!
//! Where the keys come from ([`Keyring::load`]): the settings
//! (`secret_key`, `old_secret_keys`) or, for the embedded SQLite store with
//! no key configured, a key file this module generates in the data
//! directory (mode 0600). A PostgreSQL cluster must be given its key: nodes
//! each inventing their own could not read each other's rows.
//!
//! This module owns the key material and the formats of sealed text and
//! tagged code. It must never log, print, `Debug`-format or put in an error
//! a key or a plaintext, never hand back data that failed authentication,
//! and never store a key in the database.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What sealed text starts with; JSON never does.
const SEALED_PREFIX: &str = "sealed:v1:";
/// What tagged compiled code starts with; wasmtime's code (an ELF image)
/// never does.
const CODE_MAGIC: &[u8; 8] = b"SLCODE\x01\0";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 32;
const CODE_HEADER_LEN: usize = CODE_MAGIC.len() + 4 + TAG_LEN;

/// A 32-byte master key, written as base64 (`openssl rand -base64 32`).
/// Never shown: its `Debug` reads `MasterKey(***)`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(key))
    }

    /// The key as written in settings and the key file.
    fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

impl std::str::FromStr for MasterKey {
    type Err = KeyError;

    fn from_str(raw: &str) -> Result<Self, KeyError> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(raw.trim()).map_err(|_| KeyError::Invalid)?;
        bytes.try_into().map(Self).map_err(|_| KeyError::Invalid)
    }
}

impl TryFrom<String> for MasterKey {
    type Error = KeyError;
    fn try_from(raw: String) -> Result<Self, KeyError> {
        raw.parse()
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

/// Names a master key in sealed text and tags: derived from the key, so it
/// says which key without saying anything about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 4]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Why a key could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A configured key is not base64 of 32 bytes.
    #[error("a secret key is base64 of 32 bytes (make one with `openssl rand -base64 32`)")]
    Invalid,
    /// No key is configured where one must be (PostgreSQL).
    #[error(
        "the nodes sharing a PostgreSQL database need one secret key: set `secret_key` (or \
         SLUICE_SECRET_KEY) to the same base64 32-byte key on every node (make one with \
         `openssl rand -base64 32`)"
    )]
    Required,
    /// The key file could not be read or written.
    #[error("secret key file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// The operating system gave no random bytes.
    #[error("no random source: {0}")]
    Random(String),
}

/// Why sealed text or tagged code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Not in the sealed (or tagged) format at all.
    #[error("not sealed")]
    NotSealed,
    /// Sealed, but cut short or not decodable.
    #[error("sealed data is malformed")]
    Malformed,
    /// Sealed with a key the keyring does not hold.
    #[error("sealed with key {0}, which is not among the configured secret keys (`secret_key`, `old_secret_keys`)")]
    UnknownKey(KeyId),
    /// Authentication failed: altered, or sealed for another row.
    #[error("sealed data failed authentication (altered, or moved from another row)")]
    Tampered,
}

/// The keys derived from one master key.
struct Derived {
    id: KeyId,
    cipher: XChaCha20Poly1305,
    code: [u8; 32],
}

impl Derived {
    fn new(master: &MasterKey) -> Self {
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut mac = <HmacSha256 as Mac>::new_from_slice(&master.0).expect("HMAC takes keys of any length");
            mac.update(label);
            mac.finalize().into_bytes().into()
        };
        let id = derive(b"sluice key id v1");
        let seal = derive(b"sluice seal v1");
        Self {
            id: KeyId([id[0], id[1], id[2], id[3]]),
            cipher: XChaCha20Poly1305::new(&seal.into()),
            code: derive(b"sluice compiled code v1"),
        }
    }

    fn code_tag(&self, subject: &[u8], code: &[u8]) -> HmacSha256 {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.code).expect("HMAC takes keys of any length");
        mac.update(CODE_MAGIC);
        mac.update(&self.id.0);
        mac.update(&(subject.len() as u64).to_le_bytes());
        mac.update(subject);
        mac.update(code);
        mac
    }
}

/// Where the current key came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The settings (`secret_key` or SLUICE_SECRET_KEY).
    Configured,
    /// The key file in the data directory; `generated` on first start.
    File { path: PathBuf, generated: bool },
}

/// The current key and the older ones still accepted for reading.
pub struct Keyring {
    current: Derived,
    older: Vec<Derived>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field("older", &self.older.iter().map(|k| k.id).collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// `current` seals; it and `older` open. Duplicates are dropped.
    pub fn new(current: &MasterKey, older: &[MasterKey]) -> Self {
        let current = Derived::new(current);
        let mut kept: Vec<Derived> = Vec::new();
        for key in older.iter().map(Derived::new) {
            if key.id != current.id && !kept.iter().any(|k| k.id == key.id) {
                kept.push(key);
            }
        }
        Self { current, older: kept }
    }

    /// The keyring from the settings. `key_file` is where the embedded
    /// store keeps a generated key (`None` on PostgreSQL, where a key must
    /// be configured): read when it exists, made (mode 0600) when no key is
    /// configured, and kept as an older key when one is, so a node moving
    /// from the generated key to a configured one still reads its rows.
    pub fn load(configured: Option<&MasterKey>, older: &[MasterKey], key_file: Option<&Path>) -> Result<(Self, KeySource), KeyError> {
        let from_file = match key_file {
            Some(path) => read_key_file(path)?,
            None => None,
        };
        match (configured, from_file, key_file) {
            (Some(current), file, _) => {
                let mut older = older.to_vec();
                older.extend(file);
                Ok((Self::new(current, &older), KeySource::Configured))
            }
            (None, Some(file), Some(path)) => Ok((Self::new(&file, older), KeySource::File { path: path.into(), generated: false })),
            (None, None, Some(path)) => {
                let key = write_key_file(path)?;
                Ok((Self::new(&key, older), KeySource::File { path: path.into(), generated: true }))
            }
            (None, _, None) => Err(KeyError::Required),
        }
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> KeyId {
        self.current.id
    }

    /// Ids of the older keys, still opening what they sealed.
    pub fn older_ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.older.iter().map(|k| k.id)
    }

    fn key(&self, id: KeyId) -> Option<&Derived> {
        std::iter::once(&self.current).chain(&self.older).find(|k| k.id == id)
    }

    /// Whether `text` is in the sealed format (else it was stored before
    /// sealing existed).
    pub fn is_sealed(text: &str) -> bool {
        text.starts_with(SEALED_PREFIX)
    }

    /// The key id `text` was sealed with, if it is sealed.
    pub fn sealed_with(text: &str) -> Option<KeyId> {
        let rest = text.strip_prefix(SEALED_PREFIX)?;
        parse_key_id(rest.get(..8)?)
    }

    /// Seals `plaintext` under the current key, bound to `context` (what
    /// the text belongs to, e.g. a row's identity): it opens only with the
    /// same context. Returns `sealed:v1:<key id>:<base64url of nonce,
    /// ciphertext and tag>`.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        // The same source makes every key and id in the engine; without it
        // nothing works, so there is no fallback to a weaker nonce.
        getrandom::fill(&mut nonce).expect("the operating system's random source");
        let header = format!("{SEALED_PREFIX}{}:", self.current.id);
        let aad = [header.as_bytes(), context].concat();
        let ciphertext = self
            .current
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: &aad })
            .expect("XChaCha20-Poly1305 seals any message an engine holds");
        let mut body = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&ciphertext);
        header + &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
    }

    /// Opens what [`Keyring::seal`] made with the same `context`, under
    /// whichever held key sealed it.
    pub fn open(&self, sealed: &str, context: &[u8]) -> Result<Vec<u8>, OpenError> {
        let rest = sealed.strip_prefix(SEALED_PREFIX).ok_or(OpenError::NotSealed)?;
        let (id, body) = rest.split_once(':').ok_or(OpenError::Malformed)?;
        let id = parse_key_id(id).ok_or(OpenError::Malformed)?;
        let key = self.key(id).ok_or(OpenError::UnknownKey(id))?;
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).map_err(|_| OpenError::Malformed)?;
        if body.len() < NONCE_LEN + 16 {
            return Err(OpenError::Malformed);
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let header = &sealed[..SEALED_PREFIX.len() + 9];
        let aad = [header.as_bytes(), context].concat();
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError::Malformed)?;
        key.cipher.decrypt(&XNonce::from(nonce), Payload { msg: ciphertext, aad: &aad }).map_err(|_| OpenError::Tampered)
    }

    /// Frames compiled `code` with a tag under the current key, bound to
    /// `subject` (the sha256 of the uploaded bytes it was compiled from).
    pub fn tag_code(&self, subject: &[u8], code: &[u8]) -> Vec<u8> {
        let tag = self.current.code_tag(subject, code).finalize().into_bytes();
        let mut framed = Vec::with_capacity(CODE_HEADER_LEN + code.len());
        framed.extend_from_slice(CODE_MAGIC);
        framed.extend_from_slice(&self.current.id.0);
        framed.extend_from_slice(&tag);
        framed.extend_from_slice(code);
        framed
    }

    /// The code inside a frame from [`Keyring::tag_code`] for the same
    /// `subject`, once its tag checks (in constant time) under a held key.
    pub fn verify_code(&self, subject: &[u8], mut framed: Vec<u8>) -> Result<Vec<u8>, OpenError> {
        if !framed.starts_with(CODE_MAGIC) {
            return Err(OpenError::NotSealed);
        }
        if framed.len() < CODE_HEADER_LEN {
            return Err(OpenError::Malformed);
        }
        let at = CODE_MAGIC.len();
        let id = KeyId(framed[at..at + 4].try_into().map_err(|_| OpenError::Malformed)?);
        let key = self.key(id).ok_or(OpenError::UnknownKey(id))?;
        key.code_tag(subject, &framed[CODE_HEADER_LEN..])
            .verify_slice(&framed[at + 4..CODE_HEADER_LEN])
            .map_err(|_| OpenError::Tampered)?;
        framed.drain(..CODE_HEADER_LEN);
        Ok(framed)
    }
}

fn parse_key_id(hex_id: &str) -> Option<KeyId> {
    let bytes = hex::decode(hex_id).ok()?;
    Some(KeyId(bytes.try_into().ok()?))
}

fn file_error(path: &Path, reason: impl fmt::Display) -> KeyError {
    KeyError::File { path: path.into(), reason: reason.to_string() }
}

/// The key in `path`, if the file exists.
fn read_key_file(path: &Path) -> Result<Option<MasterKey>, KeyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error(path, e)),
    };
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the secret key file is readable by other users: chmod 600 it");
        }
    }
    text.parse().map(Some).map_err(|e| file_error(path, e))
}

/// Makes a new key file, readable by its owner only.
fn write_key_file(path: &Path) -> Result<MasterKey, KeyError> {
    use std::io::Write as _;
    let key = MasterKey::generate()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(path) {
        Ok(file) => file,
        // Another process made it in between: use that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return read_key_file(path)?.ok_or_else(|| file_error(path, "vanished while being read"));
        }
        Err(e) => return Err(file_error(path, e)),
    };
    file.write_all(format!("{}\n", key.to_base64()).as_bytes()).and_then(|()| file.sync_all()).map_err(|e| file_error(path, e))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey([byte; 32])
    }

    #[test]
    fn sealed_text_round_trips_and_hides_the_plaintext() {
        let ring = Keyring::new(&key(1), &[]);
        let sealed = ring.seal(b"whsec_very-secret", b"row-1");
        assert!(Keyring::is_sealed(&sealed), "{sealed}");
        assert!(!sealed.contains("very-secret"), "{sealed}");
        assert_eq!(Keyring::sealed_with(&sealed), Some(ring.current_id()));
        assert_eq!(ring.open(&sealed, b"row-1").unwrap(), b"whsec_very-secret");
        assert_ne!(ring.seal(b"same", b"c"), ring.seal(b"same", b"c"), "a fresh nonce each time");
    }

    #[test]
    fn another_key_or_context_does_not_open() {
        let sealed = Keyring::new(&key(1), &[]).seal(b"secret", b"row-1");
        let other = Keyring::new(&key(2), &[]);
        assert!(matches!(other.open(&sealed, b"row-1"), Err(OpenError::UnknownKey(_))));
        let same = Keyring::new(&key(1), &[]);
        assert_eq!(same.open(&sealed, b"row-2"), Err(OpenError::Tampered), "moved to another row");
    }

    #[test]
    fn rotation_opens_with_old_keys_and_seals_with_the_new_one() {
        let old = Keyring::new(&key(1), &[]);
        let sealed_before = old.seal(b"kept", b"row");
        let rotated = Keyring::new(&key(2), &[key(1), key(2), key(1)]);
        assert_eq!(rotated.older_ids().collect::<Vec<_>>(), vec![old.current_id()], "duplicates dropped");
        assert_eq!(rotated.open(&sealed_before, b"row").unwrap(), b"kept");
        let sealed_after = rotated.seal(b"new", b"row");
        assert_eq!(Keyring::sealed_with(&sealed_after), Some(rotated.current_id()));
        assert_ne!(rotated.current_id(), old.current_id());
        assert!(matches!(old.open(&sealed_after, b"row"), Err(OpenError::UnknownKey(_))));
        // Old keys retired: what they sealed no longer opens.
        let retired = Keyring::new(&key(2), &[]);
        assert!(matches!(retired.open(&sealed_before, b"row"), Err(OpenError::UnknownKey(_))));
    }

    #[test]
    fn tampered_sealed_text_is_refused() {
        let ring = Keyring::new(&key(1), &[]);
        let sealed = ring.seal(b"{\"token\":\"abc\"}", b"row");
        let (head, body) = sealed.rsplit_once(':').unwrap();
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).unwrap();
        for at in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[at] ^= 1;
            let altered = format!("{head}:{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes));
            assert_eq!(ring.open(&altered, b"row"), Err(OpenError::Tampered), "byte {at}");
            bytes[at] ^= 1;
        }
        let cut = format!("{head}:{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() - 1]));
        assert_eq!(ring.open(&cut, b"row"), Err(OpenError::Tampered), "cut short");
        assert!(ring.open(&sealed[..sealed.len() - 3], b"row").is_err());
        assert_eq!(ring.open("sealed:v1:zz:abc", b"row"), Err(OpenError::Malformed));
        assert_eq!(ring.open(&format!("{head}:AAAA"), b"row"), Err(OpenError::Malformed));
        assert_eq!(ring.open("{\"plain\":1}", b"row"), Err(OpenError::NotSealed));
    }

    #[test]
    fn compiled_code_is_loaded_only_with_a_valid_tag() {
        let ring = Keyring::new(&key(1), &[]);
        let subject = [7u8; 32];
        let framed = ring.tag_code(&subject, b"\x7fELF machine code");
        assert_eq!(ring.verify_code(&subject, framed.clone()).unwrap(), b"\x7fELF machine code");

        let mut altered = framed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(ring.verify_code(&subject, altered), Err(OpenError::Tampered));
        assert_eq!(ring.verify_code(&[8u8; 32], framed.clone()), Err(OpenError::Tampered), "another script's code");
        assert_eq!(ring.verify_code(&subject, b"\x7fELF untagged".to_vec()), Err(OpenError::NotSealed));
        assert_eq!(ring.verify_code(&subject, framed[..20].to_vec()), Err(OpenError::Malformed));
        assert!(matches!(Keyring::new(&key(2), &[]).verify_code(&subject, framed.clone()), Err(OpenError::UnknownKey(_))));
        assert!(Keyring::new(&key(2), &[key(1)]).verify_code(&subject, framed).is_ok(), "an older key still verifies");
    }

    #[test]
    fn keys_parse_from_base64_and_never_show() {
        let written = key(9).to_base64();
        assert_eq!(written.parse::<MasterKey>().unwrap(), key(9));
        assert_eq!(format!(" {written}\n").parse::<MasterKey>().unwrap(), key(9));
        for bad in ["", "not base64!", "AAAA", &base64::engine::general_purpose::STANDARD.encode([0u8; 31])] {
            assert!(matches!(bad.parse::<MasterKey>(), Err(KeyError::Invalid)), "{bad}");
        }
        assert_eq!(format!("{:?}", key(9)), "MasterKey(***)");
        let ring = format!("{:?}", Keyring::new(&key(9), &[key(8)]));
        assert!(!ring.contains(&written), "{ring}");
    }

    #[test]
    fn a_key_file_is_generated_once_private_and_kept_when_a_key_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");

        let (first, source) = Keyring::load(None, &[], Some(&path)).unwrap();
        assert_eq!(source, KeySource::File { path: path.clone(), generated: true });
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let sealed = first.seal(b"x", b"");
        let (again, source) = Keyring::load(None, &[], Some(&path)).unwrap();
        assert_eq!(source, KeySource::File { path: path.clone(), generated: false });
        assert_eq!(again.current_id(), first.current_id());

        // A configured key takes over; the generated one still reads.
        let (configured, source) = Keyring::load(Some(&key(3)), &[], Some(&path)).unwrap();
        assert_eq!(source, KeySource::Configured);
        assert_eq!(configured.open(&sealed, b"").unwrap(), b"x");
        assert_ne!(configured.current_id(), first.current_id());

        assert!(matches!(Keyring::load(None, &[], None), Err(KeyError::Required)));
        std::fs::write(&path, "garbage").unwrap();
        let err = Keyring::load(None, &[], Some(&path)).unwrap_err();
        assert!(matches!(err, KeyError::File { .. }), "{err}");
    }
}
