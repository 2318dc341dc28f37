//! A fake Azure on loopback: the managed-identity endpoint of Container Apps (`IDENTITY_ENDPOINT`)
//! and the few ARM resources chaos-lab touches (NSG security rules, a container app and its
//! revisions, operation status URLs). It records every request, checks the identity protocol and
//! the bearer tokens like Azure would, and can be told to fail the next matching requests.
//!
//! One fake serves a whole test binary (the credential reads `IDENTITY_ENDPOINT` from the process
//! environment): tests keep apart by using their own subscription id and client id.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

/// The resource group and NSG the tests' services are told about.
pub const RG: &str = "rg-chaos";
pub const NSG: &str = "nsg-redis-pe";

/// The secret Container Apps puts in `IDENTITY_HEADER`.
pub const IDENTITY_SECRET: &str = "fake-identity-header-secret";
pub const ARM_RESOURCE: &str = "https://management.azure.com";
pub const REDIS_RESOURCE: &str = "https://redis.azure.com";

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub authorization: Option<String>,
    pub identity_header: Option<String>,
    pub body: Value,
}

type TokenHook = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    /// token -> (client id, resource)
    issued: HashMap<String, (String, String)>,
    /// (client, resource) -> tokens in the order issued
    tokens: HashMap<(String, String), Vec<String>>,
    lifetime: HashMap<String, i64>,
    hooks: HashMap<String, TokenHook>,
    /// NSG path (…/networkSecurityGroups/{n}) -> rule name -> rule
    rules: HashMap<String, BTreeMap<String, Value>>,
    /// (method, subscription scope, path fragment, status, body, times left)
    failures: Vec<(String, String, String, u16, Value, usize)>,
    /// app path -> app
    apps: HashMap<String, Value>,
    revisions: HashMap<String, Vec<Value>>,
    /// operation id -> polls answered so far
    ops: HashMap<String, u32>,
    next_op: u64,
}

#[derive(Clone)]
pub struct FakeAzure {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeAzure {
    /// The fake of this test binary; sets `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` for it.
    pub fn shared() -> &'static FakeAzure {
        static FAKE: OnceLock<FakeAzure> = OnceLock::new();
        FAKE.get_or_init(|| {
            let fake = Self::start();
            // SAFETY: set once, before any credential of this test binary reads them (every
            // Azure test calls `shared()` first), and never changed afterwards.
            unsafe {
                std::env::set_var("IDENTITY_ENDPOINT", fake.identity_endpoint());
                std::env::set_var("IDENTITY_HEADER", IDENTITY_SECRET);
            }
            fake
        })
    }

