//! The PKI core through the library, on a test PKI built with OpenSSL.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{openssl_ocsp_hash, tree_contents, TempStore};
use evsec::security::Outcome;
use evsec::security::StoreChange;
use evsec::testpki::{issue, issue_with_key, tampered, CertSpec, Pki};
use evsec::types::{
    CaCertificateType as Ca, CertificateType as Ct, CertificateValidationResult as V,
    DeleteCertificateResult as D, GetInstalledCertificatesStatus, HashAlgorithm, HashData,
    InstallCertificateResult as I, LeafCertificateType as L, StoreOperation,
};
use evsec::x509::CertFacts;

fn pki() -> Pki {
    Pki::generate().expect("pki")
}

fn facts(pem: &str) -> CertFacts {
    CertFacts::new(openssl::x509::X509::from_pem(pem.as_bytes()).unwrap()).unwrap()
}

/// Hash data of `cert` under `issuer`, as the daemon produces it.
fn hash_of(cert: &evsec::testpki::Issued, issuer: &evsec::testpki::Issued) -> HashData {
    facts(&cert.pem()).hash_data(HashAlgorithm::SHA256, &facts(&issuer.pem()).key_bits)
}

fn wire(h: &HashData) -> HashData {
    h.clone()
}

#[test]
fn hash_data_matches_openssl_ocsp() {
    let pki = pki();
    for (cert, issuer) in [
        (&pki.secc_leaf, &pki.cpo_sub2),
        (&pki.cpo_sub1, &pki.v2g_root),
        (&pki.v2g_root, &pki.v2g_root),
    ] {
        for (alg, digest) in [
            (HashAlgorithm::SHA256, "sha256"),
            (HashAlgorithm::SHA384, "sha384"),
            (HashAlgorithm::SHA512, "sha512"),
        ] {
            let ours = facts(&cert.pem()).hash_data(alg, &facts(&issuer.pem()).key_bits);
            let (name, key, serial) = openssl_ocsp_hash(&cert.pem(), &issuer.pem(), digest);
            assert_eq!(ours.issuer_name_hash, name);
            assert_eq!(ours.issuer_key_hash, key);
            assert_eq!(ours.serial_number, serial.trim_start_matches('0'));
        }
    }
}

#[test]
fn serial_zero_and_leading_zero_bytes_are_canonical() {
    let root = issue(&CertSpec::ca("R", None), None).unwrap();
    let mut spec = CertSpec::leaf("zero");
    spec.serial = 0;
    let zero = issue(&spec, Some(&root)).unwrap();
    assert_eq!(hash_of(&zero, &root).serial_number, "0");
    spec.serial = 0x7a120;
    let small = issue(&spec, Some(&root)).unwrap();
    assert_eq!(hash_of(&small, &root).serial_number, "7a120");
}

#[test]
fn install_ca_results() {
    let pki = pki();
    let store = TempStore::empty();
    let sec = store.open();

    // A new root, then the same root again: Accepted, no second change.
    let Outcome { result: r, changes } = sec.install_ca_certificate(&pki.v2g_root.pem(), Ca::V2G);
    assert_eq!(r, I::Accepted);
    assert_eq!(
        changes,
        vec![StoreChange {
            operation: StoreOperation::Installed,
            ca: Some(Ca::V2G),
            leaf: None
        }]
    );
    let bundle = fs::read_to_string(store.path("ca/v2g/V2G_ROOT_CA.pem")).unwrap();
    assert_eq!(bundle, pki.v2g_root.pem());
    assert_eq!(
        sec.install_ca_certificate(&pki.v2g_root.pem(), Ca::V2G),
        Outcome::unchanged(I::Accepted)
    );
    assert_eq!(
        fs::read_to_string(store.path("ca/v2g/V2G_ROOT_CA.pem")).unwrap(),
        bundle
    );

    // A sub-CA whose issuer is in the bundle; another whose issuer is not.
    assert_eq!(
        sec.install_ca_certificate(&pki.cpo_sub1.pem(), Ca::V2G)
            .result,
        I::Accepted
    );
    assert_eq!(
        sec.install_ca_certificate(&pki.cpo_sub2.pem(), Ca::MO)
            .result,
        I::NoRootCertificateInstalled
    );

    // Formats.
    assert_eq!(
        sec.install_ca_certificate("not a certificate", Ca::MO)
            .result,
        I::InvalidFormat
    );
    assert_eq!(
        sec.install_ca_certificate("", Ca::MO).result,
        I::InvalidFormat
    );
    let two = pki.mo_root.pem() + &pki.mf_root.pem();
    assert_eq!(
        sec.install_ca_certificate(&two, Ca::MO).result,
        I::InvalidFormat
    );
    let truncated = &pki.mo_root.pem()[..200];
    assert_eq!(
        sec.install_ca_certificate(truncated, Ca::MO).result,
        I::InvalidFormat
    );
    let with_key = pki.mo_root.pem() + &String::from_utf8(pki.mo_root.key_pem()).unwrap();
    assert_eq!(
        sec.install_ca_certificate(&with_key, Ca::MO).result,
        I::InvalidFormat
    );
    let der = pki.mo_root.cert.to_der().unwrap();
    assert_eq!(
        sec.install_ca_certificate(&String::from_utf8_lossy(&der), Ca::MO)
            .result,
        I::InvalidFormat
    );

    // Not a CA; expired; not yet valid; a bad self-signature.
    assert_eq!(
        sec.install_ca_certificate(&pki.secc_leaf.pem(), Ca::V2G)
            .result,
        I::InvalidCertificateChain
    );
    let expired = issue(&CertSpec::ca("Old", None).valid(-20, -10), None).unwrap();
    assert_eq!(
        sec.install_ca_certificate(&expired.pem(), Ca::MO).result,
        I::Expired
    );
    let future = issue(&CertSpec::ca("Future", None).valid(10, 20), None).unwrap();
    assert_eq!(
        sec.install_ca_certificate(&future.pem(), Ca::MO).result,
        I::Expired
    );
    let bad = tampered(&pki.mo_root.cert).unwrap();
    let bad_pem = String::from_utf8(bad.to_pem().unwrap()).unwrap();
    assert_eq!(
        sec.install_ca_certificate(&bad_pem, Ca::MO).result,
        I::InvalidSignature
    );

    // An oversized argument is bad content, refused before parsing: a
    // result, not an error (contract §5).
    let huge = "A".repeat(70_000);
    assert_eq!(
        sec.install_ca_certificate(&huge, Ca::MO),
        Outcome::unchanged(I::InvalidFormat)
    );
    let huge_chain = pki.secc_chain_pem() + &" ".repeat(70_000);
    assert_eq!(
        sec.verify_certificate(&huge_chain, &[L::V2G]).unwrap(),
        V::Unknown
    );
    assert_eq!(sec.get_mo_ocsp_request_data(&huge_chain).unwrap(), vec![]);

    // Only the two accepted certificates are on disk.
    assert_eq!(sec.certificate_entries(), 2);
    assert_eq!(
        fs::read_to_string(store.path("ca/mo/MO_ROOT_CA.pem")).unwrap(),
        ""
    );
}

