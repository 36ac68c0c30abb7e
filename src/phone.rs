//! `Phone`: a phone number that is known to be valid, in E.164 form.
//!
//! Validation happens once, where a number enters the program (the command line, a CSV row,
//! an HTTP request); everything past that point handles a `Phone` and never re-checks it.

use std::fmt;

use phonenumber::country;
use phonenumber::Mode;

/// A valid phone number in E.164 form (`+212610059159`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phone(String);

/// Why a phone number was refused. The message quotes the value as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("invalid phone number {input:?}: {reason}")]
    Invalid { input: String, reason: String },
    #[error("invalid DEFAULT_COUNTRY {0:?}: expected an ISO 3166 region code such as MA or FR")]
    BadCountry(String),
}

/// An ISO 3166-1 region used to read national numbers (`0610059159` with `MA`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultCountry(country::Id);

impl std::str::FromStr for DefaultCountry {
    type Err = PhoneError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .to_ascii_uppercase()
            .parse::<country::Id>()
            .map(DefaultCountry)
            .map_err(|_| PhoneError::BadCountry(s.to_string()))
    }
}

impl Phone {
    /// Parses and normalises a number.
    ///
    /// Accepted forms: E.164 (`+212610059159`), the `00` international prefix, digits that
    /// start with a country code (`212610059159`), and — when `default_country` is given —
    /// national numbers (`0610059159`). Spaces, dots, dashes and parentheses are ignored.
    pub fn parse(
        input: &str,
        default_country: Option<DefaultCountry>,
    ) -> Result<Phone, PhoneError> {
        let invalid = |reason: &str| PhoneError::Invalid {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(invalid("empty"));
        }
        let cleaned: String = trimmed
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{a0}'))
            .collect();
        let (plus, digits) = match cleaned.strip_prefix('+') {
            Some(rest) => (true, rest.to_string()),
            None => match cleaned.strip_prefix("00") {
                Some(rest) => (true, rest.to_string()),
                None => (false, cleaned.clone()),
            },
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "only digits, spaces, dashes, dots, parentheses and a leading + are allowed",
            ));
        }
        if digits.len() > 17 {
            return Err(invalid("too long"));
        }
        if plus {
            return Self::parse_international(&digits).ok_or_else(|| invalid("not a valid number"));
        }
        if let Some(DefaultCountry(region)) = default_country {
            if let Ok(n) = phonenumber::parse(Some(region), &digits) {
                if phonenumber::is_valid(&n) {
                    return Ok(Phone(n.format().mode(Mode::E164).to_string()));
                }
            }
        }
        if let Some(p) = Self::parse_international(&digits) {
            return Ok(p);
        }
        Err(invalid(if default_country.is_some() {
            "not a valid number, neither national nor with a country code"
        } else {
            "not a valid number (write it with its country code, e.g. +212610059159, or set DEFAULT_COUNTRY)"
        }))
    }

    fn parse_international(digits: &str) -> Option<Phone> {
        let n = phonenumber::parse(None, format!("+{digits}")).ok()?;
        phonenumber::is_valid(&n).then(|| Phone(n.format().mode(Mode::E164).to_string()))
    }

    /// Rebuilds a `Phone` from its E.164 text as this program stored it: checks the form
    /// (`+`, then 2 to 15 digits, the first not 0) but not the numbering plan, so that a
    /// number stored under older phone metadata still reads back.
    pub fn from_e164(s: &str) -> Result<Phone, PhoneError> {
        let well_formed = s.strip_prefix('+').is_some_and(|digits| {
            (2..=15).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0')
        });
        if well_formed {
            Ok(Phone(s.to_string()))
        } else {
            Err(PhoneError::Invalid {
                input: s.to_string(),
                reason: "not in E.164 form".into(),
            })
        }
    }

    /// The E.164 form, with its `+`.
    pub fn e164(&self) -> &str {
        &self.0
    }

    /// The form the Graph API wants in `to`: E.164 without the `+`.
    pub fn wa_digits(&self) -> &str {
        self.0.trim_start_matches('+')
    }

    /// True when a WhatsApp id (`wa_id`, `recipient_id`, a reply's `from`: digits without `+`)
    /// designates this number. Meta's id may differ from the number a message was sent to
    /// (the send answer's `contacts[].wa_id` "may differ from the input"): a Brazilian mobile
    /// registered before the ninth digit (`55 AA 9XXXX XXXX` answers as `55 AA XXXX XXXX`) and
    /// a Mexican mobile (`52 XXXXXXXXXX` answers as `521 XXXXXXXXXX`).
    pub fn is_whatsapp_id(&self, wa_id: &str) -> bool {
        let me = self.wa_digits();
        me == wa_id || whatsapp_form(me) == whatsapp_form(wa_id)
    }

    /// The number as an integer, a compact key for de-duplicating large files in memory.
    pub fn as_u64(&self) -> u64 {
        self.wa_digits().parse().unwrap_or(0)
    }
}

