use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn label(s: &str) -> Label {
    s.parse().expect("label")
}

fn key(s: &str) -> ServiceKey {
    s.parse().expect("key")
}

fn port(name: Option<&str>, number: u16, protocol: Protocol) -> ServicePort {
    ServicePort {
        name: name.map(label),
        number,
        protocol,
    }
}

fn endpoint(hostname: &str, ready: bool) -> Endpoint {
    Endpoint {
        hostname: label(hostname),
        ready,
        labels: BTreeMap::new(),
    }
}

fn export(exported_at: u64, headless: bool, ports: Vec<ServicePort>) -> ServiceExport {
    ServiceExport {
        headless,
        exported_at,
        ports,
        endpoints: vec![endpoint("a", true)],
    }
}

fn catalog(cluster: &str, services: Vec<(&str, ServiceExport)>) -> ClusterCatalog {
    ClusterCatalog {
        cluster: label(cluster),
        version: 1,
        services: services.into_iter().map(|(k, e)| (key(k), e)).collect(),
    }
}

#[test]
fn ports_are_a_union_and_the_oldest_export_wins_a_conflict() {
    let http = port(Some("http"), 80, Protocol::Http);
    let east = catalog(
        "east",
        vec![("checkout.shop", export(100, false, vec![http.clone()]))],
    );
    let west = catalog(
        "west",
        vec![(
            "checkout.shop",
            export(
                200,
                true,
                vec![
                    port(Some("http"), 8080, Protocol::Http),
                    port(Some("grpc"), 9090, Protocol::Grpc),
                ],
            ),
        )],
    );
    let imports = merge([&west, &east]);
    let service = &imports.services[&key("checkout.shop")];
    assert_eq!(
        service.ports,
        vec![http.clone(), port(Some("grpc"), 9090, Protocol::Grpc)]
    );
    assert!(!service.headless, "east is older and is not headless");
    assert_eq!(
        service.clusters.keys().cloned().collect::<Vec<_>>(),
        vec![label("east"), label("west")]
    );
    assert_eq!(
        service.conflicts,
        vec![
            Conflict::Headless {
                kept: false,
                kept_from: label("east"),
                ignored_from: label("west"),
            },
            Conflict::Port {
                kept: http,
                kept_from: label("east"),
                ignored: port(Some("http"), 8080, Protocol::Http),
                ignored_from: label("west"),
            },
        ]
    );
    let text = service.conflicts[1].to_string();
    assert_eq!(
        text,
        "port http (8080/http) from west conflicts with http (80/http) from east, \
         the older export, which is used"
    );
}

#[test]
fn equal_ages_are_settled_by_cluster_name() {
    let a = catalog(
        "a",
        vec![(
            "s.n",
            export(5, false, vec![port(None, 80, Protocol::Http)]),
        )],
    );
    let b = catalog(
        "b",
        vec![("s.n", export(5, false, vec![port(None, 80, Protocol::Tcp)]))],
    );
    for imports in [merge([&a, &b]), merge([&b, &a])] {
        let service = &imports.services[&key("s.n")];
        assert_eq!(service.ports, vec![port(None, 80, Protocol::Http)]);
        assert_eq!(service.conflicts.len(), 1);
    }
}

#[test]
fn two_ports_with_one_number_are_a_conflict() {
    let east = catalog(
        "east",
        vec![(
            "api.shop",
            export(1, false, vec![port(Some("http"), 80, Protocol::Http)]),
        )],
    );
    let west = catalog(
        "west",
        vec![(
            "api.shop",
            export(2, false, vec![port(Some("tcp"), 80, Protocol::Tcp)]),
        )],
    );
    let imports = merge([&east, &west]);
    let service = &imports.services[&key("api.shop")];
    assert_eq!(service.ports, vec![port(Some("http"), 80, Protocol::Http)]);
    assert_eq!(service.conflicts.len(), 1, "{:?}", service.conflicts);
}

#[test]
fn ready_clusters_are_those_with_a_ready_endpoint() {
    let mut down = export(1, false, vec![port(Some("http"), 80, Protocol::Http)]);
    down.endpoints = vec![endpoint("a", false)];
    let imports = merge([
        &catalog("east", vec![("s.n", down)]),
        &catalog(
            "west",
            vec![(
                "s.n",
                export(1, false, vec![port(Some("http"), 80, Protocol::Http)]),
            )],
        ),
    ]);
    let ready: Vec<_> = imports.services[&key("s.n")].ready_clusters().collect();
    assert_eq!(ready, vec![&label("west")]);
}

#[test]
fn a_stale_diff_changes_nothing() {
    let mut old = catalog("east", vec![]);
    let new = catalog(
        "east",
        vec![("s.n", export(1, false, vec![port(None, 80, Protocol::Tcp)]))],
    );
    let mut diff = old.diff(&ClusterCatalog {
        version: 2,
        ..new.clone()
    });
    diff.from = 7;
    let before = old.clone();
    assert_eq!(old.apply(diff), Err(StaleDiff { from: 7, at: 1 }));
    assert_eq!(old, before);
}

