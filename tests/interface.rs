//! The whole D-Bus interface in process: evsec's interface served on one
//! end of a `UnixStream::pair()`, its client on the other, peer to peer,
//! with no dbus-daemon and no evsecd process. Every member is called and
//! its answer checked field by field against the store. The bus policy,
//! the life cycle and interop with busctl stay in the process tests.

mod common;

use std::sync::Arc;

use common::{invalid_args, wire_hash_of, TempStore};
use evsec::access::Roles;
use evsec::dbus::{serve_on, Client, Server, WireOcspEntry};
use evsec::testpki::{issue, sign_csr, CertSpec, Issued, Pki};
use evsec::x509::CertFacts;
use evsec::EvseSecurity;

/// The interface on `security`, and a client of it over a socket pair.
async fn connect(security: Arc<EvseSecurity>) -> (Client, Server) {
    let roles = Roles::resolve(&security.config().access).unwrap();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let served = zbus::connection::Builder::unix_stream(ours)
        .server(zbus::Guid::generate())
        .p2p();
    let client = zbus::connection::Builder::unix_stream(theirs).p2p().build();
    let (server, client) = tokio::join!(serve_on(served, security, roles), client);
    (Client::on(client.unwrap()).await.unwrap(), server.unwrap())
}

#[tokio::test]
async fn every_ca_member_maps_its_wire_values() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let security = Arc::new(store.open());
    let (c, _server) = connect(security.clone()).await;

    assert_eq!(c.version().await.unwrap(), env!("CARGO_PKG_VERSION"));
    let entries = c.certificate_entries().await.unwrap();
    assert!(entries >= 5, "{entries}");
    c.ping().await.unwrap();

    // VerifyCertificate and VerifyCertificateDetailed.
    let chain = pki.secc_chain_pem();
    assert_eq!(
        c.verify_certificate(&chain, &["V2G"]).await.unwrap(),
        "Valid"
    );
    assert_eq!(
        c.verify_certificate(&chain, &["V2G"]).await.unwrap(),
        "Valid"
    );
    assert_eq!(
        c.verify_certificate(&chain, &["MO"]).await.unwrap(),
        "IssuerNotFound"
    );
    let (result, detail) = c
        .verify_certificate_detailed(&chain, &["MO"])
        .await
        .unwrap();
    assert_eq!(result, "IssuerNotFound");
    assert!(!detail.reason.is_empty());
    assert!(invalid_args(c.verify_certificate(&chain, &["v2g"]).await).contains("v2g"));

    // GetInstalledCertificates: the V2G root, then its Sub-CAs.
    let (status, chains) = c
        .get_installed_certificates(&["V2GRootCertificate"])
        .await
        .unwrap();
    assert_eq!(status, "Accepted");
    assert_eq!(chains.len(), 1);
    assert_eq!(chains[0].certificate_type, "V2GRootCertificate");
    assert_eq!(
        chains[0].certificate_hash_data,
        wire_hash_of(&pki.v2g_root, &pki.v2g_root)
    );
    assert_eq!(
        chains[0].child_certificate_hash_data,
        vec![
            wire_hash_of(&pki.cpo_sub1, &pki.v2g_root),
            wire_hash_of(&pki.cpo_sub2, &pki.cpo_sub1)
        ]
    );

    // GetCertificateDetails: the same certificates, with names and files.
    let details = c
        .get_certificate_details(&["V2GRootCertificate"])
        .await
        .unwrap();
    assert_eq!(details.len(), 3);
    assert_eq!(details[0].subject, common_name(&pki.v2g_root));
    assert_eq!(details[0].issuer, common_name(&pki.v2g_root));
    assert_eq!(details[0].hash, wire_hash_of(&pki.v2g_root, &pki.v2g_root));
    assert_eq!(
        details[0].path,
        store.path("ca/v2g/V2G_ROOT_CA.pem").display().to_string()
    );
    assert_eq!(
        details[0].fingerprint,
        evsec::x509::hex(
            &CertFacts::new(pki.v2g_root.cert.clone())
                .unwrap()
                .fingerprint
        )
    );
    assert_eq!(
        details[0].not_after,
        CertFacts::new(pki.v2g_root.cert.clone()).unwrap().not_after
    );

    // IsCaCertificateInstalled, GetVerifyFile, GetVerifyLocation.
    assert!(c.is_ca_certificate_installed("V2G").await.unwrap());
    let v2g_bundle = store.path("ca/v2g/V2G_ROOT_CA.pem").display().to_string();
    assert_eq!(c.get_verify_file("V2G").await.unwrap(), v2g_bundle);
    assert_eq!(c.get_verify_location("V2G").await.unwrap(), v2g_bundle);

    // InstallCaCertificate and DeleteCertificate, with the signal.
    let mut updates = c.store_updates().await.unwrap();
    let other = issue(&CertSpec::ca("Other MO Root", None), None).unwrap();
    assert_eq!(
        c.install_ca_certificate(&other.pem(), "MO").await.unwrap(),
        "Accepted"
    );
    assert_eq!(
        updates.next().await.unwrap(),
        ("Installed".into(), "MO".into(), "".into())
    );
    assert_eq!(c.certificate_entries().await.unwrap(), entries + 1);
    assert_eq!(
        c.delete_certificate(&wire_hash_of(&other, &other))
            .await
            .unwrap(),
        "Accepted"
    );
    assert_eq!(
        updates.next().await.unwrap(),
        ("Deleted".into(), "MO".into(), "".into())
    );
    assert_eq!(
        c.delete_certificate(&wire_hash_of(&other, &other))
            .await
            .unwrap(),
        "NotFound"
    );
    let mut bad = wire_hash_of(&other, &other);
    bad.issuer_name_hash = "zz".repeat(32);
    assert!(invalid_args(c.delete_certificate(&bad).await).contains("hexadecimal"));

    // GetStoreUsage: files and bytes as the store counts them.
    let (files, max_files, bytes, max_bytes) = c.get_store_usage().await.unwrap();
    let (usage, limits) = security.store_usage();
    assert_eq!(files as usize, usage.files);
    assert_eq!(bytes, usage.bytes);
    assert_eq!(max_files as usize, limits.max_store_entries);
    assert_eq!(max_bytes, limits.max_store_bytes);
}

