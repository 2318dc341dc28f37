//! Azure, seen from outside: the NSG network backend, deploy faults, the operator CLI and Entra ID
//! Redis, against a fake ARM + managed-identity endpoint on loopback (`common::fake_azure`) and a
//! real TLS `redis-server`. Each test uses its own subscription id and client id in the shared fake.

use chaos_lab_testkit as common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use common::fake_azure::{ARM_RESOURCE, FakeAzure, IDENTITY_SECRET, NSG, REDIS_RESOURCE, RG, Recorded};
use common::*;
use serde_json::{Value, json};

/// Runs the `chaos-lab` binary with only the given environment (plus the fake's); returns the
/// exit code, stdout and stderr.
async fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let fake = FakeAzure::shared();
    let mut cmd = std::process::Command::new(chaos_lab_bin());
    cmd.args(args).env_clear().envs(fake.child_env()).envs(env.iter().copied());
    let out = output_async("chaos-lab", cmd, Duration::from_secs(60)).await;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// The azd environment of one test.
fn azd_env<'a>(sub: &'a str, client: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("AZURE_SUBSCRIPTION_ID", sub),
        ("AZURE_RESOURCE_GROUP", RG),
        ("AZURE_NSG_NAME", NSG),
        ("AZURE_CLIENT_ID", client),
        ("SERVICE_APP_NAME", "chaos-app"),
    ]
}

/// Requests that are not rule listings (the sweeper lists whenever it likes).
fn without_listings(reqs: &[Recorded]) -> Vec<&Recorded> {
    reqs.iter().filter(|r| !(r.method == "GET" && r.path.ends_with("/securityRules"))).collect()
}

fn shape(reqs: &[&Recorded]) -> Vec<String> {
    reqs.iter()
        .map(|r| {
            let kind = if r.path.contains("/operations/") {
                "operation".to_string()
            } else if r.path.contains("/operationResults/") {
                "operation-result".to_string()
            } else {
                r.path.rsplit('/').next().unwrap().to_string()
            };
            format!("{} {kind}", r.method)
        })
        .collect()
}

