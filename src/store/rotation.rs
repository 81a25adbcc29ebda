//! The record of the CSMS root rotation (OCPP `AdditionalRootCertificateCheck`):
//! which root is in use, and the issuer keys of the roots that their
//! predecessor issued.
//!
//! - "The root in use" is the one installed or confirmed last. File times
//!   cannot tell: a restored backup, a `touch` or a rolled-back removal
//!   changes them.
//! - A root issued by its predecessor stays in the bundle after the
//!   predecessor leaves. Its hash data is an RFC 6960 CertID, which hashes
//!   the issuer's key: without the record it could no longer be computed,
//!   and the root could be neither listed nor deleted.
//!
//! `<certs_directory>/.evsecd-csms-rotation`: JSON, fingerprints and key
//! bits in hex, written in the same transaction as the bundle.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::x509::{hex, unhex, Fingerprint};

/// Its name in `certs_directory`.
pub const RECORD_NAME: &str = ".evsecd-csms-rotation";

/// Issuer key bits by certificate fingerprint.
pub type IssuerKeys = HashMap<Fingerprint, Vec<u8>>;

/// What the record holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    /// The CSMS root installed or confirmed last.
    pub in_use: Option<Fingerprint>,
    /// The issuer's key bits of each root its predecessor issued.
    pub issuer_keys: IssuerKeys,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    in_use: Option<String>,
    issuer_keys: BTreeMap<String, String>,
}

/// The record of a store.
pub fn path(certs_directory: &Path) -> PathBuf {
    certs_directory.join(RECORD_NAME)
}

/// Reads the record; empty when it is absent. A record that does not read
/// is logged and taken as empty: the roots it named are then listed
/// without hash data, as any certificate whose issuer is gone, and the
/// root in use is the one whose file changed last.
pub fn read(certs_directory: &Path) -> Rotation {
    let path = path(certs_directory);
    match std::fs::read(&path) {
        Ok(bytes) => decode(&path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Rotation::default(),
        Err(e) => {
            tracing::error!(
                "CSMS rotation record {} cannot be read: {e}",
                path.display()
            );
            Rotation::default()
        }
    }
}

/// The record from its bytes.
pub fn decode(path: &Path, bytes: &[u8]) -> Rotation {
    let on_disk: OnDisk = match serde_json::from_slice(bytes) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("CSMS rotation record {} is broken: {e}", path.display());
            return Rotation::default();
        }
    };
    let fingerprint = |text: &str| unhex(text).and_then(|f| f.try_into().ok());
    let mut rotation = Rotation {
        in_use: on_disk.in_use.as_deref().and_then(fingerprint),
        issuer_keys: IssuerKeys::new(),
    };
    for (cert, bits) in &on_disk.issuer_keys {
        match (fingerprint(cert), unhex(bits)) {
            (Some(cert), Some(bits)) => {
                rotation.issuer_keys.insert(cert, bits);
            }
            _ => tracing::error!(
                "CSMS rotation record {} holds a broken entry for {cert}",
                path.display()
            ),
        }
    }
    rotation
}

/// The record's bytes.
pub fn encode(rotation: &Rotation) -> Vec<u8> {
    let on_disk = OnDisk {
        in_use: rotation.in_use.map(|f| hex(&f)),
        issuer_keys: rotation
            .issuer_keys
            .iter()
            .map(|(f, bits)| (hex(f), hex(bits)))
            .collect(),
    };
    // Strings always serialise.
    serde_json::to_vec_pretty(&on_disk).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_broken_entries_are_dropped() {
        let mut rotation = Rotation {
            in_use: Some([9u8; 32]),
            issuer_keys: IssuerKeys::new(),
        };
        rotation.issuer_keys.insert([7u8; 32], vec![1, 2, 3]);
        let path = Path::new("/r");
        assert_eq!(decode(path, &encode(&rotation)), rotation);
        let seven = "07".repeat(32);
        let broken =
            format!(r#"{{"in_use": "zz", "issuer_keys": {{"zz": "0102", "{seven}": "0a"}}}}"#);
        let read = decode(path, broken.as_bytes());
        assert_eq!(read.in_use, None);
        assert_eq!(read.issuer_keys.get(&[7u8; 32]), Some(&vec![0x0a]));
        assert_eq!(decode(path, b"not json"), Rotation::default());
    }
}
