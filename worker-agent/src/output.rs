//! Sending a shard's output to the controller while it runs
//! (`POST /api/agents/output`), over HTTP rather than the broker, so a
//! loud job never queues megabytes in the events queue ahead of reports
//! and heartbeats.
//!
//! The runner's pipe readers hand pieces to a small bounded channel; one
//! task per shard gathers them into a batch per stream and sends it every
//! `--output-flush-ms` or at [`BATCH_BYTES`], one request at a time. While
//! a request is out the channel fills and the readers wait, so a fast
//! printer is held back by its own pipe: memory stays bounded whatever it
//! prints. Past `--output-cap-bytes` one marker piece is sent and the rest
//! is dropped (the readers still drain the pipes, so the job goes on). A
//! failed request is retried with the same number, so a retry stored twice
//! changes nothing.

use crate::client::{ClientError, ControllerClient};
use crate::retry;
use orchestrator_shared::api::{OutputChunk, OutputStream};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

/// Bytes gathered before a batch is sent without waiting for the timer.
pub const BATCH_BYTES: usize = 128 * 1024;
/// Pieces (of at most one pipe read each) waiting between the readers and
/// the sender.
const CHANNEL_PIECES: usize = 16;
/// How long one piece may keep failing to send before the shard's output
/// stops being sent (the report's tails still carry its end).
const SEND_PATIENCE: Duration = Duration::from_secs(30);

/// A piece of output read from a pipe.
pub type Piece = (OutputStream, Vec<u8>);

/// Where the runner's readers put what they read.
pub use crate::runner::OutputSink as PieceSink;

/// The shard whose output is sent.
#[derive(Debug, Clone)]
pub struct ShardKey {
    /// The sending worker.
    pub worker_id: String,
    /// The job.
    pub job_id: Uuid,
    /// Its attempt.
    pub attempt: i32,
    /// The shard.
    pub shard_index: i32,
}

/// How output is sent (from the agent's flags).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Longest wait before gathered output is sent.
    pub flush: Duration,
    /// Most bytes of one shard sent.
    pub cap: u64,
}

/// Starts sending `key`'s output: the readers' sink, and the task that
/// ends once every sink is dropped and all that was read is sent.
pub fn start(client: ControllerClient, key: ShardKey, settings: Settings) -> (PieceSink, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(CHANNEL_PIECES);
    let sender = Sender {
        client,
        key,
        seq: 0,
        stopped: false,
    };
    (tx, tokio::spawn(forward(rx, sender, settings)))
}

