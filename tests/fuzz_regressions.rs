//! Replays the fuzz targets' committed inputs through the very functions the fuzzer runs
//! (`fuzz/src/harness.rs`), so the harnesses and every minimised finding stay checked by
//! the normal test suite. Seeds: `fuzz/seeds/<target>/`; `fuzz/regressions/<target>/` holds
//! minimised findings and a sample of the corpus the fuzzer grew; the named tests below pin
//! each bug found. Run the fuzzer itself with `scripts/fuzz.sh`.

#[allow(dead_code)]
#[path = "../fuzz/src/harness.rs"]
mod harness;

use std::path::Path;

/// Every file of `fuzz/seeds/<target>` and `fuzz/regressions/<target>`, with its name.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.expect("readable directory").path();
            let bytes = std::fs::read(&path).expect("readable input");
            out.push((path.display().to_string(), bytes));
        }
    }
    out.sort();
    out
}

fn replay(target: &str, run: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no committed inputs for {target}");
    for (name, bytes) in inputs {
        if std::panic::catch_unwind(|| run(&bytes)).is_err() {
            panic!("{target}: {name} fails");
        }
    }
}

#[test]
fn data_endpoint_inputs_replay() {
    replay("data_endpoint", harness::data_endpoint);
}

#[test]
fn webhook_envelope_inputs_replay() {
    replay("webhook_envelope", harness::webhook_envelope);
}

#[test]
fn csv_row_inputs_replay() {
    replay("csv_row", harness::csv_row);
}

#[test]
fn flow_json_inputs_replay() {
    replay("flow_json", harness::flow_json);
}

#[test]
fn phone_inputs_replay() {
    replay("phone", harness::phone);
}

#[test]
fn empty_inputs_are_harmless() {
    for run in [
        harness::data_endpoint,
        harness::webhook_envelope,
        harness::csv_row,
        harness::flow_json,
        harness::phone,
    ] {
        run(b"");
        run(b"\x00");
        run(b"\x01");
    }
}

/// A webhook `timestamp` after year 9999 (e.g. milliseconds sent where seconds are due) was
/// stored as `+10000-01-01T…`, which sorts before every real date: such a status or
/// completion escaped `export --since` and stats ranges. It now falls back to the time of
/// reception, like a missing timestamp; before year 0 likewise.
#[test]
fn webhook_timestamp_outside_years_0_to_9999_is_not_stored_as_is() {
    assert_eq!(
        flowctl::time::from_unix(253_402_300_799).as_deref(),
        Some("9999-12-31T23:59:59.000Z")
    );
    assert_eq!(flowctl::time::from_unix(253_402_300_800), None);
    assert_eq!(
        flowctl::time::from_unix(-62_167_219_200).as_deref(),
        Some("0000-01-01T00:00:00.000Z")
    );
    assert_eq!(flowctl::time::from_unix(-62_167_219_201), None);
    for ts in ["253402300800", "1767225600000", "-62167219201"] {
        let body = format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"changes":[{{"field":"messages","value":{{
                "statuses":[{{"id":"wamid.A","status":"sent","timestamp":"{ts}"}}],
                "messages":[{{"id":"wamid.B","from":"33612345678","timestamp":{ts},"type":"interactive",
                  "interactive":{{"type":"nfm_reply","nfm_reply":{{"response_json":"{{}}"}}}}}}]}}}}]}}]}}"#
        );
        harness::webhook_envelope(body.as_bytes());
    }
}
