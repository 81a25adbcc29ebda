//! The in-memory index: every file of the store parsed once, and the
//! structure derived from it (issuer links, hash data, key pairing).
//!
//! [`Index`] holds the parsed files and is changed only under the writer
//! lock. Each change produces a new immutable [`Snapshot`] that readers use
//! without any lock, so a read sees the store either before or after a
//! write, never half of it.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openssl::pkey::PKey;
use openssl::x509::X509;

use crate::config::Config;
use crate::store::{self, BundleMode, FileKind, FileStamp, Layout};
use crate::types::{CaCertificateType, HashAlgorithm, HashData, LeafCertificateType};
use crate::x509::{self, CertFacts, Fingerprint};

/// Longest issuer path followed upwards from a leaf.
pub const MAX_CHAIN_DEPTH: usize = 16;

/// A certificate file as read from disk.
#[derive(Debug)]
pub struct CertFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its stamp when it was read.
    pub stamp: FileStamp,
    /// Its certificates, in file order.
    pub certs: Vec<Arc<CertFacts>>,
    /// SHA-256 of each certificate's encoding in the file (the PEM block or
    /// the DER), the key of the parse cache.
    keys: Vec<Fingerprint>,
    /// The first certificate block did not parse: the file's leaf is
    /// unknown, and the certificate after it must not be taken for it.
    pub first_unparsed: bool,
}

/// A private key file as read from disk. Only the identity of its public
/// half is kept: key material never stays in memory.
#[derive(Debug)]
pub struct KeyFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its stamp when it was read.
    pub stamp: FileStamp,
    /// Identity of the public key, `None` when the key cannot be opened.
    pub key_fingerprint: Option<Fingerprint>,
    /// Whether it is a TPM key (a TSS2 PEM), never password-protected.
    pub tpm: bool,
    /// A TPM key read while its TPM could not be reached: read again
    /// later (see [`Index::retry_tpm_keys`]).
    pub awaits_tpm: bool,
}

impl std::fmt::Debug for CertFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertFacts")
            .field("subject", &self.common_name())
            .field("serial", &self.serial)
            .finish()
    }
}

/// A cached OCSP file (`ocsp/<stem>.hash` or `.der`).
#[derive(Debug)]
pub struct OcspFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its stamp when it was read.
    pub stamp: FileStamp,
    /// For a `.hash` file, the hash data it holds.
    pub hash: Option<HashData>,
}

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

/// The parsed files of the store. Mutated only under the writer lock.
pub struct Index {
    layout: Layout,
    files: HashMap<PathBuf, Stored>,
    /// Parsed certificates by the SHA-256 of their encoding in a file, so
    /// that a certificate in several files, or a file read again after a
    /// change elsewhere in it, is parsed only once. OpenSSL 3 takes about
    /// 130 µs to parse a certificate; the hash takes about 2 µs.
    parsed: HashMap<Fingerprint, Arc<CertFacts>>,
    /// Issuer links and hash data, computed once per pair of certificates.
    pairs: PairCache,
    generation: u64,
}

impl Index {
    /// Reads the whole store.
    pub fn load(layout: Layout) -> Index {
        let mut index = Index {
            layout,
            files: HashMap::new(),
            parsed: HashMap::new(),
            pairs: PairCache::default(),
            generation: 0,
        };
        index.rescan();
        index
    }

    /// The layout this index reads.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Lists every directory again and re-reads the files that changed.
    /// Returns whether anything changed.
    pub fn rescan(&mut self) -> bool {
        let present: Vec<(PathBuf, FileKind)> = self.layout.list_files();
        let keep: HashSet<&PathBuf> = present.iter().map(|(p, _)| p).collect();
        let before = self.files.len();
        self.files.retain(|p, _| keep.contains(p));
        let mut changed = before != self.files.len();
        for (path, _) in &present {
            changed |= self.refresh(path);
        }
        changed
    }

