//! The applicable x509-limbo cases (see `tests/data/x509-limbo/README.md`),
//! run in process through the chain verification the daemon uses.

use std::collections::BTreeMap;

use evsec::types::CertificateValidationResult as V;
use evsec::verify::{self, LeafTime};
use evsec::x509::{self, CertFacts};
use openssl::x509::X509;
use serde::Deserialize;

#[derive(Deserialize)]
struct Suite {
    testcases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    id: String,
    trusted_certs: Vec<String>,
    untrusted_intermediates: Vec<String>,
    peer_certificate: String,
    validation_time: Option<String>,
    expected_result: String,
}

fn facts(pem: &str) -> Result<CertFacts, String> {
    let cert = X509::from_pem(pem.as_bytes()).map_err(|e| x509::first_error(&e))?;
    CertFacts::new(cert)
}

/// Seconds since the epoch of a UTC RFC 3339 time, as limbo writes it.
fn unix_time(rfc3339: &str) -> i64 {
    let digits: String = rfc3339
        .chars()
        .filter(char::is_ascii_digit)
        .take(14)
        .collect();
    let asn1 = openssl::asn1::Asn1Time::from_str(&format!("{digits}Z"))
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"));
    let epoch = openssl::asn1::Asn1Time::from_unix(0).unwrap();
    let d = epoch.diff(&asn1).unwrap();
    i64::from(d.days) * 86_400 + i64::from(d.secs)
}

/// The daemon's verdict on a case.
fn verdict(case: &Case) -> (V, String) {
    // The daemon answers `Unknown` to a chain it cannot read.
    let mut chain = Vec::new();
    for pem in std::iter::once(&case.peer_certificate).chain(&case.untrusted_intermediates) {
        match facts(pem) {
            Ok(c) => chain.push(c),
            Err(e) => return (V::Unknown, format!("unreadable: {e}")),
        }
    }
    let trusted: Vec<CertFacts> = case
        .trusted_certs
        .iter()
        .filter_map(|pem| facts(pem).ok())
        .collect();
    let anchors: Vec<&CertFacts> = trusted.iter().collect();
    let at = case
        .validation_time
        .as_deref()
        .map_or_else(x509::now, unix_time);
    let v = verify::verify_chain(&anchors, &chain, at, LeafTime::ValidNow);
    (
        v.result,
        format!("{} at depth {:?} ({:?})", v.reason, v.depth, v.subject),
    )
}

/// The cases evsec still decides against limbo, each with why: none. A
/// case that starts to disagree must be named here with its reason.
const KNOWN_DISAGREEMENTS: &[(&str, &str)] = &[];

#[test]
fn applicable_limbo_cases() {
    let suite: Suite = serde_json::from_str(include_str!("data/x509-limbo/cases.json")).unwrap();
    let mut counts = BTreeMap::<(&str, &str), usize>::new();
    let mut disagreements = Vec::new();
    for case in &suite.testcases {
        let family = if case.id.starts_with("online::") {
            "online"
        } else {
            "applicable"
        };
        let (got, why) = verdict(case);
        let accepted = got == V::Valid;
        let outcome = match (accepted, case.expected_result.as_str()) {
            (true, "SUCCESS") | (false, "FAILURE") => "agree",
            (true, _) => "false accept",
            (false, _) => "false reject",
        };
        *counts.entry((family, outcome)).or_default() += 1;
        if outcome != "agree" {
            disagreements.push((case.id.as_str(), format!("{outcome}, {got:?}: {why}")));
        }
    }
    for (id, what) in &disagreements {
        let known = KNOWN_DISAGREEMENTS
            .iter()
            .find(|(k, _)| k == id)
            .map_or("NOT KNOWN", |(_, reason)| reason);
        println!("{id}: {what}\n  why: {known}");
    }
    let ids: Vec<&str> = disagreements.iter().map(|(id, _)| *id).collect();
    let known: Vec<&str> = KNOWN_DISAGREEMENTS.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, known);
    let count = |family, outcome| counts.get(&(family, outcome)).copied().unwrap_or(0);
    assert_eq!(count("applicable", "agree"), 120);
    assert_eq!(count("applicable", "false accept"), 0);
    assert_eq!(count("applicable", "false reject"), 0);
    assert_eq!(count("online", "agree"), 14);
    assert_eq!(count("online", "false reject"), 0);
}
