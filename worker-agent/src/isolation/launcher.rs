//! A job slot's launcher, seen from the agent: the `serve-slot` process
//! ([`crate::isolation::exec::slot`]) that lives in the slot's cgroups and
//! starts the slot's jobs, so that no helper is executed and no process is
//! moved between cgroups per job. The agent keeps one per slot, started
//! when the slot first runs a job, and starts a job through it by sending
//! the job's command line and its three pipes; the launcher answers the
//! job's pid, then its wait status.

use super::exec::slot::{Launch, Reply};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

/// What a launch request came to.
#[derive(Debug)]
pub enum Launched {
    /// The job runs, with this pid (also its process group).
    Started(i32),
    /// The launcher could not start it (the program is missing, its
    /// directory cannot be entered): the job fails, the launcher is fine.
    Refused(io::Error),
}

/// One slot's launcher process and the agent's end of its socket.
#[derive(Debug)]
pub struct Launcher {
    process: Child,
    pid: u32,
    socket: UnixStream,
    /// Bytes of a reply read so far (reads may be cancelled between them).
    pending: Vec<u8>,
}

impl Launcher {
    /// Starts `helper serve-slot`, joining the cgroups whose `cgroup.procs`
    /// files are `joins` and starting jobs as `user` (uid, gid). Its
    /// environment is empty; it dies with the agent's end of the socket
    /// (and with the agent's handle: kill on drop).
    pub fn start(helper: &Path, joins: &[PathBuf], user: Option<(u32, u32)>) -> io::Result<Launcher> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let socket = UnixStream::from_std(ours)?;
        let mut command = Command::new(helper);
        command.arg(super::exec::slot::SUBCOMMAND);
        for procs in joins {
            command.arg("--join").arg(procs);
        }
        if let Some((uid, gid)) = user {
            command.args(["--uid", &uid.to_string(), "--gid", &gid.to_string()]);
        }
        let process = command
            .env_clear()
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let pid = process
            .id()
            .ok_or_else(|| io::Error::other("the launcher ended at once"))?;
        Ok(Launcher {
            process,
            pid,
            socket,
            pending: Vec::new(),
        })
    }

    /// The launcher's pid: the one process a slot's cgroup keeps between
    /// jobs, which killing the job's processes spares.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the launcher process is still there to serve.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }

    /// Sends one job to start, with its stdin, stdout and stderr (the
    /// child's ends: dropped here once sent, so only the job holds them).
    /// On an error the job did not start, whatever part of the request was
    /// sent (the launcher starts a job only once it has read all of it),
    /// and this launcher must not be used again.
    pub async fn send(&mut self, launch: &Launch, stdio: [OwnedFd; 3]) -> io::Result<()> {
        let frame = launch.encode();
        let fds = [stdio[0].as_fd(), stdio[1].as_fd(), stdio[2].as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
        let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
        if !control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::other("no room for the pipes"));
        }
        let socket = &self.socket;
        let first = socket
            .async_io(Interest::WRITABLE, || {
                let iov = [IoSlice::new(&frame)];
                rustix::net::sendmsg(socket, &iov, &mut control, rustix::net::SendFlags::NOSIGNAL)
                    .map_err(io::Error::from)
            })
            .await?;
        let mut sent = first;
        while sent < frame.len() {
            socket.writable().await?;
            match socket.try_write(&frame[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The answer to the request just sent.
    pub async fn started(&mut self) -> io::Result<Launched> {
        match self.reply().await? {
            Reply::Started(pid) => Ok(Launched::Started(pid)),
            Reply::Failed(errno) => Ok(Launched::Refused(io::Error::from_raw_os_error(errno))),
            Reply::Exited(_) => Err(io::Error::other("the launcher answered out of turn")),
        }
    }

    /// The started job's wait status, once it has ended. Cancel-safe: a
    /// reply read in part is kept for the next call.
    pub async fn exited(&mut self) -> io::Result<ExitStatus> {
        match self.reply().await? {
            Reply::Exited(raw) => Ok(ExitStatus::from_raw(raw)),
            other => Err(io::Error::other(format!(
                "the launcher answered {other:?} out of turn"
            ))),
        }
    }

    async fn reply(&mut self) -> io::Result<Reply> {
        let mut buf = [0u8; Reply::LEN];
        while self.pending.len() < Reply::LEN {
            let want = Reply::LEN - self.pending.len();
            let n = self.socket.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the job slot's launcher ended",
                ));
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
        let bytes: [u8; Reply::LEN] = std::mem::take(&mut self.pending)
            .try_into()
            .map_err(|_| io::Error::other("a reply of the wrong size"))?;
        Reply::decode(bytes).ok_or_else(|| io::Error::other("an unknown reply from the launcher"))
    }

    /// Stops the launcher and waits (briefly, without a runtime) until it
    /// is gone, so that its cgroups can be removed: at a clean stop.
    pub fn stop(mut self) {
        let _ = self.process.start_kill();
        for _ in 0..200 {
            if !matches!(self.process.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        tracing::warn!(
            pid = self.pid,
            "a job slot's launcher did not end within a second"
        );
    }
}
