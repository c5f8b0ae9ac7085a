//! The routes the controller serves against the two places that document
//! them, the OpenAPI document it serves and `docs/api.md`, so a route added
//! to its tables without documentation fails here.

use controller::api::{open_routes, protected_routes};
use integration_tests::spawn_app;

/// The written contract, relative to this crate.
const API_DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md");

/// Method and path of every route in the controller's tables.
fn served_routes() -> Vec<(String, &'static str)> {
    let routes: Vec<_> = protected_routes()
        .into_iter()
        .chain(open_routes())
        .map(|route| (route.method.to_string(), route.path))
        .collect();
    assert!(!routes.is_empty(), "the route tables are empty");
    routes
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document() {
    let app = spawn_app().await;
    let r = app.get_open("/api/openapi.json").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let paths = r.json["paths"].as_object().expect("paths object");
    let missing: Vec<String> = served_routes()
        .into_iter()
        .filter(|(method, path)| {
            let operations = paths.get(*path);
            operations
                .and_then(|ops| ops.get(method.to_lowercase()))
                .is_none()
        })
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    assert!(
        missing.is_empty(),
        "routes missing from /api/openapi.json: {missing:?}; it has {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    app.stop().await;
}

#[test]
fn every_route_is_in_docs_api_md() {
    let doc = std::fs::read_to_string(API_DOC).unwrap_or_else(|e| panic!("reading {API_DOC}: {e}"));
    let missing: Vec<String> = served_routes()
        .into_iter()
        .map(|(method, path)| format!("`{method} {path}`"))
        .filter(|entry| !doc.contains(entry.as_str()))
        .collect();
    assert!(missing.is_empty(), "routes missing from docs/api.md: {missing:?}");
}
