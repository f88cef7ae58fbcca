#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.
mod bench;
mod crash;
mod exposure;
mod ingest;
mod migration;
mod replica;
mod serve;
mod sync;
