//! How the domain types are written to and read from SQLite columns. All are stored as the
//! text they always were, so existing databases read back unchanged; a stored text that is
//! not a valid value is a conversion error quoting it, never a default.
//!
//! The conversions live with the backend rather than with the types, so that `token`,
//! `phone` and `time` stay free of any database, and each backend brings its own.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde_json::{Map, Value};

use crate::phone::Phone;
use crate::store::{Origin, SendState};
use crate::time::Timestamp;
use crate::token::FlowToken;

/// Reads a text column and parses it with `parse`, whose error (quoting the value) becomes
/// the conversion error.
fn parse_text<T, E>(v: ValueRef<'_>, parse: impl FnOnce(&str) -> Result<T, E>) -> FromSqlResult<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    parse(v.as_str()?).map_err(|e| FromSqlError::Other(Box::new(e)))
}

impl ToSql for FlowToken {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for FlowToken {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        parse_text(v, FlowToken::parse)
    }
}

impl ToSql for Phone {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.e164()))
    }
}

impl FromSql for Phone {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        parse_text(v, Phone::from_e164)
    }
}

impl ToSql for SendState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for SendState {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        parse_text(v, str::parse)
    }
}

impl ToSql for Origin {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Origin {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        parse_text(v, str::parse)
    }
}

/// Stored as RFC 3339 text, UTC, milliseconds (`2026-02-03T10:30:00.000Z`): the form every
/// version wrote, whose text order is time order.
impl ToSql for Timestamp {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_string()))
    }
}

impl FromSql for Timestamp {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        parse_text(v, Timestamp::parse)
    }
}

/// A time given as text by a caller (the `completed_at` and `at` of webhook and endpoint
/// inputs), written in the stored form: whatever RFC 3339 variant it came in, the column
/// holds the one text form whose order is time order, and a text that is no time is refused
/// instead of stored.
pub(crate) struct TimeText<'a>(pub &'a str);

impl ToSql for TimeText<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let t = Timestamp::parse(self.0)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(ToSqlOutput::from(t.to_string()))
    }
}

/// A JSON object column (answers, initial data). Written by flowctl only, always as an
/// object; anything else reads as an empty object rather than failing a whole export over
/// one damaged row.
pub(crate) struct JsonObject(pub Map<String, Value>);

impl FromSql for JsonObject {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(JsonObject(match serde_json::from_str(v.as_str()?) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }))
    }
}

/// The text of a JSON object, for writing.
pub(crate) fn json_text(m: &Map<String, Value>) -> String {
    Value::Object(m.clone()).to_string()
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    fn read<T: FromSql>(text: &str) -> rusqlite::Result<T> {
        Connection::open_in_memory()?.query_row("SELECT ?1", [text], |r| r.get(0))
    }

    #[test]
    fn an_unknown_stored_state_is_an_error_with_the_value() {
        assert_eq!(read::<SendState>("sent").unwrap(), SendState::Sent);
        assert_eq!(read::<SendState>("unknown").unwrap(), SendState::Unknown);
        let err = read::<SendState>("bogus").unwrap_err();
        assert!(
            matches!(err, rusqlite::Error::FromSqlConversionFailure(..)),
            "{err:?}"
        );
        assert!(err.to_string().contains("\"bogus\""), "{err}");
        assert!(read::<Origin>("crm")
            .unwrap_err()
            .to_string()
            .contains("\"crm\""));
    }

    #[test]
    fn domain_values_round_trip_as_their_old_text() {
        let c = Connection::open_in_memory().unwrap();
        let token = FlowToken::generate();
        let phone = Phone::parse("+212610059159", None).unwrap();
        let at = Timestamp::now();
        let (t, p, a, o): (String, String, String, String) = c
            .query_row(
                "SELECT ?1, ?2, ?3, ?4",
                rusqlite::params![token, phone, at, Origin::Bulk],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!((t.as_str(), p.as_str()), (token.as_str(), "+212610059159"));
        assert_eq!((a, o.as_str()), (at.to_string(), "bulk"));
        assert_eq!(read::<FlowToken>(token.as_str()).unwrap(), token);
        assert_eq!(read::<Phone>("+212610059159").unwrap(), phone);
        assert_eq!(read::<Timestamp>(&at.to_string()).unwrap(), at);
    }

    #[test]
    fn times_given_as_text_are_stored_in_the_one_sortable_form() {
        let c = Connection::open_in_memory().unwrap();
        let stored: String = c
            .query_row("SELECT ?1", [TimeText("2026-02-03T11:30:00+01:00")], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(stored, "2026-02-03T10:30:00.000Z");
        let err = c
            .query_row("SELECT ?1", [TimeText("x")], |r| r.get::<_, String>(0))
            .unwrap_err();
        assert!(err.to_string().contains("\"x\""), "{err}");
    }

    #[test]
    fn malformed_stored_values_are_errors_with_the_value() {
        for (err, value) in [
            (read::<FlowToken>("unused").unwrap_err(), "unused"),
            (read::<Phone>("0610059159").unwrap_err(), "0610059159"),
            (read::<Timestamp>("yesterday").unwrap_err(), "yesterday"),
        ] {
            assert!(err.to_string().contains(&format!("{value:?}")), "{err}");
        }
    }
}
