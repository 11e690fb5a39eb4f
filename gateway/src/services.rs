//! What a gateway knows of the clusterset's services, as `GET /services` on the admin port
//! reports it and `meshfed services` prints it.

use serde::{Deserialize, Serialize};

/// Every service the gateway routes and resolves, with where it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicesReport {
    /// This gateway's cluster.
    pub cluster: String,
    /// The services, by name.
    pub services: Vec<ServiceReport>,
}

/// One service, merged from every cluster that exports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceReport {
    /// `<name>.<namespace>`.
    pub service: String,
    /// Whether DNS resolves it endpoint by endpoint.
    pub headless: bool,
    /// The merged ports.
    pub ports: Vec<PortReport>,
    /// Each cluster that exports it, this one included.
    pub clusters: Vec<ClusterReport>,
    /// If this cluster exports it: the peers allowed to import it.
    pub exported_to: Vec<String>,
    /// Where exports disagree, and what was kept.
    pub conflicts: Vec<String>,
}

/// A port of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortReport {
    /// The port's name, if it has one.
    pub name: Option<String>,
    /// The service port number.
    pub port: u16,
    /// `http`, `http2`, `grpc` or `tcp`.
    pub protocol: String,
}

/// One cluster's part of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterReport {
    /// The cluster.
    pub cluster: String,
    /// Whether it is this gateway's own cluster.
    pub local: bool,
    /// False for a peer whose catalog stream is lost: none of its endpoints takes traffic.
    pub reachable: bool,
    /// Endpoints the cluster exports.
    pub endpoints: usize,
    /// Of which ready.
    pub ready: usize,
}

impl ServicesReport {
    /// A table for people: one line per service and cluster.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut rows = vec![[
            "SERVICE".to_owned(),
            "PORTS".to_owned(),
            "CLUSTER".to_owned(),
            "ENDPOINTS".to_owned(),
            "STATE".to_owned(),
        ]];
        for service in &self.services {
            let ports = service
                .ports
                .iter()
                .map(|p| match &p.name {
                    Some(name) => format!("{name}:{}/{}", p.port, p.protocol),
                    None => format!("{}/{}", p.port, p.protocol),
                })
                .collect::<Vec<_>>()
                .join(",");
            for (i, cluster) in service.clusters.iter().enumerate() {
                let state = match (cluster.local, cluster.reachable) {
                    (true, _) if service.exported_to.is_empty() => "local, not exported".to_owned(),
                    (true, _) => format!("local, exported to {}", service.exported_to.join(",")),
                    (false, true) => "imported".to_owned(),
                    (false, false) => "imported, peer unreachable".to_owned(),
                };
                let first = i == 0;
                rows.push([
                    if first {
                        service.service.clone()
                    } else {
                        String::new()
                    },
                    if first { ports.clone() } else { String::new() },
                    cluster.cluster.clone(),
                    format!("{}/{} ready", cluster.ready, cluster.endpoints),
                    state,
                ]);
            }
        }
        let widths: Vec<usize> = (0..5)
            .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        let mut text = format!("cluster {}\n", self.cluster);
        for row in &rows {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            let _ = writeln!(text, "{}", line.join("  ").trim_end());
        }
        for service in &self.services {
            for conflict in &service.conflicts {
                let _ = writeln!(text, "conflict in {}: {conflict}", service.service);
            }
        }
        text
    }
}
