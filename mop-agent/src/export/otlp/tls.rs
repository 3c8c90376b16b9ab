//! rustls client configuration of the HTTP transport: the system roots plus an optional CA
//! file. (The gRPC transport configures tonic's rustls the same way.)

use std::{path::Path, sync::Arc};

use rustls_pki_types::{CertificateDer, pem::PemObject as _};

use crate::export::ExportError;

/// A client configuration trusting the system roots and the certificates in `ca_file`.
pub(super) fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ExportError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let ca_error = |source| ExportError::CaFile {
            path: path.to_owned(),
            source,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| ca_error(std::io::Error::other(e.to_string())))?;
        if certs.is_empty() {
            return Err(ca_error(std::io::Error::other(
                "no PEM certificate in the file",
            )));
        }
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(ca_error(std::io::Error::other(
                "no usable certificate in the file",
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| ExportError::TlsConfig { source })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
