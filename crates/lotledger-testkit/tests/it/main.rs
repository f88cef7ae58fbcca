#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.
mod api;
mod bad_input;
mod batch;
mod concurrency;
mod conformance_copy;
mod faults;
mod messages;
mod model;
mod store;
mod sync;
