//! A private PostgreSQL cluster for tests that stop and start the server (fault tests), or
//! replicate it (a hot standby): initdb into a temporary directory, trust auth, a free loopback
//! port; as the `postgres` user when run as root. Stopped and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgCluster {
    bindir: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
}

fn bindir() -> Result<PathBuf, String> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no PostgreSQL installation: {e}"))?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop().ok_or_else(|| "no pg_ctl found".to_string())
}

/// A plain-text dump of the database at `url` (schema and data, `pg_dump`): two dumps are
/// equal when nothing in it changed.
pub fn pg_dump(url: &str) -> Result<Vec<u8>, String> {
    let out = std::process::Command::new(bindir()?.join("pg_dump"))
        .args(["--no-owner", "--dbname", url])
        .output()
        .map_err(|e| format!("pg_dump: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // Recent pg_dump versions guard the script with a random `\restrict` key: not the data.
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .flat_map(|l| [l, "\n"])
        .collect::<String>()
        .into_bytes())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run_as_postgres(program: &Path, args: &[&str]) -> Result<(), String> {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = cmd.args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A temporary directory the server's user owns, and a free loopback port.
fn cluster_dir(prefix: &str) -> Result<(tempfile::TempDir, u16), String> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| e.to_string())?;
    if is_root() {
        Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(dir.path())
            .status()
            .map_err(|e| e.to_string())?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    Ok((dir, port))
}

impl PgCluster {
    /// Creates and starts a cluster.
    pub fn start() -> Result<PgCluster, String> {
        let bindir = bindir()?;
        let (dir, port) = cluster_dir("lotledger-fault-pg")?;
        let data = dir.path().join("data");
        run_as_postgres(
            &bindir.join("initdb"),
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
            ],
        )?;
        let cluster = PgCluster { bindir, dir, port };
        cluster.up()?;
        Ok(cluster)
    }

    /// A hot standby of this (running) cluster: `pg_basebackup -R` streaming its WAL, started
    /// on a port of its own.
    pub fn standby(&self) -> Result<PgCluster, String> {
        let (dir, port) = cluster_dir("lotledger-standby-pg")?;
        let data = dir.path().join("data");
        run_as_postgres(
            &self.bindir.join("pg_basebackup"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &data.to_string_lossy(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        )?;
        let standby = PgCluster {
            bindir: self.bindir.clone(),
            dir,
            port,
        };
        standby.up()?;
        Ok(standby)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the (stopped) server.
    pub fn up(&self) -> Result<(), String> {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        run_as_postgres(
            &self.bindir.join("pg_ctl"),
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        )
    }

    /// Stops the server at once (in-flight transactions are lost, as in a crash).
    pub fn down(&self) -> Result<(), String> {
        let data = self.dir.path().join("data");
        run_as_postgres(
            &self.bindir.join("pg_ctl"),
            &[
                "-D",
                &data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.down();
    }
}
