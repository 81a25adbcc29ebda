//! `evsecctl`: the operator's client of evsecd. See `evsec::cli`.

use std::process::ExitCode;

use evsec::cli::{self, Failure, Invocation};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let result = match Invocation::parse(std::env::args().skip(1)) {
        Ok(invocation) => cli::run(invocation).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            match &failure {
                Failure::Refused => {}
                Failure::Usage(message) if message.is_empty() => println!("{}", cli::USAGE),
                Failure::Usage(message) => eprintln!("evsecctl: {message}\n\n{}", cli::USAGE),
                Failure::Bus(e) => eprintln!("evsecctl: {e}"),
            }
            ExitCode::from(failure.exit_code())
        }
    }
}
