//! The real `orchestrator` binary's `search` and `cancel` against a real
//! controller (Postgres and RabbitMQ in containers), as a user runs them:
//! a search lists only the jobs its filters match and says how many match
//! in all; a filter the server would refuse is a usage error and nothing is
//! sent; `cancel` of several ids cancels those it can, prints each refusal
//! with its reason and exits 1; `cancel` of one id does what it always did.
//! `list --all-pages` and `schedules list`, which read page after page,
//! print one list of the rows as the server sent them.

use integration_tests::{spawn_app, TestApp};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::process::Output;
use tokio::process::Command;
use uuid::Uuid;

/// Runs the binary against `url` with `token` and `args`, and nothing of
/// the caller's orchestrator environment or config file.
async fn orchestrator(url: &str, token: &str, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    for var in ["ORCH_URL", "ORCH_TOKEN", "ORCH_CA_FILE", "ORCH_PASSWORD"] {
        command.env_remove(var);
    }
    command
        .env("ORCH_CONFIG", "/nonexistent/orchestrator-config.json")
        .args(["--url", url, "--token", token])
        .args(args);
    command
        .output()
        .await
        .unwrap_or_else(|e| panic!("running orchestrator: {e}"))
}

/// Runs the binary as the app's admin.
async fn admin(app: &TestApp, args: &[&str]) -> Output {
    orchestrator(&app.base_url, &app.admin_token, args).await
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Submits a job with `labels` as the admin; answers its id.
async fn submit(app: &TestApp, task: &str, labels: Value) -> Uuid {
    let body = json!({"task_description": task, "labels": labels});
    let reply = app.submit_job(&app.admin_token, &body).await;
    assert_eq!(reply.status, 201, "submitting {task}: {}", reply.text);
    let id = reply.json["job_id"].as_str().unwrap_or_default();
    Uuid::parse_str(id).unwrap_or_else(|e| panic!("job id {id:?}: {e}"))
}

/// The job's status as the API shows it.
async fn status_of(app: &TestApp, job: Uuid) -> String {
    let reply = app.get_job(&app.admin_token, job).await;
    reply.json["status"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn search_lists_only_the_matching_jobs_and_how_many_match() {
    let app = spawn_app().await;
    let ml_1 = submit(&app, "train 1", json!({"team": "ml"})).await;
    let ml_2 = submit(&app, "train 2", json!({"team": "ml"})).await;
    let web = submit(&app, "deploy", json!({"team": "web"})).await;
    assert_eq!(app.cancel_job(&app.admin_token, ml_2).await.status, 200);

    let out = admin(&app, &["search", "--label", "team=ml"]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.starts_with("JOB_ID"), "a job table: {text}");
    assert!(
        text.contains(&ml_1.to_string()) && text.contains(&ml_2.to_string()),
        "{text}"
    );
    assert!(!text.contains(&web.to_string()), "{text}");
    assert!(text.ends_with("total: 2 matching jobs\n"), "{text}");

    let out = admin(&app, &["search", "--label", "team=ml", "--status", "cancelled"]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains(&ml_2.to_string()) && !text.contains(&ml_1.to_string()),
        "{text}"
    );
    assert!(text.ends_with("total: 1 matching job\n"), "{text}");

    // One page of two: the total counts both, a note gives the next page.
    let out = admin(&app, &["search", "--label", "team=ml", "--limit", "1"]).await;
    let (text, note) = (stdout(&out), stderr(&out));
    assert_eq!(text.lines().count(), 3, "header, one job, total: {text}");
    assert!(text.ends_with("total: 2 matching jobs\n"), "{text}");
    assert!(note.starts_with("more jobs: --cursor "), "{note}");

    // --json prints the server's answer as it is.
    let out = admin(&app, &["--json", "search", "--label", "team=web"]).await;
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(answer["total"], 1, "{answer}");
    assert_eq!(answer["next_cursor"], Value::Null, "{answer}");
    assert_eq!(answer["jobs"][0]["job_id"], web.to_string(), "{answer}");
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    app.stop().await;
}

#[tokio::test]
async fn a_search_filter_the_server_would_refuse_is_a_usage_error_and_nothing_is_sent() {
    // Nothing answers here; a connection would show in `accept`.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    listener.set_nonblocking(true).unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "http://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    for (args, says) in [
        (["search", "--label", "team"], "expected key=value"),
        (["search", "--since", "2025-03-01"], "RFC 3339"),
        (["search", "--status", "done"], "possible values"),
    ] {
        let out = orchestrator(&url, "token", &args).await;
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
    let accepted = listener.accept().map(|(_, peer)| peer);
    assert!(
        accepted
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "a request was sent: {accepted:?}"
    );
}

#[tokio::test]
async fn cancel_of_several_cancels_those_it_can_and_reports_each_refusal() {
    let app = spawn_app().await;
    let (first, second) = (
        submit(&app, "a", json!({})).await,
        submit(&app, "b", json!({})).await,
    );
    let done = submit(&app, "c", json!({})).await;
    assert_eq!(app.cancel_job(&app.admin_token, done).await.status, 200);
    let unknown = Uuid::new_v4();
    let ids = [first, second, done, unknown, first].map(|id| id.to_string());
    let args: Vec<&str> = std::iter::once("cancel")
        .chain(ids.iter().map(String::as_str))
        .collect();

    let out = admin(&app, &args).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    let expected = format!(
        "cancelled {first}\ncancelled {second}\n\
         refused   {done}: Invalid job transition: cancelled -> cancelled\n\
         refused   {unknown}: Job {unknown} not found\n"
    );
    assert_eq!(text, expected, "a repeated id is sent once");
    assert!(
        stderr(&out).contains("2 of 4 jobs not cancelled"),
        "{}",
        stderr(&out)
    );
    for job in [first, second] {
        assert_eq!(status_of(&app, job).await, "cancelled");
    }

    // Every one cancelled: success, and --json is the server's answer.
    let (third, fourth) = (
        submit(&app, "d", json!({})).await,
        submit(&app, "e", json!({})).await,
    );
    let out = admin(
        &app,
        &["--json", "cancel", &third.to_string(), &fourth.to_string()],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(answer, json!({"cancelled": [third, fourth], "refused": []}));
    app.stop().await;
}

#[tokio::test]
async fn cancel_of_more_ids_than_one_request_takes_sends_them_in_several() {
    let app = spawn_app().await;
    let job = submit(&app, "last of 501", json!({})).await;
    let mut ids: Vec<String> = (0..500).map(|_| Uuid::new_v4().to_string()).collect();
    ids.push(job.to_string());
    let args: Vec<&str> = std::iter::once("cancel")
        .chain(ids.iter().map(String::as_str))
        .collect();

    let out = admin(&app, &args).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(text.lines().count(), 501, "a line per job");
    assert!(text.starts_with(&format!("cancelled {job}\n")), "{text}");
    assert_eq!(text.matches(" not found").count(), 500);
    assert!(
        stderr(&out).contains("500 of 501 jobs not cancelled"),
        "{}",
        stderr(&out)
    );
    assert_eq!(status_of(&app, job).await, "cancelled");
    app.stop().await;
}

#[tokio::test]
async fn cancel_of_one_id_shows_the_job_as_it_always_did() {
    let app = spawn_app().await;
    let job = submit(&app, "one", json!({})).await;

    let out = admin(&app, &["cancel", &job.to_string()]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.starts_with("job_id:"), "the job's fields: {text}");
    assert!(text.contains(&job.to_string()), "{text}");
    assert!(
        text.lines()
            .any(|line| line.starts_with("status:") && line.ends_with(" cancelled")),
        "{text}"
    );
    assert_eq!(status_of(&app, job).await, "cancelled");

    // Refused: the server's 409, exit status 2, as before.
    let out = admin(&app, &["cancel", &job.to_string()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let expected = "error: Invalid job transition: cancelled -> cancelled (HTTP 409)\n";
    assert_eq!(stderr(&out), expected);

    let other = submit(&app, "two", json!({})).await;
    let out = admin(&app, &["--json", "cancel", &other.to_string()]).await;
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(answer["job_id"], other.to_string(), "the Job: {answer}");
    assert_eq!(answer["status"], "cancelled", "{answer}");
    app.stop().await;
}

/// `answer` as `--json` prints it: pretty, one newline.
fn printed(answer: &Value) -> String {
    let text = serde_json::to_string_pretty(answer).unwrap_or_else(|e| panic!("{e}"));
    format!("{text}\n")
}

#[tokio::test]
async fn list_of_every_page_is_one_list_of_the_jobs_as_sent() {
    let app = spawn_app().await;
    let mut jobs = Vec::new();
    for task in ["a", "b", "c"] {
        let job = submit(&app, task, json!({})).await;
        // Cancelled, a final status: the jobs read the same on every read.
        assert_eq!(app.cancel_job(&app.admin_token, job).await.status, 200);
        jobs.push(job);
    }
    let all = app.list_jobs(&app.admin_token, &[("limit", "500")]).await;
    assert_eq!(all.status, 200, "{}", all.text);

    // Three pages of one, printed as the one page `{"jobs", "next_cursor"}`.
    let out = admin(&app, &["--json", "list", "--all-pages", "--limit", "1"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = json!({"jobs": all.json["jobs"], "next_cursor": null});
    assert_eq!(stdout(&out), printed(&expected));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));

    let out = admin(&app, &["list", "--all-pages", "--limit", "2"]).await;
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 4, "a header and three jobs: {text}");
    assert!(jobs.iter().all(|job| text.contains(&job.to_string())), "{text}");
    assert!(stderr(&out).is_empty(), "no note of more jobs: {}", stderr(&out));
    app.stop().await;
}

#[tokio::test]
async fn schedules_list_prints_the_schedules_as_the_server_sends_them() {
    let app = spawn_app().await;
    for name in ["yearly b", "yearly a"] {
        // Yearly, so that the next fire times are the same in both reads.
        let body = json!({"name": name, "cron": "0 0 1 1 *", "template": {"task_description": "x"}});
        let made = app.create_schedule(&app.admin_token, &body).await;
        assert_eq!(made.status, 201, "{}", made.text);
    }
    let all = app.list_schedules(&app.admin_token).await;
    assert_eq!(all.status, 200, "{}", all.text);

    let out = admin(&app, &["--json", "schedules", "list"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), printed(&all.json));
    app.stop().await;
}
