use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::*;

fn config(health: &str) -> Config {
    let text = format!(
        r#"
cluster: east
trust_domain: east.example
identity: {{ ca_dir: ca }}
exports:
  - name: db
    namespace: data
    ports: [{{ name: pg, port: 5432, protocol: tcp }}]
    endpoints: ["10.0.0.1:5432", "10.0.0.1:5433", "10.0.0.2"]
    {health}
"#
    );
    Config::parse(&text, Path::new("/")).expect("valid")
}

fn times(at: u64) -> BTreeMap<ServiceKey, u64> {
    BTreeMap::from([(key(), at)])
}

fn key() -> ServiceKey {
    "db.data".parse().expect("key")
}

fn endpoint(ip: &str, port: Option<u16>) -> LocalEndpoint {
    LocalEndpoint {
        ip: ip.parse().expect("ip"),
        port,
        hostname: None,
    }
}

fn addresses(registry: &Registry) -> Vec<String> {
    registry.exports()[&key()].ports[0]
        .endpoints
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn hostnames(registry: &Registry) -> Vec<(String, bool)> {
    registry.catalog()[&key()]
        .endpoints
        .iter()
        .map(|e| (e.hostname.to_string(), e.ready))
        .collect()
}

#[test]
fn without_a_check_every_endpoint_found_takes_traffic() {
    let registry = Registry::new(&config(""), &times(7));
    assert_eq!(
        addresses(&registry),
        ["10.0.0.1:5432", "10.0.0.1:5433", "10.0.0.2:5432"]
    );
    // Two endpoints share 10.0.0.1: their hostnames carry the port.
    assert_eq!(
        hostnames(&registry),
        [
            ("10-0-0-1-5432".to_owned(), true),
            ("10-0-0-1-5433".to_owned(), true),
            ("10-0-0-2".to_owned(), true),
        ]
    );
    assert_eq!(registry.catalog()[&key()].exported_at, 7);
}

#[test]
fn with_a_check_endpoints_take_traffic_once_they_pass() {
    let mut registry = Registry::new(
        &config("health_check: { protocol: tcp, healthy_threshold: 2, unhealthy_threshold: 2 }"),
        &times(1),
    );
    assert!(addresses(&registry).is_empty(), "unchecked endpoints wait");
    let first = endpoint("10.0.0.2", None);
    assert!(
        registry.observe(&key(), &first, true),
        "the first pass decides"
    );
    assert_eq!(addresses(&registry), ["10.0.0.2:5432"]);
    assert!(
        !registry.observe(&key(), &first, false),
        "one failure is not enough"
    );
    assert!(registry.observe(&key(), &first, false));
    assert!(addresses(&registry).is_empty());
    assert!(hostnames(&registry).iter().all(|(_, ready)| !ready));
}

#[test]
fn endpoints_found_anew_keep_the_health_of_those_that_stay() {
    let mut registry = Registry::new(&config("health_check: { protocol: tcp }"), &times(1));
    let stays = endpoint("10.0.0.2", None);
    registry.observe(&key(), &stays, true);
    let new = endpoint("10.0.0.3", None);
    let found: BTreeSet<_> = [stays.clone(), new.clone()].into();
    assert!(registry.set_found(&key(), found.clone()));
    assert!(
        !registry.set_found(&key(), found),
        "the same endpoints change nothing"
    );
    assert_eq!(
        addresses(&registry),
        ["10.0.0.2:5432"],
        "the new one is unchecked"
    );
    registry.observe(&key(), &new, true);
    assert_eq!(addresses(&registry), ["10.0.0.2:5432", "10.0.0.3:5432"]);
    assert!(!registry.observe(&"other.data".parse().expect("key"), &new, true));
}
