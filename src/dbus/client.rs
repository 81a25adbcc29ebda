//! A typed client of the interface, for `evsecctl`, the tests and the
//! benchmarks.

use std::collections::HashMap;

use super::{
    builder, Bus, WireCertificateDetails, WireHashData, WireHashDataChain, WireOcspEntry,
    WireStatusEntry, WireStatusRequest, BUS_NAME, OBJECT_PATH,
};

/// The `CertificateInfo` dictionary of contract 5.11, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeafInfo {
    /// The dictionary's keys, sorted.
    pub keys: Vec<String>,
    /// `key`: path of the private key.
    pub key: Option<String>,
    /// `certificate`: path of the chain file.
    pub certificate: Option<String>,
    /// `certificate_single`: path of the leaf-only file.
    pub certificate_single: Option<String>,
    /// `certificate_root`: PEM of the root.
    pub certificate_root: Option<String>,
    /// `certificate_count`.
    pub certificate_count: Option<i32>,
    /// `password`.
    pub password: Option<String>,
    /// `ocsp`: hash data and cached response path per chain certificate.
    pub ocsp: Option<Vec<WireOcspEntry>>,
    /// `key_algorithm`: `P256`, `P384`, `P521`, `Ed448`, `RSA` or `Other`.
    pub key_algorithm: Option<String>,
    /// `common_name`: the leaf's subject commonName.
    pub common_name: Option<String>,
}

/// The `detail` of `VerifyCertificateDetailed`, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyDetail {
    /// `reason`: why, as a sentence.
    pub reason: String,
    /// `depth`: position of the certificate that failed, 0 the leaf.
    pub depth: Option<u32>,
    /// `subject`: that certificate's subject.
    pub subject: Option<String>,
    /// `openssl_error`: OpenSSL's verify error code.
    pub openssl_error: Option<i32>,
}

impl VerifyDetail {
    fn decode(dict: HashMap<String, zbus::OwnedVariant>) -> Result<VerifyDetail, ClientError> {
        let bad = |k: &str| ClientError::Bus(format!("detail `{k}` has the wrong type"));
        let mut detail = VerifyDetail::default();
        for (k, v) in dict {
            match k.as_str() {
                "reason" => detail.reason = String::try_from(v).map_err(|_| bad(&k))?,
                "depth" => detail.depth = Some(u32::try_from(v).map_err(|_| bad(&k))?),
                "subject" => detail.subject = Some(String::try_from(v).map_err(|_| bad(&k))?),
                "openssl_error" => {
                    detail.openssl_error = Some(i32::try_from(v).map_err(|_| bad(&k))?)
                }
                _ => {}
            }
        }
        Ok(detail)
    }
}

impl LeafInfo {
    fn decode(dict: HashMap<String, zbus::OwnedVariant>) -> Result<LeafInfo, ClientError> {
        let bad = |k: &str| ClientError::Bus(format!("CertificateInfo `{k}` has the wrong type"));
        let mut info = LeafInfo::default();
        for (k, v) in dict {
            let text = || String::try_from(v.clone()).map_err(|_| bad(&k));
            match k.as_str() {
                "key" => info.key = Some(text()?),
                "certificate" => info.certificate = Some(text()?),
                "certificate_single" => info.certificate_single = Some(text()?),
                "certificate_root" => info.certificate_root = Some(text()?),
                "password" => info.password = Some(text()?),
                "key_algorithm" => info.key_algorithm = Some(text()?),
                "common_name" => info.common_name = Some(text()?),
                "certificate_count" => {
                    info.certificate_count = Some(i32::try_from(v.clone()).map_err(|_| bad(&k))?)
                }
                "ocsp" => {
                    info.ocsp =
                        Some(Vec::<WireOcspEntry>::try_from(v.clone()).map_err(|_| bad(&k))?)
                }
                _ => {}
            }
            info.keys.push(k);
        }
        info.keys.sort();
        Ok(info)
    }
}

