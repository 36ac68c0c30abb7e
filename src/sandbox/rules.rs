//! Failure injection rules (`--fail PHONE=CODE[@WHEN][%P][xN]`).
//!
//! Besides answering a send with an error at once, a rule can make the sandbox behave as Meta
//! does for the failures that arrive later: the send is answered `200` with a `wamid`, and a
//! `failed` status carrying the error is posted to the webhook afterwards (`@status`), or even
//! before the send's answer leaves (`@early`: Meta delivers webhooks concurrently with the API
//! answer, so a status can overtake it). Sources: Meta's error codes page ("Cloud API errors are
//! returned either synchronously as a Graph API response, asynchronously via Webhook, or
//! sometimes through both methods",
//! <https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/>)
//! and the status webhook reference (`statuses[].errors[]`).

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

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

/// When a rule's Graph error reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum When {
    /// In the send's answer (the default).
    #[default]
    Answer,
    /// `@status`: the send is accepted (200, a wamid), then a `failed` status with the error is
    /// posted to the webhook.
    Status,
    /// `@early`: like `@status`, but the status is posted (and acknowledged) before the send's
    /// answer leaves, as happens when Meta's webhook overtakes the API answer.
    Early,
}

/// One failure rule, parsed from the CLI form `PHONE=CODE[@WHEN][@regain=MIN][%P][xN]`.
///
/// `PHONE` is digits with or without `+`, or `*`; `CODE` is a Graph error code, `http503`,
/// `hang` or `reset`; `@status`/`@early` turn a Graph error into a failure that arrives later
/// on the status webhook (see [`When`]); `@regain=MIN` puts an `X-Business-Use-Case-Usage`
/// header with `estimated_time_to_regain_access: MIN` (minutes, as Meta counts it) on the
/// answer; `%P` (with `*` only) picks P percent of the recipients, always the same ones for a
/// given rule, which is how per-user limits behave; `xN` limits the rule to the first `N`
/// matching requests — per recipient when `%P` is given, in all otherwise — after which it no
/// longer applies (later rules are checked, and with none matching the message is accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailRule {
    /// Recipients the rule applies to.
    pub recipient: Recipient,
    /// What to do with a matching request.
    pub fault: Fault,
    /// `Some(n)`: only the first `n` matching requests; `None`: all of them.
    pub times: Option<u64>,
    /// When a Graph error reaches the client.
    pub when: When,
    /// Minutes announced in the business-use-case header, when given.
    pub regain_minutes: Option<u32>,
    /// Percent of the recipients the rule picks (`%P`).
    pub share: Option<u8>,
}

/// What a matching rule does to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub fault: Fault,
    pub when: When,
    pub regain_minutes: Option<u32>,
}

/// Why a `PHONE=CODE[xN]` string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid failure rule {input:?}: {reason} (expected PHONE=CODE[@status|@early][@regain=MIN][%P][xN], e.g. +212610059159=131026, *=http503, 212610059159=130429x2, *=131047@status%10 or *=80007@regain=1x1; CODE is a Graph error code, http503, hang or reset)")]
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
        let (action, times) = match action.rsplit_once(['x', 'X']) {
            Some((code, n)) => {
                let n =
                    n.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        err(format!("repeat count {n:?} must be a positive integer"))
                    })?;
                (code, Some(n))
            }
            None => (action, None),
        };
        let (action, share) = match action.rsplit_once('%') {
            Some((rest, p)) => {
                let p = p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| (1..=100).contains(p))
                    .ok_or_else(|| err(format!("share %{p} must be 1 to 100")))?;
                if recipient != Recipient::Any {
                    return Err(err("a share (%P) needs the phone '*'".into()));
                }
                (rest, Some(p))
            }
            None => (action, None),
        };
        let mut parts = action.split('@');
        let fault = parse_fault(parts.next().unwrap_or_default()).map_err(err)?;
        let (mut when, mut regain_minutes) = (When::Answer, None);
        for modifier in parts {
            match modifier.to_ascii_lowercase().as_str() {
                "status" => when = When::Status,
                "early" => when = When::Early,
                m => match m.strip_prefix("regain=").map(str::parse::<u32>) {
                    Some(Ok(min)) => regain_minutes = Some(min),
                    _ => return Err(err(format!("unknown modifier @{modifier}"))),
                },
            }
        }
        if when != When::Answer && !matches!(fault, Fault::GraphError(_)) {
            return Err(err("@status and @early need a Graph error code".into()));
        }
        Ok(FailRule {
            recipient,
            fault,
            times,
            when,
            regain_minutes,
            share,
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
        match self.when {
            When::Answer => {}
            When::Status => f.write_str("@status")?,
            When::Early => f.write_str("@early")?,
        }
        if let Some(min) = self.regain_minutes {
            write!(f, "@regain={min}")?;
        }
        if let Some(p) = self.share {
            write!(f, "%{p}")?;
        }
        match self.times {
            Some(n) => write!(f, "x{n}"),
            None => Ok(()),
        }
    }
}

/// Meta's 131047: the 24-hour customer service window has closed.
const REENGAGEMENT: u32 = 131047;

/// One rule of a running sandbox with the number of times it has fired (in all, and per
/// recipient for a rule with a share).
struct Active {
    rule: FailRule,
    fired: AtomicU64,
    per_recipient: Mutex<HashMap<String, u64>>,
}

