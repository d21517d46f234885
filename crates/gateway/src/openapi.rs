//! The OpenAPI 3.1 document's root: title, version, tags and the shared schemas. The paths
//! come from the handlers' `#[utoipa::path]` attributes through the route lists in
//! [`crate::routes`], so the document and the router cannot drift apart.

use utoipa::OpenApi;

use crate::errors::ErrorBody;

/// Root of `GET /openapi.json`; [`crate::routes::openapi`] adds the paths.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "cks-lab gateway",
        description = "REST API of cks-lab under /api/v1: scenarios, sessions, validation, admin. \
                       Every error is {\"error\": CODE, \"message\": text}. See docs/gateway.md.",
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "scenarios", description = "The scenario catalog"),
        (name = "sessions", description = "The caller's practice sessions and validations"),
        (name = "admin", description = "Role admin: pools, clusters, everyone's sessions"),
        (name = "auth", description = "The caller's identity; the web page's sign-in in token mode"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// Completes the responses of every operation: each `/api/v1` route can also answer 401 (no
/// identity in token and proxy modes) and 503 (`NOT_READY` until the caches are filled, or the
/// cluster API unreachable), in the error shape; and OpenAPI requires a description on every
/// response, so where a handler's documentation gives none the status's reason phrase stands in.
pub fn complete_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
    let error = || {
        ResponseBuilder::new()
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for (path, item) in &mut doc.paths.paths {
        let api = path.starts_with("/api/v1/");
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ];
        for op in ops.into_iter().flatten() {
            if api {
                for code in ["401", "503"] {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| RefOr::T(error()));
                }
            }
            for (code, response) in &mut op.responses.responses {
                if let RefOr::T(r) = response
                    && r.description.trim().is_empty()
                {
                    r.description = code
                        .parse::<u16>()
                        .ok()
                        .and_then(|c| http::StatusCode::from_u16(c).ok())
                        .and_then(|c| c.canonical_reason())
                        .unwrap_or("Response")
                        .to_owned();
                }
            }
        }
    }
}