    /// Whether a TPM key waits for its TPM to be reachable.
    pub fn awaits_tpm(&self) -> bool {
        self.files
            .values()
            .any(|f| matches!(f, Stored::Key(k) if k.awaits_tpm))
    }

    /// Reads again the TPM keys that were read while their TPM could not be
    /// reached (a TPM that comes up after the daemon, a resource manager
    /// that restarts). Returns whether any could be read now.
    pub fn retry_tpm_keys(&mut self) -> bool {
        let mut read = false;
        for stored in self.files.values_mut() {
            let Stored::Key(key) = stored else { continue };
            if !key.awaits_tpm {
                continue;
            }
            let again = read_key(&key.path, key.stamp, &self.layout.config);
            read |= again.key_fingerprint.is_some();
            *key = Arc::new(again);
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
            _ => return self.files.remove(path).is_some(),
        };
        let stamp = FileStamp::of(&meta);
        if self.files.get(path).is_some_and(|f| f.stamp() == stamp) {
            return false;
        }
        let path_buf = path.to_owned();
        let stored = match kind {
            FileKind::Certificates => Stored::Certs(Arc::new(self.read_cert_file(path, stamp))),
            FileKind::Key => Stored::Key(Arc::new(read_key(path, stamp, &self.layout.config))),
            FileKind::Ocsp => Stored::Ocsp(Arc::new(OcspFile {
                hash: (path.extension().is_some_and(|e| e == "hash"))
                    .then(|| store::read_ocsp_hash(path))
                    .flatten(),
                path: path_buf.clone(),
                stamp,
            })),
        };
        self.files.insert(path_buf, stored);
        true
    }