    /// Starts a fake on its own thread and runtime (it outlives each test's runtime).
    fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let fake = Self { base, inner };
        let served = fake.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(handle).with_state(served);
                axum::serve(listener, app).await.unwrap();
            });
        });
        fake
    }

    pub fn identity_endpoint(&self) -> String {
        format!("{}/msi/token", self.base)
    }

    /// Environment for a `chaos-lab` child process that talks to this fake.
    /// Flags of an in-process service on the azure backend against this fake, as Bicep sets them
    /// (by environment) on Azure.
    pub fn service_args<'a>(&'a self, sub: &'a str, client: &'a str) -> Vec<&'a str> {
        vec![
            "--azure-subscription-id",
            sub,
            "--azure-resource-group",
            RG,
            "--azure-nsg-name",
            NSG,
            "--azure-client-id",
            client,
            "--azure-resource-manager-endpoint",
            self.base.as_str(),
            "--network-fault-backend",
            "azure",
        ]
    }

    /// The environment of a `chaos-lab` process on the azure backend against this fake, with
    /// deploy faults on the fake's `chaos-app` and Redis off.
    pub fn service_env(&self, sub: &str, client: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("AZURE_SUBSCRIPTION_ID", sub),
            ("AZURE_RESOURCE_GROUP", RG),
            ("AZURE_NSG_NAME", NSG),
            ("AZURE_CLIENT_ID", client),
            ("NETWORK_FAULT_BACKEND", "azure"),
            ("SERVICE_APP_NAME", "chaos-app"),
            ("REDIS_ENABLED", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.extend(self.child_env().into_iter().map(|(k, v)| (k.to_string(), v)));
        env
    }

    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("IDENTITY_ENDPOINT", self.identity_endpoint()),
            ("IDENTITY_HEADER", IDENTITY_SECRET.to_string()),
            ("AZURE_RESOURCE_MANAGER_ENDPOINT", self.base.clone()),
        ]
    }

    /// ARM requests of one subscription, in order.
    pub fn arm_requests(&self, subscription: &str) -> Vec<Recorded> {
        let needle = format!("/subscriptions/{subscription}/");
        self.inner.lock().unwrap().requests.iter().filter(|r| r.path.contains(&needle)).cloned().collect()
    }

    /// Token requests of one client id, in order.
    pub fn identity_requests(&self, client: &str) -> Vec<Recorded> {
        let inner = self.inner.lock().unwrap();
        let mine =
            |r: &&Recorded| r.path == "/msi/token" && r.query.get("client_id").map(String::as_str) == Some(client);
        inner.requests.iter().filter(mine).cloned().collect()
    }

    /// Tokens issued to `client` for `resource`, oldest first.
    pub fn tokens(&self, client: &str, resource: &str) -> Vec<String> {
        self.inner.lock().unwrap().tokens.get(&(client.into(), resource.into())).cloned().unwrap_or_default()
    }

    /// Tokens of `client` live this many seconds (default 3600).
    pub fn set_token_lifetime(&self, client: &str, seconds: i64) {
        self.inner.lock().unwrap().lifetime.insert(client.into(), seconds);
    }

    /// Called with every new token of `client` for Redis, before the token is handed out.
    pub fn on_redis_token(&self, client: &str, hook: impl Fn(&str) + Send + Sync + 'static) {
        self.inner.lock().unwrap().hooks.insert(client.into(), Arc::new(hook));
    }

    /// The object id the fake puts in the tokens of `client`.
    pub fn object_id(client: &str) -> String {
        format!("oid-{client}")
    }

    pub fn nsg_path(sub: &str, rg: &str, nsg: &str) -> String {
        format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/networkSecurityGroups/{nsg}")
    }

    pub fn app_path(sub: &str, rg: &str, app: &str) -> String {
        format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.App/containerApps/{app}")
    }

    /// Puts an inbound rule in an NSG, as if someone else had written it.
    pub fn add_rule(&self, nsg_path: &str, name: &str, priority: i64, description: &str) {
        let rule = json!({
            "name": name,
            "id": format!("{nsg_path}/securityRules/{name}"),
            "properties": {"description": description, "protocol": "Tcp", "sourcePortRange": "*",
                "destinationPortRange": "10000", "sourceAddressPrefix": "*", "destinationAddressPrefix": "*",
                "access": "Deny", "priority": priority, "direction": "Inbound", "provisioningState": "Succeeded"}
        });
        self.inner.lock().unwrap().rules.entry(nsg_path.into()).or_default().insert(name.into(), rule);
    }

    pub fn rule_names(&self, nsg_path: &str) -> Vec<String> {
        self.inner.lock().unwrap().rules.get(nsg_path).map(|r| r.keys().cloned().collect()).unwrap_or_default()
    }

    /// The next `times` requests of subscription `sub` with this method whose path contains
    /// `fragment` fail with `status` and ARM's error body.
    #[allow(clippy::too_many_arguments)]
    pub fn fail_next(
        &self,
        sub: &str,
        method: &str,
        fragment: &str,
        status: u16,
        code: &str,
        message: &str,
        times: usize,
    ) {
        let body = json!({"error": {"code": code, "message": message}});
        let scope = format!("/subscriptions/{sub}/");
        self.inner.lock().unwrap().failures.push((method.into(), scope, fragment.into(), status, body, times));
    }

    /// A container app with one ready revision `{app}--v1`.
    pub fn add_app(&self, app_path: &str, name: &str, template: Value) {
        let first = format!("{name}--v1");
        let app = json!({"name": name, "id": app_path, "properties": {
            "latestRevisionName": first, "latestReadyRevisionName": first,
            "configuration": {"activeRevisionsMode": "Multiple", "ingress": {"external": true, "targetPort": 8000}},
            "template": template}});
        let rev = json!({"name": first, "properties": {"active": true, "trafficWeight": 100,
            "createdTime": "2026-11-22T10:00:00Z", "healthState": "Healthy", "template": app["properties"]["template"]}});
        let mut inner = self.inner.lock().unwrap();
        inner.apps.insert(app_path.into(), app);
        inner.revisions.insert(app_path.into(), vec![rev]);
    }

    pub fn revisions(&self, app_path: &str) -> Vec<Value> {
        self.inner.lock().unwrap().revisions.get(app_path).cloned().unwrap_or_default()
    }
}

fn token(client: &str, resource: &str, n: usize) -> String {
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let claims = json!({"oid": FakeAzure::object_id(client), "aud": resource, "n": n});
    format!("{}.{}.fake-signature", b64(json!({"alg": "none", "typ": "JWT"})), b64(claims))
}

