//! ISO 15118-20 through the library (contract §11.1): the -20 SECC leaf
//! beside the -2 one, typed by its key; its CSR; the -20 profile checks; the
//! OEM bundle.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{tree_contents, TempStore};
use evsec::testpki::{issue_with_key, sign_csr, CertSpec, Issued, Pki, Pki20};
use evsec::types::{
    CaCertificateType as Ca, CertificateType, CertificateValidationResult as V,
    DeleteCertificateResult as D, GetCertificateInfoStatus as Info,
    GetCertificateSignRequestStatus as Csr, GetInstalledCertificatesStatus, HashAlgorithm,
    HashData, InstallCertificateResult as I, KeyAlgorithm, LeafCertificateType as L,
};
use evsec::x509::{generate_key, CertFacts, CsrKey};
use evsec::EvseSecurity;
use openssl::nid::Nid;
use openssl::x509::X509Req;

fn pem(cert: &openssl::x509::X509) -> String {
    String::from_utf8(cert.to_pem().unwrap()).unwrap()
}

fn hash_of(cert: &openssl::x509::X509, issuer: &Issued) -> HashData {
    CertFacts::new(cert.clone()).unwrap().hash_data(
        HashAlgorithm::SHA256,
        &CertFacts::new(issuer.cert.clone()).unwrap().key_bits,
    )
}

