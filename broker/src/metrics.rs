//! Prometheus metrics, encoded by `prometheus-client` in the classic text
//! exposition format (0.0.4), the one every Prometheus scrapes.
//!
//! Counters and the histogram live in a [`Registry`] built once; the values
//! read at scrape time (connections, sessions, queue depth) go in a small
//! registry built for each scrape, with the same prefix and constant
//! labels. A constant label (a cluster node's name, say) given to
//! [`Metrics::with_const_labels`] is on every series.
//!
//! Counters with a `reason` label are families, shown once they have a
//! series; the hello rejection reasons are created at zero so that
//! dashboards see every series from the start.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use claudemesh_protocol::hello::HelloRejection;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every series name starts with this.
const PREFIX: &str = "claudemesh_broker";

/// Upper bounds (seconds) of the hello verification histogram.
const HELLO_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// Upper bounds (seconds) of the database round-trip histogram: a local
/// commit takes tens of microseconds, a PostgreSQL one a millisecond or
/// more, a struggling server seconds.
const DB_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Upper bounds (seconds) of the cross-node notification lag histogram.
const NOTIFY_LAG_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A label pair; the registry's constant labels are a list of these.
pub type Label = (Cow<'static, str>, Cow<'static, str>);

/// A counter of seconds spent.
pub type SecondsCounter = Counter<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

type ByReason = Family<Reason, Counter>;

/// Which database round trip a `db_round_trip_seconds` sample timed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DbOp {
    /// The writer's COMMIT of one group-commit batch.
    Commit,
    /// `/healthz`'s check (for PostgreSQL a query on a pooled connection);
    /// only checks that succeeded are timed.
    Health,
}

impl DbOp {
    fn as_str(self) -> &'static str {
        match self {
            Self::Commit => "commit",
            Self::Health => "health",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: &'static str,
}

fn db_histogram() -> Histogram {
    Histogram::new(DB_BUCKETS)
}

type ByOp = Family<Op, Histogram, fn() -> Histogram>;

/// All of the broker's metrics. Cheap to update from any thread: each
/// counter is an atomic, each family a map behind a read-write lock.
pub struct Metrics {
    registry: Registry,
    const_labels: Vec<Label>,
    pub connections_accepted: Counter,
    connections_rejected: ByReason,
    /// Unauthenticated connections closed to make room for a newer one.
    pub connections_evicted: Counter,
    pub messages_routed: Counter,
    pub messages_duplicate: Counter,
    pub messages_pushed: Counter,
    pub messages_queued: Counter,
    pub messages_delivered: Counter,
    messages_rejected: ByReason,
    frame_errors: ByReason,
    pub db_commits: Counter,
    pub db_ops: Counter,
    pub db_apply_seconds: SecondsCounter,
    pub db_commit_seconds: SecondsCounter,
    hello_verify: Histogram,
    db_round_trip: ByOp,
    /// Cross-node notifications this node sent (a PostgreSQL `NOTIFY`
    /// telling other nodes about a push, receipt, presence change or
    /// revocation), counted as it hears its own committed ones back.
    pub cluster_notifications_sent: Counter,
    /// Cross-node notifications this node received on its `LISTEN`
    /// connection from other nodes (and the admin CLI's revocations).
    pub cluster_notifications_received: Counter,
    /// From a message's (or receipt's) arrival on another node to its
    /// push (or relay) here; observe with [`Metrics::notify_lag`].
    pub cluster_notify_lag: Histogram,
    /// Reads of the copies other nodes announced that failed (each is
    /// tried again, with backoff, until it succeeds).
    pub cluster_reads_failed: Counter,
    /// Failed reads that a later try completed.
    pub cluster_reads_retried: Counter,
}

/// Live values read at scrape time.
pub struct Gauges {
    pub connections_active: usize,
    pub sessions_listed: usize,
    /// `None` when the database could not be read: the series is left out
    /// rather than reported stale.
    pub queue_depth: Option<i64>,
    /// Connections not authenticated yet, and how many may be open before
    /// the oldest is evicted.
    pub unauthenticated: usize,
    pub unauthenticated_limit: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::with_const_labels(Vec::new())
    }

