//! The durable record of CSR keys that await their certificate.
//!
//! Only a key that evsecd generated for a CSR, and that no certificate has
//! taken up since, may ever be garbage-collected: a key that merely looks
//! unused (its certificate does not parse for a moment, or is kept under a
//! name the index does not read) is the station's identity, and losing it
//! means provisioning the station again on site. Each key directory holds
//! one record, [`RECORD_NAME`], with one key file name per line, written
//! atomically like every other file of the store.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use crate::store;

/// The record's file name in a key directory. Neither a certificate nor a
/// key name, so the index never reads it as one.
pub const RECORD_NAME: &str = ".evsecd-csr-keys";

/// Longest record read; a larger one is not ours, or damaged, and is
/// treated as holding no key (so that nothing is ever removed for it).
const MAX_RECORD_BYTES: u64 = 1 << 20;

fn record_path(key_dir: &Path) -> PathBuf {
    key_dir.join(RECORD_NAME)
}

/// The key file names recorded in `key_dir`. A missing record is empty; a
/// record that cannot be read is an error, so that the caller removes
/// nothing on its account.
pub fn read(key_dir: &Path) -> io::Result<BTreeSet<String>> {
    let path = record_path(key_dir);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() > MAX_RECORD_BYTES => {
            return Err(io::Error::other(format!(
                "{} is larger than {MAX_RECORD_BYTES} bytes",
                path.display()
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e),
    }
    let text = std::fs::read_to_string(&path)?;
    Ok(text
        .lines()
        .filter(|l| is_plain_name(l))
        .map(str::to_owned)
        .collect())
}

/// A bare file name: the record never names a file outside its directory.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && name != "." && name != ".."
}

/// Records `key` (a path in its key directory) as awaiting a certificate.
/// Called before the key itself is written, so that a crash in between
/// leaves at worst a record of a key that does not exist.
pub fn add(key: &Path) -> io::Result<()> {
    let (dir, name) = split(key)?;
    let mut names = read(dir)?;
    if names.insert(name) {
        write(dir, &names)?;
    }
    Ok(())
}

/// Forgets the given key file names of `key_dir`; nothing happens when
/// none is recorded.
pub fn remove(key_dir: &Path, gone: &[String]) -> io::Result<()> {
    let mut names = read(key_dir)?;
    let before = names.len();
    names.retain(|n| !gone.contains(n));
    if names.len() != before {
        write(key_dir, &names)?;
    }
    Ok(())
}

fn split(key: &Path) -> io::Result<(&Path, String)> {
    match (key.parent(), key.file_name().and_then(|n| n.to_str())) {
        (Some(dir), Some(name)) if is_plain_name(name) => Ok((dir, name.to_owned())),
        _ => Err(io::Error::other(format!(
            "{} cannot be recorded as a CSR key",
            key.display()
        ))),
    }
}

fn write(key_dir: &Path, names: &BTreeSet<String>) -> io::Result<()> {
    let path = record_path(key_dir);
    if names.is_empty() {
        return store::remove_durably(&path);
    }
    let mut text = String::new();
    for name in names {
        text.push_str(name);
        text.push('\n');
    }
    store::atomic_write(&path, text.as_bytes(), store::CERT_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
        add(&dir.path().join("A.key")).unwrap();
        add(&dir.path().join("B.key")).unwrap();
        add(&dir.path().join("A.key")).unwrap();
        let names: Vec<String> = read(dir.path()).unwrap().into_iter().collect();
        assert_eq!(names, ["A.key", "B.key"]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(RECORD_NAME)).unwrap(),
            "A.key\nB.key\n"
        );
        remove(dir.path(), &["A.key".into()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(RECORD_NAME)).unwrap(),
            "B.key\n"
        );
        remove(dir.path(), &["B.key".into()]).unwrap();
        assert!(!dir.path().join(RECORD_NAME).exists());
    }

    #[test]
    fn names_outside_the_directory_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(RECORD_NAME),
            "../x.key\n/etc/k.key\nok.key\n..\n",
        )
        .unwrap();
        let names: Vec<String> = read(dir.path()).unwrap().into_iter().collect();
        assert_eq!(names, ["ok.key"]);
    }
}
