//! The job slot's launcher (`serve-slot`): a process the agent starts once
//! per job slot, inside the slot's cgroups, that starts each of the slot's
//! jobs itself. A job is then born in its cgroups (no migration into four
//! v1 hierarchies per job) and no program but the job's is executed per
//! job: the `exec-job` helper's own `execve` and start were most of what
//! isolation cost per job.
//!
//! The launcher joins the slot's cgroups and sets `no_new_privs` once, then
//! serves requests on its stdin, a Unix stream socket whose other end only
//! the agent holds. Each request ([`Launch`]) carries the job's program,
//! arguments, environment and working directory, with the job's stdin,
//! stdout and stderr pipes passed as file descriptors (`SCM_RIGHTS`). The
//! launcher forks the job as the slot's user (std's `Command`: no
//! supplementary groups, then the gid, then the uid), in a process group of
//! its own, answers [`Reply::Started`] with its pid (or [`Reply::Failed`]
//! with the errno), waits for it, and answers [`Reply::Exited`] with its
//! wait status. One job at a time: a slot runs one job at a time. It exits
//! when the agent closes its end, or when an answer cannot be sent (the
//! agent is gone).
//!
//! A job cannot reach its launcher: the socket is anonymous and the
//! launcher's descriptors are root's; the job gets only its own pipes.

use crate::{join_cgroups, ExecError, Placement};
use clap::Parser;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use std::ffi::{OsStr, OsString};
use std::io::{IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The subcommand's name (the first argument).
pub const SUBCOMMAND: &str = "serve-slot";
/// The largest request accepted, in bytes: far above any job the
/// controller accepts (its command and environment are bounded), so a
/// larger one can only be a broken agent.
pub const MAX_REQUEST: usize = 16 << 20;
/// Descriptors passed with a request: the job's stdin, stdout and stderr.
pub const STDIO_FDS: usize = 3;
/// Start of the launcher's one line of error on stderr (the agent's
/// stderr, which it inherits): its own name, so that an operator reading
/// the agent's log can tell it from the `exec-job` helper.
pub const FAILURE_PREFIX: &str = "worker-agent serve-slot: ";

/// The launcher's arguments, as the agent passes them.
#[derive(Debug, Parser)]
#[command(
    name = "worker-agent serve-slot",
    about = "Starts one job slot's jobs inside its cgroups as its user (used by the agent)."
)]
pub struct ServeArgs {
    /// The slot's cgroups, and the user its jobs run as.
    #[command(flatten)]
    pub place: Placement,
}

/// One job to start: everything but its pipes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Its working directory.
    pub dir: PathBuf,
    /// The program (looked up in the job's `PATH` when it has no `/`).
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Its whole environment (nothing else is inherited).
    pub env: Vec<(OsString, OsString)>,
}

/// A request the launcher cannot read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The bytes end before the request does, or go on after it.
    #[error("a malformed launch request ({0})")]
    Malformed(&'static str),
}

impl Launch {
    /// The request as sent: its length (u32, little-endian), then the
    /// count of arguments and of variables, then each string (directory,
    /// program, arguments, then each variable's name and value) as a length
    /// and its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        body.extend(count(self.args.len()));
        body.extend(count(self.env.len()));
        let strings = [self.dir.as_os_str(), &self.program]
            .into_iter()
            .chain(self.args.iter().map(OsString::as_os_str))
            .chain(self.env.iter().flat_map(|(k, v)| [k.as_os_str(), v.as_os_str()]));
        for s in strings {
            body.extend(count(s.len()));
            body.extend(s.as_bytes());
        }
        let mut frame = count(body.len()).to_vec();
        frame.extend(body);
        frame
    }

    /// A request's body (after its length), as [`Launch::encode`] wrote it.
    pub fn decode(body: &[u8]) -> Result<Launch, WireError> {
        let mut reader = Fields { rest: body };
        let args = reader.items(1)?;
        let env = reader.items(2)?;
        let dir = PathBuf::from(reader.string()?);
        let program = reader.string()?;
        let args = (0..args).map(|_| reader.string()).collect::<Result<_, _>>()?;
        let env = (0..env)
            .map(|_| Ok((reader.string()?, reader.string()?)))
            .collect::<Result<_, _>>()?;
        if !reader.rest.is_empty() {
            return Err(WireError::Malformed("bytes after the request"));
        }
        Ok(Launch {
            dir,
            program,
            args,
            env,
        })
    }
}

