//! Reviewing models: the answers a run generated at each evaluation, each model's answer to a
//! prompt for a seed, blind votes between two models' answers, and stored win rates.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::uids::{self, Keyed};
use super::{Result, Store};
use crate::domain::{Outcome, response_uid};

/// An answer the training loop generated for a fixed test prompt at one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSample {
    pub step: i64,
    pub prompt_id: i64,
    pub content: String,
}

/// A blind vote, with the outcome said from model A's side (`A` = model A's answer won).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvalVote {
    pub annotator_id: i64,
    pub prompt_id: i64,
    pub model_a: i64,
    pub model_b: i64,
    pub response_a: i64,
    pub response_b: i64,
    /// Which model's answer was on the left.
    pub a_on_left: bool,
    pub outcome: Outcome,
    pub seconds: Option<f64>,
}

/// An active (not superseded) blind vote and the prompt's language.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalVoteRow {
    pub id: i64,
    pub annotator: String,
    pub prompt_id: i64,
    pub language: String,
    pub model_a: i64,
    pub model_b: i64,
    pub outcome: String,
    pub a_on_left: bool,
}

/// A stored win-rate summary (`evals`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalRow {
    pub id: i64,
    pub run_id: Option<i64>,
    pub model_a: i64,
    pub model_b: i64,
    pub wins: i64,
    pub losses: i64,
    pub ties: i64,
    pub win_rate: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub by_language: String,
    pub created_at: String,
}

