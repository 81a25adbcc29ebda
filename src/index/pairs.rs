//! Issuer links and hash data, computed once per pair of certificates.

use std::collections::{HashMap, HashSet};

use crate::types::{HashAlgorithm, HashData};
use crate::x509::{CertFacts, Fingerprint};

/// What depends only on a pair of certificates, kept across snapshots: a
/// signature check and two digests are done once per pair, not on every
/// change to the store.
#[derive(Default)]
pub struct PairCache {
    links: HashMap<(Fingerprint, Fingerprint), bool>,
    hashes: HashMap<(Fingerprint, Fingerprint), HashData>,
}

impl PairCache {
    /// Whether `parent` issued `child` (see [`CertFacts::is_issued_by`]).
    pub fn link_ok(&mut self, child: &CertFacts, parent: &CertFacts) -> bool {
        if child.issuer_der != parent.subject_der || child.fingerprint == parent.fingerprint {
            return false;
        }
        *self
            .links
            .entry((child.fingerprint, parent.fingerprint))
            .or_insert_with(|| child.is_issued_by(parent))
    }

    /// SHA-256 hash data of `cert` under `issuer` (itself for a root).
    pub fn hash(&mut self, cert: &CertFacts, issuer: &CertFacts) -> HashData {
        self.hashes
            .entry((cert.fingerprint, issuer.fingerprint))
            .or_insert_with(|| cert.hash_data(HashAlgorithm::SHA256, &issuer.key_bits))
            .clone()
    }

    /// Forgets pairs with a certificate that is gone.
    pub fn retain(&mut self, live: &HashSet<Fingerprint>) {
        let keep = |(a, b): &(Fingerprint, Fingerprint)| live.contains(a) && live.contains(b);
        self.links.retain(|k, _| keep(k));
        self.hashes.retain(|k, _| keep(k));
    }
}
