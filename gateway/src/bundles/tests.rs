//! The poller against hostile bundle endpoints: each case must be refused with its reason and
//! leave the bundle held unchanged. The endpoints here are real TLS servers on port 0 that
//! answer one fixed response; they stand in for a peer gone wrong, which no real peer of ours
//! can be made to be.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshfed_trust::{Bundle, Ca, SpiffeId, Svid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::poll::{Poller, Profile};

const HOUR: Duration = Duration::from_secs(3600);

struct Peer {
    ca: Ca,
    gateway: SpiffeId,
}

fn peer() -> Peer {
    let ca = Ca::generate("west.test".parse().expect("td"), SystemTime::now()).expect("CA");
    let gateway = SpiffeId::new(
        "west.test".parse().expect("td"),
        ["meshfed", "gateway", "west"],
    )
    .expect("id");
    Peer { ca, gateway }
}

/// A TLS server presenting `svid` that answers every request with `response`.
async fn endpoint(svid: &Svid, response: Vec<u8>) -> SocketAddr {
    let config = rustls::ServerConfig::builder_with_provider(meshfed_trust::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(svid.chain().to_vec(), svid.key().clone_key())
        .expect("config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                continue;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tls.write_all(&response).await;
            let _ = tls.shutdown().await;
        }
    });
    addr
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn poller(peer: &Peer, addr: SocketAddr, held: Bundle) -> (Poller, mpsc::Receiver<Bundle>) {
    let (tx, rx) = mpsc::channel(4);
    let poller = Poller {
        peer: "west".parse().expect("label"),
        url: format!("https://{addr}/").parse().expect("url"),
        profile: Profile::Spiffe(peer.gateway.clone()),
        current: held,
        state_dir: None,
        updates: tx,
        stats: Default::default(),
    };
    (poller, rx)
}

fn held(peer: &Peer, sequence: u64) -> Bundle {
    Bundle::new(peer.ca.trust_domain().clone(), vec![peer.ca.root().clone()])
        .with_sequence(sequence)
}

#[tokio::test]
async fn hostile_endpoints_are_refused_and_change_nothing() {
    let west = peer();
    let svid = west
        .ca
        .issue(&west.gateway, SystemTime::now(), HOUR)
        .expect("svid");
    let other_id = SpiffeId::new(west.ca.trust_domain().clone(), ["somebody", "else"]).expect("id");
    let impostor = west
        .ca
        .issue(&other_id, SystemTime::now(), HOUR)
        .expect("svid");
    let north = Ca::generate("north.test".parse().expect("td"), SystemTime::now()).expect("CA");
    let next = Ca::generate("west.test".parse().expect("td"), SystemTime::now()).expect("CA");
    let newer = |sequence| {
        Bundle::new(
            west.ca.trust_domain().clone(),
            vec![west.ca.root().clone(), next.root().clone()],
        )
        .with_sequence(sequence)
        .to_jwks()
    };
    let foreign = Bundle::new(
        "north.test".parse().expect("td"),
        vec![north.root().clone()],
    )
    .to_jwks();

    let cases: Vec<(&str, &Svid, Vec<u8>, &str)> = vec![
        (
            "redirect",
            &svid,
            b"HTTP/1.1 302 Found\r\nlocation: https://elsewhere.invalid/\r\ncontent-length: 0\r\n\r\n".to_vec(),
            "redirects are not followed",
        ),
        ("wrong endpoint ID", &impostor, ok(&newer(20)), "TLS with"),
        ("lower sequence", &svid, ok(&newer(5)), "lower than the 10 held"),
        ("another trust domain", &svid, ok(&foreign), "is a CA of trust domain north.test"),
        ("not a bundle", &svid, ok("{\"keys\": 7}"), "not a SPIFFE bundle"),
        ("server error", &svid, b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n".to_vec(), "answered 500"),
    ];
    for (name, presented, response, reason) in cases {
        let addr = endpoint(presented, response).await;
        let (mut poller, mut updates) = poller(&west, addr, held(&west, 10));
        let error = poller.poll().await.expect_err(name);
        assert!(error.contains(reason), "{name}: {error}");
        assert_eq!(
            poller.current,
            held(&west, 10),
            "{name}: the held bundle changed"
        );
        assert!(updates.try_recv().is_err(), "{name}: an update was sent");
    }

    // The control: a good endpoint with a newer bundle is taken, and handed on.
    let addr = endpoint(&svid, ok(&newer(20))).await;
    let (mut poller, mut updates) = poller(&west, addr, held(&west, 10));
    poller.poll().await.expect("a good bundle");
    assert_eq!(poller.current.authorities().len(), 2);
    assert_eq!(updates.try_recv().expect("update").sequence(), Some(20));
}
