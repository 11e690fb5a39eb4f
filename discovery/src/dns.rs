//! The gateway's authoritative DNS server.
//!
//! It answers from a [`ZoneSet`]: an immutable snapshot of every zone and record, published
//! through a `watch` channel. Each query reads the snapshot current when it arrives, so a zone
//! change is seen whole or not at all. Authoritative only: names outside our zones are REFUSED,
//! and nothing is ever recursed or forwarded.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::NetError;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

/// How long a TCP client may stay idle before the server drops it.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest UDP answer we offer to EDNS clients (the 2020 DNS flag day value).
const MAX_UDP_PAYLOAD: u16 = 1232;

/// Every zone the server is authoritative for, with their records.
#[derive(Clone, Debug, Default)]
pub struct ZoneSet {
    /// Longest origin first, so that a nested zone wins over its parent.
    zones: Vec<Zone>,
}

/// One zone: its apex records and its address records.
#[derive(Clone, Debug)]
pub struct Zone {
    origin: LowerName,
    soa: Record,
    ns: Record,
    ttl: u32,
    addresses: HashMap<LowerName, Vec<Record>>,
    /// Every name that exists in the zone, empty non-terminals included, so that a query for an
    /// existing name with no records of its type gets NODATA rather than NXDOMAIN.
    existing: HashSet<LowerName>,
}

/// A running DNS server.
pub struct DnsServer {
    server: Server<Handler>,
}

/// A zone could not be built from the names given.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// A name is not a valid DNS name.
    #[error("{name:?} is not a valid DNS name: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// Why hickory refused it.
        reason: String,
    },
    /// A record was added outside the zone's origin.
    #[error("{name} is outside zone {origin}")]
    OutOfZone {
        /// The record's name.
        name: String,
        /// The zone's origin.
        origin: String,
    },
}

// === impl ZoneSet ===

impl ZoneSet {
    /// Adds a zone. Zones may nest; the most specific one answers.
    pub fn insert(&mut self, zone: Zone) {
        self.zones.retain(|z| z.origin != zone.origin);
        self.zones.push(zone);
        self.zones
            .sort_by_key(|z| std::cmp::Reverse(z.origin.num_labels()));
    }

    fn find(&self, name: &LowerName) -> Option<&Zone> {
        self.zones.iter().find(|z| z.origin.zone_of(name))
    }
}

// === impl Zone ===

impl Zone {
    /// An empty zone at `origin` (e.g. `clusterset.local`) whose answers carry `ttl` seconds.
    ///
    /// The SOA names `ns.<origin>` as primary; `serial` should grow with every change.
    pub fn new(origin: &str, ttl: u32, serial: u32) -> Result<Self, ZoneError> {
        let origin = fqdn(origin)?;
        let ns_name = fqdn(&format!("ns.{origin}"))?;
        let hostmaster = fqdn(&format!("hostmaster.{origin}"))?;
        // refresh, retry, expire matter only to secondaries; minimum is the negative-answer TTL.
        let soa = SOA::new(ns_name.clone(), hostmaster, serial, 3600, 600, 86400, ttl);
        let origin_lower = LowerName::from(&origin);
        Ok(Zone {
            soa: Record::from_rdata(origin.clone(), ttl, RData::SOA(soa)),
            ns: Record::from_rdata(origin, ttl, RData::NS(NS(ns_name))),
            existing: HashSet::from([origin_lower.clone()]),
            origin: origin_lower,
            ttl,
            addresses: HashMap::new(),
        })
    }

    /// Adds an A or AAAA record for `name`, which must be inside the zone.
    pub fn add_address(&mut self, name: &str, ip: IpAddr) -> Result<(), ZoneError> {
        let name = fqdn(name)?;
        let lower = LowerName::from(&name);
        if !self.origin.zone_of(&lower) {
            return Err(ZoneError::OutOfZone {
                name: name.to_string(),
                origin: self.origin.to_string(),
            });
        }
        let rdata = match ip {
            IpAddr::V4(ip) => RData::A(A(ip)),
            IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
        };
        let record = Record::from_rdata(name, self.ttl, rdata);
        let mut ancestor = lower.clone();
        while ancestor != self.origin && self.existing.insert(ancestor.clone()) {
            ancestor = ancestor.base_name();
        }
        let records = self.addresses.entry(lower).or_default();
        if !records.contains(&record) {
            records.push(record);
        }
        Ok(())
    }

    /// The answer to one question: records and response code.
    fn answer(&self, name: &LowerName, rtype: RecordType) -> (Vec<&Record>, ResponseCode) {
        let apex = name == &self.origin;
        let records: Vec<&Record> = match rtype {
            RecordType::SOA if apex => vec![&self.soa],
            RecordType::NS if apex => vec![&self.ns],
            RecordType::A | RecordType::AAAA | RecordType::ANY => self
                .addresses
                .get(name)
                .into_iter()
                .flatten()
                .filter(|r| rtype == RecordType::ANY || r.record_type() == rtype)
                .collect(),
            _ => Vec::new(),
        };
        if records.is_empty() && !self.existing.contains(name) {
            return (records, ResponseCode::NXDomain);
        }
        (records, ResponseCode::NoError)
    }
}

