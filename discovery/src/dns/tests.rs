//! The zone and the wire, end to end without sockets: queries built and answers read by
//! hickory's own message codec, an implementation independent of ours.

use std::collections::BTreeMap;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};

use super::message::{Rcode, Transport, respond};
use super::*;
use crate::catalog::{ClusterCatalog, Endpoint, Protocol, ServiceExport, ServicePort, merge};

fn export(headless: bool, endpoints: usize) -> ServiceExport {
    ServiceExport {
        headless,
        exported_at: 1,
        ports: vec![
            ServicePort {
                name: Some("http".parse().expect("label")),
                number: 80,
                protocol: Protocol::Http,
            },
            ServicePort {
                name: None,
                number: 9000,
                protocol: Protocol::Tcp,
            },
        ],
        endpoints: (0..endpoints)
            .map(|i| Endpoint {
                hostname: format!("pod-{i}").parse().expect("label"),
                ready: i != 1,
                labels: BTreeMap::new(),
            })
            .collect(),
    }
}

fn zones() -> ZoneSet {
    let east = ClusterCatalog {
        cluster: "east".parse().expect("label"),
        version: 1,
        services: [
            ("checkout.shop".parse().expect("key"), export(false, 2)),
            ("db.data".parse().expect("key"), export(true, 3)),
            ("big.data".parse().expect("key"), export(true, 30)),
        ]
        .into(),
    };
    let west = ClusterCatalog {
        cluster: "west".parse().expect("label"),
        version: 1,
        services: [
            ("db.data".parse().expect("key"), export(true, 1)),
            ("gone.data".parse().expect("key"), export(true, 0)),
        ]
        .into(),
    };
    let imports = merge([&east, &west]);
    let mut zones = ClustersetZones::new(clusterset(), 6).expect("zones");
    zones.update(&imports).expect("zones")
}

fn clusterset() -> Clusterset {
    Clusterset {
        zone: "clusterset.local".to_owned(),
        pinned_zone: "meshfed.internal".to_owned(),
        ttl: 5,
        address: "10.0.0.5".parse().expect("ip"),
        nameserver: "10.0.0.53".parse().expect("ip"),
    }
}

fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 0x1234;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    if let Some(payload) = edns {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        message.set_edns(edns);
    }
    message.to_bytes().expect("encode")
}

fn ask(zones: &ZoneSet, bytes: &[u8], transport: Transport) -> Message {
    let mut out = Vec::new();
    respond(zones, bytes, transport, &mut out).expect("an answer");
    Message::from_bytes(&out).expect("a well-formed response")
}

fn texts(message: &Message) -> Vec<String> {
    let mut texts: Vec<String> = message
        .answers
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    texts.sort();
    texts
}

