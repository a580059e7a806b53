//! TLS: one rustls crypto provider for the whole process, and the roots a client trusts.

/// Installs ring as the process-wide rustls provider (reqwest, async-nats and lettre all use
/// rustls; one provider for all of them avoids a second C crypto build). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The roots a TLS client trusts: the certificates of `ca_file` (PEM), or the operating
/// system's when it is `None` or `system`. Errors name the file, never its content.
pub fn roots(ca_file: Option<&str>) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) if path != "system" => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{path}: {e}"))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("{path}: no certificate in it"));
            }
        }
        _ => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if roots.is_empty() {
                return Err("the system has no root certificates; give a file".to_owned());
            }
        }
    }
    Ok(roots)
}

/// A client configuration (ring, safe protocol versions) that checks the server's chain and
/// name against `roots`.
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, String> {
    Ok(rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}