fn openssl_text(args: &[&str], input: &str) -> String {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(input.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn config_line(kind: CsrKey) -> &'static str {
    match kind {
        CsrKey::P521 => "[iso15118]\nv2g20_key = \"P521\"\n",
        CsrKey::Ed448 => "[iso15118]\nv2g20_key = \"Ed448\"\n",
        CsrKey::P256 => "",
    }
}

/// A store with the -2 PKI (and its SECC leaf) and the -20 V2G root.
fn station(pki20: &Pki20, kind: CsrKey) -> (TempStore, EvseSecurity) {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let sec = EvseSecurity::open(store.config_with(config_line(kind))).unwrap();
    assert_eq!(
        sec.install_ca_certificate(&pki20.v2g_root.pem(), Ca::V2G)
            .result,
        I::Accepted,
        "a -20 root belongs in the V2G bundle"
    );
    (store, sec)
}

/// CSR, signing by the -20 CPO Sub-CA 2, install, selection and deletion of
/// a -20 leaf beside the -2 one.
fn v2g20_leaf_life_cycle(kind: CsrKey) {
    let pki20 = Pki20::generate(kind).unwrap();
    let (store, sec) = station(&pki20, kind);
    let cso = store.path("client/cso");
    let before: Vec<_> = fs::read_dir(&cso)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();

    let csr_outcome = sec
        .generate_certificate_signing_request(L::V2G20, "DE", "Example CPO", "SECC-20-0042", false)
        .unwrap();
    let (status, csr) = csr_outcome.result;
    assert_eq!(status, Csr::Accepted);
    let req = X509Req::from_pem(csr.as_bytes()).unwrap();
    let public = req.public_key().unwrap();
    assert!(req.verify(&public).unwrap());
    let text = openssl_text(&["req", "-noout", "-text", "-verify"], &csr);
    assert!(text.contains("verify OK"), "{text}");
    assert!(
        text.contains("DC=CPO") || text.contains("DC = CPO"),
        "{text}"
    );
    assert!(
        text.contains("X509v3 Basic Constraints: critical\n                    CA:FALSE"),
        "{text}"
    );
    assert!(text.contains("X509v3 Key Usage: critical"), "{text}");
    match kind {
        CsrKey::P521 => {
            assert_eq!(
                public.ec_key().unwrap().group().curve_name(),
                Some(Nid::SECP521R1)
            );
            assert!(text.contains("ecdsa-with-SHA512"), "{text}");
            assert!(text.contains("Digital Signature, Key Agreement"), "{text}");
        }
        CsrKey::Ed448 => {
            assert_eq!(public.id(), openssl::pkey::Id::ED448);
            assert!(text.contains("Signature Algorithm: ED448"), "{text}");
            assert!(text.contains("Digital Signature\n"), "{text}");
            assert!(!text.contains("Key Agreement"), "{text}");
        }
        CsrKey::P256 => unreachable!(),
    }
    let key_path = fs::read_dir(&cso)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !before.contains(p) && p.extension().is_some_and(|e| e == "key"))
        .expect("the CSR's key file");
    let name = key_path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("SECC_LEAF_") && name.ends_with(".key"),
        "{name}"
    );
    assert_eq!(
        fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key = openssl::pkey::PKey::private_key_from_pem(&fs::read(&key_path).unwrap()).unwrap();
    assert!(key.public_eq(&public), "the stored key is the CSR's");

    let leaf = sign_csr(&csr, &CertSpec::leaf("SECC-20-0042"), &pki20.cpo_sub2).unwrap();
    let chain = pem(&leaf) + &pki20.cpo_sub2.pem() + &pki20.cpo_sub1.pem();
    let untouched = tree_contents(&store.certs);
    assert_eq!(
        sec.update_leaf_certificate(&chain, L::V2G).unwrap().result,
        I::InvalidCertificateChain,
        "a -20 leaf is no V2G leaf"
    );
    assert_eq!(tree_contents(&store.certs), untouched);
    assert_eq!(
        sec.update_leaf_certificate(&chain, L::V2G20)
            .unwrap()
            .result,
        I::Accepted
    );

    // Each type selects its own leaf from the one directory.
    let (status, info) = sec.get_leaf_certificate_info(L::V2G20, false);
    assert_eq!(status, Info::Accepted);
    let info = info.unwrap();
    assert_eq!(info.key, key_path);
    assert_eq!(info.key_algorithm, CsrKey::algorithm(kind));
    assert_eq!(info.common_name, "SECC-20-0042");
    assert_eq!(
        fs::read_to_string(info.certificate.unwrap()).unwrap(),
        chain
    );
    assert_eq!(
        fs::read_to_string(info.certificate_single.unwrap()).unwrap(),
        pem(&leaf)
    );
    let (status, info) = sec.get_leaf_certificate_info(L::V2G, false);
    assert_eq!(status, Info::Accepted);
    let info = info.unwrap();
    assert_eq!(
        (info.key_algorithm, info.common_name.as_str()),
        (KeyAlgorithm::P256, "SECC-0001")
    );

    // One leaf per EVSE, by its SECC ID.
    let (status, info) = sec.get_leaf_certificate_info_for_id(L::V2G20, Some("SECC-20-0042"), true);
    assert_eq!(status, Info::Accepted);
    assert_eq!(info.unwrap().ocsp.unwrap().len(), 3);
    assert_eq!(
        sec.get_leaf_certificate_info_for_id(L::V2G20, Some("SECC-0001"), false)
            .0,
        Info::NotFound,
        "SECC-0001 is a -2 leaf"
    );
    assert_eq!(
        sec.get_leaf_certificate_info_for_id(L::V2G20, Some("secc-20-0042"), false)
            .0,
        Info::NotFound,
        "the SECC ID is matched case-sensitively"
    );
    assert_eq!(
        sec.get_leaf_certificate_info_for_id(L::V2G, Some("SECC-0001"), false)
            .0,
        Info::Accepted
    );
    let days = sec.get_leaf_expiry_days_count(L::V2G20);
    assert!((363..=365).contains(&days), "{days}");
    assert_eq!(
        sec.get_all_valid_certificates_info(L::V2G20, false).1.len(),
        1
    );

    // Verification is typed by the key too.
    assert_eq!(
        sec.verify_certificate(&chain, &[L::V2G20]).unwrap(),
        V::Valid
    );
    assert_eq!(
        sec.verify_certificate(&chain, &[L::V2G]).unwrap(),
        V::InvalidChain
    );
    assert_eq!(
        sec.verify_certificate(&chain, &[L::V2G, L::V2G20]).unwrap(),
        V::Valid
    );

    // Listing, OCSP request data and deletion cover both kinds.
    let (status, chains) = sec.get_installed_certificates(&[CertificateType::V2GCertificateChain]);
    assert_eq!(status, GetInstalledCertificatesStatus::Accepted);
    let leaf_hash = hash_of(&leaf, &pki20.cpo_sub2);
    assert_eq!(chains.len(), 2);
    assert!(chains.iter().any(|c| c.certificate_hash_data == leaf_hash));
    let ocsp_serials: Vec<String> = sec
        .get_v2g_ocsp_request_data()
        .into_iter()
        .map(|(h, _)| h.serial_number)
        .collect();
    let has_own_ocsp = |serial: &str| ocsp_serials.iter().any(|s| s == serial);
    let two_leaf = sec.get_leaf_certificate_info(L::V2G, false).1.unwrap();
    let two_leaf_files = (
        two_leaf.certificate_single.clone(),
        two_leaf.certificate.clone(),
    );
    assert!(
        !has_own_ocsp(&leaf_hash.serial_number),
        "the -20 test PKI has no OCSP URLs"
    );
    assert_eq!(sec.delete_certificate(&leaf_hash).result, D::Accepted);
    assert_eq!(
        sec.get_leaf_certificate_info(L::V2G20, false).0,
        Info::NotFound
    );
    let after = sec.get_leaf_certificate_info(L::V2G, false).1.unwrap();
    assert_eq!(
        (after.certificate_single, after.certificate),
        two_leaf_files
    );
}

