//! TPM-held private keys through an OpenSSL 3 provider (tpm2-openssl).
//!
//! Every TPM operation runs in a library context of its own, with the
//! default provider and the TPM provider loaded, and drops it when done:
//! - the daemon's other cryptography never reaches the TPM provider, which
//!   also offers digests, ciphers and random numbers that would otherwise
//!   be picked for unrelated work;
//! - the TPM connection and the TPM's object slots are held only for the
//!   operation: the SECC and the OCPP client need them to use the keys, and
//!   a TPM without a resource manager (swtpm, `/dev/tpm0`) has room for
//!   three loaded objects across all its clients.
//!
//! The key file is the provider's `TSS2 PRIVATE KEY` PEM: the key wrapped
//! by the TPM's storage key, useless without that TPM.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr;
use std::sync::{Mutex, MutexGuard};

use foreign_types_shared::ForeignType;
use openssl::error::ErrorStack;
use openssl::lib_ctx::LibCtx;
use openssl::md_ctx::MdCtx;
use openssl::pkey::{PKey, Private};
use openssl::provider::Provider;
use openssl::x509::X509Req;

use crate::config;
use crate::x509::{self, CsrKey, CsrSubject, Fingerprint};

/// The environment variable tpm2-openssl reads its TCTI from.
pub const TCTI_VARIABLE: &str = "TPM2OPENSSL_TCTI";

/// The first line of a key file the TPM provider writes.
const TSS2_PEM_HEADER: &[u8] = b"-----BEGIN TSS2 PRIVATE KEY-----";

/// Why a TPM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// `[tpm] enabled = false`.
    #[error("TPM keys are disabled ([tpm] enabled = false)")]
    Disabled,
    /// The provider could not be loaded: not installed, or its TPM is not
    /// reachable through the TCTI.
    #[error("cannot load OpenSSL provider `{provider}`: {reason}")]
    Load {
        /// The provider name.
        provider: String,
        /// OpenSSL's first error.
        reason: String,
    },
    /// The provider loaded but failed its self-test.
    #[error("OpenSSL provider `{0}` failed its self-test")]
    SelfTest(String),
    /// The TPM did not generate a key.
    #[error("TPM key generation failed: {0}")]
    KeyGen(String),
    /// The TPM did not sign.
    #[error("TPM signing failed: {0}")]
    Signing(String),
    /// A key could not be encoded, or a key file not opened.
    #[error("TPM key file: {0}")]
    KeyFile(String),
}

/// Whether a key file holds a TPM key (the provider's TSS2 PEM).
pub fn is_tpm_key(pem: &[u8]) -> bool {
    let start = pem
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(pem.len());
    pem[start..].starts_with(TSS2_PEM_HEADER)
}

// Not bound by openssl-sys; in libcrypto since OpenSSL 3.0.
unsafe extern "C" {
    fn OSSL_PROVIDER_self_test(prov: *const openssl_sys::OSSL_PROVIDER) -> c_int;
    fn EVP_DigestSignInit_ex(
        ctx: *mut openssl_sys::EVP_MD_CTX,
        pctx: *mut *mut openssl_sys::EVP_PKEY_CTX,
        mdname: *const c_char,
        libctx: *mut openssl_sys::OSSL_LIB_CTX,
        props: *const c_char,
        pkey: *mut openssl_sys::EVP_PKEY,
        params: *const openssl_sys::OSSL_PARAM,
    ) -> c_int;
    fn X509_REQ_sign_ctx(
        req: *mut openssl_sys::X509_REQ,
        ctx: *mut openssl_sys::EVP_MD_CTX,
    ) -> c_int;
    fn OSSL_PROVIDER_get_params(
        prov: *const openssl_sys::OSSL_PROVIDER,
        params: *mut openssl_sys::OSSL_PARAM,
    ) -> c_int;
    fn OSSL_PARAM_construct_utf8_ptr(
        key: *const c_char,
        buf: *mut *mut c_char,
        bsize: usize,
    ) -> openssl_sys::OSSL_PARAM;
}

