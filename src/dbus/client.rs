//! A typed client of the interface, for `evsecctl`, the tests and the
//! benchmarks.

use super::{builder, Bus};

/// Hash data as on the wire.
pub type WireHashData = (String, String, String, String);
/// A `GetInstalledCertificates` chain as on the wire.
pub type WireHashDataChain = (String, WireHashData, Vec<WireHashData>);

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
    fn verify_certificate(
        &self,
        certificate_chain: &str,
        certificate_types: &[&str],
    ) -> zbus::Result<String>;
    fn get_installed_certificates(
        &self,
        certificate_types: &[&str],
    ) -> zbus::Result<(String, Vec<WireHashDataChain>)>;
    fn is_ca_certificate_installed(&self, certificate_type: &str) -> zbus::Result<bool>;
    fn get_verify_file(&self, certificate_type: &str) -> zbus::Result<String>;
    fn get_verify_location(&self, certificate_type: &str) -> zbus::Result<String>;
    #[zbus(signal)]
    fn certificate_store_updated(
        &self,
        operation: &str,
        ca_certificate_type: &str,
        leaf_certificate_type: &str,
    ) -> zbus::Result<()>;
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

/// A connection to `evsecd`.
#[derive(Clone)]
pub struct Client {
    proxy: EvseSecurity1Proxy<'static>,
}

impl Client {
    /// Connects to the daemon on `bus`.
    pub async fn connect(bus: &Bus) -> Result<Client, ClientError> {
        let connection = builder(bus).build().await?;
        let proxy = EvseSecurity1Proxy::new(&connection).await?;
        Ok(Client { proxy })
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

    /// `VerifyCertificate`.
    pub async fn verify_certificate(
        &self,
        chain: &str,
        types: &[&str],
    ) -> Result<String, ClientError> {
        Ok(self.proxy.verify_certificate(chain, types).await?)
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

    /// The `Version` property.
    pub async fn version(&self) -> Result<String, ClientError> {
        Ok(self.proxy.version().await?)
    }

    /// The `CertificateEntries` property.
    pub async fn certificate_entries(&self) -> Result<u32, ClientError> {
        Ok(self.proxy.certificate_entries().await?)
    }
}
