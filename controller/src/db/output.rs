//! `job_output`: the pieces of output agents send while shards run, and
//! the whole (or a byte range of) a shard's streams read back from them.
//! Only the agent holding a running shard may add to it, up to the
//! controller's cap per shard; a piece already stored (a retry) changes
//! nothing.

use super::{parse_status, Cached, DbError};
use deadpool_postgres::GenericClient;
use orchestrator_shared::api::{OutputChunk, OutputStream};
use orchestrator_shared::JobStatus;
use uuid::Uuid;

/// What storing a piece did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The piece is new and now stored.
    New,
    /// The piece was stored before; nothing changed.
    Duplicate,
    /// The sender holds the shard, but the piece would take the shard's
    /// stored output past the cap: nothing stored.
    OverCap,
    /// The sender does not hold that shard running (another worker does,
    /// or it ended): nothing stored.
    NotHolder,
}

/// Stores `chunk` (whose decoded bytes are `data`) if its sender holds
/// the shard, running, in that attempt, and the shard's stored output
/// stays within `cap` bytes with it. The shard's row counts the bytes
/// (`output_bytes`), raised by the same statement under its row lock, so
/// requests sent at once cannot pass the cap together. A piece that races
/// its own retry may be counted twice, never stored twice.
pub async fn store(
    client: &impl GenericClient,
    chunk: &OutputChunk,
    data: &[u8],
    cap: i64,
) -> Result<Stored, DbError> {
    const SQL: &str = "WITH stored AS (
           SELECT EXISTS (SELECT 1 FROM job_output o WHERE o.job_id = $1 AND o.shard_index = $2
                             AND o.attempt = $3 AND o.seq = $4) AS before),
         counted AS (
           UPDATE job_shards s SET output_bytes = s.output_bytes + octet_length($6::bytea)
            WHERE s.job_id = $1 AND s.shard_index = $2 AND s.attempt = $3 AND s.worker_id = $8
              AND s.status = 'running' AND s.output_bytes + octet_length($6::bytea) <= $9::bigint
              AND NOT (SELECT before FROM stored)
           RETURNING 1),
         ins AS (
           INSERT INTO job_output (job_id, shard_index, attempt, seq, stream, data, truncated)
           SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM counted)
           ON CONFLICT DO NOTHING RETURNING 1)
         SELECT EXISTS (SELECT 1 FROM ins),
                (SELECT before FROM stored),
                EXISTS (SELECT 1 FROM job_shards s WHERE s.job_id = $1 AND s.shard_index = $2
                           AND s.attempt = $3 AND s.worker_id = $8 AND s.status = 'running')";
    let row = client
        .row(
            SQL,
            &[
                &chunk.job_id,
                &chunk.shard_index,
                &chunk.attempt,
                &chunk.seq,
                &chunk.stream.as_str(),
                &data,
                &chunk.truncated,
                &chunk.worker_id,
                &cap,
            ],
        )
        .await?;
    let (inserted, existed, holder): (bool, bool, bool) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    Ok(match (inserted, existed, holder) {
        (true, _, _) => Stored::New,
        (false, true, _) => Stored::Duplicate,
        (false, false, true) => Stored::OverCap,
        (false, false, false) => Stored::NotHolder,
    })
}

/// Which shard's output to read, and which bytes of each stream.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// The job.
    pub job_id: Uuid,
    /// The shard.
    pub shard_index: i32,
    /// The attempt.
    pub attempt: i32,
    /// First byte of each stream (from 0).
    pub offset: i64,
    /// Most bytes of each stream.
    pub limit: i64,
}

/// One stream of a shard as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOutput {
    /// The bytes of the range asked for.
    pub bytes: Vec<u8>,
    /// All the bytes stored for the stream.
    pub total: i64,
    /// Whether the agent's cap cut the stream.
    pub truncated: bool,
}

