//! Fetching a peer's bundle from its endpoint, with the profile configured for it.
//!
//! `https_spiffe`: the endpoint must present exactly the configured SPIFFE ID, verified with
//! the roots we hold for the peer's trust domain (the bootstrap bundle, then each fetched one).
//! `https_web`: the endpoint must present a certificate for the URL's host, verified with the
//! configured roots. Redirects are never followed; bodies are bounded.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use meshfed_trust::verify::PeerServerVerifier;
use meshfed_trust::{Bundle, SpiffeId, TrustStore, tls};
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};

/// The whole fetch (connect, handshake, request, body) must finish within this time.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A bundle larger than this is refused.
const MAX_BUNDLE_BYTES: usize = 1024 * 1024;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("{0} is not a usable bundle endpoint URL")]
    Url(String),
    #[error("cannot reach {url}: {error}")]
    Connect { url: String, error: std::io::Error },
    #[error("TLS with {url} failed: {error}")]
    Tls { url: String, error: std::io::Error },
    #[error("HTTP with {url} failed: {error}")]
    Http { url: String, error: String },
    #[error("{url} answered {status}{}", if status.is_redirection() { " (redirects are not followed)" } else { "" })]
    Status { url: String, status: StatusCode },
    #[error("{url} took longer than {FETCH_TIMEOUT:?}")]
    Timeout { url: String },
    #[error("cannot build a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// How to authenticate the endpoint.
#[derive(Clone, Debug)]
pub(crate) enum Authenticate {
    /// Exactly this SPIFFE ID, chained to these roots (the peer trust domain's current bundle).
    Spiffe {
        id: SpiffeId,
        roots: Vec<CertificateDer<'static>>,
    },
    /// A Web PKI certificate for the URL's host, chained to these roots.
    Web { roots: Arc<rustls::RootCertStore> },
}

/// Fetches the raw bundle document at `url`.
pub(crate) async fn fetch(url: &Uri, authenticate: &Authenticate) -> Result<Bytes, FetchError> {
    let shown = url.to_string();
    tokio::time::timeout(FETCH_TIMEOUT, fetch_inner(url, authenticate))
        .await
        .map_err(|_| FetchError::Timeout { url: shown })?
}

async fn fetch_inner(url: &Uri, authenticate: &Authenticate) -> Result<Bytes, FetchError> {
    let shown = url.to_string();
    let host = url
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .ok_or_else(|| FetchError::Url(shown.clone()))?;
    let port = url.port_u16().unwrap_or(443);
    let server_name =
        ServerName::try_from(host.to_owned()).map_err(|_| FetchError::Url(shown.clone()))?;
    let config = client_config(authenticate)?;

    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|error| FetchError::Connect {
            url: shown.clone(),
            error,
        })?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|error| FetchError::Tls {
            url: shown.clone(),
            error,
        })?;
    let http = |error: String| FetchError::Http {
        url: shown.clone(),
        error,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(e.to_string()))?;
    tokio::spawn(connection);
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let authority = url.authority().map_or(host, |a| a.as_str());
    let request = Request::get(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| http(e.to_string()))?;
    if response.status() != StatusCode::OK {
        return Err(FetchError::Status {
            url: shown,
            status: response.status(),
        });
    }
    let body = Limited::new(response.into_body(), MAX_BUNDLE_BYTES)
        .collect()
        .await
        .map_err(|e| http(format!("reading the bundle: {e}")))?;
    Ok(body.to_bytes())
}

fn client_config(authenticate: &Authenticate) -> Result<ClientConfig, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()?;
    let mut config = match authenticate {
        Authenticate::Spiffe { id, roots } => {
            let store = TrustStore::new()
                .with_roots(id.trust_domain().clone(), roots)
                .map_err(|e| e.reason)?;
            let verifier = PeerServerVerifier::new(
                id.trust_domain().clone(),
                Some(id.clone()),
                Arc::new(store),
                tls::provider(),
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
        Authenticate::Web { roots } => builder
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Parses a fetched document as the peer trust domain's bundle.
pub(crate) fn parse(
    trust_domain: &meshfed_trust::TrustDomain,
    document: &[u8],
) -> Result<Bundle, meshfed_trust::BundleError> {
    Bundle::from_jwks(trust_domain.clone(), document)
}
