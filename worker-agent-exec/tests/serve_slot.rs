//! The launcher (`worker-agent-exec serve-slot`) as the agent sees it from
//! outside: what it prints on its stderr (which is the agent's log) and
//! the code it exits with, when the agent goes away or sends it something
//! it cannot read. No cgroup is joined and no user switched, so these run
//! unprivileged.

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use std::fs::File;
use std::io::{IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use worker_agent_exec::slot::{Launch, Reply, FAILURE_PREFIX, SUBCOMMAND};

/// A launcher serving on the other end of the returned socket, its stderr
/// captured.
fn launcher() -> (Child, UnixStream) {
    let (ours, theirs) = UnixStream::pair().expect("a socket pair");
    let child = Command::new(env!("CARGO_BIN_EXE_worker-agent-exec"))
        .arg(SUBCOMMAND)
        .env_clear()
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the launcher starts");
    (child, ours)
}

/// Sends `frame` with three descriptors of `/dev/null` as the job's pipes.
fn send(socket: &UnixStream, frame: &[u8]) {
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let fds = [null.as_fd(), null.as_fd(), null.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    let sent = rustix::net::sendmsg(socket, &[IoSlice::new(frame)], &mut control, SendFlags::NOSIGNAL)
        .expect("the request is sent");
    (&*socket).write_all(&frame[sent..]).expect("the rest is sent");
}

fn reply(mut socket: &UnixStream) -> Reply {
    let mut bytes = [0u8; Reply::LEN];
    socket.read_exact(&mut bytes).expect("a reply");
    Reply::decode(bytes).expect("a known reply")
}

/// The launcher's exit code and stderr, once it has ended (bounded).
fn ended(mut child: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the launcher") {
            break status;
        }
        assert!(Instant::now() < deadline, "the launcher did not end");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr reads");
    (status.code(), stderr)
}

fn sleeper(seconds: &str) -> Launch {
    Launch {
        dir: "/".into(),
        program: "/bin/sleep".into(),
        args: vec![seconds.into()],
        env: vec![],
    }
}

#[test]
fn a_launcher_whose_agent_went_away_during_a_job_ends_quietly() {
    let (child, socket) = launcher();
    send(&socket, &sleeper("0.3").encode());
    assert!(matches!(reply(&socket), Reply::Started(pid) if pid > 0));
    drop(socket);
    let (code, stderr) = ended(child);
    assert_eq!(stderr, "", "the agent's going away is the launcher's normal end");
    assert_eq!(code, Some(0));
}

#[test]
fn a_launcher_that_cannot_read_a_request_says_so_under_its_own_name() {
    let (child, socket) = launcher();
    let mut frame = sleeper("0").encode();
    frame.truncate(frame.len() - 1);
    let body = u32::try_from(frame.len() - 4).expect("small");
    frame[..4].copy_from_slice(&body.to_le_bytes());
    send(&socket, &frame);
    let (code, stderr) = ended(child);
    assert!(
        stderr.starts_with(FAILURE_PREFIX) && stderr.contains("malformed"),
        "stderr: {stderr:?}"
    );
    assert!(!stderr.contains("exec-job"), "stderr: {stderr:?}");
    assert_eq!(code, Some(worker_agent_exec::SETUP_FAILED));
}

#[test]
fn a_launcher_runs_jobs_one_after_another_until_its_input_ends() {
    let (child, socket) = launcher();
    for _ in 0..3 {
        send(&socket, &sleeper("0").encode());
        assert!(matches!(reply(&socket), Reply::Started(_)));
        assert!(matches!(reply(&socket), Reply::Exited(0)));
    }
    drop(socket);
    assert_eq!(ended(child), (Some(0), String::new()));
}
