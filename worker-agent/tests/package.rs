//! The agent's Debian package (`deploy/package-agent.sh`): it installs into
//! a clean container of the runtime base image, creating its own user and
//! state directory; its hardened systemd unit passes `systemd-analyze
//! verify`; and the installed binary, started as the unit starts it with
//! the credential file `deploy/agent-join.sh` tells the operator to write,
//! joins a running cluster and runs a job.

use anyhow::{bail, ensure, Context};
use integration_tests::multihost::{docker, Deployment, WAIT};
use integration_tests::TEST_LABEL;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_worker-agent");
const RUNTIME_BASE: &str = "orchestrator-runtime-base:bookworm";
const UNIT: &str = "lib/systemd/system/orchestrator-agent.service";

/// The repository's root (this crate is one level below it).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh directory under the system's temporary directory.
fn scratch(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs a command, failing with its stderr if it fails; returns its stdout.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Builds the package from the agent binary these tests were built with.
pub fn build_package() -> anyhow::Result<PathBuf> {
    let out = scratch("agent-deb")?;
    let script = repo().join("deploy/package-agent.sh");
    let deb = run(Command::new(script)
        .arg("--binary")
        .arg(AGENT)
        .arg("--out")
        .arg(&out))?;
    let deb = PathBuf::from(deb);
    ensure!(deb.is_file(), "the script named {deb:?}, which does not exist");
    Ok(deb)
}

#[test]
fn the_package_installs_into_a_clean_host_with_its_job_users() -> anyhow::Result<()> {
    let deb = build_package()?;
    let dir = deb.parent().context("package directory")?;
    let mount = format!("{}:/dist:ro", dir.display());
    let script = "dpkg -i /dist/*.deb >/dev/null && id -un orchestrator-job && id -un orchestrator-job-63 \
        && stat -c '%U %a' /var/lib/orchestrator-agent /etc/orchestrator-agent/agent.env \
        && worker-agent --version && stat -c '%U %a %n' /usr/bin/worker-agent-exec";
    let out = docker(&["run", "--rm", "-v", &mount, RUNTIME_BASE, "bash", "-c", script])?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "orchestrator-job",
            "orchestrator-job-63",
            "root 711",
            "root 640",
            &format!("worker-agent {}", env!("CARGO_PKG_VERSION")),
            "root 755 /usr/bin/worker-agent-exec",
        ],
        "{out}"
    );
    Ok(())
}

#[test]
fn the_unit_passes_systemd_analyze_verify() -> anyhow::Result<()> {
    let deb = build_package()?;
    // The package's files under a root that also holds the host's own units
    // (the unit names targets such as network-online.target).
    let root = scratch("agent-root")?;
    let units = root.join("lib/systemd/system");
    std::fs::create_dir_all(&units)?;
    run(Command::new("cp")
        .arg("-a")
        .arg("/lib/systemd/system/.")
        .arg(&units))?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(format!("/{UNIT}"))
        .output()
        .context("systemd-analyze (Debian package systemd) must be installed")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
    Ok(())
}

/// The worker id the packaged agent is given a credential for.
const PACKAGED_WORKER: &str = "packaged-agent";
/// Where the test hands the new host its files (what deploy/agent-join.sh
/// prints travels there by hand in real life).
const HANDOVER: &str = "/handover";

/// A container removed, with its volumes, when dropped, so a failing test
/// leaves nothing running.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.0]);
    }
}

/// The `[Service]` settings of the unit that starting the agent by hand
/// must honour, read from the packaged unit so that the test follows it.
#[derive(Debug, Default)]
struct Service {
    /// `User=`.
    user: String,
    /// `Group=`.
    group: String,
    /// `Environment=` assignments, one per line, in order (`%d`, the
    /// credentials directory, not yet replaced).
    environment: Vec<String>,
    /// `EnvironmentFile=` paths.
    environment_files: Vec<String>,
    /// `LoadCredential=` as (name, source path).
    credentials: Vec<(String, String)>,
    /// `UMask=`.
    umask: String,
    /// `ExecStart=`.
    exec_start: String,
}

impl Service {
    /// Reads the settings above from a unit file's `[Service]` section.
    fn parse(unit: &str) -> anyhow::Result<Service> {
        let mut s = Service::default();
        let mut in_service = false;
        for line in unit.lines().map(str::trim) {
            if line.starts_with('[') {
                in_service = line == "[Service]";
                continue;
            }
            let Some((key, value)) = line.split_once('=').filter(|_| in_service) else {
                continue;
            };
            let value = value.trim().to_owned();
            match key.trim() {
                "User" => s.user = value,
                "Group" => s.group = value,
                "Environment" => s.environment.push(value),
                "EnvironmentFile" => s.environment_files.push(value),
                "LoadCredential" => {
                    let (name, path) = value.split_once(':').context("LoadCredential=NAME:PATH")?;
                    s.credentials.push((name.to_owned(), path.to_owned()));
                }
                "UMask" => s.umask = value,
                "ExecStart" => s.exec_start = value,
                _ => {}
            }
        }
        ensure!(
            !s.user.is_empty() && !s.group.is_empty() && !s.exec_start.is_empty(),
            "the unit names no User=, Group= or ExecStart=: {s:?}"
        );
        ensure!(
            !s.exec_start.starts_with(['-', '@', '+', '!', ':']),
            "ExecStart= with a prefix is not emulated: {}",
            s.exec_start
        );
        Ok(s)
    }

