//! `/api/schedules*`: a job template submitted on a cron expression in a
//! time zone, what a schedule may hold, and how schedules and their runs
//! look.

use super::error::{check_no_nul, FieldError};
use super::jobs::SubmitRequest;
use crate::JobStatus;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// Longest schedule name, in characters.
pub const MAX_NAME: usize = 200;
/// Longest cron expression, in characters (a real one is a few dozen).
pub const MAX_CRON: usize = 200;
/// Fire times `GET /api/schedules/{id}` shows ahead.
pub const NEXT_FIRES: usize = 5;
/// Runs `GET /api/schedules/{id}` shows, newest first.
pub const RECENT_RUNS: i64 = 20;

/// What a tick does while the schedule's previous job is unfinished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Submit anyway: runs may overlap.
    #[default]
    Allow,
    /// Do not submit: the tick is recorded `skipped`.
    Skip,
    /// Cancel the previous job, then submit.
    CancelPrevious,
}

impl Overlap {
    /// The stored and wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Overlap::Allow => "allow",
            Overlap::Skip => "skip",
            Overlap::CancelPrevious => "cancel_previous",
        }
    }

    /// The policy spelled `s` (as [`Overlap::as_str`] writes it).
    pub fn parse(s: &str) -> Option<Overlap> {
        [Overlap::Allow, Overlap::Skip, Overlap::CancelPrevious]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// What became of one tick of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// A job was submitted on time.
    Fired,
    /// A job was submitted late, for a tick missed while no controller ran
    /// (`catch_up`).
    CaughtUp,
    /// No job: the previous one was unfinished and the policy is `skip`.
    Skipped,
    /// No job: the tick passed while no controller ran and `catch_up` is off.
    Missed,
    /// No job: the submission was refused (a quota); `error` says why.
    Failed,
}

impl RunOutcome {
    /// Every outcome, for the metric's labels and parsing.
    pub const ALL: [RunOutcome; 5] = [
        RunOutcome::Fired,
        RunOutcome::CaughtUp,
        RunOutcome::Skipped,
        RunOutcome::Missed,
        RunOutcome::Failed,
    ];

    /// The stored and wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Fired => "fired",
            RunOutcome::CaughtUp => "caught_up",
            RunOutcome::Skipped => "skipped",
            RunOutcome::Missed => "missed",
            RunOutcome::Failed => "failed",
        }
    }

    /// The outcome spelled `s`.
    pub fn parse(s: &str) -> Option<RunOutcome> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// A cron expression in a time zone: when a schedule fires. Parsed once
/// from a schedule's texts, both to check a request and to plan ticks.
#[derive(Debug, Clone)]
pub struct Cadence {
    cron: Cron,
    zone: Tz,
}

impl Cadence {
    /// Parses `cron` (5 fields, or 6 with seconds first) and the IANA zone
    /// `timezone`; each failure is a 422 problem at its own field.
    pub fn parse(cron: &str, timezone: &str) -> Result<Cadence, Vec<FieldError>> {
        let mut errors = Vec::new();
        let parsed = parse_cron(cron).map_err(|msg| errors.push(FieldError::body("cron", msg)));
        let zone = timezone.parse::<Tz>().map_err(|_| {
            errors.push(FieldError::body(
                "timezone",
                "must be an IANA time zone name, e.g. Europe/Paris or UTC",
            ));
        });
        match (parsed, zone) {
            (Ok(cron), Ok(zone)) => Ok(Cadence { cron, zone }),
            _ => Err(errors),
        }
    }

    /// The first tick strictly after `after`, if there is one.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last tick at or before `at`, if there is one.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&self.zone);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Up to `n` ticks strictly after `after`, in order.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        std::iter::successors(self.next_after(after), |t| self.next_after(*t))
            .take(n)
            .collect()
    }
}

