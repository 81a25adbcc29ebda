//! Configuration: the TOML file of contract §3, with the EVerest key names.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::types::{CaCertificateType, LeafCertificateType};
use crate::x509::CsrKey;

/// A configuration that cannot be used. The message is one line and names
/// the file, key or path at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has a bad value.
    #[error("config {path}: {message}")]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// Parser message, with line and key.
        message: String,
    },
    /// A key's value is not usable.
    #[error("config key `{key}`: {message}")]
    Value {
        /// The key at fault.
        key: &'static str,
        /// Why.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    certs_directory: Option<PathBuf>,
    csms_ca_bundle: Option<PathBuf>,
    mf_ca_bundle: Option<PathBuf>,
    mo_ca_bundle: Option<PathBuf>,
    v2g_ca_bundle: Option<PathBuf>,
    oem_ca_bundle: Option<PathBuf>,
    csms_leaf_cert_directory: Option<PathBuf>,
    csms_leaf_key_directory: Option<PathBuf>,
    secc_leaf_cert_directory: Option<PathBuf>,
    secc_leaf_key_directory: Option<PathBuf>,
    private_key_password: Option<String>,
    #[serde(default)]
    access: Access,
    #[serde(default)]
    tpm: Tpm,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    gc: Gc,
    #[serde(default)]
    iso15118: Iso15118,
    #[serde(default)]
    ocpp: Ocpp,
    #[serde(default)]
    renewal: Renewal,
}

/// `[access]`: who may call what (enforced by a later part of the daemon).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// Groups whose members may call every method.
    #[serde(default)]
    pub write_groups: Vec<String>,
    /// Groups whose members may call only the read-only methods.
    #[serde(default)]
    pub read_groups: Vec<String>,
    /// Group that may read the private keys (mode 0640), so that the OCPP
    /// client and the SECC can open them by path. Unset: keys are 0600.
    #[serde(default)]
    pub key_group: Option<String>,
    /// Groups whose members may call `OpenLeafCredentials` for the V2G
    /// (and V2G20) leaf and are told its key password (contract §11.3).
    #[serde(default)]
    pub v2g_key_groups: Vec<String>,
    /// The same for the CSMS leaf.
    #[serde(default)]
    pub csms_key_groups: Vec<String>,
}

/// `[tpm]`: TPM-held keys through an OpenSSL provider.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Tpm {
    /// Whether `use_tpm = true` may be honoured.
    #[serde(default)]
    pub enabled: bool,
    /// The OpenSSL provider that holds TPM keys.
    #[serde(default = "default_provider")]
    pub provider: String,
    /// The property query for TPM key generation and key loading; unset:
    /// `provider=<provider>`.
    #[serde(default)]
    pub propquery: Option<String>,
    /// The TCTI the provider reaches the TPM through (`TPM2OPENSSL_TCTI`),
    /// such as `device:/dev/tpmrm0`; unset: the environment's, else the
    /// TSS default.
    #[serde(default)]
    pub tcti: Option<String>,
    /// Seconds before TPM keys that could not be opened because the TPM
    /// was unreachable are tried again.
    #[serde(default = "default_tpm_retry_seconds")]
    pub retry_seconds: u64,
}

fn default_tpm_retry_seconds() -> u64 {
    30
}

impl Tpm {
    /// The property query in effect.
    pub fn propquery(&self) -> String {
        self.propquery
            .clone()
            .unwrap_or_else(|| format!("provider={}", self.provider))
    }
}

impl Default for Tpm {
    fn default() -> Self {
        Tpm {
            enabled: false,
            provider: default_provider(),
            propquery: None,
            tcti: None,
            retry_seconds: default_tpm_retry_seconds(),
        }
    }
}

fn default_provider() -> String {
    "tpm2".to_owned()
}

