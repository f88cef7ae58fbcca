//! Conformance scenarios (`conformance/FORMAT.md`): loading, a runner, and the library driver.
//! A driver is one way of reaching the ledger (the `Store` API, or the CLI): the runner feeds
//! every step through it and compares every answer with the reference's, taken from the file.

use std::path::{Path, PathBuf};

use lotledger_core::envelope::Envelope;
use lotledger_core::{Rules, Timestamp, json};
use lotledger_store::{HistorySelector, Outcome, Store, apply_envelope, maintenance};
use serde_json::{Value, json};

use crate::compare;

/// The processing instant when a step gives none.
pub const DEFAULT_NOW: &str = "2026-11-25T00:00:00Z";

/// Scenarios that cannot pass because of a deliberate difference (SPEC Part I 3), with the
/// reason. Nothing else may be skipped. Every scenario of the current data passes as it is.
pub const DELIBERATE_DIFFERENCES: &[(&str, &str)] = &[];

/// One scenario file.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub path: PathBuf,
    pub rules: Rules,
    pub steps: Vec<Value>,
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let list = |key: &str| -> Vec<String> {
            v["config"][key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut rules = Rules::new(list("whitelist"), list("channels"));
        // lotledger's own: the drain-policy schedule (absent: v1, the reference's).
        if let Some(text) = v["config"]["policy"].as_str() {
            rules.schedule = lotledger_core::Schedule::parse(text)
                .map_err(|e| format!("{}: config.policy: {e}", path.display()))?;
        }
        Ok(Scenario {
            name: v["name"].as_str().unwrap_or_default().to_string(),
            path: path.to_path_buf(),
            rules,
            steps: v["steps"]
                .as_array()
                .cloned()
                .ok_or_else(|| format!("{}: no steps", path.display()))?,
        })
    }
}

/// Every scenario of a directory, sorted by file name.
pub fn load_all(dir: &Path) -> Result<Vec<Scenario>, String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join("scenarios"))
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths.iter().map(|p| Scenario::load(p)).collect()
}

/// How a post ended, as a driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostResult {
    Processed,
    Ignored,
    AlreadyApplied,
    Rejected(String),
}

/// One way of reaching the ledger.
#[allow(async_fn_in_trait)]
pub trait Driver {
    /// Processes one message envelope at `now`.
    async fn post(
        &mut self,
        envelope: &Value,
        rules: &Rules,
        now: Timestamp,
    ) -> Result<PostResult, String>;
    /// Inserts raw history rows (a row naming no policy takes the one `rules` give at its
    /// instant) and rebuilds the touched addresses.
    async fn seed(&mut self, rows: &[Value], rules: &Rules) -> Result<(), String>;
    /// Rebuilds the whole cache.
    async fn repair(&mut self) -> Result<(), String>;
    /// The balance, as a JSON integer.
    async fn balance(&mut self, address: &str, at: Timestamp) -> Result<Value, String>;
    /// `{"total", "details"}`.
    async fn balance_details(&mut self, address: &str, at: Timestamp) -> Result<Value, String>;
    /// History rows sorted by `(credit_ref, credit_index)`.
    async fn history(&mut self, selector: &HistorySelector) -> Result<Value, String>;
    /// Live lots in emission order.
    async fn lots(&mut self, address: &str) -> Result<Value, String>;
    /// One HTTP request to the API with the clock at `now`: the status and the body (JSON
    /// when it parses as JSON, else a JSON string of the text).
    async fn http(
        &mut self,
        method: &str,
        path: &str,
        now: Timestamp,
    ) -> Result<(u16, Value), String>;
}

/// The envelope a node would have received for a `post` step.
pub fn envelope_of(post: &Value) -> Value {
    let content = &post["content"];
    let sender = post
        .get("sender")
        .cloned()
        .unwrap_or_else(|| content["address"].clone());
    json!({
        "item_hash": post["item_hash"],
        "type": "POST",
        "chain": post.get("chain").cloned().unwrap_or_else(|| json!("ETH")),
        "sender": sender,
        "channel": post["channel"],
        "item_type": "inline",
        "item_content": serde_json::to_string(content).unwrap_or_default(),
        "time": content["time"],
        "signature": "0x",
    })
}

/// The result of one scenario on one driver.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub name: String,
    pub steps: usize,
    pub checks_passed: usize,
    pub failures: Vec<String>,
}

