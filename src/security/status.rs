//! Certificate status (OCPP 2.1 M07, contract §11.2): what the CSMS
//! answered to GetCertificateChainStatus, kept on disk, asked for only for
//! the chain members without a fresh entry, and used by VerifyCertificate.

use std::sync::Arc;

use openssl::x509::X509;

use super::{Error, EvseSecurity};
use crate::index::Snapshot;
use crate::store::certificate_status::{self, StatusEntry, MAX_AGE_SECONDS, MAX_ENTRIES};
use crate::types::{
    CertificateStatus, CertificateStatusSource, HashAlgorithm, HashData, StoreOperation,
    UpdateCertificateStatusResult,
};
use crate::verify::read_chain;
use crate::x509::{self, CertFacts};

/// Chain members asked about in one call (M07: up to 4 per request).
pub const MAX_REQUESTED: usize = 4;
/// URLs given per member (M07: 1 to 5).
pub const MAX_URLS: usize = 5;
/// Longest URL given (M07: 2000 characters).
pub const MAX_URL_LEN: usize = 2000;

/// The certificate statuses in force. A new table, with the next
/// generation, replaces the old on every change.
#[derive(Debug, Default)]
pub(super) struct StatusTable {
    entries: Vec<StatusEntry>,
    /// Changes with every update, for the verdicts that depend on it.
    pub(super) generation: u64,
}

impl StatusTable {
    pub(super) fn new(entries: Vec<StatusEntry>) -> StatusTable {
        StatusTable {
            entries,
            generation: 0,
        }
    }

    /// The newest entry whose hash data names `cert` issued by `issuer`,
    /// in whatever algorithm it was given, when it is fresh. A newer stale
    /// entry hides an older fresh one: that was replaced.
    fn fresh_for(&self, cert: &X509, issuer: &X509, now: i64) -> Option<&StatusEntry> {
        if self.entries.is_empty() {
            return None;
        }
        let serial = x509::serial_of(cert)?;
        self.entries
            .iter()
            .filter(|e| e.hash.serial_number == serial)
            .filter(|e| {
                x509::hash_data_of(cert, issuer, e.hash.hash_algorithm).as_ref() == Some(&e.hash)
            })
            .max_by_key(|e| e.received)
            .filter(|e| e.is_fresh(now))
    }

    /// The first member of a verified `path` (leaf first, anchor last, the
    /// anchor not asked about) that a fresh entry says is revoked: its
    /// depth and the entry.
    pub(super) fn revoked_in(&self, path: &[X509], now: i64) -> Option<(usize, &StatusEntry)> {
        path.windows(2).enumerate().find_map(|(depth, pair)| {
            self.fresh_for(&pair[0], &pair[1], now)
                .filter(|e| e.status == CertificateStatus::Revoked)
                .map(|e| (depth, e))
        })
    }

    /// When the next fresh entry stops being fresh: verdicts that depended
    /// on the table hold until then at most.
    pub(super) fn next_expiry(&self, now: i64) -> i64 {
        self.entries
            .iter()
            .filter(|e| e.is_fresh(now))
            .map(|e| e.expires)
            .min()
            .unwrap_or(i64::MAX)
    }
}

impl EvseSecurity {
    /// `GetCertificateStatusRequestData` (M07.FR.10/11): the leaf and
    /// Sub-CAs of `chain_pem` that have no fresh entry, leaf first, at most
    /// [`MAX_REQUESTED`], each with the URLs to ask (OCSP responders, else
    /// CRL distribution points; empty when it has neither). The trust
    /// anchor, and what follows it, is never listed: a self-signed
    /// certificate or one installed in a bundle. A member whose issuer is
    /// neither next in the chain nor installed has no hash data and is
    /// left out.
    pub fn get_certificate_status_request_data(
        &self,
        chain_pem: &str,
    ) -> Result<Vec<(HashData, Vec<String>)>, Error> {
        if !self.fits("certificate chain", chain_pem) {
            return Err(Error::InvalidArgs(format!(
                "certificate_chain: longer than [limits] max_pem_bytes ({})",
                self.config().limits.max_pem_bytes
            )));
        }
        let Ok((chain, _)) = read_chain(chain_pem) else {
            return Err(Error::InvalidArgs(
                "certificate_chain: not a PEM chain of X.509 certificates".into(),
            ));
        };
        let snap = self.snapshot();
        let statuses = self.statuses();
        let now = self.now();
        let mut requests = Vec::new();
        for (i, member) in chain.iter().enumerate() {
            if member.self_signed || installed(&snap, member) {
                break;
            }
            let issuer = chain
                .get(i + 1)
                .filter(|next| member.is_issued_by(next))
                .map(|next| Arc::new(next.clone()))
                .or_else(|| installed_issuer(&snap, member));
            let (Some(issuer), Some(cert)) = (issuer, member.x509()) else {
                tracing::info!(subject = %member.common_name(), "no status asked: its issuer is not known");
                continue;
            };
            let Some(issuer_x509) = issuer.x509() else {
                continue;
            };
            if statuses.fresh_for(cert, issuer_x509, now).is_some() {
                continue;
            }
            let urls: Vec<String> = x509::status_urls(cert)
                .into_iter()
                .filter(|u| u.len() <= MAX_URL_LEN)
                .take(MAX_URLS)
                .collect();
            requests.push((
                member.hash_data(HashAlgorithm::SHA256, &issuer.key_bits),
                urls,
            ));
            if requests.len() == MAX_REQUESTED {
                break;
            }
        }
        Ok(requests)
    }

