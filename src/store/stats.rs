//! Counts for `verdict stats`: prompts, responses, judgments and resolved pairs,
//! overall and by language, domain, split and annotator. Which pairs a set of judgments
//! resolves to is qa's rule (`qa::stats` passes it in), so store does not import qa.

use std::collections::HashMap;

use serde::Serialize;

use super::{ActiveJudgment, Result, Store};
use crate::domain::Outcome;

/// One row of a breakdown.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct StatsRow {
    pub key: String,
    pub prompts: usize,
    pub responses: usize,
    pub judgments: usize,
    pub pairs: usize,
}

/// Everything `verdict stats` prints.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub total: StatsRow,
    pub by_language: Vec<StatsRow>,
    pub by_domain: Vec<StatsRow>,
    pub by_split: Vec<StatsRow>,
    /// Per annotator: `judgments` are their active judgments, `pairs` the resolved
    /// pairs their vote agrees with.
    pub by_annotator: Vec<StatsRow>,
    pub guideline_versions: i64,
}

/// A prompt's row in each breakdown, as indices into the breakdowns' tables.
#[derive(Clone, Copy, Debug)]
struct PromptKeys {
    language: usize,
    domain: usize,
    split: usize,
}

/// A resolved pair as the counts need it: (prompt, chosen, rejected) response ids.
pub type PairKey = (i64, i64, i64);

impl Store {
    /// The counts, with `resolve` turning the active judgments into the resolved pairs
    /// (ordered by prompt, then pair: `qa::resolve`'s order).
    pub fn stats_with(&self, resolve: &dyn Fn(&Store, &[ActiveJudgment]) -> Result<Vec<PairKey>>) -> Result<Stats> {
        // Counting goes through small integer indices: a 100,000-prompt database means
        // hundreds of thousands of increments, and string keys would allocate for each.
        let mut tables = Breakdowns::default();
        // By prompt id (ids are dense: rows are never deleted).
        let mut prompts: Vec<Option<PromptKeys>> = Vec::new();
        {
            let mut statement = self.conn.prepare("SELECT id, language, coalesce(domain, '-'), split FROM prompts")?;
            let mut rows = statement.query([])?;
            while let Some(r) = rows.next()? {
                let keys = PromptKeys {
                    language: tables.language.index(r.get_ref(1)?.as_str().unwrap_or("")),
                    domain: tables.domain.index(r.get_ref(2)?.as_str().unwrap_or("")),
                    split: tables.split.index(r.get_ref(3)?.as_str().unwrap_or("")),
                };
                let id = usize::try_from(r.get::<_, i64>(0)?).unwrap_or(0);
                if prompts.len() <= id {
                    prompts.resize(id + 1, None);
                }
                prompts[id] = Some(keys);
                tables.add(keys, |row| row.prompts += 1);
            }
        }
        let keys_of = |prompt_id: i64| -> PromptKeys {
            usize::try_from(prompt_id).ok().and_then(|id| prompts.get(id).copied().flatten()).expect("foreign key")
        };
        {
            // Read from the index on prompt_id (a GROUP BY in SQL is slower than counting here).
            let mut statement = self.conn.prepare("SELECT prompt_id FROM candidates")?;
            let mut rows = statement.query([])?;
            while let Some(r) = rows.next()? {
                tables.add(keys_of(r.get(0)?), |row| row.responses += 1);
            }
        }
        let names: HashMap<i64, String> = {
            let mut statement = self.conn.prepare("SELECT id, name FROM annotators")?;
            let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let judgments = self.active_judgments()?;
        let mut by_annotator: HashMap<i64, StatsRow> = HashMap::new();
        for j in &judgments {
            tables.add(keys_of(j.prompt_id), |row| row.judgments += 1);
            by_annotator.entry(j.annotator_id).or_default().judgments += 1;
        }
        // Ordered by prompt, then pair (a, b): found by binary search below.
        let pairs = resolve(self, &judgments)?;
        for &(prompt_id, _, _) in &pairs {
            tables.add(keys_of(prompt_id), |row| row.pairs += 1);
        }
        let pair_key = |prompt: i64, x: i64, y: i64| (prompt, x.min(y), x.max(y));
        // Credit each annotator with the resolved pairs their active vote agrees with.
        for j in &judgments {
            let voted = match j.outcome {
                Outcome::A => j.response_a,
                Outcome::B => j.response_b,
                _ => continue,
            };
            let found = pairs
                .binary_search_by_key(&pair_key(j.prompt_id, j.response_a, j.response_b), |p| pair_key(p.0, p.1, p.2));
            if found.is_ok_and(|at| pairs[at].1 == voted) {
                by_annotator.entry(j.annotator_id).or_default().pairs += 1;
            }
        }
        let mut by_annotator: Vec<StatsRow> = by_annotator
            .into_iter()
            .map(|(id, row)| StatsRow { key: names.get(&id).cloned().unwrap_or_default(), ..row })
            .collect();
        by_annotator.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Stats {
            total: tables.total,
            by_language: tables.language.rows(),
            by_domain: tables.domain.rows(),
            by_split: tables.split.rows(),
            by_annotator,
            guideline_versions: self.guideline_versions()?,
        })
    }
}

/// Rows of one breakdown, found by key once per prompt.
#[derive(Default)]
struct Table {
    index: HashMap<String, usize>,
    rows: Vec<StatsRow>,
}

impl Table {
    fn index(&mut self, key: &str) -> usize {
        // Breakdowns have a handful of rows: comparing a few strings beats hashing one.
        let found = if self.rows.len() <= 8 {
            self.rows.iter().position(|row| row.key == key)
        } else {
            self.index.get(key).copied()
        };
        if let Some(i) = found {
            return i;
        }
        self.rows.push(StatsRow { key: key.to_string(), ..StatsRow::default() });
        self.index.insert(key.to_string(), self.rows.len() - 1);
        self.rows.len() - 1
    }

    fn rows(mut self) -> Vec<StatsRow> {
        self.rows.sort_by(|a, b| a.key.cmp(&b.key));
        self.rows
    }
}

#[derive(Default)]
struct Breakdowns {
    total: StatsRow,
    language: Table,
    domain: Table,
    split: Table,
}

impl Breakdowns {
    fn add(&mut self, keys: PromptKeys, bump: impl Fn(&mut StatsRow)) {
        bump(&mut self.total);
        bump(&mut self.language.rows[keys.language]);
        bump(&mut self.domain.rows[keys.domain]);
        bump(&mut self.split.rows[keys.split]);
    }
}
