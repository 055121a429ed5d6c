//! Expected ratings are printed by scripts/check_bradley_terry.py: a statsmodels GLM fit
//! (Binomial, logit link, statsmodels 0.15.0) of the same model, cross-checked there against a
//! scipy BFGS fit written out by hand (the two agree to 5e-7 Elo points or better).

use super::*;
use crate::domain::Outcome::{A, B, BothBad, Tie};

/// statsmodels stops its IRLS at a relative change of 1e-14; 1e-6 Elo points is far below any
/// difference in the model (a different prior or tie rule moves ratings by whole points).
const TOLERANCE: f64 = 1e-6;

type Judgment = (&'static str, &'static str, Outcome);

/// Judgments from rows of (model_a, model_b, a wins, b wins, ties, both bad).
fn judgments(rows: &[(&'static str, &'static str, usize, usize, usize, usize)]) -> Vec<Judgment> {
    let mut out = Vec::new();
    for &(a, b, wins, losses, ties, both_bad) in rows {
        for (outcome, count) in [(A, wins), (B, losses), (Tie, ties), (BothBad, both_bad)] {
            out.extend(std::iter::repeat_n((a, b, outcome), count));
        }
    }
    out
}

fn four_models() -> Vec<Judgment> {
    judgments(&[
        ("dpo-a", "base", 14, 4, 3, 1),
        ("dpo-b", "base", 11, 7, 2, 2),
        ("sft", "base", 9, 8, 4, 0),
        ("dpo-a", "dpo-b", 6, 5, 3, 1),
        ("dpo-a", "sft", 8, 3, 1, 0),
        ("dpo-b", "sft", 5, 5, 2, 1),
    ])
}

#[track_caller]
fn assert_ratings(arena: &Arena, want: &[(&str, f64, f64, f64)]) {
    let got: Vec<&str> = arena.ratings.iter().map(|r| r.model.as_str()).collect();
    let order: Vec<&str> = want.iter().map(|w| w.0).collect();
    assert_eq!(got, order, "best first");
    for (rating, &(model, value, low, high)) in arena.ratings.iter().zip(want) {
        for (what, got, want) in
            [("rating", rating.rating, value), ("low", rating.ci_low, low), ("high", rating.ci_high, high)]
        {
            assert!((got - want).abs() < TOLERANCE, "{model} {what}: got {got}, want {want}");
        }
    }
}

#[test]
fn matches_statsmodels_on_four_models() {
    let arena = bradley_terry(&four_models(), &ArenaOptions::default()).unwrap();
    assert_ratings(
        &arena,
        &[
            ("dpo-a", 1084.2475688819454, 1007.1825143566492, 1161.3126234072415),
            ("dpo-b", 1010.4582900804284, 937.104764545834, 1083.8118156150226),
            ("sft", 966.3869689487801, 889.708514340253, 1043.0654235573072),
            ("base", 938.9071720888462, 873.6128162089628, 1004.2015279687296),
        ],
    );
    assert_eq!(arena.judgments, 105);
    let mean = arena.ratings.iter().map(|r| r.rating).sum::<f64>() / 4.0;
    assert!((mean - 1000.0).abs() < 1e-9, "the average model sits at 1000, got {mean}");
}

#[test]
fn an_undefeated_model_gets_a_finite_rating_from_the_prior() {
    let data = judgments(&[("champ", "base", 5, 0, 0, 0), ("champ", "sft", 3, 0, 0, 0), ("base", "sft", 4, 4, 2, 0)]);
    let arena = bradley_terry(&data, &ArenaOptions::default()).unwrap();
    assert_ratings(
        &arena,
        &[
            ("champ", 1342.7262581906775, 1004.754527787719, 1680.6979885936362),
            ("sft", 830.2232213882241, 628.3654830782851, 1032.0809596981633),
            ("base", 827.0505204210983, 632.4276713541797, 1021.673369488017),
        ],
    );
    // A stronger prior pulls the ratings toward the middle.
    let shrunk = bradley_terry(&data, &ArenaOptions { prior_games: 10.0, ..ArenaOptions::default() }).unwrap();
    assert!(shrunk.ratings[0].rating < arena.ratings[0].rating && shrunk.ratings[0].rating > 1000.0);
}

#[test]
fn counts_games_wins_losses_ties_and_both_bad_per_model() {
    let arena = bradley_terry(&four_models(), &ArenaOptions::default()).unwrap();
    let record = |model: &str| {
        let r = arena.ratings.iter().find(|r| r.model == model).unwrap();
        (r.games, r.wins, r.losses, r.ties, r.both_bad)
    };
    assert_eq!(record("dpo-a"), (49, 28, 12, 7, 2));
    assert_eq!(record("base"), (65, 19, 34, 9, 3));
    assert_eq!(record("sft"), (46, 17, 21, 7, 1));
}

