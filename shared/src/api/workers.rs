//! `/api/supervisor/*`: the fleet of worker agents and its figures.

use super::limits::{Isolation, Resources};
use super::Labels;
use crate::WorkerStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A worker agent as the supervisor API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Worker {
    /// Agent-chosen unique id (see [`crate::validate::is_valid_worker_id`]).
    pub worker_id: String,
    /// Current status.
    pub status: WorkerStatus,
    /// Host the agent runs on.
    pub hostname: String,
    /// Jobs it runs at once.
    pub capacity: i32,
    /// Jobs it runs now.
    pub running_jobs: i32,
    /// Operator-defined labels.
    pub labels: Labels,
    /// Agent version string.
    pub version: String,
    /// First registration.
    pub registered_at: DateTime<Utc>,
    /// Last heartbeat received.
    pub last_heartbeat_at: DateTime<Utc>,
    /// Registration generation: 1 at the first registration, one more at
    /// each registration since (each agent process under this id is a new
    /// incarnation). Control messages carry it, so an agent can drop those
    /// queued for an earlier incarnation. 0 from a controller that predates
    /// generations.
    #[serde(default)]
    pub generation: i64,
    /// What it offers its jobs in all, as it registered it.
    #[serde(default)]
    pub resources: Resources,
    /// Which protections it enforces, as it registered them; `null` for an
    /// agent that predates isolation (treat as none).
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// The pools it serves, as it registered them (`["default"]` for an
    /// agent that names none); jobs of other pools never reach it.
    #[serde(default)]
    pub pools: Vec<String>,
}

/// `GET /api/supervisor/workers` query. The status stays text so that an
/// unknown one is the contract's 422 naming the allowed values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct WorkerFilter {
    /// Only workers in this status.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<WorkerStatus>))]
    pub status: Option<String>,
}

/// A list of workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerList {
    /// The workers, ordered by id.
    pub workers: Vec<Worker>,
    /// How many.
    pub total: usize,
}

/// Mean and 95th percentile of a duration, in seconds (`None` without data).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DurationStats {
    /// Arithmetic mean.
    pub mean: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
}

/// The fleet at a glance (`GET /api/supervisor/metrics`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetStats {
    /// Workers per status (every status present, zero included).
    pub workers_by_status: BTreeMap<String, i64>,
    /// Jobs per status (every status present, zero included).
    pub jobs_by_status: BTreeMap<String, i64>,
    /// Jobs waiting to run (pending or queued).
    pub queue_depth: i64,
    /// Jobs that completed in the last minute.
    pub completed_last_minute: i64,
    /// Jobs that failed in the last minute.
    pub failed_last_minute: i64,
    /// Submission to start, over jobs started in the last minute.
    pub submit_to_start_seconds: DurationStats,
    /// Start to finish, over jobs finished in the last minute.
    pub start_to_finish_seconds: DurationStats,
}
