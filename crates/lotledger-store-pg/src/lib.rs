//! The PostgreSQL store, for production: row locks on drained lots, advisory locks per message
//! and per address (taken in one sorted order, so writers never deadlock), instants as
//! `TIMESTAMPTZ`, decimals as `NUMERIC`, text keys in the "C" collation.
//!
//! Rows are mapped by hand (`wrappers`): core types never see sqlx.

use std::str::FromStr;
use std::time::Duration;

use lotledger_core::{
    BalanceDetail, Credits, HistoryRow, Lot, Post, Rules, Timestamp, balance_details_from_sums,
};
use lotledger_store::batch::{Commit, LastRows};
use lotledger_store::{
    BalancesQuery, BatchItem, Drift, HistorySelector, IngestProgress, LedgerTx, MessageRecord,
    MessageStatus, Outcome, Store, StoreError, writer,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres, QueryBuilder, Transaction};

mod wrappers;
use wrappers::{db_err, history_row, lock_key, lot, message_record, odt, opt_odt};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Rows per multi-row INSERT (17 parameters each, under PostgreSQL's 65 535).
const INSERT_CHUNK_ROWS: usize = 1000;

const HISTORY_COLUMNS: &str = "address, amount, price::text AS price, bonus_amount, tx_hash, token, chain, \
     provider, origin, origin_ref, payment_method, credit_ref, credit_index, expiration_date, message_timestamp, \
     expense_count, expense_size_mib::text AS expense_size_mib";

const LOT_COLUMNS: &str =
    "address, message_timestamp, credit_ref, credit_index, amount_remaining, expiration_date";

/// A lotledger store in a PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://…`) and migrates the schema.
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let options =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::Config(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let store = PgStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn write(&self) -> Result<PgTx, StoreError> {
        Ok(PgTx {
            tx: self.pool.begin().await.map_err(db_err)?,
        })
    }
}

/// One open transaction.
pub struct PgTx {
    tx: Transaction<'static, Postgres>,
}

impl Commit for PgTx {
    async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(db_err)
    }
}

