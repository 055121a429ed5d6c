//! The label compiler: from everything reviewers decided to each training method's examples.
//!
//! | label | pairwise methods (DPO, ORPO, SimPO) | KTO (unpaired) | SFT |
//! | --- | --- | --- | --- |
//! | a win | chosen over rejected | chosen desirable, rejected undesirable | the chosen answer |
//! | a tie | skipped (no preference) | both desirable | — |
//! | both bad | skipped | both undesirable | — |
//! | a rewrite | the rewrite over every answer it rewrites (its parent, and theirs) | the rewrite desirable, those undesirable | the rewrite |
//! | a thumb up / down (single-answer review) | skipped (no second answer) | desirable / undesirable | the answer (up only) |
//!
//! A pair that reviewers judged follows their verdict (a rewrite judged worse than its
//! parent is a loss like any other). KTO keeps one row per answer and label; an answer that
//! is desirable in one pair and undesirable in another keeps both rows and is counted as
//! conflicting. A thumb is an answer's decided rating (`qa::thumbs::decide`: adjudication,
//! else the strict majority of its ratings). The counts per label kind and language are what the run form and
//! `verdict train --plan` show before a run starts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::domain::Outcome;
use crate::store::{PairRow, Result, Store, Thumb};

use super::resolve::{DecidedPair, Resolution, decide};
use super::thumbs::DecidedThumb;

/// The training methods the compiler builds examples for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Dpo,
    Orpo,
    Simpo,
    Kto,
    Sft,
}

impl Method {
    pub fn parse(text: &str) -> Option<Method> {
        Some(match text {
            "dpo" => Method::Dpo,
            "orpo" => Method::Orpo,
            "simpo" => Method::Simpo,
            "kto" => Method::Kto,
            "sft" => Method::Sft,
            _ => return None,
        })
    }

    fn is_pairwise(self) -> bool {
        matches!(self, Method::Dpo | Method::Orpo | Method::Simpo)
    }
}

/// What a label was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelKind {
    Win,
    Tie,
    BothBad,
    Rewrite,
    ThumbUp,
    ThumbDown,
}

impl LabelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LabelKind::Win => "win",
            LabelKind::Tie => "tie",
            LabelKind::BothBad => "both bad",
            LabelKind::Rewrite => "rewrite",
            LabelKind::ThumbUp => "thumb up",
            LabelKind::ThumbDown => "thumb down",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairExample {
    pub prompt_id: i64,
    pub chosen: i64,
    pub rejected: i64,
    pub kind: LabelKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpairedExample {
    pub prompt_id: i64,
    pub response_id: i64,
    pub desirable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftExample {
    pub prompt_id: i64,
    pub response_id: i64,
}

/// How many labels of one kind and language there were, and what they became.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KindCount {
    pub labels: usize,
    /// Examples of the method made from them (pairs, unpaired rows before de-duplication, or
    /// SFT answers).
    pub examples: usize,
    /// Labels this method cannot use (a tie or both-bad for a pairwise method).
    pub skipped: usize,
}

/// Every example one method trains on, with the counts that explain them.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub method: Method,
    pub pairs: Vec<PairExample>,
    pub unpaired: Vec<UnpairedExample>,
    pub sft: Vec<SftExample>,
    pub counts: BTreeMap<(LabelKind, String), KindCount>,
    /// Answers that are desirable in one label and undesirable in another (KTO keeps both).
    pub conflicting: usize,
}

impl Compiled {
    /// How many examples the method trains on.
    pub fn examples(&self) -> usize {
        match self.method {
            Method::Kto => self.unpaired.len(),
            Method::Sft => self.sft.len(),
            _ => self.pairs.len(),
        }
    }

    /// The counts as lines a person reads before a run starts, one per label kind and language.
    pub fn summary_lines(&self) -> Vec<String> {
        let method = format!("{:?}", self.method).to_lowercase();
        let mut lines = vec![format!("training set ({method}): {} examples", self.examples())];
        for ((kind, language), c) in &self.counts {
            let why = match kind {
                LabelKind::ThumbUp | LabelKind::ThumbDown => " (one answer, no pair: kto uses them)",
                _ => "",
            };
            let skipped = if c.skipped > 0 { format!(", {} skipped{why}", c.skipped) } else { String::new() };
            lines.push(format!(
                "  {:<10} {:<6} {} labels -> {} examples{skipped}",
                kind.as_str(),
                language,
                c.labels,
                c.examples
            ));
        }
        if self.conflicting > 0 {
            lines.push(format!("  {} answers are desirable in one label and undesirable in another", self.conflicting));
        }
        lines
    }
}

