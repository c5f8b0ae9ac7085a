//! The HTTP contract in Rust: every request and response body of the
//! controller's API (`docs/api.md`), in one place, so that the controller
//! serves, the command-line client reads and the tests check one definition.
//! A field added here reaches all three; a field renamed breaks their build
//! rather than a user's script.
//!
//! With the `openapi` feature every type also derives its OpenAPI schema
//! (the controller's `/api/openapi.json` is generated from these).
//!
//! # Layout
//! - [`error`]: the error bodies (`{"detail": ...}`) and their fixed texts.
//! - [`jobs`]: submission, jobs, pages, events, output, and their limits.
//! - [`deps`]: job dependencies: resolving `depends_on`, the cycle check,
//!   and the graph view.
//! - [`workers`]: the fleet as the supervisor routes show it.
//! - [`limits`]: per-job resource limits and agents' isolation.
//! - [`resources`]: quotas, allocations and usage.
//! - [`auth`]: login, the caller's identity, managing users.
//! - [`agents`]: what worker agents send and receive over HTTP.
//! - [`schedules`]: schedules (a job template on a cron expression) and their runs.
//! - [`search`]: the jobs search (filters and a total) and the bulk cancel.

pub mod agents;
pub mod auth;
pub mod deps;
pub mod error;
pub mod jobs;
pub mod limits;
mod number;
pub mod output;
pub mod resources;
pub mod schedules;
#[cfg(feature = "openapi")]
mod schema;
pub mod search;
pub mod workers;

pub use agents::{
    AgentCredential, BrokerLogin, ClaimBatchRequest, ClaimBatchResponse, ClaimDecision, ClaimRequest,
    ClaimResponse, CredentialList, CredentialRequest, IssuedCredential, RegisterRequest, Registration,
    ShardClaim, ShardWork, WorkClass, WorkClasses, MAX_CLAIMS_PER_REQUEST,
};
pub use auth::{
    CreateUserRequest, LoginRequest, Me, TokenResponse, UpdateUserRequest, UserAccount, UserList,
};
pub use deps::{Dependency, GraphEdge, GraphNode, JobGraph};
pub use error::{ErrorBody, FieldError, ValidationBody};
pub use jobs::{
    BatchRequest, BatchResponse, EventList, Job, JobEvent, JobOutput, JobPage, ListQuery, SubmitRequest,
};
pub use limits::{Isolation, Resources};
pub use output::{
    EndEventName, EndSseEvent, OutputChunk, OutputEnd, OutputEvent, OutputEventName, OutputQuery,
    OutputSseEvent, OutputStored, OutputStream, OutputStreamEvent, StreamQuery,
};
pub use resources::{
    AllocateRequest, Allocation, AllocationStatus, PoolQuotaChanges, PoolQuotaView, Quota, QuotaView,
    ReleaseRequest, UsageView, UserUsage,
};
pub use schedules::{
    Cadence, CreateScheduleRequest, Overlap, RunOutcome, Schedule, ScheduleDetail, ScheduleList, ScheduleRun,
    UpdateScheduleRequest,
};
pub use search::{
    CancelBatchRequest, CancelBatchResult, CancelRefusal, SearchPage, SearchQuery, MAX_CANCEL_BATCH,
};
pub use workers::{DurationStats, FleetStats, Worker, WorkerFilter, WorkerList};

/// Free-form string labels on jobs and workers (sorted, so their JSON is
/// canonical).
pub type Labels = std::collections::BTreeMap<String, String>;
