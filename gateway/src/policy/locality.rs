//! Locality: which clusters take a service's traffic when no route gives weights. Without a
//! locality preference, every cluster with a ready endpoint takes an equal share. With one, the
//! local cluster takes everything while enough of its endpoints are healthy, and as its healthy
//! share drops below the threshold, the overflow goes to the next clusters in the configured
//! order, as Envoy's priority levels do:
//!
//! each cluster in order takes `min(1, healthy / threshold)` of what is left.
//!
//! So with a threshold of 70 %, a local cluster with 10 endpoints keeps all traffic down to 7
//! healthy ones, takes 5/7 of it with 5, and none with 0. No I/O.

use meshfed_discovery::Label;

/// A service's preference for its own cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locality {
    /// The clusters to overflow to, in order, after the local one. Clusters that serve the
    /// service but are not listed come last, in name order.
    pub failover: Vec<Label>,
    /// The local healthy share, in percent, below which traffic overflows (1 to 100).
    pub min_healthy_percent: u8,
}

/// One cluster that serves a service, as the choice sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterHealth<'a> {
    /// The cluster.
    pub cluster: &'a Label,
    /// Its endpoints that are ready.
    pub ready: u32,
    /// Its endpoints.
    pub total: u32,
    /// Whether outlier detection has taken it out (a peer gateway that keeps failing).
    pub ejected: bool,
}

/// Each cluster's share of the traffic, in parts of 1,000,000 (0 for a cluster that takes
/// none); empty if no cluster can take any. `local` is this gateway's cluster.
pub fn shares<'a>(
    local: &Label,
    locality: Option<&Locality>,
    clusters: &[ClusterHealth<'a>],
) -> Vec<(&'a Label, u32)> {
    // Ejections are ignored when they would leave nothing (a panic, as in Envoy).
    let all_ejected = clusters.iter().filter(|c| c.ready > 0).all(|c| c.ejected);
    let usable = |c: &ClusterHealth| c.ready > 0 && (all_ejected || !c.ejected);
    let Some(locality) = locality else {
        let each = match clusters.iter().filter(|c| usable(c)).count() {
            0 => return Vec::new(),
            n => WHOLE / n as u32,
        };
        let up = clusters.iter().filter(|c| usable(c));
        return up.map(|c| (c.cluster, each)).collect();
    };
    let mut ordered: Vec<&ClusterHealth> = Vec::with_capacity(clusters.len());
    let rank = |c: &ClusterHealth| match c.cluster {
        cluster if cluster == local => 0,
        cluster => locality
            .failover
            .iter()
            .position(|f| f == cluster)
            .map_or(usize::MAX, |i| i + 1),
    };
    ordered.extend(clusters.iter());
    ordered.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cluster.cmp(b.cluster)));
    let threshold = f64::from(locality.min_healthy_percent.clamp(1, 100)) / 100.0;
    let mut left = 1.0f64;
    let mut out = Vec::new();
    for cluster in ordered {
        if !usable(cluster) || left <= 0.0 {
            continue;
        }
        let healthy = f64::from(cluster.ready) / f64::from(cluster.total.max(cluster.ready));
        let share = left * (healthy / threshold).min(1.0);
        left -= share;
        out.push((cluster.cluster, share));
    }
    let taken: f64 = out.iter().map(|(_, s)| s).sum();
    if taken <= 0.0 {
        return Vec::new();
    }
    // What no cluster could take is spread over those that took some, by their shares.
    out.into_iter()
        .filter(|(_, s)| *s > 0.0)
        .map(|(c, s)| (c, (s / taken * f64::from(WHOLE)).round() as u32))
        .collect()
}

const WHOLE: u32 = 1_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn label(s: &str) -> Label {
        s.parse().expect("label")
    }

    fn health(cluster: &str, ready: u32, total: u32) -> ClusterHealth<'static> {
        ClusterHealth {
            cluster: Box::leak(Box::new(label(cluster))),
            ready,
            total,
            ejected: false,
        }
    }

    fn percent(shares: &[(&Label, u32)]) -> Vec<(String, u32)> {
        shares
            .iter()
            .map(|(c, s)| (c.to_string(), (s + 5_000) / 10_000))
            .collect()
    }

    #[test]
    fn the_local_cluster_keeps_traffic_until_its_healthy_share_drops() {
        let east = label("east");
        let locality = Locality {
            failover: vec![label("north"), label("west")],
            min_healthy_percent: 70,
        };
        let with = |local_ready| {
            let clusters = [
                health("west", 3, 3),
                health("east", local_ready, 10),
                health("north", 2, 4),
            ];
            percent(&shares(&east, Some(&locality), &clusters))
        };
        assert_eq!(with(10), [("east".into(), 100)]);
        assert_eq!(with(7), [("east".into(), 100)]);
        // 5/7 stays; north (2 of 4 healthy: 5/7 of what is left) and west take the rest.
        assert_eq!(
            with(5),
            [
                ("east".into(), 71),
                ("north".into(), 20),
                ("west".into(), 8)
            ]
        );
        assert_eq!(with(0), [("north".into(), 71), ("west".into(), 29)]);
        // Without a preference: equal shares among clusters with ready endpoints.
        let clusters = [
            health("west", 3, 3),
            health("east", 0, 10),
            health("north", 1, 4),
        ];
        assert_eq!(
            percent(&shares(&east, None, &clusters)),
            [("west".into(), 50), ("north".into(), 50)]
        );
    }

    #[test]
    fn ejected_clusters_are_skipped_unless_all_are() {
        let east = label("east");
        let locality = Locality {
            failover: vec![label("west")],
            min_healthy_percent: 100,
        };
        let mut local = health("east", 4, 4);
        local.ejected = true;
        let clusters = [local, health("west", 2, 2)];
        assert_eq!(
            percent(&shares(&east, Some(&locality), &clusters)),
            [("west".into(), 100)]
        );
        let mut west = health("west", 2, 2);
        west.ejected = true;
        let clusters = [local, west];
        assert_eq!(
            percent(&shares(&east, Some(&locality), &clusters)),
            [("east".into(), 100)]
        );
        assert!(shares(&east, None, &[health("west", 0, 2)]).is_empty());
    }
}
