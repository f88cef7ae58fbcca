//! Model-based test (proptest state machine): random sequences of distributions, expenses,
//! transfers (out-of-order timestamps included), replays of earlier messages, invalid messages
//! and repairs, applied to a real SQLite file and a real PostgreSQL database side by side.
//!
//! After every step: both stores gave the same outcome; for every address, both stores hold the
//! same history and the same lots, the lots equal the core's replay of the stored history, and
//! balances and their details agree at several instants (on PostgreSQL, through the sums it
//! keeps between writes), and `verify` finds no drift. A replayed message that was applied
//! changes nothing.
//!
//! Each case runs under a drain-policy schedule of its own (v1, v2, or one switching at an
//! hour of the case), and every history row must record the policy that schedule gives at its
//! instant.
//!
//! Cases share the two databases; each case works in its own address and hash namespace.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use lotledger_core::envelope::Envelope;
use lotledger_core::{
    HistoryRow, Lot, Policy, Rules, Schedule, Timestamp, balance_at, balance_details_at, replay,
};
use lotledger_store::{HistorySelector, Outcome, Store, apply_envelope, maintenance};
use lotledger_store_pg::PgStore;
use lotledger_store_sqlite::SqliteStore;
use lotledger_testkit::db;
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use serde_json::{Value, json};

/// 2026-01-30T00:00:00Z: hours 0..72 fall before the ×10 000 cutoff, later ones after it.
const BASE_SECONDS: i64 = 1_769_731_200;
const HOURS: i64 = 260;
const HOLDERS: u8 = 4;
/// Index of the whitelisted minter among the addresses.
const MINTER: u8 = HOLDERS;

struct Env {
    rt: tokio::runtime::Runtime,
    sqlite: SqliteStore,
    pg: PgStore,
    _dir: tempfile::TempDir,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (sqlite, pg) =
            rt.block_on(async { (db::fresh_sqlite(&dir).await.0, db::fresh_pg().await) });
        Env {
            rt,
            sqlite,
            pg,
            _dir: dir,
        }
    })
}

static CASE: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Debug)]
enum Step {
    Distribute {
        to: Vec<(u8, i64, Option<i64>)>,
        hour: i64,
    },
    Expense {
        entries: Vec<(u8, i64)>,
        hour: i64,
    },
    Transfer {
        from: u8,
        to: Vec<(u8, i64, Option<i64>)>,
        hour: i64,
        now_hour: i64,
    },
    Replay {
        which: usize,
    },
    Invalid {
        from: u8,
        hour: i64,
        kind: u8,
    },
    Repair,
}

#[derive(Clone, Debug)]
struct Model {
    sent: usize,
    schedule: Schedule,
}

fn schedule() -> impl Strategy<Value = Schedule> {
    schedules(hour().prop_map(at_hour))
}

/// A drain-policy schedule: v1, v2, or one switching (either way) at an instant of `instants`.
pub(crate) fn schedules(
    instants: impl Strategy<Value = Timestamp> + 'static,
) -> impl Strategy<Value = Schedule> {
    prop_oneof![
        Just(Schedule::only(Policy::V1)),
        Just(Schedule::only(Policy::V2)),
        (instants, any::<bool>()).prop_map(|(at, v2_first)| {
            let (base, then) = if v2_first {
                (Policy::V2, Policy::V1)
            } else {
                (Policy::V1, Policy::V2)
            };
            Schedule {
                base,
                activations: vec![(at, then)],
            }
        }),
    ]
}

fn hour() -> impl Strategy<Value = i64> {
    0..HOURS
}

fn expiry() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![Just(None), (1..HOURS + 40).prop_map(Some)]
}

fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![1..2_000i64, Just(1_000i64)]
}

