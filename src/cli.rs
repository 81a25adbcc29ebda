//! `evsecctl`, the operator's client: parses the command line, calls the
//! daemon over D-Bus and prints tables, or JSON with `--json`.
//!
//! Exit codes: 0 done; 1 the daemon refused (a status other than
//! `Accepted`/`Valid`, or a signature that does not verify); 2 a bad
//! command line or unreadable file; 3 the bus or the daemon failed
//! (unreachable, `AccessDenied`, `InvalidArgs`, …).

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::dbus::{Bus, Client, ClientError, LeafInfo, WireHashData, WireOcspEntry};
use crate::store::format_utc;

/// The usage text.
pub const USAGE: &str = "\
usage: evsecctl [--bus system|session|ADDRESS] [--json] COMMAND [ARG...]

commands:
  status                         version, certificates per store, leaf expiry, store usage,
                                 certificate status entries (OCPP 2.1 M07)
  list [TYPE...]                 installed certificates (V2GRootCertificate, MORootCertificate,
                                 CSMSRootCertificate, V2GCertificateChain, MFRootCertificate,
                                 OEMRootCertificate), with their key algorithm
  ca TYPE                        whether a valid root is installed, and the verify file and location
  expiry TYPE                    whole days until the newest valid leaf expires (CSMS, V2G, V2G20)
  install-ca TYPE FILE           install the CA certificate in FILE (V2G, MO, CSMS, MF, OEM)
  install-leaf TYPE FILE         install the leaf chain in FILE, leaf first (CSMS, V2G, V2G20)
  delete HASH...                 delete by hash data ALG:ISSUER_NAME_HASH:ISSUER_KEY_HASH:SERIAL
  delete --file CERT             delete the installed certificate that CERT holds
  verify TYPE... FILE            verify the chain in FILE, leaf first, against TYPEs' roots
  verify --explain TYPE... FILE  the same, with the reason and the certificate that failed
  csr TYPE --country C --org O --cn CN [--tpm]
                                 new key and CSR (CSMS, V2G, V2G20); the CSR goes to stdout
  info TYPE [--all|--id SECC_ID] [--ocsp]
                                 paths of the newest valid leaf (all: one per root; id: the
                                 leaf whose commonName is SECC_ID, one per EVSE)
  ocsp [--mo FILE]               OCSP request data of the SECC chain, or of a contract chain
  ocsp-update HASH FILE          cache the DER OCSP response in FILE for HASH
  verify-file FILE CERT SIG      check FILE's signature (SIG: base64 file) with CERT's key
  gc                             garbage-collect now
  watch                          print CertificateStoreUpdated and LeafCertificateExpiring
                                 signals as they arrive

exit codes: 0 done, 1 refused by the daemon, 2 usage, 3 bus or daemon error";

/// How a command ended.
#[derive(Debug)]
pub enum Failure {
    /// The daemon answered with a refusal; the output was printed.
    Refused,
    /// The command line or a file argument is wrong.
    Usage(String),
    /// The bus or the daemon failed.
    Bus(ClientError),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Bus(e)
    }
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused => 1,
            Failure::Usage(_) => 2,
            Failure::Bus(_) => 3,
        }
    }
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `--bus`.
    pub bus: Bus,
    /// `--json`.
    pub json: bool,
    /// The command and its arguments.
    pub command: Vec<String>,
}

impl Invocation {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Invocation, Failure> {
        let mut bus = Bus::System;
        let mut json = false;
        let mut command = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--json" if command.is_empty() => json = true,
                "--bus" if command.is_empty() => {
                    let value = args
                        .next()
                        .ok_or_else(|| Failure::Usage("--bus needs a value".into()))?;
                    bus = value.parse().map_err(Failure::Usage)?;
                }
                "-h" | "--help" if command.is_empty() => return Err(Failure::Usage(String::new())),
                _ => command.push(arg),
            }
        }
        if command.is_empty() {
            return Err(Failure::Usage("no command".into()));
        }
        Ok(Invocation { bus, json, command })
    }
}

/// What a command prints: text for people, JSON for scripts.
struct Output {
    text: String,
    json: Value,
    refused: bool,
}

impl Output {
    fn status(status: &str, accepted: &[&str]) -> Output {
        Output {
            text: format!("{status}\n"),
            json: json!({ "result": status }),
            refused: !accepted.contains(&status),
        }
    }
}

