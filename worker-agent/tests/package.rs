//! The agent's Debian package (`deploy/package-agent.sh`): it installs into
//! a clean container of the runtime base image, creating its own user and
//! state directory, and its hardened systemd unit passes `systemd-analyze
//! verify`.

use anyhow::{bail, ensure, Context};
use integration_tests::multihost::docker;
use std::path::{Path, PathBuf};
use std::process::Command;

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
fn the_package_installs_into_a_clean_host_with_its_own_user() -> anyhow::Result<()> {
    let deb = build_package()?;
    let dir = deb.parent().context("package directory")?;
    let mount = format!("{}:/dist:ro", dir.display());
    let script = "dpkg -i /dist/*.deb >/dev/null && id -un orchestrator-agent \
        && stat -c '%U %a' /var/lib/orchestrator-agent /etc/orchestrator-agent/agent.env \
        && worker-agent --version";
    let out = docker(&["run", "--rm", "-v", &mount, RUNTIME_BASE, "bash", "-c", script])?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "orchestrator-agent",
            "orchestrator-agent 700",
            "root 640",
            &format!("worker-agent {}", env!("CARGO_PKG_VERSION")),
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