fn common_name(issued: &Issued) -> String {
    CertFacts::new(issued.cert.clone()).unwrap().common_name()
}

#[tokio::test]
async fn every_leaf_member_maps_its_wire_values() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let (c, _server) = connect(Arc::new(store.open())).await;

    // GetLeafCertificateInfo, with and without OCSP.
    let (status, info) = c
        .get_leaf_certificate_info("V2G", "PEM", false)
        .await
        .unwrap();
    assert_eq!(status, "Accepted");
    assert_eq!(info.password, None);
    assert_eq!(
        info.key.as_deref(),
        Some(store.path("client/cso/SECC_LEAF.key").to_str().unwrap())
    );
    assert_eq!(info.certificate_count, Some(3));
    assert!(info.ocsp.is_none());
    let (_, with_ocsp) = c
        .get_leaf_certificate_info("V2G", "PEM", true)
        .await
        .unwrap();
    let ocsp = with_ocsp.ocsp.clone().unwrap();
    assert_eq!(ocsp.len(), 3);
    assert_eq!(
        ocsp[0],
        WireOcspEntry {
            certificate_hash_data: wire_hash_of(&pki.secc_leaf, &pki.cpo_sub2),
            location: String::new(),
        }
    );
    assert!(invalid_args(c.get_leaf_certificate_info("V2G", "PDF", false).await).contains("PDF"));
    assert_eq!(info.key_algorithm.as_deref(), Some("P256"));
    assert_eq!(info.common_name.as_deref(), Some("SECC-0001"));

    // GetLeafCertificateInfoForId: the same leaf by its SECC ID, else
    // NotFound with an empty dictionary.
    let (status, by_id) = c
        .get_leaf_certificate_info_for_id("V2G", "SECC-0001", true)
        .await
        .unwrap();
    assert_eq!((status.as_str(), &by_id), ("Accepted", &with_ocsp));
    let (status, none) = c
        .get_leaf_certificate_info_for_id("V2G", "SECC-0002", false)
        .await
        .unwrap();
    assert_eq!((status.as_str(), none.keys.len()), ("NotFound", 0));
    assert_eq!(
        c.get_leaf_certificate_info_for_id("V2G20", "SECC-0001", false)
            .await
            .unwrap()
            .0,
        "NotFound"
    );
    assert!(invalid_args(
        c.get_leaf_certificate_info_for_id("v2g", "SECC-0001", false)
            .await
    )
    .contains("V2G20"));

    // GetAllValidCertificatesInfo carries the root's PEM.
    let (status, all) = c
        .get_all_valid_certificates_info("V2G", "PEM", false)
        .await
        .unwrap();
    assert_eq!(status, "Accepted");
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].certificate_root.as_deref(),
        Some(pki.v2g_root.pem().as_str())
    );

    // GetLeafExpiryDaysCount: whole days to the leaf's notAfter.
    let not_after = CertFacts::new(pki.secc_leaf.cert.clone())
        .unwrap()
        .not_after;
    let days = ((not_after - evsec::x509::now()) / 86_400) as i32;
    let answered = c.get_leaf_expiry_days_count("V2G").await.unwrap();
    assert!(
        (days - 1..=days).contains(&answered),
        "{answered} vs {days}"
    );

    // GetV2gOcspRequestData: the leaf and its Sub-CAs, with the responder.
    let requests = c.get_v2g_ocsp_request_data().await.unwrap();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests[0].certificate_hash_data,
        wire_hash_of(&pki.secc_leaf, &pki.cpo_sub2)
    );
    assert_eq!(requests[0].location, Pki::OCSP_URL);
    let contract = c
        .get_mo_ocsp_request_data(&pki.secc_chain_pem())
        .await
        .unwrap();
    assert_eq!(contract, requests);

    // UpdateOcspCache of nothing known.
    let mut nobody = wire_hash_of(&pki.secc_leaf, &pki.cpo_sub2);
    nobody.serial_number = "1".into();
    assert_eq!(
        c.update_ocsp_cache(&nobody, "MA==").await.unwrap(),
        "NotFound"
    );

    // GenerateCertificateSigningRequest, then UpdateLeafCertificate of the
    // signed CSR: the new leaf is the one leaf info names.
    let (status, csr) = c
        .generate_certificate_signing_request("V2G", "DE", "Example CPO", "SECC-P2P", false)
        .await
        .unwrap();
    assert_eq!(status, "Accepted");
    let req = openssl::x509::X509Req::from_pem(csr.as_bytes()).unwrap();
    let cn = req
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .unwrap()
        .data()
        .to_string()
        .unwrap();
    assert_eq!(cn, "SECC-P2P");
    let signed = sign_csr(
        &csr,
        &CertSpec::secc("SECC-P2P").valid(0, 400),
        &pki.cpo_sub2,
    )
    .unwrap();
    let chain = String::from_utf8(signed.to_pem().unwrap()).unwrap()
        + &pki.cpo_sub2.pem()
        + &pki.cpo_sub1.pem();
    assert_eq!(
        c.update_leaf_certificate(&chain, "V2G").await.unwrap(),
        "Accepted"
    );
    let (_, info) = c
        .get_leaf_certificate_info("V2G", "PEM", false)
        .await
        .unwrap();
    let single = std::fs::read_to_string(info.certificate_single.unwrap()).unwrap();
    assert_eq!(single, String::from_utf8(signed.to_pem().unwrap()).unwrap());

    // OpenLeafCredentials: the same leaf, its files open.
    let (status, files, opened) = c.open_leaf_credentials("V2G", "SECC-P2P").await.unwrap();
    assert_eq!(status, "Accepted");
    assert_eq!(files.len(), 2);
    assert_eq!(opened.key, info.key);
    let mut key = String::new();
    std::io::Read::read_to_string(&mut &files[0], &mut key).unwrap();
    assert_eq!(
        key,
        std::fs::read_to_string(info.key.as_deref().unwrap()).unwrap()
    );

    // VerifyFileSignature: a signature by the MF root over a file.
    let file = store.dir.path().join("firmware.bin");
    std::fs::write(&file, b"firmware image").unwrap();
    let signature = sign_sha256(&pki.mf_root, b"firmware image");
    assert!(c
        .verify_file_signature(file.to_str().unwrap(), &pki.mf_root.pem(), &signature)
        .await
        .unwrap());
    assert!(!c
        .verify_file_signature(file.to_str().unwrap(), &pki.v2g_root.pem(), &signature)
        .await
        .unwrap());
    let fd = std::fs::File::open(&file).unwrap();
    assert!(c
        .verify_file_signature_fd(&fd, &pki.mf_root.pem(), &signature)
        .await
        .unwrap());

    // GarbageCollect keeps every valid leaf.
    c.garbage_collect().await.unwrap();
    assert!(store.path("client/cso/SECC_LEAF.key").exists());
    assert!(std::path::Path::new(info.key.as_deref().unwrap()).exists());
}