/// `[limits]`: store quotas and argument sizes.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most files the store may hold (certificates and keys).
    pub max_store_entries: usize,
    /// Most bytes the store's files may take together.
    pub max_store_bytes: u64,
    /// Longest PEM argument accepted, in bytes.
    pub max_pem_bytes: usize,
    /// Longest leaf chain accepted by `UpdateLeafCertificate`, in
    /// characters (OCPP MaxCertificateChainSize).
    pub max_chain_bytes: usize,
    /// Largest file `VerifyFileSignature` hashes, in bytes.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_store_entries: 2000,
            max_store_bytes: 50 * 1024 * 1024,
            max_pem_bytes: 64 * 1024,
            max_chain_bytes: 10_000,
            max_file_bytes: 4 << 30,
        }
    }
}

/// `[gc]`: garbage collection of expired leaves, orphan CSR keys and OCSP
/// responses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Gc {
    /// Seconds between two runs on the timer.
    pub interval_seconds: u64,
    /// Age, by file mtime, after which a CSR key that no certificate uses
    /// is removed.
    pub csr_key_max_age_seconds: u64,
    /// Expired leaves are removed only beyond this many newest leaves of a
    /// domain.
    pub keep_leaves: usize,
}

impl Default for Gc {
    fn default() -> Self {
        Gc {
            interval_seconds: 20 * 60,
            csr_key_max_age_seconds: 60 * 60,
            keep_leaves: 10,
        }
    }
}

/// `[ocpp]`: OCPP behaviours of the store (contract §11.2).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Ocpp {
    /// OCPP `AdditionalRootCertificateCheck` (M05.FR.09–16): one CSMS root
    /// and one fallback, a new root signed by the one in use.
    pub additional_root_certificate_check: bool,
}

/// `[renewal]`: when `LeafCertificateExpiring` is sent (contract §11.2).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Renewal {
    /// Whole days before the selected leaf expires from which the signal
    /// is sent, daily.
    pub days_before: u32,
}

impl Default for Renewal {
    fn default() -> Self {
        Renewal { days_before: 30 }
    }
}

/// `[iso15118]`: the certificate profiles of ISO 15118.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Iso15118 {
    /// SECC leaves must carry `DC=CPO` ([V2G2-925], contract §11.1).
    pub require_dc: bool,
    /// The key of a `V2G20` CSR.
    pub v2g20_key: V2g20Key,
}

impl Default for Iso15118 {
    fn default() -> Self {
        Iso15118 {
            require_dc: true,
            v2g20_key: V2g20Key::P521,
        }
    }
}

/// `[iso15118] v2g20_key`: the two keys of an ISO 15118-20 SECC leaf.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum V2g20Key {
    /// NIST P-521, signed with ECDSA-SHA512.
    P521,
    /// Ed448, signed with pure Ed448.
    Ed448,
}

impl V2g20Key {
    /// The key a `V2G20` CSR is made with.
    pub fn csr_key(self) -> CsrKey {
        match self {
            V2g20Key::P521 => CsrKey::P521,
            V2g20Key::Ed448 => CsrKey::Ed448,
        }
    }
}

/// The resolved configuration. Every path is absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Base of every relative path.
    pub certs_directory: PathBuf,
    /// CSMS root bundle.
    pub csms_ca_bundle: PathBuf,
    /// Manufacturer root bundle.
    pub mf_ca_bundle: PathBuf,
    /// Mobility operator root bundle.
    pub mo_ca_bundle: PathBuf,
    /// V2G root bundle.
    pub v2g_ca_bundle: PathBuf,
    /// Vehicle OEM root bundle (ISO 15118-20).
    pub oem_ca_bundle: PathBuf,
    /// OCPP client certificates.
    pub csms_leaf_cert_directory: PathBuf,
    /// OCPP client keys.
    pub csms_leaf_key_directory: PathBuf,
    /// SECC certificates.
    pub secc_leaf_cert_directory: PathBuf,
    /// SECC keys.
    pub secc_leaf_key_directory: PathBuf,
    /// Password of the private keys; `None` when keys are plain.
    pub private_key_password: Option<String>,
    /// Access roles.
    pub access: Access,
    /// TPM settings.
    pub tpm: Tpm,
    /// Quotas and sizes.
    pub limits: Limits,
    /// Garbage collection.
    pub gc: Gc,
    /// `[iso15118]`.
    pub iso15118: Iso15118,
    /// `[ocpp]`.
    pub ocpp: Ocpp,
    /// `[renewal]`.
    pub renewal: Renewal,
}

