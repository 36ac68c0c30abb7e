//! What the report takes from a Flow JSON: each form field's label, kind and option titles,
//! so that a chart says "★★★★★ Excellent" rather than `5_etoiles`.
//!
//! Meta's components reference
//! (<https://developers.facebook.com/docs/whatsapp/flows/reference/components/>): a
//! `RadioButtonsGroup` or `Dropdown` answers one option `id`, a `CheckboxGroup` or
//! `ChipsSelector` answers a list of option ids, each option of a `data-source` being
//! `{"id", "title"}`; a `TextInput` with `"input-type": "number"` answers a number, other
//! `TextInput`s and `TextArea`s free text. A `data-source` given as `${data.x}` comes from
//! the endpoint; the screen's declared `__example__` list is the best title source then.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

/// How a question is charted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuestionKind {
    /// One option among several: bars per option.
    Single,
    /// Several options at once: bars per option, a person counted in each they chose.
    Multi,
    /// A number: a histogram.
    Number,
    /// Free text: the most recent answers and a count.
    Text,
}

/// One form field of the Flow.
#[derive(Clone, Debug, PartialEq)]
pub struct Question {
    /// The field's `name`: the answer key.
    pub name: String,
    /// What the person read (`label`), when the Flow gives one.
    pub label: Option<String>,
    pub kind: QuestionKind,
    /// Option id → title, in the Flow's order.
    pub options: Vec<(String, String)>,
}

/// The questions of a Flow JSON, in the order its screens declare them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Questions {
    list: Vec<Question>,
}

impl Questions {
    /// Reads a Flow JSON file; the error names the file and what is wrong.
    pub fn load(path: &Path) -> Result<Questions, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        Questions::parse(&text)
    }

    /// Parses a Flow JSON's text.
    pub fn parse(text: &str) -> Result<Questions, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let screens = v
            .get("screens")
            .and_then(Value::as_array)
            .ok_or("no \"screens\" array")?;
        let mut list: Vec<Question> = Vec::new();
        for screen in screens {
            let data = screen.get("data").and_then(Value::as_object);
            if let Some(layout) = screen.get("layout") {
                walk(layout, data, &mut list);
            }
        }
        Ok(Questions { list })
    }

    /// The question answered under `name`.
    pub fn get(&self, name: &str) -> Option<&Question> {
        self.list.iter().find(|q| q.name == name)
    }

    /// Every question, in Flow order.
    pub fn iter(&self) -> impl Iterator<Item = &Question> {
        self.list.iter()
    }
}

fn walk(v: &Value, data: Option<&serde_json::Map<String, Value>>, out: &mut Vec<Question>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| walk(i, data, out)),
        Value::Object(o) => {
            let kind = o.get("type").and_then(Value::as_str).and_then(|t| {
                Some(match t {
                    "RadioButtonsGroup" | "Dropdown" | "OptIn" => QuestionKind::Single,
                    "CheckboxGroup" | "ChipsSelector" => QuestionKind::Multi,
                    "TextInput"
                        if o.get("input-type").and_then(Value::as_str) == Some("number") =>
                    {
                        QuestionKind::Number
                    }
                    "TextInput" | "TextArea" | "DatePicker" | "CalendarPicker" => {
                        QuestionKind::Text
                    }
                    _ => return None,
                })
            });
            let name = o.get("name").and_then(Value::as_str);
            if let (Some(kind), Some(name)) = (kind, name) {
                if !out.iter().any(|q| q.name == name) {
                    out.push(Question {
                        name: name.to_string(),
                        label: o.get("label").and_then(Value::as_str).map(str::to_string),
                        kind,
                        options: options(o.get("data-source"), data),
                    });
                }
            }
            for (k, child) in o {
                if k != "data-source" {
                    walk(child, data, out);
                }
            }
        }
        _ => {}
    }
}

/// The `{"id","title"}` pairs of a `data-source`, or of the screen data's `__example__` when
/// the source is `${data.x}`.
fn options(
    source: Option<&Value>,
    data: Option<&serde_json::Map<String, Value>>,
) -> Vec<(String, String)> {
    let list = match source {
        Some(Value::Array(a)) => Some(a),
        Some(Value::String(s)) => s
            .strip_prefix("${data.")
            .and_then(|r| r.strip_suffix('}'))
            .and_then(|key| data?.get(key)?.get("__example__")?.as_array()),
        _ => None,
    };
    let mut seen = HashMap::new();
    list.into_iter()
        .flatten()
        .filter_map(|o| {
            let id = o.get("id")?.as_str()?.to_string();
            let title = o
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or(&id)
                .to_string();
            seen.insert(id.clone(), ()).is_none().then_some((id, title))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_survey_has_its_labels_kinds_and_titles() {
        let q = Questions::parse(include_str!("../../examples/survey_flow.json")).unwrap();
        let names: Vec<&str> = q.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "q1_accueil",
                "q2_delai",
                "q3_qualite",
                "q4_prix",
                "q5_recommandation",
                "commentaire"
            ]
        );
        let q1 = q.get("q1_accueil").unwrap();
        assert_eq!(q1.kind, QuestionKind::Single);
        assert_eq!(
            q1.label.as_deref(),
            Some("Comment avez-vous trouvé l'accueil ?")
        );
        assert_eq!(
            q1.options[0],
            ("5_etoiles".into(), "★★★★★ Excellent".into())
        );
        assert_eq!(q.get("commentaire").unwrap().kind, QuestionKind::Text);
    }

    #[test]
    fn checkboxes_numbers_and_dynamic_sources_are_recognised() {
        let q = Questions::parse(
            r#"{"screens":[{"id":"A","data":{"opts":{"type":"array","__example__":[{"id":"x","title":"Ex"}]}},
              "layout":{"children":[{"type":"Form","name":"f","children":[
                {"type":"CheckboxGroup","name":"c","data-source":[{"id":"a","title":"A"},{"id":"b"}]},
                {"type":"TextInput","name":"n","input-type":"number"},
                {"type":"Dropdown","name":"d","data-source":"${data.opts}"}]}]}}]}"#,
        )
        .unwrap();
        let c = q.get("c").unwrap();
        assert_eq!(c.kind, QuestionKind::Multi);
        assert_eq!(
            c.options,
            [("a".into(), "A".into()), ("b".into(), "b".into())]
        );
        assert_eq!(q.get("n").unwrap().kind, QuestionKind::Number);
        assert_eq!(q.get("d").unwrap().options, [("x".into(), "Ex".into())]);
        assert!(q.get("f").is_none());
        assert!(Questions::parse("{}").is_err());
    }
}