#[test]
fn p521_leaf_from_csr_to_selection() {
    v2g20_leaf_life_cycle(CsrKey::P521);
}

#[test]
fn ed448_leaf_from_csr_to_selection() {
    v2g20_leaf_life_cycle(CsrKey::Ed448);
}

/// Writes `key` into the SECC key directory, as an installer would.
fn place_key(store: &TempStore, name: &str, key: &openssl::pkey::PKeyRef<openssl::pkey::Private>) {
    let path = store.path("client/cso").join(name);
    fs::write(&path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn leaves_that_fit_no_type_or_not_the_profile_are_refused() {
    let pki20 = Pki20::generate(CsrKey::P521).unwrap();
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let sec = EvseSecurity::open(store.config()).unwrap();
    assert_eq!(
        sec.install_ca_certificate(&pki20.v2g_root.pem(), Ca::V2G)
            .result,
        I::Accepted
    );
    let chain_of = |leaf: &Issued, subs: [&Issued; 2]| leaf.pem() + &subs[0].pem() + &subs[1].pem();
    let subs20 = [&pki20.cpo_sub2, &pki20.cpo_sub1];

    // P-384 is neither -2 nor -20.
    let p384 = openssl::pkey::PKey::from_ec_key(
        openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(Nid::SECP384R1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    place_key(&store, "P384.key", &p384);
    let p384_leaf =
        issue_with_key(&CertSpec::secc("SECC-384"), Some(&pki20.cpo_sub2), p384).unwrap();
    let untouched = tree_contents(&store.certs);
    for t in [L::V2G, L::V2G20] {
        assert_eq!(
            sec.update_leaf_certificate(&chain_of(&p384_leaf, subs20), t)
                .unwrap()
                .result,
            I::InvalidCertificateChain,
            "{t}"
        );
    }

    // A P-521 leaf under the -2 Sub-CAs mixes the editions.
    let mixed_key = generate_key(CsrKey::P521).unwrap();
    place_key(&store, "MIXED.key", &mixed_key);
    let mixed = issue_with_key(
        &CertSpec::secc("SECC-MIXED"),
        Some(&pki.cpo_sub2),
        mixed_key,
    )
    .unwrap();
    assert_eq!(
        sec.update_leaf_certificate(&chain_of(&mixed, [&pki.cpo_sub2, &pki.cpo_sub1]), L::V2G20)
            .unwrap()
            .result,
        I::InvalidCertificateChain
    );

    // Without DC=CPO, while require_dc is on (the default).
    let no_dc_key = generate_key(CsrKey::P521).unwrap();
    place_key(&store, "NODC.key", &no_dc_key);
    let no_dc = issue_with_key(
        &CertSpec::leaf("SECC-NO-DC"),
        Some(&pki20.cpo_sub2),
        no_dc_key,
    )
    .unwrap();
    assert_eq!(
        sec.update_leaf_certificate(&chain_of(&no_dc, subs20), L::V2G20)
            .unwrap()
            .result,
        I::InvalidCertificateChain
    );
    let placed: Vec<_> = ["P384.key", "MIXED.key", "NODC.key"]
        .map(|n| store.path("client/cso").join(n))
        .into_iter()
        .collect();
    let without_placed = |tree: Vec<(std::path::PathBuf, Vec<u8>)>| {
        tree.into_iter()
            .filter(|(p, _)| !placed.contains(p))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        without_placed(tree_contents(&store.certs)),
        without_placed(untouched)
    );
    drop(sec);

    // require_dc = false restores the v1 rule.
    let sec = EvseSecurity::open(store.config_with("[iso15118]\nrequire_dc = false\n")).unwrap();
    assert_eq!(
        sec.update_leaf_certificate(&chain_of(&no_dc, subs20), L::V2G20)
            .unwrap()
            .result,
        I::Accepted
    );
    let (status, info) = sec.get_leaf_certificate_info_for_id(L::V2G20, Some("SECC-NO-DC"), false);
    assert_eq!(status, Info::Accepted);
    assert_eq!(info.unwrap().key, store.path("client/cso/NODC.key"));
}

#[test]
fn oem_roots_check_vehicle_chains() {
    let pki20 = Pki20::generate(CsrKey::Ed448).unwrap();
    let store = TempStore::empty();
    let sec = EvseSecurity::open(store.config()).unwrap();
    assert!(!sec.is_ca_certificate_installed(Ca::OEM));
    let vehicle = pki20.vehicle.pem() + &pki20.oem_sub.pem();
    assert_eq!(
        sec.verify_certificate(&vehicle, &[L::OEM]).unwrap(),
        V::IssuerNotFound
    );

    assert_eq!(
        sec.install_ca_certificate(&pki20.oem_root.pem(), Ca::OEM)
            .result,
        I::Accepted
    );
    assert_eq!(
        sec.install_ca_certificate(&pki20.oem_sub.pem(), Ca::OEM)
            .result,
        I::Accepted
    );
    assert!(sec.is_ca_certificate_installed(Ca::OEM));
    let file = sec.get_verify_file(Ca::OEM);
    assert_eq!(Path::new(&file), store.path("ca/oem/OEM_ROOT_CA.pem"));
    assert_eq!(sec.get_verify_location(Ca::OEM), file);
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        pki20.oem_root.pem() + &pki20.oem_sub.pem()
    );

    assert_eq!(
        sec.verify_certificate(&vehicle, &[L::OEM]).unwrap(),
        V::Valid
    );
    assert_eq!(
        sec.verify_certificate(&pki20.vehicle.pem(), &[L::OEM])
            .unwrap(),
        V::Valid,
        "the installed Sub-CA completes the chain"
    );
    assert_eq!(
        sec.verify_certificate(&pki20.foreign_vehicle.pem(), &[L::OEM])
            .unwrap(),
        V::IssuerNotFound
    );
    assert_eq!(
        sec.verify_certificate(&vehicle, &[L::V2G20]).unwrap(),
        V::IssuerNotFound
    );

    let (status, chains) = sec.get_installed_certificates(&[CertificateType::OEMRootCertificate]);
    assert_eq!(status, GetInstalledCertificatesStatus::Accepted);
    let root_hash = hash_of(&pki20.oem_root.cert, &pki20.oem_root);
    assert_eq!(chains.len(), 1);
    assert_eq!(chains[0].certificate_hash_data, root_hash);
    assert_eq!(
        chains[0].child_certificate_hash_data,
        vec![hash_of(&pki20.oem_sub.cert, &pki20.oem_root)]
    );

    // No OEM leaf is kept.
    assert_eq!(
        sec.get_leaf_certificate_info(L::OEM, false).0,
        Info::Rejected
    );
    assert_eq!(
        sec.generate_certificate_signing_request(L::OEM, "DE", "O", "CN", false)
            .unwrap()
            .result
            .0,
        Csr::InvalidRequestedType
    );

    assert_eq!(sec.delete_certificate(&root_hash).result, D::Accepted);
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "",
        "the root took its Sub-CA along"
    );
    assert!(!sec.is_ca_certificate_installed(Ca::OEM));
}

/// The station as a -20 SECC and a -2 SECC at once, over the bus: each
/// leaf from its CSR to a TLS server that real `openssl s_client` cars
/// talk to. -20: TLS 1.3, TLS_AES_256_GCM_SHA384, and the car's OEM chain
/// checked against `GetVerifyFile("OEM")`.
async fn tls_for_both_editions(kind: CsrKey) {
    use common::{client, tls_handshake, tls_session, Daemon, PrivateBus};

    let pki = Pki::generate().unwrap();
    let pki20 = Pki20::generate(kind).unwrap();
    let store = TempStore::with_pki(&pki);
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&store.write_config(config_line(kind)), &bus);
    let c = client(&bus).await;
    for (cert, ca) in [
        (&pki20.v2g_root, "V2G"),
        (&pki20.oem_root, "OEM"),
        (&pki20.oem_sub, "OEM"),
    ] {
        assert_eq!(
            c.install_ca_certificate(&cert.pem(), ca).await.unwrap(),
            "Accepted"
        );
    }
    assert!(c.is_ca_certificate_installed("OEM").await.unwrap());
    let (status, csr) = c
        .generate_certificate_signing_request("V2G20", "DE", "Example CPO", "SECC-20-7", false)
        .await
        .unwrap();
    assert_eq!(status, "Accepted");
    let leaf = sign_csr(&csr, &CertSpec::leaf("SECC-20-7"), &pki20.cpo_sub2).unwrap();
    let chain = pem(&leaf) + &pki20.cpo_sub2.pem() + &pki20.cpo_sub1.pem();
    assert_eq!(
        c.update_leaf_certificate(&chain, "V2G20").await.unwrap(),
        "Accepted"
    );

    let (status, info) = c
        .get_leaf_certificate_info("V2G20", "PEM", false)
        .await
        .unwrap();
    assert_eq!(status, "Accepted");
    let expected_algorithm = CsrKey::algorithm(kind).as_str();
    assert_eq!(info.key_algorithm.as_deref(), Some(expected_algorithm));
    assert_eq!(info.common_name.as_deref(), Some("SECC-20-7"));
    let (status, by_id) = c
        .get_leaf_certificate_info_for_id("V2G20", "SECC-20-7", false)
        .await
        .unwrap();
    assert_eq!((status.as_str(), &by_id), ("Accepted", &info));
    assert_eq!(
        c.get_leaf_certificate_info_for_id("V2G20", "SECC-0001", false)
            .await
            .unwrap()
            .0,
        "NotFound"
    );
    let oem_file = c.get_verify_file("OEM").await.unwrap();
    assert_eq!(
        fs::read_to_string(&oem_file).unwrap(),
        pki20.oem_root.pem() + &pki20.oem_sub.pem()
    );
    let listed = c
        .get_certificate_details(&["V2GCertificateChain"])
        .await
        .unwrap();
    let mut leaf_keys: Vec<(String, String)> = listed
        .iter()
        .filter(|d| d.subject.starts_with("SECC-"))
        .map(|d| (d.subject.clone(), d.key_algorithm.clone()))
        .collect();
    leaf_keys.sort();
    assert_eq!(
        leaf_keys,
        [
            ("SECC-0001".to_owned(), "P256".to_owned()),
            ("SECC-20-7".to_owned(), expected_algorithm.to_owned())
        ]
    );

    let dir = store.dir.path();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let v2g20_root = write("v2g20-root.pem", &pki20.v2g_root.pem());
    // A car's s_client arguments: it trusts the -20 V2G root and shows
    // its certificate, with its Sub-CA when it has one.
    let car = |name: &str, vehicle: &Issued, sub_ca: Option<&Issued>| {
        let mut args = vec![
            "-CAfile".to_owned(),
            v2g20_root.clone(),
            "-tls1_3".to_owned(),
            "-cert".to_owned(),
            write(&format!("{name}.pem"), &vehicle.pem()),
            "-key".to_owned(),
            write(
                &format!("{name}.key"),
                &String::from_utf8(vehicle.key_pem()).unwrap(),
            ),
        ];
        if let Some(sub_ca) = sub_ca {
            args.push("-cert_chain".to_owned());
            args.push(write(&format!("{name}-chain.pem"), &sub_ca.pem()));
        }
        args
    };
    let (single, key, cert_chain) = (
        info.certificate_single.unwrap(),
        info.key.unwrap(),
        info.certificate.unwrap(),
    );
    let server = [
        "-cert",
        &single,
        "-key",
        &key,
        "-cert_chain",
        &cert_chain,
        "-tls1_3",
        "-ciphersuites",
        "TLS_AES_256_GCM_SHA384",
        "-Verify",
        "1",
        "-CAfile",
        &oem_file,
        "-verify_return_error",
    ];

    // A car of an installed OEM.
    let args = car("vehicle", &pki20.vehicle, Some(&pki20.oem_sub));
    let run = tls_session(
        &server,
        &[],
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(run.client_ok, "{}\n{}", run.client, run.server);
    assert!(
        run.client.contains("Protocol version: TLSv1.3"),
        "{}",
        run.client
    );
    assert!(
        run.client.contains("Ciphersuite: TLS_AES_256_GCM_SHA384"),
        "{}",
        run.client
    );
    assert!(run.client.contains("Verification: OK"), "{}", run.client);
    assert!(run.client.contains("SECC-20-7"), "{}", run.client);
    assert!(
        run.server
            .contains("subject=C = DE, O = evsec test, CN = VEHICLE-0001"),
        "{}",
        run.server
    );
    assert!(
        run.server.contains("1 server accepts that finished"),
        "{}",
        run.server
    );
    assert!(run.server.contains("hello from the car"), "{}", run.server);

    // A car of an OEM the station does not know.
    let args = car("foreign", &pki20.foreign_vehicle, None);
    let run = tls_session(
        &server,
        &[],
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(!run.client_ok, "{}", run.client);
    assert!(run.client.contains("alert unknown ca"), "{}", run.client);
    assert!(
        run.server
            .contains("verify error:num=20:unable to get local issuer certificate"),
        "{}",
        run.server
    );
    assert!(
        run.server.contains("0 server accepts that finished"),
        "{}",
        run.server
    );
    assert!(!run.server.contains("hello from the car"), "{}", run.server);

    // The -2 leaf serves a -2 car over TLS 1.2 from the same store.
    let (status, info2) = c
        .get_leaf_certificate_info("V2G", "PEM", false)
        .await
        .unwrap();
    assert_eq!(status, "Accepted");
    assert_eq!(info2.key_algorithm.as_deref(), Some("P256"));
    let v2g_root = dir.join("v2g-root.pem");
    fs::write(&v2g_root, pki.v2g_root.pem()).unwrap();
    let text = tls_handshake(
        &[
            "-cert",
            &info2.certificate_single.unwrap(),
            "-key",
            &info2.key.unwrap(),
            "-cert_chain",
            &info2.certificate.unwrap(),
            "-tls1_2",
        ],
        &[],
        &v2g_root,
    );
    assert!(text.contains("Protocol version: TLSv1.2"), "{text}");
    assert!(text.contains("SECC-0001"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p521_secc_serves_tls13_to_known_oems_only() {
    tls_for_both_editions(CsrKey::P521).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed448_secc_serves_tls13_to_known_oems_only() {
    tls_for_both_editions(CsrKey::Ed448).await;
}

#[test]
fn garbage_collection_keeps_the_newest_leaf_of_each_secc_type() {
    let pki20 = Pki20::generate(CsrKey::P521).unwrap();
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    // An expired -20 leaf beside the valid -2 one; one leaf kept per type.
    let old = issue_with_key(
        &CertSpec::secc("SECC-20-OLD").valid(-30, -1),
        Some(&pki20.cpo_sub2),
        generate_key(CsrKey::P521).unwrap(),
    )
    .unwrap();
    let cso = store.path("client/cso");
    fs::write(cso.join("SECC_LEAF_OLD20.pem"), old.pem()).unwrap();
    place_key(&store, "SECC_LEAF_OLD20.key", &old.key);
    let sec = EvseSecurity::open(store.config_with("[gc]\nkeep_leaves = 1\n")).unwrap();
    assert_eq!(
        sec.get_leaf_certificate_info(L::V2G20, false).0,
        Info::NotFoundValid
    );
    sec.garbage_collect();
    assert!(
        cso.join("SECC_LEAF_OLD20.pem").exists(),
        "the only -20 leaf stays"
    );
    assert!(cso.join("SECC_LEAF_OLD20.key").exists());
    assert_eq!(
        sec.get_leaf_certificate_info(L::V2G20, false).0,
        Info::NotFoundValid
    );
    assert_eq!(
        sec.get_leaf_certificate_info(L::V2G, false).0,
        Info::Accepted
    );
}
