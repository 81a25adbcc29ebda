//! The `org.evsec.EvseSecurity1` interface.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{interface, Connection, OwnedVariant, Variant};

use super::error::BusError;
use super::exact_signature::ExactSignatures;
use super::{
    builder, Bus, WireCertificateDetails, WireHashData, WireHashDataChain, WireOcspEntry,
    WireStatusEntry, WireStatusRequest, BUS_NAME, OBJECT_PATH,
};
use crate::access::{Caller, Need, Roles};
use crate::security::{self, CertificateInfo, EvseSecurity, OcspRequest, Outcome, StoreChange};
use crate::types::{
    CaCertificateType, CertificateType, ContractEnum, EncodingFormat, HashData,
    LeafCertificateType, UnknownValue,
};

/// Blocking calls in flight at once; more wait, so that one client cannot
/// take every blocking thread.
const MAX_BLOCKING_CALLS: usize = 16;

/// File signature checks hashing at once, on threads apart from the
/// certificate methods' permits; more wait for their turn.
const MAX_FILE_CHECKS: usize = 2;

/// How often a running file check asks whether its caller is still there.
const CALLER_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Sets its flag when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

type WireCertificateInfo = HashMap<String, OwnedVariant>;

fn wire_ocsp_requests(requests: Vec<OcspRequest>) -> Vec<WireOcspEntry> {
    requests
        .into_iter()
        .map(|(hash, url)| WireOcspEntry {
            certificate_hash_data: WireHashData::from(&hash),
            location: url,
        })
        .collect()
}

/// CertificateInfo as the `a{sv}` of contract 5.11; absent values are left
/// out.
fn wire_certificate_info(info: CertificateInfo) -> Result<WireCertificateInfo, BusError> {
    let mut out: Vec<(&str, Variant<'static>)> = vec![
        ("key", Variant::from(info.key.display().to_string())),
        ("certificate_count", Variant::from(info.certificate_count)),
        ("key_algorithm", Variant::from(info.key_algorithm.as_str())),
        ("common_name", Variant::from(info.common_name)),
    ];
    let paths = [
        ("certificate", info.certificate),
        ("certificate_single", info.certificate_single),
    ];
    for (name, path) in paths {
        if let Some(p) = path {
            out.push((name, Variant::from(p.display().to_string())));
        }
    }
    if let Some(root) = info.certificate_root {
        out.push(("certificate_root", Variant::from(root)));
    }
    if let Some(password) = info.password {
        out.push(("password", Variant::from(password)));
    }
    if let Some(ocsp) = info.ocsp {
        let entries: Vec<WireOcspEntry> = ocsp
            .into_iter()
            .map(|(hash, path)| WireOcspEntry {
                certificate_hash_data: WireHashData::from(&hash),
                location: path,
            })
            .collect();
        out.push(("ocsp", Variant::from(entries)));
    }
    out.into_iter()
        .map(|(k, v)| {
            OwnedVariant::try_from(v)
                .map(|v| (k.to_owned(), v))
                .map_err(|e| BusError::Internal(format!("cannot encode {k}: {e}")))
        })
        .collect()
}

fn parse_arg<T: FromStr<Err = UnknownValue>>(name: &str, value: &str) -> Result<T, BusError> {
    value
        .parse()
        .map_err(|e: UnknownValue| BusError::InvalidArgs(format!("argument {name}: {e}")))
}

/// Most values of an `as` enum argument: each type at most once, with room
/// for repeats a client may send.
const MAX_ENUM_VALUES: usize = 32;

/// An `as` of enum strings, capped before any value is parsed, and with
/// repeats removed (first occurrence kept), so that a huge list costs
/// nothing downstream.
fn parse_args<T: FromStr<Err = UnknownValue> + PartialEq>(
    name: &str,
    values: &[String],
) -> Result<Vec<T>, BusError> {
    if values.len() > MAX_ENUM_VALUES {
        return Err(BusError::InvalidArgs(format!(
            "argument {name}: {} values; at most {MAX_ENUM_VALUES}",
            values.len()
        )));
    }
    let mut parsed: Vec<T> = Vec::with_capacity(values.len());
    for value in values {
        let v = parse_arg(name, value)?;
        if !parsed.contains(&v) {
            parsed.push(v);
        }
    }
    Ok(parsed)
}

fn parse_hash_data(name: &str, wire: &WireHashData) -> Result<HashData, BusError> {
    HashData::parse(
        &wire.hash_algorithm,
        &wire.issuer_name_hash,
        &wire.issuer_key_hash,
        &wire.serial_number,
    )
    .map_err(|e| BusError::InvalidArgs(format!("argument {name}: {e}")))
}

/// Calls in flight at once, waiting ones included.
const MAX_CALLS_IN_FLIGHT: usize = 64;
/// Calls of one sender in flight at once.
const MAX_CALLS_PER_SENDER: usize = 16;

/// The calls in flight, in total and per sender.
#[derive(Debug, Default)]
struct InFlight {
    total: usize,
    per_sender: HashMap<String, usize>,
}

/// A call let in by `admit`; counted out again when dropped.
struct CallTicket {
    flight: Arc<std::sync::Mutex<InFlight>>,
    sender: String,
}

impl Drop for CallTicket {
    fn drop(&mut self) {
        let mut flight = self.flight.lock().unwrap_or_else(|e| e.into_inner());
        flight.total = flight.total.saturating_sub(1);
        if let Some(n) = flight.per_sender.get_mut(&self.sender) {
            *n -= 1;
            if *n == 0 {
                flight.per_sender.remove(&self.sender);
            }
        }
    }
}

/// An authorized caller, counted in flight until the call ends.
struct Admitted {
    caller: Caller,
    _ticket: CallTicket,
}

impl std::ops::Deref for Admitted {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.caller
    }
}

