//! Job dependencies: recording a submission's graph, releasing dependents
//! when a job finishes, and reading the graph around a job.
//!
//! A pending job with unfinished dependencies (`deps_waiting > 0`) has no
//! dispatch in the outbox. Every transaction that finishes a job calls
//! [`release`] (the one place: [`super::transition`] for single
//! transitions, and the set-based report path for its batch), which, one
//! level of the graph per pair of statements:
//! - decrements `deps_waiting` of the finished jobs' pending dependents
//!   (locked in id order; concurrent finishes of one dependent's
//!   dependencies are applied one after the other on its row, so exactly
//!   one transaction sees it reach 0);
//! - writes the dispatch of those that reached 0 (published exactly once,
//!   in the transaction that finished their last dependency);
//! - cancels those with a dependency that failed, was cancelled or timed
//!   out (unless `run_on_failure`), with an event naming it, and goes on
//!   with them as the next level's finished jobs (transitively);
//! - rewrites `waiting_for` of those still waiting.

use super::{enqueue_dispatch_many, from_row, job_columns, Submitted};
use crate::db::{Cached, DbError};
use crate::models::{Dependency, Job, NewJob};
use deadpool_postgres::GenericClient;
use orchestrator_shared::api::deps::{
    dependency_problem, GRAPH_DESCRIPTION_CHARS, MAX_GRAPH_DEPTH, MAX_GRAPH_NODES,
};
use orchestrator_shared::api::{GraphEdge, GraphNode, JobGraph};
use orchestrator_shared::{JobStatus, StateMachine};
use std::collections::{HashMap, HashSet};
use tokio_postgres::Row;
use uuid::Uuid;

/// Most edges `graph` lists among the jobs it shows.
const MAX_GRAPH_EDGES: i64 = 10_000;

