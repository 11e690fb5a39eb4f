//! Local listeners for opaque TCP services: one per configured `tcp_services` entry. Each
//! accepted connection goes to a local endpoint of the service, or through a peer gateway as
//! an HTTP/3 `CONNECT` stream.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::tunnel;
use crate::config::TcpService;
use crate::metrics::Direction;
use crate::observe::TcpExchange;
use crate::reason::Reason;
use crate::route::Destination;
use crate::state::State;
use crate::workers::Workers;

/// Accepts connections for `service` on `listener` until `shutdown`, each served on one of
/// `workers`. Tunnels already open carry on; the runtime waits for them up to the shutdown
/// grace.
pub(crate) async fn serve(
    listener: TcpListener,
    service: TcpService,
    state: Arc<State>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    workers: Arc<Workers>,
) {
    let service = Arc::new(service);
    while let Some((stream, remote)) = super::serve::accept(&listener, &shutdown).await {
        let span = tracing::debug_span!(
            "tcp",
            client.addr = %remote,
            svc = %service.service,
            port = service.port,
            peer.cluster = tracing::field::Empty,
        );
        let (service, state, tracked) = (service.clone(), state.clone(), tracker.token());
        super::serve::place(&workers, stream, move |stream| {
            let connection = connection(stream, remote, service, state).instrument(span);
            async move {
                let _tracked = tracked;
                connection.await;
            }
        });
    }
}

async fn connection(
    client: TcpStream,
    remote: SocketAddr,
    service: Arc<TcpService>,
    state: Arc<State>,
) {
    let _ = client.set_nodelay(true);
    let mut exchange = TcpExchange::begin(
        Direction::Outbound,
        service.service.clone(),
        state.cluster().clone(),
    );
    exchange.client = Some(remote);
    let origin = state.policy().origin_of(remote.ip()).cloned();
    let policy = state.policy();
    let routes = state.routes();
    let service_policy = policy.service(&service.service);
    let mut dice = state.dice();
    // A move's split decides the cluster of a new connection; open ones stay where they are.
    let any = crate::policy::Labels::new();
    let moved = state.moving.split(&service.service).and_then(|moved| {
        let available = |c: &meshfed_discovery::Label| routes.available(&service.service, c, &any);
        let cluster = moved.pick(None, available)?;
        Some(routes.to_cluster(&service.service, cluster, &any))
    });
    let chosen = match moved {
        Some(chosen) => chosen,
        None => state.spread(&routes, &service.service, service_policy, None, &mut dice),
    };
    exchange.destination_cluster = match &chosen {
        Ok(Destination::Local(_)) => Some(state.cluster().clone()),
        Ok(Destination::Peer { peer, .. }) => Some(peer.clone()),
        Err(_) => None,
    };
    exchange.opened(&state);
    // Open while it lasts, for a move that drains this cluster when it ends.
    let registered = exchange
        .destination_cluster
        .as_ref()
        .map(|cluster| state.moving.tcp.register(&service.service, cluster));
    let drained = async {
        match &registered {
            Some(open) => open.closed().await,
            None => std::future::pending().await,
        }
    };
    let carried = async {
        match chosen {
            Ok(Destination::Local(key)) => local(client, &state, &key, service.port).await,
            Ok(Destination::Peer { peer, service: key }) => {
                tracing::Span::current().record("peer.cluster", tracing::field::display(&peer));
                match state.peers.get(&peer) {
                    Some(peer) => match peer.connect_tcp(&key, service.port, origin.as_ref()).await
                    {
                        Ok((send, recv, _open)) => tunnel::splice(client, send, recv)
                            .await
                            .map_err(|error| (Reason::PeerStreamFailed, error.to_string())),
                        Err(reason) => Err((reason, String::new())),
                    },
                    None => Err((Reason::UnknownService, String::new())),
                }
            }
            Err(reason) => Err((reason, String::new())),
        }
    };
    // A drain drops the connection's halves, which closes both sides.
    let outcome = tokio::select! {
        outcome = carried => outcome,
        () = drained => Err((Reason::Drained, String::new())),
    };
    match outcome {
        Ok(carried) => {
            tracing::debug!(
                sent = carried.sent,
                received = carried.received,
                "tcp connection done"
            );
            exchange.finish(&state, (carried.sent, carried.received), None);
        }
        Err((reason, detail)) => {
            tracing::debug!(%reason, detail, "tcp connection failed");
            exchange.finish(&state, (0, 0), Some(reason));
        }
    }
}

async fn local(
    mut client: TcpStream,
    state: &State,
    service: &meshfed_discovery::ServiceKey,
    port: u16,
) -> Result<tunnel::Carried, (Reason, String)> {
    let endpoints = state
        .tcp_endpoints(service, port)
        .map_err(|reason| (reason, String::new()))?;
    let mut upstream = tunnel::connect(&endpoints)
        .await
        .map_err(|reason| (reason, String::new()))?;
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((sent, received)) => Ok(tunnel::Carried { sent, received }),
        Err(error) => Err((Reason::UpstreamFailed, error.to_string())),
    }
}
