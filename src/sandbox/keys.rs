//! `POST|GET /{v}/{id}/whatsapp_business_encryption`: the business public key of each phone
//! number and its signature status, with `POST /_sandbox/key-status` to report `MISMATCH`.

use std::sync::PoisonError;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

use super::answer::{graph_error, json_response, Answer, LogFields, Resp};
use super::state::{State, StoredKey};

const SIGNATURE_VALID: &str = "VALID";
const SIGNATURE_MISMATCH: &str = "MISMATCH";

/// `POST /_sandbox/key-status {"status": "MISMATCH" | "VALID"}`: sets the
/// `business_public_key_signature_status` of every key uploaded so far, as Meta reports a key
/// whose signature no longer holds for its number; the next upload of a key makes it `VALID`.
pub(super) fn set_key_status(state: &State, body: Option<&[u8]>) -> Resp {
    let value: Value = body
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or(Value::Null);
    let status = match value.get("status").and_then(Value::as_str) {
        Some(s) if s.eq_ignore_ascii_case(SIGNATURE_MISMATCH) => SIGNATURE_MISMATCH,
        Some(s) if s.eq_ignore_ascii_case(SIGNATURE_VALID) => SIGNATURE_VALID,
        _ => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "error": "expected {\"status\": \"MISMATCH\" | \"VALID\"}" }),
            )
        }
    };
    let mut keys = state.keys.lock().unwrap_or_else(PoisonError::into_inner);
    for key in keys.values_mut() {
        key.signature_status = status;
    }
    tracing::info!(
        status,
        keys = keys.len(),
        "sandbox key signature status set"
    );
    json_response(
        StatusCode::OK,
        &json!({ "status": status, "keys": keys.len() }),
    )
}

pub(super) fn encryption(
    state: &State,
    method: &Method,
    phone_number_id: &str,
    authorized: bool,
    raw: Option<&Bytes>,
    log: &mut LogFields,
) -> Answer {
    if !authorized {
        return graph_error(
            log,
            190,
            "(#190) Invalid OAuth access token - the request needs an Authorization: Bearer <token> header",
        );
    }
    if method == Method::GET {
        let keys = state.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let data = match keys.get(phone_number_id) {
            Some(key) => json!([{
                "business_public_key": key.pem,
                "business_public_key_signature_status": key.signature_status,
            }]),
            None => json!([]),
        };
        return Answer::Reply(json_response(StatusCode::OK, &json!({ "data": data })));
    }
    let pem = raw.and_then(|b| {
        url::form_urlencoded::parse(b)
            .find(|(k, _)| k == "business_public_key")
            .map(|(_, v)| v.into_owned())
    });
    match pem {
        Some(pem) if is_rsa_2048_pem(&pem) => {
            state
                .keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    phone_number_id.to_owned(),
                    // An upload signs the key for the number afresh, as Meta's does.
                    StoredKey {
                        pem,
                        signature_status: SIGNATURE_VALID,
                    },
                );
            Answer::Reply(json_response(StatusCode::OK, &json!({ "success": true })))
        }
        _ => graph_error(
            log,
            100,
            "(#100) Invalid parameter: business_public_key must be a valid 2048-bit RSA public key in PEM format",
        ),
    }
}

fn is_rsa_2048_pem(pem: &str) -> bool {
    rsa::PublicKey::from_public_key_pem(pem.trim()).is_ok_and(|k| k.size() == 256)
}
