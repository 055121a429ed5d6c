//! Label resolution: from many annotators' verdicts to training pairs.
//!
//! The rule, in order: an adjudicated verdict wins; else the strict majority of the
//! active judgments; a single judgment is its own majority. A tie or both-bad verdict
//! gives no pair, nor does a split vote without a majority (it waits for adjudication).
//! A human rewrite that nobody judged is preferred over the response it replaced.

use std::collections::HashMap;

use crate::domain::Outcome;
use crate::store::{ActiveJudgment, PairRow};

/// How a pair's verdict was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    Adjudicated,
    Majority,
    Single,
    Rewrite,
}

/// A preference pair ready for training or export.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedPair {
    pub prompt_id: i64,
    pub chosen: i64,
    pub rejected: i64,
    /// Judgments that agree with the verdict, and all active judgments of the pair.
    pub agreeing: usize,
    pub votes: usize,
    pub via: Resolution,
    /// Reason tags of the agreeing judgments, sorted and deduplicated.
    pub reasons: Vec<String>,
}

/// The state of a pair's votes, for queues and QA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairVerdict {
    Decided(Outcome),
    /// Votes split without a strict majority.
    Disputed,
}

/// A pair whose votes (or adjudication, or rewrite) decided an outcome, ties and both-bad
/// verdicts included: what `resolve` turns into training pairs and `compile` into each
/// method's examples.
#[derive(Debug, Clone, PartialEq)]
pub struct DecidedPair {
    pub prompt_id: i64,
    /// The pair as stored: `a < b`.
    pub a: i64,
    pub b: i64,
    pub outcome: Outcome,
    pub via: Resolution,
    /// Judgments that agree with the outcome, and all active judgments of the pair.
    pub agreeing: usize,
    pub votes: usize,
    /// Reason tags of the agreeing judgments, sorted and deduplicated.
    pub reasons: Vec<String>,
}

impl DecidedPair {
    /// (chosen, rejected) when one answer won.
    pub fn winner_loser(&self) -> Option<(i64, i64)> {
        match self.outcome {
            Outcome::A => Some((self.a, self.b)),
            Outcome::B => Some((self.b, self.a)),
            Outcome::Tie | Outcome::BothBad => None,
        }
    }
}

/// Resolves every judged pair. Output is ordered by prompt, then pair.
pub fn resolve(
    judgments: &[ActiveJudgment],
    adjudications: &HashMap<(i64, i64), Outcome>,
    rewrites: &[PairRow],
) -> Vec<ResolvedPair> {
    decide(judgments, adjudications, rewrites)
        .into_iter()
        .filter_map(|d| {
            let (chosen, rejected) = d.winner_loser()?;
            Some(ResolvedPair {
                prompt_id: d.prompt_id,
                chosen,
                rejected,
                agreeing: d.agreeing,
                votes: d.votes,
                via: d.via,
                reasons: d.reasons,
            })
        })
        .collect()
}

