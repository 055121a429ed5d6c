//! Reading the JSON the store keeps in text columns (messages, tags, reasons, languages,
//! run configs). A value that does not parse is an error naming its table, row and column,
//! never an empty list or a default: a row changed outside verdict must not turn silently
//! into an empty prompt or a run config with default values.

use serde::de::DeserializeOwned;

/// A stored JSON value that does not parse as what verdict wrote there.
#[derive(Debug, thiserror::Error)]
#[error(
    "table {table}, row {row}: column {column} does not hold the JSON verdict writes there ({detail}); \
     the database was changed outside verdict: fix that row with sqlite3 or restore the file from a copy"
)]
pub struct CorruptJson {
    pub table: &'static str,
    pub row: i64,
    pub column: &'static str,
    pub detail: String,
}

/// Parses the JSON in `table.column` of row `row`.
pub fn parse<T: DeserializeOwned>(
    text: &str,
    table: &'static str,
    row: i64,
    column: &'static str,
) -> Result<T, CorruptJson> {
    serde_json::from_str(text).map_err(|e| CorruptJson { table, row, column, detail: e.to_string() })
}

/// The same, for use inside a rusqlite row closure: the error travels as a conversion
/// failure and becomes `StoreError::Corrupt` again when it leaves the store.
pub(crate) fn column<T: DeserializeOwned>(
    text: &str,
    table: &'static str,
    row: i64,
    column: &'static str,
) -> rusqlite::Result<T> {
    parse(text, table, row, column)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

#[cfg(test)]
mod tests {
    use crate::store::{NewJudgment, Store, StoreError, Verdict};

    /// Every read of a JSON column reports the row it could not parse.
    #[test]
    fn json_that_does_not_parse_is_an_error_naming_table_row_and_column() {
        let mut store = Store::open_in_memory().unwrap();
        store.import_records(&crate::samples::records()).unwrap();
        let amira = store.annotator_id("amira", "annotator").unwrap();
        let (left, right) = {
            let ids = store.response_ids_of(1).unwrap();
            (ids[0], ids[1])
        };
        let judgment = NewJudgment {
            prompt_id: 1,
            left,
            right,
            annotator_id: amira,
            verdict: Verdict::Left,
            reasons: vec!["tone".into()],
            note: None,
            seconds: None,
            guideline_id: None,
        };
        let judgment_id = store.record_judgment(&judgment).unwrap();
        let corrupt = |store: &Store, sql: &str| {
            store.conn.execute(sql, []).unwrap();
        };
        let expect = |result: Result<(), StoreError>, wanted: &str| {
            let err = result.unwrap_err();
            assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
            assert!(err.to_string().contains(wanted), "{err}");
        };

        corrupt(&store, "UPDATE prompts SET messages = '[{\"role\":' WHERE id = 1");
        expect(store.prompts().map(drop), "table prompts, row 1: column messages");
        expect(store.prompt_messages(1).map(drop), "table prompts, row 1: column messages");
        let all = crate::store::TargetFilter { below: usize::MAX, ..Default::default() };
        expect(store.generation_targets(&all).map(drop), "table prompts, row 1: column messages");
        corrupt(
            &store,
            "UPDATE prompts SET messages = '[{\"role\":\"user\",\"content\":\"x\"}]', tags = 'x' WHERE id = 1",
        );
        expect(store.prompts().map(drop), "table prompts, row 1: column tags");

        corrupt(&store, &format!("UPDATE judgments SET reasons = '[tone]' WHERE id = {judgment_id}"));
        let wanted = format!("table judgments, row {judgment_id}: column reasons");
        expect(store.active_judgments().map(drop), &wanted);
        expect(store.my_judgments(amira, 1).map(drop), &wanted);
        expect(store.judgment_facts().map(drop), &wanted);

        corrupt(&store, &format!("UPDATE judgments SET reasons = '[]' WHERE id = {judgment_id}"));
        corrupt(&store, &format!("UPDATE annotators SET languages = 'de' WHERE id = {amira}"));
        expect(store.annotators().map(drop), &format!("table annotators, row {amira}: column languages"));

        store.load_guidelines(&crate::guidelines::embedded()).unwrap();
        corrupt(&store, "UPDATE guidelines SET reasons = '{'");
        expect(store.reason_taxonomy().map(drop), "column reasons");
    }
}
