//! The parse cache on disk: the facts of every certificate of the store,
//! by the SHA-256 of its encoding in a file, so that a start reads them
//! instead of parsing. OpenSSL 3.0 takes about 270 µs to parse a
//! certificate, half of it decoding the public key; a certificate known
//! here is parsed only when first used (a verification, an OCSP check).
//!
//! The file is the daemon's own, mode 0600 beside its lock file, and is
//! trusted as the store files are. It is thrown away when another OpenSSL
//! wrote it, or when it does not read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store;
use crate::x509::{hex, unhex, CertFacts, Facts, Fingerprint};

/// Its name in `certs_directory`.
pub const FILE_NAME: &str = ".evsecd-parse-cache";

// 2: with the key algorithm.
const FORMAT: u32 = 2;

#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    openssl: String,
    entries: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    encoding: String,
    fingerprint: String,
    subject: String,
    issuer: String,
    key_bits: String,
    key_fingerprint: Option<String>,
    serial: String,
    is_ca: bool,
    self_signed: bool,
    not_before: i64,
    not_after: i64,
    subject_hash: u32,
    common_name: String,
    key_algorithm: String,
}

/// The cache file of a store.
pub fn path(certs_directory: &Path) -> PathBuf {
    certs_directory.join(FILE_NAME)
}

/// The facts the cache holds, by encoding; empty when there is no usable
/// cache.
pub fn load(certs_directory: &Path) -> HashMap<Fingerprint, Facts> {
    let path = path(certs_directory);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::warn!("parse cache {} cannot be read: {e}", path.display());
            return HashMap::new();
        }
    };
    let on_disk: OnDisk = match serde_json::from_slice(&bytes) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("parse cache {} is not usable: {e}", path.display());
            return HashMap::new();
        }
    };
    if on_disk.format != FORMAT || on_disk.openssl != openssl::version::version() {
        tracing::info!(
            "parse cache {} is of another build; parsing",
            path.display()
        );
        return HashMap::new();
    }
    let mut facts = HashMap::with_capacity(on_disk.entries.len());
    for entry in on_disk.entries {
        match decode(&entry) {
            Some((key, f)) => {
                facts.insert(key, f);
            }
            None => {
                tracing::warn!(
                    "parse cache {} holds a broken entry; parsing",
                    path.display()
                );
                return HashMap::new();
            }
        }
    }
    facts
}

/// Writes the cache of `parsed` (certificates by the SHA-256 of their
/// encoding) whole.
pub fn save<'a>(
    certs_directory: &Path,
    parsed: impl Iterator<Item = (&'a Fingerprint, &'a CertFacts)>,
) -> std::io::Result<()> {
    let entries = parsed
        .map(|(key, cert)| {
            let f = cert.facts().clone();
            Entry {
                encoding: hex(key),
                fingerprint: hex(&f.fingerprint),
                subject: hex(&f.subject_der),
                issuer: hex(&f.issuer_der),
                key_bits: hex(&f.key_bits),
                key_fingerprint: f.key_fingerprint.map(|k| hex(&k)),
                serial: f.serial,
                is_ca: f.is_ca,
                self_signed: f.self_signed,
                not_before: f.not_before,
                not_after: f.not_after,
                subject_hash: f.subject_hash,
                common_name: f.common_name,
                key_algorithm: f.key_algorithm.as_str().to_owned(),
            }
        })
        .collect();
    let on_disk = OnDisk {
        format: FORMAT,
        openssl: openssl::version::version().to_owned(),
        entries,
    };
    let bytes = serde_json::to_vec(&on_disk).map_err(std::io::Error::other)?;
    store::atomic_write(&path(certs_directory), &bytes, store::KEY_MODE)
}

fn decode(entry: &Entry) -> Option<(Fingerprint, Facts)> {
    Some((
        fingerprint(&entry.encoding)?,
        Facts {
            fingerprint: fingerprint(&entry.fingerprint)?,
            subject_der: unhex(&entry.subject)?,
            issuer_der: unhex(&entry.issuer)?,
            key_bits: unhex(&entry.key_bits)?,
            key_fingerprint: match &entry.key_fingerprint {
                Some(k) => Some(fingerprint(k)?),
                None => None,
            },
            serial: entry.serial.clone(),
            is_ca: entry.is_ca,
            self_signed: entry.self_signed,
            not_before: entry.not_before,
            not_after: entry.not_after,
            subject_hash: entry.subject_hash,
            common_name: entry.common_name.clone(),
            key_algorithm: entry.key_algorithm.parse().ok()?,
        },
    ))
}

fn fingerprint(text: &str) -> Option<Fingerprint> {
    unhex(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::testpki::Pki::generate().unwrap();
        let cert = CertFacts::new(pki.v2g_root.cert.clone()).unwrap();
        let key = crate::x509::sha256(b"encoding");
        save(dir.path(), [(&key, &cert)].into_iter()).unwrap();
        let loaded = load(dir.path());
        assert_eq!(loaded.len(), 1);
        assert_eq!(&loaded[&key], cert.facts());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(path(dir.path())).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // A file of another build, or garbage, is not used.
        std::fs::write(path(dir.path()), b"{").unwrap();
        assert!(load(dir.path()).is_empty());
        assert_eq!(unhex("0aff"), Some(vec![0x0a, 0xff]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
}
