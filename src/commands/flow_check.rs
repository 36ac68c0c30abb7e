//! `flowctl flows validate`: what can be checked of a Flow JSON before any upload — the JSON
//! itself, the screen ids, the routing model (every screen listed, reachable from the entry
//! screen, ending on terminal screens), the `${data.…}` a screen shows against the data it
//! declares (what `serve` sends), and whether built-in routing can drive it.
//!
//! The routing rules follow Meta's static validation (`INVALID_ROUTING_MODEL`: screens
//! missing in the routing model, screens not connected, no entry screen):
//! <https://developers.facebook.com/docs/whatsapp/flows/reference/error-codes>, and the Flow
//! JSON reference: <https://developers.facebook.com/docs/whatsapp/flows/reference/flowjson/>.

use std::fmt;

use serde_json::Value;

use crate::flow_json::FlowJson;

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Meta would refuse the Flow, or `serve` could not drive it.
    Error,
    /// Worth a look; the Flow can still be uploaded.
    Warning,
}

/// One finding, with its place in the file when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// 1-based line and column, when the finding points at a place.
    pub at: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match self.at {
            Some((l, c)) => write!(f, "{l}:{c}: {level}: {}", self.message),
            None => write!(f, "{level}: {}", self.message),
        }
    }
}

/// 1-based line and column of byte `offset` of `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Where `"name"` first appears in `text` (at or after `from`), as line and column.
fn place_of(text: &str, name: &str, from: usize) -> Option<(usize, usize)> {
    let quoted = format!("\"{name}\"");
    let from = from.min(text.len());
    text[from..].find(&quoted).map(|i| line_col(text, from + i))
}

fn error(at: Option<(usize, usize)>, message: String) -> Finding {
    Finding {
        severity: Severity::Error,
        at,
        message,
    }
}

/// Every `${data.NAME}` in a JSON value's strings.
fn data_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            for piece in s.split("${data.").skip(1) {
                let name: String = piece
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| data_refs(x, out)),
        Value::Object(o) => o.values().for_each(|x| data_refs(x, out)),
        _ => {}
    }
}

/// The screens reachable from `start` through the routing model, `start` included.
fn reachable(flow: &FlowJson, start: &str) -> Vec<String> {
    let mut reached = vec![start.to_string()];
    let mut i = 0;
    while i < reached.len() {
        for next in flow.successors(&reached[i]) {
            if !reached.contains(next) {
                reached.push(next.clone());
            }
        }
        i += 1;
    }
    reached
}

