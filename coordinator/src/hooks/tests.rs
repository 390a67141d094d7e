//! Hooks as each forge sends and signs them.

use super::signing::{sign_gitea, sign_github, sign_standard_webhook};
use super::*;
use http::{HeaderName, HeaderValue};

const SECRET: &str = "s3cret-webhook-value";
const GITHUB_PUSH: &[u8] = include_bytes!("fixtures/github_push.json");
const GITHUB_PING: &[u8] = include_bytes!("fixtures/github_ping.json");
const GITHUB_DELETE: &[u8] = include_bytes!("fixtures/github_delete.json");
const GITLAB_PUSH: &[u8] = include_bytes!("fixtures/gitlab_push.json");
const GITLAB_TAG_PUSH: &[u8] = include_bytes!("fixtures/gitlab_tag_push.json");
const GITEA_PUSH: &[u8] = include_bytes!("fixtures/gitea_push.json");
const GITEA_CREATE_TAG: &[u8] = include_bytes!("fixtures/gitea_create_tag.json");
const GITEA_CREATE_BRANCH: &[u8] = include_bytes!("fixtures/gitea_create_branch.json");

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn github(event: &str, body: &[u8]) -> HeaderMap {
    headers(&[
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("X-Hub-Signature-256", &sign_github(SECRET, body)),
        ("Content-Type", "application/json"),
    ])
}

