//! Behaviour of the front end on whole pipeline files.

use super::parse_pipeline;
use crate::pipeline::{ImageRef, JobDef, Pipeline, Variable, When};
use std::time::{Duration, Instant};

fn ok(text: &str) -> Pipeline {
    match parse_pipeline(".gitlab-ci.yml", text) {
        Ok(pipeline) => pipeline,
        Err(errors) => panic!("unexpected errors: {errors:#?}"),
    }
}

/// Errors as `LINE:COL: message`.
fn errors(text: &str) -> Vec<String> {
    match parse_pipeline(".gitlab-ci.yml", text) {
        Ok(pipeline) => panic!("expected errors, got {pipeline:#?}"),
        Err(errors) => errors
            .iter()
            .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
            .collect(),
    }
}

fn job<'p>(pipeline: &'p Pipeline, name: &str) -> &'p JobDef {
    pipeline
        .jobs
        .iter()
        .find(|j| j.name == name)
        .unwrap_or_else(|| panic!("no job {name}"))
}

fn vars(pairs: &[(&str, &str)]) -> Vec<Variable> {
    pairs
        .iter()
        .map(|(k, v)| Variable {
            key: (*k).to_owned(),
            value: (*v).to_owned(),
        })
        .collect()
}

#[test]
fn minimal_job_gets_gitlab_defaults() {
    let p = ok("build:\n  script: make\n");
    assert_eq!(p.stages, [".pre", "build", "test", "deploy", ".post"]);
    let build = job(&p, "build");
    assert_eq!(build.stage, "test");
    assert_eq!(build.script, ["make"]);
    assert_eq!(build.when, When::OnSuccess);
    assert!(!build.allow_failure);
    assert_eq!(build.timeout_seconds, None);
}

#[test]
fn explicit_stages_are_wrapped_in_pre_and_post() {
    let p = ok("stages: [lint, .post, build, lint]\nj:\n  stage: .pre\n  script: x\n");
    assert_eq!(p.stages, [".pre", "lint", "build", ".post"]);
    assert_eq!(p.stage_index(".pre"), Some(0));
}