#[zbus::proxy(
    interface = "org.evsec.EvseSecurity1",
    default_service = "org.evsec.EvseSecurity1",
    default_path = "/org/evsec/EvseSecurity1"
)]
trait EvseSecurity1 {
    fn install_ca_certificate(
        &self,
        certificate: &str,
        certificate_type: &str,
    ) -> zbus::Result<String>;
    fn delete_certificate(&self, certificate_hash_data: &WireHashData) -> zbus::Result<String>;
    fn confirm_certificate_in_use(
        &self,
        certificate_hash_data: &WireHashData,
    ) -> zbus::Result<String>;
    fn verify_certificate(
        &self,
        certificate_chain: &str,
        certificate_types: &[&str],
    ) -> zbus::Result<String>;
    fn verify_certificate_detailed(
        &self,
        certificate_chain: &str,
        certificate_types: &[&str],
    ) -> zbus::Result<(String, HashMap<String, zbus::OwnedVariant>)>;
    fn get_installed_certificates(
        &self,
        certificate_types: &[&str],
    ) -> zbus::Result<(String, Vec<WireHashDataChain>)>;
    fn is_ca_certificate_installed(&self, certificate_type: &str) -> zbus::Result<bool>;
    fn get_verify_file(&self, certificate_type: &str) -> zbus::Result<String>;
    fn get_verify_location(&self, certificate_type: &str) -> zbus::Result<String>;
    fn update_leaf_certificate(
        &self,
        certificate_chain: &str,
        certificate_type: &str,
    ) -> zbus::Result<String>;
    fn get_v2g_ocsp_request_data(&self) -> zbus::Result<Vec<WireOcspEntry>>;
    fn get_mo_ocsp_request_data(&self, certificate_chain: &str)
        -> zbus::Result<Vec<WireOcspEntry>>;
    fn update_ocsp_cache(
        &self,
        certificate_hash_data: &WireHashData,
        ocsp_response: &str,
    ) -> zbus::Result<String>;
    fn get_certificate_status_request_data(
        &self,
        certificate_chain: &str,
    ) -> zbus::Result<Vec<WireStatusRequest>>;
    fn get_certificate_status_entries(&self) -> zbus::Result<Vec<WireStatusEntry>>;
    fn update_certificate_status(
        &self,
        certificate_hash_data: &WireHashData,
        status: &str,
        source: &str,
        next_update: i64,
    ) -> zbus::Result<String>;
    fn generate_certificate_signing_request(
        &self,
        certificate_type: &str,
        country: &str,
        organization: &str,
        common: &str,
        use_tpm: bool,
    ) -> zbus::Result<(String, String)>;
    fn get_leaf_certificate_info(
        &self,
        certificate_type: &str,
        encoding: &str,
        include_ocsp: bool,
    ) -> zbus::Result<(String, HashMap<String, zbus::OwnedVariant>)>;
    fn get_leaf_certificate_info_for_id(
        &self,
        certificate_type: &str,
        secc_id: &str,
        include_ocsp: bool,
    ) -> zbus::Result<(String, HashMap<String, zbus::OwnedVariant>)>;
    fn get_all_valid_certificates_info(
        &self,
        certificate_type: &str,
        encoding: &str,
        include_ocsp: bool,
    ) -> zbus::Result<(String, Vec<HashMap<String, zbus::OwnedVariant>>)>;
    fn get_leaf_expiry_days_count(&self, certificate_type: &str) -> zbus::Result<i32>;
    fn open_leaf_credentials(
        &self,
        certificate_type: &str,
        secc_id: &str,
    ) -> zbus::Result<(
        String,
        Vec<zbus::OwnedFd>,
        HashMap<String, zbus::OwnedVariant>,
    )>;
    fn verify_file_signature(
        &self,
        file_path: &str,
        signing_certificate: &str,
        signature: &str,
    ) -> zbus::Result<bool>;
    fn verify_file_signature_fd(
        &self,
        file: zbus::Fd<'_>,
        signing_certificate: &str,
        signature: &str,
    ) -> zbus::Result<bool>;
    fn garbage_collect(&self) -> zbus::Result<()>;
    fn get_certificate_details(
        &self,
        certificate_types: &[&str],
    ) -> zbus::Result<Vec<WireCertificateDetails>>;
    fn get_store_usage(&self) -> zbus::Result<(u32, u32, u64, u64)>;
    #[zbus(signal)]
    fn certificate_store_updated(
        &self,
        operation: &str,
        ca_certificate_type: &str,
        leaf_certificate_type: &str,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    fn leaf_certificate_expiring(&self, leaf_certificate_type: &str, days: i32)
        -> zbus::Result<()>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    #[zbus(property(emits_changed_signal = "false"))]
    fn certificate_entries(&self) -> zbus::Result<u32>;
}

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon answered with a D-Bus error.
    #[error("{name}: {message}")]
    Method {
        /// The D-Bus error name.
        name: String,
        /// Its message.
        message: String,
    },
    /// The bus could not be reached or the call did not complete.
    #[error("{0}")]
    Bus(String),
}

