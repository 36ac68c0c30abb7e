//! `/ui`: the campaign report, live. `GET /ui` lists the campaigns with their funnel,
//! `GET /ui/campaign/NAME` shows one campaign as `flowctl report` does, `POST /ui/login`
//! takes `FLOWCTL_API_KEY` from a form and sets a session cookie.
//!
//! - No `FLOWCTL_API_KEY`: every `/ui` route answers 404, like the CRM API.
//! - The cookie holds an HMAC of a fixed label under the key, never the key itself; it is
//!   `HttpOnly` (no script reads it), `SameSite=Strict` (no other site sends it, so no
//!   cross-site request forgery), and `Secure` when the request came over TLS through a proxy
//!   (`X-Forwarded-Proto: https`; `serve` itself speaks plain HTTP). Changing the key ends
//!   every session. Both the key and the cookie are compared in constant time.
//! - Every page is sent with a Content-Security-Policy that allows no script at all, inline
//!   styles and `data:` images only (<https://developer.mozilla.org/en-US/docs/Web/HTTP/Reference/Headers/Content-Security-Policy>),
//!   and never cached.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, COOKIE, LOCATION, SET_COOKIE};
use hyper::{Request, StatusCode};
use maud::html;
use sha2::Sha256;

use super::http::{self, Resp};
use super::AppState;
use crate::report::html as pages;
use crate::report::svg;
use crate::secret::Secret;
use crate::store::FunnelReport;

/// The routes' prefix.
pub const PREFIX: &str = "/ui";
/// The session cookie's name.
pub const COOKIE_NAME: &str = "flowctl_ui";
/// The policy every `/ui` answer carries: no script, no connection, no frame.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// How long a session lasts, in seconds.
const SESSION_SECONDS: u32 = 12 * 3600;
/// Largest login form.
const MAX_LOGIN_BODY: usize = 4096;

/// Routes a request under `/ui`.
pub async fn handle(
    state: &Arc<AppState>,
    budget: &http::BodyBudget,
    req: Request<Incoming>,
) -> Resp {
    let Some(key) = &state.api_key else {
        return http::json_error(StatusCode::NOT_FOUND, "no such route");
    };
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method.as_str(), path.as_str()) {
        ("POST", "/ui/login") => login(state, budget, key, req).await,
        ("GET", "/ui/login") => login_page(StatusCode::OK, None),
        ("GET", _) if !signed_in(key, &req) => login_page(StatusCode::UNAUTHORIZED, None),
        ("GET", "/ui" | "/ui/") => index(state).await,
        ("GET", p) if p.starts_with("/ui/campaign/") => {
            let raw = &p["/ui/campaign/".len()..];
            let name = url::form_urlencoded::parse(format!("n={raw}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            campaign(state, name).await
        }
        ("GET", _) => page(
            StatusCode::NOT_FOUND,
            "Not found",
            html! { p { "No such page." } },
        ),
        _ => http::empty(StatusCode::METHOD_NOT_ALLOWED),
    }
}

/// The cookie value of a session under `key`.
fn session_value(key: &Secret) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(b"flowctl ui session v1");
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether the request carries a valid session cookie.
fn signed_in(key: &Secret, req: &Request<Incoming>) -> bool {
    let expected = Secret::new(session_value(key));
    req.headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(name, value)| name == COOKIE_NAME && expected.matches(value.as_bytes()))
}

