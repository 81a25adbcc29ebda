//! Properties: hash data accepts every spelling of the same CertID, and
//! for any sequence of installs and deletes the listing equals a model.

mod common;

use std::collections::BTreeSet;

use common::TempStore;
use evsec::security::Outcome;
use evsec::testpki::{issue, CertSpec, Issued};
use evsec::types::{
    CaCertificateType, CertificateType, DeleteCertificateResult, HashAlgorithm, HashData,
    InstallCertificateResult,
};
use evsec::x509::CertFacts;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hash_data_round_trips_case_and_leading_zeros(
        name in proptest::collection::vec(any::<u8>(), 32),
        key in proptest::collection::vec(any::<u8>(), 32),
        serial in proptest::collection::vec(any::<u8>(), 1..21),
        zeros in 0usize..6,
        upper in any::<bool>(),
    ) {
        let hex = evsec::x509::hex;
        let canonical = HashData::parse("SHA256", &hex(&name), &hex(&key), &hex(&serial)).unwrap();
        let case = |s: String| if upper { s.to_uppercase() } else { s };
        let spelled = HashData::parse(
            "SHA256",
            &case(hex(&name)),
            &case(hex(&key)),
            &case(format!("{}{}", "0".repeat(zeros), hex(&serial))),
        )
        .unwrap();
        prop_assert_eq!(&spelled, &canonical);
        prop_assert!(!canonical.serial_number.starts_with('0') || canonical.serial_number == "0");
        prop_assert_eq!(&canonical.issuer_name_hash, &hex(&name));
    }
}

#[derive(Debug, Clone)]
enum Op {
    Install(usize),
    Delete(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..6).prop_map(Op::Install),
        (0usize..6).prop_map(Op::Delete)
    ]
}

fn hash_of(root: &Issued) -> HashData {
    let f = CertFacts::new(root.cert.clone()).unwrap();
    f.hash_data(HashAlgorithm::SHA256, &f.key_bits)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn listing_equals_a_model_of_installs_and_deletes(
        ops in proptest::collection::vec(op(), 1..14),
        directory in any::<bool>(),
    ) {
        thread_local! {
            static ROOTS: Vec<Issued> = (0..6).map(|i| issue(&CertSpec::ca(&format!("Model Root {i}"), None), None).unwrap()).collect();
        }
        let roots: Vec<Issued> = ROOTS.with(|r| r.clone());
        let store = TempStore::empty();
        let config = if directory {
            std::fs::create_dir_all(store.path("ca/mo")).unwrap();
            store.config_with("mo_ca_bundle = \"ca/mo\"\n")
        } else {
            store.config()
        };
        let sec = evsec::EvseSecurity::open(config).unwrap();
        let mut model: BTreeSet<usize> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Install(i) => {
                    let Outcome { result: r, .. } = sec.install_ca_certificate(&roots[i].pem(), CaCertificateType::MO);
                    prop_assert_eq!(r, InstallCertificateResult::Accepted);
                    model.insert(i);
                }
                Op::Delete(i) => {
                    let Outcome { result: r, .. } = sec.delete_certificate(&hash_of(&roots[i]));
                    let want = if model.remove(&i) { DeleteCertificateResult::Accepted } else { DeleteCertificateResult::NotFound };
                    prop_assert_eq!(r, want);
                }
            }
            let (_, chains) = sec.get_installed_certificates(&[CertificateType::MORootCertificate]);
            let listed: BTreeSet<HashData> = chains.into_iter().map(|c| c.certificate_hash_data).collect();
            let expected: BTreeSet<HashData> = model.iter().map(|i| hash_of(&roots[*i])).collect();
            prop_assert_eq!(listed, expected);
            prop_assert_eq!(sec.certificate_entries() as usize, model.len());
        }
    }
}
