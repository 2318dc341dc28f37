//! The API description, generated: `GET /openapi.json` is built from the handlers'
//! `#[utoipa::path]` annotations and the Rust types they answer with (`ToSchema`), so it cannot
//! drift from the code; `GET /docs` is a self-contained page that renders it (no CDN, no
//! build-time download). Each resource's `router()` registers its handlers through utoipa-axum,
//! which records the route and its description in one call.
//!
//! What applies to many operations is added here once, by [`Common`]: the `X-Request-ID`
//! parameter, and the bearer token with its 401 on every `/chaos/*` operation but
//! `GET /chaos/status`.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, Required, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ErrorBody;

const DOCS_PAGE: &str = include_str!("docs.html");

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chaos-lab",
        description = include_str!("openapi-intro.md"),
        license(name = "MIT"),
    ),
    servers((url = "/", description = "The service serving this document (locally http://127.0.0.1:8000)")),
    tags(
        (name = "app", description = "The Redis-backed app being broken, and its probes."),
        (name = "chaos", description = "The built-in faults, their status, the fault ledger, and the kill switch and its latch."),
        (name = "runs", description = "The scenario engine: runs of Rhai scripts, their reports and live events, and the scenario catalog."),
        (name = "docs", description = "This description, its HTML rendering, the console and the metrics."),
    ),
    components(schemas(ErrorBody)),
    modifiers(&Common),
)]
struct ApiDoc;

/// The document, generated once.
static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| serde_json::to_string_pretty(&document()).expect("the OpenAPI document serializes"));

/// The API description of every route [`super::router`] serves, as JSON.
pub fn document() -> serde_json::Value {
    let (_, mut doc) = super::routes().split_for_parts();
    Common.modify(&mut doc);
    let mut json = serde_json::to_value(&doc).expect("the OpenAPI document serializes");
    camel_case_links(&mut json);
    json
}

/// utoipa 5.5 writes a Link object's fields in snake case (`operation_id`); OpenAPI, and the
/// tools that follow links (schemathesis' stateful phase), want `operationId`.
fn camel_case_links(doc: &mut serde_json::Value) {
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    let links = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op["responses"].as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links").and_then(|l| l.as_object_mut()));
    for link in links.flat_map(|l| l.values_mut()).filter_map(|l| l.as_object_mut()) {
        for (snake, camel) in
            [("operation_id", "operationId"), ("operation_ref", "operationRef"), ("request_body", "requestBody")]
        {
            if let Some(v) = link.remove(snake) {
                link.insert(camel.to_string(), v);
            }
        }
    }
}

/// The base every resource's routes are merged into.
pub fn base() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json)).routes(routes!(docs))
}

/// This API description (OpenAPI 3.1), generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "docs",
    responses((status = 200, description = "The OpenAPI document.", content_type = "application/json", body = Object)))]
async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}

/// The API description as an HTML page
///
/// Self-contained: it renders `/openapi.json` with a small script and fetches nothing else.
#[utoipa::path(get, path = "/docs", tag = "docs",
    responses((status = 200, description = "The page.", content_type = "text/html", body = String)))]
async fn docs() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], DOCS_PAGE)
}

/// What many operations share, added to each rather than written on each.
struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The value of `CHAOS_API_TOKEN`, sent as `Authorization: Bearer <token>` (the scheme is \
                         case-insensitive; the token is compared in constant time). The service refuses to start \
                         with an empty or shorter-than-16-character `CHAOS_API_TOKEN`. Required only when \
                         `CHAOS_API_TOKEN` is set: then every `/chaos/*` request except `GET /chaos/status` without \
                         the right token is a 401. When it is not set, no token is needed (hence the empty \
                         alternative in each operation's `security`), but `POST /chaos/run` is refused with 403 if \
                         the service listens on a non-loopback address.",
                    ))
                    .build(),
            ),
        );
        let request_id = request_id_parameter();
        let unauthorized = ResponseBuilder::new()
            .description(
                "`CHAOS_API_TOKEN` is set and the request has no `Authorization: Bearer <token>` header, or the \
                 wrong token. Answered before the hang gate.",
            )
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build())
            .build();
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("put", &mut item.put),
                ("patch", &mut item.patch),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                if path != "/metrics" {
                    op.parameters.get_or_insert_with(Vec::new).push(request_id.clone());
                }
                if super::needs_token(method, path) {
                    op.security = Some(vec![
                        SecurityRequirement::new("bearerAuth", Vec::<String>::new()),
                        SecurityRequirement::default(),
                    ]);
                    op.responses.responses.insert("401".into(), unauthorized.clone().into());
                }
            }
        }
    }
}

fn request_id_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("X-Request-ID")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Correlation id. Optional: kept as given when present, otherwise the service generates a UUID v4. \
             Echoed in the `X-Request-ID` response header and in error bodies and logs.",
        ))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}
