//! Bodies of the fuzz targets, one public function per target taking the raw fuzz input.
//!
//! Each drives one input parser of flowctl through its public API and checks the invariants
//! that hold for every input: a panic here is a bug, whether it comes from flowctl itself or
//! from one of these assertions. The same file is compiled into the `flowctl-fuzz` crate
//! (libFuzzer targets, `fuzz/`) and into `tests/fuzz_regressions.rs`, which replays the
//! committed seeds and every minimised finding in the normal test suite.

use std::collections::HashSet;
use std::io::Read;
use std::sync::OnceLock;

use flowctl::commands::bulk::{parse_row, Columns, CrlfToLf, CsvRows};
use flowctl::crypto::{
    decrypt_request, decrypt_response, encrypt_response, EncryptedRequest, PrivateKey, ResponseKey,
    AES_KEY_LEN, IV_LEN,
};
use flowctl::flow_json::FlowJson;
use flowctl::phone::{DefaultCountry, Phone};
use flowctl::webhook_events::{parse_events, WebhookEvent};
use serde_json::{Map, Value};

/// The shared crypto vectors: the test private key and recorded envelopes.
const VECTORS: &str = include_str!("../../tests/vectors/flow-endpoint.json");
/// The example Flow that `serve --flow-json` drives in the end-to-end tests.
const SURVEY_FLOW: &str = include_str!("../../examples/survey_flow.json");

/// Regions tried as `DEFAULT_COUNTRY`, chosen by an input byte (index 0: none).
const COUNTRIES: &[&str] = &[
    "", "MA", "FR", "US", "GB", "DE", "IT", "IN", "BR", "AR", "MX", "SN", "CI", "RU", "CN", "AU",
];

/// The fixed key material of the data-endpoint target, built once per process.
struct Endpoint {
    key: PrivateKey,
    /// `encrypted_aes_key` of a recorded case: RSA-OAEP of `aes_key` to the test key.
    wrapped_key: String,
    aes_key: [u8; AES_KEY_LEN],
    iv: [u8; IV_LEN],
    iv_b64: String,
    flow: FlowJson,
}

fn endpoint() -> &'static Endpoint {
    static ENDPOINT: OnceLock<Endpoint> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        let v: Value = serde_json::from_str(VECTORS).expect("vectors are JSON");
        let pem = v["keys"]["private_key_pkcs8_pem"]
            .as_str()
            .expect("vectors carry the PKCS#8 key");
        let key = PrivateKey::from_pem(pem, None).expect("the test key loads");
        let case = &v["cases"][0];
        let hex = |s: &Value| -> Vec<u8> {
            let s = s.as_str().expect("hex string");
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
                .collect()
        };
        Endpoint {
            key,
            wrapped_key: case["request_body"]["encrypted_aes_key"]
                .as_str()
                .expect("encrypted_aes_key")
                .to_string(),
            aes_key: hex(&case["aes_key_hex"]).try_into().expect("16-byte key"),
            iv: hex(&case["iv_hex"]).try_into().expect("16-byte IV"),
            iv_b64: case["request_body"]["initial_vector"]
                .as_str()
                .expect("initial_vector")
                .to_string(),
            flow: FlowJson::parse(SURVEY_FLOW).expect("the example Flow parses"),
        }
    })
}

/// `data_endpoint`: the encrypted Flow data-endpoint request.
///
/// First byte even: the rest is an HTTP body, decoded with [`EncryptedRequest::from_json`]
/// and decrypted with the test key. First byte odd: the rest is a plaintext request, sealed
/// as a client would with a recorded AES key, then decrypted (it must come back byte for
/// byte). Every decrypted plaintext then goes through the endpoint's request handling.
pub fn data_endpoint(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let ep = endpoint();
    if mode & 1 == 0 {
        let Ok(req) = EncryptedRequest::from_json(rest) else {
            return;
        };
        // A parsed envelope serialises back to an envelope that parses to itself.
        assert_eq!(
            EncryptedRequest::from_json(req.to_json().as_bytes()).ok(),
            Some(req.clone())
        );
        match decrypt_request(&ep.key, &req) {
            Ok(d) => endpoint_plaintext(&d.key, &d.plaintext),
            Err(e) => assert!(!e.stage().is_empty() && !e.to_string().is_empty()),
        }
    } else {
        // `encrypt_response` seals with the flipped IV: flipping it first seals with `iv`.
        let sealer = ResponseKey::new(ep.aes_key, ep.iv.map(|b| !b));
        let req = EncryptedRequest {
            encrypted_flow_data: encrypt_response(&sealer, rest),
            encrypted_aes_key: ep.wrapped_key.clone(),
            initial_vector: ep.iv_b64.clone(),
        };
        let d = decrypt_request(&ep.key, &req).expect("a well-formed envelope decrypts");
        assert_eq!(d.plaintext, rest);
        assert_eq!(d.key.aes_key(), &ep.aes_key);
        assert_eq!(d.key.iv(), &ep.iv);
        endpoint_plaintext(&d.key, &d.plaintext);
    }
}