impl Store for PgStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Database(Box::new(e)))
    }

    async fn apply(
        &self,
        post: &Post,
        rules: &Rules,
        now: Timestamp,
    ) -> Result<Outcome, StoreError> {
        let mut tx = self.write().await?;
        let outcome = writer::apply(&mut tx, post, rules, now).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn apply_batch_with_progress(
        &self,
        items: &[BatchItem],
        rules: &Rules,
        now: Timestamp,
        progress: Option<&IngestProgress>,
    ) -> Result<Vec<Outcome>, StoreError> {
        lotledger_store::batch::apply_batch_committed(
            self,
            || self.write(),
            items,
            rules,
            now,
            progress,
        )
        .await
    }

    async fn ingest_progress(&self, source: &str) -> Result<Option<IngestProgress>, StoreError> {
        let row: Option<(i64, i64, String)> = sqlx::query_as(
            "SELECT lines, bytes, prefix_sha256 FROM ingest_progress WHERE source = $1 AND bytes IS NOT NULL AND prefix_sha256 IS NOT NULL",
        )
        .bind(source)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(|(lines, bytes, prefix_sha256)| {
            IngestProgress::from_row(source, lines, bytes, prefix_sha256)
        })
        .transpose()
    }

    async fn reject(
        &self,
        item_hash: &str,
        error: &str,
        now: Timestamp,
    ) -> Result<Outcome, StoreError> {
        let mut tx = self.write().await?;
        let outcome = writer::reject(&mut tx, item_hash, error, now).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn import_history(&self, rows: &[HistoryRow], now: Timestamp) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let inserted = writer::import_history(&mut tx, rows, now).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    async fn balance(&self, address: &str, at: Timestamp) -> Result<Credits, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        balance(&mut conn, address, at).await
    }

    async fn balance_details(
        &self,
        address: &str,
        at: Timestamp,
    ) -> Result<(Credits, Vec<BalanceDetail>), StoreError> {
        // Grouped in SQL: one row per expiry, not one per lot.
        let groups: Vec<(Option<time::OffsetDateTime>, i64)> = sqlx::query_as(
            "SELECT expiration_date, SUM(amount_remaining)::bigint FROM credit_lots \
             WHERE address = $1 AND (expiration_date IS NULL OR expiration_date > $2) \
             GROUP BY expiration_date",
        )
        .bind(address)
        .bind(odt(at))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let sums = groups
            .into_iter()
            .map(|(expiry, sum)| Ok((expiry.map(wrappers::ts).transpose()?, Credits(sum))))
            .collect::<Result<Vec<_>, StoreError>>()?;
        balance_details_from_sums(sums)
            .ok_or_else(|| StoreError::Overflow(format!("balance of {address}")))
    }

    async fn history(&self, selector: &HistorySelector) -> Result<Vec<HistoryRow>, StoreError> {
        let (sql, key) = match selector {
            HistorySelector::Address(a) => ("WHERE address = $1", a),
            HistorySelector::CreditRef(r) => ("WHERE credit_ref = $1", r),
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {HISTORY_COLUMNS} FROM credit_history {sql} ORDER BY credit_ref, credit_index"
        )))
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(history_row).collect()
    }

    async fn lots(&self, address: &str) -> Result<Vec<Lot>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        address_lots(&mut conn, address).await
    }

    async fn addresses(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT address FROM credit_history UNION SELECT address FROM credit_lots ORDER BY address")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn rebuild(&self, addresses: &[String]) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
        tx.lock("", &refs).await?;
        writer::rederive_many(&mut tx, &refs).await?;
        tx.commit().await
    }

    async fn verify(&self, addresses: &[String]) -> Result<Vec<Drift>, StoreError> {
        // One snapshot for the whole batch, so that history and lots are compared consistently.
        let mut tx = PgTx {
            tx: self.pool.begin().await.map_err(db_err)?,
        };
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
        let rows = tx.replay_histories(&refs).await?;
        let lots = tx.load_lots(&refs).await?;
        tx.tx.rollback().await.map_err(db_err)?;
        lotledger_store::maintenance::drifts(addresses, &rows, lots)
    }

    async fn repair_checkpoint(&self) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT last_address FROM repair_checkpoint WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn set_repair_checkpoint(&self, last_address: Option<&str>) -> Result<(), StoreError> {
        let query = match last_address {
            Some(a) => sqlx::query(
                "INSERT INTO repair_checkpoint (id, last_address) VALUES (1, $1) \
                 ON CONFLICT (id) DO UPDATE SET last_address = excluded.last_address",
            )
            .bind(a),
            None => sqlx::query("DELETE FROM repair_checkpoint"),
        };
        query.execute(&self.pool).await.map_err(db_err)?;
        Ok(())
    }

    async fn credit_balances(
        &self,
        q: &BalancesQuery<'_>,
    ) -> Result<Vec<(String, Credits)>, StoreError> {
        let mut b = QueryBuilder::<Postgres>::new(
            "SELECT address, COALESCE(SUM(amount_remaining) FILTER \
             (WHERE expiration_date IS NULL OR expiration_date > ",
        );
        b.push_bind(odt(q.at))
            .push("), 0)::bigint AS balance FROM credit_lots");
        if let Some(after) = q.after {
            b.push(" WHERE address > ").push_bind(after);
        }
        b.push(" GROUP BY address HAVING COALESCE(SUM(amount_remaining) FILTER (WHERE expiration_date IS NULL OR expiration_date > ")
            .push_bind(odt(q.at))
            .push("), 0) >= ")
            .push_bind(q.min_balance)
            .push(" ORDER BY address");
        if let Some(limit) = q.limit {
            b.push(" LIMIT ")
                .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        b.push(" OFFSET ")
            .push_bind(i64::try_from(q.offset).unwrap_or(i64::MAX));
        let rows: Vec<(String, i64)> = b
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().map(|(a, c)| (a, Credits(c))).collect())
    }

    async fn count_credit_balances(
        &self,
        at: Timestamp,
        min_balance: i64,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT address FROM credit_lots GROUP BY address \
             HAVING COALESCE(SUM(amount_remaining) FILTER \
             (WHERE expiration_date IS NULL OR expiration_date > $1), 0) >= $2) AS t",
        )
        .bind(odt(at))
        .bind(min_balance)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn consumed_credits(
        &self,
        address: Option<&str>,
        resource: Option<&str>,
    ) -> Result<Credits, StoreError> {
        let mut b = QueryBuilder::<Postgres>::new(
            "SELECT COALESCE(SUM(ABS(amount)), 0)::bigint FROM credit_history \
             WHERE payment_method = 'credit_expense'",
        );
        if let Some(a) = address {
            b.push(" AND address = ").push_bind(a);
        }
        if let Some(r) = resource {
            b.push(" AND COALESCE(NULLIF(origin, ''), origin_ref) = ")
                .push_bind(r);
        }
        let sum: i64 = b
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(Credits(sum))
    }

    async fn message(&self, item_hash: &str) -> Result<Option<MessageRecord>, StoreError> {
        let row = sqlx::query("SELECT item_hash, status, ignored, error, recorded_at FROM credit_messages WHERE item_hash = $1")
            .bind(item_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(message_record).transpose()
    }
}