fn read(path: &str) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("{path}: {e}")))
}

fn parse_hash(text: &str) -> Result<WireHashData, Failure> {
    match text.split(':').collect::<Vec<_>>()[..] {
        [alg, name, key, serial] => Ok(WireHashData {
            hash_algorithm: alg.into(),
            issuer_name_hash: name.into(),
            issuer_key_hash: key.into(),
            serial_number: serial.into(),
        }),
        _ => Err(Failure::Usage(format!(
            "`{text}`: hash data is ALG:ISSUER_NAME_HASH:ISSUER_KEY_HASH:SERIAL"
        ))),
    }
}

fn hash_text(h: &WireHashData) -> String {
    format!(
        "{}:{}:{}:{}",
        h.hash_algorithm, h.issuer_name_hash, h.issuer_key_hash, h.serial_number
    )
}

fn hash_json(h: &WireHashData) -> Value {
    json!({
        "hash_algorithm": h.hash_algorithm,
        "issuer_name_hash": h.issuer_name_hash,
        "issuer_key_hash": h.issuer_key_hash,
        "serial_number": h.serial_number,
    })
}

/// Text columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len().saturating_sub(1);
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ");
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// Runs a parsed command line and prints its output.
pub async fn run(invocation: Invocation) -> Result<(), Failure> {
    let client = Client::connect(&invocation.bus).await?;
    let args: Vec<&str> = invocation.command.iter().map(String::as_str).collect();
    if args == ["watch"] {
        return watch(&client, invocation.json).await;
    }
    let output = command(&client, &args).await?;
    if invocation.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&output.json).unwrap_or_default()
        );
    } else {
        print!("{}", output.text);
    }
    if output.refused {
        Err(Failure::Refused)
    } else {
        Ok(())
    }
}