    fn read_cert_file(&mut self, path: &Path, stamp: FileStamp) -> CertFile {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "file cannot be read; left alone");
                Vec::new()
            }
        };
        let (blocks, problem) = x509::pem_blocks(&bytes);
        let mut encodings: Vec<&[u8]> = blocks
            .iter()
            .filter(|b| b.label == "CERTIFICATE")
            .map(|b| &bytes[b.range.clone()])
            .collect();
        if let Some(p) = problem {
            tracing::warn!(path = %path.display(), reason = %p, "part of the file does not parse; left alone");
        }
        let der = encodings.is_empty()
            && !bytes.is_empty()
            && path.extension().is_some_and(|e| e == "der");
        if der {
            encodings.push(&bytes);
        }
        let keys: Vec<Fingerprint> = encodings.iter().map(|e| x509::sha256(e)).collect();
        let missing: Vec<(Fingerprint, &[u8])> = keys
            .iter()
            .zip(&encodings)
            .filter(|(k, _)| !self.parsed.contains_key(*k))
            .map(|(k, e)| (*k, *e))
            .collect();
        for (key, parsed) in parse_in_parallel(&missing, der) {
            match parsed {
                Ok(facts) => {
                    self.parsed.insert(key, Arc::new(facts));
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "certificate does not parse; left alone")
                }
            }
        }
        let certs = keys
            .iter()
            .filter_map(|k| self.parsed.get(k).cloned())
            .collect();
        CertFile {
            path: path.to_owned(),
            stamp,
            certs,
            first_unparsed: keys.first().is_some_and(|k| !self.parsed.contains_key(k)),
            keys,
        }
    }

    /// Builds the derived view of the current files.
    pub fn snapshot(&mut self) -> Snapshot {
        self.generation += 1;
        let mut files: Vec<&Arc<CertFile>> = Vec::new();
        let mut keys: Vec<Arc<KeyFile>> = Vec::new();
        let mut ocsp_files: Vec<&Arc<OcspFile>> = Vec::new();
        for stored in self.files.values() {
            match stored {
                Stored::Certs(f) => files.push(f),
                Stored::Key(k) => keys.push(k.clone()),
                Stored::Ocsp(o) => ocsp_files.push(o),
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        keys.sort_by(|a, b| a.path.cmp(&b.path));

        // Forget parses and links of certificates no longer in any file.
        let live_encodings: HashSet<&Fingerprint> = files.iter().flat_map(|f| &f.keys).collect();
        self.parsed.retain(|key, _| live_encodings.contains(key));
        let live: HashSet<Fingerprint> = files
            .iter()
            .flat_map(|f| f.certs.iter().map(|c| c.fingerprint))
            .collect();
        self.pairs.retain(&live);

        let layout = &self.layout;
        let pairs = &mut self.pairs;

        let bundles: Vec<Bundle> = CaCertificateType::ALL
            .iter()
            .map(|ca| {
                let path = layout.bundle_path(*ca);
                let mode = layout.bundle_mode(*ca);
                let mine = files.iter().filter(|f| match mode {
                    BundleMode::File => f.path == path,
                    BundleMode::Directory => f.path.parent() == Some(path),
                });
                Bundle::build(*ca, path, mode, mine, pairs)
            })
            .collect();

        let leaves: Vec<LeafDomain> = [LeafCertificateType::CSMS, LeafCertificateType::V2G]
            .iter()
            .filter_map(|leaf| {
                let (cert_dir, key_dir) = layout.config.leaf_dirs(*leaf)?;
                let mine: Vec<&Arc<CertFile>> = files
                    .iter()
                    .filter(|f| f.path.parent() == Some(cert_dir))
                    .copied()
                    .collect();
                let anchor = &bundles[leaf.anchor().slot()];
                Some(LeafDomain::build(
                    *leaf, cert_dir, key_dir, &mine, &keys, anchor, pairs,
                ))
            })
            .collect();

        let mut counted: HashSet<(&Path, Fingerprint)> = HashSet::new();
        for bundle in &bundles {
            for node in &bundle.nodes {
                counted.insert((&bundle.path, node.cert.fingerprint));
            }
        }
        for domain in &leaves {
            for file in &domain.files {
                for cert in &file.certs {
                    counted.insert((&domain.cert_dir, cert.fingerprint));
                }
            }
        }
        let entries = counted.len() as u32;
        let usage = StoreUsage {
            files: self.files.len(),
            bytes: self.files.values().map(|f| f.stamp().size).sum(),
        };
        let present: HashSet<&Path> = ocsp_files.iter().map(|o| o.path.as_path()).collect();
        let mut ocsp: Vec<OcspEntry> = ocsp_files
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
        ocsp.sort_by(|a, b| a.hash_path.cmp(&b.hash_path));
        let orphan_ocsp: Vec<PathBuf> = ocsp_files
            .iter()
            .filter(|o| o.path.extension().is_some_and(|e| e == "der"))
            .filter(|o| !present.contains(o.path.with_extension("hash").as_path()))
            .map(|o| o.path.clone())
            .collect();

        Snapshot {
            generation: self.generation,
            bundles,
            leaves,
            keys,
            ocsp,
            orphan_ocsp,
            entries,
            usage,
        }
    }
}

/// A cached OCSP response: a `.hash` file and its `.der` sibling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspEntry {
    /// The `.hash` file.
    pub hash_path: PathBuf,
    /// The `.der` file.
    pub der_path: PathBuf,
    /// Whether the `.der` file exists.
    pub has_der: bool,
    /// The hash data of the `.hash` file, canonicalised.
    pub hash: HashData,
}

/// Parses certificate encodings (PEM blocks, or DER when `der`) on every
/// core: at start a bundle of thousands of roots would otherwise take
/// seconds, each parse and self-signature check being some 200 µs.
fn parse_in_parallel(
    items: &[(Fingerprint, &[u8])],
    der: bool,
) -> Vec<(Fingerprint, Result<CertFacts, String>)> {
    let parse = |encoding: &[u8]| -> Result<CertFacts, String> {
        let cert = if der {
            X509::from_der(encoding)
        } else {
            X509::from_pem(encoding)
        };
        cert.map_err(|e| x509::first_error(&e))
            .and_then(CertFacts::new)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if items.len() < 64 || threads == 1 {
        return items.iter().map(|(k, e)| (*k, parse(e))).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || part.iter().map(|(k, e)| (*k, parse(e))).collect::<Vec<_>>())
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    })
}

