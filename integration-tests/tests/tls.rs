//! TLS with rustls: a coordinator given `--tls-cert`/`--tls-key` serves gRPC
//! only over TLS; a client that trusts the CA registers, one that does not is
//! refused, and a real agent given `--tls-ca` opens its session. An agent
//! without `--tls-ca` trusts the public web PKI, which did not sign this
//! coordinator's certificate.

use osprey_integration_tests::bins::binary;
use osprey_proto::v1::agent_service_client::AgentServiceClient;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const TOKEN: &str = "tls-test-registration-token";

/// Kills the child on drop, so a failing test leaves nothing running.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes a CA and a server certificate for `localhost` signed by it; returns the CA's PEM.
fn write_certificates(dir: &Path) -> String {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "osprey test ca");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    ca.pem()
}

fn start_coordinator(dir: &Path) -> (Guard, u16) {
    let mut child = Command::new(binary("osprey-coordinator"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--registration-token", TOKEN])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--tls-cert")
        .arg(dir.join("server.pem"))
        .arg("--tls-key")
        .arg(dir.join("server.key"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("coordinator.stderr")).unwrap())
        .spawn()
        .expect("start the coordinator");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let address = line
        .trim()
        .strip_prefix("osprey-coordinator listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let port = address.rsplit(':').next().unwrap().parse().unwrap();
    (Guard(child), port)
}

async fn register(channel: Channel) -> Result<String, tonic::Status> {
    let response = AgentServiceClient::new(channel)
        .register(osprey_integration_tests::fake_agent::register_request(
            TOKEN,
            "tls-probe",
        ))
        .await?;
    Ok(response.into_inner().agent_id)
}

#[tokio::test]
async fn agents_connect_over_tls_only_when_they_trust_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = write_certificates(dir.path());
    let (_coordinator, port) = start_coordinator(dir.path());
    let url = format!("https://localhost:{port}");

    // A client that trusts the CA registers.
    let trusted = Channel::from_shared(url.clone())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)))
        .unwrap()
        .connect()
        .await
        .expect("TLS connection with the right CA");
    let agent_id = register(trusted).await.expect("register over TLS");
    assert!(!agent_id.is_empty());

    // Plain text to the TLS port is refused.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    let plain_result = match plain.connect().await {
        Ok(channel) => register(channel).await.map(|_| ()),
        Err(error) => Err(tonic::Status::unavailable(error.to_string())),
    };
    assert!(
        plain_result.is_err(),
        "a plain-text client must not register"
    );

    // A client trusting another CA is refused.
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = write_certificates(other_dir.path());
    let untrusted = Channel::from_shared(url.clone())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&other_ca)))
        .unwrap()
        .connect()
        .await;
    let untrusted_result = match untrusted {
        Ok(channel) => register(channel).await.map(|_| ()),
        Err(error) => Err(tonic::Status::unavailable(error.to_string())),
    };
    assert!(
        untrusted_result.is_err(),
        "a client with the wrong CA must fail"
    );

    // The real agent, given the CA, opens its session.
    let agent_log = dir.path().join("tls-agent.stderr");
    let _agent = start_agent(
        &url,
        dir.path(),
        "tls-agent",
        Some(&dir.path().join("ca.pem")),
    );
    wait_for_log(&agent_log, "session open", "open a TLS session").await;

    // Without `--tls-ca` it speaks TLS (not plain text) and checks the
    // certificate against the public roots, which refuse the private CA.
    let public_log = dir.path().join("public-agent.stderr");
    let _public = start_agent(&url, dir.path(), "public-agent", None);
    wait_for_log(&public_log, "UnknownIssuer", "reject the private CA").await;
    let log = std::fs::read_to_string(&public_log).unwrap();
    assert!(!log.contains("session open"), "{log}");
}

/// Starts `osprey-agent run` logging to `DIR/NAME.stderr`.
fn start_agent(url: &str, dir: &Path, name: &str, tls_ca: Option<&Path>) -> Guard {
    let mut command = Command::new(binary("osprey-agent"));
    command
        .arg("run")
        .args(["--url", url, "--registration-token", TOKEN, "--name", name])
        .args(["--executor", "shell", "--concurrency", "1"])
        .arg("--work-dir")
        .arg(dir.join(name))
        .env("NO_COLOR", "1")
        .env_remove("OSPREY_TLS_CA")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.stderr"))).unwrap());
    if let Some(ca) = tls_ca {
        command.arg("--tls-ca").arg(ca);
    }
    Guard(command.spawn().expect("start the agent"))
}

/// Waits until the log at `path` contains `needle`, for at most 30 s.
async fn wait_for_log(path: &Path, needle: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not {what} in 30 s (no {needle:?}); its log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The CLI reaches a TLS coordinator with `https://` and `--tls-ca`, with
/// the admin token the coordinator generated on its first start; without
/// the CA it refuses the certificate, without a token it gets a 401.
#[tokio::test]
async fn the_cli_speaks_https_to_a_coordinator_it_trusts() {
    let dir = tempfile::tempdir().unwrap();
    write_certificates(dir.path());
    let (_coordinator, port) = start_coordinator(dir.path());
    let token_file = dir.path().join("data").join("admin.token");
    let token = std::fs::read_to_string(&token_file).expect("the admin token was generated");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the admin token file is private");
    let url = format!("https://localhost:{port}");
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let cli = |args: Vec<&str>| {
        let output = Command::new(binary("osprey"))
            .args(args)
            .env_remove("OSPREY_TOKEN")
            .env("XDG_CONFIG_HOME", dir.path())
            .output()
            .expect("run osprey");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = cli(vec![
        "--url",
        &url,
        "--tls-ca",
        ca,
        "--token",
        token.trim(),
        "project",
        "list",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "[]");
    let (ok, _, stderr) = cli(vec![
        "--url",
        &url,
        "--token",
        token.trim(),
        "project",
        "list",
    ]);
    assert!(!ok, "a certificate of an unknown CA is refused");
    assert!(stderr.contains("cannot reach"), "{stderr}");
    let (ok, _, stderr) = cli(vec!["--url", &url, "--tls-ca", ca, "project", "list"]);
    assert!(!ok);
    assert!(stderr.contains("401"), "{stderr}");
}
