//! `LeafCertificateExpiring` over a real bus (contract §11.2): sent by the
//! daemon's maintenance task when the selected leaf is inside the
//! `[renewal] days_before` window, and with 0 when the last valid leaf of
//! the type expires; never for a type that has no leaf.

mod common;

use std::time::{Duration, Instant};

use common::{client, Daemon, PrivateBus, TempStore};
use evsec::dbus::ExpiryWarnings;
use evsec::testpki::{sign_csr, CertSpec, Pki};

async fn next_warning(warnings: &mut ExpiryWarnings, within: Duration) -> Option<(String, i32)> {
    tokio::time::timeout(within, warnings.next())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_leaves_are_signalled_without_polling() {
    let pki = Pki::generate().unwrap();
    let store = TempStore::without_secc_leaf(&pki);
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&store.write_config(""), &bus);
    let c = client(&bus).await;
    let mut warnings = c.expiry_warnings().await.unwrap();

    // The CSMS leaf has a year left: outside the window, nothing is sent.
    // A renewed leaf with ten days left is selected: it is inside.
    let (status, csr) = c
        .generate_certificate_signing_request("CSMS", "DE", "Example CPO", "CS-0001", false)
        .await
        .unwrap();
    assert_eq!(status, "Accepted");
    let short = sign_csr(
        &csr,
        &CertSpec::leaf("CS-0001").valid_for_seconds(-10, 10 * 86_400 + 3_600),
        &pki.csms_root,
    )
    .unwrap();
    let short = String::from_utf8(short.to_pem().unwrap()).unwrap();
    assert_eq!(
        c.update_leaf_certificate(&short, "CSMS").await.unwrap(),
        "Accepted"
    );
    assert_eq!(
        next_warning(&mut warnings, Duration::from_secs(10)).await,
        Some(("CSMS".into(), 10))
    );

    // The only V2G leaf, valid for seconds: 1 (its last day) when it is
    // installed, and 0 once it has expired.
    let (status, csr) = c
        .generate_certificate_signing_request("V2G", "DE", "Example CPO", "SECC-0009", false)
        .await
        .unwrap();
    assert_eq!(status, "Accepted");
    let brief = sign_csr(
        &csr,
        &CertSpec::leaf("SECC-0009").valid_for_seconds(-10, 4),
        &pki.cpo_sub2,
    )
    .unwrap();
    let chain = String::from_utf8(brief.to_pem().unwrap()).unwrap()
        + &pki.cpo_sub2.pem()
        + &pki.cpo_sub1.pem();
    let installed = Instant::now();
    assert_eq!(
        c.update_leaf_certificate(&chain, "V2G").await.unwrap(),
        "Accepted"
    );
    assert_eq!(
        next_warning(&mut warnings, Duration::from_secs(10)).await,
        Some(("V2G".into(), 1))
    );
    assert_eq!(
        next_warning(&mut warnings, Duration::from_secs(15)).await,
        Some(("V2G".into(), 0))
    );
    assert!(
        installed.elapsed() >= Duration::from_secs(3),
        "the second is the expiry"
    );
    assert_eq!(c.get_leaf_expiry_days_count("V2G").await.unwrap(), 0);

    // Nothing more: the CSMS leaf was signalled today, and V2G20 never had
    // a leaf.
    assert_eq!(
        next_warning(&mut warnings, Duration::from_secs(3)).await,
        None
    );
}
