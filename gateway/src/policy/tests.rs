//! Properties of the decision core: splits converge on their weights, faults on their rates,
//! and equivalent paths are one path.

use std::time::Duration;

use http::{HeaderMap, Method};
use proptest::prelude::*;

use super::*;

fn label(s: &str) -> Label {
    s.parse().expect("label")
}

fn service() -> ServiceKey {
    "greeter.demo".parse().expect("service")
}

fn route(backends: Vec<Backend>, fault: Fault) -> Route {
    Route {
        name: "routes[0]".into(),
        matches: Vec::new(),
        backends,
        request_headers: HeaderChanges::default(),
        response_headers: HeaderChanges::default(),
        timeout: None,
        fault,
        retries: None,
    }
}

fn policy(route: Route) -> Policy {
    let mut policy = Policy::default();
    policy.services.insert(
        service(),
        ServicePolicy {
            routes: vec![route],
            ..ServicePolicy::default()
        },
    );
    policy
}

fn backend(cluster: &str, weight: u32) -> Backend {
    Backend {
        cluster: label(cluster),
        subset: None,
        weight,
    }
}

/// How many of `n` requests each cluster got.
fn tally(
    policy: &Policy,
    n: usize,
    seed: u64,
    available: impl Fn(&Label) -> bool,
) -> BTreeMap<String, usize> {
    let headers = HeaderMap::new();
    let request = RequestView {
        method: &Method::GET,
        path: "/",
        query: None,
        headers: &headers,
        client: None,
    };
    let mut dice = SplitMix64::new(seed);
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let decision = policy.decide(&service(), &request, None, |c, _| available(c), &mut dice);
        let key = match decision.target {
            Target::Cluster(cluster, _) => cluster.to_string(),
            other => format!("{other:?}"),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

proptest! {
    /// The rule: over 10,000 requests a 90/10 split lands within 2 % of its weights.
    #[test]
    fn a_90_10_split_holds_within_2_percent(seed in any::<u64>()) {
        let policy = policy(route(vec![backend("east", 90), backend("west", 10)], Fault::default()));
        let counts = tally(&policy, 10_000, seed, |_| true);
        let east = counts.get("east").copied().unwrap_or(0) as f64 / 10_000.0;
        let west = counts.get("west").copied().unwrap_or(0) as f64 / 10_000.0;
        prop_assert!((east - 0.9).abs() < 0.02, "east {east}");
        prop_assert!((west - 0.1).abs() < 0.02, "west {west}");
    }

    /// Any weights: every backend's share is within 2 % of its weight's share over 20,000
    /// requests; a backend of weight 0 gets nothing.
    #[test]
    fn every_split_converges(seed in any::<u64>(), weights in prop::collection::vec(0u32..=100, 1..5)) {
        prop_assume!(weights.iter().any(|w| *w > 0));
        let names = ["a", "b", "c", "d"];
        let backends = weights.iter().zip(names).map(|(w, n)| backend(n, *w)).collect();
        let policy = policy(route(backends, Fault::default()));
        let counts = tally(&policy, 20_000, seed, |_| true);
        let total: u32 = weights.iter().sum();
        for (weight, name) in weights.iter().zip(names) {
            let share = counts.get(name).copied().unwrap_or(0) as f64 / 20_000.0;
            let want = f64::from(*weight) / f64::from(total);
            prop_assert!((share - want).abs() < 0.02, "{name}: {share} for {want}");
            if *weight == 0 {
                prop_assert_eq!(share, 0.0);
            }
        }
    }

    /// With hashing on a header, a request's key keeps its backend whatever the dice, as long
    /// as the weights are unchanged.
    #[test]
    fn a_sticky_key_keeps_its_backend(
        user in "[a-z0-9]{1,12}",
        weights in prop::collection::vec(1u32..100, 2..5),
        seeds in prop::collection::vec(any::<u64>(), 10),
    ) {
        let names = ["a", "b", "c", "d"];
        let backends = weights.iter().zip(names).map(|(w, n)| backend(n, *w)).collect();
        let mut policy = policy(route(backends, Fault::default()));
        if let Some(service) = policy.services.get_mut(&service()) {
            service.load_balancer = balance::Algorithm::Hash(balance::HashOn::Header(
                http::HeaderName::from_static("x-user"),
            ));
        }
        let mut headers = HeaderMap::new();
        headers.insert("x-user", user.parse().expect("value"));
        let request = RequestView {
            method: &Method::GET,
            path: "/",
            query: None,
            headers: &headers,
            client: None,
        };
        let targets: Vec<Target> = seeds
            .iter()
            .map(|seed| {
                let mut dice = SplitMix64::new(*seed);
                policy.decide(&service(), &request, None, |_, _| true, &mut dice).target
            })
            .collect();
        prop_assert!(targets.windows(2).all(|t| t[0] == t[1]), "{:?}", targets);
    }

    /// An unavailable backend gets nothing, and the rest share its part by their weights:
    /// within 3 % over 10,000 requests (six standard deviations, so that 256 random seeds a
    /// run do not make a flaky test).
    #[test]
    fn unavailable_backends_are_skipped(seed in any::<u64>()) {
        let backends = vec![backend("a", 50), backend("b", 30), backend("c", 20)];
        let policy = policy(route(backends, Fault::default()));
        let counts = tally(&policy, 10_000, seed, |c| c.as_str() != "a");
        prop_assert_eq!(counts.get("a"), None);
        let b = counts.get("b").copied().unwrap_or(0) as f64 / 10_000.0;
        prop_assert!((b - 0.6).abs() < 0.03, "b {b}");
    }

    /// Delay and abort rates hold within 2 % of their percentages over 40,000 requests (at
    /// least eight standard deviations), and are drawn independently.
    #[test]
    fn fault_rates_hold(seed in any::<u64>(), delay in 0u32..=100, abort in 0u32..=100) {
        let fault = Fault {
            delay: Some(Delay { duration: Duration::from_millis(5), chance: Chance::from_percent(f64::from(delay)).expect("chance") }),
            abort: Some(Abort { status: AbortStatus::Grpc(14), chance: Chance::from_percent(f64::from(abort)).expect("chance") }),
        };
        let mut dice = SplitMix64::new(seed);
        let (mut delayed, mut aborted, mut both) = (0u32, 0u32, 0u32);
        for _ in 0..40_000 {
            let injected = fault.roll(&mut dice);
            delayed += u32::from(injected.delay.is_some());
            aborted += u32::from(injected.abort.is_some());
            both += u32::from(injected.delay.is_some() && injected.abort.is_some());
        }
        let rate = |n: u32| f64::from(n) / 400.0;
        prop_assert!((rate(delayed) - f64::from(delay)).abs() < 2.0, "delayed {}", rate(delayed));
        prop_assert!((rate(aborted) - f64::from(abort)).abs() < 2.0, "aborted {}", rate(aborted));
        let expected_both = f64::from(delay) * f64::from(abort) / 100.0;
        prop_assert!((rate(both) - expected_both).abs() < 2.0, "both {}", rate(both));
    }

    /// Writing a path with doubled slashes, `.` segments, `x/..` detours or escaped unreserved
    /// characters never changes its canonical form; and the canonical form is a fixed point.
    #[test]
    fn equivalent_paths_are_one_path(
        segments in prop::collection::vec("[a-zA-Z0-9_~-]{1,8}", 0..6),
        tricks in prop::collection::vec(0u8..5, 0..6),
        trailing in any::<bool>(),
    ) {
        let (plain, tricked) = spellings(&segments, &tricks, trailing);
        let canonical = path::normalize(&plain).expect("plain");
        prop_assert!(matches!(canonical, std::borrow::Cow::Borrowed(_)), "{} was rewritten", plain);
        prop_assert_eq!(&canonical, &plain);
        prop_assert_eq!(path::normalize(&tricked).expect("tricked"), canonical.clone());
        prop_assert_eq!(path::normalize(&canonical).expect("again"), canonical.clone());
    }

    /// Authorization decides on the canonical path, so that any spelling of a path gets the
    /// decision of its plain form, whatever rules there are: prefixes, exact paths and regexes
    /// cut from the path's own segments, allowing and denying.
    #[test]
    fn equivalent_paths_get_one_authorization_decision(
        segments in prop::collection::vec("[a-z]{1,3}", 1..5),
        tricks in prop::collection::vec(0u8..5, 0..5),
        trailing in any::<bool>(),
        rules in prop::collection::vec((any::<bool>(), 0u8..3, 0usize..5), 0..4),
    ) {
        let (plain, tricked) = spellings(&segments, &tricks, trailing);
        let rules = rules
            .into_iter()
            .enumerate()
            .map(|(i, (deny, kind, cut))| {
                let cut = format!("/{}", segments[..cut.min(segments.len())].join("/"));
                authz::Rule {
                    name: format!("r{i}"),
                    action: if deny { authz::Action::Deny } else { authz::Action::Allow },
                    from: Vec::new(),
                    services: Vec::new(),
                    ports: Vec::new(),
                    methods: Vec::new(),
                    paths: vec![match kind {
                        0 => matching::PathMatch::Prefix(cut),
                        1 => matching::PathMatch::Exact(cut),
                        _ => matching::PathMatch::Regex(
                            regex::Regex::new(&format!("^{}(/.*)?$", regex::escape(&cut))).expect("regex"),
                        ),
                    }],
                }
            })
            .collect();
        let authorization = authz::Authorization { rules };
        let source: meshfed_trust::SpiffeId = "spiffe://east.test/ns/shop/sa/web".parse().expect("id");
        let decide = |path: &str| {
            authorization
                .decide(&authz::Access {
                    source: &source,
                    service: &service(),
                    port: 80,
                    method: &Method::GET,
                    path: Some(path),
                })
                .is_allowed()
        };
        let canonical = path::normalize(&tricked).expect("tricked");
        prop_assert_eq!(decide(&canonical), decide(&plain), "{} and {}", tricked, plain);
    }
}

/// A path written plainly, and the same path written with doubled slashes, `.` segments,
/// `x/..` detours and escaped unreserved characters, as `tricks` says for each segment.
fn spellings(segments: &[String], tricks: &[u8], trailing: bool) -> (String, String) {
    let trailing = trailing && !segments.is_empty();
    let plain = format!("/{}{}", segments.join("/"), if trailing { "/" } else { "" });
    let mut tricked = String::new();
    for (i, segment) in segments.iter().enumerate() {
        match tricks.get(i).copied().unwrap_or(0) {
            1 => tricked.push_str("//"),
            2 => tricked.push_str("/./"),
            3 => tricked.push_str("/detour/../"),
            4 => tricked.push_str("/%2e/"),
            _ => tricked.push('/'),
        }
        let escaped: String = segment
            .chars()
            .enumerate()
            .map(|(j, c)| match (i + j) % 3 {
                0 => format!("%{:02x}", c as u32),
                _ => c.to_string(),
            })
            .collect();
        tricked.push_str(&escaped);
    }
    if tricked.is_empty() || trailing {
        tricked.push('/');
    }
    (plain, tricked)
}

#[test]
fn pins_and_unmatched_requests() {
    let mut service_policy = ServicePolicy::default();
    service_policy.subsets.insert(
        "v2".into(),
        [("version".to_owned(), "v2".to_owned())].into(),
    );
    let mut only_post = route(vec![backend("west", 1)], Fault::default());
    only_post.matches = vec![Match {
        method: Some(Method::POST),
        ..Match::default()
    }];
    service_policy.routes.push(only_post);
    let mut policy = Policy::default();
    policy.services.insert(service(), service_policy);

    let headers = HeaderMap::new();
    let view = |method| RequestView {
        method,
        path: "/",
        query: None,
        headers: &headers,
        client: None,
    };
    let mut dice = SplitMix64::new(7);
    let decide = |method, pin: Option<Pin>, dice: &mut SplitMix64| {
        policy
            .decide(&service(), &view(method), pin.as_ref(), |_, _| true, dice)
            .target
    };
    assert_eq!(
        decide(&Method::POST, None, &mut dice),
        Target::Cluster(label("west"), Labels::new())
    );
    assert_eq!(
        decide(&Method::GET, None, &mut dice),
        Target::Spread,
        "no route matched"
    );
    let pin = |subset: Option<&str>| Pin {
        cluster: label("east"),
        subset: subset.map(str::to_owned),
    };
    assert_eq!(
        decide(&Method::POST, Some(pin(Some("v2"))), &mut dice),
        Target::Cluster(
            label("east"),
            [("version".to_owned(), "v2".to_owned())].into()
        ),
        "a pin wins over the route"
    );
    assert_eq!(
        decide(&Method::GET, Some(pin(Some("v9"))), &mut dice),
        Target::Unavailable
    );
    // A service without policy has no subsets: a pin to a cluster holds, one to a subset
    // finds nothing (rather than every endpoint).
    let other: ServiceKey = "other.demo".parse().expect("service");
    let request = view(&Method::GET);
    let bare = |pin: Pin, dice: &mut SplitMix64| {
        policy
            .decide(&other, &request, Some(&pin), |_, _| true, dice)
            .target
    };
    assert_eq!(
        bare(pin(None), &mut dice),
        Target::Cluster(label("east"), Labels::new())
    );
    assert_eq!(bare(pin(Some("v2")), &mut dice), Target::Unavailable);
}

#[test]
fn networks() {
    let cases = [
        ("10.0.0.0/8", "10.1.2.3", true),
        ("10.0.0.0/8", "11.0.0.1", false),
        ("127.0.0.1", "127.0.0.1", true),
        ("127.0.0.1", "127.0.0.2", false),
        ("0.0.0.0/0", "192.0.2.1", true),
        ("192.168.4.0/22", "192.168.7.255", true),
        ("192.168.4.0/22", "192.168.8.0", false),
        ("fd00::/8", "fd12::1", true),
        ("10.0.0.0/8", "::ffff:10.9.9.9", true),
        ("fd00::/8", "10.0.0.1", false),
    ];
    for (cidr, ip, want) in cases {
        let cidr: Cidr = cidr.parse().expect(cidr);
        assert_eq!(cidr.contains(ip.parse().expect(ip)), want, "{cidr:?} {ip}");
    }
    for bad in ["10.0.0.1/8", "10.0.0.0/33", "ten/8", "fd00::1/8"] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad}");
    }
}
