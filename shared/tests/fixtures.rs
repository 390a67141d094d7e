//! Pipelines from users' blog posts (see `tests/fixtures/`), linted as they
//! are. Each test lists the exact errors, so that supporting a keyword later
//! shows up here as errors that go away.

use osprey_shared::yaml::parse_pipeline;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn lint(name: &str) -> Vec<String> {
    match parse_pipeline(name, &fixture(name)) {
        Ok(pipeline) => panic!("{name} parsed: {pipeline:#?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// The text without the job keywords named (each key line and the lines
/// indented under it): what the file would be once those are supported.
fn without_keys(text: &str, keys: &[&str]) -> String {
    let mut out = String::new();
    let mut skipping_deeper_than: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(depth) = skipping_deeper_than {
            if line.trim().is_empty() || indent > depth {
                continue;
            }
            skipping_deeper_than = None;
        }
        let key = line.trim_start().split(':').next().unwrap_or("");
        if indent > 0 && keys.contains(&key) {
            skipping_deeper_than = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn tais_rasa_bot_pipeline() {
    assert_eq!(
        lint("000_tais_rasa_bot.yml"),
        [
            "000_tais_rasa_bot.yml:18:10: job test style: stage test style is not defined in stages",
            "000_tais_rasa_bot.yml:26:10: job run dataset validator: stage validate format is not defined in stages",
            "000_tais_rasa_bot.yml:43:3: job build bot: keyword only is not supported by Osprey yet",
            "000_tais_rasa_bot.yml:53:3: job deploy bot to homolog: keyword only is not supported by Osprey yet",
        ]
    );
}

#[test]
fn tais_rasa_bot_pipeline_once_only_and_environment_are_supported() {
    let text = without_keys(&fixture("000_tais_rasa_bot.yml"), &["only", "environment"])
        .replace("stage: test style", "stage: test")
        .replace("stage: validate format", "stage: test");
    let pipeline = parse_pipeline("000", &text).expect("valid without unsupported keywords");
    let names: Vec<&str> = pipeline.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "test style",
            "run dataset validator",
            "build bot",
            "deploy bot to homolog"
        ]
    );
    let deploy = &pipeline.jobs[3];
    assert_eq!(
        deploy.before_script,
        ["apt-get update -y", "apt-get install sshpass -y"],
        "merged from the .set_ssh_config anchor"
    );
    assert_eq!(
        deploy.image.as_ref().map(|i| i.name.as_str()),
        Some("python:3.6-slim"),
        "the deprecated top-level image applies"
    );
    let build = &pipeline.jobs[2];
    assert_eq!(build.services[0].effective_alias(), "docker");
    assert_eq!(build.tags, ["docker"]);
}

#[test]
fn tais_test_style_snippet() {
    assert_eq!(
        lint("000_test_style_snippet.yml"),
        [
            "000_test_style_snippet.yml:6:10: job test style: stage test style is not defined in stages",
            "000_test_style_snippet.yml:14:10: job run dataset validator: stage validate format is not defined in stages",
        ]
    );
}

#[test]
fn compose_file_is_not_a_pipeline() {
    assert_eq!(
        lint("000_watchtower_compose_not_a_pipeline.yml"),
        [
            "000_watchtower_compose_not_a_pipeline.yml:3:1: job version: config should be a mapping of job keywords, found string",
            "000_watchtower_compose_not_a_pipeline.yml:3:1: jobs config should contain at least one visible job",
            "000_watchtower_compose_not_a_pipeline.yml:7:3: services must be a list, found mapping",
        ]
    );
}

#[test]
fn gitlab_rancher_pipeline() {
    assert_eq!(
        lint("004_gitlab_rancher.yml"),
        ["004_gitlab_rancher.yml:9:3: job publish_plugin_legality_image: keyword only is not supported by Osprey yet"]
    );
    let text = without_keys(&fixture("004_gitlab_rancher.yml"), &["only"]);
    let pipeline = parse_pipeline("004", &text).expect("valid without only:");
    assert_eq!(pipeline.stages, [".pre", "publish", "deploy", ".post"]);
    assert_eq!(pipeline.jobs[0].tags, ["eagle.build"]);
    assert_eq!(
        pipeline.jobs[1].script,
        ["upgrade --stack gf-chat --service parrot-rest"]
    );
}