/// Whether the client reached us over TLS (through a proxy that says so).
fn over_tls(req: &Request<Incoming>) -> bool {
    req.headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .next()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
        })
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie(value: &str, secure: bool) -> String {
    format!(
        "{COOKIE_NAME}={value}; Path={PREFIX}; Max-Age={SESSION_SECONDS}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

async fn login(
    state: &Arc<AppState>,
    budget: &http::BodyBudget,
    key: &Secret,
    req: Request<Incoming>,
) -> Resp {
    let secure = over_tls(&req);
    let body = match http::read_body(req, MAX_LOGIN_BODY, state.limits.body_timeout, budget).await {
        Ok(b) => b,
        Err(e) => return e.response(false),
    };
    let given = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !key.matches(given.trim().as_bytes()) {
        tracing::warn!("ui: login refused (wrong key)");
        return login_page(StatusCode::UNAUTHORIZED, Some("Wrong key."));
    }
    let mut resp = http::empty(StatusCode::SEE_OTHER);
    let h = resp.headers_mut();
    h.insert(LOCATION, HeaderValue::from_static(PREFIX));
    if let Ok(v) = HeaderValue::from_str(&session_cookie(&session_value(key), secure)) {
        h.insert(SET_COOKIE, v);
    }
    protect(resp)
}

fn login_page(status: StatusCode, error: Option<&str>) -> Resp {
    page(
        status,
        "flowctl — sign in",
        html! {
            form.login.card method="post" action="/ui/login" {
                p { "Enter the API key of this server (" code { "FLOWCTL_API_KEY" } ")." }
                @if let Some(e) = error { p.error { (e) } }
                label for="key" { "API key" }
                input #key type="password" name="key" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
        },
    )
}

async fn index(state: &Arc<AppState>) -> Resp {
    let report = match state.store.read(|s| s.funnel(None)).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    page(
        StatusCode::OK,
        "flowctl — campaigns",
        campaign_list(&report),
    )
}

fn campaign_list(report: &FunnelReport) -> maud::Markup {
    html! {
        @if report.campaigns.iter().all(|c| c.campaign.is_none()) {
            p.card { "No campaign yet." }
        } @else {
            table.campaigns {
                thead { tr {
                    th { "campaign" } th.n { "issued" } th.n { "sent" } th.n { "delivered" }
                    th.n { "read" } th.n { "completed" } th.n { "failed" } th.n { "completion" }
                } }
                tbody {
                    @for f in report.campaigns.iter().filter(|c| c.campaign.is_some()) {
                        @let name = f.campaign.as_deref().unwrap_or("");
                        tr {
                            td { a href=(format!("/ui/campaign/{}", encode(name))) { (name) } }
                            td.n { (f.issued) } td.n { (f.sent) } td.n { (f.delivered) }
                            td.n { (f.read) } td.n { (f.completed) } td.n { (f.failed) }
                            td.n { (svg::percent(f.completed.max(0) as u64, f.sent.max(0) as u64)) }
                        }
                    }
                }
            }
        }
    }
}

/// A campaign name as one path segment.
fn encode(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

async fn campaign(state: &Arc<AppState>, name: String) -> Resp {
    let questions = state.ui_questions.clone();
    let wanted = name.clone();
    let read = state
        .store
        .read(move |s| {
            let mut all = crate::report::collect(s, Some(&wanted))?;
            Ok(all.pop())
        })
        .await;
    match read {
        Ok(Some(c)) => {
            let opts = pages::Options {
                questions: questions.as_deref(),
                show_phones: false,
            };
            page(
                StatusCode::OK,
                &format!("flowctl — {name}"),
                html! {
                    p { a href="/ui" { "← all campaigns" } }
                    (pages::campaign(&c, "campaign", opts))
                },
            )
        }
        Ok(None) => page(
            StatusCode::NOT_FOUND,
            "Not found",
            html! { p { "No campaign named " q { (name) } "." } p { a href="/ui" { "All campaigns" } } },
        ),
        Err(e) => store_error(e),
    }
}

fn store_error(e: crate::store::StoreError) -> Resp {
    tracing::error!(error = %e, "ui: cannot read the database");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        html! { p { "The database cannot be read right now." } },
    )
}

fn page(status: StatusCode, title: &str, body: maud::Markup) -> Resp {
    let html = pages::page(title, None, body).into_string();
    protect(http::with_body(status, "text/html; charset=utf-8", html))
}

/// Adds the headers every `/ui` answer carries.
fn protect(mut resp: Resp) -> Resp {
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_tls() {
        let c = session_cookie("abc", false);
        assert!(c.starts_with("flowctl_ui=abc; Path=/ui;"));
        assert!(c.contains("; HttpOnly") && c.contains("; SameSite=Strict"));
        assert!(!c.contains("Secure"));
        assert!(session_cookie("abc", true).ends_with("; Secure"));
    }

    #[test]
    fn the_session_value_depends_on_the_key_and_is_not_the_key() {
        let a = session_value(&Secret::new("key-one"));
        assert_eq!(a.len(), 64);
        assert_ne!(a, session_value(&Secret::new("key-two")));
        assert!(!a.contains("key-one"));
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
