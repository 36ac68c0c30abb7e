//! The parts of a Flow JSON that `serve` needs: the routing model, each screen's declared
//! data (with its `__example__` values) and the order of the form fields.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// A Flow JSON that cannot drive the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowJsonError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Invalid(String),
}

/// One screen.
#[derive(Debug, Clone, PartialEq)]
pub struct Screen {
    pub id: String,
    pub terminal: bool,
    /// Declared data: name → the neutral value of its declared `type` (`""`, `0`, `false`,
    /// `[]`, `{}`; `Null` when no type is declared). A declaration's `__example__` is only
    /// Meta's preview of the screen, never data sent to a person.
    pub data_defaults: Map<String, Value>,
    /// Names of the form components, in layout order.
    pub fields: Vec<String>,
    /// The `payload` of the screen's `data_exchange` action (key → `${form.x}` or a literal).
    pub submit_payload: Map<String, Value>,
    /// Component name → the declared options' ids (radio buttons, dropdowns, checkboxes).
    pub options: HashMap<String, Vec<String>>,
    /// Component name → `PhotoPicker` or `DocumentPicker` (the components whose answer is a
    /// list of uploaded files).
    pub pickers: HashMap<String, String>,
}

/// A parsed Flow JSON with its routing model.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowJson {
    screens: Vec<Screen>,
    routes: HashMap<String, Vec<String>>,
    entry: usize,
}

impl FlowJson {
    /// Reads a Flow JSON file.
    pub fn load(path: &std::path::Path) -> Result<FlowJson, FlowJsonError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FlowJsonError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        FlowJson::parse(&text)
    }

    /// Parses and checks a Flow JSON: screens with ids, a routing model whose screens exist,
    /// no self-routes, exactly one entry screen (no inbound edge).
    pub fn parse(text: &str) -> Result<FlowJson, FlowJsonError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| FlowJsonError::Json(e.to_string()))?;
        let invalid = |m: String| FlowJsonError::Invalid(m);
        let screens_v = v
            .get("screens")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("no \"screens\" array".into()))?;
        let mut screens = Vec::new();
        for (i, s) in screens_v.iter().enumerate() {
            let id = s
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("screens[{i}] has no \"id\"")))?
                .to_string();
            screens.push(parse_screen(id, s));
        }
        if screens.is_empty() {
            return Err(invalid("\"screens\" is empty".into()));
        }
        let index: HashMap<&str, usize> = screens
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        if index.len() != screens.len() {
            return Err(invalid("two screens have the same id".into()));
        }
        let routing = v
            .get("routing_model")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                invalid("no \"routing_model\" object (an endpoint-powered Flow needs one)".into())
            })?;
        let mut routes: HashMap<String, Vec<String>> = HashMap::new();
        for (from, tos) in routing {
            if !index.contains_key(from.as_str()) {
                return Err(invalid(format!(
                    "routing_model names unknown screen {from:?}"
                )));
            }
            let tos = tos
                .as_array()
                .ok_or_else(|| invalid(format!("routing_model.{from} is not an array")))?;
            let mut list = Vec::new();
            for t in tos {
                let t = t
                    .as_str()
                    .ok_or_else(|| invalid(format!("routing_model.{from} holds a non-string")))?;
                if !index.contains_key(t) {
                    return Err(invalid(format!(
                        "routing_model.{from} routes to unknown screen {t:?}"
                    )));
                }
                if t == from {
                    return Err(invalid(format!("routing_model.{from} routes to itself")));
                }
                list.push(t.to_string());
            }
            routes.insert(from.clone(), list);
        }
        let inbound: std::collections::HashSet<&str> =
            routes.values().flatten().map(String::as_str).collect();
        let entries: Vec<usize> = screens
            .iter()
            .enumerate()
            .filter(|(_, s)| routes.contains_key(&s.id) && !inbound.contains(s.id.as_str()))
            .map(|(i, _)| i)
            .collect();
        let entry = match entries.as_slice() {
            [one] => *one,
            [] => {
                return Err(invalid(
                    "routing_model has no entry screen (every screen has an inbound route)".into(),
                ))
            }
            _ => {
                // Several roots: the first one listed in `screens` is the entry, as in the Builder.
                entries[0]
            }
        };
        Ok(FlowJson {
            screens,
            routes,
            entry,
        })
    }

    /// The screen the Flow opens on (answer to `INIT`).
    pub fn entry_screen(&self) -> &Screen {
        &self.screens[self.entry]
    }

    /// A screen by id.
    pub fn screen(&self, id: &str) -> Option<&Screen> {
        self.screens.iter().find(|s| s.id == id)
    }

    /// Every screen, in file order.
    pub fn screens(&self) -> &[Screen] {
        &self.screens
    }

    /// Where a submit from `current` leads: `Ok(None)` when `current` has no successor (the
    /// Flow completes). With several successors, a submitted `next_screen` value naming one of
    /// them chooses; otherwise the first listed is taken.
    pub fn next_screen(
        &self,
        current: &str,
        submitted: &Map<String, Value>,
    ) -> Result<Option<&Screen>, FlowJsonError> {
        let succ = self.routes.get(current).ok_or_else(|| {
            FlowJsonError::Invalid(format!("screen {current:?} is not in the routing model"))
        })?;
        let chosen = submitted
            .get("next_screen")
            .and_then(Value::as_str)
            .filter(|n| succ.iter().any(|s| s == n))
            .or_else(|| succ.first().map(String::as_str));
        Ok(chosen.and_then(|id| self.screen(id)))
    }

    /// The screen to show when back is pressed on `current`: the screen that routes to it.
    pub fn previous_screen(&self, current: &str) -> Option<&Screen> {
        self.screens.iter().find(|s| {
            self.routes
                .get(&s.id)
                .is_some_and(|tos| tos.iter().any(|t| t == current))
        })
    }

    /// All form field names, screen by screen in routing order then file order, without
    /// repeats: the column order of an export.
    pub fn field_order(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut push = |s: &Screen| {
            for f in s.fields.iter().chain(s.submit_payload.keys()) {
                if !out.contains(f) {
                    out.push(f.clone());
                }
            }
        };
        let mut seen = std::collections::HashSet::new();
        let mut cur = Some(self.entry_screen());
        while let Some(s) = cur.filter(|s| seen.insert(s.id.clone())) {
            push(s);
            cur = self
                .routes
                .get(&s.id)
                .and_then(|t| t.first())
                .and_then(|id| self.screen(id));
        }
        for s in &self.screens {
            push(s);
        }
        out
    }
}

