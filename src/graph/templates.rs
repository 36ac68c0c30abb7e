//! Message templates: list, read, create and delete the account's templates
//! (`/{WABA-ID}/message_templates`), and what a template expects of a send — how many body
//! parameters, which header, where its Flow button is — so that a send is checked before it
//! leaves. One request each, no policy.
//!
//! Meta's references:
//! - the template API (`GET|POST|DELETE /{WABA-ID}/message_templates`, `name`, `language`,
//!   `status`, `category`, `quality_score`, `components`):
//!   <https://developers.facebook.com/documentation/business-messaging/whatsapp/reference/whatsapp-business-account/message-template-api>
//! - a template with a FLOW button (`flow_id` or `flow_name`, `navigate_screen`,
//!   `flow_action`): <https://developers.facebook.com/documentation/business-messaging/whatsapp/flows/guides/flows-templates>
//! - a send's `header`/`body` parameters (`text`, `image.link`, …) and the errors of a
//!   mismatch (132000 parameter count, 132001 no such template, 132012 parameter format):
//!   <https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/>

use std::fmt;
use std::str::FromStr;

use serde_json::{json, Value};

use super::{GraphClient, GraphError};

/// The template fields `templates list` and the pre-send check read.
pub const TEMPLATE_FIELDS: &str = "id,name,language,status,category,quality_score,components";

/// The kind of media a template's header holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
    Document,
}

impl MediaKind {
    /// The word Meta uses in a send (`image`, …).
    pub fn word(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Document => "document",
        }
    }

    fn of_format(format: &str) -> Option<MediaKind> {
        match format.to_ascii_uppercase().as_str() {
            "IMAGE" => Some(MediaKind::Image),
            "VIDEO" => Some(MediaKind::Video),
            "DOCUMENT" => Some(MediaKind::Document),
            _ => None,
        }
    }
}

/// Where a template parameter goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The body's `{{N}}` (1-based).
    Body(u32),
    /// The text header's `{{N}}` (1-based).
    HeaderText(u32),
    /// The header's media, given as a link.
    HeaderMedia(MediaKind),
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Body(n) => write!(f, "body.{n}"),
            Slot::HeaderText(n) => write!(f, "header.{n}"),
            Slot::HeaderMedia(k) => write!(f, "header.{}", k.word()),
        }
    }
}

/// `--template-param SLOT=COLUMN`: a template parameter filled from a CSV column (or a
/// `--data` key, or the customer name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateParam {
    /// Where the value goes.
    pub slot: Slot,
    /// The column (or data key) the value comes from.
    pub column: String,
}

impl FromStr for TemplateParam {
    type Err = String;

    fn from_str(s: &str) -> Result<TemplateParam, String> {
        let bad = |why: &str| {
            format!(
                "invalid --template-param {s:?}: {why} (expected body.N=COLUMN, header.N=COLUMN or header.image|video|document=COLUMN)"
            )
        };
        let (slot, column) = s.split_once('=').ok_or_else(|| bad("no `=`"))?;
        let column = column.trim();
        if column.is_empty() {
            return Err(bad("no column after `=`"));
        }
        let (part, which) = slot
            .trim()
            .split_once('.')
            .ok_or_else(|| bad("no `.` in the slot"))?;
        let index = |w: &str| -> Result<u32, String> {
            match w.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(bad("the parameter number must be 1 or more")),
            }
        };
        let slot = match (
            part.to_ascii_lowercase().as_str(),
            which.to_ascii_lowercase().as_str(),
        ) {
            ("body", w) => Slot::Body(index(w)?),
            ("header", "image") => Slot::HeaderMedia(MediaKind::Image),
            ("header", "video") => Slot::HeaderMedia(MediaKind::Video),
            ("header", "document") => Slot::HeaderMedia(MediaKind::Document),
            ("header", w) => Slot::HeaderText(index(w)?),
            _ => return Err(bad("the slot must start with body. or header.")),
        };
        Ok(TemplateParam {
            slot,
            column: column.to_string(),
        })
    }
}

/// What a template expects of a send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateShape {
    /// Distinct `{{…}}` variables of the body.
    pub body_params: usize,
    /// The header: none, text with N variables, or media.
    pub header: Header,
    /// The buttons' types in order (`FLOW`, `URL`, `QUICK_REPLY`, …).
    pub buttons: Vec<String>,
}