/// Reads a key file for the identity of its public key. A `TSS2 PRIVATE
/// KEY` is opened through the TPM provider, whatever the file's extension.
fn read_key(path: &Path, stamp: FileStamp, config: &Config) -> KeyFile {
    let mut key = KeyFile {
        path: path.to_owned(),
        stamp,
        key_fingerprint: None,
        tpm: false,
        awaits_tpm: false,
    };
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "key cannot be read");
            return key;
        }
    };
    if crate::tpm::is_tpm_key(&bytes) {
        key.tpm = true;
        match crate::tpm::key_fingerprint(&config.tpm, &bytes) {
            Ok(fingerprint) => key.key_fingerprint = Some(fingerprint),
            Err(e) => {
                key.awaits_tpm = matches!(e, crate::tpm::TpmError::Load { .. });
                tracing::warn!(path = %path.display(), error = %e, "TPM key cannot be opened");
            }
        }
        return key;
    }
    // A passphrase is always given, so OpenSSL never prompts on a terminal.
    let password = config.private_key_password.as_deref().unwrap_or("");
    match PKey::private_key_from_pem_passphrase(&bytes, password.as_bytes()) {
        Ok(pkey) => key.key_fingerprint = x509::public_key_fingerprint(&pkey),
        Err(_) => {
            tracing::warn!(path = %path.display(), "key cannot be opened (wrong password, or not a PEM private key)");
        }
    }
    key
}

/// The issuers of `start` that `find_issuer` finds, nearest first: up to a
/// self-signed certificate, a missing issuer, a cycle or
/// [`MAX_CHAIN_DEPTH`].
pub fn issuer_path(
    start: &Arc<CertFacts>,
    mut find_issuer: impl FnMut(&CertFacts) -> Option<Arc<CertFacts>>,
) -> Vec<Arc<CertFacts>> {
    let mut path: Vec<Arc<CertFacts>> = Vec::new();
    let mut current = start.clone();
    while path.len() < MAX_CHAIN_DEPTH && !current.self_signed {
        let Some(issuer) = find_issuer(&current) else {
            break;
        };
        if issuer.fingerprint == start.fingerprint
            || path.iter().any(|i| i.fingerprint == issuer.fingerprint)
        {
            break;
        }
        path.push(issuer.clone());
        current = issuer;
    }
    path
}

/// What depends only on a pair of certificates, kept across snapshots: a
/// signature check and two digests are done once per pair, not on every
/// change to the store.
#[derive(Default)]
struct PairCache {
    links: HashMap<(Fingerprint, Fingerprint), bool>,
    hashes: HashMap<(Fingerprint, Fingerprint), HashData>,
}

impl PairCache {
    /// Whether `parent` issued `child` (see [`CertFacts::is_issued_by`]).
    fn link_ok(&mut self, child: &CertFacts, parent: &CertFacts) -> bool {
        if child.issuer_der != parent.subject_der || child.fingerprint == parent.fingerprint {
            return false;
        }
        *self
            .links
            .entry((child.fingerprint, parent.fingerprint))
            .or_insert_with(|| child.is_issued_by(parent))
    }

    /// SHA-256 hash data of `cert` under `issuer` (itself for a root).
    fn hash(&mut self, cert: &CertFacts, issuer: &CertFacts) -> HashData {
        self.hashes
            .entry((cert.fingerprint, issuer.fingerprint))
            .or_insert_with(|| cert.hash_data(HashAlgorithm::SHA256, &issuer.key_bits))
            .clone()
    }

    /// Forgets pairs with a certificate that is gone.
    fn retain(&mut self, live: &HashSet<Fingerprint>) {
        let keep = |(a, b): &(Fingerprint, Fingerprint)| live.contains(a) && live.contains(b);
        self.links.retain(|k, _| keep(k));
        self.hashes.retain(|k, _| keep(k));
    }
}