fn reply(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn arm_error(status: u16, code: &str, message: &str) -> Response {
    reply(status, json!({"error": {"code": code, "message": message}}))
}

async fn handle(State(fake): State<FakeAzure>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let query: HashMap<String, String> = uri.query().map(|q| url_pairs(q).into_iter().collect()).unwrap_or_default();
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let rec = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: query.clone(),
        authorization: header("authorization"),
        identity_header: header("x-identity-header"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let mut inner = fake.inner.lock().unwrap();
    inner.requests.push(rec.clone());

    if rec.path == "/msi/token" {
        return identity(inner, &rec);
    }

    // ARM: a token this fake issued for ARM, or 401 like ARM.
    let bearer = rec.authorization.as_deref().and_then(|a| a.strip_prefix("Bearer ")).unwrap_or_default();
    if inner.issued.get(bearer).is_none_or(|(_, r)| r != ARM_RESOURCE) {
        return arm_error(401, "InvalidAuthenticationToken", "The access token is invalid.");
    }
    let failure = inner
        .failures
        .iter_mut()
        .find(|f| f.5 > 0 && f.0 == rec.method && rec.path.contains(&f.1) && rec.path.contains(&f.2))
        .map(|f| {
            f.5 -= 1;
            (f.3, f.4.clone())
        });
    if let Some((status, body)) = failure {
        let mut r = reply(status, body);
        if status == 429 || status == 503 {
            r.headers_mut().insert("retry-after", "0".parse().unwrap());
        }
        return r;
    }

    let base = fake.base.clone();
    let path = rec.path.clone();
    let m = rec.method.as_str();
    // Operation status and results.
    if let Some(id) = path.rsplit_once("/operations/").map(|(_, id)| id.to_string()) {
        let polls = inner.ops.entry(id).or_default();
        *polls += 1;
        let status = if *polls == 1 { "InProgress" } else { "Succeeded" };
        return reply(200, json!({"status": status}));
    }
    if let Some(id) = path.rsplit_once("/operationResults/").map(|(_, id)| id.to_string()) {
        let polls = inner.ops.entry(id).or_default();
        *polls += 1;
        return if *polls == 1 { (StatusCode::ACCEPTED, "").into_response() } else { reply(200, json!({})) };
    }
    let op = |inner: &mut Inner, sub: &str| {
        inner.next_op += 1;
        format!("{base}/subscriptions/{sub}/providers/Fake/locations/x/operations/op{}?api-version=x", inner.next_op)
    };
    let sub = path.split('/').nth(2).unwrap_or_default().to_string();

    // NSG security rules.
    if let Some((nsg, rest)) = path.split_once("/securityRules") {
        let nsg = nsg.to_string();
        let name = rest.trim_start_matches('/').to_string();
        let rules = inner.rules.entry(nsg.clone()).or_default();
        return match (m, name.is_empty()) {
            ("GET", true) => reply(200, json!({"value": rules.values().cloned().collect::<Vec<_>>()})),
            ("GET", false) => match rules.get(&name) {
                Some(r) => reply(200, r.clone()),
                None => arm_error(404, "NotFound", "Resource not found."),
            },
            ("PUT", false) => {
                let props = rec.body["properties"].clone();
                let clash = rules.values().find(|r| {
                    r["name"] != name.as_str()
                        && r["properties"]["priority"] == props["priority"]
                        && r["properties"]["direction"] == props["direction"]
                });
                if let Some(other) = clash {
                    let msg = format!("Security rule {name} conflicts with rule {}.", other["name"]);
                    return arm_error(400, "SecurityRuleConflict", &msg);
                }
                let mut rule = json!({"name": name, "id": format!("{nsg}/securityRules/{name}"), "properties": props});
                rule["properties"]["provisioningState"] = json!("Updating");
                rules.insert(name.clone(), rule.clone());
                let url = op(&mut inner, &sub);
                let mut r = reply(201, rule);
                r.headers_mut().insert("azure-asyncoperation", url.parse().unwrap());
                r.headers_mut().insert("retry-after", "0".parse().unwrap());
                r
            }
            ("DELETE", false) => {
                if rules.remove(&name).is_none() {
                    return (StatusCode::NO_CONTENT, "").into_response();
                }
                let url = op(&mut inner, &sub).replace("/operations/", "/operationResults/");
                let mut r = (StatusCode::ACCEPTED, "").into_response();
                r.headers_mut().insert("location", url.parse().unwrap());
                r.headers_mut().insert("retry-after", "0".parse().unwrap());
                r
            }
            _ => arm_error(405, "MethodNotAllowed", "not in the fake"),
        };
    }

    // Container apps and revisions.
    if path.contains("/providers/Microsoft.App/containerApps/") {
        let (app_path, rest) = match path.split_once("/revisions") {
            Some((a, r)) => (a.to_string(), Some(r.trim_start_matches('/').to_string())),
            None => (path.clone(), None),
        };
        if !inner.apps.contains_key(&app_path) {
            return arm_error(404, "ResourceNotFound", "The container app was not found.");
        }
        return match (m, rest.as_deref()) {
            ("GET", None) => reply(200, inner.apps[&app_path].clone()),
            ("PATCH", None) => {
                let app_name = inner.apps[&app_path]["name"].as_str().unwrap().to_string();
                if let Some(template) = rec.body["properties"].get("template") {
                    let name = format!("{app_name}--{}", template["revisionSuffix"].as_str().unwrap_or("x"));
                    let rev = json!({"name": name, "properties": {"active": true, "trafficWeight": 100,
                        "createdTime": "2026-11-22T11:00:00Z", "healthState": "Unhealthy", "template": template}});
                    let revs = inner.revisions.get_mut(&app_path).unwrap();
                    for r in revs.iter_mut() {
                        r["properties"]["trafficWeight"] = json!(0);
                    }
                    revs.push(rev);
                    let app = inner.apps.get_mut(&app_path).unwrap();
                    app["properties"]["template"] = template.clone();
                    app["properties"]["latestRevisionName"] = json!(name);
                }
                if let Some(traffic) = rec.body["properties"]["configuration"]["ingress"]["traffic"].as_array() {
                    let weights: HashMap<String, i64> = traffic
                        .iter()
                        .map(|t| {
                            (t["revisionName"].as_str().unwrap_or("").to_string(), t["weight"].as_i64().unwrap_or(0))
                        })
                        .collect();
                    for r in inner.revisions.get_mut(&app_path).unwrap() {
                        let w = weights.get(r["name"].as_str().unwrap()).copied().unwrap_or(0);
                        r["properties"]["trafficWeight"] = json!(w);
                    }
                }
                let url = op(&mut inner, &sub);
                let mut r = (StatusCode::ACCEPTED, "").into_response();
                r.headers_mut().insert("azure-asyncoperation", url.parse().unwrap());
                r.headers_mut().insert("retry-after", "0".parse().unwrap());
                r
            }
            ("GET", Some("")) => reply(200, json!({"value": inner.revisions[&app_path]})),
            ("POST", Some(action)) => {
                let Some((rev, verb)) = action.split_once('/') else {
                    return arm_error(405, "MethodNotAllowed", "not in the fake");
                };
                let Some(r) = inner.revisions.get_mut(&app_path).unwrap().iter_mut().find(|r| r["name"] == rev) else {
                    return arm_error(404, "ContainerAppRevisionNotFound", "The revision was not found.");
                };
                r["properties"]["active"] = json!(verb == "activate");
                reply(200, json!({}))
            }
            _ => arm_error(405, "MethodNotAllowed", "not in the fake"),
        };
    }
    arm_error(404, "NotFound", "not in the fake")
}

/// The App Service / Container Apps managed-identity protocol (api-version 2019-08-01).
fn identity(mut inner: std::sync::MutexGuard<'_, Inner>, rec: &Recorded) -> Response {
    if rec.identity_header.as_deref() != Some(IDENTITY_SECRET) {
        return reply(401, json!({"error": "invalid X-IDENTITY-HEADER"}));
    }
    if rec.query.get("api-version").map(String::as_str) != Some("2019-08-01") {
        return reply(400, json!({"error": "api-version must be 2019-08-01"}));
    }
    let Some(resource) = rec.query.get("resource").cloned() else {
        return reply(400, json!({"error": "resource is missing"}));
    };
    let client = rec.query.get("client_id").cloned().unwrap_or_else(|| "system-assigned".into());
    let key = (client.clone(), resource.clone());
    let n = inner.tokens.get(&key).map_or(0, Vec::len) + 1;
    let tok = token(&client, &resource, n);
    let lifetime = inner.lifetime.get(&client).copied().unwrap_or(3600);
    let hook = inner.hooks.get(&client).cloned().filter(|_| resource == REDIS_RESOURCE);
    inner.issued.insert(tok.clone(), key.clone());
    inner.tokens.entry(key).or_default().push(tok.clone());
    drop(inner);
    if let Some(hook) = hook {
        hook(&tok);
    }
    let expires_on = chrono::Utc::now().timestamp() + lifetime;
    reply(
        200,
        json!({"access_token": tok, "expires_on": expires_on.to_string(), "token_type": "Bearer", "resource": resource}),
    )
}

fn url_pairs(q: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{q}")).unwrap().query_pairs().map(|(k, v)| (k.into(), v.into())).collect()
}