impl From<zbus::Error> for ClientError {
    fn from(e: zbus::Error) -> Self {
        match e {
            zbus::Error::MethodError(name, message, _) => ClientError::Method {
                name: name.to_string(),
                message: message.unwrap_or_default(),
            },
            zbus::Error::FDO(e) => {
                use zbus::DBusError;
                ClientError::Method {
                    name: e.name().to_string(),
                    message: e.description().unwrap_or_default().to_owned(),
                }
            }
            other => ClientError::Bus(other.to_string()),
        }
    }
}

/// `CertificateStoreUpdated` signals as they arrive.
pub struct StoreUpdates {
    stream: CertificateStoreUpdatedStream,
}

impl StoreUpdates {
    /// The next signal: (operation, CA type or "", leaf type or "").
    pub async fn next(&mut self) -> Option<(String, String, String)> {
        use futures_util::StreamExt;
        let signal = self.stream.next().await?;
        let args = signal.args().ok()?;
        Some((
            args.operation().to_string(),
            args.ca_certificate_type().to_string(),
            args.leaf_certificate_type().to_string(),
        ))
    }
}

/// The `LeafCertificateExpiring` signals of the daemon, as they come.
pub struct ExpiryWarnings {
    stream: LeafCertificateExpiringStream,
}

impl ExpiryWarnings {
    /// The next signal: (leaf type, whole days left).
    pub async fn next(&mut self) -> Option<(String, i32)> {
        use futures_util::StreamExt;
        let signal = self.stream.next().await?;
        let args = signal.args().ok()?;
        Some((args.leaf_certificate_type().to_string(), *args.days()))
    }
}

/// A connection to `evsecd`.
#[derive(Clone)]
pub struct Client {
    proxy: EvseSecurity1Proxy<'static>,
}

impl Client {
    /// Connects to the daemon on `bus`.
    pub async fn connect(bus: &Bus) -> Result<Client, ClientError> {
        Client::on(builder(bus).build().await?).await
    }

    /// A client on a connection made elsewhere: a peer-to-peer one to an
    /// interface served with [`super::serve_on`].
    pub async fn on(connection: zbus::Connection) -> Result<Client, ClientError> {
        let proxy = EvseSecurity1Proxy::new(&connection).await?;
        Ok(Client { proxy })
    }

    /// `org.freedesktop.DBus.Peer.Ping` to the daemon: one round trip
    /// through the bus and the daemon's dispatch, with no work behind it.
    pub async fn ping(&self) -> Result<(), ClientError> {
        let peer = zbus::fdo::PeerProxy::builder(self.proxy.inner().connection())
            .destination(BUS_NAME)
            .path(OBJECT_PATH)
            .build()
            .await?;
        Ok(peer.ping().await?)
    }

    /// Subscribes to `LeafCertificateExpiring`.
    pub async fn expiry_warnings(&self) -> Result<ExpiryWarnings, ClientError> {
        Ok(ExpiryWarnings {
            stream: self.proxy.receive_leaf_certificate_expiring().await?,
        })
    }

    /// Subscribes to `CertificateStoreUpdated`.
    pub async fn store_updates(&self) -> Result<StoreUpdates, ClientError> {
        Ok(StoreUpdates {
            stream: self.proxy.receive_certificate_store_updated().await?,
        })
    }

    /// `InstallCaCertificate`.
    pub async fn install_ca_certificate(&self, pem: &str, ca: &str) -> Result<String, ClientError> {
        Ok(self.proxy.install_ca_certificate(pem, ca).await?)
    }

    /// `DeleteCertificate`.
    pub async fn delete_certificate(&self, hash: &WireHashData) -> Result<String, ClientError> {
        Ok(self.proxy.delete_certificate(hash).await?)
    }

