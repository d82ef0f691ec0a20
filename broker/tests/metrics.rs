//! `/metrics` serves valid Prometheus text exposition (format 0.0.4):
//! after real traffic (sessions, a message, refused sends, a refused hello,
//! a bad frame), every line of the page is a comment or a sample that a
//! Prometheus scrape would take, and every family has its HELP and TYPE
//! before its samples. On PostgreSQL (a cluster's store) every series
//! carries the node's id as a `node` label.

mod common;

use std::collections::{HashMap, HashSet};

use claudemesh_protocol::wire::ConnectionRole;
use common::*;

both_stores!(metrics_page_is_valid_exposition_text_after_traffic);

/// The node id the PostgreSQL run gives its broker.
const NODE: &str = "node-7";

async fn metrics_page_is_valid_exposition_text_after_traffic(backend: Backend) {
    let b = TestBroker::start_on(backend, |c| c.node_id = Some(NODE.to_owned())).await;
    // `series("x", "a=\"b\"")` is `x{a="b"}`, with the node label first
    // on PostgreSQL.
    let series = |name: &str, labels: &str| {
        let mut all: Vec<String> = Vec::new();
        if backend == Backend::Postgres {
            all.push(format!("node=\"{NODE}\""));
        }
        if !labels.is_empty() {
            all.push(labels.to_owned());
        }
        if all.is_empty() {
            name.to_owned()
        } else {
            format!("{name}{{{}}}", all.join(","))
        }
    };
    let alice = b.member("alice");
    let bob = b.member("bob");
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    let (mut bo, _) = b.session(&bob, "b1", "bob").await;
    a.send(send_frame("m1", "bob", vec![alice.envelope(&bob, "hi")]))
        .await;
    bo.recv_type("push").await;
    a.send(send_frame(
        "m2",
        "nobody",
        vec![alice.envelope(&bob, "lost")],
    ))
    .await;
    assert_eq!(a.recv_type("error").await["code"], "unknown_target");
    a.send_text("{\"type\":\"no_such_frame\"}".into()).await;
    a.recv_type("error").await;
    // A hello replayed on a second connection is refused.
    let hello = alice.hello_frame("a2", Some("alice2"), ConnectionRole::Session, fresh_ts());
    let mut first = b.connect().await;
    first.send(hello.clone()).await;
    assert_eq!(first.recv().await["type"], "hello_ack");
    let mut second = b.connect().await;
    second.send(hello).await;
    assert_eq!(second.recv().await["code"], "replayed");

    let (status, text) = http(b.addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let page = Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (family, kind) in [
        ("claudemesh_broker_connections_active", "gauge"),
        ("claudemesh_broker_sessions_listed", "gauge"),
        ("claudemesh_broker_queue_depth", "gauge"),
        ("claudemesh_broker_connections_accepted_total", "counter"),
        ("claudemesh_broker_connections_rejected_total", "counter"),
        ("claudemesh_broker_messages_routed_total", "counter"),
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
    ] {
        assert_eq!(
            page.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    assert_eq!(
        page.value(&series(
            "claudemesh_broker_connections_rejected_total",
            "reason=\"replayed\""
        )),
        Some(1.0)
    );
    assert_eq!(
        page.value(&series(
            "claudemesh_broker_messages_rejected_total",
            "reason=\"unknown_target\""
        )),
        Some(1.0)
    );
    assert_eq!(
        page.value(&series("claudemesh_broker_messages_routed_total", "")),
        Some(1.0)
    );
    assert_eq!(
        page.value(&series("claudemesh_broker_connections_accepted_total", "")),
        Some(3.0)
    );
    assert_eq!(
        page.value(&series(
            "claudemesh_broker_hello_verify_seconds_bucket",
            "le=\"+Inf\""
        )),
        page.value(&series("claudemesh_broker_hello_verify_seconds_count", "")),
    );
    // The message was committed: at least one timed COMMIT.
    let commits = page
        .value(&series(
            "claudemesh_broker_db_round_trip_seconds_count",
            "op=\"commit\"",
        ))
        .unwrap_or_else(|| panic!("no commit round trips in\n{text}"));
    assert!(commits >= 1.0, "{text}");
    // A health check that answered is timed too.
    let (status, _) = http(b.addr, "GET", "/healthz", None).await;
    assert_eq!(status, 200);
    let (_, text) = http(b.addr, "GET", "/metrics", None).await;
    let page = Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        page.value(&series(
            "claudemesh_broker_db_round_trip_seconds_count",
            "op=\"health\""
        )),
        Some(1.0),
        "{text}"
    );
    let node_label = format!("node=\"{NODE}\"");
    let labelled = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.contains(&node_label))
        .count();
    let samples = text.lines().filter(|l| !l.starts_with('#')).count();
    match backend {
        Backend::Postgres | Backend::Cluster => assert_eq!(labelled, samples, "{text}"),
        Backend::Sqlite => assert_eq!(labelled, 0, "{text}"),
    }
}

/// A parsed page: each family's type, and each series' value.
struct Exposition {
    types: HashMap<String, String>,
    values: HashMap<String, f64>,
}

impl Exposition {
    fn value(&self, series: &str) -> Option<f64> {
        self.values.get(series).copied()
    }

    /// Checks the page line by line against the text format: HELP and
    /// TYPE once per family and before its samples, a family's samples
    /// together, valid names, labels and values, no series twice, and
    /// histogram buckets cumulative up to `+Inf` = `_count`.
    fn parse(text: &str) -> Result<Self, String> {
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helped: HashSet<String> = HashSet::new();
        let mut finished: HashSet<String> = HashSet::new();
        let mut current: Option<String> = None;
        let mut values: HashMap<String, f64> = HashMap::new();
        let mut buckets: HashMap<(String, String), Vec<(f64, f64)>> = HashMap::new();
        if !text.ends_with('\n') {
            return Err("the page does not end with a newline".into());
        }
        for (n, line) in text.lines().enumerate() {
            let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest
                    .split_once(' ')
                    .ok_or_else(|| at("no help text".into()))?;
                check_name(name).map_err(at)?;
                if !helped.insert(name.to_owned()) {
                    return Err(at("a second HELP".into()));
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or_else(|| at("no type".into()))?;
                check_name(name).map_err(at)?;
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return Err(at(format!("unknown type {kind}")));
                }
                if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                    return Err(at("a second TYPE".into()));
                }
                if values.keys().any(|k| family_of(k, &types) == name) {
                    return Err(at("TYPE after the family's samples".into()));
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, name, labels, value) = parse_sample(line).map_err(at)?;
            let family = family_of(&series, &types);
            if !types.contains_key(&family) || !helped.contains(&family) {
                return Err(at(format!(
                    "no HELP and TYPE before the samples of {family}"
                )));
            }
            if current.as_deref() != Some(&family) {
                if finished.contains(&family) {
                    return Err(at(format!("the samples of {family} are not together")));
                }
                if let Some(done) = current.replace(family.clone()) {
                    finished.insert(done);
                }
            }
            if values.insert(series.clone(), value).is_some() {
                return Err(at("the same series twice".into()));
            }
            if types[&family] == "histogram" && name.ends_with("_bucket") {
                let le = labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .ok_or_else(|| at("a bucket without `le`".into()))?;
                let bound = parse_value(&le.1).map_err(at)?;
                // One histogram per label set (`le` aside).
                let others: Vec<String> = labels
                    .iter()
                    .filter(|(k, _)| k != "le")
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                let set = if others.is_empty() {
                    String::new()
                } else {
                    format!("{{{}}}", others.join(","))
                };
                buckets
                    .entry((family.clone(), set))
                    .or_default()
                    .push((bound, value));
            }
        }
        for ((family, set), list) in &buckets {
            if list.windows(2).any(|w| w[0].0 >= w[1].0 || w[0].1 > w[1].1) {
                return Err(format!(
                    "{family}{set}: buckets not increasing and cumulative"
                ));
            }
            let last = list.last().copied().unwrap_or((0.0, 0.0));
            let count = values.get(&format!("{family}_count{set}")).copied();
            if last.0 != f64::INFINITY || Some(last.1) != count {
                return Err(format!("{family}{set}: no +Inf bucket equal to _count"));
            }
        }
        Ok(Self { types, values })
    }
}

