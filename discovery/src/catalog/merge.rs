//! Merging the exports of several clusters into imported services, by the Multi-Cluster
//! Services rules (KEP-1645, "Constraints and conflict resolution").

use std::collections::BTreeMap;
use std::fmt;

use super::{ClusterCatalog, Endpoint, ServiceExport, ServicePort};
use crate::name::{Label, ServiceKey};

/// Every imported service, by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Imports {
    /// The services, each merged from every cluster that exports it.
    pub services: BTreeMap<ServiceKey, ImportedService>,
}

/// One service as the clusterset sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedService {
    /// Whether the service is headless: the oldest export decides.
    pub headless: bool,
    /// The union of every cluster's ports, ordered by number then name. Where clusters disagree
    /// about a port, the oldest export's definition is kept.
    pub ports: Vec<ServicePort>,
    /// Each exporting cluster with its endpoints.
    pub clusters: BTreeMap<Label, Vec<Endpoint>>,
    /// Where the exports disagree, and what was kept.
    pub conflicts: Vec<Conflict>,
}

/// Two clusters export the same service with definitions that cannot both hold. The older
/// export (by `exported_at`, then by cluster name) wins; the conflict is reported so that an
/// operator can fix the newer one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// The same port (by name, or by number when unnamed) with a different number or
    /// protocol, or two ports with one number.
    Port {
        /// The definition kept.
        kept: ServicePort,
        /// The cluster whose definition was kept.
        kept_from: Label,
        /// The definition ignored.
        ignored: ServicePort,
        /// The cluster whose definition was ignored.
        ignored_from: Label,
    },
    /// One cluster exports the service as headless, an older one does not, or the reverse.
    Headless {
        /// Whether the service is treated as headless.
        kept: bool,
        /// The cluster whose choice was kept.
        kept_from: Label,
        /// The cluster whose choice was ignored.
        ignored_from: Label,
    },
}

/// Which ports are the same port across clusters: named ports by name, unnamed ones by number.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PortKey {
    Name(Label),
    Number(u16),
}

/// Merges the catalogs of distinct clusters. The result does not depend on their order.
pub fn merge<'a>(catalogs: impl IntoIterator<Item = &'a ClusterCatalog>) -> Imports {
    // Each service's exports, oldest first; the cluster name breaks ties, so the order of the
    // input never matters.
    let mut exports: BTreeMap<&ServiceKey, Vec<(&Label, &ServiceExport)>> = BTreeMap::new();
    for catalog in catalogs {
        for (key, export) in &catalog.services {
            exports
                .entry(key)
                .or_default()
                .push((&catalog.cluster, export));
        }
    }
    let services = exports
        .into_iter()
        .filter_map(|(key, mut exports)| {
            exports.sort_by(|(a, x), (b, y)| (x.exported_at, a).cmp(&(y.exported_at, b)));
            Some((key.clone(), merge_service(&exports)?))
        })
        .collect();
    Imports { services }
}

fn merge_service(exports: &[(&Label, &ServiceExport)]) -> Option<ImportedService> {
    let (oldest, first) = exports.first()?;
    let mut conflicts = Vec::new();
    let mut ports: BTreeMap<PortKey, (ServicePort, &Label)> = BTreeMap::new();
    let mut clusters = BTreeMap::new();
    for (cluster, export) in exports {
        if export.headless != first.headless {
            conflicts.push(Conflict::Headless {
                kept: first.headless,
                kept_from: (*oldest).clone(),
                ignored_from: (*cluster).clone(),
            });
        }
        for port in &export.ports {
            let key = match &port.name {
                Some(name) => PortKey::Name(name.clone()),
                None => PortKey::Number(port.number),
            };
            // The same port (by name, or by number when unnamed) defined otherwise; or another
            // port with the same number, which would make a port number ambiguous.
            let clash: Option<&(ServicePort, &Label)> = match ports.get(&key) {
                Some(entry) => (entry.0 != *port).then_some(entry),
                None => ports.values().find(|(kept, _)| kept.number == port.number),
            };
            match clash {
                Some((kept, from)) => conflicts.push(Conflict::Port {
                    kept: kept.clone(),
                    kept_from: (*from).clone(),
                    ignored: port.clone(),
                    ignored_from: (*cluster).clone(),
                }),
                None if !ports.contains_key(&key) => {
                    ports.insert(key, (port.clone(), cluster));
                }
                None => {}
            }
        }
        clusters.insert((*cluster).clone(), export.endpoints.clone());
    }
    let mut ports: Vec<ServicePort> = ports.into_values().map(|(port, _)| port).collect();
    ports.sort_by(|a, b| (a.number, &a.name).cmp(&(b.number, &b.name)));
    Some(ImportedService {
        headless: first.headless,
        ports,
        clusters,
        conflicts,
    })
}

impl ImportedService {
    /// The clusters that have at least one ready endpoint.
    pub fn ready_clusters(&self) -> impl Iterator<Item = &Label> {
        self.clusters
            .iter()
            .filter(|(_, endpoints)| endpoints.iter().any(|e| e.ready))
            .map(|(cluster, _)| cluster)
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::Port {
                kept,
                kept_from,
                ignored,
                ignored_from,
            } => write!(
                f,
                "port {} from {ignored_from} conflicts with {} from {kept_from}, the older export, which is used",
                PortText(ignored),
                PortText(kept),
            ),
            Conflict::Headless {
                kept,
                kept_from,
                ignored_from,
            } => {
                let kind = |headless: bool| if headless { "headless" } else { "not headless" };
                write!(
                    f,
                    "{ignored_from} exports the service as {} but {kept_from}, the older export, as {}, which is used",
                    kind(!kept),
                    kind(*kept),
                )
            }
        }
    }
}

struct PortText<'a>(&'a ServicePort);

impl fmt::Display for PortText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ServicePort {
            name,
            number,
            protocol,
        } = self.0;
        match name {
            Some(name) => write!(f, "{name} ({number}/{protocol})"),
            None => write!(f, "{number}/{protocol}"),
        }
    }
}
