//! Moves at run time, around the decision core in [`crate::moves`]:
//!
//! - [`Moving`], in [`State`], is what the data plane reads: the split in force for each moved
//!   service (this gateway's own and those its peers publish), and the observations of
//!   requests to such services, by the cluster that served them.
//! - [`Mover`] owns the moves started at this gateway (and the splits set here by hand): it
//!   feeds them observations (its own and its peers' reports), polls them, publishes their
//!   splits, keeps them in `state_dir` so that a restart resumes them, and collects the
//!   observations this gateway owes the owners of other moves.
//!
//! The federation control channel carries splits and reports between gateways
//! (`federation::moves`).

pub(crate) mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use meshfed_discovery::{Label, ServiceKey};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::moves::{Event, Move, Phase, Published, Spec, Split, Window};
use crate::state::State;

/// How often moves are polled and observations gathered.
const TICK: Duration = Duration::from_millis(200);

/// Observations by service and the cluster that served them.
pub(crate) type Observed = HashMap<(ServiceKey, Label), Window>;

/// The splits in force and the observations of moved services, as the data plane sees them.
#[derive(Debug, Default)]
pub(crate) struct Moving {
    splits: RwLock<Arc<BTreeMap<ServiceKey, Arc<InForce>>>>,
    observed: Mutex<Observed>,
    /// Outbound TCP connections, so that a move's drain can close those left on the old side.
    pub(crate) tcp: Arc<TcpConnections>,
}

/// The outbound TCP connections open now, by service and the cluster they went to.
#[derive(Debug, Default)]
pub(crate) struct TcpConnections {
    open: Mutex<HashMap<u64, (ServiceKey, Label, CancellationToken)>>,
    next: std::sync::atomic::AtomicU64,
}

/// Keeps a connection in [`TcpConnections`] while it lives; [`OpenTcp::closed`] resolves when
/// a drain asks it to close.
#[derive(Debug)]
pub(crate) struct OpenTcp {
    registry: Arc<TcpConnections>,
    id: u64,
    close: CancellationToken,
}

impl TcpConnections {
    /// Registers a connection to `service` in `cluster`.
    pub(crate) fn register(self: &Arc<Self>, service: &ServiceKey, cluster: &Label) -> OpenTcp {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let close = CancellationToken::new();
        let entry = (service.clone(), cluster.clone(), close.clone());
        self.lock().insert(id, entry);
        OpenTcp {
            registry: self.clone(),
            id,
            close,
        }
    }

