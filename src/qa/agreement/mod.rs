//! Inter-annotator agreement: percent agreement, Cohen's and Fleiss' kappa, Krippendorff's alpha
//! (nominal and ordinal) and Gwet's AC1, with the confusion matrices and raw counts behind them.
//!
//! Pure functions over [`Rating`]s (unit, rater, category index); nothing here touches the store.
//! For verdict's outcomes the categories are `0` = left/a better, `1` = tie, `2` = right/b better
//! (in that order, so the ordinal statistics apply to `categories = 3`) and `3` = both bad (a
//! nominal-only extra). For per-tag agreement use two categories (`0` = tag absent, `1` = present).
//!
//! Conventions shared by every function:
//!
//! * **Undefined is `None`, never NaN**: no unit with two or more ratings, all ratings in one
//!   category (zero expected disagreement), fewer than two categories for AC1.
//! * **Units with fewer than two ratings are ignored**: they carry no information on agreement.
//! * **One rating per unit and rater**: if a rater rated a unit more than once, the last rating in
//!   slice order counts (a re-judgment replaces the earlier one) and the others are dropped.
//! * **Category indices must be `< categories`**: a larger index is a caller bug and panics, like
//!   an out-of-bounds index. Unused categories change nothing except AC1's chance term, which
//!   uses `categories` as the number of possible categories `q`.
//!
//! Sums are done on integer counts grouped by the number of ratings per unit, so there are only
//! a handful of floating-point divisions per statistic; the results match scikit-learn,
//! statsmodels, the `krippendorff` package and irrCAC to ~1e-15 on the fixtures in
//! `tests/fixtures/agreement/` (made by `scripts/make_agreement_fixtures.py`).

use std::collections::BTreeMap;

use serde::Serialize;

mod alpha;
mod kappa;
#[cfg(test)]
mod tests;

pub use alpha::{Metric, krippendorff_alpha};
pub use kappa::{cohen_kappa, confusion_matrix, fleiss_kappa, gwet_ac1};

/// One rating: unit (e.g. a pair id), rater (annotator id), category index.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rating {
    pub unit: u64,
    pub rater: u64,
    pub category: usize,
}

impl Rating {
    pub fn new(unit: u64, rater: u64, category: usize) -> Self {
        Rating { unit, rater, category }
    }
}

/// Krippendorff's alpha at or above this: reliable.
pub const ALPHA_RELIABLE: f64 = 0.8;
/// Krippendorff's alpha at or above this (and below [`ALPHA_RELIABLE`]): tentative conclusions only.
pub const ALPHA_TENTATIVE: f64 = 0.667;

/// What an alpha value means for the data, after Krippendorff (2004, 2011): data with
/// `alpha >= 0.800` can be relied on, `0.667 <= alpha < 0.800` allows tentative conclusions only,
/// and below 0.667 the labels should not be used as they are. NaN reads as undefined.
pub fn interpret_alpha(alpha: f64) -> &'static str {
    if alpha.is_nan() {
        INTERPRETATION_UNDEFINED
    } else if alpha >= ALPHA_RELIABLE {
        "reliable (alpha >= 0.8): the labels can be relied on"
    } else if alpha >= ALPHA_TENTATIVE {
        "tentative (0.667 <= alpha < 0.8): use with care, for tentative conclusions only"
    } else {
        "unreliable (alpha < 0.667): revise the guidelines and recalibrate the annotators"
    }
}

/// The interpretation when alpha is undefined.
pub const INTERPRETATION_UNDEFINED: &str =
    "undefined: needs units rated by two or more annotators and more than one category in use";

/// Share of agreeing rating pairs: for each unit with `m >= 2` ratings, the share of its
/// `m(m-1)` ordered rater pairs that chose the same category, averaged over those units (each unit
/// weighs the same; Fleiss' P-bar, Gwet's p_a). With two raters it is the plain share of units on
/// which they agree. `None` when no unit has two ratings.
pub fn percent_agreement(ratings: &[Rating]) -> Option<f64> {
    let categories = ratings.iter().map(|r| r.category + 1).max()?;
    Tally::new(ratings, categories).percent()
}