/// Callers remembered by unique name. Unique names are never reused on a
/// bus, so an entry cannot go stale; the map is emptied when full so that
/// it stays bounded.
const MAX_CACHED_CALLERS: usize = 4096;

/// The served object.
/// The interface as the object server holds it.
type Served = ExactSignatures<EvseSecurityInterface>;

/// Each method of the interface with its in-signature, as the introspection
/// XML gives it (a unit test holds the two in step).
const METHOD_SIGNATURES: &[(&str, &str)] = &[
    ("InstallCaCertificate", "ss"),
    ("DeleteCertificate", "(ssss)"),
    ("ConfirmCertificateInUse", "(ssss)"),
    ("VerifyCertificate", "sas"),
    ("VerifyCertificateDetailed", "sas"),
    ("GetInstalledCertificates", "as"),
    ("IsCaCertificateInstalled", "s"),
    ("GetVerifyFile", "s"),
    ("GetVerifyLocation", "s"),
    ("UpdateLeafCertificate", "ss"),
    ("GetV2gOcspRequestData", ""),
    ("GetMoOcspRequestData", "s"),
    ("UpdateOcspCache", "(ssss)s"),
    ("GetCertificateStatusRequestData", "s"),
    ("UpdateCertificateStatus", "(ssss)ssx"),
    ("GenerateCertificateSigningRequest", "ssssb"),
    ("GetLeafCertificateInfo", "ssb"),
    ("GetLeafCertificateInfoForId", "ssb"),
    ("GetAllValidCertificatesInfo", "ssb"),
    ("GetLeafExpiryDaysCount", "s"),
    ("OpenLeafCredentials", "ss"),
    ("VerifyFileSignature", "sss"),
    ("VerifyFileSignatureFd", "hss"),
    ("GarbageCollect", ""),
    ("GetCertificateDetails", "as"),
    ("GetCertificateStatusEntries", ""),
    ("GetStoreUsage", ""),
];

/// The methods of `org.freedesktop.DBus.Properties`.
const PROPERTIES_SIGNATURES: &[(&str, &str)] = &[("Get", "ss"), ("GetAll", "s"), ("Set", "ssv")];

struct EvseSecurityInterface {
    security: Arc<EvseSecurity>,
    permits: Arc<Semaphore>,
    file_checks: Semaphore,
    roles: Roles,
    callers: std::sync::Mutex<HashMap<String, (u32, Vec<u32>)>>,
    in_flight: Arc<std::sync::Mutex<InFlight>>,
    /// Changes to announce, in order, after the replies.
    announcer: mpsc::Sender<Announcement>,
}

impl EvseSecurityInterface {
    /// Checks the caller's UID and GIDs, taken from the bus (never from a
    /// PID), against the roles, for the right the called member needs
    /// ([`Need::of`]). Denied calls that would change the store are logged
    /// with the UID.
    async fn authorize(&self, hdr: &Header<'_>, conn: &Connection) -> Result<Admitted, BusError> {
        let member = hdr.member().map_or("", |m| m.as_str());
        let need = Need::of(member);
        let ticket = self.admit(hdr)?;
        let caller = self.caller_of(hdr, conn).await?;
        if self.roles.allows(caller.uid, &caller.gids, need) {
            return Ok(Admitted {
                caller,
                _ticket: ticket,
            });
        }
        if need == Need::Write {
            tracing::warn!(uid = caller.uid, member, "access denied");
        }
        Err(BusError::AccessDenied(format!(
            "uid {} may not call {member}",
            caller.uid
        )))
    }

    /// Lets a call in while fewer than [`MAX_CALLS_IN_FLIGHT`] calls, and
    /// fewer than [`MAX_CALLS_PER_SENDER`] of its sender's, are in flight;
    /// otherwise `LimitsExceeded` at once. Waiting calls hold their
    /// arguments, so their number is what bounds the daemon's memory.
    fn admit(&self, hdr: &Header<'_>) -> Result<CallTicket, BusError> {
        let sender = hdr.sender().map(|s| s.to_string()).unwrap_or_default();
        let mut flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let mine = flight.per_sender.get(&sender).copied().unwrap_or(0);
        if flight.total >= MAX_CALLS_IN_FLIGHT || mine >= MAX_CALLS_PER_SENDER {
            return Err(BusError::LimitsExceeded(format!(
                "{} calls in flight, {mine} of them from {sender}: try again later",
                flight.total
            )));
        }
        flight.total += 1;
        *flight.per_sender.entry(sender.clone()).or_insert(0) += 1;
        Ok(CallTicket {
            flight: self.in_flight.clone(),
            sender,
        })
    }

