//! The OpenAPI document, generated from the handlers' annotations, served at
//! `/api/openapi.json`, and a Swagger UI page at `/docs` whose assets are
//! compiled in (it works with no internet).

use super::{agents, auth_routes, jobs, ops, resources, supervisor, AppState};
use axum::Router;
use orchestrator_shared::api::{
    AgentToken, Allocation, AllocationStatus, ClaimDecision, ClaimRequest, ClaimResponse, DurationStats,
    ErrorBody, FieldError, FleetStats, Job, JobEvent, JobOutput, RegisterRequest, UserUsage, ValidationBody,
    Worker,
};
use orchestrator_shared::{JobStatus, WorkerStatus};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

/// Declares the bearer scheme the routes' `security(("bearer" = []))` names.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document: every route of the contract and its schemas.
#[derive(OpenApi)]
#[openapi(
    info(title = "Orchestrator controller API", description = "The contract written out in docs/api.md of the repository. Scopes: \
        jobs:read, jobs:write, supervisor:read, supervisor:write, resources:read, resources:write, admin \
        (admin implies all; X:write implies X:read). Users see their own jobs; admins see all."),
    paths(
        auth_routes::login, auth_routes::me, auth_routes::create_user,
        supervisor::list_workers, supervisor::get_worker, supervisor::pause, supervisor::resume,
        supervisor::terminate, supervisor::metrics,
        resources::quotas, resources::allocate, resources::release, resources::usage,
        jobs::submit, jobs::submit_batch, jobs::get_job, jobs::cancel, jobs::list, jobs::events, jobs::output,
        ops::healthz, ops::readyz, ops::metrics,
        agents::issue_token, agents::register, agents::claim,
    ),
    components(schemas(
        Job, JobEvent, JobStatus, Worker, WorkerStatus, Allocation, AllocationStatus, JobOutput,
        FleetStats, DurationStats, UserUsage, ErrorBody, ValidationBody, FieldError, AgentToken,
        RegisterRequest, ClaimRequest, ClaimResponse, ClaimDecision,
    )),
    modifiers(&BearerScheme),
    tags((name = "auth"), (name = "supervisor"), (name = "resources"), (name = "jobs"), (name = "ops"), (name = "agents")),
)]
pub struct ApiDoc;

/// `/api/openapi.json` and the `/docs` page.
pub fn routes() -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/api/openapi.json", ApiDoc::openapi()))
}