    /// Metrics whose every series carries `labels` (e.g. `node="b1"`).
    pub fn with_const_labels(labels: Vec<Label>) -> Self {
        let mut registry = Registry::with_prefix_and_labels(PREFIX, labels.iter().cloned());
        let connections_accepted = Counter::default();
        let connections_rejected = ByReason::default();
        let connections_evicted = Counter::default();
        let messages_routed = Counter::default();
        let messages_duplicate = Counter::default();
        let messages_pushed = Counter::default();
        let messages_queued = Counter::default();
        let messages_delivered = Counter::default();
        let messages_rejected = ByReason::default();
        let frame_errors = ByReason::default();
        let db_commits = Counter::default();
        let db_ops = Counter::default();
        let db_apply_seconds = SecondsCounter::default();
        let db_commit_seconds = SecondsCounter::default();
        let hello_verify = Histogram::new(HELLO_BUCKETS);
        let db_round_trip = ByOp::new_with_constructor(db_histogram as fn() -> Histogram);
        let cluster_notifications_sent = Counter::default();
        let cluster_notifications_received = Counter::default();
        let cluster_notify_lag = Histogram::new(NOTIFY_LAG_BUCKETS);
        let cluster_reads_failed = Counter::default();
        let cluster_reads_retried = Counter::default();

        // The crate ends each help text with a full stop.
        let r = &mut registry;
        r.register(
            "connections_accepted",
            "Connections whose hello was accepted",
            connections_accepted.clone(),
        );
        r.register(
            "connections_rejected",
            "Connections refused before or at the hello, by reason",
            connections_rejected.clone(),
        );
        r.register(
            "connections_evicted",
            "Unauthenticated connections closed to make room for a newer one (the oldest goes when the slots are full)",
            connections_evicted.clone(),
        );
        r.register(
            "messages_routed",
            "Sends stored and routed (duplicates excluded)",
            messages_routed.clone(),
        );
        r.register(
            "messages_duplicate",
            "Sends answered as duplicates of an earlier id",
            messages_duplicate.clone(),
        );
        r.register(
            "messages_pushed",
            "Push frames sent to recipient connections (including redeliveries)",
            messages_pushed.clone(),
        );
        r.register(
            "messages_queued",
            "Recipient copies stored for a member with no live connection",
            messages_queued.clone(),
        );
        r.register(
            "messages_delivered",
            "Recipient copies acknowledged by the recipient (client_ack)",
            messages_delivered.clone(),
        );
        r.register(
            "messages_rejected",
            "Sends refused, by error code",
            messages_rejected.clone(),
        );
        r.register(
            "frame_errors",
            "Frames after the handshake answered with an error, by code",
            frame_errors.clone(),
        );
        r.register(
            "db_commits",
            "Group-commit transactions",
            db_commits.clone(),
        );
        r.register(
            "db_writes",
            "Write operations committed (divide by commits for the batch size)",
            db_ops.clone(),
        );
        r.register_with_unit(
            "db_apply",
            "Time the writer spent applying batches (before COMMIT)",
            Unit::Seconds,
            db_apply_seconds.clone(),
        );
        r.register_with_unit(
            "db_commit",
            "Time the writer spent in COMMIT",
            Unit::Seconds,
            db_commit_seconds.clone(),
        );
        r.register_with_unit(
            "hello_verify",
            "Time to verify a hello (all five checks)",
            Unit::Seconds,
            hello_verify.clone(),
        );
        r.register_with_unit(
            "db_round_trip",
            "Database round trips: the writer's COMMIT (op=commit) and the health check (op=health)",
            Unit::Seconds,
            db_round_trip.clone(),
        );
        r.register(
            "cluster_notifications_sent",
            "Notifications sent to the other nodes of the cluster",
            cluster_notifications_sent.clone(),
        );
        r.register(
            "cluster_notifications_received",
            "Notifications received from the nodes of the cluster",
            cluster_notifications_received.clone(),
        );
        r.register_with_unit(
            "cluster_notify_lag",
            "Time from a notification's sending to its handling on this node",
            Unit::Seconds,
            cluster_notify_lag.clone(),
        );
        r.register(
            "cluster_reads_failed",
            "Reads of announced messages that failed (each is tried again)",
            cluster_reads_failed.clone(),
        );
        r.register(
            "cluster_reads_retried",
            "Failed reads of announced messages that a later try completed",
            cluster_reads_retried.clone(),
        );
        for op in [DbOp::Commit, DbOp::Health] {
            let _ = db_round_trip.get_or_create(&Op { op: op.as_str() });
        }

        let reasons = HelloRejection::ALL.iter().map(|r| r.code()).chain([
            "no_hello",
            "hello_timeout",
            "too_many_connections",
            "too_many_open_connections",
            "too_many_unauthenticated_from_ip",
            "untrusted_proxy_header",
            "malformed_proxy_header",
        ]);
        for reason in reasons {
            let _ = connections_rejected.get_or_create(&Reason {
                reason: reason.to_owned(),
            });
        }

        Self {
            registry,
            const_labels: labels,
            connections_accepted,
            connections_rejected,
            connections_evicted,
            messages_routed,
            messages_duplicate,
            messages_pushed,
            messages_queued,
            messages_delivered,
            messages_rejected,
            frame_errors,
            db_commits,
            db_ops,
            db_apply_seconds,
            db_commit_seconds,
            hello_verify,
            db_round_trip,
            cluster_notifications_sent,
            cluster_notifications_received,
            cluster_notify_lag,
            cluster_reads_failed,
            cluster_reads_retried,
        }
    }

