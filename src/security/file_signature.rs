//! `VerifyFileSignature`: a signature by a certificate's key over the
//! SHA-256 of a file (contract 5.16).

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::EvseSecurity;
use crate::access::Caller;
use crate::store;
use crate::x509;

/// Longest base64 signature accepted by `VerifyFileSignature` (an RSA-8192
/// signature is 1368 characters; OCPP allows 800).
pub const MAX_SIGNATURE_B64: usize = 4096;

impl EvseSecurity {
    /// Contract 5.16: whether `signature_b64` is a signature by the key of
    /// `signing_certificate` over the SHA-256 of the file at `path` (ECDSA,
    /// RSA PKCS#1 v1.5 or RSA-PSS). Only the signature is checked: the
    /// caller checks the signing certificate with `VerifyCertificate([MF])`.
    /// Every failure, including a path that is not a readable regular file,
    /// is `false`.
    ///
    /// With a `reader`, the file is read only when that caller could read
    /// it itself, so the daemon cannot be used to learn about files the
    /// caller has no access to.
    pub fn verify_file_signature(
        &self,
        path: &str,
        signing_certificate: &str,
        signature_b64: &str,
        reader: Option<&Caller>,
    ) -> bool {
        let never = Arc::default();
        self.verify_file_signature_until(path, signing_certificate, signature_b64, reader, never)
    }

    /// [`EvseSecurity::verify_file_signature`] that stops, `false`, once
    /// `cancel` is set (the caller left the bus).
    pub fn verify_file_signature_until(
        &self,
        path: &str,
        signing_certificate: &str,
        signature_b64: &str,
        reader: Option<&Caller>,
        cancel: Arc<AtomicBool>,
    ) -> bool {
        let path = Path::new(path);
        if !path.is_absolute() {
            return false;
        }
        let bounds = self.hash_bounds(cancel);
        // The path is the caller's and may be megabytes long.
        let shown: String = path.to_string_lossy().chars().take(256).collect();
        self.verify_signature_of(signing_certificate, signature_b64, &shown, || {
            store::sha256_of_regular_file(path, reader, &bounds)
        })
    }

    /// `VerifyFileSignatureFd`: as [`EvseSecurity::verify_file_signature`],
    /// of a file the caller opened itself, so that its own rights decide what
    /// can be checked. Anything but a regular file is `false` at once.
    pub fn verify_file_signature_fd(
        &self,
        file: &std::fs::File,
        signing_certificate: &str,
        signature_b64: &str,
        cancel: Arc<AtomicBool>,
    ) -> bool {
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return false;
        }
        let bounds = self.hash_bounds(cancel);
        self.verify_signature_of(signing_certificate, signature_b64, "the descriptor", || {
            store::sha256_of_open_file(file, &bounds)
        })
    }

    fn hash_bounds(&self, cancel: Arc<AtomicBool>) -> store::HashBounds {
        store::HashBounds {
            max_bytes: self.config().limits.max_file_bytes,
            cancel,
        }
    }

    /// Checks the signature over the SHA-256 that `digest` computes of the
    /// file `shown` names, once the certificate and the signature have been
    /// parsed. Every failure is `false`; one of `digest` is logged, at a
    /// bounded rate.
    fn verify_signature_of(
        &self,
        signing_certificate: &str,
        signature_b64: &str,
        shown: &str,
        digest: impl FnOnce() -> std::io::Result<Vec<u8>>,
    ) -> bool {
        if signing_certificate.len() > self.config().limits.max_pem_bytes
            || signature_b64.len() > MAX_SIGNATURE_B64
        {
            return false;
        }
        let cert = match x509::parse_pem_certificates(signing_certificate.as_bytes()) {
            Ok((mut certs, 0)) if certs.len() == 1 => certs.remove(0),
            _ => return false,
        };
        // Callers choose what fails here, and may fail on purpose.
        let not_checked = |why: &dyn std::fmt::Display| {
            if let Some(held_back) = FILE_CHECK_LOG.admit() {
                tracing::info!(
                    "file signature not checked: {shown}: {why}{}",
                    held_back_note(held_back)
                );
            }
            false
        };
        if let Err(reason) = x509::check_public_key(&cert) {
            return not_checked(&format_args!("signing certificate refused: {reason}"));
        }
        let Some(signature) = x509::decode_base64(signature_b64) else {
            return false;
        };
        match digest() {
            Ok(digest) => x509::verify_digest_signature(&cert, &digest, &signature),
            Err(e) => not_checked(&e),
        }
    }
}

/// Lines about files whose signature could not be checked: callers choose
/// the paths, and may fail on purpose.
static FILE_CHECK_LOG: crate::logging::Throttle = crate::logging::Throttle::new(20);

fn held_back_note(held_back: u64) -> String {
    if held_back == 0 {
        String::new()
    } else {
        format!(" ({held_back} such lines held back)")
    }
}
