//! The in-memory index: every file of the store parsed once, and the
//! snapshot model derived from it.
//!
//! [`Index`] holds the parsed files and is changed only under the writer
//! lock. Each change produces a new immutable [`Snapshot`] that readers use
//! without any lock, so a read sees the store either before or after a
//! write, never half of it. A change rebuilds only the bundles and leaf
//! domains whose files it touched; the rest of the snapshot is shared.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::store::rotation::{self, Rotation};
use crate::store::{
    self, BundleMode, Committed, FileKind, FileStamp, KeyIdentity, Layout, Touched,
};
use crate::types::{CaCertificateType, HashData, BUNDLES};
use crate::x509::{self, CertFacts, Facts, Fingerprint};

mod model;
mod pairs;
mod parse;
mod parse_cache;

pub use model::{
    hash_matches, issuer_path, sort_newest_first, Bundle, CertFile, KeyFile, Leaf, LeafDomain,
    Node, OcspEntry, OcspFile, Snapshot, StoreUsage, LEAF_DOMAINS, MAX_CHAIN_DEPTH,
};
use pairs::PairCache;
use parse::{parse_in_parallel, read_key};
pub use parse_cache::FILE_NAME as PARSE_CACHE_FILE;

/// One file of the store, as read.
#[derive(Debug, Clone)]
enum Stored {
    Certs(Arc<CertFile>),
    Key(Arc<KeyFile>),
    Ocsp(Arc<OcspFile>),
}

impl Stored {
    fn stamp(&self) -> FileStamp {
        match self {
            Stored::Certs(f) => f.stamp,
            Stored::Key(f) => f.stamp,
            Stored::Ocsp(f) => f.stamp,
        }
    }
}

/// The parts of the snapshot that a change since the last one touched.
#[derive(Debug, Clone, Copy)]
struct Dirty {
    bundles: [bool; BUNDLES],
    leaves: [bool; 2],
    ocsp: bool,
}

impl Dirty {
    const ALL: Dirty = Dirty {
        bundles: [true; BUNDLES],
        leaves: [true; 2],
        ocsp: true,
    };
    const NONE: Dirty = Dirty {
        bundles: [false; BUNDLES],
        leaves: [false; 2],
        ocsp: false,
    };

    fn any(&self) -> bool {
        self.ocsp || self.bundles.contains(&true) || self.leaves.contains(&true)
    }
}

/// The parsed files of the store. Mutated only under the writer lock.
pub struct Index {
    layout: Layout,
    /// By path, so that a directory's files are one range.
    files: BTreeMap<PathBuf, Stored>,
    /// Parsed certificates by the SHA-256 of their encoding in a file, so
    /// that a certificate in several files, or a file read again after a
    /// change elsewhere in it, is parsed only once. OpenSSL 3 takes about
    /// 270 µs to parse a certificate; the hash takes about 2 µs.
    parsed: HashMap<Fingerprint, Arc<CertFacts>>,
    /// Size of `parsed` after the last pruning of entries no file holds.
    parsed_at_prune: usize,
    /// The parse cache read at start, emptied as the load takes from it.
    on_disk: HashMap<Fingerprint, Facts>,
    /// `parsed` differs from the parse cache on disk.
    cache_stale: bool,
    /// Issuer links and hash data, computed once per pair of certificates.
    pairs: PairCache,
    usage: StoreUsage,
    /// TPM keys read while their TPM could not be reached.
    awaiting_tpm: BTreeSet<PathBuf>,
    /// The record of the CSMS root rotation.
    rotation: Rotation,
    dirty: Dirty,
    last: Option<Arc<Snapshot>>,
    generation: u64,
}