/// One certificate of a CA bundle.
#[derive(Debug)]
pub struct Node {
    /// The certificate.
    pub cert: Arc<CertFacts>,
    /// Every file of the bundle that holds it.
    pub files: Vec<PathBuf>,
    /// Its issuer in the bundle.
    pub parent: Option<usize>,
    /// Certificates it issued in the bundle.
    pub children: Vec<usize>,
    /// Key bits of its issuer (its own for a root); `None` for an orphan.
    pub issuer_key_bits: Option<Vec<u8>>,
    /// SHA-256 hash data, when the issuer is known.
    pub hash: Option<HashData>,
}

/// A CA bundle with its issuer structure.
#[derive(Debug)]
pub struct Bundle {
    /// Its type.
    pub ca: CaCertificateType,
    /// Its configured path.
    pub path: PathBuf,
    /// File or directory.
    pub mode: BundleMode,
    /// Its certificates, without duplicates, in file order.
    pub nodes: Vec<Node>,
    /// Nodes by the DER of their subject, to find issuers by name.
    by_subject: HashMap<Vec<u8>, Vec<usize>>,
}

impl Bundle {
    fn build<'a>(
        ca: CaCertificateType,
        path: &Path,
        mode: BundleMode,
        files: impl Iterator<Item = &'a &'a Arc<CertFile>>,
        pairs: &mut PairCache,
    ) -> Bundle {
        let mut nodes: Vec<Node> = Vec::new();
        let mut by_fingerprint: HashMap<Fingerprint, usize> = HashMap::new();
        for file in files {
            for cert in &file.certs {
                if let Some(&i) = by_fingerprint.get(&cert.fingerprint) {
                    if !nodes[i].files.contains(&file.path) {
                        nodes[i].files.push(file.path.clone());
                    }
                    continue;
                }
                by_fingerprint.insert(cert.fingerprint, nodes.len());
                nodes.push(Node {
                    cert: cert.clone(),
                    files: vec![file.path.clone()],
                    parent: None,
                    children: Vec::new(),
                    issuer_key_bits: None,
                    hash: None,
                });
            }
        }
        let mut by_subject: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            by_subject
                .entry(node.cert.subject_der.clone())
                .or_default()
                .push(i);
        }
        let mut parents: Vec<Option<usize>> = vec![None; nodes.len()];
        for (i, node) in nodes.iter().enumerate() {
            if node.cert.self_signed {
                continue;
            }
            let candidates = by_subject.get(node.cert.issuer_der.as_slice());
            parents[i] = candidates
                .into_iter()
                .flatten()
                .copied()
                .find(|&p| pairs.link_ok(&node.cert, &nodes[p].cert));
        }
        for (i, parent) in parents.iter().enumerate() {
            nodes[i].parent = *parent;
            let issuer = match parent {
                Some(p) => Some(nodes[*p].cert.clone()),
                None if nodes[i].cert.self_signed => Some(nodes[i].cert.clone()),
                None => None,
            };
            if let Some(p) = parent {
                nodes[*p].children.push(i);
            }
            nodes[i].hash = issuer
                .as_ref()
                .map(|issuer| pairs.hash(&nodes[i].cert, issuer));
            nodes[i].issuer_key_bits = issuer.map(|issuer| issuer.key_bits.clone());
        }
        Bundle {
            ca,
            path: path.to_owned(),
            mode,
            nodes,
            by_subject,
        }
    }

    /// The certificates of the bundle whose subject is `name` (DER).
    pub fn named(&self, name: &[u8]) -> impl Iterator<Item = &Arc<CertFacts>> {
        self.by_subject
            .get(name)
            .into_iter()
            .flatten()
            .map(|&i| &self.nodes[i].cert)
    }

    /// Indexes of the self-signed roots.
    pub fn roots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].cert.self_signed)
    }

    /// Descendants of `i` in depth-first pre-order, `i` excluded. Safe
    /// against issuer cycles.
    pub fn descendants(&self, i: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut seen = HashSet::from([i]);
        let mut stack: Vec<usize> = self.nodes[i].children.iter().rev().copied().collect();
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                continue;
            }
            out.push(n);
            stack.extend(self.nodes[n].children.iter().rev().copied());
        }
        out
    }

    /// True when the bundle holds a currently valid self-signed certificate.
    pub fn has_valid_root(&self, now: i64) -> bool {
        self.roots().any(|i| self.nodes[i].cert.is_valid_at(now))
    }
}

