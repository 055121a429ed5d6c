//! The queue: every prompt with its counts and labeling status for one annotator, and
//! the filters over it. Built from a handful of whole-table reads so it stays fast on
//! 100,000 prompts.

use std::collections::{BTreeSet, HashMap};

use crate::domain::Outcome;
use crate::qa::pairing::{PastVerdict, next_pair};
use crate::qa::resolve::{PairVerdict, majority};
use crate::store::{QueueRow, Result, Store};

/// Where a prompt stands for the annotator at the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fewer than two candidates: nothing to compare yet.
    NeedsCandidates,
    /// I have pairs left to judge here.
    Open,
    /// I have judged every pair the scheme asks for.
    Done,
}

/// One prompt as the queue shows it.
#[derive(Debug, Clone)]
pub struct Item {
    pub row: QueueRow,
    pub candidates: Vec<i64>,
    pub mine: Vec<PastVerdict>,
    pub all_judgments: usize,
    /// Some pair of this prompt has split votes without a majority.
    pub disputed: bool,
    pub status: Status,
}

impl Item {
    pub fn next_pair(&self) -> Option<(i64, i64)> {
        next_pair(&self.candidates, &self.mine)
    }

    fn refresh_status(&mut self) {
        self.status = if self.candidates.len() < 2 {
            Status::NeedsCandidates
        } else if self.next_pair().is_some() {
            Status::Open
        } else {
            Status::Done
        };
    }
}

/// The status filter's choices, cycled in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    All,
    Unlabeled,
    Disputed,
    Done,
}

impl StatusFilter {
    pub fn next(self) -> StatusFilter {
        match self {
            StatusFilter::All => StatusFilter::Unlabeled,
            StatusFilter::Unlabeled => StatusFilter::Disputed,
            StatusFilter::Disputed => StatusFilter::Done,
            StatusFilter::Done => StatusFilter::All,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            StatusFilter::All => "all",
            StatusFilter::Unlabeled => "unlabeled by me",
            StatusFilter::Disputed => "disputed",
            StatusFilter::Done => "done",
        }
    }
}

/// What the queue is narrowed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub language: Option<String>,
    pub domain: Option<String>,
    pub status: StatusFilter,
    pub search: String,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter { language: None, domain: None, status: StatusFilter::All, search: String::new() }
    }
}

impl Filter {
    pub fn admits(&self, item: &Item) -> bool {
        self.language.as_ref().is_none_or(|l| *l == item.row.language)
            && self.domain.as_ref().is_none_or(|d| item.row.domain.as_ref() == Some(d))
            && match self.status {
                StatusFilter::All => true,
                StatusFilter::Unlabeled => item.status == Status::Open,
                StatusFilter::Disputed => item.disputed,
                StatusFilter::Done => item.status == Status::Done,
            }
            && (self.search.is_empty() || matches_search(item, &self.search))
    }
}

fn matches_search(item: &Item, search: &str) -> bool {
    let needle = search.to_lowercase();
    item.row.preview.to_lowercase().contains(&needle)
        || item.row.external_id.as_ref().is_some_and(|id| id.to_lowercase().contains(&needle))
}

/// Loads every prompt with its counts for `annotator_id`.
pub fn load(store: &Store, annotator_id: i64) -> Result<Vec<Item>> {
    let rows = store.queue_rows()?;
    let mut candidates: HashMap<i64, Vec<i64>> = HashMap::with_capacity(rows.len());
    for (prompt, response) in store.response_ids()? {
        candidates.entry(prompt).or_default().push(response);
    }
    let mut mine: HashMap<i64, Vec<PastVerdict>> = HashMap::new();
    let mut all: HashMap<i64, usize> = HashMap::new();
    let mut votes: HashMap<(i64, i64, i64), Vec<Outcome>> = HashMap::new();
    for j in store.active_judgments()? {
        *all.entry(j.prompt_id).or_default() += 1;
        if j.annotator_id == annotator_id {
            mine.entry(j.prompt_id).or_default().push(PastVerdict {
                a: j.response_a,
                b: j.response_b,
                outcome: j.outcome,
            });
        }
        votes.entry((j.prompt_id, j.response_a, j.response_b)).or_default().push(j.outcome);
    }
    let disputed: BTreeSet<i64> = votes
        .into_iter()
        .filter(|(_, outcomes)| outcomes.len() > 1 && majority(outcomes.iter().copied()) == PairVerdict::Disputed)
        .map(|((prompt, _, _), _)| prompt)
        .collect();
    // An annotator's assigned prompts come first, in assignment order; the rest follow.
    let assigned: HashMap<i64, usize> =
        store.assignments_of(annotator_id)?.into_iter().enumerate().map(|(position, id)| (id, position)).collect();
    let mut rows = rows;
    if !assigned.is_empty() {
        rows.sort_by_key(|r| assigned.get(&r.prompt_id).copied().unwrap_or(usize::MAX));
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let id = row.prompt_id;
            let mut item = Item {
                candidates: candidates.remove(&id).unwrap_or_default(),
                mine: mine.remove(&id).unwrap_or_default(),
                all_judgments: all.get(&id).copied().unwrap_or(0),
                disputed: disputed.contains(&id),
                status: Status::Open,
                row,
            };
            item.refresh_status();
            item
        })
        .collect())
}

/// Re-reads one prompt's counts after a judgment, an undo or a rewrite.
pub fn reload_item(store: &Store, annotator_id: i64, item: &mut Item) -> Result<()> {
    let id = item.row.prompt_id;
    item.candidates = store.responses_of(id)?.into_iter().map(|r| r.id).collect();
    item.mine = store
        .my_judgments(annotator_id, id)?
        .into_iter()
        .map(|j| PastVerdict { a: j.response_a, b: j.response_b, outcome: j.outcome })
        .collect();
    let judgments: Vec<_> = store.active_judgments_of(id)?;
    item.all_judgments = judgments.len();
    let mut votes: HashMap<(i64, i64), Vec<Outcome>> = HashMap::new();
    for j in judgments {
        votes.entry((j.response_a, j.response_b)).or_default().push(j.outcome);
    }
    item.disputed = votes.values().any(|o| o.len() > 1 && majority(o.iter().copied()) == PairVerdict::Disputed);
    item.refresh_status();
    Ok(())
}
