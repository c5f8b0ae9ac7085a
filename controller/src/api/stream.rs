//! `GET /api/jobs/{job_id}/output/stream`: a job's output as Server-Sent
//! Events. It replays the pieces stored for one shard of the latest
//! attempt, follows new ones as agents send them (polling Postgres, which
//! every replica shares), and ends with an `end` event once the job has
//! ended and every piece is sent. The token is checked again every
//! [`RECHECK`] (a user disabled or a token revoked ends the stream), and
//! the stream closes when the controller shuts down.

use super::error::{valid, ApiError};
use super::extract::{admit, ApiPath, ApiQuery, Principal};
use super::jobs::visible;
use super::AppState;
use crate::db::output::{job_state, pieces_after, Piece};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, Stream, StreamExt};
use orchestrator_shared::api::{OutputEnd, OutputEvent, StreamQuery};
use orchestrator_shared::Scope;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

/// How often the stream looks for new pieces while none come.
const POLL: Duration = Duration::from_millis(500);
/// How often an idle stream sends a comment: a client that went away is
/// noticed by the failed write, and its stream stops polling.
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// How often the caller's token is checked again.
const RECHECK: Duration = Duration::from_secs(1);

/// Streams one shard's output (replayed, then followed) until the job
/// ends: `output` events, then one `end` event.
#[utoipa::path(get, path = "/api/jobs/{job_id}/output/stream", tag = "jobs", security(("bearer" = [])),
    params(("job_id" = Uuid, Path), StreamQuery),
    responses((status = 200, content_type = "text/event-stream", body = orchestrator_shared::api::OutputStreamEvent,
                description = "Server-Sent Events, each of one of two kinds: `output` events (OutputSseEvent: id the \
                               piece's seq, data an OutputEvent as JSON), then one `end` event (EndSseEvent: data an \
                               OutputEnd as JSON); comments keep the connection alive"),
              (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ValidationBody)))]
pub async fn output_stream(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(job_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    valid(q.problems())?;
    let client = state.db.client().await?;
    visible(&client, &principal, job_id).await?;
    drop(client);
    let token = super::session::credential(&axum::http::Method::GET, &headers)?;
    let follow = Follow {
        stopping: state.stopping.subscribe(),
        state,
        token,
        job_id,
        shard: q.shard.unwrap_or(0),
        attempt: None,
        after: None,
        checked: Instant::now(),
        ended: false,
    };
    let events = stream::unfold(follow, |mut f| async move {
        let batch = f.next_events().await?;
        Some((stream::iter(batch.into_iter().map(Ok)), f))
    })
    .flatten();
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// Where one stream is.
struct Follow {
    /// Database and token checks.
    state: AppState,
    /// Becomes `true` when the controller shuts down.
    stopping: watch::Receiver<bool>,
    /// The caller's token, checked again every [`RECHECK`].
    token: String,
    /// The job.
    job_id: Uuid,
    /// The shard followed.
    shard: i32,
    /// The attempt whose pieces were sent (a retry starts over).
    attempt: Option<i32>,
    /// The last piece sent.
    after: Option<i64>,
    /// When the token was last checked.
    checked: Instant,
    /// Whether `end` was sent.
    ended: bool,
}

impl Follow {
    /// The next events to send; `None` ends the stream (after `end`, on a
    /// refused token, a failing database or shutdown).
    async fn next_events(&mut self) -> Option<Vec<Event>> {
        if self.ended {
            return None;
        }
        loop {
            if *self.stopping.borrow() || !self.still_allowed().await {
                return None;
            }
            let client = self.state.db.client().await.ok()?;
            // The status is read before the pieces: an agent stores all of
            // a shard's output before its report, so once the job has
            // ended, the pieces read after it are all there are.
            let (status, exit_code, attempt) = job_state(&client, self.job_id).await.ok()??;
            if self.attempt != Some(attempt) {
                self.attempt = Some(attempt);
                self.after = None;
            }
            let pieces = pieces_after(&client, self.job_id, self.shard, attempt, self.after)
                .await
                .ok()?;
            drop(client);
            if let Some(last) = pieces.last() {
                self.after = Some(last.seq);
                return Some(pieces.into_iter().map(output_event).collect());
            }
            if status.is_terminal() {
                self.ended = true;
                let end = OutputEnd { status, exit_code };
                return Some(vec![Event::default().event("end").json_data(end).ok()?]);
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                _ = self.stopping.changed() => return None,
            }
        }
    }

    /// Whether the token still stands (checked at most every [`RECHECK`]).
    async fn still_allowed(&mut self) -> bool {
        if self.checked.elapsed() < RECHECK {
            return true;
        }
        self.checked = Instant::now();
        admit(&self.state, &self.token, Some(Scope::JobsRead))
            .await
            .is_ok()
    }
}

/// A stored piece as an `output` event.
fn output_event(piece: Piece) -> Event {
    let data = OutputEvent {
        seq: piece.seq,
        stream: piece.stream,
        data: String::from_utf8_lossy(&piece.data).into_owned(),
        truncated: piece.truncated,
    };
    let event = Event::default().event("output").id(piece.seq.to_string());
    event
        .json_data(&data)
        .unwrap_or_else(|_| Event::default().comment("unencodable piece"))
}
