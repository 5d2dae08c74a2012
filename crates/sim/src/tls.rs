//! `--tls`: a self-signed certificate made at start (for `localhost`, `127.0.0.1` and
//! `::1`), so clients can be tested over `https://` and `wss://` exactly as against the
//! real service, by trusting the certificate's PEM.

use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A generated certificate and the server configuration using it.
pub struct SimTls {
    /// The certificate in PEM, for clients to trust.
    pub cert_pem: String,
    /// The rustls server configuration.
    pub server: Arc<rustls::ServerConfig>,
}

/// Makes a fresh self-signed certificate, for loopback and the hosts of `domain`.
pub fn generate(domain: Option<&str>) -> Result<SimTls, String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Some(domain) = domain {
        names.extend(["login", "api", "streaming"].map(|h| format!("{h}.{domain}")));
    }
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("certificate generation failed: {e}"))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .map_err(|e| format!("certificate rejected: {e}"))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(SimTls {
        cert_pem: certified.cert.pem(),
        server: Arc::new(server),
    })
}
