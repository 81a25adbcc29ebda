//! The OpenSSL `<subject-hash>.<n>` links of a directory bundle, so that
//! the directory works as `-CApath`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::durable::sync_dir;

fn is_hash_link_name(name: &str) -> bool {
    matches!(name.split_once('.'), Some((h, n)) if h.len() == 8
        && h.bytes().all(|b| b.is_ascii_hexdigit())
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether a link is one evsecd made: it names a `.pem` file of the same
/// directory. Links made by others (`c_rehash` links to `.crt` files, say)
/// are left alone, and keep their names.
fn is_own_link(target: &Path) -> bool {
    target.components().count() == 1 && target.extension().is_some_and(|e| e == "pem")
}

/// Makes the directory's subject-hash links those of `pairs` (subject
/// hash, file name; sorted), numbered from 0 per hash and skipping names that others' links
/// or files take; removes only its own links that are no longer wanted.
pub fn sync_links(dir: &Path, pairs: &[(u32, String)]) -> std::io::Result<()> {
    let mut own: HashMap<String, PathBuf> = HashMap::new();
    let mut taken: HashSet<String> = HashSet::new();
    for entry in fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_hash_link_name(&name) {
            continue;
        }
        match fs::read_link(entry.path()) {
            Ok(target) if is_own_link(&target) => {
                own.insert(name, target);
            }
            _ => {
                taken.insert(name);
            }
        }
    }
    let mut wanted: Vec<(String, &str)> = Vec::new();
    let mut last: Option<u32> = None;
    let mut n = 0;
    for (hash, file) in pairs {
        n = if last == Some(*hash) { n + 1 } else { 0 };
        last = Some(*hash);
        while taken.contains(&format!("{hash:08x}.{n}")) {
            n += 1;
        }
        wanted.push((format!("{hash:08x}.{n}"), file));
    }
    let mut changed = false;
    let wanted_names: HashSet<&str> = wanted.iter().map(|(l, _)| l.as_str()).collect();
    for name in own.keys().filter(|n| !wanted_names.contains(n.as_str())) {
        fs::remove_file(dir.join(name))?;
        changed = true;
    }
    for (link, target) in &wanted {
        let path = dir.join(link);
        match own.get(link) {
            Some(t) if t == Path::new(target) => continue,
            Some(_) => fs::remove_file(&path)?,
            None => {}
        }
        symlink(target, &path)?;
        changed = true;
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(())
}