/// What the data endpoint does with a decrypted request (`version`, `action`, `screen`,
/// `data`, `flow_token`), against the example Flow, and the encrypted answer.
fn endpoint_plaintext(key: &ResponseKey, plaintext: &[u8]) {
    let flow = &endpoint().flow;
    let answer = match serde_json::from_slice::<Value>(plaintext) {
        Ok(Value::Object(req)) => {
            let action = req.get("action").and_then(Value::as_str).unwrap_or("");
            let screen = req.get("screen").and_then(Value::as_str);
            let data = match req.get("data") {
                Some(Value::Object(m)) => m.clone(),
                _ => Map::new(),
            };
            let reply = match (action, screen) {
                ("INIT", _) => Some(flow.entry_screen()),
                ("BACK", Some(s)) => flow.previous_screen(s).or(Some(flow.entry_screen())),
                ("data_exchange", Some(s)) => {
                    let next = flow.next_screen(s, &data).ok().flatten();
                    if let Some(n) = next {
                        assert_ne!(n.id, s, "no self-route");
                        assert!(flow.previous_screen(&n.id).is_some());
                    }
                    next
                }
                _ => None,
            };
            match reply {
                Some(next) => {
                    let shown = next.data_for(Some(&data));
                    for k in shown.keys() {
                        assert!(next.data_defaults.contains_key(k));
                    }
                    serde_json::json!({ "screen": next.id, "data": shown })
                }
                None => serde_json::json!({ "data": { "acknowledged": true } }),
            }
        }
        _ => serde_json::json!({ "error": "not a Flow request" }),
    };
    let body = answer.to_string();
    let sealed = encrypt_response(key, body.as_bytes());
    assert_eq!(
        decrypt_response(key, &sealed).expect("own response decrypts"),
        body.as_bytes()
    );
}

/// `webhook_envelope`: a messages-webhook body through [`parse_events`].
pub fn webhook_envelope(data: &[u8]) {
    let events = match parse_events(data) {
        Ok(events) => events,
        Err(e) => {
            let root = serde_json::from_slice::<Value>(data);
            assert!(
                !matches!(root, Ok(Value::Object(_))),
                "a JSON object is never refused: {e}"
            );
            return;
        }
    };
    for event in &events {
        let label = event.metric_type();
        assert!(
            !label.is_empty()
                && label.len() <= 32
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "metric label {label:?}"
        );
        match event {
            WebhookEvent::Completion {
                event_id,
                flow_token,
                answers,
                sender,
                completed_at,
                ..
            } => {
                assert!(!event_id.is_empty());
                assert!(flow_token.as_ref().is_none_or(|t| !t.is_empty()));
                assert!(!answers.contains_key("flow_token"));
                assert!(sender.as_ref().is_none_or(|s| !s.is_empty()));
                assert_stored_time(completed_at);
            }
            WebhookEvent::Status {
                message_id,
                status,
                at,
                ..
            } => {
                assert!(!message_id.is_empty() && !status.is_empty());
                assert_eq!(status, &status.to_ascii_lowercase());
                assert_stored_time(at);
            }
            WebhookEvent::Record { reference, .. } => {
                assert!(reference.starts_with("sha256:") && reference.len() == 39);
            }
            WebhookEvent::Text { sender, body } => {
                assert!(!sender.is_empty() && !body.is_empty());
            }
            WebhookEvent::Preference { wa_id, value, .. } => {
                assert!(!wa_id.is_empty());
                assert_eq!(value, &value.to_ascii_lowercase());
            }
            WebhookEvent::Ignored { .. } => {}
        }
    }
}

/// Stored times are `YYYY-MM-DDTHH:MM:SS.mmmZ`: that text sorts in time order, which the
/// store's range queries (`export --since`, stats) rely on.
fn assert_stored_time(t: &str) {
    let b = t.as_bytes();
    let shape = b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    assert!(shape, "stored time {t:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ");
}

