//! Azurite, Microsoft's Azure Storage emulator (npm `azurite`), as a child process on a free
//! loopback port with in-memory persistence, and the container URLs the tests pass as
//! `CHAOS_STORE_URL`: an account SAS signed with the emulator's published key, as a real
//! deployment would hand out a SAS (no identity, plain http).
//!
//! Only the blob service runs; nothing is written outside a scratch working directory.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::Proc;

/// The emulator's one account.
const ACCOUNT: &str = "devstoreaccount1";
/// Its account key, published in Microsoft's Azurite docs: not a secret.
const ACCOUNT_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// How long `stop` lets Azurite close after SIGTERM before SIGKILL: it waits for open keep-alive
/// connections (about 1.2 s even with none), and the tests want it gone, not tidy.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// An `azurite-blob` owned by the test; killed on drop.
pub struct Azurite {
    pub port: u16,
    /// Scratch working directory: Azurite's own files and its output (`azurite.log`) go there.
    dir: PathBuf,
    child: Option<Proc>,
}

impl Azurite {
    /// Starts Azurite on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        let mut a = Self { port: super::free_port(), dir: super::temp_dir("azurite"), child: None };
        a.restart();
        a
    }

    /// Starts Azurite (again) on the same port. In-memory persistence: a restart comes back empty,
    /// without containers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "azurite-blob already running");
        let log = std::fs::File::create(self.log_path()).unwrap();
        let bin = binary();
        let mut cmd = Command::new(&bin);
        cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &self.port.to_string(), "--inMemoryPersistence", "--loose"])
            // The SDK sends a newer x-ms-version than the Azurite npm picks for an older Node
            // (3.35 on Node 20 accepts up to 2025-11-05; 3.37 needs Node 22): skip the check
            // rather than tie the tests to one Node version.
            .arg("--skipApiVersionCheck")
            // Azurite reports usage to Application Insights by default; tests stay on loopback.
            .arg("--disableTelemetry")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let what =
            format!("{} (npm `azurite`, on Node.js; `bash tests/run.sh` installs it into target/node)", bin.display());
        let child = Proc::spawn(&what, &mut cmd);
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().exited() {
                self.child = None;
                panic!("azurite-blob exited at startup ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "azurite-blob did not listen on port {} in 30 s:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops Azurite: SIGTERM, then SIGKILL after a short grace; returns once it has exited and
    /// the port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.terminate_blocking(STOP_GRACE);
        }
    }

    /// `http://127.0.0.1:<port>/devstoreaccount1/<container>` with no query string: what the
    /// store may show of itself (`describe`, status, logs).
    pub fn container_base(&self, container: &str) -> String {
        // No trailing slash: the client would make blob paths like `chaos//runs/x.json`.
        format!("http://127.0.0.1:{}/{ACCOUNT}/{container}", self.port)
    }

    /// The container URL with an account SAS (read, add, create, write, delete, list, update,
    /// process on blobs, containers and the service; a day long; http allowed), as
    /// `CHAOS_STORE_URL` carries it.
    pub fn container_url(&self, container: &str) -> String {
        format!("{}?{}", self.container_base(container), account_sas(&STANDARD.decode(ACCOUNT_KEY).unwrap()))
    }

    /// The same URL with a well-formed but wrong `sig` (signed with another key): Azurite
    /// answers 403 `AuthorizationFailure`.
    pub fn bad_sas_url(&self, container: &str) -> String {
        format!("{}?{}", self.container_base(container), account_sas(&[7u8; 64]))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("azurite.log")
    }

    /// What Azurite printed, for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

/// `target/node/node_modules/.bin/azurite-blob` (where `tests/run.sh` installs it), else
/// `azurite-blob` on PATH.
fn binary() -> PathBuf {
    let local = crate::repo().join("target/node/node_modules/.bin/azurite-blob");
    if local.exists() { local } else { PathBuf::from("azurite-blob") }
}

/// An account SAS query string (`sv=2019-12-12`) signed with `key`.
fn account_sas(key: &[u8]) -> String {
    let (sp, ss, srt, sv, spr) = ("racwdlup", "b", "sco", "2019-12-12", "https,http");
    let se = (chrono::Utc::now() + chrono::TimeDelta::days(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    // The string to sign for this version: account, permissions, services, resource types,
    // start, expiry, IP range, protocols, version, each followed by a newline (start and IP empty).
    let to_sign = format!("{ACCOUNT}\n{sp}\n{ss}\n{srt}\n\n{se}\n\n{spr}\n{sv}\n");
    let sig = STANDARD.encode(hmac_sha256(key, &to_sign));
    format!("sv={sv}&ss={ss}&srt={srt}&sp={sp}&se={}&spr={spr}&sig={}", percent_encode(&se), percent_encode(&sig))
}

/// HMAC-SHA256 through `openssl dgst` (no HMAC crate among the dependencies).
fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    let hexkey: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let input = crate::temp_dir("hmac").join("string-to-sign");
    std::fs::write(&input, data).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.args(["dgst", "-sha256", "-mac", "HMAC", "-macopt", &format!("hexkey:{hexkey}"), "-binary"]).arg(&input);
    let out = crate::output("openssl (`bash tests/run.sh` installs it)", &mut cmd, Duration::from_secs(30));
    assert!(out.status.success(), "openssl dgst -mac HMAC: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len(), 32, "openssl dgst -binary: want a 32-byte SHA-256 MAC");
    out.stdout
}

/// Percent-encodes all but RFC 3986's unreserved characters (`+`, `/`, `=` and `:` included).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
