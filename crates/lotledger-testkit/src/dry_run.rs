//! A conformance driver that checks the dry run (issue 12, part 3) at every post: before each
//! message is applied, its dry run is asked of the same store, and once it is applied, what
//! the dry run predicted is compared with what the store then holds — the outcome, the rows
//! written, each touched balance before and after, and, for the addresses the writer does not
//! re-derive, the lots exactly (the lots before, less the drains, plus the created lots).

use std::collections::BTreeMap;

use lotledger_core::dry_run::Prediction;
use lotledger_core::envelope::Envelope;
use lotledger_core::{Lot, Rules, Timestamp, json};
use lotledger_store::dry_run::{DryRun, dry_run_envelope};
use lotledger_store::{HistorySelector, Store};
use serde_json::Value;

use crate::compare;
use crate::scenario::{Driver, LibDriver, PostResult};

/// [`LibDriver`], with every post's dry run checked against what the post then did.
pub struct DryRunDriver<S: Store> {
    pub inner: LibDriver<S>,
}

type LotKey = (String, String, i32);

fn by_key(lots: impl IntoIterator<Item = Lot>) -> BTreeMap<LotKey, i64> {
    lots.into_iter()
        .map(|l| {
            (
                (l.address, l.credit_ref, l.credit_index),
                l.amount_remaining.0,
            )
        })
        .collect()
}

impl<S: Store + Clone + 'static> DryRunDriver<S> {
    async fn lots_of(&self, addresses: &[String]) -> Result<BTreeMap<LotKey, i64>, String> {
        let mut all = BTreeMap::new();
        for address in addresses {
            let lots = self
                .inner
                .store
                .lots(address)
                .await
                .map_err(|e| e.to_string())?;
            all.extend(by_key(lots));
        }
        Ok(all)
    }

    async fn balances(
        &self,
        addresses: &[String],
        now: Timestamp,
    ) -> Result<BTreeMap<String, i64>, String> {
        let mut out = BTreeMap::new();
        for address in addresses {
            let b = self.inner.store.balance(address, now).await;
            out.insert(address.clone(), b.map_err(|e| e.to_string())?.0);
        }
        Ok(out)
    }

    /// Compares `p` with the store after the post, `before` being the lots and balances the
    /// store held before it.
    async fn check(
        &self,
        hash: &str,
        p: &Prediction,
        lots_before: BTreeMap<LotKey, i64>,
        balances_before: BTreeMap<String, i64>,
        now: Timestamp,
    ) -> Result<(), String> {
        let addresses: Vec<String> = p.balances.keys().cloned().collect();
        let before: BTreeMap<String, i64> = p
            .balances
            .iter()
            .map(|(a, (b, _))| (a.clone(), b.0))
            .collect();
        let after: BTreeMap<String, i64> = p
            .balances
            .iter()
            .map(|(a, (_, b))| (a.clone(), b.0))
            .collect();
        if before != balances_before {
            return Err(format!(
                "balances before: predicted {before:?}, held {balances_before:?}"
            ));
        }
        let held_after = self.balances(&addresses, now).await?;
        if after != held_after {
            return Err(format!(
                "balances after: predicted {after:?}, held {held_after:?}"
            ));
        }
        let stored = self
            .inner
            .store
            .history(&HistorySelector::CreditRef(hash.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        let mut predicted: Vec<Value> = p.rows.iter().map(json::history_row).collect();
        predicted.sort_by_key(|r| r["credit_index"].as_i64());
        let stored: Vec<Value> = stored.iter().map(json::history_row).collect();
        compare::matches(&Value::Array(predicted), &Value::Array(stored))
            .map_err(|e| format!("rows: {e}"))?;
        let held = self.lots_of(&addresses).await?;
        if by_key(p.lots_after.iter().cloned()) != held {
            return Err(format!(
                "lots after: predicted {:?}, held {held:?}",
                p.lots_after
            ));
        }
        // Where the writer keeps its eager plan, the drains and created lots account for the
        // change exactly: the lots before, less the drains, plus the created lots.
        let eager: Vec<String> = addresses
            .iter()
            .filter(|a| !p.rederived.contains(a))
            .cloned()
            .collect();
        let mut expected: BTreeMap<LotKey, i64> = lots_before
            .into_iter()
            .filter(|((a, _, _), _)| eager.contains(a))
            .collect();
        for d in p.drained.iter().filter(|d| eager.contains(&d.address)) {
            let key = (d.address.clone(), d.credit_ref.clone(), d.credit_index);
            let left = expected
                .get_mut(&key)
                .ok_or_else(|| format!("drained a lot the address did not hold: {d:?}"))?;
            *left -= d.amount.0;
        }
        expected.retain(|_, left| *left > 0);
        expected.extend(by_key(
            p.created
                .iter()
                .filter(|l| eager.contains(&l.address))
                .cloned(),
        ));
        let held_eager: BTreeMap<LotKey, i64> = held
            .into_iter()
            .filter(|((a, _, _), _)| eager.contains(a))
            .collect();
        if expected != held_eager {
            return Err(format!(
                "lots after the drains: predicted {expected:?}, held {held_eager:?}"
            ));
        }
        Ok(())
    }
}

impl<S: Store + Clone + 'static> Driver for DryRunDriver<S> {
    async fn post(
        &mut self,
        envelope: &Value,
        rules: &Rules,
        now: Timestamp,
    ) -> Result<PostResult, String> {
        let env = Envelope::from_json(envelope).map_err(|e| e.to_string())?;
        let verdict = dry_run_envelope(&self.inner.store, &env, rules, now)
            .await
            .map_err(|e| e.to_string())?;
        let (lots_before, balances_before) = match &verdict {
            DryRun::Processed(p) => {
                let addresses: Vec<String> = p.balances.keys().cloned().collect();
                (
                    self.lots_of(&addresses).await?,
                    self.balances(&addresses, now).await?,
                )
            }
            _ => Default::default(),
        };
        let result = self.inner.post(envelope, rules, now).await?;
        let hash = &env.item_hash;
        match (&verdict, &result) {
            (DryRun::Processed(p), PostResult::Processed) => self
                .check(hash, p, lots_before, balances_before, now)
                .await
                .map_err(|e| format!("dry run of {hash}: {e}"))?,
            (DryRun::Rejected(a), PostResult::Rejected(b)) if a == b => {}
            (DryRun::Ignored(_), PostResult::Ignored | PostResult::AlreadyApplied) => {}
            _ => {
                return Err(format!(
                    "dry run of {hash} said {verdict:?}, the post did {result:?}"
                ));
            }
        }
        Ok(result)
    }

    async fn seed(&mut self, rows: &[Value], rules: &Rules) -> Result<(), String> {
        self.inner.seed(rows, rules).await
    }

    async fn repair(&mut self) -> Result<(), String> {
        self.inner.repair().await
    }

    async fn balance(&mut self, address: &str, at: Timestamp) -> Result<Value, String> {
        self.inner.balance(address, at).await
    }

    async fn balance_details(&mut self, address: &str, at: Timestamp) -> Result<Value, String> {
        self.inner.balance_details(address, at).await
    }

    async fn history(&mut self, selector: &HistorySelector) -> Result<Value, String> {
        self.inner.history(selector).await
    }

    async fn lots(&mut self, address: &str) -> Result<Value, String> {
        self.inner.lots(address).await
    }

    async fn http(
        &mut self,
        method: &str,
        path: &str,
        now: Timestamp,
    ) -> Result<(u16, Value), String> {
        self.inner.http(method, path, now).await
    }
}