/// Base64 of a signature by `signer`'s key over the SHA-256 of `data`.
fn sign_sha256(signer: &Issued, data: &[u8]) -> String {
    let mut s =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &signer.key).unwrap();
    s.update(data).unwrap();
    openssl::base64::encode_block(&s.sign_to_vec().unwrap())
}

#[tokio::test]
async fn every_ocpp_21_member_maps_its_wire_values() {
    use evsec::dbus::{WireStatusEntry, WireStatusRequest};

    let pki = Pki::generate().unwrap();
    let store = TempStore::with_pki(&pki);
    let (c, _server) = connect(Arc::new(store.open())).await;

    // ConfirmCertificateInUse: the station's own CSMS certificate, with
    // nothing else to remove; an unknown one; malformed hash data.
    let csms = wire_hash_of(&pki.csms_leaf, &pki.csms_root);
    assert_eq!(
        c.confirm_certificate_in_use(&csms).await.unwrap(),
        "Accepted"
    );
    let unknown = wire_hash_of(&pki.csms_root, &pki.mo_root);
    assert_eq!(
        c.confirm_certificate_in_use(&unknown).await.unwrap(),
        "NotFound"
    );
    let mut bad = csms.clone();
    bad.hash_algorithm = "MD5".into();
    assert!(invalid_args(c.confirm_certificate_in_use(&bad).await).contains("SHA256"));

    // GetCertificateStatusRequestData: the SECC leaf, whose Sub-CAs are
    // installed in the V2G bundle (trust anchors), with its OCSP URL.
    let secc = wire_hash_of(&pki.secc_leaf, &pki.cpo_sub2);
    assert_eq!(
        c.get_certificate_status_request_data(&pki.secc_chain_pem())
            .await
            .unwrap(),
        vec![WireStatusRequest {
            certificate_hash_data: secc.clone(),
            urls: vec![Pki::OCSP_URL.to_owned()],
        }]
    );
    assert!(
        invalid_args(c.get_certificate_status_request_data("junk").await)
            .contains("certificate_chain")
    );

    // UpdateCertificateStatus and GetCertificateStatusEntries.
    let next_update = evsec::x509::now() + 3600;
    assert_eq!(
        c.update_certificate_status(&secc, "Revoked", "OCSP", next_update)
            .await
            .unwrap(),
        "Accepted"
    );
    assert_eq!(
        c.update_certificate_status(&secc, "Bad", "OCSP", next_update)
            .await
            .unwrap(),
        "InvalidFormat"
    );
    let entries = c.get_certificate_status_entries().await.unwrap();
    assert_eq!(entries.len(), 1);
    let WireStatusEntry {
        certificate_hash_data,
        status,
        source,
        expires,
        ..
    } = &entries[0];
    assert_eq!(
        (
            certificate_hash_data,
            status.as_str(),
            source.as_str(),
            *expires
        ),
        (&secc, "Revoked", "OCSP", next_update)
    );
    assert_eq!(
        c.verify_certificate(&pki.secc_chain_pem(), &["V2G"])
            .await
            .unwrap(),
        "Revoked"
    );
    assert!(c
        .get_certificate_status_request_data(&pki.secc_chain_pem())
        .await
        .unwrap()
        .is_empty());
}