/// `cron` as croner reads it: 5 fields, or 6 with seconds first; no years.
/// An expression that never fires (`0 0 31 2 *`) is refused too.
fn parse_cron(cron: &str) -> Result<Cron, String> {
    if cron.chars().count() > MAX_CRON || cron.contains('\0') {
        return Err(format!("must be at most {MAX_CRON} characters, without NUL"));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build();
    let parsed = parser
        .parse(cron)
        .map_err(|e| format!("is not a cron expression of 5 fields (or 6 with seconds): {e}"))?;
    let now = Utc::now();
    if parsed.find_next_occurrence(&now, false).is_err() {
        return Err("never fires".to_owned());
    }
    Ok(parsed)
}

/// Reads a value of `T` from a JSON object only: serde's derive would also
/// read a struct from an array, which the schema refuses.
fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(de: D) -> Result<T, D::Error> {
    struct ObjectOnly<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    de.deserialize_map(ObjectOnly(std::marker::PhantomData))
}

/// Reads a present template from a JSON object only (see [`object`]).
fn some_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(de: D) -> Result<Option<T>, D::Error> {
    object(de).map(Some)
}

/// `POST /api/schedules` body. The server reads it from a JSON object only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateScheduleRequest {
    /// For people (1..=200 characters, no NUL).
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")
    )]
    pub name: String,
    /// Cron expression: 5 fields (`*/5 * * * *`), or 6 with seconds first.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")
    )]
    pub cron: String,
    /// IANA time zone the expression is read in (default `UTC`).
    #[serde(default = "utc")]
    #[cfg_attr(feature = "openapi", schema(default = "UTC", max_length = 64))]
    pub timezone: String,
    /// The job each tick submits: what `POST /api/jobs/submit` takes, but
    /// no `idempotency_key`.
    #[serde(deserialize_with = "object")]
    #[cfg_attr(feature = "openapi", schema(schema_with = super::schema::template))]
    pub template: SubmitRequest,
    /// `false` pauses it (default `true`).
    #[serde(default = "yes")]
    #[cfg_attr(feature = "openapi", schema(default = true))]
    pub enabled: bool,
    /// While the previous job is unfinished (default `allow`).
    #[serde(default)]
    pub overlap: Overlap,
    /// Whether the latest tick missed while no controller ran is fired on
    /// return (`true`) or recorded `missed` (default `false`).
    #[serde(default)]
    pub catch_up: bool,
}

fn utc() -> String {
    "UTC".to_owned()
}

fn yes() -> bool {
    true
}

impl CreateScheduleRequest {
    /// Every rule this request breaks, each at its field (the template's at
    /// `body.template.<field>`), and the parsed cadence when it has none.
    pub fn check(&self) -> Result<Cadence, Vec<FieldError>> {
        let mut errors = name_problems(&self.name);
        errors.extend(template_problems(&self.template));
        match Cadence::parse(&self.cron, &self.timezone) {
            Ok(cadence) if errors.is_empty() => Ok(cadence),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        }
    }
}

/// The name rule's problems.
fn name_problems(name: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME {
        errors.push(FieldError::body(
            "name",
            format!("must be 1 to {MAX_NAME} characters"),
        ));
    }
    check_no_nul(&mut errors, "name", [name]);
    errors
}

/// A template's problems, located under `body.template`: a submission's
/// rules, and no idempotency key (each tick is a new job).
pub fn template_problems(template: &SubmitRequest) -> Vec<FieldError> {
    let mut errors = template.problems();
    if template.idempotency_key.is_some() {
        errors.push(FieldError::body(
            "idempotency_key",
            "is not allowed in a schedule's template",
        ));
    }
    // Every tick would wait for the same jobs: a schedule's runs are not a
    // dependency graph.
    if !template.depends_on.is_empty() || template.key.is_some() || template.run_on_failure {
        errors.push(FieldError::body(
            "depends_on",
            "dependencies (depends_on, key, run_on_failure) are not allowed in a schedule's template",
        ));
    }
    for e in &mut errors {
        e.loc.insert(1, "template".to_owned());
    }
    errors
}

/// `PATCH /api/schedules/{schedule_id}` body: a field left out (or `null`,
/// except `template`, which is an object when given) stays as it is. Read
/// from a JSON object only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateScheduleRequest {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")
    )]
    pub name: Option<String>,
    /// New cron expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")
    )]
    pub cron: Option<String>,
    /// New time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub timezone: Option<String>,
    /// New template (replacing the old one whole).
    #[cfg_attr(feature = "openapi", schema(schema_with = super::schema::template))]
    #[serde(
        default,
        deserialize_with = "some_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub template: Option<SubmitRequest>,
    /// `false` pauses, `true` resumes (ticks passed while paused are not
    /// caught up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// New overlap policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<Overlap>,
    /// New catch-up setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<bool>,
}

impl UpdateScheduleRequest {
    /// Every rule the given fields break, except the cadence's, which the
    /// server checks with the stored cron and zone it keeps.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut errors = self.name.as_deref().map(name_problems).unwrap_or_default();
        if let Some(template) = &self.template {
            errors.extend(template_problems(template));
        }
        errors
    }
}

/// A schedule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Schedule {
    /// Its id.
    pub schedule_id: Uuid,
    /// For people.
    pub name: String,
    /// Cron expression.
    pub cron: String,
    /// IANA time zone.
    pub timezone: String,
    /// The job each tick submits.
    #[cfg_attr(feature = "openapi", schema(schema_with = super::schema::template))]
    pub template: SubmitRequest,
    /// `false` while paused.
    pub enabled: bool,
    /// While the previous job is unfinished.
    pub overlap: Overlap,
    /// Whether a tick missed while no controller ran is fired on return.
    pub catch_up: bool,
    /// The user who made it (its jobs are theirs).
    pub owner: Uuid,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// The next fire times (up to five; none while paused).
    pub next_fire_times: Vec<DateTime<Utc>>,
}