/// Every pair with a decided outcome (a win, a tie or both bad), ordered by prompt, then pair;
/// split votes without a strict majority are left out (they wait for adjudication).
pub fn decide(
    judgments: &[ActiveJudgment],
    adjudications: &HashMap<(i64, i64), Outcome>,
    rewrites: &[PairRow],
) -> Vec<DecidedPair> {
    // Votes grouped by pair, in (prompt, a, b) order. The store returns judgments in that
    // order already, which the stable sort only checks; grouping runs of a sorted list
    // spares a map entry and a vector per pair.
    let key = |j: &ActiveJudgment| (j.prompt_id, j.response_a, j.response_b);
    let mut sorted: Vec<&ActiveJudgment> = judgments.iter().collect();
    sorted.sort_by_key(|j| key(j));
    let mut groups: Vec<((i64, i64, i64), &[&ActiveJudgment])> =
        sorted.chunk_by(|x, y| key(x) == key(y)).map(|votes| (key(votes[0]), votes)).collect();
    // A rewrite makes a pair with the response it replaced, even when nobody judged it.
    let mut unjudged: Vec<(i64, i64, i64)> = rewrites
        .iter()
        .map(|r| {
            let (a, b) = ordered(r.rewrite_id, r.parent_id);
            (r.prompt_id, a, b)
        })
        .filter(|k| groups.binary_search_by_key(k, |(key, _)| *key).is_err())
        .collect();
    unjudged.sort_unstable();
    unjudged.dedup();
    if !unjudged.is_empty() {
        groups.extend(unjudged.into_iter().map(|k| (k, &[][..])));
        groups.sort_by_key(|(key, _)| *key);
    }
    let rewrite_of: HashMap<(i64, i64), &PairRow> =
        rewrites.iter().map(|r| (ordered(r.rewrite_id, r.parent_id), r)).collect();

    let mut out = Vec::new();
    for ((prompt_id, a, b), votes) in groups {
        let (outcome, via) = if let Some(&outcome) = adjudications.get(&(a, b)) {
            (outcome, Resolution::Adjudicated)
        } else if votes.is_empty() {
            let rewrite = rewrite_of[&(a, b)];
            (if rewrite.rewrite_id == a { Outcome::A } else { Outcome::B }, Resolution::Rewrite)
        } else {
            match majority(votes.iter().map(|j| j.outcome)) {
                PairVerdict::Decided(outcome) if votes.len() == 1 => (outcome, Resolution::Single),
                PairVerdict::Decided(outcome) => (outcome, Resolution::Majority),
                PairVerdict::Disputed => continue,
            }
        };
        let agreeing = || votes.iter().filter(|j| j.outcome == outcome);
        let mut reasons: Vec<String> = agreeing().flat_map(|j| j.reasons.iter().cloned()).collect();
        reasons.sort();
        reasons.dedup();
        out.push(DecidedPair {
            prompt_id,
            a,
            b,
            outcome,
            via,
            agreeing: agreeing().count(),
            votes: votes.len(),
            reasons,
        });
    }
    out
}

/// The strict majority of `outcomes` (an outcome with more than half the votes), or
/// `Disputed` when none has: a 2-1-1 split waits for adjudication like a 2-2 one.
pub fn majority(outcomes: impl IntoIterator<Item = Outcome>) -> PairVerdict {
    let mut counts: Vec<(Outcome, usize)> = Vec::with_capacity(4);
    let mut total = 0;
    for outcome in outcomes {
        total += 1;
        match counts.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, n)) => *n += 1,
            None => counts.push((outcome, 1)),
        }
    }
    counts.sort_by(|x, y| y.1.cmp(&x.1));
    match counts.as_slice() {
        [] => PairVerdict::Disputed,
        [(only, _)] => PairVerdict::Decided(*only),
        [(top, n), ..] if 2 * n > total => PairVerdict::Decided(*top),
        _ => PairVerdict::Disputed,
    }
}

