//! Test support for lotledger: real stores (a fresh PostgreSQL database, a fresh SQLite file),
//! the conformance scenario runner with its drivers, and JSON comparison by the conformance
//! format's rules. Used only under `[dev-dependencies]` and by this crate's own tests.

pub mod cluster;
pub mod compare;
pub mod db;
pub mod dry_run;
pub mod scenario;
pub mod server;

use std::path::PathBuf;

/// The workspace root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The repository's copy of the conformance data.
pub fn conformance_dir() -> PathBuf {
    repo_root().join("conformance")
}

/// The shared conformance data beside the checkout, when present.
pub fn shared_conformance_dir() -> PathBuf {
    repo_root().join("../shared/conformance")
}