impl Screen {
    /// The data to send with this screen: the values of `personal` for the keys this screen
    /// declares, and for a key the recipient has no value for, the neutral value of its type —
    /// never the declaration's `__example__` (a customer without a name must not be greeted
    /// with the example's name).
    pub fn data_for(&self, personal: Option<&Map<String, Value>>) -> Map<String, Value> {
        let mut data = Map::new();
        for (k, neutral) in &self.data_defaults {
            let v = personal
                .and_then(|p| p.get(k))
                .cloned()
                .unwrap_or_else(|| neutral.clone());
            if !v.is_null() {
                data.insert(k.clone(), v);
            }
        }
        data
    }
}

/// The neutral value of a declared data type: what a screen gets for a field the recipient has
/// no value for.
fn neutral_of(kind: Option<&str>) -> Value {
    match kind {
        Some("string") => Value::String(String::new()),
        Some("number") | Some("integer") => Value::from(0),
        Some("boolean") => Value::Bool(false),
        Some("array") => Value::Array(Vec::new()),
        Some("object") => Value::Object(Map::new()),
        _ => Value::Null,
    }
}

fn parse_screen(id: String, s: &Value) -> Screen {
    let mut data_defaults = Map::new();
    // The examples only tell which options a dynamic list may hold (what a simulated person
    // picks from); they are never sent.
    let mut examples = Map::new();
    if let Some(decl) = s.get("data").and_then(Value::as_object) {
        for (k, d) in decl {
            data_defaults.insert(k.clone(), neutral_of(d.get("type").and_then(Value::as_str)));
            if let Some(e) = d.get("__example__") {
                examples.insert(k.clone(), e.clone());
            }
        }
    }
    let mut screen = Screen {
        id,
        terminal: s.get("terminal").and_then(Value::as_bool).unwrap_or(false),
        data_defaults,
        fields: Vec::new(),
        submit_payload: Map::new(),
        options: HashMap::new(),
        pickers: HashMap::new(),
    };
    if let Some(layout) = s.get("layout") {
        walk(layout, &examples, &mut screen);
    }
    screen
}

