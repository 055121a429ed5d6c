//! Bringing another verdict database into this one by content identity: prompts and
//! responses by their hashes, annotators by name, models by sha256, judgments and
//! adjudications by uid (found through the `*_uids` key tables, see `uids`), single-answer
//! ratings (thumbs) and their adjudications by their uid column; assignments,
//! model answers, blind-evaluation votes, runs with their metrics, samples and training
//! sets, and stored win rates by the identities of what they refer to (see each step).
//! Merging twice adds nothing; two annotators' conflicting verdicts stay separate votes.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::uids::Keyed;
use super::{Result, Store, StoreError, migrations};

/// How many rows of each kind a merge added.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MergeSummary {
    pub annotators: usize,
    pub guidelines: usize,
    pub models: usize,
    pub prompts: usize,
    pub responses: usize,
    pub judgments: usize,
    pub adjudications: usize,
    pub gold: usize,
    pub assignments: usize,
    pub model_answers: usize,
    pub eval_votes: usize,
    pub runs: usize,
    pub run_metrics: usize,
    pub run_samples: usize,
    pub run_examples: usize,
    pub run_sets: usize,
    pub evals: usize,
    pub thumbs: usize,
    pub thumb_gold: usize,
    pub thumb_adjudications: usize,
}

/// The statements, in dependency order. `other` is the attached database. Pairs are
/// stored as (lower id, higher id), and ids differ between files, so a pair whose
/// order flips here has its outcome and shown side flipped with it.
const STEPS: &[(&str, &str)] = &[
    ("annotators", "INSERT INTO annotators (name, role, languages, created_at)
        SELECT name, role, languages, created_at FROM other.annotators WHERE true
        ON CONFLICT(name) DO NOTHING"),
    ("guidelines", "INSERT INTO guidelines (hash, name, domain, title, content, reasons, loaded_at)
        SELECT hash, name, domain, title, content, reasons, loaded_at FROM other.guidelines WHERE true
        ON CONFLICT(hash) DO NOTHING"),
    ("models", "INSERT INTO models (sha256, name, path, format, architecture, quantization, created_at)
        SELECT sha256, name, path, format, architecture, quantization, created_at FROM other.models WHERE true
        ON CONFLICT(sha256) DO NOTHING"),
    ("prompts", "INSERT INTO prompts (uid, external_id, messages, language, domain, tags, split, split_explicit, source, created_at)
        SELECT uid, external_id, messages, language, domain, tags, split, split_explicit, source, created_at
        FROM other.prompts op WHERE NOT EXISTS (SELECT 1 FROM main.prompt_uids k WHERE k.uid = op.uid)
        ORDER BY id"),
    ("", "CREATE TEMP TABLE merge_responses_before AS SELECT coalesce(max(id), 0) AS id FROM main.responses"),
    ("responses", "INSERT INTO responses (uid, prompt_id, content, origin, model_id, params, author, created_at)
        SELECT r.uid, p.id, r.content, r.origin, m.id, r.params, r.author, r.created_at
        FROM other.responses r
        JOIN other.prompts op ON op.id = r.prompt_id JOIN main.prompt_uids p ON p.uid = op.uid
        LEFT JOIN other.models om ON om.id = r.model_id LEFT JOIN main.models m ON m.sha256 = om.sha256
        WHERE NOT EXISTS (SELECT 1 FROM main.response_uids k WHERE k.uid = r.uid)
        ORDER BY r.id"),
    ("", "UPDATE main.responses SET parent_id = (
            SELECT mp.id FROM other.response_uids ok JOIN other.responses r ON r.id = ok.id
            JOIN other.responses op ON op.id = r.parent_id JOIN main.response_uids mp ON mp.uid = op.uid
            WHERE ok.uid = main.responses.uid)
        WHERE parent_id IS NULL AND origin = 'human' AND id IN (
            SELECT k.id FROM other.responses r JOIN main.response_uids k ON k.uid = r.uid WHERE r.parent_id IS NOT NULL)"),
    ("judgments", "INSERT INTO judgments (uid, prompt_id, response_a, response_b, annotator_id, outcome, reasons, note,
                                          shown_left, seconds, guideline_id, created_at)
        SELECT j.uid, p.id, min(ra.id, rb.id), max(ra.id, rb.id), an.id,
               CASE WHEN ra.id < rb.id THEN j.outcome WHEN j.outcome = 'a' THEN 'b' WHEN j.outcome = 'b' THEN 'a' ELSE j.outcome END,
               j.reasons, j.note,
               CASE WHEN ra.id < rb.id OR j.shown_left IS NULL THEN j.shown_left WHEN j.shown_left = 'a' THEN 'b' ELSE 'a' END,
               j.seconds, g.id, j.created_at
        FROM other.judgments j
        JOIN other.prompts op ON op.id = j.prompt_id JOIN main.prompt_uids p ON p.uid = op.uid
        JOIN other.responses ora ON ora.id = j.response_a JOIN main.response_uids ra ON ra.uid = ora.uid
        JOIN other.responses orb ON orb.id = j.response_b JOIN main.response_uids rb ON rb.uid = orb.uid
        JOIN other.annotators oan ON oan.id = j.annotator_id JOIN main.annotators an ON an.name = oan.name
        LEFT JOIN other.guidelines og ON og.id = j.guideline_id LEFT JOIN main.guidelines g ON g.hash = og.hash
        WHERE NOT EXISTS (SELECT 1 FROM main.judgment_uids k WHERE k.uid = j.uid)
        ORDER BY j.id"),
    ("", "UPDATE main.judgments SET supersedes = (
            SELECT ms.id FROM other.judgment_uids ok JOIN other.judgments oj ON oj.id = ok.id
            JOIN other.judgments os ON os.id = oj.supersedes JOIN main.judgment_uids ms ON ms.uid = os.uid
            WHERE ok.uid = main.judgments.uid)
        WHERE supersedes IS NULL AND id IN (
            SELECT k.id FROM other.judgments oj JOIN main.judgment_uids k ON k.uid = oj.uid WHERE oj.supersedes IS NOT NULL)"),
    ("adjudications", "INSERT INTO adjudications (uid, response_a, response_b, outcome, annotator_id, note, created_at)
        SELECT d.uid, min(ra.id, rb.id), max(ra.id, rb.id),
               CASE WHEN ra.id < rb.id THEN d.outcome WHEN d.outcome = 'a' THEN 'b' WHEN d.outcome = 'b' THEN 'a' ELSE d.outcome END,
               an.id, d.note, d.created_at
        FROM other.adjudications d
        JOIN other.responses ora ON ora.id = d.response_a JOIN main.response_uids ra ON ra.uid = ora.uid
        JOIN other.responses orb ON orb.id = d.response_b JOIN main.response_uids rb ON rb.uid = orb.uid
        JOIN other.annotators oan ON oan.id = d.annotator_id JOIN main.annotators an ON an.name = oan.name
        WHERE true ORDER BY d.id
        ON CONFLICT(uid) DO NOTHING"),
    ("gold", "INSERT INTO gold (response_a, response_b, outcome, note, source, created_at)
        SELECT min(ra.id, rb.id), max(ra.id, rb.id),
               CASE WHEN ra.id < rb.id THEN d.outcome WHEN d.outcome = 'a' THEN 'b' WHEN d.outcome = 'b' THEN 'a' ELSE d.outcome END,
               d.note, d.source, d.created_at
        FROM other.gold d
        JOIN other.responses ora ON ora.id = d.response_a JOIN main.response_uids ra ON ra.uid = ora.uid
        JOIN other.responses orb ON orb.id = d.response_b JOIN main.response_uids rb ON rb.uid = orb.uid
        WHERE true ORDER BY d.id
        ON CONFLICT(response_a, response_b) DO NOTHING"),
    // Single-answer ratings by uid, like judgments; the row a change or an undo superseded is
    // found again by its uid.
    ("thumbs", "INSERT INTO thumbs (uid, prompt_id, response_id, annotator_id, rating, reasons, note, seconds,
                                    guideline_id, created_at)
        SELECT t.uid, p.id, r.id, an.id, t.rating, t.reasons, t.note, t.seconds, g.id, t.created_at
        FROM other.thumbs t
        JOIN other.prompts op ON op.id = t.prompt_id JOIN main.prompt_uids p ON p.uid = op.uid
        JOIN other.responses ore ON ore.id = t.response_id JOIN main.response_uids r ON r.uid = ore.uid
        JOIN other.annotators oan ON oan.id = t.annotator_id JOIN main.annotators an ON an.name = oan.name
        LEFT JOIN other.guidelines og ON og.id = t.guideline_id LEFT JOIN main.guidelines g ON g.hash = og.hash
        WHERE true ORDER BY t.id
        ON CONFLICT(uid) DO NOTHING"),
    ("", "UPDATE main.thumbs SET supersedes = (
            SELECT ms.id FROM other.thumbs ot JOIN other.thumbs os ON os.id = ot.supersedes
            JOIN main.thumbs ms ON ms.uid = os.uid WHERE ot.uid = main.thumbs.uid)
        WHERE supersedes IS NULL AND uid IN (SELECT uid FROM other.thumbs WHERE supersedes IS NOT NULL)"),
    ("thumb_gold", "INSERT INTO thumb_gold (response_id, rating, note, source, created_at)
        SELECT r.id, g.rating, g.note, g.source, g.created_at
        FROM other.thumb_gold g JOIN other.responses ore ON ore.id = g.response_id JOIN main.response_uids r ON r.uid = ore.uid
        WHERE true ORDER BY g.response_id
        ON CONFLICT(response_id) DO NOTHING"),
    ("thumb_adjudications", "INSERT INTO thumb_adjudications (uid, response_id, rating, annotator_id, note, created_at)
        SELECT d.uid, r.id, d.rating, an.id, d.note, d.created_at
        FROM other.thumb_adjudications d
        JOIN other.responses ore ON ore.id = d.response_id JOIN main.response_uids r ON r.uid = ore.uid
        JOIN other.annotators oan ON oan.id = d.annotator_id JOIN main.annotators an ON an.name = oan.name
        WHERE true ORDER BY d.id
        ON CONFLICT(uid) DO NOTHING"),
    ("assignments", "INSERT INTO assignments (annotator_id, prompt_id, position, created_at)
        SELECT an.id, p.id, a.position, a.created_at
        FROM other.assignments a
        JOIN other.annotators oan ON oan.id = a.annotator_id JOIN main.annotators an ON an.name = oan.name
        JOIN other.prompts op ON op.id = a.prompt_id JOIN main.prompt_uids p ON p.uid = op.uid
        WHERE true ORDER BY a.id
        ON CONFLICT(annotator_id, prompt_id) DO NOTHING"),
    ("model_answers", "INSERT INTO model_answers (model_id, prompt_id, seed, response_id)
        SELECT m.id, p.id, a.seed, r.id
        FROM other.model_answers a
        JOIN other.models om ON om.id = a.model_id JOIN main.models m ON m.sha256 = om.sha256
        JOIN other.prompts op ON op.id = a.prompt_id JOIN main.prompt_uids p ON p.uid = op.uid
        JOIN other.responses ore ON ore.id = a.response_id JOIN main.response_uids r ON r.uid = ore.uid
        WHERE true
        ON CONFLICT(model_id, prompt_id, seed) DO NOTHING"),
    // A candidate there is one here (its judgments come with it).
    ("", "DELETE FROM main.evaluation_only WHERE response_id IN (
        SELECT r.id FROM other.responses ore JOIN main.response_uids r ON r.uid = ore.uid
        WHERE ore.id NOT IN (SELECT response_id FROM other.evaluation_only))"),
    // An evaluation answer there is one here unless this database has it as a candidate.
    ("", "INSERT INTO main.evaluation_only (response_id)
        SELECT r.id FROM other.evaluation_only e
        JOIN other.responses ore ON ore.id = e.response_id JOIN main.response_uids r ON r.uid = ore.uid
        WHERE r.id > (SELECT id FROM temp.merge_responses_before)
        ON CONFLICT(response_id) DO NOTHING"),
    ("", "DROP TABLE temp.merge_responses_before"),
    // A vote is the same vote when the same person cast it on the same prompt and models at
    // the same moment (stored to the millisecond).
    ("", "CREATE TEMP TABLE merge_votes AS
        SELECT v.id AS other_id, an.id AS annotator_id, p.id AS prompt_id, ma.id AS model_a, mb.id AS model_b,
               ra.id AS response_a, rb.id AS response_b, v.created_at
        FROM other.eval_votes v
        JOIN other.annotators oan ON oan.id = v.annotator_id JOIN main.annotators an ON an.name = oan.name
        JOIN other.prompts op ON op.id = v.prompt_id JOIN main.prompt_uids p ON p.uid = op.uid
        JOIN other.models oma ON oma.id = v.model_a JOIN main.models ma ON ma.sha256 = oma.sha256
        JOIN other.models omb ON omb.id = v.model_b JOIN main.models mb ON mb.sha256 = omb.sha256
        JOIN other.responses ora ON ora.id = v.response_a JOIN main.response_uids ra ON ra.uid = ora.uid
        JOIN other.responses orb ON orb.id = v.response_b JOIN main.response_uids rb ON rb.uid = orb.uid"),
    ("eval_votes", "INSERT INTO eval_votes (annotator_id, prompt_id, model_a, model_b, response_a, response_b,
                                            shown_left, outcome, seconds, created_at)
        SELECT m.annotator_id, m.prompt_id, m.model_a, m.model_b, m.response_a, m.response_b,
               v.shown_left, v.outcome, v.seconds, v.created_at
        FROM temp.merge_votes m JOIN other.eval_votes v ON v.id = m.other_id
        WHERE NOT EXISTS (SELECT 1 FROM main.eval_votes k WHERE k.annotator_id = m.annotator_id
            AND k.prompt_id = m.prompt_id AND k.model_a = m.model_a AND k.model_b = m.model_b
            AND k.created_at = m.created_at)
        ORDER BY v.id"),
    ("", "UPDATE main.eval_votes SET superseded_by = (
            SELECT k2.id FROM temp.merge_votes m1
            JOIN other.eval_votes v ON v.id = m1.other_id
            JOIN temp.merge_votes m2 ON m2.other_id = v.superseded_by
            JOIN main.eval_votes k2 ON k2.annotator_id = m2.annotator_id AND k2.prompt_id = m2.prompt_id
                AND k2.model_a = m2.model_a AND k2.model_b = m2.model_b AND k2.created_at = m2.created_at
            WHERE m1.annotator_id = main.eval_votes.annotator_id AND m1.prompt_id = main.eval_votes.prompt_id
              AND m1.model_a = main.eval_votes.model_a AND m1.model_b = main.eval_votes.model_b
              AND m1.created_at = main.eval_votes.created_at)
        WHERE superseded_by IS NULL AND EXISTS (
            SELECT 1 FROM temp.merge_votes m1 JOIN other.eval_votes v ON v.id = m1.other_id
            WHERE v.superseded_by IS NOT NULL AND m1.annotator_id = main.eval_votes.annotator_id
              AND m1.prompt_id = main.eval_votes.prompt_id AND m1.model_a = main.eval_votes.model_a
              AND m1.model_b = main.eval_votes.model_b AND m1.created_at = main.eval_votes.created_at)"),
    ("", "DROP TABLE temp.merge_votes"),
    // Runs travel as read-only history: their config, status, models and metrics. A run is
    // the same run when its name, start time and config are; one still `running` elsewhere is
    // not running here, and shows as stopped.
    ("runs", "INSERT INTO runs (name, method, config, status, error, base_model_id, output_model_id, started_at,
                                updated_at, finished_at, total_steps, train_pairs, test_pairs, truncated)
        SELECT r.name, r.method, r.config, CASE WHEN r.status = 'running' THEN 'stopped' ELSE r.status END,
               r.error, bm.id, tm.id, r.started_at, r.updated_at, r.finished_at, r.total_steps, r.train_pairs,
               r.test_pairs, r.truncated
        FROM other.runs r
        LEFT JOIN other.models obm ON obm.id = r.base_model_id LEFT JOIN main.models bm ON bm.sha256 = obm.sha256
        LEFT JOIN other.models otm ON otm.id = r.output_model_id LEFT JOIN main.models tm ON tm.sha256 = otm.sha256
        WHERE NOT EXISTS (SELECT 1 FROM main.runs k
            WHERE k.name = r.name AND k.started_at = r.started_at AND k.config = r.config)
        ORDER BY r.id"),
    ("", "CREATE TEMP TABLE merge_runs AS
        SELECT r.id AS other_id, k.id AS main_id FROM other.runs r
        JOIN main.runs k ON k.name = r.name AND k.started_at = r.started_at AND k.config = r.config"),
    ("run_metrics", "INSERT INTO run_metrics (run_id, step, name, value)
        SELECT m.main_id, x.step, x.name, x.value
        FROM other.run_metrics x JOIN temp.merge_runs m ON m.other_id = x.run_id
        WHERE true
        ON CONFLICT(run_id, name, step) DO NOTHING"),
    ("run_samples", "INSERT INTO run_samples (run_id, step, prompt_id, content, params, created_at)
        SELECT m.main_id, x.step, p.id, x.content, x.params, x.created_at
        FROM other.run_samples x JOIN temp.merge_runs m ON m.other_id = x.run_id
        JOIN other.prompts op ON op.id = x.prompt_id JOIN main.prompt_uids p ON p.uid = op.uid
        WHERE true
        ON CONFLICT(run_id, prompt_id, step) DO NOTHING"),
    // The training set a run stored at its start, so "which labels trained this model"
    // has the same answer here as where the run ran.
    // (An unpaired or SFT example has no rejected answer.)
    ("run_examples", "INSERT INTO run_examples (run_id, position, prompt_id, chosen_id, rejected_id, desirable, split,
                                                weight)
        SELECT m.main_id, x.position, p.id, rc.id, rr.id, x.desirable, x.split, x.weight
        FROM other.run_examples x JOIN temp.merge_runs m ON m.other_id = x.run_id
        JOIN other.prompts op ON op.id = x.prompt_id JOIN main.prompt_uids p ON p.uid = op.uid
        JOIN other.responses oc ON oc.id = x.chosen_id JOIN main.response_uids rc ON rc.uid = oc.uid
        LEFT JOIN other.responses orj ON orj.id = x.rejected_id LEFT JOIN main.response_uids rr ON rr.uid = orj.uid
        WHERE x.rejected_id IS NULL OR rr.id IS NOT NULL ORDER BY x.run_id, x.position
        ON CONFLICT(run_id, position) DO NOTHING"),
    ("run_sets", "INSERT INTO run_sets (run_id, method, hash, counts)
        SELECT m.main_id, x.method, x.hash, x.counts
        FROM other.run_sets x JOIN temp.merge_runs m ON m.other_id = x.run_id
        WHERE true
        ON CONFLICT(run_id) DO NOTHING"),
    // One stored win rate per run and pair of models (a recomputed report replaces it here,
    // so the one already here is kept).
    ("evals", "INSERT INTO evals (run_id, model_a, model_b, wins, losses, ties, win_rate, ci_low, ci_high,
                                  by_language, created_at)
        SELECT m.main_id, ma.id, mb.id, e.wins, e.losses, e.ties, e.win_rate, e.ci_low, e.ci_high,
               e.by_language, e.created_at
        FROM other.evals e
        LEFT JOIN temp.merge_runs m ON m.other_id = e.run_id
        JOIN other.models oma ON oma.id = e.model_a JOIN main.models ma ON ma.sha256 = oma.sha256
        JOIN other.models omb ON omb.id = e.model_b JOIN main.models mb ON mb.sha256 = omb.sha256
        WHERE (e.run_id IS NULL OR m.main_id IS NOT NULL) AND NOT EXISTS (SELECT 1 FROM main.evals k
            WHERE k.run_id IS m.main_id AND k.model_a = ma.id AND k.model_b = mb.id)
        ORDER BY e.id"),
    ("", "DROP TABLE temp.merge_runs"),
];

impl Store {
    /// Merges the database at `other` into this one, in one transaction.
    pub fn merge_from(&mut self, other: &Path) -> Result<MergeSummary> {
        check_mergeable(other)?;
        if other.canonicalize().ok() == self.path.canonicalize().ok() {
            return Err(StoreError::NotADatabase {
                path: other.to_path_buf(),
                detail: "it is the database being merged into".into(),
            });
        }
        self.conn.execute("ATTACH DATABASE ?1 AS other", [other.to_string_lossy()])?;
        let result = (|| {
            let tx = self.conn.transaction()?;
            let summary = merge_attached(&tx, "other")?;
            tx.commit()?;
            Ok(summary)
        })();
        self.conn.execute("DETACH DATABASE other", [])?;
        result
    }
}

/// Merges the database attached as `schema` into `main`, inside the caller's transaction.
pub(super) fn merge_attached(tx: &Connection, schema: &str) -> Result<MergeSummary> {
    let mut summary = MergeSummary::default();
    for (table, sql) in STEPS {
        let keyed = match *table {
            "prompts" => Some(Keyed::Prompts),
            "responses" => Some(Keyed::Responses),
            "judgments" => Some(Keyed::Judgments),
            _ => None,
        };
        let before: i64 = match keyed {
            Some(kind) => {
                tx.query_row(&format!("SELECT coalesce(max(id), 0) FROM main.{}", kind.table()), [], |r| r.get(0))?
            }
            None => 0,
        };
        let added = tx.execute(&sql.replace("other.", &format!("{schema}.")), [])?;
        if let Some(kind) = keyed {
            // The keys of the rows just added, before the next step looks them up.
            tx.execute(
                &format!(
                    "INSERT INTO main.{} (uid, id) SELECT uid, id FROM main.{} WHERE id > ?1 ORDER BY uid",
                    kind.keys(),
                    kind.table()
                ),
                [before],
            )?;
        }
        match *table {
            "annotators" => summary.annotators = added,
            "guidelines" => summary.guidelines = added,
            "models" => summary.models = added,
            "prompts" => summary.prompts = added,
            "responses" => summary.responses = added,
            "judgments" => summary.judgments = added,
            "adjudications" => summary.adjudications = added,
            "gold" => summary.gold = added,
            "assignments" => summary.assignments = added,
            "model_answers" => summary.model_answers = added,
            "eval_votes" => summary.eval_votes = added,
            "runs" => summary.runs = added,
            "run_metrics" => summary.run_metrics = added,
            "run_samples" => summary.run_samples = added,
            "run_examples" => summary.run_examples = added,
            "run_sets" => summary.run_sets = added,
            "evals" => summary.evals = added,
            "thumbs" => summary.thumbs = added,
            "thumb_gold" => summary.thumb_gold = added,
            "thumb_adjudications" => summary.thumb_adjudications = added,
            _ => {}
        }
    }
    Ok(summary)
}

/// Refuses a file that is not a verdict database of exactly this schema version,
/// without modifying it.
pub(super) fn check_mergeable(path: &Path) -> Result<()> {
    if !path.is_file() {
        return Err(StoreError::Missing(path.to_path_buf()));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| StoreError::NotADatabase { path: path.to_path_buf(), detail: e.to_string() })?;
    if version != migrations::LATEST_VERSION {
        return Err(StoreError::SchemaMismatch {
            path: path.to_path_buf(),
            found: version,
            known: migrations::LATEST_VERSION,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::domain::Outcome;
    use crate::store::{NewEvalVote, OpenMode, Store};

    /// What a teammate's database holds besides labels: assignments, two models' answers,
    /// blind votes (one changed, so superseded), a finished run with metrics and samples,
    /// and a stored win rate.
    fn teammate(path: &std::path::Path) -> Store {
        let mut store = Store::open(path, OpenMode::CreateIfMissing).unwrap();
        store.import_records(&crate::samples::records()).unwrap();
        let ana = store.annotator_id("ana", "annotator").unwrap();
        store.set_assignments(&[(ana, vec![1, 2, 3])]).unwrap();
        let base = store.register_model("sha-base", "base", "/m/base.gguf", "gguf", "llama", "Q4_1").unwrap();
        let tuned = store.register_model("sha-tuned", "tuned", "/m/tuned", "hf", "llama", "F32").unwrap();
        let run = store.create_run("dpo-1", "dpo", r#"{"beta":0.25}"#, Some(base)).unwrap();
        store.add_metrics(run, 1, &[("loss".into(), 0.69), ("rewards/margins".into(), 0.01)]).unwrap();
        store.add_metrics(run, 2, &[("loss".into(), 0.61)]).unwrap();
        store.add_run_sample(run, 2, 1, "Sample answer", r#"{"seed":42}"#).unwrap();
        let examples = training_set(&store);
        let set = crate::store::RunSet { method: "dpo".into(), hash: "set-hash".into(), counts: "[]".into() };
        store.save_run_examples(run, &examples, &set).unwrap();
        store.set_run_output(run, tuned).unwrap();
        store.set_run_status(run, crate::domain::RunStatus::Finished, None).unwrap();
        for prompt in [1, 2] {
            let a = store.add_model_answer(base, prompt, 42, &format!("base says {prompt}"), "{}").unwrap();
            let b = store.add_model_answer(tuned, prompt, 42, &format!("tuned says {prompt}"), "{}").unwrap();
            let vote = |outcome| NewEvalVote {
                annotator_id: ana,
                prompt_id: prompt,
                model_a: base,
                model_b: tuned,
                response_a: a,
                response_b: b,
                a_on_left: prompt == 1,
                outcome,
                seconds: Some(3.0),
            };
            store.record_eval_vote(&vote(Outcome::A)).unwrap();
            if prompt == 2 {
                std::thread::sleep(std::time::Duration::from_millis(5)); // another millisecond
                store.record_eval_vote(&vote(Outcome::B)).unwrap();
            }
        }
        store.save_eval(Some(run), base, tuned, (1, 1, 0), 0.5, (0.1, 0.9), r#"{"en":0.5}"#).unwrap();
        store
    }

    /// Two pairs of the sample data, one held out, as a run stores them at its start.
    fn training_set(store: &Store) -> Vec<crate::store::RunExample> {
        let pairs: Vec<(i64, i64, i64)> = store
            .conn
            .prepare("SELECT a.prompt_id, a.id, b.id FROM responses a JOIN responses b ON b.prompt_id = a.prompt_id AND b.id > a.id ORDER BY a.id LIMIT 2")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(pairs.len(), 2, "the sample data has prompts with two answers");
        let mut set: Vec<crate::store::RunExample> = pairs
            .iter()
            .zip([crate::domain::Split::Train, crate::domain::Split::Test])
            .map(|(&(prompt_id, answer_id, rejected_id), split)| crate::store::RunExample {
                prompt_id,
                answer_id,
                kind: crate::store::RunAnswer::Pair { rejected_id },
                split,
                weight: 1.5,
            })
            .collect();
        // An unpaired answer (a KTO run's example) travels too.
        let (prompt_id, answer_id, _) = pairs[0];
        set.push(crate::store::RunExample {
            prompt_id,
            answer_id,
            kind: crate::store::RunAnswer::Unpaired { desirable: false },
            split: crate::domain::Split::Train,
            weight: 1.0,
        });
        set
    }

    /// A run's training set as texts, which mean the same in every file (ids do not).
    fn training_set_texts(store: &Store, run: i64) -> Vec<(String, String, String, String, f64)> {
        let text = |table: &str, id: i64| {
            let column = if table == "prompts" { "messages" } else { "content" };
            store
                .conn
                .query_row(&format!("SELECT {column} FROM {table} WHERE id = ?1"), [id], |r| r.get::<_, String>(0))
                .unwrap()
        };
        store
            .run_examples(run)
            .unwrap()
            .into_iter()
            .map(|e| {
                (
                    text("prompts", e.prompt_id),
                    text("responses", e.answer_id),
                    match e.kind {
                        crate::store::RunAnswer::Pair { rejected_id } => text("responses", rejected_id),
                        other => format!("{other:?}"),
                    },
                    e.split.as_str().to_string(),
                    e.weight,
                )
            })
            .collect()
    }

    fn counts(store: &Store) -> Vec<(String, i64)> {
        [
            "assignments",
            "model_answers",
            "evaluation_only",
            "eval_votes",
            "runs",
            "run_metrics",
            "run_samples",
            "run_examples",
            "run_sets",
            "evals",
            "models",
            "judgments",
        ]
        .iter()
        .map(|t| (t.to_string(), store.count(t).unwrap()))
        .collect()
    }

    #[test]
    fn votes_answers_assignments_and_run_history_travel_by_merge_and_bundle_once() {
        let dir = tempfile::tempdir().unwrap();
        let source = teammate(&dir.path().join("ana.db"));
        let mut bundle = Vec::new();
        source.write_bundle(&mut bundle).unwrap();
        let bundle_path = dir.path().join("ana.bundle.jsonl");
        std::fs::write(&bundle_path, &bundle).unwrap();

        for via_bundle in [false, true] {
            let mut lead =
                Store::open(&dir.path().join(format!("lead-{via_bundle}.db")), OpenMode::CreateIfMissing).unwrap();
            // The lead has a prompt of their own first, so ids differ between the files.
            lead.add_prompt(&crate::domain::NewPrompt {
                external_id: None,
                messages: vec![crate::domain::Message::new("user", "lead's own question")],
                language: "en".into(),
                domain: None,
                tags: Vec::new(),
                split: None,
                source: None,
            })
            .unwrap();
            let merge = |lead: &mut Store| {
                if via_bundle {
                    lead.import_bundle(&bundle_path).unwrap()
                } else {
                    lead.merge_from(source.path()).unwrap()
                }
            };
            let first = merge(&mut lead);
            assert_eq!(
                (first.assignments, first.model_answers, first.eval_votes, first.runs, first.run_metrics, first.evals),
                (3, 4, 3, 1, 3, 1),
                "{first:?}"
            );
            assert_eq!(counts(&lead), counts(&source), "via bundle: {via_bundle}");
            let again = merge(&mut lead);
            assert_eq!(again, super::MergeSummary::default(), "merging twice adds nothing");
            assert_eq!(counts(&lead), counts(&source));

            // The votes mean the same here: the changed vote is superseded, the active ones
            // point at the same models' answers to the same prompts.
            assert_eq!(lead.models().unwrap().len(), 2);
            let active = lead.eval_votes(None).unwrap();
            let outcomes: Vec<(String, String)> = active
                .iter()
                .map(|v| {
                    let text = |id: i64| {
                        lead.conn.query_row(
                        "SELECT r.content FROM eval_votes v JOIN responses r ON r.id = v.response_a WHERE v.id = ?1",
                        [id],
                        |r| r.get::<_, String>(0),
                    )
                    };
                    (text(v.id).unwrap(), v.outcome.clone())
                })
                .collect();
            assert_eq!(
                outcomes,
                [("base says 1".to_string(), "a".to_string()), ("base says 2".to_string(), "b".to_string())]
            );
            let runs = lead.runs().unwrap();
            assert_eq!(runs.len(), 1);
            assert_eq!(lead.metric_series(runs[0].id, "loss").unwrap(), [(1, 0.69), (2, 0.61)]);
            assert_eq!((first.run_examples, first.run_sets), (3, 1));
            assert_eq!(lead.run_set(runs[0].id).unwrap().map(|s| s.hash), Some("set-hash".to_string()));
            let source_run = source.runs().unwrap()[0].id;
            assert_eq!(training_set_texts(&lead, runs[0].id), training_set_texts(&source, source_run));
            let eval = &lead.evals(Some(runs[0].id)).unwrap()[0];
            assert_eq!((eval.win_rate, eval.by_language.as_str()), (0.5, r#"{"en":0.5}"#));
            let ana = lead.annotator_id("ana", "annotator").unwrap();
            assert_eq!(lead.assignments_of(ana).unwrap().len(), 3);
        }
    }
}
