//! Counters for `GET /metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Process-wide counters. Cheap: one short lock per increment.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl Metrics {
    /// Adds one to `name{labels}`; `labels` is the rendered label set (`route="/api/flow"`).
    pub fn inc(&self, name: &'static str, labels: String) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry((name, labels)).or_insert(0) += 1;
    }

    /// One request answered.
    pub fn request(&self, route: &str, status: u16) {
        self.inc(
            "flowctl_http_requests_total",
            format!("route=\"{route}\",status=\"{status}\""),
        );
    }

    /// The current value of a counter (tests, health output).
    pub fn get(&self, name: &'static str, labels: &str) -> u64 {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.get(&(name, labels.to_string())).copied().unwrap_or(0)
    }

    /// Every counter in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let mut last = "";
        for ((name, labels), v) in c.iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.request("/api/flow", 200);
        m.request("/api/flow", 200);
        m.inc("flowctl_decrypt_failures_total", String::new());
        let text = m.render();
        assert!(text.contains("# TYPE flowctl_http_requests_total counter"));
        assert!(text.contains("flowctl_http_requests_total{route=\"/api/flow\",status=\"200\"} 2"));
        assert!(text.contains("flowctl_decrypt_failures_total 1"));
        assert_eq!(
            m.get(
                "flowctl_http_requests_total",
                "route=\"/api/flow\",status=\"200\""
            ),
            2
        );
    }
}
