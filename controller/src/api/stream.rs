//! `GET /api/jobs/{job_id}/output/stream`: a job's output as Server-Sent
//! Events. It replays the pieces stored for one shard of the latest
//! attempt (only those after `Last-Event-ID`, so a reconnecting
//! EventSource resumes where it left off), follows new ones as agents send
//! them (polling Postgres, which every replica shares), and ends with an
//! `end` event once the job has ended and every piece is sent. The token
//! is checked again every [`RECHECK`] (a user disabled or a token revoked
//! ends the stream), and the stream closes when the controller shuts down.

use super::error::{valid, ApiError, FieldError};
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
/// The header an EventSource sends when it reconnects: the `id` of the
/// last event it received, which is a piece's `seq`.
const LAST_EVENT_ID: &str = "Last-Event-ID";

/// The header a reconnecting EventSource sends, for the OpenAPI document
/// only: the handler reads it from the raw headers ([`last_event_id`]), to
/// tell an absent header from a bad one.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // never built: it only describes the header
struct ResumeHeader {
    /// The `id` of the last event received (a piece's seq, a whole number
    /// from 0): only the pieces after it, in the latest attempt, are sent;
    /// empty or absent, all are. Anything else is a 422 at
    /// `["header", "Last-Event-ID"]`.
    #[param(rename = "Last-Event-ID", value_type = i64, required = false, minimum = 0)]
    last_event_id: Option<i64>,
}

/// Streams one shard's output (replayed, then followed) until the job
/// ends: `output` events, then one `end` event. A reconnecting client's
/// `Last-Event-ID` skips the pieces it already has.
#[utoipa::path(get, path = "/api/jobs/{job_id}/output/stream", tag = "jobs", security(("bearer" = [])),
    params(("job_id" = Uuid, Path), StreamQuery,
           ResumeHeader),
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
    let (resume, bad_header) = match last_event_id(&headers) {
        Ok(resume) => (resume, None),
        Err(problem) => (None, Some(problem)),
    };
    valid(q.problems().into_iter().chain(bad_header).collect())?;
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
        after: resume,
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
    /// The last piece sent; before the first read, the one the client
    /// last received (`Last-Event-ID`), in whatever attempt is then the
    /// latest.
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
                // The client's `Last-Event-ID` counts in the attempt it
                // finds; one retried while it watches is sent whole.
                if self.attempt.is_some() {
                    self.after = None;
                }
                self.attempt = Some(attempt);
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

/// The `seq` of the last piece a reconnecting client received, from its
/// `Last-Event-ID`: `None` when absent or empty (a client that has seen no
/// event sends none), else one whole number from 0. Anything else would
/// otherwise resume from a guess, so it is the contract's 422 instead.
fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, FieldError> {
    let mut values = headers.get_all(LAST_EVENT_ID).iter();
    let (value, more) = (values.next(), values.next());
    let problem = |msg: &str| FieldError::header(LAST_EVENT_ID, msg);
    if more.is_some() {
        return Err(problem("must be sent at most once"));
    }
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    // Only digits: `parse` alone would also take a sign (`+1`).
    let seq = value
        .to_str()
        .ok()
        .filter(|text| text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse::<i64>().ok());
    match seq {
        Some(seq) => Ok(Some(seq)),
        None => Err(problem(
            "must be the id of an output event: a whole number from 0 to 9223372036854775807",
        )),
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// The OpenAPI document promises only what the handler accepts: a
    /// whole number from 0, optional, never `null` (a fuzzer sent the text
    /// `null` to a nullable declaration and got the 422).
    #[test]
    fn the_documented_header_is_an_optional_whole_number_from_0() {
        use utoipa::OpenApi;
        let doc =
            serde_json::to_value(crate::api::openapi::ApiDoc::openapi()).expect("the document serializes");
        let params = &doc["paths"]["/api/jobs/{job_id}/output/stream"]["get"]["parameters"];
        let header = params
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["in"] == "header"))
            .expect("the header is documented");
        assert_eq!(header["name"], "Last-Event-ID", "{header}");
        assert_eq!(header["required"], false, "{header}");
        assert_eq!(header["schema"]["type"], "integer", "{header}");
        assert_eq!(header["schema"]["minimum"], 0, "{header}");
    }

    /// `Last-Event-ID` headers holding `values`, read as the stream does.
    fn read(values: &[&[u8]]) -> Result<Option<i64>, FieldError> {
        let mut headers = HeaderMap::new();
        for v in values {
            let value = HeaderValue::from_bytes(v).expect("a valid header value");
            headers.append("last-event-id", value);
        }
        last_event_id(&headers)
    }

    #[test]
    fn absent_or_empty_is_no_id_and_a_whole_number_is_the_last_seq() {
        assert_eq!(read(&[]), Ok(None));
        assert_eq!(read(&[b""]), Ok(None));
        assert_eq!(read(&[b"0"]), Ok(Some(0)));
        assert_eq!(read(&[b"41"]), Ok(Some(41)));
        assert_eq!(read(&[b"9223372036854775807"]), Ok(Some(i64::MAX)));
    }

    #[test]
    fn anything_else_is_a_value_error_at_the_header() {
        let bad: [&[&[u8]]; 8] = [
            &[b"x"],
            &[b"-1"],
            &[b"+1"],
            &[b"1.5"],
            &[b"9223372036854775808"],
            &[b"\xff"],
            &[b"1 2"],
            &[b"1", b"2"],
        ];
        for values in bad {
            let problem = read(values).expect_err("refused");
            assert_eq!(problem.loc, ["header", "Last-Event-ID"], "{values:?}");
            assert_eq!(problem.kind, "value_error");
        }
    }
}
