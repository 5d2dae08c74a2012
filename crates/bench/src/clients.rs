//! The clients under test and how each is installed and started.
//!
//! Peers are installed into the scratch folder by the runner (npm, a Python venv), never
//! committed; holdline is built by cargo; the raw floor is this binary's `floor` command.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::harness::{Bed, CLIENT_ID, CLIENT_SECRET, Capture, Watched};

const NODE_CLIENT: &str = include_str!("../peers/node-ws.js");
const PYTHON_DRIVER: &str = include_str!("../peers/genesys_notifications_driver.py");

/// The npm package and PyPI release measured.
pub const NODE_WS_PACKAGE: &str = "ws@8";
pub const GENESYS_NOTIFICATIONS: &str = "genesys-notifications==1.3";

/// One client under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// `holdline listen` with this redundancy.
    Holdline { redundancy: usize },
    /// `holdline listen` (redundancy 1) writing to /dev/null, counted from its `/metrics`.
    HoldlineDevNull,
    /// `holdline listen --spool` (redundancy 1) with the spool on the temp folder's disk.
    HoldlineSpool,
    /// Node.js `ws`: connect, keepalive every 15 s, print every message.
    NodeWs,
    /// PyPI genesys-notifications 1.3 on one channel.
    GenesysNotifications,
    /// Reads frames and discards them unparsed.
    Floor,
    /// `holdline listen` from another build (`holdline-r1@/path/to/holdline`), to compare
    /// two builds round by round in one run.
    Build {
        redundancy: usize,
        binary: &'static Path,
    },
}

impl Client {
    /// Parses `holdline`, `holdline-r2`, `node-ws`, `genesys-notifications`, `floor`.
    pub fn parse(name: &str) -> Result<Client> {
        if let Some((client, binary)) = name.split_once('@') {
            let Client::Holdline { redundancy } = Client::parse(client)? else {
                bail!("{name:?}: only holdline-rN@/path/to/holdline names another build");
            };
            // Clients are small Copy values; a path named once per run is leaked to stay one.
            let binary: &'static Path = Box::leak(PathBuf::from(binary).into_boxed_path());
            return Ok(Client::Build { redundancy, binary });
        }
        Ok(match name {
            "holdline" | "holdline-r1" => Client::Holdline { redundancy: 1 },
            "holdline-null" => Client::HoldlineDevNull,
            "holdline-spool" => Client::HoldlineSpool,
            "node-ws" | "node" => Client::NodeWs,
            "genesys-notifications" | "python" => Client::GenesysNotifications,
            "floor" => Client::Floor,
            other => match other.strip_prefix("holdline-r").map(str::parse::<usize>) {
                Some(Ok(redundancy)) if (1..=19).contains(&redundancy) => {
                    Client::Holdline { redundancy }
                }
                _ => bail!(
                    "unknown client {other:?}: pick from holdline, holdline-r2 (any -rN up to 19), holdline-null, holdline-spool, \
                     node-ws, genesys-notifications, floor"
                ),
            },
        })
    }

    /// The name used in tables and file names.
    pub fn label(&self) -> String {
        match self {
            Client::Holdline { redundancy } => format!("holdline-r{redundancy}"),
            Client::HoldlineDevNull => "holdline-null".into(),
            Client::HoldlineSpool => "holdline-spool".into(),
            Client::NodeWs => "node-ws".into(),
            Client::GenesysNotifications => "genesys-notifications".into(),
            Client::Floor => "floor".into(),
            Client::Build { redundancy, binary } => format!(
                "holdline-r{redundancy}@{}",
                binary.file_name().unwrap_or_default().to_string_lossy()
            ),
        }
    }

    /// What the row describes.
    pub fn describe(&self) -> String {
        match self {
            Client::Holdline { redundancy: 1 } => {
                "`holdline listen`, JSON lines, 1 socket per shard".into()
            }
            Client::Holdline { redundancy } => format!(
                "`holdline listen --redundancy {redundancy}`, {redundancy} sockets, de-duplicated"
            ),
            Client::HoldlineDevNull => {
                "`holdline listen > /dev/null`, JSON lines nobody reads, counted from its /metrics"
                    .into()
            }
            Client::HoldlineSpool => {
                "`holdline listen --spool`, fsync per batch, then stdout".into()
            }
            Client::NodeWs => {
                "Node.js `ws`: keepalive every 15 s, `console.log` per message".into()
            }
            Client::GenesysNotifications => {
                "PyPI genesys-notifications 1.3, one JSON line per notification".into()
            }
            Client::Floor => "raw floor: Rust, reads frames and discards them unparsed".into(),
            Client::Build { redundancy, binary } => format!(
                "`holdline listen --redundancy {redundancy}` built at `{}`",
                binary.display()
            ),
        }
    }

