//! Waiting for a job to end: poll, report, stop at a terminal status, a
//! deadline, a 4xx answer, or a long outage.

use crate::client::Answer;
use crate::error::is_transient;
use anyhow::{anyhow, Result};
use indicatif::{ProgressBar, ProgressStyle};
use orchestrator_shared::api::Job;
use orchestrator_shared::JobStatus;
use std::future::Future;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

/// Time between two polls: short jobs feel instant, and four requests a
/// second is no load for the controller.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How long polls may keep failing (network errors, 5xx) before giving up:
/// long enough to ride out a controller restart.
pub const MAX_OUTAGE: Duration = Duration::from_secs(60);

/// Spinner frame rate, independent of the polling.
const SPINNER_TICK: Duration = Duration::from_millis(100);

/// When to poll and when to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitPolicy {
    /// Time between polls.
    pub interval: Duration,
    /// Give up when the job has not ended after this long.
    pub timeout: Duration,
    /// Give up when polls have failed for this long in a row.
    pub max_outage: Duration,
}

/// What happened at one poll.
#[derive(Debug)]
pub enum Progress<'a> {
    /// The job's current status.
    Status(JobStatus),
    /// The poll failed in a way that may pass; polling goes on.
    Retrying(&'a anyhow::Error),
}

/// Calls `poll` (which fetches the job) until the job's status is terminal,
/// and returns the job. Fails at once on a 4xx answer or an answer not
/// understood, and after `policy.timeout` (the job keeps running) or
/// `policy.max_outage` of failures.
pub async fn wait_for_end<P, F>(
    policy: WaitPolicy,
    mut poll: P,
    mut report: impl FnMut(Progress<'_>),
) -> Result<Answer<Job>>
where
    P: FnMut() -> F,
    F: Future<Output = Result<Answer<Job>>>,
{
    let deadline = Instant::now() + policy.timeout;
    let mut failing_since: Option<Instant> = None;
    let mut last_status = None;
    loop {
        match poll().await {
            Ok(job) => {
                failing_since = None;
                let status = job.typed.status;
                last_status = Some(status);
                report(Progress::Status(status));
                if status.is_terminal() {
                    return Ok(job);
                }
            }
            Err(err) if !is_transient(&err) => return Err(err),
            Err(err) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= policy.max_outage {
                    return Err(err.context(format!("polling failed for {:?}", policy.max_outage)));
                }
                report(Progress::Retrying(&err));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            let secs = policy.timeout.as_secs();
            let last = last_status.map_or("unknown", JobStatus::as_str);
            return Err(anyhow!(
                "the job did not end within {secs} s (last status: {last})"
            ));
        }
        sleep_until((now + policy.interval).min(deadline)).await;
    }
}

/// A spinner on stderr (drawn only when stderr is a terminal).
pub fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar.enable_steady_tick(SPINNER_TICK);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Reply;
    use crate::error::{ApiError, UnexpectedAnswer};
    use crate::fixtures;
    use serde_json::json;
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;

    const POLICY: WaitPolicy = WaitPolicy {
        interval: Duration::from_millis(250),
        timeout: Duration::from_secs(1),
        max_outage: Duration::from_millis(600),
    };

    fn job(status: JobStatus) -> Result<Answer<Job>> {
        Ok(Answer {
            status: 200,
            raw: json!({"status": status.as_str()}),
            typed: fixtures::job(status),
        })
    }

    fn api_error(status: u16) -> Result<Answer<Job>> {
        Err(ApiError {
            status,
            detail: json!("x"),
            retry_after: None,
        }
        .into())
    }

    /// Runs the wait loop over scripted poll results (the last one repeats);
    /// returns the outcome, the number of polls and the statuses reported.
    async fn run(
        script: Vec<fn() -> Result<Answer<Job>>>,
        policy: WaitPolicy,
    ) -> (Result<Answer<Job>>, usize, Vec<String>) {
        let script = RefCell::new(VecDeque::from(script));
        let polls = Cell::new(0);
        let mut seen = Vec::new();
        let poll = || {
            polls.set(polls.get() + 1);
            let mut queue = script.borrow_mut();
            let next = if queue.len() > 1 {
                queue.pop_front()
            } else {
                queue.front().copied()
            };
            async move { next.map_or_else(|| job(JobStatus::Running), |make| make()) }
        };
        let report = |progress: Progress<'_>| match progress {
            Progress::Status(s) => seen.push(s.to_string()),
            Progress::Retrying(_) => seen.push("retrying".to_owned()),
        };
        let outcome = wait_for_end(policy, poll, report).await;
        (outcome, polls.get(), seen)
    }

    #[tokio::test(start_paused = true)]
    async fn returns_the_job_once_it_ends() {
        let start = Instant::now();
        let (outcome, polls, seen) = run(
            vec![|| job(JobStatus::Queued), || job(JobStatus::Running), || {
                job(JobStatus::Failed)
            }],
            POLICY,
        )
        .await;
        assert_eq!(outcome.ok().map(|j| j.typed.status), Some(JobStatus::Failed));
        assert_eq!(polls, 3);
        assert_eq!(seen, ["queued", "running", "failed"]);
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline() {
        let (outcome, polls, _) = run(vec![|| job(JobStatus::Running)], POLICY).await;
        let message = outcome.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(message, "the job did not end within 1 s (last status: running)");
        assert_eq!(polls, 5, "polls at 0, 250, 500, 750 and 1000 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures() {
        let script = vec![
            || job(JobStatus::Running),
            || api_error(503),
            || Err(anyhow!("refused")),
            || job(JobStatus::Completed),
        ];
        let (outcome, polls, seen) = run(script, POLICY).await;
        assert!(outcome.is_ok());
        assert_eq!(polls, 4);
        assert_eq!(seen, ["running", "retrying", "retrying", "completed"]);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_a_client_error() {
        let (outcome, polls, _) = run(vec![|| job(JobStatus::Running), || api_error(404)], POLICY).await;
        let status = outcome
            .err()
            .and_then(|e| e.downcast_ref::<ApiError>().map(|a| a.status));
        assert_eq!(status, Some(404));
        assert_eq!(polls, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_a_long_outage() {
        let policy = WaitPolicy {
            timeout: Duration::from_secs(3600),
            ..POLICY
        };
        let (outcome, polls, _) = run(vec![|| Err(anyhow!("refused"))], policy).await;
        let message = outcome.err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert_eq!(message, "polling failed for 600ms: refused");
        assert_eq!(polls, 4, "fails at 0, 250, 500 ms, gives up at 750 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_an_answer_not_understood() {
        let misread = || {
            Ok(Reply {
                status: 200,
                body: json!({"status": "running"}),
            }
            .read::<Job>()?)
        };
        let (outcome, polls, _) = run(vec![misread], POLICY).await;
        assert!(outcome.is_err_and(|e| e.is::<UnexpectedAnswer>()));
        assert_eq!(polls, 1, "no retry can fix a disagreement on the contract");
    }
}