/// The family a series belongs to: its name, or for a histogram's
/// `_bucket`, `_sum` and `_count` the histogram's name.
fn family_of(series: &str, types: &HashMap<String, String>) -> String {
    let name = series.split('{').next().unwrap_or(series);
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram")
        {
            return base.to_owned();
        }
    }
    name.to_owned()
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| format!("bad value {v:?}")),
    }
}

type Sample = (String, String, Vec<(String, String)>, f64);

/// `name{k="v",…} value`: the series (name and labels as written), the
/// name, the unescaped labels and the value.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or_else(|| "no value".to_owned())?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = body
                .split_once("=\"")
                .ok_or_else(|| "a label without =\"".to_owned())?;
            if key.is_empty()
                || key.starts_with(|c: char| c.is_ascii_digit())
                || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(format!("bad label name {key:?}"));
            }
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err("a bad escape in a label value".into()),
                    },
                    Some((_, '\n')) => return Err("a raw newline in a label value".into()),
                    Some((_, c)) => value.push(c),
                    None => return Err("an unterminated label value".into()),
                }
            };
            labels.push((key.to_owned(), value));
            body = &after[end + 1..];
            body = body.strip_prefix(',').unwrap_or(body);
        }
    }
    let series = line[..line.len() - rest.len()].to_owned();
    let fields: Vec<&str> = rest
        .strip_prefix(' ')
        .ok_or_else(|| "no space before the value".to_owned())?
        .split(' ')
        .collect();
    let value = match fields.as_slice() {
        [v] => parse_value(v)?,
        [v, ts] => {
            ts.parse::<i64>()
                .map_err(|_| format!("bad timestamp {ts:?}"))?;
            parse_value(v)?
        }
        _ => return Err("extra fields after the value".into()),
    };
    Ok((series, name.to_owned(), labels, value))
}

#[test]
fn the_checker_refuses_broken_pages() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{r=\"x\\\"y\"} 1\n";
    assert!(Exposition::parse(good).is_ok());
    for bad in [
        "a_total 1\n",
        "# TYPE a_total counter\na_total 1\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total one\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total{r=\"x} 1\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1\na_total 2\n",
        "# HELP a A.\n# TYPE a gauge\na 1\n# HELP b B.\n# TYPE b gauge\nb 1\na{x=\"1\"} 2\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP 1a A.\n# TYPE 1a gauge\n1a 1\n",
    ] {
        assert!(Exposition::parse(bad).is_err(), "accepted {bad:?}");
    }
}
