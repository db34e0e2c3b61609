//! A throwaway PostgreSQL cluster made from the system's own binaries (`initdb`, `pg_ctl`), in
//! a folder of its own and listening only on a Unix socket in that folder: for tests and local
//! trials of the `postgres` storage backend, on a machine that has the distribution's
//! PostgreSQL package and nothing else.
//!
//! PostgreSQL refuses to run as root, so when this process is root the cluster's commands run
//! as the unprivileged `postgres` user (through `runuser`), which owns the folder. Clients
//! authenticate by `trust`: only processes that can reach the socket, in a 0700 folder, can
//! connect.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The role the cluster is created with; every database's owner.
pub const SUPERUSER: &str = "throughgate";

/// Why a cluster could not be started or used.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No PostgreSQL server binaries were found.
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl) in $TG_PG_BIN, or else in \
         /usr/lib/postgresql/*/bin or on PATH; install the distribution's postgresql package"
    )]
    NoBinaries,
    /// Running as root, with no unprivileged user to run the server as.
    #[error(
        "running as root and there is no `postgres` user to run the server as (PostgreSQL \
         refuses root); install the distribution's postgresql package, which creates it"
    )]
    NoUnprivilegedUser,
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A PostgreSQL command failed.
    #[error("{command} failed ({status}): {output}")]
    Command {
        command: String,
        status: std::process::ExitStatus,
        output: String,
    },
}

impl ClusterError {
    /// Whether this machine simply lacks PostgreSQL (a test may skip), as opposed to a cluster
    /// that was there but failed.
    pub fn is_missing_postgres(&self) -> bool {
        matches!(
            self,
            ClusterError::NoBinaries | ClusterError::NoUnprivilegedUser
        )
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// Names the folder holding the PostgreSQL server binaries, instead of searching for it.
pub const BIN_ENV: &str = "TG_PG_BIN";

/// The folder holding `initdb` and `pg_ctl`: the one [`BIN_ENV`] names if set, else the newest
/// `/usr/lib/postgresql/<version>/bin`, else the first folder on `PATH` that has both.
pub fn find_binaries() -> Result<PathBuf, ClusterError> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        let dir = PathBuf::from(dir);
        return if has_both(&dir) {
            Ok(dir)
        } else {
            Err(ClusterError::NoBinaries)
        };
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_both(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| has_both(d))
        .ok_or(ClusterError::NoBinaries)
}

/// The uid and gid of `user`, from `/etc/passwd`.
fn lookup_user(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != user {
            return None;
        }
        let _password = f.next()?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// A running cluster; stopped (immediately) and removed when dropped.
#[derive(Debug)]
pub struct TempCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The user the server runs as, when this process is root.
    run_as: Option<&'static str>,
    durable: bool,
}

impl TempCluster {
    /// Creates and starts a cluster in a new temporary folder. `durable: false` turns fsync
    /// off (tests: faster, and nothing there must survive a machine crash).
    pub fn start(durable: bool) -> Result<TempCluster, ClusterError> {
        let bin = find_binaries()?;
        let dir = tempfile::Builder::new()
            .prefix("tg-pg-")
            .tempdir()
            .map_err(io("creating the cluster's folder"))?;
        let root = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(dir.path())
                .map_err(io("reading the cluster folder"))?
                .uid()
                == 0
        };
        let run_as = if root {
            let (uid, gid) = lookup_user("postgres").ok_or(ClusterError::NoUnprivilegedUser)?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(io("handing the cluster folder to the postgres user"))?;
            Some("postgres")
        } else {
            None
        };
        let cluster = TempCluster {
            dir,
            bin,
            run_as,
            durable,
        };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                "--auth=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        cluster.start_server()?;
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The folder holding the server's socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs one of the cluster's binaries, as the unprivileged user when this process is root.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<Output, ClusterError> {
        let exe = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(io(format!("running {}", exe.display())))?;
        if !out.status.success() {
            let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
            output.push_str(&String::from_utf8_lossy(&out.stderr));
            if let Ok(log) = std::fs::read_to_string(self.dir.path().join("server.log")) {
                output.push_str("\nserver log:\n");
                output.push_str(&log);
            }
            return Err(ClusterError::Command {
                command: program.to_owned(),
                status: out.status,
                output,
            });
        }
        Ok(out)
    }

    /// Starts the server (again, after [`TempCluster::stop_server`]) and waits until it
    /// accepts connections.
    pub fn start_server(&self) -> Result<(), ClusterError> {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-c listen_addresses='' -k {} -c fsync={}",
            self.socket_dir().display(),
            if self.durable { "on" } else { "off" }
        );
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-o".as_ref(),
                options.as_ref(),
                "start".as_ref(),
            ],
        )
        .map(|_| ())
    }

    /// Stops the server at once, dropping every connection (a database outage).
    pub fn stop_server(&self) -> Result<(), ClusterError> {
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-w".as_ref(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "stop".as_ref(),
            ],
        )
        .map(|_| ())
    }

    /// The connection string of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "host={} user={SUPERUSER} dbname={db}",
            self.socket_dir().display()
        )
    }

    /// Creates database `name` (letters, digits and `_` only) and returns its connection
    /// string.
    pub fn create_database(&self, name: &str) -> Result<String, ClusterError> {
        let socket = self.socket_dir().as_os_str().to_owned();
        self.run(
            "createdb",
            &[
                "-h".as_ref(),
                socket.as_os_str(),
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                name.as_ref(),
            ],
        )?;
        Ok(self.url(name))
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop_server() {
            tracing::debug!(error = %e, "stopping a temporary PostgreSQL cluster");
        }
    }
}
