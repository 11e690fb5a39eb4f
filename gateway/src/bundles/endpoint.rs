//! Our bundle endpoint: `GET /` on the federation port over TCP answers this cluster's SPIFFE
//! bundle. `https_spiffe` serves with the gateway's SVID, `https_web` with a certificate from
//! files. Anyone may fetch it: a bundle is public.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use meshfed_trust::{Bundle, Svid, tls};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{BundleEndpoint, ServeProfile};
use crate::proxy::body::{self, Body};

/// A client must complete the TLS handshake and its request within this time.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint serves now: swapped whole when the bundle or the SVID changes.
#[derive(Debug)]
pub(crate) struct Served {
    jwks: Bytes,
    tls: Arc<ServerConfig>,
}

/// The endpoint's current content, shared with the rotation task.
#[derive(Debug)]
pub(crate) struct Published {
    config: BundleEndpoint,
    /// With `https_web`, the certificate from files (loaded once at start).
    web: Option<Arc<ServerConfig>>,
    current: RwLock<Arc<Served>>,
}

/// The endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The web certificate or key could not be read.
    #[error("bundle_endpoint: {0}")]
    Files(String),
    /// rustls refused the certificate or key.
    #[error("bundle_endpoint: {0}")]
    Tls(#[from] rustls::Error),
}

impl Published {
    pub(crate) fn new(
        config: BundleEndpoint,
        bundle: &Bundle,
        svid: &Svid,
    ) -> Result<Self, EndpointError> {
        let web = match &config.profile {
            ServeProfile::HttpsSpiffe => None,
            ServeProfile::HttpsWeb { cert, key } => Some(web_config(cert, key)?),
        };
        let published = Published {
            config,
            web,
            current: RwLock::new(Arc::new(Served {
                jwks: Bytes::new(),
                tls: Arc::new(spiffe_config(svid)?),
            })),
        };
        published.update(bundle, svid)?;
        Ok(published)
    }

    /// Serves `bundle` (with a fresh sequence number) and, with `https_spiffe`, `svid`.
    pub(crate) fn update(&self, bundle: &Bundle, svid: &Svid) -> Result<(), EndpointError> {
        let tls = match &self.web {
            Some(web) => web.clone(),
            None => Arc::new(spiffe_config(svid)?),
        };
        let jwks = bundle
            .clone()
            .with_sequence(sequence_now())
            .with_refresh_hint(self.config.refresh_hint)
            .to_jwks();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Served {
            jwks: Bytes::from(jwks),
            tls,
        });
        Ok(())
    }

    fn load(&self) -> Arc<Served> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Serves the bundle to one client whose TLS handshake has begun (the federation port's
/// acceptor read its ClientHello and found no control-channel ALPN).
pub(crate) async fn serve_client(
    start: tokio_rustls::StartHandshake<tokio::net::TcpStream>,
    published: &Published,
) {
    let served = published.load();
    let connection = async {
        let stream = start.into_stream(served.tls.clone()).await?;
        let jwks = served.jwks.clone();
        let service = service_fn(move |request| {
            let response = answer(&request, jwks.clone());
            async move { Ok::<_, std::convert::Infallible>(response) }
        });
        http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(CLIENT_TIMEOUT)
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service)
            .await
            .map_err(std::io::Error::other)
    };
    match tokio::time::timeout(CLIENT_TIMEOUT, connection).await {
        Ok(Ok(())) => tracing::debug!("served the bundle"),
        Ok(Err(error)) => tracing::debug!(%error, "bundle client failed"),
        Err(_) => tracing::debug!("bundle client too slow"),
    }
}

fn answer(request: &Request<Incoming>, jwks: Bytes) -> Response<Body> {
    let (status, body, content_type) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => (StatusCode::OK, jwks, "application/json"),
        (&Method::GET, _) => (
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"not found\n"),
            "text/plain",
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::from_static(b"GET only\n"),
            "text/plain",
        ),
    };
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// A sequence number that only grows: the time of publication, in seconds.
fn sequence_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn spiffe_config(svid: &Svid) -> Result<ServerConfig, rustls::Error> {
    server_config(svid.chain().to_vec(), svid.key().clone_key())
}

fn web_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<ServerConfig>, EndpointError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| EndpointError::Files(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| EndpointError::Files(format!("{}: {e}", key.display())))?;
    Ok(Arc::new(server_config(chain, key)?))
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