/// Both streams of a shard; `None` when no piece was stored.
///
/// Only the pieces that overlap the range are read whole: the others count
/// by their length, which Postgres knows without detoasting them, so paging
/// through a 16 MiB log in small ranges does not read all of it each time.
pub async fn read(
    client: &impl GenericClient,
    range: Range,
) -> Result<Option<(StreamOutput, StreamOutput)>, DbError> {
    const SQL: &str = "WITH p AS (
           SELECT stream, seq, data, truncated, length(data)::bigint AS len,
                  (sum(length(data)) OVER (PARTITION BY stream ORDER BY seq))::bigint
                    - length(data) AS start
             FROM job_output WHERE job_id = $1 AND shard_index = $2 AND attempt = $3),
         hit AS (SELECT p.*, start + len > $4::bigint AND start < $4::bigint + $5::bigint AS wanted FROM p)
         SELECT stream, sum(len)::bigint, bool_or(truncated),
                coalesce(substring(
                    string_agg(data, ''::bytea ORDER BY seq) FILTER (WHERE wanted)
                    FROM ($4 - min(start) FILTER (WHERE wanted) + 1)::integer FOR $5::integer),
                  ''::bytea)
           FROM hit GROUP BY stream";
    // Postgres' substring counts in integers; no stream is that long.
    let offset = range.offset.clamp(0, i64::from(i32::MAX));
    let count = range.limit.clamp(0, i64::from(i32::MAX));
    let rows = client
        .rows(
            SQL,
            &[&range.job_id, &range.shard_index, &range.attempt, &offset, &count],
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let (mut stdout, mut stderr) = (StreamOutput::default(), StreamOutput::default());
    for row in rows {
        let stream = parse_stream(row.try_get(0)?);
        let read = StreamOutput {
            total: row.try_get(1)?,
            truncated: row.try_get(2)?,
            bytes: row.try_get(3)?,
        };
        if stream == OutputStream::Stderr {
            stderr = read;
        } else {
            stdout = read;
        }
    }
    Ok(Some((stdout, stderr)))
}

/// A stored stream name (the table's check allows only the two).
fn parse_stream(raw: &str) -> OutputStream {
    if raw == OutputStream::Stderr.as_str() {
        OutputStream::Stderr
    } else {
        OutputStream::Stdout
    }
}

/// One stored piece, as the live stream sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Its number.
    pub seq: i64,
    /// Its stream.
    pub stream: OutputStream,
    /// Its bytes.
    pub data: Vec<u8>,
    /// Whether it is the cap's marker.
    pub truncated: bool,
}

/// Most pieces one [`pieces_after`] reads (each at most 256 KiB).
const PIECES_PER_READ: i64 = 32;

/// The shard's pieces numbered after `after` (all with `None`), in order,
/// at most [`PIECES_PER_READ`].
pub async fn pieces_after(
    client: &impl GenericClient,
    job_id: Uuid,
    shard_index: i32,
    attempt: i32,
    after: Option<i64>,
) -> Result<Vec<Piece>, DbError> {
    const SQL: &str = "SELECT seq, stream, data, truncated FROM job_output
          WHERE job_id = $1 AND shard_index = $2 AND attempt = $3 AND seq > $4
          ORDER BY seq LIMIT $5";
    let after = after.unwrap_or(-1);
    let rows = client
        .rows(SQL, &[&job_id, &shard_index, &attempt, &after, &PIECES_PER_READ])
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Piece {
                seq: row.try_get(0)?,
                stream: parse_stream(row.try_get(1)?),
                data: row.try_get(2)?,
                truncated: row.try_get(3)?,
            })
        })
        .collect()
}

/// Where a job stands, for the live stream: status, exit code and latest
/// attempt; `None` when there is no such job (deleted by retention).
pub async fn job_state(
    client: &impl GenericClient,
    job_id: Uuid,
) -> Result<Option<(JobStatus, Option<i32>, i32)>, DbError> {
    let row = client
        .row_opt(
            "SELECT status, exit_code, attempts FROM jobs WHERE job_id = $1",
            &[&job_id],
        )
        .await?;
    row.map(|row| Ok((parse_status(&row, "status")?, row.try_get(1)?, row.try_get(2)?)))
        .transpose()
}
