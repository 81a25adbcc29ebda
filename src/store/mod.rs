//! The on-disk store: the EVerest layout and file names, durable I/O, the
//! write transaction, and the watcher that sees changes made by hand.

mod bundle_file;
pub(crate) mod certificate_status;
mod durable;
mod file_hash;
mod hash_links;
mod layout;
mod lock;
mod names;
mod ocsp_file;
pub(crate) mod pending_keys;
pub(crate) mod rotation;
mod transaction;
pub(crate) mod watch;

pub use durable::{
    atomic_rewrite, atomic_write, remove_durably, sync_dir, write_group, write_key, FileStamp,
    GROUP_RECORD_NAME,
};
pub use file_hash::{sha256_of_open_file, sha256_of_regular_file, HashBounds};
pub use hash_links::sync_links;
pub use layout::{is_certificate_name, is_key_name, BundleMode, FileKind, Layout};
pub use lock::StoreLock;
pub use names::{format_utc, leaf_prefix, random_suffix};
pub use ocsp_file::{ocsp_hash_text, parse_ocsp_hash};
pub use pending_keys::RECORD_NAME as CSR_KEY_RECORD_NAME;
pub use transaction::{Committed, KeyIdentity, StoreChange, Touched, Transaction};

/// Prefix of the daemon's temporary files. They are never parsed, and the
/// ones a crash left behind are removed at start.
pub const TEMP_PREFIX: &str = ".evsec-tmp-";

/// Mode of certificate and bundle files.
pub const CERT_MODE: u32 = 0o644;
/// Mode of private key files.
pub const KEY_MODE: u32 = 0o600;
