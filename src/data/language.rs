//! Language codes: validating BCP-47 tags and detecting the language of a text.

use whatlang::Lang;

/// The code for "undetermined", used when detection is not confident.
pub const UNDETERMINED: &str = "und";

/// Detects the language of `text` and returns a BCP-47 code (`und` when unsure).
pub fn detect(text: &str) -> String {
    // Limiting the candidates to widely used languages keeps short messages from being
    // read as Esperanto or Latin; a low-confidence guess is worse than admitting we
    // don't know, except for scripts that decide the language alone.
    let detector = whatlang::Detector::with_allowlist(COMMON.to_vec());
    match detector.detect(text) {
        Some(info) if info.confidence() >= 0.5 || script_decides(info.lang()) => bcp47(info.lang()).to_string(),
        _ => UNDETERMINED.to_string(),
    }
}

const COMMON: [Lang; 30] = [
    Lang::Eng,
    Lang::Spa,
    Lang::Deu,
    Lang::Fra,
    Lang::Cmn,
    Lang::Jpn,
    Lang::Ara,
    Lang::Por,
    Lang::Ita,
    Lang::Nld,
    Lang::Rus,
    Lang::Ukr,
    Lang::Pol,
    Lang::Tur,
    Lang::Kor,
    Lang::Hin,
    Lang::Heb,
    Lang::Swe,
    Lang::Dan,
    Lang::Fin,
    Lang::Ces,
    Lang::Ell,
    Lang::Hun,
    Lang::Ron,
    Lang::Vie,
    Lang::Ind,
    Lang::Tha,
    Lang::Pes,
    Lang::Ben,
    Lang::Urd,
];

fn script_decides(lang: Lang) -> bool {
    matches!(lang, Lang::Cmn | Lang::Jpn | Lang::Kor | Lang::Ara | Lang::Heb | Lang::Tha | Lang::Ell | Lang::Hin)
}

/// Maps whatlang's ISO 639-3 codes to the shortest BCP-47 tag.
fn bcp47(lang: Lang) -> &'static str {
    match lang {
        Lang::Eng => "en",
        Lang::Spa => "es",
        Lang::Deu => "de",
        Lang::Fra => "fr",
        Lang::Cmn => "zh",
        Lang::Jpn => "ja",
        Lang::Ara => "ar",
        Lang::Por => "pt",
        Lang::Ita => "it",
        Lang::Nld => "nl",
        Lang::Rus => "ru",
        Lang::Ukr => "uk",
        Lang::Pol => "pl",
        Lang::Tur => "tr",
        Lang::Kor => "ko",
        Lang::Hin => "hi",
        Lang::Heb => "he",
        Lang::Swe => "sv",
        Lang::Dan => "da",
        Lang::Fin => "fi",
        Lang::Ces => "cs",
        Lang::Ell => "el",
        Lang::Hun => "hu",
        Lang::Ron => "ro",
        Lang::Vie => "vi",
        Lang::Ind => "id",
        Lang::Tha => "th",
        Lang::Pes => "fa",
        Lang::Ben => "bn",
        Lang::Urd => "ur",
        other => other.code(),
    }
}

/// Whether `tag` looks like a BCP-47 language tag (`en`, `pt-BR`, `zh-Hant-TW`, `und`).
pub fn is_valid_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let primary = parts.next().unwrap_or("");
    let primary_ok = (2..=3).contains(&primary.len()) && primary.chars().all(|c| c.is_ascii_alphabetic());
    primary_ok && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Canonical case: language lower, script title, region upper (`zh-hant-tw` → `zh-Hant-TW`).
pub fn normalize_tag(tag: &str) -> String {
    tag.split('-')
        .enumerate()
        .map(|(i, part)| match (i, part.len()) {
            (0, _) => part.to_ascii_lowercase(),
            (_, 4) => {
                let mut s = part.to_ascii_lowercase();
                s[..1].make_ascii_uppercase();
                s
            }
            (_, 2) => part.to_ascii_uppercase(),
            _ => part.to_ascii_lowercase(),
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_seven_sample_languages() {
        let cases = [
            ("en", "My card was swallowed by the ATM this morning, what should I do now?"),
            ("es", "¿Cuánto tiempo tarda una transferencia SEPA en llegar a otra cuenta?"),
            ("de", "Ich habe eine verdächtige SMS bekommen, die angeblich von meiner Bank stammt."),
            ("fr", "Bonjour, je voudrais savoir comment contester un prélèvement sur mon compte."),
            ("zh", "我的银行卡被盗了，请问我应该怎么办？"),
            ("ja", "クレジットカードを紛失してしまいました。どうすればいいですか？"),
            ("ar", "لقد فقدت بطاقتي المصرفية، ماذا يجب أن أفعل الآن؟"),
        ];
        for (code, text) in cases {
            assert_eq!(detect(text), code, "{text}");
        }
        assert_eq!(detect("¿Cómo puedo cambiar el PIN de mi tarjeta de débito?"), "es");
        assert_eq!(detect("ok"), UNDETERMINED);
    }

    #[test]
    fn validates_and_normalizes_tags() {
        assert!(is_valid_tag("en") && is_valid_tag("pt-BR") && is_valid_tag("zh-Hant-TW"));
        assert!(!is_valid_tag("english") && !is_valid_tag("") && !is_valid_tag("e"));
        assert_eq!(normalize_tag("ZH-hant-tw"), "zh-Hant-TW");
        assert_eq!(normalize_tag("EN"), "en");
    }
}