/// Serialised as its E.164 text.
impl serde::Serialize for Phone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The WhatsApp id Meta reports for a number written as `digits` (no `+`): the number itself,
/// except for the numbers Meta spells its own way — Brazilian mobiles without their ninth
/// digit, Mexican mobiles with the `1` after `52`. Both spellings of such a number give the
/// same result.
pub fn whatsapp_form(digits: &str) -> std::borrow::Cow<'_, str> {
    if let Some(rest) = digits.strip_prefix("55") {
        if rest.len() == 11 && rest.as_bytes()[2] == b'9' {
            return format!("55{}{}", &rest[..2], &rest[3..]).into();
        }
    }
    if let Some(rest) = digits.strip_prefix("52") {
        if rest.len() == 10 {
            return format!("521{rest}").into();
        }
    }
    digits.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brazilian_and_mexican_whatsapp_ids_designate_their_number() {
        let br = Phone::parse("+5511987654321", None).unwrap();
        assert!(br.is_whatsapp_id("551187654321"));
        assert!(br.is_whatsapp_id("5511987654321"));
        assert!(!br.is_whatsapp_id("551187654322"));
        let mx = Phone::parse("+525512345678", None).unwrap();
        assert!(mx.is_whatsapp_id("5215512345678"));
        let ma = Phone::parse("+212610059159", None).unwrap();
        assert!(ma.is_whatsapp_id("212610059159"));
        assert!(!ma.is_whatsapp_id("212610059158"));
        assert_eq!(whatsapp_form("5511987654321"), "551187654321");
        assert_eq!(whatsapp_form("525512345678"), "5215512345678");
    }

    fn ma() -> Option<DefaultCountry> {
        Some("MA".parse().unwrap())
    }

    #[test]
    fn e164_is_kept() {
        assert_eq!(
            Phone::parse("+212610059159", None).unwrap().e164(),
            "+212610059159"
        );
    }

    #[test]
    fn national_number_uses_default_country() {
        assert_eq!(
            Phone::parse("0610059159", ma()).unwrap().e164(),
            "+212610059159"
        );
        assert_eq!(
            Phone::parse("06 10 05 91 59", ma()).unwrap().e164(),
            "+212610059159"
        );
    }

    #[test]
    fn digits_with_country_code_work_with_and_without_default_country() {
        assert_eq!(
            Phone::parse("212610059159", None).unwrap().e164(),
            "+212610059159"
        );
        assert_eq!(
            Phone::parse("212610059159", ma()).unwrap().e164(),
            "+212610059159"
        );
        assert_eq!(
            Phone::parse("33612345678", ma()).unwrap().e164(),
            "+33612345678"
        );
        assert_eq!(
            Phone::parse("0033612345678", None).unwrap().e164(),
            "+33612345678"
        );
    }

    #[test]
    fn national_number_without_default_country_is_refused() {
        let err = Phone::parse("0610059159", None).unwrap_err().to_string();
        assert!(
            err.contains("0610059159") && err.contains("DEFAULT_COUNTRY"),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_refused_with_the_value() {
        for bad in ["", "abc", "+2126100", "+1234567890123456789", "12ab34", "+"] {
            let err = Phone::parse(bad, ma()).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn wa_digits_drop_the_plus() {
        assert_eq!(
            Phone::parse("+212610059159", None).unwrap().wa_digits(),
            "212610059159"
        );
    }

    #[test]
    fn stored_text_reads_back_when_it_has_the_e164_form() {
        let p = Phone::parse("+212610059159", None).unwrap();
        assert_eq!(Phone::from_e164(p.e164()).unwrap(), p);
        for bad in [
            "212610059159",
            "+",
            "+0612",
            "+2126100591591234",
            "+2126 1005",
        ] {
            let err = Phone::from_e164(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn bad_country_is_refused() {
        assert!("ZZZ".parse::<DefaultCountry>().is_err());
        assert!("ma".parse::<DefaultCountry>().is_ok());
    }

    proptest::proptest! {
        #[test]
        fn normalisation_is_idempotent(s in "\\+?[0-9 ]{6,16}") {
            if let Ok(p) = Phone::parse(&s, ma()) {
                let again = Phone::parse(p.e164(), ma()).unwrap();
                proptest::prop_assert_eq!(again, p);
            }
        }
    }
}