    /// The caller's UID and GIDs, from the bus (never from a PID).
    async fn caller_of(&self, hdr: &Header<'_>, conn: &Connection) -> Result<Caller, BusError> {
        if !conn.is_bus() {
            // Peer to peer: the caller is whoever holds the other end.
            let creds = conn
                .peer_creds()
                .await
                .map_err(|e| BusError::AccessDenied(format!("peer unknown: {e}")))?;
            let uid = creds.unix_user_id().ok_or_else(|| {
                BusError::AccessDenied("the socket gave no UID for the peer".into())
            })?;
            let gids = creds.unix_group_ids().cloned().unwrap_or_default();
            return Ok(Caller { uid, gids });
        }
        let Some(sender) = hdr.sender() else {
            return Err(BusError::AccessDenied("the call has no sender".into()));
        };
        let cached = self
            .callers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sender.as_str())
            .cloned();
        let (uid, gids) = match cached {
            Some(c) => c,
            None => {
                let dbus = zbus::fdo::DBusProxy::new(conn).await?;
                let creds = dbus
                    .get_connection_credentials(zbus::names::BusName::from(sender.to_owned()))
                    .await
                    .map_err(|e| {
                        BusError::AccessDenied(format!("caller unknown to the bus: {e}"))
                    })?;
                let uid = creds.unix_user_id().ok_or_else(|| {
                    BusError::AccessDenied("the bus gave no UID for the caller".into())
                })?;
                let gids = creds.unix_group_ids().cloned().unwrap_or_default();
                let mut callers = self.callers.lock().unwrap_or_else(|e| e.into_inner());
                if callers.len() >= MAX_CACHED_CALLERS {
                    callers.clear();
                }
                callers.insert(sender.to_string(), (uid, gids.clone()));
                (uid, gids)
            }
        };
        Ok(Caller { uid, gids })
    }

    /// The reply of 5.11 (among the leaves whose commonName is `secc_id`,
    /// when given), with what `caller` may see of it.
    async fn selected_leaf_info(
        &self,
        caller: &Caller,
        leaf: LeafCertificateType,
        secc_id: Option<String>,
        include_ocsp: bool,
    ) -> Result<(String, WireCertificateInfo), BusError> {
        let (status, info) = self
            .read(move |s| {
                s.get_leaf_certificate_info_for_id(leaf, secc_id.as_deref(), include_ocsp)
            })
            .await?;
        let info = info
            .map(|i| self.for_caller(caller, leaf, i))
            .map(wire_certificate_info)
            .transpose()?
            .unwrap_or_default();
        Ok((status.as_str().to_owned(), info))
    }

    /// Leaf info as `caller` may see it: the key password only for those
    /// who may read the key it opens (contract §11.3).
    fn for_caller(
        &self,
        caller: &Caller,
        leaf: LeafCertificateType,
        mut info: CertificateInfo,
    ) -> CertificateInfo {
        if !self.roles.may_read_keys(caller.uid, &caller.gids, leaf) {
            info.password = None;
        }
        info
    }

    /// Runs a file check on a blocking thread of its own small pool, so
    /// that huge files never hold the permits the certificate methods
    /// need; once a second it asks the bus whether the caller is still
    /// there, and stops the hashing when it is not.
    async fn file_check<F>(
        &self,
        hdr: &Header<'_>,
        conn: &Connection,
        work: F,
    ) -> Result<bool, BusError>
    where
        F: FnOnce(&EvseSecurity, Arc<AtomicBool>) -> bool + Send + 'static,
    {
        let _permit = self
            .file_checks
            .acquire()
            .await
            .map_err(|_| BusError::Internal("daemon is shutting down".into()))?;
        let sender = hdr
            .sender()
            .map(|s| zbus::names::BusName::from(s.to_owned()));
        // A peer-to-peer connection has no bus to ask; its end closes it.
        let dbus = zbus::fdo::DBusProxy::new(conn).await.ok();
        let gone = || async {
            match (&dbus, &sender) {
                (Some(dbus), Some(sender)) => {
                    matches!(dbus.name_has_owner(sender.clone()).await, Ok(false))
                }
                _ => false,
            }
        };
        // A call that waited for its turn may have lost its caller already.
        if gone().await {
            return Ok(false);
        }
        let cancel = Arc::new(AtomicBool::new(false));
        // Dropped with this call (the daemon stops, the connection goes):
        // the hashing stops too.
        let _stop = CancelOnDrop(cancel.clone());
        let security = self.security.clone();
        let flag = cancel.clone();
        let mut task = tokio::task::spawn_blocking(move || work(&security, flag));
        loop {
            tokio::select! {
                done = &mut task => {
                    return done.map_err(|e| BusError::Internal(format!("worker failed: {e}")));
                }
                () = tokio::time::sleep(CALLER_CHECK_INTERVAL) => {
                    if gone().await {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Runs core work on a blocking thread, bounded by the permits.
    async fn blocking<T, F>(&self, work: F) -> Result<T, BusError>
    where
        T: Send + 'static,
        F: FnOnce(&EvseSecurity) -> T + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| BusError::Internal("daemon is shutting down".into()))?;
        let security = self.security.clone();
        tokio::task::spawn_blocking(move || work(&security))
            .await
            .map_err(|e| BusError::Internal(format!("worker failed: {e}")))
    }

    /// Runs a read of the current snapshot on the dispatching thread: it
    /// only reads memory, and a hand-off to a blocking thread would cost
    /// more than the work. While edits made by hand wait to be read, it
    /// goes to a blocking thread like any other call.
    async fn read<T, F>(&self, work: F) -> Result<T, BusError>
    where
        T: Send + 'static,
        F: FnOnce(&EvseSecurity) -> T + Send + 'static,
    {
        if self.security.has_unread_disk_changes() {
            return self.blocking(work).await;
        }
        Ok(work(&self.security))
    }

    /// Runs a call that may change the store, announces what it changed
    /// and answers its result value.
    async fn change<R, F>(&self, emitter: &SignalEmitter<'_>, work: F) -> Result<String, BusError>
    where
        R: ContractEnum + Send + 'static,
        F: FnOnce(&EvseSecurity) -> Result<Outcome<R>, security::Error> + Send + 'static,
    {
        let outcome = self.blocking(work).await??;
        self.queue(emitter, outcome.changes).await;
        Ok(outcome.result.as_str().to_owned())
    }

    /// Hands `changes` to the announcer task, so that the reply goes out
    /// first and the signals follow it, in the order of the writes.
    async fn queue(&self, emitter: &SignalEmitter<'_>, changes: Vec<StoreChange>) {
        if changes.is_empty() {
            return;
        }
        if let Err(unsent) = self.announcer.send(Announcement::Store(changes)).await {
            // The announcer is gone only while the daemon stops.
            self.announce(emitter, &unsent.0).await;
        }
    }

    async fn announce(&self, emitter: &SignalEmitter<'_>, announcement: &Announcement) {
        let changes = match announcement {
            Announcement::Store(changes) if !changes.is_empty() => changes,
            Announcement::Store(_) => return,
            Announcement::LeafExpiring(leaf, days) => {
                tracing::info!(leaf = %leaf, days, "LeafCertificateExpiring");
                if let Err(e) = Self::leaf_certificate_expiring(emitter, leaf.as_str(), *days).await
                {
                    tracing::warn!(error = %e, "cannot emit LeafCertificateExpiring");
                }
                return;
            }
        };
        for change in changes {
            let ca = change.ca.map(CaCertificateType::as_str).unwrap_or("");
            let leaf = change.leaf.map(LeafCertificateType::as_str).unwrap_or("");
            if let Err(e) =
                Self::certificate_store_updated(emitter, change.operation.as_str(), ca, leaf).await
            {
                tracing::warn!(error = %e, "cannot emit CertificateStoreUpdated");
            }
        }
        if let Err(e) = self.certificate_entries_changed(emitter).await {
            tracing::warn!(error = %e, "cannot emit PropertiesChanged");
        }
    }
}

#[interface(name = "org.evsec.EvseSecurity1")]
impl EvseSecurityInterface {
    /// Installs a CA certificate into a bundle (contract 5.1).
    #[zbus(out_args("result"))]
    async fn install_ca_certificate(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate: String,
        certificate_type: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let ca: CaCertificateType = parse_arg("certificate_type", &certificate_type)?;
        self.change(&emitter, move |s| {
            Ok(s.install_ca_certificate(&certificate, ca))
        })
        .await
    }

    /// Deletes the certificate with this hash data (contract 5.2).
    #[zbus(out_args("result"))]
    async fn delete_certificate(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_hash_data: WireHashData,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let query = parse_hash_data("certificate_hash_data", &certificate_hash_data)?;
        self.change(&emitter, move |s| Ok(s.delete_certificate(&query)))
            .await
    }

    /// The OCPP client's connection now uses this certificate: the CSMS
    /// client certificates (and, under AdditionalRootCertificateCheck, the
    /// CSMS root) it replaces go (contract 11.2).
    #[zbus(out_args("result"))]
    async fn confirm_certificate_in_use(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_hash_data: WireHashData,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let query = parse_hash_data("certificate_hash_data", &certificate_hash_data)?;
        self.change(&emitter, move |s| Ok(s.confirm_certificate_in_use(&query)))
            .await
    }

    /// Verifies a chain, leaf first, against the bundles of the given types
    /// (contract 5.4).
    #[zbus(out_args("result"))]
    async fn verify_certificate(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_chain: String,
        certificate_types: Vec<String>,
    ) -> Result<String, BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let types: Vec<LeafCertificateType> = parse_args("certificate_types", &certificate_types)?;
        // A repeated chain is answered from the verdict cache at once.
        if let Some(result) = self
            .security
            .cached_verification(&certificate_chain, &types)
        {
            return Ok(result.as_str().to_owned());
        }
        let result = self
            .blocking(move |s| s.verify_certificate(&certificate_chain, &types))
            .await??;
        Ok(result.as_str().to_owned())
    }

    /// `VerifyCertificate` with why (contract §11): `detail` holds
    /// `reason`, and where known the `depth` and `subject` of the
    /// certificate that failed and OpenSSL's `openssl_error`.
    #[zbus(out_args("result", "detail"))]
    async fn verify_certificate_detailed(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_chain: String,
        certificate_types: Vec<String>,
    ) -> Result<(String, HashMap<String, OwnedVariant>), BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let types: Vec<LeafCertificateType> = parse_args("certificate_types", &certificate_types)?;
        let verdict = self
            .blocking(move |s| s.verify_certificate_detailed(&certificate_chain, &types))
            .await?;
        let mut detail = HashMap::new();
        detail.insert("reason".to_owned(), owned(verdict.reason)?);
        if let Some(depth) = verdict.depth {
            detail.insert(
                "depth".to_owned(),
                owned(u32::try_from(depth).unwrap_or(u32::MAX))?,
            );
        }
        if let Some(subject) = verdict.subject {
            detail.insert("subject".to_owned(), owned(subject)?);
        }
        if let Some(code) = verdict.openssl_error {
            detail.insert("openssl_error".to_owned(), owned(code)?);
        }
        Ok((verdict.result.as_str().to_owned(), detail))
    }

    /// Lists installed certificates as OCPP hash data (contract 5.5).
    #[zbus(out_args("status", "certificate_hash_data_chain"))]
    async fn get_installed_certificates(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_types: Vec<String>,
    ) -> Result<(String, Vec<WireHashDataChain>), BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let types: Vec<CertificateType> = parse_args("certificate_types", &certificate_types)?;
        let (status, chains) = self
            .blocking(move |s| s.get_installed_certificates(&types))
            .await?;
        let chains = chains
            .into_iter()
            .map(|c| WireHashDataChain {
                certificate_type: c.certificate_type.as_str().to_owned(),
                certificate_hash_data: WireHashData::from(&c.certificate_hash_data),
                child_certificate_hash_data: c
                    .child_certificate_hash_data
                    .iter()
                    .map(WireHashData::from)
                    .collect(),
            })
            .collect();
        Ok((status.as_str().to_owned(), chains))
    }

    /// True when the bundle holds a currently valid root (contract 5.9).
    #[zbus(out_args("result"))]
    async fn is_ca_certificate_installed(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_type: String,
    ) -> Result<bool, BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let ca: CaCertificateType = parse_arg("certificate_type", &certificate_type)?;
        self.read(move |s| s.is_ca_certificate_installed(ca)).await
    }

    /// A file holding the bundle's roots, usable as CAfile (contract 5.13).
    #[zbus(out_args("result"))]
    async fn get_verify_file(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_type: String,
    ) -> Result<String, BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let ca: CaCertificateType = parse_arg("certificate_type", &certificate_type)?;
        self.read(move |s| s.get_verify_file(ca)).await
    }

    /// The bundle file, or its directory usable as CApath (contract 5.14).
    #[zbus(out_args("result"))]
    async fn get_verify_location(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_type: String,
    ) -> Result<String, BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let ca: CaCertificateType = parse_arg("certificate_type", &certificate_type)?;
        self.read(move |s| s.get_verify_location(ca)).await
    }

    /// Installs the station's leaf certificate, chain leaf first (contract 5.3).
    #[zbus(out_args("result"))]
    async fn update_leaf_certificate(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_chain: String,
        certificate_type: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let leaf: LeafCertificateType = parse_arg("certificate_type", &certificate_type)?;
        self.change(&emitter, move |s| {
            s.update_leaf_certificate(&certificate_chain, leaf)
        })
        .await
    }

    /// OCSP request data of the SECC leaves and their Sub-CAs (contract 5.6).
    #[zbus(out_args("ocsp_request_data"))]
    async fn get_v2g_ocsp_request_data(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<WireOcspEntry>, BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        Ok(wire_ocsp_requests(
            self.blocking(|s| s.get_v2g_ocsp_request_data()).await?,
        ))
    }

    /// OCSP request data of a contract chain (contract 5.7).
    #[zbus(out_args("ocsp_request_data"))]
    async fn get_mo_ocsp_request_data(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_chain: String,
    ) -> Result<Vec<WireOcspEntry>, BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let requests = self
            .blocking(move |s| s.get_mo_ocsp_request_data(&certificate_chain))
            .await??;
        Ok(wire_ocsp_requests(requests))
    }

    /// Caches an OCSP response, base64 of DER (contract 5.8).
    #[zbus(out_args("result"))]
    async fn update_ocsp_cache(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_hash_data: WireHashData,
        ocsp_response: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let query = parse_hash_data("certificate_hash_data", &certificate_hash_data)?;
        self.change(&emitter, move |s| {
            s.update_ocsp_cache(&query, &ocsp_response)
        })
        .await
    }

    /// The members of a chain whose revocation status to ask the CSMS
    /// about, with where to ask (contract 11.2, OCPP 2.1 M07).
    #[zbus(out_args("requests"))]
    async fn get_certificate_status_request_data(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_chain: String,
    ) -> Result<Vec<WireStatusRequest>, BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let requests = self
            .blocking(move |s| s.get_certificate_status_request_data(&certificate_chain))
            .await??;
        Ok(requests
            .into_iter()
            .map(|(hash, urls)| WireStatusRequest {
                certificate_hash_data: WireHashData::from(&hash),
                urls,
            })
            .collect())
    }

    /// Keeps the CSMS's answer on a certificate's revocation status until
    /// `next_update`, a week at most (contract 11.2, OCPP 2.1 M07).
    #[zbus(out_args("result"))]
    async fn update_certificate_status(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_hash_data: WireHashData,
        status: String,
        source: String,
        next_update: i64,
    ) -> Result<String, BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let query = parse_hash_data("certificate_hash_data", &certificate_hash_data)?;
        let result = self
            .blocking(move |s| s.update_certificate_status(&query, &status, &source, next_update))
            .await??;
        Ok(result.as_str().to_owned())
    }

    /// A new key in the key directory and a CSR for it (contract 5.10).
    #[zbus(out_args("status", "csr"))]
    // The contract's five arguments, plus the caller's header and connection.
    #[allow(clippy::too_many_arguments)]
    async fn generate_certificate_signing_request(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_type: String,
        country: String,
        organization: String,
        common: String,
        use_tpm: bool,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(String, String), BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let leaf: LeafCertificateType = parse_arg("certificate_type", &certificate_type)?;
        let outcome = self
            .blocking(move |s| {
                s.generate_certificate_signing_request(
                    leaf,
                    &country,
                    &organization,
                    &common,
                    use_tpm,
                )
            })
            .await??;
        self.queue(&emitter, outcome.changes).await;
        let (status, csr) = outcome.result;
        Ok((status.as_str().to_owned(), csr))
    }

    /// Paths of the newest valid leaf, its chain and key (contract 5.11).
    #[zbus(out_args("status", "info"))]
    async fn get_leaf_certificate_info(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_type: String,
        encoding: String,
        include_ocsp: bool,
    ) -> Result<(String, WireCertificateInfo), BusError> {
        let caller = self.authorize(&hdr, conn).await?;
        let leaf: LeafCertificateType = parse_arg("certificate_type", &certificate_type)?;
        let _: EncodingFormat = parse_arg("encoding", &encoding)?;
        self.selected_leaf_info(&caller, leaf, None, include_ocsp)
            .await
    }

    /// As GetLeafCertificateInfo, among the leaves whose commonName is
    /// `secc_id` (contract 11.1: one SECC leaf per EVSE).
    #[zbus(out_args("status", "info"))]
    async fn get_leaf_certificate_info_for_id(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_type: String,
        secc_id: String,
        include_ocsp: bool,
    ) -> Result<(String, WireCertificateInfo), BusError> {
        let caller = self.authorize(&hdr, conn).await?;
        let leaf: LeafCertificateType = parse_arg("certificate_type", &certificate_type)?;
        self.selected_leaf_info(&caller, leaf, Some(secc_id), include_ocsp)
            .await
    }

    /// The newest valid leaf per root (contract 5.12).
    #[zbus(out_args("status", "info"))]
    async fn get_all_valid_certificates_info(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_type: String,
        encoding: String,
        include_ocsp: bool,
    ) -> Result<(String, Vec<WireCertificateInfo>), BusError> {
        let caller = self.authorize(&hdr, conn).await?;
        let leaf: LeafCertificateType = parse_arg("certificate_type", &certificate_type)?;
        let _: EncodingFormat = parse_arg("encoding", &encoding)?;
        let (status, infos) = self
            .read(move |s| s.get_all_valid_certificates_info(leaf, include_ocsp))
            .await?;
        let infos = infos
            .into_iter()
            .map(|i| self.for_caller(&caller, leaf, i))
            .map(wire_certificate_info)
            .collect::<Result<_, _>>()?;
        Ok((status.as_str().to_owned(), infos))
    }

    /// Whole days until the selected leaf expires, 0 when none (contract 5.15).
    #[zbus(out_args("days"))]
    async fn get_leaf_expiry_days_count(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_type: String,
    ) -> Result<i32, BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let leaf: LeafCertificateType = parse_arg("certificate_type", &certificate_type)?;
        self.read(move |s| s.get_leaf_expiry_days_count(leaf)).await
    }

    /// The key and chain of the leaf 5.11 selects (or of the SECC leaf
    /// whose commonName is `secc_id`), as open read-only descriptors, for
    /// the type's key groups only (contract 11.3).
    #[zbus(out_args("status", "files", "info"))]
    async fn open_leaf_credentials(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_type: String,
        secc_id: String,
    ) -> Result<(String, Vec<zbus::OwnedFd>, WireCertificateInfo), BusError> {
        let _call = self.admit(&hdr)?;
        let caller = self.caller_of(&hdr, conn).await?;
        let leaf: LeafCertificateType = parse_arg("certificate_type", &certificate_type)?;
        if !self
            .roles
            .may_open_credentials(caller.uid, &caller.gids, leaf)
        {
            tracing::warn!(uid = caller.uid, leaf = %leaf, "credentials refused: not in the type's key groups");
            return Err(BusError::AccessDenied(format!(
                "uid {} is in no key group of {leaf}",
                caller.uid
            )));
        }
        let (status, credentials) = self
            .blocking(move |s| s.open_leaf_credentials(leaf, &secc_id))
            .await??;
        let Some(c) = credentials else {
            return Ok((status.as_str().to_owned(), vec![], HashMap::new()));
        };
        tracing::info!(uid = caller.uid, leaf = %leaf, key = %c.info.key.display(), "credentials handed out");
        let files = vec![
            zbus::OwnedFd::from(std::os::fd::OwnedFd::from(c.key)),
            zbus::OwnedFd::from(std::os::fd::OwnedFd::from(c.chain)),
        ];
        let info = wire_certificate_info(self.for_caller(&caller, leaf, c.info))?;
        Ok((status.as_str().to_owned(), files, info))
    }

    /// Checks a file's signature with a certificate's key; the caller checks
    /// the certificate itself with VerifyCertificate([MF]) (contract 5.16).
    #[zbus(out_args("valid"))]
    async fn verify_file_signature(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        file_path: String,
        signing_certificate: String,
        signature: String,
    ) -> Result<bool, BusError> {
        let caller = self.authorize(&hdr, conn).await?;
        self.file_check(&hdr, conn, move |s, cancel| {
            s.verify_file_signature_until(
                &file_path,
                &signing_certificate,
                &signature,
                Some(&caller),
                cancel,
            )
        })
        .await
    }

    /// Checks the signature of a file the caller opened and passed as a
    /// descriptor (contract 11.3): the caller's rights decide what can be
    /// checked, and the daemon's sandbox does not hide the caller's files.
    #[zbus(out_args("valid"))]
    async fn verify_file_signature_fd(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        file: zbus::OwnedFd,
        signing_certificate: String,
        signature: String,
    ) -> Result<bool, BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let file = std::fs::File::from(std::os::fd::OwnedFd::from(file));
        self.file_check(&hdr, conn, move |s, cancel| {
            s.verify_file_signature_fd(&file, &signing_certificate, &signature, cancel)
        })
        .await
    }

    /// Removes expired leaves beyond the newest, unused CSR keys and stale
    /// OCSP responses now (contract 5.17).
    async fn garbage_collect(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let changes = self.blocking(|s| s.garbage_collect()).await?;
        self.queue(&emitter, changes).await;
        Ok(())
    }

    /// Every certificate of GetInstalledCertificates with its subject and
    /// issuer CN, validity, hash data, file, SHA-256 fingerprint and key
    /// algorithm (an evsec extension, for operators).
    #[zbus(out_args("certificates"))]
    async fn get_certificate_details(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        certificate_types: Vec<String>,
    ) -> Result<Vec<WireCertificateDetails>, BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let types: Vec<CertificateType> = parse_args("certificate_types", &certificate_types)?;
        let listed = self.blocking(move |s| s.list_certificates(&types)).await?;
        Ok(listed
            .into_iter()
            .map(|c| {
                let issuer = c
                    .cert
                    .x509()
                    .and_then(|x| {
                        x.issuer_name()
                            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
                            .next()
                            .and_then(|e| e.data().to_string().ok())
                    })
                    .unwrap_or_default();
                WireCertificateDetails {
                    certificate_type: c.certificate_type.as_str().to_owned(),
                    subject: c.cert.common_name(),
                    issuer,
                    not_before: c.cert.not_before,
                    not_after: c.cert.not_after,
                    hash: WireHashData::from(&c.hash),
                    path: c.path.display().to_string(),
                    fingerprint: crate::x509::hex(&c.cert.fingerprint),
                    key_algorithm: c.cert.key_algorithm.as_str().to_owned(),
                }
            })
            .collect())
    }

    /// The fresh certificate status entries (OCPP 2.1 M07; an evsec
    /// extension, for operators).
    #[zbus(out_args("entries"))]
    async fn get_certificate_status_entries(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<WireStatusEntry>, BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let entries = self.read(|s| s.certificate_statuses()).await?;
        Ok(entries
            .into_iter()
            .map(|e| WireStatusEntry {
                certificate_hash_data: WireHashData::from(&e.hash),
                status: e.status.as_str().to_owned(),
                source: e.source.as_str().to_owned(),
                received: e.received,
                expires: e.expires,
            })
            .collect())
    }

    /// Files the store holds, their quota, bytes they take, and that quota
    /// (an evsec extension, for operators).
    #[zbus(out_args("files", "max_files", "bytes", "max_bytes"))]
    async fn get_store_usage(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(u32, u32, u64, u64), BusError> {
        let _call = self.authorize(&hdr, conn).await?;
        let (usage, limits) = self.read(|s| s.store_usage()).await?;
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok((
            clamp(usage.files),
            clamp(limits.max_store_entries),
            usage.bytes,
            limits.max_store_bytes,
        ))
    }

    /// Sent after every change on disk made by a method.
    #[zbus(signal)]
    async fn certificate_store_updated(
        emitter: &SignalEmitter<'_>,
        operation: &str,
        ca_certificate_type: &str,
        leaf_certificate_type: &str,
    ) -> zbus::Result<()>;

    /// The leaf that GetLeafCertificateInfo selects for the type is in the
    /// `[renewal] days_before` window, with its whole days left; 0 when no
    /// valid leaf of the type is left (contract 11.2).
    #[zbus(signal)]
    async fn leaf_certificate_expiring(
        emitter: &SignalEmitter<'_>,
        leaf_certificate_type: &str,
        days: i32,
    ) -> zbus::Result<()>;

    /// The daemon's version.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn version(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, BusError> {
        if let Some(hdr) = hdr {
            let _call = self.authorize(&hdr, conn).await?;
        }
        Ok(env!("CARGO_PKG_VERSION").to_owned())
    }

    /// Certificates installed now, all stores together.
    #[zbus(property)]
    async fn certificate_entries(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<u32, BusError> {
        // No header: the daemon itself, emitting PropertiesChanged.
        if let Some(hdr) = hdr {
            let _call = self.authorize(&hdr, conn).await?;
        }
        self.read(|s| s.certificate_entries()).await
    }
}