/// A leaf certificate: the first certificate of a file in a leaf directory.
#[derive(Debug)]
pub struct Leaf {
    /// The certificate.
    pub cert: Arc<CertFacts>,
    /// Files whose first certificate it is (single file, chain files).
    pub files: Vec<Arc<CertFile>>,
    /// Its private key file, paired by public key.
    pub key: Option<PathBuf>,
    /// Its issuers, leaf side first; the root, when found, is last.
    pub issuers: Vec<Arc<CertFacts>>,
    /// SHA-256 hash data, when the issuer is known.
    pub hash: Option<HashData>,
}

impl Leaf {
    /// The leaf and its issuers, leaf first.
    pub fn path(&self) -> impl Iterator<Item = &Arc<CertFacts>> {
        std::iter::once(&self.cert).chain(self.issuers.iter())
    }

    /// Key bits of the direct issuer.
    pub fn issuer_key_bits(&self) -> Option<&[u8]> {
        self.issuers.first().map(|i| i.key_bits.as_slice())
    }
}

/// A leaf domain (CSMS or V2G): its files, keys and leaves.
#[derive(Debug)]
pub struct LeafDomain {
    /// Its type.
    pub leaf: LeafCertificateType,
    /// Certificate directory.
    pub cert_dir: PathBuf,
    /// Key directory.
    pub key_dir: PathBuf,
    /// The certificate files.
    pub files: Vec<Arc<CertFile>>,
    /// The key files of the key directory.
    pub keys: Vec<Arc<KeyFile>>,
    /// Distinct leaves.
    pub leaves: Vec<Leaf>,
}

impl LeafDomain {
    fn build(
        leaf: LeafCertificateType,
        cert_dir: &Path,
        key_dir: &Path,
        files: &[&Arc<CertFile>],
        all_keys: &[Arc<KeyFile>],
        anchor: &Bundle,
        pairs: &mut PairCache,
    ) -> LeafDomain {
        let keys: Vec<Arc<KeyFile>> = all_keys
            .iter()
            .filter(|k| k.path.parent() == Some(key_dir))
            .cloned()
            .collect();
        let mut leaves: Vec<Leaf> = Vec::new();
        let mut by_fingerprint: HashMap<Fingerprint, usize> = HashMap::new();
        for file in files {
            let Some(first) = file.certs.first().filter(|_| !file.first_unparsed) else {
                continue;
            };
            if let Some(&i) = by_fingerprint.get(&first.fingerprint) {
                leaves[i].files.push(Arc::clone(file));
                continue;
            }
            by_fingerprint.insert(first.fingerprint, leaves.len());
            leaves.push(Leaf {
                cert: first.clone(),
                files: vec![Arc::clone(file)],
                key: first.key_fingerprint.and_then(|fp| {
                    keys.iter()
                        .find(|k| k.key_fingerprint == Some(fp))
                        .map(|k| k.path.clone())
                }),
                issuers: Vec::new(),
                hash: None,
            });
        }
        for leaf in &mut leaves {
            // Issuer candidates: the other certificates of the leaf's own
            // files, then the domain's bundle.
            let own: Vec<Arc<CertFacts>> = leaf
                .files
                .iter()
                .flat_map(|f| f.certs.iter().skip(1).cloned())
                .collect();
            leaf.issuers = issuer_path(&leaf.cert, |child| {
                own.iter()
                    .chain(anchor.named(&child.issuer_der))
                    .find(|p| pairs.link_ok(child, p))
                    .cloned()
            });
            leaf.hash = leaf
                .issuers
                .first()
                .map(|issuer| pairs.hash(&leaf.cert, issuer));
        }
        LeafDomain {
            leaf,
            cert_dir: cert_dir.to_owned(),
            key_dir: key_dir.to_owned(),
            files: files.iter().map(|f| (*f).clone()).collect(),
            keys,
            leaves,
        }
    }
}

