//! Pure text rendering for people: single values, aligned tables, key-value
//! lines, the API's error details and a job's output. Nothing here does I/O.

use chrono::{DateTime, SecondsFormat, Utc};
use orchestrator_shared::api::JobOutput;
use serde::Serialize;
use serde_json::{Number, Value};
use std::fmt::Display;

/// Longest cell a table shows before cutting it with an ellipsis, so that one
/// long task description does not push the other columns off the screen.
pub const MAX_CELL_CHARS: usize = 48;

/// What a missing, null or empty value is shown as.
pub const EMPTY: &str = "-";

/// Spaces between two table columns.
const COLUMN_GAP: &str = "  ";

/// A table column over rows of type `T`: its header and how a row shows in
/// it. A function of the typed row, so a renamed field breaks the build.
pub type Column<T> = (&'static str, fn(&T) -> String);

/// One JSON value as text: strings bare, `null` as [`EMPTY`], arrays as
/// shell-quoted words (`echo 'a b'`), objects as `key=value` words.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => EMPTY.to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => number(n),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Array(items)) if items.is_empty() => EMPTY.to_owned(),
        Some(Value::Array(items)) => items.iter().map(word).collect::<Vec<_>>().join(" "),
        Some(Value::Object(map)) if map.is_empty() => EMPTY.to_owned(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(key, value)| format!("{key}={}", word(value)))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// An element of an array or object shown by [`cell`].
fn word(value: &Value) -> String {
    match value {
        Value::String(s) => shell_quote(s),
        Value::Number(n) => number(n),
        other => other.to_string(),
    }
}

/// A number; fractions keep at most three decimals (`12.5`, `0.125`, `3`).
fn number(n: &Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() => decimal(f),
        _ => n.to_string(),
    }
}