/// Every ARM request carried the one ARM token of `client`, and every token request followed the
/// Container Apps managed-identity protocol.
fn assert_authenticated(fake: &FakeAzure, sub: &str, client: &str) {
    let tokens = fake.tokens(client, ARM_RESOURCE);
    assert_eq!(tokens.len(), 1, "one ARM token, cached by the credential");
    let bearer = format!("Bearer {}", tokens[0]);
    let reqs = fake.arm_requests(sub);
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(r.authorization.as_deref(), Some(bearer.as_str()), "{} {}", r.method, r.path);
    }
    let ids = fake.identity_requests(client);
    assert!(!ids.is_empty());
    for r in ids {
        assert_eq!(r.method, "GET");
        assert_eq!(r.identity_header.as_deref(), Some(IDENTITY_SECRET));
        assert_eq!(r.query["api-version"], "2019-08-01");
        assert!([ARM_RESOURCE, REDIS_RESOURCE].contains(&r.query["resource"].as_str()), "{:?}", r.query);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_that_blocked_writes_the_exact_rule_and_its_undo_deletes_it() {
    let fake = FakeAzure::shared();
    let (sub, client) = ("sub-run-block", "client-run-block");
    let svc = azure_service(fake, sub, client, &["--redis-enabled", "false"]).await;
    assert_eq!(svc.status().await["network"]["backend"], "azure");

    let script = r#"
        let id = network_block(#{seconds: 300});
        let s = status();
        record("blocked", s.network.blocked);
        throw "the script fails after blocking";
    "#;
    let started = Utc::now();
    let report = run_and_wait(&svc, json!({"script": script})).await;
    assert_eq!(report["status"], "failed", "{report}");
    assert_eq!(report["measurements"]["blocked"], true, "{report}");
    assert_eq!(report["undo"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["undo"][0]["ok"], true, "{report}");
    assert_eq!(report["undo"][0]["detail"], "cleared", "{report}");

    let nsg = FakeAzure::nsg_path(sub, RG, NSG);
    let reqs = fake.arm_requests(sub);
    let reqs = without_listings(&reqs);
    let rule = reqs[0].path.rsplit('/').next().unwrap();
    let op = "GET operation".to_string();
    let result = "GET operation-result".to_string();
    assert_eq!(shape(&reqs), [format!("PUT {rule}"), op.clone(), op, format!("DELETE {rule}"), result.clone(), result]);
    let put = reqs[0];
    let name = put.path.strip_prefix(&format!("{nsg}/securityRules/")).expect("PUT under the NSG's rules");
    assert!(name.starts_with("chaos-"), "{name}");
    assert_eq!(put.query["api-version"], "2024-03-01");
    let description = put.body["properties"]["description"].as_str().unwrap().to_string();
    let expires = description
        .strip_prefix(&format!("chaos-lab run={} expires=", report["run_id"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("description {description:?}"));
    let expires = chrono::DateTime::parse_from_rfc3339(expires).unwrap().with_timezone(&Utc);
    let ttl = (expires - started).num_seconds();
    assert!((295..=305).contains(&ttl), "expiry {ttl} s after the start, want 300");
    assert_eq!(
        put.body,
        json!({"properties": {"description": description, "protocol": "Tcp", "sourcePortRange": "*",
            "destinationPortRange": "10000", "sourceAddressPrefix": "*", "destinationAddressPrefix": "*",
            "access": "Deny", "priority": 100, "direction": "Inbound"}})
    );
    assert_eq!(reqs[3].path, put.path);
    assert_eq!(reqs[3].query["api-version"], "2024-03-01");
    assert!(fake.rule_names(&nsg).is_empty());
    assert_authenticated(fake, sub, client);
    assert_nothing_broken(&svc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_reset_peers_and_cut_existing_are_refused_by_the_azure_backend() {
    let fake = FakeAzure::shared();
    let (sub, client) = ("sub-unsupported", "client-unsupported");
    let svc = azure_service(fake, sub, client, &["--redis-enabled", "false"]).await;
    for (script, needle) in [
        ("network_latency(200)", "not supported by the azure backend"),
        ("network_reset_peers()", "not supported by the azure backend"),
        ("network_block(#{cut_existing: true})", "call redis_reset() after network_block()"),
    ] {
        let report = run_and_wait(&svc, json!({"script": script})).await;
        assert_eq!(report["status"], "failed", "{report}");
        let message = report["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{script}: {message}");
    }
    assert!(without_listings(&fake.arm_requests(sub)).is_empty(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_chaos_rules_are_swept_at_startup_and_other_rules_are_left_alone() {
    let fake = FakeAzure::shared();
    let (sub, client) = ("sub-sweep", "client-sweep");
    let nsg = FakeAzure::nsg_path(sub, RG, NSG);
    let at = |h: i64| (Utc::now() + chrono::Duration::hours(h)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    fake.add_rule(&nsg, "allow-bastion", 200, &format!("chaos-lab run=x expires={}", at(-1)));
    fake.add_rule(&nsg, "chaos-by-hand", 201, "written by hand, no expiry");
    fake.add_rule(&nsg, "chaos-live", 202, &format!("chaos-lab run=r2 expires={}", at(1)));
    // Last in listing order, so once it is gone the whole sweep has been decided.
    fake.add_rule(&nsg, "chaos-stale", 203, &format!("chaos-lab run=r1 expires={}", at(-1)));

    let _svc = azure_service(fake, sub, client, &["--redis-enabled", "false"]).await;
    let swept =
        eventually(Duration::from_secs(10), || async { !fake.rule_names(&nsg).contains(&"chaos-stale".to_string()) })
            .await;
    assert!(swept, "the expired rule was not deleted at startup");
    assert_eq!(fake.rule_names(&nsg), ["allow-bastion", "chaos-by-hand", "chaos-live"]);
    let deletes: Vec<String> =
        fake.arm_requests(sub).into_iter().filter(|r| r.method == "DELETE").map(|r| r.path).collect();
    assert_eq!(deletes, [format!("{nsg}/securityRules/chaos-stale")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_inject_takes_the_next_free_priority_after_a_collision_and_resets_the_app() {
    let fake = FakeAzure::shared();
    let (sub, client) = ("sub-cli-inject", "client-cli-inject");
    let nsg = FakeAzure::nsg_path(sub, RG, NSG);
    fake.add_rule(&nsg, "allow-load-balancer", 100, "platform rule");
    fake.add_rule(&nsg, "chaos-block-other", 101, "chaos-lab run=x expires=2999-01-01T00:00:00Z");
    // Someone takes priority 102 between our listing and our write.
    fake.fail_next(
        sub,
        "PUT",
        "/securityRules/chaos-",
        400,
        "SecurityRuleConflict",
        "Rules cannot have the same Priority",
        1,
    );

    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &["--chaos-api-token", "op-token-0123456789"]).await;
    assert_eq!(get(&svc.url("/")).await.0, 200, "one pooled connection to reset");

    let mut env = azd_env(sub, client);
    env.extend([("SERVICE_APP_URL", svc.url.as_str()), ("CHAOS_API_TOKEN", "op-token-0123456789")]);
    let (code, out, err) = cli(&["network", "inject", "--duration", "120"], &env).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(priority 103)"), "{out}");
    assert!(out.contains("app reset its Redis connections: 1 closed"), "{out}");

    let puts: Vec<Value> = fake
        .arm_requests(sub)
        .into_iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.body["properties"]["priority"].clone())
        .collect();
    assert_eq!(puts, [json!(102), json!(103)]);
    assert_eq!(fake.rule_names(&nsg).len(), 3);
    assert!(svc.status().await["redis"]["last_reset"].is_string());
    assert_authenticated(fake, sub, client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_retries_arm_throttling_and_server_errors() {
    let fake = FakeAzure::shared();
    let (sub, client) = ("sub-cli-retry", "client-cli-retry");
    fake.fail_next(sub, "GET", "/securityRules", 429, "TooManyRequests", "slow down", 1);
    fake.fail_next(sub, "PUT", "/securityRules/", 503, "ServiceUnavailable", "try later", 2);
    fake.fail_next(sub, "GET", "/operations/", 500, "InternalServerError", "oops", 1);

    let (code, out, err) = cli(&["network", "inject"], &azd_env(sub, client)).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("skipped POST /chaos/redis-reset"), "{out}");
    let reqs = fake.arm_requests(sub);
    let count = |m: &str, frag: &str| reqs.iter().filter(|r| r.method == m && r.path.contains(frag)).count();
    assert_eq!(count("GET", "/securityRules"), 2, "list: 429, then 200");
    assert_eq!(count("PUT", "/securityRules/"), 3, "write: 503, 503, then 201");
    assert_eq!(count("GET", "/operations/"), 3, "poll: 500, InProgress, Succeeded");
    assert_eq!(fake.rule_names(&FakeAzure::nsg_path(sub, RG, NSG)).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_says_the_identity_lacks_permission_on_the_nsg() {
    let fake = FakeAzure::shared();
    let (sub, client) = ("sub-cli-403", "client-cli-403");
    let action = "The client 'oid' does not have authorization to perform action \
                  'Microsoft.Network/networkSecurityGroups/securityRules/write'";
    fake.fail_next(sub, "PUT", "/securityRules/", 403, "AuthorizationFailed", action, 1);
    let (code, out, err) = cli(&["network", "inject"], &azd_env(sub, client)).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&format!("the identity lacks permission on NSG {NSG}")), "{err}");
    assert!(err.contains("AuthorizationFailed") && err.contains("securityRules/write"), "{err}");
    let puts = fake.arm_requests(sub).into_iter().filter(|r| r.method == "PUT").count();
    assert_eq!(puts, 1, "a 403 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_list_and_clear_touch_only_chaos_rules() {
    let fake = FakeAzure::shared();
    let (sub, client) = ("sub-cli-clear", "client-cli-clear");
    let nsg = FakeAzure::nsg_path(sub, RG, NSG);
    fake.add_rule(&nsg, "allow-bastion", 300, "platform rule");
    fake.add_rule(&nsg, "chaos-block-1", 100, "chaos-lab run=r1 expires=2999-01-01T00:00:00Z");
    let env = azd_env(sub, client);

    let (code, out, err) = cli(&["network", "list"], &env).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chaos-block-1  priority 100  port 10000  run r1  expires 2999-01-01T00:00:00"), "{out}");
    assert!(!out.contains("allow-bastion"), "{out}");

    let (code, out, err) = cli(&["network", "clear"], &env).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 chaos rule(s) deleted"), "{out}");
    assert_eq!(fake.rule_names(&nsg), ["allow-bastion"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_names_the_missing_azd_value_and_exits_2() {
    let fake = FakeAzure::shared();
    let env = [("AZURE_SUBSCRIPTION_ID", "sub-cli-missing"), ("AZURE_RESOURCE_GROUP", RG)];
    let (code, _, err) = cli(&["network", "inject"], &env).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("AZURE_NSG_NAME is not set: run `azd env get-values`"), "{err}");
    assert!(err.contains("--nsg"), "{err}");
    let (code, _, err) = cli(&["deploy-fault", "bad-env"], &env).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("SERVICE_APP_NAME is not set"), "{err}");
    assert!(fake.arm_requests("sub-cli-missing").is_empty());
}

fn app_template() -> Value {
    json!({"revisionSuffix": null, "scale": {"minReplicas": 1, "maxReplicas": 2}, "containers": [{
        "name": "chaos-lab", "image": "acr.example.io/chaos-lab:1",
        "env": [{"name": "REDIS_HOST", "value": "redis.internal"}, {"name": "REDIS_PORT", "value": "10000"},
                {"name": "LOG_FORMAT", "value": "json"}]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_fault_in_a_run_makes_a_broken_revision_and_the_undo_restores_the_previous_one() {
    let fake = FakeAzure::shared();
    let (sub, client) = ("sub-deploy-run", "client-deploy-run");
    let app = FakeAzure::app_path(sub, RG, "chaos-app");
    fake.add_app(&app, "chaos-app", app_template());
    fake.fail_next(sub, "GET", "/containerApps/chaos-app", 500, "InternalServerError", "try again", 1);
    let svc = azure_service(
        fake,
        sub,
        client,
        &["--service-app-name", "chaos-app", "--network-fault-backend", "none", "--redis-enabled", "false"],
    )
    .await;

    let report = run_and_wait(&svc, json!({"script": r#"let r = deploy_fault("bad-env"); r"#})).await;
    assert_eq!(report["status"], "succeeded", "{report}");
    let broken = report["result"].as_str().unwrap().to_string();
    assert!(broken.starts_with("chaos-app--chaos-bad-env-"), "{broken}");
    assert_eq!(report["undo"][0]["ok"], true, "{report}");
    assert_eq!(
        report["undo"][0]["detail"],
        format!("chaos-app--v1 active with 100% traffic, {broken} deactivated"),
        "{report}"
    );

    let reqs = fake.arm_requests(sub);
    let reqs: Vec<&Recorded> = reqs.iter().collect();
    assert_eq!(
        shape(&reqs),
        [
            "GET chaos-app",
            "GET chaos-app",
            "PATCH chaos-app",
            "GET operation",
            "GET operation",
            "POST activate",
            "PATCH chaos-app",
            "GET operation",
            "GET operation",
            "POST deactivate",
        ]
    );
    for r in reqs.iter().filter(|r| !r.path.contains("/operations/")) {
        assert_eq!(r.query["api-version"], "2024-03-01", "{} {}", r.method, r.path);
    }
    assert_eq!(reqs[5].path, format!("{app}/revisions/chaos-app--v1/activate"));
    assert_eq!(reqs[9].path, format!("{app}/revisions/{broken}/deactivate"));
    let mut expected = app_template();
    expected["revisionSuffix"] = json!(broken.strip_prefix("chaos-app--").unwrap());
    expected["containers"][0]["env"] = json!([{"name": "LOG_FORMAT", "value": "json"},
        {"name": "REDIS_HOST", "value": ""}, {"name": "REDIS_PORT", "value": "invalid"}]);
    assert_eq!(reqs[2].body, json!({"properties": {"template": expected}}));
    assert_eq!(
        reqs[6].body,
        json!({"properties": {"configuration": {"ingress": {"traffic": [{"revisionName": "chaos-app--v1", "weight": 100}]}}}})
    );
    let revisions = fake.revisions(&app);
    let state: Vec<(&str, bool, i64)> = revisions
        .iter()
        .map(|r| {
            let p = &r["properties"];
            (r["name"].as_str().unwrap(), p["active"].as_bool().unwrap(), p["trafficWeight"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(state, [("chaos-app--v1", true, 100), (broken.as_str(), false, 0)]);
    assert_authenticated(fake, sub, client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_deploy_fault_calls_no_arm() {
    let fake = FakeAzure::shared();
    let (sub, client) = ("sub-deploy-dry", "client-deploy-dry");
    fake.add_app(&FakeAzure::app_path(sub, RG, "chaos-app"), "chaos-app", app_template());
    let args = ["--service-app-name", "chaos-app", "--network-fault-backend", "none", "--redis-enabled", "false"];
    let svc = azure_service(fake, sub, client, &args).await;
    let report =
        run_and_wait(&svc, json!({"script": r#"deploy_fault("wrong-image"); network_block()"#, "dry_run": true})).await;
    assert_eq!(report["status"], "succeeded", "{report}");
    assert_eq!(report["undo"].as_array().unwrap().len(), 2, "{report}");
    assert!(fake.arm_requests(sub).is_empty(), "a dry run must not call ARM");

    let report = run_and_wait(&svc, json!({"script": r#"deploy_fault("blue-green")"#})).await;
    assert!(report["error"]["message"].as_str().unwrap().contains("use \"wrong-image\" or \"bad-env\""), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_deploy_fault_wrong_image_then_revisions_restores_the_previous_one() {
    let fake = FakeAzure::shared();
    let (sub, client) = ("sub-cli-deploy", "client-cli-deploy");
    let app = FakeAzure::app_path(sub, RG, "chaos-app");
    fake.add_app(&app, "chaos-app", app_template());
    let env = azd_env(sub, client);

    let (code, out, err) = cli(&["deploy-fault", "wrong-image"], &env).await;
    assert_eq!(code, 0, "{out}{err}");
    let patch = fake.arm_requests(sub).into_iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(patch.body["properties"]["template"]["containers"][0]["image"], "nginx:alpine");
    assert_eq!(patch.body["properties"]["template"]["containers"][0]["env"], app_template()["containers"][0]["env"]);
    let broken = format!("chaos-app--{}", patch.body["properties"]["template"]["revisionSuffix"].as_str().unwrap());
    assert!(
        out.contains(&format!("to undo: chaos-lab revisions --activate chaos-app--v1 --deactivate {broken}")),
        "{out}"
    );

    let (code, out, err) = cli(&["revisions"], &env).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chaos-app--v1  active  traffic 0%"), "{out}");
    assert!(out.contains(&format!("{broken}  active  traffic 100%  Unhealthy")), "{out}");
    assert!(out.contains("nginx:alpine"), "{out}");

    let (code, out, err) = cli(&["revisions", "--activate", "chaos-app--v1", "--deactivate", &broken], &env).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chaos-app--v1  active  traffic 100%"), "{out}");
    assert!(out.contains(&format!("{broken}  inactive  traffic 0%")), "{out}");
    let gets = fake.arm_requests(sub).into_iter().filter(|r| r.path.ends_with("/revisions")).count();
    assert_eq!(gets, 2);
}

/// An admin connection to the TLS Redis; the default user is switched off so that only the ACL
/// user with the current token can get in.
fn tls_admin(redis: &RedisServer, ca: &std::path::Path) -> Arc<Mutex<redis::Connection>> {
    let connect = |url: String| {
        let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(std::fs::read(ca).unwrap()) };
        redis::Client::build_with_tls(url, certs).unwrap().get_connection().unwrap()
    };
    let mut first = connect(format!("rediss://localhost:{}/", redis.port));
    let _: () =
        redis::cmd("ACL").arg(&["SETUSER", "admin", "on", ">adminpw", "~*", "&*", "+@all"]).query(&mut first).unwrap();
    let _: () = redis::cmd("ACL").arg(&["SETUSER", "default", "off"]).query(&mut first).unwrap();
    Arc::new(Mutex::new(connect(format!("rediss://admin:adminpw@localhost:{}/", redis.port))))
}

fn auth_calls(admin: &Mutex<redis::Connection>) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut admin.lock().unwrap()).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_auth:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Ids of the connections authenticated as `user`.
fn connection_ids(admin: &Mutex<redis::Connection>, user: &str) -> Vec<String> {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin.lock().unwrap()).unwrap();
    let mut ids: Vec<String> = list
        .lines()
        .filter(|l| l.split(' ').any(|f| f == format!("user={user}")))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")).map(str::to_string))
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_tokens_rotate_and_live_redis_connections_re_authenticate() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let fake = FakeAzure::shared();
    let client = "client-entra";
    let user = FakeAzure::object_id(client);
    let (redis, ca) = RedisServer::start_tls();
    let admin = tls_admin(&redis, &ca);
    // Each new token becomes the user's only password: an old token stops working at once.
    let (hook_admin, hook_user) = (admin.clone(), user.clone());
    fake.on_redis_token(client, move |token| {
        let args = ["SETUSER", &hook_user, "on", "resetpass", &format!(">{token}"), "~*", "&*", "+@all"];
        let _: () = redis::cmd("ACL").arg(&args).query(&mut hook_admin.lock().unwrap()).unwrap();
    });
    fake.set_token_lifetime(client, 4); // refreshed about every 2 s

    let ca_path = ca.to_string_lossy().into_owned();
    let args = [
        "--redis-host",
        "localhost",
        "--redis-ssl",
        "true",
        "--redis-ca-cert",
        &ca_path,
        "--redis-auth",
        "entra",
        "--azure-client-id",
        client,
        "--network-fault-backend",
        "none",
    ];
    let svc = TestService::start(redis.port, &args).await;
    let (status, body) = get(&svc.url("/")).await;
    assert_eq!(status, 200, "{body}");
    let live = connection_ids(&admin, &user);
    assert!(!live.is_empty(), "the service is connected as the identity's object id");
    let auths = auth_calls(&admin);
    let issued = fake.tokens(client, REDIS_RESOURCE).len();

    let rotated =
        eventually(Duration::from_secs(15), || async { fake.tokens(client, REDIS_RESOURCE).len() >= issued + 2 }).await;
    assert!(rotated, "the token was not refreshed");
    assert!(
        eventually(Duration::from_secs(3), || async { auth_calls(&admin) >= auths + 2 }).await,
        "live connections did not re-send AUTH ({} AUTH before, {} after)",
        auths,
        auth_calls(&admin)
    );
    assert_eq!(connection_ids(&admin, &user), live, "the same connections, re-authenticated, not replaced");
    let (status, body) = get(&svc.url("/")).await;
    assert_eq!(status, 200, "{body}");

    // The first token is no longer a password, and new connections use the current one.
    let first = fake.tokens(client, REDIS_RESOURCE)[0].clone();
    let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(std::fs::read(&ca).unwrap()) };
    let mut probe = redis::Client::build_with_tls(format!("rediss://localhost:{}/", redis.port), certs)
        .unwrap()
        .get_connection()
        .unwrap();
    let old: redis::RedisResult<()> = redis::cmd("AUTH").arg(&user).arg(&first).query(&mut probe);
    assert!(old.is_err(), "the first token still works");
    assert_eq!(post(&svc.url("/chaos/redis-reset"), "").await.0, 200);
    let (status, body) = get(&svc.url("/")).await;
    assert_eq!(status, 200, "{body}");
    let fresh = connection_ids(&admin, &user);
    assert!(!fresh.is_empty() && fresh.iter().all(|id| !live.contains(id)), "{live:?} then {fresh:?}");
    assert!(fake.identity_requests(client).iter().all(|r| r.identity_header.as_deref() == Some(IDENTITY_SECRET)));
}