#[test]
fn install_into_directory_bundle_writes_everest_name_and_hash_links() {
    let pki = pki();
    let store = TempStore::empty();
    fs::create_dir_all(store.path("ca/v2g")).unwrap();
    let config = store.config_with("v2g_ca_bundle = \"ca/v2g\"\n");
    let sec = evsec::EvseSecurity::open(config).unwrap();
    assert_eq!(sec.get_verify_location(Ca::V2G), "");
    assert_eq!(sec.get_verify_file(Ca::V2G), "");
    assert_eq!(
        sec.install_ca_certificate(&pki.v2g_root.pem(), Ca::V2G)
            .result,
        I::Accepted
    );
    let names: Vec<String> = fs::read_dir(store.path("ca/v2g"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let pem_files: Vec<&String> = names.iter().filter(|n| n.ends_with(".pem")).collect();
    assert_eq!(pem_files.len(), 1, "{names:?}");
    assert!(
        pem_files[0].starts_with("V2G_ROOT_M") && pem_files[0].contains("_Y20"),
        "{names:?}"
    );
    let hash = format!("{:08x}.0", pki.v2g_root.cert.subject_name_hash());
    assert_eq!(
        fs::read_link(store.path("ca/v2g").join(&hash))
            .unwrap()
            .to_string_lossy(),
        *pem_files[0]
    );
    assert_eq!(
        sec.get_verify_location(Ca::V2G),
        store.path("ca/v2g").display().to_string()
    );
    assert_eq!(
        sec.get_verify_file(Ca::V2G),
        store
            .path("ca/v2g")
            .join(pem_files[0])
            .display()
            .to_string()
    );

    // openssl verify with -CApath on the directory accepts the Sub-CA.
    let sub = store.dir.path().join("sub.pem");
    fs::write(&sub, pki.cpo_sub1.pem()).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CApath"])
        .arg(store.path("ca/v2g"))
        .arg(&sub)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Deleting the root removes its file and its link.
    let h = hash_of(&pki.v2g_root, &pki.v2g_root);
    assert_eq!(sec.delete_certificate(&h).result, D::Accepted);
    let left: Vec<_> = fs::read_dir(store.path("ca/v2g"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("ocsp")]);
    assert_eq!(sec.get_verify_location(Ca::V2G), "");
}

#[test]
fn write_errors_are_reported() {
    let pki = pki();
    let store = TempStore::empty();
    fs::create_dir_all(store.path("ca/mo")).unwrap();
    let sec = evsec::EvseSecurity::open(store.config_with("mo_ca_bundle = \"ca/mo\"\n")).unwrap();
    fs::remove_dir_all(store.path("ca/mo")).unwrap();
    assert_eq!(
        sec.install_ca_certificate(&pki.mo_root.pem(), Ca::MO),
        Outcome::unchanged(I::WriteError)
    );
}

#[test]
fn store_quota_refuses_installs() {
    let pki = pki();
    let store = TempStore::with_pki(&pki);
    let sec =
        evsec::EvseSecurity::open(store.config_with("[limits]\nmax_store_entries = 9\n")).unwrap();
    // The tree holds 9 files already.
    assert_eq!(
        sec.install_ca_certificate(&pki.csms_leaf.pem(), Ca::CSMS)
            .result,
        I::InvalidCertificateChain
    );
    let other = issue(&CertSpec::ca("Other MO", None), None).unwrap();
    assert_eq!(
        sec.install_ca_certificate(&other.pem(), Ca::MO).result,
        I::CertificateStoreMaxLengthExceeded
    );
}

#[test]
fn listing_follows_the_contract() {
    let pki = pki();
    let store = TempStore::with_pki(&pki);
    let sec = store.open();
    let root = hash_of(&pki.v2g_root, &pki.v2g_root);
    let sub1 = hash_of(&pki.cpo_sub1, &pki.v2g_root);
    let sub2 = hash_of(&pki.cpo_sub2, &pki.cpo_sub1);
    let leaf = hash_of(&pki.secc_leaf, &pki.cpo_sub2);

    let (status, chains) = sec.get_installed_certificates(&[Ct::V2GRootCertificate]);
    assert_eq!(status, GetInstalledCertificatesStatus::Accepted);
    assert_eq!(chains.len(), 1);
    assert_eq!(chains[0].certificate_type, Ct::V2GRootCertificate);
    assert_eq!(chains[0].certificate_hash_data, root);
    assert_eq!(
        chains[0].child_certificate_hash_data,
        vec![sub1.clone(), sub2.clone()]
    );

    let (_, chains) = sec.get_installed_certificates(&[Ct::V2GCertificateChain]);
    assert_eq!(chains.len(), 1);
    assert_eq!(chains[0].certificate_hash_data, leaf);
    assert_eq!(chains[0].child_certificate_hash_data, vec![sub2, sub1]);

    let (_, all) = sec.get_installed_certificates(&[]);
    let types: Vec<Ct> = all.iter().map(|c| c.certificate_type).collect();
    assert_eq!(
        types,
        vec![
            Ct::V2GRootCertificate,
            Ct::MORootCertificate,
            Ct::CSMSRootCertificate,
            Ct::V2GCertificateChain,
            Ct::MFRootCertificate
        ]
    );
    assert_eq!(
        all[1].certificate_hash_data,
        hash_of(&pki.mo_root, &pki.mo_root)
    );

    // root 3 + MO + CSMS + MF + (SECC dir: leaf, sub2, sub1) + CSMS leaf
    assert_eq!(sec.certificate_entries(), 10);

    let empty = TempStore::empty();
    let sec = empty.open();
    assert_eq!(
        sec.get_installed_certificates(&[]),
        (GetInstalledCertificatesStatus::NotFound, vec![])
    );
}

#[test]
fn expired_and_future_certificates_are_listed_and_deletable() {
    let pki = pki();
    let store = TempStore::with_pki(&pki);
    let old_root = issue(&CertSpec::ca("Expired MO Root", None).valid(-30, -1), None).unwrap();
    let old_sub = issue(
        &CertSpec::ca("Expired MO Sub", None).valid(-30, -2),
        Some(&old_root),
    )
    .unwrap();
    let future_root = issue(&CertSpec::ca("Future MO Root", None).valid(5, 50), None).unwrap();
    let bundle = pki.mo_root.pem() + &old_root.pem() + &old_sub.pem() + &future_root.pem();
    fs::write(store.path("ca/mo/MO_ROOT_CA.pem"), &bundle).unwrap();
    let sec = store.open();
    let (_, chains) = sec.get_installed_certificates(&[Ct::MORootCertificate]);
    assert_eq!(chains.len(), 3);
    assert_eq!(
        chains[1].certificate_hash_data,
        hash_of(&old_root, &old_root)
    );
    assert_eq!(
        chains[1].child_certificate_hash_data,
        vec![hash_of(&old_sub, &old_root)]
    );
    assert_eq!(
        chains[2].certificate_hash_data,
        hash_of(&future_root, &future_root)
    );

    // Deleting the expired root removes its expired child too, and keeps
    // every other byte of the file.
    assert_eq!(
        sec.delete_certificate(&hash_of(&old_root, &old_root))
            .result,
        D::Accepted
    );
    assert_eq!(
        fs::read_to_string(store.path("ca/mo/MO_ROOT_CA.pem")).unwrap(),
        pki.mo_root.pem() + &future_root.pem()
    );
    assert_eq!(
        sec.delete_certificate(&hash_of(&future_root, &future_root))
            .result,
        D::Accepted
    );
    assert_eq!(
        fs::read_to_string(store.path("ca/mo/MO_ROOT_CA.pem")).unwrap(),
        pki.mo_root.pem()
    );
}

#[test]
fn hash_matching_ignores_case_leading_zeros_and_takes_sha384_sha512() {
    let pki = pki();
    let store = TempStore::with_pki(&pki);
    let sec = store.open();
    let h = hash_of(&pki.mf_root, &pki.mf_root);
    let upper = HashData::parse(
        "SHA256",
        &h.issuer_name_hash.to_uppercase(),
        &h.issuer_key_hash.to_uppercase(),
        &format!("000{}", h.serial_number.to_uppercase()),
    )
    .unwrap();
    assert_eq!(sec.delete_certificate(&upper).result, D::Accepted);
    assert_eq!(fs::read(store.path("ca/mf/MF_ROOT_CA.pem")).unwrap(), b"");

    let f = facts(&pki.mo_root.pem());
    let h384 = f.hash_data(HashAlgorithm::SHA384, &f.key_bits);
    assert_eq!(sec.delete_certificate(&wire(&h384)).result, D::Accepted);
    let f = facts(&pki.cpo_sub2.pem());
    let h512 = f.hash_data(HashAlgorithm::SHA512, &facts(&pki.cpo_sub1.pem()).key_bits);
    assert_eq!(sec.delete_certificate(&h512).result, D::Accepted);
    assert_eq!(
        fs::read_to_string(store.path("ca/v2g/V2G_ROOT_CA.pem")).unwrap(),
        pki.v2g_root.pem() + &pki.cpo_sub1.pem()
    );
    assert_eq!(sec.delete_certificate(&h512).result, D::NotFound);
}

#[test]
fn leaf_delete_removes_its_files_key_and_ocsp_and_nothing_else() {
    let pki = pki();
    let store = TempStore::with_pki(&pki);
    let leaf = hash_of(&pki.secc_leaf, &pki.cpo_sub2);
    let other = hash_of(&pki.cpo_sub1, &pki.v2g_root);
    let ocsp = store.path("client/cso/ocsp");
    fs::create_dir_all(&ocsp).unwrap();
    let hash_lines = |h: &HashData| {
        format!(
            "SHA256\n{}\n{}\n{}\n",
            h.issuer_name_hash, h.issuer_key_hash, h.serial_number
        )
    };
    fs::write(ocsp.join("a_ocsp.hash"), hash_lines(&leaf)).unwrap();
    fs::write(ocsp.join("a_ocsp.der"), b"\x30\x03\x0a\x01\x00").unwrap();
    fs::write(ocsp.join("b_ocsp.hash"), hash_lines(&other)).unwrap();
    fs::write(ocsp.join("b_ocsp.der"), b"\x30\x03\x0a\x01\x01").unwrap();
    let sec = store.open();
    let before = tree_contents(&store.certs);

    let Outcome { result, changes } = sec.delete_certificate(&leaf);
    assert_eq!(result, D::Accepted);
    assert_eq!(
        changes,
        vec![StoreChange {
            operation: StoreOperation::Deleted,
            ca: None,
            leaf: Some(L::V2G)
        }]
    );
    let after = tree_contents(&store.certs);
    let removed: Vec<String> = before
        .iter()
        .filter(|(p, _)| !after.iter().any(|(q, _)| q == p))
        .map(|(p, _)| p.strip_prefix(&store.certs).unwrap().display().to_string())
        .collect();
    assert_eq!(
        removed,
        vec![
            "client/cso/CPO_CERT_SECC_LEAF_CHAIN.pem",
            "client/cso/SECC_LEAF.key",
            "client/cso/SECC_LEAF.pem",
            "client/cso/ocsp/a_ocsp.der",
            "client/cso/ocsp/a_ocsp.hash",
        ]
    );
    for (path, bytes) in &after {
        assert_eq!(
            before.iter().find(|(p, _)| p == path).map(|(_, b)| b),
            Some(bytes)
        );
    }
    assert_eq!(sec.delete_certificate(&leaf).result, D::NotFound);
}

#[test]
fn csms_client_certificate_is_never_deleted() {
    let pki = pki();
    let store = TempStore::with_pki(&pki);
    // The same certificate is also an SECC leaf: still refused, and the
    // SECC copy stays.
    fs::copy(
        store.path("client/csms/CSMS_LEAF.pem"),
        store.path("client/cso/COPY.pem"),
    )
    .unwrap();
    fs::copy(
        store.path("client/csms/CSMS_LEAF.key"),
        store.path("client/cso/COPY.key"),
    )
    .unwrap();
    let sec = store.open();
    let before = tree_contents(&store.certs);
    let h = hash_of(&pki.csms_leaf, &pki.csms_root);
    assert_eq!(sec.delete_certificate(&h), Outcome::unchanged(D::Failed));
    assert_eq!(tree_contents(&store.certs), before);
}

#[test]
fn verification_results() {
    let pki = pki();
    let store = TempStore::with_pki(&pki);
    let sec = store.open();
    let chain = pki.secc_chain_pem();
    assert_eq!(sec.verify_certificate(&chain, &[L::V2G]).unwrap(), V::Valid);
    // The chain file's Sub-CAs are also in the bundle, so the leaf alone verifies.
    assert_eq!(
        sec.verify_certificate(&pki.secc_leaf.pem(), &[L::V2G])
            .unwrap(),
        V::Valid
    );
    assert_eq!(
        sec.verify_certificate(&chain, &[L::MO, L::V2G]).unwrap(),
        V::Valid
    );
    assert_eq!(
        sec.verify_certificate(&chain, &[L::MO]).unwrap(),
        V::IssuerNotFound
    );
    assert_eq!(
        sec.verify_certificate(&chain, &[]).unwrap(),
        V::IssuerNotFound
    );
    assert_eq!(
        sec.verify_certificate("garbage", &[L::V2G]).unwrap(),
        V::Unknown
    );
    assert_eq!(sec.verify_certificate("", &[L::V2G]).unwrap(), V::Unknown);

    // A leaf from another PKI whose issuer is absent everywhere.
    let stranger_root = issue(&CertSpec::ca("Stranger", None), None).unwrap();
    let stranger_sub = issue(&CertSpec::ca("Stranger Sub", Some(0)), Some(&stranger_root)).unwrap();
    let stranger = issue(&CertSpec::leaf("stranger"), Some(&stranger_sub)).unwrap();
    assert_eq!(
        sec.verify_certificate(&stranger.pem(), &[L::V2G]).unwrap(),
        V::IssuerNotFound
    );
    let two = stranger.pem() + &stranger_sub.pem();
    assert_eq!(
        sec.verify_certificate(&two, &[L::V2G]).unwrap(),
        V::IssuerNotFound
    );
    // A self-signed root in the input is not an anchor.
    let three = two + &stranger_root.pem();
    assert_eq!(
        sec.verify_certificate(&three, &[L::V2G]).unwrap(),
        V::IssuerNotFound
    );

    // Expired leaf; leaf under an expired Sub-CA (the reference accepts it).
    let expired = issue(&CertSpec::leaf("old").valid(-10, -1), Some(&pki.cpo_sub2)).unwrap();
    assert_eq!(
        sec.verify_certificate(&expired.pem(), &[L::V2G]).unwrap(),
        V::Expired
    );
    let expired_sub = issue(
        &CertSpec::ca("Old Sub", Some(0)).valid(-10, -1),
        Some(&pki.cpo_sub1),
    )
    .unwrap();
    let under_expired = issue(&CertSpec::leaf("child"), Some(&expired_sub)).unwrap();
    let c = under_expired.pem() + &expired_sub.pem();
    assert_eq!(sec.verify_certificate(&c, &[L::V2G]).unwrap(), V::Expired);

    // A not-yet-valid leaf cannot be used now: a contract certificate that
    // starts tomorrow is not good for charging today (as EVerest answers).
    // Only UpdateLeafCertificate takes a leaf ahead of its use.
    let future = issue(&CertSpec::leaf("future").valid(2, 30), Some(&pki.cpo_sub2)).unwrap();
    assert_eq!(
        sec.verify_certificate(&future.pem(), &[L::V2G]).unwrap(),
        V::Expired
    );

    // A tampered intermediate.
    let bad_sub = tampered(&pki.cpo_sub2.cert).unwrap();
    let leaf_under_bad = issue(&CertSpec::leaf("x"), Some(&pki.cpo_sub2)).unwrap();
    let c = leaf_under_bad.pem() + &String::from_utf8(bad_sub.to_pem().unwrap()).unwrap();
    let store2 = TempStore::empty();
    let sec2 = store2.open();
    sec2.install_ca_certificate(&pki.v2g_root.pem(), Ca::V2G);
    sec2.install_ca_certificate(&pki.cpo_sub1.pem(), Ca::V2G);
    assert_eq!(
        sec2.verify_certificate(&c, &[L::V2G]).unwrap(),
        V::InvalidSignature
    );

    // A leaf whose own signature is broken: a bad signature at any depth
    // is InvalidSignature, as in EVerest.
    let bad_leaf = tampered(&pki.secc_leaf.cert).unwrap();
    let c = String::from_utf8(bad_leaf.to_pem().unwrap()).unwrap() + &pki.cpo_sub2.pem();
    assert_eq!(
        sec.verify_certificate(&c, &[L::V2G]).unwrap(),
        V::InvalidSignature
    );

    // Path length: a third CA under Sub-CA 2 (pathlen 0). EVerest maps
    // OpenSSL's "path length constraint exceeded" to Unknown; it is a
    // broken chain.
    let sub3 = issue(&CertSpec::ca("Sub 3", None), Some(&pki.cpo_sub2)).unwrap();
    let leaf3 = issue(&CertSpec::leaf("deep"), Some(&sub3)).unwrap();
    let c = leaf3.pem() + &sub3.pem() + &pki.cpo_sub2.pem() + &pki.cpo_sub1.pem();
    assert_eq!(
        sec.verify_certificate(&c, &[L::V2G]).unwrap(),
        V::InvalidChain
    );

    // A chain longer than any real PKI: InvalidChain before OpenSSL runs.
    let long: String = std::iter::repeat_n(pki.cpo_sub1.pem(), 17).collect();
    let c = pki.secc_leaf.pem() + &long;
    assert_eq!(
        sec.verify_certificate(&c, &[L::V2G]).unwrap(),
        V::InvalidChain
    );
}

#[test]
fn ca_installed_and_verify_paths() {
    let pki = pki();
    let store = TempStore::with_pki(&pki);
    let expired = issue(&CertSpec::ca("Old", None).valid(-20, -1), None).unwrap();
    fs::write(store.path("ca/mf/MF_ROOT_CA.pem"), expired.pem()).unwrap();
    let sec = store.open();
    assert!(sec.is_ca_certificate_installed(Ca::V2G));
    assert!(sec.is_ca_certificate_installed(Ca::CSMS));
    assert!(!sec.is_ca_certificate_installed(Ca::MF));
    let v2g = store.path("ca/v2g/V2G_ROOT_CA.pem").display().to_string();
    assert_eq!(sec.get_verify_file(Ca::V2G), v2g);
    assert_eq!(sec.get_verify_location(Ca::V2G), v2g);
}

#[test]
fn hand_edits_are_seen_at_the_next_call() {
    let pki = pki();
    let store = TempStore::empty();
    fs::create_dir_all(store.path("ca/mo")).unwrap();
    let sec = evsec::EvseSecurity::open(store.config_with("mo_ca_bundle = \"ca/mo\"\n")).unwrap();
    assert!(!sec.is_ca_certificate_installed(Ca::MO));
    fs::write(store.path("ca/mo/hand.pem"), pki.mo_root.pem()).unwrap();
    assert!(sec.is_ca_certificate_installed(Ca::MO));
    assert_eq!(sec.certificate_entries(), 1);
    // Changed in place: now a different root.
    fs::write(store.path("ca/mo/hand.pem"), pki.mf_root.pem()).unwrap();
    let (_, chains) = sec.get_installed_certificates(&[Ct::MORootCertificate]);
    assert_eq!(
        chains[0].certificate_hash_data,
        hash_of(&pki.mf_root, &pki.mf_root)
    );
    fs::remove_file(store.path("ca/mo/hand.pem")).unwrap();
    assert!(!sec.is_ca_certificate_installed(Ca::MO));
    assert_eq!(sec.certificate_entries(), 0);
    // A leaf and its key dropped into the SECC directory.
    fs::write(
        store.path("client/cso/SECC_LEAF_x.pem"),
        pki.secc_chain_pem(),
    )
    .unwrap();
    assert_eq!(
        sec.get_installed_certificates(&[Ct::V2GCertificateChain])
            .1
            .len(),
        0
    );
    fs::write(
        store.path("client/cso/SECC_LEAF_x.key"),
        pki.secc_leaf.key_pem(),
    )
    .unwrap();
    assert_eq!(
        sec.get_installed_certificates(&[Ct::V2GCertificateChain])
            .1
            .len(),
        1
    );
}

#[test]
fn corrupt_files_are_left_alone() {
    let pki = pki();
    let store = TempStore::with_pki(&pki);
    let v2g = store.path("ca/v2g/V2G_ROOT_CA.pem");
    let full = fs::read_to_string(&v2g).unwrap();
    let truncated = &full[..full.len() - 100];
    fs::write(&v2g, truncated).unwrap();
    fs::write(
        store.path("client/cso/garbage.pem"),
        b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let before = tree_contents(&store.certs);
    let sec = store.open();
    assert!(sec.is_ca_certificate_installed(Ca::MO));
    // The truncated last block is skipped; the root and Sub-CA 1 before it
    // are still served.
    assert!(sec.is_ca_certificate_installed(Ca::V2G));
    let (_, chains) = sec.get_installed_certificates(&[Ct::V2GRootCertificate]);
    assert_eq!(
        chains[0].child_certificate_hash_data,
        vec![hash_of(&pki.cpo_sub1, &pki.v2g_root)]
    );
    let other = issue(&CertSpec::ca("Other", None), None).unwrap();
    assert_eq!(
        sec.install_ca_certificate(&other.pem(), Ca::MF).result,
        I::Accepted
    );
    let after = tree_contents(&store.certs);
    for (path, bytes) in &before {
        if path.ends_with("MF_ROOT_CA.pem") {
            continue;
        }
        assert_eq!(
            after.iter().find(|(p, _)| p == path).map(|(_, b)| b),
            Some(bytes),
            "{}",
            path.display()
        );
    }
}

#[test]
fn encrypted_keys_pair_with_their_certificates() {
    let pki = pki();
    let store = TempStore::with_pki(&pki);
    let encrypted = pki
        .secc_leaf
        .key
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"s3cret")
        .unwrap();
    fs::write(store.path("client/cso/SECC_LEAF.key"), encrypted).unwrap();
    let plain = store.open();
    assert_eq!(
        plain
            .get_installed_certificates(&[Ct::V2GCertificateChain])
            .1
            .len(),
        0
    );
    drop(plain);
    let sec = evsec::EvseSecurity::open(store.config_with("private_key_password = \"s3cret\"\n"))
        .unwrap();
    assert_eq!(
        sec.get_installed_certificates(&[Ct::V2GCertificateChain])
            .1
            .len(),
        1
    );
}

#[test]
fn stale_temp_files_are_removed_and_a_second_store_owner_is_refused() {
    let store = TempStore::empty();
    fs::create_dir_all(store.path("client/cso")).unwrap();
    let stale = store.path("client/cso/.evsec-tmp-SECC_LEAF_x.pem-1-0");
    fs::write(&stale, b"half").unwrap();
    let sec = store.open();
    assert!(!stale.exists());
    let second = evsec::EvseSecurity::open(store.config());
    assert!(second.is_err());
    assert!(second
        .err()
        .unwrap()
        .to_string()
        .contains("held by another evsecd"));
    drop(sec);
    let mode = fs::metadata(store.path(".evsecd.lock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn an_secc_leaf_that_is_also_the_csms_client_certificate_is_not_deleted() {
    let pki = pki();
    let store = TempStore::with_pki(&pki);
    // The CSMS directory holds a copy of the SECC leaf, whose issuer is not
    // in the CSMS bundle: the refusal must not depend on its hash data.
    fs::copy(
        store.path("client/cso/SECC_LEAF.pem"),
        store.path("client/csms/COPY.pem"),
    )
    .unwrap();
    fs::copy(
        store.path("client/cso/SECC_LEAF.key"),
        store.path("client/csms/COPY.key"),
    )
    .unwrap();
    let sec = store.open();
    let before = tree_contents(&store.certs);
    let h = hash_of(&pki.secc_leaf, &pki.cpo_sub2);
    assert_eq!(sec.delete_certificate(&h), Outcome::unchanged(D::Failed));
    assert_eq!(tree_contents(&store.certs), before);
}

#[test]
fn cached_verdicts_are_never_stale() {
    let pki = pki();
    let store = TempStore::with_pki(&pki);
    let sec = store.open();
    let chain = pki.secc_chain_pem();
    assert_eq!(sec.verify_certificate(&chain, &[L::V2G]).unwrap(), V::Valid);
    assert_eq!(sec.verify_certificate(&chain, &[L::V2G]).unwrap(), V::Valid);
    assert_eq!(
        sec.verify_certificate(&chain, &[L::MO]).unwrap(),
        V::IssuerNotFound,
        "types are part of the key"
    );
    // A write to another bundle keeps the verdict, as it is still true;
    // one to the V2G bundle through the API ends it.
    let other = issue(&CertSpec::ca("Other MO Root", None), None).unwrap();
    assert_eq!(
        sec.install_ca_certificate(&other.pem(), Ca::MO).result,
        I::Accepted
    );
    assert_eq!(sec.cached_verification(&chain, &[L::V2G]), Some(V::Valid));
    assert_eq!(
        sec.delete_certificate(&hash_of(&pki.v2g_root, &pki.v2g_root))
            .result,
        D::Accepted
    );
    assert_eq!(sec.cached_verification(&chain, &[L::V2G]), None);
    assert_eq!(
        sec.verify_certificate(&chain, &[L::V2G]).unwrap(),
        V::IssuerNotFound
    );
    // The store changes by hand: the next call sees it.
    fs::write(store.path("ca/v2g/V2G_ROOT_CA.pem"), b"").unwrap();
    assert_eq!(
        sec.verify_certificate(&chain, &[L::V2G]).unwrap(),
        V::IssuerNotFound
    );

    // A leaf that expires in a moment: Valid now, Expired once the clock
    // passes its notAfter, with the verdict cached in between.
    let store = TempStore::with_pki(&pki);
    let clock = evsec::clock::Clock::manual(evsec::x509::now());
    let sec = evsec::EvseSecurity::open_with_clock(store.config(), clock.clone()).unwrap();
    let short = issue(
        &CertSpec::leaf("short").valid_for_seconds(-60, 2),
        Some(&pki.cpo_sub2),
    )
    .unwrap();
    let not_after = CertFacts::new(short.cert.clone()).unwrap().not_after;
    assert!(not_after >= sec.now());
    for _ in 0..2 {
        assert_eq!(
            sec.verify_certificate(&short.pem(), &[L::V2G]).unwrap(),
            V::Valid
        );
    }
    clock.advance(not_after - sec.now());
    assert_eq!(
        sec.verify_certificate(&short.pem(), &[L::V2G]).unwrap(),
        V::Valid,
        "notAfter itself is inside the validity (RFC 5280 4.1.2.5)"
    );
    clock.advance(1);
    assert_eq!(
        sec.verify_certificate(&short.pem(), &[L::V2G]).unwrap(),
        V::Expired
    );
}

#[test]
fn a_bundle_directory_removed_and_made_again_is_watched_again() {
    let pki = pki();
    let store = TempStore::empty();
    fs::create_dir_all(store.path("ca/mo")).unwrap();
    let sec = evsec::EvseSecurity::open(store.config_with("mo_ca_bundle = \"ca/mo\"\n")).unwrap();
    fs::write(store.path("ca/mo/a.pem"), pki.mo_root.pem()).unwrap();
    assert!(sec.is_ca_certificate_installed(Ca::MO));
    fs::remove_dir_all(store.path("ca/mo")).unwrap();
    assert!(!sec.is_ca_certificate_installed(Ca::MO));
    fs::create_dir_all(store.path("ca/mo")).unwrap();
    assert!(!sec.is_ca_certificate_installed(Ca::MO));
    fs::write(store.path("ca/mo/b.pem"), pki.mo_root.pem()).unwrap();
    assert!(sec.is_ca_certificate_installed(Ca::MO));
    // Once watched again, a later edit is seen through the watch.
    fs::remove_file(store.path("ca/mo/b.pem")).unwrap();
    assert!(!sec.is_ca_certificate_installed(Ca::MO));
}

/// A self-signed RSA CA certificate with public exponent `e`.
fn rsa_root(bits: u32, e: u64) -> openssl::x509::X509 {
    use openssl::bn::BigNum;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    let exponent = BigNum::from_dec_str(&e.to_string()).unwrap();
    let key = PKey::from_rsa(Rsa::generate_with_e(bits, &exponent).unwrap()).unwrap();
    issue_with_key(&CertSpec::ca(&format!("RSA e={e}"), None), None, key)
        .unwrap()
        .cert
}

/// Keys whose checks cost far more than any real PKI needs are refused
/// before any signature is checked with them.
#[test]
fn rsa_keys_with_huge_exponents_are_refused_before_any_check() {
    let store = TempStore::empty();
    let sec = store.open();
    let normal = rsa_root(2048, 65537);
    let pem = |c: &openssl::x509::X509| String::from_utf8(c.to_pem().unwrap()).unwrap();
    assert_eq!(
        sec.install_ca_certificate(&pem(&normal), Ca::MF).result,
        I::Accepted
    );
    let huge_e = rsa_root(2048, (1u64 << 40) + 1);
    assert_eq!(
        CertFacts::new(huge_e.clone()).unwrap_err(),
        "RSA public exponent of 41 bits, over 32"
    );
    assert_eq!(
        sec.install_ca_certificate(&pem(&huge_e), Ca::MF).result,
        I::InvalidFormat
    );
    assert_eq!(
        sec.verify_certificate(&pem(&huge_e), &[L::MF]).unwrap(),
        V::Unknown
    );
    let file = store.dir.path().join("fw.bin");
    fs::write(&file, b"firmware").unwrap();
    let sig = openssl::base64::encode_block(&[0u8; 256]);
    assert!(!sec.verify_file_signature(file.to_str().unwrap(), &pem(&huge_e), &sig, None));
    // More PEM blocks than any chain needs: refused before parsing.
    let many = pem(&normal).repeat(40);
    assert_eq!(
        sec.verify_certificate(&many, &[L::MF]).unwrap(),
        V::InvalidChain
    );
    assert_eq!(sec.get_mo_ocsp_request_data(&many).unwrap(), vec![]);
}

/// In an existing `c_rehash` tree, the links to `.crt` files are another
/// tool's: evsecd keeps them, numbers its own links around them, and
/// removes only the links it made.
#[test]
fn hash_links_of_other_tools_are_left_alone() {
    let pki = pki();
    let store = TempStore::empty();
    let dir = store.path("ca/v2g");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("root.crt"), pki.v2g_root.pem()).unwrap();
    let hash = format!("{:08x}", pki.v2g_root.cert.subject_name_hash());
    std::os::unix::fs::symlink("root.crt", dir.join(format!("{hash}.0"))).unwrap();
    std::os::unix::fs::symlink("gone.crt", dir.join("0badc0de.0")).unwrap();
    let sec = evsec::EvseSecurity::open(store.config_with("v2g_ca_bundle = \"ca/v2g\"\n")).unwrap();
    assert_eq!(
        sec.install_ca_certificate(&pki.v2g_root.pem(), Ca::V2G)
            .result,
        I::Accepted
    );
    let link = |name: &str| fs::read_link(dir.join(name)).map(|t| t.to_string_lossy().into_owned());
    assert_eq!(link(&format!("{hash}.0")).unwrap(), "root.crt");
    assert_eq!(link("0badc0de.0").unwrap(), "gone.crt");
    let own = link(&format!("{hash}.1")).unwrap();
    assert!(
        own.starts_with("V2G_ROOT_") && own.ends_with(".pem"),
        "{own}"
    );
    // Deleting the root removes its file and evsecd's link only.
    let h = hash_of(&pki.v2g_root, &pki.v2g_root);
    assert_eq!(sec.delete_certificate(&h).result, D::Accepted);
    assert!(link(&format!("{hash}.1")).is_err());
    assert_eq!(link(&format!("{hash}.0")).unwrap(), "root.crt");
    assert_eq!(link("0badc0de.0").unwrap(), "gone.crt");
}

/// A chain under a root that has expired, or is not valid yet, answers
/// `Expired`: the root is there, only out of date.
#[test]
fn an_out_of_date_root_answers_expired() {
    for (from, to) in [(-20, -10), (10, 20)] {
        let root = issue(&CertSpec::ca("Dated Root", None).valid(from, to), None).unwrap();
        let leaf = issue(&CertSpec::leaf("under dated").valid(-1, 5), Some(&root)).unwrap();
        let store = TempStore::empty();
        let bundle = store.path("ca/mo/MO_ROOT_CA.pem");
        fs::create_dir_all(bundle.parent().unwrap()).unwrap();
        fs::write(&bundle, root.pem()).unwrap();
        let sec = store.open();
        assert_eq!(
            sec.verify_certificate(&leaf.pem(), &[L::MO]).unwrap(),
            V::Expired,
            "root valid from day {from} to day {to}"
        );
    }
}

#[test]
fn a_second_start_takes_the_parse_cache_and_parses_on_first_use() {
    let pki = pki();
    let store = TempStore::with_pki(&pki);
    let cache = store.certs.join(evsec::PARSE_CACHE_FILE);
    drop(store.open());
    let text = fs::read_to_string(&cache).unwrap();
    let cached: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(cached["openssl"], openssl::version::version());
    let entries = cached["entries"].as_array().unwrap();
    // The demo tree's distinct encodings: 4 roots, 2 Sub-CAs and 2 leaves.
    assert!(entries.len() >= 8, "{}", entries.len());
    let mode = fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // The next start reads the facts from the cache: a common name changed
    // there is what the listing shows, so the certificate was not parsed.
    let root_cn = CertFacts::new(pki.v2g_root.cert.clone())
        .unwrap()
        .common_name();
    fs::write(
        &cache,
        text.replace(
            &format!("\"common_name\":\"{root_cn}\""),
            "\"common_name\":\"from the cache\"",
        ),
    )
    .unwrap();
    let sec = store.open();
    let listed = sec.list_certificates(&[Ct::V2GRootCertificate]);
    assert_eq!(listed[0].cert.common_name(), "from the cache");
    // Verification parses the certificates it needs, on first use.
    assert_eq!(
        sec.verify_certificate(&pki.secc_chain_pem(), &[L::V2G])
            .unwrap(),
        V::Valid
    );
    drop(sec);

    // A cache written by another OpenSSL is not used.
    let other = fs::read_to_string(&cache)
        .unwrap()
        .replace(openssl::version::version(), "OpenSSL 0.9.8");
    fs::write(&cache, other).unwrap();
    let sec = store.open();
    let listed = sec.list_certificates(&[Ct::V2GRootCertificate]);
    assert_eq!(listed[0].cert.common_name(), root_cn);
}