    /// Closes every connection to `service` in `cluster`; how many there were.
    pub(crate) fn close(&self, service: &ServiceKey, cluster: &Label) -> usize {
        let open = self.lock();
        let matching = open
            .values()
            .filter(|(s, c, _)| s == service && c == cluster);
        matching.map(|(_, _, close)| close.cancel()).count()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, (ServiceKey, Label, CancellationToken)>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl OpenTcp {
    /// Resolves when the connection is to be closed.
    pub(crate) async fn closed(&self) {
        self.close.cancelled().await;
    }
}

impl Drop for OpenTcp {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

/// A split in force at this gateway, and the turns taken of it.
#[derive(Debug)]
pub(crate) struct InForce {
    pub(crate) published: Published,
    turns: std::sync::atomic::AtomicU64,
}

impl InForce {
    /// The cluster for a request with session key `key` (if any), among those `available`.
    pub(crate) fn pick(
        &self,
        key: Option<u64>,
        available: impl Fn(&Label) -> bool,
    ) -> Option<&Label> {
        let turn = self
            .turns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.published.split.pick(key, available, turn)
    }
}

impl Moving {
    /// The split in force for `service`, if any.
    pub(crate) fn split(&self, service: &ServiceKey) -> Option<Arc<InForce>> {
        let splits = self.splits.read().unwrap_or_else(|e| e.into_inner());
        if splits.is_empty() {
            return None;
        }
        splits.get(service).cloned()
    }

    /// Every split in force.
    pub(crate) fn splits(&self) -> Arc<BTreeMap<ServiceKey, Arc<InForce>>> {
        self.splits
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts a request to `service` that `cluster` served, if a move of it is under way.
    pub(crate) fn observe(
        &self,
        service: &ServiceKey,
        cluster: &Label,
        latency: Duration,
        failed: bool,
    ) {
        if !self.split(service).is_some_and(|p| p.published.observed) {
            return;
        }
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        observed
            .entry((service.clone(), cluster.clone()))
            .or_default()
            .record(latency, failed);
    }

    /// Puts `splits` in force. A split that has not changed keeps its turns, so that its
    /// sequence carries on.
    fn set(&self, splits: BTreeMap<ServiceKey, Published>) {
        let mut held = self.splits.write().unwrap_or_else(|e| e.into_inner());
        let next = splits
            .into_iter()
            .map(|(service, published)| {
                let kept = held
                    .get(&service)
                    .filter(|f| f.published == published)
                    .cloned();
                let in_force = kept.unwrap_or_else(|| {
                    self.drain_tcp(&published);
                    Arc::new(InForce {
                        published,
                        turns: std::sync::atomic::AtomicU64::new(0),
                    })
                });
                (service, in_force)
            })
            .collect();
        *held = Arc::new(next);
    }

    fn drain(&self) -> Observed {
        std::mem::take(&mut *self.observed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// For a split newly in force that drains: closes the TCP connections left on the
    /// clusters it gives nothing, once its deadline has passed.
    fn drain_tcp(&self, published: &Published) {
        let Some(deadline) = published.drain_tcp else {
            return;
        };
        let emptied: Vec<Label> = published
            .split
            .weights
            .iter()
            .filter(|(_, weight)| *weight == 0)
            .map(|(cluster, _)| cluster.clone())
            .collect();
        let (tcp, service) = (self.tcp.clone(), published.service.clone());
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            for cluster in emptied {
                let closed = tcp.close(&service, &cluster);
                if closed > 0 {
                    tracing::info!(svc = %service, %cluster, connections = closed, "drained TCP connections after the move");
                }
            }
        });
    }
}

/// Why a request to the mover was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MoveError {
    /// The spec does not hold together.
    #[error("{0}")]
    Invalid(String),
    /// The service is already being moved (or split by hand), here or by a peer.
    #[error(
        "{service} is already being moved by {owner}'s gateway: finish, roll back or abort that move first"
    )]
    Busy { service: ServiceKey, owner: Label },
    /// Green cannot take the service.
    #[error("{cluster} has no ready endpoint of {service} that this gateway can reach")]
    NotServed { service: ServiceKey, cluster: Label },
    /// This gateway's cluster is neither blue nor green.
    #[error(
        "a move is started at the gateway of blue ({blue}) or green ({green}), not at {here}'s"
    )]
    NotInvolved {
        blue: Label,
        green: Label,
        here: Label,
    },
    /// No move (or split) of the service is owned here.
    #[error("no move of {0} was started at this gateway")]
    NoMove(ServiceKey),
    /// The move is not in a state that allows the action.
    #[error("{0}")]
    Refused(String),
}

/// What an operator does to a move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Pause,
    Resume,
    Rollback,
    Abort,
}

/// The moves and hand-set splits this gateway owns.
#[derive(Clone, Debug, Default)]
pub(crate) struct Owned {
    pub(crate) moves: BTreeMap<ServiceKey, Move>,
    pub(crate) manual: BTreeMap<ServiceKey, Split>,
}

/// Owns this gateway's moves; see the module docs.
#[derive(Debug)]
pub(crate) struct Mover {
    state: Arc<State>,
    owned: Mutex<Owned>,
    /// What each peer publishes.
    remote: Mutex<BTreeMap<Label, Vec<Published>>>,
    /// Observations peers reported for the moves owned here, not yet fed to them.
    reported: Mutex<Observed>,
    /// Observations owed to the owners of other moves, by owner.
    owed: Mutex<BTreeMap<Label, Observed>>,
    /// Where the owned moves are kept.
    store: Option<PathBuf>,
    /// What this gateway publishes, for the peers' watches.
    published: watch::Sender<Arc<Vec<Published>>>,
    /// Held while what is published is recomputed and applied, so that an older snapshot
    /// never lands after a newer one.
    publishing: Mutex<()>,
}

