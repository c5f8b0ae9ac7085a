//! Job dependencies: what `depends_on` may name (a job id, or in a batch
//! the `key` of another job of the same batch), the one resolution of those
//! names, the cycle check (pure, so the client checks a graph before it
//! sends it and the server refuses it before it touches Postgres), and the
//! shape of `GET /api/jobs/{job_id}/graph`.

use super::error::{check_no_nul, FieldError};
use super::jobs::SubmitRequest;
use crate::JobStatus;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;

/// Most dependencies of one job: a fan-in of a whole largest batch.
pub const MAX_DEPENDS_ON: usize = 10_000;
/// Longest batch key, in characters.
pub const MAX_KEY: usize = 128;
/// Deepest level `GET /api/jobs/{job_id}/graph` follows in each direction.
pub const MAX_GRAPH_DEPTH: usize = 50;
/// Most jobs `GET /api/jobs/{job_id}/graph` lists in each direction (a
/// fan-out of 10,000 is answered with its first 500 and `truncated`).
pub const MAX_GRAPH_NODES: usize = 500;
/// Longest task description a graph node carries, in characters (enough to
/// tell jobs apart in a tree; the job itself has the whole text).
pub const GRAPH_DESCRIPTION_CHARS: usize = 200;

/// One resolved entry of a job's `depends_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dependency {
    /// A job submitted earlier (the submitter's own).
    Job(Uuid),
    /// The job at this index of the same batch.
    Batch(usize),
}

/// The rules of one submission's own dependency fields, located at
/// `["body", ...]`: at most [`MAX_DEPENDS_ON`] entries, each non-empty and
/// without NUL, none twice; a `key` of 1 to [`MAX_KEY`] characters, no NUL,
/// that is not itself a job id (so a name never means two things).
pub(crate) fn check_fields(errors: &mut Vec<FieldError>, req: &SubmitRequest) {
    let deps = &req.depends_on;
    if deps.len() > MAX_DEPENDS_ON {
        errors.push(FieldError::body(
            "depends_on",
            format!("at most {MAX_DEPENDS_ON} dependencies"),
        ));
    }
    let mut seen = HashMap::new();
    for (i, name) in deps.iter().enumerate() {
        let at = |msg: &str| located(&["depends_on", &i.to_string()], msg);
        if name.is_empty() || name.chars().count() > MAX_KEY {
            errors.push(at("must be a job id or a key of this batch"));
        } else if name.contains('\0') {
            errors.push(at(super::error::NO_NUL));
        } else if let Some(first) = seen.insert(name.as_str(), i) {
            errors.push(at(&format!("names the same job as depends_on[{first}]")));
        }
    }
    if let Some(key) = &req.key {
        let n = key.chars().count();
        if n == 0 || n > MAX_KEY || Uuid::parse_str(key).is_ok() {
            errors.push(FieldError::body(
                "key",
                format!("must be 1 to {MAX_KEY} characters and not a job id"),
            ));
        }
        check_no_nul(errors, "key", [key.as_str()]);
    }
}

/// The 422 entry of dependency `dep` of batch job `job`
/// (`["body", "jobs", job, "depends_on", dep]`).
pub fn dependency_problem(job: usize, dep: usize, msg: &str) -> FieldError {
    located(&["jobs", &job.to_string(), "depends_on", &dep.to_string()], msg)
}

/// A `value_error` at `["body", path...]`.
fn located(path: &[&str], msg: &str) -> FieldError {
    let mut e = FieldError::body(path[0], msg);
    e.loc.extend(path[1..].iter().map(|p| (*p).to_owned()));
    e
}

