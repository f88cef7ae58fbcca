//! The core stays pure: none of its dependencies, direct or transitive, is an async runtime,
//! a database driver or a web framework.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use std::process::Command;

#[test]
fn core_depends_on_no_io_crates() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "lotledger-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    assert!(
        tree.contains("serde_json"),
        "unexpected cargo tree output: {tree}"
    );
    for forbidden in ["tokio", "sqlx", "axum", "hyper", "mio", "libsqlite3-sys"] {
        assert!(
            !tree
                .lines()
                .any(|l| l.starts_with(&format!("{forbidden} "))),
            "lotledger-core depends on {forbidden}:\n{tree}"
        );
    }
}