async fn command(c: &Client, args: &[&str]) -> Result<Output, Failure> {
    match args {
        ["status"] => status(c).await,
        ["list", types @ ..] => list(c, types).await,
        ["ca", ca] => {
            let installed = c.is_ca_certificate_installed(ca).await?;
            let file = c.get_verify_file(ca).await?;
            let location = c.get_verify_location(ca).await?;
            Ok(Output {
                text: format!(
                    "installed: {}\nverify file: {file}\nverify location: {location}\n",
                    if installed { "yes" } else { "no" }
                ),
                json: json!({ "installed": installed, "verify_file": file, "verify_location": location }),
                refused: !installed,
            })
        }
        ["expiry", leaf] => {
            let days = c.get_leaf_expiry_days_count(leaf).await?;
            Ok(Output {
                text: format!("{days}\n"),
                json: json!({ "days": days }),
                refused: days == 0,
            })
        }
        ["install-ca", ca, file] => {
            let r = c.install_ca_certificate(&read(file)?, ca).await?;
            Ok(Output::status(&r, &["Accepted"]))
        }
        ["install-leaf", leaf, file] => {
            let r = c.update_leaf_certificate(&read(file)?, leaf).await?;
            Ok(Output::status(&r, &["Accepted"]))
        }
        ["delete", "--file", file] => {
            let fingerprint = fingerprint_of(&read(file)?)?;
            let details = c.get_certificate_details(&[]).await?;
            let Some(found) = details.iter().find(|d| d.fingerprint == fingerprint) else {
                return Ok(Output::status("NotFound", &["Accepted"]));
            };
            let r = c.delete_certificate(&found.hash).await?;
            Ok(Output::status(&r, &["Accepted"]))
        }
        ["delete", hashes @ ..] if !hashes.is_empty() => {
            let mut results = Vec::new();
            for h in hashes {
                results.push((h.to_string(), c.delete_certificate(&parse_hash(h)?).await?));
            }
            Ok(Output {
                text: results.iter().map(|(h, r)| format!("{r}  {h}\n")).collect(),
                refused: results.iter().any(|(_, r)| r != "Accepted"),
                json: json!(results
                    .iter()
                    .map(|(h, r)| json!({ "hash": h, "result": r }))
                    .collect::<Vec<_>>()),
            })
        }
        ["verify", "--explain", rest @ .., file] if !rest.is_empty() => {
            let (r, detail) = c.verify_certificate_detailed(&read(file)?, rest).await?;
            let mut text = format!("{r}\n");
            if !detail.reason.is_empty() {
                text.push_str(&format!("reason: {}\n", detail.reason));
            }
            if let (Some(depth), Some(subject)) = (detail.depth, &detail.subject) {
                text.push_str(&format!("at depth {depth}: {subject}\n"));
            }
            if let Some(code) = detail.openssl_error {
                text.push_str(&format!("OpenSSL verify error {code}\n"));
            }
            Ok(Output {
                text,
                json: json!({
                    "result": r,
                    "reason": detail.reason,
                    "depth": detail.depth,
                    "subject": detail.subject,
                    "openssl_error": detail.openssl_error,
                }),
                refused: r != "Valid",
            })
        }
        ["verify", rest @ .., file] if !rest.is_empty() => {
            let r = c.verify_certificate(&read(file)?, rest).await?;
            Ok(Output::status(&r, &["Valid"]))
        }
        ["csr", leaf, options @ ..] => {
            let mut fields = [("--country", None), ("--org", None), ("--cn", None)];
            let mut tpm = false;
            let mut it = options.iter();
            while let Some(opt) = it.next() {
                if *opt == "--tpm" {
                    tpm = true;
                    continue;
                }
                let slot = fields
                    .iter_mut()
                    .find(|(name, _)| name == opt)
                    .ok_or_else(|| Failure::Usage(format!("csr: unknown option `{opt}`")))?;
                slot.1 = Some(
                    *it.next()
                        .ok_or_else(|| Failure::Usage(format!("{opt} needs a value")))?,
                );
            }
            let [Some(country), Some(org), Some(cn)] = fields.map(|(_, v)| v) else {
                return Err(Failure::Usage("csr needs --country, --org and --cn".into()));
            };
            let (status, csr) = c
                .generate_certificate_signing_request(leaf, country, org, cn, tpm)
                .await?;
            Ok(Output {
                text: if status == "Accepted" {
                    csr.clone()
                } else {
                    format!("{status}\n")
                },
                json: json!({ "result": status, "csr": csr }),
                refused: status != "Accepted",
            })
        }
        ["info", leaf, options @ ..] => {
            let (mut all, mut ocsp, mut id) = (false, false, None);
            let mut options = options.iter();
            while let Some(option) = options.next() {
                match *option {
                    "--all" => all = true,
                    "--ocsp" => ocsp = true,
                    "--id" => {
                        id =
                            Some(*options.next().ok_or_else(|| {
                                Failure::Usage("info: --id needs a SECC ID".into())
                            })?)
                    }
                    bad => return Err(Failure::Usage(format!("info: unknown option `{bad}`"))),
                }
            }
            if all && id.is_some() {
                return Err(Failure::Usage(
                    "info: --all and --id exclude each other".into(),
                ));
            }
            let (status, infos) = if all {
                c.get_all_valid_certificates_info(leaf, "PEM", ocsp).await?
            } else {
                let (status, info) = match id {
                    Some(id) => c.get_leaf_certificate_info_for_id(leaf, id, ocsp).await?,
                    None => c.get_leaf_certificate_info(leaf, "PEM", ocsp).await?,
                };
                (
                    status,
                    if info.keys.is_empty() {
                        vec![]
                    } else {
                        vec![info]
                    },
                )
            };
            Ok(Output {
                text: std::iter::once(format!("{status}\n"))
                    .chain(infos.iter().map(info_text))
                    .collect(),
                json: json!({ "status": status, "info": infos.iter().map(info_json).collect::<Vec<_>>() }),
                refused: status != "Accepted",
            })
        }
        ["ocsp"] => Ok(ocsp_output(c.get_v2g_ocsp_request_data().await?)),
        ["ocsp", "--mo", file] => Ok(ocsp_output(c.get_mo_ocsp_request_data(&read(file)?).await?)),
        ["ocsp-update", hash, file] => {
            let der = std::fs::read(file).map_err(|e| Failure::Usage(format!("{file}: {e}")))?;
            let r = c
                .update_ocsp_cache(&parse_hash(hash)?, &openssl::base64::encode_block(&der))
                .await?;
            Ok(Output::status(&r, &["Accepted"]))
        }
        ["verify-file", file, cert, sig] => {
            // Opened here, with the operator's rights, and handed over as a
            // descriptor: the daemon's sandbox cannot see the caller's /tmp
            // or home.
            let opened =
                std::fs::File::open(file).map_err(|e| Failure::Usage(format!("{file}: {e}")))?;
            let ok = c
                .verify_file_signature_fd(&opened, &read(cert)?, read(sig)?.trim())
                .await?;
            let verdict = if ok { "valid" } else { "invalid" };
            Ok(Output {
                text: format!("{verdict}\n"),
                json: json!({ "valid": ok }),
                refused: !ok,
            })
        }
        ["gc"] => {
            c.garbage_collect().await?;
            Ok(Output {
                text: "done\n".into(),
                json: json!({ "result": "done" }),
                refused: false,
            })
        }
        _ => Err(Failure::Usage(format!(
            "bad command line: {}",
            args.join(" ")
        ))),
    }
}