    pub fn inc(c: &Counter) {
        c.inc();
    }

    pub fn add(c: &Counter, n: u64) {
        c.inc_by(n);
    }

    /// Adds a duration to a counter of seconds.
    pub fn add_time(c: &SecondsCounter, took: Duration) {
        c.inc_by(took.as_secs_f64());
    }

    pub fn connection_rejected(&self, reason: &str) {
        inc_reason(&self.connections_rejected, reason);
    }

    pub fn message_rejected(&self, reason: &str) {
        inc_reason(&self.messages_rejected, reason);
    }

    pub fn frame_error(&self, code: &str) {
        inc_reason(&self.frame_errors, code);
    }

    pub fn hello_verified(&self, took: Duration) {
        self.hello_verify.observe(took.as_secs_f64());
    }

    /// One database round trip of kind `op` took `took`.
    pub fn db_round_trip(&self, op: DbOp, took: Duration) {
        self.db_round_trip
            .get_or_create(&Op { op: op.as_str() })
            .observe(took.as_secs_f64());
    }

    /// A cross-node notification arrived `lag` after it was sent.
    pub fn notify_lag(&self, lag: Duration) {
        self.cluster_notify_lag.observe(lag.as_secs_f64());
    }

    /// The exposition text: the scrape-time gauges, then everything else.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let live = self.gauge_registry(gauges);
        for registry in [&live, &self.registry] {
            // Writing to a String cannot fail; a failure would be the
            // crate's, and a partial page is still better than none.
            if let Err(e) = encode(&mut out, registry) {
                tracing::warn!(error = %e, "encoding the metrics failed");
            }
        }
        out
    }

    fn gauge_registry(&self, gauges: &Gauges) -> Registry {
        let mut r = Registry::with_prefix_and_labels(PREFIX, self.const_labels.iter().cloned());
        r.register(
            "connections_active",
            "Authenticated WebSocket connections open now",
            ConstGauge::new(count(gauges.connections_active)),
        );
        r.register(
            "sessions_listed",
            "Sessions listed as peers (live or in their grace period)",
            ConstGauge::new(count(gauges.sessions_listed)),
        );
        r.register(
            "connections_unauthenticated",
            "Connections open now that have not authenticated (HTTP requests, WebSockets before their hello)",
            ConstGauge::new(count(gauges.unauthenticated)),
        );
        r.register(
            "connections_unauthenticated_limit",
            "Unauthenticated connections allowed before the oldest is evicted (from the open-file limit)",
            ConstGauge::new(count(gauges.unauthenticated_limit)),
        );
        if let Some(depth) = gauges.queue_depth {
            r.register(
                "queue_depth",
                "Message copies stored and not yet acknowledged by their recipient",
                ConstGauge::new(depth),
            );
        }
        r
    }
}