/// Compiles the decided pairs and rewrites into `method`'s examples. `language_of` maps a
/// prompt to its language (for the counts).
pub fn compile(
    method: Method,
    decided: &[DecidedPair],
    rewrites: &[PairRow],
    language_of: &HashMap<i64, String>,
) -> Compiled {
    let mut out = Compiled {
        method,
        pairs: Vec::new(),
        unpaired: Vec::new(),
        sft: Vec::new(),
        counts: BTreeMap::new(),
        conflicting: 0,
    };
    let language = |prompt_id: i64| language_of.get(&prompt_id).cloned().unwrap_or_else(|| "und".into());
    let mut unpaired_seen: BTreeSet<(i64, bool)> = BTreeSet::new();
    let mut add_unpaired = |out: &mut Compiled, prompt_id: i64, response_id: i64, desirable: bool| {
        if unpaired_seen.insert((response_id, desirable)) {
            out.unpaired.push(UnpairedExample { prompt_id, response_id, desirable });
        }
    };
    let mut sft_seen: BTreeSet<i64> = BTreeSet::new();
    let mut add_sft = |out: &mut Compiled, prompt_id: i64, response_id: i64| {
        if sft_seen.insert(response_id) {
            out.sft.push(SftExample { prompt_id, response_id });
        }
    };
    let decided_pairs: BTreeSet<(i64, i64)> = decided.iter().map(|d| (d.a, d.b)).collect();
    let mut losers: BTreeSet<i64> = BTreeSet::new();

    for d in decided {
        let kind = match (d.via, d.outcome) {
            (Resolution::Rewrite, _) => LabelKind::Rewrite,
            (_, Outcome::A | Outcome::B) => LabelKind::Win,
            (_, Outcome::Tie) => LabelKind::Tie,
            (_, Outcome::BothBad) => LabelKind::BothBad,
        };
        let count = out.counts.entry((kind, language(d.prompt_id))).or_default();
        count.labels += 1;
        let produced = match (method, d.winner_loser()) {
            (m, Some((chosen, rejected))) if m.is_pairwise() => {
                out.pairs.push(PairExample { prompt_id: d.prompt_id, chosen, rejected, kind });
                1
            }
            (Method::Kto, Some((chosen, rejected))) => {
                add_unpaired(&mut out, d.prompt_id, chosen, true);
                add_unpaired(&mut out, d.prompt_id, rejected, false);
                2
            }
            (Method::Kto, None) => {
                let desirable = d.outcome == Outcome::Tie;
                add_unpaired(&mut out, d.prompt_id, d.a, desirable);
                add_unpaired(&mut out, d.prompt_id, d.b, desirable);
                2
            }
            (Method::Sft, Some((chosen, _))) => {
                add_sft(&mut out, d.prompt_id, chosen);
                1
            }
            _ => 0,
        };
        let count = out.counts.get_mut(&(kind, language(d.prompt_id))).expect("inserted above");
        count.examples += produced;
        if produced == 0 {
            count.skipped += 1;
        }
        if let Some((_, loser)) = d.winner_loser() {
            losers.insert(loser);
        }
    }

    // A rewrite is better than every answer it rewrites: its parent (decided above, by votes
    // or as an unjudged rewrite pair) and the parent's own parents, which no pair names yet.
    let parent_of: HashMap<i64, i64> = rewrites.iter().map(|r| (r.rewrite_id, r.parent_id)).collect();
    for r in rewrites {
        let key = (r.prompt_id, language(r.prompt_id));
        let mut ancestor = parent_of.get(&r.parent_id).copied();
        let mut guard = 0;
        while let Some(older) = ancestor {
            guard += 1;
            if guard > parent_of.len() {
                break; // a cycle cannot be stored, but never loop on bad data
            }
            let pair = if r.rewrite_id < older { (r.rewrite_id, older) } else { (older, r.rewrite_id) };
            if !decided_pairs.contains(&pair) {
                let (examples, skipped) = match method {
                    m if m.is_pairwise() => {
                        out.pairs.push(PairExample {
                            prompt_id: r.prompt_id,
                            chosen: r.rewrite_id,
                            rejected: older,
                            kind: LabelKind::Rewrite,
                        });
                        (1, 0)
                    }
                    Method::Kto => {
                        add_unpaired(&mut out, r.prompt_id, r.rewrite_id, true);
                        add_unpaired(&mut out, r.prompt_id, older, false);
                        (2, 0)
                    }
                    _ => (0, 1),
                };
                let count = out.counts.entry((LabelKind::Rewrite, key.1.clone())).or_default();
                count.labels += 1;
                count.examples += examples;
                count.skipped += skipped;
            }
            ancestor = parent_of.get(&older).copied();
        }
        // The rewrite is also an answer to imitate, unless it lost a pair: reviewers judged it
        // worse, or a later rewrite replaced it.
        if !losers.contains(&r.rewrite_id) {
            add_sft(&mut out, r.prompt_id, r.rewrite_id);
        }
    }
    let desirable: BTreeSet<i64> = out.unpaired.iter().filter(|u| u.desirable).map(|u| u.response_id).collect();
    out.conflicting = out.unpaired.iter().filter(|u| !u.desirable && desirable.contains(&u.response_id)).count();
    out
}

