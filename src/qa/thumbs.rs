//! Single-answer review (thumbs) in QA: resolving each answer's ratings (adjudication, else
//! the strict majority, a single rating being its own majority), counts per language and
//! reason tag, binary agreement between annotators (the same statistics as for pairs, with
//! two categories: good, bad), gold accuracy, and the disputed answers an adjudicator decides.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

use serde::Serialize;

use super::agreement::{self, AgreementReport, Rating};
use super::resolve::Resolution;
use crate::store::{ActiveThumb, Result, Store, Thumb};
use crate::table;

/// An answer whose ratings decided good or bad.
#[derive(Debug, Clone, PartialEq)]
pub struct DecidedThumb {
    pub prompt_id: i64,
    pub response_id: i64,
    pub rating: Thumb,
    pub via: Resolution,
    /// Ratings that agree with the decision, and all active ratings of the answer.
    pub agreeing: usize,
    pub votes: usize,
    /// Reason tags of the agreeing ratings, sorted and deduplicated.
    pub reasons: Vec<String>,
}

/// Every rated answer with a decided rating, ordered by prompt, then answer; an answer whose
/// ratings split without a strict majority is left out (it waits for adjudication).
pub fn decide(thumbs: &[ActiveThumb], adjudications: &HashMap<i64, Thumb>) -> Vec<DecidedThumb> {
    let mut by_answer: BTreeMap<(i64, i64), Vec<&ActiveThumb>> = BTreeMap::new();
    for t in thumbs {
        by_answer.entry((t.prompt_id, t.response_id)).or_default().push(t);
    }
    let mut out = Vec::new();
    for ((prompt_id, response_id), votes) in by_answer {
        let good = votes.iter().filter(|t| t.rating == Thumb::Good).count();
        let bad = votes.len() - good;
        let (rating, via) = match adjudications.get(&response_id) {
            Some(&rating) => (rating, Resolution::Adjudicated),
            None if 2 * good > votes.len() || 2 * bad > votes.len() => {
                let rating = if good > bad { Thumb::Good } else { Thumb::Bad };
                (rating, if votes.len() == 1 { Resolution::Single } else { Resolution::Majority })
            }
            None => continue,
        };
        let agreeing: Vec<&&ActiveThumb> = votes.iter().filter(|t| t.rating == rating).collect();
        let reasons: BTreeSet<String> = agreeing.iter().flat_map(|t| t.reasons.iter().cloned()).collect();
        out.push(DecidedThumb {
            prompt_id,
            response_id,
            rating,
            via,
            agreeing: agreeing.len(),
            votes: votes.len(),
            reasons: reasons.into_iter().collect(),
        });
    }
    out
}

/// The store's decided answers.
pub fn decided(store: &Store) -> Result<Vec<DecidedThumb>> {
    Ok(decide(&store.active_thumbs()?, &store.thumb_adjudications()?))
}

/// Ratings of one slice (a language or a reason tag).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub key: String,
    pub good: usize,
    pub bad: usize,
    /// Answers rated, and those whose ratings split without a majority or adjudication.
    pub answers: usize,
    pub disputed: usize,
}

/// An annotator's single-answer ratings and how they hold up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnnotatorThumbs {
    pub name: String,
    pub ratings: usize,
    pub good_rate: Option<f64>,
    pub median_seconds: Option<f64>,
    pub gold_items: usize,
    pub gold_accuracy: Option<f64>,
    /// Answers someone else rated too, and how often this annotator matched the decided
    /// rating (adjudication, else majority) there.
    pub resolved_items: usize,
    pub agreement_with_resolved: Option<f64>,
}

/// One answer whose ratings by people disagree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThumbDispute {
    pub prompt_id: i64,
    pub response_id: i64,
    /// (annotator, rating, reasons, note) of each vote.
    pub votes: Vec<(String, Thumb, Vec<String>, Option<String>)>,
    pub adjudicated: Option<Thumb>,
}

/// Everything QA shows about single-answer ratings.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub by_language: Vec<Counts>,
    pub by_tag: Vec<Counts>,
    /// Binary agreement (0 = good, 1 = bad) over answers rated by two or more people.
    pub agreement: AgreementReport,
    pub agreement_by_language: Vec<(String, AgreementReport)>,
    /// Agreement on whether each reason tag applies (binary), over answers rated twice or more.
    pub agreement_by_tag: Vec<(String, AgreementReport)>,
    pub annotators: Vec<AnnotatorThumbs>,
    pub disputes: Vec<ThumbDispute>,
}