/// `csv_row`: a whole `bulk` CSV file. First byte: bits 0-3 pick the default country,
/// bit 4 reads through [`CrlfToLf`] as `bulk` does (else raw), bits 5-7 the size of the
/// read buffer (line ends split across buffer refills).
pub fn csv_row(data: &[u8]) {
    let Some((&opts, file)) = data.split_first() else {
        return;
    };
    let country = country(opts);
    let capacity = 1 + usize::from(opts >> 5) * 3;
    let crlf = opts & 0x10 != 0;

    // CrlfToLf turns exactly the CRLF pairs into LF, whatever the buffer boundaries.
    let mut converted = Vec::new();
    CrlfToLf::new(std::io::BufReader::with_capacity(capacity, file))
        .read_to_end(&mut converted)
        .expect("reading memory cannot fail");
    assert_eq!(converted, replace_crlf(file));

    let input: Box<dyn Read + Send> = if crlf {
        Box::new(CrlfToLf::new(std::io::BufReader::with_capacity(
            capacity,
            std::io::Cursor::new(file.to_vec()),
        )))
    } else {
        Box::new(std::io::Cursor::new(file.to_vec()))
    };
    let Ok(mut rows) = CsvRows::from_reader(input, country) else {
        return;
    };
    let headers = rows.headers();
    let columns = Columns::resolve(&headers).expect("an opened file has resolvable columns");
    assert!(columns.phone < columns.width);
    let header_names: HashSet<&str> = headers.iter().collect();
    let mut last_line = 1;
    // Each record consumes at least one byte of the file.
    for _ in 0..=file.len() {
        let Some(line) = rows.next_line() else {
            return;
        };
        let line = line.expect("reading memory cannot fail");
        assert!(line.line >= last_line, "line numbers never go back");
        last_line = line.line;
        if let Ok(r) = &line.parsed {
            assert_eq!(line.record.len(), columns.width);
            assert_phone_idempotent(&r.phone, country);
            assert!(r.name.as_ref().is_none_or(|n| !n.is_empty()));
            for (k, v) in &r.data {
                assert!(header_names.contains(k.as_str()), "data key {k:?}");
                assert!(v.as_str().is_some_and(|s| !s.is_empty()));
            }
            assert_eq!(
                parse_row(&columns, &line.record, country).as_ref(),
                Ok(r),
                "parse_row is a function of the record"
            );
        }
    }
    panic!("more records than bytes in the file");
}

fn replace_crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn country(b: u8) -> Option<DefaultCountry> {
    let code = COUNTRIES[usize::from(b & 0x0f) % COUNTRIES.len()];
    (!code.is_empty()).then(|| code.parse().expect("a known region"))
}

/// `flow_json`: a Flow JSON through [`FlowJson::parse`] and every routing question `serve`
/// asks of it.
pub fn flow_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(flow) = FlowJson::parse(text) else {
        return;
    };
    let screens = flow.screens();
    assert!(!screens.is_empty());
    let entry = flow.entry_screen();
    assert_eq!(flow.screen(&entry.id), Some(entry));
    let ids: Vec<&str> = screens.iter().map(|s| s.id.as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "screen ids are unique");
    let empty = Map::new();
    for s in screens {
        assert_eq!(flow.screen(&s.id).map(|f| &f.id), Some(&s.id));
        if let Ok(next) = flow.next_screen(&s.id, &empty) {
            if let Some(n) = next {
                assert_ne!(n.id, s.id, "no self-route");
                assert!(flow.previous_screen(&n.id).is_some());
            }
            for target in &ids {
                let mut pick = Map::new();
                pick.insert("next_screen".into(), Value::String((*target).to_string()));
                let chosen = flow
                    .next_screen(&s.id, &pick)
                    .expect("same screen, same routing");
                if let Some(c) = chosen {
                    assert_ne!(c.id, s.id);
                }
            }
        }
        if let Some(p) = flow.previous_screen(&s.id) {
            assert_ne!(p.id, s.id);
        }
        let examples = s.data_for(None);
        for (k, v) in &examples {
            assert!(!v.is_null());
            assert_eq!(s.data_defaults.get(k), Some(v));
        }
        let personal = s.data_for(Some(&s.data_defaults));
        assert_eq!(personal, examples);
    }
    let order = flow.field_order();
    let distinct: HashSet<&String> = order.iter().collect();
    assert_eq!(distinct.len(), order.len(), "field_order has no repeats");
    for s in screens {
        for f in s.fields.iter().chain(s.submit_payload.keys()) {
            assert!(distinct.contains(f), "field {f:?} is in field_order");
        }
    }
}

/// `phone`: [`Phone::parse`]. First byte: the default country (low nibble). The rest, as
/// UTF-8, is the number.
pub fn phone(data: &[u8]) {
    let Some((&opts, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let country = country(opts);
    match Phone::parse(text, country) {
        Ok(p) => assert_phone_idempotent(&p, country),
        Err(e) => assert!(e.to_string().contains(&format!("{text:?}"))),
    }
}

/// A parsed number is E.164, and parsing that E.164 again (with or without a default
/// country) gives the same number.
fn assert_phone_idempotent(p: &Phone, country: Option<DefaultCountry>) {
    let e164 = p.e164();
    assert!(
        e164.len() > 1
            && e164.starts_with('+')
            && e164[1..].bytes().all(|b| b.is_ascii_digit())
            && !e164[1..].starts_with('0'),
        "not E.164: {e164:?}"
    );
    assert_eq!(p.wa_digits(), &e164[1..]);
    assert_eq!(p.as_u64().to_string(), p.wa_digits());
    let again = Phone::parse(e164, country);
    assert_eq!(
        again.as_ref(),
        Ok(p),
        "E.164 {e164} does not parse to itself"
    );
    let bare = Phone::parse(e164, None);
    assert_eq!(bare.as_ref(), Ok(p), "E.164 {e164} without default country");
}