/// What the announcer task signals, in the order it is handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// `CertificateStoreUpdated`, once per change.
    Store(Vec<StoreChange>),
    /// `LeafCertificateExpiring` with the type and its whole days left.
    LeafExpiring(LeafCertificateType, i32),
}

/// A running service: keep it alive to stay on the bus.
pub struct Server {
    connection: Connection,
    announcer: mpsc::Sender<Announcement>,
}

/// Writes whose changes may wait to be announced; a writer beyond them
/// waits for the announcer.
const ANNOUNCER_QUEUE: usize = 64;

impl Server {
    /// Where what the daemon does on its own (the store maintenance) goes
    /// to be signalled, in order with the calls' own changes.
    pub fn announcer(&self) -> mpsc::Sender<Announcement> {
        self.announcer.clone()
    }

    /// Returns when the bus connection is gone (the bus stopped or dropped
    /// the daemon): from then on nothing can reach the store.
    pub async fn closed(&self) {
        self.connection.closed().await
    }
}

/// Why the service could not be put on the bus.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another process owns the name.
    #[error("bus name {BUS_NAME} is already owned on the {0} bus (is another evsecd running?)")]
    NameTaken(Bus),
    /// The bus cannot be reached or refused us.
    #[error("cannot serve on the {bus} bus: {source}")]
    Bus {
        /// The bus.
        bus: Bus,
        /// Why.
        source: zbus::Error,
    },
}