async fn balance(
    conn: &mut PgConnection,
    address: &str,
    at: Timestamp,
) -> Result<Credits, StoreError> {
    let sum: Option<i64> = sqlx::query_scalar(
        "SELECT SUM(amount_remaining)::bigint FROM credit_lots \
         WHERE address = $1 AND (expiration_date IS NULL OR expiration_date > $2)",
    )
    .bind(address)
    .bind(odt(at))
    .fetch_one(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(Credits(sum.unwrap_or(0).max(0)))
}

async fn address_lots(conn: &mut PgConnection, address: &str) -> Result<Vec<Lot>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LOT_COLUMNS} FROM credit_lots WHERE address = $1 ORDER BY message_timestamp, credit_ref, credit_index"
    )))
    .bind(address)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err)?;
    rows.iter().map(lot).collect()
}

async fn address_history(
    conn: &mut PgConnection,
    address: &str,
) -> Result<Vec<HistoryRow>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {HISTORY_COLUMNS} FROM credit_history WHERE address = $1 \
         ORDER BY message_timestamp, credit_ref, credit_index"
    )))
    .bind(address)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err)?;
    rows.iter().map(history_row).collect()
}

impl LedgerTx for PgTx {
    async fn message_status(
        &mut self,
        item_hash: &str,
    ) -> Result<Option<MessageStatus>, StoreError> {
        let row = sqlx::query("SELECT item_hash, status, ignored, error, recorded_at FROM credit_messages WHERE item_hash = $1")
            .bind(item_hash)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(db_err)?;
        Ok(row
            .as_ref()
            .map(message_record)
            .transpose()?
            .map(|r| r.status))
    }