impl ReferenceStateMachine for Model {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        schedule()
            .prop_map(|schedule| Model { sent: 0, schedule })
            .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Step> {
        let distribute = (
            prop::collection::vec((0..HOLDERS, amount(), expiry()), 1..3),
            hour(),
        )
            .prop_map(|(to, hour)| Step::Distribute { to, hour });
        let expense = (prop::collection::vec((0..HOLDERS, amount()), 1..3), hour())
            .prop_map(|(entries, hour)| Step::Expense { entries, hour });
        let transfer = (
            0..=HOLDERS,
            prop::collection::vec((0..HOLDERS, amount(), expiry()), 1..3),
            hour(),
            hour(),
        )
            .prop_map(|(from, mut to, hour, now_hour)| {
                to.retain(|(r, _, _)| *r != from);
                let mut seen = std::collections::BTreeSet::new();
                to.retain(|(r, _, _)| seen.insert(*r));
                if to.is_empty() {
                    to.push(((from + 1) % HOLDERS, 100, None));
                }
                Step::Transfer {
                    from,
                    to,
                    hour,
                    now_hour,
                }
            });
        let invalid = (0..=HOLDERS, hour(), 0..6u8).prop_map(|(from, hour, kind)| Step::Invalid {
            from,
            hour,
            kind,
        });
        if state.sent == 0 {
            prop_oneof![3 => distribute, 2 => transfer, 1 => expense, 1 => invalid].boxed()
        } else {
            let sent = state.sent;
            prop_oneof![
                4 => distribute,
                3 => expense,
                4 => transfer,
                2 => (0..sent).prop_map(|which| Step::Replay { which }),
                2 => invalid,
                1 => Just(Step::Repair),
            ]
            .boxed()
        }
    }

    fn preconditions(state: &Model, step: &Step) -> bool {
        match step {
            Step::Replay { which } => *which < state.sent,
            _ => true,
        }
    }

    fn apply(mut state: Model, step: &Step) -> Model {
        if !matches!(step, Step::Replay { .. } | Step::Repair) {
            state.sent += 1;
        }
        state
    }
}

struct Sut {
    case: u64,
    rules: Rules,
    sent: Vec<(Value, Timestamp, Outcome)>,
}

impl Sut {
    fn address(&self, i: u8) -> String {
        if i == MINTER {
            format!("c{}_minter", self.case)
        } else {
            format!("c{}_holder{i}", self.case)
        }
    }

    fn addresses(&self) -> Vec<String> {
        (0..=HOLDERS).map(|i| self.address(i)).collect()
    }

    fn envelope(&self, sender: &str, hour: i64, kind: &str, content: Value) -> Value {
        let time = BASE_SECONDS + hour * 3600;
        let item_content =
            json!({"address": sender, "time": time, "type": kind, "content": content}).to_string();
        json!({"item_hash": format!("c{}_m{}", self.case, self.sent.len()), "type": "POST", "chain": "ETH",
               "sender": sender, "channel": "ALEPH_CREDIT", "item_type": "inline", "item_content": item_content})
    }
}

fn ms(hour: Option<i64>) -> Value {
    hour.map_or(Value::Null, |h| json!((BASE_SECONDS + h * 3600) * 1000))
}

fn at_hour(h: i64) -> Timestamp {
    Timestamp::from_unix_seconds(BASE_SECONDS + h * 3600).unwrap()
}

async fn apply_to<S: Store>(store: &S, envelope: &Value, rules: &Rules, now: Timestamp) -> Outcome {
    let envelope = Envelope::from_json(envelope).unwrap();
    apply_envelope(store, &envelope, rules, now).await.unwrap()
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    history: Vec<Vec<HistoryRow>>,
    lots: Vec<Vec<Lot>>,
    balances: Vec<i64>,
}

