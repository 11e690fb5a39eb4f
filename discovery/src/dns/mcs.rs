//! The records of the Multi-Cluster Services DNS specification (KEP-1645, schema 1.0.0),
//! built from the imported services, and of the cluster-pinned zone.
//!
//! In the clusterset zone, for `<svc>.<ns>` imported from any cluster:
//!
//! - `dns-version.<zone>` TXT `"1.0.0"`;
//! - `<svc>.<ns>.svc.<zone>` A or AAAA: the gateway's service address;
//! - `_<port>._tcp.<svc>.<ns>.svc.<zone>` SRV for each named port, targeting the service name;
//! - for a headless service, per ready endpoint, `<hostname>.<cluster>.<svc>.<ns>.svc.<zone>`
//!   A or AAAA, and the SRV records target those names; a headless service with no ready
//!   endpoint does not exist (NXDOMAIN), as the specification says.
//!
//! Every address is the gateway's: a peer cluster's endpoint addresses are not reachable from
//! here, and the name a client used tells the gateway where to go. The specification forbids
//! `<cluster>.<svc>.<ns>.svc.<zone>`; cluster-pinned names live in their own zone instead,
//! `<svc>.<ns>.<cluster>.<pinned zone>`, one for each cluster that exports the service.
//! PTR records are not served: one address stands for every service.
//!
//! [`ClustersetZones`] keeps both zones up to date: given new imports, it re-encodes only the
//! services that changed.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hickory_proto::rr::RData;
use hickory_proto::rr::rdata::{A, AAAA, SRV, TXT};

use super::zone::{LiveZones, ZoneError, ZoneSet, fqdn};
use crate::catalog::{ImportedService, Imports};
use crate::name::ServiceKey;

/// The schema version the clusterset zone follows.
pub const SCHEMA_VERSION: &str = "1.0.0";
/// The group that holds the zones' own records (not a service's).
const ZONE_RECORDS: &str = "";

/// What the zones are built with, besides the services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clusterset {
    /// The MCS zone, `clusterset.local`.
    pub zone: String,
    /// The cluster-pinned zone, `meshfed.internal`.
    pub pinned_zone: String,
    /// TTL of every record, and of negative answers.
    pub ttl: u32,
    /// Where applications reach services: the gateway's local listener.
    pub address: IpAddr,
    /// The DNS server's own address, for `ns.<zone>`.
    pub nameserver: IpAddr,
}

/// Both zones, kept up to date with the imported services.
#[derive(Debug)]
pub struct ClustersetZones {
    clusterset: Clusterset,
    live: LiveZones,
    services: BTreeMap<ServiceKey, ImportedService>,
}

impl ClustersetZones {
    /// Zones with the zones' own records and no service yet; the first snapshot's SOA serial
    /// is `serial + 1`.
    pub fn new(clusterset: Clusterset, serial: u32) -> Result<Self, ZoneError> {
        let mut live = LiveZones::new(
            &[&clusterset.zone, &clusterset.pinned_zone],
            clusterset.ttl,
            serial,
        )?;
        let mut own = Vec::new();
        for zone in [&clusterset.zone, &clusterset.pinned_zone] {
            own.push((format!("ns.{zone}"), address(clusterset.nameserver)));
        }
        own.push((
            format!("dns-version.{}", clusterset.zone),
            RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_owned()])),
        ));
        live.set_group(ZONE_RECORDS, own)?;
        Ok(ClustersetZones {
            clusterset,
            live,
            services: BTreeMap::new(),
        })
    }

    /// Brings the zones to `imports`, re-encoding only the services that changed, and returns
    /// the new snapshot.
    pub fn update(&mut self, imports: &Imports) -> Result<ZoneSet, ZoneError> {
        let gone: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|key| !imports.services.contains_key(*key))
            .cloned()
            .collect();
        for key in gone {
            self.set_service(&key, None);
        }
        for (key, service) in &imports.services {
            if self.services.get(key) != Some(service) {
                self.set_service(key, Some(service));
            }
        }
        self.commit()
    }

    /// Sets one service's records (`None` removes them); [`ClustersetZones::commit`] publishes.
    /// A service whose names do not fit in DNS (255 bytes) is left out, not the zone.
    pub fn set_service(&mut self, key: &ServiceKey, service: Option<&ImportedService>) {
        let group = key.to_string();
        let records = service.map(|s| self.records(key, s)).unwrap_or_default();
        if let Err(error) = self.live.set_group(&group, records) {
            tracing::warn!(service = %key, %error, "service left out of the DNS zone");
            let _ = self.live.set_group(&group, Vec::new());
        }
        match service {
            Some(service) => self.services.insert(key.clone(), service.clone()),
            None => self.services.remove(key),
        };
    }

    /// A snapshot of the zones as they are now, with the next SOA serial.
    pub fn commit(&mut self) -> Result<ZoneSet, ZoneError> {
        self.live.commit()
    }

    /// The clusterset zone in master-file format.
    pub fn zone_file(&self) -> String {
        self.live.zone_file(0)
    }

    /// One service's records in both zones.
    fn records(&self, key: &ServiceKey, service: &ImportedService) -> Vec<(String, RData)> {
        let Clusterset {
            zone,
            pinned_zone,
            address: ip,
            ..
        } = &self.clusterset;
        let mut records = Vec::new();
        for cluster in service.clusters.keys() {
            let pinned = format!("{}.{}.{cluster}.{pinned_zone}", key.name, key.namespace);
            records.push((pinned, address(*ip)));
        }
        let name = format!("{}.{}.svc.{zone}", key.name, key.namespace);
        let named_ports: Vec<(String, u16)> = service
            .ports
            .iter()
            .filter_map(|p| Some((p.name.as_ref()?.to_string(), p.number)))
            .collect();
        if !service.headless {
            let Ok(target) = fqdn(&name) else {
                return records;
            };
            records.push((name.clone(), address(*ip)));
            for (port, number) in &named_ports {
                let srv = SRV::new(0, 100, *number, target.clone());
                records.push((format!("_{port}._tcp.{name}"), RData::SRV(srv)));
            }
            return records;
        }
        let mut any = false;
        for (cluster, endpoints) in &service.clusters {
            for endpoint in endpoints.iter().filter(|e| e.ready) {
                let host = format!("{}.{cluster}.{name}", endpoint.hostname);
                let target = match fqdn(&host) {
                    Ok(target) => target,
                    Err(error) => {
                        tracing::warn!(service = %key, %error, "endpoint left out of the DNS zone");
                        continue;
                    }
                };
                any = true;
                records.push((host, address(*ip)));
                for (port, number) in &named_ports {
                    let srv = SRV::new(0, 100, *number, target.clone());
                    records.push((format!("_{port}._tcp.{name}"), RData::SRV(srv)));
                }
            }
        }
        if any {
            records.push((name, address(*ip)));
        }
        records
    }
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(ip) => RData::A(A(ip)),
        IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
    }
}