/// Default store location.
pub const DEFAULT_CERTS_DIRECTORY: &str = "/var/lib/evsec/certs";

impl Config {
    /// Reads and resolves a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and resolves config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: PathBuf::new(),
            message: one_line(text, &e),
        })?;
        let certs_directory = raw
            .certs_directory
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CERTS_DIRECTORY));
        let certs_directory =
            std::path::absolute(&certs_directory).map_err(|e| ConfigError::Value {
                key: "certs_directory",
                message: format!("{}: {e}", certs_directory.display()),
            })?;
        let resolve = |value: Option<PathBuf>, default: &str, key: &'static str| {
            let value = value.unwrap_or_else(|| PathBuf::from(default));
            if value.as_os_str().is_empty() {
                return Err(ConfigError::Value {
                    key,
                    message: "must not be empty".into(),
                });
            }
            Ok(certs_directory.join(value))
        };
        let config = Config {
            csms_ca_bundle: resolve(
                raw.csms_ca_bundle,
                "ca/csms/CSMS_ROOT_CA.pem",
                "csms_ca_bundle",
            )?,
            mf_ca_bundle: resolve(raw.mf_ca_bundle, "ca/mf/MF_ROOT_CA.pem", "mf_ca_bundle")?,
            mo_ca_bundle: resolve(raw.mo_ca_bundle, "ca/mo/MO_ROOT_CA.pem", "mo_ca_bundle")?,
            v2g_ca_bundle: resolve(raw.v2g_ca_bundle, "ca/v2g/V2G_ROOT_CA.pem", "v2g_ca_bundle")?,
            oem_ca_bundle: resolve(raw.oem_ca_bundle, "ca/oem/OEM_ROOT_CA.pem", "oem_ca_bundle")?,
            csms_leaf_cert_directory: resolve(
                raw.csms_leaf_cert_directory,
                "client/csms",
                "csms_leaf_cert_directory",
            )?,
            csms_leaf_key_directory: resolve(
                raw.csms_leaf_key_directory,
                "client/csms",
                "csms_leaf_key_directory",
            )?,
            secc_leaf_cert_directory: resolve(
                raw.secc_leaf_cert_directory,
                "client/cso",
                "secc_leaf_cert_directory",
            )?,
            secc_leaf_key_directory: resolve(
                raw.secc_leaf_key_directory,
                "client/cso",
                "secc_leaf_key_directory",
            )?,
            certs_directory,
            // EVerest treats the empty password as "no password".
            private_key_password: raw.private_key_password.filter(|p| !p.is_empty()),
            access: raw.access,
            tpm: raw.tpm,
            limits: raw.limits,
            gc: raw.gc,
            iso15118: raw.iso15118,
            ocpp: raw.ocpp,
            renewal: raw.renewal,
        };
        config.check_limits()?;
        config.check_tpm()?;
        config.check_rotation()?;
        Ok(config)
    }

    /// A config for a store rooted at `certs_directory` with every other key
    /// at its default.
    pub fn with_certs_directory(certs_directory: &Path) -> Result<Config, ConfigError> {
        let escaped = certs_directory
            .display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"");
        Config::parse(&format!("certs_directory = \"{escaped}\"\n"))
    }

    fn check_limits(&self) -> Result<(), ConfigError> {
        let positive = |key: &'static str, value: u64| {
            if value == 0 {
                Err(ConfigError::Value {
                    key,
                    message: "must be greater than 0".into(),
                })
            } else {
                Ok(())
            }
        };
        positive(
            "limits.max_store_entries",
            self.limits.max_store_entries as u64,
        )?;
        positive("limits.max_store_bytes", self.limits.max_store_bytes)?;
        positive("limits.max_pem_bytes", self.limits.max_pem_bytes as u64)?;
        positive("limits.max_chain_bytes", self.limits.max_chain_bytes as u64)?;
        positive("limits.max_file_bytes", self.limits.max_file_bytes)?;
        positive("gc.interval_seconds", self.gc.interval_seconds)?;
        positive("tpm.retry_seconds", self.tpm.retry_seconds)?;
        positive("gc.keep_leaves", self.gc.keep_leaves as u64)
    }

    /// The TPM strings go to OpenSSL and the environment, which take no
    /// NUL bytes.
    fn check_tpm(&self) -> Result<(), ConfigError> {
        let fields = [
            ("tpm.provider", Some(&self.tpm.provider)),
            ("tpm.propquery", self.tpm.propquery.as_ref()),
            ("tpm.tcti", self.tpm.tcti.as_ref()),
        ];
        for (key, value) in fields {
            let Some(value) = value else { continue };
            if value.is_empty() || value.contains('\0') {
                return Err(ConfigError::Value {
                    key,
                    message: "must be a non-empty string without NUL".into(),
                });
            }
        }
        Ok(())
    }

    /// The CSMS root rotation removes every CSMS certificate but two: the
    /// CSMS bundle must hold nothing else.
    fn check_rotation(&self) -> Result<(), ConfigError> {
        if !self.ocpp.additional_root_certificate_check {
            return Ok(());
        }
        let csms = self.ca_bundle(CaCertificateType::CSMS);
        match CaCertificateType::ALL
            .iter()
            .find(|ca| **ca != CaCertificateType::CSMS && self.ca_bundle(**ca) == csms)
        {
            Some(other) => Err(ConfigError::Value {
                key: "ocpp.additional_root_certificate_check",
                message: format!(
                    "csms_ca_bundle is also {}: the root rotation would remove its certificates",
                    Config::ca_bundle_key(*other)
                ),
            }),
            None => Ok(()),
        }
    }

    /// The bundle path of a CA type.
    pub fn ca_bundle(&self, ca: CaCertificateType) -> &Path {
        match ca {
            CaCertificateType::V2G => &self.v2g_ca_bundle,
            CaCertificateType::MO => &self.mo_ca_bundle,
            CaCertificateType::CSMS => &self.csms_ca_bundle,
            CaCertificateType::MF => &self.mf_ca_bundle,
            CaCertificateType::OEM => &self.oem_ca_bundle,
        }
    }

    /// The config key of a CA bundle, for messages.
    pub fn ca_bundle_key(ca: CaCertificateType) -> &'static str {
        match ca {
            CaCertificateType::V2G => "v2g_ca_bundle",
            CaCertificateType::MO => "mo_ca_bundle",
            CaCertificateType::CSMS => "csms_ca_bundle",
            CaCertificateType::MF => "mf_ca_bundle",
            CaCertificateType::OEM => "oem_ca_bundle",
        }
    }

    /// Certificate and key directories of a leaf type (the SECC's for
    /// `V2G` and `V2G20`); `None` for the types the station keeps no leaf of.
    pub fn leaf_dirs(&self, leaf: LeafCertificateType) -> Option<(&Path, &Path)> {
        match leaf.stored_in()? {
            LeafCertificateType::CSMS => Some((
                &self.csms_leaf_cert_directory,
                &self.csms_leaf_key_directory,
            )),
            _ => Some((
                &self.secc_leaf_cert_directory,
                &self.secc_leaf_key_directory,
            )),
        }
    }
}