/// Adds the decided single-answer ratings to `out`: an unpaired row each for KTO, the good
/// answers for SFT, and for pairwise methods nothing (counted as skipped: a thumb has no
/// second answer to prefer it over).
pub fn add_thumbs(out: &mut Compiled, thumbs: &[DecidedThumb], language_of: &HashMap<i64, String>) {
    let mut unpaired_seen: BTreeSet<(i64, bool)> = out.unpaired.iter().map(|u| (u.response_id, u.desirable)).collect();
    let mut sft_seen: BTreeSet<i64> = out.sft.iter().map(|s| s.response_id).collect();
    for t in thumbs {
        let desirable = t.rating == Thumb::Good;
        let kind = if desirable { LabelKind::ThumbUp } else { LabelKind::ThumbDown };
        let language = language_of.get(&t.prompt_id).cloned().unwrap_or_else(|| "und".into());
        let count = out.counts.entry((kind, language)).or_default();
        count.labels += 1;
        match out.method {
            Method::Kto => {
                if unpaired_seen.insert((t.response_id, desirable)) {
                    out.unpaired.push(UnpairedExample {
                        prompt_id: t.prompt_id,
                        response_id: t.response_id,
                        desirable,
                    });
                }
                count.examples += 1;
            }
            Method::Sft if desirable => {
                if sft_seen.insert(t.response_id) {
                    out.sft.push(SftExample { prompt_id: t.prompt_id, response_id: t.response_id });
                }
                count.examples += 1;
            }
            _ => count.skipped += 1,
        }
    }
    let desirable: BTreeSet<i64> = out.unpaired.iter().filter(|u| u.desirable).map(|u| u.response_id).collect();
    out.conflicting = out.unpaired.iter().filter(|u| !u.desirable && desirable.contains(&u.response_id)).count();
}