/// Gitea sends GitHub's headers too; its own must win.
fn gitea(event: &str, body: &[u8]) -> HeaderMap {
    headers(&[
        ("X-Gitea-Event", event),
        ("X-Gitea-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
        ("X-Gitea-Signature", &sign_gitea(SECRET, body)),
        ("X-GitHub-Event", event),
        ("X-Hub-Signature-256", &sign_github("not the secret", body)),
    ])
}

fn gitlab_token(event: &str) -> HeaderMap {
    headers(&[
        ("X-Gitlab-Event", event),
        ("X-Gitlab-Token", SECRET),
        (
            "X-Gitlab-Event-UUID",
            "13792a34-cac6-4fda-95a8-c58e00a3954e",
        ),
        ("Idempotency-Key", "f5083ae2-7a9c-4bc3-9c67-4f0e3d6e3c1b"),
    ])
}

fn now() -> OffsetDateTime {
    time::macros::datetime!(2026-05-01 10:00:00 UTC)
}

fn push(event: Result<HookEvent, HookError>) -> Push {
    match event {
        Ok(HookEvent::Push(push)) => push,
        other => panic!("expected a push, got {other:?}"),
    }
}

fn unauthorized(event: Result<HookEvent, HookError>) -> String {
    match event {
        Err(HookError::Unauthorized(reason)) => {
            assert!(!reason.contains(SECRET), "{reason}");
            reason
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

fn altered(body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    let at = body.iter().position(|&b| b == b'a').unwrap();
    body[at] = b'b';
    body
}

#[test]
fn github_push_is_verified_and_read() {
    let push = push(parse_hook(
        &github("push", GITHUB_PUSH),
        GITHUB_PUSH,
        SECRET,
    ));
    assert_eq!(
        push,
        Push {
            git_ref: "main".into(),
            is_tag: false,
            before: Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246".into()),
            after: "76ae82c7b1a177c8d03f9e96e0adf2466113728f".into(),
            deleted: false,
            delivery: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
            clone_urls: vec![
                "https://github.com/acme/widget.git".into(),
                "git@github.com:acme/widget.git".into()
            ],
            forge: Forge::GitHub,
        }
    );
}

#[test]
fn github_altered_body_wrong_secret_or_missing_signature_is_refused() {
    let headers = github("push", GITHUB_PUSH);
    let reason = unauthorized(parse_hook(&headers, &altered(GITHUB_PUSH), SECRET));
    assert!(reason.contains("X-Hub-Signature-256"), "{reason}");
    unauthorized(parse_hook(&headers, GITHUB_PUSH, "another secret"));

    let mut missing = headers.clone();
    missing.remove("X-Hub-Signature-256");
    let reason = unauthorized(parse_hook(&missing, GITHUB_PUSH, SECRET));
    assert!(reason.contains("missing X-Hub-Signature-256"), "{reason}");

    let mut bare = headers;
    bare.insert(
        "X-Hub-Signature-256",
        HeaderValue::from_str(&sign_gitea(SECRET, GITHUB_PUSH)).unwrap(),
    );
    let reason = unauthorized(parse_hook(&bare, GITHUB_PUSH, SECRET));
    assert!(reason.contains("sha256="), "{reason}");
}

#[test]
fn github_ping_and_other_events_are_ignored_once_verified() {
    let ping = parse_hook(&github("ping", GITHUB_PING), GITHUB_PING, SECRET);
    assert!(
        matches!(ping, Ok(HookEvent::Ignored(ref why)) if why.contains("ping")),
        "{ping:?}"
    );
    // A forged ping is still refused: verification comes first.
    unauthorized(parse_hook(
        &github("ping", GITHUB_PING),
        &altered(GITHUB_PING),
        SECRET,
    ));
    let issues = parse_hook(&github("issue_comment", b"{}"), b"{}", SECRET);
    assert!(matches!(issues, Ok(HookEvent::Ignored(_))));
}

#[test]
fn github_deletion() {
    let push = push(parse_hook(
        &github("push", GITHUB_DELETE),
        GITHUB_DELETE,
        SECRET,
    ));
    assert!(push.deleted);
    assert_eq!(push.git_ref, "feature/old");
    assert_eq!(push.after, "0".repeat(40));
    assert_eq!(
        push.before.as_deref(),
        Some("9049f1265b7d61be4a8904a9a27120d2064dab3b")
    );
}

#[test]
fn gitlab_push_with_token_new_branch() {
    let push = push(parse_hook(&gitlab_token("Push Hook"), GITLAB_PUSH, SECRET));
    assert_eq!(push.forge, Forge::GitLab);
    assert_eq!(push.git_ref, "feature/login");
    assert!(!push.is_tag);
    assert_eq!(push.before, None, "40 zeros: a new branch");
    assert_eq!(push.after, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    assert!(!push.deleted);
    assert_eq!(
        push.delivery.as_deref(),
        Some("f5083ae2-7a9c-4bc3-9c67-4f0e3d6e3c1b")
    );
    assert_eq!(
        push.clone_urls,
        vec![
            "http://gitlab.example.com/mike/diaspora.git".to_owned(),
            "git@gitlab.example.com:mike/diaspora.git".to_owned()
        ]
    );
}

#[test]
fn gitlab_tag_push() {
    let push = push(parse_hook(
        &gitlab_token("Tag Push Hook"),
        GITLAB_TAG_PUSH,
        SECRET,
    ));
    assert_eq!(push.git_ref, "v1.0.0");
    assert!(push.is_tag);
    assert_eq!(push.after, "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7");
}

#[test]
fn gitlab_wrong_or_missing_token_is_refused() {
    let mut wrong = gitlab_token("Push Hook");
    wrong.insert("X-Gitlab-Token", HeaderValue::from_static("guess"));
    let reason = unauthorized(parse_hook(&wrong, GITLAB_PUSH, SECRET));
    assert!(reason.contains("X-Gitlab-Token"), "{reason}");
    let mut prefix = gitlab_token("Push Hook");
    prefix.insert("X-Gitlab-Token", HeaderValue::from_static("s3cret"));
    unauthorized(parse_hook(&prefix, GITLAB_PUSH, SECRET));
    let mut missing = gitlab_token("Push Hook");
    missing.remove("X-Gitlab-Token");
    let reason = unauthorized(parse_hook(&missing, GITLAB_PUSH, SECRET));
    assert!(reason.contains("missing X-Gitlab-Token"), "{reason}");
}

fn gitlab_signed(secret: &str, body: &[u8], timestamp: i64) -> HeaderMap {
    let id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
    headers(&[
        ("X-Gitlab-Event", "Push Hook"),
        ("webhook-id", id),
        ("webhook-timestamp", &timestamp.to_string()),
        (
            "webhook-signature",
            &format!(
                "v1,bm90IGl0 {}",
                sign_standard_webhook(secret, id, timestamp, body)
            ),
        ),
    ])
}

#[test]
fn gitlab_standard_webhooks_signature() {
    let t = now().unix_timestamp();
    let event = parse_hook_at(
        &gitlab_signed(SECRET, GITLAB_PUSH, t),
        GITLAB_PUSH,
        SECRET,
        now(),
    );
    let push = push(event);
    assert_eq!(
        push.delivery.as_deref(),
        Some("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")
    );

    // A `whsec_` secret's key is its base64 part, as GitLab's signing token.
    let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let headers = gitlab_signed(whsec, GITLAB_PUSH, t);
    assert!(parse_hook_at(&headers, GITLAB_PUSH, whsec, now()).is_ok());

    let reason = unauthorized(parse_hook_at(
        &gitlab_signed(SECRET, GITLAB_PUSH, t),
        &altered(GITLAB_PUSH),
        SECRET,
        now(),
    ));
    assert!(reason.contains("webhook-signature"), "{reason}");

    // Four minutes off is fine, six is a replay.
    let late = now() + time::Duration::minutes(4);
    assert!(parse_hook_at(
        &gitlab_signed(SECRET, GITLAB_PUSH, t),
        GITLAB_PUSH,
        SECRET,
        late
    )
    .is_ok());
    let too_late = now() + time::Duration::minutes(6);
    let reason = unauthorized(parse_hook_at(
        &gitlab_signed(SECRET, GITLAB_PUSH, t),
        GITLAB_PUSH,
        SECRET,
        too_late,
    ));
    assert!(reason.contains("webhook-timestamp"), "{reason}");

    let mut no_id = gitlab_signed(SECRET, GITLAB_PUSH, t);
    no_id.remove("webhook-id");
    let reason = unauthorized(parse_hook_at(&no_id, GITLAB_PUSH, SECRET, now()));
    assert!(reason.contains("missing webhook-id"), "{reason}");
}

#[test]
fn gitea_push_wins_over_its_github_headers() {
    let push = push(parse_hook(&gitea("push", GITEA_PUSH), GITEA_PUSH, SECRET));
    assert_eq!(push.forge, Forge::Gitea);
    assert_eq!(push.git_ref, "develop");
    assert_eq!(
        push.before.as_deref(),
        Some("28e1879d029cb852e4844d9c718537df08844e03")
    );
    assert_eq!(
        push.delivery.as_deref(),
        Some("f6266f16-1bf3-46a5-9ea4-602e06ead473")
    );
    assert_eq!(
        push.clone_urls[0],
        "https://git.example.com/gitea/webhooks.git"
    );

    let reason = unauthorized(parse_hook(
        &gitea("push", GITEA_PUSH),
        &altered(GITEA_PUSH),
        SECRET,
    ));
    assert!(reason.contains("X-Gitea-Signature"), "{reason}");
    let mut missing = gitea("push", GITEA_PUSH);
    missing.remove("X-Gitea-Signature");
    unauthorized(parse_hook(&missing, GITEA_PUSH, SECRET));
}

#[test]
fn forgejo_signs_with_its_own_header() {
    let map = headers(&[
        ("X-Forgejo-Event", "push"),
        ("X-Forgejo-Delivery", "d1"),
        ("X-Forgejo-Signature", &sign_gitea(SECRET, GITEA_PUSH)),
    ]);
    let push = push(parse_hook(&map, GITEA_PUSH, SECRET));
    assert_eq!(push.forge, Forge::Forgejo);
    assert_eq!(push.delivery.as_deref(), Some("d1"));
}

#[test]
fn gitea_create_of_a_tag_is_a_tag_push() {
    let push = push(parse_hook(
        &gitea("create", GITEA_CREATE_TAG),
        GITEA_CREATE_TAG,
        SECRET,
    ));
    assert_eq!(push.git_ref, "v2.1.0");
    assert!(push.is_tag);
    assert_eq!(push.after, "bffeb74224043ba2feb48d137756c8a9331c449a");
    assert_eq!(push.before, None);
    assert!(!push.deleted);

    let branch = parse_hook(
        &gitea("create", GITEA_CREATE_BRANCH),
        GITEA_CREATE_BRANCH,
        SECRET,
    );
    assert!(matches!(branch, Ok(HookEvent::Ignored(_))), "{branch:?}");
}

#[test]
fn an_empty_secret_accepts_nothing() {
    let body = GITHUB_PUSH;
    let map = headers(&[
        ("X-GitHub-Event", "push"),
        ("X-Hub-Signature-256", &sign_github("", body)),
    ]);
    let reason = unauthorized(parse_hook(&map, body, ""));
    assert!(reason.contains("no webhook secret"), "{reason}");
}

#[test]
fn absurd_timestamps_are_refused_without_overflow() {
    let mut map = gitlab_signed(SECRET, GITLAB_PUSH, now().unix_timestamp());
    map.insert(
        "webhook-timestamp",
        HeaderValue::from_str(&i64::MIN.to_string()).unwrap(),
    );
    let reason = unauthorized(parse_hook_at(&map, GITLAB_PUSH, SECRET, now()));
    assert!(reason.contains("webhook-timestamp"), "{reason}");
}

#[test]
fn unknown_forge_is_unauthorized() {
    let reason = unauthorized(parse_hook(
        &headers(&[("X-Event", "push")]),
        GITHUB_PUSH,
        SECRET,
    ));
    assert!(reason.contains("unknown forge"), "{reason}");
}

#[test]
fn bad_payloads_after_verification() {
    let cases: [&[u8]; 5] = [
        b"not json",
        br#"{"ref":"refs/pull/1/head","before":null,"after":"76ae82c7b1a177c8d03f9e96e0adf2466113728f"}"#,
        br#"{"ref":"main","after":"76ae82c7b1a177c8d03f9e96e0adf2466113728f"}"#,
        br#"{"ref":"refs/heads/main","after":"not-a-sha"}"#,
        br#"{"ref":"refs/heads/main"}"#,
    ];
    for body in cases {
        let event = parse_hook(&github("push", body), body, SECRET);
        assert!(matches!(event, Err(HookError::BadPayload(_))), "{event:?}");
    }
    // Unverified garbage is Unauthorized, not BadPayload.
    let mut headers = github("push", b"x");
    headers.remove("X-Hub-Signature-256");
    unauthorized(parse_hook(&headers, b"not json", SECRET));
}