impl Index {
    /// Reads the whole store.
    pub fn load(layout: Layout) -> Index {
        let on_disk = parse_cache::load(&layout.config.certs_directory);
        let mut index = Index {
            rotation: rotation::read(&layout.config.certs_directory),
            layout,
            files: BTreeMap::new(),
            parsed: HashMap::new(),
            parsed_at_prune: 0,
            on_disk,
            cache_stale: false,
            pairs: PairCache::default(),
            usage: StoreUsage::default(),
            awaiting_tpm: BTreeSet::new(),
            dirty: Dirty::ALL,
            last: None,
            generation: 0,
        };
        index.rescan();
        // Entries of certificates that are gone make the file stale too.
        index.cache_stale |= !index.on_disk.is_empty();
        index.on_disk = HashMap::new();
        index.save_parse_cache();
        index
    }

    /// Writes the parse cache when it no longer matches the certificates
    /// the index holds; a failure only costs the next start its speed.
    pub fn save_parse_cache(&mut self) {
        if !self.cache_stale {
            return;
        }
        let dir = &self.layout.config.certs_directory;
        match parse_cache::save(dir, self.parsed.iter().map(|(k, c)| (k, c.as_ref()))) {
            Ok(()) => self.cache_stale = false,
            Err(e) => tracing::warn!("cannot write the parse cache in {}: {e}", dir.display()),
        }
    }

