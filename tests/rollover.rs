//! Certificate rollover through the library (contract §11.2): the OCPP
//! client certificate renewed and the old one discarded once the new one is
//! in use (A02.FR.10 errata, A03), and the CSMS root rotation of
//! `AdditionalRootCertificateCheck` (M05.FR.09–16), in the shape of OCTT
//! TC_M_09, TC_M_30 and TC_M_31.

mod common;

use std::fs;
use std::path::PathBuf;

use common::{tls_session, tree_contents, TempStore};
use evsec::security::StoreChange;
use evsec::testpki::{issue, sign_csr, CertSpec, Issued, Pki};
use evsec::types::{
    CaCertificateType as Ca, CertificateType, ConfirmCertificateResult as C,
    DeleteCertificateResult as D, GetCertificateInfoStatus as Info,
    GetCertificateSignRequestStatus as Csr, HashAlgorithm, HashData, InstallCertificateResult as I,
    LeafCertificateType as L, StoreOperation,
};
use evsec::x509::CertFacts;
use evsec::EvseSecurity;

fn hash_of(cert: &openssl::x509::X509, issuer: &Issued) -> HashData {
    CertFacts::new(cert.clone()).unwrap().hash_data(
        HashAlgorithm::SHA256,
        &CertFacts::new(issuer.cert.clone()).unwrap().key_bits,
    )
}

fn pem(cert: &openssl::x509::X509) -> String {
    String::from_utf8(cert.to_pem().unwrap()).unwrap()
}

const ROTATION: &str = "[ocpp]\nadditional_root_certificate_check = true\n";

/// A02/A03 end to end: CSR; the new leaf installed while the old one is
/// still valid; both listed and the newest selected; confirm; only the new
/// one left, with every other file as it was.
#[test]
fn csms_client_certificate_rollover() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    // A response cached beside the old leaf, as EVerest keeps them.
    let old_hash = hash_of(&pki.csms_leaf.cert, &pki.csms_root);
    let ocsp_dir = store.path("client/csms/ocsp");
    fs::create_dir_all(&ocsp_dir).unwrap();
    fs::write(
        ocsp_dir.join("CSMS_LEAF_ocsp.hash"),
        evsec::store::ocsp_hash_text(&old_hash),
    )
    .unwrap();
    fs::write(ocsp_dir.join("CSMS_LEAF_ocsp.der"), b"\x30\x03\x0a\x01\x06").unwrap();
    let sec = store.open();

    // The CSMS signs the new certificate under its new CA.
    let new_ca = issue(&CertSpec::ca("CSMS Root CA 2", None), None).unwrap();
    assert_eq!(
        sec.install_ca_certificate(&new_ca.pem(), Ca::CSMS).result,
        I::Accepted
    );
    let outcome = sec
        .generate_certificate_signing_request(L::CSMS, "DE", "Example CPO", "CS-0001", false)
        .unwrap();
    assert_eq!(outcome.result.0, Csr::Accepted);
    let new_leaf = sign_csr(
        &outcome.result.1,
        &CertSpec::leaf("CS-0001").valid_for_seconds(-60, 400 * 86_400),
        &new_ca,
    )
    .unwrap();
    assert_eq!(
        sec.update_leaf_certificate(&pem(&new_leaf), L::CSMS)
            .unwrap()
            .result,
        I::Accepted
    );

    // Both usable until the new one is confirmed (A02.FR.28: the fallback).
    let (status, all) = sec.get_all_valid_certificates_info(L::CSMS, false);
    assert_eq!(status, Info::Accepted);
    assert_eq!(all.len(), 2, "one per root");
    let (_, newest) = sec.get_leaf_certificate_info(L::CSMS, false);
    let newest = newest.unwrap();
    let new_key = newest.key.clone();
    let new_single = newest.certificate_single.clone().unwrap();
    assert_eq!(fs::read_to_string(&new_single).unwrap(), pem(&new_leaf));
    let old_files: Vec<PathBuf> = [
        "client/csms/CSMS_LEAF.pem",
        "client/csms/CSMS_LEAF.key",
        "client/csms/ocsp/CSMS_LEAF_ocsp.hash",
        "client/csms/ocsp/CSMS_LEAF_ocsp.der",
    ]
    .map(|f| store.path(f))
    .to_vec();
    assert!(old_files.iter().all(|f| f.exists()));

    // Confirming a certificate that is not installed changes nothing.
    let before = tree_contents(&store.certs);
    let unknown = hash_of(
        &issue(&CertSpec::leaf("X"), Some(&new_ca)).unwrap().cert,
        &new_ca,
    );
    assert_eq!(sec.confirm_certificate_in_use(&unknown).result, C::NotFound);
    // Nor does confirming what has nothing to replace: a V2G root.
    let v2g_root = hash_of(&pki.v2g_root.cert, &pki.v2g_root);
    let outcome = sec.confirm_certificate_in_use(&v2g_root);
    assert_eq!((outcome.result, outcome.changes.len()), (C::Accepted, 0));
    assert_eq!(tree_contents(&store.certs), before);

    // The reconnect with the new certificate worked: the old one goes,
    // with its key and OCSP files, named in any hash algorithm.
    let new_facts = CertFacts::new(new_leaf.clone()).unwrap();
    let new_hash = new_facts.hash_data(
        HashAlgorithm::SHA512,
        &CertFacts::new(new_ca.cert.clone()).unwrap().key_bits,
    );
    let outcome = sec.confirm_certificate_in_use(&new_hash);
    assert_eq!(outcome.result, C::Accepted);
    assert_eq!(
        outcome.changes,
        vec![StoreChange {
            operation: StoreOperation::Deleted,
            ca: None,
            leaf: Some(L::CSMS)
        }]
    );
    for f in &old_files {
        assert!(!f.exists(), "{} is still there", f.display());
    }
    let after = tree_contents(&store.certs);
    let expected: Vec<_> = before
        .into_iter()
        .filter(|(p, _)| !old_files.contains(p))
        .collect();
    assert_eq!(after, expected, "every other file is byte-identical");
    let (status, all) = sec.get_all_valid_certificates_info(L::CSMS, false);
    assert_eq!((status, all.len()), (Info::Accepted, 1));
    assert_eq!(all[0].key, new_key);
    // Confirming again finds nothing more to remove.
    let outcome = sec.confirm_certificate_in_use(&new_hash);
    assert_eq!((outcome.result, outcome.changes.len()), (C::Accepted, 0));
}

