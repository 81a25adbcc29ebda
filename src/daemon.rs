//! The daemon's life: command line, logging, start-up, readiness and a
//! clean exit on SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::access::Roles;
use crate::config::Config;
use crate::dbus::{self, Bus};
use crate::security::EvseSecurity;
use crate::tpm;

/// The command line of `evsecd` (contract §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// `--config PATH`.
    pub config: PathBuf,
    /// `--bus system|session|ADDRESS`, default system.
    pub bus: Bus,
}

/// How long blocking work may still run once the daemon stops.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The usage line.
pub const USAGE: &str = "usage: evsecd --config PATH [--bus system|session|ADDRESS]";

impl Args {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let mut config = None;
        let mut bus = Bus::System;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or(format!("{name} needs a value"))
            };
            match flag.as_str() {
                "--config" => config = Some(PathBuf::from(value("--config")?)),
                "--bus" => bus = value("--bus")?.parse()?,
                "--help" | "-h" => return Err(USAGE.to_owned()),
                _ => return Err(format!("unknown argument `{arg}`")),
            }
        }
        let config = config.ok_or("--config PATH is required")?;
        Ok(Args { config, bus })
    }
}

/// Runs the daemon until SIGTERM or SIGINT, on a single-threaded runtime
/// (the work itself runs on its blocking pool).
pub fn run(args: Args) -> ExitCode {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    warn_if_password_exposed(&args.config, &config);
    // The TPM provider reads its TCTI from the environment only, and the
    // environment may be changed only while no other thread can read it.
    if let Some(tcti) = config.tpm.tcti.as_deref().filter(|_| config.tpm.enabled) {
        std::env::set_var(tpm::TCTI_VARIABLE, tcti);
    }
    keep_large_buffers_out_of_the_heap();
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => {
            let code = runtime.block_on(start(config, args.bus));
            // Work still running on the blocking pool (a file being hashed)
            // must not hold the exit: systemd waits for it.
            runtime.shutdown_timeout(SHUTDOWN_GRACE);
            code
        }
        Err(e) => fail(&format!("cannot start the runtime: {e}")),
    }
}

/// Largest allocation served from the heap; larger ones are mapped.
const MMAP_THRESHOLD: libc::c_int = 1 << 20;

/// A message of many MiB is read into one buffer. glibc raises its mmap
/// threshold each time such a mapped buffer is freed, so later ones come
/// from the heap, and the heap does not shrink: after a flood of 16 MiB
/// calls the daemon kept 5x its idle RSS. A fixed threshold maps every
/// large buffer, and unmaps it when the call ends.
fn keep_large_buffers_out_of_the_heap() {
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // other thread exists.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) } != 1 {
        tracing::warn!("cannot fix the allocator's mmap threshold");
    }
}

async fn start(config: Config, bus: Bus) -> ExitCode {
    let roles = match Roles::resolve(&config.access) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    let open = move || {
        log_tpm_status(&config.tpm);
        EvseSecurity::open(config)
    };
    let security = match tokio::task::spawn_blocking(open).await {
        Ok(Ok(s)) => Arc::new(s),
        Ok(Err(e)) => return fail(&e.to_string()),
        Err(e) => return fail(&format!("start-up failed: {e}")),
    };
    serve_until_signal(security, roles, &bus).await
}

/// The config holds the key password: anyone who can read the file can
/// open the keys, so say so when others can.
fn warn_if_password_exposed(path: &std::path::Path, config: &Config) {
    use std::os::unix::fs::PermissionsExt;
    if config.private_key_password.is_none() {
        return;
    }
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o004 != 0 {
            tracing::warn!(
                "{} holds private_key_password and is readable by every user (mode {mode:04o}): make it 0640 root:evsec",
                path.display()
            );
        }
    }
}

/// Loads and self-tests the TPM provider once, so that the log says at
/// start whether TPM keys will work. The daemon starts either way: each TPM
/// request loads the provider again and answers `KeyGenError` while it
/// cannot.
fn log_tpm_status(tpm: &crate::config::Tpm) {
    if !tpm.enabled {
        return;
    }
    let tcti = std::env::var(tpm::TCTI_VARIABLE).unwrap_or_else(|_| "the TSS default".into());
    match tpm::probe(tpm) {
        Ok(loaded) => {
            tracing::info!(provider = %tpm.provider, %loaded, propquery = %tpm.propquery(), %tcti, "TPM provider loaded and self-tested")
        }
        Err(e) => {
            tracing::error!(provider = %tpm.provider, %tcti, error = %e, "TPM keys unavailable")
        }
    }
}

/// Serves an open store on `bus` until SIGTERM or SIGINT.
pub async fn serve_until_signal(security: Arc<EvseSecurity>, roles: Roles, bus: &Bus) -> ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => return fail("cannot install signal handlers"),
    };
    let server = match dbus::serve(security.clone(), roles, bus).await {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    tokio::spawn(crate::maintenance::run(security, server.announcer()));
    tracing::info!(name = dbus::BUS_NAME, bus = %bus, "ready");
    notify_ready();
    let code = tokio::select! {
        _ = term.recv() => {
            tracing::info!("SIGTERM: stopping");
            ExitCode::SUCCESS
        }
        _ = int.recv() => {
            tracing::info!("SIGINT: stopping");
            ExitCode::SUCCESS
        }
        // A daemon that nobody can reach must not hold the store lock:
        // exit with a failure, so that systemd restarts it.
        _ = server.closed() => {
            tracing::error!("the {bus} bus connection closed: exiting");
            fail(&format!("the {bus} bus connection closed"))
        }
    };
    drop(server);
    code
}

fn fail(message: &str) -> ExitCode {
    eprintln!("evsecd: {message}");
    ExitCode::FAILURE
}

/// Sends `READY=1` to systemd when `NOTIFY_SOCKET` is set.
fn notify_ready() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|addr| UnixDatagram::unbound()?.send_to_addr(b"READY=1\n", &addr));
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        Args::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn command_line() {
        let a = parse(&["--config", "/c.toml"]).unwrap();
        assert_eq!(a.bus, Bus::System);
        let a = parse(&["--config=/c.toml", "--bus", "unix:path=/x"]).unwrap();
        assert_eq!(a.bus, Bus::Address("unix:path=/x".into()));
        assert_eq!(
            parse(&["--bus", "session"]).unwrap_err(),
            "--config PATH is required"
        );
        assert!(parse(&["--config", "/c", "--bus", "nope"])
            .unwrap_err()
            .contains("--bus `nope`"));
        assert_eq!(parse(&["--frob"]).unwrap_err(), "unknown argument `--frob`");
    }
}
