//! What the two sqlx backends share instead of mirroring: a [`Dialect`] (how each database
//! keeps an instant, which of sqlx's errors mean "unavailable", the few SQL fragments that
//! differ), the mapping of rows to core types ([`Cols`]) and the reads over the pool whose SQL
//! is the same in both ([`Reads`]: its placeholders come from sqlx's `QueryBuilder`, so one
//! text serves `$1` and `?` alike).

use lotledger_core::{
    BalanceDetail, Credits, HistoryRow, Lot, Schedule, Timestamp, balance_details_from_sums,
};
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, FromRow, Pool, QueryBuilder, Row, Type,
};

use crate::rows::{self, Columns};
use crate::{
    AddressRows, BalancesQuery, IngestProgress, MessageRecord, Migrated, StoreError, TableCounts,
    compact,
};

/// When a PostgreSQL connection was last found dead, process-wide: the pool pings connections
/// before handing them out only after such a loss (or a long idle), so that a server that
/// dropped its connections costs one failed call instead of one per pooled connection.
pub mod lost_connection {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    static BASE: OnceLock<Instant> = OnceLock::new();
    /// Milliseconds after `BASE`, plus one, of the last loss; 0 for none.
    static LAST: AtomicU64 = AtomicU64::new(0);

    fn base() -> Instant {
        *BASE.get_or_init(Instant::now)
    }

    /// A call failed because its connection is gone (I/O, a connection exception, a shutdown).
    pub fn record() {
        let millis = u64::try_from(base().elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        LAST.store(millis.saturating_add(1), Ordering::Relaxed);
    }

    /// Whether a connection was lost less than `window` ago.
    pub fn within(window: Duration) -> bool {
        match LAST.load(Ordering::Relaxed) {
            0 => false,
            last => {
                let now = u64::try_from(base().elapsed().as_millis()).unwrap_or(u64::MAX);
                let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
                now.saturating_sub(last - 1) < window
            }
        }
    }
}

/// One of the databases lotledger keeps through sqlx.
pub trait Dialect: Database<Arguments: sqlx::IntoArguments<Self>> {
    /// A core instant as a column value.
    type Instant: for<'r> Decode<'r, Self>
        + for<'q> Encode<'q, Self>
        + Type<Self>
        + Send
        + Sync
        + Unpin
        + 'static;
    /// The compact texts' `''` as an SQL literal (migration 0007), written out so that the
    /// expression index on a history row's resource matches.
    const EMPTY_COMPACT: &'static str;
    /// An address's unexpired lots summed by expiry (`expiration_date`, the sum), the address
    /// and the instant bound in that order: [`crate::sql_balance_groups!`] in this dialect's
    /// placeholders. SQLite's short reads on rusqlite run the same text.
    const BALANCE_GROUPS: &'static str;
    /// Whether sqlx's migrations table exists (a boolean). Asked before reading it, so that
    /// opening a new database runs no statement that fails (PostgreSQL logs each as an error).
    const MIGRATIONS_TABLE_EXISTS: &'static str;

    fn instant(t: Timestamp) -> Self::Instant;
    fn timestamp(v: Self::Instant) -> Result<Timestamp, StoreError>;
    /// The store's error for one of this database's errors.
    fn error(e: sqlx::Error) -> StoreError;
}

impl Dialect for sqlx::Postgres {
    type Instant = time::OffsetDateTime;
    const EMPTY_COMPACT: &'static str = "'\\x00'::bytea";
    const BALANCE_GROUPS: &'static str = crate::sql_balance_groups!("$1", "$2");
    const MIGRATIONS_TABLE_EXISTS: &'static str =
        "SELECT to_regclass('_sqlx_migrations') IS NOT NULL";

    /// Core instants lie within years 1..=9999, which `OffsetDateTime` represents; the epoch
    /// stands in for the impossible failure.
    fn instant(t: Timestamp) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.as_micros()) * 1000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }

    fn timestamp(t: time::OffsetDateTime) -> Result<Timestamp, StoreError> {
        let micros = t.unix_timestamp_nanos() / 1000;
        i64::try_from(micros)
            .ok()
            .and_then(|m| Timestamp::from_micros(m).ok())
            .ok_or_else(|| StoreError::Corrupt(format!("instant {t} out of range")))
    }

    fn error(e: sqlx::Error) -> StoreError {
        match e {
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                lost_connection::record();
                StoreError::Unavailable(Box::new(e))
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                StoreError::Unavailable(Box::new(e))
            }
            // Connection exceptions (class 08) and server shutdown / crash / start-up (57P0x).
            sqlx::Error::Database(ref d)
                if d.code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")) =>
            {
                lost_connection::record();
                StoreError::Unavailable(Box::new(e))
            }
            other => StoreError::Database(Box::new(other)),
        }
    }
}