fn category(rating: Thumb) -> usize {
    match rating {
        Thumb::Good => 0,
        Thumb::Bad => 1,
    }
}

fn ratings(thumbs: &[&ActiveThumb], category_of: &dyn Fn(&ActiveThumb) -> usize) -> Vec<Rating> {
    thumbs.iter().map(|t| Rating::new(t.response_id as u64, t.annotator_id as u64, category_of(t))).collect()
}

/// The QA overview of every active rating.
pub fn overview(store: &Store) -> Result<Overview> {
    let all = store.active_thumbs()?;
    let adjudicated = store.thumb_adjudications()?;
    let gold = store.thumb_gold()?;
    let languages: HashMap<i64, String> = store.prompt_keys()?.into_iter().map(|(id, (l, _))| (id, l)).collect();
    let language = |t: &ActiveThumb| languages.get(&t.prompt_id).cloned().unwrap_or_else(|| "und".into());
    let decided: HashMap<i64, Thumb> =
        decide(&all, &adjudicated).into_iter().map(|d| (d.response_id, d.rating)).collect();

    let mut languages_seen: BTreeMap<String, Vec<&ActiveThumb>> = BTreeMap::new();
    let mut tags_seen: BTreeMap<String, Vec<&ActiveThumb>> = BTreeMap::new();
    for t in &all {
        languages_seen.entry(language(t)).or_default().push(t);
        for tag in &t.reasons {
            tags_seen.entry(tag.clone()).or_default().push(t);
        }
    }
    let counts = |key: &str, group: &[&ActiveThumb]| {
        let answers: BTreeSet<i64> = group.iter().map(|t| t.response_id).collect();
        Counts {
            key: key.to_string(),
            good: group.iter().filter(|t| t.rating == Thumb::Good).count(),
            bad: group.iter().filter(|t| t.rating == Thumb::Bad).count(),
            disputed: answers.iter().filter(|r| !decided.contains_key(r)).count(),
            answers: answers.len(),
        }
    };
    let by_language = languages_seen.iter().map(|(k, g)| counts(k, g)).collect();
    let by_tag = tags_seen.iter().map(|(k, g)| counts(k, g)).collect();

    let people: Vec<&ActiveThumb> = all.iter().filter(|t| t.by_person).collect();
    let binary = |group: &[&ActiveThumb]| agreement::report(&ratings(group, &|t| category(t.rating)), 2);
    let mut people_by_language: BTreeMap<String, Vec<&ActiveThumb>> = BTreeMap::new();
    for t in &people {
        people_by_language.entry(language(t)).or_default().push(t);
    }
    let agreement_by_language = people_by_language.iter().map(|(k, g)| (k.clone(), binary(g))).collect();
    let mut tags: BTreeSet<String> = store.reason_taxonomy()?.into_iter().map(|r| r.key).collect();
    tags.extend(tags_seen.keys().cloned());
    let agreement_by_tag = tags
        .into_iter()
        .map(|tag| {
            let report = agreement::report(&ratings(&people, &|t| t.reasons.contains(&tag) as usize), 2);
            (tag, report)
        })
        .collect();

    let names: HashMap<i64, String> = store.annotators()?.into_iter().map(|a| (a.id, a.name)).collect();
    let name = |id: i64| names.get(&id).cloned().unwrap_or_else(|| id.to_string());
    let mut votes: HashMap<i64, usize> = HashMap::new();
    for t in &people {
        *votes.entry(t.response_id).or_default() += 1;
    }
    let ratio = |hits: usize, total: usize| (total > 0).then(|| hits as f64 / total as f64);
    let mut by_annotator: BTreeMap<String, Vec<&ActiveThumb>> = BTreeMap::new();
    for t in &people {
        by_annotator.entry(name(t.annotator_id)).or_default().push(t);
    }
    let annotators = by_annotator
        .into_iter()
        .map(|(name, mine)| {
            let mut seconds: Vec<f64> = mine.iter().filter_map(|t| t.seconds).collect();
            seconds.sort_by(f64::total_cmp);
            let on_gold: Vec<bool> =
                mine.iter().filter_map(|t| gold.get(&t.response_id).map(|g| *g == t.rating)).collect();
            let shared: Vec<bool> = mine
                .iter()
                .filter(|t| votes[&t.response_id] > 1)
                .filter_map(|t| decided.get(&t.response_id).map(|d| *d == t.rating))
                .collect();
            AnnotatorThumbs {
                name,
                ratings: mine.len(),
                good_rate: ratio(mine.iter().filter(|t| t.rating == Thumb::Good).count(), mine.len()),
                median_seconds: (!seconds.is_empty()).then(|| seconds[seconds.len() / 2]),
                gold_items: on_gold.len(),
                gold_accuracy: ratio(on_gold.iter().filter(|x| **x).count(), on_gold.len()),
                resolved_items: shared.len(),
                agreement_with_resolved: ratio(shared.iter().filter(|x| **x).count(), shared.len()),
            }
        })
        .collect();

    let mut by_response: BTreeMap<(i64, i64), Vec<&ActiveThumb>> = BTreeMap::new();
    for t in &people {
        by_response.entry((t.prompt_id, t.response_id)).or_default().push(t);
    }
    let disputes = by_response
        .into_iter()
        .filter(|(_, v)| v.iter().any(|t| t.rating != v[0].rating))
        .map(|((prompt_id, response_id), v)| ThumbDispute {
            prompt_id,
            response_id,
            votes: v.iter().map(|t| (name(t.annotator_id), t.rating, t.reasons.clone(), t.note.clone())).collect(),
            adjudicated: adjudicated.get(&response_id).copied(),
        })
        .collect();
    Ok(Overview {
        by_language,
        by_tag,
        agreement: binary(&people),
        agreement_by_language,
        agreement_by_tag,
        annotators,
        disputes,
    })
}