/// Connects to `bus`, exports the interface and takes the well-known name.
/// The name is requested without replacement either way: a second daemon
/// fails instead of taking the name from the first.
pub async fn serve(
    security: Arc<EvseSecurity>,
    roles: Roles,
    bus: &Bus,
) -> Result<Server, ServeError> {
    let bus_error = |source: zbus::Error| ServeError::Bus {
        bus: bus.clone(),
        source,
    };
    let server = serve_on(builder(bus), security, roles)
        .await
        .map_err(bus_error)?;
    let flags = zbus::fdo::RequestNameFlags::DO_NOT_QUEUE;
    match server
        .connection
        .request_name_with_flags(BUS_NAME, flags)
        .await
    {
        Ok(zbus::fdo::RequestNameReply::PrimaryOwner) => {}
        Ok(_) | Err(zbus::Error::NameTaken) => return Err(ServeError::NameTaken(bus.clone())),
        Err(e) => return Err(bus_error(e)),
    }
    Ok(server)
}

/// Exports the interface on the connection that `builder` makes, without
/// taking a name: a bus connection for [`serve`], or a peer-to-peer one,
/// whose caller is the peer (its credentials come from the socket). Tests
/// drive the whole interface in process this way.
pub async fn serve_on(
    builder: zbus::connection::Builder<'_>,
    security: Arc<EvseSecurity>,
    roles: Roles,
) -> zbus::Result<Server> {
    let (announcer, changes) = mpsc::channel(ANNOUNCER_QUEUE);
    let iface = EvseSecurityInterface {
        announcer: announcer.clone(),
        security,
        permits: Arc::new(Semaphore::new(MAX_BLOCKING_CALLS)),
        file_checks: Semaphore::new(MAX_FILE_CHECKS),
        roles,
        callers: std::sync::Mutex::new(HashMap::new()),
        in_flight: Arc::default(),
    };
    let connection = builder
        .serve_at(OBJECT_PATH, ExactSignatures::new(iface, METHOD_SIGNATURES))
        .build()
        .await?;
    // The object is complete before the name is taken, so that no caller
    // ever meets zbus's own Properties in place of the guarded one.
    let server = connection.object_server();
    let iface = server.interface::<_, Served>(OBJECT_PATH).await?;
    server
        .remove::<zbus::fdo::Properties, _>(OBJECT_PATH)
        .await?;
    server
        .at(
            OBJECT_PATH,
            ExactSignatures::new(
                GuardedProperties {
                    iface: iface.clone(),
                },
                PROPERTIES_SIGNATURES,
            ),
        )
        .await?;
    tokio::spawn(announce_changes(iface, changes));
    Ok(Server {
        connection,
        announcer,
    })
}

