//! Client certificates for mutual TLS. A configuration stores a PEM
//! certificate chain and private key, because that is what reqwest's rustls
//! backend loads; a PKCS#12 file (`.p12`, `.pfx`) is converted to that pair
//! once, on save. Every pair is checked on save: the certificates parse,
//! the key belongs to the first one, and the chain has not expired.
//!
//! No error made here carries a password or key material: messages are
//! fixed text, or what an X.509/TLS library says about a structure.

use base64::Engine as _;
use p12_keystore::{KeyStore, KeyStoreEntry, Pkcs12ImportPolicy};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Largest PKCS#12 file taken (a client certificate with its chain is a
/// few KiB).
pub const MAX_PKCS12_BYTES: usize = 64 << 10;

/// Why a client certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The PKCS#12 text is not base64.
    #[error("not base64")]
    Pkcs12NotBase64,
    /// The PKCS#12 file is larger than [`MAX_PKCS12_BYTES`].
    #[error("larger than {MAX_PKCS12_BYTES} bytes")]
    Pkcs12TooLarge,
    /// The PKCS#12 integrity check failed: the password is wrong, or the
    /// file was altered.
    #[error("the password is wrong or the file is damaged")]
    Pkcs12Password,
    /// The file is not PKCS#12, or uses a scheme or work factor that is not
    /// supported.
    #[error("not a readable PKCS#12 file: {0}")]
    Pkcs12Unreadable(String),
    /// No private key with its certificate, or more than one.
    #[error("expected exactly one private key with its certificate, found {0}")]
    Pkcs12KeyCount(usize),
    /// No `CERTIFICATE` block in the certificate text.
    #[error("no PEM certificate (`-----BEGIN CERTIFICATE-----`)")]
    NoCertificate,
    /// A block of the certificate text is not a certificate (a private key
    /// pasted in the wrong field would otherwise be shown by the API).
    #[error("PEM block {index} is `{label}`; only certificates belong here")]
    NotACertificate { index: usize, label: String },
    /// A block is malformed or is not a valid X.509 certificate.
    #[error("PEM block {index} is not a valid X.509 certificate")]
    BadCertificate { index: usize },
    /// No PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted).
    #[error("no usable PEM private key (unencrypted PKCS#8, PKCS#1 or SEC1)")]
    BadKey,
    /// The key does not belong to the certificate, or TLS cannot use it.
    #[error("the private key does not belong to the certificate or cannot be used for TLS: {0}")]
    Unusable(String),
    /// The certificate (or one of its chain) is no longer valid.
    #[error("the certificate expired at {0}")]
    Expired(String),
}

impl CertificateError {
    /// The API's stable code for it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Expired(_) => "certificate_expired",
            _ => "invalid_client_certificate",
        }
    }
}

/// A certificate chain and its key, in PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct PemPair {
    pub certificate_pem: String,
    pub private_key_pem: String,
}

impl std::fmt::Debug for PemPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemPair").field("certificate_pem", &self.certificate_pem).field("private_key_pem", &"***").finish()
    }
}

/// Opens a PKCS#12 file given in base64 (line breaks allowed) and returns its
/// one key with its certificate chain, leaf first.
pub fn from_pkcs12_base64(text: &str, password: &str) -> Result<PemPair, CertificateError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.len() > MAX_PKCS12_BYTES.div_ceil(3) * 4 {
        return Err(CertificateError::Pkcs12TooLarge);
    }
    let der = base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()).map_err(|_| CertificateError::Pkcs12NotBase64)?;
    from_pkcs12(&der, password)
}

/// Opens a PKCS#12 file and returns its one key with its certificate chain,
/// leaf first.
pub fn from_pkcs12(der: &[u8], password: &str) -> Result<PemPair, CertificateError> {
    if der.len() > MAX_PKCS12_BYTES {
        return Err(CertificateError::Pkcs12TooLarge);
    }
    let store = KeyStore::from_pkcs12(der, password, Pkcs12ImportPolicy::Strict).map_err(|e| match e {
        p12_keystore::error::Error::MacError(_) => CertificateError::Pkcs12Password,
        other => CertificateError::Pkcs12Unreadable(other.to_string()),
    })?;
    let chains: Vec<_> = store
        .entries()
        .filter_map(|(_, entry)| match entry {
            KeyStoreEntry::PrivateKeyChain(chain) if !chain.certs().is_empty() => Some(chain),
            _ => None,
        })
        .collect();
    let [chain] = chains[..] else {
        return Err(CertificateError::Pkcs12KeyCount(chains.len()));
    };
    Ok(PemPair {
        certificate_pem: chain.certs().iter().map(|c| pem_block("CERTIFICATE", c.as_der())).collect(),
        private_key_pem: pem_block("PRIVATE KEY", chain.key().as_der()),
    })
}

