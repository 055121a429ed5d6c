//! Expected intervals are printed by scripts/check_win_rate.py, which calls statsmodels'
//! `proportion_confint(method="wilson")` (statsmodels 0.15.0), an independent implementation.

use super::*;
use crate::domain::Outcome::{A, B, BothBad, Tie};

/// statsmodels and this module evaluate the same formula in a different order: they agree to a
/// few ulps; 1e-12 still catches any formula difference.
const TOLERANCE: f64 = 1e-12;

#[track_caller]
fn assert_interval(got: Option<Interval>, low: f64, high: f64) {
    let got = got.expect("an interval");
    assert!((got.low - low).abs() < TOLERANCE, "low: got {}, want {low}", got.low);
    assert!((got.high - high).abs() < TOLERANCE, "high: got {}, want {high}", got.high);
}

fn outcomes(wins: usize, losses: usize, ties: usize, both_bad: usize) -> Vec<Outcome> {
    [(A, wins), (B, losses), (Tie, ties), (BothBad, both_bad)]
        .into_iter()
        .flat_map(|(outcome, count)| std::iter::repeat_n(outcome, count))
        .collect()
}

#[test]
fn z_95_is_the_normal_quantile_scipy_gives() {
    // scipy.stats.norm.isf(0.025)
    assert_eq!(Z_95, 1.9599639845400545);
}

#[test]
fn wilson_matches_statsmodels_on_8_of_10() {
    assert_interval(wilson_interval(8.0, 10.0, Z_95), 0.49016247153664183, 0.9433178485456247);
}

#[test]
fn wilson_takes_any_z() {
    // z = 1 is a 68.27% interval: statsmodels with alpha = 2 * norm.sf(1).
    assert_interval(wilson_interval(8.0, 10.0, 1.0), 0.6490775408296778, 0.8963770046248676);
}

#[test]
fn wilson_at_the_edges_stays_inside_0_1_and_is_not_degenerate() {
    assert_interval(wilson_interval(0.0, 10.0, Z_95), 0.0, 0.27753279986288926);
    assert_interval(wilson_interval(10.0, 10.0, Z_95), 0.7224672001371106, 1.0);
    assert_interval(wilson_interval(1.0, 1.0, Z_95), 0.2065493143772374, 1.0);
}

#[test]
fn no_verdicts_give_no_rate_and_no_interval() {
    assert_eq!(wilson_interval(0.0, 0.0, Z_95), None);
    let report = win_rate::<&str>(&[], Z_95);
    assert_eq!(report.overall, WinRate::default());
    assert_eq!(report.overall.rate, None);
    assert!(report.by_language.is_empty());
    // Nothing in the JSON is NaN (serde_json would write null for it, silently).
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains("NaN"), "{json}");
}

#[test]
fn ties_and_both_bad_count_half() {
    let rate = WinRate::from_outcomes(outcomes(5, 2, 2, 1), Z_95);
    assert_eq!((rate.wins, rate.losses, rate.ties, rate.both_bad, rate.n), (5, 2, 2, 1, 10));
    assert_eq!(rate.successes(), 6.5);
    assert_eq!(rate.rate, Some(0.65));
    // Fractional successes: statsmodels' proportion_confint(6.5, 10) gives the same interval.
    assert_interval(rate.interval, 0.35367072351116874, 0.8630694365299645);
}

#[test]
fn report_splits_by_language_and_keeps_the_overall_total() {
    // en: 3 wins, 1 loss, 1 tie -> 3.5 of 5; de: 1 win, 2 losses, 1 both-bad -> 1.5 of 4.
    let mut verdicts: Vec<(String, Outcome)> = Vec::new();
    for (language, counts) in [("en", outcomes(3, 1, 1, 0)), ("de", outcomes(1, 2, 0, 1))] {
        verdicts.extend(counts.into_iter().map(|o| (language.to_string(), o)));
    }
    // Interleave the languages: grouping must not depend on input order.
    verdicts.sort_by_key(|(_, outcome)| outcome.as_str());
    let report = win_rate(&verdicts, Z_95);

    assert_eq!(report.z, Z_95);
    assert_eq!(report.by_language.keys().collect::<Vec<_>>(), ["de", "en"]);
    let en = &report.by_language["en"];
    assert_eq!((en.wins, en.losses, en.ties, en.both_bad, en.n), (3, 1, 1, 0, 5));
    assert_eq!(en.rate, Some(0.7));
    assert_interval(en.interval, 0.29879105407239326, 0.9274159600143366);
    let de = &report.by_language["de"];
    assert_eq!((de.wins, de.losses, de.ties, de.both_bad, de.n), (1, 2, 0, 1, 4));
    assert_eq!(de.rate, Some(0.375));
    assert_interval(de.interval, 0.09189922917901217, 0.7805734799346372);
    let all = &report.overall;
    assert_eq!((all.wins, all.losses, all.ties, all.both_bad, all.n), (4, 3, 1, 1, 9));
    assert_interval(all.interval, 0.26665129349549305, 0.8112214789023355);
}

#[test]
fn report_round_trips_through_json() {
    let verdicts = [("en", A), ("en", Tie), ("fr", B)];
    let report = win_rate(&verdicts, Z_95);
    let json = serde_json::to_string(&report).unwrap();
    let back: WinRateReport = serde_json::from_str(&json).unwrap();
    // serde_json's default float parser may be one ulp off, so the floats are compared loosely.
    assert_eq!(back.by_language.keys().collect::<Vec<_>>(), ["en", "fr"]);
    for (got, want) in
        back.by_language.values().chain([&back.overall]).zip(report.by_language.values().chain([&report.overall]))
    {
        assert_eq!(
            (got.wins, got.losses, got.ties, got.both_bad, got.n),
            (want.wins, want.losses, want.ties, want.both_bad, want.n)
        );
        assert_eq!(got.rate, want.rate);
        let (got, want) = (got.interval.unwrap(), want.interval.unwrap());
        assert!((got.low - want.low).abs() < 1e-15 && (got.high - want.high).abs() < 1e-15);
    }
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["by_language"]["fr"]["losses"], 1);
    assert_eq!(value["overall"]["rate"], 0.5);
}