// === impl DnsServer ===

impl DnsServer {
    /// Serves `zones` (and every snapshot later published to it) on the given sockets.
    pub fn serve(udp: UdpSocket, tcp: TcpListener, zones: watch::Receiver<ZoneSet>) -> Self {
        let mut server = Server::new(Handler { zones });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, 32);
        DnsServer { server }
    }

    /// Stops accepting queries and waits for the listeners to end.
    pub async fn shutdown(mut self) -> Result<(), NetError> {
        self.server.shutdown_gracefully().await
    }
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer").finish_non_exhaustive()
    }
}

// === impl Handler ===

#[derive(Debug)]
struct Handler {
    zones: watch::Receiver<ZoneSet>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|theirs| {
            let mut ours = Edns::new();
            ours.set_max_payload(theirs.max_payload().min(MAX_UDP_PAYLOAD))
                .set_version(0);
            ours
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let query = match request.request_info() {
            Ok(info) if request.metadata.op_code == OpCode::Query => info.query,
            Ok(_) => {
                let msg = builder.error_msg(&request.metadata, ResponseCode::NotImp);
                return sent(response.send_response(msg).await, request);
            }
            Err(_) => {
                let msg = builder.error_msg(&request.metadata, ResponseCode::FormErr);
                return sent(response.send_response(msg).await, request);
            }
        };
        // Clone the snapshot out of the channel: the borrow must not be held across an await.
        let zones = self.zones.borrow().clone();
        let Some(zone) = zones.find(query.name()) else {
            let msg = builder.error_msg(&request.metadata, ResponseCode::Refused);
            return sent(response.send_response(msg).await, request);
        };
        let (answers, code) = zone.answer(query.name(), query.query_type());
        tracing::debug!(name = %query.name(), rtype = %query.query_type(), ?code, "dns query");
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.response_code = code;
        // Negative answers carry the SOA, whose minimum field is the negative-caching TTL.
        let soa = answers.is_empty().then_some(&zone.soa);
        let msg = builder.build(
            metadata,
            answers,
            std::iter::empty(),
            soa,
            std::iter::empty(),
        );
        sent(response.send_response(msg).await, request)
    }
}

fn sent(result: Result<ResponseInfo, NetError>, request: &Request) -> ResponseInfo {
    result.unwrap_or_else(|error| {
        tracing::debug!(%error, src = %request.src(), "could not send dns response");
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = ResponseCode::ServFail;
        Header {
            metadata,
            counts: HeaderCounts::default(),
        }
        .into()
    })
}

fn fqdn(name: &str) -> Result<Name, ZoneError> {
    let bad = |reason: String| ZoneError::BadName {
        name: name.to_owned(),
        reason,
    };
    let mut parsed = Name::from_ascii(name).map_err(|e| bad(e.to_string()))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Zone {
        let mut zone = Zone::new("clusterset.local", 5, 1).expect("zone");
        zone.add_address(
            "greeter.demo.svc.clusterset.local",
            "127.0.1.1".parse().expect("ip"),
        )
        .expect("record");
        zone
    }

    fn lower(s: &str) -> LowerName {
        LowerName::from(&fqdn(s).expect("name"))
    }

    #[test]
    fn answers_by_name_and_type() {
        let zone = zone();
        let cases = [
            (
                "greeter.demo.svc.clusterset.local",
                RecordType::A,
                1,
                ResponseCode::NoError,
            ),
            (
                "GREETER.demo.svc.clusterset.local",
                RecordType::A,
                1,
                ResponseCode::NoError,
            ),
            (
                "greeter.demo.svc.clusterset.local",
                RecordType::AAAA,
                0,
                ResponseCode::NoError,
            ),
            (
                "demo.svc.clusterset.local",
                RecordType::A,
                0,
                ResponseCode::NoError,
            ),
            (
                "nope.demo.svc.clusterset.local",
                RecordType::A,
                0,
                ResponseCode::NXDomain,
            ),
            (
                "clusterset.local",
                RecordType::SOA,
                1,
                ResponseCode::NoError,
            ),
            ("clusterset.local", RecordType::NS, 1, ResponseCode::NoError),
            ("clusterset.local", RecordType::A, 0, ResponseCode::NoError),
        ];
        for (name, rtype, count, code) in cases {
            let (answers, got) = zone.answer(&lower(name), rtype);
            assert_eq!((answers.len(), got), (count, code), "{name} {rtype}");
        }
    }

    #[test]
    fn nested_zone_wins_and_outside_names_are_not_ours() {
        let mut set = ZoneSet::default();
        set.insert(Zone::new("local", 5, 1).expect("zone"));
        set.insert(zone());
        let found = set.find(&lower("x.clusterset.local")).expect("zone");
        assert_eq!(found.origin, lower("clusterset.local"));
        assert!(set.find(&lower("example.com")).is_none());
    }

    #[test]
    fn records_outside_the_zone_are_refused() {
        let mut zone = zone();
        let err = zone
            .add_address("x.example.com", "127.0.0.1".parse().expect("ip"))
            .expect_err("outside");
        assert!(matches!(err, ZoneError::OutOfZone { .. }), "{err}");
    }
}