/// One handled tick of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleRun {
    /// The tick.
    pub fire_time: DateTime<Utc>,
    /// What became of it.
    pub outcome: RunOutcome,
    /// The job it submitted (`null` if none, or deleted by retention).
    pub job_id: Option<Uuid>,
    /// That job's current status.
    pub job_status: Option<JobStatus>,
    /// Why it failed, for `failed`.
    pub error: Option<String>,
    /// When the controller handled it.
    pub recorded_at: DateTime<Utc>,
}

/// `GET /api/schedules/{schedule_id}`: the schedule and its latest runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleDetail {
    /// The schedule.
    #[serde(flatten)]
    pub schedule: Schedule,
    /// The last 20 runs, newest first.
    pub runs: Vec<ScheduleRun>,
}

/// `GET /api/schedules`: the caller's schedules (an admin's: all), by name
/// (ties by id); every one of them unless `limit` was given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleList {
    /// The schedules.
    pub schedules: Vec<Schedule>,
    /// Pass as `cursor` for the next page; `null` on the last (and always
    /// without `limit`). Read as `null` from a controller that predates
    /// paging.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Longest cursor `GET /api/schedules` issues: URL-safe base64 (no
/// padding) of a schedule id's 16 bytes and a name of at most
/// [`MAX_NAME`] characters of up to 4 UTF-8 bytes each.
pub const MAX_CURSOR: usize = (4 * (16 + 4 * MAX_NAME)).div_ceil(3);

/// `GET /api/schedules` query. Both parameters are optional so that a
/// client that sends neither still gets every schedule in one answer, as
/// before paging existed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct ScheduleListQuery {
    /// Page size, 1..=500 (default: no bound, every schedule after
    /// `cursor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 500))]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page (empty: the first page).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        param(pattern = "^([A-Za-z0-9_-]{22,1088})?$", max_length = 1088)
    )]
    pub cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(value: serde_json::Value) -> Result<CreateScheduleRequest, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn a_minimal_request_takes_the_defaults() {
        let req = create(json!({"name": "n", "cron": "*/5 * * * *", "template": {"task_description": "x"}}))
            .unwrap();
        assert_eq!(
            (req.timezone.as_str(), req.enabled, req.overlap, req.catch_up),
            ("UTC", true, Overlap::Allow, false)
        );
        assert!(req.check().is_ok());
    }

    #[test]
    fn a_template_must_be_an_object() {
        let err = create(json!({"name": "n", "cron": "* * * * *", "template": ["x"]})).unwrap_err();
        assert!(err.to_string().contains("expected an object"), "{err}");
        let err = serde_json::from_value::<UpdateScheduleRequest>(json!({"template": ["x"]})).unwrap_err();
        assert!(err.to_string().contains("expected an object"), "{err}");
    }

    #[test]
    fn each_problem_is_at_its_field() {
        let req = create(json!({"name": "", "cron": "61 * * * *", "timezone": "Mars/Base",
            "template": {"task_description": "", "idempotency_key": "k"}}))
        .unwrap();
        let locs: Vec<String> = req
            .check()
            .unwrap_err()
            .iter()
            .map(FieldError::location)
            .collect();
        let expected = [
            "body.name",
            "body.template.task_description",
            "body.template.idempotency_key",
            "body.cron",
            "body.timezone",
        ];
        assert_eq!(locs, expected);
    }

    #[test]
    fn cron_takes_five_or_six_fields_and_must_fire() {
        for ok in ["* * * * *", "*/10 * * * * *", "0 9 * * MON-FRI"] {
            assert!(Cadence::parse(ok, "UTC").is_ok(), "{ok}");
        }
        for bad in ["", "* * * *", "* * * * * * *", "0 0 31 2 *", "@reboot"] {
            assert!(Cadence::parse(bad, "UTC").is_err(), "{bad}");
        }
    }

    #[test]
    fn the_documented_cursor_bound_is_the_longest_cursor() {
        assert_eq!(
            MAX_CURSOR, 1088,
            "the OpenAPI max_length of `cursor` and docs/api.md"
        );
    }

    #[test]
    fn a_list_without_next_cursor_reads_as_the_last_page() {
        let list: ScheduleList = serde_json::from_value(json!({"schedules": []})).unwrap();
        assert_eq!(list.next_cursor, None);
        let sent = serde_json::to_value(&list).unwrap();
        assert_eq!(sent, json!({"schedules": [], "next_cursor": null}));
    }

    #[test]
    fn ticks_are_read_in_the_zone() {
        let cadence = Cadence::parse("0 9 * * *", "Europe/Paris").unwrap();
        let after = DateTime::parse_from_rfc3339("2026-07-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let next = cadence.upcoming(after, 2);
        let expected = ["2026-07-01T07:00:00Z", "2026-07-02T07:00:00Z"]
            .map(|t| DateTime::parse_from_rfc3339(t).unwrap().to_utc());
        assert_eq!(next, expected, "09:00 in Paris is 07:00 UTC in summer");
    }
}
