//! The parts of a Flow JSON that `serve` needs: the routing model, each screen's declared
//! data (with its `__example__` values) and the order of the form fields — and the rules of
//! built-in routing, what `serve --flow-json` answers without `--forward`:
//!
//! - `INIT` (and `BACK` to the first screen) → the entry screen of the `routing_model`.
//! - A `data_exchange` is a **refresh** when its payload carries a `trigger` field, or exactly
//!   the keys of one of the screen's `on-select-action` payloads: the same screen is answered
//!   with its data refreshed (a dependent list from `--flow-data`, see [`DataSources`]).
//! - Otherwise it is the screen's **submit**. A payload key bound to a `required` component
//!   that is missing or empty re-shows the same screen with `data.error_message`. Then one
//!   successor → that screen; none → the Flow completes (`SUCCESS`); several → the payload's
//!   `next_screen` must name one of them (a screen with several successors and no
//!   `next_screen` in its payload is refused at start: such logic belongs to `--forward`).
//!
//! Meta: the endpoint answers any `data_exchange` with the screen to show and its data, the
//! same screen included, with an optional `error_message` shown on it; the routing model lists
//! the screens each screen may lead to
//! (<https://developers.facebook.com/docs/whatsapp/flows/guides/implementingyourflowendpoint/>,
//! <https://developers.facebook.com/docs/whatsapp/flows/reference/flowjson/>). A component's
//! `on-select-action` may be a `data_exchange`, which calls the endpoint from the same screen.

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
    /// Whether the screen's submit (its `on-click-action`) calls the endpoint (`data_exchange`);
    /// a `navigate` or `complete` submit never reaches `serve`.
    pub submits_to_endpoint: bool,
    /// Form components marked `"required": true`.
    pub required: Vec<String>,
    /// Component name → its `type` (`TextInput`, `Dropdown`, `PhotoPicker`, …).
    pub kinds: HashMap<String, String>,
    /// Component name → the screen data key its options come from (`"${data.branches}"`):
    /// a list the endpoint fills, not the Flow JSON.
    pub sources: HashMap<String, String>,
    /// The components whose `on-select-action` is a `data_exchange`: selecting a value asks
    /// the endpoint to refresh this same screen (a dependent dropdown).
    pub refreshes: Vec<Refresh>,
    /// Component name → `PhotoPicker` or `DocumentPicker` (the components whose answer is a
    /// list of uploaded files).
    pub pickers: HashMap<String, String>,
}

/// A component's `on-select-action` of type `data_exchange`.
#[derive(Debug, Clone, PartialEq)]
pub struct Refresh {
    /// The component whose selection triggers the refresh.
    pub field: String,
    /// The action's payload (key → `${form.x}` or a literal).
    pub payload: Map<String, Value>,
}

/// What a `data_exchange` from a screen is, under built-in routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// A selection asked for the same screen with refreshed data (an `on-select-action`).
    Refresh,
    /// The screen's submit: validate, then route to the next screen or complete.
    Submit,
}

/// A parsed Flow JSON with its routing model.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowJson {
    screens: Vec<Screen>,
    routes: HashMap<String, Vec<String>>,
    entry: usize,
    sources: DataSources,
}

/// The submit payload field naming the next screen when a screen has several successors.
pub const NEXT_SCREEN: &str = "next_screen";

