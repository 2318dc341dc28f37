//! The generated OpenAPI document (`GET /openapi.json`) against the running service, checked by
//! schemathesis: every documented operation is called with generated data, valid and invalid,
//! and every answer must be documented (status, content type, body schema), no answer may be a
//! 5xx, and invalid data must be refused.
//!
//! Three passes, so that nothing the test sends can stall or break the test itself:
//! 1. every operation but `POST /chaos/load`, `POST /chaos/hang` and `POST /chaos/stop`, with
//!    valid and invalid data (a valid load would burn the CI machine's CPU for up to an hour, a
//!    valid hang would stall the caller and the app for up to a day, and the kill switch would
//!    halt every later case);
//! 2. `POST /chaos/load` and `POST /chaos/hang` with invalid data only (each must be refused,
//!    so nothing starts; `tests/openapi_hooks.py` drops the cases without a body, which would
//!    start the default load or hang);
//! 3. `POST /chaos/stop` and `POST /chaos/resume` last.
//!
//! Needs the venv `bash tests/run.sh` creates (`target/py`, from `tests/requirements.txt`), or
//! `SCHEMATHESIS=/path/to/schemathesis`. Loopback only; each pass is killed after 240 s.

use chaos_lab_testkit as common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,negative_data_rejection";
const PASS_TIMEOUT: Duration = Duration::from_secs(240);
/// The phases of a pass over operations no link leads to (the stateful phase follows the links
/// from a started run to the operations that take its id, which pass 1 covers).
const NO_LINKS: &str = "examples,coverage,fuzzing";

fn schemathesis() -> PathBuf {
    let candidate = match std::env::var_os("SCHEMATHESIS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py/bin/schemathesis"),
    };
    assert!(
        candidate.is_file(),
        "schemathesis not found at {}: run `bash tests/run.sh` (it installs tests/requirements.txt into \
         target/py) or set SCHEMATHESIS=/path/to/schemathesis",
        candidate.display()
    );
    candidate
}

/// Runs one schemathesis pass; returns its exit code and output.
async fn pass(svc: &TestService, args: &[&str]) -> (Option<i32>, String) {
    let dir = temp_dir("schemathesis");
    let mut cmd = std::process::Command::new(schemathesis());
    cmd.arg("run")
        .arg(svc.url("/openapi.json"))
        .args(["--checks", CHECKS, "--workers", "1", "--seed", "1", "--request-timeout", "10", "--no-shrink"])
        .args(["--max-examples", "25"])
        .args(args)
        .current_dir(&dir)
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openapi_hooks.py"));
    let out = output_async("schemathesis", cmd, PASS_TIMEOUT).await;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// The N of schemathesis' summary line "N generated, ...".
fn cases(output: &str) -> u64 {
    let mut lines = output.lines().skip_while(|l| l.trim() != "Test cases:").skip(1);
    lines.next().and_then(|l| l.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_openapi_document_holds_against_the_service() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;

    let (code, out) = pass(
        &svc,
        &["--exclude-path", "/chaos/load", "--exclude-path", "/chaos/hang", "--exclude-path", "/chaos/stop"],
    )
    .await;
    println!("pass 1 (every other operation): {} cases\n{out}", cases(&out));
    assert_eq!(code, Some(0), "schemathesis found problems:\n{out}");
    assert!(cases(&out) >= 200, "too few cases: {out}");

    let (code, out) = pass(
        &svc,
        &["--include-path", "/chaos/load", "--include-path", "/chaos/hang", "--mode", "negative", "--phases", NO_LINKS],
    )
    .await;
    println!("pass 2 (load and hang, invalid data only): {} cases\n{out}", cases(&out));
    assert_eq!(code, Some(0), "schemathesis found problems:\n{out}");
    let (_, status) = get(&svc.url("/chaos/status")).await;
    assert_eq!(status["load"]["active"], false, "invalid data started a load: {status}");
    assert_eq!(status["hang"]["active"], false, "invalid data started a hang: {status}");

    let (code, out) =
        pass(&svc, &["--include-path", "/chaos/stop", "--include-path", "/chaos/resume", "--phases", NO_LINKS]).await;
    println!("pass 3 (kill switch and resume): {} cases\n{out}", cases(&out));
    assert_eq!(code, Some(0), "schemathesis found problems:\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_described_and_the_document_is_openapi_3_1() {
    let doc = chaos_lab::http::openapi::document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    for p in ["/", "/health", "/chaos/run", "/chaos/runs", "/chaos/runs/{id}/events", "/chaos/stop", "/metrics"] {
        assert!(paths.contains(&p), "{p} is not described: {paths:?}");
    }
    // The same document is served.
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &["--redis-enabled", "false"]).await;
    let (status, served) = get(&svc.url("/openapi.json")).await;
    assert_eq!(status, 200);
    assert_eq!(served, doc);
    // The token-guarded operations say so, and /chaos/status does not.
    assert!(doc["paths"]["/chaos/run"]["post"]["responses"]["401"].is_object());
    assert!(doc["paths"]["/chaos/status"]["get"]["responses"]["401"].is_null());
    // A started run links to the operations that take its id (schemathesis follows them).
    let links = &doc["paths"]["/chaos/run"]["post"]["responses"]["202"]["links"];
    assert_eq!(links["report"]["operationId"], "getRun", "{links}");
    assert_eq!(links["report"]["parameters"]["id"], "$response.body#/run_id");
}