fn instant(step: &Value, key_holder: &Value) -> Result<Timestamp, String> {
    let text = key_holder
        .get("now")
        .or_else(|| step.get("now"))
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_NOW);
    Timestamp::parse_rfc3339(text).map_err(|e| e.to_string())
}

/// Runs every step of `scenario` through `driver`.
pub async fn run<D: Driver>(driver: &mut D, scenario: &Scenario) -> Report {
    let mut report = Report {
        name: scenario.name.clone(),
        ..Report::default()
    };
    for (i, step) in scenario.steps.iter().enumerate() {
        report.steps += 1;
        if let Err(e) = run_step(driver, scenario, step, &mut report).await {
            report.failures.push(format!("step {i}: {e}"));
        }
    }
    report
}

async fn run_step<D: Driver>(
    driver: &mut D,
    scenario: &Scenario,
    step: &Value,
    report: &mut Report,
) -> Result<(), String> {
    let expect = &step["expect"];
    if let Some(post) = step.get("post") {
        let now = instant(step, step)?;
        let got = driver
            .post(&envelope_of(post), &scenario.rules, now)
            .await?;
        let want = expect["status"].as_str().unwrap_or_default();
        match (want, &got) {
            ("processed", PostResult::Processed | PostResult::Ignored) => {}
            ("rejected", PostResult::Rejected(text)) => {
                if let Some(needle) = expect.get("error_contains").and_then(Value::as_str)
                    && !text.contains(needle)
                {
                    return Err(format!("rejection {text:?} does not contain {needle:?}"));
                }
            }
            _ => {
                return Err(format!(
                    "post {}: expected {want}, got {got:?}",
                    post["item_hash"]
                ));
            }
        }
        report.checks_passed += 1;
        return Ok(());
    }
    if let Some(rows) = step.get("seed") {
        return driver
            .seed(
                rows.as_array().map_or(&[][..], Vec::as_slice),
                &scenario.rules,
            )
            .await;
    }
    if step.get("repair").is_some() {
        return driver.repair().await;
    }
    let Some(check) = step.get("check") else {
        return Err(format!("unknown step {step}"));
    };
    let (kind, args) = check
        .as_object()
        .and_then(|o| o.iter().next())
        .ok_or_else(|| format!("empty check {check}"))?;
    let at = instant(step, args)?;
    let address = args.get("address").and_then(Value::as_str);
    let need_address = || address.ok_or_else(|| format!("check {kind} without address"));
    let actual = match kind.as_str() {
        "http" => {
            let method = args.get("method").and_then(Value::as_str).unwrap_or("GET");
            let path = args
                .get("path")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("http check without path: {check}"))?;
            let (status, body) = driver.http(method, path, at).await?;
            check_http(step, status, &body).map_err(|e| format!("{method} {path}: {e}"))?;
            report.checks_passed += 1;
            return Ok(());
        }
        "balance" => driver.balance(need_address()?, at).await?,
        "balance_details" => driver.balance_details(need_address()?, at).await?,
        "lots" => driver.lots(need_address()?).await?,
        "history" => {
            let selector = match (address, args.get("credit_ref").and_then(Value::as_str)) {
                (Some(a), _) => HistorySelector::Address(a.to_string()),
                (None, Some(r)) => HistorySelector::CreditRef(r.to_string()),
                _ => {
                    return Err(format!(
                        "history check without address or credit_ref: {check}"
                    ));
                }
            };
            driver.history(&selector).await?
        }
        other => return Err(format!("unknown check kind {other}")),
    };
    compare::matches(expect, &actual).map_err(|e| format!("check {check}: {e}"))?;
    report.checks_passed += 1;
    Ok(())
}

/// Compares an HTTP answer with `expect` (`status`, optional `body`) and `expect_partial`.
fn check_http(step: &Value, status: u16, body: &Value) -> Result<(), String> {
    let expect = &step["expect"];
    let want = expect["status"]
        .as_u64()
        .ok_or("http check without expect.status")?;
    if u64::from(status) != want {
        return Err(format!(
            "expected status {want}, got {status} with body {body}"
        ));
    }
    if let Some(want_body) = expect.get("body") {
        compare::matches(want_body, body).map_err(|e| format!("body: {e}"))?;
    }
    if let Some(partial) = step.get("expect_partial") {
        compare::matches_partial(partial, body).map_err(|e| format!("partial body: {e}"))?;
    }
    Ok(())
}