/// `org.freedesktop.DBus.Properties` of the object, in place of zbus's
/// own: that one's `GetAll` leaves out every property whose getter fails,
/// so a caller without the right would get an empty dictionary instead of
/// `AccessDenied` (contract §3). The properties are read-only.
struct GuardedProperties {
    iface: zbus::object_server::InterfaceRef<Served>,
}

impl GuardedProperties {
    fn ours(interface_name: &str) -> Result<(), BusError> {
        if interface_name == super::INTERFACE {
            Ok(())
        } else {
            Err(BusError::UnknownInterface(format!(
                "no properties on interface `{interface_name}`"
            )))
        }
    }
}

fn owned<T: Into<Variant<'static>>>(value: T) -> Result<OwnedVariant, BusError> {
    OwnedVariant::try_from(value.into())
        .map_err(|e| BusError::Internal(format!("cannot encode a property: {e}")))
}

#[interface(name = "org.freedesktop.DBus.Properties", introspection_docs = false)]
impl GuardedProperties {
    /// A property's value.
    async fn get(
        &self,
        interface_name: String,
        property_name: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<OwnedVariant, BusError> {
        Self::ours(&interface_name)?;
        let this = self.iface.get().await;
        match property_name.as_str() {
            "Version" => owned(this.version(Some(hdr), conn).await?),
            "CertificateEntries" => owned(this.certificate_entries(Some(hdr), conn).await?),
            _ => Err(BusError::UnknownProperty(format!(
                "no property `{property_name}`"
            ))),
        }
    }

    /// Every property, or `AccessDenied` for a caller who may not read
    /// them.
    async fn get_all(
        &self,
        interface_name: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<HashMap<String, OwnedVariant>, BusError> {
        if interface_name != super::INTERFACE {
            // Introspectable and Peer have no properties.
            return Ok(HashMap::new());
        }
        let this = self.iface.get().await;
        let version = this.version(Some(hdr.clone()), conn).await?;
        let entries = this.certificate_entries(Some(hdr), conn).await?;
        Ok(HashMap::from([
            ("Version".to_owned(), owned(version)?),
            ("CertificateEntries".to_owned(), owned(entries)?),
        ]))
    }

    /// Every property is read-only.
    async fn set(
        &self,
        interface_name: String,
        property_name: String,
        _value: OwnedVariant,
    ) -> Result<(), BusError> {
        Self::ours(&interface_name)?;
        Err(BusError::PropertyReadOnly(format!(
            "property `{property_name}` is read-only"
        )))
    }

    /// Sent when a property changes.
    #[zbus(signal)]
    async fn properties_changed(
        emitter: &SignalEmitter<'_>,
        interface_name: &str,
        changed_properties: HashMap<&str, Variant<'_>>,
        invalidated_properties: &[&str],
    ) -> zbus::Result<()>;
}

/// Announces every change, in the order the writes made them.
async fn announce_changes(
    iface: zbus::object_server::InterfaceRef<Served>,
    mut announcements: mpsc::Receiver<Announcement>,
) {
    while let Some(announcement) = announcements.recv().await {
        iface
            .get()
            .await
            .announce(iface.signal_emitter(), &announcement)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::METHOD_SIGNATURES;

    /// The table against the shipped introspection XML, which the D-Bus
    /// tests hold in step with the code.
    #[test]
    fn method_signatures_are_the_introspected_ones() {
        let xml = include_str!("org.evsec.EvseSecurity1.xml");
        let attribute = |line: &str, name: &str| {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            let len = line[start..].find('"')?;
            Some(line[start..start + len].to_owned())
        };
        let mut introspected: Vec<(String, String)> = Vec::new();
        for line in xml.lines().map(str::trim) {
            if line.starts_with("<method ") {
                introspected.push((attribute(line, "name").unwrap(), String::new()));
            } else if line.starts_with("<arg ") && line.contains("direction=\"in\"") {
                let (_, signature) = introspected.last_mut().unwrap();
                signature.push_str(&attribute(line, "type").unwrap());
            }
        }
        let table: Vec<(String, String)> = METHOD_SIGNATURES
            .iter()
            .map(|(m, s)| ((*m).to_owned(), (*s).to_owned()))
            .collect();
        assert_eq!(table, introspected);
    }

    /// The rule derived from the member name grants the reader role
    /// exactly the methods the shipped bus policy lets `evsec-read` call.
    #[test]
    fn the_read_rule_is_the_policy_of_the_reader_group() {
        let policy = include_str!("../../systemd/org.evsec.EvseSecurity1.conf");
        let reader = policy
            .split("<policy group=\"evsec-read\">")
            .nth(1)
            .and_then(|rest| rest.split("</policy>").next())
            .unwrap();
        let mut allowed: Vec<&str> = reader
            .split("<allow ")
            .filter(|rule| rule.contains("send_interface=\"org.evsec.EvseSecurity1\""))
            .filter_map(|rule| rule.split("send_member=\"").nth(1)?.split('"').next())
            .collect();
        allowed.sort();
        let mut read_only: Vec<&str> = METHOD_SIGNATURES
            .iter()
            .map(|(m, _)| *m)
            .filter(|m| crate::access::Need::of(m) == crate::access::Need::Read)
            .collect();
        read_only.sort();
        assert_eq!(read_only, allowed);
    }
}