#[test]
fn anchors_aliases_and_merge_keys_as_in_real_pipelines() {
    let p = ok(r#"
.deploy: &deploy
  stage: deploy
  script: [echo deploying]
  tags: [docker]
  variables: {ENV: base, REGION: eu}
deploy dev:
  <<: *deploy
  variables: {ENV: dev}
deploy prod:
  <<: *deploy
  tags: [prod-runner]
"#);
    assert_eq!(p.jobs.len(), 2, "hidden .deploy must not be a job");
    let dev = job(&p, "deploy dev");
    assert_eq!(dev.stage, "deploy");
    assert_eq!(dev.script, ["echo deploying"]);
    assert_eq!(dev.tags, ["docker"]);
    // An explicit key replaces the merged value whole (no deep merge).
    assert_eq!(dev.variables, vars(&[("ENV", "dev")]));
    let prod = job(&p, "deploy prod");
    assert_eq!(prod.tags, ["prod-runner"]);
    assert_eq!(prod.variables, vars(&[("ENV", "base"), ("REGION", "eu")]));
}

#[test]
fn merge_list_earlier_source_wins_and_explicit_wins_over_all() {
    let p = ok(r#"
.a: &a {stage: build, tags: [a], timeout: 10m}
.b: &b {stage: deploy, tags: [b], allow_failure: true}
j:
  timeout: 1h
  <<: [*a, *b]
  script: x
"#);
    let j = job(&p, "j");
    assert_eq!(j.stage, "build");
    assert_eq!(j.tags, ["a"]);
    assert!(j.allow_failure);
    assert_eq!(j.timeout_seconds, Some(3600));
}

#[test]
fn anchored_script_lists_are_spliced_and_flattened() {
    let p = ok(r#"
.setup: &setup
  - apt-get update
  - apt-get install -y make
job:
  before_script: *setup
  script:
    - *setup
    - [make, make test]
    - make install
"#);
    let j = job(&p, "job");
    assert_eq!(
        j.before_script,
        ["apt-get update", "apt-get install -y make"]
    );
    assert_eq!(
        j.script,
        [
            "apt-get update",
            "apt-get install -y make",
            "make",
            "make test",
            "make install"
        ]
    );
}

#[test]
fn quoted_merge_key_is_an_ordinary_key() {
    let e = errors("j:\n  script: x\n  '<<': {stage: build}\n");
    assert_eq!(e, ["3:3: job j: unknown keyword <<"]);
}

#[test]
fn default_section_applies_unless_the_job_sets_its_own() {
    let p = ok(r#"
default:
  image: ruby:3.3
  before_script: [bundle install]
  after_script: [echo done]
  tags: [linux]
  timeout: 30 minutes
  services: [postgres:16]
rspec:
  script: rspec
custom:
  image: {name: alpine, entrypoint: [""]}
  before_script: [echo own]
  tags: []
  services: []
  timeout: 90s
  script: true-ish
"#);
    let rspec = job(&p, "rspec");
    assert_eq!(
        rspec.image,
        Some(ImageRef {
            name: "ruby:3.3".into(),
            entrypoint: None
        })
    );
    assert_eq!(rspec.before_script, ["bundle install"]);
    assert_eq!(rspec.after_script, ["echo done"]);
    assert_eq!(rspec.tags, ["linux"]);
    assert_eq!(rspec.timeout_seconds, Some(1800));
    assert_eq!(rspec.services[0].name, "postgres:16");
    let custom = job(&p, "custom");
    assert_eq!(
        custom.image,
        Some(ImageRef {
            name: "alpine".into(),
            entrypoint: Some(vec![String::new()])
        })
    );
    assert_eq!(custom.before_script, ["echo own"]);
    assert_eq!(custom.after_script, ["echo done"]);
    assert!(custom.tags.is_empty());
    assert!(custom.services.is_empty());
    assert_eq!(custom.timeout_seconds, Some(90));
}

#[test]
fn deprecated_top_level_forms_mean_default() {
    let p = ok("image: python:3.6-slim\nbefore_script: [pip -V]\nt:\n  script: x\n");
    let t = job(&p, "t");
    assert_eq!(
        t.image.as_ref().map(|i| i.name.as_str()),
        Some("python:3.6-slim")
    );
    assert_eq!(t.before_script, ["pip -V"]);
}

#[test]
fn top_level_form_and_default_together_is_an_error() {
    let e = errors("default:\n  image: a\nimage: b\nj:\n  script: x\n");
    assert_eq!(
        e,
        ["3:1: image is set both here and in default: (line 2); keep only one"]
    );
}

#[test]
fn variables_keep_their_source_text() {
    let p = ok(r#"
variables:
  VERSION: 1.10
  COUNT: 010
  FLAG: yes
  QUOTED: "a: b"
  DESCRIBED: {value: "x", description: "shown in the UI"}
j:
  variables:
    ENABLED: true
  script: x
"#);
    assert_eq!(
        p.variables,
        vars(&[
            ("VERSION", "1.10"),
            ("COUNT", "010"),
            ("FLAG", "yes"),
            ("QUOTED", "a: b"),
            ("DESCRIBED", "x"),
        ])
    );
    assert_eq!(job(&p, "j").variables, vars(&[("ENABLED", "true")]));
}

#[test]
fn variable_forms_are_checked() {
    let e = errors(
        "variables:\n  A:\n  B: {value: 1, options: [1, 2]}\nj:\n  script: x\n  variables:\n    C: {value: x, description: d}\n    D: [1]\n    E: {value: x, expand: false}\n",
    );
    assert_eq!(
        e,
        [
            "2:3: variable A must be a string, number or boolean, found null",
            "3:17: variables:B:options is not supported by Osprey yet",
            "7:19: job j: variables:C:description is only allowed in top-level variables",
            "8:8: job j: variable D must be a string, number or boolean, found list",
            "9:27: job j: variables:E:expand: false is not supported by Osprey yet",
        ]
    );
}

#[test]
fn services_in_both_forms() {
    let p = ok(r#"
j:
  script: x
  services:
    - docker:dind
    - name: postgres:16
      alias: db
      command: [postgres, -c, fsync=off]
      variables: {POSTGRES_PASSWORD: secret}
"#);
    let services = &job(&p, "j").services;
    assert_eq!(services[0].effective_alias(), "docker");
    assert_eq!(services[1].alias.as_deref(), Some("db"));
    assert_eq!(
        services[1].command.as_deref(),
        Some(&["postgres".to_owned(), "-c".into(), "fsync=off".into()][..])
    );
    assert_eq!(
        services[1].variables,
        vars(&[("POSTGRES_PASSWORD", "secret")])
    );
}

#[test]
fn when_allow_failure_artifacts() {
    let p = ok(r#"
cleanup:
  stage: .post
  when: always
  allow_failure: on
  script: ./cleanup
  artifacts:
    paths: [dist/, "*.log"]
"#);
    let c = job(&p, "cleanup");
    assert_eq!(c.when, When::Always);
    assert!(c.allow_failure, "YAML 1.1 `on` is true, as in GitLab");
    assert_eq!(c.artifacts.paths, ["dist/", "*.log"]);
}

#[test]
fn unknown_keyword_with_suggestion_located_on_the_key() {
    let e = errors("build:\n  stage: build\n  scirpt: make\n");
    assert_eq!(
        e,
        [
            "1:1: job build: script is required",
            "3:3: job build: unknown keyword scirpt (did you mean script?)",
        ]
    );
}

#[test]
fn unsupported_keywords_are_named_never_ignored() {
    let e = errors(
        "build:\n  script: make\n  only: [main]\n  rules:\n    - when: always\n  trigger: x\n",
    );
    assert_eq!(
        e,
        [
            "3:3: job build: keyword only is not supported by Osprey yet",
            "4:3: job build: rules may not be used with only or except",
            "4:3: job build: keyword rules is not supported by Osprey yet",
            "6:3: job build: keyword trigger is not supported by Osprey yet",
        ]
    );
    let e = errors("workflow:\n  rules: []\ninclude: a.yml\nj:\n  script: x\n");
    assert_eq!(
        e,
        [
            "1:1: keyword workflow is not supported by Osprey yet",
            "3:1: keyword include is not supported by Osprey yet",
        ]
    );
}

#[test]
fn the_special_pages_job_is_refused() {
    let e = errors("pages:\n  script: mkdocs build -d public\n");
    assert_eq!(
        e,
        ["1:1: job pages: GitLab Pages deployment is not supported by Osprey yet"]
    );
}

#[test]
fn unsupported_values_and_subkeys() {
    let e = errors(
        "j:\n  script: x\n  when: never\n  artifacts:\n    paths: [a]\n    expose_as: report\n  allow_failure:\n    exit_code: 137\n",
    );
    assert_eq!(
        e,
        [
            "3:9: job j: when: never is only valid in rules (and workflow:rules)",
            "6:5: job j: artifacts:expose_as is not supported by Osprey yet",
            "8:5: job j: allow_failure: unknown key exit_code (did you mean exit_codes?)",
        ]
    );
}

#[test]
fn wrong_types_are_located_on_the_value() {
    let e = errors(
        "build:\n  script: make\n  allow_failure: \"yes\"\n  tags: docker\n  stage: [build]\n  timeout: soon\n",
    );
    assert_eq!(
        e,
        [
            "3:18: job build: allow_failure must be a boolean, found string",
            "4:9: job build: tags must be a list of strings, found string",
            "5:10: job build: stage must be a string, found list",
            "6:12: job build: timeout \"soon\" is not a duration (write e.g. 3600, 90s, 10 minutes or 1h 30m)",
        ]
    );
}

#[test]
fn script_lines_must_be_strings() {
    let e = errors("j:\n  script:\n    - echo: hi\n    - 42\n");
    assert_eq!(
        e,
        [
            "3:7: job j: each line of script must be a string, found mapping",
            "4:7: job j: each line of script must be a string, found integer (quote it to use it as a string)",
        ]
    );
}

#[test]
fn undefined_stage_with_did_you_mean() {
    let e = errors("stages: [build, test]\ncompile:\n  stage: biuld\n  script: make\n");
    assert_eq!(
        e,
        ["3:10: job compile: stage biuld is not defined in stages (did you mean build?)"]
    );
    let e = errors("stages: [build]\ncompile:\n  script: make\n");
    assert_eq!(
        e,
        ["2:1: job compile: the default stage test is not defined in stages; set stage: or add test to stages"]
    );
}

#[test]
fn missing_script_is_located_on_the_job_name() {
    let e = errors("stages: [a]\n\n  # comment\nlint job:\n  stage: a\n");
    assert_eq!(e, ["4:1: job lint job: script is required"]);
    let e = errors("varaibles:\n  A: 1\nj:\n  script: x\n");
    assert_eq!(
        e,
        [
            "1:1: job varaibles: script is required (or did you mean the top-level keyword variables?)",
            "2:3: job varaibles: unknown keyword A",
        ]
    );
}

#[test]
fn malformed_yaml_reports_the_parser_message_at_its_location() {
    let e = errors("build:\n  script: [make\n  stage: build\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("3:8: invalid YAML: "), "{e:?}");
    let e = errors("a: b\n c: d\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("2:3: invalid YAML: "), "{e:?}");
}

#[test]
fn files_that_are_not_pipelines() {
    assert_eq!(
        errors(""),
        ["1:1: the file is empty: jobs config should contain at least one visible job"]
    );
    assert_eq!(
        errors("# only a comment\n"),
        ["1:1: the file is empty: jobs config should contain at least one visible job"]
    );
    assert_eq!(
        errors("just a string\n"),
        ["1:1: a pipeline file must be a mapping of keywords and jobs, found string"]
    );
    assert_eq!(
        errors("- a\n- b\n"),
        ["1:1: a pipeline file must be a mapping of keywords and jobs, found list"]
    );
    assert_eq!(
        errors("stages: [build]\n.hidden:\n  script: x\n"),
        ["1:1: jobs config should contain at least one visible job"]
    );
}

#[test]
fn misplaced_and_misspelt_top_level_keywords() {
    let e = errors("tags: [docker]\nstage: [a]\nversion: '2'\nj:\n  script: x\n");
    assert_eq!(
        e,
        [
            "1:1: keyword tags is not valid at the top level; set it in default: or in each job",
            "2:1: unknown top-level keyword stage (did you mean stages?)",
            "3:1: job version: config should be a mapping of job keywords, found string",
        ]
    );
}

#[test]
fn hidden_jobs_are_not_validated_as_jobs() {
    let p = ok(".tmpl:\n  only: [main]\n  whatever: 1\n.lines: [a, b]\nj:\n  script: x\n");
    assert_eq!(p.jobs.len(), 1);
    assert_eq!(
        errors(".blank:\nj:\n  script: x\n"),
        ["1:1: hidden job .blank: config can't be blank"]
    );
}

#[test]
fn errors_from_a_template_are_reported_for_each_job_that_uses_it() {
    let e =
        errors(".t: &t\n  only: [main]\na:\n  <<: *t\n  script: x\nb:\n  <<: *t\n  script: y\n");
    assert_eq!(
        e,
        [
            "2:3: job a: keyword only is not supported by Osprey yet",
            "2:3: job b: keyword only is not supported by Osprey yet",
        ]
    );
}

#[test]
fn duplicate_keys_and_bad_merges_are_errors() {
    let e = errors("j:\n  script: x\nj:\n  script: y\n");
    assert_eq!(e, ["3:1: duplicate key j (first defined at line 1)"]);
    let e = errors("j:\n  <<: [a]\n  script: x\n");
    assert_eq!(
        e,
        ["2:8: merge key << takes a mapping or a list of mappings, found string"]
    );
}

#[test]
fn reference_tags_are_resolved_and_other_tags_refused() {
    let p = ok(".s:\n  script: [a, b]\nj:\n  script: [!reference [.s, script], c]\n");
    assert_eq!(job(&p, "j").script, ["a", "b", "c"]);
    let e = errors("j:\n  script: !custom x\n  tags: !reference x\n");
    assert_eq!(
        e,
        [
            "2:11: YAML tag !custom is not supported by Osprey yet",
            "3:9: !reference takes a list such as [job, key], found a scalar",
            "3:9: job j: tags must be a list of strings, found string",
        ]
    );
}

#[test]
fn all_errors_are_reported_sorted_by_line() {
    let e = errors("z:\n  scirpt: a\na:\n  script: b\n  secrets: 2\nstages: 3\n");
    let lines: Vec<usize> = e
        .iter()
        .map(|m| {
            m.split(':')
                .next()
                .and_then(|l| l.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{e:?}");
    assert_eq!(
        e,
        [
            "1:1: job z: script is required",
            "2:3: job z: unknown keyword scirpt (did you mean script?)",
            "5:3: job a: keyword secrets is not supported by Osprey yet",
            "6:9: stages must be a list of strings, found integer",
        ]
    );
}

#[test]
fn billion_laughs_is_refused_quickly_at_the_alias() {
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..10 {
        let prev = format!("*a{}", level - 1);
        let refs = [prev.as_str(); 10].join(", ");
        text.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
    }
    text.push_str("j:\n  script: *a9\n");
    let started = Instant::now();
    let e = errors(&text);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("more than 1000000 YAML nodes"), "{e:?}");
    // Located on the alias that crossed the budget: a5's tenth *a4 makes
    // 1 + 10 * 111,111 nodes on top of the earlier ones.
    assert!(e[0].starts_with("6:45: "), "{e:?}");
}

#[test]
fn deep_nesting_is_refused_at_the_limit() {
    let text = format!("j: {}{}\n", "[".repeat(500), "]".repeat(500));
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    let deep = format!("j: {}{}\n", "{a: ".repeat(200), "}".repeat(200));
    let e = errors(&deep);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("deeper than the limit of 128"), "{e:?}");
}

#[test]
fn unknown_alias_is_named_at_its_location() {
    let e = errors("a:\n  script: [x]\nb:\n  script: *missing\n");
    assert_eq!(e, ["4:11: invalid YAML: unknown anchor *missing"]);
    let e = errors("a:\n  script: [x, *gone]\n");
    assert_eq!(e, ["2:15: invalid YAML: unknown anchor *gone"]);
}

#[test]
fn recursive_alias_does_not_hang() {
    let e = errors("a: &a [*a]\n");
    assert_eq!(e.len(), 1, "{e:?}");
}

#[test]
fn second_document_is_refused() {
    let e = errors("j:\n  script: x\n---\nk:\n  script: y\n");
    assert_eq!(
        e,
        ["3:1: a pipeline file holds one YAML document; found a second one"]
    );
}

#[test]
fn lint_error_display_format() {
    let err = parse_pipeline("ci.yml", "j:\n  scirpt: x\n").unwrap_err();
    assert_eq!(
        err[1].to_string(),
        "ci.yml:2:3: job j: unknown keyword scirpt (did you mean script?)"
    );
}

mod garbage {
    use super::super::parse_pipeline;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_pipeline("x.yml", &text);
        }

        #[test]
        fn yaml_shaped_text_never_panics(
            text in "([a-z<*&!.:\\-\\[\\]{},'\" \n]|  |\t|<<: \\*a|&a |script: ){0,80}"
        ) {
            let _ = parse_pipeline("x.yml", &text);
        }
    }
}

mod garbage_with_planning {
    use crate::plan::{plan, PipelineSource, PlanContext};
    use crate::yaml::{parse_pipeline_with, NoFiles};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any text through the whole front end and the planner: a result
        /// or errors, never a panic.
        #[test]
        fn planning_arbitrary_pipelines_never_panics(
            text in "(j:\n  script: x\n|  rules:\n|    - if: |\\$A == 'x'|/[a(]/i|&&|\\|\\||  extends: |\\.t|\n|\\.t:\n|  only: |\\[main, /m/\\]|include: a.yml\n|!reference \\[j, script\\]| |-|:){0,60}"
        ) {
            if let Ok(definition) = parse_pipeline_with("x.yml", &text, &NoFiles) {
                let ctx = PlanContext {
                    git_ref: "main".into(),
                    is_tag: false,
                    source: PipelineSource::Push,
                    changed_files: Some(vec!["a".into()]),
                    files: &NoFiles,
                    predefined: Vec::new(),
                    variables: Vec::new(),
                    project_variables: Vec::new(),
                };
                let _ = plan(&definition, &ctx);
            }
        }
    }
}
