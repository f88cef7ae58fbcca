//! Figures, the stdout table and the JSON document.

use serde_json::{Map, Value, json};

use super::StoreKind;

/// How a figure is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    PerSecond,
    Micros,
    Seconds,
    Bytes,
    MiB,
    Ratio,
}

/// One measured or counted value.
#[derive(Debug, Clone)]
pub struct Figure {
    /// JSON group: `w1`, `w2`, `w3`, `w4`, `size`, `baseline`.
    pub workload: &'static str,
    /// JSON key inside the group.
    pub key: String,
    /// Table label.
    pub label: String,
    pub value: f64,
    pub unit: Unit,
    /// More values shown in the same cell (`a / b / c`), each with its own JSON key.
    pub also: Vec<(String, f64)>,
}

/// The figures of one store, in table order.
#[derive(Debug, Default)]
pub struct Figures(pub Vec<Figure>);

impl Figures {
    pub fn push(&mut self, workload: &'static str, key: &str, label: &str, value: f64, unit: Unit) {
        self.0.push(Figure {
            workload,
            key: key.to_string(),
            label: label.to_string(),
            value,
            unit,
            also: Vec::new(),
        });
    }

    /// Several values of one unit in one table cell (e.g. p50 / p99 / max).
    pub fn several(
        &mut self,
        workload: &'static str,
        label: &str,
        values: &[(String, f64)],
        unit: Unit,
    ) {
        let Some(((key, value), rest)) = values.split_first() else {
            return;
        };
        self.push(workload, key, label, *value, unit);
        if let Some(last) = self.0.last_mut() {
            last.also = rest.to_vec();
        }
    }

    pub fn count(&mut self, workload: &'static str, key: &str, label: &str, n: u64) {
        self.push(workload, key, label, n as f64, Unit::Count);
    }

    pub fn get(&self, workload: &str, key: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|f| f.workload == workload && f.key == key)
            .map(|f| f.value)
    }

    /// `{"w1": {"messages": …, …}, …}`.
    pub fn to_json(&self) -> Value {
        let mut groups: Map<String, Value> = Map::new();
        for f in &self.0 {
            let group = groups
                .entry(f.workload.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = group {
                let value = if f.unit == Unit::Count {
                    json!(f.value as u64)
                } else {
                    json!(f.value)
                };
                map.insert(f.key.clone(), value);
                for (key, value) in &f.also {
                    map.insert(key.clone(), json!(value));
                }
            }
        }
        Value::Object(groups)
    }
}

fn workload_title(w: &str) -> &str {
    match w {
        "w1" => "W1 ingest",
        "w2" => "W2 hot account",
        "w3" => "W3 reads",
        "w4" => "W4 repair/verify",
        "w5" => "W5 verified ingest",
        "w6" => "W6 HTTP intake",
        "size" => "Size",
        "baseline" => "Baseline (--batch 1, 1/10 size)",
        other => other,
    }
}

/// `1234567` → `1 234 567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn format_value(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Count | Unit::Bytes => grouped(value.max(0.0).round() as u64),
        Unit::PerSecond if value >= 100.0 => grouped(value.round() as u64),
        Unit::PerSecond => format!("{value:.1}"),
        Unit::Micros => format!("{value:.1}"),
        Unit::Seconds => format!("{value:.2}"),
        Unit::MiB => format!("{value:.1}"),
        Unit::Ratio => format!("×{value:.2}"),
    }
}

/// The table: `| workload | metric | sqlite | postgres |`, rows in the order first seen.
pub fn table(stores: &[(StoreKind, &Figures)]) -> String {
    let mut rows: Vec<(&'static str, String, String)> = Vec::new();
    for (_, figures) in stores {
        for f in &figures.0 {
            if !rows.iter().any(|(w, k, _)| *w == f.workload && *k == f.key) {
                rows.push((f.workload, f.key.clone(), f.label.clone()));
            }
        }
    }
    let columns = [StoreKind::Sqlite, StoreKind::Postgres];
    let mut lines: Vec<[String; 4]> = vec![[
        "workload".into(),
        "metric".into(),
        "sqlite".into(),
        "postgres".into(),
    ]];
    let mut last_workload = "";
    for (workload, key, label) in &rows {
        let cells = columns.map(|kind| {
            stores
                .iter()
                .find(|(k, _)| *k == kind)
                .and_then(|(_, figures)| {
                    figures
                        .0
                        .iter()
                        .find(|f| f.workload == *workload && f.key == *key)
                })
                .map_or_else(
                    || "-".to_string(),
                    |f| {
                        let mut cell = format_value(f.value, f.unit);
                        for (_, v) in &f.also {
                            cell.push_str(" / ");
                            cell.push_str(&format_value(*v, f.unit));
                        }
                        cell
                    },
                )
        });
        let [sqlite, postgres] = cells;
        let title = if *workload == last_workload {
            String::new()
        } else {
            workload_title(workload).to_string()
        };
        last_workload = workload;
        lines.push([title, label.clone(), sqlite, postgres]);
    }
    let mut widths = [0usize; 4];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        out.push('|');
        for (col, (cell, w)) in line.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            if col >= 2 {
                out.push_str(&format!(" {}{} |", " ".repeat(pad), cell));
            } else {
                out.push_str(&format!(" {}{} |", cell, " ".repeat(pad)));
            }
        }
        out.push('\n');
        if i == 0 {
            out.push('|');
            for (col, w) in widths.iter().enumerate() {
                let dashes = "-".repeat(*w);
                if col >= 2 {
                    out.push_str(&format!("-{dashes}:|"));
                } else {
                    out.push_str(&format!("-{dashes}-|"));
                }
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_json() {
        let mut a = Figures::default();
        a.count("w1", "messages", "messages", 1_234_567);
        a.push("w1", "rate", "messages/s", 12.345, Unit::PerSecond);
        let mut b = Figures::default();
        b.count("w1", "messages", "messages", 7);
        let t = table(&[(StoreKind::Sqlite, &a), (StoreKind::Postgres, &b)]);
        assert!(
            t.contains("| W1 ingest | messages   | 1 234 567 |        7 |"),
            "{t}"
        );
        assert!(
            t.contains("|           | messages/s |      12.3 |        - |"),
            "{t}"
        );
        assert_eq!(a.to_json()["w1"]["messages"], 1_234_567);
        a.several(
            "w3",
            "p50 / max",
            &[("p50".into(), 1.0), ("max".into(), 2.5)],
            Unit::Micros,
        );
        let t = table(&[(StoreKind::Sqlite, &a)]);
        assert!(t.contains("| W3 reads  | p50 / max  | 1.0 / 2.5 |"), "{t}");
        assert_eq!(a.to_json()["w3"]["max"], 2.5);
    }
}