/// Resolves a single submission's `depends_on`: every entry must be a job
/// id (keys name jobs of a batch only).
pub fn resolve_single(req: &SubmitRequest) -> Result<Vec<Dependency>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut out = Vec::with_capacity(req.depends_on.len());
    for (i, name) in req.depends_on.iter().enumerate() {
        match Uuid::parse_str(name) {
            Ok(id) => out.push(Dependency::Job(id)),
            Err(_) => errors.push(located(
                &["depends_on", &i.to_string()],
                "must be a job id (a key names a job of the same batch only)",
            )),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Resolves every `depends_on` of a batch: a name that is some job's `key`
/// in the batch is that job, else it must be a job id. Keys must be unique,
/// and the jobs of the batch must form no cycle (a job depending on itself
/// included). Problems are located at `["body", "jobs", i, ...]`.
pub fn resolve_batch(jobs: &[SubmitRequest]) -> Result<Vec<Vec<Dependency>>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut keys: HashMap<&str, usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        if let Some(key) = job.key.as_deref() {
            if let Some(first) = keys.insert(key, i) {
                errors.push(located(
                    &["jobs", &i.to_string(), "key"],
                    &format!("is also the key of jobs[{first}]"),
                ));
            }
        }
    }
    let mut resolved = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let mut deps = Vec::with_capacity(job.depends_on.len());
        for (k, name) in job.depends_on.iter().enumerate() {
            match (keys.get(name.as_str()), Uuid::parse_str(name)) {
                (Some(&at), _) => deps.push(Dependency::Batch(at)),
                (None, Ok(id)) => deps.push(Dependency::Job(id)),
                (None, Err(_)) => errors.push(dependency_problem(
                    i,
                    k,
                    "is neither the key of a job of this batch nor a job id",
                )),
            }
        }
        resolved.push(deps);
    }
    if errors.is_empty() {
        errors.extend(cycle_error(&resolved));
    }
    if errors.is_empty() {
        Ok(resolved)
    } else {
        Err(errors)
    }
}

/// The 422 of a cycle among `resolved`, located at the first edge of it.
fn cycle_error(resolved: &[Vec<Dependency>]) -> Option<FieldError> {
    let edges: Vec<Vec<usize>> = resolved
        .iter()
        .map(|deps| {
            deps.iter()
                .map(|d| match d {
                    Dependency::Batch(i) => *i,
                    Dependency::Job(_) => usize::MAX,
                })
                .collect()
        })
        .collect();
    let cycle = find_cycle(&edges)?;
    let (job, edge) = cycle[0];
    let path: Vec<String> = cycle.iter().map(|(j, _)| format!("jobs[{j}]")).collect();
    Some(dependency_problem(
        job,
        edge,
        &format!("forms a cycle: {} -> jobs[{job}]", path.join(" -> ")),
    ))
}

/// A cycle of the graph whose node `n` depends on the nodes `edges[n]`
/// (entries out of range are ignored: dependencies outside the graph), as
/// the (node, position in its `edges`) of each step, starting at the
/// lowest-numbered node on it; `None` when the graph is acyclic.
/// Iterative (a chain of 10,000 does not overflow the stack), linear time.
pub fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<(usize, usize)>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let n = edges.len();
    let mut mark = vec![Mark::New; n];
    for start in 0..n {
        if mark[start] != Mark::New {
            continue;
        }
        // The path being explored: (node, next edge position to try).
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::OnPath;
        while let Some(&mut (node, ref mut pos)) = path.last_mut() {
            let Some(&next) = edges[node].get(*pos) else {
                mark[node] = Mark::Done;
                path.pop();
                continue;
            };
            *pos += 1;
            if next >= n || mark[next] == Mark::Done {
                continue;
            }
            if mark[next] == Mark::OnPath {
                let from = path.iter().position(|(p, _)| *p == next).unwrap_or(0);
                let cycle: Vec<(usize, usize)> = path[from..].iter().map(|&(p, e)| (p, e - 1)).collect();
                let lowest = cycle
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, (p, _))| *p)
                    .map_or(0, |(i, _)| i);
                let mut rotated = cycle[lowest..].to_vec();
                rotated.extend_from_slice(&cycle[..lowest]);
                return Some(rotated);
            }
            mark[next] = Mark::OnPath;
            path.push((next, 0));
        }
    }
    None
}

/// `GET /api/jobs/{job_id}/graph`: the job, the jobs it waits for
/// (upstream) and the jobs that wait for it (downstream), each direction
/// followed breadth-first for at most [`MAX_GRAPH_DEPTH`] levels and
/// [`MAX_GRAPH_NODES`] jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobGraph {
    /// The job asked about.
    pub job: GraphNode,
    /// Jobs it depends on, directly (`depth` 1) or not, nearest first.
    pub upstream: Vec<GraphNode>,
    /// Jobs that depend on it, directly (`depth` 1) or not, nearest first.
    pub downstream: Vec<GraphNode>,
    /// Every dependency between the jobs listed.
    pub edges: Vec<GraphEdge>,
    /// Whether a bound cut the graph short (more jobs exist than listed).
    pub truncated: bool,
}

/// One job of a [`JobGraph`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GraphNode {
    /// The job.
    pub job_id: Uuid,
    /// Its status now.
    pub status: JobStatus,
    /// The first 200 characters of its task description.
    pub task_description: String,
    /// Its labels.
    pub labels: super::Labels,
    /// Levels from the job asked about (0 for itself).
    pub depth: i32,
    /// Whether it runs even if a dependency did not complete.
    pub run_on_failure: bool,
    /// Why it is not running yet, if it waits (see `Job.waiting_for`).
    pub waiting_for: Option<String>,
}

