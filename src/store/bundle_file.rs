//! Editing a bundle or leaf file in place: every byte that is not the
//! certificate added or removed stays as it was.

use std::collections::HashSet;

use crate::x509::{self, Fingerprint};

/// What a file becomes once certificates are taken out of it.
#[derive(Debug, PartialEq, Eq)]
pub enum Edit {
    /// It holds no certificate any more: remove it.
    Remove,
    /// Its new content.
    Rewrite(Vec<u8>),
}

/// `content` with `pem` appended, on a line of its own.
pub fn appended(content: &[u8], pem: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + pem.len() + 1);
    out.extend_from_slice(content);
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(pem);
    out
}

/// `content` without the certificates whose fingerprints are `doomed`.
/// A file left with no certificate is removed, unless `keep_empty_file`
/// (a file-mode bundle stays, as an empty file).
pub fn without(content: &[u8], doomed: &HashSet<Fingerprint>, keep_empty_file: bool) -> Edit {
    // An unterminated block at the end is kept as it is, like any text
    // between blocks.
    let (blocks, _) = x509::pem_blocks(content);
    let mut out = Vec::with_capacity(content.len());
    let mut pos = 0;
    let mut left = 0;
    for block in blocks.iter().filter(|b| b.label == "CERTIFICATE") {
        let fingerprint = openssl::x509::X509::from_pem(&content[block.range.clone()])
            .ok()
            .and_then(|c| c.to_der().ok())
            .map(|der| x509::sha256(&der));
        if fingerprint.is_some_and(|fp| doomed.contains(&fp)) {
            out.extend_from_slice(&content[pos..block.range.start]);
            pos = block.range.end;
            if content.get(pos) == Some(&b'\n') {
                pos += 1;
            }
        } else {
            left += 1;
        }
    }
    out.extend_from_slice(&content[pos..]);
    // A DER file has no blocks: it holds exactly the doomed certificate.
    if (left == 0 || blocks.is_empty()) && !keep_empty_file {
        return Edit::Remove;
    }
    if blocks.is_empty() {
        out.clear();
    }
    Edit::Rewrite(out)
}
