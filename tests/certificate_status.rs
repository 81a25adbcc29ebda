//! Certificate status through the library (OCPP 2.1 M07, contract §11.2):
//! which chain members to ask about, the entries kept on disk until their
//! `next_update` or a week, and `Revoked` from VerifyCertificate.

mod common;

use common::TempStore;
use evsec::clock::Clock;
use evsec::testpki::{issue, CertSpec, Issued, Pki};
use evsec::types::{
    CaCertificateType as Ca, CertificateValidationResult as V, HashAlgorithm, HashData,
    InstallCertificateResult as I, LeafCertificateType as L, UpdateCertificateStatusResult as U,
};
use evsec::x509::CertFacts;
use evsec::EvseSecurity;

const OCSP: &str = "http://ocsp.mo.test/";
const CRL: &str = "http://crl.mo.test/sub2.crl";
const WEEK: i64 = 7 * 86_400;

fn hash_in(alg: HashAlgorithm, cert: &Issued, issuer: &Issued) -> HashData {
    CertFacts::new(cert.cert.clone())
        .unwrap()
        .hash_data(alg, &CertFacts::new(issuer.cert.clone()).unwrap().key_bits)
}

fn hash_of(cert: &Issued, issuer: &Issued) -> HashData {
    hash_in(HashAlgorithm::SHA256, cert, issuer)
}

/// A contract chain under the installed MO root: leaf (OCSP), Sub-CA 2
/// (a CRL only), Sub-CA 1 (neither), and the root at its end.
struct Contract {
    root: Issued,
    sub1: Issued,
    sub2: Issued,
    leaf: Issued,
}

impl Contract {
    fn new(pki: &Pki) -> Contract {
        let root = pki.mo_root.clone();
        let sub1 = issue(&CertSpec::ca("MO Sub-CA 1", Some(1)), Some(&root)).unwrap();
        let sub2 = issue(&CertSpec::ca("MO Sub-CA 2", Some(0)).crl(CRL), Some(&sub1)).unwrap();
        let leaf = issue(&CertSpec::leaf("EMAID-1").ocsp(OCSP), Some(&sub2)).unwrap();
        Contract {
            root,
            sub1,
            sub2,
            leaf,
        }
    }

    fn pem(&self) -> String {
        [&self.leaf, &self.sub2, &self.sub1, &self.root]
            .iter()
            .map(|c| c.pem())
            .collect()
    }
}

fn open(store: &TempStore, clock: &Clock) -> EvseSecurity {
    EvseSecurity::open_with_clock(store.config(), clock.clone()).unwrap()
}

/// A store with the test PKI on a manual clock, and a contract chain.
fn station() -> (TempStore, Clock, EvseSecurity, Contract) {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let clock = Clock::manual(evsec::x509::now());
    let sec = open(&store, &clock);
    (store, clock, sec, Contract::new(&pki))
}

fn asked(sec: &EvseSecurity, chain: &str) -> Vec<(HashData, Vec<String>)> {
    sec.get_certificate_status_request_data(chain).unwrap()
}

#[test]
fn members_without_a_fresh_entry_are_asked_about_and_revoked_is_answered() {
    let (store, clock, sec, c) = station();
    let chain = c.pem();
    let (leaf, sub2, sub1) = (
        hash_of(&c.leaf, &c.sub2),
        hash_of(&c.sub2, &c.sub1),
        hash_of(&c.sub1, &c.root),
    );

    // M07.FR.10: every member but the anchor, leaf first, with its URLs.
    assert_eq!(
        asked(&sec, &chain),
        vec![
            (leaf.clone(), vec![OCSP.to_owned()]),
            (sub2.clone(), vec![CRL.to_owned()]),
            (sub1.clone(), vec![]),
        ]
    );
    assert_eq!(sec.verify_certificate(&chain, &[L::MO]).unwrap(), V::Valid);

    // M07.FR.11: a member with a fresh entry is not asked about again.
    let now = clock.now();
    assert_eq!(
        sec.update_certificate_status(&leaf, "Good", "OCSP", now + 3600)
            .unwrap(),
        U::Accepted
    );
    assert_eq!(
        asked(&sec, &chain)
            .into_iter()
            .map(|(h, _)| h)
            .collect::<Vec<_>>(),
        vec![sub2.clone(), sub1.clone()]
    );

    // Sub-CA 2 revoked, named in SHA-384: the chain is Revoked, the
    // repeated verification too (no stale cached verdict).
    let sub2_384 = hash_in(HashAlgorithm::SHA384, &c.sub2, &c.sub1);
    assert_eq!(
        sec.update_certificate_status(&sub2_384, "Revoked", "CRL", now + 3600)
            .unwrap(),
        U::Accepted
    );
    assert_eq!(
        sec.verify_certificate(&chain, &[L::MO]).unwrap(),
        V::Revoked
    );
    let detail = sec.verify_certificate_detailed(&chain, &[L::MO]);
    assert_eq!((detail.result, detail.depth), (V::Revoked, Some(1)));
    assert!(detail.reason.contains("CRL"), "{}", detail.reason);
    assert_eq!(
        asked(&sec, &chain)
            .into_iter()
            .map(|(h, _)| h)
            .collect::<Vec<_>>(),
        vec![sub1.clone()]
    );

    // Kept on disk: a restart still knows.
    drop(sec);
    let record = store.path(".evsecd-certificate-status");
    assert!(record.exists());
    let sec = open(&store, &clock);
    assert_eq!(
        sec.verify_certificate(&chain, &[L::MO]).unwrap(),
        V::Revoked
    );
    let entries = sec.certificate_statuses();
    assert_eq!(entries.len(), 2);

    // A newer entry replaces the older, whatever algorithm named it.
    clock.advance(10);
    assert_eq!(
        sec.update_certificate_status(&sub2, "Good", "OCSP", clock.now() + 3600)
            .unwrap(),
        U::Accepted
    );
    assert_eq!(sec.verify_certificate(&chain, &[L::MO]).unwrap(), V::Valid);

    // Stale at next_update: asked about again, and not revoked any more.
    clock.advance(3600);
    assert_eq!(asked(&sec, &chain).len(), 3);
    assert!(sec.certificate_statuses().is_empty());
}

