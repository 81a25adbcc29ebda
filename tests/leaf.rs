//! The leaf lifecycle through the library: CSR, leaf install, selection,
//! OCSP and garbage collection.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use common::{ocsp_response, tree_contents, TempStore};
use evsec::security::Outcome;
use evsec::security::StoreChange;
use evsec::testpki::{issue, issue_with_key, sign_csr, tampered, CertSpec, Issued, Pki};
use evsec::types::{
    GetCertificateInfoStatus as Info, GetCertificateSignRequestStatus as Csr, HashAlgorithm,
    HashData, InstallCertificateResult as I, LeafCertificateType as L, StoreOperation,
    UpdateOcspCacheResult as O,
};
use evsec::x509::CertFacts;
use evsec::EvseSecurity;
use openssl::x509::X509Req;

fn pki() -> Pki {
    Pki::generate().expect("pki")
}

fn pem(cert: &openssl::x509::X509) -> String {
    String::from_utf8(cert.to_pem().unwrap()).unwrap()
}

fn hash_of(cert: &openssl::x509::X509, issuer: &Issued) -> HashData {
    let f = CertFacts::new(cert.clone()).unwrap();
    f.hash_data(
        HashAlgorithm::SHA256,
        &CertFacts::new(issuer.cert.clone()).unwrap().key_bits,
    )
}

/// A store with the PKI's CA bundles and no leaves.
fn ca_only_store(pki: &Pki) -> TempStore {
    let store = TempStore::with_pki(pki);
    for f in [
        "client/cso/SECC_LEAF.pem",
        "client/cso/CPO_CERT_SECC_LEAF_CHAIN.pem",
        "client/cso/SECC_LEAF.key",
    ] {
        fs::remove_file(store.path(f)).unwrap();
    }
    store
}

fn key_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut keys: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "key"))
        .collect();
    keys.sort();
    keys
}