fn fmt(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into())
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.0}%", v * 100.0)).unwrap_or_else(|| "–".into())
}

/// `1 answer`, `2 answers`: a count with its noun in the right number.
fn plural(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// One line of totals and the counts by language (what `verdict stats` adds); empty when
/// nobody rated a single answer.
pub fn summary(store: &Store) -> Result<String> {
    let o = overview(store)?;
    Ok(if o.by_language.is_empty() { String::new() } else { counts_text(&o) })
}

fn counts_text(o: &Overview) -> String {
    let mut out = String::new();
    let (good, bad) = o.by_language.iter().fold((0, 0), |(g, b), c| (g + c.good, b + c.bad));
    let answers: usize = o.by_language.iter().map(|c| c.answers).sum();
    let _ = writeln!(
        out,
        "{} ({good} good, {bad} bad) of {}",
        plural(good + bad, "single-answer rating", "single-answer ratings"),
        plural(answers, "answer", "answers")
    );
    let counts = |title: &str, rows: &[Counts]| -> String {
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|c| {
                vec![
                    c.key.clone(),
                    c.good.to_string(),
                    c.bad.to_string(),
                    c.answers.to_string(),
                    c.disputed.to_string(),
                ]
            })
            .collect();
        table::render(&[title, "good", "bad", "answers", "disputed"], &rows)
    };
    let _ = write!(out, "\n{}", counts("language", &o.by_language));
    if !o.by_tag.is_empty() {
        let _ = write!(out, "\n{}", counts("reason tag", &o.by_tag));
    }
    out
}