#[test]
fn an_entry_is_kept_a_week_at_most() {
    let (store, clock, sec, c) = station();
    let leaf = hash_of(&c.leaf, &c.sub2);
    let now = clock.now();
    assert_eq!(
        sec.update_certificate_status(&leaf, "Revoked", "OCSP", now + 30 * 86_400)
            .unwrap(),
        U::Accepted
    );
    let entries = sec.certificate_statuses();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].expires, now + WEEK);
    assert_eq!(
        sec.verify_certificate(&c.pem(), &[L::MO]).unwrap(),
        V::Revoked
    );
    clock.advance(WEEK - 1);
    assert_eq!(
        sec.verify_certificate(&c.pem(), &[L::MO]).unwrap(),
        V::Revoked
    );
    clock.advance(1);
    assert_eq!(
        sec.verify_certificate(&c.pem(), &[L::MO]).unwrap(),
        V::Valid
    );
    // Gone from the record at the next start, too.
    drop(sec);
    assert!(open(&store, &clock).certificate_statuses().is_empty());
}

#[test]
fn bad_status_source_or_next_update_is_invalid_format_and_changes_nothing() {
    let (store, clock, sec, c) = station();
    let leaf = hash_of(&c.leaf, &c.sub2);
    let now = clock.now();
    for (status, source, next_update) in [
        ("good", "OCSP", now + 60),
        ("Valid", "OCSP", now + 60),
        ("Good", "ocsp", now + 60),
        ("Good", "", now + 60),
        ("Good", "OCSP", now),
        ("Good", "OCSP", now - 1),
    ] {
        assert_eq!(
            sec.update_certificate_status(&leaf, status, source, next_update)
                .unwrap(),
            U::InvalidFormat,
            "{status} {source} {next_update}"
        );
    }
    assert!(sec.certificate_statuses().is_empty());
    assert!(!store.path(".evsecd-certificate-status").exists());
}

#[test]
fn at_most_four_members_are_asked_about_per_call() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let sec = store.open();
    let mut issuers = vec![pki.mo_root.clone()];
    for i in 0..5 {
        let sub = issue(
            &CertSpec::ca(&format!("MO Sub-CA {i}"), None),
            issuers.last(),
        )
        .unwrap();
        issuers.push(sub);
    }
    let leaf = issue(&CertSpec::leaf("EMAID-2"), issuers.last()).unwrap();
    let chain: String = std::iter::once(&leaf)
        .chain(issuers.iter().rev())
        .map(|c| c.pem())
        .collect();
    let asked = asked(&sec, &chain);
    assert_eq!(asked.len(), 4);
    assert_eq!(asked[0].0, hash_of(&leaf, &issuers[5]));
    assert_eq!(asked[3].0, hash_of(&issuers[3], &issuers[2]));
}

#[test]
fn an_installed_sub_ca_is_a_trust_anchor_and_is_not_asked_about() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let sec = store.open();
    let c = Contract::new(&pki);
    assert_eq!(
        sec.install_ca_certificate(&c.sub1.pem(), Ca::MO).result,
        I::Accepted
    );
    let asked: Vec<HashData> = asked(&sec, &c.pem()).into_iter().map(|(h, _)| h).collect();
    assert_eq!(
        asked,
        vec![hash_of(&c.leaf, &c.sub2), hash_of(&c.sub2, &c.sub1)]
    );
    // Without the rest of the chain, the installed issuer gives the hash.
    let asked: Vec<HashData> = sec
        .get_certificate_status_request_data(&(c.sub2.pem()))
        .unwrap()
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    assert_eq!(asked, vec![hash_of(&c.sub2, &c.sub1)]);
}

#[test]
fn a_newer_entry_hides_an_older_one_of_another_algorithm_after_it_goes_stale() {
    let (_store, clock, sec, c) = station();
    let sub2 = hash_of(&c.sub2, &c.sub1);
    let sub2_384 = hash_in(HashAlgorithm::SHA384, &c.sub2, &c.sub1);
    let now = clock.now();
    // Sub-CA 2 is not in the store: the two names cannot be matched when
    // the second arrives.
    assert_eq!(
        sec.update_certificate_status(&sub2_384, "Good", "OCSP", now + WEEK)
            .unwrap(),
        U::Accepted
    );
    clock.advance(1);
    assert_eq!(
        sec.update_certificate_status(&sub2, "Revoked", "CRL", now + 3600)
            .unwrap(),
        U::Accepted
    );
    assert_eq!(
        sec.verify_certificate(&c.pem(), &[L::MO]).unwrap(),
        V::Revoked
    );
    clock.advance(3600);
    // The revocation went stale; the older Good does not come back.
    let asked: Vec<HashData> = asked(&sec, &c.pem()).into_iter().map(|(h, _)| h).collect();
    assert!(asked.contains(&sub2), "{asked:?}");
}
