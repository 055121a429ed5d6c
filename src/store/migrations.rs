//! Ordered schema migrations. A migration is never edited once shipped: add a new one.
//!
//! The schema version lives in `PRAGMA user_version`, so a database written by a newer
//! verdict is recognised before anything touches it.

/// Each entry moves the schema from version `index` to `index + 1`.
pub const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
    MIGRATION_6,
    MIGRATION_7,
    MIGRATION_8,
    MIGRATION_9,
];

/// The version this build writes and understands.
pub const LATEST_VERSION: i64 = MIGRATIONS.len() as i64;

/// Migrations that rebuild tables (drop and re-create them, as SQLite has no ALTER for
/// constraints): the store runs these with foreign keys off and checks them afterwards.
pub const REBUILDS_TABLES: &[i64] = &[4, 7];

const MIGRATION_1: &str = r#"
CREATE TABLE prompts (
    id           INTEGER PRIMARY KEY,
    uid          TEXT NOT NULL UNIQUE,
    external_id  TEXT,
    messages     TEXT NOT NULL,
    language     TEXT NOT NULL,
    domain       TEXT,
    tags         TEXT NOT NULL DEFAULT '[]',
    split        TEXT NOT NULL CHECK (split IN ('train', 'test')),
    split_explicit INTEGER NOT NULL DEFAULT 0,
    source       TEXT,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX prompts_language ON prompts(language);

CREATE TABLE models (
    id           INTEGER PRIMARY KEY,
    sha256       TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    path         TEXT NOT NULL,
    format       TEXT NOT NULL CHECK (format IN ('gguf', 'hf')),
    architecture TEXT,
    quantization TEXT,
    parent_id    INTEGER REFERENCES models(id),
    run_id       INTEGER,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE responses (
    id           INTEGER PRIMARY KEY,
    uid          TEXT NOT NULL UNIQUE,
    prompt_id    INTEGER NOT NULL REFERENCES prompts(id),
    content      TEXT NOT NULL,
    origin       TEXT NOT NULL CHECK (origin IN ('model', 'human', 'import')),
    model_id     INTEGER REFERENCES models(id),
    params       TEXT,
    parent_id    INTEGER REFERENCES responses(id),
    author       TEXT,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX responses_prompt ON responses(prompt_id);
CREATE INDEX responses_parent ON responses(parent_id);

CREATE TABLE annotators (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL DEFAULT 'annotator' CHECK (role IN ('annotator', 'adjudicator', 'system')),
    languages    TEXT NOT NULL DEFAULT '[]',
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE guidelines (
    id           INTEGER PRIMARY KEY,
    hash         TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    domain       TEXT NOT NULL,
    title        TEXT NOT NULL,
    content      TEXT NOT NULL,
    reasons      TEXT NOT NULL DEFAULT '[]',
    loaded_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- Append-only: a relabel or an undo is a new row; the newest row of an
-- (annotator, pair) is the active one, and an 'undone' row means none is.
CREATE TABLE judgments (
    id           INTEGER PRIMARY KEY,
    uid          TEXT NOT NULL UNIQUE,
    prompt_id    INTEGER NOT NULL REFERENCES prompts(id),
    response_a   INTEGER NOT NULL REFERENCES responses(id),
    response_b   INTEGER NOT NULL REFERENCES responses(id),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    outcome      TEXT NOT NULL CHECK (outcome IN ('a', 'b', 'tie', 'both_bad', 'undone')),
    reasons      TEXT NOT NULL DEFAULT '[]',
    note         TEXT,
    shown_left   TEXT CHECK (shown_left IN ('a', 'b')),
    seconds      REAL,
    guideline_id INTEGER REFERENCES guidelines(id),
    supersedes   INTEGER REFERENCES judgments(id),
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CHECK (response_a < response_b)
);
CREATE INDEX judgments_active ON judgments(annotator_id, response_a, response_b, id);
CREATE INDEX judgments_prompt ON judgments(prompt_id);

CREATE TABLE gold (
    id           INTEGER PRIMARY KEY,
    response_a   INTEGER NOT NULL REFERENCES responses(id),
    response_b   INTEGER NOT NULL REFERENCES responses(id),
    outcome      TEXT NOT NULL CHECK (outcome IN ('a', 'b', 'tie', 'both_bad')),
    note         TEXT,
    source       TEXT,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (response_a, response_b)
);

CREATE TABLE adjudications (
    id           INTEGER PRIMARY KEY,
    uid          TEXT NOT NULL UNIQUE,
    response_a   INTEGER NOT NULL REFERENCES responses(id),
    response_b   INTEGER NOT NULL REFERENCES responses(id),
    outcome      TEXT NOT NULL CHECK (outcome IN ('a', 'b', 'tie', 'both_bad')),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    note         TEXT,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX adjudications_pair ON adjudications(response_a, response_b, id);

CREATE TABLE assignments (
    id           INTEGER PRIMARY KEY,
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    prompt_id    INTEGER NOT NULL REFERENCES prompts(id),
    position     INTEGER NOT NULL,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (annotator_id, prompt_id)
);

CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    method       TEXT NOT NULL,
    config       TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('running', 'finished', 'stopped', 'failed')),
    error        TEXT,
    base_model_id   INTEGER REFERENCES models(id),
    output_model_id INTEGER REFERENCES models(id),
    started_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished_at  TEXT
);

CREATE TABLE run_metrics (
    run_id       INTEGER NOT NULL REFERENCES runs(id),
    step         INTEGER NOT NULL,
    name         TEXT NOT NULL,
    value        REAL NOT NULL,
    PRIMARY KEY (run_id, name, step)
) WITHOUT ROWID;

CREATE TABLE checkpoints (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs(id),
    step         INTEGER NOT NULL,
    path         TEXT NOT NULL,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE ref_logps (
    model_sha    TEXT NOT NULL,
    pair_key     TEXT NOT NULL,
    template_hash TEXT NOT NULL,
    chosen_logp  REAL NOT NULL,
    rejected_logp REAL NOT NULL,
    PRIMARY KEY (model_sha, pair_key, template_hash)
) WITHOUT ROWID;

CREATE TABLE evals (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER REFERENCES runs(id),
    model_a      INTEGER NOT NULL REFERENCES models(id),
    model_b      INTEGER NOT NULL REFERENCES models(id),
    wins         INTEGER NOT NULL,
    losses       INTEGER NOT NULL,
    ties         INTEGER NOT NULL,
    win_rate     REAL NOT NULL,
    ci_low       REAL NOT NULL,
    ci_high      REAL NOT NULL,
    by_language  TEXT NOT NULL DEFAULT '{}',
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
"#;

/// Where each annotator was, so a restart (or a crash) puts them back on the same prompt.
const MIGRATION_2: &str = r#"
CREATE TABLE annotator_state (
    annotator_id INTEGER PRIMARY KEY REFERENCES annotators(id),
    prompt_id    INTEGER REFERENCES prompts(id),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX judgments_annotator_time ON judgments(annotator_id, created_at);
"#;

/// What a run's answers looked like at each evaluation, and blind model-vs-model votes.
const MIGRATION_3: &str = r#"
-- What a run set out to do, so a live view anywhere can show progress and ETA.
ALTER TABLE runs ADD COLUMN total_steps INTEGER;
ALTER TABLE runs ADD COLUMN train_pairs INTEGER;
ALTER TABLE runs ADD COLUMN test_pairs INTEGER;
ALTER TABLE runs ADD COLUMN truncated INTEGER;

CREATE TABLE run_samples (
    run_id       INTEGER NOT NULL REFERENCES runs(id),
    step         INTEGER NOT NULL,
    prompt_id    INTEGER NOT NULL REFERENCES prompts(id),
    content      TEXT NOT NULL,
    params       TEXT NOT NULL,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (run_id, prompt_id, step)
) WITHOUT ROWID;

CREATE TABLE eval_votes (
    id           INTEGER PRIMARY KEY,
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    prompt_id    INTEGER NOT NULL REFERENCES prompts(id),
    model_a      INTEGER NOT NULL REFERENCES models(id),
    model_b      INTEGER NOT NULL REFERENCES models(id),
    response_a   INTEGER NOT NULL REFERENCES responses(id),
    response_b   INTEGER NOT NULL REFERENCES responses(id),
    shown_left   TEXT NOT NULL CHECK (shown_left IN ('a', 'b')),
    outcome      TEXT NOT NULL CHECK (outcome IN ('a', 'b', 'tie', 'both_bad')),
    seconds      REAL,
    superseded_by INTEGER REFERENCES eval_votes(id),
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX eval_votes_models ON eval_votes(model_a, model_b);

-- Which response is a model's answer to a prompt for a sampling seed (two models can give the
-- same text, which `responses` stores once).
CREATE TABLE model_answers (
    model_id     INTEGER NOT NULL REFERENCES models(id),
    prompt_id    INTEGER NOT NULL REFERENCES prompts(id),
    seed         INTEGER NOT NULL,
    response_id  INTEGER NOT NULL REFERENCES responses(id),
    PRIMARY KEY (model_id, prompt_id, seed)
) WITHOUT ROWID;
"#;

/// Content-hash keys move out of `prompts`, `responses` and `judgments` into their own
/// tables. A UNIQUE index on a hash column is filled in random order, so a bulk import spent
/// most of its time in B-tree inserts all over the index; kept apart from the rows, the keys
/// of a whole import can be added in sorted order (about 4x cheaper). The `uid` columns stay
/// as they were (same values, same meaning); `*_uids` is where the store looks them up, and
/// its primary key is what keeps a hash unique.
///
/// The rebuilt tables also check `origin` and `outcome` with comparisons instead of
/// `IN (...)` lists (SQLite builds a temporary B-tree for a list of three or more values on
/// every row it checks), the index on `responses.parent_id` holds only rewrites, and the
/// indexes that `verdict stats` and export scan cover what they read.
const MIGRATION_4: &str = r#"
CREATE TABLE prompts_v4 (
    id           INTEGER PRIMARY KEY,
    uid          TEXT NOT NULL,
    external_id  TEXT,
    messages     TEXT NOT NULL,
    language     TEXT NOT NULL,
    domain       TEXT,
    tags         TEXT NOT NULL DEFAULT '[]',
    split        TEXT NOT NULL CHECK (split IN ('train', 'test')),
    split_explicit INTEGER NOT NULL DEFAULT 0,
    source       TEXT,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
INSERT INTO prompts_v4 (id, uid, external_id, messages, language, domain, tags, split, split_explicit, source, created_at)
    SELECT id, uid, external_id, messages, language, domain, tags, split, split_explicit, source, created_at
    FROM prompts ORDER BY id;
DROP TABLE prompts;
ALTER TABLE prompts_v4 RENAME TO prompts;
-- Covers `verdict stats`, which reads these three of every prompt (a tenth of the table).
CREATE INDEX prompts_breakdown ON prompts(language, domain, split);

CREATE TABLE responses_v4 (
    id           INTEGER PRIMARY KEY,
    uid          TEXT NOT NULL,
    prompt_id    INTEGER NOT NULL REFERENCES prompts(id),
    content      TEXT NOT NULL,
    origin       TEXT NOT NULL CHECK (origin = 'model' OR origin = 'human' OR origin = 'import'),
    model_id     INTEGER REFERENCES models(id),
    params       TEXT,
    parent_id    INTEGER REFERENCES responses(id),
    author       TEXT,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
INSERT INTO responses_v4 (id, uid, prompt_id, content, origin, model_id, params, parent_id, author, created_at)
    SELECT id, uid, prompt_id, content, origin, model_id, params, parent_id, author, created_at
    FROM responses ORDER BY id;
DROP TABLE responses;
ALTER TABLE responses_v4 RENAME TO responses;
CREATE INDEX responses_prompt ON responses(prompt_id);
CREATE INDEX responses_parent ON responses(parent_id) WHERE parent_id IS NOT NULL;

-- Append-only: a relabel or an undo is a new row; the newest row of an
-- (annotator, pair) is the active one, and an 'undone' row means none is.
CREATE TABLE judgments_v4 (
    id           INTEGER PRIMARY KEY,
    uid          TEXT NOT NULL,
    prompt_id    INTEGER NOT NULL REFERENCES prompts(id),
    response_a   INTEGER NOT NULL REFERENCES responses(id),
    response_b   INTEGER NOT NULL REFERENCES responses(id),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    outcome      TEXT NOT NULL
                 CHECK (outcome = 'a' OR outcome = 'b' OR outcome = 'tie' OR outcome = 'both_bad' OR outcome = 'undone'),
    reasons      TEXT NOT NULL DEFAULT '[]',
    note         TEXT,
    shown_left   TEXT CHECK (shown_left IN ('a', 'b')),
    seconds      REAL,
    guideline_id INTEGER REFERENCES guidelines(id),
    supersedes   INTEGER REFERENCES judgments(id),
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CHECK (response_a < response_b)
);
INSERT INTO judgments_v4 (id, uid, prompt_id, response_a, response_b, annotator_id, outcome, reasons, note,
                          shown_left, seconds, guideline_id, supersedes, created_at)
    SELECT id, uid, prompt_id, response_a, response_b, annotator_id, outcome, reasons, note,
           shown_left, seconds, guideline_id, supersedes, created_at
    FROM judgments ORDER BY id;
DROP TABLE judgments;
ALTER TABLE judgments_v4 RENAME TO judgments;
-- Covers the active judgments (the newest row of each annotator and pair, last in its run).
CREATE INDEX judgments_active ON judgments(annotator_id, response_a, response_b, id, prompt_id, outcome, reasons);
CREATE INDEX judgments_prompt ON judgments(prompt_id);
CREATE INDEX judgments_annotator_time ON judgments(annotator_id, created_at);

CREATE TABLE prompt_uids (
    uid          TEXT PRIMARY KEY,
    id           INTEGER NOT NULL REFERENCES prompts(id)
) WITHOUT ROWID;
CREATE TABLE response_uids (
    uid          TEXT PRIMARY KEY,
    id           INTEGER NOT NULL REFERENCES responses(id)
) WITHOUT ROWID;
CREATE TABLE judgment_uids (
    uid          TEXT PRIMARY KEY,
    id           INTEGER NOT NULL REFERENCES judgments(id)
) WITHOUT ROWID;
INSERT INTO prompt_uids (uid, id) SELECT uid, id FROM prompts ORDER BY uid;
INSERT INTO response_uids (uid, id) SELECT uid, id FROM responses ORDER BY uid;
INSERT INTO judgment_uids (uid, id) SELECT uid, id FROM judgments ORDER BY uid;
"#;

/// The training set of a run, stored at its start: a resume trains on exactly these pairs,
/// outcomes and weights, whatever was relabeled since (`store::run_examples`).
const MIGRATION_5: &str = r#"
CREATE TABLE run_examples (
    run_id       INTEGER NOT NULL REFERENCES runs(id),
    position     INTEGER NOT NULL,
    prompt_id    INTEGER NOT NULL REFERENCES prompts(id),
    chosen_id    INTEGER NOT NULL REFERENCES responses(id),
    rejected_id  INTEGER NOT NULL REFERENCES responses(id),
    split        TEXT NOT NULL CHECK (split = 'train' OR split = 'test'),
    weight       REAL NOT NULL,
    PRIMARY KEY (run_id, position)
) WITHOUT ROWID;
"#;

/// Single-answer review: one annotator's good/bad on one answer (`store::thumbs`), with gold
/// answers and adjudicated verdicts for disputed ones, mirroring the pairwise tables.
const MIGRATION_6: &str = r#"
-- Append-only like judgments: a change or an undo is a new row; the newest row of an
-- (annotator, response) is the active one, and an 'undone' row means none is.
CREATE TABLE thumbs (
    id           INTEGER PRIMARY KEY,
    uid          TEXT NOT NULL UNIQUE,
    prompt_id    INTEGER NOT NULL REFERENCES prompts(id),
    response_id  INTEGER NOT NULL REFERENCES responses(id),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    rating       TEXT NOT NULL CHECK (rating = 'good' OR rating = 'bad' OR rating = 'undone'),
    reasons      TEXT NOT NULL DEFAULT '[]',
    note         TEXT,
    seconds      REAL,
    guideline_id INTEGER REFERENCES guidelines(id),
    supersedes   INTEGER REFERENCES thumbs(id),
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX thumbs_active ON thumbs(annotator_id, response_id, id);
CREATE INDEX thumbs_response ON thumbs(response_id);

-- An answer whose rating is known: mixed into the queues to measure annotators.
CREATE TABLE thumb_gold (
    response_id  INTEGER PRIMARY KEY REFERENCES responses(id),
    rating       TEXT NOT NULL CHECK (rating = 'good' OR rating = 'bad'),
    note         TEXT,
    source       TEXT,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- An adjudicator's final rating of a disputed answer; the newest one counts.
CREATE TABLE thumb_adjudications (
    id           INTEGER PRIMARY KEY,
    uid          TEXT NOT NULL UNIQUE,
    response_id  INTEGER NOT NULL REFERENCES responses(id),
    rating       TEXT NOT NULL CHECK (rating = 'good' OR rating = 'bad'),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    note         TEXT,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX thumb_adjudications_response ON thumb_adjudications(response_id, id);
"#;

/// A run's training set as the label compiler made it for its method: pairs (DPO, ORPO, SimPO),
/// unpaired answers with their label (KTO) or answers to imitate (SFT). `chosen_id` is the
/// answer; `rejected_id` is set for a pair, `desirable` for an unpaired answer, neither for SFT.
/// `run_sets` says what the set is in one line: its method, a content hash of the whole set
/// (method, split, prompt and answer texts, labels, weights) and the label counts it was
/// compiled from (JSON), so "which labels trained this model" has an answer after labels change.
const MIGRATION_7: &str = r#"
CREATE TABLE run_examples_v7 (
    run_id       INTEGER NOT NULL REFERENCES runs(id),
    position     INTEGER NOT NULL,
    prompt_id    INTEGER NOT NULL REFERENCES prompts(id),
    chosen_id    INTEGER NOT NULL REFERENCES responses(id),
    rejected_id  INTEGER REFERENCES responses(id),
    desirable    INTEGER CHECK (desirable = 0 OR desirable = 1),
    split        TEXT NOT NULL CHECK (split = 'train' OR split = 'test'),
    weight       REAL NOT NULL,
    PRIMARY KEY (run_id, position),
    CHECK (rejected_id IS NULL OR desirable IS NULL)
) WITHOUT ROWID;
INSERT INTO run_examples_v7 (run_id, position, prompt_id, chosen_id, rejected_id, split, weight)
    SELECT run_id, position, prompt_id, chosen_id, rejected_id, split, weight FROM run_examples;
DROP TABLE run_examples;
ALTER TABLE run_examples_v7 RENAME TO run_examples;

CREATE TABLE run_sets (
    run_id       INTEGER PRIMARY KEY REFERENCES runs(id),
    method       TEXT NOT NULL,
    hash         TEXT NOT NULL,
    counts       TEXT NOT NULL DEFAULT '[]'
);
"#;

/// A prompt's ratings by prompt: the single-answer screen reads the annotator's ratings of one
/// prompt, and the queue re-counts one prompt's after each rating; both scanned every rating
/// without it.
const MIGRATION_8: &str = r#"
CREATE INDEX thumbs_prompt ON thumbs(prompt_id, annotator_id);
"#;

/// A model's answer generated to evaluate it (base against tuned: the diff, the blind
/// evaluation, the arena) is not a labeling candidate of its prompt. It stays here until the
/// same text is generated or imported as a candidate. Answers stored before this migration
/// that nobody has judged or rated move here too.
const MIGRATION_9: &str = concat!(
    "CREATE TABLE evaluation_only (
    response_id  INTEGER PRIMARY KEY REFERENCES responses(id)
);
-- What the labeling side reads: a prompt's candidates (SQLite flattens the view, so a read by
-- prompt still uses responses' index).
CREATE VIEW candidates AS
    SELECT * FROM responses WHERE id NOT IN (SELECT response_id FROM evaluation_only);
",
    evaluation_only_from_answers!()
);

/// Marks the model answers nobody has judged, rated or rewritten as evaluation-only: for
/// migration 9, and for a bundle written before it.
macro_rules! evaluation_only_from_answers {
    () => {
        "INSERT OR IGNORE INTO evaluation_only (response_id)
    SELECT DISTINCT a.response_id FROM model_answers a JOIN responses r ON r.id = a.response_id
    WHERE r.origin = 'model'
      AND a.response_id NOT IN (SELECT response_a FROM judgments UNION ALL SELECT response_b FROM judgments)
      AND a.response_id NOT IN (SELECT response_a FROM gold UNION ALL SELECT response_b FROM gold)
      AND a.response_id NOT IN (SELECT response_id FROM thumbs UNION ALL SELECT response_id FROM thumb_gold)
      AND a.response_id NOT IN (SELECT parent_id FROM responses WHERE parent_id IS NOT NULL);
"
    };
}
use evaluation_only_from_answers;

/// The version that added `evaluation_only`.
pub const EVALUATION_ONLY_SINCE: i64 = 9;
pub const EVALUATION_ONLY_FROM_ANSWERS: &str = evaluation_only_from_answers!();
