#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.
mod as_of;
mod bench;
mod crash;
mod explain;
mod exposure;
mod ingest;
mod migration;
mod policy;
mod replica;
mod serve;
mod sync;
