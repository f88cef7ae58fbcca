//! WAL checkpoints mostly off the write path.
//!
//! SQLite's automatic checkpoint runs inside the `COMMIT` that takes the WAL past 1 000 pages:
//! the committing writer copies the WAL's pages into the database file and waits for that
//! file's fsync. W1's profile put that at half of the writer's commit time (BENCHMARKS.md,
//! issue 10, ninth session), and the writer is the pipeline's critical path. Here the write
//! connection reports the WAL's size after each commit (a WAL hook replaces the automatic
//! checkpoint), and:
//! - from [`CHECKPOINT_PAGES`] on, a thread of the store's own runs a `PASSIVE` checkpoint on
//!   a connection of its own, while the writer goes on with the next batch;
//! - from [`IN_PLACE_PAGES`] on, the writer runs a `FULL` checkpoint itself. The WAL restarts
//!   from its beginning only when a write transaction begins on a WAL checkpointed to its end,
//!   which a busy writer never finds while the thread is still copying. Without this the WAL
//!   would grow for as long as writes keep coming (measured: 358 MiB after W1, against 47 MiB
//!   with SQLite's own checkpoints); with it, about as large as before.
//!
//! Durability is unchanged: a commit is durable once its WAL frames are synced, which the
//! commit still does itself. Should the thread be gone, the writer checkpoints in place.

use std::cell::Cell;
use std::os::raw::c_int;
use std::path::Path;
use std::sync::mpsc::{self, SyncSender, TrySendError};

use lotledger_store::StoreError;
use rusqlite::hooks::Wal;
use rusqlite::{Connection, OpenFlags};

use crate::wrappers::{open_connection, sqlite_err as err};

/// WAL pages after which the thread is asked for a checkpoint: SQLite's own automatic threshold.
pub(crate) const CHECKPOINT_PAGES: c_int = 1000;
/// WAL pages (32 MiB of 4 KiB pages) after which the writer checkpoints in place, to the end.
pub(crate) const IN_PLACE_PAGES: c_int = 8000;

thread_local! {
    /// The WAL's size in pages after the last commit on this thread (0: none reported).
    static WAL_PAGES: Cell<c_int> = const { Cell::new(0) };
}

/// The write connection's WAL hook: notes the WAL's size for [`Checkpointer::after_commit`],
/// which runs on the same thread right after the `COMMIT`.
fn note_wal_pages(_wal: &Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(pages);
    Ok(())
}

/// Which checkpoint a commit calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checkpoint {
    /// None from the writer (the thread may have been asked for one).
    None,
    /// A `FULL` checkpoint by the writer, in place.
    InPlace,
}

/// The background checkpointer of one store's file.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    wake: SyncSender<()>,
}

impl Checkpointer {
    /// Starts the thread on a connection of its own to `filename`, and moves `writer`'s
    /// automatic checkpoints to [`Checkpointer::after_commit`].
    pub(crate) fn start(writer: &Connection, filename: &Path) -> Result<Checkpointer, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = open_connection(filename, flags, "PRAGMA synchronous = FULL;")?;
        // One pending request is enough: requests made while one waits are the same request.
        let (wake, requests) = mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("lotledger-checkpoint".into())
            .spawn(move || {
                // Ends when the store (the last sender) is dropped.
                while requests.recv().is_ok() {
                    if let Err(e) = checkpoint(&conn, "PASSIVE") {
                        tracing::warn!(error = %e, "background WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| StoreError::Database(Box::new(e)))?;
        writer.wal_hook(Some(note_wal_pages));
        Ok(Checkpointer { wake })
    }

    /// Forgets any size noted before a `COMMIT` about to run on this thread.
    pub(crate) fn before_commit() {
        WAL_PAGES.set(0);
    }

    /// After a `COMMIT` on this thread: asks the thread for a checkpoint, or says the writer
    /// must run one, by the WAL's size.
    pub(crate) fn after_commit(&self) -> Checkpoint {
        let pages = WAL_PAGES.replace(0);
        if pages >= IN_PLACE_PAGES {
            return Checkpoint::InPlace;
        }
        if pages < CHECKPOINT_PAGES {
            return Checkpoint::None;
        }
        match self.wake.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => Checkpoint::None,
            Err(TrySendError::Disconnected(())) => Checkpoint::InPlace,
        }
    }
}

/// The writer's checkpoint ([`Checkpoint::InPlace`]): `FULL` waits (the busy timeout) for the
/// other writers and readers, and copies all of the WAL.
pub(crate) fn checkpoint_in_place(conn: &Connection) -> Result<(), StoreError> {
    checkpoint(conn, "FULL")
}

/// `PRAGMA wal_checkpoint(mode)` on `conn`, `mode` one of this module's two: the thread's
/// `PASSIVE` copies what no reader still needs and never waits; for `FULL` see
/// [`checkpoint_in_place`].
fn checkpoint(conn: &Connection, mode: &str) -> Result<(), StoreError> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpointer() -> (Checkpointer, mpsc::Receiver<()>) {
        let (wake, requests) = mpsc::sync_channel(1);
        (Checkpointer { wake }, requests)
    }

    /// The WAL's size after a commit picks who checkpoints: nobody below the threshold, the
    /// thread (one request, however many commits ask) from it, the writer from the in-place
    /// size or when the thread is gone.
    #[test]
    fn the_wal_size_picks_who_checkpoints() {
        let (checkpointer, requests) = checkpointer();
        let after = |pages| {
            Checkpointer::before_commit();
            WAL_PAGES.set(pages);
            checkpointer.after_commit()
        };
        assert_eq!(after(CHECKPOINT_PAGES - 1), Checkpoint::None);
        assert!(
            requests.try_recv().is_err(),
            "no request below the threshold"
        );
        assert_eq!(after(CHECKPOINT_PAGES), Checkpoint::None);
        assert_eq!(after(CHECKPOINT_PAGES + 500), Checkpoint::None);
        assert!(requests.try_recv().is_ok(), "the thread is asked");
        assert!(
            requests.try_recv().is_err(),
            "once for requests made while one waits"
        );
        assert_eq!(after(IN_PLACE_PAGES), Checkpoint::InPlace);
        assert_eq!(WAL_PAGES.get(), 0, "a size is taken once");
        assert_eq!(checkpointer.after_commit(), Checkpoint::None);
        drop(requests);
        assert_eq!(
            after(CHECKPOINT_PAGES),
            Checkpoint::InPlace,
            "the thread is gone"
        );
    }
}
