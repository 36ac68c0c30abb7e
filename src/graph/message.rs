//! The `/messages` request bodies, built exactly as the protocol reference (sections a and b).

use serde_json::{json, Map, Value};

use super::templates::{Slot, TemplateParam};
use crate::phone::Phone;

/// How the Flow opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowAction {
    /// The client calls the data endpoint with `INIT`; `serve` answers the first screen.
    DataExchange,
    /// The client opens `screen` directly, with the recipient's data given at send time.
    Navigate { screen: String },
}

/// A template with a Flow button (works outside the 24-hour window).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    pub language: String,
    /// Index of the Flow button among the template's buttons.
    pub button_index: u32,
    /// Put the customer name in the template body's `{{1}}`.
    pub name_param: bool,
    /// Parameters filled from the recipient's columns (`--template-param`).
    pub params: Vec<TemplateParam>,
    /// The account owning the template (`WABA_ID`): where `send` and `bulk` read it to check
    /// a send before it leaves.
    pub waba_id: Option<String>,
}

/// Everything about the message that is the same for every recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageSettings {
    pub flow_id: String,
    pub action: FlowAction,
    pub cta: String,
    /// Message text; `{name}` is replaced by the customer name.
    pub body: String,
    pub template: Option<Template>,
}

/// The per-recipient part of a message.
#[derive(Clone, Copy, Debug)]
pub struct Recipient<'a> {
    pub phone: &'a Phone,
    pub flow_token: &'a str,
    pub customer_name: Option<&'a str>,
    /// Initial Flow data (CSV columns, `--data`); sent only when non-empty.
    pub data: Option<&'a Map<String, Value>>,
}

fn body_text(template: &str, name: Option<&str>) -> String {
    let name = name.map(str::trim).unwrap_or("");
    let text = template.replace("{name}", name);
    // "Bonjour {name}, ..." without a name would read "Bonjour , ...".
    text.replace(" ,", ",")
        .replace("  ", " ")
        .trim()
        .to_string()
}

/// Builds the JSON body of `POST /{phone_number_id}/messages` for one recipient.
pub fn flow_message(settings: &MessageSettings, r: &Recipient<'_>) -> Value {
    let data = r.data.filter(|m| !m.is_empty());
    match &settings.template {
        None => interactive(settings, r, data),
        Some(t) => template(t, r, data),
    }
}

fn interactive(s: &MessageSettings, r: &Recipient<'_>, data: Option<&Map<String, Value>>) -> Value {
    let mut parameters = json!({
        "flow_message_version": "3",
        "flow_token": r.flow_token,
        "flow_id": s.flow_id,
        "flow_cta": s.cta,
    });
    match &s.action {
        FlowAction::DataExchange => {
            parameters["flow_action"] = json!("data_exchange");
        }
        FlowAction::Navigate { screen } => {
            parameters["flow_action"] = json!("navigate");
            let mut payload = json!({ "screen": screen });
            if let Some(d) = data {
                payload["data"] = Value::Object(d.clone());
            }
            parameters["flow_action_payload"] = payload;
        }
    }
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": r.phone.wa_digits(),
        // Echoed in the message's status webhooks: a status then names its token even when
        // the send's own answer was lost.
        "biz_opaque_callback_data": r.flow_token,
        "type": "interactive",
        "interactive": {
            "type": "flow",
            "body": { "text": body_text(&s.body, r.customer_name) },
            "action": { "name": "flow", "parameters": parameters }
        }
    })
}

