//! W3 serve memory: how much a real `lotledger serve` process keeps per request once warm,
//! with its metrics upkeep on schedule (not scraped, and scraped every second) and with the
//! upkeep out of reach (what `serve` did before issue 13: samples kept until a scrape).

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::error::{Context, Result};

use super::http;
use super::report::{Figures, Unit};

/// The configurations measured: key, label, upkeep seconds, scrape `/metrics` every second.
const RUNS: [(&str, &str, &str, bool); 3] = [
    (
        "serve_bytes_per_request",
        "serve RSS growth per request after warm-up, not scraped, bytes",
        "5",
        false,
    ),
    (
        "serve_bytes_per_request_scraped",
        "serve RSS growth per request after warm-up, scraped every 1 s, bytes",
        "5",
        true,
    ),
    (
        "serve_bytes_per_request_no_upkeep",
        "serve RSS growth per request after warm-up, no upkeep (before issue 13), bytes",
        "3600",
        false,
    ),
];

/// A `lotledger serve` child, killed when dropped.
struct Served(Child, SocketAddr);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(url: &str, upkeep_secs: &str) -> Result<Served> {
    let exe = std::env::current_exe().context("locating the lotledger binary")?;
    let mut child = Command::new(exe)
        .args(["--database-url", url, "serve", "--listen", "127.0.0.1:0"])
        .args(["--metrics-upkeep-secs", upkeep_secs])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting lotledger serve")?;
    let stdout = child.stdout.take().context("no stdout from serve")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the address serve prints")?;
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("serve printed {line:?}"))?;
    Ok(Served(child, addr))
}

fn resident_bytes(pid: u32) -> Result<u64> {
    super::sys::rss_bytes_of(pid).with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Runs each configuration: a warm-up of a quarter of `requests`, the resident size, then
/// `requests` more and the resident size again.
pub async fn serve_growth(
    url: &str,
    paths: &[String],
    requests: u64,
    connections: usize,
    figures: &mut Figures,
) -> Result<()> {
    for (key, label, upkeep, scraped) in RUNS {
        let served = start(url, upkeep)?;
        let bar = indicatif::ProgressBar::hidden();
        let run = |n: u64| {
            http::load(
                served.1,
                paths.iter().map(|p| http::get(served.1, p)).collect(),
                connections,
                n,
                Duration::from_secs(600),
                bar.clone(),
            )
        };
        let warm = run(requests / 4).await?;
        if warm.non_ok > 0 || warm.failed_connections > 0 {
            bail!(
                "serve memory warm-up: {} non-200, {} failed connections",
                warm.non_ok,
                warm.failed_connections
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = resident_bytes(served.0.id())?;
        let scraper = scraped.then(|| {
            let addr = served.1;
            let metrics = vec![http::get(addr, "/metrics")];
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = http::load(
                        addr,
                        metrics.clone(),
                        1,
                        1,
                        Duration::from_secs(5),
                        indicatif::ProgressBar::hidden(),
                    )
                    .await;
                }
            })
        });
        let load = run(requests).await?;
        if let Some(task) = scraper {
            task.abort();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = resident_bytes(served.0.id())?;
        let done = load.latencies_nanos.len().max(1) as f64;
        figures.push(
            "w3",
            key,
            label,
            (after as f64 - before as f64) / done,
            Unit::Bytes,
        );
    }
    Ok(())
}
