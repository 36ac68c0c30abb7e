//! Failure injection rules (`--fail PHONE=CODE[xN]`).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Which recipients a [`FailRule`] applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// `*`: every recipient.
    Any,
    /// One number, stored as digits without `+` (the form of the request's `to`).
    Phone(String),
}

/// What the sandbox does instead of accepting a matching message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with the Graph error envelope of this code (HTTP 401 for 0/190, else 400).
    GraphError(u32),
    /// Answer HTTP 503 with a plain-text (non-JSON) body.
    Http503,
    /// Never answer; keep the connection open until the sandbox shuts down.
    Hang,
    /// Close the connection without answering.
    Reset,
}

/// One failure rule, parsed from the CLI form `PHONE=CODE[xN]`.
///
/// `PHONE` is digits with or without `+`, or `*`; `CODE` is a Graph error code, `http503`,
/// `hang` or `reset`; `xN` limits the rule to the first `N` matching requests, after which it
/// no longer applies (later rules are checked, and with none matching the message is accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailRule {
    /// Recipients the rule applies to.
    pub recipient: Recipient,
    /// What to do with a matching request.
    pub fault: Fault,
    /// `Some(n)`: only the first `n` matching requests; `None`: all of them.
    pub times: Option<u64>,
}

/// Why a `PHONE=CODE[xN]` string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid failure rule {input:?}: {reason} (expected PHONE=CODE[xN], e.g. +212610059159=131026, *=http503 or 212610059159=130429x2; CODE is a Graph error code, http503, hang or reset)")]
pub struct FailRuleError {
    input: String,
    reason: String,
}

impl FromStr for FailRule {
    type Err = FailRuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| FailRuleError {
            input: s.to_owned(),
            reason,
        };
        let (phone, action) = s.split_once('=').ok_or_else(|| err("missing '='".into()))?;
        let recipient = parse_recipient(phone.trim()).map_err(err)?;
        let action = action.trim();
        let (code, times) = match action.rsplit_once(['x', 'X']) {
            Some((code, n)) => {
                let n =
                    n.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        err(format!("repeat count {n:?} must be a positive integer"))
                    })?;
                (code, Some(n))
            }
            None => (action, None),
        };
        let fault = parse_fault(code).map_err(err)?;
        Ok(FailRule {
            recipient,
            fault,
            times,
        })
    }
}

fn parse_recipient(phone: &str) -> Result<Recipient, String> {
    if phone == "*" {
        return Ok(Recipient::Any);
    }
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "phone {phone:?} must be digits with an optional leading '+', or '*'"
        ));
    }
    if !(7..=15).contains(&digits.len()) {
        return Err(format!("phone {phone:?} must have 7 to 15 digits"));
    }
    Ok(Recipient::Phone(digits.to_owned()))
}

pub(crate) fn parse_fault(code: &str) -> Result<Fault, String> {
    match code.to_ascii_lowercase().as_str() {
        "http503" => Ok(Fault::Http503),
        "hang" => Ok(Fault::Hang),
        "reset" => Ok(Fault::Reset),
        "" => Err("missing CODE".into()),
        other => other.parse::<u32>().map(Fault::GraphError).map_err(|_| {
            format!("code {code:?} is not a Graph error code, http503, hang or reset")
        }),
    }
}

impl fmt::Display for FailRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.recipient {
            Recipient::Any => f.write_str("*")?,
            Recipient::Phone(p) => write!(f, "+{p}")?,
        }
        match self.fault {
            Fault::GraphError(code) => write!(f, "={code}")?,
            Fault::Http503 => f.write_str("=http503")?,
            Fault::Hang => f.write_str("=hang")?,
            Fault::Reset => f.write_str("=reset")?,
        }
        match self.times {
            Some(n) => write!(f, "x{n}"),
            None => Ok(()),
        }
    }
}

/// The rules of a running sandbox, each with the number of times it has fired.
pub(crate) struct ActiveRules {
    rules: Vec<(FailRule, AtomicU64)>,
}

impl ActiveRules {
    pub(crate) fn new(rules: Vec<FailRule>) -> Self {
        Self {
            rules: rules.into_iter().map(|r| (r, AtomicU64::new(0))).collect(),
        }
    }

    /// The fault for a message to `to` (digits), consuming one use of a limited rule.
    pub(crate) fn check(&self, to: &str) -> Option<Fault> {
        self.rules.iter().find_map(|(rule, fired)| {
            let matches = match &rule.recipient {
                Recipient::Any => true,
                Recipient::Phone(p) => p == to,
            };
            if !matches {
                return None;
            }
            let consumed = match rule.times {
                None => true,
                // Compare-and-increment so concurrent requests never fire a rule more than N times.
                Some(n) => fired
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                        (c < n).then_some(c + 1)
                    })
                    .is_ok(),
            };
            consumed.then_some(rule.fault)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_forms() {
        let r: FailRule = "+212610059159=130429x2".parse().unwrap();
        assert_eq!(r.recipient, Recipient::Phone("212610059159".into()));
        assert_eq!(r.fault, Fault::GraphError(130429));
        assert_eq!(r.times, Some(2));
        assert_eq!(r.to_string(), "+212610059159=130429x2");
        let r: FailRule = "*=http503".parse().unwrap();
        assert_eq!(
            (r.recipient, r.fault, r.times),
            (Recipient::Any, Fault::Http503, None)
        );
        assert_eq!(
            "33612345678=hang".parse::<FailRule>().unwrap().fault,
            Fault::Hang
        );
        assert_eq!(
            "33612345678=RESETx1".parse::<FailRule>().unwrap().fault,
            Fault::Reset
        );
    }

    #[test]
    fn rejects_bad_rules_with_a_clear_error() {
        for bad in [
            "",
            "131026",
            "abc=131026",
            "+12=131026",
            "*=",
            "*=boom",
            "*=131026x0",
            "*=131026xz",
        ] {
            let e = bad.parse::<FailRule>().unwrap_err().to_string();
            assert!(e.contains("PHONE=CODE"), "{bad}: {e}");
        }
    }

    #[test]
    fn limited_rule_fires_n_times_then_falls_through() {
        let rules = ActiveRules::new(vec![
            "+33612345678=130429x2".parse().unwrap(),
            "*=131026x1".parse().unwrap(),
        ]);
        assert_eq!(rules.check("33612345678"), Some(Fault::GraphError(130429)));
        assert_eq!(rules.check("33612345678"), Some(Fault::GraphError(130429)));
        assert_eq!(rules.check("33612345678"), Some(Fault::GraphError(131026)));
        assert_eq!(rules.check("33612345678"), None);
    }
}
