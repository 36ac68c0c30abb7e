//! The database the report tests read: built with the library as `bulk`, `serve` and the
//! webhook would fill it, with answers carrying HTML, script and formula payloads.
#![allow(dead_code)]

use std::time::Duration;

use flowctl::store::{CompletionInput, DbTarget, Failure, NewToken, Origin, SendState, Store};
use serde_json::{json, Value};

/// A comment that must show as text, never run.
pub const SCRIPT: &str = "<script>document.title='pwned'</script>";
/// A spreadsheet formula payload.
pub const FORMULA: &str = "=cmd|' /C calc'!A0";
/// Markup in a name.
pub const IMG: &str = "<img src=x onerror=alert(2)>";
/// The first recipient's phone (masked by default).
pub const PHONE: &str = "+212610059159";

/// The funnel columns of the report's table, in its order (the keys of `stats --json`).
pub const FUNNEL: [&str; 10] = [
    "issued",
    "sent",
    "delivered",
    "read",
    "completed",
    "failed",
    "deferred",
    "pending",
    "unknown",
    "unmatched",
];

/// The funnel of `campaign` (the first campaign when `None`) in `stats --json` output, in
/// the report's table order.
pub fn funnel_of(stats: &Value, campaign: Option<&str>) -> Vec<String> {
    let campaigns = stats["campaigns"].as_array().expect("campaigns");
    let c = match campaign {
        Some(name) => campaigns
            .iter()
            .find(|c| c["campaign"] == name)
            .unwrap_or_else(|| panic!("no campaign {name} in {stats}")),
        None => &campaigns[0],
    };
    FUNNEL.iter().map(|k| c[k].to_string()).collect()
}

/// The Flow JSON of the fixture: titles for `q1_accueil`, a multi-select, a number, a text.
pub const FLOW: &str = r#"{"version":"7.2","routing_model":{"S":[]},"screens":[{"id":"S","terminal":true,"layout":{"type":"SingleColumnLayout","children":[
  {"type":"RadioButtonsGroup","name":"q1_accueil","label":"Comment avez-vous trouvé l'accueil ?","data-source":[
     {"id":"5_etoiles","title":"★★★★★ Excellent"},{"id":"4_etoiles","title":"★★★★ Très bien"},
     {"id":"3_etoiles","title":"★★★ Bien"},{"id":"1_etoile","title":"★ Décevant"}]},
  {"type":"CheckboxGroup","name":"services","label":"Services used","data-source":[
     {"id":"wifi","title":"Wi-Fi"},{"id":"parking","title":"Parking"},{"id":"spa","title":"Spa"}]},
  {"type":"TextInput","name":"age","label":"Your age","input-type":"number"},
  {"type":"TextArea","name":"commentaire","label":"Un commentaire ?"},
  {"type":"Footer","label":"OK","on-click-action":{"name":"data_exchange","payload":{"q1_accueil":"${form.q1_accueil}"}}}]}}]}"#;

fn token(store: &mut Store, phone: &str, name: &str, campaign: &str) -> String {
    let t = flowctl::token::FlowToken::generate();
    let new = NewToken {
        token: t.clone(),
        phone: flowctl::phone::Phone::parse(phone, None).unwrap(),
        customer_name: Some(name.to_string()),
        campaign: campaign.into(),
        origin: Origin::Bulk,
        initial_data: None,
        ttl: Duration::from_secs(86_400),
    };
    store.insert_token(&new, SendState::Pending).unwrap();
    t.as_str().to_string()
}

fn sent(store: &mut Store, phone: &str, name: &str, campaign: &str) -> String {
    let t = token(store, phone, name, campaign);
    store.record_sent(&t, &format!("wamid.{t}"), None).unwrap();
    t
}

fn delivery(db: &DbTarget, token: &str, status: &str, rank: i64, code: Option<i64>) {
    crate::support::Sql::open(db).execute(
        "UPDATE tokens SET delivery = ?2, delivery_rank = ?3, delivery_error_code = ?4 WHERE token = ?1",
        &[token.into(), status.into(), rank.into(), code.into()],
    );
}

fn complete(store: &mut Store, token: &str, answers: Value, minutes_after_send: i64) {
    let sent = store
        .find_token(token)
        .unwrap()
        .unwrap()
        .sent_at
        .unwrap()
        .as_datetime();
    let at = flowctl::time::format(sent + chrono::Duration::minutes(minutes_after_send));
    store
        .complete(&CompletionInput {
            token,
            answers: answers.as_object().unwrap(),
            source: "endpoint",
            sender: None,
            event_id: None,
            completed_at: &at,
        })
        .unwrap();
}

/// Campaign `spring`: 7 issued, 5 sent (one of them failed to deliver, 131047), one refused
/// (131026), 4 delivered, 3 read, 4 completed. Campaign `autumn`: one sent, nothing else.
pub fn build(db: &DbTarget) {
    let mut s = Store::open(db).unwrap();
    let a = sent(&mut s, PHONE, IMG, "spring");
    let b = sent(&mut s, "+212610059160", "Youssef", "spring");
    let c = sent(&mut s, "+212610059161", "Sara", "spring");
    let d = sent(&mut s, "+212610059162", "Omar", "spring");
    let e = sent(&mut s, "+212610059163", "Nadia", "spring");
    let _pending = token(&mut s, "+212610059164", "Karim", "spring");
    let refused = token(&mut s, "+212610059165", "Leila", "spring");
    s.record_failed(
        &refused,
        &Failure {
            code: Some(131026),
            message: "Message undeliverable".into(),
            retryable: false,
        },
    )
    .unwrap();
    delivery(db, &a, "read", 3, None);
    delivery(db, &b, "read", 3, None);
    delivery(db, &c, "read", 3, None);
    delivery(db, &d, "delivered", 2, None);
    delivery(db, &e, "failed", 1, Some(131047));
    complete(
        &mut s,
        &a,
        json!({"q1_accueil": "5_etoiles", "services": ["wifi", "parking"], "age": 31, "commentaire": SCRIPT}),
        3,
    );
    complete(
        &mut s,
        &b,
        json!({"q1_accueil": "5_etoiles", "services": ["wifi"], "age": 45, "commentaire": FORMULA}),
        5,
    );
    complete(
        &mut s,
        &c,
        json!({"q1_accueil": "4_etoiles", "services": [], "age": 31, "commentaire": "<b>bold</b> & co"}),
        7,
    );
    complete(&mut s, &d, json!({"q1_accueil": "1_etoile", "age": 60}), 9);
    sent(&mut s, "+33612345678", "Paul", "autumn");
}