/// Gathers pieces into batches and sends them until the readers are done.
async fn forward(mut rx: mpsc::Receiver<Piece>, mut sender: Sender, settings: Settings) {
    let mut batch = Batch::new(settings.cap);
    let mut due: Option<Instant> = None;
    loop {
        let piece = match due {
            Some(at) => tokio::select! {
                piece = rx.recv() => piece,
                () = tokio::time::sleep_until(at) => {
                    sender.send_all(batch.take()).await;
                    due = None;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some((stream, bytes)) = piece else { break };
        batch.push(stream, &bytes);
        due.get_or_insert_with(|| Instant::now() + settings.flush);
        if batch.len() >= BATCH_BYTES || batch.has_marker() {
            sender.send_all(batch.take()).await;
            due = None;
        }
        if sender.stopped || batch.is_closed() {
            // Dropping the receiver: the readers keep draining the pipes
            // into the tails only.
            break;
        }
    }
    drop(rx);
    sender.send_all(batch.take()).await;
}

/// One batch to send: its stream, bytes, and whether it is the marker.
type Outgoing = (OutputStream, Vec<u8>, bool);

/// Output gathered since the last send, per stream, and how much of the
/// cap is used. Pure bookkeeping.
#[derive(Debug)]
struct Batch {
    /// Most bytes of the shard sent.
    cap: u64,
    /// Bytes admitted so far.
    taken: u64,
    /// Gathered standard output.
    stdout: Vec<u8>,
    /// Gathered standard error.
    stderr: Vec<u8>,
    /// The stream whose piece crossed the cap, until its marker is taken.
    marker: Option<OutputStream>,
    /// Whether the cap was reached (nothing more is admitted).
    capped: bool,
}

impl Batch {
    fn new(cap: u64) -> Self {
        Batch {
            cap,
            taken: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            marker: None,
            capped: false,
        }
    }

    /// Admits what of `bytes` fits under the cap; the first piece that
    /// does not fit whole asks for the marker.
    fn push(&mut self, stream: OutputStream, bytes: &[u8]) {
        if self.capped {
            return;
        }
        let room = usize::try_from(self.cap - self.taken).unwrap_or(usize::MAX);
        let kept = &bytes[..bytes.len().min(room)];
        self.taken += kept.len() as u64;
        match stream {
            OutputStream::Stdout => self.stdout.extend_from_slice(kept),
            OutputStream::Stderr => self.stderr.extend_from_slice(kept),
        }
        if kept.len() < bytes.len() {
            self.capped = true;
            self.marker = Some(stream);
        }
    }

    /// Bytes gathered.
    fn len(&self) -> usize {
        self.stdout.len() + self.stderr.len()
    }

    /// Whether the marker waits to be sent.
    fn has_marker(&self) -> bool {
        self.marker.is_some()
    }

    /// Whether nothing more will be admitted and nothing is left to take.
    fn is_closed(&self) -> bool {
        self.capped && self.marker.is_none() && self.len() == 0
    }

    /// What to send now, in order: stdout, stderr, then the marker.
    fn take(&mut self) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for (stream, bytes) in [
            (OutputStream::Stdout, std::mem::take(&mut self.stdout)),
            (OutputStream::Stderr, std::mem::take(&mut self.stderr)),
        ] {
            if !bytes.is_empty() {
                out.push((stream, bytes, false));
            }
        }
        if let Some(stream) = self.marker.take() {
            let text = format!(
                "\n[output truncated: the agent's cap of {} bytes was reached; the rest was dropped]\n",
                self.cap
            );
            out.push((stream, text.into_bytes(), true));
        }
        out
    }
}

/// Sends a shard's batches, numbered from 0, one at a time.
struct Sender {
    /// The controller.
    client: ControllerClient,
    /// Whose output.
    key: ShardKey,
    /// The next batch's number.
    seq: i64,
    /// Set once sending stopped (refused, or failing too long).
    stopped: bool,
}

impl Sender {
    async fn send_all(&mut self, batches: Vec<Outgoing>) {
        for (stream, bytes, truncated) in batches {
            if self.stopped {
                return;
            }
            self.send(stream, &bytes, truncated).await;
        }
    }

    /// Sends one batch, retrying with backoff for [`SEND_PATIENCE`]; a
    /// refusal (the shard is no longer this worker's, a bad request) or
    /// running out of patience stops sending for the shard.
    async fn send(&mut self, stream: OutputStream, bytes: &[u8], truncated: bool) {
        let chunk = OutputChunk {
            worker_id: self.key.worker_id.clone(),
            job_id: self.key.job_id,
            attempt: self.key.attempt,
            shard_index: self.key.shard_index,
            seq: self.seq,
            stream,
            data: OutputChunk::encode(bytes),
            truncated,
        };
        let job_id = self.key.job_id;
        let sent = retry::within(
            SEND_PATIENCE,
            || self.client.post_output(&chunk),
            retryable,
            |e| tracing::debug!(%job_id, error = %e, "sending output failed; retrying"),
        )
        .await;
        match sent {
            Ok(_) => self.seq += 1,
            Err(e) => {
                tracing::warn!(%job_id, shard = self.key.shard_index, error = %e,
                    "output no longer sent for this shard (the report still carries its tails)");
                self.stopped = true;
            }
        }
    }
}

/// Whether a failed send may succeed when tried again: not when the
/// controller refused it (a 4xx: not the holder, a bad piece).
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Status { status, .. } => !status.is_client_error() || status.as_u16() == 429,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_streams_are_gathered_and_taken_in_order() {
        let mut b = Batch::new(100);
        b.push(OutputStream::Stderr, b"err");
        b.push(OutputStream::Stdout, b"out");
        assert_eq!(b.len(), 6);
        let taken = b.take();
        assert_eq!(
            taken,
            vec![
                (OutputStream::Stdout, b"out".to_vec(), false),
                (OutputStream::Stderr, b"err".to_vec(), false)
            ]
        );
        assert!(b.take().is_empty());
    }

    #[test]
    fn the_cap_keeps_what_fits_then_one_marker_then_nothing() {
        let mut b = Batch::new(5);
        b.push(OutputStream::Stdout, b"abc");
        b.push(OutputStream::Stdout, b"defg");
        assert!(b.has_marker());
        b.push(OutputStream::Stderr, b"more");
        let taken = b.take();
        assert_eq!(taken[0], (OutputStream::Stdout, b"abcde".to_vec(), false));
        assert_eq!(taken.len(), 2);
        assert!(taken[1].2, "the marker");
        assert!(String::from_utf8_lossy(&taken[1].1).contains("truncated"));
        assert!(b.is_closed());
        b.push(OutputStream::Stdout, b"x");
        assert!(b.take().is_empty());
    }

    #[test]
    fn output_exactly_at_the_cap_has_no_marker() {
        let mut b = Batch::new(3);
        b.push(OutputStream::Stdout, b"abc");
        assert!(!b.has_marker());
        assert_eq!(b.take().len(), 1);
    }
}