/// Compiles the store's labels for `method`: decided pairs, rewrites and single-answer ratings.
pub fn compile_store(store: &Store, method: Method) -> Result<Compiled> {
    let rewrites = store.rewrites()?;
    let decided = decide(&store.active_judgments()?, &store.adjudications()?, &rewrites);
    let language_of: HashMap<i64, String> = store.prompts()?.into_iter().map(|p| (p.id, p.language)).collect();
    let mut compiled = compile(method, &decided, &rewrites, &language_of);
    add_thumbs(&mut compiled, &super::thumbs::decided(store)?, &language_of);
    Ok(compiled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(prompt_id: i64, a: i64, b: i64, outcome: Outcome, via: Resolution) -> DecidedPair {
        DecidedPair { prompt_id, a, b, outcome, via, agreeing: 1, votes: 1, reasons: vec![] }
    }

    /// Prompt 1 (de): 10 beats 11. Prompt 2 (ja): 20 and 21 tie. Prompt 3 (ar): 30 and 31 both
    /// bad. Prompt 4 (zh): 42 rewrites 41, which rewrote 40; nobody judged them.
    /// Prompt 5 (fr): 51 rewrites 50 and reviewers judged the rewrite worse.
    fn labels() -> (Vec<DecidedPair>, Vec<PairRow>, HashMap<i64, String>) {
        let decided = vec![
            decided(1, 10, 11, Outcome::A, Resolution::Single),
            decided(2, 20, 21, Outcome::Tie, Resolution::Majority),
            decided(3, 30, 31, Outcome::BothBad, Resolution::Adjudicated),
            decided(4, 40, 41, Outcome::B, Resolution::Rewrite),
            decided(4, 41, 42, Outcome::B, Resolution::Rewrite),
            decided(5, 50, 51, Outcome::A, Resolution::Single),
        ];
        let rewrites = vec![
            PairRow { prompt_id: 4, rewrite_id: 41, parent_id: 40 },
            PairRow { prompt_id: 4, rewrite_id: 42, parent_id: 41 },
            PairRow { prompt_id: 5, rewrite_id: 51, parent_id: 50 },
        ];
        let languages = [(1, "de"), (2, "ja"), (3, "ar"), (4, "zh"), (5, "fr")];
        (decided, rewrites, languages.iter().map(|&(p, l)| (p, l.to_string())).collect())
    }

    #[test]
    fn pairwise_methods_get_wins_and_rewrites_over_every_answer_they_rewrite() {
        let (d, r, l) = labels();
        let c = compile(Method::Dpo, &d, &r, &l);
        let pairs: Vec<(i64, i64)> = c.pairs.iter().map(|p| (p.chosen, p.rejected)).collect();
        assert_eq!(pairs, [(10, 11), (41, 40), (42, 41), (50, 51), (42, 40)]);
        assert_eq!(c.counts[&(LabelKind::Tie, "ja".into())], KindCount { labels: 1, examples: 0, skipped: 1 });
        assert_eq!(c.counts[&(LabelKind::BothBad, "ar".into())], KindCount { labels: 1, examples: 0, skipped: 1 });
        assert_eq!(c.counts[&(LabelKind::Rewrite, "zh".into())], KindCount { labels: 3, examples: 3, skipped: 0 });
        assert_eq!(c.examples(), 5);
        // The last rewrite is an answer to imitate; the one it replaced and the one judged worse
        // are not.
        let sft: Vec<i64> = c.sft.iter().map(|s| s.response_id).collect();
        assert_eq!(sft, [42]);
    }

    #[test]
    fn kto_gets_every_label_as_unpaired_rows_once_per_answer_and_label() {
        let (d, r, l) = labels();
        let c = compile(Method::Kto, &d, &r, &l);
        let rows: Vec<(i64, bool)> = c.unpaired.iter().map(|u| (u.response_id, u.desirable)).collect();
        assert_eq!(
            rows,
            [
                (10, true),
                (11, false),
                (20, true),
                (21, true),
                (30, false),
                (31, false),
                (41, true),
                (40, false),
                (42, true),
                (41, false),
                (50, true),
                (51, false),
            ]
        );
        // 41 is better than 40 and worse than 42: both rows stay, counted as a conflict.
        assert_eq!(c.conflicting, 1);
        assert_eq!(c.counts[&(LabelKind::Tie, "ja".into())], KindCount { labels: 1, examples: 2, skipped: 0 });
        assert!(c.summary_lines()[0].starts_with("training set (kto): 12 examples"), "{:?}", c.summary_lines());
    }

    #[test]
    fn sft_gets_the_winners_and_the_rewrites() {
        let (d, r, l) = labels();
        let c = compile(Method::Sft, &d, &r, &l);
        let sft: Vec<i64> = c.sft.iter().map(|s| s.response_id).collect();
        assert_eq!(sft, [10, 41, 42, 50]);
        assert_eq!(c.examples(), 4);
    }

    #[test]
    fn thumbs_become_unpaired_rows_for_kto_good_answers_for_sft_and_are_skipped_by_pairwise_methods() {
        let (d, r, mut l) = labels();
        l.insert(6, "sw".into());
        let thumb = |response_id: i64, rating: Thumb| DecidedThumb {
            prompt_id: 6,
            response_id,
            rating,
            via: Resolution::Single,
            agreeing: 1,
            votes: 1,
            reasons: vec![],
        };
        // 60 good, 61 bad, and 10 (the winner of prompt 1's pair) rated bad on its own.
        let thumbs =
            [thumb(60, Thumb::Good), thumb(61, Thumb::Bad), DecidedThumb { prompt_id: 1, ..thumb(10, Thumb::Bad) }];
        let mut kto = compile(Method::Kto, &d, &r, &l);
        let before = kto.unpaired.len();
        add_thumbs(&mut kto, &thumbs, &l);
        let added: Vec<(i64, bool)> = kto.unpaired[before..].iter().map(|u| (u.response_id, u.desirable)).collect();
        assert_eq!(added, [(60, true), (61, false), (10, false)]);
        assert_eq!(kto.counts[&(LabelKind::ThumbUp, "sw".into())], KindCount { labels: 1, examples: 1, skipped: 0 });
        assert_eq!(kto.counts[&(LabelKind::ThumbDown, "de".into())], KindCount { labels: 1, examples: 1, skipped: 0 });
        assert_eq!(kto.conflicting, 2, "41 as before, and 10: desirable in its pair, undesirable on its own");

        let mut dpo = compile(Method::Dpo, &d, &r, &l);
        let pairs = dpo.pairs.clone();
        add_thumbs(&mut dpo, &thumbs, &l);
        assert_eq!(dpo.pairs, pairs, "a thumb makes no pair");
        assert_eq!(dpo.counts[&(LabelKind::ThumbDown, "sw".into())], KindCount { labels: 1, examples: 0, skipped: 1 });
        assert!(
            dpo.summary_lines().iter().any(|l| l.contains("thumb down") && l.contains("1 skipped")),
            "{:?}",
            dpo.summary_lines()
        );

        let mut sft = compile(Method::Sft, &d, &r, &l);
        add_thumbs(&mut sft, &thumbs, &l);
        assert_eq!(sft.sft.iter().map(|s| s.response_id).collect::<Vec<_>>(), [10, 41, 42, 50, 60]);
    }

    #[test]
    fn the_store_compiles_thumbs_into_kto_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("v.db"), crate::store::OpenMode::CreateIfMissing).unwrap();
        store.import_records(&crate::samples::records()).unwrap();
        let ana = store.annotator_id("ana", "annotator").unwrap();
        let (_, last) = *store.response_ids().unwrap().last().unwrap();
        store
            .record_thumb(&crate::store::NewThumb {
                response_id: last,
                annotator_id: ana,
                rating: Thumb::Good,
                reasons: vec![],
                note: None,
                seconds: None,
                guideline_id: None,
            })
            .unwrap();
        let kto = compile_store(&store, Method::Kto).unwrap();
        assert!(kto.unpaired.iter().any(|u| (u.response_id, u.desirable) == (last, true)));
        let thumbs: usize =
            kto.counts.iter().filter(|((k, _), _)| *k == LabelKind::ThumbUp).map(|(_, c)| c.examples).sum();
        assert_eq!(thumbs, 1);
        let dpo = compile_store(&store, Method::Dpo).unwrap();
        let skipped: usize =
            dpo.counts.iter().filter(|((k, _), _)| *k == LabelKind::ThumbUp).map(|(_, c)| c.skipped).sum();
        assert_eq!(skipped, 1, "pairwise methods count the thumb as skipped");
    }

    #[test]
    fn the_sample_data_compiles_for_every_method() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("v.db"), crate::store::OpenMode::CreateIfMissing).unwrap();
        store.import_records(&crate::samples::records()).unwrap();
        let resolved = super::super::resolved_pairs(&store).unwrap();
        assert!(!resolved.is_empty());
        let dpo = compile_store(&store, Method::Dpo).unwrap();
        assert_eq!(dpo.pairs.len(), resolved.len(), "DPO's pairs are the resolved pairs");
        let kto = compile_store(&store, Method::Kto).unwrap();
        assert!(kto.unpaired.len() >= resolved.len());
        let languages: BTreeSet<&str> = kto.counts.keys().map(|(_, l)| l.as_str()).collect();
        assert!(languages.len() >= 6, "the sample data has labels in many languages: {languages:?}");
    }
}