/// The statement of one level of [`release`]: `$1` the finished jobs,
/// `$finished` an extra condition on them, `$among` an extra condition on
/// the dependents considered. Answers each pending dependent touched with
/// its remaining count, its `run_on_failure`, and the first of the
/// finished dependencies that did not complete (with its status), if any.
macro_rules! release_sql {
    ($finished:literal, $among:literal) => {
        concat!(
            "WITH f AS (SELECT job_id, status FROM jobs WHERE job_id = ANY($1)
                          AND (status IN ('completed', 'failed', 'cancelled', 'timed_out')) IS TRUE",
            $finished,
            "),
                  d AS (SELECT e.job_id, count(*)::int AS n,
                               (array_agg(f.job_id ORDER BY f.job_id) FILTER (WHERE f.status <> 'completed'))[1] AS bad_dep,
                               (array_agg(f.status ORDER BY f.job_id) FILTER (WHERE f.status <> 'completed'))[1] AS bad_status
                        FROM job_dependencies e JOIN f ON f.job_id = e.depends_on ",
            $among,
            " GROUP BY e.job_id),
                  l AS (SELECT j.job_id, d.n, d.bad_dep, d.bad_status FROM jobs j JOIN d ON d.job_id = j.job_id
                        WHERE (j.status = 'pending') IS TRUE AND j.deps_waiting > 0
                        ORDER BY j.job_id FOR NO KEY UPDATE OF j),
                  u AS (UPDATE jobs j SET deps_waiting = greatest(j.deps_waiting - l.n, 0)
                        FROM l
                        WHERE j.job_id = l.job_id AND j.status = 'pending' AND j.deps_waiting > 0
                        RETURNING j.job_id, j.deps_waiting, j.run_on_failure, l.bad_dep, l.bad_status)
             SELECT job_id, deps_waiting, run_on_failure, bad_dep, bad_status FROM u"
        )
    };
}

/// Releases the dependents of `finished` (jobs that reached a final status
/// in the caller's transaction; others in the list are ignored), and
/// theirs in turn when they are cancelled. See the module's doc.
pub async fn release(client: &impl GenericClient, finished: &[Uuid]) -> Result<(), DbError> {
    release_from(client, finished.to_vec(), None).await
}

/// [`release`]'s first level for jobs this very transaction finished, to
/// be sent in one round trip with the statement that finished them (which
/// cannot say itself whether they have dependents: its snapshot predates
/// any lock it waited for, and a dependent submitted meanwhile would be
/// missed). `$1` may name other jobs too (reports of jobs finished
/// earlier): only rows whose current version this transaction wrote count
/// (`xmin`; the transaction has no savepoint). Hand its rows to
/// [`release_rows`].
pub const RELEASE_FINISHED_HERE: &str = release_sql!(" AND xmin = pg_current_xact_id_if_assigned()::xid", "");

/// [`release`] from a first level already read with
/// [`RELEASE_FINISHED_HERE`]: the same steps for its rows, then for the
/// levels below. Answers whether it touched a dependent (and so may have
/// written its dispatch to the outbox): the caller then wakes the relay
/// after its commit, or the dependent would wait for the relay's poll.
pub async fn release_rows(client: &impl GenericClient, first: &[Row]) -> Result<bool, DbError> {
    let next = release_level(client, first).await?;
    release_from(client, next, None).await?;
    Ok(!first.is_empty())
}

/// [`release`], its first level limited to the dependents in `among`.
async fn release_from(
    client: &impl GenericClient,
    finished: Vec<Uuid>,
    among: Option<&[Uuid]>,
) -> Result<(), DbError> {
    const ALL: &str = release_sql!("", "");
    const AMONG: &str = release_sql!("", "WHERE e.job_id = ANY($2)");
    let mut level = finished;
    let mut among = among;
    while !level.is_empty() {
        let rows = match among.take() {
            Some(among) => client.rows(AMONG, &[&level, &among]).await?,
            None => client.rows(ALL, &[&level]).await?,
        };
        level = release_level(client, &rows).await?;
    }
    Ok(())
}

/// Applies one level's rows (see [`release_sql`]): publishes the dependents
/// that are ready, describes those still waiting, cancels those a failed
/// dependency dooms, and answers the cancelled ones (the next level).
async fn release_level(client: &impl GenericClient, rows: &[Row]) -> Result<Vec<Uuid>, DbError> {
    let mut ready = Vec::new();
    let mut waiting = Vec::new();
    let mut cancel: Vec<(Uuid, String)> = Vec::new();
    for row in rows {
        let job_id: Uuid = row.try_get(0)?;
        let left: i32 = row.try_get(1)?;
        let run_on_failure: bool = row.try_get(2)?;
        let bad: Option<Uuid> = row.try_get(3)?;
        let bad_status: Option<String> = row.try_get(4)?;
        match (bad, bad_status) {
            (Some(dep), Some(status)) if !run_on_failure => {
                cancel.push((job_id, format!("dependency {dep} ended {status}")));
            }
            _ if left == 0 => ready.push(job_id),
            _ => waiting.push(job_id),
        }
    }
    publish(client, &ready).await?;
    describe_waiting(client, &waiting).await?;
    cancel_dependents(client, &cancel).await
}

/// Writes the dispatch of `ready` (pending jobs whose last dependency just
/// finished) and clears their `waiting_for`.
async fn publish(client: &impl GenericClient, ready: &[Uuid]) -> Result<(), DbError> {
    const SQL: &str = concat!(
        "UPDATE jobs j SET waiting_for = NULL WHERE j.job_id = ANY($1) AND (j.status = 'pending') IS TRUE
         RETURNING ",
        job_columns!()
    );
    if ready.is_empty() {
        return Ok(());
    }
    let jobs: Vec<Job> = client
        .rows(SQL, &[&ready])
        .await?
        .iter()
        .map(from_row)
        .collect::<Result<_, _>>()?;
    let refs: Vec<&Job> = jobs.iter().collect();
    enqueue_dispatch_many(client, &refs, 0).await
}

/// Sets `waiting_for` of pending jobs still waiting for dependencies: how
/// many of how many, and the first five unfinished ones by id (bounded
/// length, whatever the fan-in).
async fn describe_waiting(client: &impl GenericClient, waiting: &[Uuid]) -> Result<(), DbError> {
    if waiting.is_empty() {
        return Ok(());
    }
    client
        .exec(
            "WITH w AS (SELECT e.job_id, count(*) AS total,
                               (array_agg(e.depends_on ORDER BY e.depends_on)
                                  FILTER (WHERE (d.status IN ('completed', 'failed', 'cancelled', 'timed_out')) IS NOT TRUE))[1:5]
                                 AS open
                        FROM job_dependencies e JOIN jobs d ON d.job_id = e.depends_on
                        WHERE e.job_id = ANY($1) GROUP BY e.job_id)
             UPDATE jobs j SET waiting_for = format('waiting for %s of %s dependencies: %s%s',
                     j.deps_waiting, w.total, array_to_string(w.open, ', '),
                     CASE WHEN j.deps_waiting > coalesce(cardinality(w.open), 0)
                          THEN format(' and %s more', j.deps_waiting - coalesce(cardinality(w.open), 0)) ELSE '' END)
             FROM w WHERE j.job_id = w.job_id AND (j.status = 'pending') IS TRUE AND j.deps_waiting > 0",
            &[&waiting],
        )
        .await?;
    Ok(())
}