    /// `ConfirmCertificateInUse`.
    pub async fn confirm_certificate_in_use(
        &self,
        hash: &WireHashData,
    ) -> Result<String, ClientError> {
        Ok(self.proxy.confirm_certificate_in_use(hash).await?)
    }

    /// `VerifyCertificate`.
    pub async fn verify_certificate(
        &self,
        chain: &str,
        types: &[&str],
    ) -> Result<String, ClientError> {
        Ok(self.proxy.verify_certificate(chain, types).await?)
    }

    /// `VerifyCertificateDetailed`.
    pub async fn verify_certificate_detailed(
        &self,
        chain: &str,
        types: &[&str],
    ) -> Result<(String, VerifyDetail), ClientError> {
        let (result, detail) = self.proxy.verify_certificate_detailed(chain, types).await?;
        Ok((result, VerifyDetail::decode(detail)?))
    }

    /// `GetInstalledCertificates`.
    pub async fn get_installed_certificates(
        &self,
        types: &[&str],
    ) -> Result<(String, Vec<WireHashDataChain>), ClientError> {
        Ok(self.proxy.get_installed_certificates(types).await?)
    }

    /// `IsCaCertificateInstalled`.
    pub async fn is_ca_certificate_installed(&self, ca: &str) -> Result<bool, ClientError> {
        Ok(self.proxy.is_ca_certificate_installed(ca).await?)
    }

    /// `GetVerifyFile`.
    pub async fn get_verify_file(&self, ca: &str) -> Result<String, ClientError> {
        Ok(self.proxy.get_verify_file(ca).await?)
    }

    /// `GetVerifyLocation`.
    pub async fn get_verify_location(&self, ca: &str) -> Result<String, ClientError> {
        Ok(self.proxy.get_verify_location(ca).await?)
    }

    /// `UpdateLeafCertificate`.
    pub async fn update_leaf_certificate(
        &self,
        chain: &str,
        leaf: &str,
    ) -> Result<String, ClientError> {
        Ok(self.proxy.update_leaf_certificate(chain, leaf).await?)
    }

    /// `GetV2gOcspRequestData`.
    pub async fn get_v2g_ocsp_request_data(&self) -> Result<Vec<WireOcspEntry>, ClientError> {
        Ok(self.proxy.get_v2g_ocsp_request_data().await?)
    }

    /// `GetMoOcspRequestData`.
    pub async fn get_mo_ocsp_request_data(
        &self,
        chain: &str,
    ) -> Result<Vec<WireOcspEntry>, ClientError> {
        Ok(self.proxy.get_mo_ocsp_request_data(chain).await?)
    }

    /// `UpdateOcspCache`.
    pub async fn update_ocsp_cache(
        &self,
        hash: &WireHashData,
        response_b64: &str,
    ) -> Result<String, ClientError> {
        Ok(self.proxy.update_ocsp_cache(hash, response_b64).await?)
    }

    /// `GenerateCertificateSigningRequest`: (status, CSR PEM).
    pub async fn generate_certificate_signing_request(
        &self,
        leaf: &str,
        country: &str,
        organization: &str,
        common_name: &str,
        use_tpm: bool,
    ) -> Result<(String, String), ClientError> {
        Ok(self
            .proxy
            .generate_certificate_signing_request(leaf, country, organization, common_name, use_tpm)
            .await?)
    }

    /// `GetCertificateStatusRequestData`.
    pub async fn get_certificate_status_request_data(
        &self,
        chain: &str,
    ) -> Result<Vec<WireStatusRequest>, ClientError> {
        Ok(self
            .proxy
            .get_certificate_status_request_data(chain)
            .await?)
    }

    /// `GetCertificateStatusEntries` (evsec extension).
    pub async fn get_certificate_status_entries(
        &self,
    ) -> Result<Vec<WireStatusEntry>, ClientError> {
        Ok(self.proxy.get_certificate_status_entries().await?)
    }

    /// `UpdateCertificateStatus`.
    pub async fn update_certificate_status(
        &self,
        hash: &WireHashData,
        status: &str,
        source: &str,
        next_update: i64,
    ) -> Result<String, ClientError> {
        Ok(self
            .proxy
            .update_certificate_status(hash, status, source, next_update)
            .await?)
    }