/// Cohen's kappa (or another pairwise figure) for one pair of raters.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct PairwiseKappa {
    /// The smaller rater id.
    pub rater_a: u64,
    /// The larger rater id.
    pub rater_b: u64,
    /// Units both rated.
    pub shared_units: usize,
    /// Cohen's kappa on the shared units.
    pub kappa: Option<f64>,
    /// Share of shared units on which they agree.
    pub percent: Option<f64>,
    /// Gwet's AC1 on the shared units (two raters).
    pub gwet_ac1: Option<f64>,
    /// `confusion[i][j]`: shared units that `rater_a` put in category `i` and `rater_b` in `j`.
    pub confusion: Vec<Vec<u64>>,
}

/// Every agreement statistic over one set of ratings, with the counts behind them.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct AgreementReport {
    /// Number of categories the statistics were computed for.
    pub categories: usize,
    /// Distinct units rated at least once.
    pub units: usize,
    /// Ratings, one per unit and rater (repeated ratings: the last counts).
    pub ratings: usize,
    /// Distinct raters.
    pub raters: usize,
    /// Units rated by two or more raters: the only ones the statistics use.
    pub overlap_units: usize,
    /// Ratings on those units.
    pub overlap_ratings: usize,
    /// Ratings per category on those units (the marginals behind the chance terms).
    pub category_counts: Vec<u64>,
    /// Those units by their number of ratings: `(ratings per unit, units)`, ascending.
    pub units_by_ratings: Vec<(usize, u64)>,
    /// [`percent_agreement`].
    pub percent: Option<f64>,
    /// [`fleiss_kappa`].
    pub fleiss_kappa: Option<f64>,
    /// [`krippendorff_alpha`] with [`Metric::Nominal`].
    pub alpha_nominal: Option<f64>,
    /// [`krippendorff_alpha`] with [`Metric::Ordinal`] (meaningful only if the category indices
    /// are ordered, e.g. left > tie > right).
    pub alpha_ordinal: Option<f64>,
    /// [`gwet_ac1`].
    pub gwet_ac1: Option<f64>,
    /// Cohen's kappa for every pair of raters with at least one shared unit, by (rater_a, rater_b).
    pub pairwise: Vec<PairwiseKappa>,
    /// [`interpret_alpha`] of `alpha_nominal` (valid for any category set), or
    /// [`INTERPRETATION_UNDEFINED`].
    pub interpretation: &'static str,
}

/// Everything above at once; pairwise Cohen's kappa for every rater pair with a shared unit.
///
/// # Panics
/// If a rating's category is `>= categories`.
pub fn report(ratings: &[Rating], categories: usize) -> AgreementReport {
    let units = by_unit(ratings, categories);
    let tally = Tally::from_units(&units, categories);
    let mut raters: Vec<u64> = units.values().flat_map(|u| u.keys().copied()).collect();
    raters.sort_unstable();
    raters.dedup();

    let mut shared: BTreeMap<(u64, u64), Vec<(usize, usize)>> = BTreeMap::new();
    for unit in units.values() {
        let rated: Vec<(u64, usize)> = unit.iter().map(|(&r, &c)| (r, c)).collect();
        for (i, &(a, ca)) in rated.iter().enumerate() {
            for &(b, cb) in &rated[i + 1..] {
                shared.entry((a, b)).or_default().push((ca, cb));
            }
        }
    }
    let pairwise = shared
        .into_iter()
        .map(|((rater_a, rater_b), pairs)| {
            let confusion = confusion_matrix(&pairs, categories);
            let agree: u64 = (0..categories).map(|c| confusion[c][c]).sum();
            PairwiseKappa {
                rater_a,
                rater_b,
                shared_units: pairs.len(),
                kappa: cohen_kappa(&pairs, categories),
                percent: Some(agree as f64 / pairs.len() as f64),
                gwet_ac1: kappa::pairs_tally(&pairs, categories).ac1(),
                confusion,
            }
        })
        .collect();

    let alpha_nominal = tally.alpha(Metric::Nominal);
    AgreementReport {
        categories,
        units: units.len(),
        ratings: units.values().map(|u| u.len()).sum(),
        raters: raters.len(),
        overlap_units: tally.units() as usize,
        overlap_ratings: tally.category_totals().iter().sum::<u64>() as usize,
        category_counts: tally.category_totals(),
        units_by_ratings: tally.groups.iter().map(|(&m, g)| (m, g.units)).collect(),
        percent: tally.percent(),
        fleiss_kappa: tally.fleiss(),
        alpha_nominal,
        alpha_ordinal: tally.alpha(Metric::Ordinal),
        gwet_ac1: tally.ac1(),
        pairwise,
        interpretation: alpha_nominal.map_or(INTERPRETATION_UNDEFINED, interpret_alpha),
    }
}

