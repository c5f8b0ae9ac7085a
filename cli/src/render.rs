//! Pure text rendering for people: single values, aligned tables, key-value
//! lines, the API's error details and a job's output. Nothing here does I/O.

use serde_json::{Number, Value};

/// Longest cell a table shows before cutting it with an ellipsis, so that one
/// long task description does not push the other columns off the screen.
pub const MAX_CELL_CHARS: usize = 48;

/// What a missing, null or empty value is shown as.
pub const EMPTY: &str = "-";

/// Spaces between two table columns.
const COLUMN_GAP: &str = "  ";

/// A table column: its header and the JSON field it shows.
pub type Column = (&'static str, &'static str);

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
        Some(f) if n.is_f64() => {
            let fixed = format!("{f:.3}");
            fixed.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
        _ => n.to_string(),
    }
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

/// An RFC 3339 timestamp without its fraction of a second
/// (`2026-11-05T10:00:00.123456Z` → `2026-11-05T10:00:00Z`); anything else unchanged.
pub fn short_time(s: &str) -> String {
    match s.split_once('.') {
        Some((head, tail)) if head.len() == 19 && head.as_bytes().get(10) == Some(&b'T') => {
            format!("{head}{}", tail.trim_start_matches(|c: char| c.is_ascii_digit()))
        }
        _ => s.to_owned(),
    }
}

/// A table cell: on one line, timestamps shortened, at most [`MAX_CELL_CHARS`].
fn fit(value: Option<&Value>) -> String {
    let text = short_time(&one_line(&cell(value)));
    if text.chars().count() <= MAX_CELL_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_CELL_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// `rows` (JSON objects) in aligned columns under the given headers; a
/// missing field shows as [`EMPTY`].
pub fn table(columns: &[Column], rows: &[Value]) -> String {
    let mut grid: Vec<Vec<String>> = vec![columns.iter().map(|(header, _)| (*header).to_owned()).collect()];
    grid.extend(
        rows.iter()
            .map(|row| columns.iter().map(|(_, field)| fit(row.get(*field))).collect()),
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

/// The fields of a JSON object as aligned `key: value` lines: the keys in
/// `order` first (those present), then every other key alphabetically. A
/// value that is not an object is shown as a single [`cell`].
pub fn key_values(value: &Value, order: &[&str]) -> String {
    let Some(map) = value.as_object() else {
        return cell(Some(value));
    };
    let mut keys: Vec<&str> = order.iter().copied().filter(|k| map.contains_key(*k)).collect();
    let mut rest: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !order.contains(k))
        .collect();
    rest.sort_unstable();
    keys.extend(rest);
    let width = keys.iter().map(|k| k.chars().count()).max().unwrap_or(0) + 1;
    keys.iter()
        .map(|key| {
            let label = format!("{key}:");
            format!("{label:<width$} {}", one_line(&cell(map.get(*key))))
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
        (Some(loc), Some(msg)) if !loc.is_empty() => format!("{loc}: {msg}"),
        (_, Some(msg)) => msg.to_owned(),
        _ => item.to_string(),
    }
}

/// A job's output (`GET /api/jobs/{id}/output`): a section per stream, then
/// the exit code. The streams are shown verbatim: they are what was asked for.
pub fn job_output(output: &Value) -> String {
    let mut text = String::new();
    for stream in ["stdout", "stderr"] {
        text.push_str(&format!("== {stream} ==\n"));
        match output.get(stream).and_then(Value::as_str) {
            None | Some("") => text.push_str("(empty)\n"),
            Some(body) => {
                text.push_str(body);
                if !body.ends_with('\n') {
                    text.push('\n');
                }
            }
        }
    }
    text.push_str(&format!("exit code: {}", cell(output.get("exit_code"))));
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
            "env=prod team=ml"
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
    fn short_time_drops_fractions_of_seconds() {
        assert_eq!(short_time("2026-11-05T10:00:00.123456Z"), "2026-11-05T10:00:00Z");
        assert_eq!(
            short_time("2026-11-05T10:00:00.5+01:00"),
            "2026-11-05T10:00:00+01:00"
        );
        assert_eq!(short_time("2026-11-05T10:00:00Z"), "2026-11-05T10:00:00Z");
        assert_eq!(short_time("version 1.2"), "version 1.2");
    }

    #[test]
    fn table_aligns_columns_and_marks_missing_fields() {
        let rows = [
            json!({"id": "a", "status": "running", "n": 1}),
            json!({"id": "bbbb", "n": 22}),
        ];
        let text = table(&[("ID", "id"), ("STATUS", "status"), ("N", "n")], &rows);
        assert_eq!(text, "ID    STATUS   N\na     running  1\nbbbb  -        22");
    }

    #[test]
    fn table_without_rows_is_its_header() {
        assert_eq!(table(&[("ID", "id"), ("NAME", "name")], &[]), "ID  NAME");
    }

    #[test]
    fn table_cuts_long_cells_and_keeps_them_on_one_line() {
        let long = "x".repeat(100);
        let rows = [json!({"task": format!("line one\n{long}")})];
        let text = table(&[("TASK", "task")], &rows);
        let row = text.lines().nth(1).unwrap_or_default();
        assert_eq!(row.chars().count(), MAX_CELL_CHARS);
        assert!(row.starts_with("line one x"));
        assert!(row.ends_with('…'));
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn table_shortens_timestamps() {
        let rows = [json!({"at": "2026-11-05T10:00:00.123456Z"})];
        assert_eq!(table(&[("AT", "at")], &rows), "AT\n2026-11-05T10:00:00Z");
    }

    #[test]
    fn key_values_follow_the_given_order_then_the_rest() {
        let value = json!({"zeta": 1, "status": "idle", "alpha": null, "worker_id": "w1"});
        let text = key_values(&value, &["worker_id", "status", "missing"]);
        assert_eq!(text, "worker_id: w1\nstatus:    idle\nalpha:     -\nzeta:      1");
    }

    #[test]
    fn key_values_of_a_non_object_is_one_cell() {
        assert_eq!(key_values(&json!("ok"), &[]), "ok");
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
        let output = json!({"stdout": "hello\n", "stderr": "warn", "exit_code": 0});
        assert_eq!(
            job_output(&output),
            "== stdout ==\nhello\n== stderr ==\nwarn\nexit code: 0"
        );
        let empty = json!({"stdout": null, "stderr": "", "exit_code": null});
        assert_eq!(
            job_output(&empty),
            "== stdout ==\n(empty)\n== stderr ==\n(empty)\nexit code: -"
        );
    }
}
