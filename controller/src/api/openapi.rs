//! The OpenAPI document, generated from the handlers' annotations, served at
//! `/api/openapi.json`, and a Swagger UI page at `/docs` whose assets are
//! compiled in (it works with no internet).

use super::{
    agents, allocation_list, auth_routes, job_search, jobs, ops, resources, schedules, session, stats,
    stream, supervisor, users, AppState,
};
use axum::Router;
use orchestrator_shared::api::{
    AgentCredential, Allocation, AllocationStatus, BrokerLogin, ClaimBatchRequest, ClaimBatchResponse,
    ClaimDecision, ClaimRequest, ClaimResponse, CredentialList, CredentialRequest, DurationStats,
    EndEventName, EndSseEvent, ErrorBody, FieldError, FleetStats, Isolation, IssuedCredential, Job, JobEvent,
    JobOutput, OutputChunk, OutputEnd, OutputEvent, OutputEventName, OutputSseEvent, OutputStored,
    OutputStream, OutputStreamEvent, RegisterRequest, Registration, Resources, ShardClaim, ShardWork,
    UpdateUserRequest, UserAccount, UserList, UserUsage, ValidationBody, WorkClass, WorkClasses, Worker,
};
use orchestrator_shared::api::{
    CancelBatchRequest, CancelBatchResult, CancelRefusal, CreateScheduleRequest, GraphEdge, GraphNode,
    JobGraph, Overlap, RunOutcome, Schedule, ScheduleDetail, ScheduleList, ScheduleRun, SearchPage,
    UpdateScheduleRequest,
};
use orchestrator_shared::{JobStatus, WorkerStatus};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
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

/// Links the schedule a `POST /api/schedules` creates to the routes that
/// take its id, so a client generated from the document, and the fuzzer's
/// stateful phase, can follow a creation to reading, changing and deleting
/// it (instead of guessing ids that are all 404s).
struct ScheduleLinks;

impl Modify for ScheduleLinks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let created = openapi
            .paths
            .paths
            .get_mut("/api/schedules")
            .and_then(|item| item.post.as_mut())
            .and_then(|post| post.responses.responses.get_mut("201"));
        let Some(RefOr::T(created)) = created else {
            return;
        };
        for (name, method) in [
            ("GetSchedule", "get"),
            ("UpdateSchedule", "patch"),
            ("DeleteSchedule", "delete"),
        ] {
            let link = LinkBuilder::new()
                .operation_ref(format!("#/paths/~1api~1schedules~1{{schedule_id}}/{method}"))
                .parameter("schedule_id", "$response.body#/schedule_id")
                .build();
            created.links.insert(name.to_owned(), RefOr::T(link));
        }
    }
}

/// Adds to every operation the error answers any route can give, so the
/// document lists every status a client may see (the fuzz test holds the
/// server to it): 500 and 503 everywhere; 401 and 403 where a token is
/// required; 422 where a body or parameters are read, 413 where a body is;
/// 404 where the path names a row; 429 on login. An answer an operation
/// documents itself is left as it is.
struct StandardErrors;

impl Modify for StandardErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                add_standard_errors(path, operation);
            }
        }
    }
}

/// The error answers [`StandardErrors`] adds to `operation` at `path`.
fn add_standard_errors(path: &str, operation: &mut Operation) {
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_body = operation.request_body.is_some();
    let has_params = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let answers = [
        (
            true,
            "500",
            "ErrorBody",
            "An unexpected failure; details only in the server's log",
        ),
        (
            true,
            "503",
            "ErrorBody",
            "The database is unreachable, or the request ran too long",
        ),
        (secured, "401", "ErrorBody", "No token, or an invalid one"),
        (secured, "403", "ErrorBody", "The token lacks the route's scope"),
        (
            has_body || has_params,
            "422",
            "ValidationBody",
            "Invalid input, each problem located",
        ),
        (has_body, "413", "ErrorBody", "The body is larger than the limit"),
        (
            path.contains('{'),
            "404",
            "ErrorBody",
            "No such row (or one the caller may not see)",
        ),
        (
            path == "/api/auth/login",
            "429",
            "ErrorBody",
            "Too many login attempts; see Retry-After",
        ),
    ];
    for (applies, status, schema, description) in answers {
        if applies {
            operation
                .responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| error_answer(schema, description));
        }
    }
}

/// A JSON error answer with the contract's body `schema`.
fn error_answer(schema: &str, description: &str) -> RefOr<Response> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(schema)))
        .build();
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/json", content)
            .build(),
    )
}

/// The document: every route of the contract and its schemas.
#[derive(OpenApi)]
#[openapi(
    info(title = "Orchestrator controller API", description = "The contract written out in docs/api.md of the repository. Scopes: \
        jobs:read, jobs:write, supervisor:read, supervisor:write, resources:read, resources:write, admin \
        (admin implies all; X:write implies X:read). Users see their own jobs and schedules; admins see all."),
    paths(
        auth_routes::login, auth_routes::me, auth_routes::create_user, session::start, session::end,
        users::list, users::get, users::update, users::delete,
        supervisor::list_workers, supervisor::get_worker, supervisor::pause, supervisor::resume,
        supervisor::terminate, supervisor::metrics, stats::timeline, stats::overview_stream,
        resources::quotas, resources::allocate, resources::release, resources::usage,
        allocation_list::list,
        jobs::submit, jobs::submit_batch, jobs::get_job, jobs::cancel, jobs::list, jobs::events, jobs::output,
        jobs::graph,
        job_search::search, job_search::cancel_batch,
        schedules::create, schedules::list, schedules::get, schedules::update, schedules::delete,
        stream::output_stream,
        ops::healthz, ops::readyz, ops::metrics,
        agents::issue_credential, agents::list_credentials, agents::revoke_credential,
        agents::register, agents::claim, agents::claim_batch, agents::output, agents::classes,
    ),
    components(schemas(
        Job, JobEvent, JobStatus, Worker, WorkerStatus, Allocation, AllocationStatus, JobOutput,
        FleetStats, DurationStats, UserUsage, ErrorBody, ValidationBody, FieldError,
        RegisterRequest, Registration, BrokerLogin, WorkClass, WorkClasses, ClaimRequest, ClaimResponse, ClaimDecision, ShardClaim, ClaimBatchRequest, ClaimBatchResponse,
        UserAccount, UserList, UpdateUserRequest, AgentCredential, CredentialList, CredentialRequest,
        IssuedCredential, ShardWork, Resources, Isolation,
        CreateScheduleRequest, UpdateScheduleRequest, Schedule, ScheduleDetail, ScheduleList, ScheduleRun,
        Overlap, RunOutcome, JobGraph, GraphNode, GraphEdge,
        IssuedCredential, ShardWork, Resources, Isolation, OutputChunk, OutputStored, OutputStream,
        OutputEvent, OutputEnd, OutputStreamEvent, OutputSseEvent, EndSseEvent, OutputEventName, EndEventName,
        allocation_list::AllocationList, SearchPage, CancelBatchRequest, CancelBatchResult,
        CancelRefusal, session::SessionResponse, stats::Timeline, stats::Overview, stats::OverviewSseEvent, stats::OverviewEventName, crate::db::timeline::TimelinePoint,
    )),
    modifiers(&BearerScheme, &StandardErrors, &ScheduleLinks),
    tags((name = "auth"), (name = "supervisor"), (name = "resources"), (name = "jobs"), (name = "schedules"), (name = "ops"), (name = "agents")),
)]
pub struct ApiDoc;

/// `/api/openapi.json` and the `/docs` page.
pub fn routes() -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/api/openapi.json", ApiDoc::openapi()))
}