/// Reads a request's fields in order.
struct Fields<'a> {
    rest: &'a [u8],
}

impl Fields<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        if self.rest.len() < n {
            return Err(WireError::Malformed("the request ends early"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// A count of items of `strings` strings each: every string takes at
    /// least its length's four bytes, so a count the rest cannot hold is
    /// refused before anything is allocated for it.
    fn items(&mut self, strings: usize) -> Result<usize, WireError> {
        let n = self.count()?;
        if n.saturating_mul(4 * strings) > self.rest.len() {
            return Err(WireError::Malformed("a count past the request's end"));
        }
        Ok(n)
    }

    fn count(&mut self) -> Result<usize, WireError> {
        let bytes: [u8; 4] = self
            .take(4)?
            .try_into()
            .map_err(|_| WireError::Malformed("a length"))?;
        Ok(u32::from_le_bytes(bytes) as usize)
    }

    fn string(&mut self) -> Result<OsString, WireError> {
        let n = self.count()?;
        Ok(OsStr::from_bytes(self.take(n)?).to_owned())
    }
}

/// What the launcher answers: after a request, `Started` or `Failed`; after
/// `Started`, `Exited` once the job's process has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The job's process runs, with this pid (and process group).
    Started(i32),
    /// It could not be started: the errno (no such program, a directory
    /// that cannot be entered, a refused user switch).
    Failed(i32),
    /// It ended with this wait status.
    Exited(i32),
}

impl Reply {
    /// Every reply's size in bytes: a kind and an `i32`.
    pub const LEN: usize = 8;

    /// The reply as sent.
    pub fn encode(self) -> [u8; Reply::LEN] {
        let (kind, value) = match self {
            Reply::Started(v) => (1u8, v),
            Reply::Failed(v) => (2, v),
            Reply::Exited(v) => (3, v),
        };
        let mut out = [0u8; Reply::LEN];
        out[0] = kind;
        out[4..].copy_from_slice(&value.to_le_bytes());
        out
    }

    /// A reply as received; `None` for an unknown kind.
    pub fn decode(bytes: [u8; Reply::LEN]) -> Option<Reply> {
        let value = i32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        match bytes[0] {
            1 => Some(Reply::Started(value)),
            2 => Some(Reply::Failed(value)),
            3 => Some(Reply::Exited(value)),
            _ => None,
        }
    }
}

/// Entry point of the subcommand: `args` are the process's arguments
/// from the subcommand's name on (`serve-slot …`). Returns the exit code: 0
/// once the agent closed its end or is gone (the launcher's normal end, so
/// nothing is printed), [`crate::SETUP_FAILED`] after any other failure.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let parsed = match ServeArgs::try_parse_from(args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{FAILURE_PREFIX}{e}");
            return crate::SETUP_FAILED;
        }
    };
    match serve(&parsed) {
        Ok(()) => 0,
        Err(e) if agent_gone(&e) => 0,
        Err(e) => {
            eprintln!("{FAILURE_PREFIX}{e}");
            crate::SETUP_FAILED
        }
    }
}

/// Joins the slot's cgroups, forbids new privileges, then serves requests
/// until the agent closes its end.
fn serve(args: &ServeArgs) -> Result<(), ExecError> {
    join_cgroups(&args.place.join)?;
    nix::sys::prctl::set_no_new_privs().map_err(ExecError::NoNewPrivs)?;
    let socket = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(UnixStream::from)
        .map_err(ExecError::Serve)?;
    while let Some((launch, stdio)) = receive(&socket).map_err(ExecError::Serve)? {
        let mut child = match start(&launch, stdio, args) {
            Ok(child) => child,
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(nix::libc::EIO);
                answer(&socket, Reply::Failed(errno))?;
                continue;
            }
        };
        answer(&socket, Reply::Started(i32::try_from(child.id()).unwrap_or(-1)))?;
        let status = child.wait().map_err(ExecError::Serve)?;
        answer(&socket, Reply::Exited(status.into_raw()))?;
    }
    Ok(())
}