#[test]
fn update_bumps_the_version_only_on_change() {
    let mut catalog = ClusterCatalog::new(label("east"));
    let services: BTreeMap<_, _> = [(
        key("s.n"),
        export(1, false, vec![port(None, 80, Protocol::Tcp)]),
    )]
    .into();
    let diff = catalog.update(services.clone()).expect("a change");
    assert_eq!((diff.from, diff.to, catalog.version), (0, 1, 1));
    assert_eq!(catalog.update(services), None);
    assert_eq!(catalog.version, 1);
}

#[test]
fn hostnames_derived_from_addresses_are_labels() {
    let cases = [
        ("10.1.2.3", "10-1-2-3"),
        ("fd00::1", "fd00--1"),
        ("::1", "0--1"),
        ("fd00::", "fd00--0"),
        ("::", "0--0"),
        ("::ffff:10.0.0.1", "0--ffff-10-0-0-1"),
    ];
    for (address, want) in cases {
        let address: IpAddr = address.parse().expect("ip");
        assert_eq!(Endpoint::hostname_of(address).as_str(), want, "{address}");
    }
}

// === properties ===

fn arb_label(names: &'static [&'static str]) -> impl Strategy<Value = Label> {
    proptest::sample::select(names).prop_map(label)
}

fn arb_port() -> impl Strategy<Value = ServicePort> {
    (
        proptest::option::of(arb_label(&["http", "grpc", "db"])),
        proptest::sample::select(&[80u16, 443, 5432, 8080][..]),
        proptest::sample::select(&[Protocol::Http, Protocol::Grpc, Protocol::Tcp][..]),
    )
        .prop_map(|(name, number, protocol)| ServicePort {
            name,
            number,
            protocol,
        })
}

fn arb_export() -> impl Strategy<Value = ServiceExport> {
    (
        any::<bool>(),
        0u64..4,
        proptest::collection::btree_map(
            arb_port().prop_map(|p| (p.name.clone(), p.number)),
            arb_port(),
            0..3,
        ),
        proptest::collection::btree_map(arb_label(&["a", "b", "c", "d"]), any::<bool>(), 0..4),
    )
        .prop_map(|(headless, exported_at, ports, endpoints)| ServiceExport {
            headless,
            exported_at,
            ports: ports.into_values().collect(),
            endpoints: endpoints
                .into_iter()
                .map(|(hostname, ready)| Endpoint {
                    hostname,
                    ready,
                    labels: BTreeMap::new(),
                })
                .collect(),
        })
}

fn arb_services() -> impl Strategy<Value = BTreeMap<ServiceKey, ServiceExport>> {
    proptest::collection::btree_map(
        proptest::sample::select(&["checkout.shop", "cart.shop", "db.data"][..]).prop_map(key),
        arb_export(),
        0..4,
    )
}

fn arb_catalogs() -> impl Strategy<Value = Vec<ClusterCatalog>> {
    proptest::collection::vec((arb_services(), 0u64..10), 1..5).prop_map(|parts| {
        parts
            .into_iter()
            .enumerate()
            .map(|(i, (services, version))| ClusterCatalog {
                cluster: label(&format!("c{i}")),
                version,
                services,
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn merge_does_not_depend_on_order(
        (catalogs, shuffled) in arb_catalogs()
            .prop_flat_map(|c| (Just(c.clone()), Just(c).prop_shuffle())),
    ) {
        prop_assert_eq!(merge(&catalogs), merge(&shuffled));
    }

    #[test]
    fn a_diff_applied_to_the_old_view_gives_the_new(
        old in arb_services(),
        new in arb_services(),
        version in 0u64..1000,
    ) {
        let mut old = ClusterCatalog { cluster: label("east"), version, services: old };
        let new = ClusterCatalog { cluster: label("east"), version: version + 1, services: new };
        let diff = old.diff(&new);
        prop_assert_eq!(diff.is_empty(), old.services == new.services);
        old.apply(diff).expect("fresh diff");
        prop_assert_eq!(old, new);
    }

    #[test]
    fn every_cluster_and_port_is_accounted_for(catalogs in arb_catalogs()) {
        let imports = merge(&catalogs);
        for catalog in &catalogs {
            for (key, export) in &catalog.services {
                let service = &imports.services[key];
                prop_assert_eq!(&service.clusters[&catalog.cluster], &export.endpoints);
                for port in &export.ports {
                    let kept = service.ports.contains(port);
                    let conflicted = service.conflicts.iter().any(|c| matches!(
                        c,
                        Conflict::Port { ignored, ignored_from, .. }
                            if ignored == port && ignored_from == &catalog.cluster
                    ));
                    prop_assert!(kept || conflicted, "{port:?} of {} lost", catalog.cluster);
                }
            }
        }
    }
}
