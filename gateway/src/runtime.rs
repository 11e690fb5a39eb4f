//! Starting and stopping a gateway.
//!
//! [`start`] takes a validated config, bound sockets and loaded credentials, so that everything
//! that can fail for a reason an operator must fix fails before anything serves. What runs:
//!
//! - the local HTTP listener (applications call services here);
//! - the QUIC federation endpoint (peers deliver here), and an endpoint on an ephemeral port per
//!   worker that dials peers;
//! - the data plane's worker threads (`workers.rs`), which serve what those accept;
//! - the DNS server for the clusterset and cluster-pinned zones;
//! - the admin listener.
//!
//! [`Running::shutdown`] stops accepting everywhere, lets in-flight requests finish within the
//! configured grace, then closes the QUIC endpoint.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshfed_discovery::dns::{DnsServer, ZoneError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use meshfed_trust::{Bundle, TrustDomain};
use rustls::pki_types::pem::PemObject;
use tokio::sync::mpsc;

use crate::access_log::AccessLog;
use crate::admin::{self, Admin};
use crate::bind::{BindError, Bound};
use crate::bundles::endpoint::Published;
use crate::bundles::poll::{Poller, Profile};
use crate::catalogs::Catalogs;
use crate::config::FetchProfile;
use crate::config::{Config, Listeners, TcpService};
use crate::credentials::{Credentials, gateway_id_of};
use crate::endpoints::{Endpoints, Registry};
use crate::federation::client::{Dialer, MAX_LANES, PeerClient};
use crate::federation::control::{self, ControlConfigs, ControlTls};
use crate::federation::endpoint::{self, EndpointError};
use crate::federation::{server, tls};
use crate::mover::Mover;
use crate::policy::Policy;
use crate::policy_file::{self, PolicyFile};
use crate::proxy::local;
use crate::proxy::serve::{Versions, serve_http, serve_http_on};
use crate::proxy::tcp;
use crate::rotation::Rotation;
use crate::state::{State, Telemetry};
use crate::stats::Stats;
use crate::trace::{self, Tracer};
use crate::workers::Workers;
use crate::{bundles, credentials, rotation};