/// Turns a TOML error into one line: position, key and reason.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let reason = e.message().replace('\n', " ");
    let Some(span) = e.span() else {
        return reason;
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    match line.split_once('=') {
        Some((key, _)) if !key.trim().starts_with('[') => {
            format!("line {line_no}, key `{}`: {reason}", key.trim())
        }
        _ => format!("line {line_no}: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_everest() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.certs_directory, PathBuf::from("/var/lib/evsec/certs"));
        assert_eq!(
            c.v2g_ca_bundle,
            PathBuf::from("/var/lib/evsec/certs/ca/v2g/V2G_ROOT_CA.pem")
        );
        assert_eq!(
            c.secc_leaf_key_directory,
            PathBuf::from("/var/lib/evsec/certs/client/cso")
        );
        assert_eq!(c.private_key_password, None);
        assert_eq!(c.tpm.provider, "tpm2");
        assert_eq!(c.limits.max_store_entries, 2000);
    }

    #[test]
    fn relative_paths_resolve_against_certs_directory() {
        let c = Config::parse(
            "certs_directory = \"/s\"\nmo_ca_bundle = \"x/mo\"\nmf_ca_bundle = \"/abs/mf.pem\"\n",
        )
        .unwrap();
        assert_eq!(c.mo_ca_bundle, PathBuf::from("/s/x/mo"));
        assert_eq!(c.mf_ca_bundle, PathBuf::from("/abs/mf.pem"));
    }

    #[test]
    fn shipped_configs_parse_and_production_equals_defaults() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let production = Config::load(&dir.join("evsec.toml")).unwrap();
        let defaults = Config::parse("").unwrap();
        assert_eq!(production.access.write_groups, ["evsec-write"]);
        assert_eq!(production.access.read_groups, ["evsec-read"]);
        assert_eq!(production.access.key_group.as_deref(), Some("evsec-keys"));
        assert_eq!(production.access.v2g_key_groups, ["evsec-keys"]);
        assert_eq!(production.access.csms_key_groups, ["evsec-keys"]);
        assert_eq!(
            Config {
                access: defaults.access.clone(),
                ..production
            },
            defaults
        );
        Config::load(&dir.join("dev.toml")).unwrap();
    }

    #[test]
    fn errors_are_one_line_and_name_the_key() {
        let e = Config::parse("certs_directory = \"/s\"\nv2g_bundle = \"x\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.contains("line 2, key `v2g_bundle`"), "{msg}");
        let e = Config::parse("certs_directory = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `certs_directory`"), "{e}");
        let e = Config::parse("[limits]\nmax_store_entries = 0\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "config key `limits.max_store_entries`: must be greater than 0"
        );
        let e = Config::parse("[tpm]\ntcti = \"swtpm:\\u0000\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "config key `tpm.tcti`: must be a non-empty string without NUL"
        );
    }

    #[test]
    fn tpm_property_query_follows_the_provider() {
        let c = Config::parse("[tpm]\nenabled = true\nprovider = \"tpm2x\"\n").unwrap();
        assert_eq!(c.tpm.propquery(), "provider=tpm2x");
        assert_eq!(c.tpm.tcti, None);
        let c =
            Config::parse("[tpm]\npropquery = \"?provider=tpm2\"\ntcti = \"device:/dev/tpmrm0\"\n")
                .unwrap();
        assert_eq!(c.tpm.propquery(), "?provider=tpm2");
        assert_eq!(c.tpm.tcti.as_deref(), Some("device:/dev/tpmrm0"));
    }

    #[test]
    fn the_root_rotation_needs_a_csms_bundle_of_its_own() {
        let shared = "csms_ca_bundle = \"ca/all\"\nmo_ca_bundle = \"ca/all\"\n";
        assert!(Config::parse(shared).is_ok());
        let err = Config::parse(&format!(
            "{shared}[ocpp]\nadditional_root_certificate_check = true\n"
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key `ocpp.additional_root_certificate_check`: csms_ca_bundle is also mo_ca_bundle: the root rotation would remove its certificates"
        );
    }
}
