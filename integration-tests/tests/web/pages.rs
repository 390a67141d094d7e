//! The web pages over plain HTTP, no browser: signed-out redirects to the
//! login form, Bearer tokens on pages and forms, the session cookie's flags,
//! CSRF tokens on form posts, a read token's refused post, and the job log
//! as raw bytes and as HTML.

use super::{form_body, project, start_pipeline, PROJECT};
use osprey_integration_tests::cluster::ADMIN_TOKEN;
use osprey_integration_tests::{wait_for, ApiClient, PipelineExt, TestCluster};
use osprey_shared::api::CreatedToken;
use osprey_shared::{PipelineId, PipelineStatus};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

/// A pipeline that stays pending: the clusters of these tests have no
/// agent, except where a job must run.
const ONE_JOB: &str = "build:\n  script: ['echo built']\n";

/// The name of the session cookie.
const SESSION: &str = "osprey_session";

/// How a request presents itself.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Anonymous,
    Bearer(&'a str),
    /// The value of the session cookie.
    Session(&'a str),
}

/// An answer read whole.
struct Page {
    status: StatusCode,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

/// A client of the pages that follows no redirects, so tests see the 303s.
struct Web {
    base: String,
    http: reqwest::Client,
}

impl Web {
    fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("build the HTTP client");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    async fn get(&self, path: &str, auth: Auth<'_>) -> Page {
        self.send(Method::GET, path, auth, None).await
    }

    async fn post(&self, path: &str, auth: Auth<'_>, fields: &[(&str, &str)]) -> Page {
        self.send(Method::POST, path, auth, Some(form_body(fields)))
            .await
    }

    async fn send(&self, method: Method, path: &str, auth: Auth<'_>, form: Option<String>) -> Page {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        request = match auth {
            Auth::Anonymous => request,
            Auth::Bearer(token) => request.header(AUTHORIZATION, format!("Bearer {token}")),
            Auth::Session(value) => request.header(COOKIE, format!("{SESSION}={value}")),
        };
        if let Some(form) = form {
            request = request
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
        let header = |name| {
            response
                .headers()
                .get_all(name)
                .iter()
                .filter_map(|value| value.to_str().ok().map(str::to_owned))
                .collect::<Vec<_>>()
        };
        let location = header(LOCATION).into_iter().next();
        let set_cookies = header(SET_COOKIE);
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Page {
            status,
            location,
            set_cookies,
            body,
        }
    }

    /// Posts `token` to the login form (with the form's own hidden fields);
    /// returns the answer.
    async fn login(&self, token: &str) -> Page {
        self.login_to(token, None).await
    }

    /// [`Web::login`] with the form's `next` set to `next`.
    async fn login_to(&self, token: &str, next: Option<&str>) -> Page {
        let form = self.get("/login", Auth::Anonymous).await;
        assert_eq!(form.status, StatusCode::OK, "GET /login: {}", form.body);
        let mut fields = vec![("token", token.to_owned())];
        if let Some(next) = next {
            fields.push(("next", next.to_owned()));
        }
        if let Some(csrf) = form_csrf(&form.body, "login") {
            fields.push(("csrf", csrf));
        }
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.post("/login", Auth::Anonymous, &fields).await
    }
}

/// The `Set-Cookie` of the session, if the answer sets it.
fn session_cookie(page: &Page) -> Option<String> {
    page.set_cookies
        .iter()
        .find(|cookie| cookie.starts_with(&format!("{SESSION}=")))
        .cloned()
}

fn cookie_value(set_cookie: &str) -> Option<String> {
    let pair = set_cookie.split(';').next()?;
    let (_, value) = pair.split_once('=')?;
    Some(value.trim().to_owned()).filter(|value| !value.is_empty())
}

async fn status_of(api: &ApiClient, id: PipelineId) -> PipelineStatus {
    api.pipeline(id).await.expect("read the pipeline").status
}

async fn wait_canceled(api: &ApiClient, id: PipelineId) {
    wait_for(
        "the pipeline to be canceled",
        Duration::from_secs(30),
        || async {
            match api.pipeline(id).await {
                Ok(pipeline) if pipeline.status == PipelineStatus::Canceled => Ok(()),
                Ok(pipeline) => Err(pipeline.status.to_string()),
                Err(error) => Err(error.to_string()),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_out_pages_redirect_to_the_login_form_and_tokens_open_them() {
    let cluster = TestCluster::builder().start().await;
    let api = &cluster.api;
    let _repo = project(api, ONE_JOB).await;
    let pipeline = start_pipeline(api).await;
    let job = pipeline.job("build").id;
    let web = Web::new(&cluster.coordinator.url());

    let paths = [
        "/".to_owned(),
        format!("/projects/{PROJECT}"),
        format!("/projects/{PROJECT}/environments"),
        format!("/pipelines/{}", pipeline.id),
        format!("/jobs/{job}"),
        "/agents".to_owned(),
    ];
    for path in &paths {
        let page = web.get(path, Auth::Anonymous).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "GET {path} signed out");
        let location = page.location.unwrap_or_default();
        let next = location
            .strip_prefix("/login?next=")
            .unwrap_or_else(|| panic!("GET {path} went to {location:?}"));
        assert_eq!(percent_decode(next), *path, "{location}");

        let page = web.get(path, Auth::Bearer(ADMIN_TOKEN)).await;
        assert_eq!(page.status, StatusCode::OK, "GET {path}: {}", page.body);
    }
    let login = web.get("/login", Auth::Anonymous).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains("id=\"login\""), "{}", login.body);

    // The home page lists the project; the project page its pipeline,
    // filtered by the query string.
    let home = web.get("/", Auth::Bearer(ADMIN_TOKEN)).await;
    let projects = rows(&home.body, "project", "data-name");
    assert_eq!(projects, [PROJECT], "{}", home.body);
    let status = status_of(api, pipeline.id).await.to_string();
    let id = pipeline.id.to_string();
    for (query, expected) in [
        ("", Some(status.as_str())),
        ("?ref=main", Some(status.as_str())),
        ("?ref=elsewhere", None),
        ("?status=success", None),
    ] {
        let page = web
            .get(
                &format!("/projects/{PROJECT}{query}"),
                Auth::Bearer(ADMIN_TOKEN),
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{query}: {}", page.body);
        let row = tags(&page.body, "tr")
            .into_iter()
            .find(|tag| attr(tag, "data-id").as_deref() == Some(id.as_str()));
        let seen = row.and_then(|tag| attr(&tag, "data-status"));
        assert_eq!(seen.as_deref(), expected, "/projects/{PROJECT}{query}");
    }
}

/// The `attribute` of every `<tr class="CLASS">`.
fn rows(html: &str, class: &str, attribute: &str) -> Vec<String> {
    tags(html, "tr")
        .into_iter()
        .filter(|tag| attr(tag, "class").is_some_and(|c| c.split_whitespace().any(|c| c == class)))
        .filter_map(|tag| attr(&tag, attribute))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_form_post_with_the_session_needs_its_csrf_token() {
    let cluster = TestCluster::builder().start().await;
    let api = &cluster.api;
    let _repo = project(api, ONE_JOB).await;
    let pipeline = start_pipeline(api).await;
    let web = Web::new(&cluster.coordinator.url());

    let wrong = web.login("osp_not_a_token_at_all_0000000000").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
    assert!(has_class(&wrong.body, "error"), "{}", wrong.body);
    assert_eq!(session_cookie(&wrong), None, "no session for a wrong token");

    // `next` is only ever a path of this site.
    let elsewhere = web
        .login_to(ADMIN_TOKEN, Some("https://evil.example/"))
        .await;
    assert_eq!(
        elsewhere.status,
        StatusCode::SEE_OTHER,
        "{}",
        elsewhere.body
    );
    let location = elsewhere.location.unwrap_or_default();
    assert!(
        location.starts_with('/') && !location.starts_with("//"),
        "signed in, sent to {location}"
    );
    let next = format!("/projects/{PROJECT}");
    let right = web.login_to(ADMIN_TOKEN, Some(&next)).await;
    assert_eq!(right.status, StatusCode::SEE_OTHER, "{}", right.body);
    assert_eq!(right.location.as_deref(), Some(next.as_str()));
    let cookie = session_cookie(&right).expect("a session cookie");
    let flags: Vec<String> = cookie
        .split(';')
        .skip(1)
        .map(|flag| flag.trim().to_ascii_lowercase())
        .collect();
    assert!(flags.iter().any(|f| f == "httponly"), "{cookie}");
    assert!(flags.iter().any(|f| f == "samesite=strict"), "{cookie}");
    let session = cookie_value(&cookie).expect("a cookie value");

    let path = format!("/pipelines/{}", pipeline.id);
    let page = web.get(&path, Auth::Session(&session)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let action = form_action(&page.body, "cancel-pipeline").expect("a cancel form");
    let csrf = form_csrf(&page.body, "cancel-pipeline").expect("a csrf field");

    for fields in [vec![], vec![("csrf", "not-the-token")]] {
        let refused = web.post(&action, Auth::Session(&session), &fields).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{fields:?}");
        assert!(
            refused.body.to_ascii_lowercase().contains("csrf"),
            "{}",
            refused.body
        );
        assert_ne!(status_of(api, pipeline.id).await, PipelineStatus::Canceled);
    }
    let done = web
        .post(&action, Auth::Session(&session), &[("csrf", &csrf)])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    wait_canceled(api, pipeline.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_token_sees_the_pipeline_but_cannot_cancel_it() {
    let cluster = TestCluster::builder().start().await;
    let api = &cluster.api;
    let _repo = project(api, ONE_JOB).await;
    let pipeline = start_pipeline(api).await;
    let web = Web::new(&cluster.coordinator.url());
    let read: CreatedToken = api
        .call_json(
            Method::POST,
            "/api/v1/tokens",
            Some(&json!({ "role": "read", "project": PROJECT })),
        )
        .await
        .expect("create a read token");

    let path = format!("/pipelines/{}", pipeline.id);
    let page = web.get(&path, Auth::Bearer(&read.token)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let admin_page = web.get(&path, Auth::Bearer(ADMIN_TOKEN)).await;
    let action = form_action(&admin_page.body, "cancel-pipeline").expect("a cancel form");

    let refused = web.post(&action, Auth::Bearer(&read.token), &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_ne!(status_of(api, pipeline.id).await, PipelineStatus::Canceled);

    // A Bearer token needs no CSRF field; the admin's may cancel.
    let done = web.post(&action, Auth::Bearer(ADMIN_TOKEN), &[]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    wait_canceled(api, pipeline.id).await;
}

/// A coloured word and a collapsible section, as GitLab's format has them.
const COLOURS: &str = r#"
colours:
  script:
    - printf '\033[0Ksection_start:%s:build_step\r\033[0KBuilding things\n' "$(date +%s)"
    - printf '\033[31mred-word\033[0m plain-word\n'
    - printf '\033[0Ksection_end:%s:build_step\r\033[0K\n' "$(date +%s)"
    - mkdir -p out && echo kept > out/kept.txt
  artifacts:
    paths: [out/]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_raw_log_is_exact_and_the_page_renders_colours_and_sections() {
    let cluster = TestCluster::builder().agents(1).start().await;
    let api = &cluster.api;
    let _repo = project(api, COLOURS).await;
    let created = start_pipeline(api).await;
    let pipeline = api.wait_for_pipeline(created.id).await;
    pipeline.assert_status(PipelineStatus::Success);
    let job = pipeline.job("colours").id;
    let web = Web::new(&cluster.coordinator.url());

    let stored = api.job_log(job).await.expect("the stored log");
    assert!(
        stored.windows(5).any(|w| w == b"\x1b[31m"),
        "the log keeps its escapes: {}",
        String::from_utf8_lossy(&stored)
    );
    let response = reqwest::Client::new()
        .get(format!("{}/jobs/{job}/raw", cluster.coordinator.url()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("GET the raw log");
    assert_eq!(response.status(), StatusCode::OK);
    let raw = response.bytes().await.expect("the raw log's bytes");
    assert_eq!(
        raw.as_ref(),
        stored.as_slice(),
        "the raw log is the stored bytes"
    );

    let page = web
        .get(&format!("/jobs/{job}"), Auth::Bearer(ADMIN_TOKEN))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let html = &page.body;
    assert!(html.contains("id=\"log\""), "{html}");
    assert!(!html.contains('\u{1b}'), "no raw escape reaches the page");
    assert!(
        html.contains(&format!("href=\"/jobs/{job}/raw\"")),
        "a raw log link: {html}"
    );
    let header = tags(html, "div")
        .into_iter()
        .find(|tag| attr(tag, "data-s").as_deref() == Some("build_step"))
        .unwrap_or_else(|| panic!("no section header div: {html}"));
    let classes = attr(&header, "class").unwrap_or_default();
    let classes: Vec<&str> = classes.split_whitespace().collect();
    assert!(
        classes.contains(&"l") && classes.contains(&"sh"),
        "{header}"
    );
    assert!(html.contains("Building things"), "{html}");
    let styled = span_class_around(html, "red-word").unwrap_or_else(|| panic!("{html}"));
    assert!(
        !styled.is_empty() && styled != "t",
        "the red word has a style class, got {styled:?}"
    );

    assert!(
        html.contains(&format!("href=\"/jobs/{job}/artifacts\"")),
        "an artifacts link: {html}"
    );
    let response = reqwest::Client::new()
        .get(format!(
            "{}/jobs/{job}/artifacts",
            cluster.coordinator.url()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("GET the artifacts");
    assert_eq!(response.status(), StatusCode::OK);
    let tar = response.bytes().await.expect("the artifacts' bytes");
    assert_eq!(tar.get(257..262), Some(&b"ustar"[..]), "a tar archive");
    assert!(
        tar.windows(12).any(|w| w == b"out/kept.txt"),
        "with the file"
    );

    let agents = web.get("/agents", Auth::Bearer(ADMIN_TOKEN)).await;
    let agent = tags(&agents.body, "tr")
        .into_iter()
        .find(|tag| attr(tag, "data-name").as_deref() == Some("agent-1"))
        .unwrap_or_else(|| panic!("no agent row: {}", agents.body));
    assert_eq!(
        attr(&agent, "data-connected").as_deref(),
        Some("true"),
        "{agent}"
    );
}

/// The value of the hidden `csrf` input inside the form with id `form_id`.
fn form_csrf(html: &str, form_id: &str) -> Option<String> {
    let (_, inner) = form(html, form_id)?;
    tags(inner, "input")
        .into_iter()
        .find(|tag| attr(tag, "name").as_deref() == Some("csrf"))
        .and_then(|tag| attr(&tag, "value"))
}

/// The `action` of the form with id `form_id`.
fn form_action(html: &str, form_id: &str) -> Option<String> {
    let (tag, _) = form(html, form_id)?;
    attr(tag, "action")
}

/// The opening tag and the inner HTML of the form with id `form_id`.
fn form<'a>(html: &'a str, form_id: &str) -> Option<(&'a str, &'a str)> {
    let mut from = 0;
    while let Some(at) = html[from..].find("<form") {
        let start = from + at;
        let tag_end = start + html[start..].find('>')? + 1;
        let tag = &html[start..tag_end];
        let end = tag_end + html[tag_end..].find("</form>")?;
        if attr(tag, "id").as_deref() == Some(form_id) {
            return Some((tag, &html[tag_end..end]));
        }
        from = tag_end;
    }
    None
}

/// Every opening tag `<name …>` in `html`.
fn tags(html: &str, name: &str) -> Vec<String> {
    let open = format!("<{name}");
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = html[from..].find(&open) {
        let start = from + at;
        let Some(length) = html[start..].find('>') else {
            break;
        };
        let tag = &html[start..start + length + 1];
        let next = tag.as_bytes().get(open.len()).copied();
        if matches!(next, Some(b' ' | b'>' | b'/' | b'\n' | b'\t')) {
            found.push(tag.to_owned());
        }
        from = start + length + 1;
    }
    found
}

/// The value of attribute `name` of an opening tag (`"` or `'` quoted),
/// with the entities a template escapes decoded.
fn attr(tag: &str, name: &str) -> Option<String> {
    let mut from = 0;
    while let Some(at) = tag[from..].find(name) {
        let start = from + at;
        from = start + name.len();
        let before = tag[..start].chars().last();
        if !matches!(before, Some(' ' | '\n' | '\t')) {
            continue;
        }
        let rest = tag[from..].trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        let rest = rest.trim_start();
        let quote = rest.chars().next()?;
        if quote != '"' && quote != '\'' {
            let end = rest.find([' ', '>']).unwrap_or(rest.len());
            return Some(unescape(&rest[..end]));
        }
        let end = rest[1..].find(quote)?;
        return Some(unescape(&rest[1..1 + end]));
    }
    None
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Whether some element has `class` among its classes.
fn has_class(html: &str, class: &str) -> bool {
    let mut from = 0;
    while let Some(at) = html[from..].find('<') {
        let start = from + at;
        let Some(length) = html[start..].find('>') else {
            break;
        };
        let tag = &html[start..start + length + 1];
        if attr(tag, "class").is_some_and(|classes| classes.split_whitespace().any(|c| c == class))
        {
            return true;
        }
        from = start + length + 1;
    }
    false
}

/// The class of the innermost `<span>` whose whole text is `text`.
fn span_class_around(html: &str, text: &str) -> Option<String> {
    let end = html.find(&format!(">{text}</span>"))?;
    let start = html[..end].rfind("<span")?;
    Some(attr(&html[start..=end], "class").unwrap_or_default())
}

/// Decodes `%XX` escapes (and `+`) of a query value.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = bytes
            .get(at + 1..at + 3)
            .filter(|_| bytes[at] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[at]) {
            (Some(byte), _) => {
                out.push(byte);
                at += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                at += 1;
            }
            (None, byte) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Two pipelines deploy to production; the environments page lists both,
/// offers a rollback to the older one only, and its form (with the
/// session's CSRF token) re-runs the older deploy job as a rollback.
#[tokio::test(flavor = "multi_thread")]
async fn the_environments_page_rolls_back_with_its_form() {
    const DEPLOY: &str = "deploy:\n  script: ['echo deployed']\n  environment: production\n";
    let cluster = TestCluster::builder().agents(1).start().await;
    let api = &cluster.api;
    let repo = project(api, DEPLOY).await;
    let first = start_pipeline(api).await;
    api.wait_for_pipeline_finished(first.id, Duration::from_secs(30))
        .await
        .assert_status(PipelineStatus::Success);
    repo.write("CHANGE", "2");
    repo.commit("second");
    let second = start_pipeline(api).await;
    api.wait_for_pipeline_finished(second.id, Duration::from_secs(30))
        .await
        .assert_status(PipelineStatus::Success);

    let web = Web::new(&cluster.coordinator.url());
    let signed_in = web.login(ADMIN_TOKEN).await;
    let session = session_cookie(&signed_in)
        .as_deref()
        .and_then(cookie_value)
        .expect("a session cookie");
    let page = web
        .get(
            &format!("/projects/{PROJECT}/environments"),
            Auth::Session(&session),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(
        rows(&page.body, "deployment", "data-status"),
        vec!["success", "success"],
        "both deployments, newest first"
    );
    let forms: Vec<String> = tags(&page.body, "form")
        .into_iter()
        .filter(|tag| attr(tag, "class").as_deref() == Some("rollback"))
        .collect();
    assert_eq!(
        forms.len(),
        1,
        "only the older deployment is a rollback target"
    );
    let action = attr(&forms[0], "action").expect("the form's action");
    assert_eq!(
        action,
        format!("/projects/{PROJECT}/environments/production/rollback")
    );
    let older = page
        .body
        .split("name=\"deployment\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the target deployment's id")
        .to_owned();
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token")
        .to_owned();

    let refused = web
        .post(&action, Auth::Session(&session), &[("deployment", &older)])
        .await;
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "no CSRF token, no rollback"
    );
    let done = web
        .post(
            &action,
            Auth::Session(&session),
            &[("csrf", &csrf), ("deployment", &older)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location, Some(format!("/pipelines/{}", first.id)));

    let history: Vec<serde_json::Value> = api
        .call_json(
            Method::GET,
            &format!("/api/v1/projects/{PROJECT}/environments/production/deployments"),
            None,
        )
        .await
        .expect("the deployment history");
    assert_eq!(history.len(), 3, "{history:?}");
    assert_eq!(history[0]["source"], "rollback");
    assert_eq!(history[0]["rollback_of"].to_string(), older);
    assert_eq!(history[0]["pipeline"], json!(first.id.0));
    assert_eq!(history[0]["triggered_by"], "admin");
}