impl Mover {
    /// A mover for `state`, resuming what `store` kept (a file in `state_dir`).
    pub(crate) fn new(state: Arc<State>, store: Option<PathBuf>) -> Result<Mover, String> {
        let owned = match &store {
            Some(path) => store::load(path).unwrap_or_else(|error| {
                // The data plane must not stay down for a state file: keep it aside for an
                // operator, and start without the moves it held.
                let aside = path.with_extension("json.bad");
                let _ = std::fs::rename(path, &aside);
                tracing::error!(%error, kept = %aside.display(), "cannot read the moves kept; starting without them");
                Owned::default()
            }),
            None => Owned::default(),
        };
        let resumed = owned.moves.values().filter(|m| m.is_active()).count();
        if resumed > 0 {
            tracing::info!(
                moves = resumed,
                "resuming moves kept from before the restart"
            );
        }
        let mover = Mover {
            state,
            owned: Mutex::new(owned),
            remote: Mutex::default(),
            reported: Mutex::default(),
            owed: Mutex::default(),
            store,
            published: watch::Sender::new(Arc::new(Vec::new())),
            publishing: Mutex::new(()),
        };
        mover.publish();
        Ok(mover)
    }

    /// Starts moving `spec.service` from blue to green at `now`.
    pub(crate) fn start(&self, spec: Spec, now: SystemTime) -> Result<Move, MoveError> {
        spec.check().map_err(MoveError::Invalid)?;
        let service = spec.service.clone();
        let here = self.state.cluster();
        // Peers accept a split only from a gateway of a cluster it names (see `set_remote`).
        if here != &spec.blue && here != &spec.green {
            return Err(MoveError::NotInvolved {
                blue: spec.blue,
                green: spec.green,
                here: here.clone(),
            });
        }
        let routes = self.state.routes();
        let any = crate::policy::Labels::new();
        if !routes.available(&service, &spec.green, &any) {
            let cluster = spec.green.clone();
            return Err(MoveError::NotServed { service, cluster });
        }
        let started = Move::start(spec, now);
        {
            // Checked and taken under one lock: two starts cannot both succeed.
            let mut owned = self.lock();
            if owned.moves.get(&service).is_some_and(Move::is_active) {
                let owner = here.clone();
                return Err(MoveError::Busy { service, owner });
            }
            if let Some(owner) = self.remote_owner(&service) {
                return Err(MoveError::Busy { service, owner });
            }
            owned.manual.remove(&service);
            owned.moves.insert(service.clone(), started.clone());
        }
        tracing::info!(
            svc = %service,
            blue = %started.spec.blue,
            green = %started.spec.green,
            green_percent = started.green_percent(),
            "move started"
        );
        self.publish();
        Ok(started)
    }

    /// Does `action` to the move of `service` owned here.
    pub(crate) fn act(
        &self,
        service: &ServiceKey,
        action: Action,
        now: SystemTime,
    ) -> Result<Move, MoveError> {
        let moved = {
            let mut owned = self.lock();
            let m = owned
                .moves
                .get_mut(service)
                .ok_or_else(|| MoveError::NoMove(service.clone()))?;
            let done = match action {
                Action::Pause => m.pause("paused by an operator"),
                Action::Resume => m.resume(now),
                Action::Rollback => m.rollback("rolled back by an operator"),
                Action::Abort => m.abort(),
            };
            done.map_err(MoveError::Refused)?;
            m.clone()
        };
        tracing::info!(svc = %service, ?action, phase = %moved.phase, "move changed by an operator");
        self.publish();
        Ok(moved)
    }

    /// The moves owned here, all or `service`'s.
    pub(crate) fn moves(&self, service: Option<&ServiceKey>) -> Vec<Move> {
        let owned = self.lock();
        owned
            .moves
            .values()
            .filter(|m| service.is_none_or(|s| &m.spec.service == s))
            .cloned()
            .collect()
    }