    /// Lists every directory again and re-reads the files that changed.
    /// Returns whether anything changed.
    pub fn rescan(&mut self) -> bool {
        let present: Vec<(PathBuf, FileKind)> = self.layout.list_files();
        let keep: HashSet<&PathBuf> = present.iter().map(|(p, _)| p).collect();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !keep.contains(p))
            .cloned()
            .collect();
        let mut changed = !gone.is_empty();
        for path in &gone {
            self.forget(path);
        }
        let mut fresh: Vec<(PathBuf, FileStamp, FileKind)> = Vec::new();
        for (path, kind) in &present {
            match fs::metadata(path).ok().filter(fs::Metadata::is_file) {
                Some(meta) => {
                    let stamp = FileStamp::of(&meta);
                    if !self.files.get(path).is_some_and(|f| f.stamp() == stamp) {
                        fresh.push((path.clone(), stamp, *kind));
                    }
                }
                // Gone since the listing.
                None => changed |= self.forget(path),
            }
        }
        changed |= !fresh.is_empty();
        self.read_all(fresh);
        changed
    }

    /// Whether a TPM key waits for its TPM to be reachable.
    pub fn awaits_tpm(&self) -> bool {
        !self.awaiting_tpm.is_empty()
    }

    /// Reads again the TPM keys that were read while their TPM could not be
    /// reached (a TPM that comes up after the daemon, a resource manager
    /// that restarts). Returns whether any could be read now.
    pub fn retry_tpm_keys(&mut self) -> bool {
        let mut read = false;
        for path in std::mem::take(&mut self.awaiting_tpm) {
            let Some(Stored::Key(key)) = self.files.get(&path) else {
                continue;
            };
            let again = read_key(&key.path, key.stamp, &self.layout.config);
            read |= again.key_fingerprint.is_some();
            self.insert(path, Stored::Key(Arc::new(again)));
        }
        read
    }

    /// Brings one path up to date with the disk: reads it when it is new or
    /// changed, forgets it when it is gone. Returns whether anything changed.
    pub fn refresh(&mut self, path: &Path) -> bool {
        let Some(kind) = self.layout.classify(path) else {
            return false;
        };
        let meta = match fs::metadata(path) {
            Ok(m) if m.is_file() => m,
            _ => return self.forget(path),
        };
        let stamp = FileStamp::of(&meta);
        if self.files.get(path).is_some_and(|f| f.stamp() == stamp) {
            return false;
        }
        self.read_all(vec![(path.to_owned(), stamp, kind)]);
        true
    }

    /// Takes in what a transaction did, without reading back what it wrote:
    /// written files are indexed from their bytes (their certificates found
    /// in the parse cache, where the writer put them), a written key by
    /// its identity, removed files are forgotten, restored files read again.
    pub fn adopt(&mut self, committed: &Committed) {
        for facts in &committed.parsed {
            self.remember(facts);
        }
        let record = rotation::path(&self.layout.config.certs_directory);
        for t in &committed.touched {
            if t.path() == record {
                self.rotation = match t {
                    Touched::Written(_, bytes) => rotation::decode(&record, bytes),
                    Touched::Removed(_) => Rotation::default(),
                    Touched::Restored(_) => rotation::read(&self.layout.config.certs_directory),
                };
                self.dirty.bundles = [true; BUNDLES];
                continue;
            }
            match t {
                Touched::Written(path, bytes) => self.adopt_written(path, bytes, &committed.keys),
                Touched::Removed(path) => {
                    self.forget(path);
                }
                Touched::Restored(path) => {
                    self.refresh(path);
                }
            }
        }
    }

    fn adopt_written(&mut self, path: &Path, bytes: &[u8], keys: &[(PathBuf, KeyIdentity)]) {
        let Some(kind) = self.layout.classify(path) else {
            return;
        };
        // A stat for the stamp, so that the watcher's report of this very
        // write finds the file unchanged.
        let stamp = match fs::metadata(path) {
            Ok(m) if m.is_file() => FileStamp::of(&m),
            _ => {
                self.forget(path);
                return;
            }
        };
        let stored = match kind {
            FileKind::Certificates => Stored::Certs(Arc::new(self.cert_file(path, bytes, stamp))),
            FileKind::Ocsp => Stored::Ocsp(Arc::new(ocsp_file(path, bytes, stamp))),
            FileKind::Key => match keys.iter().find(|(p, _)| p == path) {
                Some((_, identity)) => Stored::Key(Arc::new(KeyFile {
                    path: path.to_owned(),
                    stamp,
                    key_fingerprint: Some(identity.key_fingerprint),
                    tpm: identity.tpm,
                    awaits_tpm: false,
                })),
                None => Stored::Key(Arc::new(read_key(path, stamp, &self.layout.config))),
            },
        };
        self.insert(path.to_owned(), stored);
    }

    /// Puts a certificate the daemon parsed itself into the parse cache,
    /// under the encoding it writes (`X509::to_pem`).
    fn remember(&mut self, facts: &Arc<CertFacts>) {
        let Some(pem) = facts.pem() else {
            return;
        };
        let (blocks, _) = x509::pem_blocks(&pem);
        if let Some(block) = blocks.first() {
            let key = x509::sha256(&pem[block.range.clone()]);
            if let std::collections::hash_map::Entry::Vacant(entry) = self.parsed.entry(key) {
                entry.insert(facts.clone());
                self.cache_stale = true;
            }
        }
    }

    /// Reads the given files from disk; their certificates are parsed
    /// together, on every core.
    fn read_all(&mut self, files: Vec<(PathBuf, FileStamp, FileKind)>) {
        let mut cert_files: Vec<(PathBuf, FileStamp, Vec<u8>)> = Vec::new();
        for (path, stamp, kind) in files {
            match kind {
                FileKind::Certificates => {
                    let bytes = fs::read(&path).unwrap_or_else(|e| {
                        tracing::warn!(path = %path.display(), error = %e, "file cannot be read; left alone");
                        Vec::new()
                    });
                    cert_files.push((path, stamp, bytes));
                }
                FileKind::Key => {
                    let key = read_key(&path, stamp, &self.layout.config);
                    self.insert(path, Stored::Key(Arc::new(key)));
                }
                FileKind::Ocsp => {
                    let bytes = fs::read(&path).unwrap_or_default();
                    let file = ocsp_file(&path, &bytes, stamp);
                    self.insert(path, Stored::Ocsp(Arc::new(file)));
                }
            }
        }
        // Every missing certificate of every file in one parallel parse.
        let read: Vec<(&PathBuf, FileStamp, Vec<&[u8]>, bool)> = cert_files
            .iter()
            .map(|(path, stamp, bytes)| {
                let (encodings, der) = encodings(path, bytes);
                (path, *stamp, encodings, der)
            })
            .collect();
        let mut missing: Vec<(Fingerprint, &[u8], bool, &Path)> = Vec::new();
        let mut queued: HashSet<Fingerprint> = HashSet::new();
        for (path, _, encodings, der) in &read {
            for e in encodings {
                let key = x509::sha256(e);
                if !self.parsed.contains_key(&key) && queued.insert(key) {
                    missing.push((key, e, *der, path.as_path()));
                }
            }
        }
        self.parse_missing(&missing);
        for (path, stamp, encodings, _) in read {
            let file = self.cert_file_of(path, &encodings, stamp);
            self.insert(path.clone(), Stored::Certs(Arc::new(file)));
        }
    }

    /// A certificate file from its bytes; certificates not in the parse
    /// cache are parsed here.
    fn cert_file(&mut self, path: &Path, bytes: &[u8], stamp: FileStamp) -> CertFile {
        let (encodings, der) = encodings(path, bytes);
        let missing: Vec<(Fingerprint, &[u8], bool, &Path)> = encodings
            .iter()
            .map(|e| (x509::sha256(e), *e, der, path))
            .filter(|(k, _, _, _)| !self.parsed.contains_key(k))
            .collect();
        self.parse_missing(&missing);
        self.cert_file_of(path, &encodings, stamp)
    }

    /// Parses certificates (encoding, whether DER, the file that holds
    /// it) into the parse cache, on every core.
    fn parse_missing(&mut self, missing: &[(Fingerprint, &[u8], bool, &Path)]) {
        // Known to the parse cache on disk: taken as they are, parsed when
        // first used.
        let mut unknown: Vec<(Fingerprint, &[u8], bool, &Path)> = Vec::new();
        for &(key, encoding, der, path) in missing {
            match self.on_disk.remove(&key) {
                Some(facts) => {
                    let cert = CertFacts::from_cache(encoding.to_vec(), der, facts);
                    self.parsed.insert(key, Arc::new(cert));
                }
                None => unknown.push((key, encoding, der, path)),
            }
        }
        let items: Vec<(Fingerprint, &[u8], bool)> = unknown
            .iter()
            .map(|(k, e, der, _)| (*k, *e, *der))
            .collect();
        for ((key, parsed), (_, _, _, path)) in parse_in_parallel(&items).into_iter().zip(&unknown)
        {
            match parsed {
                Ok(facts) => {
                    self.parsed.insert(key, Arc::new(facts));
                    self.cache_stale = true;
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "certificate does not parse; left alone")
                }
            }
        }
    }

    /// The file of these encodings, from the parse cache.
    fn cert_file_of(&self, path: &Path, encodings: &[&[u8]], stamp: FileStamp) -> CertFile {
        let keys: Vec<Fingerprint> = encodings.iter().map(|e| x509::sha256(e)).collect();
        CertFile {
            path: path.to_owned(),
            stamp,
            certs: keys
                .iter()
                .filter_map(|k| self.parsed.get(k).cloned())
                .collect(),
            first_unparsed: keys.first().is_some_and(|k| !self.parsed.contains_key(k)),
            keys,
        }
    }

    fn insert(&mut self, path: PathBuf, stored: Stored) {
        self.forget(&path);
        self.mark_dirty(&path);
        self.usage.files += 1;
        self.usage.bytes += stored.stamp().size;
        if matches!(&stored, Stored::Key(k) if k.awaits_tpm) {
            self.awaiting_tpm.insert(path.clone());
        }
        self.files.insert(path, stored);
    }

    /// Forgets a path; returns whether it was known.
    fn forget(&mut self, path: &Path) -> bool {
        let Some(old) = self.files.remove(path) else {
            return false;
        };
        self.mark_dirty(path);
        self.usage.files -= 1;
        self.usage.bytes -= old.stamp().size;
        self.awaiting_tpm.remove(path);
        true
    }

    /// Marks the parts of the snapshot that a change of `path` touches: its
    /// bundle (and the leaf domain that bundle anchors), its leaf domain,
    /// or the OCSP responses.
    fn mark_dirty(&mut self, path: &Path) {
        let Some(kind) = self.layout.classify(path) else {
            return;
        };
        if kind == FileKind::Ocsp {
            self.dirty.ocsp = true;
            return;
        }
        let parent = path.parent();
        for ca in CaCertificateType::ALL {
            let bundle = self.layout.bundle_path(*ca);
            let mine = match self.layout.bundle_mode(*ca) {
                BundleMode::File => bundle == path,
                BundleMode::Directory => Some(bundle) == parent,
            };
            if mine {
                self.dirty.bundles[ca.slot()] = true;
                for (i, leaf) in LEAF_DOMAINS.iter().enumerate() {
                    if leaf.anchor() == *ca {
                        self.dirty.leaves[i] = true;
                    }
                }
            }
        }
        for (i, leaf) in LEAF_DOMAINS.iter().enumerate() {
            if let Some((cert_dir, key_dir)) = self.layout.config.leaf_dirs(*leaf) {
                if Some(cert_dir) == parent || Some(key_dir) == parent {
                    self.dirty.leaves[i] = true;
                }
            }
        }
    }

    /// The files whose parent is `dir`, in path order.
    fn files_in<'a>(&'a self, dir: &'a Path) -> impl Iterator<Item = (&'a PathBuf, &'a Stored)> {
        self.files
            .range(dir.to_path_buf()..)
            .take_while(move |(p, _)| p.starts_with(dir))
            .filter(move |(p, _)| p.parent() == Some(dir))
    }

    fn cert_files_in(&self, dir: &Path) -> Vec<Arc<CertFile>> {
        self.files_in(dir)
            .filter_map(|(_, s)| match s {
                Stored::Certs(f) => Some(f.clone()),
                _ => None,
            })
            .collect()
    }

    /// The current snapshot: the last one when nothing changed since, else
    /// a new one that rebuilds only what changed.
    pub fn snapshot(&mut self) -> Arc<Snapshot> {
        if let Some(last) = self.last.as_ref().filter(|_| !self.dirty.any()) {
            return last.clone();
        }
        self.prune_if_due();
        self.generation += 1;
        let dirty = std::mem::replace(&mut self.dirty, Dirty::NONE);
        let last = self.last.take();
        let layout = self.layout.clone();

        let mut bundles: Vec<Arc<Bundle>> = Vec::with_capacity(CaCertificateType::ALL.len());
        for ca in CaCertificateType::ALL {
            if let Some(last) = last.as_ref().filter(|_| !dirty.bundles[ca.slot()]) {
                bundles.push(last.bundles[ca.slot()].clone());
                continue;
            }
            let path = layout.bundle_path(*ca);
            let mode = layout.bundle_mode(*ca);
            let files: Vec<Arc<CertFile>> = match mode {
                BundleMode::File => match self.files.get(path) {
                    Some(Stored::Certs(f)) => vec![f.clone()],
                    _ => Vec::new(),
                },
                BundleMode::Directory => self.cert_files_in(path),
            };
            let bundle = Bundle::build(
                *ca,
                path,
                mode,
                files.iter(),
                &mut self.pairs,
                &self.rotation,
                self.generation,
            );
            bundles.push(Arc::new(bundle));
        }

        let mut leaves: Vec<Arc<LeafDomain>> = Vec::new();
        for (i, leaf) in LEAF_DOMAINS.iter().enumerate() {
            if let Some(last) = last.as_ref().filter(|_| !dirty.leaves[i]) {
                leaves.push(last.leaves[i].clone());
                continue;
            }
            let Some((cert_dir, key_dir)) = layout.config.leaf_dirs(*leaf) else {
                continue;
            };
            let files = self.cert_files_in(cert_dir);
            let keys: Vec<Arc<KeyFile>> = self
                .files_in(key_dir)
                .filter_map(|(_, s)| match s {
                    Stored::Key(k) => Some(k.clone()),
                    _ => None,
                })
                .collect();
            let anchor = &bundles[leaf.anchor().slot()];
            leaves.push(Arc::new(LeafDomain::build(
                *leaf,
                cert_dir,
                key_dir,
                files,
                keys,
                anchor,
                &mut self.pairs,
            )));
        }

        let (ocsp, orphan_ocsp) = match &last {
            Some(last) if !dirty.ocsp => (last.ocsp.clone(), last.orphan_ocsp.clone()),
            _ => {
                let (ocsp, orphans) = self.ocsp_entries();
                (Arc::new(ocsp), Arc::new(orphans))
            }
        };

        let mut counted: HashSet<&Path> = HashSet::new();
        let mut entries = 0usize;
        for bundle in &bundles {
            if counted.insert(&bundle.path) {
                entries += bundle.nodes.len();
            }
        }
        for domain in &leaves {
            if counted.insert(&domain.cert_dir) {
                entries += domain.entries;
            }
        }
        let snapshot = Arc::new(Snapshot {
            generation: self.generation,
            bundles,
            leaves,
            ocsp,
            orphan_ocsp,
            entries: u32::try_from(entries).unwrap_or(u32::MAX),
            usage: self.usage,
        });
        self.last = Some(snapshot.clone());
        snapshot
    }

    fn ocsp_entries(&self) -> (Vec<OcspEntry>, Vec<PathBuf>) {
        let ocsp_files: Vec<&Arc<OcspFile>> = self
            .files
            .values()
            .filter_map(|s| match s {
                Stored::Ocsp(o) => Some(o),
                _ => None,
            })
            .collect();
        let present: HashSet<&Path> = ocsp_files.iter().map(|o| o.path.as_path()).collect();
        let entries = ocsp_files
            .iter()
            .filter_map(|o| {
                let hash = o.hash.clone()?;
                let der_path = o.path.with_extension("der");
                Some(OcspEntry {
                    has_der: present.contains(der_path.as_path()),
                    hash_path: o.path.clone(),
                    der_path,
                    hash,
                })
            })
            .collect();
        let orphans = ocsp_files
            .iter()
            .filter(|o| o.path.extension().is_some_and(|e| e == "der"))
            .filter(|o| !present.contains(o.path.with_extension("hash").as_path()))
            .map(|o| o.path.clone())
            .collect();
        (entries, orphans)
    }

    /// Forgets parses and pair results of certificates no file holds any
    /// more, once the cache has doubled since the last time: a cost linear
    /// in the store, paid once per as many new certificates.
    fn prune_if_due(&mut self) {
        if self.parsed.len() < 2 * self.parsed_at_prune + 256 {
            return;
        }
        let cert_files = || {
            self.files.values().filter_map(|s| match s {
                Stored::Certs(f) => Some(f),
                _ => None,
            })
        };
        let live_encodings: HashSet<&Fingerprint> = cert_files().flat_map(|f| &f.keys).collect();
        let live: HashSet<Fingerprint> = cert_files()
            .flat_map(|f| f.certs.iter().map(|c| c.fingerprint))
            .collect();
        let before = self.parsed.len();
        self.parsed.retain(|key, _| live_encodings.contains(key));
        self.cache_stale |= self.parsed.len() != before;
        self.pairs.retain(&live);
        self.parsed_at_prune = self.parsed.len();
    }
}

/// The certificate encodings of a file: its `CERTIFICATE` PEM blocks, or
/// the whole file for a `.der` file without any; and whether they are DER.
fn encodings<'a>(path: &Path, bytes: &'a [u8]) -> (Vec<&'a [u8]>, bool) {
    let (blocks, problem) = x509::pem_blocks(bytes);
    if let Some(p) = problem {
        tracing::warn!(path = %path.display(), reason = %p, "part of the file does not parse; left alone");
    }
    let mut encodings: Vec<&[u8]> = blocks
        .iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| &bytes[b.range.clone()])
        .collect();
    let der =
        encodings.is_empty() && !bytes.is_empty() && path.extension().is_some_and(|e| e == "der");
    if der {
        encodings.push(bytes);
    }
    (encodings, der)
}

/// An OCSP file from its bytes.
fn ocsp_file(path: &Path, bytes: &[u8], stamp: FileStamp) -> OcspFile {
    let hash: Option<HashData> = path
        .extension()
        .is_some_and(|e| e == "hash")
        .then(|| store::parse_ocsp_hash(path, bytes))
        .flatten();
    OcspFile {
        path: path.to_owned(),
        stamp,
        hash,
    }
}
