//! Building labeling queues so that a share of prompts is labeled by two people.
//!
//! Prompts are dealt round-robin to the annotators who read their language; a prompt
//! whose content hash falls in the overlap share also goes to the next such annotator.
//! Deterministic, so running it twice gives the same queues.

/// An annotator who can take work.
#[derive(Debug, Clone, PartialEq)]
pub struct Labeler {
    pub id: i64,
    /// Empty: any language.
    pub languages: Vec<String>,
}

/// A prompt that can be assigned.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub prompt_id: i64,
    pub language: String,
}

/// `(annotator id, prompt ids)` for every labeler; each gets at most `per_annotator`.
pub fn plan(labelers: &[Labeler], tasks: &[Task], overlap: f64, per_annotator: usize) -> Vec<(i64, Vec<i64>)> {
    let mut queues: Vec<(i64, Vec<i64>)> = labelers.iter().map(|l| (l.id, Vec::new())).collect();
    let reads = |l: &Labeler, language: &str| {
        l.languages.is_empty() || l.languages.iter().any(|x| language == x || language.starts_with(&format!("{x}-")))
    };
    let mut turn = 0usize;
    for task in tasks {
        let able: Vec<usize> = (0..labelers.len())
            .filter(|&i| reads(&labelers[i], &task.language) && queues[i].1.len() < per_annotator)
            .collect();
        if able.is_empty() {
            continue;
        }
        let first = able[turn % able.len()];
        turn += 1;
        queues[first].1.push(task.prompt_id);
        let doubled = overlap_bucket(task.prompt_id) < overlap;
        if doubled && able.len() > 1 {
            let second = able[(able.iter().position(|&i| i == first).unwrap() + 1) % able.len()];
            queues[second].1.push(task.prompt_id);
        }
    }
    queues
}

/// A stable pseudo-random number in [0, 1) from the prompt id.
fn overlap_bucket(prompt_id: i64) -> f64 {
    let mut x = prompt_id as u64 ^ 0x9E37_79B9_7F4A_7C15;
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x % 10_000) as f64 / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks(n: i64, language: &str) -> Vec<Task> {
        (1..=n).map(|i| Task { prompt_id: i, language: language.into() }).collect()
    }

    #[test]
    fn about_the_overlap_share_is_labeled_twice() {
        let labelers: Vec<Labeler> = (1..=3).map(|id| Labeler { id, languages: vec![] }).collect();
        let queues = plan(&labelers, &tasks(1000, "en"), 0.2, 10_000);
        let mut seen = std::collections::HashMap::new();
        for (_, q) in &queues {
            for p in q {
                *seen.entry(*p).or_insert(0) += 1;
            }
        }
        let twice = seen.values().filter(|&&n| n == 2).count();
        assert_eq!(seen.len(), 1000);
        assert!((150..250).contains(&twice), "{twice} labeled twice");
        let sizes: Vec<usize> = queues.iter().map(|(_, q)| q.len()).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() < 20, "{sizes:?}");
    }

    #[test]
    fn languages_and_quota_are_respected() {
        let labelers =
            vec![Labeler { id: 1, languages: vec!["de".into()] }, Labeler { id: 2, languages: vec!["ja".into()] }];
        let mut all = tasks(10, "de");
        all.extend((11..=20).map(|i| Task { prompt_id: i, language: "ja".into() }));
        let queues = plan(&labelers, &all, 0.5, 4);
        assert!(queues[0].1.iter().all(|p| *p <= 10));
        assert!(queues[1].1.iter().all(|p| *p > 10));
        assert!(queues.iter().all(|(_, q)| q.len() == 4));
    }
}