/// Files and bytes the store takes, for quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// Number of files: certificates, keys and OCSP responses.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
}

impl StoreUsage {
    /// Whether `files` more files of `bytes` bytes stay within the quotas.
    pub fn fits(&self, files: usize, bytes: u64, limits: &crate::config::Limits) -> bool {
        self.files + files <= limits.max_store_entries
            && self.bytes + bytes <= limits.max_store_bytes
    }
}

/// An immutable view of the store, shared by readers.
pub struct Snapshot {
    /// Increases with every change.
    pub generation: u64,
    /// The four bundles, in [`CaCertificateType::ALL`] order.
    pub bundles: Vec<Bundle>,
    /// The CSMS and V2G leaf domains.
    pub leaves: Vec<LeafDomain>,
    /// Every key file.
    pub keys: Vec<Arc<KeyFile>>,
    /// Cached OCSP responses.
    pub ocsp: Vec<OcspEntry>,
    /// OCSP `.der` files without their `.hash`.
    pub orphan_ocsp: Vec<PathBuf>,
    /// Distinct certificates per bundle or leaf directory
    /// (`CertificateEntries`).
    pub entries: u32,
    /// What the store takes on disk.
    pub usage: StoreUsage,
}

impl Snapshot {
    /// A bundle by type.
    pub fn bundle(&self, ca: CaCertificateType) -> &Bundle {
        &self.bundles[ca.slot()]
    }

    /// A leaf domain by type; `None` for MF and MO.
    pub fn leaf_domain(&self, leaf: LeafCertificateType) -> Option<&LeafDomain> {
        self.leaves.iter().find(|d| d.leaf == leaf)
    }

    /// The trust anchors for verifying `chain` against `bundles`: the
    /// bundle certificates reachable from the chain by issuer name, up to
    /// their roots. A store of a whole bundle would cost O(n² log n) to
    /// build in OpenSSL, which sorts its objects on every add (seconds at
    /// 10,000 roots), and a chain needs only its own path.
    pub fn trust_anchors_for(
        &self,
        bundles: &[CaCertificateType],
        chain: &[CertFacts],
    ) -> Vec<&CertFacts> {
        let mut names: Vec<Vec<u8>> = chain.iter().map(|c| c.issuer_der.clone()).collect();
        let mut looked_up: HashSet<Vec<u8>> = HashSet::new();
        let mut seen: HashSet<Fingerprint> = HashSet::new();
        let mut anchors: Vec<&Arc<CertFacts>> = Vec::new();
        while let Some(name) = names.pop() {
            for cert in bundles.iter().flat_map(|ca| self.bundle(*ca).named(&name)) {
                if seen.insert(cert.fingerprint) {
                    anchors.push(cert);
                    if !cert.self_signed && !looked_up.contains(&cert.issuer_der) {
                        names.push(cert.issuer_der.clone());
                    }
                }
            }
            looked_up.insert(name);
        }
        // Names are matched byte for byte here, where OpenSSL folds case and
        // string types; when that finds no root, let OpenSSL see it all.
        if !anchors.iter().any(|c| c.self_signed) {
            anchors = bundles
                .iter()
                .flat_map(|ca| self.bundle(*ca).nodes.iter().map(|n| &n.cert))
                .collect();
        }
        anchors.into_iter().map(Arc::as_ref).collect()
    }
}
