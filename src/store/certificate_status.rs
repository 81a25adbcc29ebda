//! The certificate status record (OCPP 2.1 M07): what the CSMS answered to
//! GetCertificateChainStatus, one entry per certificate, fresh until its
//! `next_update` and never more than a week (M07.FR.09).
//!
//! `<certs_directory>/.evsecd-certificate-status`: JSON, written whole
//! and durably like every file of the store.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::{CertificateStatus, CertificateStatusSource, HashData};

/// Its name in `certs_directory`.
pub const RECORD_NAME: &str = ".evsecd-certificate-status";

/// The longest an entry is kept, whatever its `next_update`.
pub const MAX_AGE_SECONDS: i64 = 7 * 86_400;

/// Entries kept at most; the record never grows beyond them.
pub const MAX_ENTRIES: usize = 1024;

/// One certificate's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEntry {
    /// The certificate, as the caller named it (canonical).
    pub hash: HashData,
    /// What the CSMS answered.
    pub status: CertificateStatus,
    /// From OCSP or from a CRL.
    pub source: CertificateStatusSource,
    /// When it was received, Unix seconds.
    pub received: i64,
    /// When it stops being fresh: `next_update`, or a week after it was
    /// received if that is sooner.
    pub expires: i64,
}

impl StatusEntry {
    /// Still fresh at `now`: before its expiry, and that expiry no more
    /// than a week ahead (a clock set back does not stretch an entry).
    pub fn is_fresh(&self, now: i64) -> bool {
        now < self.expires && self.expires <= now.saturating_add(MAX_AGE_SECONDS)
    }

    /// Worth keeping at `now`: fresh, or stale but younger than a week.
    /// A stale entry counts for nothing, but shadows the older entries of
    /// the same certificate that named it in another algorithm (whose
    /// certificate the store may not hold, so they cannot be matched when
    /// it arrives): they all expire a week after receipt at the latest.
    pub fn is_kept(&self, now: i64) -> bool {
        now < self.received.saturating_add(MAX_AGE_SECONDS)
            && self.received <= now.saturating_add(MAX_AGE_SECONDS)
    }
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    entries: Vec<Stored>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    hash_algorithm: String,
    issuer_name_hash: String,
    issuer_key_hash: String,
    serial_number: String,
    status: String,
    source: String,
    received: i64,
    expires: i64,
}

/// The record of a store.
pub fn path(certs_directory: &Path) -> PathBuf {
    certs_directory.join(RECORD_NAME)
}

/// The entries of the record kept at `now`; none when it is absent. A record or an entry that does not read is logged and left out:
/// its certificates are then asked about again.
pub fn read(certs_directory: &Path, now: i64) -> Vec<StatusEntry> {
    let path = path(certs_directory);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::error!(
                "certificate status record {} cannot be read: {e}",
                path.display()
            );
            return Vec::new();
        }
    };
    let on_disk: OnDisk = match serde_json::from_slice(&bytes) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(
                "certificate status record {} is broken: {e}",
                path.display()
            );
            return Vec::new();
        }
    };
    let mut entries = Vec::new();
    for stored in on_disk.entries {
        match decode(&stored) {
            Some(entry) if entry.is_kept(now) => entries.push(entry),
            Some(_) => {}
            None => tracing::error!(
                "certificate status record {} holds a broken entry (serial {})",
                path.display(),
                stored.serial_number
            ),
        }
    }
    entries.truncate(MAX_ENTRIES);
    entries
}

fn decode(stored: &Stored) -> Option<StatusEntry> {
    Some(StatusEntry {
        hash: HashData::parse(
            &stored.hash_algorithm,
            &stored.issuer_name_hash,
            &stored.issuer_key_hash,
            &stored.serial_number,
        )
        .ok()?,
        status: stored.status.parse().ok()?,
        source: stored.source.parse().ok()?,
        received: stored.received,
        expires: stored.expires,
    })
}

/// The record's bytes.
pub fn encode(entries: &[StatusEntry]) -> Vec<u8> {
    let on_disk = OnDisk {
        entries: entries
            .iter()
            .map(|e| Stored {
                hash_algorithm: e.hash.hash_algorithm.as_str().to_owned(),
                issuer_name_hash: e.hash.issuer_name_hash.clone(),
                issuer_key_hash: e.hash.issuer_key_hash.clone(),
                serial_number: e.hash.serial_number.clone(),
                status: e.status.as_str().to_owned(),
                source: e.source.as_str().to_owned(),
                received: e.received,
                expires: e.expires,
            })
            .collect(),
    };
    // Strings and integers always serialise.
    serde_json::to_vec_pretty(&on_disk).unwrap_or_default()
}