fn inc_reason(family: &ByReason, reason: &str) {
    family
        .get_or_create(&Reason {
            reason: reason.to_owned(),
        })
        .inc();
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some_gauges() -> Gauges {
        Gauges {
            connections_active: 2,
            sessions_listed: 3,
            queue_depth: Some(4),
            unauthenticated: 3,
            unauthenticated_limit: 472,
        }
    }

    #[test]
    fn renders_every_rejection_reason_and_the_histogram() {
        let m = Metrics::new();
        m.connection_rejected("replayed");
        m.hello_verified(Duration::from_micros(300));
        let text = m.render(&some_gauges());
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

    #[test]
    fn every_family_keeps_its_name_and_type() {
        let m = Metrics::new();
        // A labelled family with no series yet is left out of the page.
        m.message_rejected("unknown_target");
        m.frame_error("malformed");
        let text = m.render(&some_gauges());
        for (name, kind) in [
            ("claudemesh_broker_connections_active", "gauge"),
            ("claudemesh_broker_sessions_listed", "gauge"),
            ("claudemesh_broker_queue_depth", "gauge"),
            ("claudemesh_broker_connections_unauthenticated", "gauge"),
            (
                "claudemesh_broker_connections_unauthenticated_limit",
                "gauge",
            ),
            ("claudemesh_broker_connections_accepted_total", "counter"),
            ("claudemesh_broker_connections_rejected_total", "counter"),
            ("claudemesh_broker_connections_evicted_total", "counter"),
            ("claudemesh_broker_messages_routed_total", "counter"),
            ("claudemesh_broker_messages_duplicate_total", "counter"),
            ("claudemesh_broker_messages_pushed_total", "counter"),
            ("claudemesh_broker_messages_queued_total", "counter"),
            ("claudemesh_broker_messages_delivered_total", "counter"),
            ("claudemesh_broker_messages_rejected_total", "counter"),
            ("claudemesh_broker_frame_errors_total", "counter"),
            ("claudemesh_broker_db_commits_total", "counter"),
            ("claudemesh_broker_db_writes_total", "counter"),
            ("claudemesh_broker_db_apply_seconds_total", "counter"),
            ("claudemesh_broker_db_commit_seconds_total", "counter"),
            ("claudemesh_broker_hello_verify_seconds", "histogram"),
            ("claudemesh_broker_db_round_trip_seconds", "histogram"),
            (
                "claudemesh_broker_cluster_notifications_sent_total",
                "counter",
            ),
            (
                "claudemesh_broker_cluster_notifications_received_total",
                "counter",
            ),
            ("claudemesh_broker_cluster_notify_lag_seconds", "histogram"),
            ("claudemesh_broker_cluster_reads_failed_total", "counter"),
            ("claudemesh_broker_cluster_reads_retried_total", "counter"),
        ] {
            let line = format!("# TYPE {name} {kind}\n");
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
    }

    #[test]
    fn a_missing_queue_depth_is_left_out() {
        let text = Metrics::new().render(&Gauges {
            queue_depth: None,
            ..some_gauges()
        });
        assert!(!text.contains("queue_depth"), "{text}");
        assert!(text.contains("claudemesh_broker_sessions_listed 3"));
    }

    #[test]
    fn labelled_counters_and_seconds_count_up() {
        let m = Metrics::new();
        m.message_rejected("unknown_target");
        m.message_rejected("unknown_target");
        m.frame_error("malformed");
        Metrics::add(&m.db_ops, 5);
        Metrics::add_time(&m.db_commit_seconds, Duration::from_millis(1500));
        let text = m.render(&some_gauges());
        for line in [
            "claudemesh_broker_messages_rejected_total{reason=\"unknown_target\"} 2",
            "claudemesh_broker_frame_errors_total{reason=\"malformed\"} 1",
            "claudemesh_broker_db_writes_total 5",
            "claudemesh_broker_db_commit_seconds_total 1.5",
            "claudemesh_broker_db_apply_seconds_total 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn a_constant_label_is_on_every_series() {
        let m = Metrics::with_const_labels(vec![("node".into(), "b1".into())]);
        m.connection_rejected("replayed");
        m.hello_verified(Duration::from_micros(300));
        let text = m.render(&some_gauges());
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(samples.len() > 20, "{text}");
        for line in samples {
            assert!(line.contains("{node=\"b1\""), "{line}");
        }
        assert!(text.contains(
            "claudemesh_broker_connections_rejected_total{node=\"b1\",reason=\"replayed\"} 1"
        ));
        assert!(text.contains("claudemesh_broker_queue_depth{node=\"b1\"} 4"));
    }

    #[test]
    fn database_round_trips_and_cluster_notifications_are_counted() {
        let m = Metrics::with_const_labels(vec![("node".into(), "n2".into())]);
        m.db_round_trip(DbOp::Commit, Duration::from_micros(800));
        m.db_round_trip(DbOp::Commit, Duration::from_millis(30));
        Metrics::inc(&m.cluster_notifications_sent);
        Metrics::add(&m.cluster_notifications_received, 3);
        m.notify_lag(Duration::from_millis(2));
        let text = m.render(&some_gauges());
        for line in [
            "claudemesh_broker_db_round_trip_seconds_bucket{node=\"n2\",op=\"commit\",le=\"0.001\"} 1",
            "claudemesh_broker_db_round_trip_seconds_bucket{node=\"n2\",op=\"commit\",le=\"0.05\"} 2",
            "claudemesh_broker_db_round_trip_seconds_count{node=\"n2\",op=\"commit\"} 2",
            // The health series exists before its first sample.
            "claudemesh_broker_db_round_trip_seconds_count{node=\"n2\",op=\"health\"} 0",
            "claudemesh_broker_cluster_notifications_sent_total{node=\"n2\"} 1",
            "claudemesh_broker_cluster_notifications_received_total{node=\"n2\"} 3",
            "claudemesh_broker_cluster_notify_lag_seconds_bucket{node=\"n2\",le=\"0.001\"} 0",
            "claudemesh_broker_cluster_notify_lag_seconds_bucket{node=\"n2\",le=\"0.0025\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.frame_error("a\"b\\c\nd");
        let text = m.render(&some_gauges());
        assert!(
            text.contains("claudemesh_broker_frame_errors_total{reason=\"a\\\"b\\\\c\\nd\"} 1"),
            "{text}"
        );
    }
}
