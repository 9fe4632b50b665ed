//! `/metrics` of a real daemon: real TFTP, HTTP boot and API traffic, then a scrape parsed by
//! the OpenMetrics parser of Prometheus' Python client, checking that each counter moved by what the
//! traffic did; and who may read it (Monitor and above; anyone with `--metrics-public`).

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use common::DaemonProcess;
use serde_json::json;

/// Run curl; returns (status, headers and body).
fn curl(args: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed (tests/run installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// The OpenMetrics parser of Prometheus' own Python client (tests/run installs it): a strict
/// parser of the format, run on the scrape; it prints the samples as JSON.
const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = text_string_to_metric_families(sys.stdin.read())
print(json.dumps([[s.name, s.labels, s.value] for f in families for s in f.samples]))
"#;

/// A parsed scrape: (sample name, labels, value).
struct Scrape(Vec<(String, BTreeMap<String, String>, f64)>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut child = Command::new("python3")
            .args(["-c", PARSER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 is installed");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "not a valid OpenMetrics exposition (or prometheus_client is missing: pip install prometheus-client): {}\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        Scrape(serde_json::from_slice(&output.stdout).expect("parser output"))
    }

    /// The sum of the samples `name` whose labels include `labels` (0 when absent).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name)
            .filter(|(_, sample_labels, _)| {
                labels
                    .iter()
                    .all(|(key, value)| sample_labels.get(*key).map(String::as_str) == Some(*value))
            })
            .map(|(_, _, value)| value)
            .sum()
    }

    fn samples<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a (String, BTreeMap<String, String>, f64)> + 'a {
        self.0.iter().filter(move |(sample, _, _)| sample == name)
    }

    fn has(&self, name: &str) -> bool {
        self.samples(name).next().is_some()
    }
}

fn scrape(url: &str, auth: &[&str]) -> Scrape {
    let mut args = auth.to_vec();
    args.push(url);
    let (status, body) = curl(&args);
    assert_eq!(status, 200, "{body}");
    Scrape::parse(&body)
}

#[test]
fn counters_move_with_tftp_http_boot_and_api_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start_with(dir.path(), &["--tftp", "127.0.0.1:0"]);
    let base = format!("http://{}", daemon.listener("http"));
    let token = format!("Authorization: Bearer {}", daemon.admin_token());
    let metrics_url = format!("{base}/metrics");
    let before = scrape(&metrics_url, &["-H", &token]);
    for family in [
        "confluent_dhcp_received_total",
        "confluent_dhcp_replies_total",
        "confluent_sessions",
        "confluent_config_commits_total",
    ] {
        assert!(before.has(family), "{family} is exported");
    }

    // TFTP: one complete transfer and one missing file.
    let tftp_root = daemon.state_dir.join("lib/tftpboot");
    std::fs::write(tftp_root.join("image.bin"), vec![7u8; 10_000]).unwrap();
    let tftp = daemon.listener("tftp");
    let fetched = dir.path().join("fetched.bin");
    let (status, _) = curl(&[
        "-o",
        fetched.to_str().unwrap(),
        &format!("tftp://{tftp}/image.bin"),
    ]);
    assert_eq!(status, 0, "curl reports no HTTP status for TFTP");
    assert_eq!(std::fs::read(&fetched).unwrap().len(), 10_000);
    let missing = Command::new("curl")
        .args(["-sS", "-o", "/dev/null"])
        .arg(format!("tftp://{tftp}/missing.bin"))
        .status()
        .unwrap();
    assert!(!missing.success());

    // HTTP boot: a small file (from memory) and a large one (sendfile on plain HTTP).
    let public = daemon.state_dir.join("lib/public");
    std::fs::write(public.join("small.txt"), b"hello").unwrap();
    std::fs::write(public.join("large.bin"), vec![1u8; 3 << 20]).unwrap();
    let (status, body) = curl(&[&format!("{base}/confluent-public/small.txt")]);
    assert_eq!((status, body.as_str()), (200, "hello"));
    let (status, _) = curl(&[
        "-o",
        "/dev/null",
        &format!("{base}/confluent-public/large.bin"),
    ]);
    assert_eq!(status, 200);

    // API: two listings, one missing node, one node created (a configuration commit).
    for _ in 0..2 {
        assert_eq!(curl(&["-H", &token, &format!("{base}/nodes/")]).0, 200);
    }
    assert_eq!(
        curl(&["-H", &token, &format!("{base}/nodes/nowhere/")]).0,
        404
    );
    let created = curl(&[
        "-H",
        &token,
        "-H",
        "Content-Type: application/json",
        "-X",
        "POST",
        "-d",
        &json!({"name": "n1"}).to_string(),
        &format!("{base}/nodes/"),
    ]);
    assert_eq!(created.0, 200, "{}", created.1);

    let after = scrape(&metrics_url, &["-H", &token]);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    assert_eq!(delta("confluent_tftp_requests_total", &[]), 2.0);
    assert_eq!(
        delta(
            "confluent_tftp_transfers_total",
            &[("outcome", "completed")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "confluent_tftp_transfers_total",
            &[("outcome", "not_found")]
        ),
        1.0
    );
    assert_eq!(delta("confluent_tftp_bytes_total", &[]), 10_000.0);
    assert_eq!(
        delta("confluent_http_boot_transfers_total", &[("kind", "file")]),
        2.0
    );
    assert_eq!(
        delta("confluent_http_boot_bytes_total", &[("sender", "http")]),
        5.0
    );
    assert_eq!(
        delta("confluent_http_boot_bytes_total", &[("sender", "sendfile")]),
        f64::from(3u32 << 20)
    );
    let api = |route: &str, operation: &str, status: &str| {
        delta(
            "confluent_api_requests_total",
            &[
                ("route", route),
                ("operation", operation),
                ("status", status),
            ],
        )
    };
    assert_eq!(api("/nodes/", "retrieve", "200"), 2.0);
    assert_eq!(api("/nodes/{node}/", "retrieve", "404"), 1.0);
    assert_eq!(api("/nodes/", "create", "200"), 1.0);
    assert!(
        after
            .samples("confluent_api_requests_total")
            .all(|(_, labels, _)| !labels["route"].contains("nowhere")),
        "routes are labelled by pattern, never by path"
    );
    assert_eq!(delta("confluent_config_commits_total", &[]), 1.0);
    // The creation is audited: one append to the audit log at least.
    assert!(delta("confluent_event_log_appends_total", &[("log", "audit")]) >= 1.0);
    // No DHCP is served here: its counters exist and stay still.
    assert_eq!(delta("confluent_dhcp_received_total", &[]), 0.0);
}

#[test]
fn monitors_may_read_metrics_stubs_and_anonymous_may_not() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start_https_only(dir.path(), &[]);
    let mut client = daemon.client();
    for (name, role) in [("watcher", "Monitor"), ("stubby", "Stub")] {
        let answer = client
            .request(
                "create",
                "/users/",
                json!({"name": name, "role": role, "password": "a-long-password1"}),
            )
            .unwrap();
        assert!(answer.iter().all(|message| message.get("error").is_none()));
    }
    let https = format!("https://{}/metrics", daemon.listener("https"));
    let ca = daemon.ca_path();
    let ca = ca.to_str().unwrap();
    let get = |extra: &[&str]| {
        let mut args = vec!["--cacert", ca, "-H", "Host: localhost"];
        args.extend_from_slice(extra);
        args.push(&https);
        curl(&args)
    };
    let (status, body) = get(&["-u", "watcher:a-long-password1", "-D", "-"]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{body}"
    );
    // The Monitor's login opened a session: the gauge counts it.
    let text = body.split_once("\r\n\r\n").map_or("", |(_, text)| text);
    assert!(Scrape::parse(text).value("confluent_sessions", &[]) >= 1.0);
    // A Stub user record grants nothing by itself: its login is refused (401); were it let in,
    // authorization would refuse it (the matrix test).
    let stub = get(&["-u", "stubby:a-long-password1"]).0;
    assert!(stub == 401 || stub == 403, "stub got {stub}");
    assert_eq!(get(&[]).0, 401);
    // Plain HTTP serves only the boot paths by default.
    let plain = format!("http://{}/metrics", daemon.listener("http"));
    assert_eq!(curl(&[&plain]).0, 403);
}

#[test]
fn metrics_public_serves_anyone_on_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start_https_only(dir.path(), &["--metrics-public"]);
    let plain = format!("http://{}/metrics", daemon.listener("http"));
    let scraped = scrape(&plain, &[]);
    assert!(scraped.has("confluent_tftp_requests_total"));
    // The rest of the API stays closed on plain HTTP.
    let nodes = format!("http://{}/nodes/", daemon.listener("http"));
    assert_eq!(curl(&[&nodes]).0, 403);
}
