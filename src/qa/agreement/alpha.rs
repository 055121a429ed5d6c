//! Krippendorff's alpha.

use serde::Serialize;

use super::{Rating, Tally};

/// The distance between categories for [`krippendorff_alpha`].
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Categories are unordered: any two different categories are equally far apart.
    Nominal,
    /// Category indices are ranks (0 < 1 < 2 ...): the distance between `c` and `k` grows with
    /// how many values lie between them (Krippendorff 2011, section E.2):
    /// `delta^2(c, k) = (sum_{g=c..=k} n_g - (n_c + n_k) / 2)^2`, with `n_g` the number of
    /// pairable values in category `g`.
    Ordinal,
}

/// Krippendorff's alpha, `1 - D_o / D_e`, for any number of raters and missing data (units with
/// fewer than two ratings are not pairable and ignored), computed as in Krippendorff (2011),
/// "Computing Krippendorff's Alpha-Reliability": coincidences `o_ck = sum_u n_uc (n_uk - [c == k])
/// / (m_u - 1)`, marginals `n_c`, `n = sum_c n_c`, and
/// `alpha = 1 - (n - 1) sum_{c,k} o_ck delta^2_ck / sum_{c,k} n_c n_k delta^2_ck`.
///
/// `None` when no unit has two ratings or the expected disagreement is zero (all pairable values
/// in one category).
///
/// # Panics
/// If a category is `>= categories`.
pub fn krippendorff_alpha(ratings: &[Rating], categories: usize, metric: Metric) -> Option<f64> {
    Tally::new(ratings, categories).alpha(metric)
}

impl Tally {
    pub(super) fn alpha(&self, metric: Metric) -> Option<f64> {
        let q = self.categories;
        let n_c = self.category_totals();
        let n: u64 = n_c.iter().sum();
        if n == 0 {
            return None;
        }
        // 4 * delta^2, an integer for both metrics (ordinal distances are squares of multiples
        // of 1/2), so that the sums stay exact until the final divisions.
        let distance4 = |c: usize, k: usize| -> u128 {
            if c == k {
                return 0;
            }
            match metric {
                Metric::Nominal => 4,
                Metric::Ordinal => {
                    let (lo, hi) = (c.min(k), c.max(k));
                    let between: u64 = n_c[lo..=hi].iter().sum();
                    let twice = u128::from(2 * between - n_c[lo] - n_c[hi]);
                    twice * twice
                }
            }
        };
        let mut expected: u128 = 0;
        for c in 0..q {
            for k in 0..q {
                expected += u128::from(n_c[c]) * u128::from(n_c[k]) * distance4(c, k);
            }
        }
        if expected == 0 {
            return None;
        }
        let observed: f64 = self
            .groups
            .iter()
            .map(|(&m, g)| {
                let mut sum: u128 = 0;
                for c in 0..q {
                    for k in 0..q {
                        sum += u128::from(g.pairs[c][k]) * distance4(c, k);
                    }
                }
                sum as f64 / (m - 1) as f64
            })
            .sum();
        Some(1.0 - (n - 1) as f64 * observed / expected as f64)
    }
}
