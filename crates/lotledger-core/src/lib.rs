//! The pure core of lotledger: no IO, no async, no clock, no randomness.
//!
//! Messages in ([`message::classify`]), plans out ([`CreditOp::plan`]), and the replay that
//! defines what the lot cache must hold ([`plan::replay`]). `now` is always an argument.

pub mod credits;
pub mod cursor;
pub mod decimal;
pub mod dry_run;
pub mod envelope;
pub mod json;
pub mod message;
pub mod model;
pub mod node_json;
pub mod node_query;
pub mod plan;
pub mod policy;
pub mod post_content;
pub mod pyrepr;
pub mod query;
pub mod timestamp;
pub mod validate;

pub use credits::Credits;
pub use message::{CreditOp, Decision, IgnoreReason, OpKind, Post, Rejection, Rules, classify};
pub use model::{
    BalanceDetail, HistoryRow, Lot, balance_at, balance_details_at, balance_details_from_sums,
};
pub use plan::{
    LotAsOf, LotBook, Plan, PlanError, ReplayLot, ReplayRow, as_of, balance_as_of,
    balance_details_as_of, replay, replay_rows, replayed_lots,
};
pub use policy::{Policy, Schedule};
pub use timestamp::{Timestamp, TimestampError};
