#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.
//! `lotledger serve` on an empty SQLite store, driven end to end by the real public
//! `aleph-sdk-python` 2.4.0 (`tests/sdk_e2e/sdk_e2e.py`): distribution, balances, transfer,
//! refused over-transfer, expense, credit history, tampered signature.
//!
//! The SDK is installed once into `$CARGO_TARGET_TMPDIR/sdk-venv` (python3 with `venv` and
//! network access to PyPI are required; the test fails, never skips, without them).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SDK: &str = "aleph-sdk-python==2.4.0";
/// The address of the throwaway key 0x11…11, which the script signs distributions with.
const WHITELIST: &str = "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A";
const STARTUP: Duration = Duration::from_secs(60);

/// Kills the server when dropped, also when the test panics.
struct Server {
    child: Child,
    stderr_log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

/// Runs a setup command; panics with its output when it cannot start or fails.
fn run_setup(what: &str, cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "{what}: cannot run {:?}: {e} (is python3 installed?)",
            cmd.get_program()
        )
    });
    assert!(
        out.status.success(),
        "{what} failed ({}): {cmd:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// The venv's python with the SDK installed; built once, reused while its marker exists.
fn sdk_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-venv");
    let python = venv.join("bin").join("python");
    let marker = venv.join(format!("{SDK}.complete"));
    if marker.exists() && python.exists() {
        return python;
    }
    if venv.exists() {
        fs::remove_dir_all(&venv).unwrap();
    }
    run_setup(
        "creating the venv (python3 -m venv; on Debian/Ubuntu install python3-venv)",
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
    );
    run_setup(
        &format!("pip install {SDK} (needs PyPI)"),
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(SDK)
            .env("PIP_NO_INPUT", "1"),
    );
    fs::write(&marker, "").unwrap();
    python
}

/// Starts `lotledger serve` on port 0 and returns it with its base URL (first stdout line).
fn start_server(dir: &Path) -> (Server, String) {
    let stderr_log = dir.join("server.stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lotledger"))
        .arg("--database-url")
        .arg(format!("sqlite://{}", dir.join("e2e.db").display()))
        .args(["--whitelist", WHITELIST, "--channels", "ALEPH_CREDIT"])
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&stderr_log).unwrap())
        .spawn()
        .expect("spawning lotledger serve");
    let stdout = child.stdout.take().unwrap();
    let server = Server { child, stderr_log };
    // Read the first line in a thread (bounded wait), then keep draining stdout to its end.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    let first = match rx.recv_timeout(STARTUP) {
        Ok(Some(Ok(line))) => line,
        other => panic!(
            "lotledger serve printed no first line ({other:?})\n--- stderr\n{}",
            server.stderr()
        ),
    };
    let url = first
        .strip_prefix("lotledger listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .trim()
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    (server, url)
}

#[test]
fn aleph_sdk_drives_serve_end_to_end() {
    let started = Instant::now();
    let python = sdk_python();
    eprintln!("sdk venv ready after {:?}", started.elapsed());

    let dir = tempfile::tempdir().unwrap();
    let (server, url) = start_server(dir.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk_e2e/sdk_e2e.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&url)
        .current_dir(dir.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sdk_e2e.py failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server stderr\n{}",
        out.status,
        server.stderr(),
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    print!("{stdout}");
    drop(server);
    eprintln!("sdk e2e done after {:?}", started.elapsed());
}
