//! Team work: annotators and roles, assignments, gold items, disputes and adjudication,
//! and the per-annotator numbers a labeling lead reads.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Result, Store};
use crate::domain::{Outcome, sha256_hex};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnnotatorRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub languages: Vec<String>,
    pub judgments: usize,
}

/// One annotator's vote on a disputed pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vote {
    pub annotator: String,
    pub outcome: Outcome,
    pub reasons: Vec<String>,
    pub note: Option<String>,
}

/// A pair whose active judgments disagree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dispute {
    pub prompt_id: i64,
    pub response_a: i64,
    pub response_b: i64,
    pub votes: Vec<Vote>,
    /// The adjudicated verdict, if one was given.
    pub adjudicated: Option<Outcome>,
}

/// A judgment row with what the QA reports need.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgmentFacts {
    pub annotator_id: i64,
    pub prompt_id: i64,
    pub response_a: i64,
    pub response_b: i64,
    pub outcome: Outcome,
    pub reasons: Vec<String>,
    pub shown_left: Option<String>,
    pub seconds: Option<f64>,
    /// The ISO-like week the judgment was made in (`2026-W47`), for trends.
    pub week: String,
}

impl Store {
    /// Adds an annotator, or updates the role and languages of an existing one.
    pub fn upsert_annotator(&self, name: &str, role: &str, languages: &[String]) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO annotators (name, role, languages) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET role = excluded.role, languages = excluded.languages",
            params![name, role, serde_json::to_string(languages).expect("languages serialize")],
        )?;
        Ok(self.conn.query_row("SELECT id FROM annotators WHERE name = ?1", [name], |r| r.get(0))?)
    }

    pub fn annotators(&self) -> Result<Vec<AnnotatorRow>> {
        let mut counts: HashMap<i64, usize> = HashMap::new();
        for j in self.active_judgments()? {
            *counts.entry(j.annotator_id).or_default() += 1;
        }
        let mut statement = self.conn.prepare("SELECT id, name, role, languages FROM annotators ORDER BY name")?;
        let rows = statement.query_map([], |r| {
            let id: i64 = r.get(0)?;
            let languages: String = r.get(3)?;
            Ok(AnnotatorRow {
                id,
                name: r.get(1)?,
                role: r.get(2)?,
                languages: super::json::column(&languages, "annotators", id, "languages")?,
                judgments: 0,
            })
        })?;
        let mut out: Vec<AnnotatorRow> = rows.collect::<rusqlite::Result<_>>()?;
        for a in &mut out {
            a.judgments = counts.get(&a.id).copied().unwrap_or(0);
        }
        Ok(out)
    }

    pub fn annotator_role(&self, name: &str) -> Result<Option<String>> {
        Ok(self.conn.query_row("SELECT role FROM annotators WHERE name = ?1", [name], |r| r.get(0)).optional()?)
    }

    /// Replaces the assignments of the given annotators: `(annotator id, prompt ids in order)`.
    pub fn set_assignments(&mut self, plan: &[(i64, Vec<i64>)]) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let mut written = 0;
        for (annotator, prompts) in plan {
            tx.execute("DELETE FROM assignments WHERE annotator_id = ?1", [annotator])?;
            let mut insert =
                tx.prepare("INSERT INTO assignments (annotator_id, prompt_id, position) VALUES (?1, ?2, ?3)")?;
            for (position, prompt) in prompts.iter().enumerate() {
                written += insert.execute(params![annotator, prompt, position as i64])?;
            }
        }
        tx.commit()?;
        Ok(written)
    }

    /// The prompts assigned to an annotator, in order.
    pub fn assignments_of(&self, annotator_id: i64) -> Result<Vec<i64>> {
        let mut statement =
            self.conn.prepare_cached("SELECT prompt_id FROM assignments WHERE annotator_id = ?1 ORDER BY position")?;
        let rows = statement.query_map([annotator_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// (prompt id, language, number of candidates) of every prompt.
    pub fn prompt_languages(&self) -> Result<Vec<(i64, String, usize)>> {
        let mut statement = self.conn.prepare(
            "SELECT p.id, p.language, (SELECT count(*) FROM candidates r WHERE r.prompt_id = p.id) FROM prompts p ORDER BY p.id",
        )?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as usize)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Marks the pair (a, b), a < b, as gold with any verdict (an adjudicator's call).
    pub fn add_gold_outcome(&self, a: i64, b: i64, outcome: Outcome, note: Option<&str>, source: &str) -> Result<bool> {
        Ok(self.conn.execute(
            "INSERT INTO gold (response_a, response_b, outcome, note, source) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(response_a, response_b) DO NOTHING",
            params![a, b, outcome.as_str(), note, source],
        )? == 1)
    }

    /// Gold verdicts keyed by (a, b).
    pub fn gold(&self) -> Result<HashMap<(i64, i64), Outcome>> {
        let mut statement = self.conn.prepare("SELECT response_a, response_b, outcome FROM gold")?;
        let rows = statement.query_map([], |r| {
            let o: String = r.get(2)?;
            Ok(((r.get(0)?, r.get(1)?), Outcome::parse(&o).expect("schema CHECK")))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records an adjudicated verdict on the pair (a, b).
    pub fn adjudicate(&self, a: i64, b: i64, outcome: Outcome, adjudicator_id: i64, note: Option<&str>) -> Result<i64> {
        let (a, b, outcome) = if a < b {
            (a, b, outcome)
        } else {
            let flipped = match outcome {
                Outcome::A => Outcome::B,
                Outcome::B => Outcome::A,
                other => other,
            };
            (b, a, flipped)
        };
        let stamp = format!("{:?}", std::time::SystemTime::now());
        let uid = sha256_hex(&["adjudication", &a.to_string(), &b.to_string(), outcome.as_str(), &stamp]);
        self.conn.execute(
            "INSERT INTO adjudications (uid, response_a, response_b, outcome, annotator_id, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![uid, a, b, outcome.as_str(), adjudicator_id, note],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Pairs whose active votes (people only, not the import) disagree, with every vote.
    pub fn disputes(&self) -> Result<Vec<Dispute>> {
        let names: HashMap<i64, (String, String)> = {
            let mut statement = self.conn.prepare("SELECT id, name, role FROM annotators")?;
            let rows = statement.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let adjudicated = self.adjudications()?;
        let mut by_pair: std::collections::BTreeMap<(i64, i64, i64), Vec<Vote>> = Default::default();
        for j in self.judgment_facts()? {
            let (name, _) = &names[&j.annotator_id];
            let note = None;
            by_pair.entry((j.prompt_id, j.response_a, j.response_b)).or_default().push(Vote {
                annotator: name.clone(),
                outcome: j.outcome,
                reasons: j.reasons,
                note,
            });
        }
        let notes = self.active_notes()?;
        Ok(by_pair
            .into_iter()
            .filter(|(_, votes)| votes.len() > 1 && votes.iter().any(|v| v.outcome != votes[0].outcome))
            .map(|((prompt_id, a, b), mut votes)| {
                for v in &mut votes {
                    v.note = notes.get(&(v.annotator.clone(), a, b)).cloned();
                }
                Dispute {
                    prompt_id,
                    response_a: a,
                    response_b: b,
                    votes,
                    adjudicated: adjudicated.get(&(a, b)).copied(),
                }
            })
            .collect())
    }

    fn active_notes(&self) -> Result<HashMap<(String, i64, i64), String>> {
        let mut statement = self.conn.prepare(
            "SELECT a.name, j.response_a, j.response_b, j.note FROM judgments j JOIN annotators a ON a.id = j.annotator_id
             WHERE j.note IS NOT NULL AND j.id IN (SELECT MAX(id) FROM judgments GROUP BY annotator_id, response_a, response_b)",
        )?;
        let rows = statement.query_map([], |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every active judgment by a person (the `import` pseudo-annotator left out).
    pub fn judgment_facts(&self) -> Result<Vec<JudgmentFacts>> {
        let mut statement = self.conn.prepare(
            "SELECT j.annotator_id, j.prompt_id, j.response_a, j.response_b, j.outcome, j.reasons, j.shown_left, j.seconds,
                    strftime('%Y-W%W', j.created_at), j.id
             FROM judgments j JOIN annotators a ON a.id = j.annotator_id
             WHERE a.role != 'system' AND j.outcome != 'undone'
               AND j.id IN (SELECT MAX(id) FROM judgments GROUP BY annotator_id, response_a, response_b)
             ORDER BY j.id",
        )?;
        let rows = statement.query_map([], |r| {
            let outcome: String = r.get(4)?;
            let reasons: String = r.get(5)?;
            Ok(JudgmentFacts {
                annotator_id: r.get(0)?,
                prompt_id: r.get(1)?,
                response_a: r.get(2)?,
                response_b: r.get(3)?,
                outcome: Outcome::parse(&outcome).expect("active rows are verdicts"),
                reasons: super::json::column(&reasons, "judgments", r.get(9)?, "reasons")?,
                shown_left: r.get(6)?,
                seconds: r.get(7)?,
                week: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// (prompt id → (language, domain)) for per-language and per-domain breakdowns.
    pub fn prompt_keys(&self) -> Result<HashMap<i64, (String, String)>> {
        let mut statement = self.conn.prepare("SELECT id, language, coalesce(domain, '-') FROM prompts")?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