    async fn record_message(&mut self, record: &MessageRecord) -> Result<(), StoreError> {
        let (status, error) = match &record.status {
            MessageStatus::Processed => ("processed", None),
            MessageStatus::Rejected { error } => ("rejected", Some(error.as_str())),
        };
        sqlx::query(
            "INSERT INTO credit_messages (item_hash, status, ignored, error, recorded_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (item_hash) DO UPDATE SET status = excluded.status, ignored = excluded.ignored, \
             error = excluded.error, recorded_at = excluded.recorded_at",
        )
        .bind(&record.item_hash)
        .bind(status)
        .bind(record.ignored.as_deref())
        .bind(error)
        .bind(odt(record.recorded_at))
        .execute(&mut *self.tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn lock(&mut self, item_hash: &str, addresses: &[&str]) -> Result<(), StoreError> {
        let hashes: &[&str] = if item_hash.is_empty() {
            &[]
        } else {
            &[item_hash]
        };
        self.lock_many(hashes, addresses).await
    }

    async fn balance(&mut self, address: &str, at: Timestamp) -> Result<Credits, StoreError> {
        balance(&mut self.tx, address, at).await
    }

    async fn drainable_lots(
        &mut self,
        demand: &[(&str, i128)],
        ts: Timestamp,
    ) -> Result<Vec<Lot>, StoreError> {
        let addresses: Vec<&str> = demand.iter().map(|(a, _)| *a).collect();
        let addresses: Vec<String> = addresses.iter().map(|a| (*a).to_string()).collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LOT_COLUMNS} FROM credit_lots WHERE address = ANY($1) AND message_timestamp <= $2 \
             AND (expiration_date IS NULL OR expiration_date > $2) \
             ORDER BY address, message_timestamp, credit_ref, credit_index FOR UPDATE"
        )))
        .bind(&addresses)
        .bind(odt(ts))
        .fetch_all(&mut *self.tx)
        .await
        .map_err(db_err)?;
        rows.iter().map(lot).collect()
    }

    async fn insert_rows(
        &mut self,
        rows: &[HistoryRow],
        last_update: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut inserted = 0;
        for chunk in rows.chunks(INSERT_CHUNK_ROWS) {
            let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
                "INSERT INTO credit_history (address, amount, price, bonus_amount, tx_hash, token, chain, provider, \
                 origin, origin_ref, payment_method, credit_ref, credit_index, expiration_date, message_timestamp, \
                 expense_count, expense_size_mib, last_update) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(r.address.clone())
                    .push_bind(r.amount.0)
                    .push_bind(r.price.clone())
                    .push_unseparated("::numeric")
                    .push_bind(r.bonus_amount)
                    .push_bind(r.tx_hash.clone())
                    .push_bind(r.token.clone())
                    .push_bind(r.chain.clone())
                    .push_bind(r.provider.clone())
                    .push_bind(r.origin.clone())
                    .push_bind(r.origin_ref.clone())
                    .push_bind(r.payment_method.clone())
                    .push_bind(r.credit_ref.clone())
                    .push_bind(r.credit_index)
                    .push_bind(opt_odt(r.expiration_date))
                    .push_bind(odt(r.message_timestamp))
                    .push_bind(r.expense_count)
                    .push_bind(r.expense_size_mib.clone())
                    .push_unseparated("::numeric")
                    .push_bind(odt(last_update));
            });
            qb.push(" ON CONFLICT (credit_ref, credit_index) DO NOTHING");
            inserted += qb
                .build()
                .execute(&mut *self.tx)
                .await
                .map_err(db_err)?
                .rows_affected();
        }
        Ok(inserted)
    }

    async fn insert_lots(&mut self, lots: &[Lot]) -> Result<(), StoreError> {
        for chunk in lots.chunks(INSERT_CHUNK_ROWS) {
            let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
                "INSERT INTO credit_lots (address, message_timestamp, credit_ref, credit_index, amount_remaining, expiration_date) ",
            );
            qb.push_values(chunk, |mut b, l| {
                b.push_bind(l.address.clone())
                    .push_bind(odt(l.message_timestamp))
                    .push_bind(l.credit_ref.clone())
                    .push_bind(l.credit_index)
                    .push_bind(l.amount_remaining.0)
                    .push_bind(opt_odt(l.expiration_date));
            });
            qb.push(" ON CONFLICT DO NOTHING");
            qb.build().execute(&mut *self.tx).await.map_err(db_err)?;
        }
        Ok(())
    }

    async fn update_lots(&mut self, lots: &[Lot]) -> Result<(), StoreError> {
        for l in lots {
            let query = if l.amount_remaining.is_positive() {
                sqlx::query(
                    "UPDATE credit_lots SET amount_remaining = $5 \
                     WHERE address = $1 AND message_timestamp = $2 AND credit_ref = $3 AND credit_index = $4",
                )
            } else {
                sqlx::query(
                    "DELETE FROM credit_lots WHERE address = $1 AND message_timestamp = $2 AND credit_ref = $3 \
                     AND credit_index = $4 AND $5::bigint = 0",
                )
            };
            query
                .bind(&l.address)
                .bind(odt(l.message_timestamp))
                .bind(&l.credit_ref)
                .bind(l.credit_index)
                .bind(l.amount_remaining.0)
                .execute(&mut *self.tx)
                .await
                .map_err(db_err)?;
        }
        Ok(())
    }

    async fn rows_after(
        &mut self,
        address: &str,
        ts: Timestamp,
        credit_ref: &str,
    ) -> Result<(bool, bool), StoreError> {
        let row: (bool, bool) = sqlx::query_as(
            "SELECT COUNT(*) > 0, COALESCE(bool_or(amount < 0), false) FROM credit_history \
             WHERE address = $1 AND (message_timestamp > $2 OR (message_timestamp = $2 AND credit_ref > $3))",
        )
        .bind(address)
        .bind(odt(ts))
        .bind(credit_ref)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(db_err)?;
        Ok(row)
    }

    async fn address_history(&mut self, address: &str) -> Result<Vec<HistoryRow>, StoreError> {
        address_history(&mut self.tx, address).await
    }

    async fn replace_lots(&mut self, address: &str, lots: &[Lot]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM credit_lots WHERE address = $1")
            .bind(address)
            .execute(&mut *self.tx)
            .await
            .map_err(db_err)?;
        self.insert_lots(lots).await
    }

    async fn lock_many(
        &mut self,
        item_hashes: &[&str],
        addresses: &[&str],
    ) -> Result<(), StoreError> {
        // Transaction-scoped advisory locks, always taken in ascending key order (one global
        // order, so writers never deadlock), in one round trip.
        let mut keys: Vec<i64> = addresses.iter().map(|a| lock_key("address", a)).collect();
        keys.extend(item_hashes.iter().map(|h| lock_key("message", h)));
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "SELECT COUNT(pg_advisory_xact_lock(k)) FROM \
             (SELECT k FROM UNNEST($1::bigint[]) AS u(k) ORDER BY k) AS sorted",
        )
        .bind(keys)
        .execute(&mut *self.tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn load_lots(&mut self, addresses: &[&str]) -> Result<Vec<Lot>, StoreError> {
        let addresses: Vec<String> = addresses.iter().map(|a| (*a).to_string()).collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LOT_COLUMNS} FROM credit_lots WHERE address = ANY($1)"
        )))
        .bind(addresses)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(db_err)?;
        rows.iter().map(lot).collect()
    }

    async fn last_rows(
        &mut self,
        addresses: &[&str],
    ) -> Result<Vec<(String, LastRows)>, StoreError> {
        // Index seeks on (address, message_timestamp, credit_ref, …) read backwards: the last
        // row of each address, and its last debit. No scan of whole histories.
        let addresses: Vec<String> = addresses.iter().map(|a| (*a).to_string()).collect();
        type Row = (
            String,
            Option<time::OffsetDateTime>,
            Option<String>,
            Option<time::OffsetDateTime>,
            Option<String>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT a.address, l.message_timestamp, l.credit_ref, d.message_timestamp, d.credit_ref \
             FROM UNNEST($1::text[]) AS a(address) \
             LEFT JOIN LATERAL (SELECT message_timestamp, credit_ref FROM credit_history h \
               WHERE h.address = a.address ORDER BY message_timestamp DESC, credit_ref DESC LIMIT 1) l ON TRUE \
             LEFT JOIN LATERAL (SELECT message_timestamp, credit_ref FROM credit_history h \
               WHERE h.address = a.address AND amount < 0 \
               ORDER BY message_timestamp DESC, credit_ref DESC LIMIT 1) d ON TRUE",
        )
        .bind(addresses)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(db_err)?;
        let mut out = Vec::new();
        for (address, any_at, any_ref, debit_at, debit_ref) in rows {
            let position = |at: Option<time::OffsetDateTime>, r: Option<String>| match (at, r) {
                (Some(at), Some(r)) => wrappers::ts(at).map(|t| Some((t, r))),
                _ => Ok(None),
            };
            let rows = LastRows {
                any: position(any_at, any_ref)?,
                debit: position(debit_at, debit_ref)?,
            };
            if rows.any.is_some() {
                out.push((address, rows));
            }
        }
        Ok(out)
    }

    async fn message_statuses(
        &mut self,
        item_hashes: &[&str],
    ) -> Result<Vec<(String, MessageStatus)>, StoreError> {
        let hashes: Vec<String> = item_hashes.iter().map(|h| (*h).to_string()).collect();
        let rows = sqlx::query(
            "SELECT item_hash, status, ignored, error, recorded_at FROM credit_messages WHERE item_hash = ANY($1)",
        )
        .bind(hashes)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| message_record(r).map(|m| (m.item_hash, m.status)))
            .collect()
    }

    async fn existing_row_keys(
        &mut self,
        credit_refs: &[&str],
    ) -> Result<Vec<(String, i32)>, StoreError> {
        let refs: Vec<String> = credit_refs.iter().map(|r| (*r).to_string()).collect();
        sqlx::query_as(
            "SELECT credit_ref, credit_index FROM credit_history WHERE credit_ref = ANY($1)",
        )
        .bind(refs)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(db_err)
    }

    async fn write_lots(&mut self, upserts: &[Lot], deletes: &[Lot]) -> Result<(), StoreError> {
        if !deletes.is_empty() {
            sqlx::query(
                "DELETE FROM credit_lots WHERE (address, message_timestamp, credit_ref, credit_index) IN \
                 (SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::int[]))",
            )
            .bind(deletes.iter().map(|l| l.address.clone()).collect::<Vec<_>>())
            .bind(deletes.iter().map(|l| odt(l.message_timestamp)).collect::<Vec<_>>())
            .bind(deletes.iter().map(|l| l.credit_ref.clone()).collect::<Vec<_>>())
            .bind(deletes.iter().map(|l| l.credit_index).collect::<Vec<_>>())
            .execute(&mut *self.tx)
            .await
            .map_err(db_err)?;
        }
        if !upserts.is_empty() {
            sqlx::query(
                "INSERT INTO credit_lots (address, message_timestamp, credit_ref, credit_index, amount_remaining, expiration_date) \
                 SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::int[], $5::bigint[], $6::timestamptz[]) \
                 ON CONFLICT (address, message_timestamp, credit_ref, credit_index) \
                 DO UPDATE SET amount_remaining = EXCLUDED.amount_remaining",
            )
            .bind(upserts.iter().map(|l| l.address.clone()).collect::<Vec<_>>())
            .bind(upserts.iter().map(|l| odt(l.message_timestamp)).collect::<Vec<_>>())
            .bind(upserts.iter().map(|l| l.credit_ref.clone()).collect::<Vec<_>>())
            .bind(upserts.iter().map(|l| l.credit_index).collect::<Vec<_>>())
            .bind(upserts.iter().map(|l| l.amount_remaining.0).collect::<Vec<_>>())
            .bind(upserts.iter().map(|l| opt_odt(l.expiration_date)).collect::<Vec<_>>())
            .execute(&mut *self.tx)
            .await
            .map_err(db_err)?;
        }
        Ok(())
    }

    async fn replay_histories(
        &mut self,
        addresses: &[&str],
    ) -> Result<Vec<HistoryRow>, StoreError> {
        // One row per address, the records built by the server.
        let addresses: Vec<String> = addresses.iter().map(|a| (*a).to_string()).collect();
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT address, string_agg(\
             ((extract(epoch FROM message_timestamp) * 1000000)::bigint)::text || ',' || amount || ',' || \
             COALESCE(((extract(epoch FROM expiration_date) * 1000000)::bigint)::text, '') || ',' || \
             credit_index || ',' || octet_length(credit_ref) || ':' || credit_ref || ';', '' \
             ORDER BY message_timestamp, credit_ref, credit_index) \
             FROM credit_history WHERE address = ANY($1) GROUP BY address ORDER BY address",
        )
        .bind(addresses)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(db_err)?;
        let mut out = Vec::new();
        for (address, text) in rows {
            lotledger_store::decode_replay_rows(&address, &text, &mut out)?;
        }
        Ok(out)
    }

    async fn delete_lots_of(&mut self, addresses: &[&str]) -> Result<(), StoreError> {
        let addresses: Vec<String> = addresses.iter().map(|a| (*a).to_string()).collect();
        sqlx::query("DELETE FROM credit_lots WHERE address = ANY($1)")
            .bind(addresses)
            .execute(&mut *self.tx)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn set_ingest_progress(&mut self, progress: &IngestProgress) -> Result<(), StoreError> {
        let (lines, bytes) = progress.stored_counts()?;
        sqlx::query("INSERT INTO ingest_progress (source, lines, bytes, prefix_sha256) VALUES ($1, $2, $3, $4) ON CONFLICT (source) DO UPDATE SET lines = EXCLUDED.lines, bytes = EXCLUDED.bytes, prefix_sha256 = EXCLUDED.prefix_sha256")
            .bind(&progress.source)
            .bind(lines)
            .bind(bytes)
            .bind(&progress.prefix_sha256)
            .execute(&mut *self.tx)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn record_messages(&mut self, records: &[MessageRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let status = |r: &MessageRecord| match &r.status {
            MessageStatus::Processed => ("processed".to_string(), None),
            MessageStatus::Rejected { error } => ("rejected".to_string(), Some(error.clone())),
        };
        sqlx::query(
            "INSERT INTO credit_messages (item_hash, status, ignored, error, recorded_at) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) \
             ON CONFLICT (item_hash) DO UPDATE SET status = EXCLUDED.status, ignored = EXCLUDED.ignored, \
             error = EXCLUDED.error, recorded_at = EXCLUDED.recorded_at",
        )
        .bind(records.iter().map(|r| r.item_hash.clone()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| status(r).0).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.ignored.clone()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| status(r).1).collect::<Vec<_>>())
        .bind(records.iter().map(|r| odt(r.recorded_at)).collect::<Vec<_>>())
        .execute(&mut *self.tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}
