//! Which pair of candidates an annotator judges next.
//!
//! Scheme: best-of-N ("king of the hill"). Candidates are taken oldest first; the
//! current best stays and meets the next challenger; whichever the annotator prefers
//! stays on (a tie or both-bad keeps the current one). N candidates need N − 1
//! judgments to find the best, and every judgment is also a training pair.

use crate::domain::Outcome;

/// A verdict the annotator already gave, on (a, b) with a < b.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastVerdict {
    pub a: i64,
    pub b: i64,
    pub outcome: Outcome,
}

/// The next pair (current best, challenger) to judge, or `None` when the annotator has
/// finished this prompt. `candidates` are response ids, oldest first.
pub fn next_pair(candidates: &[i64], past: &[PastVerdict]) -> Option<(i64, i64)> {
    let (&first, rest) = candidates.split_first()?;
    let mut best = first;
    for &challenger in rest {
        let key = (best.min(challenger), best.max(challenger));
        match past.iter().find(|v| (v.a, v.b) == key) {
            None => return Some((best, challenger)),
            Some(v) => {
                let winner = match v.outcome {
                    Outcome::A => key.0,
                    Outcome::B => key.1,
                    Outcome::Tie | Outcome::BothBad => best,
                };
                best = winner;
            }
        }
    }
    None
}

/// How many judgments finish a prompt with `candidates` answers.
pub fn judgments_needed(candidates: usize) -> usize {
    candidates.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_winner_stays_and_meets_the_next_challenger() {
        let c = [1, 2, 3, 4];
        assert_eq!(next_pair(&c, &[]), Some((1, 2)));
        let past = [PastVerdict { a: 1, b: 2, outcome: Outcome::B }];
        assert_eq!(next_pair(&c, &past), Some((2, 3)));
        let past = [past[0], PastVerdict { a: 2, b: 3, outcome: Outcome::Tie }];
        assert_eq!(next_pair(&c, &past), Some((2, 4)));
        let past = [past[0], past[1], PastVerdict { a: 2, b: 4, outcome: Outcome::A }];
        assert_eq!(next_pair(&c, &past), None);
        assert_eq!(judgments_needed(4), 3);
    }

    #[test]
    fn fewer_than_two_candidates_need_nothing() {
        assert_eq!(next_pair(&[], &[]), None);
        assert_eq!(next_pair(&[7], &[]), None);
    }
}