    /// Sockets per topic once ready.
    pub fn redundancy(&self) -> usize {
        match self {
            Client::Holdline { redundancy } | Client::Build { redundancy, .. } => *redundancy,
            _ => 1,
        }
    }

    /// Timed and checked by its own counters (its output goes to /dev/null), not by
    /// reading what it writes.
    pub fn counted_by_metrics(&self) -> bool {
        *self == Client::HoldlineDevNull
    }

    /// Output lines that mean it received all `events`.
    pub fn lines_when_done(&self, events: usize) -> usize {
        match self {
            Client::Floor => 1,
            _ => events,
        }
    }

    /// Prepares its channel (peers need one made for them) and starts it.
    pub async fn spawn(
        &self,
        bed: &Bed,
        tools: &Tools,
        topics_file: &Path,
        topics: &[String],
        events: usize,
        capture: Capture,
    ) -> Result<Watched> {
        let cmd = match self {
            Client::Holdline { redundancy } => {
                holdline_listen(&tools.holdline, bed, topics_file, *redundancy)
            }
            Client::Build { redundancy, binary } => {
                holdline_listen(binary, bed, topics_file, *redundancy)
            }
            Client::HoldlineDevNull => {
                let mut cmd = holdline_listen(&tools.holdline, bed, topics_file, 1);
                cmd.args(["--metrics-addr", "127.0.0.1:0"]);
                cmd
            }
            Client::HoldlineSpool => {
                // On disk (not the tmpfs scratch), where an fsync costs what it costs.
                let dir = std::env::temp_dir()
                    .join(format!("holdline-bench-spool-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                let mut cmd = holdline_listen(&tools.holdline, bed, topics_file, 1);
                cmd.arg("--spool").arg(&dir);
                cmd
            }
            Client::NodeWs => {
                let dir = tools.node_dir.as_ref().context("node-ws was not set up")?;
                let mut cmd = Command::new("node");
                cmd.arg(dir.join("node-ws.js"))
                    .arg(bed.channel(topics).await?);
                cmd
            }
            Client::GenesysNotifications => {
                let python = tools
                    .python
                    .as_ref()
                    .context("genesys-notifications was not set up")?;
                let mut cmd = Command::new(python);
                // The library subscribes over the socket itself; it needs only the channel.
                cmd.arg(tools.scratch.join("genesys_notifications_driver.py"))
                    .arg(bed.channel(&[]).await?)
                    .arg(topics_file);
                cmd
            }
            Client::Floor => {
                let mut cmd = Command::new(&tools.me);
                cmd.args(["floor", "--uri", &bed.channel(topics).await?])
                    .args(["--expect", &events.to_string()]);
                cmd
            }
        };
        Watched::spawn(&self.label(), cmd, &tools.scratch, capture)
    }
}

/// `holdline listen` on the bed's simulator with these topics and redundancy.
fn holdline_listen(binary: &Path, bed: &Bed, topics_file: &Path, redundancy: usize) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args(["listen", "--api-base", bed.url(), "--topics-file"])
        .arg(topics_file)
        .args(["--redundancy", &redundancy.to_string()])
        .env("GENESYSCLOUD_OAUTHCLIENT_ID", CLIENT_ID)
        .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", CLIENT_SECRET)
        .env_remove("GENESYSCLOUD_REGION")
        .env_remove("RUST_LOG");
    cmd
}

/// Where each client's program is, and the versions measured.
pub struct Tools {
    pub scratch: PathBuf,
    pub holdline: PathBuf,
    pub me: PathBuf,
    pub node_dir: Option<PathBuf>,
    pub python: Option<PathBuf>,
    pub versions: Vec<(String, String)>,
}

impl Tools {
    /// Finds or builds holdline and installs the peers that `clients` need.
    pub fn prepare(
        scratch: PathBuf,
        holdline: Option<PathBuf>,
        clients: &[Client],
    ) -> Result<Tools> {
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating the scratch folder {}", scratch.display()))?;
        let me = std::env::current_exe()?;
        let holdline = match holdline {
            Some(path) => path,
            None => build_holdline(&me)?,
        };
        let mut tools = Tools {
            scratch,
            holdline,
            me,
            node_dir: None,
            python: None,
            versions: Vec::new(),
        };
        let holdline_version = output(Command::new(&tools.holdline).arg("--version"))?;
        let holdline_version = holdline_version
            .strip_prefix("holdline ")
            .unwrap_or(&holdline_version)
            .to_owned();
        tools.versions.push(("holdline".into(), holdline_version));
        if clients.contains(&Client::NodeWs) {
            tools.setup_node()?;
        }
        if clients.contains(&Client::GenesysNotifications) {
            tools.setup_python()?;
        }
        Ok(tools)
    }