#[test]
fn answers_follow_the_mcs_specification() {
    let zones = zones();
    let svc = "checkout.shop.svc.clusterset.local.";
    let db = "db.data.svc.clusterset.local.";
    let cases: &[(&str, RecordType, ResponseCode, &[&str])] = &[
        (
            svc,
            RecordType::A,
            ResponseCode::NoError,
            &["checkout.shop.svc.clusterset.local. 10.0.0.5"],
        ),
        (svc, RecordType::AAAA, ResponseCode::NoError, &[]),
        (
            "CheckOut.Shop.SVC.clusterset.local.",
            RecordType::A,
            ResponseCode::NoError,
            &["CheckOut.Shop.SVC.clusterset.local. 10.0.0.5"],
        ),
        (
            "_http._tcp.checkout.shop.svc.clusterset.local.",
            RecordType::SRV,
            ResponseCode::NoError,
            &[
                "_http._tcp.checkout.shop.svc.clusterset.local. 0 100 80 checkout.shop.svc.clusterset.local.",
            ],
        ),
        (
            "_tcp.checkout.shop.svc.clusterset.local.",
            RecordType::SRV,
            ResponseCode::NoError,
            &[],
        ),
        (
            "_grpc._tcp.checkout.shop.svc.clusterset.local.",
            RecordType::SRV,
            ResponseCode::NXDomain,
            &[],
        ),
        (
            "dns-version.clusterset.local.",
            RecordType::TXT,
            ResponseCode::NoError,
            &["dns-version.clusterset.local. 1.0.0"],
        ),
        (
            "shop.svc.clusterset.local.",
            RecordType::A,
            ResponseCode::NoError,
            &[],
        ),
        (
            "nope.shop.svc.clusterset.local.",
            RecordType::A,
            ResponseCode::NXDomain,
            &[],
        ),
        // Forbidden by the specification: a cluster's backends under the clusterset name.
        (
            "east.checkout.shop.svc.clusterset.local.",
            RecordType::A,
            ResponseCode::NXDomain,
            &[],
        ),
        (
            db,
            RecordType::A,
            ResponseCode::NoError,
            &["db.data.svc.clusterset.local. 10.0.0.5"],
        ),
        (
            "pod-2.east.db.data.svc.clusterset.local.",
            RecordType::A,
            ResponseCode::NoError,
            &["pod-2.east.db.data.svc.clusterset.local. 10.0.0.5"],
        ),
        // Not ready: no name.
        (
            "pod-1.east.db.data.svc.clusterset.local.",
            RecordType::A,
            ResponseCode::NXDomain,
            &[],
        ),
        (
            "_http._tcp.db.data.svc.clusterset.local.",
            RecordType::SRV,
            ResponseCode::NoError,
            &[
                "_http._tcp.db.data.svc.clusterset.local. 0 100 80 pod-0.east.db.data.svc.clusterset.local.",
                "_http._tcp.db.data.svc.clusterset.local. 0 100 80 pod-0.west.db.data.svc.clusterset.local.",
                "_http._tcp.db.data.svc.clusterset.local. 0 100 80 pod-2.east.db.data.svc.clusterset.local.",
            ],
        ),
        // Headless with no ready endpoint: NXDOMAIN, as the specification says.
        (
            "gone.data.svc.clusterset.local.",
            RecordType::A,
            ResponseCode::NXDomain,
            &[],
        ),
        (
            "checkout.shop.east.meshfed.internal.",
            RecordType::A,
            ResponseCode::NoError,
            &["checkout.shop.east.meshfed.internal. 10.0.0.5"],
        ),
        (
            "checkout.shop.west.meshfed.internal.",
            RecordType::A,
            ResponseCode::NXDomain,
            &[],
        ),
        (
            "ns.clusterset.local.",
            RecordType::A,
            ResponseCode::NoError,
            &["ns.clusterset.local. 10.0.0.53"],
        ),
        ("example.com.", RecordType::A, ResponseCode::Refused, &[]),
        (
            "xclusterset.local.",
            RecordType::A,
            ResponseCode::Refused,
            &[],
        ),
        (
            "clusterset.local.",
            RecordType::AXFR,
            ResponseCode::Refused,
            &[],
        ),
    ];
    for (name, rtype, rcode, answers) in cases {
        let response = ask(&zones, &query(name, *rtype, None), Transport::Udp);
        let what = format!("{name} {rtype}");
        assert_eq!(response.metadata.response_code, *rcode, "{what}");
        assert_eq!(texts(&response), *answers, "{what}");
        assert_eq!(
            response.metadata.message_type,
            MessageType::Response,
            "{what}"
        );
        assert_eq!(response.metadata.id, 0x1234, "{what}");
        assert!(response.metadata.recursion_desired, "{what}: RD is copied");
        assert!(
            !response.metadata.recursion_available,
            "{what}: no recursion"
        );
        let ours = *rcode != ResponseCode::Refused;
        assert_eq!(response.metadata.authoritative, ours, "{what}");
        let negative = ours && answers.is_empty();
        assert_eq!(
            response
                .authorities
                .iter()
                .map(|r| r.record_type())
                .collect::<Vec<_>>(),
            if negative {
                vec![RecordType::SOA]
            } else {
                vec![]
            },
            "{what}: negative answers carry the SOA"
        );
        assert_eq!(response.queries.len(), 1, "{what}: the question is echoed");
    }
}

#[test]
fn the_apex_has_soa_and_ns() {
    let zones = zones();
    for (origin, rtype) in [
        ("clusterset.local.", RecordType::SOA),
        ("clusterset.local.", RecordType::NS),
        ("meshfed.internal.", RecordType::SOA),
    ] {
        let response = ask(&zones, &query(origin, rtype, None), Transport::Udp);
        assert_eq!(response.answers.len(), 1, "{origin} {rtype}");
        let RData::SOA(soa) = &response.answers[0].data else {
            assert_eq!(rtype, RecordType::NS);
            continue;
        };
        assert_eq!(soa.serial, 7);
        assert_eq!(soa.minimum, 5, "the negative-caching TTL is the zone's TTL");
    }
}

