//! Prometheus metrics, written by hand in the text exposition format: a
//! handful of counters, gauges and one histogram do not justify a metrics
//! crate and its dependencies.
//!
//! Counters with a `reason` label keep their reasons in a small map; the
//! hello rejection reasons are pre-registered at zero so that dashboards
//! see every series from the start.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use claudemesh_protocol::hello::HelloRejection;

/// Upper bounds (seconds) of the hello verification histogram.
const HELLO_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

#[derive(Default)]
struct Labelled(Mutex<BTreeMap<String, u64>>);

impl Labelled {
    fn inc(&self, label: &str) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(label.to_owned()).or_insert(0) += 1;
        }
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; HELLO_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// All of the broker's metrics.
#[derive(Default)]
pub struct Metrics {
    pub connections_accepted: AtomicU64,
    connections_rejected: Labelled,
    pub messages_routed: AtomicU64,
    pub messages_duplicate: AtomicU64,
    pub messages_pushed: AtomicU64,
    pub messages_queued: AtomicU64,
    pub messages_delivered: AtomicU64,
    messages_rejected: Labelled,
    frame_errors: Labelled,
    pub db_commits: AtomicU64,
    pub db_ops: AtomicU64,
    pub db_apply_nanos: AtomicU64,
    pub db_commit_nanos: AtomicU64,
    hello_verify: Histogram,
}

/// Live values read at scrape time.
pub struct Gauges {
    pub connections_active: usize,
    pub sessions_listed: usize,
    pub queue_depth: Option<i64>,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    pub fn new() -> Self {
        let m = Self::default();
        if let Ok(mut map) = m.connections_rejected.0.lock() {
            for r in HelloRejection::ALL {
                map.insert(r.code().to_owned(), 0);
            }
            for r in ["no_hello", "hello_timeout", "too_many_connections"] {
                map.insert(r.to_owned(), 0);
            }
        }
        m
    }

    pub fn inc(c: &AtomicU64) {
        add(c, 1);
    }

    pub fn add(c: &AtomicU64, n: u64) {
        add(c, n);
    }

    pub fn connection_rejected(&self, reason: &str) {
        self.connections_rejected.inc(reason);
    }

    pub fn message_rejected(&self, reason: &str) {
        self.messages_rejected.inc(reason);
    }

    pub fn frame_error(&self, code: &str) {
        self.frame_errors.inc(code);
    }

    pub fn hello_verified(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (i, bound) in HELLO_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                add(&self.hello_verify.buckets[i], 1);
            }
        }
        add(&self.hello_verify.count, 1);
        add(
            &self.hello_verify.sum_nanos,
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        );
    }

    /// The exposition text.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let gauge = |out: &mut String, name: &str, help: &str, v: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            &mut out,
            "claudemesh_broker_connections_active",
            "Authenticated WebSocket connections open now.",
            gauges.connections_active.to_string(),
        );
        gauge(
            &mut out,
            "claudemesh_broker_sessions_listed",
            "Sessions listed as peers (live or in their grace period).",
            gauges.sessions_listed.to_string(),
        );
        if let Some(depth) = gauges.queue_depth {
            gauge(
                &mut out,
                "claudemesh_broker_queue_depth",
                "Message copies stored and not yet acknowledged by their recipient.",
                depth.to_string(),
            );
        }
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let labelled = |out: &mut String, name: &str, help: &str, l: &Labelled| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (reason, v) in l.snapshot() {
                let _ = writeln!(out, "{name}{{reason=\"{}\"}} {v}", escape(&reason));
            }
        };
        counter(
            &mut out,
            "claudemesh_broker_connections_accepted_total",
            "Connections whose hello was accepted.",
            get(&self.connections_accepted),
        );
        labelled(
            &mut out,
            "claudemesh_broker_connections_rejected_total",
            "Connections refused before or at the hello, by reason.",
            &self.connections_rejected,
        );
        counter(
            &mut out,
            "claudemesh_broker_messages_routed_total",
            "Sends stored and routed (duplicates excluded).",
            get(&self.messages_routed),
        );
        counter(
            &mut out,
            "claudemesh_broker_messages_duplicate_total",
            "Sends answered as duplicates of an earlier id.",
            get(&self.messages_duplicate),
        );
        counter(
            &mut out,
            "claudemesh_broker_messages_pushed_total",
            "Push frames sent to recipient connections (including redeliveries).",
            get(&self.messages_pushed),
        );
        counter(
            &mut out,
            "claudemesh_broker_messages_queued_total",
            "Recipient copies stored for a member with no live connection.",
            get(&self.messages_queued),
        );
        counter(
            &mut out,
            "claudemesh_broker_messages_delivered_total",
            "Recipient copies acknowledged by the recipient (client_ack).",
            get(&self.messages_delivered),
        );
        labelled(
            &mut out,
            "claudemesh_broker_messages_rejected_total",
            "Sends refused, by error code.",
            &self.messages_rejected,
        );
        labelled(
            &mut out,
            "claudemesh_broker_frame_errors_total",
            "Frames after the handshake answered with an error, by code.",
            &self.frame_errors,
        );
        counter(
            &mut out,
            "claudemesh_broker_db_commits_total",
            "Group-commit transactions.",
            get(&self.db_commits),
        );
        counter(
            &mut out,
            "claudemesh_broker_db_writes_total",
            "Write operations committed (divide by commits for the batch size).",
            get(&self.db_ops),
        );
        let secs = |c: &AtomicU64| get(c) as f64 / 1e9;
        let _ = writeln!(
            out,
            "# HELP claudemesh_broker_db_apply_seconds_total Time the writer spent applying batches (before COMMIT).\n# TYPE claudemesh_broker_db_apply_seconds_total counter\nclaudemesh_broker_db_apply_seconds_total {}",
            secs(&self.db_apply_nanos)
        );
        let _ = writeln!(
            out,
            "# HELP claudemesh_broker_db_commit_seconds_total Time the writer spent in COMMIT.\n# TYPE claudemesh_broker_db_commit_seconds_total counter\nclaudemesh_broker_db_commit_seconds_total {}",
            secs(&self.db_commit_nanos)
        );
        let h = &self.hello_verify;
        let name = "claudemesh_broker_hello_verify_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to verify a hello (all five checks).\n# TYPE {name} histogram"
        );
        for (i, bound) in HELLO_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                get(&h.buckets[i])
            );
        }
        let count = get(&h.count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", get(&h.sum_nanos) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_rejection_reason_and_the_histogram() {
        let m = Metrics::new();
        m.connection_rejected("replayed");
        m.hello_verified(Duration::from_micros(300));
        let text = m.render(&Gauges {
            connections_active: 2,
            sessions_listed: 3,
            queue_depth: Some(4),
        });
        assert!(
            text.contains("claudemesh_broker_connections_rejected_total{reason=\"replayed\"} 1")
        );
        assert!(
            text.contains(
                "claudemesh_broker_connections_rejected_total{reason=\"timestamp_skew\"} 0"
            )
        );
        assert!(text.contains("claudemesh_broker_hello_verify_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("claudemesh_broker_hello_verify_seconds_bucket{le=\"0.00025\"} 0"));
        assert!(text.contains("claudemesh_broker_queue_depth 4"));
    }
}
