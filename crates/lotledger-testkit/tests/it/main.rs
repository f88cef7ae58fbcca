#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.
mod api;
mod batch;
mod concurrency;
mod conformance_copy;
mod faults;
mod model;
mod store;