/// The overview as text for `verdict thumbs`, `verdict stats` and the QA screen; empty when
/// nobody rated a single answer.
pub fn text(store: &Store) -> Result<String> {
    let o = overview(store)?;
    if o.by_language.is_empty() {
        return Ok(String::new());
    }
    let mut out = counts_text(&o);
    let a = &o.agreement;
    let _ = writeln!(
        out,
        "\nagreement (good/bad) on {} rated by 2+ people: Krippendorff's alpha {}, Fleiss' kappa {}, \
         Gwet's AC1 {}, percent agreement {} — {}",
        plural(a.overlap_units, "answer", "answers"),
        fmt(a.alpha_nominal),
        fmt(a.fleiss_kappa),
        fmt(a.gwet_ac1),
        fmt(a.percent),
        a.interpretation
    );
    let slices = |title: &str, slices: &[(String, AgreementReport)]| -> String {
        let rows: Vec<Vec<String>> = slices
            .iter()
            .filter(|(_, r)| r.overlap_units > 0)
            .map(|(k, r)| {
                vec![k.clone(), r.overlap_units.to_string(), fmt(r.alpha_nominal), fmt(r.fleiss_kappa), fmt(r.percent)]
            })
            .collect();
        if rows.is_empty() {
            String::new()
        } else {
            format!("\n{}", table::render(&[title, "answers", "alpha", "kappa", "agree"], &rows))
        }
    };
    out.push_str(&slices("language", &o.agreement_by_language));
    out.push_str(&slices("reason tag", &o.agreement_by_tag));
    let names: HashMap<u64, String> = store.annotators()?.into_iter().map(|a| (a.id as u64, a.name)).collect();
    let name = |id: u64| names.get(&id).cloned().unwrap_or_else(|| id.to_string());
    for p in &a.pairwise {
        let _ = writeln!(
            out,
            "Cohen's kappa {} × {}: {} on {}",
            name(p.rater_a),
            name(p.rater_b),
            fmt(p.kappa),
            plural(p.shared_units, "shared answer", "shared answers")
        );
    }
    let rows: Vec<Vec<String>> = o
        .annotators
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.ratings.to_string(),
                pct(r.good_rate),
                r.median_seconds.map(|s| format!("{s:.0}s")).unwrap_or_else(|| "–".into()),
                format!("{} ({})", pct(r.gold_accuracy), r.gold_items),
                format!("{} ({})", pct(r.agreement_with_resolved), r.resolved_items),
            ]
        })
        .collect();
    let _ = write!(
        out,
        "\n{}",
        table::render(&["annotator", "ratings", "good", "median", "gold acc.", "agrees w/ resolved"], &rows)
    );
    if !o.disputes.is_empty() {
        let _ = writeln!(out, "\ndisputed answers (`verdict thumbs adjudicate RESPONSE good|bad` decides one)");
        for d in &o.disputes {
            let votes: Vec<String> = d.votes.iter().map(|(n, r, _, _)| format!("{n} {}", r.as_str())).collect();
            let status = d.adjudicated.map(|r| format!("adjudicated {}", r.as_str())).unwrap_or_else(|| "open".into());
            let _ =
                writeln!(out, "  answer {} (prompt {}): {} — {status}", d.response_id, d.prompt_id, votes.join(", "));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewThumb, OpenMode};

    fn vote(annotator_id: i64, response_id: i64, rating: Thumb) -> ActiveThumb {
        ActiveThumb {
            id: 0,
            annotator_id,
            prompt_id: 1,
            response_id,
            rating,
            reasons: vec![],
            note: None,
            seconds: None,
            week: String::new(),
            by_person: true,
        }
    }

    #[test]
    fn a_rating_is_decided_by_adjudication_else_a_strict_majority() {
        use Thumb::{Bad, Good};
        let votes = [
            vote(1, 10, Good),
            vote(1, 11, Good),
            vote(2, 11, Bad),
            vote(3, 11, Good),
            vote(1, 12, Good),
            vote(2, 12, Bad),
        ];
        let decided: Vec<(i64, Thumb, Resolution, usize, usize)> = decide(&votes, &HashMap::new())
            .iter()
            .map(|d| (d.response_id, d.rating, d.via, d.agreeing, d.votes))
            .collect();
        // 12 is split 1-1: it waits for adjudication.
        assert_eq!(decided, [(10, Good, Resolution::Single, 1, 1), (11, Good, Resolution::Majority, 2, 3)]);
        let adjudicated = HashMap::from([(12, Bad), (10, Bad)]);
        let decided: Vec<(i64, Thumb, Resolution)> =
            decide(&votes, &adjudicated).iter().map(|d| (d.response_id, d.rating, d.via)).collect();
        assert_eq!(
            decided,
            [(10, Bad, Resolution::Adjudicated), (11, Good, Resolution::Majority), (12, Bad, Resolution::Adjudicated)]
        );
    }

    #[test]
    fn the_overview_has_counts_binary_agreement_gold_accuracy_and_disputes() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("v.db"), OpenMode::CreateIfMissing).unwrap();
        store.import_records(&crate::samples::records()).unwrap();
        let ana = store.annotator_id("ana", "annotator").unwrap();
        let ben = store.annotator_id("ben", "annotator").unwrap();
        let lead = store.annotator_id("lead", "adjudicator").unwrap();
        let answers: Vec<i64> = store.response_ids().unwrap().iter().map(|(_, r)| *r).take(4).collect();
        use Thumb::{Bad, Good};
        // ana G G B B, ben G G B G: 3 of 4 agree; Cohen's kappa (0.75 - 0.5) / (1 - 0.5) = 0.5.
        for (annotator, ratings) in [(ana, [Good, Good, Bad, Bad]), (ben, [Good, Good, Bad, Good])] {
            for (&response_id, rating) in answers.iter().zip(ratings) {
                let reasons = if rating == Bad { vec!["factual_error".to_string()] } else { vec![] };
                store
                    .record_thumb(&NewThumb {
                        response_id,
                        annotator_id: annotator,
                        rating,
                        reasons,
                        note: None,
                        seconds: Some(2.0),
                        guideline_id: None,
                    })
                    .unwrap();
            }
        }
        store.add_thumb_gold(answers[3], Bad, None, "test").unwrap();
        let o = overview(&store).unwrap();
        assert_eq!(o.agreement.overlap_units, 4);
        assert_eq!(o.agreement.percent, Some(0.75));
        assert!((o.agreement.pairwise[0].kappa.unwrap() - 0.5).abs() < 1e-12, "{:?}", o.agreement.pairwise);
        let total: (usize, usize) = o.by_language.iter().fold((0, 0), |(g, b), c| (g + c.good, b + c.bad));
        assert_eq!(total, (5, 3));
        assert_eq!(
            o.by_tag.iter().map(|c| (c.key.as_str(), c.bad, c.disputed)).collect::<Vec<_>>(),
            [("factual_error", 3, 1)]
        );
        let tag = o.agreement_by_tag.iter().find(|(k, _)| k == "factual_error").unwrap();
        assert_eq!(tag.1.percent, Some(0.75), "the tag applies on the same answers as bad");
        let gold: Vec<(&str, Option<f64>)> = o.annotators.iter().map(|a| (a.name.as_str(), a.gold_accuracy)).collect();
        assert_eq!(gold, [("ana", Some(1.0)), ("ben", Some(0.0))]);
        assert_eq!(o.disputes.len(), 1);
        assert_eq!((o.disputes[0].response_id, o.disputes[0].adjudicated), (answers[3], None));
        assert!(decided(&store).unwrap().iter().all(|d| d.response_id != answers[3]), "a split answer waits");

        store.adjudicate_thumb(answers[3], Bad, lead, None).unwrap();
        let o = overview(&store).unwrap();
        assert_eq!(o.disputes[0].adjudicated, Some(Bad));
        assert_eq!(o.annotators.iter().map(|a| a.agreement_with_resolved).collect::<Vec<_>>(), [Some(1.0), Some(0.75)]);
        let text = text(&store).unwrap();
        assert!(text.contains("8 single-answer ratings (5 good, 3 bad) of 4 answers"), "{text}");
        assert!(text.contains("Cohen's kappa ana × ben: 0.500 on 4 shared answers"), "{text}");
    }

    #[test]
    fn counts_of_one_are_singular() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("v.db"), OpenMode::CreateIfMissing).unwrap();
        store.import_records(&crate::samples::records()).unwrap();
        let answer = store.response_ids().unwrap()[0].1;
        let rate = |store: &mut Store, name: &str, rating| {
            let annotator_id = store.annotator_id(name, "annotator").unwrap();
            let thumb = NewThumb {
                response_id: answer,
                annotator_id,
                rating,
                reasons: vec![],
                note: None,
                seconds: None,
                guideline_id: None,
            };
            store.record_thumb(&thumb).unwrap();
        };
        rate(&mut store, "ana", Thumb::Good);
        let summary = summary(&store).unwrap();
        assert!(summary.starts_with("1 single-answer rating (1 good, 0 bad) of 1 answer\n"), "{summary}");
        rate(&mut store, "ben", Thumb::Good);
        let text = text(&store).unwrap();
        assert!(text.contains("2 single-answer ratings (2 good, 0 bad) of 1 answer\n"), "{text}");
        assert!(text.contains("agreement (good/bad) on 1 answer rated by 2+ people"), "{text}");
        assert!(text.contains("on 1 shared answer\n"), "{text}");
    }
}
