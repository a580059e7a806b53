//! TLS: one rustls crypto provider for the whole process.

/// Installs ring as the process-wide rustls provider (reqwest, async-nats and lettre all use
/// rustls; one provider for all of them avoids a second C crypto build). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
