use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio_stream::StreamExt as _;
use tonic::Request;

use super::convert::{self, Received};
use super::proto::federation_server::Federation as _;
use super::proto::{self, WatchCatalogRequest};
use super::*;
use crate::catalog::{Endpoint, Protocol, ServiceExport, ServicePort};

fn label(s: &str) -> Label {
    s.parse().expect("label")
}

fn key(s: &str) -> ServiceKey {
    s.parse().expect("key")
}

fn export(ready: bool) -> ServiceExport {
    ServiceExport {
        headless: false,
        exported_at: 7,
        ports: vec![
            ServicePort {
                name: Some(label("http")),
                number: 80,
                protocol: Protocol::Http,
            },
            ServicePort {
                name: None,
                number: 5432,
                protocol: Protocol::Tcp,
            },
        ],
        endpoints: vec![Endpoint {
            hostname: label("pod-0"),
            ready,
            labels: BTreeMap::from([("version".to_owned(), "v2".to_owned())]),
        }],
    }
}

/// East exports `checkout.shop` to west and `secret.shop` to nobody.
fn exported(version: u64, ready: bool) -> ExportedCatalog {
    ExportedCatalog {
        catalog: ClusterCatalog {
            cluster: label("east"),
            version,
            services: BTreeMap::from([
                (key("checkout.shop"), export(ready)),
                (key("secret.shop"), export(ready)),
            ]),
        },
        visible_to: BTreeMap::from([(key("checkout.shop"), BTreeSet::from([label("west")]))]),
    }
}

#[test]
fn a_peer_sees_only_what_is_exported_to_it() {
    let exported = exported(3, true);
    let west = exported.view(&label("west"));
    assert_eq!(west.version, 3);
    assert_eq!(
        west.services.keys().collect::<Vec<_>>(),
        vec![&key("checkout.shop")]
    );
    assert!(exported.view(&label("north")).services.is_empty());
}

#[test]
fn catalogs_and_changes_survive_the_wire() {
    let limits = Limits::default();
    let old = exported(1, true).catalog;
    let new = exported(2, false).catalog;
    let full = convert::full(&old);
    assert_eq!(
        convert::received(full, &label("east"), &limits),
        Ok(Received::Full(old.clone()))
    );
    let diff = old.diff(&new);
    let update = convert::diff(&label("east"), &diff);
    assert_eq!(
        convert::received(update, &label("east"), &limits),
        Ok(Received::Diff(diff))
    );
}

#[test]
fn bad_updates_are_refused_with_where_and_why() {
    let limits = Limits {
        endpoints: 1,
        ..Limits::default()
    };
    let good = || convert::full(&exported(1, true).catalog);
    type Mangle = fn(&mut proto::CatalogUpdate);
    let cases: Vec<(Mangle, &str)> = vec![
        (|u| u.cluster = "west".into(), "cluster"),
        (|u| u.upserts[0].service = None, "upserts[0].service"),
        (
            |u| u.upserts[0].service.as_mut().expect("name").name = "Bad".into(),
            "upserts[0].service.name",
        ),
        (
            |u| u.upserts[0].ports[0].number = 0,
            "upserts[0].ports[0].number",
        ),
        (
            |u| u.upserts[0].ports[0].number = 70_000,
            "upserts[0].ports[0].number",
        ),
        (
            |u| u.upserts[0].ports[0].protocol = "smtp".into(),
            "upserts[0].ports[0].protocol",
        ),
        (|u| u.upserts[0].ports[1].number = 80, "upserts[0].ports[1]"),
        (
            |u| u.upserts[0].endpoints[0].hostname = "a.b".into(),
            "upserts[0].endpoints[0].hostname",
        ),
        (
            |u| {
                let twin = u.upserts[0].endpoints[0].clone();
                u.upserts[0].endpoints.push(twin);
            },
            "upserts[0].endpoints",
        ),
        (
            |u| {
                let twin = u.upserts[0].clone();
                u.upserts.push(twin);
            },
            "upserts[2]",
        ),
        (
            |u| {
                u.removals.push(proto::ServiceName {
                    name: "x".into(),
                    namespace: "y".into(),
                })
            },
            "removals",
        ),
        (
            |u| {
                u.full = false;
                u.from_version = 5;
                u.to_version = 5;
            },
            "to_version",
        ),
        (
            |u| {
                u.upserts[0].endpoints[0]
                    .labels
                    .insert(String::new(), "v".into());
            },
            "upserts[0].endpoints[0].labels",
        ),
    ];
    for (mangle, at) in cases {
        let mut update = good();
        mangle(&mut update);
        let error = convert::received(update, &label("east"), &limits).expect_err(at);
        assert_eq!(error.at, at, "{error}");
        assert!(!error.reason.is_empty());
    }
    assert!(convert::received(good(), &label("east"), &limits).is_ok());
}

#[tokio::test]
async fn a_watcher_follows_every_change_it_may_see() -> Result<(), tonic::Status> {
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(exported(1, true)));
    let service = CatalogService::new(rx);
    let refused = service
        .watch_catalog(Request::new(WatchCatalogRequest {}))
        .await
        .err()
        .map(|status| status.code());
    assert_eq!(refused, Some(tonic::Code::PermissionDenied), "no caller");

    let mut request = Request::new(WatchCatalogRequest {});
    request.extensions_mut().insert(Caller(label("west")));
    let mut updates = service.watch_catalog(request).await?.into_inner();
    let limits = Limits::default();
    let mut held: Option<ClusterCatalog> = None;
    let receive = async |updates: &mut _, held: &mut Option<ClusterCatalog>| {
        let update = tokio_stream::StreamExt::next(updates)
            .await
            .expect("an update")?;
        match convert::received(update, &label("east"), &limits).expect("valid") {
            Received::Full(catalog) => *held = Some(catalog),
            Received::Diff(diff) => held.as_mut().expect("held").apply(diff).expect("fresh"),
        }
        Ok::<_, tonic::Status>(())
    };
    receive(&mut updates, &mut held).await?;
    assert_eq!(held.as_ref(), Some(&exported(1, true).view(&label("west"))));

    // A change west cannot see (only `secret.shop` changes) sends nothing; the next change
    // west can see is a diff from the version west holds.
    let mut hidden = exported(2, true);
    if let Some(secret) = hidden.catalog.services.get_mut(&key("secret.shop")) {
        secret.endpoints[0].ready = false;
    }
    tx.send_replace(Arc::new(hidden));
    // The stream is polled here, in this task: a change it sends would be ready at once.
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(100), updates.next()).await;
    assert!(
        quiet.is_err(),
        "a change west cannot see was sent: {quiet:?}"
    );
    tx.send_replace(Arc::new(exported(3, false)));
    receive(&mut updates, &mut held).await?;
    assert_eq!(
        held.as_ref(),
        Some(&exported(3, false).view(&label("west")))
    );
    Ok(())
}

/// A peer cannot grow the catalog we hold past the service limit by diffs that are each
/// within it.
#[test]
fn diffs_cannot_grow_a_catalog_past_the_service_limit() {
    let limits = Limits {
        services: 2,
        ..Limits::default()
    };
    let two = exported(1, true).catalog;
    let mut three = two.clone();
    three.version = 2;
    three.services.insert(key("cart.shop"), export(true));
    let mut held = None;
    follow::take(&mut held, Received::Full(two.clone()), &limits).expect("within the limit");
    let grown = follow::take(&mut held, Received::Diff(two.diff(&three)), &limits);
    assert!(
        matches!(grown, Err(follow::FollowError::Invalid(_))),
        "{grown:?}"
    );
}
