//! The QA reports as plain text, shared by `verdict agreement`, `verdict report` and the
//! TUI's QA screen.

use std::fmt::Write;

use super::report::{self, Slice};
use crate::store::{Result, Store};
use crate::table;

fn fmt(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into())
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.0}%", v * 100.0)).unwrap_or_else(|| "–".into())
}

/// Agreement overall, by language, domain and reason tag, pairwise, with confusion matrices.
pub fn agreement(store: &Store) -> Result<String> {
    let overview = report::overview(store)?;
    let o = &overview.overall;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} pairs judged by 2+ people ({} ratings from {} annotators; {} pairs judged once are left out)",
        o.overlap_units,
        o.overlap_ratings,
        o.raters,
        o.units - o.overlap_units
    );
    let _ = writeln!(
        out,
        "Krippendorff's alpha {} nominal, {} ordinal (left > tie > right) — {}",
        fmt(o.alpha_nominal),
        fmt(o.alpha_ordinal),
        o.interpretation
    );
    let _ = writeln!(
        out,
        "Fleiss' kappa {} · Gwet's AC1 {} · percent agreement {}",
        fmt(o.fleiss_kappa),
        fmt(o.gwet_ac1),
        fmt(o.percent)
    );
    let _ = writeln!(out, "thresholds: alpha >= 0.8 reliable · 0.667-0.8 tentative · below: revise the guidelines");
    let counts: Vec<String> =
        overview.categories.iter().zip(&o.category_counts).map(|(c, n)| format!("{c} {n}")).collect();
    let _ = writeln!(out, "outcomes on those pairs: {}", counts.join(" · "));
    let mut slices = |title: &str, slices: &[Slice]| {
        let rows: Vec<Vec<String>> = slices
            .iter()
            .filter(|s| s.report.overlap_units > 0)
            .map(|s| {
                let r = &s.report;
                vec![
                    s.key.clone(),
                    r.overlap_units.to_string(),
                    fmt(r.alpha_nominal),
                    fmt(r.fleiss_kappa),
                    fmt(r.gwet_ac1),
                    fmt(r.percent),
                ]
            })
            .collect();
        if !rows.is_empty() {
            let _ = write!(out, "\n{}", table::render(&[title, "pairs", "alpha", "kappa", "AC1", "agree"], &rows));
        }
    };
    slices("language", &overview.by_language);
    slices("domain", &overview.by_domain);
    slices("reason tag", &overview.by_reason);
    if !o.pairwise.is_empty() {
        let name = |id: u64| overview.annotators.get(&id).cloned().unwrap_or_else(|| id.to_string());
        let rows: Vec<Vec<String>> = o
            .pairwise
            .iter()
            .map(|p| {
                vec![
                    format!("{} × {}", name(p.rater_a), name(p.rater_b)),
                    p.shared_units.to_string(),
                    fmt(p.kappa),
                    fmt(p.percent),
                ]
            })
            .collect();
        let _ = write!(out, "\n{}", table::render(&["annotators", "shared", "Cohen's kappa", "agree"], &rows));
        for p in &o.pairwise {
            let _ = writeln!(
                out,
                "\nconfusion {} (rows) × {} (columns): a better, tie, b better, both bad",
                name(p.rater_a),
                name(p.rater_b)
            );
            for row in &p.confusion {
                let _ = writeln!(out, "  {}", row.iter().map(|n| format!("{n:>4}")).collect::<String>());
            }
        }
    }
    Ok(out)
}

/// One row per annotator: speed, position bias, tie and both-bad rates, gold, agreement.
pub fn annotators(store: &Store) -> Result<String> {
    let reports = report::annotator_reports(store)?;
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.judgments.to_string(),
                r.median_seconds.map(|s| format!("{s:.0}s")).unwrap_or_else(|| "–".into()),
                pct(r.left_rate),
                pct(r.tie_rate),
                pct(r.both_bad_rate),
                format!("{} ({})", pct(r.gold_accuracy), r.gold_items),
                format!("{} ({})", pct(r.agreement_with_resolved), r.resolved_items),
            ]
        })
        .collect();
    let mut out = table::render(
        &["annotator", "judgments", "median", "chose left", "tie", "both bad", "gold acc.", "agrees w/ resolved"],
        &rows,
    );
    let trend: Vec<Vec<String>> = reports
        .iter()
        .flat_map(|r| {
            r.gold_by_week
                .iter()
                .map(|(week, n, acc)| vec![r.name.clone(), week.clone(), n.to_string(), pct(Some(*acc))])
        })
        .collect();
    if !trend.is_empty() {
        out.push_str("\ngold accuracy over time\n");
        out.push_str(&table::render(&["annotator", "week", "gold items", "accuracy"], &trend));
    }
    Ok(out)
}