/// A CSMS root issued by the root it replaces.
fn successor(cn: &str, predecessor: &Issued) -> Issued {
    issue(&CertSpec::ca(cn, None), Some(predecessor)).unwrap()
}

fn csms_chains(sec: &EvseSecurity) -> Vec<(HashData, usize)> {
    sec.get_installed_certificates(&[CertificateType::CSMSRootCertificate])
        .1
        .into_iter()
        .map(|c| (c.certificate_hash_data, c.child_certificate_hash_data.len()))
        .collect()
}

#[test]
fn csms_root_rotation_with_the_additional_root_certificate_check() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let bundle = store.path("ca/csms/CSMS_ROOT_CA.pem");
    let sec = EvseSecurity::open(store.config_with(ROTATION)).unwrap();
    let a = &pki.csms_root;
    let a_hash = hash_of(&a.cert, a);

    // TC_M_09: a root not signed by the one in use is refused, and nothing
    // changes (M05.FR.10/11).
    let before = tree_contents(&store.certs);
    let stranger = issue(&CertSpec::ca("Other CSMS Root", None), None).unwrap();
    assert_eq!(
        sec.install_ca_certificate(&stranger.pem(), Ca::CSMS).result,
        I::InvalidSignature
    );
    assert_eq!(tree_contents(&store.certs), before);

    // TC_M_30: the new root, signed by the old one, is installed beside it;
    // each is a chain of its own (M05.FR.12).
    let b = successor("CSMS Root CA B", a);
    let b_hash = hash_of(&b.cert, a);
    assert_eq!(
        sec.install_ca_certificate(&b.pem(), Ca::CSMS).result,
        I::Accepted
    );
    assert_eq!(
        csms_chains(&sec),
        vec![(a_hash.clone(), 0), (b_hash.clone(), 0)]
    );
    assert_eq!(fs::read_to_string(&bundle).unwrap(), a.pem() + &b.pem());

    // Confirming the old root (the fallback) keeps both.
    let outcome = sec.confirm_certificate_in_use(&a_hash);
    assert_eq!((outcome.result, outcome.changes.len()), (C::Accepted, 0));
    // The reconnect with the new root worked: the fallback goes (M05.FR.13).
    let outcome = sec.confirm_certificate_in_use(&b_hash);
    assert_eq!(outcome.result, C::Accepted);
    assert_eq!(
        outcome.changes,
        vec![StoreChange {
            operation: StoreOperation::Deleted,
            ca: Some(Ca::CSMS),
            leaf: None
        }]
    );
    assert_eq!(fs::read_to_string(&bundle).unwrap(), b.pem());
    assert!(sec.is_ca_certificate_installed(Ca::CSMS));
    // B keeps the hash data A's key gave it, after A is gone, and across a
    // restart.
    assert_eq!(csms_chains(&sec), vec![(b_hash.clone(), 0)]);
    drop(sec);
    let sec = EvseSecurity::open(store.config_with(ROTATION)).unwrap();
    assert_eq!(csms_chains(&sec), vec![(b_hash.clone(), 0)]);
    assert!(sec.is_ca_certificate_installed(Ca::CSMS));

    // A TLS client that trusts the bundle needs partial chain mode now: B is
    // not self-signed.
    let server = issue(&CertSpec::leaf("csms.example"), Some(&b)).unwrap();
    let dir = store.dir.path();
    fs::write(dir.join("server.pem"), server.pem()).unwrap();
    fs::write(dir.join("server.key"), server.key_pem()).unwrap();
    let server_args = [
        "-cert",
        dir.join("server.pem").to_str().unwrap(),
        "-key",
        dir.join("server.key").to_str().unwrap(),
    ]
    .map(str::to_owned);
    let server_args: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let ca_file = bundle.to_str().unwrap();
    let run = tls_session(&server_args, &[], &["-CAfile", ca_file, "-partial_chain"]);
    assert!(run.client_ok, "{}", run.client);
    assert!(run.client.contains("Verification: OK"), "{}", run.client);
    let run = tls_session(&server_args, &[], &["-CAfile", ca_file]);
    assert!(!run.client_ok, "{}", run.client);
    assert!(
        run.client.contains("unable to get issuer certificate"),
        "{}",
        run.client
    );

    // TC_M_31: the next root; the connection falls back to B (M05.FR.14),
    // so B is confirmed and both stay; then a third root replaces the
    // oldest, and the bundle never holds more than two.
    let c = successor("CSMS Root CA C", &b);
    let c_hash = hash_of(&c.cert, &b);
    assert_eq!(
        sec.install_ca_certificate(&c.pem(), Ca::CSMS).result,
        I::Accepted
    );
    assert_eq!(sec.confirm_certificate_in_use(&b_hash).result, C::Accepted);
    assert_eq!(
        csms_chains(&sec),
        vec![(b_hash.clone(), 0), (c_hash.clone(), 0)]
    );
    let d = successor("CSMS Root CA D", &c);
    let d_hash = hash_of(&d.cert, &c);
    let signed_by_the_fallback = successor("CSMS Root CA E", &b);
    assert_eq!(
        sec.install_ca_certificate(&signed_by_the_fallback.pem(), Ca::CSMS)
            .result,
        I::InvalidSignature,
        "C, installed last, is the root in use"
    );
    assert_eq!(
        sec.install_ca_certificate(&d.pem(), Ca::CSMS).result,
        I::Accepted
    );
    assert_eq!(fs::read_to_string(&bundle).unwrap(), c.pem() + &d.pem());
    assert_eq!(
        csms_chains(&sec),
        vec![(c_hash.clone(), 0), (d_hash.clone(), 0)]
    );

    // The hash data a listing gives deletes the root, and it alone: D is a
    // root of its own.
    assert_eq!(sec.delete_certificate(&c_hash).result, D::Accepted);
    assert_eq!(csms_chains(&sec), vec![(d_hash, 0)]);
}