/// A template's header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Header {
    #[default]
    None,
    /// A text header with this many variables.
    Text(usize),
    /// A media header.
    Media(MediaKind),
    /// A header of another format (`LOCATION`, …): not filled by flowctl.
    Other(String),
}

/// Distinct `{{…}}` variables of a text (`{{1}}` twice counts once).
pub fn variables(text: &str) -> usize {
    let mut seen = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim();
        if !name.is_empty() && !seen.contains(&name) {
            seen.push(name);
        }
        rest = &after[end + 2..];
    }
    seen.len()
}

/// The shape of a template definition as the API returns it (`components` with `type`
/// `HEADER`/`BODY`/`FOOTER`/`BUTTONS`).
pub fn shape(template: &Value) -> TemplateShape {
    let mut shape = TemplateShape::default();
    let components = template
        .get("components")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for c in &components {
        let kind = c
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_uppercase();
        let text = c.get("text").and_then(Value::as_str).unwrap_or("");
        match kind.as_str() {
            "BODY" => shape.body_params = variables(text),
            "HEADER" => {
                let format = c.get("format").and_then(Value::as_str).unwrap_or("TEXT");
                shape.header = match MediaKind::of_format(format) {
                    Some(k) => Header::Media(k),
                    None if format.eq_ignore_ascii_case("TEXT") => Header::Text(variables(text)),
                    None => Header::Other(format.to_string()),
                };
            }
            "BUTTONS" => {
                shape.buttons = c
                    .get("buttons")
                    .and_then(Value::as_array)
                    .map(|b| {
                        b.iter()
                            .map(|b| {
                                b.get("type")
                                    .and_then(Value::as_str)
                                    .unwrap_or("")
                                    .to_ascii_uppercase()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
            }
            _ => {}
        }
    }
    shape
}

/// What a send gives a template: the slots filled, whether the customer name fills `{{1}}`
/// of the body, and the index of the Flow button.
#[derive(Clone, Debug)]
pub struct GivenParams<'a> {
    pub params: &'a [TemplateParam],
    pub name_param: bool,
    pub button_index: u32,
}

/// Checks a send against a template's shape: the same number of body variables, a header
/// filled as the template's header is (text variables or one media of its kind), and a FLOW
/// button at the given index. `Err` lists every mismatch, naming the flags to fix.
pub fn check(shape: &TemplateShape, given: &GivenParams<'_>) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut body: Vec<u32> = given
        .params
        .iter()
        .filter_map(|p| match p.slot {
            Slot::Body(n) => Some(n),
            _ => None,
        })
        .collect();
    if given.name_param {
        body.push(1);
    }
    body.sort_unstable();
    let expected: Vec<u32> = (1..=shape.body_params as u32).collect();
    if body != expected {
        problems.push(format!(
            "the body has {} variable(s) but the send gives {} ({}): give body.1 to body.{} with --template-param (or --template-name-param for body.1)",
            shape.body_params,
            body.len(),
            if body.is_empty() {
                "none".to_string()
            } else {
                body.iter().map(|n| format!("body.{n}")).collect::<Vec<_>>().join(", ")
            },
            shape.body_params
        ));
    }
    let header: Vec<Slot> = given
        .params
        .iter()
        .map(|p| p.slot)
        .filter(|s| !matches!(s, Slot::Body(_)))
        .collect();
    match &shape.header {
        Header::Media(kind) => {
            if header != [Slot::HeaderMedia(*kind)] {
                problems.push(format!(
                    "the header is a {} and needs --template-param header.{}=COLUMN (a link), and nothing else in the header",
                    kind.word(),
                    kind.word()
                ));
            }
        }
        Header::Text(n) => {
            let mut got: Vec<u32> = header
                .iter()
                .filter_map(|s| match s {
                    Slot::HeaderText(i) => Some(*i),
                    _ => None,
                })
                .collect();
            got.sort_unstable();
            let want: Vec<u32> = (1..=*n as u32).collect();
            if got != want || got.len() != header.len() {
                problems.push(format!(
                    "the text header has {n} variable(s) but the send gives {} header parameter(s)",
                    header.len()
                ));
            }
        }
        Header::None | Header::Other(_) => {
            if !header.is_empty() {
                problems.push(format!(
                    "the template has no header to fill, but the send gives {}",
                    header
                        .iter()
                        .map(Slot::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    match shape.buttons.get(given.button_index as usize) {
        Some(t) if t == "FLOW" => {}
        Some(t) => problems.push(format!(
            "button {} of the template is a {t} button, not a FLOW button: check --template-button-index",
            given.button_index
        )),
        None => problems.push(format!(
            "the template has no button {} (it has {}): a Flow is sent through a FLOW button, check --template-button-index",
            given.button_index,
            shape.buttons.len()
        )),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

impl GraphClient {
    /// The account's templates (`GET /{WABA-ID}/message_templates`), all languages; only
    /// those named `name` when given.
    pub async fn list_templates(
        &self,
        waba_id: &str,
        name: Option<&str>,
    ) -> Result<Vec<Value>, GraphError> {
        let mut query = vec![("fields", TEMPLATE_FIELDS)];
        if let Some(n) = name {
            query.push(("name", n));
        }
        let items = self
            .get_all(&format!("{waba_id}/message_templates"), &query)
            .await?;
        // The `name` filter of the API matches on part of the name: keep the exact ones.
        Ok(items
            .into_iter()
            .filter(|t| name.is_none_or(|n| t.get("name").and_then(Value::as_str) == Some(n)))
            .collect())
    }

    /// Creates a template from its definition (`POST /{WABA-ID}/message_templates`): the
    /// answer's `id`, `status` and `category`.
    pub async fn create_template(
        &self,
        waba_id: &str,
        definition: &Value,
    ) -> Result<Value, GraphError> {
        self.post_json(&format!("{waba_id}/message_templates"), definition)
            .await
    }

    /// Deletes every language of the template `name` (`DELETE
    /// /{WABA-ID}/message_templates?name=…`).
    pub async fn delete_template(&self, waba_id: &str, name: &str) -> Result<(), GraphError> {
        let v = self
            .delete(&format!("{waba_id}/message_templates"), &[("name", name)])
            .await?;
        if v.get("success").and_then(Value::as_bool) == Some(true) {
            Ok(())
        } else {
            Err(GraphError::InvalidResponse(json!(v).to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(s: &str) -> TemplateParam {
        s.parse().unwrap()
    }

    #[test]
    fn params_parse_slot_and_column() {
        assert_eq!(
            param("body.1=customer_name"),
            TemplateParam {
                slot: Slot::Body(1),
                column: "customer_name".into()
            }
        );
        assert_eq!(
            param("header.image=photo_url").slot,
            Slot::HeaderMedia(MediaKind::Image)
        );
        assert_eq!(param("HEADER.2 = city").slot, Slot::HeaderText(2));
        for bad in [
            "body.0=x",
            "body.1=",
            "body1=x",
            "footer.1=x",
            "body.x=y",
            "x",
        ] {
            let e = bad.parse::<TemplateParam>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn variables_are_counted_once_each() {
        assert_eq!(variables("Hi {{1}}, your {{2}} on {{1}}"), 2);
        assert_eq!(variables("no variables"), 0);
        assert_eq!(variables("{{name}} and {{ city }}"), 2);
        assert_eq!(variables("broken {{1"), 0);
    }

    fn survey() -> TemplateShape {
        shape(&json!({"components": [
            {"type": "HEADER", "format": "IMAGE"},
            {"type": "BODY", "text": "Bonjour {{1}}, votre visite à {{2}} ?"},
            {"type": "BUTTONS", "buttons": [{"type": "FLOW", "text": "Répondre"}]}
        ]}))
    }

    #[test]
    fn a_send_matching_the_template_passes() {
        let params = [
            param("body.1=customer_name"),
            param("body.2=city"),
            param("header.image=photo"),
        ];
        let given = GivenParams {
            params: &params,
            name_param: false,
            button_index: 0,
        };
        assert_eq!(check(&survey(), &given), Ok(()));
        let params = [param("body.2=city"), param("header.image=photo")];
        let given = GivenParams {
            params: &params,
            name_param: true,
            button_index: 0,
        };
        assert_eq!(check(&survey(), &given), Ok(()), "the name fills body.1");
    }

    #[test]
    fn every_mismatch_is_named() {
        let params = [param("body.1=customer_name")];
        let given = GivenParams {
            params: &params,
            name_param: false,
            button_index: 1,
        };
        let problems = check(&survey(), &given).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].contains("2 variable(s) but the send gives 1"),
            "{problems:?}"
        );
        assert!(problems[1].contains("header.image"), "{problems:?}");
        assert!(problems[2].contains("no button 1"), "{problems:?}");
    }
}