impl Store {
    pub fn add_run_sample(
        &self,
        run_id: i64,
        step: i64,
        prompt_id: i64,
        content: &str,
        params_json: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO run_samples (run_id, step, prompt_id, content, params) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(run_id, prompt_id, step) DO UPDATE SET content = excluded.content, params = excluded.params",
            params![run_id, step, prompt_id, content, params_json],
        )?;
        Ok(())
    }

    /// Every sample of a run, by prompt then step.
    pub fn run_samples(&self, run_id: i64) -> Result<Vec<RunSample>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT step, prompt_id, content FROM run_samples WHERE run_id = ?1 ORDER BY prompt_id, step",
        )?;
        let rows = statement
            .query_map([run_id], |r| Ok(RunSample { step: r.get(0)?, prompt_id: r.get(1)?, content: r.get(2)? }))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The response that is `model_id`'s answer to `prompt_id` for `seed`, if generated.
    pub fn model_answer(&self, model_id: i64, prompt_id: i64, seed: u64) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT response_id FROM model_answers WHERE model_id = ?1 AND prompt_id = ?2 AND seed = ?3",
                params![model_id, prompt_id, seed as i64],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Every answer `model_id` has for `seed`: (prompt id, response id), by prompt.
    pub fn model_answers(&self, model_id: i64, seed: u64) -> Result<Vec<(i64, i64)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT prompt_id, response_id FROM model_answers WHERE model_id = ?1 AND seed = ?2 ORDER BY prompt_id",
        )?;
        let rows = statement.query_map(params![model_id, seed as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Stores a model's answer (as a response, once per text) and remembers it as that model's
    /// answer for the seed. Returns the response id.
    pub fn add_model_answer(
        &mut self,
        model_id: i64,
        prompt_id: i64,
        seed: u64,
        text: &str,
        params_json: &str,
    ) -> Result<i64> {
        let tx = self.conn.transaction()?;
        let prompt_uid: String = tx.query_row("SELECT uid FROM prompts WHERE id = ?1", [prompt_id], |r| r.get(0))?;
        let uid = response_uid(&prompt_uid, text);
        let (response_id, new) = uids::insert_once(&tx, Keyed::Responses, &uid, || {
            tx.execute(
                "INSERT INTO responses (uid, prompt_id, content, origin, model_id, params) VALUES (?1, ?2, ?3, 'model', ?4, ?5)",
                params![uid, prompt_id, text, model_id, params_json],
            )?;
            Ok(tx.last_insert_rowid())
        })?;
        if new {
            // Not a candidate to label: the same text as an existing candidate stays one.
            tx.execute("INSERT INTO evaluation_only (response_id) VALUES (?1)", [response_id])?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO model_answers (model_id, prompt_id, seed, response_id) VALUES (?1, ?2, ?3, ?4)",
            params![model_id, prompt_id, seed as i64, response_id],
        )?;
        tx.commit()?;
        Ok(response_id)
    }

    /// Records a blind vote in its own transaction; an earlier vote by the same annotator on the
    /// same prompt and pair of models is superseded, never deleted.
    pub fn record_eval_vote(&mut self, vote: &NewEvalVote) -> Result<i64> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO eval_votes (annotator_id, prompt_id, model_a, model_b, response_a, response_b, shown_left,
                                     outcome, seconds)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                vote.annotator_id,
                vote.prompt_id,
                vote.model_a,
                vote.model_b,
                vote.response_a,
                vote.response_b,
                if vote.a_on_left { "a" } else { "b" },
                vote.outcome.as_str(),
                vote.seconds
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE eval_votes SET superseded_by = ?1
             WHERE id != ?1 AND superseded_by IS NULL AND annotator_id = ?2 AND prompt_id = ?3
               AND ((model_a = ?4 AND model_b = ?5) OR (model_a = ?5 AND model_b = ?4))",
            params![id, vote.annotator_id, vote.prompt_id, vote.model_a, vote.model_b],
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Active blind votes; with `models`, only those between exactly these two (either order).
    pub fn eval_votes(&self, models: Option<(i64, i64)>) -> Result<Vec<EvalVoteRow>> {
        let (a, b) = models.unwrap_or((-1, -1));
        let mut statement = self.conn.prepare_cached(
            "SELECT v.id, n.name, v.prompt_id, p.language, v.model_a, v.model_b, v.outcome, v.shown_left
             FROM eval_votes v JOIN annotators n ON n.id = v.annotator_id JOIN prompts p ON p.id = v.prompt_id
             WHERE v.superseded_by IS NULL
               AND (?1 < 0 OR (v.model_a = ?1 AND v.model_b = ?2) OR (v.model_a = ?2 AND v.model_b = ?1))
             ORDER BY v.id",
        )?;
        let rows = statement.query_map(params![a, b], |r| {
            Ok(EvalVoteRow {
                id: r.get(0)?,
                annotator: r.get(1)?,
                prompt_id: r.get(2)?,
                language: r.get(3)?,
                model_a: r.get(4)?,
                model_b: r.get(5)?,
                outcome: r.get(6)?,
                a_on_left: r.get::<_, String>(7)? == "a",
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The prompts an annotator has an active vote on for this pair of models.
    pub fn voted_prompts(&self, annotator_id: i64, model_a: i64, model_b: i64) -> Result<Vec<i64>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT DISTINCT prompt_id FROM eval_votes
             WHERE superseded_by IS NULL AND annotator_id = ?1
               AND ((model_a = ?2 AND model_b = ?3) OR (model_a = ?3 AND model_b = ?2))",
        )?;
        let rows = statement.query_map(params![annotator_id, model_a, model_b], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Stores a win-rate summary, replacing the one stored earlier for the same run and pair of
    /// models (a report recomputed after more votes is the same evaluation, not a new one).
    #[allow(clippy::too_many_arguments)]
    pub fn save_eval(
        &self,
        run_id: Option<i64>,
        model_a: i64,
        model_b: i64,
        (wins, losses, ties): (i64, i64, i64),
        win_rate: f64,
        (ci_low, ci_high): (f64, f64),
        by_language_json: &str,
    ) -> Result<i64> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "DELETE FROM evals WHERE run_id IS ?1 AND model_a = ?2 AND model_b = ?3",
            params![run_id, model_a, model_b],
        )?;
        tx.execute(
            "INSERT INTO evals (run_id, model_a, model_b, wins, losses, ties, win_rate, ci_low, ci_high, by_language)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![run_id, model_a, model_b, wins, losses, ties, win_rate, ci_low, ci_high, by_language_json],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// Stored win rates, newest first; with `run_id`, only that run's.
    pub fn evals(&self, run_id: Option<i64>) -> Result<Vec<EvalRow>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, run_id, model_a, model_b, wins, losses, ties, win_rate, ci_low, ci_high, by_language, created_at
             FROM evals WHERE ?1 IS NULL OR run_id = ?1 ORDER BY id DESC",
        )?;
        let rows = statement.query_map([run_id], |r| {
            Ok(EvalRow {
                id: r.get(0)?,
                run_id: r.get(1)?,
                model_a: r.get(2)?,
                model_b: r.get(3)?,
                wins: r.get(4)?,
                losses: r.get(5)?,
                ties: r.get(6)?,
                win_rate: r.get(7)?,
                ci_low: r.get(8)?,
                ci_high: r.get(9)?,
                by_language: r.get(10)?,
                created_at: r.get(11)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ImportRecord, Message, NewPrompt, Split};

    fn the_prompt() -> NewPrompt {
        NewPrompt {
            external_id: None,
            messages: vec![Message::new("user", "Wie kündige ich mein Konto?")],
            language: "de".into(),
            domain: Some("banking".into()),
            tags: Vec::new(),
            split: Some(Split::Test),
            source: None,
        }
    }

    fn store_with_prompt() -> (Store, i64, i64, i64) {
        let mut store = Store::open_in_memory().unwrap();
        let (prompt_id, _) = store.add_prompt(&the_prompt()).unwrap();
        let base = store.register_model("sha-base", "base", "/m/base.gguf", "gguf", "llama", "Q4_1").unwrap();
        let tuned = store.register_model("sha-tuned", "tuned", "/m/tuned", "hf", "llama", "F32").unwrap();
        (store, prompt_id, base, tuned)
    }

    #[test]
    fn two_models_with_the_same_text_share_a_response_but_each_has_its_answer() {
        let (mut store, prompt_id, base, tuned) = store_with_prompt();
        let a = store.add_model_answer(base, prompt_id, 7, "Über die App. 👍", "{}").unwrap();
        let b = store.add_model_answer(tuned, prompt_id, 7, "Über die App. 👍", "{}").unwrap();
        assert_eq!(a, b);
        assert_eq!(store.model_answer(base, prompt_id, 7).unwrap(), Some(a));
        assert_eq!(store.model_answer(tuned, prompt_id, 7).unwrap(), Some(a));
        assert_eq!(store.model_answer(tuned, prompt_id, 8).unwrap(), None);
        assert_eq!(store.model_answers(tuned, 7).unwrap(), vec![(prompt_id, a)]);
        assert!(store.model_answers(tuned, 8).unwrap().is_empty());
    }

    #[test]
    fn evaluation_answers_are_not_labeling_candidates_until_generated_as_one() {
        let (mut store, prompt_id, base, tuned) = store_with_prompt();
        let candidate = store.add_generated(prompt_id, "p", "Erste Antwort.", base, "{}").unwrap().unwrap();
        let prompt_uid: String =
            store.conn.query_row("SELECT uid FROM prompts WHERE id = ?1", [prompt_id], |r| r.get(0)).unwrap();
        let shared = store.add_generated(prompt_id, &prompt_uid, "Über die App. 👍", base, "{}").unwrap().unwrap();
        // The base model's evaluation answer is the existing candidate's text: it stays one.
        assert_eq!(store.add_model_answer(base, prompt_id, 7, "Über die App. 👍", "{}").unwrap(), shared);
        let tuned_answer = store.add_model_answer(tuned, prompt_id, 7, "Über die Filiale.", "{}").unwrap();
        assert_eq!(store.response_ids_of(prompt_id).unwrap(), vec![candidate, shared]);
        assert_eq!(store.responses_of(prompt_id).unwrap().len(), 2);
        assert!(!store.response_ids().unwrap().iter().any(|&(_, r)| r == tuned_answer));
        assert_eq!(store.prompt_languages().unwrap(), vec![(prompt_id, "de".to_string(), 2)]);
        // Generated as a candidate later, the same text is one from then on.
        assert_eq!(
            store.add_generated(prompt_id, &prompt_uid, "Über die Filiale.", tuned, "{}").unwrap(),
            Some(tuned_answer)
        );
        assert_eq!(store.response_ids_of(prompt_id).unwrap(), vec![candidate, shared, tuned_answer]);
    }

    #[test]
    fn an_evaluation_answer_imported_in_a_pair_becomes_a_candidate() {
        let (mut store, prompt_id, base, _) = store_with_prompt();
        let answer = store.add_model_answer(base, prompt_id, 3, "Im Online-Banking unter Konto.", "{}").unwrap();
        assert!(store.response_ids_of(prompt_id).unwrap().is_empty());
        let pair = ImportRecord::Pair {
            prompt: the_prompt(),
            chosen: "Im Online-Banking unter Konto.".into(),
            rejected: "Gar nicht.".into(),
            reasons: Vec::new(),
            note: None,
        };
        store.import_records(&[pair]).unwrap();
        let candidates = store.response_ids_of(prompt_id).unwrap();
        assert_eq!(candidates.len(), 2, "{candidates:?}");
        assert!(candidates.contains(&answer), "the judged answer is a candidate again");
    }

    #[test]
    fn a_second_vote_supersedes_the_first_in_either_model_order() {
        let (mut store, prompt_id, base, tuned) = store_with_prompt();
        let ra = store.add_model_answer(base, prompt_id, 1, "Antwort A", "{}").unwrap();
        let rb = store.add_model_answer(tuned, prompt_id, 1, "Antwort B", "{}").unwrap();
        let annotator_id = store.annotator_id("ana", "annotator").unwrap();
        let mut vote = NewEvalVote {
            annotator_id,
            prompt_id,
            model_a: base,
            model_b: tuned,
            response_a: ra,
            response_b: rb,
            a_on_left: true,
            outcome: Outcome::A,
            seconds: Some(3.0),
        };
        store.record_eval_vote(&vote).unwrap();
        vote = NewEvalVote {
            model_a: tuned,
            model_b: base,
            response_a: rb,
            response_b: ra,
            outcome: Outcome::Tie,
            ..vote
        };
        let second = store.record_eval_vote(&vote).unwrap();
        let active = store.eval_votes(Some((base, tuned))).unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!((active[0].id, active[0].outcome.as_str(), active[0].language.as_str()), (second, "tie", "de"));
        assert_eq!(store.voted_prompts(annotator_id, base, tuned).unwrap(), vec![prompt_id]);
        let all: i64 = store.conn.query_row("SELECT count(*) FROM eval_votes", [], |r| r.get(0)).unwrap();
        assert_eq!(all, 2, "the first vote is kept, superseded");
    }

    #[test]
    fn saving_an_eval_again_replaces_the_earlier_one_for_the_same_run_and_models() {
        let (store, _, base, tuned) = store_with_prompt();
        let run = store.create_run("r", "dpo", "{}", Some(base)).unwrap();
        store.save_eval(Some(run), base, tuned, (1, 2, 0), 0.33, (0.06, 0.79), "{}").unwrap();
        let second = store.save_eval(Some(run), base, tuned, (3, 2, 1), 0.58, (0.28, 0.84), "{}").unwrap();
        store.save_eval(None, base, tuned, (1, 0, 0), 1.0, (0.21, 1.0), "{}").unwrap();
        store.save_eval(None, base, tuned, (2, 0, 0), 1.0, (0.34, 1.0), "{}").unwrap();
        let of_run = store.evals(Some(run)).unwrap();
        assert_eq!(of_run.len(), 1);
        assert_eq!((of_run[0].id, of_run[0].wins, of_run[0].ties), (second, 3, 1));
        assert_eq!(store.evals(None).unwrap().len(), 2, "one for the run, one without a run");
        assert_eq!(store.runs().unwrap()[0].base_model_id, Some(base));
    }

    #[test]
    fn samples_are_listed_by_prompt_then_step() {
        let (store, prompt_id, _, _) = store_with_prompt();
        let run = store.create_run("r", "dpo", "{}", None).unwrap();
        store.add_run_sample(run, 20, prompt_id, "später", "{}").unwrap();
        store.add_run_sample(run, 10, prompt_id, "früher", "{}").unwrap();
        store.add_run_sample(run, 10, prompt_id, "früher, neu", "{}").unwrap();
        let samples = store.run_samples(run).unwrap();
        assert_eq!(
            samples.iter().map(|s| (s.step, s.content.as_str())).collect::<Vec<_>>(),
            [(10, "früher, neu"), (20, "später")]
        );
    }
}