/// Ratings by unit, then by rater (the last rating of a unit and rater wins).
fn by_unit(ratings: &[Rating], categories: usize) -> BTreeMap<u64, BTreeMap<u64, usize>> {
    let mut units: BTreeMap<u64, BTreeMap<u64, usize>> = BTreeMap::new();
    for r in ratings {
        assert!(
            r.category < categories,
            "agreement: category {} of unit {} (rater {}) is out of range for {} categories",
            r.category,
            r.unit,
            r.rater,
            categories
        );
        units.entry(r.unit).or_default().insert(r.rater, r.category);
    }
    units
}

/// Units with `m` ratings, summed up: everything the statistics need, as integers.
#[derive(Debug, Clone, Default)]
struct Group {
    /// Units with `m` ratings.
    units: u64,
    /// `counts[k]`: ratings in category `k` over those units (sum over units of n_uk).
    counts: Vec<u64>,
    /// `pairs[c][k]`: ordered pairs of ratings within a unit with categories (c, k), i.e. the sum
    /// over units of n_uc * (n_uk - [c == k]). The diagonal counts agreeing pairs.
    pairs: Vec<Vec<u64>>,
}

/// The units with two or more ratings, grouped by their number of ratings `m`.
#[derive(Debug, Clone)]
struct Tally {
    categories: usize,
    groups: BTreeMap<usize, Group>,
}

impl Tally {
    fn new(ratings: &[Rating], categories: usize) -> Self {
        Self::from_units(&by_unit(ratings, categories), categories)
    }

    fn from_units(units: &BTreeMap<u64, BTreeMap<u64, usize>>, categories: usize) -> Self {
        let q = categories;
        let mut groups: BTreeMap<usize, Group> = BTreeMap::new();
        let mut n = vec![0u64; q];
        for unit in units.values().filter(|u| u.len() >= 2) {
            n.iter_mut().for_each(|x| *x = 0);
            for &c in unit.values() {
                n[c] += 1;
            }
            let g = groups.entry(unit.len()).or_insert_with(|| Group {
                units: 0,
                counts: vec![0; q],
                pairs: vec![vec![0; q]; q],
            });
            g.units += 1;
            for c in (0..q).filter(|&c| n[c] > 0) {
                g.counts[c] += n[c];
                for k in (0..q).filter(|&k| n[k] > 0) {
                    g.pairs[c][k] += n[c] * (n[k] - u64::from(c == k));
                }
            }
        }
        Tally { categories, groups }
    }

    /// Units with two or more ratings.
    fn units(&self) -> u64 {
        self.groups.values().map(|g| g.units).sum()
    }

    /// Ratings per category over all units (n_c).
    fn category_totals(&self) -> Vec<u64> {
        let mut totals = vec![0; self.categories];
        for g in self.groups.values() {
            totals.iter_mut().zip(&g.counts).for_each(|(t, c)| *t += c);
        }
        totals
    }

    /// Fleiss' P-bar / Gwet's p_a: mean over units of the share of agreeing ordered pairs.
    fn percent(&self) -> Option<f64> {
        let units = self.units();
        if units == 0 {
            return None;
        }
        let sum: f64 = self
            .groups
            .iter()
            .map(|(&m, g)| {
                let agree: u64 = (0..self.categories).map(|c| g.pairs[c][c]).sum();
                agree as f64 / (m * (m - 1)) as f64
            })
            .sum();
        Some(sum / units as f64)
    }

    /// pi_k: mean over units of the share of the unit's ratings in category k.
    fn prevalence(&self) -> Vec<f64> {
        let units = self.units() as f64;
        (0..self.categories)
            .map(|k| {
                let sum: f64 = self.groups.iter().map(|(&m, g)| g.counts[k] as f64 / m as f64).sum();
                sum / units
            })
            .collect()
    }
}