fn walk(node: &Value, examples: &Map<String, Value>, screen: &mut Screen) {
    if let Some(name) = node.get("name").and_then(Value::as_str) {
        if node
            .get("type")
            .is_some_and(|t| t != "Footer" && t != "EmbeddedLink")
        {
            screen.fields.push(name.to_string());
            let source = node.get("data-source");
            let opts = match source {
                Some(Value::Array(items)) => option_ids(items),
                Some(Value::String(r)) => r
                    .strip_prefix("${data.")
                    .and_then(|r| r.strip_suffix('}'))
                    .and_then(|k| examples.get(k))
                    .and_then(Value::as_array)
                    .map(|a| option_ids(a))
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            if !opts.is_empty() {
                screen.options.insert(name.to_string(), opts);
            }
            if let Some(kind @ ("PhotoPicker" | "DocumentPicker")) =
                node.get("type").and_then(Value::as_str)
            {
                screen.pickers.insert(name.to_string(), kind.to_string());
            }
        }
    }
    if let Some(action) = node.get("on-click-action") {
        if action.get("name").and_then(Value::as_str) == Some("data_exchange") {
            if let Some(p) = action.get("payload").and_then(Value::as_object) {
                screen.submit_payload = p.clone();
            }
        }
    }
    if let Some(children) = node.get("children").and_then(Value::as_array) {
        for c in children {
            walk(c, examples, screen);
        }
    }
}

fn option_ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i.get("id").and_then(Value::as_str).map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn survey() -> FlowJson {
        FlowJson::parse(include_str!("../examples/survey_flow.json")).unwrap()
    }

    #[test]
    fn survey_routes_three_screens_to_completion() {
        let f = survey();
        assert_eq!(f.entry_screen().id, "ACCUEIL_SERVICE");
        let empty = Map::new();
        assert_eq!(
            f.next_screen("ACCUEIL_SERVICE", &empty)
                .unwrap()
                .unwrap()
                .id,
            "QUALITE_PRIX"
        );
        assert_eq!(
            f.next_screen("QUALITE_PRIX", &empty).unwrap().unwrap().id,
            "RECOMMANDATION"
        );
        assert!(f.next_screen("RECOMMANDATION", &empty).unwrap().is_none());
        assert!(f.next_screen("NOPE", &empty).is_err());
        assert_eq!(
            f.previous_screen("QUALITE_PRIX").unwrap().id,
            "ACCUEIL_SERVICE"
        );
        assert!(f.screen("RECOMMANDATION").unwrap().terminal);
    }

    #[test]
    fn field_order_follows_the_flow() {
        assert_eq!(
            survey().field_order(),
            [
                "q1_accueil",
                "q2_delai",
                "q3_qualite",
                "q4_prix",
                "q5_recommandation",
                "commentaire"
            ]
        );
    }

    #[test]
    fn options_and_personal_data() {
        let f = survey();
        let s = f.entry_screen();
        assert_eq!(s.options["q1_accueil"][0], "5_etoiles");
        let personal = serde_json::json!({"customer_name": "Fatima", "other": 1});
        let data = s.data_for(personal.as_object());
        assert_eq!(data["customer_name"], "Fatima");
        // Only what the screen declares: the name, not the recipient's other fields.
        assert_eq!(data.len(), 1, "{data:?}");
    }

    #[test]
    fn an_example_is_never_sent_as_data() {
        let flow = r#"{"version":"7.0","data_api_version":"3.0","routing_model":{"A":[]},"screens":[
            {"id":"A","terminal":true,"data":{
                "customer_name":{"type":"string","__example__":"Ahmed"},
                "visits":{"type":"number","__example__":7},
                "vip":{"type":"boolean","__example__":true},
                "cities":{"type":"array","items":{"type":"object"},"__example__":[{"id":"rabat","title":"Rabat"}]}},
             "layout":{"type":"SingleColumnLayout","children":[]}}]}"#;
        let f = FlowJson::parse(flow).unwrap();
        let data = f.entry_screen().data_for(None);
        assert_eq!(data["customer_name"], "", "not the example's Ahmed");
        assert_eq!(data["visits"], 0);
        assert_eq!(data["vip"], false);
        assert_eq!(data["cities"], serde_json::json!([]));
        let personal = serde_json::json!({"customer_name": "Salma"});
        assert_eq!(
            f.entry_screen().data_for(personal.as_object())["customer_name"],
            "Salma"
        );
    }

    #[test]
    fn broken_routing_is_refused() {
        let bad = r#"{"screens":[{"id":"A"},{"id":"B"}],"routing_model":{"A":["C"]}}"#;
        assert!(FlowJson::parse(bad)
            .unwrap_err()
            .to_string()
            .contains("\"C\""));
        let selfroute = r#"{"screens":[{"id":"A"}],"routing_model":{"A":["A"]}}"#;
        assert!(FlowJson::parse(selfroute).is_err());
        assert!(FlowJson::parse(r#"{"screens":[{"id":"A"}]}"#).is_err());
        assert!(FlowJson::parse("nope").is_err());
    }

    #[test]
    fn branching_follows_next_screen_when_it_names_a_successor() {
        let f = FlowJson::parse(
            r#"{"screens":[{"id":"A"},{"id":"B"},{"id":"C"}],"routing_model":{"A":["B","C"],"B":[],"C":[]}}"#,
        )
        .unwrap();
        let pick_c = serde_json::json!({"next_screen": "C"});
        assert_eq!(
            f.next_screen("A", pick_c.as_object().unwrap())
                .unwrap()
                .unwrap()
                .id,
            "C"
        );
        assert_eq!(f.next_screen("A", &Map::new()).unwrap().unwrap().id, "B");
    }
}