    /// `UpdateCertificateStatus`: keeps what the CSMS answered for the
    /// certificate `query` names until `next_update`, a week at most. A
    /// newer entry replaces the older ones of the same certificate, in
    /// whatever algorithm they named it. Unknown status or source strings,
    /// or a `next_update` not in the future, are `InvalidFormat`.
    pub fn update_certificate_status(
        &self,
        query: &HashData,
        status: &str,
        source: &str,
        next_update: i64,
    ) -> Result<UpdateCertificateStatusResult, Error> {
        use UpdateCertificateStatusResult as R;
        let now = self.now();
        let (Ok(status), Ok(source)) = (
            status.parse::<CertificateStatus>(),
            source.parse::<CertificateStatusSource>(),
        ) else {
            return Ok(R::InvalidFormat);
        };
        if next_update <= now {
            return Ok(R::InvalidFormat);
        }
        let entry = StatusEntry {
            hash: query.clone(),
            status,
            source,
            received: now,
            expires: next_update.min(now.saturating_add(MAX_AGE_SECONDS)),
        };
        let record = certificate_status::path(&self.config().certs_directory);
        self.write(StoreOperation::Installed, |snap, tx| {
            let current = self.statuses();
            let known = known_certificate(snap, query);
            let mut entries: Vec<StatusEntry> = current
                .entries
                .iter()
                .filter(|e| e.is_kept(now) && e.hash != *query)
                .filter(|e| !known.as_ref().is_some_and(|(cert, bits)| cert.serial == e.hash.serial_number && cert.hash_data(e.hash.hash_algorithm, bits) == e.hash))
                .cloned()
                .collect();
            if entries.len() >= MAX_ENTRIES {
                // The oldest make room; the new one always stays.
                entries.sort_by_key(|e| std::cmp::Reverse(e.received));
                entries.truncate(MAX_ENTRIES - 1);
            }
            entries.push(entry.clone());
            if let Err(e) = tx.put(&record, |_| certificate_status::encode(&entries)) {
                return Err(Err(Error::Internal(format!(
                    "cannot write the certificate status record {}: {e}",
                    record.display()
                ))));
            }
            tracing::info!(serial = %query.serial_number, status = %status, source = %source, expires = entry.expires, "certificate status recorded");
            self.set_statuses(StatusTable {
                entries,
                generation: current.generation + 1,
            });
            Ok(Ok(R::Accepted))
        })
        .result
    }

    /// Rewrites the record without the entries no longer kept (a week
    /// after receipt); the maintenance task calls it.
    pub fn prune_certificate_statuses(&self) {
        let now = self.now();
        if self.statuses().entries.iter().all(|e| e.is_kept(now)) {
            return;
        }
        let record = certificate_status::path(&self.config().certs_directory);
        // The record is the daemon's own: pruning it is no store change.
        self.write(StoreOperation::Deleted, |_, tx| {
            let current = self.statuses();
            let entries: Vec<StatusEntry> = current
                .entries
                .iter()
                .filter(|e| e.is_kept(now))
                .cloned()
                .collect();
            if let Err(e) = tx.put(&record, |_| certificate_status::encode(&entries)) {
                tracing::warn!(
                    "cannot prune the certificate status record {}: {e}",
                    record.display()
                );
                return Err(());
            }
            self.set_statuses(StatusTable {
                entries,
                generation: current.generation + 1,
            });
            Ok(())
        });
    }

    /// Every fresh certificate status entry, for operators.
    pub fn certificate_statuses(&self) -> Vec<StatusEntry> {
        let now = self.now();
        self.statuses()
            .entries
            .iter()
            .filter(|e| e.is_fresh(now))
            .cloned()
            .collect()
    }
}

/// Whether `cert` is in a bundle: a trust anchor (RFC 5280 6.1).
fn installed(snap: &Snapshot, cert: &CertFacts) -> bool {
    snap.bundles.iter().any(|b| {
        b.named(&cert.subject_der)
            .any(|c| c.fingerprint == cert.fingerprint)
    })
}

/// An installed certificate that issued `cert`.
fn installed_issuer(snap: &Snapshot, cert: &CertFacts) -> Option<Arc<CertFacts>> {
    snap.bundles
        .iter()
        .flat_map(|b| b.named(&cert.issuer_der))
        .find(|issuer| cert.is_issued_by(issuer))
        .cloned()
}

/// The certificate of the store `query` names, with its issuer's key bits.
fn known_certificate(snap: &Snapshot, query: &HashData) -> Option<(Arc<CertFacts>, Vec<u8>)> {
    let in_bundles = snap
        .bundles
        .iter()
        .flat_map(|b| &b.nodes)
        .find(|n| n.matches(query))
        .and_then(|n| Some((n.cert.clone(), n.issuer_key_bits.clone()?)));
    in_bundles.or_else(|| {
        snap.leaves
            .iter()
            .flat_map(|d| &d.leaves)
            .find(|l| l.matches(query))
            .and_then(|l| Some((l.cert.clone(), l.issuer_key_bits()?.to_vec())))
    })
}