/// Checks a PEM pair as deliveries will use it and returns when it stops
/// being valid (the earliest `notAfter` of the chain). Refuses a chain that
/// has expired by `now`.
pub fn check(pair: &PemPair, now: OffsetDateTime) -> Result<OffsetDateTime, CertificateError> {
    let expires_at = expires_at(&pair.certificate_pem)?;
    let mut pem = pair.certificate_pem.clone();
    pem.push('\n');
    pem.push_str(&pair.private_key_pem);
    let identity = reqwest::Identity::from_pem(pem.as_bytes()).map_err(|_| CertificateError::BadKey)?;
    // Building a client is what makes rustls load the key and check that it
    // matches the certificate; no root store is needed for that.
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .identity(identity)
        .build()
        .map_err(|e| CertificateError::Unusable(root_cause(&e)))?;
    if expires_at <= now {
        return Err(CertificateError::Expired(rfc3339(expires_at)));
    }
    Ok(expires_at)
}

/// The earliest `notAfter` of the certificates in `certificate_pem`.
pub fn expires_at(certificate_pem: &str) -> Result<OffsetDateTime, CertificateError> {
    let mut earliest: Option<OffsetDateTime> = None;
    for (index, block) in x509_parser::pem::Pem::iter_from_buffer(certificate_pem.as_bytes()).enumerate() {
        let index = index + 1;
        let block = block.map_err(|_| CertificateError::BadCertificate { index })?;
        if block.label != "CERTIFICATE" {
            let label = block.label.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(40).collect();
            return Err(CertificateError::NotACertificate { index, label });
        }
        let cert = block.parse_x509().map_err(|_| CertificateError::BadCertificate { index })?;
        let not_after = cert.validity().not_after.to_datetime();
        earliest = Some(earliest.map_or(not_after, |e| e.min(not_after)));
    }
    earliest.ok_or(CertificateError::NoCertificate)
}

/// RFC 3339, as the API writes times.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.extend(line.iter().map(|&b| char::from(b)));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The innermost error's text: rustls's reason, without reqwest's wrapper.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Certificates for tests, here and in `export`'s.
#[cfg(test)]
pub(super) mod fixtures {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use time::Duration;