/// Cancels pending dependents, each with its reason in its event row (and
/// as its `error`), in one statement; answers those it cancelled.
async fn cancel_dependents(
    client: &impl GenericClient,
    cancel: &[(Uuid, String)],
) -> Result<Vec<Uuid>, DbError> {
    if cancel.is_empty() {
        return Ok(Vec::new());
    }
    JobStatus::Pending.transition(JobStatus::Cancelled)?;
    let ids: Vec<Uuid> = cancel.iter().map(|(id, _)| *id).collect();
    let reasons: Vec<&str> = cancel.iter().map(|(_, r)| r.as_str()).collect();
    let rows = client
        .rows(
            "WITH c AS (SELECT * FROM unnest($1::uuid[], $2::text[]) AS c(job_id, reason)),
                  j AS (UPDATE jobs SET status = 'cancelled', finished_at = now(), waiting_for = NULL,
                               error = c.reason
                        FROM c WHERE jobs.job_id = c.job_id AND (jobs.status = 'pending') IS TRUE
                        RETURNING jobs.job_id, jobs.attempts, c.reason),
                  e AS (INSERT INTO job_events (job_id, from_status, to_status, reason, attempt)
                        SELECT job_id, 'pending', 'cancelled', reason, attempts FROM j)
             SELECT job_id FROM j",
            &[&ids, &reasons],
        )
        .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// One edge of a submission: dependent, dependency, and where the
/// dependency was named (for a 422).
struct Edge {
    job_id: Uuid,
    depends_on: Uuid,
    at: (usize, usize),
}

/// The edges of the jobs this submission created (`out[i].created`), each
/// batch reference turned into its job's id (an idempotent replay's too).
fn edges(news: &[NewJob], out: &[Submitted]) -> Result<Vec<Edge>, DbError> {
    let mut edges = Vec::new();
    // Two names may mean one job (a key, and the id of the earlier job its
    // entry replayed): one edge.
    let mut seen = HashSet::new();
    for (i, (new, sub)) in news.iter().zip(out).enumerate() {
        if !sub.created {
            continue;
        }
        for (k, dep) in new.depends_on.iter().enumerate() {
            let depends_on = match dep {
                Dependency::Job(id) => *id,
                Dependency::Batch(b) => out
                    .get(*b)
                    .map(|s| s.job.job_id)
                    .ok_or_else(|| DbError::Invariant(format!("batch reference {b} out of range")))?,
            };
            if seen.insert((sub.job.job_id, depends_on)) {
                edges.push(Edge {
                    job_id: sub.job.job_id,
                    depends_on,
                    at: (i, k),
                });
            }
        }
    }
    Ok(edges)
}

/// Records the dependencies of the jobs this submission created (all in
/// the caller's transaction, after they were inserted): refuses a
/// dependency that is not one of `user_id`'s jobs (422, located), locks the
/// ones submitted earlier (`FOR SHARE`, so none of them can finish unseen
/// between this check and the commit), writes the edges and counts, and
/// releases at once what already finished dependencies allow (a completed
/// one counts as done; a failed one cancels the dependent, unless it runs
/// on failure). Answers the jobs with dependencies, read again (the
/// caller must not dispatch them: [`release`] does when their time comes).
pub async fn attach(
    client: &impl GenericClient,
    user_id: Uuid,
    news: &[NewJob],
    out: &[Submitted],
) -> Result<HashMap<Uuid, Job>, DbError> {
    let edges = edges(news, out)?;
    if edges.is_empty() {
        return Ok(HashMap::new());
    }
    let created: HashSet<Uuid> = out.iter().filter(|s| s.created).map(|s| s.job.job_id).collect();
    let finished = check_earlier(client, user_id, &edges, &created).await?;
    let dependents = write_edges(client, news, out, &edges).await?;
    release_from(client, finished, Some(dependents.as_slice())).await?;
    describe_waiting(client, &dependents).await?;
    const SQL: &str = concat!("SELECT ", job_columns!(), " FROM jobs j WHERE j.job_id = ANY($1)");
    client
        .rows(SQL, &[&dependents])
        .await?
        .iter()
        .map(|row| from_row(row).map(|job| (job.job_id, job)))
        .collect()
}

/// Checks and locks the dependencies submitted before this submission;
/// answers those already finished. Unknown ids and other users' jobs are
/// the same 422 (ids do not leak).
async fn check_earlier(
    client: &impl GenericClient,
    user_id: Uuid,
    edges: &[Edge],
    created: &HashSet<Uuid>,
) -> Result<Vec<Uuid>, DbError> {
    let earlier: Vec<Uuid> = edges
        .iter()
        .map(|e| e.depends_on)
        .filter(|id| !created.contains(id))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if earlier.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client
        .rows(
            "SELECT job_id, status FROM jobs WHERE job_id = ANY($1) AND submitted_by = $2
             ORDER BY job_id FOR SHARE",
            &[&earlier, &user_id],
        )
        .await?;
    let mut known = HashSet::new();
    let mut finished = Vec::new();
    for row in &rows {
        let id: Uuid = row.try_get(0)?;
        let status: String = row.try_get(1)?;
        if status.parse::<JobStatus>()?.is_terminal() {
            finished.push(id);
        }
        known.insert(id);
    }
    let problems: Vec<_> = edges
        .iter()
        .filter(|e| !created.contains(&e.depends_on) && !known.contains(&e.depends_on))
        .map(|e| dependency_problem(e.at.0, e.at.1, "is not a job of yours"))
        .collect();
    if problems.is_empty() {
        Ok(finished)
    } else {
        Err(DbError::InvalidDependencies(problems))
    }
}

/// Inserts the edges and sets each dependent's count (every dependency
/// counted unfinished; [`release_from`] then counts off the finished ones)
/// and `run_on_failure`, in one statement. Answers the dependents.
async fn write_edges(
    client: &impl GenericClient,
    news: &[NewJob],
    out: &[Submitted],
    edges: &[Edge],
) -> Result<Vec<Uuid>, DbError> {
    let from: Vec<Uuid> = edges.iter().map(|e| e.job_id).collect();
    let to: Vec<Uuid> = edges.iter().map(|e| e.depends_on).collect();
    let run_on_failure: Vec<Uuid> = news
        .iter()
        .zip(out)
        .filter(|(n, s)| s.created && n.run_on_failure && !n.depends_on.is_empty())
        .map(|(_, s)| s.job.job_id)
        .collect();
    let rows = client
        .rows(
            "WITH e AS (INSERT INTO job_dependencies (job_id, depends_on)
                        SELECT * FROM unnest($1::uuid[], $2::uuid[]) RETURNING job_id),
                  n AS (SELECT job_id, count(*)::int AS n FROM e GROUP BY job_id)
             UPDATE jobs SET deps_waiting = n.n, run_on_failure = jobs.job_id = ANY($3)
             FROM n WHERE jobs.job_id = n.job_id RETURNING jobs.job_id",
            &[&from, &to, &run_on_failure],
        )
        .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// The graph around `root` (see [`JobGraph`]): breadth-first, one
/// statement per level and direction, at most [`MAX_GRAPH_DEPTH`] levels
/// and [`MAX_GRAPH_NODES`] jobs each way, then one statement for the jobs
/// and one for the edges among them (at most 10,000).
pub async fn graph(client: &impl GenericClient, root: Uuid) -> Result<JobGraph, DbError> {
    let (up, up_cut) = walk(client, root, Direction::Up).await?;
    let (down, down_cut) = walk(client, root, Direction::Down).await?;
    let mut ids: Vec<Uuid> = vec![root];
    ids.extend(up.iter().map(|(id, _)| *id));
    ids.extend(down.iter().map(|(id, _)| *id));
    let mut nodes = nodes(client, &ids).await?;
    let mut take = |(id, depth): &(Uuid, i32)| {
        nodes.remove(id).map(|mut n| {
            n.depth = *depth;
            n
        })
    };
    let job = take(&(root, 0)).ok_or_else(|| super::not_found(root))?;
    let upstream: Vec<GraphNode> = up.iter().filter_map(&mut take).collect();
    let downstream: Vec<GraphNode> = down.iter().filter_map(&mut take).collect();
    let rows = client
        .rows(
            "SELECT job_id, depends_on FROM job_dependencies
             WHERE job_id = ANY($1) AND depends_on = ANY($1) ORDER BY job_id, depends_on LIMIT $2",
            &[&ids, &(MAX_GRAPH_EDGES + 1)],
        )
        .await?;
    let mut edges: Vec<GraphEdge> = rows
        .iter()
        .map(|r| {
            Ok(GraphEdge {
                job_id: r.try_get(0)?,
                depends_on: r.try_get(1)?,
            })
        })
        .collect::<Result<_, DbError>>()?;
    let edges_cut = edges.len() > usize::try_from(MAX_GRAPH_EDGES).unwrap_or(usize::MAX);
    edges.truncate(usize::try_from(MAX_GRAPH_EDGES).unwrap_or(usize::MAX));
    Ok(JobGraph {
        job,
        upstream,
        downstream,
        edges,
        truncated: up_cut || down_cut || edges_cut,
    })
}

/// Which way [`walk`] follows the edges.
#[derive(Clone, Copy)]
enum Direction {
    /// To the jobs a job depends on.
    Up,
    /// To the jobs that depend on it.
    Down,
}

/// The jobs reached from `root` one way, each with its distance, nearest
/// first; and whether a bound cut the walk short.
async fn walk(
    client: &impl GenericClient,
    root: Uuid,
    way: Direction,
) -> Result<(Vec<(Uuid, i32)>, bool), DbError> {
    let sql = match way {
        Direction::Up => {
            "SELECT DISTINCT depends_on FROM job_dependencies WHERE job_id = ANY($1) ORDER BY 1 LIMIT $2"
        }
        Direction::Down => {
            "SELECT DISTINCT job_id FROM job_dependencies WHERE depends_on = ANY($1) ORDER BY 1 LIMIT $2"
        }
    };
    let mut seen: HashSet<Uuid> = HashSet::from([root]);
    let mut found: Vec<(Uuid, i32)> = Vec::new();
    let mut frontier = vec![root];
    for depth in 1..=MAX_GRAPH_DEPTH + 1 {
        if frontier.is_empty() {
            return Ok((found, false));
        }
        let room = MAX_GRAPH_NODES - found.len();
        // Enough to fill the room even if every one listed is already seen
        // (a job reached by two paths), plus one to tell that more exist.
        let limit = i64::try_from(room + seen.len() + 1).unwrap_or(i64::MAX);
        let rows = client.rows(sql, &[&frontier, &limit]).await?;
        let next: Vec<Uuid> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<Vec<Uuid>, _>>()?
            .into_iter()
            .filter(|id| seen.insert(*id))
            .collect();
        if depth > MAX_GRAPH_DEPTH || next.len() > room {
            let fits = if depth > MAX_GRAPH_DEPTH { 0 } else { room };
            let depth = i32::try_from(depth).unwrap_or(i32::MAX);
            found.extend(next.iter().take(fits).map(|id| (*id, depth)));
            return Ok((found, !next.is_empty()));
        }
        let at = i32::try_from(depth).unwrap_or(i32::MAX);
        found.extend(next.iter().map(|id| (*id, at)));
        frontier = next;
    }
    Ok((found, false))
}

/// The graph nodes of `ids` (depth 0; the caller sets it).
async fn nodes(client: &impl GenericClient, ids: &[Uuid]) -> Result<HashMap<Uuid, GraphNode>, DbError> {
    let chars = i32::try_from(GRAPH_DESCRIPTION_CHARS).unwrap_or(i32::MAX);
    let rows = client
        .rows(
            "SELECT job_id, status, left(task_description, $2), labels, run_on_failure, waiting_for
             FROM jobs WHERE job_id = ANY($1)",
            &[&ids, &chars],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let node = GraphNode {
                job_id: r.try_get(0)?,
                status: crate::db::parse_status(r, "status")?,
                task_description: r.try_get(2)?,
                labels: crate::db::parse_json(r, "labels")?,
                depth: 0,
                run_on_failure: r.try_get(4)?,
                waiting_for: r.try_get(5)?,
            };
            Ok((node.job_id, node))
        })
        .collect()
}