/// Checks a Flow JSON text; the findings in file order as far as they have a place.
pub fn check(text: &str) -> Vec<Finding> {
    let raw: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return vec![error(
                Some((e.line(), e.column())),
                format!("not valid JSON: {e}"),
            )]
        }
    };
    let mut findings = Vec::new();
    if raw.get("version").and_then(Value::as_str).is_none() {
        findings.push(error(
            Some((1, 1)),
            "no \"version\": Meta refuses a Flow JSON without its version (e.g. \"7.2\")".into(),
        ));
    }
    let flow = match FlowJson::parse(text) {
        Ok(f) => f,
        Err(e) => {
            // Point at the screen the message names, when it names one.
            let at = e
                .to_string()
                .split('"')
                .nth(1)
                .and_then(|name| place_of(text, name, 0));
            findings.push(error(at, e.to_string()));
            return findings;
        }
    };
    let routing = raw
        .get("routing_model")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let routing_at = text.find("\"routing_model\"").unwrap_or(0);
    // Several screens without an inbound route: only one can open the Flow. The one that
    // leads to the most screens is taken as the entry, so that the stray one is named.
    let inbound: Vec<&String> = flow
        .screens()
        .iter()
        .flat_map(|s| flow.successors(&s.id))
        .collect();
    let roots = flow
        .screens()
        .iter()
        .filter(|s| routing.contains_key(&s.id) && !inbound.contains(&&s.id));
    let mut entry = flow.entry_screen().id.clone();
    let mut reached = reachable(&flow, &entry);
    for root in roots {
        let from_root = reachable(&flow, &root.id);
        if from_root.len() > reached.len() {
            entry = root.id.clone();
            reached = from_root;
        }
    }
    let screens_raw: Vec<Value> = raw
        .get("screens")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (screen, s_raw) in flow.screens().iter().zip(&screens_raw) {
        let at = place_of(text, &screen.id, 0);
        if !routing.contains_key(&screen.id) {
            findings.push(error(
                at,
                format!(
                    "screen {:?} is missing from the routing_model (list it, with [] when it ends the Flow)",
                    screen.id
                ),
            ));
            continue;
        }
        if !reached.contains(&screen.id) {
            findings.push(error(
                at,
                format!(
                    "screen {:?} cannot be reached from the entry screen {entry:?}: no route leads to it",
                    screen.id
                ),
            ));
        }
        if flow.successors(&screen.id).is_empty() && !screen.terminal {
            findings.push(error(
                at,
                format!(
                    "screen {:?} routes nowhere but is not \"terminal\": true (a Flow ends on a terminal screen)",
                    screen.id
                ),
            ));
        }
        let mut refs = Vec::new();
        data_refs(s_raw.get("layout").unwrap_or(&Value::Null), &mut refs);
        for name in refs {
            if !screen.data_defaults.contains_key(&name) {
                findings.push(error(
                    text.find(&format!("${{data.{name}")).map(|o| line_col(text, o)),
                    format!(
                        "screen {:?} shows ${{data.{name}}} but does not declare {name:?} in its \"data\": serve sends only the declared data",
                        screen.id
                    ),
                ));
            }
        }
    }
    if !flow.screens().iter().any(|s| s.terminal) {
        findings.push(error(
            place_of(text, "routing_model", 0),
            "no screen is \"terminal\": true: the Flow can never complete".into(),
        ));
    }
    if let Err(e) = flow.check_builtin_routing() {
        findings.push(Finding {
            severity: Severity::Warning,
            at: e
                .to_string()
                .split('"')
                .nth(1)
                .and_then(|name| place_of(text, name, routing_at)),
            message: format!("serve's built-in routing: {e}"),
        });
    }
    findings.sort_by_key(|f| f.at.unwrap_or((usize::MAX, 0)));
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
  "version": "7.2",
  "routing_model": { "A": ["B"], "B": [] },
  "screens": [
    { "id": "A", "data": { "name": { "type": "string", "__example__": "x" } },
      "layout": { "type": "SingleColumnLayout", "children": [{ "type": "TextHeading", "text": "Hi ${data.name}" }] } },
    { "id": "B", "terminal": true, "layout": { "type": "SingleColumnLayout", "children": [] } }
  ]
}"#;

    #[test]
    fn a_sound_flow_has_no_finding() {
        assert_eq!(check(GOOD), vec![]);
    }

    #[test]
    fn an_unreachable_screen_is_named_with_its_line() {
        let text = GOOD
            .replace(r#""B": [] }"#, r#""B": [], "C": [] }"#)
            .replace(
                r#"{ "id": "B", "terminal": true,"#,
                r#"{ "id": "C", "terminal": true, "layout": {} },
    { "id": "B", "terminal": true,"#,
            );
        let f = check(&text);
        let unreachable: Vec<_> = f
            .iter()
            .filter(|f| f.message.contains("cannot be reached"))
            .collect();
        assert_eq!(unreachable.len(), 1, "{f:?}");
        assert!(unreachable[0].message.contains("\"C\""));
        assert_eq!(
            unreachable[0].at.map(|a| a.0),
            Some(3),
            "the first mention of C"
        );
    }

    #[test]
    fn undeclared_data_and_missing_terminal_are_errors() {
        let text = GOOD
            .replace("${data.name}", "${data.city}")
            .replace(r#""terminal": true, "#, "");
        let f = check(&text);
        assert!(
            f.iter()
                .any(|f| f.message.contains("${data.city}") && f.at.is_some()),
            "{f:?}"
        );
        assert!(
            f.iter().any(|f| f.message.contains("not \"terminal\"")),
            "{f:?}"
        );
    }

    #[test]
    fn bad_json_points_at_its_line() {
        let f = check("{\n  \"version\": \"7.2\",\n  oops\n}");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].at.map(|a| a.0), Some(3));
    }
}
