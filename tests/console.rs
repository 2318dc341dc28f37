//! The game-day console (issue 13), in a real browser: Debian's headless chromium driven over
//! the DevTools protocol (tests/common/browser.rs). The catalog and its hot reload, a dry run of
//! `redis-outage` started from its form and watched live, its report, a pasted script checked
//! and run for real, the kill switch and the halted banner, the token prompt; and the HTTP side
//! of "a hang breaks the app, not the lab's controls". Screenshots of each page are kept under
//! `target/screenshots/` and checked not to be blank.

use chaos_lab_testkit as common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::browser::{Browser, Tab, png_stats};
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// Saves a screenshot of `tab` as `target/screenshots/<name>.png` and checks it is not blank.
async fn shot(tab: &Tab<'_>, name: &str) {
    let png = tab.screenshot().await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
    let (w, h, drawn) = png_stats(&png);
    assert!(w >= 1000 && h >= 400, "{name}: screenshot is {w}x{h}");
    assert!(drawn > 0.02, "{name}: the screenshot is blank ({drawn:.4} of its pixels differ from the background)");
}

/// A copy of the repository's scenarios in a folder the test may add files to.
fn scenarios_copy() -> std::path::PathBuf {
    let dir = temp_dir("console-scenarios");
    for e in std::fs::read_dir(repo_scenarios()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rhai") {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// JS: sets the value of the input `selector` and tells the page it changed.
fn set(selector: &str, value: &str) -> String {
    format!(
        "(() => {{ const e = document.querySelector({s}); if (!e) throw new Error('no ' + {s}); \
         e.value = {v}; e.dispatchEvent(new Event('input', {{bubbles: true}})); \
         e.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()",
        s = serde_json::to_string(selector).unwrap(),
        v = serde_json::to_string(value).unwrap()
    )
}

/// JS: clicks `selector`.
fn click(selector: &str) -> String {
    format!(
        "(() => {{ const e = document.querySelector({s}); if (!e) throw new Error('no ' + {s}); e.click(); return true; }})()",
        s = serde_json::to_string(selector).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_day_in_the_console() {
    let redis = RedisServer::start();
    let scenarios = scenarios_copy();
    let svc = TestService::start(redis.port, &["--scenarios-dir", scenarios.to_str().unwrap()]).await;
    let browser = Browser::launch(&temp_dir("console-chromium")).await;
    let tab = browser.open(&svc.url("/console")).await;
    tab.wait_for("document.body.dataset.ready === '1'", WAIT).await;

    // The catalog: every scenario, its parameters as a typed form.
    tab.wait_for("!!document.querySelector('#catalog .scenario[data-name=\"redis-outage\"] form.run-form')", WAIT)
        .await;
    let form = "#catalog .scenario[data-name=\"redis-outage\"] form.run-form";
    let types = tab
        .eval(&format!(
            "(() => {{ const f = document.querySelector('{}'); \
             return [f.querySelector('[name=outage_s]').type, f.querySelector('[name=ramp_load]').type, \
                     f.querySelector('[name=load_profile]').type]; }})()",
            form.replace('\'', "\\'")
        ))
        .await;
    assert_eq!(types, serde_json::json!(["number", "checkbox", "text"]), "inputs typed from the defaults");
    shot(&tab, "console-catalog").await;

    // Hot reload: a new file and a broken one appear without a page reload.
    std::fs::write(
        scenarios.join("added-now.rhai"),
        "//! description: dropped in while the console is open\nsleep(0.1);\n",
    )
    .unwrap();
    std::fs::write(scenarios.join("broken-now.rhai"), "//! description: broken\nlet = 1;\n").unwrap();
    tab.wait_for("!!document.querySelector('#catalog .scenario[data-name=\"added-now\"] form.run-form')", WAIT).await;
    tab.wait_for(
        "(document.querySelector('#catalog .scenario[data-name=\"broken-now\"] .error') || {}).textContent?.includes('broken-now.rhai:2:')",
        WAIT,
    )
    .await;

    // A dry run of redis-outage from its form, watched live, then its report.
    // Nothing breaks in a dry run, so the wait for "unhealthy" runs out: keep it short.
    tab.eval(&set(&format!("{form} [name=outage_s]"), "1")).await;
    tab.eval(&set(&format!("{form} [name=detect_timeout_s]"), "1")).await;
    tab.eval(&set(&format!("{form} [name=recover_timeout_s]"), "1")).await;
    tab.eval(&set(&format!("{form} [name=load_profile]"), "")).await;
    tab.eval(&format!(
        "document.querySelector('{}').checked = true",
        format!("{form} [name=dry_run]").replace('\'', "\\'")
    ))
    .await;
    tab.eval(&click(&format!("{form} .start"))).await;
    tab.wait_for("location.pathname.startsWith('/console/runs/')", WAIT).await;
    tab.wait_for("document.querySelectorAll('#steps .step').length >= 3", WAIT).await;
    // A dry run breaks nothing, so its "the service went unhealthy" expectation fails.
    tab.wait_for("document.querySelector('#run')?.dataset.runStatus === 'failed'", WAIT).await;
    let seen = tab
        .eval("[document.querySelector('#undo').textContent, document.querySelector('#expectations').textContent]")
        .await;
    assert!(seen[0].as_str().unwrap().contains("dry run"), "the undo list of a dry run: {seen}");
    assert!(seen[1].as_str().unwrap().contains("unhealthy"), "the expectations: {seen}");
    shot(&tab, "console-run-dry").await;
    // The report opens from the page (fetched with the session's token, shown from a blob).
    let report = tab
        .eval(
            "new Promise((resolve, reject) => { window.open = (u) => { fetch(u).then(r => r.text()).then(resolve, reject); return null; }; \
             document.querySelector('#open-report').click(); setTimeout(() => reject(new Error('no report opened')), 10000); })",
        )
        .await;
    assert!(report.as_str().unwrap().contains("<svg"), "the report has its timeline");

    // A pasted script: checked inline first, then run for real; the kill switch ends it.
    tab.goto(&svc.url("/console")).await;
    tab.wait_for("document.body.dataset.ready === '1' && !!document.querySelector('#script')", WAIT).await;
    tab.eval(&set("#script", "sleep(0.1);\nnetwork_blok();")).await;
    tab.eval(&click("#check-script")).await;
    tab.wait_for("document.querySelector('#script-problems').textContent.includes('unknown function')", WAIT).await;
    let problems = tab.eval("document.querySelector('#script-problems').textContent").await;
    assert!(problems.as_str().unwrap().contains("line 2"), "{problems}");
    tab.eval(&set("#script", "network_block();\nsleep(60.0);")).await;
    tab.eval(&click("#run-script")).await;
    tab.wait_for("location.pathname.startsWith('/console/runs/')", WAIT).await;
    tab.wait_for("document.querySelectorAll('#faults .fault').length >= 1", WAIT).await;
    let (_, s) = get(&svc.url("/chaos/status")).await;
    assert_eq!(s["network"]["blocked"], true, "{s}");
    shot(&tab, "console-run-live").await;
    tab.accept_dialogs().await;
    tab.eval(&click("#kill-switch")).await;
    tab.wait_for("getComputedStyle(document.querySelector('#halted-banner')).display !== 'none'", WAIT).await;
    tab.wait_for("document.querySelector('#faults').textContent.includes('No active fault')", WAIT).await;
    tab.wait_for("document.querySelector('#run')?.dataset.runStatus === 'cancelled'", WAIT).await;
    let (_, s) = get(&svc.url("/chaos/status")).await;
    assert_eq!((s["halted"].clone(), s["network"]["blocked"].clone()), (Value::Bool(true), Value::Bool(false)), "{s}");
    shot(&tab, "console-halted").await;
    tab.eval(&click("#resume")).await;
    tab.wait_for("getComputedStyle(document.querySelector('#halted-banner')).display === 'none'", WAIT).await;
    assert_eq!(svc.status().await["halted"], false);

    // History: both runs, filterable by status, each opens its run.
    tab.goto(&svc.url("/console")).await;
    tab.wait_for("document.querySelectorAll('#history tbody tr').length >= 2", WAIT).await;
    tab.eval("(() => { const s = document.querySelector('#filter-status'); s.value = 'cancelled'; s.dispatchEvent(new Event('change', {bubbles: true})); return true; })()").await;
    tab.wait_for(
        "[...document.querySelectorAll('#history tbody tr')].filter(r => r.offsetParent !== null).length === 1",
        WAIT,
    )
    .await;
    shot(&tab, "console-history").await;
    tab.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_console_asks_for_it_and_never_shows_it() {
    let redis = RedisServer::start();
    let token = "console-test-token-0123456789";
    let scenarios = repo_scenarios();
    let svc = TestService::start(redis.port, &["--chaos-api-token", token, "--scenarios-dir", &scenarios]).await;
    let browser = Browser::launch(&temp_dir("console-token-chromium")).await;
    let tab = browser.open(&svc.url("/console")).await;
    tab.wait_for(
        "!!document.querySelector('#token-form') && document.querySelector('#token-form').offsetParent !== null",
        WAIT,
    )
    .await;
    let listed = tab.eval("document.querySelectorAll('#catalog .scenario').length").await;
    assert_eq!(listed, 0, "nothing is shown without the token");
    shot(&tab, "console-token").await;
    tab.eval(&set("#token", token)).await;
    tab.eval("document.querySelector('#token-form').requestSubmit(); true").await;
    tab.wait_for("document.querySelectorAll('#catalog .scenario').length > 0", WAIT).await;
    let leaked = tab
        .eval(&format!("location.href.includes('{token}') || document.documentElement.outerHTML.includes('{token}')"))
        .await;
    assert_eq!(leaked, false, "the token shows in the URL or the page");
    tab.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_hang_stalls_the_app_but_not_the_console_or_the_kill_switch() {
    let svc = TestService::start(free_port(), &["--redis-enabled", "false"]).await;
    let hang = tokio::spawn({
        let url = svc.url("/chaos/hang");
        async move { http().post(url).body(r#"{"duration_seconds": 30, "scope": "app"}"#).send().await }
    });
    assert!(
        eventually(Duration::from_secs(5), || async { svc.status().await["hang"]["active"] == true }).await,
        "the hang started, and /chaos/status answers during it"
    );
    let started = Instant::now();
    let page = http().get(svc.url("/console")).timeout(Duration::from_secs(2)).send().await.expect("console answers");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("console.js"));
    eprintln!("GET /console during an app hang: {:?}", started.elapsed());
    let stalled = http().get(svc.url("/healthz")).timeout(Duration::from_secs(1)).send().await;
    assert!(stalled.is_err_and(|e| e.is_timeout()), "/healthz must stall during an app hang");
    let (code, body) = post(&svc.url("/chaos/stop"), "").await;
    assert_eq!(code, 200, "{body}");
    let answer = hang.await.unwrap().unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(get(&svc.url("/healthz")).await.0, 200, "the app answers once the hang is over");
    let (code, _) = post(&svc.url("/chaos/resume"), "").await;
    assert_eq!(code, 200);
}
