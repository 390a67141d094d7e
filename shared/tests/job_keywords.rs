//! The job keywords that say how and when a job runs, through the public
//! front end and planner: what the model holds for the coordinator, and the
//! limits that keep `parallel` from blowing up a small file.

use osprey_shared::pipeline::{JobDef, Need, Pipeline, When};
use osprey_shared::plan::{self, PipelineSource, Plan, PlanContext};
use osprey_shared::variables::predefined;
use osprey_shared::yaml::{parse_pipeline, parse_pipeline_with, NoFiles};

fn ok(text: &str) -> Pipeline {
    parse_pipeline(".gitlab-ci.yml", text).unwrap_or_else(|e| panic!("errors: {e:#?}"))
}

fn messages(text: &str) -> Vec<String> {
    match parse_pipeline(".gitlab-ci.yml", text) {
        Ok(p) => panic!("expected errors, got {p:#?}"),
        Err(errors) => errors.into_iter().map(|e| e.message).collect(),
    }
}

fn job<'p>(pipeline: &'p Pipeline, name: &str) -> &'p JobDef {
    pipeline
        .jobs
        .iter()
        .find(|j| j.name == name)
        .unwrap_or_else(|| panic!("no job {name}"))
}

fn plan_on(text: &str, git_ref: &str) -> Result<Plan, Vec<plan::PlanError>> {
    let definition = parse_pipeline_with(".gitlab-ci.yml", text, &NoFiles).expect("valid pipeline");
    let ctx = PlanContext {
        git_ref: git_ref.to_owned(),
        is_tag: false,
        source: PipelineSource::Push,
        changed_files: None,
        files: &NoFiles,
        predefined: predefined(git_ref, false, "push", Some("main")),
        variables: Vec::new(),
        project_variables: Vec::new(),
    };
    plan::plan(&definition, &ctx)
}

#[test]
fn the_model_holds_what_the_coordinator_runs() {
    let p = ok(r#"
stages: [build, test]
build:
  stage: build
  script: make
  parallel: 2
  retry: {max: 2, when: script_failure, exit_codes: 1}
  coverage: '/(\d+)%/'
test:
  stage: test
  script: t
  when: delayed
  start_in: 5 minutes
  needs: [{job: build, artifacts: false}]
  allow_failure: {exit_codes: [2, 3]}
  environment: {name: prod, url: "https://x"}
gate:
  stage: test
  script: t
  when: manual
"#);
    let first = job(&p, "build 1/2");
    assert_eq!(first.node, Some((1, 2)));
    assert_eq!(first.retry.max, 2);
    assert_eq!(first.retry.when, ["script_failure"]);
    assert_eq!(first.retry.exit_codes, [1]);
    assert_eq!(first.coverage.as_deref(), Some(r"(\d+)%"));
    assert_eq!(job(&p, "build 2/2").node, Some((2, 2)));
    let test = job(&p, "test");
    assert_eq!(test.when, When::Delayed);
    assert_eq!(test.start_in_seconds, Some(300));
    assert!(!test.allow_failure);
    assert_eq!(test.allow_failure_exit_codes, [2, 3]);
    let need = |name: &str| Need {
        job: name.to_owned(),
        artifacts: false,
        optional: false,
    };
    assert_eq!(test.needs, Some(vec![need("build 1/2"), need("build 2/2")]));
    assert_eq!(test.dependencies, None);
    let environment = test.environment.as_ref().expect("environment");
    assert_eq!(
        (environment.name.as_str(), environment.url.as_deref()),
        ("prod", Some("https://x"))
    );
    assert_eq!(environment.action, "start");
    let gate = job(&p, "gate");
    assert!(gate.allow_failure, "manual jobs may fail by default");
    assert_eq!(gate.needs, None);
}

#[test]
fn parallel_cannot_blow_up_a_small_file() {
    let mut text = String::new();
    for i in 0..30 {
        text.push_str(&format!("j{i}:\n  script: x\n  parallel: 200\n"));
    }
    let errors = messages(&text);
    assert!(
        errors.iter().any(|e| e.contains("expands to 6000 jobs")),
        "{errors:#?}"
    );
    // Every instance needing every instance of another parallel job is
    // capped at GitLab's limit, not turned into a quadratic graph.
    let text = "a:\n  script: x\n  parallel: 200\nb:\n  script: x\n  parallel: 200\n  needs: [a]\n";
    let errors = messages(text);
    assert_eq!(
        errors,
        ["job b: one job can only need 50 others, but you have listed 200"]
    );
}

#[test]
fn planned_environment_is_expanded_and_checked() {
    let text = "deploy:\n  script: x\n  environment: review/$CI_COMMIT_REF_SLUG\n  resource_group: $CI_COMMIT_REF_SLUG\nbad:\n  script: x\n  variables:\n    WHERE: /root\n  environment: $WHERE\n";
    let errors = plan_on(text, "feature/a").expect_err("bad expands to /root");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].job.as_deref(), Some("bad"));
    let text = "deploy:\n  script: x\n  environment: review/$CI_COMMIT_REF_SLUG\n  resource_group: $CI_COMMIT_REF_SLUG\n";
    let Ok(Plan::Created { pipeline }) = plan_on(text, "feature/a") else {
        panic!("no pipeline");
    };
    let deploy = &pipeline.jobs[0];
    assert_eq!(deploy.resource_group.as_deref(), Some("feature-a"));
    let env = deploy.environment.as_ref().expect("environment");
    assert_eq!(env.name, "review/feature-a");
    let value = |key: &str| {
        deploy
            .variables
            .iter()
            .find(|v| v.key == key)
            .map(|v| v.value.clone())
    };
    assert_eq!(
        value("CI_ENVIRONMENT_NAME").as_deref(),
        Some("review/feature-a")
    );
    assert_eq!(value("CI_ENVIRONMENT_ACTION").as_deref(), Some("start"));
    assert_eq!(value("CI_ENVIRONMENT_URL"), None);
    assert!(value("CI_ENVIRONMENT_SLUG").is_some_and(|s| s.starts_with("review-feature-a-")));
}

