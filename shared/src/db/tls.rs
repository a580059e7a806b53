//! How every PostgreSQL connection is made: the pool's, LISTEN's, readiness's and the
//! migrations'. diesel-async's own `establish` speaks plaintext only, so connections go through
//! tokio-postgres with rustls and honour libpq's `sslmode` in `DATABASE_URL`:
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `allow`, `prefer` (the default) | when the server offers it | no |
//! | `require` | always | no; against `sslrootcert` when one is given (as libpq does) |
//! | `verify-ca` | always | chain against `sslrootcert` |
//! | `verify-full` | always | chain and host name |
//!
//! `sslrootcert` is a PEM file, or `system` for the operating system's roots (also what
//! `verify-*` uses when it is not given). Client certificates (`sslcert`, `sslkey`) are refused
//! with a clear error: services authenticate with a password.

use std::{str::FromStr, sync::Arc};

use crate::config::PgUrl;
pub use crate::config::SslMode;

use diesel::ConnectionResult;
use diesel_async::AsyncPgConnection;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::WebPkiServerVerifier,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, UnixTime},
};

/// A parsed `DATABASE_URL`: what tokio-postgres takes, plus the TLS settings it does not.
pub struct Target {
    config: tokio_postgres::Config,
    mode: SslMode,
    root_cert: Option<String>,
    /// Built once from `mode` and `root_cert` (`None` for `disable`).
    tls: Option<ClientConfig>,
}

impl Target {
    /// Parses a `postgres://` URL. Errors name the parameter and never repeat the URL (it
    /// carries the password).
    pub fn parse(url: &str) -> Result<Self, String> {
        let PgUrl { rest, mode, root_cert } = PgUrl::parse(url)?;
        let mut config = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let mut target = Self { config, mode, root_cert, tls: None };
        target.tls = target.client_config()?;
        Ok(target)
    }

    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// The rustls configuration this mode asks for (`None` for `disable`).
    fn client_config(&self) -> Result<Option<ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let check = match (self.mode, &self.root_cert) {
            (SslMode::Disable, _) => return Ok(None),
            (SslMode::Prefer, _) | (SslMode::Require, None) => Check::Nothing,
            (SslMode::Require, Some(_)) | (SslMode::VerifyCa, _) => Check::Chain,
            (SslMode::VerifyFull, _) => Check::ChainAndName,
        };
        let verifier = match check {
            Check::Nothing => None,
            _ => Some(
                WebPkiServerVerifier::builder_with_provider(
                    Arc::new(self.roots()?),
                    provider.clone(),
                )
                .build()
                .map_err(|e| format!("sslrootcert: {e}"))?,
            ),
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let config = match (check, verifier) {
            (Check::ChainAndName, Some(webpki)) => builder.with_webpki_verifier(webpki),
            (_, webpki) => {
                builder.dangerous().with_custom_certificate_verifier(Arc::new(Verifier {
                    chain: webpki,
                    algorithms: provider.signature_verification_algorithms,
                }))
            }
        };
        Ok(Some(config.with_no_client_auth()))
    }

    fn roots(&self) -> Result<rustls::RootCertStore, String> {
        crate::tls::roots(self.root_cert.as_deref()).map_err(|e| format!("sslrootcert {e}"))
    }

    /// Connects and hands the connection to diesel-async, which drives it in a task.
    pub async fn connect(&self) -> ConnectionResult<AsyncPgConnection> {
        let failed = |e: tokio_postgres::Error| {
            let mut text = format!("cannot connect to PostgreSQL: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            diesel::ConnectionError::BadConnection(text)
        };
        match self.tls.clone() {
            None => {
                let (client, connection) =
                    self.config.connect(tokio_postgres::NoTls).await.map_err(failed)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
            Some(tls) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                let (client, connection) = self.config.connect(tls).await.map_err(failed)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// `prefer`/`require` (no chain) and `verify-ca` (chain, any name). Handshake signatures are
/// always verified, so the peer holds the key of the certificate it showed.
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_root_cert_are_taken_out_of_what_tokio_postgres_reads() {
        let target = Target::parse(
            "postgres://app:secret@db.example:5432/datasync?sslmode=verify-full&sslrootcert=system&application_name=crm-sync",
        )
        .unwrap();
        assert_eq!(target.mode(), SslMode::VerifyFull);
        assert_eq!(target.root_cert.as_deref(), Some("system"));
        assert_eq!(target.config.get_application_name(), Some("crm-sync"));
        assert_eq!(target.config.get_dbname(), Some("datasync"));
        assert_eq!(Target::parse("postgres://h/db").unwrap().mode(), SslMode::Prefer);
        assert_eq!(Target::parse("postgres://h/db?sslmode=allow").unwrap().mode(), SslMode::Prefer);
    }

    #[test]
    fn bad_tls_settings_are_named_without_repeating_the_url() {
        let e = Target::parse("postgres://app:secret@h/db?sslmode=verify").err().unwrap();
        assert!(e.starts_with("sslmode:") && !e.contains("secret"), "{e}");
        let e = Target::parse(
            "postgres://app:secret@h/db?sslmode=require&sslrootcert=/nonexistent.pem",
        )
        .err()
        .unwrap();
        assert!(e.starts_with("sslrootcert /nonexistent.pem") && !e.contains("secret"), "{e}");
        let e = Target::parse("postgres://h/db?sslcert=c.pem").err().unwrap();
        assert!(e.starts_with("sslcert:"), "{e}");
        let e = Target::parse("postgres://app:secret@h/db?bogus=1").err().unwrap();
        assert!(!e.contains("secret"), "{e}");
    }
}
