//! Single-answer review: one annotator's good/bad on one answer ("thumbs"), with reason tags
//! and a note as judgments have them. Append-only like judgments: a change or an undo writes
//! a new row that supersedes the old one. Gold answers and adjudicated ratings for disputed
//! answers live beside them (`thumb_gold`, `thumb_adjudications`).

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};

use super::labeling::verdict_before;
use super::{Result, Store, json};
use crate::domain::sha256_hex;

/// An annotator's rating of one answer on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Thumb {
    Good,
    Bad,
}

impl Thumb {
    pub fn as_str(self) -> &'static str {
        match self {
            Thumb::Good => "good",
            Thumb::Bad => "bad",
        }
    }

    /// `good`/`bad`, also `+`/`-`, `up`/`down` (what a person types on the command line).
    pub fn parse(text: &str) -> Option<Thumb> {
        match text {
            "good" | "+" | "up" => Some(Thumb::Good),
            "bad" | "-" | "down" => Some(Thumb::Bad),
            _ => None,
        }
    }
}

/// A rating about to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewThumb {
    pub response_id: i64,
    pub annotator_id: i64,
    pub rating: Thumb,
    pub reasons: Vec<String>,
    pub note: Option<String>,
    pub seconds: Option<f64>,
    pub guideline_id: Option<i64>,
}

/// An active rating, as the review screen and the QA reports see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveThumb {
    pub id: i64,
    pub annotator_id: i64,
    pub prompt_id: i64,
    pub response_id: i64,
    pub rating: Thumb,
    pub reasons: Vec<String>,
    pub note: Option<String>,
    pub seconds: Option<f64>,
    /// The ISO-like week it was made in (`2026-W47`), for trends.
    pub week: String,
    /// Made by a person (not the `system` pseudo-annotator of imports).
    pub by_person: bool,
}

/// What an undo did: the rating it took back, and the earlier rating the answer has again
/// (None: the annotator has no rating on it now).
#[derive(Debug, Clone, PartialEq)]
pub struct ThumbUndo {
    pub withdrawn: ActiveThumb,
    pub restored: Option<ActiveThumb>,
}

const ACTIVE: &str = "SELECT t.id, t.annotator_id, t.prompt_id, t.response_id, t.rating, t.reasons, t.note, t.seconds,
                             strftime('%Y-W%W', t.created_at), a.role != 'system'
                      FROM thumbs t JOIN annotators a ON a.id = t.annotator_id
                      WHERE t.rating != 'undone'
                        AND t.id = (SELECT MAX(id) FROM thumbs k WHERE k.annotator_id = t.annotator_id
                                    AND k.response_id = t.response_id)";

/// The annotator's (?1) active ratings of one prompt's (?2) answers.
fn my_thumbs_sql() -> String {
    format!("{ACTIVE} AND t.annotator_id = ?1 AND t.prompt_id = ?2 ORDER BY t.id")
}

/// Active ratings per prompt, (the annotator's (?1), everyone's); of one prompt (?2) only.
fn counts_sql(one_prompt: bool) -> String {
    format!(
        "SELECT t.prompt_id, sum(t.annotator_id = ?1), count(*) FROM thumbs t
         WHERE t.rating != 'undone'{}
           AND t.id = (SELECT MAX(id) FROM thumbs k WHERE k.annotator_id = t.annotator_id
                       AND k.response_id = t.response_id)
         GROUP BY t.prompt_id",
        if one_prompt { " AND t.prompt_id = ?2" } else { "" }
    )
}

