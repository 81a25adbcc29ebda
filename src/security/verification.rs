//! Chain verification against the bundles (contract 5.4), with a cache of
//! verdicts for the chains that repeat.

use std::collections::HashMap;
use std::sync::Mutex;

use super::status::StatusTable;
use super::{Error, EvseSecurity};
use crate::index::Snapshot;
use crate::types::{CaCertificateType, CertificateValidationResult, LeafCertificateType, BUNDLES};
use crate::verify::{self, read_chain, ChainVerdict, LeafTime};
use crate::x509::{self, CertFacts, Fingerprint};

/// A day in seconds.
const DAY: i64 = 86_400;

impl EvseSecurity {
    /// Contract 5.4.
    pub fn verify_certificate(
        &self,
        chain_pem: &str,
        types: &[LeafCertificateType],
    ) -> Result<CertificateValidationResult, Error> {
        if let Some(refused) = self.refuse_oversized(chain_pem) {
            return Ok(refused.result);
        }
        let snap = self.snapshot();
        let statuses = self.statuses();
        let now = self.now();
        let key = verdict_key(chain_pem, types);
        if let Some(result) = self.verdicts.get(&key, &snap, &statuses, types, now) {
            return Ok(result);
        }
        let (result, from, until) = match read_chain(chain_pem) {
            Ok((chain, _)) => {
                let result =
                    Self::verify_parsed(&snap, &statuses, &chain, types, now, LeafTime::ValidNow)
                        .result;
                // The verdict holds until the next notBefore or notAfter of
                // the chain or of the anchors it could be checked against.
                let bundles: Vec<CaCertificateType> = types.iter().map(|t| t.anchor()).collect();
                let anchors = snap.trust_anchors_for(&bundles, &chain);
                let (from, until) = validity_window(chain.iter().chain(anchors), now);
                // Or until a certificate status entry goes stale.
                (result, from, until.min(statuses.next_expiry(now)))
            }
            Err(refused) => (refused.result, i64::MIN, i64::MAX),
        };
        // An internal failure is not an answer to keep.
        if result == CertificateValidationResult::Unknown && until != i64::MAX {
            return Ok(result);
        }
        self.verdicts.insert(
            key,
            Verdict {
                bundles: built_of(&snap, types),
                statuses: statuses.generation,
                from,
                until,
                result,
            },
        );
        Ok(result)
    }

    /// The cached verdict on a chain, when there is one that still holds
    /// and nothing on disk waits to be read: no parsing, no I/O, so the
    /// caller may answer it at once.
    pub fn cached_verification(
        &self,
        chain_pem: &str,
        types: &[LeafCertificateType],
    ) -> Option<CertificateValidationResult> {
        if chain_pem.len() > self.config().limits.max_pem_bytes || self.has_unread_disk_changes() {
            return None;
        }
        let snap = self.snapshot();
        self.verdicts.get(
            &verdict_key(chain_pem, types),
            &snap,
            &self.statuses(),
            types,
            self.now(),
        )
    }

    /// The verdict on a chain argument over `[limits] max_pem_bytes`,
    /// before anything reads it (or the verdict cache hashes it).
    pub(crate) fn refuse_oversized(&self, chain_pem: &str) -> Option<ChainVerdict> {
        (!self.fits("certificate chain", chain_pem)).then(|| {
            ChainVerdict::new(
                CertificateValidationResult::Unknown,
                "the chain is longer than [limits] max_pem_bytes",
            )
        })
    }

    /// `VerifyCertificateDetailed`: contract 5.4, with why. Never cached:
    /// an operator asks this once, to read the reason.
    pub fn verify_certificate_detailed(
        &self,
        chain_pem: &str,
        types: &[LeafCertificateType],
    ) -> ChainVerdict {
        use CertificateValidationResult as V;
        if let Some(refused) = self.refuse_oversized(chain_pem) {
            return refused;
        }
        let facts = match read_chain(chain_pem) {
            Ok((chain, _)) => chain,
            Err(refused) => return refused,
        };
        let snap = self.snapshot();
        let statuses = self.statuses();
        let now = self.now();
        let verdict = Self::verify_parsed(&snap, &statuses, &facts, types, now, LeafTime::ValidNow);
        if verdict.result != V::Expired {
            return verdict;
        }
        // A chain that is valid a day away on either side points at the
        // station's clock rather than at the chain (EVerest #1662).
        let valid_at = |at| {
            Self::verify_parsed(&snap, &statuses, &facts, types, at, LeafTime::ValidNow).result
                == V::Valid
        };
        let clock = if valid_at(now - DAY) {
            Some("was valid a day ago")
        } else if valid_at(now + DAY) {
            Some("is valid a day from now")
        } else {
            None
        };
        match clock {
            Some(when) => ChainVerdict {
                reason: format!(
                    "{}; the chain {when}: check the station's clock",
                    verdict.reason
                ),
                ..verdict
            },
            None => verdict,
        }
    }

