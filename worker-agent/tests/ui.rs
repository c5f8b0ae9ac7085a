//! The dashboard at `/ui` in a real browser: headless Chromium driven
//! through chromedriver (`integration_tests::browser`), against a real
//! controller, Postgres, RabbitMQ and worker agents as real processes.
//! Each test saves a screenshot under `target/ui-screenshots/`; the
//! overview's and a job page's are also written to `docs/screenshots/`
//! when `ORCH_UPDATE_SCREENSHOTS` is set.

use integration_tests::browser::Browser;
use integration_tests::cluster::Cluster;
use integration_tests::{ADMIN_PASSWORD, ADMIN_USER, USER_PASSWORD};
use serde_json::{json, Value};

const AGENT: &str = env!("CARGO_BIN_EXE_worker-agent");

async fn cluster_with(agents: &[&str]) -> Cluster {
    let mut c = Cluster::start(AGENT).await;
    for id in agents {
        c.add_agent(id, 2).await;
    }
    c
}

fn id(job: &Value) -> String {
    job["job_id"].as_str().unwrap_or_default().to_owned()
}

/// Confirms the open confirmation dialog.
async fn confirm(b: &Browser) {
    b.click("dialog[open] [data-confirm]").await;
}

/// Page weight and time to first render of `/ui`, as the browser saw them
/// (Performance API), printed for the README and the report.
async fn measure_first_render(b: &Browser) -> Value {
    // A query string makes it a full load (a changed fragment would not).
    b.open("/ui/?measure").await;
    b.wait_until("the dashboard drawn", "typeof window.__uiReady === 'number'")
        .await;
    let figures = b
        .eval(
            "const nav = performance.getEntriesByType('navigation')[0];
             const paint = performance.getEntriesByName('first-contentful-paint')[0];
             const files = performance.getEntriesByType('resource').filter((r) => r.name.includes('/ui/'));
             const bytes = files.reduce((s, r) => s + r.decodedBodySize, nav.decodedBodySize);
             return { files: files.length + 1, bytes, fcp_ms: paint ? paint.startTime : null,
                      dom_content_loaded_ms: nav.domContentLoadedEventEnd, ready_ms: window.__uiReady };",
            vec![],
        )
        .await;
    println!(
        "ui figures: page weight {} bytes in {} files (embedded: {} bytes); first contentful paint {} ms; \
         DOMContentLoaded {} ms; overview drawn with data {} ms",
        figures["bytes"],
        figures["files"],
        controller::ui::page_weight(),
        figures["fcp_ms"],
        figures["dom_content_loaded_ms"],
        figures["ready_ms"]
    );
    figures
}

#[tokio::test]
async fn overview_and_workers_page_show_both_agents_and_pause_and_resume_one() {
    let c = cluster_with(&["ui-a", "ui-b"]).await;
    let b = Browser::start(&c.app.base_url).await;
    b.log_in(ADMIN_USER, ADMIN_PASSWORD).await;
    b.wait_for_text("#overview", "Completed per minute").await;
    b.wait_for_text("#live", "live").await;
    let figures = measure_first_render(&b).await;
    assert!(figures["bytes"].as_f64().unwrap_or(0.0) > 1000.0, "{figures}");
    b.wait_for_text("#overview", "Queue depth").await;
    // A few finished jobs, so the overview's figures and chart show them live.
    for n in 0..4 {
        let job = c
            .submit(&["/bin/true"], json!({"task_description": format!("quick {n}")}))
            .await;
        c.wait_status(&id(&job), "completed").await;
    }
    b.wait_for_text("#overview", "4 completed").await;
    b.screenshot_for_docs("overview").await;

    b.open("/ui/#/workers").await;
    b.wait_for_text("#workers", "ui-a").await;
    let listed = b.wait_for_text("#workers", "ui-b").await;
    assert!(listed.contains("2 workers"), "{listed}");
    // Each worker's pools (an agent started without --pool serves `default`).
    b.wait_for_text("tr[data-worker='ui-a'] td.pools", "default")
        .await;
    b.click("#pause-ui-a").await;
    confirm(&b).await;
    b.wait_for_text("tr[data-worker='ui-a']", "paused").await;
    assert_eq!(c.worker("ui-a").await["status"], "paused");
    b.click("#resume-ui-a").await;
    b.wait_for_text("tr[data-worker='ui-a']", "idle").await;
    assert_eq!(c.worker("ui-a").await["status"], "idle");
    b.screenshot("workers").await;

    b.resize(390, 844).await;
    b.open("/ui/#/workers").await;
    b.wait_for_text("#workers", "ui-b").await;
    let overflow = b
        .eval(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            vec![],
        )
        .await;
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "the page is wider than a phone: {overflow}"
    );
    b.screenshot("workers-phone").await;
    b.close().await;
}

#[tokio::test]
async fn a_running_jobs_output_appears_on_its_page_before_it_ends() {
    let c = cluster_with(&["ui-out"]).await;
    let b = Browser::start(&c.app.base_url).await;
    // Tall enough that the screenshot shows the fields and the output.
    b.resize(1280, 1250).await;
    b.log_in(ADMIN_USER, ADMIN_PASSWORD).await;
    // Submitted once the browser is ready, so the page opens while it runs.
    let job = c
        .submit(
            &[
                "/bin/sh",
                "-c",
                "for i in 1 2 3 4 5 6 7; do echo line $i; sleep 0.5; done",
            ],
            json!({"task_description": "prints a line every half second for 3 s", "labels": {"team": "ui"}}),
        )
        .await;
    b.open(&format!("/ui/#/jobs/{}", id(&job))).await;
    let early = b.wait_for_text("#output", "line 1").await;
    let status = c.job(&id(&job)).await["status"].clone();
    assert_eq!(status, "running", "line 1 shown only once the job ended");
    assert!(!early.contains("line 7"), "all output at once: {early}");
    b.wait_for_text("#output", "line 3").await;
    b.wait_for_text("#job-top", "running").await;
    b.screenshot_for_docs("job").await;
    b.wait_for_text("#output-state", "ended: completed").await;
    b.wait_for_text("#job-top", "completed").await;
    let all = b.text("#output").await;
    assert!(all.contains("line 7"), "{all}");
    b.wait_for_text("#timeline", "ui-out").await;
    b.screenshot("job-finished").await;
    b.close().await;
}