fn fingerprint_of(pem: &str) -> Result<String, Failure> {
    let cert = openssl::x509::X509::from_pem(pem.as_bytes())
        .map_err(|_| Failure::Usage("--file: not a PEM certificate".into()))?;
    let der = cert
        .to_der()
        .map_err(|_| Failure::Usage("--file: not a certificate".into()))?;
    Ok(crate::x509::hex(&crate::x509::sha256(&der)))
}

async fn status(c: &Client) -> Result<Output, Failure> {
    let version = c.version().await?;
    let entries = c.certificate_entries().await?;
    let details = c.get_certificate_details(&[]).await?;
    let (files, max_files, bytes, max_bytes) = c.get_store_usage().await?;
    let mut per_type: Vec<(String, usize)> = Vec::new();
    for d in &details {
        match per_type.iter_mut().find(|(t, _)| *t == d.certificate_type) {
            Some((_, n)) => *n += 1,
            None => per_type.push((d.certificate_type.clone(), 1)),
        }
    }
    let csms = c.get_leaf_expiry_days_count("CSMS").await?;
    let v2g = c.get_leaf_expiry_days_count("V2G").await?;
    let v2g20 = c.get_leaf_expiry_days_count("V2G20").await?;
    let mut text = format!("version: {version}\ncertificates: {entries}\n");
    for (t, n) in &per_type {
        let _ = writeln!(text, "  {t}: {n}");
    }
    let _ = writeln!(
        text,
        "leaf expiry: CSMS {csms} days, V2G {v2g} days, V2G20 {v2g20} days"
    );
    let _ = writeln!(
        text,
        "store: {files} of {max_files} files, {bytes} of {max_bytes} bytes"
    );
    let statuses = c.get_certificate_status_entries().await?;
    let _ = writeln!(text, "certificate status entries: {}", statuses.len());
    for e in &statuses {
        let _ = writeln!(
            text,
            "  {} {} ({}) until {}",
            hash_text(&e.certificate_hash_data),
            e.status,
            e.source,
            format_utc(e.expires)
        );
    }
    Ok(Output {
        text,
        json: json!({
            "version": version,
            "certificates": entries,
            "per_type": per_type.iter().map(|(t, n)| (t.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "leaf_expiry_days": { "CSMS": csms, "V2G": v2g, "V2G20": v2g20 },
            "store": { "files": files, "max_files": max_files, "bytes": bytes, "max_bytes": max_bytes },
            "certificate_status": statuses.iter().map(|e| json!({
                "hash_data": hash_json(&e.certificate_hash_data), "status": e.status, "source": e.source,
                "received": e.received, "expires": e.expires,
            })).collect::<Vec<_>>(),
        }),
        refused: false,
    })
}

async fn list(c: &Client, types: &[&str]) -> Result<Output, Failure> {
    let details = c.get_certificate_details(types).await?;
    let now = crate::x509::now();
    let state = |nb: i64, na: i64| {
        if na < now {
            "expired"
        } else if nb > now {
            "not yet valid"
        } else {
            "valid"
        }
    };
    let rows: Vec<Vec<String>> = details
        .iter()
        .map(|d| {
            vec![
                d.certificate_type.clone(),
                d.subject.clone(),
                d.issuer.clone(),
                d.hash.serial_number.clone(),
                d.key_algorithm.clone(),
                format_utc(d.not_after),
                state(d.not_before, d.not_after).to_owned(),
                hash_text(&d.hash),
            ]
        })
        .collect();
    let json = details
        .iter()
        .map(|d| {
            json!({
                "type": d.certificate_type, "subject": d.subject, "issuer": d.issuer,
                "not_before": d.not_before, "not_after": d.not_after,
                "state": state(d.not_before, d.not_after),
                "hash_data": hash_json(&d.hash), "file": d.path, "sha256": d.fingerprint,
                "key_algorithm": d.key_algorithm,
            })
        })
        .collect::<Vec<_>>();
    Ok(Output {
        text: table(
            &[
                "TYPE",
                "SUBJECT",
                "ISSUER",
                "SERIAL",
                "KEY",
                "NOT AFTER (UTC)",
                "STATE",
                "HASH DATA",
            ],
            &rows,
        ),
        json: json!(json),
        refused: false,
    })
}

fn info_text(info: &LeafInfo) -> String {
    let mut text = String::new();
    let mut field = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            let _ = writeln!(text, "  {name}: {v}");
        }
    };
    field("common_name", info.common_name.clone());
    field("key_algorithm", info.key_algorithm.clone());
    field("certificate", info.certificate.clone());
    field("certificate_single", info.certificate_single.clone());
    field("key", info.key.clone());
    field(
        "certificate_count",
        info.certificate_count.map(|n| n.to_string()),
    );
    field(
        "password",
        info.password.as_ref().map(|_| "(set)".to_owned()),
    );
    field(
        "certificate_root",
        info.certificate_root.as_ref().map(|_| "(PEM)".to_owned()),
    );
    for entry in info.ocsp.iter().flatten() {
        let (hash, path) = (&entry.certificate_hash_data, &entry.location);
        let shown = if path.is_empty() {
            "(none cached)"
        } else {
            path
        };
        let _ = writeln!(text, "  ocsp {}: {shown}", hash.serial_number);
    }
    text.push('\n');
    text
}