    /// A leaf certificate valid from a day ago until `valid_for` from now,
    /// signed by a fresh CA, as PEM and as DER (certificate, PKCS#8 key).
    pub fn leaf(valid_for: Duration) -> (PemPair, Vec<u8>, Vec<u8>) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
        let mut params = CertificateParams::new(vec!["client.test".to_owned()]).expect("params");
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + valid_for;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca).expect("signed");
        let pair = PemPair { certificate_pem: cert.pem(), private_key_pem: key.serialize_pem() };
        (pair, cert.der().to_vec(), key.serialize_der())
    }

    pub fn pkcs12(cert_der: &[u8], key_der: &[u8], password: &str) -> Vec<u8> {
        let chain = p12_keystore::PrivateKeyChain::new(
            b"key-1".as_slice(),
            p12_keystore::PrivateKey::from_der(key_der).expect("PKCS#8"),
            [p12_keystore::Certificate::from_der(cert_der).expect("certificate")],
        );
        let mut store = KeyStore::new();
        store.add_entry("client", KeyStoreEntry::PrivateKeyChain(chain));
        store.writer(password).write().expect("PKCS#12")
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{leaf, pkcs12};
    use super::*;
    use time::Duration;

    #[test]
    fn a_valid_pair_passes_and_reports_its_expiry() {
        let (pair, _, _) = leaf(Duration::days(90));
        let now = OffsetDateTime::now_utc();
        let expires = check(&pair, now).expect("valid");
        assert!((expires - (now + Duration::days(90))).abs() < Duration::seconds(5), "{expires}");
    }

    #[test]
    fn expired_mismatched_and_misplaced_material_is_refused() {
        let (expired, _, _) = leaf(Duration::seconds(-60));
        let err = check(&expired, OffsetDateTime::now_utc()).unwrap_err();
        assert_eq!(err.code(), "certificate_expired", "{err}");

        let (a, _, _) = leaf(Duration::days(90));
        let (b, _, _) = leaf(Duration::days(90));
        let mismatched = PemPair { certificate_pem: a.certificate_pem.clone(), private_key_pem: b.private_key_pem.clone() };
        let err = check(&mismatched, OffsetDateTime::now_utc()).unwrap_err();
        assert!(matches!(err, CertificateError::Unusable(_)), "{err}");
        assert!(!err.to_string().contains(&b.private_key_pem[30..60]), "{err}");

        let key_in_cert_field = PemPair { certificate_pem: format!("{}{}", a.certificate_pem, a.private_key_pem), ..a.clone() };
        let err = check(&key_in_cert_field, OffsetDateTime::now_utc()).unwrap_err();
        assert_eq!(err, CertificateError::NotACertificate { index: 2, label: "PRIVATE KEY".into() });

        let no_key = PemPair { private_key_pem: "nothing".into(), ..a.clone() };
        assert_eq!(check(&no_key, OffsetDateTime::now_utc()).unwrap_err(), CertificateError::BadKey);
        let no_cert = PemPair { certificate_pem: "nothing".into(), ..a };
        assert_eq!(check(&no_cert, OffsetDateTime::now_utc()).unwrap_err(), CertificateError::NoCertificate);
    }

    #[test]
    fn pkcs12_opens_with_its_password_only() {
        let (pair, cert_der, key_der) = leaf(Duration::days(90));
        let p12 = pkcs12(&cert_der, &key_der, "s3cret-pass");
        let opened = from_pkcs12(&p12, "s3cret-pass").expect("opens");
        assert_eq!(opened.certificate_pem, pair.certificate_pem.replace("\r\n", "\n"));
        check(&opened, OffsetDateTime::now_utc()).expect("usable");
        // base64 as `base64` wraps it, with line breaks.
        let wrapped = base64::engine::general_purpose::STANDARD
            .encode(&p12)
            .as_bytes()
            .chunks(76)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(from_pkcs12_base64(&wrapped, "s3cret-pass").is_ok());

        let err = from_pkcs12(&p12, "wrong").unwrap_err();
        assert_eq!(err, CertificateError::Pkcs12Password);
        assert!(matches!(from_pkcs12(b"garbage", "x").unwrap_err(), CertificateError::Pkcs12Unreadable(_)));
        assert_eq!(from_pkcs12_base64("%%%", "x").unwrap_err(), CertificateError::Pkcs12NotBase64);
    }

    /// openssl 3's `pkcs12 -export` writes PBES2 with AES-256-CBC and an
    /// HMAC-SHA256 MAC by default; older tools wrote 3DES, and RC2 for the
    /// certificates (`-legacy`, when openssl has its legacy provider). Read
    /// each (the legacy one only where this openssl still writes it).
    #[test]
    fn pkcs12_written_by_openssl_opens() {
        let (pair, _, _) = leaf(Duration::days(90));
        let scratch = tempfile::tempdir().expect("temporary directory");
        let dir = scratch.path();
        std::fs::write(dir.join("cert.pem"), &pair.certificate_pem).expect("write");
        std::fs::write(dir.join("key.pem"), &pair.private_key_pem).expect("write");
        let variants: [(&str, &[&str], bool); 3] = [
            ("default", &[], true),
            ("3des", &["-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1"], true),
            ("legacy", &["-legacy"], false),
        ];
        for (name, extra, required) in variants {
            let out = format!("{name}.p12");
            let status = std::process::Command::new("openssl")
                .args(["pkcs12", "-export", "-passout", "pass:p@ss", "-in", "cert.pem", "-inkey", "key.pem", "-out", &out])
                .args(extra)
                .current_dir(dir)
                .stderr(std::process::Stdio::null())
                .status();
            let status = status.expect("openssl, which ./scripts/setup.sh installs");
            if !status.success() {
                assert!(!required, "openssl pkcs12 -export ({name}) failed");
                eprintln!("openssl cannot write the {name} form here; skipped");
                continue;
            }
            let p12 = std::fs::read(dir.join(&out)).expect("PKCS#12");
            let opened = from_pkcs12(&p12, "p@ss").unwrap_or_else(|e| panic!("{name}: {e}"));
            check(&opened, OffsetDateTime::now_utc()).expect("usable");
            assert_eq!(from_pkcs12(&p12, "nope").unwrap_err(), CertificateError::Pkcs12Password, "{name}");
        }
    }
}
