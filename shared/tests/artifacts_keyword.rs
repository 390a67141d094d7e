//! `artifacts:` beyond `paths`, through the public front end: `exclude`,
//! `untracked`, `when`, `name` and `expire_in` as GitLab defines them, the
//! defaults when absent, and the errors for bad values.

use osprey_shared::pipeline::{Artifacts, ArtifactsExpiry, ArtifactsWhen, Pipeline};
use osprey_shared::yaml::parse_pipeline;

fn artifacts_of(text: &str) -> Artifacts {
    let pipeline: Pipeline =
        parse_pipeline(".gitlab-ci.yml", text).unwrap_or_else(|e| panic!("errors: {e:#?}"));
    pipeline.jobs[0].artifacts.clone()
}

fn messages(text: &str) -> Vec<String> {
    match parse_pipeline(".gitlab-ci.yml", text) {
        Ok(p) => panic!("expected errors, got {p:#?}"),
        Err(errors) => errors.into_iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn every_artifacts_key_reaches_the_model() {
    let artifacts = artifacts_of(
        r#"
build:
  script: [make]
  artifacts:
    name: "bundle-$CI_COMMIT_REF_SLUG"
    paths: [dist/]
    exclude: ["dist/**/*.map", "dist/tmp/*"]
    untracked: true
    when: always
    expire_in: 1 week 2 days
"#,
    );
    assert_eq!(
        artifacts,
        Artifacts {
            paths: vec!["dist/".into()],
            exclude: vec!["dist/**/*.map".into(), "dist/tmp/*".into()],
            untracked: true,
            when: ArtifactsWhen::Always,
            name: Some("bundle-$CI_COMMIT_REF_SLUG".into()),
            expire_in: Some(ArtifactsExpiry::After(9 * 86_400)),
        }
    );
}

#[test]
fn defaults_are_gitlab_s_and_untracked_alone_is_enough() {
    let artifacts = artifacts_of("j:\n  script: [x]\n  artifacts:\n    untracked: true\n");
    assert!(!artifacts.is_empty());
    assert_eq!(artifacts.when, ArtifactsWhen::OnSuccess);
    assert_eq!(artifacts.expire_in, None);
    assert!(artifacts.paths.is_empty() && artifacts.exclude.is_empty());
    assert!(Artifacts::default().is_empty());

    let never = artifacts_of(
        "j:\n  script: [x]\n  artifacts:\n    paths: [a]\n    when: on_failure\n    expire_in: never\n",
    );
    assert_eq!(never.when, ArtifactsWhen::OnFailure);
    assert_eq!(never.expire_in, Some(ArtifactsExpiry::Never));
    // Longer than a job timeout may be: expiry is not bounded by one month.
    let long =
        artifacts_of("j:\n  script: [x]\n  artifacts:\n    paths: [a]\n    expire_in: 3 months\n");
    assert_eq!(long.expire_in, Some(ArtifactsExpiry::After(3 * 2_592_000)));
}

#[test]
fn bad_values_are_located_errors() {
    let e = messages(
        "j:\n  script: [x]\n  artifacts:\n    paths: [a]\n    when: sometimes\n    expire_in: soon\n    untracked: yes please\n    exclude: 3\n",
    );
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(
        e[0].starts_with(".gitlab-ci.yml:5:")
            && e[0].contains(
                "artifacts:when must be on_success, on_failure or always, found \"sometimes\""
            ),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with(".gitlab-ci.yml:6:")
            && e[1].contains("artifacts:expire_in \"soon\" is not a duration"),
        "{e:#?}"
    );
    assert!(
        e[2].starts_with(".gitlab-ci.yml:7:")
            && e[2].contains("artifacts:untracked must be a boolean"),
        "{e:#?}"
    );
    assert!(
        e[3].starts_with(".gitlab-ci.yml:8:") && e[3].contains("artifacts:exclude"),
        "{e:#?}"
    );
}

#[test]
fn old_rows_without_the_new_fields_still_deserialize() {
    let artifacts: Artifacts = serde_json::from_str(r#"{"paths":["a"]}"#).expect("old json");
    assert_eq!(artifacts.when, ArtifactsWhen::OnSuccess);
    assert!(!artifacts.untracked);
    let round: Artifacts = serde_json::from_str(
        &serde_json::to_string(&Artifacts {
            expire_in: Some(ArtifactsExpiry::After(60)),
            ..Artifacts::default()
        })
        .unwrap(),
    )
    .unwrap();
    assert_eq!(round.expire_in, Some(ArtifactsExpiry::After(60)));
}
