//! Local endpoints at run time: found by their source (config, or the local cluster's DNS),
//! checked by their health check, and published whenever that changes, to the routes that
//! forward to them and to the catalog that peers watch.

pub(crate) mod export_times;
mod registry;

use std::sync::{Arc, Mutex};

use meshfed_discovery::ServiceKey;
use meshfed_discovery::sources::dns::{DnsSource, RETRY_AFTER_FAILURE};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub(crate) use registry::Registry;

use crate::catalogs::Catalogs;
use crate::config::{Config, EndpointSource, Export, HealthCheck};
use crate::state::State;

/// The registry, and where its changes go.
#[derive(Debug)]
pub(crate) struct Endpoints {
    registry: Mutex<Registry>,
    state: Arc<State>,
    catalogs: Arc<Catalogs>,
}

impl Endpoints {
    /// Starts a DNS task for each export found in DNS and a health task for each export with a
    /// health check; they run until `shutdown`.
    pub(crate) fn start(
        config: &Config,
        registry: Registry,
        state: Arc<State>,
        catalogs: Arc<Catalogs>,
        shutdown: &CancellationToken,
    ) -> Arc<Self> {
        let endpoints = Arc::new(Endpoints {
            registry: Mutex::new(registry),
            state,
            catalogs,
        });
        for export in &config.exports {
            if let EndpointSource::Dns {
                name,
                record,
                server,
            } = &export.source
            {
                match DnsSource::new(name, *record, *server) {
                    Ok(source) => {
                        tokio::spawn(endpoints.clone().follow_dns(
                            export.service.clone(),
                            source,
                            shutdown.clone(),
                        ));
                    }
                    Err(error) => {
                        tracing::warn!(service = %export.service, %error, "cannot look up endpoints");
                    }
                }
            }
            if let Some(check) = &export.health_check {
                tokio::spawn(endpoints.clone().check(
                    export.clone(),
                    check.clone(),
                    shutdown.clone(),
                ));
            }
        }
        endpoints
    }

    /// Looks `service`'s endpoints up in DNS, again at each answer's TTL. A failed lookup
    /// keeps the endpoints last found.
    async fn follow_dns(
        self: Arc<Self>,
        service: ServiceKey,
        source: DnsSource,
        shutdown: CancellationToken,
    ) {
        loop {
            let wait = match source.lookup().await {
                Ok(found) => {
                    self.update(|registry| registry.set_found(&service, found.endpoints));
                    found.again_in
                }
                Err(error) => {
                    tracing::warn!(%service, %error, "endpoint lookup failed; keeping the last endpoints");
                    RETRY_AFTER_FAILURE
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Checks every endpoint of `export` each interval, all at once.
    async fn check(
        self: Arc<Self>,
        export: Export,
        check: HealthCheck,
        shutdown: CancellationToken,
    ) {
        let Some(port) = export.ports.iter().find(|p| p.port == check.port).cloned() else {
            return;
        };
        let mut ticker = tokio::time::interval(check.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let found = self.lock().found(&export.service);
            let mut checks = JoinSet::new();
            for endpoint in found {
                let (probe, address) = (check.probe.clone(), port.address_of(&endpoint));
                let timeout = check.timeout;
                checks.spawn(async move { (endpoint, probe.check(address, timeout).await) });
            }
            // Each verdict is taken as it comes, so a quick endpoint is not held up by a slow
            // one; only a changed verdict publishes. A probe that panicked counts as no result.
            while let Some(joined) = checks.join_next().await {
                let Ok((endpoint, result)) = joined else {
                    continue;
                };
                if let Err(error) = &result {
                    tracing::debug!(service = %export.service, endpoint = %endpoint.ip, %error, "health check failed");
                }
                let passed = result.is_ok();
                self.update(|registry| {
                    let changed = registry.observe(&export.service, &endpoint, passed);
                    if changed {
                        tracing::info!(service = %export.service, endpoint = %endpoint.ip, healthy = passed, "endpoint health changed");
                    }
                    changed
                });
            }
        }
    }

    /// Applies a change and, if it changed anything, publishes the endpoints.
    fn update(&self, change: impl FnOnce(&mut Registry) -> bool) {
        let mut registry = self.lock();
        if !change(&mut registry) {
            return;
        }
        self.state.set_exports(Arc::new(registry.exports()));
        self.catalogs.set_own(registry.catalog());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}
