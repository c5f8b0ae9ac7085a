//! `/api/stats/*`: what the dashboard's overview draws. The timeline (jobs
//! finished and queue depth per minute, see `db::timeline`) and a
//! Server-Sent Events stream that sends the fleet's figures and the
//! timeline every [`EVERY`], so the page updates without reloading. Both
//! need `supervisor:read`, like `GET /api/supervisor/metrics`, whose
//! figures the stream repeats.

use super::error::{ApiError, FieldError};
use super::extract::{admit, ApiQuery};
use super::AppState;
use crate::db::stats;
use crate::db::timeline::{last_minutes, TimelinePoint, MAX_MINUTES};
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::stream::{self, Stream};
use orchestrator_shared::api::FleetStats;
use orchestrator_shared::Scope;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::watch;

/// How often the overview stream sends the figures: live enough for a
/// dashboard, and a handful of cheap queries per open page.
const EVERY: Duration = Duration::from_secs(2);

/// How long one response of the overview stream lasts: it then ends, and
/// the browser's `EventSource` reconnects after [`RECONNECT`] (a standard
/// behaviour), so no connection is held for ever and a client that went
/// away costs at most this long.
const LIFETIME: Duration = Duration::from_secs(10);

/// The reconnection delay the stream asks of its clients (`retry:`).
const RECONNECT: Duration = Duration::from_millis(500);

/// Minutes the timeline covers when the query names none: the hour the
/// dashboard charts.
const DEFAULT_MINUTES: i32 = 60;

/// The query of `GET /api/stats/timeline`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimelineQuery {
    /// Minutes to cover, the current one last (1 to 1440; default 60).
    #[param(minimum = 1, maximum = 1440)]
    pub minutes: Option<i32>,
}

/// The last minutes, one point each.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Timeline {
    /// Oldest first; every minute present.
    pub points: Vec<TimelinePoint>,
}

/// One event of the overview stream: the fleet now and the last hour.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Overview {
    /// As `GET /api/supervisor/metrics` answers.
    pub fleet: FleetStats,
    /// As `GET /api/stats/timeline` answers for the last hour.
    pub timeline: Timeline,
}

/// The name of the overview stream's events.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
pub enum OverviewEventName {
    /// `overview`.
    #[serde(rename = "overview")]
    Overview,
}

/// An event of the overview stream as sent: its name, and its data, an
/// [`Overview`] as JSON text (the OpenAPI document describes events so).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OverviewSseEvent {
    /// Always `overview`.
    pub event: OverviewEventName,
    /// An [`Overview`], as JSON.
    pub data: String,
}

/// Jobs finished (completed, failed) and the queue depth per minute.
#[utoipa::path(get, path = "/api/stats/timeline", tag = "supervisor", security(("bearer" = [])),
    params(TimelineQuery),
    responses((status = 200, body = Timeline), (status = 422, body = super::error::ValidationBody)))]
pub async fn timeline(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TimelineQuery>,
) -> Result<Json<Timeline>, ApiError> {
    let minutes = q.minutes.unwrap_or(DEFAULT_MINUTES);
    if !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(ApiError::Validation(vec![FieldError::query(
            "minutes",
            format!("must be between 1 and {MAX_MINUTES}"),
        )]));
    }
    let client = state.db.client().await?;
    let points = last_minutes(&client, minutes).await?;
    Ok(Json(Timeline { points }))
}

/// The overview, sent at once and then every two seconds as `overview`
/// events for ten seconds (then the client reconnects, as `retry:` asks),
/// or until the caller's token stops standing or the controller shuts down.
#[utoipa::path(get, path = "/api/stats/stream", tag = "supervisor", security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", body = OverviewSseEvent,
               description = "Server-Sent Events named `overview`, each one's data an Overview as JSON")))]
pub async fn overview_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let token = super::session::credential(&Method::GET, &headers)?;
    let watch = Watch {
        stopping: state.stopping.subscribe(),
        state,
        token,
        first: true,
        until: tokio::time::Instant::now() + LIFETIME,
    };
    let events = stream::unfold(watch, |mut w| async move {
        let event = w.next_event().await?;
        Some((Ok(event), w))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Where one overview stream is.
struct Watch {
    /// Database and token checks.
    state: AppState,
    /// Becomes `true` when the controller shuts down.
    stopping: watch::Receiver<bool>,
    /// The caller's token, checked again before every event.
    token: String,
    /// Whether no event was sent yet (the first goes at once).
    first: bool,
    /// When this response ends (see [`LIFETIME`]).
    until: tokio::time::Instant,
}

impl Watch {
    /// The next event; `None` ends the stream (token refused, database
    /// failing, shutdown).
    async fn next_event(&mut self) -> Option<Event> {
        if !self.first {
            if tokio::time::Instant::now() + EVERY > self.until {
                return None;
            }
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                _ = self.stopping.changed() => return None,
            }
        }
        let first = std::mem::replace(&mut self.first, false);
        if *self.stopping.borrow() {
            return None;
        }
        admit(&self.state, &self.token, Some(Scope::SupervisorRead))
            .await
            .ok()?;
        let client = self.state.db.client().await.ok()?;
        let fleet = stats::fleet(&client).await.ok()?;
        let points = last_minutes(&client, DEFAULT_MINUTES).await.ok()?;
        let overview = Overview {
            fleet,
            timeline: Timeline { points },
        };
        let event = Event::default().event("overview");
        let event = if first { event.retry(RECONNECT) } else { event };
        event.json_data(overview).ok()
    }
}
