//! Tests against the fixtures of scripts/make_agreement_fixtures.py (scikit-learn, statsmodels,
//! the `krippendorff` package, irrCAC, and published worked examples) and on edge cases.

use serde_json::Value;

use super::*;

/// Fixture values are computed in f64 by other code (other summation orders): the results agree
/// to ~1e-15; 1e-9 leaves room for that and still catches any formula difference.
const TOLERANCE: f64 = 1e-9;

const FIXTURES: &[(&str, &str)] = &[
    ("cohen_2x2_hand", include_str!("../../../tests/fixtures/agreement/cohen_2x2_hand.json")),
    ("krippendorff_2011", include_str!("../../../tests/fixtures/agreement/krippendorff_2011.json")),
    ("fleiss_wikipedia", include_str!("../../../tests/fixtures/agreement/fleiss_wikipedia.json")),
    ("random_2raters_4cat", include_str!("../../../tests/fixtures/agreement/random_2raters_4cat.json")),
    ("random_3raters_3cat", include_str!("../../../tests/fixtures/agreement/random_3raters_3cat.json")),
    ("random_5raters_missing_4cat", include_str!("../../../tests/fixtures/agreement/random_5raters_missing_4cat.json")),
    ("rare_ties_paradox", include_str!("../../../tests/fixtures/agreement/rare_ties_paradox.json")),
    ("binary_tag_4raters_missing", include_str!("../../../tests/fixtures/agreement/binary_tag_4raters_missing.json")),
];

struct Fixture {
    name: &'static str,
    doc: Value,
    categories: usize,
    ratings: Vec<Rating>,
}

fn fixtures() -> Vec<Fixture> {
    FIXTURES
        .iter()
        .map(|&(name, text)| {
            let doc: Value = serde_json::from_str(text).expect(name);
            let categories = doc["categories"].as_u64().unwrap() as usize;
            let ratings = doc["ratings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let r = r.as_array().unwrap();
                    let n = |i: usize| r[i].as_u64().unwrap();
                    Rating::new(n(0), n(1), n(2) as usize)
                })
                .collect();
            Fixture { name, doc, categories, ratings }
        })
        .collect()
}

fn fixture(name: &str) -> Fixture {
    fixtures().into_iter().find(|f| f.name == name).unwrap()
}

#[track_caller]
fn assert_close(what: &str, got: Option<f64>, want: &Value, tolerance: f64) {
    match (got, want.as_f64()) {
        (Some(got), Some(want)) => {
            assert!((got - want).abs() <= tolerance, "{what}: got {got}, want {want} (diff {:e})", (got - want).abs())
        }
        (None, None) if want.is_null() => {}
        _ => panic!("{what}: got {got:?}, want {want}"),
    }
}

/// The two raters' label pairs on their shared units, by unit.
fn two_rater_pairs(ratings: &[Rating]) -> Vec<(usize, usize)> {
    let units = by_unit(ratings, usize::MAX);
    let mut raters: Vec<u64> = ratings.iter().map(|r| r.rater).collect();
    raters.sort_unstable();
    raters.dedup();
    assert_eq!(raters.len(), 2);
    units.values().filter_map(|u| Some((*u.get(&raters[0])?, *u.get(&raters[1])?))).collect()
}

fn statistic(f: &Fixture, key: &str) -> Option<f64> {
    let (r, q) = (&f.ratings, f.categories);
    match key {
        "percent_agreement" => percent_agreement(r),
        "cohen_kappa" => cohen_kappa(&two_rater_pairs(r), q),
        "fleiss_kappa" => fleiss_kappa(r, q),
        "alpha_nominal" => krippendorff_alpha(r, q, Metric::Nominal),
        "alpha_ordinal" => krippendorff_alpha(r, q, Metric::Ordinal),
        "gwet_ac1" => gwet_ac1(r, q),
        _ => panic!("{}: unknown statistic {key}", f.name),
    }
}

