//! The sandbox's answers: Graph error envelopes, faults in place of an answer, and what a
//! request's handling tells the request log.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::Value;

use super::errors;
use super::rules::Fault;

pub(super) type Resp = Response<Full<Bytes>>;

/// Outcome of a handler: an answer, or a fault that replaces it.
pub(super) enum Answer {
    Reply(Resp),
    Hang,
    Reset,
}

/// What a handler tells the router to log.
#[derive(Default)]
pub(super) struct LogFields {
    pub(super) to: Option<String>,
    pub(super) flow_token: Option<String>,
    pub(super) wamid: Option<String>,
    pub(super) error_code: Option<u32>,
    pub(super) fault: Option<&'static str>,
    pub(super) probe: Option<Value>,
}

/// What a fault (a `--fail` rule's, or the outage's) answers instead of the Graph API.
pub(super) fn fault_answer(fault: Fault, log: &mut LogFields) -> Answer {
    match fault {
        Fault::GraphError(code) => {
            log.error_code = Some(code);
            Answer::Reply(json_response(
                errors::status_for(code),
                &errors::envelope(code),
            ))
        }
        Fault::Http503 => {
            log.fault = Some("http503");
            Answer::Reply(bytes_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                b"Service Unavailable".to_vec(),
            ))
        }
        Fault::Hang => {
            log.fault = Some("hang");
            Answer::Hang
        }
        Fault::Reset => {
            log.fault = Some("reset");
            Answer::Reset
        }
    }
}

pub(super) fn fault_name(fault: Fault) -> String {
    match fault {
        Fault::GraphError(code) => code.to_string(),
        Fault::Http503 => "http503".into(),
        Fault::Hang => "hang".into(),
        Fault::Reset => "reset".into(),
    }
}

pub(super) fn graph_error(log: &mut LogFields, code: u32, message: &str) -> Answer {
    log.error_code = Some(code);
    Answer::Reply(json_response(
        errors::status_for(code),
        &errors::envelope_with(code, message),
    ))
}

pub(super) fn json_response(status: StatusCode, v: &Value) -> Resp {
    bytes_response(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

pub(super) fn bytes_response(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
