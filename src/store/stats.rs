//! Counts for `verdict stats`: prompts, responses, judgments and resolved pairs,
//! overall and by language, domain, split and annotator.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{Result, Store};
use crate::qa;

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

struct PromptKeys {
    language: String,
    domain: String,
    split: String,
}

impl Store {
    pub fn stats(&self) -> Result<Stats> {
        let mut prompts: HashMap<i64, PromptKeys> = HashMap::new();
        {
            let mut statement = self.conn.prepare("SELECT id, language, coalesce(domain, '-'), split FROM prompts")?;
            let mut rows = statement.query([])?;
            while let Some(r) = rows.next()? {
                prompts.insert(r.get(0)?, PromptKeys { language: r.get(1)?, domain: r.get(2)?, split: r.get(3)? });
            }
        }
        let mut tables = Breakdowns::default();
        for keys in prompts.values() {
            tables.add(keys, |row| row.prompts += 1);
        }
        {
            let mut statement = self.conn.prepare("SELECT prompt_id FROM responses")?;
            let mut rows = statement.query([])?;
            while let Some(r) = rows.next()? {
                tables.add(&prompts[&r.get::<_, i64>(0)?], |row| row.responses += 1);
            }
        }
        let names: HashMap<i64, String> = {
            let mut statement = self.conn.prepare("SELECT id, name FROM annotators")?;
            let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let judgments = self.active_judgments()?;
        let mut by_annotator: BTreeMap<String, StatsRow> = BTreeMap::new();
        let mut vote_of: HashMap<(i64, i64, i64), crate::domain::Outcome> = HashMap::new();
        for j in &judgments {
            tables.add(&prompts[&j.prompt_id], |row| row.judgments += 1);
            by_annotator.entry(names[&j.annotator_id].clone()).or_default().judgments += 1;
            vote_of.insert((j.annotator_id, j.response_a, j.response_b), j.outcome);
        }
        let pairs = qa::resolve(&judgments, &self.adjudications()?, &self.rewrites()?);
        for pair in &pairs {
            tables.add(&prompts[&pair.prompt_id], |row| row.pairs += 1);
        }
        // Credit each annotator with the resolved pairs their active vote agrees with.
        let resolved: HashMap<(i64, i64), i64> =
            pairs.iter().map(|p| ((p.chosen.min(p.rejected), p.chosen.max(p.rejected)), p.chosen)).collect();
        for ((annotator, a, b), outcome) in &vote_of {
            if let Some(&chosen) = resolved.get(&(*a, *b)) {
                let voted = match outcome {
                    crate::domain::Outcome::A => Some(*a),
                    crate::domain::Outcome::B => Some(*b),
                    _ => None,
                };
                if voted == Some(chosen) {
                    by_annotator.entry(names[annotator].clone()).or_default().pairs += 1;
                }
            }
        }
        Ok(Stats {
            total: tables.total,
            by_language: sorted(tables.language),
            by_domain: sorted(tables.domain),
            by_split: sorted(tables.split),
            by_annotator: sorted(by_annotator),
            guideline_versions: self.guideline_versions()?,
        })
    }
}

#[derive(Default)]
struct Breakdowns {
    total: StatsRow,
    language: BTreeMap<String, StatsRow>,
    domain: BTreeMap<String, StatsRow>,
    split: BTreeMap<String, StatsRow>,
}

impl Breakdowns {
    fn add(&mut self, keys: &PromptKeys, bump: impl Fn(&mut StatsRow)) {
        bump(&mut self.total);
        bump(self.language.entry(keys.language.clone()).or_default());
        bump(self.domain.entry(keys.domain.clone()).or_default());
        bump(self.split.entry(keys.split.clone()).or_default());
    }
}

fn sorted(map: BTreeMap<String, StatsRow>) -> Vec<StatsRow> {
    map.into_iter().map(|(key, row)| StatsRow { key, ..row }).collect()
}