fn info_json(info: &LeafInfo) -> Value {
    json!({
        "common_name": info.common_name, "key_algorithm": info.key_algorithm,
        "key": info.key, "certificate": info.certificate, "certificate_single": info.certificate_single,
        "certificate_count": info.certificate_count, "certificate_root": info.certificate_root,
        "password_set": info.password.is_some(),
        "ocsp": info.ocsp.as_ref().map(|o| o.iter().map(|e| json!({ "hash_data": hash_json(&e.certificate_hash_data), "path": e.location })).collect::<Vec<_>>()),
    })
}

fn ocsp_output(entries: Vec<WireOcspEntry>) -> Output {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| vec![e.location.clone(), hash_text(&e.certificate_hash_data)])
        .collect();
    Output {
        text: table(&["RESPONDER", "HASH DATA"], &rows),
        json: json!(entries
            .iter()
            .map(|e| json!({ "hash_data": hash_json(&e.certificate_hash_data), "responder_url": e.location }))
            .collect::<Vec<_>>()),
        refused: false,
    }
}

async fn watch(c: &Client, as_json: bool) -> Result<(), Failure> {
    let mut updates = c.store_updates().await?;
    let mut warnings = c.expiry_warnings().await?;
    loop {
        let line = tokio::select! {
            update = updates.next() => {
                let Some((operation, ca, leaf)) = update else { break };
                if as_json {
                    json!({ "signal": "CertificateStoreUpdated", "operation": operation, "ca_certificate_type": ca, "leaf_certificate_type": leaf }).to_string()
                } else {
                    format!("{operation} ca={ca} leaf={leaf}")
                }
            }
            warning = warnings.next() => {
                let Some((leaf, days)) = warning else { break };
                if as_json {
                    json!({ "signal": "LeafCertificateExpiring", "leaf_certificate_type": leaf, "days": days }).to_string()
                } else {
                    format!("Expiring leaf={leaf} days={days}")
                }
            }
        };
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, Failure> {
        Invocation::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn global_options_come_before_the_command() {
        let i = parse(&["--bus", "session", "--json", "list", "MORootCertificate"]).unwrap();
        assert_eq!(i.bus, Bus::Session);
        assert!(i.json);
        assert_eq!(i.command, ["list", "MORootCertificate"]);
        assert_eq!(parse(&[]).unwrap_err().exit_code(), 2);
        assert_eq!(
            parse(&["--bus", "bogus", "status"])
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    #[test]
    fn hash_data_arguments() {
        assert_eq!(
            parse_hash("SHA256:aa:bb:1f").unwrap(),
            WireHashData {
                hash_algorithm: "SHA256".into(),
                issuer_name_hash: "aa".into(),
                issuer_key_hash: "bb".into(),
                serial_number: "1f".into(),
            }
        );
        assert!(matches!(parse_hash("SHA256:aa:bb"), Err(Failure::Usage(_))));
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