/// A fraction with at most three decimals (`12.5`, `0.125`, `3`).
pub fn decimal(f: f64) -> String {
    let fixed = format!("{f:.3}");
    fixed.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Any serialisable value as [`cell`] shows its JSON (`null` when it cannot
/// be turned into JSON, which the contract's types always can).
pub fn text<T: Serialize + ?Sized>(value: &T) -> String {
    cell(serde_json::to_value(value).ok().as_ref())
}

/// An optional value, [`EMPTY`] when absent.
pub fn optional<T: Display>(value: Option<T>) -> String {
    value.map_or_else(|| EMPTY.to_owned(), |v| v.to_string())
}

/// A timestamp to the second, as RFC 3339 in UTC (`2026-11-05T10:00:00Z`):
/// fractions of a second only widen a table.
pub fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `s` as one POSIX shell word: unchanged when it holds only harmless
/// characters, else in single quotes.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Replaces control characters (newlines, tabs, escape sequences) with
/// spaces, so a value stays on its line and cannot drive the terminal.
pub fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// A table cell: on one line, at most [`MAX_CELL_CHARS`].
fn fit(text: &str) -> String {
    let text = one_line(text);
    if text.chars().count() <= MAX_CELL_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_CELL_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// `rows` in aligned columns under the given headers.
pub fn table<T>(columns: &[Column<T>], rows: &[T]) -> String {
    let mut grid: Vec<Vec<String>> = vec![columns.iter().map(|(header, _)| (*header).to_owned()).collect()];
    grid.extend(
        rows.iter()
            .map(|row| columns.iter().map(|(_, show)| fit(&show(row))).collect()),
    );
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            grid.iter()
                .map(|line| line.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    grid.iter()
        .map(|line| aligned(line, &widths))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One table line, each cell padded to its column's width but the last.
fn aligned(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(widths) {
        line.push_str(&format!("{cell:<width$}{COLUMN_GAP}"));
    }
    line.trim_end().to_owned()
}

/// The fields of a JSON object as aligned `key: value` lines, in the
/// object's order (for a typed answer turned into JSON, the order of its
/// struct's fields: the contract's). A value that is not an object is shown
/// as a single [`cell`].
pub fn key_values(value: &Value) -> String {
    let Some(map) = value.as_object() else {
        return cell(Some(value));
    };
    let width = map.keys().map(|k| k.chars().count()).max().unwrap_or(0) + 1;
    map.iter()
        .map(|(key, value)| {
            let label = format!("{key}:");
            format!("{label:<width$} {}", one_line(&cell(Some(value))))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The API's `detail` as lines: a string as is; a validation list (422) as
/// one `loc: msg` line per problem, `loc` joined with dots; anything else as JSON.
pub fn detail_lines(detail: &Value) -> Vec<String> {
    match detail {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().map(validation_line).collect(),
        other => vec![other.to_string()],
    }
}

/// One problem of a validation list: `body.required_workers: must be between 1 and 64`.
fn validation_line(item: &Value) -> String {
    if let Some(text) = item.as_str() {
        return text.to_owned();
    }
    let msg = item.get("msg").and_then(Value::as_str);
    let loc = item.get("loc").and_then(Value::as_array).map(|parts| {
        parts
            .iter()
            .map(|part| part.as_str().map_or_else(|| part.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(".")
    });
    match (loc, msg) {
        (Some(loc), Some(msg)) => problem_line(&loc, msg),
        (None, Some(msg)) => msg.to_owned(),
        _ => item.to_string(),
    }
}

/// One problem with a request, where it is and what is wrong:
/// `body.priority: must be between 0 and 9` (just the message without a place).
pub fn problem_line(loc: &str, msg: &str) -> String {
    if loc.is_empty() {
        msg.to_owned()
    } else {
        format!("{loc}: {msg}")
    }
}

/// A job's output (`GET /api/jobs/{id}/output`): a section per stream, then
/// the exit code. The streams are shown verbatim: they are what was asked for.
pub fn job_output(output: &JobOutput) -> String {
    let mut text = String::new();
    for (stream, body) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        text.push_str(&format!("== {stream} ==\n"));
        match body.as_deref() {
            None | Some("") => text.push_str("(empty)\n"),
            Some(body) => {
                text.push_str(body);
                if !body.ends_with('\n') {
                    text.push('\n');
                }
            }
        }
    }
    text.push_str(&format!("exit code: {}", optional(output.exit_code)));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cell_shows_scalars_plainly() {
        assert_eq!(cell(None), "-");
        assert_eq!(cell(Some(&json!(null))), "-");
        assert_eq!(cell(Some(&json!("idle"))), "idle");
        assert_eq!(cell(Some(&json!(42))), "42");
        assert_eq!(cell(Some(&json!(true))), "true");
    }

    #[test]
    fn cell_rounds_fractions_to_three_decimals() {
        assert_eq!(cell(Some(&json!(12.5))), "12.5");
        assert_eq!(cell(Some(&json!(0.123456))), "0.123");
        assert_eq!(cell(Some(&json!(3.0))), "3");
        assert_eq!(cell(Some(&json!(100.0004))), "100");
    }

    #[test]
    fn cell_shows_arrays_as_shell_words_and_objects_as_pairs() {
        assert_eq!(cell(Some(&json!(["echo", "hello world"]))), "echo 'hello world'");
        assert_eq!(cell(Some(&json!(["w1", "w2"]))), "w1 w2");
        assert_eq!(
            cell(Some(&json!({"team": "ml", "env": "prod"}))),
            "team=ml env=prod",
            "in the object's order"
        );
        assert_eq!(
            cell(Some(&json!({"mean": 0.5, "p95": null}))),
            "mean=0.5 p95=null"
        );
        assert_eq!(cell(Some(&json!([]))), "-");
        assert_eq!(cell(Some(&json!({}))), "-");
    }

    #[test]
    fn shell_quote_quotes_only_when_needed() {
        assert_eq!(shell_quote("ls"), "ls");
        assert_eq!(shell_quote("--flag=a/b.c"), "--flag=a/b.c");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn one_line_removes_control_characters() {
        assert_eq!(one_line("a\nb\tc\u{1b}[31m"), "a b c [31m");
    }

    #[test]
    fn time_drops_fractions_of_seconds() {
        let at: DateTime<Utc> = "2026-11-05T10:00:00.123456Z".parse().unwrap_or_default();
        assert_eq!(time(&at), "2026-11-05T10:00:00Z");
        let at: DateTime<Utc> = "2026-11-05T10:00:00.5+01:00".parse().unwrap_or_default();
        assert_eq!(time(&at), "2026-11-05T09:00:00Z");
    }

    #[test]
    fn optional_decimal_and_text_match_cell() {
        assert_eq!(optional(None::<i32>), "-");
        assert_eq!(optional(Some(3)), "3");
        assert_eq!(decimal(12.25), "12.25");
        assert_eq!(decimal(0.123456), "0.123");
        assert_eq!(text(&["a b", "c"]), "'a b' c");
        assert_eq!(text(&None::<String>), "-");
    }

    /// A row type for the table tests.
    struct Row {
        id: &'static str,
        status: Option<&'static str>,
        n: i32,
    }

    const ROW_COLUMNS: &[Column<Row>] = &[
        ("ID", |r| r.id.to_owned()),
        ("STATUS", |r| optional(r.status)),
        ("N", |r| r.n.to_string()),
    ];

    #[test]
    fn table_aligns_columns_and_marks_missing_fields() {
        let rows = [
            Row {
                id: "a",
                status: Some("running"),
                n: 1,
            },
            Row {
                id: "bbbb",
                status: None,
                n: 22,
            },
        ];
        let text = table(ROW_COLUMNS, &rows);
        assert_eq!(text, "ID    STATUS   N\na     running  1\nbbbb  -        22");
    }

    #[test]
    fn table_without_rows_is_its_header() {
        assert_eq!(table(ROW_COLUMNS, &[]), "ID  STATUS  N");
    }

    #[test]
    fn table_cuts_long_cells_and_keeps_them_on_one_line() {
        let long = "x".repeat(100);
        let rows = [format!("line one\n{long}")];
        let text = table::<String>(&[("TASK", |task| task.clone())], &rows);
        let row = text.lines().nth(1).unwrap_or_default();
        assert_eq!(row.chars().count(), MAX_CELL_CHARS);
        assert!(row.starts_with("line one x"));
        assert!(row.ends_with('…'));
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn key_values_keep_the_objects_order() {
        let value = json!({"worker_id": "w1", "zeta": 1, "status": "idle", "alpha": null});
        let text = key_values(&value);
        assert_eq!(text, "worker_id: w1\nzeta:      1\nstatus:    idle\nalpha:     -");
    }

    #[test]
    fn key_values_of_a_non_object_is_one_cell() {
        assert_eq!(key_values(&json!("ok")), "ok");
    }

    #[test]
    fn detail_lines_render_strings_and_validation_lists() {
        assert_eq!(detail_lines(&json!("Job x not found")), ["Job x not found"]);
        let detail = json!([
            {"loc": ["body", "required_workers"], "msg": "must be between 1 and 64", "type": "value_error"},
            {"loc": ["body", "command", 2], "msg": "must be a string"},
            {"loc": [], "msg": "invalid JSON"},
            {"type": "odd"},
            "plain"
        ]);
        assert_eq!(
            detail_lines(&detail),
            [
                "body.required_workers: must be between 1 and 64",
                "body.command.2: must be a string",
                "invalid JSON",
                r#"{"type":"odd"}"#,
                "plain",
            ]
        );
        assert!(detail_lines(&json!(null)).is_empty());
        assert_eq!(detail_lines(&json!({"a": 1})), [r#"{"a":1}"#]);
    }

    #[test]
    fn job_output_has_both_streams_and_the_exit_code() {
        let output = JobOutput {
            stdout: Some("hello\n".into()),
            stderr: Some("warn".into()),
            exit_code: Some(0),
            attempt: None,
            shard: 0,
            stdout_bytes: 0,
            stderr_bytes: 0,
            truncated: false,
            ..crate::fixtures::output()
        };
        assert_eq!(
            job_output(&output),
            "== stdout ==\nhello\n== stderr ==\nwarn\nexit code: 0"
        );
        let empty = JobOutput {
            stdout: None,
            stderr: Some(String::new()),
            exit_code: None,
            attempt: None,
            shard: 0,
            stdout_bytes: 0,
            stderr_bytes: 0,
            truncated: false,
            ..output
        };
        assert_eq!(
            job_output(&empty),
            "== stdout ==\n(empty)\n== stderr ==\n(empty)\nexit code: -"
        );
    }
}
