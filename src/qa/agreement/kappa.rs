//! Cohen's kappa, Fleiss' kappa and Gwet's AC1.

use super::{Rating, Tally};

/// `matrix[i][j]`: pairs whose first label is `i` and second is `j` (`categories` x `categories`).
///
/// # Panics
/// If a label is `>= categories`.
pub fn confusion_matrix(pairs: &[(usize, usize)], categories: usize) -> Vec<Vec<u64>> {
    let mut matrix = vec![vec![0u64; categories]; categories];
    for &(a, b) in pairs {
        assert!(
            a < categories && b < categories,
            "agreement: label pair ({a}, {b}) is out of range for {categories} categories"
        );
        matrix[a][b] += 1;
    }
    matrix
}

/// Cohen's (1960) kappa for two raters' labels on the units both rated, one `(first rater's
/// label, second rater's label)` per unit: `(p_o - p_e) / (1 - p_e)` with `p_o` the share of
/// units with equal labels and `p_e = sum_k (row_k / n) (col_k / n)` from each rater's own
/// marginals. Computed as `(n * agree - S) / (n^2 - S)` with `S = sum_k row_k col_k`, all in
/// integers up to the one division.
///
/// `None` when there are no pairs or `p_e = 1` (both raters used one and the same category
/// throughout).
///
/// # Panics
/// If a label is `>= categories`.
pub fn cohen_kappa(pairs: &[(usize, usize)], categories: usize) -> Option<f64> {
    let matrix = confusion_matrix(pairs, categories);
    let n = pairs.len() as i128;
    if n == 0 {
        return None;
    }
    let agree: i128 = (0..categories).map(|c| matrix[c][c] as i128).sum();
    let chance: i128 = (0..categories)
        .map(|k| {
            let row: i128 = matrix[k].iter().map(|&x| x as i128).sum();
            let col: i128 = matrix.iter().map(|r| r[k] as i128).sum();
            row * col
        })
        .sum();
    let denominator = n * n - chance;
    if denominator == 0 {
        return None;
    }
    Some((n * agree - chance) as f64 / denominator as f64)
}

/// Fleiss' (1971) kappa over the units with two or more ratings, any number of raters.
///
/// Unequal numbers of ratings per unit are handled by the standard generalization (Gwet 2014,
/// *Handbook of Inter-Rater Reliability*, ch. 2; irrCAC's `fleiss.kappa.raw`): observed agreement
/// `p_a` = mean over units of `sum_k n_uk (n_uk - 1) / (m_u (m_u - 1))` ([`percent_agreement`]),
/// chance agreement `p_e = sum_k pi_k^2` with `pi_k` = mean over units of `n_uk / m_u`, and
/// `kappa = (p_a - p_e) / (1 - p_e)`. With the same number of raters on every unit this is exactly
/// Fleiss' 1971 kappa. Units rated once are left out of `pi_k` as well (irrCAC keeps them there).
///
/// `None` when no unit has two ratings or all ratings fall in one category.
///
/// # Panics
/// If a category is `>= categories`.
///
/// [`percent_agreement`]: super::percent_agreement
pub fn fleiss_kappa(ratings: &[Rating], categories: usize) -> Option<f64> {
    Tally::new(ratings, categories).fleiss()
}

/// Gwet's (2008) AC1 for any number of raters, over the units with two or more ratings:
/// `(p_a - p_e) / (1 - p_e)` with `p_a` as in [`fleiss_kappa`] and the chance agreement
/// `p_e = sum_k pi_k (1 - pi_k) / (q - 1)`, `q = categories` (the number of possible categories,
/// used or not). Unlike kappa it stays high when agreement is high and one category dominates
/// (e.g. rare ties), the "kappa paradox". With two raters and no missing data it is Gwet's
/// two-rater AC1 with `pi_k = (row_k + col_k) / 2n`.
///
/// `None` when no unit has two ratings or `categories < 2`. (`p_e <= 1 - 1/q < 1`, so there is
/// no other undefined case.)
///
/// # Panics
/// If a category is `>= categories`.
pub fn gwet_ac1(ratings: &[Rating], categories: usize) -> Option<f64> {
    Tally::new(ratings, categories).ac1()
}

/// The tally of two raters' label pairs, one unit per pair.
pub(super) fn pairs_tally(pairs: &[(usize, usize)], categories: usize) -> Tally {
    let ratings: Vec<Rating> = pairs
        .iter()
        .enumerate()
        .flat_map(|(unit, &(a, b))| [Rating::new(unit as u64, 0, a), Rating::new(unit as u64, 1, b)])
        .collect();
    Tally::new(&ratings, categories)
}

impl Tally {
    pub(super) fn fleiss(&self) -> Option<f64> {
        let p_a = self.percent()?;
        let used = self.category_totals().iter().filter(|&&n| n > 0).count();
        if used < 2 {
            return None;
        }
        let p_e: f64 = self.prevalence().iter().map(|p| p * p).sum();
        Some((p_a - p_e) / (1.0 - p_e))
    }

    pub(super) fn ac1(&self) -> Option<f64> {
        if self.categories < 2 {
            return None;
        }
        let p_a = self.percent()?;
        let spread: f64 = self.prevalence().iter().map(|p| p * (1.0 - p)).sum();
        let p_e = spread / (self.categories - 1) as f64;
        Some((p_a - p_e) / (1.0 - p_e))
    }
}
