//! `lotledger`: flags, logging, and a call into the command. The work is in `cmd/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// mimalloc: the ingest path allocates and frees many small objects per message (JSON values,
/// rows, query arguments) beside a few large ones per batch, which glibc's allocator answers
/// with repeated consolidation of its free lists (see BENCHMARKS.md, issue 10 steps). Its purge
/// delay is set in `main` by `lotledger_alloc::tune`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A ledger of prepaid credits that expire, compatible with the Aleph.im node's credit messages.
#[derive(Parser, Debug)]
#[command(name = "lotledger", version, about)]
struct Cli {
    /// Database: sqlite://PATH (created on first use) or postgres://USER@HOST:PORT/DB.
    #[arg(
        long,
        global = true,
        env = "LOTLEDGER_DATABASE_URL",
        default_value = "sqlite://lotledger.db"
    )]
    database_url: String,

    /// Comma-separated credit whitelist (exact, case-sensitive). Also LOTLEDGER_WHITELIST.
    /// Default: the reference's address; set but empty: nobody.
    #[arg(long, global = true)]
    whitelist: Option<String>,

    /// Comma-separated channels accepted for credit posts. Also LOTLEDGER_CHANNELS.
    /// Default: ALEPH_CREDIT; set but empty: any channel.
    #[arg(long, global = true)]
    channels: Option<String>,

    /// The drain-policy schedule: `v1` (emission order, the reference's; the default), `v2`
    /// (soonest expiry first), or a policy then later ones from an instant on, e.g.
    /// `v1,v2@2027-01-01T00:00:00Z`. A message is planned by the policy in force at its own
    /// instant. The ledger keeps its schedule: without this flag the kept one applies; a
    /// change that would plan already-applied messages differently is refused (see `policy
    /// set --rederive`).
    #[arg(long, global = true, env = "LOTLEDGER_POLICY")]
    policy: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the HTTP API (the Aleph node's message intake and credit reads).
    Serve(cmd::serve::Args),
    /// Apply Aleph messages from JSON-lines files (`-` reads standard input).
    Ingest(cmd::ingest::Args),
    /// Follow another node: apply the credit messages it processed, verified, from where the
    /// last sync stopped (--follow: keep polling).
    Sync(cmd::sync::Args),
    /// Insert raw credit_history rows (JSON lines or a JSON array), then rebuild the lots of the
    /// addresses they touch (moving a ledger from another node).
    ImportHistory(cmd::import::Args),
    /// The credit balance of an address.
    Balance(cmd::read::BalanceArgs),
    /// History rows of an address or of one message, sorted by (credit_ref, credit_index).
    History(cmd::read::HistoryArgs),
    /// Live lots (remainder above 0, expired or not) of an address, in emission order.
    Lots(cmd::read::LotsArgs),
    /// The recorded status of a message.
    Message(cmd::read::MessageArgs),
    /// What messages would do, written nowhere: each message of FILE (`-`: standard input)
    /// dry-run in turn against the ledger as the ones before it would leave it. With
    /// --address: where that address's balance comes from (grants, the debits that took the
    /// rest), from its history by replay.
    Explain(cmd::explain::Args),
    /// Show or change the ledger's drain-policy schedule.
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCommand),
    /// Rebuild the lot cache of every address from history (resumes an interrupted run).
    Repair(cmd::maintain::RepairArgs),
    /// Compare the lot cache with a replay of history, without writing; exit 1 on drift (and,
    /// with --integrity, on a row whose ids name no address or reference).
    Verify(cmd::maintain::VerifyArgs),
    /// Create or upgrade the schema (every command also does this on first use).
    Migrate,
    /// Measure ingest, drains, reads, repair and verify on fresh stores with generated
    /// workloads; prints one table (see BENCHMARKS.md). Ignores --database-url, --whitelist
    /// and --channels: its stores are fresh, its rules the defaults.
    Bench(lotledger_bench::Args),
}

fn main() -> ExitCode {
    // Before the work allocates: how long freed memory stays mapped (see lotledger-alloc).
    lotledger_alloc::tune();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOTLEDGER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: the store's errors already show their
/// source in their own text, which `{:#}` would print again for every level.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_line_names_each_cause_once() {
        /// Shows its source in its own text, as the store's errors do.
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "while executing migration 5: {}", self.0)
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let io = std::io::Error::other("disk full");
        let e = anyhow::Error::new(Outer(io)).context("opening the ledger");
        assert_eq!(
            super::error_line(&e),
            "opening the ledger: while executing migration 5: disk full"
        );
        let plain = anyhow::anyhow!("bad input").context("reading f");
        assert_eq!(super::error_line(&plain), "reading f: bad input");
    }
}
