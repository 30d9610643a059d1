//! TLS settings (feature `tls`): a rustls client configuration built once per client.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

use crate::Error;
use crate::config::TlsOptions;

/// What a connection needs to run the TLS handshake.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) connector: TlsConnector,
    pub(crate) server_name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn bad(key: &'static str, msg: impl std::fmt::Display) -> Error {
    Error::config(key, msg.to_string())
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(key, format!("{}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(key, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(bad(
            key,
            format!("{}: no PEM certificate in the file", path.display()),
        ));
    }
    Ok(certs)
}

impl Tls {
    /// Reads the files and builds the configuration; errors name the key and the file.
    pub(crate) fn new(options: &TlsOptions, host: &str) -> Result<Tls, Error> {
        let mut roots = rustls::RootCertStore::empty();
        match &options.ca_file {
            Some(path) => {
                for cert in certs("tls.ca-file", path)? {
                    roots
                        .add(cert)
                        .map_err(|e| bad("tls.ca-file", format!("{}: {e}", path.display())))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("tls.ca-file", e))?
            .with_root_certificates(roots);
        let config = match (&options.cert_file, &options.key_file) {
            (Some(cert), Some(key)) => {
                let chain = certs("tls.cert-file", cert)?;
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| bad("tls.key-file", format!("{}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| bad("tls.key-file", format!("{}: {e}", key.display())))?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => return Err(bad("tls.key-file", "required with cert-file")),
            (None, Some(_)) => return Err(bad("tls.cert-file", "required with key-file")),
        };
        let name = options.server_name.as_deref().unwrap_or(host);
        Tls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: server_name(name)?,
        }
        .for_host(name)
    }

    /// The same configuration, checking the certificate against `name` (another cluster
    /// node).
    pub(crate) fn for_host(&self, name: &str) -> Result<Tls, Error> {
        Ok(Tls {
            connector: self.connector.clone(),
            server_name: server_name(name)?,
        })
    }
}

fn server_name(name: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(name.to_owned())
        .map_err(|e| bad("tls.server-name", format!("{name:?}: {e}")))
}
