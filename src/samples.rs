//! The sample data shipped inside the binary, so `verdict` can seed a demo database
//! from any folder.

use crate::data::import::parse_embedded;
use crate::domain::ImportRecord;

pub const PROMPTS: &str = include_str!("../sample_data/prompts.jsonl");
pub const PAIRS: &str = include_str!("../sample_data/pairs.jsonl");

/// Every sample record: the labeled pairs first, then the prompts still to answer.
pub fn records() -> Vec<ImportRecord> {
    let mut records = parse_embedded("sample_data/pairs.jsonl", PAIRS).expect("embedded pairs are valid");
    records.extend(parse_embedded("sample_data/prompts.jsonl", PROMPTS).expect("embedded prompts are valid"));
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn samples_cover_three_domains_and_seven_languages() {
        let records = records();
        let mut languages = BTreeSet::new();
        let mut domains = BTreeSet::new();
        let mut pairs = 0;
        for record in &records {
            let prompt = match record {
                ImportRecord::Pair { prompt, reasons, .. } => {
                    pairs += 1;
                    assert!(!reasons.is_empty(), "every sample pair names its reason");
                    prompt
                }
                ImportRecord::Prompt(prompt) => prompt,
            };
            languages.insert(prompt.language.clone());
            domains.insert(prompt.domain.clone().unwrap());
            assert!(prompt.split.is_some());
        }
        assert!(pairs >= 40, "{pairs} pairs");
        assert!(records.len() - pairs >= 60);
        for code in ["en", "es", "de", "fr", "zh", "ja", "ar"] {
            assert!(languages.contains(code), "no {code} samples");
        }
        assert_eq!(domains.len(), 3);
    }

    #[test]
    fn sample_reasons_are_in_the_guideline_taxonomy() {
        let guidelines = crate::guidelines::embedded();
        let keys: BTreeSet<String> = guidelines.iter().flat_map(|g| g.reasons.iter().map(|r| r.key.clone())).collect();
        for record in records() {
            if let ImportRecord::Pair { reasons, .. } = record {
                for reason in reasons {
                    assert!(keys.contains(&reason), "unknown reason {reason}");
                }
            }
        }
    }
}
