//! The record of issuer keys: for a CA certificate that stays in its
//! bundle after its issuer has left (a CSMS root rotated under
//! `AdditionalRootCertificateCheck`, once its predecessor is removed), the
//! issuer's public key bits. Its hash data is an RFC 6960 CertID, which
//! hashes the issuer's key: without the record it could no longer be
//! computed, and the root could be neither listed nor deleted.
//!
//! `<certs_directory>/.evsecd-issuer-keys`: JSON, the SHA-256 fingerprint
//! of each certificate to the bits of its issuer's key, both in hex.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::x509::{hex, unhex, Fingerprint};

/// Its name in `certs_directory`.
pub const RECORD_NAME: &str = ".evsecd-issuer-keys";

/// Issuer key bits by certificate fingerprint.
pub type IssuerKeys = HashMap<Fingerprint, Vec<u8>>;

/// The record of a store.
pub fn path(certs_directory: &Path) -> PathBuf {
    certs_directory.join(RECORD_NAME)
}

/// Reads the record; none when it is absent. A record that does not read
/// is logged and taken as empty: the certificates it named are then
/// listed without hash data, as any certificate whose issuer is gone.
pub fn read(certs_directory: &Path) -> IssuerKeys {
    let path = path(certs_directory);
    match std::fs::read(&path) {
        Ok(bytes) => decode(&path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => IssuerKeys::new(),
        Err(e) => {
            tracing::error!("issuer key record {} cannot be read: {e}", path.display());
            IssuerKeys::new()
        }
    }
}

/// The record's entries from its bytes.
pub fn decode(path: &Path, bytes: &[u8]) -> IssuerKeys {
    let entries: BTreeMap<String, String> = match serde_json::from_slice(bytes) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("issuer key record {} is broken: {e}", path.display());
            return IssuerKeys::new();
        }
    };
    let mut keys = IssuerKeys::new();
    for (fingerprint, bits) in &entries {
        match (
            unhex(fingerprint).and_then(|f| f.try_into().ok()),
            unhex(bits),
        ) {
            (Some(fingerprint), Some(bits)) => {
                keys.insert(fingerprint, bits);
            }
            _ => tracing::error!(
                "issuer key record {} holds a broken entry for {fingerprint}",
                path.display()
            ),
        }
    }
    keys
}

/// The record's bytes.
pub fn encode(keys: &IssuerKeys) -> Vec<u8> {
    let entries: BTreeMap<String, String> =
        keys.iter().map(|(f, bits)| (hex(f), hex(bits))).collect();
    // A map of strings always serialises.
    serde_json::to_vec_pretty(&entries).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_broken_ones_are_dropped() {
        let mut keys = IssuerKeys::new();
        keys.insert([7u8; 32], vec![1, 2, 3]);
        let path = Path::new("/r");
        assert_eq!(decode(path, &encode(&keys)), keys);
        let broken = br#"{"zz": "0102", "0707070707070707070707070707070707070707070707070707070707070707": "0a"}"#;
        let read = decode(path, broken);
        assert_eq!(read.len(), 1);
        assert_eq!(read.get(&[7u8; 32]), Some(&vec![0x0a]));
        assert!(decode(path, b"not json").is_empty());
    }
}
