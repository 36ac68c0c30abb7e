//! How the domain types are written to and read from PostgreSQL: the same text forms as in
//! SQLite (`sqlite/types.rs`), so that rows copy between the two unchanged. A stored text that
//! is not a valid value is a conversion error quoting it, never a default.

use std::error::Error;

use bytes::BytesMut;
use postgres::types::{accepts, to_sql_checked, FromSql, IsNull, ToSql, Type};
use serde_json::{Map, Value};

use crate::phone::Phone;
use crate::store::{Origin, SendState};
use crate::time::Timestamp;
use crate::token::FlowToken;

type BoxError = Box<dyn Error + Sync + Send>;

/// Implements `ToSql`/`FromSql` for a type stored as text: `$to` gives the text, `$from`
/// parses it (its error quoting the value).
macro_rules! text_column {
    ($ty:ty, $to:expr, $from:expr) => {
        impl ToSql for $ty {
            fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
                let text: String = ($to)(self);
                <&str as ToSql>::to_sql(&text.as_str(), ty, out)
            }
            accepts!(TEXT, VARCHAR);
            to_sql_checked!();
        }

        impl<'a> FromSql<'a> for $ty {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
                let text = <&str as FromSql>::from_sql(ty, raw)?;
                ($from)(text).map_err(|e| Box::new(e) as BoxError)
            }
            accepts!(TEXT, VARCHAR);
        }
    };
}

text_column!(
    FlowToken,
    |t: &FlowToken| t.as_str().to_string(),
    FlowToken::parse
);
text_column!(Phone, |p: &Phone| p.e164().to_string(), Phone::from_e164);
text_column!(
    SendState,
    |s: &SendState| s.as_str().to_string(),
    str::parse::<SendState>
);
text_column!(
    Origin,
    |o: &Origin| o.as_str().to_string(),
    str::parse::<Origin>
);
// RFC 3339 text, UTC, milliseconds: the form whose text order is time order.
text_column!(Timestamp, |t: &Timestamp| t.to_string(), Timestamp::parse);

/// A time given as text by a caller, written in the stored form (see `sqlite::types::TimeText`):
/// a text that is no time is refused instead of stored.
#[derive(Debug)]
pub(crate) struct TimeText<'a>(pub &'a str);

impl ToSql for TimeText<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let t = Timestamp::parse(self.0).map_err(|e| Box::new(e) as BoxError)?;
        <&str as ToSql>::to_sql(&t.to_string().as_str(), ty, out)
    }
    accepts!(TEXT, VARCHAR);
    to_sql_checked!();
}

/// A JSON object column (answers, initial data), stored as text. Anything but an object reads
/// as an empty object rather than failing a whole export over one damaged row.
pub(crate) struct JsonObject(pub Map<String, Value>);

impl<'a> FromSql<'a> for JsonObject {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let text = <&str as FromSql>::from_sql(ty, raw)?;
        Ok(JsonObject(match serde_json::from_str(text) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }))
    }
    accepts!(TEXT, VARCHAR);
}