#[test]
fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let zones = zones();
    // 29 SRV records of about 60 bytes: more than the 1,232 bytes we offer over UDP.
    let big = "_http._tcp.big.data.svc.clusterset.local.";
    let small = "_http._tcp.db.data.svc.clusterset.local.";
    let cases = [
        (big, None, Transport::Udp, Some(0)),
        (big, Some(1232), Transport::Udp, Some(0)),
        (big, Some(4096), Transport::Udp, Some(0)),
        (big, None, Transport::Tcp, Some(29)),
        (big, Some(1232), Transport::Tcp, Some(29)),
        (small, None, Transport::Udp, None),
        (small, Some(512), Transport::Udp, None),
    ];
    for (name, edns, transport, truncated_to) in cases {
        let response = ask(&zones, &query(name, RecordType::SRV, edns), transport);
        let what = format!("{name} {edns:?} {transport:?}");
        let truncated = truncated_to == Some(0);
        assert_eq!(response.metadata.truncation, truncated, "{what}");
        let want = truncated_to.unwrap_or(3);
        assert_eq!(response.answers.len(), want, "{what}");
        assert_eq!(
            response.edns.is_some(),
            edns.is_some(),
            "{what}: EDNS answered with EDNS"
        );
        if let Some(edns) = &response.edns {
            assert_eq!(edns.max_payload(), 1232, "{what}");
        }
    }
}

/// An RRset too large for any DNS message (an SRV set of 1,500 endpoints, about 90 KB) is
/// left out; the name's other records, the other services and later changes are not.
#[test]
fn an_rrset_too_large_for_dns_leaves_the_rest_of_the_zone_alone() {
    let catalog = |services: Vec<(&str, ServiceExport)>| ClusterCatalog {
        cluster: "east".parse().expect("label"),
        version: 1,
        services: services
            .into_iter()
            .map(|(key, export)| (key.parse().expect("key"), export))
            .collect(),
    };
    let mut live = ClustersetZones::new(clusterset(), 6).expect("zones");
    let first = merge([&catalog(vec![
        ("huge.data", export(true, 1_500)),
        ("checkout.shop", export(false, 2)),
    ])]);
    let zones = live.update(&first).expect("the zone is published");
    let answers = |zones: &ZoneSet, name: &str, rtype| {
        let response = ask(zones, &query(name, rtype, None), Transport::Tcp);
        (response.metadata.response_code, response.answers.len())
    };
    let srv = "_http._tcp.huge.data.svc.clusterset.local.";
    assert_eq!(
        answers(&zones, srv, RecordType::SRV),
        (ResponseCode::NoError, 0)
    );
    let huge = "huge.data.svc.clusterset.local.";
    // Every name answers the gateway's address (traffic goes through it).
    assert_eq!(
        answers(&zones, huge, RecordType::A),
        (ResponseCode::NoError, 1)
    );
    let checkout = "checkout.shop.svc.clusterset.local.";
    assert_eq!(
        answers(&zones, checkout, RecordType::A),
        (ResponseCode::NoError, 1)
    );

    // A later change in the same commit as the oversized set is still taken.
    let second = merge([&catalog(vec![
        ("huge.data", export(true, 1_501)),
        ("cart.shop", export(false, 1)),
    ])]);
    let zones = live.update(&second).expect("the zone is published");
    let cart = "cart.shop.svc.clusterset.local.";
    assert_eq!(
        answers(&zones, cart, RecordType::A),
        (ResponseCode::NoError, 1)
    );
    assert_eq!(
        answers(&zones, checkout, RecordType::A).0,
        ResponseCode::NXDomain
    );
}

#[test]
fn malformed_queries_get_a_clear_code_or_nothing() {
    let zones = zones();
    let good = query("checkout.shop.svc.clusterset.local.", RecordType::A, None);
    let mut response = good.clone();
    response[2] |= 0x80;
    let mut two_questions = good.clone();
    two_questions[5] = 2;
    let mut notify = good.clone();
    notify[2] |= u8::from(OpCode::Notify) << 3;
    let mut pointer = good.clone();
    pointer[12] = 0xc0;
    let mut badvers = query(
        "checkout.shop.svc.clusterset.local.",
        RecordType::A,
        Some(1232),
    );
    let version_at = badvers.len() - 5;
    badvers[version_at] = 1;
    let cases: [(&str, Vec<u8>, Option<Rcode>); 7] = [
        ("a response", response, None),
        ("too short", good[..11].to_vec(), None),
        ("two questions", two_questions, Some(Rcode::FormErr)),
        ("a NOTIFY", notify, Some(Rcode::NotImp)),
        ("a compressed question", pointer, Some(Rcode::FormErr)),
        (
            "a cut question",
            good[..good.len() - 2].to_vec(),
            Some(Rcode::FormErr),
        ),
        ("EDNS version 1", badvers, Some(Rcode::BadVers)),
    ];
    for (what, bytes, want) in cases {
        let mut out = Vec::new();
        assert_eq!(
            respond(&zones, &bytes, Transport::Udp, &mut out),
            want,
            "{what}"
        );
        if want.is_some() {
            let message = Message::from_bytes(&out).expect(what);
            assert_eq!(message.metadata.id, 0x1234, "{what}");
        }
    }
}

