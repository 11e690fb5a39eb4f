//! The admin API over gRPC (`meshfed.admin.v1.Admin`): policy reload, run-time faults, moves
//! and splits.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use meshfed_discovery::{Label, ServiceKey};

use tonic::{Request, Response, Status};

use super::{faults, moves, proto};
use crate::mover::{Action, MoveError, Mover};
use crate::moves::Split;
use crate::policy_file::{PolicyFile, Reloaded};
use crate::state::State;

/// Serves the admin API for one gateway.
#[derive(Clone, Debug)]
pub(crate) struct AdminService {
    pub(crate) state: Arc<State>,
    /// The policy file, if the gateway has one.
    pub(crate) policy_file: Option<Arc<Mutex<PolicyFile>>>,
    /// The moves this gateway owns.
    pub(crate) mover: Arc<Mover>,
}

impl From<MoveError> for Status {
    fn from(error: MoveError) -> Status {
        let message = error.to_string();
        match error {
            MoveError::Invalid(_) => Status::invalid_argument(message),
            MoveError::Busy { .. } => Status::already_exists(message),
            MoveError::NotServed { .. } | MoveError::Refused(_) | MoveError::NotInvolved { .. } => {
                Status::failed_precondition(message)
            }
            MoveError::NoMove(_) => Status::not_found(message),
        }
    }
}

fn service(text: &str) -> Result<ServiceKey, Status> {
    text.parse()
        .map_err(|e| Status::invalid_argument(format!("service {text:?}: {e}")))
}

#[tonic::async_trait]
impl proto::admin_server::Admin for AdminService {
    async fn reload_policy(
        &self,
        _: Request<proto::ReloadPolicyRequest>,
    ) -> Result<Response<proto::ReloadPolicyResponse>, Status> {
        let Some(file) = &self.policy_file else {
            return Err(Status::failed_precondition(
                "this gateway has no policy file (`policy` in its config)",
            ));
        };
        let reloaded = file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reload(&self.state, true);
        match reloaded {
            Reloaded::Unchanged => Ok(Response::new(proto::ReloadPolicyResponse {
                changed: false,
            })),
            Reloaded::Applied => Ok(Response::new(proto::ReloadPolicyResponse { changed: true })),
            Reloaded::Rejected(errors) => Err(Status::invalid_argument(format!(
                "the policy in force is kept: {errors}"
            ))),
        }
    }

    async fn set_fault(
        &self,
        request: Request<proto::SetFaultRequest>,
    ) -> Result<Response<proto::RuntimeFault>, Status> {
        let now = Instant::now();
        let fault = faults::check(request.get_ref(), &self.state.policy(), now)
            .map_err(Status::invalid_argument)?;
        let report = faults::report(&fault, now);
        let (name, service) = (fault.name.clone(), fault.service.clone());
        self.state
            .change_runtime_faults(|faults| faults.set(fault, now))
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        tracing::info!(
            fault = %name,
            svc = %service,
            remaining_ms = report.remaining_ms,
            "fault set"
        );
        Ok(Response::new(report))
    }

    async fn clear_fault(
        &self,
        request: Request<proto::ClearFaultRequest>,
    ) -> Result<Response<proto::ClearFaultResponse>, Status> {
        let name = &request.get_ref().name;
        let now = Instant::now();
        if !self.state.change_runtime_faults(|f| f.clear(name, now)) {
            return Err(Status::not_found(format!("no fault {name:?} is in force")));
        }
        tracing::info!(fault = %name, "fault cleared");
        Ok(Response::new(proto::ClearFaultResponse {}))
    }

    async fn list_faults(
        &self,
        _: Request<proto::ListFaultsRequest>,
    ) -> Result<Response<proto::ListFaultsResponse>, Status> {
        let now = Instant::now();
        let faults = self.state.runtime_faults();
        let faults = faults.active(now).map(|f| faults::report(f, now)).collect();
        Ok(Response::new(proto::ListFaultsResponse { faults }))
    }

    async fn start_move(
        &self,
        request: Request<proto::StartMoveRequest>,
    ) -> Result<Response<proto::MoveStatus>, Status> {
        let spec = moves::spec(request.get_ref()).map_err(Status::invalid_argument)?;
        let now = SystemTime::now();
        let started = self.mover.start(spec, now)?;
        Ok(Response::new(moves::status(&started, now)))
    }

    async fn list_moves(
        &self,
        request: Request<proto::ListMovesRequest>,
    ) -> Result<Response<proto::ListMovesResponse>, Status> {
        let wanted = match request.get_ref().service.as_str() {
            "" => None,
            text => Some(service(text)?),
        };
        let now = SystemTime::now();
        let moves = self
            .mover
            .moves(wanted.as_ref())
            .iter()
            .map(|m| moves::status(m, now))
            .collect();
        Ok(Response::new(proto::ListMovesResponse { moves }))
    }

    async fn change_move(
        &self,
        request: Request<proto::ChangeMoveRequest>,
    ) -> Result<Response<proto::MoveStatus>, Status> {
        use proto::change_move_request::Action as Wire;
        let request = request.get_ref();
        let service = service(&request.service)?;
        let action = match Wire::try_from(request.action) {
            Ok(Wire::Pause) => Action::Pause,
            Ok(Wire::Resume) => Action::Resume,
            Ok(Wire::Rollback) => Action::Rollback,
            Ok(Wire::Abort) => Action::Abort,
            _ => return Err(Status::invalid_argument("say what to do with the move")),
        };
        let now = SystemTime::now();
        let changed = self.mover.act(&service, action, now)?;
        Ok(Response::new(moves::status(&changed, now)))
    }

    async fn list_splits(
        &self,
        _: Request<proto::ListSplitsRequest>,
    ) -> Result<Response<proto::ListSplitsResponse>, Status> {
        let splits = self.state.moving.splits();
        let splits = splits
            .values()
            .map(|p| moves::split(&p.published))
            .collect();
        Ok(Response::new(proto::ListSplitsResponse { splits }))
    }

    async fn set_split(
        &self,
        request: Request<proto::SetSplitRequest>,
    ) -> Result<Response<proto::SplitStatus>, Status> {
        let request = request.get_ref();
        let service = service(&request.service)?;
        let mut weights = Vec::new();
        for w in &request.weights {
            let cluster: Label = w
                .cluster
                .parse()
                .map_err(|e| Status::invalid_argument(format!("cluster {:?}: {e}", w.cluster)))?;
            if weights.iter().any(|(c, _)| c == &cluster) {
                return Err(Status::invalid_argument(format!(
                    "{cluster} is named twice"
                )));
            }
            weights.push((cluster, w.weight));
        }
        self.mover.set_split(service.clone(), Split { weights })?;
        let in_force = self.state.moving.split(&service);
        let status = in_force
            .map(|p| moves::split(&p.published))
            .unwrap_or_default();
        Ok(Response::new(status))
    }

    async fn clear_split(
        &self,
        request: Request<proto::ClearSplitRequest>,
    ) -> Result<Response<proto::ClearSplitResponse>, Status> {
        let service = service(&request.get_ref().service)?;
        self.mover.clear_split(&service)?;
        Ok(Response::new(proto::ClearSplitResponse {}))
    }
}