    /// Sets `service`'s split by hand (no gates), published like a move's.
    pub(crate) fn set_split(&self, service: ServiceKey, split: Split) -> Result<(), MoveError> {
        if split.weights.iter().all(|(_, w)| *w == 0) {
            return Err(MoveError::Invalid(
                "at least one weight must be above 0".into(),
            ));
        }
        let owner = self.owner_of(&service);
        let moving_here = self.lock().moves.get(&service).is_some_and(Move::is_active);
        match owner {
            Some(owner) if owner != *self.state.cluster() || moving_here => {
                return Err(MoveError::Busy { service, owner });
            }
            _ => {}
        }
        {
            let mut owned = self.lock();
            owned.moves.remove(&service);
            owned.manual.insert(service.clone(), split);
        }
        tracing::info!(svc = %service, "split set by an operator");
        self.publish();
        Ok(())
    }

    /// Withdraws the split of `service` set here (by hand or by a move that has ended).
    pub(crate) fn clear_split(&self, service: &ServiceKey) -> Result<(), MoveError> {
        {
            let mut owned = self.lock();
            if owned.moves.get(service).is_some_and(Move::is_active) {
                return Err(MoveError::Refused(format!(
                    "a move of {service} is under way: abort or roll it back"
                )));
            }
            let had =
                owned.manual.remove(service).is_some() | owned.moves.remove(service).is_some();
            if !had {
                return Err(MoveError::NoMove(service.clone()));
            }
        }
        tracing::info!(svc = %service, "split withdrawn");
        self.publish();
        Ok(())
    }

