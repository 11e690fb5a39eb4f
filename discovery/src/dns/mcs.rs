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

use std::net::IpAddr;

use hickory_proto::rr::RData;
use hickory_proto::rr::rdata::{A, AAAA, SRV, TXT};

use super::zone::{ZoneBuilder, ZoneError, ZoneSet, fqdn};
use crate::catalog::{ImportedService, Imports};
use crate::name::ServiceKey;

/// The schema version the clusterset zone follows.
pub const SCHEMA_VERSION: &str = "1.0.0";

/// What the zones are built from.
#[derive(Clone, Copy, Debug)]
pub struct Clusterset<'a> {
    /// The MCS zone, `clusterset.local`.
    pub zone: &'a str,
    /// The cluster-pinned zone, `meshfed.internal`.
    pub pinned_zone: &'a str,
    /// TTL of every record, and of negative answers.
    pub ttl: u32,
    /// The SOA serial: grows with every rebuild.
    pub serial: u32,
    /// Where applications reach services: the gateway's local listener.
    pub address: IpAddr,
    /// The DNS server's own address, for `ns.<zone>`.
    pub nameserver: IpAddr,
    /// Every imported service.
    pub imports: &'a Imports,
}

impl Clusterset<'_> {
    /// Both zones, prepared for answering.
    pub fn zones(&self) -> Result<ZoneSet, ZoneError> {
        ZoneSet::new(self.records()?.into())
    }

    /// Both zones' records, not yet prepared: the clusterset zone, then the pinned zone.
    pub fn records(&self) -> Result<[ZoneBuilder; 2], ZoneError> {
        let mut clusterset = ZoneBuilder::new(self.zone, self.ttl, self.serial)?;
        let mut pinned = ZoneBuilder::new(self.pinned_zone, self.ttl, self.serial)?;
        for zone in [&mut clusterset, &mut pinned] {
            let ns = format!("ns.{}", zone.origin());
            zone.add(&ns, address(self.nameserver))?;
        }
        clusterset.add(
            &format!("dns-version.{}", self.zone),
            RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_owned()])),
        )?;
        for (key, service) in &self.imports.services {
            // A service whose names do not fit in DNS (255 bytes) is left out, not the zone.
            if let Err(error) = self.service(&mut clusterset, key, service) {
                tracing::warn!(service = %key, %error, "service left out of the DNS zone");
            }
            for cluster in service.clusters.keys() {
                let name = format!(
                    "{}.{}.{cluster}.{}",
                    key.name, key.namespace, self.pinned_zone
                );
                pinned.add(&name, address(self.address))?;
            }
        }
        Ok([clusterset, pinned])
    }

    fn service(
        &self,
        zone: &mut ZoneBuilder,
        key: &ServiceKey,
        service: &ImportedService,
    ) -> Result<(), ZoneError> {
        let name = format!("{}.{}.svc.{}", key.name, key.namespace, self.zone);
        let named_ports = service
            .ports
            .iter()
            .filter_map(|p| Some((p.name.as_ref()?, p.number)));
        if !service.headless {
            let target = fqdn(&name)?;
            zone.add(&name, address(self.address))?;
            for (port, number) in named_ports {
                let target = target.clone();
                zone.add(
                    &format!("_{port}._tcp.{name}"),
                    RData::SRV(SRV::new(0, 100, number, target)),
                )?;
            }
            return Ok(());
        }
        let name = name.as_str();
        let ready = service.clusters.iter().flat_map(|(cluster, endpoints)| {
            endpoints
                .iter()
                .filter(|e| e.ready)
                .map(move |e| format!("{}.{cluster}.{name}", e.hostname))
        });
        let mut any = false;
        for host in ready {
            let target = match fqdn(&host) {
                Ok(target) => target,
                Err(error) => {
                    tracing::warn!(service = %key, %error, "endpoint left out of the DNS zone");
                    continue;
                }
            };
            any = true;
            zone.add(&host, address(self.address))?;
            for (port, number) in named_ports.clone() {
                zone.add(
                    &format!("_{port}._tcp.{name}"),
                    RData::SRV(SRV::new(0, 100, number, target.clone())),
                )?;
            }
        }
        if any {
            zone.add(name, address(self.address))?;
        }
        Ok(())
    }
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(ip) => RData::A(A(ip)),
        IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
    }
}
