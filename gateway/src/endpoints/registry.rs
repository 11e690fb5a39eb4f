//! Every local export's endpoints as found and as checked. No I/O: the source and health
//! tasks report into it, and the gateway publishes what it says.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use meshfed_discovery::catalog::{Endpoint, ServiceExport, ServicePort};
use meshfed_discovery::sources::health::{Health, Thresholds};
use meshfed_discovery::{Label, ServiceKey};

use crate::config::{Config, Export, LocalEndpoint};

/// The local exports and the state of their endpoints.
#[derive(Debug)]
pub(crate) struct Registry {
    services: BTreeMap<ServiceKey, Tracked>,
}

#[derive(Debug)]
struct Tracked {
    /// The export as configured; its ports' endpoint lists are rebuilt from what is ready.
    export: Export,
    /// When the export was first offered: the oldest export wins a conflict between clusters.
    exported_at: u64,
    found: BTreeSet<LocalEndpoint>,
    /// With a health check: each found endpoint's health. Without one, every found endpoint
    /// takes traffic.
    checks: Option<(Thresholds, BTreeMap<LocalEndpoint, Health>)>,
}

impl Registry {
    /// The exports of `config`, with their configured endpoints found (and not yet checked),
    /// first offered at the times in `exported_at` (by service).
    pub(crate) fn new(config: &Config, exported_at: &BTreeMap<ServiceKey, u64>) -> Self {
        let services = config
            .exports
            .iter()
            .map(|export| {
                let checks = export.health_check.as_ref().map(|check| {
                    let thresholds = Thresholds {
                        healthy: check.healthy_threshold,
                        unhealthy: check.unhealthy_threshold,
                    };
                    (thresholds, BTreeMap::new())
                });
                let mut tracked = Tracked {
                    export: export.clone(),
                    exported_at: exported_at.get(&export.service).copied().unwrap_or(0),
                    found: BTreeSet::new(),
                    checks,
                };
                tracked.set_found(export.endpoints.iter().cloned().collect());
                (export.service.clone(), tracked)
            })
            .collect();
        Registry { services }
    }

    /// Replaces the endpoints found for `service`; returns whether anything changed. Endpoints
    /// that stay keep their health; new ones start unchecked (not ready, with a check).
    pub(crate) fn set_found(
        &mut self,
        service: &ServiceKey,
        found: BTreeSet<LocalEndpoint>,
    ) -> bool {
        self.services
            .get_mut(service)
            .is_some_and(|tracked| tracked.set_found(found))
    }

    /// Takes one check result for `endpoint` of `service`; returns whether its verdict changed.
    pub(crate) fn observe(
        &mut self,
        service: &ServiceKey,
        endpoint: &LocalEndpoint,
        passed: bool,
    ) -> bool {
        let Some((thresholds, health)) = self
            .services
            .get_mut(service)
            .and_then(|tracked| tracked.checks.as_mut())
        else {
            return false;
        };
        health
            .get_mut(endpoint)
            .is_some_and(|health| health.observe(passed, *thresholds))
    }

    /// The endpoints found for `service`, ready or not.
    pub(crate) fn found(&self, service: &ServiceKey) -> Vec<LocalEndpoint> {
        self.services
            .get(service)
            .map(|tracked| tracked.found.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every export, each port listing the addresses of the endpoints that take traffic.
    pub(crate) fn exports(&self) -> BTreeMap<ServiceKey, Export> {
        self.services
            .iter()
            .map(|(key, tracked)| {
                let mut export = tracked.export.clone();
                let ready: Vec<&LocalEndpoint> = tracked
                    .found
                    .iter()
                    .filter(|e| tracked.is_ready(e))
                    .collect();
                for port in &mut export.ports {
                    port.endpoints = ready.iter().map(|e| port.address_of(e)).collect();
                }
                (key.clone(), export)
            })
            .collect()
    }

    /// Every export as the catalog describes it: ports, and endpoints by hostname with
    /// readiness.
    pub(crate) fn catalog(&self) -> BTreeMap<ServiceKey, ServiceExport> {
        self.services
            .iter()
            .map(|(key, tracked)| {
                let mut ports: Vec<ServicePort> = tracked
                    .export
                    .ports
                    .iter()
                    .map(|port| ServicePort {
                        name: port.name.clone(),
                        number: port.port,
                        protocol: port.protocol,
                    })
                    .collect();
                ports.sort_by_key(|p| p.number);
                let mut endpoints: BTreeMap<Label, Endpoint> = BTreeMap::new();
                let shared = shared_addresses(&tracked.found);
                for found in &tracked.found {
                    let hostname = hostname(found, shared.contains(&found.ip));
                    let ready = tracked.is_ready(found);
                    let entry = endpoints.entry(hostname.clone()).or_insert(Endpoint {
                        hostname,
                        ready,
                        labels: tracked.export.labels.clone(),
                    });
                    entry.ready |= ready;
                }
                let export = ServiceExport {
                    headless: tracked.export.headless,
                    exported_at: tracked.exported_at,
                    ports,
                    endpoints: endpoints.into_values().collect(),
                };
                (key.clone(), export)
            })
            .collect()
    }
}

impl Tracked {
    fn set_found(&mut self, found: BTreeSet<LocalEndpoint>) -> bool {
        if found == self.found {
            return false;
        }
        if let Some((_, health)) = &mut self.checks {
            health.retain(|endpoint, _| found.contains(endpoint));
            for endpoint in &found {
                health.entry(endpoint.clone()).or_default();
            }
        }
        self.found = found;
        true
    }

    fn is_ready(&self, endpoint: &LocalEndpoint) -> bool {
        match &self.checks {
            None => true,
            Some((_, health)) => health.get(endpoint).is_some_and(Health::is_healthy),
        }
    }
}

/// Addresses that more than one endpoint of a service has (one per port, from SRV records or
/// config): their derived hostnames need the port too.
fn shared_addresses(found: &BTreeSet<LocalEndpoint>) -> BTreeSet<IpAddr> {
    let mut seen = BTreeSet::new();
    found
        .iter()
        .filter(|e| !seen.insert(e.ip))
        .map(|e| e.ip)
        .collect()
}

/// The endpoint's own hostname, or one derived from its address (and port, if another
/// endpoint shares the address).
fn hostname(endpoint: &LocalEndpoint, with_port: bool) -> Label {
    if let Some(hostname) = &endpoint.hostname {
        return hostname.clone();
    }
    let derived = Endpoint::hostname_of(endpoint.ip);
    match (with_port, endpoint.port) {
        (true, Some(port)) => format!("{derived}-{port}").parse().unwrap_or(derived),
        _ => derived,
    }
}

#[cfg(test)]
mod tests;