    /// Takes `peer`'s published splits, replacing what it published before. A split whose
    /// owner is not one of the clusters it names is dropped: a gateway moves only its own
    /// cluster's traffic in or out.
    pub(crate) fn set_remote(&self, peer: &Label, splits: Vec<Published>) {
        let splits = splits
            .into_iter()
            .filter(|p| {
                let involved = p.split.weights.iter().any(|(c, _)| c == peer);
                if !involved {
                    tracing::debug!(peer.cluster = %peer, svc = %p.service, "split of clusters other than the peer's; dropped");
                }
                involved
            })
            .collect();
        self.remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer.clone(), splits);
        let _publishing = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        self.apply();
    }

    /// Forgets what `peer` published and what it is owed: it is gone, and its moves with it
    /// (the policy routes their services again until it returns and publishes anew).
    pub(crate) fn lose_peer(&self, peer: &Label) {
        let had = self
            .remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(peer)
            .is_some_and(|splits| !splits.is_empty());
        self.owed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(peer);
        if had {
            tracing::info!(peer.cluster = %peer, "peer lost: its splits are withdrawn");
            let _publishing = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
            self.apply();
        }
    }

    /// Takes observations a peer reports for moves owned here.
    pub(crate) fn reported(&self, observed: Observed) {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        for (key, window) in observed {
            reported.entry(key).or_default().merge(&window);
        }
    }

    /// The observations owed to `owner` since the last call.
    pub(crate) fn take_owed(&self, owner: &Label) -> Observed {
        let mut owed = self.owed.lock().unwrap_or_else(|e| e.into_inner());
        owed.remove(owner).unwrap_or_default()
    }

    /// What this gateway publishes, as it changes.
    pub(crate) fn watch(&self) -> watch::Receiver<Arc<Vec<Published>>> {
        self.published.subscribe()
    }

    /// Polls the moves until `shutdown`.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => self.tick(SystemTime::now()),
            }
        }
    }

    /// Gathers observations, polls every move, and publishes what changed.
    fn tick(&self, now: SystemTime) {
        let observed = self.state.moving.drain();
        let reported =
            std::mem::take(&mut *self.reported.lock().unwrap_or_else(|e| e.into_inner()));
        let splits = self.state.moving.splits();
        let mut changed = false;
        let mut owned = self.lock();
        // Peers' reports feed only the moves owned here; they are never relayed.
        for ((service, cluster), window) in reported {
            if let Some(m) = owned.moves.get_mut(&service).filter(|m| m.is_active()) {
                m.observe(&cluster, &window);
            }
        }
        for ((service, cluster), window) in observed {
            if let Some(m) = owned.moves.get_mut(&service).filter(|m| m.is_active()) {
                m.observe(&cluster, &window);
                continue;
            }
            // Another gateway's move: owed to its owner.
            let Some(owner) = splits
                .get(&service)
                .map(|p| p.published.owner.clone())
                .filter(|owner| owner != self.state.cluster())
            else {
                continue;
            };
            let mut owed = self.owed.lock().unwrap_or_else(|e| e.into_inner());
            owed.entry(owner)
                .or_default()
                .entry((service, cluster))
                .or_default()
                .merge(&window);
        }
        for m in owned.moves.values_mut() {
            let Some(event) = m.poll(now) else { continue };
            changed = true;
            let svc = &m.spec.service;
            match &event {
                Event::Advanced {
                    stage,
                    green_percent,
                } => {
                    tracing::info!(%svc, stage, green_percent, "move advanced")
                }
                Event::Completed => tracing::info!(%svc, green = %m.spec.green, "move completed"),
                Event::RolledBack { reason } => {
                    tracing::warn!(%svc, %reason, "move rolled back: a gate failed")
                }
                Event::Paused { reason } => {
                    tracing::warn!(%svc, %reason, "move paused: a gate failed")
                }
            }
        }
        drop(owned);
        if changed {
            self.publish();
        }
    }

    /// Recomputes what this gateway publishes, keeps it, and applies every split in force.
    fn publish(&self) {
        let _publishing = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        let owned = self.lock().clone();
        let cluster = self.state.cluster().clone();
        let mut published: Vec<Published> = owned
            .moves
            .values()
            .filter_map(|m| {
                let ended = matches!(m.phase, Phase::Completed | Phase::RolledBack { .. });
                Some(Published {
                    service: m.spec.service.clone(),
                    owner: cluster.clone(),
                    split: m.split()?,
                    session: m.spec.session.clone(),
                    observed: m.is_active(),
                    drain_tcp: m.spec.drain_tcp.filter(|_| ended),
                })
            })
            .collect();
        published.extend(owned.manual.iter().map(|(service, split)| Published {
            service: service.clone(),
            owner: cluster.clone(),
            split: split.clone(),
            session: None,
            observed: false,
            drain_tcp: None,
        }));
        if let Some(path) = &self.store
            && let Err(error) = store::save(path, &owned)
        {
            tracing::warn!(path = %path.display(), %error, "cannot keep the moves");
        }
        self.published.send_replace(Arc::new(published));
        self.apply();
    }

    /// Puts every split in force: this gateway's own, then its peers' for other services
    /// (where two peers publish one service, the first by name wins, with a warning).
    fn apply(&self) {
        let own = self.published.borrow().clone();
        let mut splits: BTreeMap<ServiceKey, Published> =
            own.iter().map(|p| (p.service.clone(), p.clone())).collect();
        let remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        for (peer, published) in remote.iter() {
            for p in published {
                match splits.get(&p.service) {
                    Some(held) if held.owner != p.owner => tracing::warn!(
                        svc = %p.service,
                        kept = %held.owner,
                        ignored = %peer,
                        "two gateways publish a split for one service"
                    ),
                    Some(_) => {}
                    None => {
                        splits.insert(p.service.clone(), p.clone());
                    }
                }
            }
        }
        drop(remote);
        self.state.moving.set(splits);
    }

    /// The gateway that owns the split of `service` in force, if any.
    fn owner_of(&self, service: &ServiceKey) -> Option<Label> {
        if self.lock().moves.get(service).is_some_and(Move::is_active) {
            return Some(self.state.cluster().clone());
        }
        self.remote_owner(service)
    }

    /// The peer that publishes a split (of a move, or set by hand) of `service`, if any.
    fn remote_owner(&self, service: &ServiceKey) -> Option<Label> {
        let remote = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        remote
            .values()
            .flatten()
            .find(|p| &p.service == service)
            .map(|p| p.owner.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Owned> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }
}
