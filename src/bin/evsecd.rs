//! `evsecd`: the certificate daemon.

use std::process::ExitCode;

use evsec::daemon::{self, Args};

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("evsecd: {e}\n{}", daemon::USAGE);
            return ExitCode::from(2);
        }
    };
    evsec::logging::init();
    daemon::run(args)
}
