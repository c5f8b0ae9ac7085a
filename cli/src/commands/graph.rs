//! `graph`: a job's dependencies (upstream) and dependents (downstream),
//! each printed as a tree from the job.

use super::Ctx;
use crate::client::Answer;
use anyhow::Result;
use orchestrator_shared::api::{GraphNode, JobGraph};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// `GET /api/jobs/{id}/graph`.
pub async fn graph(ctx: &Ctx, job_id: Uuid) -> Result<()> {
    let path = ["api", "jobs", &job_id.to_string(), "graph"];
    let graph: Answer<JobGraph> = ctx.client.get(&path).await?;
    ctx.out.show(&graph, render)
}

/// The graph as two trees around the job: what it waits for, then what
/// waits for it. A job reached by a second path is named again with
/// "(shown above)" instead of its subtree, so a diamond prints once.
pub fn render(graph: &JobGraph) -> String {
    let nodes: HashMap<Uuid, &GraphNode> = graph
        .upstream
        .iter()
        .chain(&graph.downstream)
        .chain(std::iter::once(&graph.job))
        .map(|n| (n.job_id, n))
        .collect();
    let mut up: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    let mut down: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for e in &graph.edges {
        up.entry(e.job_id).or_default().push(e.depends_on);
        down.entry(e.depends_on).or_default().push(e.job_id);
    }
    let mut lines = vec![line(&graph.job)];
    for (title, links) in [("waits for:", &up), ("waited for by:", &down)] {
        let mut tree = Tree {
            nodes: &nodes,
            links,
            seen: HashSet::from([graph.job.job_id]),
            lines: Vec::new(),
        };
        tree.children(graph.job.job_id, "");
        if !tree.lines.is_empty() {
            lines.push(title.to_owned());
            lines.extend(tree.lines);
        }
    }
    if graph.truncated {
        lines.push(
            "(more jobs exist than shown: the graph was cut at 50 levels or 500 jobs each way)".to_owned(),
        );
    }
    lines.join("\n")
}

/// One job as a line: id, status, description, and why it waits.
fn line(node: &GraphNode) -> String {
    let mut text = format!(
        "{} {} {}",
        node.job_id,
        node.status,
        first_line(&node.task_description)
    );
    if node.run_on_failure {
        text.push_str(" [runs on failure]");
    }
    if let Some(why) = &node.waiting_for {
        text.push_str(&format!(" ({why})"));
    }
    text
}

/// The first line of a description, so each job keeps to one line.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// A tree being printed one way.
struct Tree<'a> {
    nodes: &'a HashMap<Uuid, &'a GraphNode>,
    links: &'a HashMap<Uuid, Vec<Uuid>>,
    seen: HashSet<Uuid>,
    lines: Vec<String>,
}

impl Tree<'_> {
    /// Prints the jobs linked to `id` (those listed), each under `prefix`.
    fn children(&mut self, id: Uuid, prefix: &str) {
        let mut kids: Vec<Uuid> = self
            .links
            .get(&id)
            .map(|k| k.iter().copied().filter(|k| self.nodes.contains_key(k)).collect())
            .unwrap_or_default();
        kids.sort_unstable();
        let count = kids.len();
        for (i, kid) in kids.into_iter().enumerate() {
            let last = i + 1 == count;
            let (branch, more) = if last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            let Some(node) = self.nodes.get(&kid) else {
                continue;
            };
            if !self.seen.insert(kid) {
                self.lines.push(format!("{prefix}{branch}{kid} (shown above)"));
                continue;
            }
            self.lines.push(format!("{prefix}{branch}{}", line(node)));
            self.children(kid, &format!("{prefix}{more}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_shared::api::GraphEdge;
    use orchestrator_shared::JobStatus;

    fn node(n: u128, depth: i32) -> GraphNode {
        GraphNode {
            job_id: Uuid::from_u128(n),
            status: JobStatus::Pending,
            task_description: format!("job {n}\nmore"),
            labels: Default::default(),
            depth,
            run_on_failure: false,
            waiting_for: None,
        }
    }

    fn edge(from: u128, to: u128) -> GraphEdge {
        GraphEdge {
            job_id: Uuid::from_u128(from),
            depends_on: Uuid::from_u128(to),
        }
    }

    #[test]
    fn a_diamond_prints_its_shared_job_once() {
        // 1 -> 2, 3 -> 4: seen from 1, downstream only.
        let graph = JobGraph {
            job: node(1, 0),
            upstream: vec![],
            downstream: vec![node(2, 1), node(3, 1), node(4, 2)],
            edges: vec![edge(2, 1), edge(3, 1), edge(4, 2), edge(4, 3)],
            truncated: false,
        };
        let text = render(&graph);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "waited for by:");
        assert!(
            lines[2].starts_with("├─ 00000000-0000-0000-0000-000000000002 pending job 2"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("│  └─ 00000000-0000-0000-0000-000000000004"),
            "{text}"
        );
        assert!(lines[5].ends_with("000000000004 (shown above)"), "{text}");
        assert_eq!(lines.len(), 6, "{text}");
    }
}