impl Dialect for sqlx::Sqlite {
    /// INTEGER microseconds.
    type Instant = i64;
    const EMPTY_COMPACT: &'static str = "x'00'";
    const BALANCE_GROUPS: &'static str = crate::sql_balance_groups!("?", "?");
    const MIGRATIONS_TABLE_EXISTS: &'static str = "SELECT EXISTS (SELECT 1 FROM sqlite_master \
         WHERE type = 'table' AND name = '_sqlx_migrations')";

    fn instant(t: Timestamp) -> i64 {
        t.as_micros()
    }

    fn timestamp(micros: i64) -> Result<Timestamp, StoreError> {
        rows::instant_from_micros(micros)
    }

    fn error(e: sqlx::Error) -> StoreError {
        match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                StoreError::Unavailable(Box::new(e))
            }
            // SQLITE_BUSY / SQLITE_LOCKED (and their extended codes): another process holds
            // the file's lock beyond the busy timeout.
            sqlx::Error::Database(ref d)
                if d.code().is_some_and(|c| {
                    c.parse::<i64>()
                        .is_ok_and(|n| n & 0xff == 5 || n & 0xff == 6)
                }) =>
            {
                StoreError::Unavailable(Box::new(e))
            }
            other => StoreError::Database(Box::new(other)),
        }
    }
}

/// A row's columns as [`crate::rows`] reads them.
pub struct Cols<'r, DB: Database>(pub &'r DB::Row);

impl<DB: Dialect> Cols<'_, DB>
where
    for<'c> &'c str: ColumnIndex<DB::Row>,
{
    fn get<'r, T: Decode<'r, DB> + Type<DB>>(&'r self, column: &str) -> Result<T, StoreError> {
        self.0.try_get(column).map_err(DB::error)
    }
}

impl<DB: Dialect> Columns for Cols<'_, DB>
where
    for<'c> &'c str: ColumnIndex<DB::Row>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> i32: Decode<'r, DB> + Type<DB>,
    for<'r> &'r [u8]: Decode<'r, DB> + Type<DB>,
    for<'r> f64: Decode<'r, DB> + Type<DB>,
{
    fn text(&self, column: &str) -> Result<String, StoreError> {
        self.get(column)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.get(column)
    }
    fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.get(column)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.get(column)
    }
    fn int32(&self, column: &str) -> Result<i32, StoreError> {
        self.get(column)
    }
    fn instant(&self, column: &str) -> Result<Timestamp, StoreError> {
        DB::timestamp(self.get::<DB::Instant>(column)?)
    }
    fn opt_instant(&self, column: &str) -> Result<Option<Timestamp>, StoreError> {
        self.get::<Option<DB::Instant>>(column)?
            .map(DB::timestamp)
            .transpose()
    }
    fn compact_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        compact::decode_opt(self.get::<Option<&[u8]>>(column)?)
    }
    fn opt_float(&self, column: &str) -> Result<Option<f64>, StoreError> {
        self.get(column)
    }
    fn kept_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.get::<Option<&[u8]>>(column)?
            .map(crate::kept::unpack)
            .transpose()
    }
}

/// The reads over a pool whose SQL both databases run as written.
pub struct Reads<'p, DB: Database> {
    pool: &'p Pool<DB>,
}

impl<'p, DB: Database> Reads<'p, DB> {
    pub fn of(pool: &'p Pool<DB>) -> Self {
        Reads { pool }
    }
}

