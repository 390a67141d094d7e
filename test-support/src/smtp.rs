//! An SMTP server on loopback for tests that keeps every message it is
//! given: Debian's `python3-aiosmtpd` with a small inline handler, killed
//! when the handle drops.
//!
//! Why an inline handler rather than `aiosmtpd.handlers.Mailbox`: Mailbox
//! parses and re-serialises each message and adds `X-Peer`-style headers;
//! tests want the bytes the client sent. The handler also refuses any
//! recipient whose local part starts with `refuse` (`550`), so a test can
//! see a permanent refusal.
//!
//! The interpreter is `$OSPREY_SMTP_PYTHON`, else `/usr/bin/python3` (the
//! package's; a `python3` first on `PATH` may be a pyenv one without it),
//! else `python3`. `scripts/install-deps.sh` installs the package.

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds port 0, prints the port, then stores each message's raw bytes as
/// `NNNNNN.eml` (written under a dot name, then renamed: readers never see
/// half a message).
const SERVER: &str = r#"
import asyncio, os, sys
from aiosmtpd.smtp import SMTP

out = sys.argv[1]
defer = int(sys.argv[2])

class Sink:
    count = 0
    deferred = 0

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address.lower().startswith("refuse"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if Sink.deferred < defer:
            Sink.deferred += 1
            return "451 4.3.0 try again later"
        Sink.count += 1
        name = "%06d.eml" % Sink.count
        with open(os.path.join(out, "." + name), "wb") as f:
            f.write(envelope.original_content)
        os.rename(os.path.join(out, "." + name), os.path.join(out, name))
        return "250 OK"

async def main():
    loop = asyncio.get_running_loop()
    # A fixed hostname: the default asks DNS for the machine's FQDN.
    server = await loop.create_server(
        lambda: SMTP(Sink(), hostname="osprey-test-smtp"), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"#;

/// A running SMTP sink.
pub struct SmtpSink {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("OSPREY_SMTP_PYTHON") {
        return PathBuf::from(path);
    }
    let debian = PathBuf::from("/usr/bin/python3");
    if debian.is_file() {
        debian
    } else {
        PathBuf::from("python3")
    }
}

impl SmtpSink {
    /// Starts the server on a free loopback port; returns once it listens.
    pub fn start() -> anyhow::Result<SmtpSink> {
        SmtpSink::start_deferring(0)
    }

    /// [`SmtpSink::start`], answering the first `defer` messages with a
    /// temporary refusal (`451`), as a busy server does.
    pub fn start_deferring(defer: u32) -> anyhow::Result<SmtpSink> {
        let program = python();
        let dir = tempfile::tempdir()?;
        let mail = dir.path().join("mail");
        std::fs::create_dir(&mail)?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut child = Command::new(&program)
            .arg("-c")
            .arg(SERVER)
            .arg(&mail)
            .arg(defer.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        // The script prints its port once it listens, or exits (no aiosmtpd:
        // stdout closes, and the log says why). Read on a thread so a server
        // that hangs cannot hang the test.
        let stdout = child.stdout.take().context("the sink's stdout")?;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver.recv_timeout(READY_TIMEOUT).unwrap_or_default();
        let port = match line.trim().parse::<u16>() {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log =
                    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                bail!(
                    "the aiosmtpd sink did not start (run scripts/install-deps.sh, or set \
                     OSPREY_SMTP_PYTHON): {log}"
                );
            }
        };
        Ok(SmtpSink {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        })
    }

    /// `smtp://127.0.0.1:PORT` (plain SMTP, no TLS, no authentication).
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// The raw RFC 822 messages received so far, oldest first.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("mail")) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
            .filter(|path| {
                !path
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        paths
            .iter()
            .filter_map(|path| std::fs::read(path).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .collect()
    }

    /// Waits until at least `count` messages arrived; returns them all.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return Ok(messages);
            }
            if Instant::now() > deadline {
                bail!(
                    "the SMTP sink got {} messages, not {count}, within {timeout:?}",
                    messages.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
