//! A job's output as agents send it while the job runs
//! (`POST /api/agents/output`) and as clients read it
//! (`GET /api/jobs/{job_id}/output`). An extension of the original
//! contract: the original answer carried a 64 KiB tail only.

use super::error::FieldError;
use crate::status::JobStatus;
use crate::validate::{is_valid_worker_id, WORKER_ID_RULE};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most bytes of output (decoded) in one chunk: an agent's batch is at
/// most 128 KiB, so this leaves room while bounding what one request makes
/// the controller hold.
pub const MAX_CHUNK_BYTES: usize = 256 * 1024;
/// Most characters of a chunk's base64 `data` (what [`MAX_CHUNK_BYTES`]
/// encodes to).
pub const MAX_CHUNK_BASE64: usize = MAX_CHUNK_BYTES.div_ceil(3) * 4;
/// Highest shard index (shards are 0..=63).
const MAX_SHARD: i32 = 63;

/// Which of a process's output streams a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl OutputStream {
    /// The name stored and sent (`stdout`, `stderr`).
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

/// `POST /api/agents/output` body: one piece of one shard's output, sent
/// by the agent running it. Numbered per (job, shard, attempt) from 0, so
/// the controller stores pieces in order and a retried piece changes
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputChunk {
    /// The sending agent.
    #[cfg_attr(feature = "openapi", schema(pattern = "^(?!\\.\\.?$)[A-Za-z0-9._:-]{1,128}$"))]
    pub worker_id: String,
    /// The job.
    pub job_id: Uuid,
    /// The attempt the agent runs.
    #[serde(deserialize_with = "super::number::i32")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub attempt: i32,
    /// The shard the agent runs.
    #[serde(deserialize_with = "super::number::i32")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 63))]
    pub shard_index: i32,
    /// Position of this piece among the shard's pieces, from 0.
    #[serde(deserialize_with = "super::number::i64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub seq: i64,
    /// The stream the bytes came from.
    pub stream: OutputStream,
    /// The bytes, base64 (standard alphabet, padded): output need not be
    /// UTF-8, and a character may be cut between two pieces.
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 349528, pattern = "^[A-Za-z0-9+/]*={0,2}$")
    )]
    pub data: String,
    /// Whether this piece is the marker that the shard's output reached the
    /// agent's cap (what follows it was dropped).
    #[serde(default)]
    pub truncated: bool,
}

impl OutputChunk {
    /// A piece carrying `bytes`, encoded as the wire wants.
    pub fn encode(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// Every rule this piece breaks; with none, its decoded bytes.
    pub fn decoded(&self) -> Result<Vec<u8>, Vec<FieldError>> {
        let mut problems = Vec::new();
        if !is_valid_worker_id(&self.worker_id) {
            problems.push(FieldError::body("worker_id", WORKER_ID_RULE));
        }
        if self.attempt < 0 {
            problems.push(FieldError::body("attempt", "must be at least 0"));
        }
        if !(0..=MAX_SHARD).contains(&self.shard_index) {
            problems.push(FieldError::body("shard_index", "must be between 0 and 63"));
        }
        if self.seq < 0 {
            problems.push(FieldError::body("seq", "must be at least 0"));
        }
        let data = if self.data.len() > MAX_CHUNK_BASE64 {
            problems.push(FieldError::body(
                "data",
                format!("at most {MAX_CHUNK_BYTES} bytes"),
            ));
            Vec::new()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(&self.data)
                .unwrap_or_else(|_| {
                    problems.push(FieldError::body(
                        "data",
                        "must be base64 (standard alphabet, padded)",
                    ));
                    Vec::new()
                })
        };
        if problems.is_empty() {
            Ok(data)
        } else {
            Err(problems)
        }
    }
}

/// `POST /api/agents/output` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputStored {
    /// `true` when this request stored the piece, `false` when it was
    /// stored before (a retry): either way the agent moves on.
    pub stored: bool,
}

/// `GET /api/jobs/{job_id}/output` query: which shard, and which bytes of
/// its streams (for logs too large for one answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct OutputQuery {
    /// The shard (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 0, maximum = 63))]
    pub shard: Option<i32>,
    /// First byte of each stream to return (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 0))]
    pub offset: Option<i64>,
    /// Most bytes of each stream to return (default: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 1))]
    pub limit: Option<i64>,
}