/// `OSSL_KEYMGMT_SELECT_KEYPAIR`: decode both halves of the key.
const SELECT_KEYPAIR: c_int = 0x03;

/// Held for the life of a [`Session`]: one TPM operation at a time. A TPM
/// without a resource manager (swtpm, `/dev/tpm0`) holds three loaded
/// objects across all its clients, and concurrent sessions that each load
/// a primary and a key run it out of memory (`TPM_RC_OBJECT_MEMORY`).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// One TPM session: a library context with the default and the TPM
/// provider. Fields drop in order, so the providers are unloaded (and the
/// TPM released) before their context is freed and the next session may
/// start.
struct Session {
    provider: Provider,
    _default: Provider,
    ctx: LibCtx,
    propquery: CString,
    _turn: MutexGuard<'static, ()>,
}

impl Session {
    fn open(tpm: &config::Tpm) -> Result<Session, TpmError> {
        if !tpm.enabled {
            return Err(TpmError::Disabled);
        }
        let load_error = |e: ErrorStack| TpmError::Load {
            provider: tpm.provider.clone(),
            reason: x509::first_error(&e),
        };
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let ctx = LibCtx::new().map_err(load_error)?;
        let default = Provider::load(Some(&ctx), "default").map_err(load_error)?;
        let provider = Provider::load(Some(&ctx), &tpm.provider).map_err(load_error)?;
        let propquery = CString::new(tpm.propquery()).map_err(|_| TpmError::Load {
            provider: tpm.provider.clone(),
            reason: "the property query holds a NUL byte".into(),
        })?;
        Ok(Session {
            provider,
            _default: default,
            ctx,
            propquery,
            _turn: turn,
        })
    }

    /// A fresh EC key on `curve` (an OpenSSL group name), generated inside
    /// the TPM.
    fn generate_ec(&self, curve: &CStr) -> Result<PKey<Private>, TpmError> {
        // SAFETY: the context and strings outlive the call; for "EC" the one
        // variadic argument is the curve name. A non-null result is an
        // owned EVP_PKEY.
        let key = unsafe {
            openssl_sys::EVP_PKEY_Q_keygen(
                self.ctx.as_ptr(),
                self.propquery.as_ptr(),
                c"EC".as_ptr(),
                curve.as_ptr(),
            )
        };
        if key.is_null() {
            return Err(TpmError::KeyGen(x509::first_error(&ErrorStack::get())));
        }
        // SAFETY: non-null and owned, checked above.
        Ok(unsafe { PKey::from_ptr(key) })
    }

    /// Signs `req` with the TPM key `key` (ECDSA with `digest`). The
    /// signature is fetched from this session: the default library context
    /// would pick the default provider, which cannot use a key it cannot
    /// export.
    fn sign_csr(&self, req: &X509Req, key: &PKey<Private>, digest: &CStr) -> Result<(), TpmError> {
        let md = MdCtx::new().map_err(|e| TpmError::Signing(x509::first_error(&e)))?;
        // SAFETY: all pointers are valid and outlive the calls; `md` owns
        // the signing context, which it frees on drop.
        let ok = unsafe {
            EVP_DigestSignInit_ex(
                md.as_ptr(),
                ptr::null_mut(),
                digest.as_ptr(),
                self.ctx.as_ptr(),
                self.propquery.as_ptr(),
                key.as_ptr(),
                ptr::null(),
            ) == 1
                && X509_REQ_sign_ctx(req.as_ptr(), md.as_ptr()) > 0
        };
        if !ok {
            return Err(TpmError::Signing(x509::first_error(&ErrorStack::get())));
        }
        Ok(())
    }

