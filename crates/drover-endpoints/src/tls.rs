//! TLS for device endpoints: the server certificate, and client certificates that are *offered*
//! but not required. A client certificate is accepted at the handshake (the handshake proves the
//! peer holds its key); whether its chain is trusted is decided afterwards by device
//! authentication, against the trust anchors of the application the certificate names — which
//! the TLS layer cannot know.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::net::TcpListener;

/// The client certificate chain of a TLS connection (DER, end entity first), as a request
/// extension for HTTP handlers.
#[derive(Debug, Clone)]
pub struct ClientCertificates(pub Option<Arc<Vec<Vec<u8>>>>);

#[derive(Debug, thiserror::Error)]
#[error("TLS configuration: {0}")]
pub struct TlsError(pub String);

/// Accepts any client certificate whose possession the peer proves; trust is decided later.
#[derive(Debug)]
struct OfferClientAuth {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for OfferClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A server configuration with `cert_chain` (DER, server first) and its private key (DER),
/// offering client authentication. `alpn`: protocols to announce (e.g. `h2`, `http/1.1`).
pub fn server_config(
    cert_chain: Vec<Vec<u8>>,
    key: Vec<u8>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(OfferClientAuth {
        algorithms: provider.signature_verification_algorithms,
    });
    let key =
        PrivateKeyDer::try_from(key).map_err(|e| TlsError(format!("invalid private key: {e}")))?;
    let chain = cert_chain.into_iter().map(CertificateDer::from).collect();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError(format!("certificate and key do not fit: {e}")))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The crypto provider used by Drover's TLS (installed as the process default once).
pub fn install_default_provider() {
    let _ = CryptoProvider::install_default(rustls::crypto::ring::default_provider());
}

/// Serves `router` over TLS until `stop` turns true, then lets open connections finish within
/// `grace`. Handlers see the client certificate chain as a [`ClientCertificates`] extension.
pub async fn serve_https(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;

    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("HTTPS accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let certs = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| Arc::new(c.iter().map(|c| c.to_vec()).collect::<Vec<_>>()));
            let svc = router
                .layer(axum::Extension(ClientCertificates(certs)))
                .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(svc))
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, "HTTPS connection ended: {e}");
            }
        });
    }
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
    Ok(())
}
