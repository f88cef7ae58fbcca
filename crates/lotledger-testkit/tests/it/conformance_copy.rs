//! The repository keeps a copy of the shared conformance data so that the tests pass on a fresh
//! clone anywhere; when the shared data sits beside the checkout, the copy must equal it.

use std::collections::BTreeMap;
use std::path::Path;

use lotledger_testkit::{conformance_dir, shared_conformance_dir};

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn copy_equals_shared_data_when_present() {
    let ours = files(&conformance_dir());
    assert!(
        ours.keys().filter(|k| k.ends_with(".json")).count() >= 100,
        "the repository's conformance copy is missing"
    );
    let shared = shared_conformance_dir();
    if !shared.exists() {
        return;
    }
    let theirs = files(&shared);
    let only_ours: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    let only_theirs: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    let changed: Vec<_> = ours
        .iter()
        .filter(|(k, v)| theirs.get(*k).is_some_and(|t| t != *v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty() && changed.is_empty(),
        "conformance/ differs from ../shared/conformance/: only here {only_ours:?}, only there {only_theirs:?}, changed {changed:?}; \
         copy the shared data into conformance/"
    );
}