#[tokio::test]
async fn a_running_job_is_cancelled_from_its_page() {
    let c = cluster_with(&["ui-cancel"]).await;
    let job = c.submit(&["/bin/sh", "-c", "sleep 60"], json!({})).await;
    c.wait_status(&id(&job), "running").await;
    let b = Browser::start(&c.app.base_url).await;
    b.log_in(ADMIN_USER, ADMIN_PASSWORD).await;
    b.open(&format!("/ui/#/jobs/{}", id(&job))).await;
    b.wait_for_text("#job-top", "running").await;
    b.click("#cancel-job").await;
    confirm(&b).await;
    b.wait_for_text("#timeline", "cancelled by user").await;
    assert_eq!(c.job(&id(&job)).await["status"], "cancelled");
    b.screenshot("job-cancelled").await;
    b.close().await;
}

/// From the page's own session, what a forging script would send: a pause
/// of worker `ui-ro` without and with the CSRF header (read from its
/// cookie), and whether the session token is visible to script.
async fn forge_pause(b: &Browser) -> Value {
    b.eval_async(
            "const csrf = document.cookie.split('; ').find((c) => c.startsWith('orch_csrf=')).split('=')[1];
             const send = (headers) => fetch('/api/supervisor/workers/ui-ro/pause', { method: 'POST', headers })
               .then(async (r) => ({ status: r.status, body: await r.json() }));
             return { without: await send({}), with: await send({ 'X-CSRF-Token': csrf }),
                      token_visible: document.cookie.includes('orch_session') };",
        )
        .await
}

#[tokio::test]
async fn a_read_only_user_sees_no_actions_and_forged_requests_are_refused() {
    let c = cluster_with(&["ui-ro"]).await;
    c.app
        .user_token("viewer", &["jobs:read", "supervisor:read", "resources:read"])
        .await;
    let b = Browser::start(&c.app.base_url).await;
    b.log_in("viewer", USER_PASSWORD).await;
    b.open("/ui/#/workers").await;
    b.wait_for_text("#workers", "ui-ro").await;
    let buttons = b
        .eval("return document.querySelectorAll('#main button').length;", vec![])
        .await;
    assert_eq!(buttons, json!(0), "a read-only user sees action buttons");
    b.open("/ui/#/workers/ui-ro").await;
    b.wait_for_text("#main", "Recent jobs").await;
    let buttons = b
        .eval("return document.querySelectorAll('#main button').length;", vec![])
        .await;
    assert_eq!(buttons, json!(0), "action buttons on the worker page");
    b.open("/ui/#/jobs").await;
    b.wait_for_text("#total", "match").await;
    let bulk = b
        .eval(
            "return document.querySelectorAll('#cancel-selected, #cancel-filtered').length;",
            vec![],
        )
        .await;
    assert_eq!(bulk, json!(0), "bulk cancel offered to a read-only user");
    b.screenshot("read-only").await;
    let forged = forge_pause(&b).await;
    assert_eq!(forged["without"]["status"], 403, "{forged}");
    assert!(
        forged["without"]["body"]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("CSRF"),
        "{forged}"
    );
    assert_eq!(forged["with"]["status"], 403, "{forged}");
    assert_eq!(
        forged["with"]["body"]["detail"], "Missing required scope: supervisor:write",
        "{forged}"
    );
    assert_eq!(
        forged["token_visible"], false,
        "the session token is readable by script"
    );
    assert_eq!(c.worker("ui-ro").await["status"], "idle");
    b.close().await;
}

#[tokio::test]
async fn a_job_with_script_in_its_description_and_output_renders_as_text() {
    let c = cluster_with(&["ui-xss"]).await;
    let payload = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">";
    let job = c
        .submit(
            &["/bin/sh", "-c", "printf '%s\\n' \"$TASK_DESCRIPTION\""],
            json!({"task_description": payload, "labels": {"<b>k</b>": "<i>v</i>"}}),
        )
        .await;
    c.wait_status(&id(&job), "completed").await;
    let b = Browser::start(&c.app.base_url).await;
    b.log_in(ADMIN_USER, ADMIN_PASSWORD).await;
    b.open(&format!("/ui/#/jobs/{}", id(&job))).await;
    let description = b.wait_for_text("#description", "<script>").await;
    assert_eq!(description, payload);
    let output = b.wait_for_text("#output", "<script>").await;
    assert!(output.contains("onerror"), "{output}");
    b.open("/ui/#/jobs").await;
    b.wait_for_text("#results", "<script>").await;
    b.wait_for_text("#results", "<b>k</b>=<i>v</i>").await;
    let ran = b
        .eval(
            "return { pwned: typeof window.__pwned, injected: document.querySelectorAll('#main script, #main img, #main b, #main i').length };",
            vec![],
        )
        .await;
    assert_eq!(
        ran,
        json!({"pwned": "undefined", "injected": 0}),
        "user text became markup"
    );
    b.screenshot("script-as-text").await;
    b.close().await;
}