    /// Contract 5.4 on a parsed chain, against the bundles of `snap`.
    pub(super) fn verify_parsed(
        snap: &Snapshot,
        statuses: &StatusTable,
        chain: &[CertFacts],
        types: &[LeafCertificateType],
        now: i64,
        leaf_time: LeafTime,
    ) -> ChainVerdict {
        use CertificateValidationResult as V;
        // A SECC type checks only leaves of its key (§11.1): `V2G` -2
        // leaves, `V2G20` -20 leaves.
        let key = chain.first().map(|leaf| leaf.key_algorithm);
        let mut anchors: Vec<CaCertificateType> = types
            .iter()
            .filter(|t| key.is_none_or(|k| t.fits_key(k)))
            .map(|t| t.anchor())
            .collect();
        if anchors.is_empty() && !types.is_empty() {
            return ChainVerdict::new(
                V::InvalidChain,
                "the leaf's key fits none of the types (V2G: P-256; V2G20: P-521 or Ed448)",
            );
        }
        anchors.sort();
        anchors.dedup();
        // A bundle whose roots are all out of date still takes part, so
        // that the answer is `Expired`, not `IssuerNotFound`.
        anchors.retain(|ca| !snap.bundle(*ca).nodes.is_empty());
        if anchors.is_empty() {
            return ChainVerdict::new(
                V::IssuerNotFound,
                "no certificate is installed for these types",
            );
        }
        let verdict = verify::verify_chain(
            &snap.trust_anchors_for(&anchors, chain),
            chain,
            now,
            leaf_time,
        );
        match statuses.revoked_in(&verdict.path, now) {
            Some((depth, entry)) if verdict.result == V::Valid => {
                let revoked = ChainVerdict::new(
                    V::Revoked,
                    format!(
                        "a certificate status entry ({}, until {}) says it is revoked",
                        entry.source,
                        crate::store::format_utc(entry.expires)
                    ),
                );
                match verdict.path.get(depth) {
                    Some(cert) => revoked.at(depth, cert),
                    None => revoked,
                }
            }
            _ => verdict,
        }
    }
}

/// Verdicts kept; the cache is emptied when full so that it stays bounded.
const MAX_CACHED_VERDICTS: usize = 1024;

/// The cache key of a chain argument and the types it is verified for.
fn verdict_key(chain_pem: &str, types: &[LeafCertificateType]) -> Fingerprint {
    // By type, not by bundle: `V2G` and `V2G20` share a bundle but not
    // their leaves.
    let mask = types.iter().fold(0u8, |m, t| m | 1 << (*t as u8));
    let mut key_input = chain_pem.as_bytes().to_vec();
    key_input.push(mask);
    x509::sha256(&key_input)
}

/// The build generations of the bundles, 0 for those that `types`
/// are not checked against.
fn built_of(snap: &Snapshot, types: &[LeafCertificateType]) -> [u64; BUNDLES] {
    let mut built = [0; BUNDLES];
    for t in types {
        let ca = t.anchor();
        built[ca.slot()] = snap.bundle(ca).built;
    }
    built
}

/// A cached verification: valid while the bundles it was checked against
/// are unchanged (a write elsewhere in the store keeps it), and while the
/// clock stays inside `[from, until)`, where no certificate involved starts
/// or ends its validity.
#[derive(Debug, Clone, Copy)]
pub(super) struct Verdict {
    bundles: [u64; BUNDLES],
    /// The generation of the certificate status table it was checked with.
    statuses: u64,
    from: i64,
    until: i64,
    result: CertificateValidationResult,
}

/// The span around `now` in which no certificate of `certs` becomes valid
/// or expires.
fn validity_window<'a>(certs: impl Iterator<Item = &'a CertFacts>, now: i64) -> (i64, i64) {
    let mut from = i64::MIN;
    let mut until = i64::MAX;
    for cert in certs {
        // A certificate is valid from notBefore through notAfter, both
        // included (RFC 5280 4.1.2.5), so its state changes at notBefore
        // and one second after notAfter.
        for edge in [cert.not_before, cert.not_after.saturating_add(1)] {
            if edge <= now {
                from = from.max(edge);
            } else {
                until = until.min(edge);
            }
        }
    }
    (from, until)
}

/// Recent `VerifyCertificate` verdicts by chain bytes and types: contract
/// chains repeat, and parsing is most of a verification's cost.
#[derive(Default)]
pub(super) struct VerdictCache(Mutex<HashMap<Fingerprint, Verdict>>);

impl VerdictCache {
    /// The verdict for `key`, when it still holds for `snap` at `now`.
    fn get(
        &self,
        key: &Fingerprint,
        snap: &Snapshot,
        statuses: &StatusTable,
        types: &[LeafCertificateType],
        now: i64,
    ) -> Option<CertificateValidationResult> {
        let verdict = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()?;
        (verdict.bundles == built_of(snap, types)
            && verdict.statuses == statuses.generation
            && verdict.from <= now
            && now < verdict.until)
            .then_some(verdict.result)
    }

    fn insert(&self, key: Fingerprint, verdict: Verdict) {
        let mut verdicts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if verdicts.len() >= MAX_CACHED_VERDICTS {
            verdicts.clear();
        }
        verdicts.insert(key, verdict);
    }
}