fn ordered(x: i64, y: i64) -> (i64, i64) {
    if x < y { (x, y) } else { (y, x) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(annotator: i64, a: i64, b: i64, outcome: Outcome) -> ActiveJudgment {
        ActiveJudgment { prompt_id: 1, response_a: a, response_b: b, annotator_id: annotator, outcome, reasons: vec![] }
    }

    #[test]
    fn single_judgment_decides() {
        let pairs = resolve(&[vote(1, 10, 11, Outcome::B)], &HashMap::new(), &[]);
        assert_eq!(pairs.len(), 1);
        assert_eq!((pairs[0].chosen, pairs[0].rejected, pairs[0].via), (11, 10, Resolution::Single));
    }

    #[test]
    fn majority_wins_and_split_votes_wait() {
        let votes = [vote(1, 10, 11, Outcome::A), vote(2, 10, 11, Outcome::A), vote(3, 10, 11, Outcome::B)];
        let pairs = resolve(&votes, &HashMap::new(), &[]);
        assert_eq!((pairs[0].chosen, pairs[0].agreeing, pairs[0].votes), (10, 2, 3));
        assert_eq!(pairs[0].via, Resolution::Majority);
        let split = [vote(1, 10, 11, Outcome::A), vote(2, 10, 11, Outcome::B)];
        assert!(resolve(&split, &HashMap::new(), &[]).is_empty());
    }

    #[test]
    fn adjudication_overrides_the_majority() {
        let votes = [vote(1, 10, 11, Outcome::A), vote(2, 10, 11, Outcome::A)];
        let adjudicated = HashMap::from([((10, 11), Outcome::B)]);
        let pairs = resolve(&votes, &adjudicated, &[]);
        assert_eq!((pairs[0].chosen, pairs[0].via, pairs[0].agreeing), (11, Resolution::Adjudicated, 0));
    }

    #[test]
    fn ties_and_both_bad_give_no_pair() {
        assert!(resolve(&[vote(1, 10, 11, Outcome::Tie)], &HashMap::new(), &[]).is_empty());
        assert!(resolve(&[vote(1, 10, 11, Outcome::BothBad)], &HashMap::new(), &[]).is_empty());
    }

    #[test]
    fn unjudged_rewrite_is_preferred_over_its_parent() {
        let rewrite = PairRow { prompt_id: 1, rewrite_id: 12, parent_id: 10 };
        let pairs = resolve(&[], &HashMap::new(), &[rewrite]);
        assert_eq!((pairs[0].chosen, pairs[0].rejected, pairs[0].via), (12, 10, Resolution::Rewrite));
        // A judgment on that very pair takes precedence over the default.
        let pairs = resolve(&[vote(1, 10, 12, Outcome::A)], &HashMap::new(), &[rewrite]);
        assert_eq!((pairs[0].chosen, pairs[0].via), (10, Resolution::Single));
    }

    #[test]
    fn pairs_come_out_by_prompt_then_pair_whatever_order_the_votes_come_in() {
        let on = |prompt_id, mut j: ActiveJudgment| {
            j.prompt_id = prompt_id;
            j
        };
        let votes = [
            on(2, vote(1, 20, 21, Outcome::A)),
            on(1, vote(2, 10, 13, Outcome::B)),
            on(1, vote(1, 10, 11, Outcome::A)),
            on(1, vote(2, 10, 13, Outcome::B)),
            on(1, vote(3, 10, 13, Outcome::A)),
        ];
        let rewrite = PairRow { prompt_id: 1, rewrite_id: 12, parent_id: 10 };
        let pairs = resolve(&votes, &HashMap::new(), &[rewrite]);
        let got: Vec<(i64, i64, i64, usize, Resolution)> =
            pairs.iter().map(|p| (p.prompt_id, p.chosen, p.rejected, p.votes, p.via)).collect();
        assert_eq!(
            got,
            [
                (1, 10, 11, 1, Resolution::Single),
                (1, 12, 10, 0, Resolution::Rewrite),
                (1, 13, 10, 3, Resolution::Majority),
                (2, 20, 21, 1, Resolution::Single),
            ]
        );
    }

    #[test]
    fn reasons_come_from_agreeing_votes() {
        let mut first = vote(1, 10, 11, Outcome::A);
        first.reasons = vec!["tone".into(), "factual_error".into()];
        let mut second = vote(2, 10, 11, Outcome::A);
        second.reasons = vec!["tone".into()];
        let mut dissent = vote(3, 10, 11, Outcome::B);
        dissent.reasons = vec!["verbosity".into()];
        let pairs = resolve(&[first, second, dissent], &HashMap::new(), &[]);
        assert_eq!(pairs[0].reasons, vec!["factual_error", "tone"]);
    }

    #[test]
    fn a_2_1_1_split_has_no_strict_majority_and_waits_for_adjudication() {
        let votes = [
            vote(1, 10, 11, Outcome::A),
            vote(2, 10, 11, Outcome::A),
            vote(3, 10, 11, Outcome::B),
            vote(4, 10, 11, Outcome::Tie),
        ];
        assert_eq!(majority(votes.iter().map(|j| j.outcome)), PairVerdict::Disputed);
        assert!(resolve(&votes, &HashMap::new(), &[]).is_empty(), "2 of 4 is not more than half");
        let adjudicated = HashMap::from([((10, 11), Outcome::A)]);
        assert_eq!(resolve(&votes, &adjudicated, &[])[0].via, Resolution::Adjudicated);
        // 3 of 4 is.
        let mut more = votes.to_vec();
        more[3] = vote(4, 10, 11, Outcome::A);
        assert_eq!(resolve(&more, &HashMap::new(), &[])[0].agreeing, 3);
        // 2 of 3 is, with the third vote a tie.
        let two_one = [vote(1, 10, 11, Outcome::B), vote(2, 10, 11, Outcome::B), vote(3, 10, 11, Outcome::Tie)];
        assert_eq!(resolve(&two_one, &HashMap::new(), &[])[0].chosen, 11);
    }
}
