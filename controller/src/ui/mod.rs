//! The web dashboard at `/ui`: plain HTML, CSS and JavaScript modules
//! compiled into the binary (no separate web server, no build step), served
//! with a strict Content-Security-Policy.
//!
//! The page is a client of the same HTTP API as the CLI: it logs in with
//! `POST /api/auth/session` (the token stays in an `HttpOnly` cookie, see
//! `api::session`), reads `GET /api/auth/me` for the scopes that decide
//! which buttons it shows, and every action goes through the route table's
//! scope check like any other request. The scripts build the page with
//! `textContent` and `createElement` only: no user text is ever parsed as
//! HTML, and the policy forbids inline script and style, so a `<script>`
//! in a job's description or output is shown as text and never runs.

use crate::api::AppState;
use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// The policy of every `/ui` response: only this origin's scripts, styles
/// and API; no inline script or style, no framing, no `<base>`, forms only
/// to this origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// One embedded file: its name under `/ui/`, media type and bytes.
pub struct Asset {
    /// Path under `/ui/` (`app.js`).
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its content, compiled in.
    pub body: &'static str,
}

/// The type of each kind of asset, UTF-8 throughout.
const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file the dashboard consists of (the page weight is their sum).
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: HTML,
        body: include_str!("assets/index.html"),
    },
    Asset {
        name: "style.css",
        content_type: CSS,
        body: include_str!("assets/style.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: SVG,
        body: include_str!("assets/favicon.svg"),
    },
    Asset {
        name: "app.js",
        content_type: JS,
        body: include_str!("assets/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: JS,
        body: include_str!("assets/api.js"),
    },
    Asset {
        name: "dom.js",
        content_type: JS,
        body: include_str!("assets/dom.js"),
    },
    Asset {
        name: "charts.js",
        content_type: JS,
        body: include_str!("assets/charts.js"),
    },
    Asset {
        name: "overview.js",
        content_type: JS,
        body: include_str!("assets/overview.js"),
    },
    Asset {
        name: "jobs.js",
        content_type: JS,
        body: include_str!("assets/jobs.js"),
    },
    Asset {
        name: "job.js",
        content_type: JS,
        body: include_str!("assets/job.js"),
    },
    Asset {
        name: "workers.js",
        content_type: JS,
        body: include_str!("assets/workers.js"),
    },
    Asset {
        name: "resources.js",
        content_type: JS,
        body: include_str!("assets/resources.js"),
    },
];

/// The `/ui` routes (no token needed to load the page: its data comes
/// from the API, which checks every request).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { serve("index.html") }))
        .route(
            "/ui/{*file}",
            get(|Path(file): Path<String>| async move { serve(&file) }),
        )
}

/// The asset `name` with the dashboard's headers, or a 404 in the
/// contract's shape (with the same headers).
fn serve(name: &str) -> Response {
    let mut response = match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response(),
        None => {
            let body = crate::api::error::ErrorBody {
                detail: "Not Found".to_owned(),
            };
            (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
        }
    };
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        // Assets change with the binary: a browser asks again each time
        // (cheap: they are small) rather than mixing two versions.
        (header::CACHE_CONTROL, "no-cache"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// The dashboard's page weight: the bytes of every asset.
pub fn page_weight() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_response_carries_the_policy() {
        for name in ["index.html", "app.js", "missing.js"] {
            let response = serve(name);
            let csp = response.headers().get(header::CONTENT_SECURITY_POLICY).unwrap();
            assert!(csp.to_str().unwrap().contains("script-src 'self'"));
            assert_eq!(response.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
        assert_eq!(serve("missing.js").status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn no_asset_writes_html_from_strings() {
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!asset.body.contains(banned), "{} uses {banned}", asset.name);
            }
        }
        assert!(
            !ASSETS[0].body.contains("<script>"),
            "no inline script in the page"
        );
        assert!(!ASSETS[0].body.contains("style="), "no inline style in the page");
    }
}
