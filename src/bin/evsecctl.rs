//! `evsecctl`: the operator's client of evsecd.

use std::process::ExitCode;

use evsec::dbus::{Bus, Client, ClientError};

const USAGE: &str = "usage: evsecctl [--bus system|session|ADDRESS] COMMAND
commands:
  status                          version and certificate count
  list [TYPE...]                  installed certificates as OCPP hash data
  install-ca TYPE FILE            install the CA certificate in FILE (V2G, MO, CSMS, MF)
  delete ALG NAME_HASH KEY_HASH SERIAL
                                  delete the certificate with this hash data
  verify FILE TYPE...             verify the chain in FILE (leaf first)";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut bus = Bus::System;
    if args.first().map(String::as_str) == Some("--bus") {
        if args.len() < 2 {
            return usage("--bus needs a value");
        }
        bus = match args[1].parse() {
            Ok(b) => b,
            Err(e) => return usage(&e),
        };
        args.drain(..2);
    }
    let Some((command, rest)) = args.split_first() else {
        return usage("no command");
    };
    let client = match Client::connect(&bus).await {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let result = match (command.as_str(), rest) {
        ("status", []) => status(&client).await,
        ("list", types) => list(&client, types).await,
        ("install-ca", [ca, file]) => match std::fs::read_to_string(file) {
            Ok(pem) => client
                .install_ca_certificate(&pem, ca)
                .await
                .map(|r| println!("{r}")),
            Err(e) => return fail(&format!("{file}: {e}")),
        },
        ("delete", [alg, name, key, serial]) => {
            let hash = (alg.clone(), name.clone(), key.clone(), serial.clone());
            client
                .delete_certificate(&hash)
                .await
                .map(|r| println!("{r}"))
        }
        ("verify", [file, types @ ..]) if !types.is_empty() => {
            match std::fs::read_to_string(file) {
                Ok(pem) => {
                    let types: Vec<&str> = types.iter().map(String::as_str).collect();
                    client
                        .verify_certificate(&pem, &types)
                        .await
                        .map(|r| println!("{r}"))
                }
                Err(e) => return fail(&format!("{file}: {e}")),
            }
        }
        _ => return usage(&format!("bad command line for `{command}`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn status(client: &Client) -> Result<(), ClientError> {
    println!("version: {}", client.version().await?);
    println!("certificates: {}", client.certificate_entries().await?);
    Ok(())
}

async fn list(client: &Client, types: &[String]) -> Result<(), ClientError> {
    let types: Vec<&str> = types.iter().map(String::as_str).collect();
    let (status, chains) = client.get_installed_certificates(&types).await?;
    println!("{status}");
    for (kind, (alg, name, key, serial), children) in chains {
        println!("{kind} {alg} {name} {key} {serial}");
        for (alg, name, key, serial) in children {
            println!("  {alg} {name} {key} {serial}");
        }
    }
    Ok(())
}

fn usage(message: &str) -> ExitCode {
    eprintln!("evsecctl: {message}\n{USAGE}");
    ExitCode::from(2)
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("evsecctl: {e}");
    ExitCode::FAILURE
}
