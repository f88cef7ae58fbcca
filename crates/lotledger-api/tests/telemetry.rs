//! The exporter behind `/metrics` keeps every series and counts every sample right when its
//! upkeep folds samples into buckets between scrapes (as `serve` does on a schedule).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use lotledger_api::telemetry::{LATENCY_BUCKETS, REQUEST_DURATION, recorder};

/// Latencies in seconds, with how many of each.
const SAMPLES: [(f64, u64); 6] = [
    (0.00005, 40),
    (0.0003, 25),
    (0.0009, 10),
    (0.004, 5),
    (0.2, 3),
    (7.0, 1),
];

#[test]
fn buckets_count_every_sample_across_upkeeps() {
    let (recorder, handle) = recorder().unwrap();
    metrics::with_local_recorder(&recorder, || {
        for (i, (latency, n)) in SAMPLES.iter().enumerate() {
            for _ in 0..*n {
                metrics::histogram!(REQUEST_DURATION, "method" => "GET", "route" => "/r", "status" => "200")
                    .record(*latency);
            }
            // Upkeep between batches of samples, as the server's schedule does.
            if i % 2 == 0 {
                handle.run_upkeep();
            }
        }
        metrics::counter!("lotledger_messages_total", "kind" => "expense", "outcome" => "processed")
            .increment(3);
    });
    let text = handle.render();
    let series = r#"method="GET",route="/r",status="200""#;
    let line = |le: &str| format!("{REQUEST_DURATION}_bucket{{{series},le=\"{le}\"}} ");
    for bound in LATENCY_BUCKETS {
        let expected: u64 = SAMPLES
            .iter()
            .filter(|(l, _)| *l <= bound)
            .map(|(_, n)| n)
            .sum();
        let want = format!("{}{expected}", line(&bound.to_string()));
        assert!(
            text.lines().any(|l| l == want),
            "missing {want:?} in\n{text}"
        );
    }
    let total: u64 = SAMPLES.iter().map(|(_, n)| n).sum();
    assert!(
        text.lines()
            .any(|l| l == format!("{}{total}", line("+Inf"))),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == format!("{REQUEST_DURATION}_count{{{series}}} {total}")),
        "{text}"
    );
    let sum: f64 = SAMPLES.iter().map(|(l, n)| l * *n as f64).sum();
    let sum_line = text
        .lines()
        .find(|l| l.starts_with(&format!("{REQUEST_DURATION}_sum{{")))
        .unwrap();
    let got: f64 = sum_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((got - sum).abs() < 1e-9, "{sum_line} vs {sum}");
    assert!(
        text.contains(r#"lotledger_messages_total{kind="expense",outcome="processed"} 3"#),
        "{text}"
    );
    // A render after more upkeeps and no new samples still reports the same counts.
    handle.run_upkeep();
    handle.run_upkeep();
    assert_eq!(handle.render(), text);
}
