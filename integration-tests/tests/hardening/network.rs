//! Abuse from the network meets a clear limit: wrong registration tokens are
//! slowed per address, a pipeline file (or include) over the size limit and
//! a repository outside `--repo-allow` are refused before anything is read,
//! git's errors do not tell callers what exists on the host, an oversized
//! body gets `413`, a retried create with the same `Idempotency-Key`
//! returns the pipeline the first one made, and a backlog of pending jobs
//! costs the coordinator memory by their number, not by their specs.

use osprey_integration_tests::{
    Agent, AgentOpts, Coordinator, CoordinatorOpts, TestCluster, TestRepo,
};
use osprey_proto::v1::agent_service_client::AgentServiceClient;
use osprey_proto::v1::RegisterRequest;
use osprey_shared::api::{ErrorBody, PipelineView};
use std::time::Duration;
use tonic::Code;

fn register_request(token: &str) -> RegisterRequest {
    osprey_integration_tests::fake_agent::register_request(token, "probe")
}

/// `POST /api/v1/pipelines` with a JSON body and optional key; the status
/// and the body as text.
async fn post_pipeline(
    base: &str,
    body: &serde_json::Value,
    key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut request = reqwest::Client::new()
        .post(format!("{base}/api/v1/pipelines"))
        .bearer_auth(osprey_integration_tests::cluster::ADMIN_TOKEN)
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("the coordinator answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

async fn refusal(base: &str, repo: &str) -> (u16, String) {
    let (status, _, text) = post_pipeline(
        base,
        &serde_json::json!({"repo": repo, "ref": "master"}),
        None,
    )
    .await;
    let body: ErrorBody =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("an error body: {text}"));
    (status, body.error)
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_registration_tokens_are_slowed_and_a_right_one_then_registers() {
    let cluster = TestCluster::builder().start().await;
    let mut grpc = AgentServiceClient::connect(cluster.coordinator.url())
        .await
        .unwrap();
    let mut unauthenticated = 0;
    let mut throttled = 0;
    for guess in 0..50 {
        let refused = grpc
            .register(register_request(&format!("guess-{guess}")))
            .await
            .expect_err("a wrong token never registers");
        match refused.code() {
            Code::Unauthenticated => unauthenticated += 1,
            Code::ResourceExhausted => {
                assert!(refused.message().contains("retry after"), "{refused:?}");
                throttled += 1;
            }
            other => panic!("unexpected {other:?}: {refused:?}"),
        }
    }
    assert!(
        unauthenticated <= 6 && throttled >= 44,
        "after a few wrong tokens the address is throttled: {unauthenticated} compared, {throttled} throttled"
    );
    // Once the block has passed, the right token registers from the same address.
    let right = cluster.coordinator.registration_token().to_owned();
    osprey_integration_tests::wait_for(
        "the right token to register after the block",
        Duration::from_secs(10),
        || {
            let mut grpc = grpc.clone();
            let request = register_request(&right);
            async move {
                match grpc.register(request).await {
                    Ok(_) => Ok(()),
                    Err(status) if status.code() == Code::ResourceExhausted => {
                        Err(status.message().to_owned())
                    }
                    Err(status) => panic!("the right token refused: {status:?}"),
                }
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_20_mb_pipeline_file_or_a_big_include_is_refused_naming_the_file_and_limit() {
    let cluster = TestCluster::builder().start().await;
    let base = cluster.api.base_url().to_owned();
    let padding = |bytes: usize| "# padding\n".repeat(bytes / 10);

    let huge = TestRepo::with_pipeline(&format!("job:\n  script: ['true']\n{}", padding(20 << 20)));
    let (status, error) = refusal(&base, &huge.url()).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error.contains(".gitlab-ci.yml") && error.contains("2097152"),
        "the file and the limit are named: {error}"
    );

    let include = TestRepo::with_pipeline("include: big.yml\njob:\n  script: ['true']\n");
    include.write("big.yml", &padding(3 << 20));
    include.commit("a big include");
    let (status, error) = refusal(&base, &include.url()).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error.contains("big.yml") && error.contains("2097152"),
        "the include and the limit are named: {error}"
    );

    // Under the limit all is well.
    let fine = TestRepo::with_pipeline("job:\n  script: ['true']\n");
    let (status, _, text) = post_pipeline(
        &base,
        &serde_json::json!({"repo": fine.url(), "ref": "master"}),
        None,
    )
    .await;
    assert_eq!(status, 201, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mb_body_gets_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let coordinator = Coordinator::start(CoordinatorOpts::default()).await;
    // Raw HTTP/1.1: the coordinator answers once it has read past its limit
    // and may then close while the body is still being sent, which an HTTP
    // client reports as a broken pipe instead of the answer.
    let stream = tokio::net::TcpStream::connect(coordinator.addr())
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let total: usize = 100 << 20;
    let sender = tokio::spawn(async move {
        let head = format!(
            "POST /api/v1/pipelines HTTP/1.1\r\nhost: osprey\r\ncontent-type: application/json\r\n\
             authorization: Bearer {}\r\ncontent-length: {total}\r\n\r\n",
            osprey_integration_tests::cluster::ADMIN_TOKEN
        );
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..100 {
            writer.write_all(&chunk).await?;
        }
        std::io::Result::Ok(())
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let read_answer = async {
        while !answer.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = reader.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the connection closed without an answer");
            answer.extend_from_slice(&buffer[..read]);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_answer)
        .await
        .expect("an answer while the body is being sent");
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    sender.abort();
    coordinator.api().healthz().await.expect("still serving");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_outside_the_allowed_patterns_is_refused_before_git_runs() {
    let allowed = tempfile::tempdir().unwrap();
    let opts = CoordinatorOpts {
        extra_args: vec![
            "--repo-allow".to_owned(),
            format!("{}/*", allowed.path().display()),
        ],
        ..CoordinatorOpts::default()
    };
    let coordinator = Coordinator::start(opts).await;
    let base = coordinator.url();
    // A loopback "git server": any connection to it would be git's.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let marker = coordinator.dir().join("ext-ran");
    let outside = TestRepo::with_pipeline("job:\n  script: ['true']\n");
    for repo in [
        format!("http://127.0.0.1:{port}/team/app.git"),
        format!("https://127.0.0.1:{port}/team/app.git"),
        format!("git://127.0.0.1:{port}/team/app.git"),
        format!("ssh://127.0.0.1:{port}/team/app.git"),
        format!("ext::sh -c touch% {}", marker.display()),
        format!("file://{}", outside.url()),
        outside.url(),
        format!(
            "{}/../{}",
            allowed.path().display(),
            outside.path().file_name().unwrap().to_string_lossy()
        ),
    ] {
        let (status, error) = refusal(&base, &repo).await;
        assert_eq!(status, 400, "{repo}: {error}");
        assert!(
            error.contains("--repo-allow") && error.contains("not allowed"),
            "{repo}: the refusal names the flag: {error}"
        );
    }
    assert!(
        matches!(listener.accept(), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock),
        "nothing connected to the loopback server"
    );
    assert!(!marker.exists(), "ext:: ran nothing");

    // Inside the pattern the repository is read.
    let inside = allowed.path().join("app");
    let repo = TestRepo::with_pipeline("job:\n  script: ['true']\n");
    std::fs::rename(repo.path(), &inside).unwrap();
    let (status, _, text) = post_pipeline(
        &base,
        &serde_json::json!({"repo": inside.display().to_string(), "ref": "master"}),
        None,
    )
    .await;
    std::fs::rename(&inside, repo.path()).unwrap();
    assert_eq!(status, 201, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn git_errors_do_not_tell_callers_what_exists_on_the_host() {
    let coordinator = Coordinator::start(CoordinatorOpts::default()).await;
    let base = coordinator.url();
    let scratch = coordinator.dir().join("probe");
    std::fs::create_dir_all(scratch.join("plain")).unwrap();
    let gitfile = scratch.join("garbled");
    std::fs::create_dir_all(&gitfile).unwrap();
    std::fs::write(gitfile.join(".git"), "not a gitfile\n").unwrap();
    let pointing = scratch.join("elsewhere");
    std::fs::create_dir_all(&pointing).unwrap();
    std::fs::write(pointing.join(".git"), "gitdir: /etc/passwd\n").unwrap();
    let probes = [
        scratch.join("plain"),
        gitfile,
        pointing,
        scratch.join("missing"),
        "/etc/passwd".into(),
    ];
    let mut messages = Vec::new();
    for path in &probes {
        let path = path.display().to_string();
        let (status, error) = refusal(&base, &path).await;
        assert_eq!(status, 400, "{path}: {error}");
        for leak in [
            "gitfile",
            "not a git repository",
            "does not exist",
            "No such",
            "passwd:",
        ] {
            assert!(
                !error.contains(leak),
                "{path}: git's words reach the caller: {error}"
            );
        }
        messages.push(error.replace(&path, "REPO"));
    }
    assert!(
        messages.iter().all(|message| message == &messages[0]),
        "one answer whatever exists: {messages:?}"
    );
    assert!(
        messages[0].contains("cannot read repository REPO (ref master)"),
        "{}",
        messages[0]
    );
    let log = std::fs::read_to_string(coordinator.dir().join("coordinator.stderr")).unwrap();
    assert!(
        log.contains("cannot read repository") && log.contains("gitfile"),
        "the details go to the coordinator's log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_post_with_the_same_idempotency_key_returns_the_same_pipeline() {
    let cluster = TestCluster::builder().start().await;
    let base = cluster.api.base_url().to_owned();
    let repo = TestRepo::with_pipeline("job:\n  script: ['true']\n");
    let body = serde_json::json!({"repo": repo.url(), "ref": "master"});

    let (status, headers, first) = post_pipeline(&base, &body, Some("retry-me-1")).await;
    assert_eq!(status, 201, "{first}");
    assert!(headers.get("idempotent-replayed").is_none());
    let first: PipelineView = serde_json::from_str(&first).unwrap();

    let (status, headers, second) = post_pipeline(&base, &body, Some("retry-me-1")).await;
    assert_eq!(status, 201, "the same status as the first answer: {second}");
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    let second: PipelineView = serde_json::from_str(&second).unwrap();
    assert_eq!(second.id, first.id, "the retry returns the first pipeline");

    let other = serde_json::json!({"repo": repo.url(), "ref": "master", "variables": [{"key": "A", "value": "1"}]});
    let (status, _, text) = post_pipeline(&base, &other, Some("retry-me-1")).await;
    assert_eq!(status, 422, "the key with another body: {text}");

    let next = osprey_shared::PipelineId(first.id.0 + 1);
    let missing = cluster
        .api
        .pipeline(next)
        .await
        .expect_err("only one pipeline exists");
    assert_eq!(missing.status(), Some(404), "{missing}");

    // Without a key, or with another one, each POST creates.
    let (status, _, text) = post_pipeline(&base, &body, Some("retry-me-2")).await;
    assert_eq!(status, 201, "{text}");
    let third: PipelineView = serde_json::from_str(&text).unwrap();
    assert_eq!(third.id, next);
}

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_run_retries_a_cut_post_with_its_key_and_creates_one_pipeline() {
    use tokio::io::AsyncReadExt;
    let mut coordinator = Coordinator::start(CoordinatorOpts::default()).await;
    let url = coordinator.url();
    let repo = TestRepo::with_pipeline("job:\n  script: ['true']\n");
    coordinator.kill9();
    // The coordinator's port now answers nothing: the first POST arrives and
    // its connection is cut before any answer, as by a coordinator kill.
    let cutter = tokio::net::TcpListener::bind(coordinator.addr())
        .await
        .unwrap();
    let repo_url = repo.url();
    let cli_url = url.clone();
    let run = tokio::spawn(async move {
        osprey_integration_tests::cli::osprey(
            Some(&cli_url),
            &[
                "pipeline", "run", "--repo", &repo_url, "--ref", "master", "--json",
            ],
            None,
            Duration::from_secs(60),
        )
        .await
    });
    let (mut connection, _) = tokio::time::timeout(Duration::from_secs(30), cutter.accept())
        .await
        .expect("the CLI posts")
        .unwrap();
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = connection.read(&mut buffer).await.unwrap();
        assert!(read > 0, "the request ended early");
        request.extend_from_slice(&buffer[..read]);
    }
    let head = String::from_utf8_lossy(&request).to_lowercase();
    assert!(
        head.contains("idempotency-key: "),
        "the POST carries a key: {head}"
    );
    drop(connection);
    drop(cutter);
    coordinator.restart().await;

    let output = run.await.unwrap();
    assert_eq!(output.code(), Some(0), "{}", output.stderr);
    assert!(output.stderr.contains("retrying"), "{}", output.stderr);
    let created: PipelineView = serde_json::from_slice(&output.stdout).unwrap();
    let next = osprey_shared::PipelineId(created.id.0 + 1);
    let missing = coordinator
        .api()
        .pipeline(next)
        .await
        .expect_err("one pipeline");
    assert_eq!(missing.status(), Some(404), "{missing}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_in_a_repository_url_reaches_neither_the_answer_nor_the_log() {
    let coordinator = Coordinator::start(CoordinatorOpts {
        extra_args: vec!["--repo-allow".to_owned(), "https://*".to_owned()],
        ..CoordinatorOpts::default()
    })
    .await;
    let secret = "glpat-s3cret-in-the-url";
    // Nothing listens on port 9: git fails at once, naming the URL it tried.
    let repo = format!("https://oauth2:{secret}@127.0.0.1:9/group/app.git");
    let (status, error) = refusal(&coordinator.url(), &repo).await;
    assert_eq!(status, 400, "{error}");
    assert!(!error.contains(secret), "the answer: {error}");
    assert!(
        error.contains("https://[MASKED]@127.0.0.1:9/group/app.git"),
        "{error}"
    );
    let log = std::fs::read_to_string(coordinator.dir().join("coordinator.stderr")).unwrap();
    assert!(log.contains("cannot read repository"), "{log}");
    assert!(!log.contains(secret), "the coordinator's log: {log}");
}

/// The resident memory of a process, from `/proc/PID/status`, in MiB.
fn resident_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"));
    kib / 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_does_not_grow_with_pending_jobs_and_their_big_specs() {
    // One malloc arena: what is measured is what the coordinator holds, not
    // what each of glibc's per-thread arenas keeps of its peak for reuse.
    let coordinator = Coordinator::start(CoordinatorOpts {
        env: vec![("MALLOC_ARENA_MAX".to_owned(), "1".to_owned())],
        ..CoordinatorOpts::default()
    })
    .await;
    let pid = coordinator.pid().expect("the coordinator runs");
    let api = coordinator.api();
    // 256 KiB of global variables (4 of 64 KiB: one variable of the
    // environment may not pass 128 KiB), copied into every job's spec; the
    // first job checks it gets them, the others do nothing.
    let mut file = String::from("variables:\n");
    for index in 0..4 {
        file.push_str(&format!("  BIG_{index}: \"{}\"\n", "x".repeat(64 << 10)));
    }
    file.push_str("check:\n  script: ['test ${#BIG_0} -eq 65536 && test ${#BIG_3} -eq 65536']\n");
    for index in 1..125 {
        file.push_str(&format!("job-{index:03}:\n  script: ['true']\n"));
    }
    let repo = TestRepo::with_pipeline(&file);
    // Creating such a pipeline costs memory while it is planned and stored
    // (each job's stored definition holds its inherited variables), which
    // the allocator keeps for reuse; what must not grow is what the queued
    // jobs hold once created. When the queue kept each job's spec, eight of
    // these pipelines (1,000 jobs, 250 MiB of specs) grew it past 300 MiB.
    let first = api.start_pipeline(&repo, "master").await;
    let mut pipelines = vec![first.id];
    let after_one = resident_mib(pid);
    for _ in 1..8 {
        pipelines.push(api.start_pipeline(&repo, "master").await.id);
    }
    let after_eight = resident_mib(pid);
    eprintln!("coordinator memory with pending jobs: {after_one} MiB for 125, {after_eight} MiB for 1,000");
    assert!(
        after_eight < after_one + 64 && after_eight < 200,
        "seven more pipelines of 125 queued jobs took the coordinator from {after_one} MiB to {after_eight} MiB"
    );

    // An agent connecting then gets the jobs, spec and all.
    let _agent = Agent::start(&coordinator, AgentOpts::named("lazy").run_untagged()).await;
    let check = first
        .jobs
        .iter()
        .find(|job| job.name == "check")
        .expect("the check job");
    api.wait_for_job_status(
        check.id,
        osprey_shared::JobStatus::Success,
        Duration::from_secs(60),
    )
    .await;
    for id in pipelines {
        api.cancel(id).await.expect("cancel the rest");
        let canceled = api.wait_for_pipeline(id).await;
        assert_eq!(canceled.status, osprey_shared::PipelineStatus::Canceled);
    }
}