/// How long the QUIC endpoint may take to tell peers it is closing. CONNECTION_CLOSE goes out
/// at once; this only keeps the socket for repeating it to a peer that missed it. Not longer:
/// a handshake to a peer that is down (the keeper redialling it) would hold the socket for
/// three probe timeouts, seconds, for nothing. Peers have had GOAWAY before this anyway.
const ENDPOINT_CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// A gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A socket's address could not be read.
    #[error("cannot read a bound address: {0}")]
    Address(#[from] std::io::Error),
    /// The TLS configuration could not be built from the credentials.
    #[error("cannot build TLS configuration: {0}")]
    Tls(#[from] tls::TlsError),
    /// The QUIC endpoint could not be made.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// Peer bundles could not be read or used.
    #[error("peer bundles: {0}")]
    Bundles(String),
    /// A peer's roots could not be used.
    #[error(transparent)]
    Roots(#[from] meshfed_trust::store::RootError),
    /// Our bundle endpoint could not be set up.
    #[error(transparent)]
    BundleEndpoint(#[from] crate::bundles::endpoint::EndpointError),
    /// A TCP service listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The DNS zone could not be built.
    #[error("cannot build the DNS zone: {0}")]
    Zone(#[from] ZoneError),
    /// The policy file has problems.
    #[error("{0}")]
    Policy(#[from] crate::config::ConfigErrors),
    /// The data plane's threads could not be started.
    #[error("cannot start the data plane's worker threads: {0}")]
    Workers(std::io::Error),
    /// The system's random source failed.
    #[error("cannot seed the traffic policy's random choices")]
    Random,
    /// The moves kept in `state_dir` could not be read.
    #[error("moves: {0}")]
    Moves(String),
    /// The access log could not be opened.
    #[error("cannot open the access log {path}: {error}")]
    AccessLog {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
}

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    addrs: Listeners,
    tcp_services: Vec<TcpService>,
    stats: Arc<Stats>,
    grace: Duration,
    shutdown: CancellationToken,
    admin_shutdown: CancellationToken,
    tracker: TaskTracker,
    rotation: tokio::task::JoinHandle<()>,
    state: Arc<State>,
    catalogs: Arc<Catalogs>,
    endpoint: quinn::Endpoint,
    /// The endpoints connections to peers are dialled from, one per worker.
    dialers: Arc<[Dialer]>,
    dns: DnsServer,
    /// The span exporter, told to send its last batch once requests have drained.
    exporter: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// The data plane's threads, stopped (when this is dropped) once everything has closed.
    workers: Arc<Workers>,
}

/// How long the span exporter may take to send its last batch at shutdown.
const EXPORTER_FLUSH: Duration = Duration::from_secs(5);

/// Starts a gateway. Must be called within a tokio runtime.
pub fn start(
    config: Config,
    bound: Bound,
    credentials: Credentials,
) -> Result<Running, StartError> {
    let addrs = bound.addrs()?;
    let stats = Arc::new(Stats::default());
    let Credentials {
        svid,
        trust: file_trust,
        issuer,
    } = credentials;
    stats.metrics.svid_in_use(svid.not_after());
    let stamps = rotation::Stamps::read(credentials::files(&config));
    // Peer bundles kept from an earlier run win over the configured ones: they are newer.
    let fetched = kept_bundles(&config);
    let trust = Arc::new(rotation::trust(&file_trust, &fetched)?);

    // Bound before anything runs, so that a port in use fails start-up cleanly.
    let tcp_listeners = crate::bind::tcp_services(&config.tcp_services)?;

    let shutdown = CancellationToken::new();
    // Cancelled if start-up fails after tasks were started: they end, and with them the
    // workers they hold.
    let starting = shutdown.clone().drop_guard();
    let tracker = TaskTracker::new();
    let workers = Arc::new(Workers::configured(config.workers).map_err(StartError::Workers)?);
    // The endpoint's driver (receiving for every connection) runs on the first worker.
    let endpoint = {
        let _worker = workers.handle(0).enter();
        endpoint::endpoint(
            bound.federation,
            tls::server(&svid, &trust, &stats.peer_certificates_refused)?,
        )?
    };
    // A dialling endpoint for each worker that keeps connections to peers (the first
    // MAX_LANES): its driver runs on that worker, beside the connections it dials.
    let dialers: Arc<[Dialer]> = (0..workers.len().min(MAX_LANES))
        .map(|worker| {
            let worker = workers.handle(worker).clone();
            let _worker = worker.enter();
            let endpoint = endpoint::dialer(addrs.federation.ip())?;
            Ok::<_, StartError>(Dialer { endpoint, worker })
        })
        .collect::<Result<_, _>>()?;
    let mut peers = BTreeMap::new();
    for peer in &config.peers {
        let client = PeerClient::new(
            peer.name.clone(),
            peer.address,
            peer.trust_domain.to_string(),
            dialers.clone(),
            tls::client(
                &svid,
                &trust,
                &gateway_id_of(&peer.trust_domain, &peer.name),
                &stats.peer_certificates_refused,
            )?,
            stats.clone(),
        );
        peers.insert(peer.name.clone(), client);
    }
    let nameserver = match addrs.dns.ip() {
        ip if ip.is_unspecified() => addrs.http.ip(),
        ip => ip,
    };
    let now = unix_now();
    let registry = Registry::new(
        &config,
        &crate::endpoints::export_times::load_or_record(&config, now),
    );
    let (catalogs, built) = Catalogs::new(
        &config,
        registry.catalog(),
        addrs.http.ip(),
        nameserver,
        now,
    )?;
    let catalogs = Arc::new(catalogs);
    let (policy_file, policy) = match &config.policy_file {
        Some(path) => {
            let (file, policy) = PolicyFile::open(path.clone(), &config)?;
            (Some(Arc::new(Mutex::new(file))), policy)
        }
        None => (None, Policy::default()),
    };
    let (telemetry, exporter) = telemetry(&config, stats.clone())?;
    let state = Arc::new(State::new(
        &config,
        Arc::new(registry.exports()),
        built.routes,
        peers,
        telemetry,
        Arc::new(policy),
        random_seed()?,
    ));
    if let Some(file) = &policy_file {
        tokio::spawn(policy_file::watch(
            file.clone(),
            state.clone(),
            shutdown.clone(),
        ));
    }
    tokio::spawn(admin::expire_faults(state.clone(), shutdown.clone()));
    let store = config
        .state_dir
        .as_ref()
        .map(|dir| dir.join(crate::mover::store::FILE));
    let mover = Arc::new(Mover::new(state.clone(), store).map_err(StartError::Moves)?);
    tokio::spawn(mover.clone().run(shutdown.clone()));

    Endpoints::start(
        &config,
        registry,
        state.clone(),
        catalogs.clone(),
        &shutdown,
    );
    let control = Arc::new(ControlTls::new(
        ControlConfigs::build(
            &svid,
            &trust,
            &config.peers,
            &stats.peer_certificates_refused,
        )
        .map_err(tls::TlsError::from)?,
    ));
    // Connections to every peer from the start, each kept open and redialled when lost, each
    // by a keeper on the worker whose requests it carries first (and where quinn then runs
    // its connection).
    for (name, peer) in &state.peers {
        for lane in 0..peer.lanes() {
            let (state, name, shutdown) = (state.clone(), name.clone(), shutdown.clone());
            workers.handle(lane).spawn(async move {
                if let Some(peer) = state.peers.get(&name) {
                    peer.keep_connected(lane, shutdown).await;
                }
            });
        }
    }

    let (zones_tx, zones_rx) = watch::channel(built.zones);
    tokio::spawn(
        catalogs
            .clone()
            .publish(state.clone(), zones_tx, shutdown.clone()),
    );
    // Every peer's catalog followed over the control channel, from the start.
    for peer in &config.peers {
        tokio::spawn(control::follow_peer(
            peer.name.clone(),
            peer.address,
            control.clone(),
            (catalogs.clone(), mover.clone()),
            shutdown.clone(),
        ));
    }
    let dns = DnsServer::serve(
        bound
            .dns_udp
            .into_iter()
            .map(tokio::net::UdpSocket::from_std)
            .collect::<Result<_, _>>()?,
        tokio::net::TcpListener::from_std(bound.dns_tcp)?,
        zones_rx,
        stats.dns.clone(),
    );

    let admin_shutdown = CancellationToken::new();
    let grace = config.shutdown_grace;

    let local_state = state.clone();
    tracker.spawn(serve_http_on(
        tokio::net::TcpListener::from_std(bound.http)?,
        Versions::Http1And2,
        move |request, client| local::handle(local_state.clone(), request, client),
        shutdown.clone(),
        grace,
        Some(workers.clone()),
    ));
    tracker.spawn(server::serve(
        endpoint.clone(),
        state.clone(),
        shutdown.clone(),
        tracker.clone(),
        workers.clone(),
    ));
    let mut tcp_services = Vec::new();
    for (service, listener) in tcp_listeners {
        let listen = listener.local_addr()?;
        tcp_services.push(TcpService {
            listen,
            ..service.clone()
        });
        tracker.spawn(tcp::serve(
            tokio::net::TcpListener::from_std(listener)?,
            service,
            state.clone(),
            shutdown.clone(),
            tracker.clone(),
            workers.clone(),
        ));
    }
    let admin = Admin::new(
        shutdown.clone(),
        state.clone(),
        catalogs.clone(),
        policy_file,
        mover.clone(),
    );
    tokio::spawn(serve_http(
        tokio::net::TcpListener::from_std(bound.admin)?,
        Versions::Http1And2,
        move |request| admin.clone().handle(request),
        admin_shutdown.clone(),
        Duration::from_secs(1),
    ));

    let (bundle_tx, bundle_rx) = mpsc::channel(16);
    for peer in &config.peers {
        let Some(endpoint) = &peer.bundle_endpoint else {
            continue;
        };
        let current = match fetched.get(&peer.trust_domain) {
            Some(kept) => kept.clone(),
            None => credentials::read_bundle_file(&peer.bundle, &peer.trust_domain)
                .map_err(StartError::Bundles)?,
        };
        let profile = match &endpoint.profile {
            FetchProfile::HttpsSpiffe { endpoint_id } => Profile::Spiffe(endpoint_id.clone()),
            FetchProfile::HttpsWeb { roots } => Profile::Web(web_roots(roots)?),
        };
        let poller = Poller {
            peer: peer.name.clone(),
            url: endpoint.url.clone(),
            profile,
            current,
            state_dir: config.state_dir.clone(),
            updates: bundle_tx.clone(),
            stats: stats.clone(),
        };
        let started = std::time::SystemTime::now();
        stats.metrics.bundle_fetched(peer.name.as_str(), started);
        tokio::spawn(poller.run(shutdown.clone()));
    }
    let published = match &config.bundle_endpoint {
        Some(endpoint) => {
            let own =
                credentials::own_bundle(&config).map_err(|e| StartError::Bundles(e.to_string()))?;
            Some(Arc::new(Published::new(endpoint.clone(), &own, &svid)?))
        }
        None => None,
    };
    tracker.spawn(control::serve(
        tokio::net::TcpListener::from_std(bound.federation_tcp)?,
        state.clone(),
        control.clone(),
        control::Served {
            catalogs: catalogs.clone(),
            mover: mover.clone(),
            bundle: published.clone(),
        },
        shutdown.clone(),
    ));

    let id = svid.id().clone();
    let config = Arc::new(config);
    let rotation = Rotation {
        config: config.clone(),
        issuer,
        svid,
        file_trust,
        fetched,
        updates: bundle_rx,
        endpoint: endpoint.clone(),
        state: state.clone(),
        published,
        control,
        stamps,
    };
    let rotation = tokio::spawn(rotation.run(shutdown.clone()));

    tracing::info!(
        cluster = %config.cluster,
        id = %id,
        http = %addrs.http,
        federation = %addrs.federation,
        dns = %addrs.dns,
        admin = %addrs.admin,
        peers = config.peers.len(),
        exports = config.exports.len(),
        "gateway started"
    );
    starting.disarm();
    Ok(Running {
        addrs,
        tcp_services,
        stats,
        grace,
        shutdown,
        admin_shutdown,
        tracker,
        rotation,
        state,
        catalogs,
        endpoint,
        dialers,
        dns,
        exporter,
        workers,
    })
}

/// Peer bundles kept in `state_dir` by an earlier run, for peers with a bundle endpoint.
fn kept_bundles(config: &Config) -> BTreeMap<TrustDomain, Bundle> {
    let Some(dir) = &config.state_dir else {
        return BTreeMap::new();
    };
    config
        .peers
        .iter()
        .filter(|peer| peer.bundle_endpoint.is_some())
        .filter_map(|peer| {
            let bundle = bundles::store::load(dir, &peer.trust_domain)?;
            tracing::info!(peer.cluster = %peer.name, %bundle, "using the peer bundle kept from an earlier run");
            Some((peer.trust_domain.clone(), bundle))
        })
        .collect()
}

/// The roots that authenticate an `https_web` bundle endpoint.
fn web_roots(path: &std::path::Path) -> Result<Arc<rustls::RootCertStore>, StartError> {
    let bad = |e: String| StartError::Bundles(format!("{}: {e}", path.display()));
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    Ok(Arc::new(roots))
}

impl Running {
    /// The addresses the gateway listens on.
    pub fn addrs(&self) -> Listeners {
        self.addrs
    }

    /// The TCP service listeners, with the addresses actually bound.
    pub fn tcp_services(&self) -> &[TcpService] {
        &self.tcp_services
    }

    /// The services this gateway routes and resolves now, merged from every cluster's
    /// catalog (its own included), with the clusters that export each.
    pub fn imports(&self) -> Arc<meshfed_discovery::catalog::Imports> {
        self.catalogs.in_force()
    }

    /// The gateway's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Stops accepting, lets in-flight requests finish (up to the configured grace), and closes.
    pub async fn shutdown(self) {
        tracing::info!(grace = ?self.grace, "shutting down");
        self.shutdown.cancel();
        // Refuse new peer connections outright rather than leave their handshakes unanswered.
        // The rotation task ends first, so that it cannot put a server config back.
        let _ = self.rotation.await;
        self.endpoint.set_server_config(None);
        self.dns.shutdown().await;
        self.tracker.close();
        // The listeners bound their own drain by the grace; the margin covers their last steps.
        let deadline = self.grace + Duration::from_millis(500);
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight at the shutdown deadline were cut");
        }
        if let Some((stop, task)) = self.exporter {
            stop.cancel();
            if tokio::time::timeout(EXPORTER_FLUSH, task).await.is_err() {
                tracing::warn!("the last spans could not be exported in time");
            }
        }
        let dialers = self.dialers.iter().map(|dialer| &dialer.endpoint);
        let endpoints: Vec<_> = std::iter::once(&self.endpoint).chain(dialers).collect();
        for endpoint in &endpoints {
            endpoint.close(server::CLOSE_NO_ERROR.into(), b"shutting down");
        }
        // Tasks cut at the deadline may still hold the peer clients; the socket must close anyway.
        for peer in self.state.peers.values() {
            peer.release();
        }
        let deadline = tokio::time::Instant::now() + ENDPOINT_CLOSE_TIMEOUT;
        for endpoint in endpoints {
            let _ = tokio::time::timeout_at(deadline, endpoint.wait_idle()).await;
        }
        self.workers.stop();
        self.admin_shutdown.cancel();
        tracing::info!("stopped");
    }
}

/// The tracer and the access log, as configured, and the tracer's exporter, started.
#[allow(clippy::type_complexity)]
fn telemetry(
    config: &Config,
    stats: Arc<Stats>,
) -> Result<
    (
        Telemetry,
        Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    ),
    StartError,
> {
    let mut exporter = None;
    let tracer = match &config.tracing {
        None => None,
        Some(tracing) => {
            let (tracer, finished) = Tracer::new(tracing.sampling_ratio, random_seed()?);
            let origin = trace::export::Origin {
                service: format!("meshfed-{}", config.cluster),
                cluster: config.cluster.to_string(),
            };
            let stop = CancellationToken::new();
            let task = tokio::spawn(trace::export::run(
                finished,
                tracing.otlp_endpoint.clone(),
                tracing.otlp_protocol,
                origin,
                tracer.counts.clone(),
                stop.clone(),
            ));
            exporter = Some((stop, task));
            Some(tracer)
        }
    };
    let access_log = match &config.access_log {
        None => None,
        Some(to) => Some(AccessLog::open(to).map_err(|error| StartError::AccessLog {
            path: match to {
                crate::config::AccessLog::Stdout => "-".into(),
                crate::config::AccessLog::File(path) => path.display().to_string(),
            },
            error,
        })?),
    };
    let telemetry = Telemetry {
        stats,
        tracer,
        access_log,
    };
    Ok((telemetry, exporter))
}

/// A seed for the policy's dice, from the system's random source.
fn random_seed() -> Result<u64, StartError> {
    let mut seed = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| StartError::Random)?;
    Ok(u64::from_le_bytes(seed))
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