#[test]
fn rules_decide_when_and_start_in() {
    let text = "j:\n  script: x\n  rules:\n    - if: $CI_COMMIT_BRANCH == \"main\"\n      when: delayed\n      start_in: 2h\n    - when: manual\n";
    let Ok(Plan::Created { pipeline }) = plan_on(text, "main") else {
        panic!("no pipeline");
    };
    assert_eq!(pipeline.jobs[0].when, When::Delayed);
    assert_eq!(pipeline.jobs[0].start_in_seconds, Some(7200));
    let Ok(Plan::Created { pipeline }) = plan_on(text, "other") else {
        panic!("no pipeline");
    };
    assert_eq!(pipeline.jobs[0].when, When::Manual);
    assert_eq!(pipeline.jobs[0].start_in_seconds, None);
    // rules:when: manual leaves allow_failure false, as GitLab documents.
    assert!(!pipeline.jobs[0].allow_failure);
}

#[test]
fn rules_needs_are_resolved_on_the_rule_and_replace_the_jobs_needs() {
    let text = r#"
stages: [build, test]
shard:
  stage: build
  parallel: 2
  script: make
lint:
  stage: build
  script: lint
test:
  stage: test
  needs: [lint]
  rules:
    - if: $CI_COMMIT_BRANCH == "main"
      needs: [shard, {job: absent, optional: true}]
    - when: on_success
  script: make test
"#;
    let definition = parse_pipeline_with(".gitlab-ci.yml", text, &NoFiles).expect("valid");
    let conditions = definition.jobs.iter().find(|j| j.name == "test").unwrap();
    let osprey_shared::pipeline::JobFilter::Rules(rules) = &conditions.filter else {
        panic!("test has rules");
    };
    let names = |needs: &Option<Vec<Need>>| -> Option<Vec<String>> {
        needs
            .as_ref()
            .map(|n| n.iter().map(|n| n.job.clone()).collect())
    };
    // Expanded and with the undefined optional need dropped, as job needs.
    assert_eq!(
        names(&rules[0].needs),
        Some(vec!["shard 1/2".to_owned(), "shard 2/2".to_owned()])
    );
    assert_eq!(rules[1].needs, None);
    let planned = |git_ref: &str| match plan_on(text, git_ref) {
        Ok(Plan::Created { pipeline }) => names(&job(&pipeline, "test").needs),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        planned("main"),
        Some(vec!["shard 1/2".to_owned(), "shard 2/2".to_owned()])
    );
    assert_eq!(planned("feature"), Some(vec!["lint".to_owned()]));
}

#[test]
fn a_rule_stored_before_rules_needs_still_loads() {
    let rule: osprey_shared::pipeline::Rule =
        serde_json::from_str(r#"{"if": "$A", "when": {"run": "manual"}}"#).expect("loads");
    assert_eq!(rule.needs, None);
}

#[test]
fn rules_needs_count_against_the_limit_of_fifty() {
    let mut text =
        String::from("stages: [build, test]\nmany:\n  stage: build\n  parallel: 51\n  script: x\n");
    text.push_str("test:\n  stage: test\n  script: x\n  rules:\n    - needs: [many]\n");
    let errors = match parse_pipeline_with(".gitlab-ci.yml", &text, &NoFiles) {
        Ok(_) => panic!("expected errors"),
        Err(errors) => errors,
    };
    assert_eq!(
        errors
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        ["job test: rules:needs: one job can only need 50 others, but you have listed 51"]
    );
}

/// Project variables decide rules as GitLab's do, but never end up in what
/// a job keeps: a reference to one stays `$NAME` until dispatch.
#[test]
fn project_variables_decide_rules_without_being_stored() {
    let text = r#"
deploy:
  script: ./deploy
  variables:
    URL: https://$DEPLOY_TOKEN@deploy.example.com
  rules:
    - if: $DEPLOY_ENABLED == "yes"
skipped:
  script: x
  rules:
    - if: $DEPLOY_ENABLED == "no"
"#;
    let definition = parse_pipeline_with(".gitlab-ci.yml", text, &NoFiles).expect("valid pipeline");
    let project_variables = vec![
        osprey_shared::pipeline::Variable {
            key: "DEPLOY_ENABLED".into(),
            value: "yes".into(),
        },
        osprey_shared::pipeline::Variable {
            key: "DEPLOY_TOKEN".into(),
            value: "s3cret-token".into(),
        },
    ];
    let ctx = PlanContext {
        git_ref: "main".into(),
        is_tag: false,
        source: PipelineSource::Push,
        changed_files: None,
        files: &NoFiles,
        predefined: predefined("main", false, "push", Some("main")),
        variables: Vec::new(),
        project_variables,
    };
    let Ok(Plan::Created { pipeline }) = plan::plan(&definition, &ctx) else {
        panic!("a pipeline is created");
    };
    let names: Vec<&str> = pipeline.jobs.iter().map(|job| job.name.as_str()).collect();
    assert_eq!(names, vec!["deploy"]);
    let stored = serde_json::to_string(&pipeline).unwrap();
    assert!(!stored.contains("s3cret-token"), "{stored}");
    assert!(!stored.contains("DEPLOY_ENABLED"), "{stored}");
    let url = &job(&pipeline, "deploy").variables[0];
    assert_eq!(url.value, "https://$DEPLOY_TOKEN@deploy.example.com");
}
