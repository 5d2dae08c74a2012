//! TLS for REST and WebSockets: rustls (aws-lc-rs) with the operating system's root
//! store, plus extra roots from a PEM file (corporate proxies, the simulator's `--tls`).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::ClientError;

/// How long a configuration built from the system's roots is reused: every client of a
/// process (one per org, and each org's back-fill) shares one root store, and a change to
/// the system's roots is seen within this time.
const REUSE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Configurations built, by CA file and its contents, with when.
type Built = Vec<(
    Option<std::path::PathBuf>,
    Option<Vec<u8>>,
    std::time::Instant,
    Arc<rustls::ClientConfig>,
)>;

static BUILT: std::sync::Mutex<Built> = std::sync::Mutex::new(Vec::new());

/// The TLS client configuration shared by reqwest and the WebSocket connector: the same
/// one for every caller with the same CA file (and contents) for an hour.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let contents = match ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            ClientError::Config(format!(
                "cannot read CA file {}: {e}; give a PEM file of root certificates",
                path.display()
            ))
        })?),
        None => None,
    };
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    built.retain(|(_, _, at, _)| at.elapsed() < REUSE);
    if let Some((.., config)) = built
        .iter()
        .find(|(path, bytes, ..)| path.as_deref() == ca_file && *bytes == contents)
    {
        return Ok(config.clone());
    }
    let config = build(ca_file)?;
    built.push((
        ca_file.map(Path::to_path_buf),
        contents,
        std::time::Instant::now(),
        config.clone(),
    ));
    Ok(config)
}

fn build(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A bad OS certificate is skipped, as every TLS stack does.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect())
            .map_err(|e| {
                ClientError::Config(format!(
                    "cannot read CA file {}: {e}; give a PEM file of root certificates",
                    path.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(ClientError::Config(format!(
                "CA file {} holds no PEM certificates (-----BEGIN CERTIFICATE-----)",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ClientError::Config(format!("CA file {}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Config(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