fn template(t: &Template, r: &Recipient<'_>, data: Option<&Map<String, Value>>) -> Value {
    let mut action = json!({ "flow_token": r.flow_token });
    if let Some(d) = data {
        action["flow_action_data"] = Value::Object(d.clone());
    }
    let mut components = Vec::new();
    let mut header: Vec<(u32, Value)> = Vec::new();
    let mut body: Vec<(u32, Value)> = Vec::new();
    for p in &t.params {
        let value = param_value(&p.column, r);
        match p.slot {
            Slot::Body(n) => body.push((n, json!({ "type": "text", "text": text_or_dash(value) }))),
            Slot::HeaderText(n) => {
                header.push((n, json!({ "type": "text", "text": text_or_dash(value) })))
            }
            Slot::HeaderMedia(kind) => {
                let word = kind.word();
                let mut media = json!({ "type": word });
                media[word] = json!({ "link": value.unwrap_or_default() });
                header.push((0, media));
            }
        }
    }
    if t.name_param {
        let name = r
            .customer_name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or("-");
        body.push((1, json!({ "type": "text", "text": name })));
    }
    header.sort_by_key(|(n, _)| *n);
    body.sort_by_key(|(n, _)| *n);
    if !header.is_empty() {
        let parameters: Vec<Value> = header.into_iter().map(|(_, v)| v).collect();
        components.push(json!({ "type": "header", "parameters": parameters }));
    }
    if !body.is_empty() {
        let parameters: Vec<Value> = body.into_iter().map(|(_, v)| v).collect();
        components.push(json!({ "type": "body", "parameters": parameters }));
    }
    components.push(json!({
        "type": "button",
        "sub_type": "flow",
        "index": t.button_index.to_string(),
        "parameters": [ { "type": "action", "action": action } ]
    }));
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": r.phone.wa_digits(),
        "biz_opaque_callback_data": r.flow_token,
        "type": "template",
        "template": {
            "name": t.name,
            "language": { "code": t.language },
            "components": components
        }
    })
}

impl Template {
    /// Tells the parameters which CSV header is the name column (`--name-column`): a
    /// parameter naming it takes the customer name, which is not Flow data.
    pub fn name_column_is(&mut self, header: Option<&str>) {
        let Some(header) = header else { return };
        for p in &mut self.params {
            if p.column.eq_ignore_ascii_case(header.trim()) {
                p.column = NAME_COLUMNS[0].to_string();
            }
        }
    }
}

/// The headers `bulk` reads the customer name from (its name column is not Flow data).
const NAME_COLUMNS: [&str; 3] = ["customer_name", "name", "customername"];

/// The value of `column` for this recipient: its data (a CSV column or a `--data` key,
/// matched without regard to case), else the customer name for a name column. A number or
/// a boolean is written as JSON writes it.
fn param_value(column: &str, r: &Recipient<'_>) -> Option<String> {
    let from_data = r.data.and_then(|d| {
        d.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(column))
            .map(|(_, v)| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
    });
    from_data
        .or_else(|| {
            NAME_COLUMNS
                .iter()
                .any(|n| n.eq_ignore_ascii_case(column))
                .then(|| r.customer_name.map(str::to_string))
                .flatten()
        })
        .filter(|v| !v.trim().is_empty())
}

