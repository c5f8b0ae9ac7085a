//! After the soak: drain, check every job, and print the tables.
//!
//! Checks: each job ended in the status its kind implies; no job completed
//! twice; no two attempts of one shard ran at once on two agents; no
//! dispatch left unsent; no agent left busy with nothing to run.

use super::faults::{self, Fault, Injected};
use super::kinds::{self, Kind};
use super::Submitted;
use chrono::{DateTime, Utc};
use integration_tests::multihost::{Deployment, Leftovers};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// What the database says of one job at the end.
struct Ended {
    status: String,
    last_reason: String,
    submitted: DateTime<Utc>,
    first_start: Option<DateTime<Utc>>,
    completions: i64,
}

/// A job's wait counts against the last fault injected at most this long
/// before its submission.
const ATTRIBUTION: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Drains, checks, prints; whether every check passed.
pub async fn report(
    d: &Deployment,
    jobs: &[Submitted],
    injected: &[Injected],
    ran: Duration,
) -> anyhow::Result<bool> {
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    d.wait_all_ended(&ids).await?;
    let ended = read_ended(d, &ids).await?;
    let leftovers = d.settled_leftovers().await?;
    println!(
        "\nchaos soak: {} jobs over {:.0} s",
        jobs.len(),
        ran.as_secs_f64()
    );
    let wrong = print_kinds(jobs, &ended);
    print_faults(d, jobs, &ended, injected).await?;
    let twice = ended.values().filter(|e| e.completions > 1).count();
    let checks = [
        (
            "every job ended as its kind implies",
            wrong == 0,
            format!("{wrong} did not"),
        ),
        ("no job completed twice", twice == 0, format!("{twice} did")),
        (
            "no shard ran on two agents at once",
            leftovers.overlapping_attempts == 0,
            format!("{} overlapping attempts", leftovers.overlapping_attempts),
        ),
        (
            "no dispatch left unsent",
            leftovers.unsent_dispatches == 0,
            format!("{} unsent", leftovers.unsent_dispatches),
        ),
        (
            "no agent stuck busy",
            leftovers.busy_with_nothing == 0,
            format!("{} busy with nothing", leftovers.busy_with_nothing),
        ),
    ];
    println!("\n| check | result |\n|---|---|");
    for (what, ok, detail) in &checks {
        println!(
            "| {what} | {} |",
            if *ok {
                "ok".to_owned()
            } else {
                format!("FAILED: {detail}")
            }
        );
    }
    Ok(checks.iter().all(|(_, ok, _)| *ok) && leftovers == Leftovers::default())
}

async fn read_ended(d: &Deployment, ids: &[String]) -> anyhow::Result<HashMap<String, Ended>> {
    let uuids: Vec<uuid::Uuid> = ids.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    let rows = d
        .db()
        .await?
        .query(
            "SELECT j.job_id::text, j.status, j.created_at,
                    (SELECT coalesce(reason, '') FROM job_events e WHERE e.job_id = j.job_id
                     ORDER BY event_id DESC LIMIT 1),
                    (SELECT min(at) FROM job_events e WHERE e.job_id = j.job_id AND to_status = 'running'),
                    (SELECT count(*) FROM job_events e WHERE e.job_id = j.job_id AND to_status = 'completed')
             FROM jobs j WHERE j.job_id = ANY($1)",
            &[&uuids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let ended = Ended {
                status: r.get(1),
                submitted: r.get(2),
                last_reason: r.get::<_, Option<String>>(3).unwrap_or_default(),
                first_start: r.get(4),
                completions: r.get(5),
            };
            (r.get::<_, String>(0), ended)
        })
        .collect())
}

/// Jobs by kind and final status; how many ended otherwise than implied.
fn print_kinds(jobs: &[Submitted], ended: &HashMap<String, Ended>) -> usize {
    let mut table: BTreeMap<Kind, BTreeMap<String, usize>> = BTreeMap::new();
    let mut wrong = 0;
    for job in jobs {
        let (status, ok) = match ended.get(&job.id) {
            Some(e) => (e.status.clone(), job.kind.accepts(&e.status, &e.last_reason)),
            None => ("missing".to_owned(), false),
        };
        if !ok {
            wrong += 1;
            eprintln!("soak: job {} ({}) ended {status}", job.id, job.kind.name());
        }
        *table.entry(job.kind).or_default().entry(status).or_default() += 1;
    }
    println!("\n| kind | jobs | final statuses |\n|---|---|---|");
    for kind in kinds::ALL {
        let statuses = table.remove(&kind).unwrap_or_default();
        let total: usize = statuses.values().sum();
        let shown: Vec<String> = statuses.iter().map(|(s, n)| format!("{s} {n}")).collect();
        println!("| {} | {total} | {} |", kind.name(), shown.join(", "));
    }
    wrong
}

/// Faults by kind: how many, the longest submit→start wait of a job
/// submitted within a minute after one, and the recovery time (from the
/// fault to the next job completed), longest and median.
async fn print_faults(
    d: &Deployment,
    jobs: &[Submitted],
    ended: &HashMap<String, Ended>,
    injected: &[Injected],
) -> anyhow::Result<()> {
    let db = d.db().await?;
    let mut recovery: BTreeMap<Fault, Vec<f64>> = BTreeMap::new();
    for one in injected {
        let next: Option<DateTime<Utc>> = db
            .query_one(
                "SELECT min(finished_at) FROM jobs WHERE status = 'completed' AND finished_at > $1",
                &[&one.at],
            )
            .await?
            .get(0);
        let seconds = next.map_or(f64::NAN, |t| (t - one.at).as_seconds_f64());
        recovery.entry(one.fault).or_default().push(seconds);
    }
    let waits = longest_waits(jobs, ended, injected);
    println!("\n| fault | injected | longest wait to start after it | recovery to the next completion: longest / median |");
    println!("|---|---|---|---|");
    for fault in faults::ALL {
        let mut times = recovery.remove(&fault).unwrap_or_default();
        times.sort_by(f64::total_cmp);
        let (longest, median) = match times.len() {
            0 => ("-".to_owned(), "-".to_owned()),
            n => (format!("{:.1} s", times[n - 1]), format!("{:.1} s", times[n / 2])),
        };
        let wait = waits.get(&fault).map_or("-".to_owned(), |w| format!("{w:.1} s"));
        println!(
            "| {} | {} | {wait} | {longest} / {median} |",
            fault.name(),
            times.len()
        );
    }
    Ok(())
}

/// For each fault kind, the longest submit→first-start wait of a job
/// submitted within [`ATTRIBUTION`] after an injection of that kind (and
/// before the next injection).
fn longest_waits(
    jobs: &[Submitted],
    ended: &HashMap<String, Ended>,
    injected: &[Injected],
) -> BTreeMap<Fault, f64> {
    let mut waits: BTreeMap<Fault, f64> = BTreeMap::new();
    for e in jobs.iter().filter_map(|j| ended.get(&j.id)) {
        let Some(start) = e.first_start else { continue };
        let last = injected
            .iter()
            .filter(|i| i.at <= e.submitted && e.submitted - i.at <= ATTRIBUTION)
            .max_by_key(|i| i.at);
        if let Some(fault) = last {
            let wait = (start - e.submitted).as_seconds_f64();
            let longest = waits.entry(fault.fault).or_insert(0.0);
            *longest = longest.max(wait);
        }
    }
    waits
}
