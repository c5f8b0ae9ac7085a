//! `/api/schedules*`: create, list, read, change (pause and resume
//! included), delete. As with jobs, users see their own schedules and
//! admins every one (another user's is a 404, so ids do not leak).

use super::error::{valid, ApiError, ErrorBody, ValidationBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Principal};
use super::jobs::{cursor_of, limit_problem};
use super::AppState;
use crate::db::schedules::{self, ScheduleCursor, ScheduleFields, StoredSchedule};
use crate::db::DbError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use deadpool_postgres::GenericClient;
use orchestrator_shared::api::schedules::{ScheduleListQuery, NEXT_FIRES, RECENT_RUNS};
use orchestrator_shared::api::{
    Cadence, CreateScheduleRequest, Schedule, ScheduleDetail, ScheduleList, UpdateScheduleRequest,
};
use uuid::Uuid;

/// The API's view of a stored schedule: its next fire times filled in
/// (none while paused).
fn shown(stored: StoredSchedule) -> Schedule {
    let mut schedule = stored.schedule;
    if schedule.enabled {
        if let Ok(cadence) = Cadence::parse(&schedule.cron, &schedule.timezone) {
            let from = stored.last_tick.max(Utc::now());
            schedule.next_fire_times = cadence.upcoming(from, NEXT_FIRES);
        }
    }
    schedule
}

/// The schedule if the caller may see it, else 404.
async fn visible(
    client: &impl GenericClient,
    principal: &Principal,
    schedule_id: Uuid,
) -> Result<StoredSchedule, ApiError> {
    let stored = schedules::get(client, schedule_id).await?;
    if stored.schedule.owner != principal.user_id && !principal.is_admin() {
        return Err(ApiError::NotFound(format!("Schedule {schedule_id} not found")));
    }
    Ok(stored)
}

/// Creates a schedule owned by the caller; its ticks count from now.
#[utoipa::path(post, path = "/api/schedules", tag = "schedules", security(("bearer" = [])),
    request_body = CreateScheduleRequest,
    responses((status = 201, body = Schedule), (status = 422, body = ValidationBody)))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<CreateScheduleRequest>,
) -> Result<(StatusCode, Json<Schedule>), ApiError> {
    req.check().map_err(ApiError::Validation)?;
    let client = state.db.client().await?;
    let stored = schedules::insert(&client, principal.user_id, &req).await?;
    tracing::info!(schedule_id = %stored.schedule.schedule_id, owner = %principal.user_id, "schedule created");
    Ok((StatusCode::CREATED, Json(shown(stored))))
}

/// The caller's schedules (an admin's: every one), by name then id: every
/// one without `limit` (as before paging existed), else a page of them.
#[utoipa::path(get, path = "/api/schedules", tag = "schedules", security(("bearer" = [])),
    params(ScheduleListQuery),
    responses((status = 200, body = ScheduleList), (status = 422, body = ValidationBody)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ScheduleListQuery>,
) -> Result<Json<ScheduleList>, ApiError> {
    let (limit, cursor) = page_of(q.limit, q.cursor.as_deref())?;
    let owner = (!principal.is_admin()).then_some(principal.user_id);
    let client = state.db.client().await?;
    let (stored, next) = schedules::list(&client, owner, limit, cursor.as_ref()).await?;
    Ok(Json(ScheduleList {
        schedules: stored.into_iter().map(shown).collect(),
        next_cursor: next.map(|c| c.to_string()),
    }))
}

/// The page size (none: no bound; else 1 to 500) and the cursor (empty:
/// the first page) of a schedule listing, or one 422 naming each bad one.
fn page_of(
    limit: Option<i64>,
    cursor: Option<&str>,
) -> Result<(Option<i64>, Option<ScheduleCursor>), ApiError> {
    let (cursor, bad_cursor) = match cursor_of(cursor) {
        Ok(cursor) => (cursor, None),
        Err(problem) => (None, Some(problem)),
    };
    valid(
        limit
            .and_then(limit_problem)
            .into_iter()
            .chain(bad_cursor)
            .collect(),
    )?;
    Ok((limit, cursor))
}

/// One schedule, its next five fire times and its last 20 runs.
#[utoipa::path(get, path = "/api/schedules/{schedule_id}", tag = "schedules", security(("bearer" = [])),
    params(("schedule_id" = Uuid, Path)),
    responses((status = 200, body = ScheduleDetail), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(schedule_id): ApiPath<Uuid>,
) -> Result<Json<ScheduleDetail>, ApiError> {
    let client = state.db.client().await?;
    let stored = visible(&client, &principal, schedule_id).await?;
    let runs = schedules::runs(&client, schedule_id, RECENT_RUNS).await?;
    Ok(Json(ScheduleDetail {
        schedule: shown(stored),
        runs,
    }))
}

/// The stored fields with the request's changes, checked (422 at the field).
fn changed(old: &Schedule, req: UpdateScheduleRequest) -> Result<ScheduleFields, ApiError> {
    valid(req.problems())?;
    let fields = ScheduleFields {
        name: req.name.unwrap_or_else(|| old.name.clone()),
        cron: req.cron.unwrap_or_else(|| old.cron.clone()),
        timezone: req.timezone.unwrap_or_else(|| old.timezone.clone()),
        template: req.template.unwrap_or_else(|| old.template.clone()),
        enabled: req.enabled.unwrap_or(old.enabled),
        overlap: req.overlap.unwrap_or(old.overlap),
        catch_up: req.catch_up.unwrap_or(old.catch_up),
    };
    Cadence::parse(&fields.cron, &fields.timezone).map_err(ApiError::Validation)?;
    Ok(fields)
}

/// Changes a schedule: a field left out stays; `enabled` pauses and
/// resumes (ticks passed while paused are not caught up).
#[utoipa::path(patch, path = "/api/schedules/{schedule_id}", tag = "schedules", security(("bearer" = [])),
    params(("schedule_id" = Uuid, Path)), request_body = UpdateScheduleRequest,
    responses((status = 200, body = Schedule), (status = 404, body = ErrorBody),
              (status = 422, body = ValidationBody)))]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(schedule_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateScheduleRequest>,
) -> Result<Json<Schedule>, ApiError> {
    let mut client = state.db.client().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let old = visible(&tx, &principal, schedule_id).await?;
    let fields = changed(&old.schedule, req)?;
    let owner = (!principal.is_admin()).then_some(principal.user_id);
    let stored = schedules::update(&tx, schedule_id, &fields, owner).await?;
    tx.commit().await.map_err(DbError::from)?;
    tracing::info!(%schedule_id, by = %principal.user_id, enabled = fields.enabled, "schedule changed");
    Ok(Json(shown(stored)))
}

/// Deletes a schedule and its runs; the jobs it submitted stay.
#[utoipa::path(delete, path = "/api/schedules/{schedule_id}", tag = "schedules", security(("bearer" = [])),
    params(("schedule_id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(schedule_id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let mut client = state.db.client().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    visible(&tx, &principal, schedule_id).await?;
    schedules::delete(&tx, schedule_id).await?;
    tx.commit().await.map_err(DbError::from)?;
    tracing::info!(%schedule_id, by = %principal.user_id, "schedule deleted");
    Ok(StatusCode::NO_CONTENT)
}