#[test]
fn csr_has_the_contract_shape_and_its_key_is_stored_0600() {
    let pki = pki();
    let store = ca_only_store(&pki);
    let sec = store.open();
    let Outcome {
        result: (status, csr),
        changes,
    } = sec
        .generate_certificate_signing_request(L::V2G, "de", "Example CPO", "SECC-42", false)
        .unwrap();
    assert_eq!(status, Csr::Accepted);
    assert_eq!(
        changes,
        vec![StoreChange {
            operation: StoreOperation::Installed,
            ca: None,
            leaf: Some(L::V2G)
        }]
    );
    let req = X509Req::from_pem(csr.as_bytes()).unwrap();
    let subject: Vec<(String, String)> = req
        .subject_name()
        .entries()
        .map(|e| {
            (
                e.object().nid().short_name().unwrap().to_owned(),
                e.data().to_string().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("C", "DE"),
        ("O", "Example CPO"),
        ("CN", "SECC-42"),
        ("DC", "CPO"),
    ];
    assert_eq!(
        subject,
        expected.map(|(a, b)| (a.to_owned(), b.to_owned())).to_vec()
    );
    let key = req.public_key().unwrap();
    assert!(req.verify(&key).unwrap());
    assert_eq!(
        key.ec_key().unwrap().group().curve_name(),
        Some(openssl::nid::Nid::X9_62_PRIME256V1)
    );
    let text = String::from_utf8(
        std::process::Command::new("openssl")
            .args(["req", "-noout", "-text"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(csr.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(text.contains("ecdsa-with-SHA256"), "{text}");
    assert!(
        text.contains("X509v3 Basic Constraints: critical\n                    CA:FALSE"),
        "{text}"
    );
    assert!(text.contains("Digital Signature, Key Agreement"), "{text}");

    let keys = key_files(&store.path("client/cso"));
    assert_eq!(keys.len(), 1);
    let name = keys[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("SECC_LEAF_M") && name.ends_with(".key"),
        "{name}"
    );
    assert_eq!(
        fs::metadata(&keys[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key_pem = fs::read_to_string(&keys[0]).unwrap();
    assert!(
        key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "plain PKCS#8 without a password"
    );
    let stored = openssl::pkey::PKey::private_key_from_pem(key_pem.as_bytes()).unwrap();
    assert!(stored.public_eq(&key));
}

#[test]
fn csr_key_is_encrypted_with_the_configured_password() {
    let pki = pki();
    let store = ca_only_store(&pki);
    let sec = EvseSecurity::open(store.config_with("private_key_password = \"pw\"\n")).unwrap();
    let Outcome {
        result: (status, _),
        ..
    } = sec
        .generate_certificate_signing_request(L::CSMS, "NL", "Org", "CS-1", false)
        .unwrap();
    assert_eq!(status, Csr::Accepted);
    let keys = key_files(&store.path("client/csms"));
    let key = keys
        .iter()
        .find(|k| {
            k.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("CSMS_LEAF_M")
        })
        .unwrap();
    let text = fs::read_to_string(key).unwrap();
    assert!(text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let out = std::process::Command::new("openssl")
        .args(["asn1parse", "-in"])
        .arg(key)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("aes-256-cbc"));
    assert!(openssl::pkey::PKey::private_key_from_pem_passphrase(text.as_bytes(), b"pw").is_ok());
}

#[test]
fn csr_key_is_0640_to_a_configured_key_group() {
    let pki = pki();
    let store = ca_only_store(&pki);
    let sec = EvseSecurity::open(store.config_with("[access]\nkey_group = \"root\"\n")).unwrap();
    let Outcome {
        result: (status, _),
        ..
    } = sec
        .generate_certificate_signing_request(L::V2G, "DE", "O", "CN", false)
        .unwrap();
    assert_eq!(status, Csr::Accepted);
    let key = &key_files(&store.path("client/cso"))[0];
    let meta = fs::metadata(key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 0);
    drop(sec);
    let err =
        EvseSecurity::open(store.config_with("[access]\nkey_group = \"no-such-group-evsec\"\n"));
    assert_eq!(
        err.err().unwrap().to_string(),
        "config key `access.key_group`: no group named `no-such-group-evsec`"
    );
}

#[test]
fn csr_refusals() {
    let pki = pki();
    let store = ca_only_store(&pki);
    let sec = store.open();
    let before = tree_contents(&store.certs);
    for (country, org, cn, needle) in [
        ("DEU", "O", "CN", "country"),
        ("D1", "O", "CN", "country"),
        ("DE", "", "CN", "organization"),
        ("DE", "O", &"x".repeat(65), "common name"),
        ("DE", "O", "a\nb", "common name"),
    ] {
        let err = sec
            .generate_certificate_signing_request(L::V2G, country, org, cn, false)
            .unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    assert_eq!(
        sec.generate_certificate_signing_request(L::MF, "DE", "O", "CN", false)
            .unwrap(),
        Outcome::unchanged((Csr::InvalidRequestedType, String::new()))
    );
    assert_eq!(
        sec.generate_certificate_signing_request(L::V2G, "DE", "O", "CN", true)
            .unwrap(),
        Outcome::unchanged((Csr::KeyGenError, String::new()))
    );
    assert_eq!(
        tree_contents(&store.certs),
        before,
        "no key written for a refused CSR"
    );
    // An unwritable key directory.
    fs::remove_dir_all(store.path("client/cso")).unwrap();
    assert_eq!(
        sec.generate_certificate_signing_request(L::V2G, "DE", "O", "CN", false)
            .unwrap()
            .result
            .0,
        Csr::GenerationError
    );
}

/// CSR, then the leaf signed by Sub-CA 2, as a CSMS would send it.
fn csr_and_leaf(sec: &EvseSecurity, pki: &Pki, spec: CertSpec) -> openssl::x509::X509 {
    let Outcome {
        result: (status, csr),
        ..
    } = sec
        .generate_certificate_signing_request(L::V2G, "DE", "CPO", &spec.cn, false)
        .unwrap();
    assert_eq!(status, Csr::Accepted);
    sign_csr(&csr, &spec, &pki.cpo_sub2).unwrap()
}

#[test]
fn leaf_install_results() {
    let pki = pki();
    let store = ca_only_store(&pki);
    let sec = store.open();
    let leaf = csr_and_leaf(&sec, &pki, CertSpec::leaf("SECC-1"));
    let chain = pem(&leaf) + &pki.cpo_sub2.pem() + &pki.cpo_sub1.pem();

    let Outcome { result: r, changes } = sec.update_leaf_certificate(&chain, L::V2G).unwrap();
    assert_eq!(r, I::Accepted);
    assert_eq!(
        changes,
        vec![StoreChange {
            operation: StoreOperation::Installed,
            ca: None,
            leaf: Some(L::V2G)
        }]
    );
    let names: Vec<String> = fs::read_dir(store.path("client/cso"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pem"))
        .collect();
    let single = names
        .iter()
        .find(|n| n.starts_with("SECC_LEAF_M"))
        .expect("single file");
    let chain_file = names
        .iter()
        .find(|n| n.starts_with("CPO_CERT_SECC_LEAF_CHAIN_M"))
        .expect("chain file");
    assert_eq!(
        fs::read_to_string(store.path("client/cso").join(single)).unwrap(),
        pem(&leaf)
    );
    assert_eq!(
        fs::read_to_string(store.path("client/cso").join(chain_file)).unwrap(),
        chain
    );
    assert_eq!(
        single.trim_start_matches("SECC_LEAF_"),
        chain_file.trim_start_matches("CPO_CERT_SECC_LEAF_CHAIN_")
    );

    // The same leaf again: Accepted, nothing written.
    let before = tree_contents(&store.certs);
    assert_eq!(
        sec.update_leaf_certificate(&chain, L::V2G).unwrap(),
        Outcome::unchanged(I::Accepted)
    );
    assert_eq!(tree_contents(&store.certs), before);

    // Refusals, none of which writes anything.
    let no_key = issue(&CertSpec::secc("nokey"), Some(&pki.cpo_sub2)).unwrap();
    assert_eq!(
        sec.update_leaf_certificate(&no_key.pem(), L::V2G)
            .unwrap()
            .result,
        I::PrivateKeyNotFound
    );
    let expired = issue(&CertSpec::leaf("old").valid(-10, -1), Some(&pki.cpo_sub2)).unwrap();
    assert_eq!(
        sec.update_leaf_certificate(&expired.pem(), L::V2G)
            .unwrap()
            .result,
        I::Expired
    );
    let stranger_root = issue(&CertSpec::ca("Stranger", None), None).unwrap();
    let stranger = issue(&CertSpec::leaf("x"), Some(&stranger_root)).unwrap();
    assert_eq!(
        sec.update_leaf_certificate(&stranger.pem(), L::V2G)
            .unwrap()
            .result,
        I::NoRootCertificateInstalled
    );
    assert_eq!(
        sec.update_leaf_certificate(&(stranger.pem() + &stranger_root.pem()), L::V2G)
            .unwrap()
            .result,
        I::NoRootCertificateInstalled
    );
    let bad = pem(&tampered(&pki.secc_leaf.cert).unwrap());
    assert_eq!(
        sec.update_leaf_certificate(&bad, L::V2G).unwrap().result,
        I::InvalidSignature
    );
    assert_eq!(
        sec.update_leaf_certificate(&pki.cpo_sub2.pem(), L::V2G)
            .unwrap()
            .result,
        I::InvalidCertificateChain
    );
    // A path-length violation is a broken chain (EVerest verifies it as
    // Unknown, hence InvalidFormat).
    let sub3 = issue(&CertSpec::ca("Sub 3", None), Some(&pki.cpo_sub2)).unwrap();
    let deep = issue(&CertSpec::leaf("deep"), Some(&sub3)).unwrap();
    assert_eq!(
        sec.update_leaf_certificate(&(deep.pem() + &sub3.pem()), L::V2G)
            .unwrap()
            .result,
        I::InvalidCertificateChain
    );
    let mut no_cn = CertSpec::leaf("");
    no_cn.cn = String::new();
    let nameless = issue(&no_cn, Some(&pki.cpo_sub2)).unwrap();
    assert_eq!(
        sec.update_leaf_certificate(&nameless.pem(), L::V2G)
            .unwrap()
            .result,
        I::InvalidCommonName
    );
    assert_eq!(
        sec.update_leaf_certificate("garbage", L::V2G)
            .unwrap()
            .result,
        I::InvalidFormat
    );
    let oversized = chain.clone() + &"\n".repeat(10_000);
    assert_eq!(
        sec.update_leaf_certificate(&oversized, L::V2G)
            .unwrap()
            .result,
        I::InvalidFormat
    );
    // MF and MO leaves are not kept: WriteError, as EVerest answers.
    assert_eq!(
        sec.update_leaf_certificate(&chain, L::MO).unwrap().result,
        I::WriteError
    );
    // A CSMS leaf is checked against the CSMS bundle.
    assert_eq!(
        sec.update_leaf_certificate(&chain, L::CSMS).unwrap().result,
        I::NoRootCertificateInstalled
    );
    assert_eq!(tree_contents(&store.certs), before);

    // A full store; then a write that fails.
    let leaf2 = csr_and_leaf(&sec, &pki, CertSpec::leaf("SECC-2"));
    drop(sec);
    let full = EvseSecurity::open(store.config_with("[limits]\nmax_store_entries = 10\n")).unwrap();
    assert_eq!(
        full.update_leaf_certificate(&pem(&leaf2), L::V2G)
            .unwrap()
            .result,
        I::CertificateStoreMaxLengthExceeded
    );
    // CSR keys count too: a full store writes no key.
    let before = tree_contents(&store.certs);
    let Outcome {
        result: (status, csr),
        changes,
    } = full
        .generate_certificate_signing_request(L::V2G, "DE", "CPO", "SECC-3", false)
        .unwrap();
    assert_eq!(
        (status, csr.as_str(), changes),
        (Csr::GenerationError, "", vec![])
    );
    assert_eq!(tree_contents(&store.certs), before);
}

#[test]
fn leaf_install_write_error() {
    let pki = pki();
    let store = ca_only_store(&pki);
    let sec =
        EvseSecurity::open(store.config_with("secc_leaf_cert_directory = \"client/cso-certs\"\n"))
            .unwrap();
    let leaf = csr_and_leaf(&sec, &pki, CertSpec::leaf("SECC-W"));
    fs::remove_dir_all(store.path("client/cso-certs")).unwrap();
    assert_eq!(
        sec.update_leaf_certificate(&pem(&leaf), L::V2G).unwrap(),
        Outcome::unchanged(I::WriteError)
    );
}

#[test]
fn a_not_yet_valid_leaf_is_installed_but_not_used_until_valid() {
    let pki = pki();
    let store = ca_only_store(&pki);
    let sec = store.open();
    let future = csr_and_leaf(&sec, &pki, CertSpec::leaf("SECC-F").valid(2, 60));
    assert_eq!(
        sec.update_leaf_certificate(&pem(&future), L::V2G)
            .unwrap()
            .result,
        I::Accepted
    );
    assert_eq!(
        sec.get_leaf_certificate_info(L::V2G, false),
        (Info::NotFoundValid, None)
    );
    assert_eq!(sec.get_leaf_expiry_days_count(L::V2G), 0);
    // But its OCSP request data is already there (libevse-security #108).
    let requests = sec.get_v2g_ocsp_request_data();
    assert_eq!(requests.len(), 2, "{requests:?}"); // Sub-CA 2 and Sub-CA 1; the leaf has no URL
}

#[test]
fn leaf_selection_statuses_and_newest_by_not_before() {
    let pki = pki();
    let store = ca_only_store(&pki);
    let sec = store.open();
    assert_eq!(
        sec.get_leaf_certificate_info(L::V2G, false),
        (Info::NotFound, None)
    );
    assert_eq!(
        sec.get_leaf_certificate_info(L::MF, false),
        (Info::Rejected, None)
    );
    assert_eq!(
        sec.get_all_valid_certificates_info(L::MO, false),
        (Info::Rejected, vec![])
    );

    // An expired leaf only.
    let old = issue(&CertSpec::leaf("old").valid(-30, -1), Some(&pki.cpo_sub2)).unwrap();
    fs::write(store.path("client/cso/OLD.pem"), old.pem()).unwrap();
    fs::write(store.path("client/cso/OLD.key"), old.key_pem()).unwrap();
    assert_eq!(
        sec.get_leaf_certificate_info(L::V2G, false).0,
        Info::NotFoundValid
    );
    // A valid leaf without its key.
    let lonely = issue(&CertSpec::leaf("lonely"), Some(&pki.cpo_sub2)).unwrap();
    fs::write(store.path("client/cso/LONELY.pem"), lonely.pem()).unwrap();
    assert_eq!(
        sec.get_leaf_certificate_info(L::V2G, false).0,
        Info::PrivateKeyNotFound
    );
    assert_eq!(sec.get_leaf_expiry_days_count(L::V2G), 0);

    // Two valid leaves: the one that started later wins even though the
    // other lasts longer (the reference picks by notAfter).
    let long = csr_and_leaf(&sec, &pki, CertSpec::leaf("long").valid(-10, 700));
    let recent = csr_and_leaf(&sec, &pki, CertSpec::leaf("recent").valid(-1, 100));
    let chain = |c: &openssl::x509::X509| pem(c) + &pki.cpo_sub2.pem() + &pki.cpo_sub1.pem();
    assert_eq!(
        sec.update_leaf_certificate(&chain(&long), L::V2G)
            .unwrap()
            .result,
        I::Accepted
    );
    assert_eq!(
        sec.update_leaf_certificate(&chain(&recent), L::V2G)
            .unwrap()
            .result,
        I::Accepted
    );
    let (status, info) = sec.get_leaf_certificate_info(L::V2G, false);
    assert_eq!(status, Info::Accepted);
    let info = info.unwrap();
    let single = fs::read_to_string(info.certificate_single.as_ref().unwrap()).unwrap();
    assert_eq!(single, pem(&recent));
    assert_eq!(
        fs::read_to_string(info.certificate.as_ref().unwrap()).unwrap(),
        chain(&recent)
    );
    assert_eq!(info.certificate_count, 3);
    assert_eq!(info.password, None);
    assert_eq!(info.certificate_root, None);
    assert_eq!(info.ocsp, None);
    let key = openssl::pkey::PKey::private_key_from_pem(&fs::read(&info.key).unwrap()).unwrap();
    assert!(key.public_eq(&recent.public_key().unwrap()));
    let not_after = CertFacts::new(recent.clone()).unwrap().not_after;
    let days_at = |now: i64| ((not_after - now) / 86_400) as i32;
    let before = days_at(evsec::x509::now());
    let days = sec.get_leaf_expiry_days_count(L::V2G);
    assert!(
        (days_at(evsec::x509::now())..=before).contains(&days),
        "{days}"
    );
    assert!(days == 99 || days == 100, "{days}");
}

#[test]
fn all_valid_gives_the_newest_leaf_per_root() {
    let pki = pki();
    let other = Pki::generate().unwrap();
    let store = ca_only_store(&pki);
    let v2g = store.path("ca/v2g/V2G_ROOT_CA.pem");
    let mut bundle = fs::read_to_string(&v2g).unwrap();
    bundle += &(other.v2g_root.pem() + &other.cpo_sub1.pem() + &other.cpo_sub2.pem());
    fs::write(&v2g, bundle).unwrap();
    let sec = store.open();
    let a_old = csr_and_leaf(&sec, &pki, CertSpec::leaf("a-old").valid(-5, 100));
    let a_new = csr_and_leaf(&sec, &pki, CertSpec::leaf("a-new").valid(-1, 100));
    let Outcome {
        result: (_, csr), ..
    } = sec
        .generate_certificate_signing_request(L::V2G, "DE", "CPO", "b", false)
        .unwrap();
    let b = sign_csr(&csr, &CertSpec::leaf("b"), &other.cpo_sub2).unwrap();
    for c in [&a_old, &a_new, &b] {
        assert_eq!(
            sec.update_leaf_certificate(&pem(c), L::V2G).unwrap().result,
            I::Accepted
        );
    }
    let (status, infos) = sec.get_all_valid_certificates_info(L::V2G, true);
    assert_eq!(status, Info::Accepted);
    assert_eq!(infos.len(), 2);
    let singles: Vec<String> = infos
        .iter()
        .map(|i| fs::read_to_string(i.certificate_single.as_ref().unwrap()).unwrap())
        .collect();
    let roots: Vec<String> = infos
        .iter()
        .map(|i| i.certificate_root.clone().unwrap())
        .collect();
    let a = singles
        .iter()
        .position(|s| *s == pem(&a_new))
        .expect("newest leaf of root A");
    let b_pos = singles
        .iter()
        .position(|s| *s == pem(&b))
        .expect("leaf of root B");
    assert_eq!(roots[a], pki.v2g_root.pem());
    assert_eq!(roots[b_pos], other.v2g_root.pem());
    // Leaf-only install: certificate_count 1, no chain file; ocsp lines up
    // with the one certificate.
    assert_eq!(infos[a].certificate, None);
    assert_eq!(infos[a].certificate_count, 1);
    let ocsp = infos[a].ocsp.as_ref().unwrap();
    assert_eq!(ocsp.len(), 1);
    assert_eq!(ocsp[0].0, hash_of(&a_new, &pki.cpo_sub2));
    assert_eq!(ocsp[0].1, "");
}

#[test]
fn ocsp_cache_results_and_layout() {
    let pki = pki();
    let store = TempStore::with_pki(&pki);
    let sec = store.open();
    let tmp = tempfile::tempdir().unwrap();
    let leaf_hash = hash_of(&pki.secc_leaf.cert, &pki.cpo_sub2);
    let der = ocsp_response(&pki.secc_leaf.cert, &pki.cpo_sub2, tmp.path());
    let b64 = openssl::base64::encode_block(&der);

    assert_eq!(
        sec.update_ocsp_cache(&leaf_hash, "").unwrap().result,
        O::InvalidFormat
    );
    assert_eq!(
        sec.update_ocsp_cache(&leaf_hash, "!!not base64!!")
            .unwrap()
            .result,
        O::InvalidFormat
    );
    assert_eq!(
        sec.update_ocsp_cache(&leaf_hash, &openssl::base64::encode_block(b"not DER"))
            .unwrap()
            .result,
        O::InvalidFormat
    );
    // A response about another certificate.
    let other = ocsp_response(&pki.cpo_sub2.cert, &pki.cpo_sub1, tmp.path());
    assert_eq!(
        sec.update_ocsp_cache(&leaf_hash, &openssl::base64::encode_block(&other))
            .unwrap()
            .result,
        O::InvalidFormat
    );
    let unknown = HashData::parse("SHA256", &"ab".repeat(32), &"cd".repeat(32), "1").unwrap();
    assert_eq!(
        sec.update_ocsp_cache(&unknown, &b64).unwrap().result,
        O::NotFound
    );
    assert!(fs::read_dir(store.path("client/cso/ocsp"))
        .unwrap()
        .next()
        .is_none());

    // Accepted, with the base64 folded over lines as EVerest's encoder does.
    let folded: String = b64
        .as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c) + "\n")
        .collect();
    assert_eq!(
        sec.update_ocsp_cache(&leaf_hash, &folded).unwrap().result,
        O::Accepted
    );
    let files: Vec<_> = fs::read_dir(store.path("client/cso/ocsp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2);
    let der_file = files
        .iter()
        .find(|p| p.extension().unwrap() == "der")
        .unwrap();
    let hash_file = der_file.with_extension("hash");
    assert!(der_file
        .file_name()
        .unwrap()
        .to_string_lossy()
        .ends_with("_ocsp.der"));
    assert_eq!(fs::read(der_file).unwrap(), der);
    assert_eq!(
        fs::read_to_string(&hash_file).unwrap(),
        format!(
            "SHA256\n{}\n{}\n{}\n",
            leaf_hash.issuer_name_hash, leaf_hash.issuer_key_hash, leaf_hash.serial_number
        )
    );
    let (_, info) = sec.get_leaf_certificate_info(L::V2G, true);
    let ocsp = info.unwrap().ocsp.unwrap();
    assert_eq!(ocsp[0], (leaf_hash.clone(), der_file.display().to_string()));
    assert_eq!(ocsp[1].1, "", "no response cached for Sub-CA 2 yet");

    // A newer response replaces the older, in place.
    std::thread::sleep(Duration::from_millis(1100));
    let newer = ocsp_response(&pki.secc_leaf.cert, &pki.cpo_sub2, tmp.path());
    assert_ne!(newer, der);
    let upper = HashData::parse(
        "SHA256",
        &leaf_hash.issuer_name_hash.to_uppercase(),
        &leaf_hash.issuer_key_hash,
        &format!("0{}", leaf_hash.serial_number),
    )
    .unwrap();
    assert_eq!(
        sec.update_ocsp_cache(&upper, &openssl::base64::encode_block(&newer))
            .unwrap()
            .result,
        O::Accepted
    );
    let files: Vec<_> = fs::read_dir(store.path("client/cso/ocsp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2);
    assert_eq!(fs::read(der_file).unwrap(), newer);

    // A Sub-CA that is in the V2G bundle file and the chain file gets the
    // response in both places.
    let sub_hash = hash_of(&pki.cpo_sub2.cert, &pki.cpo_sub1);
    assert_eq!(
        sec.update_ocsp_cache(&sub_hash, &openssl::base64::encode_block(&other))
            .unwrap()
            .result,
        O::Accepted
    );
    assert_eq!(fs::read_dir(store.path("ca/v2g/ocsp")).unwrap().count(), 2);
    assert_eq!(
        fs::read_dir(store.path("client/cso/ocsp")).unwrap().count(),
        4
    );
}

#[test]
fn ocsp_request_data() {
    let pki = pki();
    let store = TempStore::with_pki(&pki);
    let sec = store.open();
    let url = Pki::OCSP_URL.to_owned();
    assert_eq!(
        sec.get_v2g_ocsp_request_data(),
        vec![
            (hash_of(&pki.secc_leaf.cert, &pki.cpo_sub2), url.clone()),
            (hash_of(&pki.cpo_sub2.cert, &pki.cpo_sub1), url.clone()),
            (hash_of(&pki.cpo_sub1.cert, &pki.v2g_root), url.clone()),
        ]
    );
    // A contract chain under an MO root with a V2G-signed MO Sub-CA.
    let mo_sub = issue(
        &CertSpec::ca("MO Sub-CA 1", Some(0)).ocsp("http://ocsp.mo.test/"),
        Some(&pki.v2g_root),
    )
    .unwrap();
    let contract = issue(
        &CertSpec::leaf("DE8AA001234567").ocsp("http://ocsp.mo.test/"),
        Some(&mo_sub),
    )
    .unwrap();
    let data = sec
        .get_mo_ocsp_request_data(&(contract.pem() + &mo_sub.pem()))
        .unwrap();
    assert_eq!(
        data,
        vec![
            (
                hash_of(&contract.cert, &mo_sub),
                "http://ocsp.mo.test/".to_owned()
            ),
            (
                hash_of(&mo_sub.cert, &pki.v2g_root),
                "http://ocsp.mo.test/".to_owned()
            ),
        ]
    );
    assert_eq!(sec.get_mo_ocsp_request_data("nothing").unwrap(), vec![]);
    assert_eq!(
        sec.get_mo_ocsp_request_data(&"x".repeat(70_000)).unwrap(),
        vec![],
        "oversized content is bad content"
    );
}

#[test]
fn file_signatures() {
    let pki = pki();
    let store = TempStore::with_pki(&pki);
    let sec = store.open();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("firmware.bin");
    fs::write(&file, vec![0x5au8; 300_000]).unwrap();
    let digest = openssl::sha::sha256(&fs::read(&file).unwrap());
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pki.mf_root.key)
            .unwrap();
    signer.update(&fs::read(&file).unwrap()).unwrap();
    let sig = openssl::base64::encode_block(&signer.sign_to_vec().unwrap());
    let path = file.to_str().unwrap();
    assert!(sec.verify_file_signature(path, &pki.mf_root.pem(), &sig, None));
    assert!(
        !sec.verify_file_signature(path, &pki.mo_root.pem(), &sig, None),
        "another key"
    );
    assert!(
        !sec.verify_file_signature(path, &pki.mf_root.pem(), "%%%", None),
        "bad base64"
    );
    assert!(
        !sec.verify_file_signature(path, &pki.mf_root.pem(), "", None),
        "empty signature"
    );
    assert!(!sec.verify_file_signature(path, "not a cert", &sig, None));
    assert!(
        !sec.verify_file_signature("firmware.bin", &pki.mf_root.pem(), &sig, None),
        "relative path"
    );
    assert!(!sec.verify_file_signature("/nonexistent/x", &pki.mf_root.pem(), &sig, None));
    assert!(!sec.verify_file_signature("/dev/zero", &pki.mf_root.pem(), &sig, None));
    assert!(!sec.verify_file_signature(
        dir.path().to_str().unwrap(),
        &pki.mf_root.pem(),
        &sig,
        None
    ));
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert!(!sec.verify_file_signature(fifo.to_str().unwrap(), &pki.mf_root.pem(), &sig, None));
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink("/nonexistent/target", &dangling).unwrap();
    assert!(!sec.verify_file_signature(dangling.to_str().unwrap(), &pki.mf_root.pem(), &sig, None));
    // A caller reads through the daemon only what it could read itself.

    let stranger = evsec::access::Caller {
        uid: 4242,
        gids: vec![4242],
    };
    let owner = evsec::access::Caller {
        uid: unsafe { libc::geteuid() },
        gids: vec![],
    };
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!sec.verify_file_signature(path, &pki.mf_root.pem(), &sig, Some(&stranger)));
    assert!(sec.verify_file_signature(path, &pki.mf_root.pem(), &sig, Some(&owner)));
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    // A readable file in a directory the caller cannot search is out of
    // its reach, and so out of the daemon's on its behalf.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    assert!(!sec.verify_file_signature(path, &pki.mf_root.pem(), &sig, Some(&stranger)));
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    assert!(sec.verify_file_signature(path, &pki.mf_root.pem(), &sig, Some(&stranger)));
    // The owner's class decides for the owner, as the kernel does: a file
    // of 4242's with mode 0044 is readable by everyone but 4242.
    if std::os::unix::fs::chown(&file, Some(4242), Some(4242)).is_ok() {
        fs::set_permissions(&file, fs::Permissions::from_mode(0o044)).unwrap();
        assert!(!sec.verify_file_signature(path, &pki.mf_root.pem(), &sig, Some(&stranger)));
        let other = evsec::access::Caller {
            uid: 4243,
            gids: vec![4243],
        };
        assert!(sec.verify_file_signature(path, &pki.mf_root.pem(), &sig, Some(&other)));
        std::os::unix::fs::chown(&file, Some(owner.uid), Some(0)).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    }
    // A file whose ACL decides is refused to a caller who does not own it.
    let acl = std::process::Command::new("setfacl")
        .args(["-m", "u:4243:r"])
        .arg(&file)
        .status();
    if acl.is_ok_and(|s| s.success()) {
        assert!(!sec.verify_file_signature(path, &pki.mf_root.pem(), &sig, Some(&stranger)));
        assert!(sec.verify_file_signature(path, &pki.mf_root.pem(), &sig, Some(&owner)));
        let _ = std::process::Command::new("setfacl")
            .arg("-b")
            .arg(&file)
            .status();
    } else {
        eprintln!("setfacl (Debian: acl) is missing: the ACL case is not checked");
    }

    // One flipped byte in the file.
    let mut bytes = fs::read(&file).unwrap();
    bytes[12345] ^= 1;
    fs::write(&file, bytes).unwrap();
    assert!(!sec.verify_file_signature(path, &pki.mf_root.pem(), &sig, None));
    let _ = digest;
}

#[test]
fn garbage_collection() {
    let pki = pki();
    let store = ca_only_store(&pki);
    let sec = EvseSecurity::open(store.config_with("[gc]\nkeep_leaves = 2\n")).unwrap();
    let cso = store.path("client/cso");
    // Four expired leaves with keys, newest notBefore last.
    let mut expired = Vec::new();
    for i in 0..4 {
        let leaf = issue(
            &CertSpec::leaf(&format!("old{i}")).valid(-100 + i * 10, -50 + i * 10),
            Some(&pki.cpo_sub2),
        )
        .unwrap();
        fs::write(cso.join(format!("OLD{i}.pem")), leaf.pem()).unwrap();
        fs::write(cso.join(format!("OLD{i}.key")), leaf.key_pem()).unwrap();
        expired.push(leaf);
    }
    // OCSP of the oldest leaf, and of a certificate that is not there.
    let ocsp = cso.join("ocsp");
    let line = |h: &HashData| {
        format!(
            "SHA256\n{}\n{}\n{}\n",
            h.issuer_name_hash, h.issuer_key_hash, h.serial_number
        )
    };
    fs::write(
        ocsp.join("a_ocsp.hash"),
        line(&hash_of(&expired[0].cert, &pki.cpo_sub2)),
    )
    .unwrap();
    fs::write(ocsp.join("a_ocsp.der"), b"x").unwrap();
    fs::write(
        ocsp.join("b_ocsp.hash"),
        line(&HashData::parse("SHA256", &"1".repeat(64), &"2".repeat(64), "3").unwrap()),
    )
    .unwrap();
    fs::write(ocsp.join("b_ocsp.der"), b"x").unwrap();
    fs::write(ocsp.join("c_ocsp.der"), b"orphan").unwrap();
    // A CSR key two hours old, and a fresh one.
    let Outcome { result: (_, _), .. } = sec
        .generate_certificate_signing_request(L::V2G, "DE", "O", "old-csr", false)
        .unwrap();
    let old_key = key_files(&cso)
        .into_iter()
        .find(|k| {
            k.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("SECC_LEAF_")
        })
        .unwrap();
    fs::File::options()
        .write(true)
        .open(&old_key)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    let Outcome { result: (_, _), .. } = sec
        .generate_certificate_signing_request(L::V2G, "DE", "O", "new-csr", false)
        .unwrap();
    // A valid leaf with its key.
    let valid = csr_and_leaf(&sec, &pki, CertSpec::leaf("valid"));
    assert_eq!(
        sec.update_leaf_certificate(&pem(&valid), L::V2G)
            .unwrap()
            .result,
        I::Accepted
    );

    let changes = sec.garbage_collect();
    assert_eq!(
        changes,
        vec![StoreChange {
            operation: StoreOperation::Deleted,
            ca: None,
            leaf: Some(L::V2G)
        }]
    );
    let mut left: Vec<String> = fs::read_dir(&cso)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let secc: Vec<&String> = left
        .iter()
        .filter(|n| n.starts_with("SECC_LEAF_"))
        .collect();
    // The valid leaf, its key, and the fresh CSR key stay; the old CSR key goes.
    assert_eq!(secc.len(), 3, "{left:?}");
    assert!(!old_key.exists());
    // The newest two leaves stay (the valid one and old3); old0..old2 go with their keys.
    for gone in [
        "OLD0.pem", "OLD0.key", "OLD1.pem", "OLD1.key", "OLD2.pem", "OLD2.key",
    ] {
        assert!(
            !left.contains(&gone.to_owned()),
            "{gone} should be gone: {left:?}"
        );
    }
    for kept in ["OLD3.pem", "OLD3.key", "ocsp"] {
        assert!(
            left.contains(&kept.to_owned()),
            "{kept} should stay: {left:?}"
        );
    }
    assert_eq!(fs::read_dir(&ocsp).unwrap().count(), 0);
    assert_eq!(sec.garbage_collect(), vec![], "nothing more to do");
    assert_eq!(
        sec.get_leaf_certificate_info(L::V2G, false).0,
        Info::Accepted
    );
}

/// Sets a file's mtime `secs` into the past.
fn age(path: &std::path::Path, secs: u64) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

/// The CSR key `sec` just wrote for `cn` in `dir`.
fn csr_key(sec: &EvseSecurity, dir: &std::path::Path, cn: &str) -> (std::path::PathBuf, String) {
    let before = key_files(dir);
    let Outcome {
        result: (status, csr),
        ..
    } = sec
        .generate_certificate_signing_request(L::V2G, "DE", "CPO", cn, false)
        .unwrap();
    assert_eq!(status, Csr::Accepted);
    let key = key_files(dir)
        .into_iter()
        .find(|k| !before.contains(k))
        .unwrap();
    (key, csr)
}

fn record(dir: &std::path::Path) -> String {
    fs::read_to_string(dir.join(evsec::store::CSR_KEY_RECORD_NAME)).unwrap_or_default()
}

/// Only a key evsecd generated for a CSR, that no certificate took up, may
/// expire; a key whose certificate is momentarily unreadable, or kept
/// under a name the index does not read, is never removed.
#[test]
fn garbage_collection_keeps_keys_whose_certificate_is_not_recognised() {
    let pki = pki();
    let store = TempStore::with_pki(&pki);
    let sec =
        EvseSecurity::open(store.config_with("[gc]\ncsr_key_max_age_seconds = 60\n")).unwrap();
    let (csms, cso) = (store.path("client/csms"), store.path("client/cso"));

    // The station's CSMS certificate with one base64 character changed: its
    // key is the station's identity and stays, however old.
    let leaf = csms.join("CSMS_LEAF.pem");
    let mut text = fs::read_to_string(&leaf).unwrap();
    // In the outer SEQUENCE's length, so that the DER no longer parses.
    let at = text.find("\n").unwrap() + 3;
    let flipped = if &text[at..at + 1] == "A" { "B" } else { "A" };
    text.replace_range(at..at + 1, flipped);
    fs::write(&leaf, text).unwrap();
    age(&csms.join("CSMS_LEAF.key"), 7200);
    sec.garbage_collect();
    assert!(csms.join("CSMS_LEAF.key").exists());

    // An old CSR key is kept while any certificate file of the leaf
    // directories does not parse (it may be this key's), and goes once it
    // is repaired.
    let (orphan, _) = csr_key(&sec, &cso, "orphan");
    age(&orphan, 7200);
    sec.garbage_collect();
    assert!(orphan.exists(), "kept while CSMS_LEAF.pem does not parse");
    fs::write(&leaf, pki.csms_leaf.pem()).unwrap();
    sec.garbage_collect();
    assert!(!orphan.exists(), "an abandoned CSR key expires");
    assert!(record(&cso).is_empty(), "{}", record(&cso));

    // A CSR key whose certificate is kept as .crt: taken up, kept, and
    // forgotten by the record.
    let (by_crt, csr) = csr_key(&sec, &cso, "crt");
    let name = by_crt.file_name().unwrap().to_string_lossy().into_owned();
    assert!(record(&cso).contains(&name), "{}", record(&cso));
    let cert = sign_csr(&csr, &CertSpec::leaf("crt"), &pki.cpo_sub2).unwrap();
    fs::write(cso.join("by-hand.crt"), pem(&cert)).unwrap();
    age(&by_crt, 7200);
    sec.garbage_collect();
    assert!(by_crt.exists());
    assert!(!record(&cso).contains(&name), "{}", record(&cso));

    // A CSR key that got its certificate is never a CSR key again, even
    // when that certificate is later damaged.
    let (taken, csr) = csr_key(&sec, &cso, "taken");
    let cert = sign_csr(&csr, &CertSpec::leaf("taken"), &pki.cpo_sub2).unwrap();
    let chain = pem(&cert) + &pki.cpo_sub2.pem() + &pki.cpo_sub1.pem();
    assert_eq!(
        sec.update_leaf_certificate(&chain, L::V2G).unwrap().result,
        I::Accepted
    );
    assert!(record(&cso).is_empty(), "{}", record(&cso));
    for file in fs::read_dir(&cso).unwrap().map(|e| e.unwrap().path()) {
        if fs::read_to_string(&file).is_ok_and(|t| t.contains(&pem(&cert))) {
            fs::write(
                &file,
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            )
            .unwrap();
        }
    }
    age(&taken, 7200);
    sec.garbage_collect();
    assert!(taken.exists());
    // Keys that were never recorded (an EVerest tree's) never expire.
    assert!(cso.join("SECC_LEAF.key").exists());
}

/// A leaf and its chain are written all or nothing, also across a crash:
/// a crash after the write was decided is finished at the next start, one
/// before it leaves nothing.
#[test]
fn an_interrupted_leaf_install_is_finished_or_undone_at_start() {
    let pki = pki();
    let store = ca_only_store(&pki);
    let cso = store.path("client/cso");
    let sec = store.open();
    let leaf = csr_and_leaf(&sec, &pki, CertSpec::leaf("SECC-C"));
    drop(sec);
    let tmp = |name: &str| format!("{}{name}-1-1", evsec::store::TEMP_PREFIX);
    let single = pem(&leaf);
    let chain = pem(&leaf) + &pki.cpo_sub2.pem() + &pki.cpo_sub1.pem();
    // Decided: both temporary files and the record are on disk, no rename
    // was made. The next start makes both renames.
    fs::write(cso.join(tmp("SECC_LEAF_X.pem")), &single).unwrap();
    fs::write(cso.join(tmp("CPO_CERT_SECC_LEAF_CHAIN_X.pem")), &chain).unwrap();
    fs::write(
        cso.join(evsec::store::GROUP_RECORD_NAME),
        format!(
            "{}\tSECC_LEAF_X.pem\n{}\tCPO_CERT_SECC_LEAF_CHAIN_X.pem\n",
            tmp("SECC_LEAF_X.pem"),
            tmp("CPO_CERT_SECC_LEAF_CHAIN_X.pem")
        ),
    )
    .unwrap();
    let sec = store.open();
    assert_eq!(
        fs::read_to_string(cso.join("SECC_LEAF_X.pem")).unwrap(),
        single
    );
    assert_eq!(
        fs::read_to_string(cso.join("CPO_CERT_SECC_LEAF_CHAIN_X.pem")).unwrap(),
        chain
    );
    assert!(!cso.join(evsec::store::GROUP_RECORD_NAME).exists());
    let (status, info) = sec.get_leaf_certificate_info(L::V2G, false);
    assert_eq!(status, Info::Accepted);
    assert_eq!(info.unwrap().certificate_count, 3);
    drop(sec);
    // Not decided: temporary files without a record are removed.
    fs::write(cso.join(tmp("SECC_LEAF_Y.pem")), &single).unwrap();
    let _sec = store.open();
    let names: Vec<String> = fs::read_dir(&cso)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("SECC_LEAF_Y")),
        "{names:?}"
    );
}

/// A P-384 key, off the ISO 15118-2 profile.
fn p384_key() -> openssl::pkey::PKey<openssl::pkey::Private> {
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP384R1).unwrap();
    openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap()
}

/// ISO 15118-2 Annex F on install: each way off the profile of the SECC
/// leaf, its Sub-CAs and the V2G root answers `InvalidCertificateChain`
/// and writes nothing; what keeps to it gets past the check.
#[test]
fn iso15118_2_profiles_on_install() {
    let pki = pki();
    let store = ca_only_store(&pki);
    let sec = store.open();
    let before = tree_contents(&store.certs);
    let subs = pki.cpo_sub2.pem() + &pki.cpo_sub1.pem();
    let install = |leaf: &Issued, subs: &str| {
        sec.update_leaf_certificate(&(leaf.pem() + subs), L::V2G)
            .unwrap()
            .result
    };
    let under_sub2 = |spec: CertSpec| issue(&spec, Some(&pki.cpo_sub2)).unwrap();
    // A keyless leaf that keeps to the profile gets past it, to the key.
    assert_eq!(
        install(&under_sub2(CertSpec::secc("fits")), &subs),
        I::PrivateKeyNotFound
    );
    let only_digital = CertSpec {
        key_usage: Some("critical,digitalSignature".into()),
        ..CertSpec::secc("no key agreement")
    };
    let not_critical = CertSpec {
        key_usage: Some("digitalSignature,keyAgreement".into()),
        ..CertSpec::secc("usage not critical")
    };
    let sha384 = CertSpec {
        sha384: true,
        ..CertSpec::secc("sha384")
    };
    let p384 = issue_with_key(&CertSpec::secc("p384"), Some(&pki.cpo_sub2), p384_key()).unwrap();
    // Sub-CA 2 with pathLenConstraint 1, or none, under Sub-CA 1.
    let loose_sub2 = issue(
        &CertSpec::ca("Loose Sub-CA 2", Some(1)),
        Some(&pki.cpo_sub1),
    )
    .unwrap();
    let open_sub2 = issue(&CertSpec::ca("Open Sub-CA 2", None), Some(&pki.cpo_sub1)).unwrap();
    let loose_subs = loose_sub2.pem() + &pki.cpo_sub1.pem();
    let open_subs = open_sub2.pem() + &pki.cpo_sub1.pem();
    for (what, leaf, subs) in [
        (
            "no DC=CPO",
            under_sub2(CertSpec::leaf("no dc")),
            subs.clone(),
        ),
        (
            "keyUsage without keyAgreement",
            under_sub2(only_digital),
            subs.clone(),
        ),
        (
            "keyUsage not critical",
            under_sub2(not_critical),
            subs.clone(),
        ),
        ("ECDSA-SHA384", under_sub2(sha384), subs.clone()),
        ("P-384 key", p384, subs.clone()),
        (
            "Sub-CA 2 with pathlen 1",
            issue(&CertSpec::secc("loose"), Some(&loose_sub2)).unwrap(),
            loose_subs,
        ),
        (
            "Sub-CA 2 without pathlen",
            issue(&CertSpec::secc("open"), Some(&open_sub2)).unwrap(),
            open_subs,
        ),
    ] {
        assert_eq!(install(&leaf, &subs), I::InvalidCertificateChain, "{what}");
    }
    assert_eq!(tree_contents(&store.certs), before);

    // A single Sub-CA layer takes the Sub-CA 2 profile: pathlen 0 fits.
    let single = issue(&CertSpec::ca("Single Sub-CA", Some(0)), Some(&pki.v2g_root)).unwrap();
    let under_single = issue(&CertSpec::secc("single"), Some(&single)).unwrap();
    assert_eq!(install(&under_single, &single.pem()), I::PrivateKeyNotFound);

    // V2G roots: P-256 with ECDSA-SHA256, keyCertSign and cRLSign. Other
    // bundles are not held to it.
    let p384_root = issue_with_key(&CertSpec::ca("P-384 Root", None), None, p384_key()).unwrap();
    let no_crl_sign = issue(
        &CertSpec {
            key_usage: Some("critical,keyCertSign".into()),
            ..CertSpec::ca("No cRLSign Root", None)
        },
        None,
    )
    .unwrap();
    for root in [&p384_root, &no_crl_sign] {
        assert_eq!(
            sec.install_ca_certificate(&root.pem(), evsec::types::CaCertificateType::V2G)
                .result,
            I::InvalidCertificateChain
        );
        assert_eq!(
            sec.install_ca_certificate(&root.pem(), evsec::types::CaCertificateType::MO)
                .result,
            I::Accepted
        );
    }
    let fits = issue(&CertSpec::ca("Second V2G Root", None), None).unwrap();
    assert_eq!(
        sec.install_ca_certificate(&fits.pem(), evsec::types::CaCertificateType::V2G)
            .result,
        I::Accepted
    );

    // Without require_dc, a leaf without DC=CPO gets past the profile.
    drop(sec);
    let lenient =
        EvseSecurity::open(store.config_with("[iso15118]\nrequire_dc = false\n")).unwrap();
    let no_dc = under_sub2(CertSpec::leaf("no dc"));
    assert_eq!(
        lenient
            .update_leaf_certificate(&(no_dc.pem() + &subs), L::V2G)
            .unwrap()
            .result,
        I::PrivateKeyNotFound
    );
}