    /// `GetLeafCertificateInfo`.
    pub async fn get_leaf_certificate_info(
        &self,
        leaf: &str,
        encoding: &str,
        include_ocsp: bool,
    ) -> Result<(String, LeafInfo), ClientError> {
        let (status, dict) = self
            .proxy
            .get_leaf_certificate_info(leaf, encoding, include_ocsp)
            .await?;
        Ok((status, LeafInfo::decode(dict)?))
    }

    /// `GetLeafCertificateInfoForId`.
    pub async fn get_leaf_certificate_info_for_id(
        &self,
        leaf: &str,
        secc_id: &str,
        include_ocsp: bool,
    ) -> Result<(String, LeafInfo), ClientError> {
        let (status, dict) = self
            .proxy
            .get_leaf_certificate_info_for_id(leaf, secc_id, include_ocsp)
            .await?;
        Ok((status, LeafInfo::decode(dict)?))
    }

    /// `GetAllValidCertificatesInfo`.
    pub async fn get_all_valid_certificates_info(
        &self,
        leaf: &str,
        encoding: &str,
        include_ocsp: bool,
    ) -> Result<(String, Vec<LeafInfo>), ClientError> {
        let (status, dicts) = self
            .proxy
            .get_all_valid_certificates_info(leaf, encoding, include_ocsp)
            .await?;
        let infos = dicts
            .into_iter()
            .map(LeafInfo::decode)
            .collect::<Result<_, _>>()?;
        Ok((status, infos))
    }

    /// `OpenLeafCredentials`: the status, the key and chain files open for
    /// reading, and the leaf's info.
    pub async fn open_leaf_credentials(
        &self,
        leaf: &str,
        secc_id: &str,
    ) -> Result<(String, Vec<std::fs::File>, LeafInfo), ClientError> {
        let (status, fds, dict) = self.proxy.open_leaf_credentials(leaf, secc_id).await?;
        let files = fds
            .into_iter()
            .map(|fd| std::fs::File::from(std::os::fd::OwnedFd::from(fd)))
            .collect();
        Ok((status, files, LeafInfo::decode(dict)?))
    }

    /// `GetLeafExpiryDaysCount`.
    pub async fn get_leaf_expiry_days_count(&self, leaf: &str) -> Result<i32, ClientError> {
        Ok(self.proxy.get_leaf_expiry_days_count(leaf).await?)
    }

    /// `VerifyFileSignature`.
    pub async fn verify_file_signature(
        &self,
        path: &str,
        cert: &str,
        signature: &str,
    ) -> Result<bool, ClientError> {
        Ok(self
            .proxy
            .verify_file_signature(path, cert, signature)
            .await?)
    }

    /// `VerifyFileSignatureFd`: the file goes as a descriptor, opened by
    /// this process with its own rights.
    pub async fn verify_file_signature_fd(
        &self,
        file: &std::fs::File,
        cert: &str,
        signature: &str,
    ) -> Result<bool, ClientError> {
        use std::os::fd::AsFd;
        Ok(self
            .proxy
            .verify_file_signature_fd(zbus::Fd::from(file.as_fd()), cert, signature)
            .await?)
    }

    /// `GarbageCollect`.
    pub async fn garbage_collect(&self) -> Result<(), ClientError> {
        Ok(self.proxy.garbage_collect().await?)
    }

    /// `GetCertificateDetails` (evsec extension).
    pub async fn get_certificate_details(
        &self,
        types: &[&str],
    ) -> Result<Vec<WireCertificateDetails>, ClientError> {
        Ok(self.proxy.get_certificate_details(types).await?)
    }

    /// `GetStoreUsage` (evsec extension): files, max files, bytes, max bytes.
    pub async fn get_store_usage(&self) -> Result<(u32, u32, u64, u64), ClientError> {
        Ok(self.proxy.get_store_usage().await?)
    }

    /// The `Version` property.
    pub async fn version(&self) -> Result<String, ClientError> {
        Ok(self.proxy.version().await?)
    }

    /// The `CertificateEntries` property.
    pub async fn certificate_entries(&self) -> Result<u32, ClientError> {
        Ok(self.proxy.certificate_entries().await?)
    }
}