/// A payload field marking a `data_exchange` as a refresh of the same screen.
pub const TRIGGER: &str = "trigger";

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
            sources: DataSources::default(),
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

    /// The screens `current` may route to, in the order the routing model lists them.
    pub fn successors(&self, current: &str) -> &[String] {
        self.routes.get(current).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Checks that built-in routing can drive this Flow: every screen that submits to the
    /// endpoint and has several successors says which one comes next with a `next_screen`
    /// field in its submit payload. `Err` is a sentence naming the screen and pointing to
    /// `--forward`, for a Flow whose branching needs the business's own logic.
    pub fn check_builtin_routing(&self) -> Result<(), FlowJsonError> {
        for s in &self.screens {
            let succ = self.successors(&s.id);
            if s.submits_to_endpoint
                && succ.len() > 1
                && !s.submit_payload.contains_key(NEXT_SCREEN)
            {
                return Err(FlowJsonError::Invalid(format!(
                    "screen {:?} may lead to {} but its data_exchange payload has no \"{NEXT_SCREEN}\" \
                     field naming the next screen, so built-in routing cannot choose; add \
                     \"{NEXT_SCREEN}\": \"${{form.…}}\" (a choice whose option ids are screen ids) \
                     to the payload, or decide with your own handler: serve --forward URL",
                    s.id,
                    succ.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Whether a `data_exchange` from `screen` with `data` refreshes the screen or submits it.
    /// A refresh carries a `trigger` field, or exactly the keys of one of the screen's
    /// `on-select-action` payloads (and not those of its submit payload).
    pub fn exchange_kind(&self, screen: &Screen, data: &Map<String, Value>) -> Exchange {
        if data.contains_key(TRIGGER) {
            return Exchange::Refresh;
        }
        fn keys(m: &Map<String, Value>) -> Vec<&String> {
            let mut k: Vec<&String> = m.keys().collect();
            k.sort();
            k
        }
        let sent = keys(data);
        let is_select = screen
            .refreshes
            .iter()
            .any(|r| !r.payload.is_empty() && keys(&r.payload) == sent);
        if is_select && keys(&screen.submit_payload) != sent {
            Exchange::Refresh
        } else {
            Exchange::Submit
        }
    }

    /// The data sources of `--flow-data`, which fill the screens' dynamic lists.
    pub fn with_data_sources(mut self, sources: DataSources) -> FlowJson {
        self.sources = sources;
        self
    }

    /// The data to show `screen` with: the recipient's values for the declared keys (see
    /// [`Screen::data_for`]), and the declared lists `--flow-data` provides, a dependent list
    /// chosen by the value `selections` holds for its `by` field.
    pub fn screen_data(
        &self,
        screen: &Screen,
        personal: Option<&Map<String, Value>>,
        selections: &Map<String, Value>,
    ) -> Map<String, Value> {
        let mut data = screen.data_for(personal);
        for key in screen.data_defaults.keys() {
            if let Some(list) = self.sources.list(key, selections) {
                data.insert(key.clone(), list);
            }
        }
        data
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

impl Screen {
    /// The submit payload keys bound to a required component (`${form.x}` with `x` marked
    /// `required`) whose value in `data` is missing or empty: what a submit lacks.
    pub fn missing_required(&self, data: &Map<String, Value>) -> Vec<String> {
        self.submit_payload
            .iter()
            .filter(|(_, bound)| {
                bound
                    .as_str()
                    .and_then(form_ref)
                    .is_some_and(|f| self.required.iter().any(|r| r == f))
            })
            .filter(|(key, _)| match data.get(key.as_str()) {
                None | Some(Value::Null) | Some(Value::Bool(false)) => true,
                Some(Value::String(s)) => s.trim().is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                Some(_) => false,
            })
            .map(|(key, _)| key.clone())
            .collect()
    }
}

/// The lists `serve` fills a screen's dynamic data with under built-in routing, read from
/// `--flow-data FILE` (a Flow JSON's `__example__` is never data). One entry per screen data
/// key, either a fixed list or a list chosen by another field's value:
///
/// ```json
/// { "cities":   [{"id": "rabat", "title": "Rabat"}],
///   "branches": {"by": "city", "options": {"rabat": [{"id": "agdal", "title": "Agdal"}]}} }
/// ```
///
/// A screen declaring `branches` gets the list of the `city` selected so far (in the refresh
/// request, else in the answers of earlier screens), `[]` while none is selected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataSources {
    lists: Map<String, Value>,
}

impl DataSources {
    /// Reads and checks a data sources file.
    pub fn load(path: &std::path::Path) -> Result<DataSources, FlowJsonError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FlowJsonError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        DataSources::parse(&text)
    }

    /// Parses a data sources document; `Err` names the first unusable entry.
    pub fn parse(text: &str) -> Result<DataSources, FlowJsonError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| FlowJsonError::Json(e.to_string()))?;
        let Value::Object(lists) = v else {
            return Err(FlowJsonError::Invalid(
                "expected an object of data key → list".into(),
            ));
        };
        for (key, entry) in &lists {
            let ok = match entry {
                Value::Array(_) => true,
                Value::Object(o) => {
                    o.get("by").is_some_and(Value::is_string)
                        && o.get("options").is_some_and(|opts| {
                            opts.as_object()
                                .is_some_and(|m| m.values().all(Value::is_array))
                        })
                }
                _ => false,
            };
            if !ok {
                return Err(FlowJsonError::Invalid(format!(
                    "{key:?}: expected a list, or {{\"by\": FIELD, \"options\": {{VALUE: list}}}}"
                )));
            }
        }
        Ok(DataSources { lists })
    }

    /// The list for data key `key`, given the values selected so far; `None` when this file
    /// does not provide `key`.
    pub fn list(&self, key: &str, selections: &Map<String, Value>) -> Option<Value> {
        match self.lists.get(key)? {
            Value::Array(a) => Some(Value::Array(a.clone())),
            Value::Object(o) => {
                let by = o.get("by").and_then(Value::as_str)?;
                let chosen = selections.get(by).and_then(Value::as_str);
                Some(
                    chosen
                        .and_then(|c| o.get("options").and_then(|m| m.get(c)))
                        .cloned()
                        .unwrap_or(Value::Array(Vec::new())),
                )
            }
            _ => None,
        }
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
        submits_to_endpoint: false,
        required: Vec::new(),
        kinds: HashMap::new(),
        sources: HashMap::new(),
        refreshes: Vec::new(),
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
            if let Some(kind) = node.get("type").and_then(Value::as_str) {
                screen.kinds.insert(name.to_string(), kind.to_string());
            }
            if node.get("required").and_then(Value::as_bool) == Some(true) {
                screen.required.push(name.to_string());
            }
            if let Some(action) = node
                .get("on-select-action")
                .filter(|a| a.get("name").and_then(Value::as_str) == Some("data_exchange"))
            {
                screen.refreshes.push(Refresh {
                    field: name.to_string(),
                    payload: action
                        .get("payload")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default(),
                });
            }
            let source = node.get("data-source");
            if let Some(key) = source.and_then(Value::as_str).and_then(data_ref) {
                screen.sources.insert(name.to_string(), key.to_string());
            }
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
            screen.submits_to_endpoint = true;
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

/// `"${data.key}"` → `key`.
fn data_ref(r: &str) -> Option<&str> {
    r.strip_prefix("${data.").and_then(|r| r.strip_suffix('}'))
}

/// `"${form.field}"` → `field`.
pub fn form_ref(r: &str) -> Option<&str> {
    r.strip_prefix("${form.").and_then(|r| r.strip_suffix('}'))
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

    fn appointments() -> FlowJson {
        let sources =
            DataSources::parse(include_str!("../examples/appointment_flow.data.json")).unwrap();
        FlowJson::parse(include_str!("../examples/appointment_flow.json"))
            .unwrap()
            .with_data_sources(sources)
    }

    fn obj(v: serde_json::Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_selection_is_a_refresh_and_the_footer_a_submit() {
        let f = appointments();
        let booking = f.screen("BOOKING").unwrap();
        assert_eq!(booking.refreshes.len(), 1);
        assert_eq!(booking.refreshes[0].field, "city");
        assert_eq!(booking.sources["branch"], "branches");
        let trigger = obj(serde_json::json!({"trigger": "city_selected", "city": "fes"}));
        assert_eq!(f.exchange_kind(booking, &trigger), Exchange::Refresh);
        let submit =
            obj(serde_json::json!({"city": "fes", "branch": "x", "next_screen": "CONFIRM"}));
        assert_eq!(f.exchange_kind(booking, &submit), Exchange::Submit);
        // Without a trigger field, the keys of an on-select payload still say "refresh".
        let flow = r#"{"routing_model":{"A":[]},"screens":[{"id":"A","terminal":true,"layout":{"children":[
            {"type":"Dropdown","name":"region","on-select-action":{"name":"data_exchange","payload":{"region":"${form.region}"}}},
            {"type":"Dropdown","name":"city"},
            {"type":"Footer","on-click-action":{"name":"data_exchange","payload":{"region":"${form.region}","city":"${form.city}"}}}]}}]}"#;
        let f = FlowJson::parse(flow).unwrap();
        let a = f.screen("A").unwrap();
        let select = obj(serde_json::json!({"region": "north"}));
        assert_eq!(f.exchange_kind(a, &select), Exchange::Refresh);
        let submit = obj(serde_json::json!({"region": "north", "city": "tanger"}));
        assert_eq!(f.exchange_kind(a, &submit), Exchange::Submit);
    }

    #[test]
    fn missing_required_answers_are_named() {
        let f = appointments();
        let booking = f.screen("BOOKING").unwrap();
        let partial = obj(serde_json::json!({"city": "fes", "branch": " "}));
        assert_eq!(
            booking.missing_required(&partial),
            ["branch", "next_screen"]
        );
        let full = obj(
            serde_json::json!({"city": "fes", "branch": "fes_medina", "next_screen": "CONFIRM"}),
        );
        assert!(booking.missing_required(&full).is_empty());
        let confirm = f.screen("CONFIRM").unwrap();
        let refused = obj(serde_json::json!({"slot": "morning", "consent": false}));
        assert_eq!(confirm.missing_required(&refused), ["consent"]);
        // An optional picker may be left out.
        let symptoms = f.screen("SYMPTOMS").unwrap();
        assert!(symptoms
            .missing_required(&obj(serde_json::json!({"symptoms": "sore"})))
            .is_empty());
        assert_eq!(symptoms.kinds["photo"], "PhotoPicker");
    }

    #[test]
    fn dependent_lists_follow_the_selection_and_never_the_example() {
        let f = appointments();
        let booking = f.screen("BOOKING").unwrap();
        let none = f.screen_data(booking, None, &Map::new());
        assert_eq!(none["branches"], serde_json::json!([]));
        assert_eq!(none["cities"].as_array().unwrap().len(), 3);
        let fes = f.screen_data(booking, None, &obj(serde_json::json!({"city": "fes"})));
        assert_eq!(fes["branches"][0]["id"], "fes_medina");
        let unknown = f.screen_data(booking, None, &obj(serde_json::json!({"city": "paris"})));
        assert_eq!(unknown["branches"], serde_json::json!([]));
        assert!(DataSources::parse(r#"{"x": 3}"#)
            .unwrap_err()
            .to_string()
            .contains("\"x\""));
        assert!(DataSources::parse(r#"{"x": {"by": "y", "options": {"a": 1}}}"#).is_err());
    }

    #[test]
    fn branching_needs_next_screen_in_the_payload() {
        assert!(appointments().check_builtin_routing().is_ok());
        assert!(survey().check_builtin_routing().is_ok());
        let flow = r#"{"routing_model":{"A":["B","C"]},"screens":[{"id":"A","layout":{"children":[
            {"type":"Footer","on-click-action":{"name":"data_exchange","payload":{"x":"1"}}}]}},
            {"id":"B"},{"id":"C"}]}"#;
        let err = FlowJson::parse(flow)
            .unwrap()
            .check_builtin_routing()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"A\"") && err.contains("B, C") && err.contains("--forward"),
            "{err}"
        );
        // A screen that navigates on the client never asks the endpoint: nothing to choose.
        let client_side = flow.replace("data_exchange", "navigate");
        assert!(FlowJson::parse(&client_side)
            .unwrap()
            .check_builtin_routing()
            .is_ok());
    }
}
