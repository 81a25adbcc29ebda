//! The `.hash` file beside a cached OCSP response.

use std::path::Path;

use crate::types::HashData;

/// Reads the bytes of a four-line OCSP `.hash` file (algorithm, issuer
/// name hash, issuer key hash, serial) at `path`. `None` when they are
/// malformed.
pub fn parse_ocsp_hash(path: &Path, bytes: &[u8]) -> Option<HashData> {
    let parsed = std::str::from_utf8(bytes).ok().and_then(|text| {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [alg, name, key, serial] = fields[..] else {
            return None;
        };
        HashData::parse(alg, name, key, serial).ok()
    });
    if parsed.is_none() {
        tracing::warn!(path = %path.display(), "OCSP hash file is malformed; left alone");
    }
    parsed
}

/// The content of an OCSP `.hash` file for `hash`.
pub fn ocsp_hash_text(hash: &HashData) -> String {
    format!(
        "{}
{}
{}
{}
",
        hash.hash_algorithm, hash.issuer_name_hash, hash.issuer_key_hash, hash.serial_number
    )
}
