//! Reading the store's files: certificates on every core, keys for the
//! identity of their public half.

use std::fs;
use std::path::Path;

use openssl::pkey::PKey;
use openssl::x509::X509;

use super::model::KeyFile;
use crate::config::Config;
use crate::store::FileStamp;
use crate::x509::{self, CertFacts, Fingerprint};

/// Parses certificate encodings (PEM blocks, or DER when `der`) on every
/// core, answering in the order of `items`: at start a bundle of thousands
/// of roots would otherwise take seconds, each parse and self-signature
/// check being some 270 µs.
pub(super) fn parse_in_parallel(
    items: &[(Fingerprint, &[u8], bool)],
) -> Vec<(Fingerprint, Result<CertFacts, String>)> {
    let parse = |encoding: &[u8], der: bool| -> Result<CertFacts, String> {
        let cert = if der {
            X509::from_der(encoding)
        } else {
            X509::from_pem(encoding)
        };
        cert.map_err(|e| x509::first_error(&e))
            .and_then(CertFacts::new)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if items.len() < 64 || threads == 1 {
        return items
            .iter()
            .map(|(k, e, der)| (*k, parse(e, *der)))
            .collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(k, e, der)| (*k, parse(e, *der)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .zip(items.chunks(chunk))
            .flat_map(|(w, part)| {
                // A parser thread that panicked (OpenSSL should never make
                // one) leaves its certificates unparsed, and says so.
                w.join().unwrap_or_else(|_| {
                    part.iter()
                        .map(|(k, _, _)| (*k, Err("the parser thread panicked".to_owned())))
                        .collect()
                })
            })
            .collect()
    })
}

/// Reads a key file for the identity of its public key. A `TSS2 PRIVATE
/// KEY` is opened through the TPM provider, whatever the file's extension.
pub(super) fn read_key(path: &Path, stamp: FileStamp, config: &Config) -> KeyFile {
    let mut key = KeyFile {
        path: path.to_owned(),
        stamp,
        key_fingerprint: None,
        tpm: false,
        awaits_tpm: false,
    };
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "key cannot be read");
            return key;
        }
    };
    if crate::tpm::is_tpm_key(&bytes) {
        key.tpm = true;
        match crate::tpm::key_fingerprint(&config.tpm, &bytes) {
            Ok(fingerprint) => key.key_fingerprint = Some(fingerprint),
            Err(e) => {
                key.awaits_tpm = matches!(e, crate::tpm::TpmError::Load { .. });
                tracing::warn!(path = %path.display(), error = %e, "TPM key cannot be opened");
            }
        }
        return key;
    }
    // A passphrase is always given, so OpenSSL never prompts on a terminal.
    let password = config.private_key_password.as_deref().unwrap_or("");
    match PKey::private_key_from_pem_passphrase(&bytes, password.as_bytes()) {
        Ok(pkey) => key.key_fingerprint = x509::public_key_fingerprint(&pkey),
        Err(_) => {
            tracing::warn!(path = %path.display(), "key cannot be opened (wrong password, or not a PEM private key)");
        }
    }
    key
}