async fn snapshot<S: Store>(store: &S, addresses: &[String]) -> Snapshot {
    let mut snap = Snapshot {
        history: vec![],
        lots: vec![],
        balances: vec![],
    };
    for a in addresses {
        let history = store
            .history(&HistorySelector::Address(a.clone()))
            .await
            .unwrap();
        let lots = store.lots(a).await.unwrap();
        let replayed = replay(&history).unwrap();
        assert_eq!(
            lots, replayed,
            "lot cache of {a} differs from the replay of its history"
        );
        for h in [0, 71, 72, 100, 250, HOURS + 50] {
            let b = store.balance(a, at_hour(h)).await.unwrap();
            assert_eq!(
                Some(b),
                balance_at(&lots, at_hour(h)),
                "balance of {a} at hour {h}"
            );
            assert_eq!(
                Some(store.balance_details(a, at_hour(h)).await.unwrap()),
                balance_details_at(&lots, at_hour(h)),
                "balance details of {a} at hour {h}"
            );
            snap.balances.push(b.0);
        }
        snap.history.push(history);
        snap.lots.push(lots);
    }
    snap
}

impl StateMachineTest for Sut {
    type SystemUnderTest = Sut;
    type Reference = Model;

    fn init_test(model: &Model) -> Sut {
        let case = CASE.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 1_000_000;
        let minter = format!("c{case}_minter");
        let mut rules = Rules::new([minter], ["ALEPH_CREDIT".to_string()]);
        rules.schedule = model.schedule.clone();
        Sut {
            case,
            rules,
            sent: Vec::new(),
        }
    }

