//! Opt-out keywords: whether a message a person sent asks to stop the business's messages, or
//! to have them again.
//!
//! Pure (text in, answer out), beside [`crate::webhook_events`]. A message matches when the
//! WHOLE message, once folded, is one of the keywords: "stop" stops, "please don't stop"
//! does not. Folding ignores case, accents and Arabic diacritics (`ARRÊT` = `arret`,
//! `إلغاء` = `الغاء`), surrounding spaces and punctuation (`Stop!`), so that people need not
//! type a keyword exactly. The lists are settings of `serve` (`--stop-keywords`,
//! `--start-keywords`); the defaults cover English, French, Spanish and Arabic.

use icu_normalizer::DecomposingNormalizerBorrowed;

/// What a message asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Stop messaging me.
    Stop,
    /// Message me again.
    Start,
}

/// Default stop keywords: English (the usual SMS set), French, Spanish and Arabic.
pub const DEFAULT_STOP: &[&str] = &[
    "stop",
    "stop all",
    "stopall",
    "unsubscribe",
    "opt out",
    "optout",
    "arret",
    "arrêt",
    "desabonner",
    "désabonner",
    "désinscrire",
    "desinscription",
    "baja",
    "darme de baja",
    "alto",
    "parar",
    "توقف",
    "إلغاء",
    "إلغاء الاشتراك",
    "إيقاف",
];

/// Default start keywords, in the same languages.
pub const DEFAULT_START: &[&str] = &[
    "start",
    "unstop",
    "resume",
    "subscribe",
    "reprendre",
    "demarrer",
    "démarrer",
    "alta",
    "reanudar",
    "ابدأ",
    "استئناف",
    "اشتراك",
];

/// The stop and start keywords, folded once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keywords {
    stop: Vec<String>,
    start: Vec<String>,
}

impl Default for Keywords {
    fn default() -> Self {
        Keywords::new(DEFAULT_STOP, DEFAULT_START)
    }
}

impl Keywords {
    /// The given lists (blank entries are dropped).
    pub fn new<S: AsRef<str>>(stop: &[S], start: &[S]) -> Keywords {
        let fold_all = |list: &[S]| {
            list.iter()
                .map(|k| fold(k.as_ref()))
                .filter(|k| !k.is_empty())
                .collect()
        };
        Keywords {
            stop: fold_all(stop),
            start: fold_all(start),
        }
    }

    /// What `text` asks for, when the whole of it is a keyword.
    pub fn classify(&self, text: &str) -> Option<Intent> {
        let folded = fold(text);
        if folded.is_empty() {
            None
        } else if self.stop.contains(&folded) {
            Some(Intent::Stop)
        } else if self.start.contains(&folded) {
            Some(Intent::Start)
        } else {
            None
        }
    }
}

/// Case-, accent- and diacritic-insensitive form of a short message: decomposed (NFD), marks
/// dropped, lower case, outer punctuation trimmed, inner spaces collapsed.
pub fn fold(text: &str) -> String {
    let decomposed = DecomposingNormalizerBorrowed::new_nfd().normalize(text);
    let kept: String = decomposed
        .chars()
        .filter(|c| !is_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    kept.trim_matches(|c: char| !c.is_alphanumeric())
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Combining accents, and the Arabic diacritics, hamza marks and tatweel that people type or
/// leave out at will.
fn is_mark(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'
        | '\u{0610}'..='\u{061A}'
        | '\u{064B}'..='\u{065F}'
        | '\u{0670}'
        | '\u{0640}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_messages_match_whatever_their_case_and_accents() {
        let k = Keywords::default();
        for stop in [
            "STOP",
            " stop ",
            "Stop!",
            "ARRÊT",
            "arret",
            "Arrêt.",
            "BAJA",
            "Alto",
            "توقف",
            "الغاء",
            "إلغاء",
            "Désabonner",
            "stop  all",
        ] {
            assert_eq!(k.classify(stop), Some(Intent::Stop), "{stop:?}");
        }
        for start in ["START", "Resume", "reprendre", "Démarrer", "ALTA", "ابدأ"] {
            assert_eq!(k.classify(start), Some(Intent::Start), "{start:?}");
        }
        for other in [
            "",
            "  ",
            "please stop sending",
            "stopped",
            "non-stop",
            "ok",
            "بدون توقف",
        ] {
            assert_eq!(k.classify(other), None, "{other:?}");
        }
    }

    #[test]
    fn configured_lists_replace_the_defaults() {
        let k = Keywords::new(&["PARE"], &["VOLTAR"]);
        assert_eq!(k.classify("pare"), Some(Intent::Stop));
        assert_eq!(k.classify("voltar"), Some(Intent::Start));
        assert_eq!(k.classify("stop"), None);
    }

    #[test]
    fn folding_drops_marks_and_case() {
        assert_eq!(fold("  Ça  VA? "), "ca va");
        assert_eq!(fold("إلغاء"), fold("الغاء"));
        assert_eq!(fold("تـــوقف"), "توقف");
    }
}