#[test]
fn without_the_check_a_csms_root_is_an_ordinary_ca() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let sec = store.open();
    let a = &pki.csms_root;
    let other = issue(&CertSpec::ca("Other CSMS Root", None), None).unwrap();
    assert_eq!(
        sec.install_ca_certificate(&other.pem(), Ca::CSMS).result,
        I::Accepted
    );
    let b = successor("CSMS Root CA B", a);
    assert_eq!(
        sec.install_ca_certificate(&b.pem(), Ca::CSMS).result,
        I::Accepted
    );
    // B is A's child; confirming it removes nothing.
    let chains = csms_chains(&sec);
    assert_eq!(chains.len(), 2);
    assert!(chains.contains(&(hash_of(&a.cert, a), 1)));
    let before = tree_contents(&store.certs);
    let outcome = sec.confirm_certificate_in_use(&hash_of(&b.cert, a));
    assert_eq!((outcome.result, outcome.changes.len()), (C::Accepted, 0));
    assert_eq!(tree_contents(&store.certs), before);
}

#[test]
fn a_new_root_counts_as_installed_once_its_predecessor_expired() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    // The CSMS root in use expires in two days.
    let a = issue(&CertSpec::ca("Short CSMS Root", None).valid(-1, 2), None).unwrap();
    fs::write(store.path("ca/csms/CSMS_ROOT_CA.pem"), a.pem()).unwrap();
    let clock = evsec::clock::Clock::manual(evsec::x509::now());
    let sec = EvseSecurity::open_with_clock(store.config_with(ROTATION), clock.clone()).unwrap();
    let b = successor("CSMS Root CA B", &a);
    assert_eq!(
        sec.install_ca_certificate(&b.pem(), Ca::CSMS).result,
        I::Accepted
    );
    let record = fs::read_to_string(store.path(".evsecd-csms-rotation")).unwrap();
    let b_fingerprint = evsec::x509::hex(&CertFacts::new(b.cert.clone()).unwrap().fingerprint);
    assert!(
        record.contains(&format!("\"in_use\": \"{b_fingerprint}\"")),
        "{record}"
    );
    clock.advance(3 * 86_400);
    assert!(
        sec.is_ca_certificate_installed(Ca::CSMS),
        "B is valid, A is not"
    );
}

#[test]
fn confirming_a_client_certificate_that_cannot_be_in_use_removes_nothing() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let expired = issue(
        &CertSpec::leaf("CS-0001").valid(-10, -1),
        Some(&pki.csms_root),
    )
    .unwrap();
    fs::write(store.path("client/csms/OLD.pem"), expired.pem()).unwrap();
    fs::write(store.path("client/csms/OLD.key"), expired.key_pem()).unwrap();
    let sec = store.open();
    let before = tree_contents(&store.certs);
    let outcome = sec.confirm_certificate_in_use(&hash_of(&expired.cert, &pki.csms_root));
    assert_eq!((outcome.result, outcome.changes.len()), (C::Failed, 0));
    assert_eq!(tree_contents(&store.certs), before);
}
