//! The report as JSON, as CSV (one row per break) and as a readable summary.

use std::fmt::Write as _;

use super::{BreakType, ReconcileError, Report};

/// The whole report as one JSON object.
pub fn to_json(report: &Report) -> Result<String, ReconcileError> {
    serde_json::to_string_pretty(report).map_err(|e| ReconcileError::Storage(e.to_string()))
}

/// The columns of [`to_csv`].
pub const CSV_HEADER: [&str; 10] =
    ["id", "status", "type", "key", "trade_id", "found_by", "expected", "actual", "note", "as_of"];

/// One row per break, with a header; fields quoted where needed.
pub fn to_csv(report: &Report) -> Result<String, ReconcileError> {
    let err = |e: &dyn std::fmt::Display| ReconcileError::Storage(format!("CSV: {e}"));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER).map_err(|e| err(&e))?;
    let as_of = report.as_of.to_rfc3339();
    for b in &report.breaks {
        let id = b.id.map(|i| i.to_string()).unwrap_or_default();
        let status = b.status.map(|s| s.as_str()).unwrap_or_default();
        w.write_record([
            id.as_str(),
            status,
            b.kind.as_str(),
            &b.key,
            b.trade_id.as_deref().unwrap_or_default(),
            b.found_by.as_str(),
            &b.expected,
            &b.actual,
            &b.note,
            &as_of,
        ])
        .map_err(|e| err(&e))?;
    }
    let bytes = w.into_inner().map_err(|e| err(&e))?;
    String::from_utf8(bytes).map_err(|e| err(&e))
}

/// Counts per phase and type, then each break on one line.
pub fn summary(report: &Report) -> String {
    let mut s = String::new();
    let blocks_units: u128 = report.differing_blocks.iter().map(|d| u128::from(d.end - d.start) + 1).sum();
    // Writing to a String cannot fail.
    let _ = writeln!(s, "reconciliation {} .. {}", report.from, report.as_of);
    let _ = writeln!(
        s,
        "exchange: {} obligations, {} confirmed in the window; registry: {} transfers; {} matched",
        report.obligations, report.confirmed, report.registry_transfers, report.matched
    );
    let _ =
        writeln!(s, "phase 1 totals: {} buckets, {} differ", report.buckets, report.differing_buckets.len());
    let _ = writeln!(
        s,
        "phase 2 blocks: {} differing blocks ({} serials){}",
        report.differing_blocks.len(),
        blocks_units,
        match report.buckets_without_blocks {
            0 => String::new(),
            n => format!(", {n} buckets without recorded blocks"),
        }
    );
    let _ = writeln!(s, "phase 3 trail: {} statement lines touch a differing block", report.trail_lines);
    let counts: Vec<String> = BreakType::ALL
        .iter()
        .map(|t| format!("{} {}", t.as_str(), report.counts.get(t).copied().unwrap_or(0)))
        .collect();
    let _ = writeln!(s, "breaks: {} ({})", report.breaks.len(), counts.join(", "));
    if let Some(run) = &report.run {
        let ids = |v: &[i64]| v.iter().map(|i| format!("#{i}")).collect::<Vec<_>>().join(" ");
        let _ = writeln!(
            s,
            "run {}: {} new, {} reopened, {} no longer found{}",
            run.run,
            run.opened.len(),
            run.reopened.len(),
            run.not_found.len(),
            if run.not_found.is_empty() { String::new() } else { format!(" ({})", ids(&run.not_found)) }
        );
    }
    for b in &report.breaks {
        let id = b.id.map(|i| format!("#{i} ")).unwrap_or_default();
        let status = b.status.map(|s| format!(" [{s}]")).unwrap_or_default();
        let _ = writeln!(
            s,
            "  {id}{} {}{status}: expected {}, registry {} (by {}){}",
            b.kind,
            b.key,
            b.expected,
            b.actual,
            b.found_by.as_str(),
            if b.note.is_empty() { String::new() } else { format!("; {}", b.note) }
        );
    }
    s
}
