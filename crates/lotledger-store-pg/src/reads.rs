//! Connections for balance reads, kept apart from sqlx's pool. sqlx pings every connection it
//! gets back (a round trip, and a wake-up of the server's backend, after every call); taking
//! balance reads off it gave HTTP balances ×1.19–1.28 on the bench machine (BENCHMARKS.md,
//! fifteenth session). A connection comes back here only after a call that
//! succeeded (one that failed, or was dropped mid-call, is closed), and is pinged before reuse
//! under the pool's own rule: idle for [`PING_AFTER_IDLE`], or a connection lost shortly before.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lotledger_store::StoreError;
use lotledger_store::pooled::lost_connection;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::PING_AFTER_IDLE;
use crate::wrappers::db_err;

/// At most this many balance reads at once (and open connections for them).
const READ_CONNECTIONS: usize = 8;
/// How long a read waits for a connection before it gives up ("unavailable"), as sqlx's pool
/// of the store does.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub(crate) struct ReadConns {
    options: PgConnectOptions,
    /// Connections between calls, with when each came back; the last one back is taken first.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    permits: Semaphore,
}

/// A connection for one read: [`ReadConn::keep`] after a call that succeeded gives it back;
/// dropped otherwise, it is closed.
pub(crate) struct ReadConn<'a> {
    conns: &'a ReadConns,
    pub(crate) conn: PgConnection,
    _permit: SemaphorePermit<'a>,
}

impl ReadConns {
    pub(crate) fn new(options: PgConnectOptions) -> ReadConns {
        ReadConns {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(READ_CONNECTIONS),
        }
    }

    /// A live connection, idle or new, within [`ACQUIRE_TIMEOUT`] (the wait for a turn, the
    /// pings and the connect included, as the pool's acquire timeout does). A timer is set only
    /// for what may wait: a read that finds a free turn and a connection that needs no ping
    /// starts none.
    pub(crate) async fn acquire(&self) -> Result<ReadConn<'_>, StoreError> {
        let deadline = tokio::time::Instant::now() + ACQUIRE_TIMEOUT;
        let unavailable = |e: &dyn std::fmt::Display| StoreError::Unavailable(e.to_string().into());
        let permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => tokio::time::timeout_at(deadline, self.permits.acquire())
                .await
                .map_err(|e| unavailable(&e))?
                .map_err(|e| unavailable(&e))?,
        };
        loop {
            let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let conn = match idle {
                Some((mut conn, since)) => {
                    let suspect = since.elapsed() >= PING_AFTER_IDLE
                        || lost_connection::within(PING_AFTER_IDLE);
                    if suspect
                        && !matches!(
                            tokio::time::timeout_at(deadline, conn.ping()).await,
                            Ok(Ok(()))
                        )
                    {
                        // Gone (or too slow to answer): the next idle one, or a new one.
                        continue;
                    }
                    conn
                }
                None => tokio::time::timeout_at(deadline, self.options.connect())
                    .await
                    .map_err(|e| unavailable(&e))?
                    .map_err(db_err)?,
            };
            return Ok(ReadConn {
                conns: self,
                conn,
                _permit: permit,
            });
        }
    }
}

impl ReadConn<'_> {
    /// Gives the connection back for the next read (after a call that succeeded).
    pub(crate) fn keep(self) {
        if let Ok(mut idle) = self.conns.idle.lock() {
            idle.push((self.conn, Instant::now()));
        }
    }
}