/// `job_id` depends on `depends_on`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GraphEdge {
    /// The dependent job.
    pub job_id: Uuid,
    /// The job it waits for.
    pub depends_on: Uuid,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn job(key: Option<&str>, deps: &[&str]) -> SubmitRequest {
        SubmitRequest {
            task_description: "x".into(),
            key: key.map(str::to_owned),
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            ..SubmitRequest::default()
        }
    }

    #[test]
    fn a_diamond_resolves_to_batch_indices_and_ids() {
        let id = Uuid::now_v7();
        let jobs = [
            job(Some("a"), &[]),
            job(Some("b"), &["a"]),
            job(Some("c"), &["a", &id.to_string()]),
            job(None, &["b", "c"]),
        ];
        let resolved = resolve_batch(&jobs).unwrap();
        assert_eq!(resolved[2], [Dependency::Batch(0), Dependency::Job(id)]);
        assert_eq!(resolved[3], [Dependency::Batch(1), Dependency::Batch(2)]);
    }

    #[test]
    fn a_cycle_is_located_at_its_first_edge() {
        let jobs = [
            job(Some("a"), &["c"]),
            job(Some("b"), &["a"]),
            job(Some("c"), &["b"]),
        ];
        let errors = resolve_batch(&jobs).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].location(), "body.jobs.0.depends_on.0");
        assert!(
            errors[0].msg.contains("jobs[0] -> jobs[2] -> jobs[1] -> jobs[0]"),
            "{}",
            errors[0].msg
        );
        let self_loop = [job(None, &[]), job(Some("me"), &["me"])];
        let errors = resolve_batch(&self_loop).unwrap_err();
        assert_eq!(errors[0].location(), "body.jobs.1.depends_on.0");
    }

    #[test]
    fn unknown_names_and_reused_keys_are_located() {
        let jobs = [job(Some("a"), &["nope"]), job(Some("a"), &[])];
        let locs: Vec<String> = resolve_batch(&jobs)
            .unwrap_err()
            .iter()
            .map(FieldError::location)
            .collect();
        assert_eq!(locs, ["body.jobs.1.key", "body.jobs.0.depends_on.0"]);
        let single = job(None, &["build"]);
        assert_eq!(
            resolve_single(&single).unwrap_err()[0].location(),
            "body.depends_on.0"
        );
    }

    #[test]
    fn own_fields_are_checked() {
        let mut errors = Vec::new();
        let id = Uuid::now_v7().to_string();
        check_fields(&mut errors, &job(Some(&id), &["a", "", "a"]));
        let locs: Vec<String> = errors.iter().map(FieldError::location).collect();
        assert_eq!(locs, ["body.depends_on.1", "body.depends_on.2", "body.key"]);
    }

    #[test]
    fn a_long_chain_is_acyclic_without_deep_recursion() {
        let edges: Vec<Vec<usize>> = (0..100_000)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        assert_eq!(find_cycle(&edges), None);
        let mut closed = edges;
        closed[0].push(99_999);
        assert_eq!(find_cycle(&closed).map(|c| c.len()), Some(100_000));
    }

    /// Whether `edges` has a cycle, by repeatedly removing nodes with no
    /// remaining dependency inside the graph (Kahn): a second algorithm to
    /// check the first against.
    fn has_cycle_kahn(edges: &[Vec<usize>]) -> bool {
        let n = edges.len();
        let mut removed = vec![false; n];
        loop {
            let free: Vec<usize> = (0..n)
                .filter(|&i| !removed[i] && edges[i].iter().all(|&d| d >= n || removed[d]))
                .collect();
            if free.is_empty() {
                return removed.iter().any(|r| !r);
            }
            free.into_iter().for_each(|i| removed[i] = true);
        }
    }

    proptest! {
        #[test]
        fn a_cycle_is_found_exactly_when_there_is_one(
            edges in proptest::collection::vec(proptest::collection::vec(0usize..14, 0..4), 0..12)
        ) {
            let found = find_cycle(&edges);
            prop_assert_eq!(found.is_some(), has_cycle_kahn(&edges));
            if let Some(cycle) = found {
                // Each step's edge leads to the next step's node, and the
                // last back to the first.
                for (i, &(node, edge)) in cycle.iter().enumerate() {
                    let next = cycle[(i + 1) % cycle.len()].0;
                    prop_assert_eq!(edges[node][edge], next);
                }
            }
        }
    }
}