/// Turns an HTTP body into the value the checks compare: JSON when it parses, else text.
pub fn body_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Drives a [`Store`] directly, with the envelope handling `lotledger ingest` uses.
pub struct LibDriver<S: Store> {
    pub store: S,
}

impl<S: Store + Clone + 'static> Driver for LibDriver<S> {
    async fn post(
        &mut self,
        envelope: &Value,
        rules: &Rules,
        now: Timestamp,
    ) -> Result<PostResult, String> {
        let env = Envelope::from_json(envelope).map_err(|e| e.to_string())?;
        let outcome = apply_envelope(&self.store, &env, rules, now)
            .await
            .map_err(|e| e.to_string())?;
        Ok(match outcome {
            Outcome::Processed => PostResult::Processed,
            Outcome::Ignored(_) => PostResult::Ignored,
            Outcome::AlreadyApplied => PostResult::AlreadyApplied,
            Outcome::Rejected(text) => PostResult::Rejected(text),
        })
    }

    async fn seed(&mut self, rows: &[Value], rules: &Rules) -> Result<(), String> {
        let rows = rows
            .iter()
            .map(|row| json::parse_history_row_under(row, &rules.schedule))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        self.store
            .import_history(&rows, Timestamp::UNIX_EPOCH)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn repair(&mut self) -> Result<(), String> {
        maintenance::repair(&self.store, true, |_, _| {})
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn balance(&mut self, address: &str, at: Timestamp) -> Result<Value, String> {
        Ok(Value::from(
            self.store
                .balance(address, at)
                .await
                .map_err(|e| e.to_string())?
                .0,
        ))
    }

    async fn balance_details(&mut self, address: &str, at: Timestamp) -> Result<Value, String> {
        let (total, details) = self
            .store
            .balance_details(address, at)
            .await
            .map_err(|e| e.to_string())?;
        Ok(json::balance_details(total, &details))
    }

    async fn history(&mut self, selector: &HistorySelector) -> Result<Value, String> {
        let rows = self
            .store
            .history(selector)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Value::Array(rows.iter().map(json::history_row).collect()))
    }

    async fn lots(&mut self, address: &str) -> Result<Value, String> {
        let lots = self.store.lots(address).await.map_err(|e| e.to_string())?;
        Ok(Value::Array(lots.iter().map(json::lot).collect()))
    }

    /// Through the API's router in process (no socket), test clock on.
    async fn http(
        &mut self,
        method: &str,
        path: &str,
        now: Timestamp,
    ) -> Result<(u16, Value), String> {
        let mut config = lotledger_api::ApiConfig::new(Rules::default());
        config.test_clock = true;
        let app = lotledger_api::router(std::sync::Arc::new(self.store.clone()), config);
        let now = now.to_rfc3339();
        let (status, body) = crate::server::call_router(
            &app,
            method,
            path,
            &[(lotledger_api::NOW_HEADER, &now)],
            None,
        )
        .await?;
        Ok((status.as_u16(), body))
    }
}

/// Runs `scenarios` with a fresh driver each (from `make`), prints one line per scenario and a
/// total, and returns the number of failed scenarios.
pub async fn run_suite<D: Driver, F: AsyncFnMut() -> D>(
    label: &str,
    scenarios: &[Scenario],
    mut make: F,
) -> usize {
    let (mut failed, mut checks) = (0, 0);
    for scenario in scenarios {
        if let Some((_, why)) = DELIBERATE_DIFFERENCES
            .iter()
            .find(|(n, _)| *n == scenario.name)
        {
            println!(
                "{label} {}: skipped (deliberate difference: {why})",
                scenario.name
            );
            continue;
        }
        let mut driver = make().await;
        let report = run(&mut driver, scenario).await;
        checks += report.checks_passed;
        if report.failures.is_empty() {
            println!(
                "{label} {}: ok ({} checks passed)",
                report.name, report.checks_passed
            );
        } else {
            failed += 1;
            println!("{label} {}: FAILED", report.name);
            for f in &report.failures {
                println!("    {f}");
            }
        }
    }
    println!(
        "{label}: {} scenarios, {} passed, {failed} failed; {checks} checks passed, 0 skipped",
        scenarios.len(),
        scenarios.len() - failed
    );
    failed
}