    fn setup_node(&mut self) -> Result<()> {
        let dir = self.scratch.join("node");
        std::fs::create_dir_all(&dir)?;
        if !dir.join("node_modules/ws/package.json").exists() {
            eprintln!(
                "installing {NODE_WS_PACKAGE} with npm into {}",
                dir.display()
            );
            run(Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
                .arg(&dir)
                .arg(NODE_WS_PACKAGE))
            .context("npm install ws (is Node.js with npm installed?)")?;
        }
        std::fs::write(dir.join("node-ws.js"), NODE_CLIENT)?;
        let ws: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("node_modules/ws/package.json"))?)?;
        self.versions.push((
            "node".into(),
            output(Command::new("node").arg("--version"))?,
        ));
        self.versions.push((
            "npm ws".into(),
            ws["version"].as_str().unwrap_or("?").to_owned(),
        ));
        self.node_dir = Some(dir);
        Ok(())
    }

    fn setup_python(&mut self) -> Result<()> {
        let venv = self.scratch.join("venv");
        let python = venv.join("bin/python");
        if !python.exists() {
            eprintln!(
                "creating a venv with {GENESYS_NOTIFICATIONS} in {}",
                venv.display()
            );
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
                .context("python3 -m venv (is python3-venv installed?)")?;
        }
        let installed = Command::new(&python)
            .args(["-c", "import genesys_notifications"])
            .output()?
            .status
            .success();
        if !installed {
            run(Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .arg(GENESYS_NOTIFICATIONS))
            .context("pip install genesys-notifications")?;
        }
        std::fs::write(
            self.scratch.join("genesys_notifications_driver.py"),
            PYTHON_DRIVER,
        )?;
        let versions = output(Command::new(&python).args([
            "-c",
            "import sys, websockets, ujson; print(sys.version.split()[0], websockets.__version__, ujson.__version__)",
        ]))?;
        let mut parts = versions.split_whitespace();
        for name in ["python", "websockets", "ujson"] {
            self.versions
                .push((name.into(), parts.next().unwrap_or("?").to_owned()));
        }
        self.versions
            .push(("genesys-notifications".into(), "1.3".into()));
        self.python = Some(python);
        Ok(())
    }
}

/// `cargo build --release -p holdline` in this workspace; the binary lands next to ours.
fn build_holdline(me: &Path) -> Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    eprintln!("building holdline (release)");
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&workspace)
            .args(["build", "--release", "--quiet", "-p", "holdline"]),
    )
    .context("building holdline; pass --holdline PATH to use a built binary")?;
    let path = me.with_file_name("holdline");
    if !path.exists() {
        bail!(
            "built holdline but found no {}; pass --holdline PATH",
            path.display()
        );
    }
    Ok(path)
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_names_parse_and_round_trip() {
        for name in [
            "holdline-r1",
            "holdline-r2",
            "holdline-spool",
            "node-ws",
            "genesys-notifications",
            "floor",
        ] {
            assert_eq!(Client::parse(name).unwrap().label(), name);
        }
        assert_eq!(
            Client::parse("holdline").unwrap(),
            Client::Holdline { redundancy: 1 }
        );
        assert_eq!(Client::parse("holdline-r19").unwrap().redundancy(), 19);
        let err = Client::parse("holdline-r20").unwrap_err().to_string();
        assert!(err.contains("pick from"), "{err}");
        assert!(Client::parse("websocat").is_err());
    }

    #[test]
    fn only_the_floor_reports_with_a_single_line() {
        assert_eq!(Client::Floor.lines_when_done(500), 1);
        assert_eq!(Client::NodeWs.lines_when_done(500), 500);
    }
}