#[test]
fn equal_records_give_equal_ratings() {
    // Every pair splits its games evenly, ties and both-bad included.
    let data = judgments(&[("x", "y", 3, 3, 2, 0), ("y", "z", 2, 2, 0, 1), ("x", "z", 4, 4, 1, 1)]);
    let arena = bradley_terry(&data, &ArenaOptions::default()).unwrap();
    for rating in &arena.ratings {
        assert!((rating.rating - 1000.0).abs() < 1e-9, "{rating:?}");
        assert!(rating.ci_low < 1000.0 && rating.ci_high > 1000.0);
    }
    let names: Vec<&str> = arena.ratings.iter().map(|r| r.model.as_str()).collect();
    assert_eq!(names, ["x", "y", "z"], "equal ratings are listed by name");
}

#[test]
fn order_of_judgments_and_of_the_pair_does_not_matter() {
    let data = four_models();
    let reference = bradley_terry(&data, &ArenaOptions::default()).unwrap();
    let mut shuffled = data.clone();
    shuffled.reverse();
    shuffled.rotate_left(17);
    assert_eq!(bradley_terry(&shuffled, &ArenaOptions::default()).unwrap(), reference);
    let swapped: Vec<Judgment> = data
        .iter()
        .map(|&(a, b, outcome)| {
            let mirrored = match outcome {
                A => B,
                B => A,
                other => other,
            };
            (b, a, mirrored)
        })
        .collect();
    assert_eq!(bradley_terry(&swapped, &ArenaOptions::default()).unwrap(), reference);
}

#[test]
fn a_wider_z_gives_a_wider_interval_around_the_same_rating() {
    let narrow = bradley_terry(&four_models(), &ArenaOptions { z: 1.0, ..ArenaOptions::default() }).unwrap();
    let wide = bradley_terry(&four_models(), &ArenaOptions::default()).unwrap();
    for (n, w) in narrow.ratings.iter().zip(&wide.ratings) {
        assert_eq!(n.rating, w.rating);
        let ratio = (w.ci_high - w.rating) / (n.ci_high - n.rating);
        assert!((ratio - Z_95).abs() < 1e-9, "{ratio}");
    }
}

#[test]
fn disconnected_groups_are_refused_and_named() {
    let data = judgments(&[("a", "b", 2, 1, 0, 0), ("c", "d", 1, 1, 0, 0), ("e", "c", 0, 1, 0, 0)]);
    let error = bradley_terry(&data, &ArenaOptions::default()).unwrap_err();
    assert_eq!(
        error,
        ArenaError::Disconnected {
            components: vec![vec!["a".into(), "b".into()], vec!["c".into(), "d".into(), "e".into()]]
        }
    );
    let message = error.to_string();
    assert!(message.contains("2 groups") && message.contains("[a, b] [c, d, e]"), "{message}");
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    assert_eq!(
        bradley_terry(&[("m", "m", A)], &ArenaOptions::default()).unwrap_err(),
        ArenaError::SelfComparison("m".into())
    );
    for options in [
        ArenaOptions { prior_games: 0.0, ..ArenaOptions::default() },
        ArenaOptions { z: f64::NAN, ..ArenaOptions::default() },
    ] {
        assert!(matches!(bradley_terry(&four_models(), &options), Err(ArenaError::InvalidOption { .. })));
    }
}

#[test]
fn no_judgments_give_no_ratings() {
    let arena = bradley_terry::<&str>(&[], &ArenaOptions::default()).unwrap();
    assert!(arena.ratings.is_empty());
    assert_eq!(arena.judgments, 0);
}

#[test]
fn a_lopsided_record_converges_to_finite_ratings() {
    // 500-0 pushes Newton far from its start: step halving keeps it on course.
    let data = judgments(&[("strong", "weak", 500, 0, 0, 0), ("weak", "mid", 0, 3, 0, 0)]);
    let arena = bradley_terry(&data, &ArenaOptions::default()).unwrap();
    assert_eq!(arena.ratings[0].model, "strong");
    assert!(arena.ratings.iter().all(|r| r.rating.is_finite() && r.ci_low.is_finite() && r.ci_high.is_finite()));
    assert!(arena.ratings[0].rating - arena.ratings[2].rating > 800.0, "{:?}", arena.ratings);
}
