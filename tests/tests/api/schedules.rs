//! Schedules: created, read, listed, changed, paused and deleted through
//! the API; refused at the field when wrong; seen only by their owner (and
//! admins); fired by the leader exactly once per tick, with two replicas
//! and across a restart, under each overlap policy and catch-up setting.

use crate::helpers::{assert_shape, metric, validation_items};
use integration_tests::{spawn_app, spawn_app_with, Reply, TestApp};
use orchestrator_shared::api::{Job, RunOutcome, Schedule, ScheduleDetail, ScheduleList};
use orchestrator_shared::JobStatus;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Flags of a controller whose leader looks for due ticks often.
const FAST: [&str; 2] = ["--reaper-interval-ms", "100"];
/// Longest wait for the leader to have handled some ticks.
const PATIENCE: Duration = Duration::from_secs(30);

/// A valid body firing every second with `extra` fields merged in.
fn every_second(extra: &Value) -> Value {
    let mut body = json!({"name": "nightly", "cron": "* * * * * *", "timezone": "UTC",
        "template": {"task_description": "scheduled", "labels": {"k": "v"}}});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

/// Creates a schedule from `body` as `token`'s user, answering its id.
async fn create_ok(app: &TestApp, token: &str, body: &Value) -> Uuid {
    let r = app.create_schedule(token, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let schedule: Schedule = assert_shape(&r.json);
    schedule.schedule_id
}

/// The schedule's detail as the admin sees it.
async fn detail(app: &TestApp, id: Uuid) -> ScheduleDetail {
    let r = app.get_schedule(&app.admin_token, id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_shape(&r.json)
}

/// Polls the schedule until `done` holds for its detail; fails after
/// [`PATIENCE`].
async fn wait_for(
    app: &TestApp,
    id: Uuid,
    what: &str,
    done: impl Fn(&ScheduleDetail) -> bool,
) -> ScheduleDetail {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let d = detail(app, id).await;
        if done(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "{what}: {:?}", d.runs);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many of the runs had `outcome`.
fn outcomes(d: &ScheduleDetail, outcome: RunOutcome) -> usize {
    d.runs.iter().filter(|r| r.outcome == outcome).count()
}

/// The jobs of schedule `id`, newest first, as the admin lists them.
async fn jobs_of(app: &TestApp, id: Uuid) -> Vec<Job> {
    let r = app
        .list_jobs(
            &app.admin_token,
            &[("schedule", &id.to_string()), ("limit", "500")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    serde_json::from_value(r.json["jobs"].clone()).unwrap_or_else(|e| panic!("{e}: {}", r.text))
}

/// Prints how long after its tick each job was created (the reaper's
/// interval bounds it), for the record: a figure, not a check.
fn print_lateness(d: &ScheduleDetail, jobs: &[Job]) {
    let mut late: Vec<i64> = d
        .runs
        .iter()
        .filter_map(|r| {
            let job = jobs.iter().find(|j| Some(j.job_id) == r.job_id)?;
            Some((job.created_at - r.fire_time).num_milliseconds())
        })
        .collect();
    late.sort_unstable();
    if let (Some(min), Some(max)) = (late.first(), late.last()) {
        println!(
            "tick to job: {} jobs, {min} ms to {max} ms, median {} ms",
            late.len(),
            late[late.len() / 2]
        );
    }
}

/// Across an outage, exactly one late tick was handled as `handled` (with
/// a job or without, per `with_job`) and none as `not`.
fn assert_one_late_tick(d: &ScheduleDetail, handled: RunOutcome, not: RunOutcome, with_job: bool) {
    let counts = (outcomes(d, handled), outcomes(d, not));
    assert_eq!(counts, (1, 0), "{handled:?} once, {not:?} never: {:?}", d.runs);
    let late = d.runs.iter().find(|r| r.outcome == handled);
    assert!(late.is_some_and(|r| r.job_id.is_some() == with_job), "{late:?}");
}

/// Pauses the schedule, so what it fired can be counted at rest.
async fn pause(app: &TestApp, id: Uuid) {
    let r = app
        .update_schedule(&app.admin_token, id, &json!({"enabled": false}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// The `loc`s of a 422, joined with dots.
fn locs(r: &integration_tests::Reply) -> Vec<String> {
    assert_eq!(r.status, 422, "{}", r.text);
    validation_items(r)
        .iter()
        .map(|i| {
            let parts: Vec<&str> = i["loc"]
                .as_array()
                .map(|l| l.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            parts.join(".")
        })
        .collect()
}

#[tokio::test]
async fn a_schedule_is_created_read_listed_changed_and_deleted() {
    let app = spawn_app().await;
    let token = app.user_token("sched-owner", &["jobs:write"]).await;
    let body = json!({"name": "daily", "cron": "0 9 * * *", "timezone": "Europe/Paris",
        "template": {"task_description": "report", "priority": 7}, "overlap": "skip", "catch_up": true});
    let r = app.create_schedule(&token, &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let made: Schedule = assert_shape(&r.json);
    assert_eq!(
        (made.name.as_str(), made.timezone.as_str()),
        ("daily", "Europe/Paris")
    );
    assert!(made.enabled && made.catch_up);
    assert_eq!(made.template.priority, Some(7));
    assert_eq!(made.next_fire_times.len(), 5, "{}", r.text);
    assert!(made.next_fire_times.windows(2).all(|w| w[0] < w[1]));
    let id = made.schedule_id;

    let got = app.get_schedule(&token, id).await;
    assert_eq!(got.status, 200, "{}", got.text);
    let got: ScheduleDetail = assert_shape(&got.json);
    assert_eq!(got.schedule.schedule_id, id);
    assert!(got.runs.is_empty());
    let listed = app.list_schedules(&token).await;
    let listed: ScheduleList = assert_shape(&listed.json);
    assert_eq!(
        listed.schedules.iter().map(|s| s.schedule_id).collect::<Vec<_>>(),
        [id]
    );

    let paused = app
        .update_schedule(&token, id, &json!({"enabled": false, "name": "renamed"}))
        .await;
    assert_eq!(paused.status, 200, "{}", paused.text);
    let paused: Schedule = assert_shape(&paused.json);
    assert!(
        !paused.enabled && paused.next_fire_times.is_empty(),
        "a paused schedule fires never"
    );
    assert_eq!(
        (paused.name.as_str(), paused.cron.as_str()),
        ("renamed", "0 9 * * *")
    );
    let resumed = app.update_schedule(&token, id, &json!({"enabled": true})).await;
    let resumed: Schedule = assert_shape(&resumed.json);
    assert!(resumed.enabled && resumed.next_fire_times.len() == 5);

    assert_eq!(app.delete_schedule(&token, id).await.status, 204);
    assert_eq!(app.get_schedule(&token, id).await.status, 404);
    assert_eq!(app.delete_schedule(&token, id).await.status, 404);
    app.stop().await;
}

#[tokio::test]
async fn bad_schedules_are_refused_at_their_field() {
    let app = spawn_app().await;
    let t = app.admin_token.clone();
    let cases = [
        (every_second(&json!({"cron": "61 * * * *"})), "body.cron"),
        (
            every_second(&json!({"timezone": "Mars/Olympus"})),
            "body.timezone",
        ),
        (
            every_second(&json!({"template": {"task_description": "x", "priority": 99}})),
            "body.template.priority",
        ),
        (
            every_second(&json!({"template": {"task_description": "x", "idempotency_key": "k"}})),
            "body.template.idempotency_key",
        ),
        (every_second(&json!({"template": ["x"]})), "body.template"),
        (every_second(&json!({"overlap": "sometimes"})), "body.overlap"),
        (json!([null, null]), "body"),
        (json!(5), "body"),
        (json!("x"), "body"),
    ];
    for (body, loc) in cases {
        assert_eq!(locs(&app.create_schedule(&t, &body).await), [loc], "{body}");
    }
    let none: ScheduleList = assert_shape(&app.list_schedules(&t).await.json);
    assert!(none.schedules.is_empty(), "nothing was created");
    app.stop().await;
}

#[tokio::test]
async fn bad_changes_and_filters_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let t = app.admin_token.clone();
    let id = create_ok(
        &app,
        &t,
        &json!({"name": "n", "cron": "0 0 * * *", "template": {"task_description": "x"}}),
    )
    .await;
    assert_eq!(
        locs(&app.update_schedule(&t, id, &json!([null, null])).await),
        ["body"]
    );
    assert_eq!(
        locs(&app.update_schedule(&t, id, &json!({"cron": "* *"})).await),
        ["body.cron"]
    );
    assert_eq!(
        locs(&app.update_schedule(&t, id, &json!({"name": ""})).await),
        ["body.name"]
    );
    let unchanged = detail(&app, id).await;
    assert_eq!(
        (unchanged.schedule.name.as_str(), unchanged.schedule.cron.as_str()),
        ("n", "0 0 * * *")
    );
    for filter in ["", "not-a-uuid"] {
        let r = app.list_jobs(&t, &[("schedule", filter)]).await;
        assert_eq!(locs(&r), ["query.schedule"], "?schedule={filter}");
    }
    app.stop().await;
}

#[tokio::test]
async fn schedules_need_their_scopes_and_belong_to_their_owner() {
    let app = spawn_app().await;
    let reader = app.user_token("sched-reader", &["jobs:read"]).await;
    let body = json!({"name": "n", "cron": "0 0 * * *", "template": {"task_description": "x"}});
    assert_eq!(app.create_schedule(&reader, &body).await.status, 403);
    assert_eq!(app.list_schedules(&reader).await.status, 200);
    let owner = app.user_token("sched-a", &["jobs:write"]).await;
    let other = app.user_token("sched-b", &["jobs:write"]).await;
    let id = create_ok(&app, &owner, &body).await;
    assert_eq!(
        app.update_schedule(&reader, id, &json!({"enabled": false}))
            .await
            .status,
        403
    );
    assert_eq!(app.get_schedule(&other, id).await.status, 404);
    assert_eq!(
        app.update_schedule(&other, id, &json!({"enabled": false}))
            .await
            .status,
        404
    );
    assert_eq!(app.delete_schedule(&other, id).await.status, 404);
    let theirs: ScheduleList = assert_shape(&app.list_schedules(&other).await.json);
    assert!(
        theirs.schedules.is_empty(),
        "another user's schedule is not listed"
    );
    let all: ScheduleList = assert_shape(&app.list_schedules(&app.admin_token).await.json);
    assert_eq!(all.schedules.len(), 1, "an admin sees every schedule");
    assert_eq!(app.get_schedule(&owner, id).await.status, 200);
    app.stop().await;
}

/// `GET /api/schedules` with `query` (each pair percent-encoded) as
/// `token`'s user.
async fn list_with(app: &TestApp, token: &str, query: &[(&str, &str)]) -> Reply {
    let mut path = "/api/schedules".to_owned();
    if !query.is_empty() {
        let mut url = reqwest::Url::parse("http://query.invalid/").unwrap_or_else(|e| panic!("{e}"));
        url.query_pairs_mut().extend_pairs(query);
        path = format!("{path}?{}", url.query().unwrap_or_default());
    }
    Reply::read(app.get(&path, token).await).await
}

/// One page read as `token`'s user with `query`, checked to be a 200 of
/// exactly the list's fields.
async fn page(app: &TestApp, token: &str, query: &[(&str, &str)]) -> ScheduleList {
    let r = list_with(app, token, query).await;
    assert_eq!(r.status, 200, "{query:?}: {}", r.text);
    assert_shape(&r.json)
}

/// Every page of `limit` (from `cursor`, if given) as `token`'s user,
/// concatenated; each page but the last is full and names a next cursor
/// never seen before; the last one's is `null`.
async fn every_page(app: &TestApp, token: &str, limit: usize, cursor: Option<String>) -> Vec<Schedule> {
    let (mut all, mut cursor, mut seen) = (Vec::new(), cursor, BTreeSet::new());
    let limit_text = limit.to_string();
    loop {
        let mut query = vec![("limit", limit_text.as_str())];
        query.extend(cursor.as_deref().map(|c| ("cursor", c)));
        let list = page(app, token, &query).await;
        assert!(list.schedules.len() <= limit, "{query:?}");
        all.extend(list.schedules.clone());
        match list.next_cursor {
            None => return all,
            Some(next) => {
                assert_eq!(list.schedules.len(), limit, "only the last page is short");
                assert!(seen.insert(next.clone()), "cursor {next} issued twice");
                cursor = Some(next);
            }
        }
    }
}

/// Ids and names of `schedules`, in order.
fn keys(schedules: &[Schedule]) -> Vec<(Uuid, String)> {
    schedules
        .iter()
        .map(|s| (s.schedule_id, s.name.clone()))
        .collect()
}

/// A schedule named `name` that fires at midnight (its next fire times do
/// not move while a test lists it).
fn named(name: &str) -> Value {
    json!({"name": name, "cron": "0 0 * * *", "template": {"task_description": "x"}})
}

#[tokio::test]
async fn pages_of_schedules_add_up_to_the_whole_list_in_order() {
    let app = spawn_app().await;
    let t = app.admin_token.clone();
    // In this order under any collation: the digit after `s` decides, then
    // a prefix sorts first; the same name twice is ordered by id.
    let names = [
        "s1 with  spaces",
        "s2 100% sure",
        "s3 a/b?c=d&e#f+g",
        "s4 ünïcødé 名前",
        "s5 shared",
        "s5 shared",
        "s5 shared prefix",
    ];
    for name in names {
        create_ok(&app, &t, &named(name)).await;
    }
    let whole = page(&app, &t, &[]).await;
    assert_eq!(
        whole.next_cursor, None,
        "without limit: every schedule, no cursor"
    );
    let listed: Vec<&str> = whole.schedules.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(listed, names);
    let tie: Vec<Uuid> = whole.schedules[4..6].iter().map(|s| s.schedule_id).collect();
    assert!(tie[0] < tie[1], "same name: by id");
    for limit in [1, 2, 3, 7, 500] {
        let paged = every_page(&app, &t, limit, None).await;
        assert_eq!(keys(&paged), keys(&whole.schedules), "limit {limit}");
    }
    let first = page(&app, &t, &[("limit", "2"), ("cursor", "")]).await;
    assert_eq!(
        keys(&first.schedules),
        keys(&whole.schedules[..2]),
        "empty cursor: first page"
    );
    let cursor = first.next_cursor.unwrap_or_else(|| panic!("more follow"));
    let rest = page(&app, &t, &[("cursor", &cursor)]).await;
    assert_eq!(
        keys(&rest.schedules),
        keys(&whole.schedules[2..]),
        "cursor alone: all the rest"
    );
    assert_eq!(rest.next_cursor, None);
    // The cursor holds the name and id, not a reference to the row: the
    // next page is the same after that schedule is renamed or deleted.
    let last_shown = whole.schedules[1].schedule_id;
    let renamed = app.update_schedule(&t, last_shown, &json!({"name": "zzz"})).await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    assert_eq!(app.delete_schedule(&t, last_shown).await.status, 204);
    let after = every_page(&app, &t, 2, Some(cursor)).await;
    assert_eq!(keys(&after), keys(&whole.schedules[2..]));
    app.stop().await;
}

#[tokio::test]
async fn without_parameters_every_schedule_comes_in_one_answer() {
    let app = spawn_app().await;
    let t = app.admin_token.clone();
    // More than the default page of `GET /api/jobs` (50): the listing has
    // no bound unless asked for one.
    for i in 0..60 {
        create_ok(&app, &t, &named(&format!("n{i:02}"))).await;
    }
    let r = app.list_schedules(&t).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["next_cursor"], Value::Null, "{}", r.text);
    let whole: ScheduleList = assert_shape(&r.json);
    assert_eq!(whole.schedules.len(), 60);
    let paged = every_page(&app, &t, 500, None).await;
    assert_eq!(keys(&paged), keys(&whole.schedules));
    app.stop().await;
}

/// A query of `GET /api/schedules` and the `loc`s of the 422 it gets.
type BadQuery<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

#[tokio::test]
async fn bad_page_parameters_are_422_at_their_parameter() {
    let app = spawn_app().await;
    let t = app.admin_token.clone();
    create_ok(&app, &t, &named("only")).await;
    let nul_name = {
        use base64::Engine;
        let bytes = [Uuid::new_v4().as_bytes().as_slice(), b"a\0"].concat();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    let too_long = "A".repeat(2000);
    let cases: [BadQuery; 9] = [
        (&[("limit", "0")], &["query.limit"]),
        (&[("limit", "501")], &["query.limit"]),
        (&[("limit", "x")], &["query.limit"]),
        (&[("limit", "")], &["query.limit"]),
        (&[("cursor", "garbage!")], &["query.cursor"]),
        (&[("cursor", "%/+=")], &["query.cursor"]),
        (&[("cursor", "AAAA")], &["query.cursor"]),
        (
            &[("limit", "2"), ("cursor", too_long.as_str())],
            &["query.cursor"],
        ),
        (
            &[("limit", "0"), ("cursor", "garbage!")],
            &["query.limit", "query.cursor"],
        ),
    ];
    for (query, expected) in cases {
        assert_eq!(locs(&list_with(&app, &t, query).await), expected, "{query:?}");
    }
    for limit in ["1", "500"] {
        assert_eq!(page(&app, &t, &[("limit", limit)]).await.schedules.len(), 1);
    }
    // Of the documented shape but never issued (its name holds NUL, which
    // no name can): still a position, so a client that follows the
    // OpenAPI pattern never meets a 422.
    let r = list_with(&app, &t, &[("limit", "2"), ("cursor", nul_name.as_str())]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_shows_the_page_parameters() {
    let app = spawn_app().await;
    let r = app.get_open("/api/openapi.json").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let list = &r.json["paths"]["/api/schedules"]["get"];
    let params: Vec<(&str, &str)> = list["parameters"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| Some((p["name"].as_str()?, p["in"].as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(params, [("limit", "query"), ("cursor", "query")], "{list}");
    assert!(list["responses"]["422"].is_object(), "{list}");
    app.stop().await;
}

#[tokio::test]
async fn a_user_pages_through_their_own_schedules_only() {
    let app = spawn_app().await;
    let alice = app.user_token("sched-alice", &["jobs:write"]).await;
    let bob = app.user_token("sched-bob", &["jobs:write"]).await;
    let mut theirs = (BTreeSet::new(), BTreeSet::new());
    for i in 0..3 {
        theirs
            .0
            .insert(create_ok(&app, &alice, &named(&format!("n{i}"))).await);
        theirs
            .1
            .insert(create_ok(&app, &bob, &named(&format!("n{i}"))).await);
    }
    for (token, own) in [(&alice, &theirs.0), (&bob, &theirs.1)] {
        let paged = every_page(&app, token, 1, None).await;
        let ids: Vec<Uuid> = paged.iter().map(|s| s.schedule_id).collect();
        assert_eq!(ids.iter().copied().collect::<BTreeSet<_>>(), *own);
        assert_eq!(ids.len(), own.len(), "no duplicates");
    }
    let all = every_page(&app, &app.admin_token, 2, None).await;
    assert_eq!(all.len(), 6, "an admin pages through every schedule");
    app.stop().await;
}

#[tokio::test]
async fn a_per_second_schedule_submits_a_job_each_tick_through_the_outbox() {
    let app = spawn_app_with(&FAST).await;
    let owner = app.user_token("sched-fire", &["jobs:write"]).await;
    let id = create_ok(&app, &owner, &every_second(&json!({}))).await;
    let d = wait_for(&app, id, "three ticks fired", |d| {
        outcomes(d, RunOutcome::Fired) >= 3
    })
    .await;
    pause(&app, id).await;
    let run = &d.runs[0];
    assert!(run.job_id.is_some() && run.job_status.is_some(), "{run:?}");
    let jobs = jobs_of(&app, id).await;
    assert!(jobs.len() >= 3);
    print_lateness(&detail(&app, id).await, &jobs);
    for job in &jobs {
        assert_eq!(job.schedule_id, Some(id));
        assert_eq!(job.task_description, "scheduled");
        assert_eq!(job.labels.get("k").map(String::as_str), Some("v"));
    }
    let mine = app.list_jobs(&owner, &[("schedule", &id.to_string())]).await;
    assert_eq!(
        mine.json["jobs"].as_array().map(Vec::len),
        Some(jobs.len()),
        "the owner's jobs"
    );
    // Published by the relay: a scheduled job leaves `pending` as a submitted one does.
    let deadline = Instant::now() + PATIENCE;
    while jobs_of(&app, id)
        .await
        .iter()
        .any(|j| j.status == JobStatus::Pending)
    {
        assert!(Instant::now() < deadline, "scheduled jobs were never published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric(&app, "schedule_runs_total{outcome=\"fired\"}").await >= 3.0);
    app.stop().await;
}

#[tokio::test]
async fn two_replicas_fire_each_tick_once_even_when_the_leader_stops() {
    let app = spawn_app_with(&FAST).await;
    let replica = app.spawn_replica(&FAST).await;
    let id = create_ok(&app, &app.admin_token, &every_second(&json!({}))).await;
    wait_for(&app, id, "ticks fired", |d| outcomes(d, RunOutcome::Fired) >= 3).await;
    // Whichever replica led, the other takes over for the next ticks.
    app.stop().await;
    let before = detail(&replica, id).await.runs.len();
    wait_for(&replica, id, "ticks fired after the stop", |d| {
        d.runs.len() >= before + 3
    })
    .await;
    pause(&replica, id).await;
    let d = detail(&replica, id).await;
    let ticks: BTreeSet<_> = d.runs.iter().map(|r| r.fire_time.timestamp()).collect();
    assert_eq!(ticks.len(), d.runs.len(), "one run per tick");
    let (first, last) = (*ticks.first().unwrap_or(&0), *ticks.last().unwrap_or(&0));
    assert_eq!(
        ticks.len() as i64,
        last - first + 1,
        "no tick left out: {ticks:?}"
    );
    assert!(
        d.runs.iter().all(|r| r.outcome == RunOutcome::Fired),
        "{:?}",
        d.runs
    );
    let jobs = jobs_of(&replica, id).await;
    let run_jobs: BTreeSet<_> = d.runs.iter().filter_map(|r| r.job_id).collect();
    let listed: BTreeSet<_> = jobs.iter().map(|j| j.job_id).collect();
    assert_eq!(run_jobs, listed, "exactly one job per tick");
    replica.stop().await;
}

#[tokio::test]
async fn skip_leaves_the_unfinished_job_alone_and_cancel_previous_replaces_it() {
    // No agent runs: each job stays queued, unfinished.
    let app = spawn_app_with(&FAST).await;
    let skip = create_ok(&app, &app.admin_token, &every_second(&json!({"overlap": "skip"}))).await;
    let cancel = create_ok(
        &app,
        &app.admin_token,
        &every_second(&json!({"overlap": "cancel_previous"})),
    )
    .await;
    wait_for(&app, skip, "skipped ticks", |d| {
        outcomes(d, RunOutcome::Skipped) >= 2
    })
    .await;
    wait_for(&app, cancel, "fired ticks", |d| {
        outcomes(d, RunOutcome::Fired) >= 3
    })
    .await;
    pause(&app, skip).await;
    pause(&app, cancel).await;
    let kept = jobs_of(&app, skip).await;
    assert_eq!(kept.len(), 1, "skip submits nothing while its job is unfinished");
    assert!(!kept[0].status.is_terminal());
    let replaced = jobs_of(&app, cancel).await;
    let live: Vec<&Job> = replaced.iter().filter(|j| !j.status.is_terminal()).collect();
    assert_eq!(live.len(), 1, "only the newest job is left: {replaced:?}");
    assert_eq!(live[0].job_id, replaced[0].job_id, "the live one is the newest");
    assert!(replaced[1..].iter().all(|j| j.status == JobStatus::Cancelled));
    let events = app.job_events(&app.admin_token, replaced[1].job_id).await;
    let last = events.json["events"].as_array().and_then(|e| e.last()).cloned();
    let reason = last.map(|e| e["reason"].clone()).unwrap_or_default();
    assert_eq!(
        reason,
        json!("cancelled by its schedule's next tick (cancel_previous)")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_tick_refused_by_the_quota_is_recorded_failed() {
    let app = spawn_app_with(&["--reaper-interval-ms", "100", "--default-max-queued-jobs", "1"]).await;
    let owner = app.user_token("sched-quota", &["jobs:write"]).await;
    let id = create_ok(&app, &owner, &every_second(&json!({}))).await;
    let d = wait_for(&app, id, "a failed tick", |d| {
        outcomes(d, RunOutcome::Failed) >= 1
    })
    .await;
    pause(&app, id).await;
    let failed = d.runs.iter().find(|r| r.outcome == RunOutcome::Failed);
    let failed = failed.unwrap_or_else(|| panic!("{:?}", d.runs));
    assert!(failed.job_id.is_none());
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("max_queued_jobs"),
        "{failed:?}"
    );
    assert_eq!(jobs_of(&app, id).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn ticks_missed_while_stopped_are_caught_up_once_or_recorded_missed() {
    let flags = ["--reaper-interval-ms", "100", "--schedule-grace-ms", "1000"];
    let app = spawn_app_with(&flags).await;
    let catch_up = create_ok(&app, &app.admin_token, &every_second(&json!({"catch_up": true}))).await;
    let skip = create_ok(&app, &app.admin_token, &every_second(&json!({"catch_up": false}))).await;
    for id in [catch_up, skip] {
        wait_for(&app, id, "a tick fired", |d| outcomes(d, RunOutcome::Fired) >= 1).await;
    }
    // Down for three ticks past the one-second grace.
    let app = app.restart(Duration::from_secs(3), &flags).await;
    for id in [catch_up, skip] {
        wait_for(&app, id, "handled after the restart", |d| {
            outcomes(d, RunOutcome::CaughtUp) + outcomes(d, RunOutcome::Missed) >= 1
        })
        .await;
    }
    pause(&app, catch_up).await;
    pause(&app, skip).await;
    let caught = detail(&app, catch_up).await;
    assert_one_late_tick(&caught, RunOutcome::CaughtUp, RunOutcome::Missed, true);
    let missed = detail(&app, skip).await;
    assert_one_late_tick(&missed, RunOutcome::Missed, RunOutcome::CaughtUp, false);
    app.stop().await;
}

#[tokio::test]
async fn a_disabled_owners_schedules_stop_firing() {
    let app = spawn_app_with(&FAST).await;
    let owner = app.user_token("sched-leaver", &["jobs:write"]).await;
    let theirs = create_ok(&app, &owner, &every_second(&json!({}))).await;
    wait_for(&app, theirs, "a tick fired", |d| {
        outcomes(d, RunOutcome::Fired) >= 1
    })
    .await;
    let me: Value = app.me(&owner).await.json;
    let user_id = me["user_id"].as_str().unwrap_or_default().to_owned();
    let r = app
        .update_user(&app.admin_token, &user_id, &json!({"disabled": true}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let before = detail(&app, theirs).await.runs.len();
    // Another schedule firing twice shows the leader passed since.
    let clock = create_ok(&app, &app.admin_token, &every_second(&json!({}))).await;
    wait_for(&app, clock, "two ticks of another schedule", |d| {
        d.runs.len() >= 2
    })
    .await;
    assert_eq!(
        detail(&app, theirs).await.runs.len(),
        before,
        "no tick after the owner was disabled"
    );
    app.stop().await;
}