    /// Opens a TSS2 PEM key file's key in the TPM.
    fn load_key(&self, pem: &[u8]) -> Result<PKey<Private>, TpmError> {
        let mut key: *mut openssl_sys::EVP_PKEY = ptr::null_mut();
        // SAFETY: every pointer is valid for the calls; the decoder context
        // is freed on every path, and writes an owned EVP_PKEY to `key` only
        // on success.
        unsafe {
            let decoder = openssl_sys::OSSL_DECODER_CTX_new_for_pkey(
                &mut key,
                c"PEM".as_ptr(),
                ptr::null(),
                ptr::null(),
                SELECT_KEYPAIR,
                self.ctx.as_ptr(),
                self.propquery.as_ptr(),
            );
            if decoder.is_null() {
                return Err(TpmError::KeyFile(x509::first_error(&ErrorStack::get())));
            }
            // A key with an auth value fails to open rather than ask for it
            // on a terminal.
            openssl_sys::OSSL_DECODER_CTX_set_passphrase(decoder, c"".as_ptr().cast(), 0);
            let mut data = pem.as_ptr();
            let mut len = pem.len();
            let ok = openssl_sys::OSSL_DECODER_from_data(decoder, &mut data, &mut len);
            openssl_sys::OSSL_DECODER_CTX_free(decoder);
            if ok != 1 || key.is_null() {
                return Err(TpmError::KeyFile(x509::first_error(&ErrorStack::get())));
            }
            Ok(PKey::from_ptr(key))
        }
    }
}

