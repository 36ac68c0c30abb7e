//! How one Flow answer reads as one cell of text: the export's CSV cells and the report's
//! tables and free-text lists show answers the same way.
//!
//! Strings as they are, numbers as stored, booleans `true`/`false`, null empty; a list of
//! strings/numbers/booleans joined with `;` (unless an item contains `;`); any other list or
//! object as compact JSON.

use std::borrow::Cow;

use serde_json::Value;

/// An answer as one cell of text (before any CSV formula escaping).
pub fn render_answer(v: &Value) -> Cow<'_, str> {
    match v {
        Value::Null => Cow::Borrowed(""),
        Value::String(s) => Cow::Borrowed(s),
        Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Value::Number(n) => Cow::Owned(n.to_string()),
        Value::Array(items) => match join_scalars(items) {
            Some(joined) => Cow::Owned(joined),
            None => Cow::Owned(v.to_string()),
        },
        Value::Object(_) => Cow::Owned(v.to_string()),
    }
}

/// `a;b;c` for a list of scalars none of which contains `;`.
fn join_scalars(items: &[Value]) -> Option<String> {
    let mut parts = Vec::with_capacity(items.len());
    for item in items {
        let part = match item {
            Value::String(s) if !s.contains(';') => Cow::Borrowed(s.as_str()),
            Value::Number(_) | Value::Bool(_) => render_answer(item),
            _ => return None,
        };
        parts.push(part);
    }
    Some(parts.join(";"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_render_as_documented() {
        assert_eq!(render_answer(&json!("Très bien ⭐")), "Très bien ⭐");
        assert_eq!(render_answer(&json!(true)), "true");
        assert_eq!(render_answer(&json!(false)), "false");
        assert_eq!(render_answer(&json!(42)), "42");
        assert_eq!(render_answer(&json!(-1.5)), "-1.5");
        assert_eq!(render_answer(&json!(null)), "");
        assert_eq!(render_answer(&json!(["a", "b", 3, true])), "a;b;3;true");
        assert_eq!(render_answer(&json!([])), "");
        assert_eq!(render_answer(&json!(["a;b", "c"])), r#"["a;b","c"]"#);
        assert_eq!(render_answer(&json!([{"x": 1}])), r#"[{"x":1}]"#);
        assert_eq!(render_answer(&json!(["a", null])), r#"["a",null]"#);
        assert_eq!(
            render_answer(&json!({"b": 1, "a": [2]})),
            r#"{"b":1,"a":[2]}"#
        );
    }
}