    /// A shell script that starts the service as systemd would, in a
    /// container where systemd is not running: the credentials copied to a
    /// directory of the service user's (`%d`), the unit's environment and
    /// then its environment files, its umask, and `ExecStart=` as its user
    /// without new privileges.
    fn start_script(&self, unit_name: &str) -> String {
        let creds = format!("/run/credentials/{unit_name}");
        let mut script = format!("install -d -m 0500 -o {} -g {} {creds}\n", self.user, self.group);
        for (name, path) in &self.credentials {
            script += &format!(
                "install -m 0400 -o {} -g {} {path} {creds}/{name}\n",
                self.user, self.group
            );
        }
        for assignment in &self.environment {
            let assignment = assignment.trim_matches('"').replace("%d", &creds);
            script += &format!("export {}\n", shell_quote(&assignment));
        }
        for file in &self.environment_files {
            let file = file.trim_start_matches('-');
            script += &format!("set -a; . {file}; set +a\n");
        }
        if !self.umask.is_empty() {
            script += &format!("umask {}\n", self.umask);
        }
        script += &format!(
            "cd / && exec setpriv --reuid={} --regid={} --init-groups --no-new-privs -- {}\n",
            self.user, self.group, self.exec_start
        );
        script
    }
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The last lines the container printed, for a failure message.
fn container_logs(name: &str) -> String {
    match Command::new("docker")
        .args(["logs", "--tail", "40", name])
        .output()
    {
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("(no logs: {e})"),
    }
}

/// Waits until the controller lists `worker` idle, failing at once, with
/// the agent's logs, if the agent's container stops.
async fn wait_registered(d: &Deployment, container: &str, worker: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(w) = d.get(&format!("/api/supervisor/workers/{worker}")).await {
            if w["status"] == "idle" {
                return Ok(());
            }
        }
        let running = docker(&["inspect", "-f", "{{.State.Running}}", container])?;
        if running != "true" || Instant::now() > deadline {
            bail!(
                "the packaged agent never registered (running: {running}); its output:\n{}",
                container_logs(container)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls a job until it leaves pending, queued and running; its last state.
async fn wait_job_ended(d: &Deployment, job_id: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let job = d.get(&format!("/api/jobs/{job_id}")).await?;
        if !matches!(job["status"].as_str(), Some("pending" | "queued" | "running")) {
            return Ok(job);
        }
        ensure!(
            Instant::now() < deadline,
            "job {job_id} had not ended after {WAIT:?}: {job}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_installed_agent_started_with_its_credential_file_joins_a_cluster_and_runs_a_job(
) -> anyhow::Result<()> {
    let deb = build_package()?;
    let dist = deb.parent().context("package directory")?;
    let unpacked = scratch("agent-unit")?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let unit_path = unpacked.join(UNIT);
    let unit_name = unit_path
        .file_name()
        .context("unit file name")?
        .to_string_lossy()
        .into_owned();
    let service = Service::parse(&std::fs::read_to_string(&unit_path)?)?;

    // A running cluster (controller, Postgres, RabbitMQ, all TLS) with no
    // agent, and a credential for the new host's worker id.
    let d = Deployment::start(0, 1).await?;
    let issued = d
        .post("/api/agents/credentials", &json!({"worker_id": PACKAGED_WORKER}))
        .await?;
    let credential = issued["token"].as_str().context("no token in the answer")?;

    // The three files deploy/agent-join.sh tells the operator to write.
    let handover = scratch("agent-handover")?;
    std::fs::write(handover.join("ca.pem"), &d.tls.ca_pem)?;
    std::fs::write(handover.join("agent-token"), format!("{credential}\n"))?;
    std::fs::write(
        handover.join("agent.env"),
        format!(
            "AGENT_CONTROLLER_URL=https://{run}-controller:8000\n\
             AGENT_AMQP_URL=amqps://{run}-rabbitmq:5671/%2f\n\
             AGENT_CA_FILE=/etc/orchestrator-agent/ca.pem\n\
             AGENT_WORKER_ID={PACKAGED_WORKER}\n\
             AGENT_CAPACITY=1\n\
             AGENT_EXECUTOR=/bin/sh\n",
            run = d.run
        ),
    )?;
    let script = format!(
        "set -eu\n\
         dpkg -i /dist/*.deb >/dev/null\n\
         install -m 0644 {HANDOVER}/ca.pem /etc/orchestrator-agent/ca.pem\n\
         install -m 0600 {HANDOVER}/agent-token /etc/orchestrator-agent/agent-token\n\
         install -m 0640 {HANDOVER}/agent.env /etc/orchestrator-agent/agent.env\n\
         {}",
        service.start_script(&unit_name)
    );

    let name = format!("{}-packaged", d.run);
    let _container = Container(name.clone());
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--hostname",
        &name,
        "--network",
        &d.network,
        "--label",
        &format!("{TEST_LABEL}=1"),
        "-v",
        &format!("{}:/dist:ro", dist.display()),
        "-v",
        &format!("{}:{HANDOVER}:ro", handover.display()),
        RUNTIME_BASE,
        "bash",
        "-c",
        &script,
    ])?;
    wait_registered(&d, &name, PACKAGED_WORKER).await?;

    let job = d
        .post(
            "/api/jobs/submit",
            &json!({"task_description": "echo \"ran as $(id -un) in $PWD\""}),
        )
        .await?;
    let job_id = job["job_id"].as_str().context("no job id")?;
    let job = wait_job_ended(&d, job_id).await?;
    assert_eq!(job["status"], "completed", "{job}\n{}", container_logs(&name));
    assert_eq!(job["assigned_workers"], json!([PACKAGED_WORKER]), "{job}");
    let output = d.get(&format!("/api/jobs/{job_id}/output")).await?;
    let stdout = output["stdout"].as_str().unwrap_or_default();
    assert!(
        stdout.starts_with("ran as orchestrator-job-0 in /var/lib/orchestrator-agent/work/"),
        "the job ran elsewhere or as someone else: {output}"
    );
    Ok(())
}
