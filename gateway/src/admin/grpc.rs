//! The admin API over gRPC (`meshfed.admin.v1.Admin`): policy reload and run-time faults.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::{faults, proto};
use crate::policy_file::{PolicyFile, Reloaded};
use crate::state::State;

/// Serves the admin API for one gateway.
#[derive(Clone, Debug)]
pub(crate) struct AdminService {
    pub(crate) state: Arc<State>,
    /// The policy file, if the gateway has one.
    pub(crate) policy_file: Option<Arc<Mutex<PolicyFile>>>,
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
}