#[test]
fn every_prefix_of_a_query_is_handled_without_panic() {
    let zones = zones();
    let good = query(
        "_http._tcp.db.data.svc.clusterset.local.",
        RecordType::SRV,
        Some(1232),
    );
    let mut out = Vec::new();
    for end in 0..good.len() {
        let _ = respond(&zones, &good[..end], Transport::Udp, &mut out);
        for flip in 0..8 {
            let mut bytes = good[..end].to_vec();
            if let Some(byte) = bytes.get_mut(end.saturating_sub(1)) {
                *byte ^= 1 << flip;
            }
            let _ = respond(&zones, &bytes, Transport::Udp, &mut out);
        }
    }
}

mod incremental {
    use proptest::prelude::*;

    use super::*;

    const SERVICES: [&str; 3] = ["checkout.shop", "cart.shop", "db.data"];
    const CLUSTERS: [&str; 3] = ["east", "west", "north"];
    const HOSTS: [&str; 3] = ["a", "b", "c"];

    fn arb_export() -> impl Strategy<Value = ServiceExport> {
        (
            any::<bool>(),
            proptest::sample::subsequence(
                vec![("http", 80u16), ("grpc", 9090), ("db", 5432)],
                0..3,
            ),
            proptest::collection::vec(any::<bool>(), 0..3),
        )
            .prop_map(|(headless, ports, ready)| ServiceExport {
                headless,
                exported_at: 1,
                ports: ports
                    .into_iter()
                    .map(|(name, number)| ServicePort {
                        name: Some(name.parse().expect("label")),
                        number,
                        protocol: Protocol::Http,
                    })
                    .collect(),
                endpoints: ready
                    .into_iter()
                    .enumerate()
                    .map(|(i, ready)| Endpoint {
                        hostname: HOSTS[i].parse().expect("label"),
                        ready,
                        labels: BTreeMap::new(),
                    })
                    .collect(),
            })
    }

    fn arb_imports() -> impl Strategy<Value = crate::catalog::Imports> {
        proptest::collection::vec(
            proptest::collection::btree_map(
                proptest::sample::select(&SERVICES[..]),
                arb_export(),
                0..3,
            ),
            3,
        )
        .prop_map(|clusters| {
            let catalogs: Vec<ClusterCatalog> = clusters
                .into_iter()
                .enumerate()
                .map(|(i, services)| ClusterCatalog {
                    cluster: CLUSTERS[i].parse().expect("label"),
                    version: 1,
                    services: services
                        .into_iter()
                        .map(|(k, e)| (k.parse().expect("key"), e))
                        .collect(),
                })
                .collect();
            merge(&catalogs)
        })
    }

    /// Every name the generated imports could give, and some they never do.
    fn names() -> Vec<String> {
        let mut names = vec![
            "clusterset.local.".to_owned(),
            "svc.clusterset.local.".to_owned(),
            "shop.svc.clusterset.local.".to_owned(),
            "data.svc.clusterset.local.".to_owned(),
            "dns-version.clusterset.local.".to_owned(),
            "meshfed.internal.".to_owned(),
            "nope.shop.svc.clusterset.local.".to_owned(),
        ];
        for service in SERVICES {
            let base = format!("{service}.svc.clusterset.local.");
            names.push(base.clone());
            names.push(format!("_tcp.{base}"));
            for port in ["http", "grpc", "db"] {
                names.push(format!("_{port}._tcp.{base}"));
            }
            for cluster in CLUSTERS {
                names.push(format!("{service}.{cluster}.meshfed.internal."));
                names.push(format!("{cluster}.{base}"));
                for host in HOSTS {
                    names.push(format!("{host}.{cluster}.{base}"));
                }
            }
        }
        names
    }

    fn answers(zones: &ZoneSet) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        for name in names() {
            for rtype in [
                RecordType::A,
                RecordType::SRV,
                RecordType::SOA,
                RecordType::TXT,
            ] {
                let mut out = Vec::new();
                respond(
                    zones,
                    &query(&name, rtype, Some(4096)),
                    Transport::Udp,
                    &mut out,
                );
                all.push(out);
            }
        }
        all
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn incremental_updates_answer_as_a_fresh_build(steps in proptest::collection::vec(arb_imports(), 1..6)) {
            let mut live = ClustersetZones::new(clusterset(), 100).expect("zones");
            for (i, imports) in steps.iter().enumerate() {
                let incremental = live.update(imports).expect("update");
                let serial_before = 100 + u32::try_from(i).expect("small");
                let mut fresh = ClustersetZones::new(clusterset(), serial_before).expect("zones");
                let fresh = fresh.update(imports).expect("build");
                prop_assert_eq!(incremental.len(), fresh.len());
                prop_assert!(answers(&incremental) == answers(&fresh), "step {}", i);
            }
        }
    }
}