/// Loads the provider once, self-tests it and releases it: run at start so
/// that the log says whether TPM keys will work. Returns the provider's
/// name and version as it reports them.
pub fn probe(tpm: &config::Tpm) -> Result<String, TpmError> {
    let session = Session::open(tpm)?;
    let provider = session.provider.as_ptr();
    // SAFETY: the provider is loaded and alive for the call.
    if unsafe { OSSL_PROVIDER_self_test(provider) } != 1 {
        return Err(TpmError::SelfTest(tpm.provider.clone()));
    }
    let mut name: *mut c_char = ptr::null_mut();
    let mut version: *mut c_char = ptr::null_mut();
    // SAFETY: the parameters point at locals that outlive the call; the
    // provider sets them to strings it owns, which live as long as it does
    // and are copied before the session ends.
    unsafe {
        let mut params = [
            OSSL_PARAM_construct_utf8_ptr(c"name".as_ptr(), &mut name, 0),
            OSSL_PARAM_construct_utf8_ptr(c"version".as_ptr(), &mut version, 0),
            openssl_sys::OSSL_PARAM_construct_end(),
        ];
        OSSL_PROVIDER_get_params(provider, params.as_mut_ptr());
        let text = |p: *mut c_char| {
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        Ok(match (text(name), text(version)) {
            (Some(name), Some(version)) => format!("{name} {version}"),
            (Some(name), None) => name,
            _ => tpm.provider.clone(),
        })
    }
}

/// A TPM key and a CSR signed by it: the key file's TSS2 PEM and the CSR
/// PEM. A TPM 2.0 has no Ed448; P-521 only where the TPM implements the
/// curve.
pub fn generate_csr(
    tpm: &config::Tpm,
    subject: &CsrSubject,
    csr_key: CsrKey,
) -> Result<(Vec<u8>, String), TpmError> {
    let (curve, digest) = match csr_key {
        CsrKey::P256 => (c"P-256", c"SHA256"),
        CsrKey::P521 => (c"P-521", c"SHA512"),
        CsrKey::Ed448 => {
            return Err(TpmError::KeyGen(
                "TPM 2.0 defines no Ed448 key; set [iso15118] v2g20_key = \"P521\"".into(),
            ))
        }
    };
    let session = Session::open(tpm)?;
    let key = session.generate_ec(curve)?;
    let signing = |e: ErrorStack| TpmError::Signing(x509::first_error(&e));
    let req = x509::unsigned_csr(subject, &key).map_err(signing)?.build();
    session.sign_csr(&req, &key, digest)?;
    let csr = req.to_pem().map_err(signing)?;
    let pem = key
        .private_key_to_pem_pkcs8()
        .map_err(|e| TpmError::KeyFile(x509::first_error(&e)))?;
    if !is_tpm_key(&pem) {
        // The key would be written in the clear: never.
        return Err(TpmError::KeyFile(format!(
            "provider `{}` did not encode the key as a TSS2 key",
            tpm.provider
        )));
    }
    if let Some(fingerprint) = x509::public_key_fingerprint(&key) {
        remember(&pem, fingerprint);
    }
    Ok((pem, String::from_utf8_lossy(&csr).into_owned()))
}

/// The fingerprint of a TSS2 PEM key file's public key. Remembered by the
/// file's content, so that a key this daemon generated, or read once, is
/// never loaded into the TPM again to be paired: the TPM may be busy with
/// the SECC or the OCPP client.
pub fn key_fingerprint(tpm: &config::Tpm, pem: &[u8]) -> Result<Fingerprint, TpmError> {
    if !tpm.enabled {
        return Err(TpmError::Disabled);
    }
    if let Some(known) = known_key(pem) {
        return Ok(known);
    }
    let session = Session::open(tpm)?;
    let key = session.load_key(pem)?;
    let fingerprint = x509::public_key_fingerprint(&key)
        .ok_or_else(|| TpmError::KeyFile("cannot encode the public key".into()))?;
    remember(pem, fingerprint);
    Ok(fingerprint)
}

/// Most key files remembered; beyond it the memory starts again.
const KNOWN_KEYS_MAX: usize = 4096;

/// Public-key fingerprints of TSS2 key files, by the SHA-256 of the file.
/// A pure function of the bytes (the file holds the key's public area), so
/// it never goes stale.
static KNOWN_KEYS: Mutex<BTreeMap<Fingerprint, Fingerprint>> = Mutex::new(BTreeMap::new());

fn known_key(pem: &[u8]) -> Option<Fingerprint> {
    let known = KNOWN_KEYS.lock().unwrap_or_else(|e| e.into_inner());
    known.get(&x509::sha256(pem)).copied()
}

fn remember(pem: &[u8], fingerprint: Fingerprint) {
    let mut known = KNOWN_KEYS.lock().unwrap_or_else(|e| e.into_inner());
    if known.len() >= KNOWN_KEYS_MAX {
        known.clear();
    }
    known.insert(x509::sha256(pem), fingerprint);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpm_keys_are_known_by_their_pem_label() {
        assert!(is_tpm_key(b"-----BEGIN TSS2 PRIVATE KEY-----\nMII=\n"));
        assert!(is_tpm_key(b"\n  -----BEGIN TSS2 PRIVATE KEY-----\n"));
        assert!(!is_tpm_key(b"-----BEGIN PRIVATE KEY-----\nMII=\n"));
        assert!(!is_tpm_key(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
        assert!(!is_tpm_key(b""));
    }

    #[test]
    fn an_ed448_key_is_never_asked_of_a_tpm() {
        let tpm = config::Tpm {
            enabled: true,
            provider: "no-such-provider".into(),
            ..config::Tpm::default()
        };
        let subject = CsrSubject {
            country: "DE".into(),
            organization: "O".into(),
            common_name: "CN".into(),
        };
        // Refused before the provider is loaded: a load would fail with
        // `Load` here.
        match generate_csr(&tpm, &subject, CsrKey::Ed448) {
            Err(TpmError::KeyGen(reason)) => assert!(reason.contains("no Ed448"), "{reason}"),
            other => panic!("expected KeyGen, got {other:?}"),
        }
    }

    #[test]
    fn nothing_reaches_the_provider_while_disabled() {
        let tpm = config::Tpm::default();
        assert!(matches!(probe(&tpm), Err(TpmError::Disabled)));
        let subject = CsrSubject {
            country: "DE".into(),
            organization: "O".into(),
            common_name: "CN".into(),
        };
        assert!(matches!(
            generate_csr(&tpm, &subject, CsrKey::P256),
            Err(TpmError::Disabled)
        ));
        assert!(matches!(
            key_fingerprint(&tpm, TSS2_PEM_HEADER),
            Err(TpmError::Disabled)
        ));
    }
}