/// The rules of a running sandbox.
pub(crate) struct ActiveRules {
    rules: Vec<Active>,
}

impl ActiveRules {
    pub(crate) fn new(rules: Vec<FailRule>) -> Self {
        Self {
            rules: rules
                .into_iter()
                .map(|rule| Active {
                    rule,
                    fired: AtomicU64::new(0),
                    per_recipient: Mutex::new(HashMap::new()),
                })
                .collect(),
        }
    }

    /// What happens to a message to `to` (digits), consuming one use of a limited rule. A
    /// 131047 rule (more than 24 hours since the person last wrote) does not apply to a
    /// template message: templates are how a business reaches people outside the 24-hour
    /// customer service window, as on the real platform.
    pub(crate) fn check(&self, to: &str, template: bool) -> Option<Hit> {
        self.rules.iter().enumerate().find_map(|(index, active)| {
            let rule = &active.rule;
            if template && rule.fault == Fault::GraphError(REENGAGEMENT) {
                return None;
            }
            let matches = match (&rule.recipient, rule.share) {
                (Recipient::Phone(p), _) => p == to,
                (Recipient::Any, None) => true,
                (Recipient::Any, Some(p)) => picked(index, to, p),
            };
            if !matches {
                return None;
            }
            let consumed = match (rule.times, rule.share) {
                (None, _) => true,
                (Some(n), Some(_)) => {
                    let mut seen = active
                        .per_recipient
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    let count = seen.entry(to.to_owned()).or_insert(0);
                    *count += 1;
                    *count <= n
                }
                // Compare-and-increment so concurrent requests never fire a rule more than N times.
                (Some(n), None) => active
                    .fired
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                        (c < n).then_some(c + 1)
                    })
                    .is_ok(),
            };
            consumed.then_some(Hit {
                fault: rule.fault,
                when: rule.when,
                regain_minutes: rule.regain_minutes,
            })
        })
    }
}

/// Whether the rule at `index` with share `percent` picks recipient `to`: a stable choice (the
/// same people every run), different for each rule.
fn picked(index: usize, to: &str, percent: u8) -> bool {
    // `DefaultHasher::new()` has fixed keys: the same choice on every run of this build.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (index, to).hash(&mut h);
    h.finish() % 100 < u64::from(percent)
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
        let fault = |to| rules.check(to, false).map(|h| h.fault);
        assert_eq!(fault("33612345678"), Some(Fault::GraphError(130429)));
        assert_eq!(fault("33612345678"), Some(Fault::GraphError(130429)));
        assert_eq!(fault("33612345678"), Some(Fault::GraphError(131026)));
        assert_eq!(fault("33612345678"), None);
    }

    #[test]
    fn later_failures_and_their_modifiers_are_parsed_and_printed_back() {
        let r: FailRule = "*=131047@status%10".parse().unwrap();
        assert_eq!(
            (r.fault, r.when, r.share, r.times),
            (Fault::GraphError(131047), When::Status, Some(10), None)
        );
        assert_eq!(r.to_string(), "*=131047@status%10");
        let r: FailRule = "+5511987654321=131026@early".parse().unwrap();
        assert_eq!(r.when, When::Early);
        let r: FailRule = "*=80007@regain=2x1".parse().unwrap();
        assert_eq!((r.regain_minutes, r.times), (Some(2), Some(1)));
        assert_eq!(r.to_string(), "*=80007@regain=2x1");
        for bad in [
            "*=http503@status",
            "*=131047@later",
            "+33612345678=131047%5",
            "*=131047%0",
            "*=131047%101",
        ] {
            let e = bad.parse::<FailRule>().unwrap_err().to_string();
            assert!(e.contains("PHONE=CODE"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_24_hour_window_does_not_stop_a_template() {
        let rules = ActiveRules::new(vec!["*=131047@status".parse().unwrap()]);
        assert_eq!(
            rules.check("33612345678", false).map(|h| h.fault),
            Some(Fault::GraphError(131047))
        );
        assert_eq!(rules.check("33612345678", true), None);
        let other = ActiveRules::new(vec!["*=131026".parse().unwrap()]);
        assert!(
            other.check("33612345678", true).is_some(),
            "only 131047 is about the window"
        );
    }

    #[test]
    fn a_share_picks_the_same_people_and_counts_per_person() {
        let rules = ActiveRules::new(vec!["*=131056%30x2".parse().unwrap()]);
        let people: Vec<String> = (0..1000).map(|i| format!("3361234{i:04}")).collect();
        let hit: Vec<&String> = people
            .iter()
            .filter(|p| rules.check(p, false).is_some())
            .collect();
        // About 30 %, and the same people again (their second of two failures).
        assert!((200..400).contains(&hit.len()), "{}", hit.len());
        assert!(hit.iter().all(|p| rules.check(p, false).is_some()));
        // Each picked person fails twice, then gets through: the limit is theirs alone.
        assert!(hit.iter().all(|p| rules.check(p, false).is_none()));
        let other = ActiveRules::new(vec![
            "*=131049%30".parse().unwrap(),
            "*=131026%30".parse().unwrap(),
        ]);
        let second: Vec<&String> = people
            .iter()
            .filter(|p| other.check(p, false).map(|h| h.fault) == Some(Fault::GraphError(131026)))
            .collect();
        assert!(!second.is_empty(), "each rule picks its own people");
    }
}
