//! The snapshot model: an immutable view of the store's files and the
//! structure derived from them (issuer links, hash data, key pairing),
//! with the queries the operations ask of it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::pairs::PairCache;
use crate::store::rotation::Rotation;
use crate::store::{BundleMode, FileStamp};
use crate::types::{CaCertificateType, HashAlgorithm, HashData, LeafCertificateType};
use crate::x509::{CertFacts, Fingerprint};

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
    pub(super) keys: Vec<Fingerprint>,
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
    /// Key bits of its issuer (its own for a root, the recorded ones for a
    /// certificate whose issuer left); `None` for an orphan.
    pub issuer_key_bits: Option<Vec<u8>>,
    /// SHA-256 hash data, when the issuer is known.
    pub hash: Option<HashData>,
    /// When it came into the bundle: its file's mtime, then its place in
    /// the bundle. The greatest is the one installed last.
    pub added: (i128, usize),
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
    /// The snapshot generation it was built in: the same number means the
    /// same content.
    pub built: u64,
    /// Nodes by the DER of their subject, to find issuers by name.
    by_subject: HashMap<Vec<u8>, Vec<usize>>,
    /// The CSMS root the rotation record names as in use.
    in_use: Option<Fingerprint>,
}

impl Bundle {
    pub(super) fn build<'a>(
        ca: CaCertificateType,
        path: &Path,
        mode: BundleMode,
        files: impl Iterator<Item = &'a Arc<CertFile>>,
        pairs: &mut PairCache,
        rotation: &Rotation,
        built: u64,
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
                    added: (file.stamp.mtime_ns, nodes.len()),
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
            if nodes[i].issuer_key_bits.is_none() {
                if let Some(bits) = rotation.issuer_keys.get(&nodes[i].cert.fingerprint) {
                    nodes[i].hash = Some(nodes[i].cert.hash_data(HashAlgorithm::SHA256, bits));
                    nodes[i].issuer_key_bits = Some(bits.clone());
                }
            }
        }
        Bundle {
            in_use: rotation.in_use.filter(|_| ca == CaCertificateType::CSMS),
            ca,
            path: path.to_owned(),
            mode,
            nodes,
            built,
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

    /// Indexes of the roots: the self-signed certificates, and those whose
    /// issuer left the bundle and was recorded (a rotated CSMS root).
    pub fn roots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| {
            let node = &self.nodes[i];
            node.cert.self_signed || (node.parent.is_none() && node.issuer_key_bits.is_some())
        })
    }

    /// The certificate installed last, if any: the CSMS root the rotation
    /// record names, else the one whose file changed last.
    pub fn installed_last(&self) -> Option<&Node> {
        self.in_use
            .and_then(|f| self.nodes.iter().find(|n| n.cert.fingerprint == f))
            .or_else(|| self.nodes.iter().max_by_key(|n| n.added))
    }

    /// The roots, or, when every certificate is a root of its own (the
    /// CSMS roots under the rotation), every certificate.
    pub fn anchors(&self, each_own_root: bool) -> Vec<usize> {
        if each_own_root {
            (0..self.nodes.len()).collect()
        } else {
            self.roots().collect()
        }
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

    /// True when the bundle holds a currently valid root (of
    /// [`Bundle::anchors`]).
    pub fn has_valid_root(&self, now: i64, each_own_root: bool) -> bool {
        self.anchors(each_own_root)
            .into_iter()
            .any(|i| self.nodes[i].cert.is_valid_at(now))
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

impl Node {
    /// Whether `query` names this certificate, in any hash algorithm.
    pub fn matches(&self, query: &HashData) -> bool {
        hash_matches(
            &self.cert,
            self.hash.as_ref(),
            self.issuer_key_bits.as_deref(),
            query,
        )
    }
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
    /// Distinct certificates in its files.
    pub entries: usize,
}

impl LeafDomain {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn build(
        leaf: LeafCertificateType,
        cert_dir: &Path,
        key_dir: &Path,
        files: Vec<Arc<CertFile>>,
        keys: Vec<Arc<KeyFile>>,
        anchor: &Bundle,
        pairs: &mut PairCache,
    ) -> LeafDomain {
        let mut leaves: Vec<Leaf> = Vec::new();
        let mut by_fingerprint: HashMap<Fingerprint, usize> = HashMap::new();
        for file in &files {
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
            entries: files
                .iter()
                .flat_map(|f| f.certs.iter().map(|c| c.fingerprint))
                .collect::<HashSet<_>>()
                .len(),
            files,
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
    /// The bundles, in [`CaCertificateType::ALL`] order. A write
    /// rebuilds only the bundles it changed; the others are shared with the
    /// snapshot before.
    pub bundles: Vec<Arc<Bundle>>,
    /// The CSMS and V2G leaf domains, in [`LEAF_DOMAINS`] order.
    pub leaves: Vec<Arc<LeafDomain>>,
    /// Cached OCSP responses.
    pub ocsp: Arc<Vec<OcspEntry>>,
    /// OCSP `.der` files without their `.hash`.
    pub orphan_ocsp: Arc<Vec<PathBuf>>,
    /// Distinct certificates per bundle or leaf directory
    /// (`CertificateEntries`).
    pub entries: u32,
    /// What the store takes on disk.
    pub usage: StoreUsage,
}

/// The leaf types that have directories of their own.
pub const LEAF_DOMAINS: [LeafCertificateType; 2] =
    [LeafCertificateType::CSMS, LeafCertificateType::V2G];

impl Snapshot {
    /// Every key file of the leaf key directories, once each.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<KeyFile>> {
        let mut seen: HashSet<&Path> = HashSet::new();
        self.leaves
            .iter()
            .flat_map(|d| &d.keys)
            .filter(move |k| seen.insert(k.path.as_path()))
    }

    /// A bundle by type.
    pub fn bundle(&self, ca: CaCertificateType) -> &Bundle {
        &self.bundles[ca.slot()]
    }

    /// The leaf domain that holds a type (the SECC's for `V2G` and
    /// `V2G20`); `None` for MF, MO and OEM.
    pub fn leaf_domain(&self, leaf: LeafCertificateType) -> Option<&LeafDomain> {
        let stored = leaf.stored_in()?;
        self.leaves.iter().find(|d| d.leaf == stored).map(|d| &**d)
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

/// True when `cert`, issued by the holder of `issuer_key_bits`, has the hash
/// data `query`. SHA-384 and SHA-512 are computed on demand.
pub fn hash_matches(
    cert: &CertFacts,
    precomputed: Option<&HashData>,
    issuer_key_bits: Option<&[u8]>,
    query: &HashData,
) -> bool {
    if cert.serial != query.serial_number {
        return false;
    }
    match (precomputed, issuer_key_bits) {
        (Some(h), _) if h.hash_algorithm == query.hash_algorithm => h == query,
        (_, Some(bits)) => cert.hash_data(query.hash_algorithm, bits) == *query,
        _ => false,
    }
}

impl Leaf {
    /// Whether the leaf has the hash data `query`.
    pub fn matches(&self, query: &HashData) -> bool {
        hash_matches(
            &self.cert,
            self.hash.as_ref(),
            self.issuer_key_bits(),
            query,
        )
    }

    /// The certificates of the leaf's path, leaf first, each with its
    /// issuer's key bits (its own for a root).
    pub fn path_with_issuer_keys(&self) -> Vec<(&Arc<CertFacts>, &[u8])> {
        let path: Vec<&Arc<CertFacts>> = self.path().collect();
        path.iter()
            .enumerate()
            .filter_map(|(i, cert)| match path.get(i + 1) {
                Some(issuer) => Some((*cert, issuer.key_bits.as_slice())),
                None if cert.self_signed => Some((*cert, cert.key_bits.as_slice())),
                None => None,
            })
            .collect()
    }
}

/// Newest first by notBefore (OCPP A02.FR.09 and A02.FR.15), then by
/// notAfter, then by file name, so the order is stable.
pub fn sort_newest_first(leaves: &mut [&Leaf]) {
    leaves.sort_by(|a, b| {
        let key = |l: &Leaf| (l.cert.not_before, l.cert.not_after);
        key(b).cmp(&key(a)).then_with(|| {
            let (first_a, first_b) = (a.files.first(), b.files.first());
            first_b.map(|f| &f.path).cmp(&first_a.map(|f| &f.path))
        })
    });
}

impl Bundle {
    /// The nodes that a delete of `query` removes: each match, and its
    /// descendants unless every certificate of the bundle is a root of its
    /// own (`each_own_root`: the CSMS roots under the rotation).
    pub fn doomed_by(&self, query: &HashData, each_own_root: bool) -> Vec<usize> {
        let mut doomed = Vec::new();
        let mut seen = HashSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.matches(query) {
                let below = if each_own_root {
                    Vec::new()
                } else {
                    self.descendants(i)
                };
                for n in std::iter::once(i).chain(below) {
                    if seen.insert(n) {
                        doomed.push(n);
                    }
                }
            }
        }
        doomed
    }

    /// The subject-hash links the directory of this bundle should hold:
    /// (subject hash, file name) of every `.pem` file, sorted.
    pub fn hash_link_targets(&self) -> Vec<(u32, String)> {
        let mut pairs: Vec<(u32, String)> = self
            .nodes
            .iter()
            .flat_map(|n| {
                let hash = n.cert.subject_hash;
                n.files
                    .iter()
                    .filter(|f| f.extension().is_some_and(|e| e == "pem"))
                    .filter_map(move |f| {
                        Some((hash, f.file_name()?.to_string_lossy().into_owned()))
                    })
            })
            .collect();
        pairs.sort();
        pairs.dedup();
        pairs
    }
}

impl Snapshot {
    /// The cached responses of `cert` (issued by the holder of
    /// `issuer_key_bits`), whatever digest their `.hash` files use.
    pub fn cached_responses(&self, cert: &CertFacts, issuer_key_bits: &[u8]) -> Vec<&OcspEntry> {
        let hash = cert.hash_data(HashAlgorithm::SHA256, issuer_key_bits);
        self.ocsp
            .iter()
            .filter(|e| {
                if e.hash.hash_algorithm == HashAlgorithm::SHA256 {
                    e.hash == hash
                } else {
                    hash_matches(cert, None, Some(issuer_key_bits), &e.hash)
                }
            })
            .collect()
    }

    /// The cached OCSP files (`.hash` and `.der`) of a certificate.
    pub fn ocsp_files_of(&self, cert: &CertFacts, issuer_key_bits: Option<&[u8]>) -> Vec<PathBuf> {
        self.ocsp
            .iter()
            .filter(|e| hash_matches(cert, None, issuer_key_bits, &e.hash))
            .flat_map(|e| [e.hash_path.clone(), e.der_path.clone()])
            .collect()
    }
}