impl OutputQuery {
    /// Every rule of the query this one breaks.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut problems = Vec::new();
        if self.shard.is_some_and(|s| !(0..=MAX_SHARD).contains(&s)) {
            problems.push(FieldError::query("shard", "must be between 0 and 63"));
        }
        if self.offset.is_some_and(|o| o < 0) {
            problems.push(FieldError::query("offset", "must be at least 0"));
        }
        if self.limit.is_some_and(|l| l < 1) {
            problems.push(FieldError::query("limit", "must be at least 1"));
        }
        problems
    }
}

/// `GET /api/jobs/{job_id}/output/stream` query: which shard to follow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct StreamQuery {
    /// The shard (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 0, maximum = 63))]
    pub shard: Option<i32>,
}

impl StreamQuery {
    /// Every rule of the query this one breaks.
    pub fn problems(&self) -> Vec<FieldError> {
        OutputQuery {
            shard: self.shard,
            ..OutputQuery::default()
        }
        .problems()
    }
}

/// Data of an `output` event of the live stream: one stored piece.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputEvent {
    /// The piece's number (also the event's `id`).
    pub seq: i64,
    /// Its stream.
    pub stream: OutputStream,
    /// Its bytes as text (invalid UTF-8, or a character cut between two
    /// pieces, as U+FFFD).
    pub data: String,
    /// Whether it is the marker that the agent's cap was reached.
    pub truncated: bool,
}

/// Data of the `end` event, the stream's last: the job has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputEnd {
    /// The job's final status.
    pub status: JobStatus,
    /// Its exit code, if it has one.
    pub exit_code: Option<i32>,
}

/// The name of an `output` event (one value, so each event kind's schema
/// matches its own events only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OutputEventName {
    /// `output`.
    #[serde(rename = "output")]
    Output,
}

/// The name of the `end` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EndEventName {
    /// `end`.
    #[serde(rename = "end")]
    End,
}

/// An `output` event of the live stream as sent: its name, its id (the
/// piece's `seq`) and its data, an [`OutputEvent`] as JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputSseEvent {
    /// Always `output`.
    pub event: OutputEventName,
    /// The piece's `seq`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9]+$"))]
    pub id: String,
    /// An [`OutputEvent`], as JSON.
    pub data: String,
}

/// The `end` event of the live stream as sent: its name and its data, an
/// [`OutputEnd`] as JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndSseEvent {
    /// Always `end`.
    pub event: EndEventName,
    /// An [`OutputEnd`], as JSON.
    pub data: String,
}

/// The live stream's events, one schema per kind: `output` events, then
/// one `end` event. The OpenAPI document describes each event as sent
/// (name, id, data as JSON text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum OutputStreamEvent {
    /// An `output` event.
    Output(OutputSseEvent),
    /// The `end` event.
    End(EndSseEvent),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(data: &str) -> OutputChunk {
        OutputChunk {
            worker_id: "w1".into(),
            job_id: Uuid::nil(),
            attempt: 1,
            shard_index: 0,
            seq: 0,
            stream: OutputStream::Stdout,
            data: data.into(),
            truncated: false,
        }
    }

    #[test]
    fn a_piece_round_trips_its_bytes() {
        let bytes = [0xff, b'a', 0xe2, 0x82];
        assert_eq!(chunk(&OutputChunk::encode(&bytes)).decoded().unwrap(), bytes);
    }

    #[test]
    fn bad_pieces_name_their_fields() {
        let mut c = chunk("not base64!");
        c.seq = -1;
        c.shard_index = 64;
        let fields: Vec<String> = c
            .decoded()
            .unwrap_err()
            .iter()
            .map(FieldError::location)
            .collect();
        assert_eq!(fields, ["body.shard_index", "body.seq", "body.data"]);
        let big = chunk(&"A".repeat(MAX_CHUNK_BASE64 + 4));
        assert!(big.decoded().is_err());
    }

    #[test]
    fn the_query_rejects_out_of_range_values() {
        let q = OutputQuery {
            shard: Some(64),
            offset: Some(-1),
            limit: Some(0),
        };
        assert_eq!(q.problems().len(), 3);
        assert!(OutputQuery::default().problems().is_empty());
    }
}
