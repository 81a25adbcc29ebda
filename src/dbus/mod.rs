//! The D-Bus face of the store. This is the only module that uses zbus.
//!
//! It parses arguments into the contract's types, runs the core on a
//! blocking thread, and maps results and errors to the wire.

mod client;
mod error;
mod exact_signature;
mod service;
mod wire;

use std::fmt;
use std::str::FromStr;

pub use client::{Client, ClientError, ExpiryWarnings, LeafInfo, StoreUpdates, VerifyDetail};
pub use service::{serve, serve_on, Announcement, Server};
pub use wire::{
    WireCertificateDetails, WireHashData, WireHashDataChain, WireOcspEntry, WireStatusEntry,
    WireStatusRequest,
};

/// The well-known bus name.
pub const BUS_NAME: &str = "org.evsec.EvseSecurity1";
/// The object path.
pub const OBJECT_PATH: &str = "/org/evsec/EvseSecurity1";
/// The interface name.
pub const INTERFACE: &str = "org.evsec.EvseSecurity1";
/// Prefix of the daemon's own D-Bus error names.
pub const ERROR_PREFIX: &str = "org.evsec.EvseSecurity1.Error";

/// Which bus to connect to (`--bus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    /// The system bus.
    System,
    /// The session bus of `DBUS_SESSION_BUS_ADDRESS`.
    Session,
    /// A D-Bus address such as `unix:path=/run/x/bus`.
    Address(String),
}

impl FromStr for Bus {
    type Err = String;

    fn from_str(s: &str) -> Result<Bus, String> {
        match s {
            "system" => Ok(Bus::System),
            "session" => Ok(Bus::Session),
            "" => Err("--bus needs system, session or a D-Bus address".into()),
            _ if s.contains(':') => Ok(Bus::Address(s.to_owned())),
            _ => Err(format!("--bus `{s}`: expected system, session or a D-Bus address such as unix:path=/run/x/bus")),
        }
    }
}

impl fmt::Display for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bus::System => f.write_str("system"),
            Bus::Session => f.write_str("session"),
            Bus::Address(a) => f.write_str(a),
        }
    }
}

fn builder(bus: &Bus) -> zbus::connection::Builder<'static> {
    match bus {
        Bus::System => zbus::connection::Builder::system(),
        Bus::Session => zbus::connection::Builder::session(),
        Bus::Address(a) => zbus::connection::Builder::address(a.as_str()),
    }
}

/// The introspection XML of the interface as served, kept in the repository
/// as `org.evsec.EvseSecurity1.xml`.
pub const INTROSPECTION_FILE: &str = "org.evsec.EvseSecurity1.xml";