#[test]
fn fixtures_match_independent_implementations() {
    let mut checked = 0;
    for f in fixtures() {
        for (key, want) in f.doc["expected"].as_object().unwrap() {
            assert_close(&format!("{} {key}", f.name), statistic(&f, key), want, TOLERANCE);
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} values checked");
}

#[test]
fn fixtures_match_published_values() {
    let mut checked = 0;
    for f in fixtures() {
        let Some(published) = f.doc.get("published") else {
            continue;
        };
        let tolerance = f.doc["published_tolerance"].as_f64().unwrap();
        for (key, want) in published.as_object().unwrap() {
            assert_close(&format!("{} published {key}", f.name), statistic(&f, key), want, tolerance);
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
}

#[test]
fn report_matches_fixtures() {
    for f in fixtures() {
        let rep = report(&f.ratings, f.categories);
        let want = &f.doc["expected"];
        assert_close(&format!("{} percent", f.name), rep.percent, &want["percent_agreement"], TOLERANCE);
        assert_close(&format!("{} fleiss", f.name), rep.fleiss_kappa, &want["fleiss_kappa"], TOLERANCE);
        assert_close(&format!("{} nominal", f.name), rep.alpha_nominal, &want["alpha_nominal"], TOLERANCE);
        assert_close(&format!("{} ordinal", f.name), rep.alpha_ordinal, &want["alpha_ordinal"], TOLERANCE);
        assert_close(&format!("{} ac1", f.name), rep.gwet_ac1, &want["gwet_ac1"], TOLERANCE);
        assert_eq!(rep.ratings, f.ratings.len(), "{}", f.name);
        assert_eq!(rep.overlap_ratings as u64, rep.category_counts.iter().sum::<u64>());

        let pairs = f.doc["pairwise"].as_array().unwrap();
        if pairs.is_empty() {
            continue;
        }
        assert_eq!(rep.pairwise.len(), pairs.len(), "{}", f.name);
        for (got, want) in rep.pairwise.iter().zip(pairs) {
            let what = format!("{} pair {}-{}", f.name, got.rater_a, got.rater_b);
            assert_eq!(got.rater_a, want["rater_a"].as_u64().unwrap(), "{what}");
            assert_eq!(got.rater_b, want["rater_b"].as_u64().unwrap(), "{what}");
            assert_eq!(got.shared_units as u64, want["shared_units"].as_u64().unwrap(), "{what}");
            assert_close(&what, got.kappa, &want["kappa"], TOLERANCE);
            assert_close(&what, got.percent, &want["percent"], TOLERANCE);
            assert_close(&what, got.gwet_ac1, &want["gwet_ac1"], TOLERANCE);
            let total: u64 = got.confusion.iter().flatten().sum();
            assert_eq!(total as usize, got.shared_units, "{what}");
        }
    }
}

#[test]
fn krippendorff_example_counts_and_interpretation() {
    let f = fixture("krippendorff_2011");
    let rep = report(&f.ratings, f.categories);
    // 12 units, 41 values; unit 12 has a single value, so 11 units and 40 pairable values.
    assert_eq!((rep.units, rep.ratings, rep.raters), (12, 41, 4));
    assert_eq!((rep.overlap_units, rep.overlap_ratings), (11, 40));
    // Krippendorff (2011): n_c for values 1..5 = 9, 13, 10, 5, 3.
    assert_eq!(rep.category_counts, vec![9, 13, 10, 5, 3]);
    // units 1 and 10 have three values, unit 11 two, units 2-9 four.
    assert_eq!(rep.units_by_ratings, vec![(2, 1), (3, 2), (4, 8)]);
    // nominal alpha 0.743: tentative.
    assert_eq!(rep.interpretation, interpret_alpha(0.743));
    assert!(rep.interpretation.starts_with("tentative"));
}

#[test]
fn kappa_paradox_fixture_shows_the_paradox() {
    let f = fixture("rare_ties_paradox");
    let rep = report(&f.ratings, f.categories);
    let kappa = rep.pairwise[0].kappa.unwrap();
    assert!(rep.percent.unwrap() > 0.85 && kappa < 0.45 && rep.gwet_ac1.unwrap() > 0.85);
    assert_eq!(rep.pairwise[0].gwet_ac1, rep.gwet_ac1);
}

#[test]
fn cohen_hand_example() {
    // [[20, 5], [10, 15]]: p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = 0.2 / 0.5 = 0.4.
    let mut pairs = vec![(0, 0); 20];
    pairs.extend([(0, 1); 5]);
    pairs.extend([(1, 0); 10]);
    pairs.extend([(1, 1); 15]);
    assert_eq!(confusion_matrix(&pairs, 2), vec![vec![20, 5], vec![10, 15]]);
    assert_eq!(cohen_kappa(&pairs, 2), Some(0.4));
}

#[test]
fn two_complete_raters_alpha_is_scotts_pi_corrected() {
    // With two raters and no missing data, Fleiss' kappa is Scott's pi and
    // alpha = 1 - (n - 1) / n * (1 - pi), n = 2 * units.
    for name in ["random_2raters_4cat", "rare_ties_paradox", "cohen_2x2_hand"] {
        let f = fixture(name);
        let n = f.ratings.len() as f64;
        let pi = fleiss_kappa(&f.ratings, f.categories).unwrap();
        let alpha = krippendorff_alpha(&f.ratings, f.categories, Metric::Nominal).unwrap();
        assert!((alpha - (1.0 - (n - 1.0) / n * (1.0 - pi))).abs() < 1e-12, "{name}");
    }
}

#[test]
fn undefined_cases_are_none() {
    let q = 3;
    for ratings in [
        vec![],
        // no unit with two ratings
        vec![Rating::new(1, 1, 0), Rating::new(2, 2, 1), Rating::new(3, 1, 2)],
    ] {
        assert_eq!(percent_agreement(&ratings), None);
        assert_eq!(fleiss_kappa(&ratings, q), None);
        assert_eq!(krippendorff_alpha(&ratings, q, Metric::Nominal), None);
        assert_eq!(krippendorff_alpha(&ratings, q, Metric::Ordinal), None);
        assert_eq!(gwet_ac1(&ratings, q), None);
        let rep = report(&ratings, q);
        assert!(rep.pairwise.is_empty());
        assert_eq!(rep.interpretation, INTERPRETATION_UNDEFINED);
    }
    assert_eq!(cohen_kappa(&[], q), None);

    // Everyone always says "tie": perfect agreement, but no variation to judge it by.
    let ratings: Vec<Rating> = (0..5).flat_map(|u| (0..3).map(move |r| Rating::new(u, r, 1))).collect();
    assert_eq!(percent_agreement(&ratings), Some(1.0));
    assert_eq!(fleiss_kappa(&ratings, q), None);
    assert_eq!(krippendorff_alpha(&ratings, q, Metric::Nominal), None);
    assert_eq!(krippendorff_alpha(&ratings, q, Metric::Ordinal), None);
    assert_eq!(gwet_ac1(&ratings, q), Some(1.0));
    let one: Vec<Rating> = ratings.iter().map(|r| Rating { category: 0, ..*r }).collect();
    assert_eq!(gwet_ac1(&one, 1), None);
    assert_eq!(cohen_kappa(&[(1, 1), (1, 1)], q), None);
    let rep = report(&ratings, q);
    assert_eq!(rep.pairwise.len(), 3);
    assert!(rep.pairwise.iter().all(|p| p.kappa.is_none() && p.percent == Some(1.0)));
    // None serializes as null, never NaN.
    let json = serde_json::to_string(&rep).unwrap();
    assert!(json.contains("\"fleiss_kappa\":null") && !json.contains("NaN"), "{json}");
}

#[test]
fn perfect_agreement_is_one() {
    let ratings: Vec<Rating> = (0..12).flat_map(|u| (0..4).map(move |r| Rating::new(u, r, (u % 3) as usize))).collect();
    let rep = report(&ratings, 4);
    for v in [rep.percent, rep.fleiss_kappa, rep.alpha_nominal, rep.alpha_ordinal, rep.gwet_ac1] {
        assert_eq!(v, Some(1.0));
    }
    assert!(rep.pairwise.iter().all(|p| p.kappa == Some(1.0)));
    assert!(rep.interpretation.starts_with("reliable"));
}

#[test]
fn single_ratings_and_order_do_not_matter() {
    let f = fixture("random_5raters_missing_4cat");
    let base = report(&f.ratings, f.categories);
    let mut shuffled = f.ratings.clone();
    shuffled.reverse();
    shuffled.push(Rating::new(999_999, 10, 3)); // a unit rated once
    let other = report(&shuffled, f.categories);
    assert_eq!(other.units, base.units + 1);
    assert_eq!(other.ratings, base.ratings + 1);
    let close = |a: Option<f64>, b: Option<f64>| (a.unwrap() - b.unwrap()).abs() < 1e-12;
    assert!(close(other.percent, base.percent));
    assert!(close(other.fleiss_kappa, base.fleiss_kappa));
    assert!(close(other.alpha_nominal, base.alpha_nominal));
    assert!(close(other.alpha_ordinal, base.alpha_ordinal));
    assert!(close(other.gwet_ac1, base.gwet_ac1));
    assert_eq!(other.pairwise, base.pairwise);
    assert_eq!(other.category_counts, base.category_counts);
}

#[test]
fn repeated_rating_the_last_counts() {
    let ratings = [
        Rating::new(1, 1, 0),
        Rating::new(1, 2, 2),
        Rating::new(1, 1, 2), // rater 1 changes their mind
        Rating::new(2, 1, 0),
        Rating::new(2, 2, 0),
    ];
    let rep = report(&ratings, 3);
    assert_eq!((rep.ratings, rep.overlap_ratings), (4, 4));
    assert_eq!(rep.percent, Some(1.0));
    assert_eq!(rep.pairwise[0].confusion, vec![vec![1, 0, 0], vec![0; 3], vec![0, 0, 1]]);
}

#[test]
fn ordinal_alpha_rewards_near_misses() {
    // Same amount of disagreement, once between neighbours (left vs tie), once between the ends
    // (left vs right): nominal alpha cannot tell them apart, ordinal alpha can.
    let base: Vec<Rating> = (0..30).flat_map(|u| (0..2).map(move |r| Rating::new(u, r, (u % 3) as usize))).collect();
    let with = |a: usize, b: usize| {
        let mut r = base.clone();
        r.extend([Rating::new(100, 0, a), Rating::new(100, 1, b)]);
        r.extend([Rating::new(101, 0, b), Rating::new(101, 1, a)]);
        r
    };
    let (near, far) = (with(0, 1), with(0, 2));
    let nominal = |r: &[Rating]| krippendorff_alpha(r, 3, Metric::Nominal).unwrap();
    let ordinal = |r: &[Rating]| krippendorff_alpha(r, 3, Metric::Ordinal).unwrap();
    assert!((nominal(&near) - nominal(&far)).abs() < 1e-12);
    assert!(ordinal(&near) > ordinal(&far));
}

#[test]
fn interpretation_thresholds() {
    assert!(interpret_alpha(1.0).starts_with("reliable"));
    assert!(interpret_alpha(0.8).starts_with("reliable"));
    assert!(interpret_alpha(0.7999).starts_with("tentative"));
    assert!(interpret_alpha(0.667).starts_with("tentative"));
    assert!(interpret_alpha(0.6669).starts_with("unreliable"));
    assert!(interpret_alpha(-0.3).starts_with("unreliable"));
    assert_eq!(interpret_alpha(f64::NAN), INTERPRETATION_UNDEFINED);
}

#[test]
#[should_panic(expected = "out of range")]
fn category_out_of_range_panics() {
    fleiss_kappa(&[Rating::new(1, 1, 3), Rating::new(1, 2, 0)], 3);
}

#[test]
#[should_panic(expected = "out of range")]
fn confusion_label_out_of_range_panics() {
    confusion_matrix(&[(0, 2)], 2);
}
