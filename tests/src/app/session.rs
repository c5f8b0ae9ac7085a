//! Browser-style requests: a session started with `POST /api/auth/session`
//! and requests authenticated by its cookie (with or without the CSRF
//! header), as the dashboard and a forging page would send them.

use super::{Reply, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

/// A browser session: the cookie pair the controller set.
#[derive(Debug)]
pub struct Session {
    /// The `orch_session` cookie's value (the JWT, HttpOnly in a browser).
    pub token: String,
    /// The `orch_csrf` cookie's value, which writes repeat in `X-CSRF-Token`.
    pub csrf: String,
    /// The login's answer, with its `Set-Cookie` headers.
    pub reply: Reply,
}

/// The value of cookie `name` among a reply's `Set-Cookie` headers.
pub fn set_cookie_value(reply: &Reply, name: &str) -> Option<String> {
    set_cookie_line(reply, name).and_then(|line| {
        let first = line.split(';').next()?;
        first.split_once('=').map(|(_, v)| v.to_owned())
    })
}

/// The whole `Set-Cookie` line of cookie `name`.
pub fn set_cookie_line(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|line| line.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

impl TestApp {
    /// `POST /api/auth/session` (the dashboard's login).
    pub async fn session_login(&self, username: &str, password: &str) -> Reply {
        let body = json!({"username": username, "password": password});
        self.send(Method::POST, "/api/auth/session", None, Some(&body))
            .await
    }

    /// Logs in as a browser would and keeps the cookies.
    pub async fn session(&self, username: &str, password: &str) -> Session {
        let reply = self.session_login(username, password).await;
        assert_eq!(reply.status, 200, "session login: {}", reply.text);
        Session {
            token: set_cookie_value(&reply, "orch_session").expect("the session cookie"),
            csrf: set_cookie_value(&reply, "orch_csrf").expect("the CSRF cookie"),
            reply,
        }
    }

    /// `method path` authenticated by `session`'s cookies only, with
    /// `csrf` (if any) as the `X-CSRF-Token` header.
    pub async fn send_by_cookie(
        &self,
        method: Method,
        path: &str,
        session: &Session,
        csrf: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let cookie = format!("orch_session={}; orch_csrf={}", session.token, session.csrf);
        let mut req = self.http.request(method, self.url(path)).header("cookie", cookie);
        if let Some(csrf) = csrf {
            req = req.header("x-csrf-token", csrf);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        self.send_request(req).await
    }
}