/// Whether `e` only says that the agent's end of the socket is closed: the
/// agent stopped or died while a job ran, and the answer had no one to go
/// to. The launcher's work is over then, as at a clean end of its input.
fn agent_gone(e: &ExecError) -> bool {
    matches!(e, ExecError::Serve(io) if matches!(
        io.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
    ))
}

fn answer(mut socket: &UnixStream, reply: Reply) -> Result<(), ExecError> {
    socket.write_all(&reply.encode()).map_err(ExecError::Serve)
}

/// Starts the job. Its pipes are dropped here, with the `Command`: the
/// launcher keeps no copy of them, so the agent sees their ends.
fn start(launch: &Launch, stdio: [OwnedFd; STDIO_FDS], args: &ServeArgs) -> std::io::Result<Child> {
    let [stdin, stdout, stderr] = stdio;
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.dir)
        .process_group(0)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    if let (Some(uid), Some(gid)) = (args.place.uid, args.place.gid) {
        // With a uid, std also drops every supplementary group first.
        command.gid(gid).uid(uid);
    }
    command.spawn()
}

/// The next request and its pipes; `None` once the agent closed its end.
fn receive(socket: &UnixStream) -> std::io::Result<Option<(Launch, [OwnedFd; STDIO_FDS])>> {
    let mut head = [0u8; 4];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(STDIO_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut head)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if got.bytes == 0 {
        return Ok(None);
    }
    let mut reader = socket;
    reader.read_exact(&mut head[got.bytes..])?;
    let len = u32::from_le_bytes(head) as usize;
    if len > MAX_REQUEST {
        return Err(std::io::Error::other(format!("a request of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    let launch = Launch::decode(&body).map_err(std::io::Error::other)?;
    let stdio: [OwnedFd; STDIO_FDS] = fds
        .try_into()
        .map_err(|fds: Vec<OwnedFd>| std::io::Error::other(format!("{} descriptors, not 3", fds.len())))?;
    Ok(Some((launch, stdio)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Launch {
        Launch {
            dir: "/work/slot-0".into(),
            program: "sh".into(),
            args: vec!["-c".into(), "echo é; true".into(), "".into()],
            env: vec![("PATH".into(), "/bin".into()), ("EMPTY".into(), "".into())],
        }
    }

    #[test]
    fn a_request_reads_back_as_it_was_written() {
        let frame = sample().encode();
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - 4);
        assert_eq!(Launch::decode(&frame[4..]).unwrap(), sample());
    }

    #[test]
    fn a_cut_or_padded_request_is_refused() {
        let frame = sample().encode();
        let body = &frame[4..];
        for cut in 0..body.len() {
            assert!(Launch::decode(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = body.to_vec();
        padded.push(0);
        assert!(Launch::decode(&padded).is_err());
    }

    #[test]
    fn a_huge_count_is_refused_without_allocating() {
        let mut body = u32::MAX.to_le_bytes().to_vec();
        body.extend(0u32.to_le_bytes());
        assert!(Launch::decode(&body).is_err());
    }

    #[test]
    fn replies_read_back_and_unknown_kinds_are_refused() {
        for reply in [Reply::Started(42), Reply::Failed(2), Reply::Exited(-1)] {
            assert_eq!(Reply::decode(reply.encode()), Some(reply));
        }
        assert_eq!(Reply::decode([9, 0, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn the_launcher_takes_the_helpers_placement_and_no_command() {
        let args = ServeArgs::try_parse_from(["serve-slot", "--join", "/a/cgroup.procs"]).unwrap();
        assert_eq!(args.place.join, [PathBuf::from("/a/cgroup.procs")]);
        assert!(ServeArgs::try_parse_from(["serve-slot", "--uid", "7"]).is_err());
        assert!(ServeArgs::try_parse_from(["serve-slot", "--", "true"]).is_err());
    }
}
