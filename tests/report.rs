//! End-to-end tests of `flowctl report` and of `serve`'s `/ui` over the real binary, without
//! a browser: the funnel numbers, the option titles, escaping of attacker text, masked phones,
//! the CSP, the cookie, the 401 and the UI-off 404. The same pages in a real browser:
//! `tests/report_browser.rs`.

mod report_support;
mod support;

use report_support::*;
use support::*;

fn report(env: &Env, args: &[&str]) -> (std::process::Output, String) {
    let out_path = env.path("report.html");
    let _ = std::fs::remove_file(&out_path);
    let out = env
        .cmd()
        .args(["report", "--out"])
        .arg(&out_path)
        .args(args)
        .output()
        .unwrap();
    let html = std::fs::read_to_string(&out_path).unwrap_or_default();
    (out, html)
}

fn stats(env: &Env) -> serde_json::Value {
    let out = env.cmd().args(["stats", "--json"]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The text of the first `<td class="n">` cells of the funnel table, in order.
fn funnel_cells(html: &str) -> Vec<String> {
    let table = html.split("<table class=\"funnel\">").nth(1).unwrap();
    let table = table.split("</table>").next().unwrap();
    table
        .split("<td class=\"n\">")
        .skip(1)
        .map(|c| c.split('<').next().unwrap().to_string())
        .collect()
}

#[test]
fn the_report_shows_the_funnel_of_stats_and_prints_its_path() {
    let env = Env::new();
    build(&env.db());
    let (out, html) = report(&env, &["--campaign", "spring"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .trim()
        .ends_with("report.html"));
    let s = stats(&env);
    let expected = funnel_of(&s, Some("spring"));
    assert_eq!(funnel_cells(&html), expected);
    assert_eq!(expected[..6], ["7", "4", "4", "3", "4", "2"]);
    // Failures with their meaning.
    assert!(
        html.contains("131026") && html.contains("message undeliverable"),
        "{html}"
    );
    assert!(
        html.contains("131047") && html.contains("more than 24 hours since the user last wrote")
    );
    // One campaign only.
    assert!(html.contains("Campaign spring") && !html.contains("Campaign autumn"));
    // Self-contained: no script, no external resource.
    assert!(!html.to_lowercase().contains("<script"));
    assert!(!html.contains("src=\"http") && !html.contains("<link"));
}

#[test]
fn every_campaign_is_in_the_report_without_a_filter() {
    let env = Env::new();
    build(&env.db());
    let (out, html) = report(&env, &[]);
    assert!(out.status.success());
    assert!(html.contains("Campaign spring") && html.contains("Campaign autumn"));
}

#[test]
fn questions_use_the_flow_titles_with_flow_json_and_ids_without() {
    let env = Env::new();
    build(&env.db());
    let flow = env.write("flow.json", FLOW);
    let (_, with) = report(&env, &["--flow-json", flow.to_str().unwrap()]);
    assert!(
        with.contains("★★★★★ Excellent</text>"),
        "option title drawn as a bar label"
    );
    assert!(with.contains("2 (50.0%)"), "two of four chose 5 stars");
    assert!(
        with.contains("<td>★ Décevant</td>"),
        "titles in the responses table too"
    );
    assert!(
        with.contains("Comment avez-vous trouvé l&#39;accueil ?")
            || with.contains("Comment avez-vous trouvé l'accueil ?")
    );
    // Multi-select: per option, a zero bar for an option nobody chose.
    assert!(with.contains("Wi-Fi</text>") && with.contains("Spa</text>"));
    let (_, without) = report(&env, &[]);
    assert!(without.contains(">5_etoiles</text>"));
    assert!(!without.contains("Excellent"));
    // The number question is a histogram; the text question lists the recent answers.
    assert!(without.contains("aria-label=\"age\""));
    assert!(without.contains("3 answers; the most recent:"));
}

#[test]
fn answers_are_escaped_and_phones_masked_unless_asked() {
    let env = Env::new();
    build(&env.db());
    let (_, html) = report(&env, &["--campaign", "spring"]);
    assert!(!html.contains(SCRIPT) && !html.contains("<script"));
    assert!(
        html.contains("&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;")
            || html.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"),
        "the script is shown as text"
    );
    assert!(!html.contains(IMG) && html.contains("&lt;img src=x onerror=alert(2)&gt;"));
    assert!(html.contains("&lt;b&gt;bold&lt;/b&gt; &amp; co"));
    // A formula is plain text in HTML: shown exactly as sent (it cannot run in a browser).
    assert!(html.contains("=cmd|&#39; /C calc&#39;!A0") || html.contains("=cmd|' /C calc'!A0"));
    assert!(!html.contains(PHONE) && html.contains("+212••••••159"));
    let (_, shown) = report(&env, &["--campaign", "spring", "--show-phones"]);
    assert!(shown.contains(PHONE));
}

#[test]
fn bad_input_is_a_usage_error_naming_it() {
    let env = Env::new();
    let (out, _) = report(&env, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    build(&env.db());
    let (out, _) = report(&env, &["--campaign", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    let bad = env.write("bad.json", "{not json");
    let (out, _) = report(&env, &["--flow-json", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.json"));
    assert!(!env.path("report.html").exists());
}

fn no_redirect() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn login(server: &Running, key: &str, proto: Option<&str>) -> reqwest::Response {
    let mut req = no_redirect()
        .post(format!("{}/ui/login", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "key={}",
            url::form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>()
        ));
    if let Some(p) = proto {
        req = req.header("x-forwarded-proto", p);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_is_off_without_an_api_key() {
    let env = Env::new();
    build(&env.db());
    let server = env.serve(&[]);
    for path in ["/ui", "/ui/login", "/ui/campaign/spring"] {
        let r = reqwest::get(format!("{}{path}", server.url)).await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
    }
    assert_eq!(login(&server, API_KEY, None).await.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_asks_for_the_key_and_refuses_a_wrong_one() {
    let env = Env::new();
    build(&env.db());
    let server = env.serve_with_env(&[("FLOWCTL_API_KEY", API_KEY)], &[]);
    let r = reqwest::get(format!("{}/ui", server.url)).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body = r.text().await.unwrap();
    assert!(body.contains("action=\"/ui/login\"") && !body.contains("spring"));
    let r = login(&server, "wrong-key", None).await;
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().await.unwrap().contains("Wrong key."));
    // A forged cookie is no session.
    let r = no_redirect()
        .get(format!("{}/ui", server.url))
        .header("cookie", format!("flowctl_ui={API_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(!server.stderr().contains(API_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_shows_the_campaigns_with_a_csp_and_escaped_answers() {
    let env = Env::new();
    build(&env.db());
    let flow = env.write("flow.json", FLOW);
    let server = env.serve_with_env(
        &[("FLOWCTL_API_KEY", API_KEY)],
        &["--flow-json", flow.to_str().unwrap()],
    );
    let r = login(&server, API_KEY, None).await;
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/ui");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("; HttpOnly") && cookie.contains("; SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure") && !cookie.contains(API_KEY));
    let secure = login(&server, API_KEY, Some("https")).await;
    assert!(secure.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .ends_with("; Secure"));
    let session = cookie.split(';').next().unwrap().to_string();
    let get = |path: &str| {
        no_redirect()
            .get(format!("{}{path}", server.url))
            .header("cookie", session.clone())
            .send()
    };
    let r = get("/ui").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body = r.text().await.unwrap();
    assert!(body.contains("href=\"/ui/campaign/spring\"") && body.contains("/ui/campaign/autumn"));
    let r = get("/ui/campaign/spring").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let page = r.text().await.unwrap();
    assert_eq!(funnel_cells(&page)[..6], ["7", "4", "4", "3", "4", "2"]);
    assert!(page.contains("★★★★★ Excellent</text>"));
    assert!(!page.contains("<script") && page.contains("&lt;script&gt;"));
    assert!(!page.contains(PHONE));
    assert_eq!(
        get("/ui/campaign/nope").await.unwrap().status().as_u16(),
        404
    );
}

#[test]
fn the_demo_ends_with_the_report_and_its_path() {
    let env = Env::new();
    let dir = env.path("demo");
    let out = env
        .cmd()
        .args(["demo", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let path = dir.join("report.html");
    assert!(
        stdout.contains(&format!("Report: {}", path.display())),
        "{stdout}"
    );
    let html = std::fs::read_to_string(&path).unwrap();
    assert!(html.contains("Campaign demo"));
    assert!(
        html.contains("★★★★★ Excellent</text>"),
        "the demo's Flow titles"
    );
    let stats = std::process::Command::new(bin())
        .env_clear()
        .env("FLOWCTL_DB", dir.join("flowctl.db"))
        .args(["stats", "--json"])
        .output()
        .unwrap();
    let s: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    let expected: Vec<String> = [
        "issued",
        "sent",
        "delivered",
        "read",
        "completed",
        "failed",
        "deferred",
        "pending",
        "unknown",
        "unmatched",
    ]
    .iter()
    .map(|k| s["campaigns"][0][k].to_string())
    .collect();
    assert_eq!(funnel_cells(&html), expected);
    // Masked by default: the sample's first phone is not in the file.
    assert!(!html.contains("+212610059159"));
}
