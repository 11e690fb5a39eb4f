//! Binding every listening socket before anything runs, so that a port in use fails start-up
//! with a clear error, and so that tests can bind port 0 and learn the addresses first.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};

use crate::config::{Listeners, TcpService};

/// The gateway's sockets, bound and not yet served.
#[derive(Debug)]
pub struct Bound {
    pub(crate) http: TcpListener,
    pub(crate) federation: UdpSocket,
    /// The federation port over TCP: bundle endpoint (and, later, control).
    pub(crate) federation_tcp: TcpListener,
    /// One socket per core, all on the DNS address (`SO_REUSEPORT`): the kernel spreads
    /// queries over them.
    pub(crate) dns_udp: Vec<UdpSocket>,
    pub(crate) dns_tcp: TcpListener,
    pub(crate) admin: TcpListener,
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {listener} ({address}): {error}")]
pub struct BindError {
    /// Which listener.
    pub listener: &'static str,
    /// The address it was to bind.
    pub address: SocketAddr,
    /// The operating system's reason.
    pub error: io::Error,
}

impl Bound {
    /// Binds every listener in `listeners`. Port 0 picks a free port; the DNS listener then uses
    /// the same port for TCP as the system picked for UDP.
    pub fn bind(listeners: &Listeners) -> Result<Bound, BindError> {
        let err = |listener, address| {
            move |error| BindError {
                listener,
                address,
                error,
            }
        };
        let http = tcp(listeners.http).map_err(err("listeners.http", listeners.http))?;
        let (federation, federation_tcp) = udp_and_tcp(listeners.federation, false)
            .map_err(err("listeners.federation", listeners.federation))?;
        let (dns_udp, dns_tcp) =
            udp_and_tcp(listeners.dns, true).map_err(err("listeners.dns", listeners.dns))?;
        let dns_udp = dns_sockets(dns_udp).map_err(err("listeners.dns", listeners.dns))?;
        let admin = tcp(listeners.admin).map_err(err("listeners.admin", listeners.admin))?;
        Ok(Bound {
            http,
            federation,
            federation_tcp,
            dns_udp,
            dns_tcp,
            admin,
        })
    }

    /// The addresses actually bound.
    pub fn addrs(&self) -> io::Result<Listeners> {
        Ok(Listeners {
            http: self.http.local_addr()?,
            federation: self.federation.local_addr()?,
            dns: self.dns_tcp.local_addr()?,
            admin: self.admin.local_addr()?,
        })
    }
}

/// Binds a listener for each TCP service.
pub(crate) fn tcp_services(
    services: &[TcpService],
) -> Result<Vec<(TcpService, TcpListener)>, BindError> {
    services
        .iter()
        .map(|service| {
            let listener = tcp(service.listen).map_err(|error| BindError {
                listener: "tcp_services[].listen",
                address: service.listen,
                error,
            })?;
            Ok((service.clone(), listener))
        })
        .collect()
}

/// One port number for UDP and TCP (DNS; QUIC and bundles on the federation port). With port 0
/// the system picks a free UDP port, which may be taken for TCP: then pick again, a bounded
/// number of times.
fn udp_and_tcp(address: SocketAddr, reuse_port: bool) -> io::Result<(UdpSocket, TcpListener)> {
    const ATTEMPTS: usize = 16;
    let mut attempt = 0;
    loop {
        let socket = udp(address, reuse_port)?;
        match tcp(socket.local_addr()?) {
            Ok(listener) => return Ok((socket, listener)),
            Err(error)
                if address.port() == 0
                    && error.kind() == io::ErrorKind::AddrInUse
                    && attempt < ATTEMPTS =>
            {
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The DNS UDP socket and one more on its address for each further core, so that every
/// worker thread answers from a socket of its own instead of all waking on one.
fn dns_sockets(first: UdpSocket) -> io::Result<Vec<UdpSocket>> {
    let address = first.local_addr()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut sockets = vec![first];
    for _ in 1..cores {
        sockets.push(udp(address, true)?);
    }
    Ok(sockets)
}

/// A listening TCP socket with `SO_REUSEADDR`, so that a restarted gateway can listen on its
/// port again while connections of the previous run (or any connection that happened to use
/// that port number) are in TIME-WAIT.
fn tcp(address: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A UDP socket with large kernel buffers. QUIC sends in bursts; with Linux's default
/// (208 KiB) a burst at a few Gbit/s overflows the receive buffer and the loss costs
/// retransmissions and, past quinn's limit on gaps in one stream, the whole connection. The
/// kernel caps the size at `net.core.rmem_max`/`wmem_max`; `docs/operations.md` says to raise
/// those to at least this. With `reuse_port`, several sockets share the address, one per core
/// (DNS; the DNS benchmark binds its server through this too).
pub fn udp(address: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::DGRAM, None)?;
    socket.set_reuse_port(reuse_port)?;
    // Best effort: a smaller buffer than asked for still works, only less well under bursts.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    socket.bind(&address.into())?;
    socket.set_nonblocking(true)?;
    let socket: UdpSocket = socket.into();
    Ok(socket)
}

/// The UDP socket buffer size asked for, each way.
pub const UDP_BUFFER: usize = 4 * 1024 * 1024;
