//! evsec: the certificate store of an EV charging station, served on D-Bus.
//!
//! The library holds the whole core; `evsecd` and `evsecctl` are thin
//! binaries over it, and the tests and benchmarks use it directly.

pub mod access;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dbus;
mod index;
mod iso15118;
pub mod logging;
mod maintenance;
pub mod renewal;
mod rfc5280;
pub mod security;
pub mod store;
/// Certificates for tests and benchmarks; not in the shipped daemon.
#[cfg(any(test, feature = "testpki"))]
pub mod testpki;
pub mod tpm;
pub mod types;
pub mod verify;
pub mod x509;

pub use config::Config;
pub use index::{StoreUsage, PARSE_CACHE_FILE};
pub use security::EvseSecurity;