    fn apply(mut sut: Sut, _: &Model, step: Step) -> Sut {
        let e = env();
        let addresses = sut.addresses();
        let before = e.rt.block_on(snapshot(&e.sqlite, &addresses));
        let minter = sut.address(MINTER);
        let (envelope, now) = match &step {
            Step::Distribute { to, hour } => {
                let credits: Vec<Value> = to
                    .iter()
                    .map(|(r, a, x)| json!({"address": sut.address(*r), "amount": a, "price": "0.000001",
                                            "tx_hash": "0xt", "provider": "ALEPH", "expiration": ms(*x)}))
                    .collect();
                let content =
                    json!({"distribution": {"credits": credits, "token": "USDC", "chain": "ETH"}});
                (
                    sut.envelope(&minter, *hour, "aleph_credit_distribution", content),
                    at_hour(*hour),
                )
            }
            Step::Expense { entries, hour } => {
                let credits: Vec<Value> = entries
                    .iter()
                    .map(|(r, a)| json!({"address": sut.address(*r), "amount": a, "ref": "r"}))
                    .collect();
                (
                    sut.envelope(
                        &minter,
                        *hour,
                        "aleph_credit_expense",
                        json!({"expense": {"credits": credits}}),
                    ),
                    at_hour(*hour),
                )
            }
            Step::Transfer {
                from,
                to,
                hour,
                now_hour,
            } => {
                let credits: Vec<Value> =
                    to.iter().map(|(r, a, x)| json!({"address": sut.address(*r), "amount": a, "expiration": ms(*x)})).collect();
                let sender = sut.address(*from);
                (
                    sut.envelope(
                        &sender,
                        *hour,
                        "aleph_credit_transfer",
                        json!({"transfer": {"credits": credits}}),
                    ),
                    at_hour(*now_hour),
                )
            }
            Step::Invalid { from, hour, kind } => {
                let sender = sut.address(*from);
                let other = sut.address((*from + 1) % HOLDERS);
                let (kind_name, content) = match kind {
                    0 => (
                        "aleph_credit_transfer",
                        json!({"transfer": {"credits": [{"address": other, "amount": 0}]}}),
                    ),
                    1 => (
                        "aleph_credit_transfer",
                        json!({"transfer": {"credits": [{"address": sender, "amount": 5}]}}),
                    ),
                    2 => (
                        "aleph_credit_transfer",
                        json!({"transfer": {"credits": [{"address": other, "amount": 5}, {"address": other, "amount": 6}]}}),
                    ),
                    3 => (
                        "aleph_credit_expense",
                        json!({"expense": {"credits": [{"address": other, "amount": "100"}]}}),
                    ),
                    4 => (
                        "aleph_credit_distribution",
                        json!({"distribution": {"credits": [], "token": "T", "chain": "ETH"}}),
                    ),
                    _ => (
                        "aleph_credit_transfer",
                        json!({"transfer": {"credits": [{"address": other, "amount": 9_000_000_000_000_000_000u64}]}}),
                    ),
                };
                let author = if *kind >= 3 && *kind <= 4 {
                    minter.clone()
                } else {
                    sender
                };
                // Kind 5 overflows i64 only through the ×10 000 scaling: before the cutoff.
                let hour = if *kind == 5 { hour % 72 } else { *hour };
                (
                    sut.envelope(&author, hour, kind_name, content),
                    at_hour(hour),
                )
            }
            Step::Replay { which } => {
                let (envelope, now, original) = sut.sent[*which % sut.sent.len()].clone();
                let (a, b) = e.rt.block_on(async {
                    (
                        apply_to(&e.sqlite, &envelope, &sut.rules, now).await,
                        apply_to(&e.pg, &envelope, &sut.rules, now).await,
                    )
                });
                assert_eq!(a, b, "the stores disagree on a replay");
                if matches!(original, Outcome::Processed | Outcome::Ignored(_)) {
                    assert_eq!(
                        a,
                        Outcome::AlreadyApplied,
                        "a replayed message was applied again"
                    );
                    let after = e.rt.block_on(snapshot(&e.sqlite, &addresses));
                    assert_eq!(before, after, "a replayed message changed the ledger");
                }
                return sut;
            }
            Step::Repair => {
                e.rt.block_on(async {
                    // Verify (by the stores' id scans) agrees first: nothing drifted.
                    let a = maintenance::verify(&e.sqlite, |_, _| {}).await.unwrap();
                    let b = maintenance::verify(&e.pg, |_, _| {}).await.unwrap();
                    assert!(
                        a.is_empty() && b.is_empty(),
                        "verify found drift: {a:?} {b:?}"
                    );
                    maintenance::repair(&e.sqlite, true, |_, _| {})
                        .await
                        .unwrap();
                    maintenance::repair(&e.pg, true, |_, _| {}).await.unwrap();
                });
                let after = e.rt.block_on(snapshot(&e.sqlite, &addresses));
                assert_eq!(before, after, "repair changed a healthy ledger");
                return sut;
            }
        };
        let (a, b) = e.rt.block_on(async {
            (
                apply_to(&e.sqlite, &envelope, &sut.rules, now).await,
                apply_to(&e.pg, &envelope, &sut.rules, now).await,
            )
        });
        assert_eq!(a, b, "the stores disagree on {step:?}");
        if let Step::Invalid { kind, .. } = step {
            assert!(
                matches!(a, Outcome::Rejected(_)),
                "invalid message kind {kind} was not rejected: {a:?}"
            );
        }
        if matches!(a, Outcome::Rejected(_)) {
            let after = e.rt.block_on(snapshot(&e.sqlite, &addresses));
            assert_eq!(before, after, "a rejected message changed the ledger");
        }
        sut.sent.push((envelope, now, a));
        sut
    }

    fn check_invariants(sut: &Sut, _: &Model) {
        let e = env();
        let addresses = sut.addresses();
        let (a, b) = e.rt.block_on(async {
            (
                snapshot(&e.sqlite, &addresses).await,
                snapshot(&e.pg, &addresses).await,
            )
        });
        assert_eq!(a, b, "SQLite and PostgreSQL hold different ledgers");
        for row in a.history.iter().flatten() {
            assert_eq!(
                row.policy,
                sut.rules.schedule.at(row.message_timestamp),
                "a row of {} does not record the policy in force at its instant",
                row.credit_ref
            );
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 200, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn stores_follow_the_model(sequential 1..14 => Sut);
}