impl Store {
    /// Stores one rating in its own transaction; returns the new row's id.
    pub fn record_thumb(&mut self, t: &NewThumb) -> Result<i64> {
        let tx = self.conn.transaction()?;
        let prompt_id: i64 =
            tx.query_row("SELECT prompt_id FROM responses WHERE id = ?1", [t.response_id], |r| r.get(0))?;
        let previous: Option<i64> = tx
            .query_row(
                "SELECT MAX(id) FROM thumbs WHERE annotator_id = ?1 AND response_id = ?2",
                params![t.annotator_id, t.response_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let stamp = format!("{:?}", std::time::SystemTime::now());
        let uid =
            sha256_hex(&["thumb", &t.annotator_id.to_string(), &t.response_id.to_string(), t.rating.as_str(), &stamp]);
        tx.execute(
            "INSERT INTO thumbs (uid, prompt_id, response_id, annotator_id, rating, reasons, note, seconds,
                                 guideline_id, supersedes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                uid,
                prompt_id,
                t.response_id,
                t.annotator_id,
                t.rating.as_str(),
                serde_json::to_string(&t.reasons).expect("reasons serialize"),
                t.note,
                t.seconds,
                t.guideline_id,
                previous,
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// Takes back the annotator's most recent active rating: the answer gets back the rating
    /// it had before (a copy of that row), or none (an `undone` row). Both are new rows, and
    /// `supersedes` follows the same rule as judgments' (`Store::undo_last_judgment`), so
    /// repeated undos step back like a stack.
    pub fn undo_last_thumb(&mut self, annotator_id: i64) -> Result<Option<ThumbUndo>> {
        let tx = self.conn.transaction()?;
        let last = tx
            .query_row(&format!("{ACTIVE} AND t.annotator_id = ?1 ORDER BY t.id DESC LIMIT 1"), [annotator_id], active)
            .optional()?;
        let Some(last) = last else {
            return Ok(None);
        };
        let history: Vec<(i64, Option<i64>, String)> = {
            let mut statement = tx.prepare_cached(
                "SELECT id, supersedes, rating FROM thumbs WHERE annotator_id = ?1 AND response_id = ?2 ORDER BY id",
            )?;
            statement
                .query_map(params![annotator_id, last.response_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        let stamp = format!("{:?}", std::time::SystemTime::now());
        let uid = sha256_hex(&["thumb-undo", &last.id.to_string(), &stamp]);
        let restored = match verdict_before(&history, last.id) {
            Some(earlier) => {
                tx.execute(
                    "INSERT INTO thumbs (uid, prompt_id, response_id, annotator_id, rating, reasons, note,
                                         seconds, guideline_id, supersedes)
                     SELECT ?1, prompt_id, response_id, annotator_id, rating, reasons, note, seconds, guideline_id, id
                     FROM thumbs WHERE id = ?2",
                    params![uid, earlier],
                )?;
                let id = tx.last_insert_rowid();
                Some(tx.query_row(&format!("{ACTIVE} AND t.id = ?1"), [id], active)?)
            }
            None => {
                tx.execute(
                    "INSERT INTO thumbs (uid, prompt_id, response_id, annotator_id, rating, supersedes)
                     VALUES (?1, ?2, ?3, ?4, 'undone', ?5)",
                    params![uid, last.prompt_id, last.response_id, annotator_id, last.id],
                )?;
                None
            }
        };
        tx.commit()?;
        Ok(Some(ThumbUndo { withdrawn: last, restored }))
    }

    /// The annotator's active ratings of a prompt's answers.
    pub fn my_thumbs(&self, annotator_id: i64, prompt_id: i64) -> Result<Vec<ActiveThumb>> {
        let mut statement = self.conn.prepare_cached(&my_thumbs_sql())?;
        let rows = statement.query_map(params![annotator_id, prompt_id], active)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Active ratings per prompt, as (the annotator's, everyone's), for the queue; only
    /// `prompt_id` when given.
    pub fn thumb_counts(&self, annotator_id: i64, prompt_id: Option<i64>) -> Result<HashMap<i64, (usize, usize)>> {
        let row = |r: &rusqlite::Row<'_>| {
            Ok((r.get::<_, i64>(0)?, (r.get::<_, i64>(1)? as usize, r.get::<_, i64>(2)? as usize)))
        };
        // One prompt's through the prompt index; an `?2 IS NULL OR` would scan them all.
        let mut statement = self.conn.prepare_cached(&counts_sql(prompt_id.is_some()))?;
        let rows = match prompt_id {
            Some(prompt_id) => statement.query_map(params![annotator_id, prompt_id], row)?,
            None => statement.query_map(params![annotator_id], row)?,
        };
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every active rating of every annotator, oldest first.
    pub fn active_thumbs(&self) -> Result<Vec<ActiveThumb>> {
        let mut statement = self.conn.prepare_cached(&format!("{ACTIVE} ORDER BY t.id"))?;
        let rows = statement.query_map([], active)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Marks an answer as gold with a known rating; false when it already was.
    pub fn add_thumb_gold(&self, response_id: i64, rating: Thumb, note: Option<&str>, source: &str) -> Result<bool> {
        Ok(self.conn.execute(
            "INSERT INTO thumb_gold (response_id, rating, note, source) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(response_id) DO NOTHING",
            params![response_id, rating.as_str(), note, source],
        )? == 1)
    }

    /// Gold ratings keyed by response id.
    pub fn thumb_gold(&self) -> Result<HashMap<i64, Thumb>> {
        let mut statement = self.conn.prepare_cached("SELECT response_id, rating FROM thumb_gold")?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, rating(&r.get::<_, String>(1)?))))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records an adjudicated rating of an answer (the newest one counts).
    pub fn adjudicate_thumb(
        &self,
        response_id: i64,
        rating: Thumb,
        adjudicator_id: i64,
        note: Option<&str>,
    ) -> Result<i64> {
        let stamp = format!("{:?}", std::time::SystemTime::now());
        let uid = sha256_hex(&["thumb-adjudication", &response_id.to_string(), rating.as_str(), &stamp]);
        self.conn.execute(
            "INSERT INTO thumb_adjudications (uid, response_id, rating, annotator_id, note) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![uid, response_id, rating.as_str(), adjudicator_id, note],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The newest adjudicated rating of each answer that has one.
    pub fn thumb_adjudications(&self) -> Result<HashMap<i64, Thumb>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT response_id, rating FROM thumb_adjudications d
             WHERE d.id = (SELECT MAX(id) FROM thumb_adjudications k WHERE k.response_id = d.response_id)",
        )?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, rating(&r.get::<_, String>(1)?))))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn rating(text: &str) -> Thumb {
    Thumb::parse(text).expect("the schema CHECK allows only good and bad in active rows")
}

fn active(r: &rusqlite::Row<'_>) -> rusqlite::Result<ActiveThumb> {
    let id: i64 = r.get(0)?;
    let reasons: String = r.get(5)?;
    Ok(ActiveThumb {
        id,
        annotator_id: r.get(1)?,
        prompt_id: r.get(2)?,
        response_id: r.get(3)?,
        rating: rating(&r.get::<_, String>(4)?),
        reasons: json::column(&reasons, "thumbs", id, "reasons")?,
        note: r.get(6)?,
        seconds: r.get(7)?,
        week: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
        by_person: r.get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OpenMode;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("v.db"), OpenMode::CreateIfMissing).unwrap();
        store.import_records(&crate::samples::records()).unwrap();
        (dir, store)
    }

    fn thumb(response_id: i64, annotator_id: i64, rating: Thumb) -> NewThumb {
        NewThumb {
            response_id,
            annotator_id,
            rating,
            reasons: vec!["factual_error".into()],
            note: Some("checked".into()),
            seconds: Some(3.0),
            guideline_id: None,
        }
    }

    #[test]
    fn one_prompts_ratings_are_read_through_the_prompt_index() {
        let (_dir, store) = store();
        for sql in [my_thumbs_sql(), counts_sql(true)] {
            let mut statement = store.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = statement
                .query_map(params![1, 1], |r| r.get::<_, String>(3))
                .unwrap()
                .map(|step| step.unwrap())
                .collect();
            assert!(plan.iter().any(|step| step.contains("USING INDEX thumbs_prompt")), "{sql}\n{plan:#?}");
        }
    }

    #[test]
    fn a_change_and_an_undo_supersede_and_undo_steps_back_like_a_stack() {
        let (_dir, mut store) = store();
        let ana = store.annotator_id("ana", "annotator").unwrap();
        let (prompt, response) = store.response_ids().unwrap()[0];
        store.record_thumb(&thumb(response, ana, Thumb::Good)).unwrap();
        store.record_thumb(&NewThumb { reasons: vec![], note: None, ..thumb(response, ana, Thumb::Bad) }).unwrap();
        let mine = store.my_thumbs(ana, prompt).unwrap();
        assert_eq!(mine.len(), 1, "the change replaces the first rating");
        assert_eq!((mine[0].rating, mine[0].response_id, mine[0].prompt_id), (Thumb::Bad, response, prompt));

        // Undo restores the earlier rating with its reasons and note; a second undo removes it.
        let undo = store.undo_last_thumb(ana).unwrap().unwrap();
        assert_eq!(undo.withdrawn.rating, Thumb::Bad);
        let restored = undo.restored.unwrap();
        assert_eq!(
            (restored.rating, restored.reasons.clone(), restored.note.clone()),
            (Thumb::Good, vec!["factual_error".to_string()], Some("checked".to_string()))
        );
        assert_eq!(store.my_thumbs(ana, prompt).unwrap()[0].rating, Thumb::Good);
        let undo = store.undo_last_thumb(ana).unwrap().unwrap();
        assert_eq!(undo.restored, None);
        assert!(store.my_thumbs(ana, prompt).unwrap().is_empty());
        assert_eq!(store.undo_last_thumb(ana).unwrap(), None, "nothing left to undo");

        // Nothing was deleted: four rows, each after the first superseding the one before.
        let rows: i64 = store.conn.query_row("SELECT count(*) FROM thumbs", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 4);
    }

    #[test]
    fn today_counts_active_judgments_and_ratings_and_an_undo_restores_the_seconds() {
        let (_dir, mut store) = store();
        let ana = store.annotator_id("ana", "annotator").unwrap();
        let responses = store.response_ids().unwrap();
        let (prompt, left, right) = (responses[0].0, responses[0].1, responses[1].1);
        assert_eq!(responses[1].0, prompt, "the first sample prompt has a pair");
        let judge = |store: &mut Store, verdict, seconds| {
            let judgment = crate::store::NewJudgment {
                prompt_id: prompt,
                left,
                right,
                annotator_id: ana,
                verdict,
                reasons: vec![],
                note: None,
                seconds: Some(seconds),
                guideline_id: None,
            };
            store.record_judgment(&judgment).unwrap();
        };
        let today = |store: &Store| {
            let mut s = store.seconds_today(ana).unwrap();
            s.sort_by(f64::total_cmp);
            s
        };
        judge(&mut store, crate::store::Verdict::Left, 4.0);
        judge(&mut store, crate::store::Verdict::Right, 6.0);
        assert_eq!(today(&store), [6.0], "a change leaves one judgment");
        store.undo_last_judgment(ana).unwrap();
        assert_eq!(today(&store), [4.0], "the restored judgment keeps its seconds");

        store.record_thumb(&thumb(left, ana, Thumb::Good)).unwrap();
        store.record_thumb(&NewThumb { seconds: Some(5.0), ..thumb(left, ana, Thumb::Bad) }).unwrap();
        assert_eq!(today(&store), [4.0, 5.0], "ratings count too");
        let undo = store.undo_last_thumb(ana).unwrap().unwrap();
        assert_eq!(undo.restored.unwrap().seconds, Some(3.0), "the restored rating keeps its seconds");
        assert_eq!(today(&store), [3.0, 4.0]);
        store.undo_last_thumb(ana).unwrap();
        assert_eq!(today(&store), [4.0]);
    }

    #[test]
    fn each_annotator_has_their_own_rating_and_gold_and_adjudication_are_kept() {
        let (_dir, mut store) = store();
        let ana = store.annotator_id("ana", "annotator").unwrap();
        let ben = store.annotator_id("ben", "annotator").unwrap();
        let lead = store.annotator_id("lead", "adjudicator").unwrap();
        let (_, response) = store.response_ids().unwrap()[0];
        store.record_thumb(&thumb(response, ana, Thumb::Good)).unwrap();
        store.record_thumb(&thumb(response, ben, Thumb::Bad)).unwrap();
        let all = store.active_thumbs().unwrap();
        assert_eq!(
            all.iter().map(|t| (t.annotator_id, t.rating)).collect::<Vec<_>>(),
            [(ana, Thumb::Good), (ben, Thumb::Bad)]
        );
        assert!(all.iter().all(|t| t.by_person && t.week.starts_with("20")));

        assert!(store.add_thumb_gold(response, Thumb::Bad, None, "test").unwrap());
        assert!(!store.add_thumb_gold(response, Thumb::Good, None, "test").unwrap(), "gold is set once");
        assert_eq!(store.thumb_gold().unwrap()[&response], Thumb::Bad);
        store.adjudicate_thumb(response, Thumb::Good, lead, None).unwrap();
        store.adjudicate_thumb(response, Thumb::Bad, lead, Some("on reflection")).unwrap();
        assert_eq!(store.thumb_adjudications().unwrap()[&response], Thumb::Bad, "the newest counts");
    }

    /// (annotator, answer text, rating) of every active rating: what a rating means in any file.
    fn meaning(store: &Store) -> Vec<(String, String, Thumb, Vec<String>)> {
        let mut out: Vec<_> = store
            .active_thumbs()
            .unwrap()
            .into_iter()
            .map(|t| {
                let (name, content) = store
                    .conn
                    .query_row(
                        "SELECT a.name, r.content FROM annotators a, responses r WHERE a.id = ?1 AND r.id = ?2",
                        [t.annotator_id, t.response_id],
                        |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                    )
                    .unwrap();
                (name, content, t.rating, t.reasons)
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    #[test]
    fn ratings_gold_and_adjudications_travel_by_merge_and_bundle_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = Store::open(&dir.path().join("ana.db"), OpenMode::CreateIfMissing).unwrap();
        source.import_records(&crate::samples::records()).unwrap();
        let ana = source.annotator_id("ana", "annotator").unwrap();
        let ben = source.annotator_id("ben", "annotator").unwrap();
        let lead_id = source.annotator_id("lead", "adjudicator").unwrap();
        let ids = source.response_ids().unwrap();
        let (first, second) = (ids[0].1, ids[1].1);
        // ana: good, changed to bad, undone (good again): three rows, two superseding.
        source.record_thumb(&thumb(first, ana, Thumb::Good)).unwrap();
        source.record_thumb(&thumb(first, ana, Thumb::Bad)).unwrap();
        source.undo_last_thumb(ana).unwrap();
        source.record_thumb(&thumb(second, ben, Thumb::Bad)).unwrap();
        source.record_thumb(&thumb(second, ana, Thumb::Good)).unwrap();
        source.add_thumb_gold(first, Thumb::Good, Some("obvious"), "test").unwrap();
        source.adjudicate_thumb(second, Thumb::Bad, lead_id, None).unwrap();
        let mut bundle = Vec::new();
        source.write_bundle(&mut bundle).unwrap();
        let bundle_path = dir.path().join("ana.bundle.jsonl");
        std::fs::write(&bundle_path, &bundle).unwrap();

        for via_bundle in [false, true] {
            let mut lead =
                Store::open(&dir.path().join(format!("lead-{via_bundle}.db")), OpenMode::CreateIfMissing).unwrap();
            // The lead has answers of their own first, so ids differ between the files.
            lead.import_records(&crate::samples::records()[5..]).unwrap();
            let merge = |lead: &mut Store| {
                if via_bundle {
                    lead.import_bundle(&bundle_path).unwrap()
                } else {
                    lead.merge_from(source.path()).unwrap()
                }
            };
            let added = merge(&mut lead);
            assert_eq!((added.thumbs, added.thumb_gold, added.thumb_adjudications), (5, 1, 1), "{added:?}");
            assert_eq!(meaning(&lead), meaning(&source), "via bundle: {via_bundle}");
            let again = merge(&mut lead);
            assert_eq!(
                (again.thumbs, again.thumb_gold, again.thumb_adjudications),
                (0, 0, 0),
                "merging twice adds nothing"
            );
            assert_eq!(lead.count("thumbs").unwrap(), 5);

            let text = |store: &Store, id: i64| -> String {
                store.conn.query_row("SELECT content FROM responses WHERE id = ?1", [id], |r| r.get(0)).unwrap()
            };
            let gold: Vec<(String, Thumb)> =
                lead.thumb_gold().unwrap().into_iter().map(|(r, t)| (text(&lead, r), t)).collect();
            assert_eq!(gold, [(text(&source, first), Thumb::Good)]);
            let adjudicated: Vec<(String, Thumb)> =
                lead.thumb_adjudications().unwrap().into_iter().map(|(r, t)| (text(&lead, r), t)).collect();
            assert_eq!(adjudicated, [(text(&source, second), Thumb::Bad)]);

            // The superseding rows point at the same rows here: undo steps back as it would have
            // there (ana's last rating, then the restored one, whose earlier rating is none).
            let ana_here = lead.annotator_id("ana", "annotator").unwrap();
            let undo = lead.undo_last_thumb(ana_here).unwrap().unwrap();
            assert_eq!((text(&lead, undo.withdrawn.response_id), undo.restored), (text(&source, second), None));
            let undo = lead.undo_last_thumb(ana_here).unwrap().unwrap();
            assert_eq!(
                (text(&lead, undo.withdrawn.response_id), undo.withdrawn.rating),
                (text(&source, first), Thumb::Good)
            );
            assert_eq!(undo.restored, None, "the restored rating had none before it");
        }
    }
}