/// A text parameter: Meta refuses an empty one, so a missing value is sent as `-` (as the
/// name of a customer without one).
fn text_or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(action: FlowAction, template: Option<Template>) -> MessageSettings {
        MessageSettings {
            flow_id: "1234567890123456".into(),
            action,
            cta: "Répondre".into(),
            body: "Bonjour {name}, votre avis compte.".into(),
            template,
        }
    }

    fn phone() -> Phone {
        Phone::parse("+33612345678", None).unwrap()
    }

    #[test]
    fn interactive_data_exchange_has_no_payload() {
        let p = phone();
        let r = Recipient {
            phone: &p,
            flow_token: "flow_x",
            customer_name: Some("Renée"),
            data: None,
        };
        let m = flow_message(&settings(FlowAction::DataExchange, None), &r);
        assert_eq!(m["to"], "33612345678");
        assert_eq!(m["type"], "interactive");
        assert_eq!(
            m["interactive"]["body"]["text"],
            "Bonjour Renée, votre avis compte."
        );
        let params = &m["interactive"]["action"]["parameters"];
        assert_eq!(params["flow_message_version"], "3");
        assert_eq!(params["flow_token"], "flow_x");
        assert_eq!(params["flow_action"], "data_exchange");
        assert!(params.get("flow_action_payload").is_none());
    }

    #[test]
    fn interactive_navigate_carries_screen_and_data() {
        let p = phone();
        let data = json!({"title": "Votre avis"}).as_object().unwrap().clone();
        let r = Recipient {
            phone: &p,
            flow_token: "flow_x",
            customer_name: None,
            data: Some(&data),
        };
        let m = flow_message(
            &settings(
                FlowAction::Navigate {
                    screen: "Q1".into(),
                },
                None,
            ),
            &r,
        );
        let params = &m["interactive"]["action"]["parameters"];
        assert_eq!(params["flow_action"], "navigate");
        assert_eq!(
            params["flow_action_payload"],
            json!({"screen": "Q1", "data": {"title": "Votre avis"}})
        );
        assert_eq!(
            m["interactive"]["body"]["text"],
            "Bonjour, votre avis compte."
        );
    }

    #[test]
    fn empty_data_is_never_sent() {
        let p = phone();
        let data = Map::new();
        let r = Recipient {
            phone: &p,
            flow_token: "flow_x",
            customer_name: None,
            data: Some(&data),
        };
        let m = flow_message(
            &settings(
                FlowAction::Navigate {
                    screen: "Q1".into(),
                },
                None,
            ),
            &r,
        );
        assert!(
            m["interactive"]["action"]["parameters"]["flow_action_payload"]
                .get("data")
                .is_none()
        );
    }

    #[test]
    fn template_has_flow_button_with_token_and_data() {
        let p = phone();
        let data = json!({"city": "Rabat"}).as_object().unwrap().clone();
        let t = Template {
            name: "enquete".into(),
            language: "fr".into(),
            button_index: 0,
            name_param: true,
            params: Vec::new(),
            waba_id: None,
        };
        let r = Recipient {
            phone: &p,
            flow_token: "flow_x",
            customer_name: Some("Camille"),
            data: Some(&data),
        };
        let m = flow_message(&settings(FlowAction::DataExchange, Some(t)), &r);
        assert_eq!(m["type"], "template");
        assert_eq!(m["template"]["language"]["code"], "fr");
        let comps = m["template"]["components"].as_array().unwrap();
        assert_eq!(comps[0]["parameters"][0]["text"], "Camille");
        assert_eq!(comps[1]["sub_type"], "flow");
        assert_eq!(comps[1]["index"], "0");
        assert_eq!(
            comps[1]["parameters"][0]["action"],
            json!({"flow_token": "flow_x", "flow_action_data": {"city": "Rabat"}})
        );
    }

    #[test]
    fn template_params_come_from_the_recipient_columns() {
        let p = phone();
        let data = json!({"Ville": "Rabat", "photo_url": "https://cdn.example/p.jpg", "visits": 3})
            .as_object()
            .unwrap()
            .clone();
        let param = |s: &str| s.parse::<TemplateParam>().unwrap();
        let t = Template {
            name: "enquete".into(),
            language: "fr".into(),
            button_index: 1,
            name_param: false,
            params: vec![
                param("body.3=missing"),
                param("body.2=ville"),
                param("header.image=photo_url"),
                param("body.1=customer_name"),
                param("body.4=visits"),
            ],
            waba_id: None,
        };
        let r = Recipient {
            phone: &p,
            flow_token: "flow_x",
            customer_name: Some("Camille"),
            data: Some(&data),
        };
        let m = flow_message(&settings(FlowAction::DataExchange, Some(t)), &r);
        let comps = m["template"]["components"].as_array().unwrap();
        assert_eq!(comps[0]["type"], "header");
        assert_eq!(
            comps[0]["parameters"],
            json!([{"type": "image", "image": {"link": "https://cdn.example/p.jpg"}}])
        );
        assert_eq!(comps[1]["type"], "body");
        let texts: Vec<&str> = comps[1]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            texts,
            ["Camille", "Rabat", "-", "3"],
            "in slot order; a column is matched without case; missing is -"
        );
        assert_eq!(comps[2]["sub_type"], "flow");
        assert_eq!(comps[2]["index"], "1");
    }
}
