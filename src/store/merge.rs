//! Bringing another verdict database into this one by content identity: prompts and
//! responses by their hashes, annotators by name, judgments and adjudications by uid
//! (found through the `*_uids` key tables, see `uids`).
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
        let result = self.merge_attached();
        self.conn.execute("DETACH DATABASE other", [])?;
        result
    }

    fn merge_attached(&mut self) -> Result<MergeSummary> {
        let tx = self.conn.transaction()?;
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
            let added = tx.execute(sql, [])?;
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
                _ => {}
            }
        }
        tx.commit()?;
        Ok(summary)
    }
}

/// Refuses a file that is not a verdict database of exactly this schema version,
/// without modifying it.
fn check_mergeable(path: &Path) -> Result<()> {
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