impl<DB: Dialect> Reads<'_, DB>
where
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
    for<'r> (i64, i64, String, Option<String>): FromRow<'r, DB::Row>,
    for<'r> (i64, i64, i64): FromRow<'r, DB::Row>,
    for<'r> (String, i64): FromRow<'r, DB::Row>,
    for<'r> (Option<DB::Instant>, i64): FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> (bool,): FromRow<'r, DB::Row>,
{
    /// The schema versions the database has applied (sqlx's migrations table), oldest first;
    /// none without the table. Whether the table exists is asked first
    /// ([`Dialect::MIGRATIONS_TABLE_EXISTS`]): reading a table that is not there would fail,
    /// and PostgreSQL logs each failed statement as an error.
    pub async fn applied_versions(&self) -> Result<Vec<i64>, sqlx::Error> {
        let exists: bool = sqlx::query_scalar(DB::MIGRATIONS_TABLE_EXISTS)
            .fetch_one(self.pool)
            .await?;
        if !exists {
            return Ok(Vec::new());
        }
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(self.pool)
            .await
    }

    /// An ingest source's recorded position, if it has one.
    pub async fn ingest_progress(
        &self,
        source: &str,
    ) -> Result<Option<IngestProgress>, StoreError> {
        let mut b = QueryBuilder::<DB>::new(
            "SELECT lines, bytes, prefix_sha256, resume_at FROM ingest_progress \
             WHERE bytes IS NOT NULL \
             AND prefix_sha256 IS NOT NULL AND source = ",
        );
        b.push_bind(source);
        let row: Option<(i64, i64, String, Option<String>)> = b
            .build_query_as()
            .fetch_optional(self.pool)
            .await
            .map_err(DB::error)?;
        row.map(|(lines, bytes, prefix_sha256, resume_at)| {
            IngestProgress::from_row(source, lines, bytes, prefix_sha256, resume_at)
        })
        .transpose()
    }

    /// The unexpired balance of `address` at `at` and its split by expiry, grouped in SQL
    /// (one row per expiry, not one per lot).
    pub async fn balance_details(
        &self,
        address: &str,
        at: Timestamp,
    ) -> Result<(Credits, Vec<BalanceDetail>), StoreError> {
        balance_details_on::<DB, _>(self.pool, address, at).await
    }

    /// Every address with history or lots, in text order.
    pub async fn addresses(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT address FROM addresses a \
             WHERE EXISTS (SELECT 1 FROM credit_history WHERE address_id = a.id) \
             OR EXISTS (SELECT 1 FROM credit_lots WHERE address_id = a.id) ORDER BY address",
        )
        .fetch_all(self.pool)
        .await
        .map_err(DB::error)
    }

    /// Every address with history or lots, with its count of history rows.
    pub async fn address_rows(&self) -> Result<Vec<AddressRows>, StoreError> {
        let rows = sqlx::query_as(crate::sql::ADDRESS_ROWS)
            .fetch_all(self.pool)
            .await
            .map_err(DB::error)?;
        Ok(crate::sql::address_rows(rows))
    }

    /// How many rows fail `check`.
    pub async fn dangling(&self, check: crate::IdCheck) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(check.count_sql())
            .fetch_one(self.pool)
            .await
            .map_err(DB::error)?;
        Ok(crate::non_negative(n))
    }

    pub async fn table_counts(&self) -> Result<TableCounts, StoreError> {
        let row: (i64, i64, i64) = sqlx::query_as(crate::sql_table_counts!())
            .fetch_one(self.pool)
            .await
            .map_err(DB::error)?;
        Ok(TableCounts::from_row(row))
    }

    pub async fn repair_checkpoint(&self) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT last_address FROM repair_checkpoint WHERE id = 1")
            .fetch_optional(self.pool)
            .await
            .map_err(DB::error)
    }

    pub async fn set_repair_checkpoint(
        &self,
        last_address: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut b = match last_address {
            Some(a) => {
                let mut b = QueryBuilder::<DB>::new(
                    "INSERT INTO repair_checkpoint (id, last_address) VALUES (1, ",
                );
                b.push_bind(a)
                    .push(") ON CONFLICT (id) DO UPDATE SET last_address = excluded.last_address");
                b
            }
            None => QueryBuilder::<DB>::new("DELETE FROM repair_checkpoint"),
        };
        b.build().execute(self.pool).await.map_err(DB::error)?;
        Ok(())
    }

    /// The drain-policy schedule the ledger keeps, if one was set.
    pub async fn drain_schedule(&self) -> Result<Option<Schedule>, StoreError> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT value FROM ledger_settings WHERE name = 'drain_schedule'")
                .fetch_optional(self.pool)
                .await
                .map_err(DB::error)?;
        text.map(|t| {
            Schedule::parse(&t).map_err(|e| StoreError::Corrupt(format!("drain_schedule: {e}")))
        })
        .transpose()
    }

    /// History rows whose recorded policy is not the one `schedule` gives at their instant.
    pub async fn policy_conflicts(&self, schedule: &Schedule) -> Result<u64, StoreError> {
        let mut b = QueryBuilder::<DB>::new("SELECT COUNT(*) FROM credit_history WHERE policy <> ");
        push_policy_case(&mut b, schedule);
        let (n,): (i64,) = b
            .build_query_as()
            .fetch_one(self.pool)
            .await
            .map_err(DB::error)?;
        Ok(crate::non_negative(n))
    }

    /// Records `schedule` as the ledger's. With `relabel`, first gives every history row the
    /// policy `schedule` gives at its instant (one statement) and returns how many changed;
    /// the caller re-derives the lots. Without it, nothing is relabeled.
    pub async fn set_drain_schedule(
        &self,
        schedule: &Schedule,
        relabel: bool,
    ) -> Result<u64, StoreError> {
        let mut changed = 0;
        if relabel {
            changed = self.policy_conflicts(schedule).await?;
            let mut b = QueryBuilder::<DB>::new("UPDATE credit_history SET policy = ");
            push_policy_case(&mut b, schedule);
            b.push(" WHERE policy <> ");
            push_policy_case(&mut b, schedule);
            b.build().execute(self.pool).await.map_err(DB::error)?;
        }
        let text = schedule.to_string();
        let mut b = QueryBuilder::<DB>::new(
            "INSERT INTO ledger_settings (name, value) VALUES ('drain_schedule', ",
        );
        b.push_bind(text.as_str())
            .push(") ON CONFLICT (name) DO UPDATE SET value = excluded.value");
        b.build().execute(self.pool).await.map_err(DB::error)?;
        Ok(changed)
    }

    /// The balances (at `q.at`, at least `q.min_balance`) of the addresses with lots, in text
    /// order after `q.after`, a page of them: each address sums its own lots.
    pub async fn credit_balances(
        &self,
        q: &BalancesQuery<'_>,
    ) -> Result<Vec<(String, Credits)>, StoreError> {
        let mut b = QueryBuilder::<DB>::new("SELECT a.address, ");
        push_valid_sum(&mut b, "l.", q.at);
        b.push(" AS balance FROM addresses a JOIN credit_lots l ON l.address_id = a.id");
        if let Some(after) = q.after {
            b.push(" WHERE a.address > ").push_bind(after);
        }
        b.push(" GROUP BY a.address HAVING ");
        push_valid_sum(&mut b, "l.", q.at);
        b.push(" >= ")
            .push_bind(q.min_balance)
            .push(" ORDER BY a.address LIMIT ")
            .push_bind(
                q.limit
                    .map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX)),
            )
            .push(" OFFSET ")
            .push_bind(i64::try_from(q.offset).unwrap_or(i64::MAX));
        let rows: Vec<(String, i64)> = b
            .build_query_as()
            .fetch_all(self.pool)
            .await
            .map_err(DB::error)?;
        Ok(rows.into_iter().map(|(a, c)| (a, Credits(c))).collect())
    }

    /// How many addresses hold at least `min_balance` at `at`.
    pub async fn count_credit_balances(
        &self,
        at: Timestamp,
        min_balance: i64,
    ) -> Result<u64, StoreError> {
        let mut b = QueryBuilder::<DB>::new(
            "SELECT COUNT(*) FROM (SELECT address_id FROM credit_lots GROUP BY address_id HAVING ",
        );
        push_valid_sum(&mut b, "", at);
        b.push(" >= ").push_bind(min_balance).push(") AS t");
        let n: i64 = b
            .build_query_scalar()
            .fetch_one(self.pool)
            .await
            .map_err(DB::error)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The credits spent by expenses, of one address and/or one resource (a history row's
    /// `origin`, else its `origin_ref`).
    pub async fn consumed_credits(
        &self,
        address: Option<&str>,
        resource: Option<&str>,
    ) -> Result<Credits, StoreError> {
        let sum: i64 = consumed_query::<DB>("", address, resource)
            .build_query_scalar()
            .fetch_one(self.pool)
            .await
            .map_err(DB::error)?;
        Ok(Credits(sum))
    }
}

/// [`Reads::balance_details`] on `executor` (a pool or a connection).
pub async fn balance_details_on<'c, DB: Dialect, E: Executor<'c, Database = DB>>(
    executor: E,
    address: &str,
    at: Timestamp,
) -> Result<(Credits, Vec<BalanceDetail>), StoreError>
where
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> (Option<DB::Instant>, i64): FromRow<'r, DB::Row>,
{
    let groups: Vec<(Option<DB::Instant>, i64)> = sqlx::query_as(DB::BALANCE_GROUPS)
        .bind(address)
        .bind(DB::instant(at))
        .fetch_all(executor)
        .await
        .map_err(DB::error)?;
    let sums = groups
        .into_iter()
        .map(|(expiry, sum)| Ok((expiry.map(DB::timestamp).transpose()?, Credits(sum))))
        .collect::<Result<Vec<_>, StoreError>>()?;
    balance_details_from_sums(sums)
        .ok_or_else(|| StoreError::Overflow(format!("balance of {address}")))
}

/// The query of [`Reads::consumed_credits`], after `prefix` (`EXPLAIN` to see its plan).
pub fn consumed_query<DB: Dialect>(
    prefix: &str,
    address: Option<&str>,
    resource: Option<&str>,
) -> QueryBuilder<DB>
where
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
{
    let mut b = QueryBuilder::<DB>::new(prefix);
    b.push(
        "SELECT CAST(COALESCE(SUM(ABS(amount)), 0) AS BIGINT) FROM credit_history \
         WHERE payment_method = 'credit_expense'",
    );
    if let Some(a) = address {
        b.push(" AND address_id = (SELECT id FROM addresses WHERE address = ")
            .push_bind(a)
            .push(")");
    }
    if let Some(r) = resource {
        let value = compact::encode(r);
        b.push(" AND ")
            .push(resource_key_sql::<DB>())
            .push(" = ")
            .push_bind(compact::resource_key(&value).to_vec())
            .push(" AND ")
            .push(resource_sql::<DB>())
            .push(" = ")
            .push_bind(value);
    }
    b
}

/// A history row's resource: its origin, else its `origin_ref` (compact values).
fn resource_sql<DB: Dialect>() -> String {
    format!(
        "COALESCE(NULLIF(origin, {}), origin_ref)",
        DB::EMPTY_COMPACT
    )
}

/// The key of a history row's resource that migration 0009's consumed-credits index holds,
/// written as the index is, so that the database uses the index for an equality on it
/// ([`compact::resource_key`] gives the same key in Rust).
pub fn resource_key_sql<DB: Dialect>() -> String {
    let r = resource_sql::<DB>();
    format!(
        "(CASE WHEN length({r}) > {n} THEN substr({r}, length({r}) - {m}) ELSE {r} END)",
        n = compact::RESOURCE_KEY_BYTES,
        m = compact::RESOURCE_KEY_BYTES - 1,
    )
}

/// The sum of the lots' remainders valid at `at` (no expiry, or one after it), 0 for none;
/// `lots` prefixes the lot columns (`"l."`).
fn push_valid_sum<DB: Dialect>(b: &mut QueryBuilder<DB>, lots: &str, at: Timestamp) {
    b.push("CAST(COALESCE(SUM(CASE WHEN ")
        .push(lots)
        .push("expiration_date IS NULL OR ")
        .push(lots)
        .push("expiration_date > ")
        .push_bind(DB::instant(at))
        .push(" THEN ")
        .push(lots)
        .push("amount_remaining ELSE 0 END), 0) AS BIGINT)");
}

/// A history row (`sql_history_select!`) of any dialect.
pub fn history_row<DB: Dialect>(r: &DB::Row) -> Result<HistoryRow, StoreError>
where
    for<'r> Cols<'r, DB>: Columns,
{
    rows::history_row(&Cols::<DB>(r))
}

/// A history row as a replay reads it (`sql_replay_select!`) of any dialect.
pub fn replay_row<DB: Dialect>(address: &str, r: &DB::Row) -> Result<HistoryRow, StoreError>
where
    for<'r> Cols<'r, DB>: Columns,
{
    rows::replay_row(address, &Cols::<DB>(r))
}

/// A lot (`sql_lot_select!`) of any dialect.
pub fn lot<DB: Dialect>(r: &DB::Row) -> Result<Lot, StoreError>
where
    for<'r> Cols<'r, DB>: Columns,
{
    rows::lot(&Cols::<DB>(r))
}

/// A message record (`sql_message_select!`) of any dialect.
pub fn message_record<DB: Dialect>(r: &DB::Row) -> Result<MessageRecord, StoreError>
where
    for<'r> Cols<'r, DB>: Columns,
{
    rows::message_record(&Cols::<DB>(r))
}

/// A message record with its envelope (`sql_stored_message_select!`) of any dialect.
pub fn stored_message<DB: Dialect>(r: &DB::Row) -> Result<MessageRecord, StoreError>
where
    for<'r> Cols<'r, DB>: Columns,
{
    rows::stored_message(&Cols::<DB>(r))
}

/// What a migration run did, from the versions applied `before` and `after` it (logged).
pub fn migrated(migrator: &sqlx::migrate::Migrator, before: &[i64], after: &[i64]) -> Migrated {
    let applied: Vec<(i64, String)> = migrator
        .iter()
        .filter(|m| after.contains(&m.version) && !before.contains(&m.version))
        .map(|m| (m.version, m.description.to_string()))
        .collect();
    for (version, description) in &applied {
        tracing::info!(version, description, "schema migration applied");
    }
    Migrated {
        from: before.last().copied(),
        applied,
    }
}

/// `CASE WHEN message_timestamp < a1 THEN p0 … ELSE pn END` (one policy: its number): the
/// policy `schedule` gives a history row, by its instant.
fn push_policy_case<DB: Dialect>(b: &mut QueryBuilder<DB>, schedule: &Schedule) {
    if schedule.activations.is_empty() {
        b.push(schedule.base.code().to_string());
        return;
    }
    b.push("(CASE");
    for (until, policy) in schedule.spans() {
        match until {
            Some(until) => {
                b.push(" WHEN message_timestamp < ")
                    .push_bind(DB::instant(until))
                    .push(format!(" THEN {}", policy.code()));
            }
            None => {
                b.push(format!(" ELSE {} END)", policy.code()));
            }
        }
    }
}

/// The methods of `impl Store for` a backend whose pool is its field `pool` that both
/// backends write alike: `migrate` (running the backend's `$migrator`), `migrated` (its field
/// `migrated`, what opening it did) and the reads, each a
/// call of [`Reads`]' method of the same name.
#[macro_export]
macro_rules! pooled_reads {
    ($migrator:path) => {
        async fn migrate(&self) -> Result<$crate::Migrated, $crate::StoreError> {
            let reads = $crate::pooled::Reads::of(&self.pool);
            let database = |e: sqlx::Error| $crate::StoreError::Database(Box::new(e));
            let before = reads.applied_versions().await.map_err(database)?;
            $migrator
                .run(&self.pool)
                .await
                .map_err(|e| $crate::StoreError::Database(Box::new(e)))?;
            let after = reads.applied_versions().await.map_err(database)?;
            Ok($crate::pooled::migrated(&$migrator, &before, &after))
        }

        fn migrated(&self) -> $crate::Migrated {
            self.migrated.clone()
        }

        async fn ingest_progress(
            &self,
            source: &str,
        ) -> Result<Option<$crate::IngestProgress>, $crate::StoreError> {
            $crate::pooled::Reads::of(&self.pool)
                .ingest_progress(source)
                .await
        }

        async fn addresses(&self) -> Result<Vec<String>, $crate::StoreError> {
            $crate::pooled::Reads::of(&self.pool).addresses().await
        }

        async fn address_rows(&self) -> Result<Vec<$crate::AddressRows>, $crate::StoreError> {
            $crate::pooled::Reads::of(&self.pool).address_rows().await
        }

        async fn repair_checkpoint(&self) -> Result<Option<String>, $crate::StoreError> {
            $crate::pooled::Reads::of(&self.pool)
                .repair_checkpoint()
                .await
        }

        async fn set_repair_checkpoint(
            &self,
            last_address: Option<&str>,
        ) -> Result<(), $crate::StoreError> {
            $crate::pooled::Reads::of(&self.pool)
                .set_repair_checkpoint(last_address)
                .await
        }

        async fn consumed_credits(
            &self,
            address: Option<&str>,
            resource: Option<&str>,
        ) -> Result<::lotledger_core::Credits, $crate::StoreError> {
            $crate::pooled::Reads::of(&self.pool)
                .consumed_credits(address, resource)
                .await
        }

        async fn credit_balances(
            &self,
            q: &$crate::BalancesQuery<'_>,
        ) -> Result<Vec<(String, ::lotledger_core::Credits)>, $crate::StoreError> {
            $crate::pooled::Reads::of(&self.pool)
                .credit_balances(q)
                .await
        }

        async fn count_credit_balances(
            &self,
            at: ::lotledger_core::Timestamp,
            min_balance: i64,
        ) -> Result<u64, $crate::StoreError> {
            $crate::pooled::Reads::of(&self.pool)
                .count_credit_balances(at, min_balance)
                .await
        }

        async fn dangling(&self, check: $crate::IdCheck) -> Result<u64, $crate::StoreError> {
            $crate::pooled::Reads::of(&self.pool).dangling(check).await
        }

        async fn drain_schedule(
            &self,
        ) -> Result<Option<::lotledger_core::Schedule>, $crate::StoreError> {
            $crate::pooled::Reads::of(&self.pool).drain_schedule().await
        }

        async fn policy_conflicts(
            &self,
            schedule: &::lotledger_core::Schedule,
        ) -> Result<u64, $crate::StoreError> {
            $crate::pooled::Reads::of(&self.pool)
                .policy_conflicts(schedule)
                .await
        }

        async fn set_drain_schedule(
            &self,
            schedule: &::lotledger_core::Schedule,
            relabel: bool,
        ) -> Result<u64, $crate::StoreError> {
            $crate::pooled::Reads::of(&self.pool)
                .set_drain_schedule(schedule, relabel)
                .await
        }

        async fn table_counts(&self) -> Result<$crate::TableCounts, $crate::StoreError> {
            $crate::pooled::Reads::of(&self.pool).table_counts().await
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn instants_come_back_as_they_went_in_on_both_dialects() {
        for t in [
            at("0001-01-01T00:00:00Z"),
            at("1969-12-31T23:59:59.999999Z"),
            Timestamp::UNIX_EPOCH,
            at("2026-11-30T12:34:56.789012Z"),
            at("9999-12-31T23:59:59.999999Z"),
        ] {
            let pg = sqlx::Postgres::instant(t);
            assert_eq!(pg.unix_timestamp_nanos(), i128::from(t.as_micros()) * 1000);
            assert_eq!(sqlx::Postgres::timestamp(pg).unwrap(), t);
            assert_eq!(sqlx::Sqlite::instant(t), t.as_micros());
            assert_eq!(sqlx::Sqlite::timestamp(t.as_micros()).unwrap(), t);
        }
    }

    #[test]
    fn a_stored_instant_out_of_range_is_corruption_not_a_panic() {
        // One second before 0001-01-01T00:00:00Z.
        let year_0 = time::OffsetDateTime::from_unix_timestamp(-62_135_596_801).unwrap();
        assert!(matches!(
            sqlx::Postgres::timestamp(year_0),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            sqlx::Sqlite::timestamp(i64::MAX),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_pool_that_cannot_serve_is_unavailable_and_a_bad_row_is_not() {
        for e in [
            sqlx::Postgres::error(sqlx::Error::PoolTimedOut),
            sqlx::Sqlite::error(sqlx::Error::PoolTimedOut),
            sqlx::Postgres::error(sqlx::Error::PoolClosed),
            sqlx::Sqlite::error(sqlx::Error::PoolClosed),
        ] {
            assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
        }
        for e in [
            sqlx::Postgres::error(sqlx::Error::RowNotFound),
            sqlx::Sqlite::error(sqlx::Error::RowNotFound),
        ] {
            assert!(matches!(e, StoreError::Database(_)), "{e:?}");
        }
    }
}
