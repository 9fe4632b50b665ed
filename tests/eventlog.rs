//! The event log in a real daemon: the audit trail of API requests (and that it survives
//! SIGKILL), daemon start/stop records, queries over the tree, the `confluent events` and
//! `nodeboottimeline` commands, live streams over the unix socket and the WebSocket, and syslog
//! forwarding from the daemon's command line.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::DaemonProcess;
use confluent::eventlog::{Event, LogOptions, writer::BulkWriter};
use serde_json::{Value, json};

fn events_of(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .filter_map(|message| message.get("event").cloned())
        .collect()
}

fn confluent(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_confluent"))
        .args(args)
        .env("CONFLUENT_HOST", socket)
        .output()
        .expect("run confluent");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn audit_trail_of_changes_survives_sigkill_and_daemon_start_stop_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start(dir.path());
    let mut client = daemon.client();
    for index in 0..20 {
        let reply = client
            .request(
                "create",
                "/nodes/",
                json!({"name": format!("n{index}"), "bmcpass": "secret"}),
            )
            .unwrap();
        assert!(
            reply.iter().all(|message| message.get("error").is_none()),
            "{reply:?}"
        );
    }
    // A failing change is audited with its outcome; a read is not audited.
    let reply = client
        .request("delete", "/nodes/nosuch", json!({}))
        .unwrap();
    assert_eq!(reply[0]["errorcode"], 404);
    client.request("retrieve", "/nodes/", json!({})).unwrap();
    // Every acknowledged change had its audit record made durable first: SIGKILL loses none.
    daemon.kill();

    let daemon = DaemonProcess::start(dir.path());
    let mut client = daemon.client();
    let audit = events_of(
        &client
            .request(
                "retrieve",
                "/events/audit",
                json!({"order": "oldest", "limit": "1000"}),
            )
            .unwrap(),
    );
    assert_eq!(audit.len(), 21, "{audit:#?}");
    let first = &audit[0];
    assert_eq!(first["type"], "api.request");
    assert_eq!(first["v"], 1);
    assert!(first["user"].as_str().unwrap().starts_with("uid="));
    assert_eq!(first["detail"]["operation"], "create");
    assert_eq!(first["detail"]["target"], "/nodes/");
    assert_eq!(first["detail"]["outcome"], "ok");
    // Parameter names only: values such as passwords never reach the log.
    assert_eq!(first["detail"]["parameters"], json!(["bmcpass", "name"]));
    assert!(
        !std::fs::read_dir(dir.path().join("log/audit"))
            .unwrap()
            .any(|entry| std::fs::read(entry.unwrap().path())
                .unwrap()
                .windows(6)
                .any(|w| w == b"secret"))
    );
    assert_eq!(audit[20]["detail"]["outcome"]["status"], 404);

    let starts = events_of(
        &client
            .request(
                "retrieve",
                "/events/log",
                json!({"types": "daemon.*", "order": "oldest"}),
            )
            .unwrap(),
    );
    let kinds: Vec<&str> = starts
        .iter()
        .map(|record| record["type"].as_str().unwrap())
        .collect();
    // The killed daemon never recorded its stop.
    assert_eq!(kinds, vec!["daemon.start", "daemon.start"]);
    assert!(daemon.stop().success());
    let daemon = DaemonProcess::start(dir.path());
    let starts = events_of(
        &daemon
            .client()
            .request(
                "retrieve",
                "/events/log",
                json!({"types": ["daemon.start", "daemon.stop"], "order": "oldest"}),
            )
            .unwrap(),
    );
    let kinds: Vec<&str> = starts
        .iter()
        .map(|record| record["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "daemon.start",
            "daemon.start",
            "daemon.stop",
            "daemon.start"
        ]
    );
}

#[test]
fn denied_requests_are_audited() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this test runs a client as another user: run the suite as root (tests/run does in CI)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let daemon = DaemonProcess::start(dir.path());
    let output = {
        use std::os::unix::process::CommandExt;
        Command::new(env!("CARGO_BIN_EXE_confluent"))
            .args(["nodelist"])
            .env("CONFLUENT_HOST", daemon.socket())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    assert!(!output.status.success());
    // Not a durable append (the peer is unauthenticated): poll until written.
    let deadline = Instant::now() + Duration::from_secs(10);
    let audit = loop {
        let audit = events_of(
            &daemon
                .client()
                .request("retrieve", "/events/audit", json!({"types": "api.denied"}))
                .unwrap(),
        );
        if !audit.is_empty() || Instant::now() > deadline {
            break audit;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["user"], "uid=65534");
    assert_eq!(audit[0]["detail"]["allowed"], false);
    assert_eq!(audit[0]["detail"]["outcome"]["status"], 401);
    assert_eq!(audit[0]["detail"]["transport"], "socket");
    // And over HTTP without credentials.
    let address = daemon.listener("http");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"GET /nodes/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let audit = events_of(
            &daemon
                .client()
                .request(
                    "retrieve",
                    "/events/audit",
                    json!({"types": "api.denied", "text": "http"}),
                )
                .unwrap(),
        );
        if let Some(record) = audit.first() {
            assert_eq!(record["user"], "anonymous");
            assert_eq!(record["detail"]["target"], "/nodes/");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no audit record of the HTTP denial"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn events_cli_queries_follows_and_shows_boot_timelines() {
    let dir = tempfile::tempdir().unwrap();
    // Boot steps written before the daemon starts, as the network boot services will.
    let now = confluent::eventlog::timestamp::now_ms();
    let mut bulk = BulkWriter::open(
        "events",
        &dir.path().join("log/events"),
        LogOptions::default(),
    )
    .unwrap();
    for (offset, kind, node) in [
        (0, "dhcp.discover", "n1"),
        (12, "dhcp.offer", "n1"),
        (40, "dhcp.discover", "n2"),
        (1500, "tftp.read", "n1"),
        (1600, "http.get", "n1"),
    ] {
        bulk.append(
            Event::new(kind, json!({"file": "boot.ipxe"}))
                .node(node)
                .at(now - 60_000 + offset),
        )
        .unwrap();
    }
    bulk.finish().unwrap();
    let daemon = DaemonProcess::start(dir.path());
    let socket = daemon.socket();
    daemon
        .client()
        .request("create", "/noderange/", json!({"name": "n[1-3]"}))
        .unwrap();

    let (code, stdout, stderr) = confluent(&socket, &["nodeboottimeline", "n1-n3"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 8, "{stdout}");
    assert!(
        lines[0].starts_with("n1: ")
            && lines[0].contains(" +0ms dhcp.discover {\"file\":\"boot.ipxe\"}"),
        "{stdout}"
    );
    assert!(lines[1].contains(" +12ms dhcp.offer"), "{stdout}");
    assert!(lines[3].contains(" +100ms http.get"), "{stdout}");
    assert!(
        lines[4].starts_with("n1: last step http.get after 1600 ms, "),
        "{stdout}"
    );
    assert!(
        lines[5].starts_with("n2: ") && lines[5].contains("dhcp.discover"),
        "{stdout}"
    );
    assert!(
        lines[6].starts_with("n2: last step dhcp.discover after 0 ms"),
        "{stdout}"
    );
    assert_eq!(lines[7], "n3: no boot events recorded");

    let (code, stdout, stderr) = confluent(
        &socket,
        &["events", "-n", "n1", "-t", "dhcp.*", "--limit", "1"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains(" dhcp.offer n1 {\"file\":\"boot.ipxe\"}"),
        "{stdout}"
    );
    let (code, _, stderr) = confluent(&socket, &["events", "-s", "yesterday-ish"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("is not a time"), "{stderr}");

    // Follow the audit log: earlier records first, then new ones as they are written.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_confluent"))
        .args(["events", "-a", "-f"])
        .env("CONFLUENT_HOST", &socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains(" api.request user=uid="), "{first}");
    daemon
        .client()
        .request(
            "update",
            "/noderange/n2/attributes/all",
            json!({"location.rack": "4"}),
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let followed = lines.next().unwrap().unwrap();
    assert!(Instant::now() < deadline);
    assert!(
        followed.contains("\"target\":\"/noderange/n2/attributes/all\""),
        "{followed}"
    );
    follower.kill().unwrap();
    follower.wait().unwrap();
}

#[test]
fn unix_socket_and_websocket_streams_deliver_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start(dir.path());
    daemon
        .client()
        .request("create", "/noderange/", json!({"name": "n[1-2]"}))
        .unwrap();
    let socket = daemon.socket();

    // `start /events/audit` over the unix socket, filtered by type.
    let (sender, received) = std::sync::mpsc::channel();
    let stream_socket = socket.clone();
    std::thread::spawn(move || {
        let mut client = confluent::cli::client::Client::connect_to(&stream_socket).unwrap();
        let _ = client.stream(
            "start",
            "/events/audit",
            json!({"types": ["api.request"]}),
            |message| sender.send(message).is_ok(),
        );
    });
    // The stream has no backlog: wait until it is attached by retrying a change until seen.
    let address = daemon.listener("http");
    let token = daemon.admin_token();
    let mut api = daemon.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    let streamed = loop {
        api.request(
            "update",
            "/noderange/n1/attributes/all",
            json!({"location.rack": "1"}),
        )
        .unwrap();
        if let Ok(message) = received.recv_timeout(Duration::from_millis(200)) {
            break message;
        }
        assert!(Instant::now() < deadline, "nothing streamed");
    };
    assert_eq!(
        streamed["event"]["detail"]["target"],
        "/noderange/n1/attributes/all"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
        let mut request = format!("ws://{address}/sessions/current/async")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("websocket upgrade");
        async fn text<S>(socket: &mut S) -> String
        where
            S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
        {
            loop {
                let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
                    .await
                    .expect("a frame within 10 s")
                    .expect("stream open")
                    .expect("valid frame");
                if let Message::Text(text) = message {
                    return text.to_string();
                }
            }
        }
        assert!(text(&mut socket).await.starts_with(" ASYNCID: "));
        // With a backlog from the start of time: the daemon's own start record comes first.
        socket
            .send(Message::Text(r#"!{"operation": "subscribe", "log": "events", "types": ["daemon.*"], "since": "0"}"#.into()))
            .await
            .unwrap();
        let reply: Value = serde_json::from_str(&text(&mut socket).await[1..]).unwrap();
        assert_eq!(reply["subscribed"]["log"], "events");
        let record: Value = serde_json::from_str(&text(&mut socket).await[1..]).unwrap();
        assert_eq!(record["event"]["type"], "daemon.start");
        // Then the audit log, live (a new subscribe replaces the previous one).
        socket
            .send(Message::Text(r#"!{"operation": "subscribe", "log": "audit", "types": "api.*"}"#.into()))
            .await
            .unwrap();
        let reply: Value = serde_json::from_str(&text(&mut socket).await[1..]).unwrap();
        assert_eq!(reply["subscribed"]["log"], "audit");
        let mut api = confluent::cli::client::Client::connect_to(&dir.path().join("run/api.sock")).unwrap();
        api.request("update", "/noderange/n2/attributes/all", json!({"location.rack": "2"}))
            .unwrap();
        let record: Value = serde_json::from_str(&text(&mut socket).await[1..]).unwrap();
        assert_eq!(record["event"]["detail"]["target"], "/noderange/n2/attributes/all");
        socket
            .send(Message::Text(r#"!{"operation": "subscribe", "log": "nosuch"}"#.into()))
            .await
            .unwrap();
        assert!(text(&mut socket).await.contains("no log named nosuch"));
    });
}

#[test]
fn syslog_option_forwards_audit_records_over_udp() {
    let collector = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let target = format!("udp://{}", collector.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start_with(dir.path(), &["--syslog", &target]);
    daemon
        .client()
        .request("create", "/nodes/", json!({"name": "n1"}))
        .unwrap();
    // The daemon's start record comes too (the forwarder subscribes before start-up ends).
    let mut buffer = [0u8; 9000];
    let mut next = || {
        let length = collector.recv(&mut buffer).expect("a syslog datagram");
        String::from_utf8_lossy(&buffer[..length]).into_owned()
    };
    let mut messages = vec![next(), next()];
    messages.sort();
    assert!(
        messages[1].starts_with("<30>1 ")
            && messages[1].contains(" daemon.start [confluent@32473 log=\"events\" seq=\"1\"] "),
        "{messages:?}"
    );
    let message = messages.swap_remove(0);
    assert!(message.starts_with("<109>1 "), "{message}");
    assert!(message.contains(" confluent "), "{message}");
    assert!(
        message.contains(" api.request [confluent@32473 log=\"audit\" seq=\"1\" user=\"uid="),
        "{message}"
    );
    let payload: Value = serde_json::from_str(&message[message.find("] ").unwrap() + 2..]).unwrap();
    assert_eq!(payload["detail"]["target"], "/nodes/");
    let refused = Command::new(env!("CARGO_BIN_EXE_confluentd"))
        .args(["--state-dir"])
        .arg(dir.path().join("other"))
        .args(["--syslog", "smtp://x:1"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("invalid syslog target"));
}

/// Type filters name documented kinds (`docs/events.md`) or prefixes of them; anything else is
/// refused with a 400 naming the pattern, on queries and on the socket's live stream alike.
#[test]
fn unknown_event_types_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start(dir.path());
    for (operation, path, types) in [
        ("retrieve", "/events/log", json!("dhcp.discovery")),
        (
            "retrieve",
            "/events/audit",
            json!(["api.denied", "power.*"]),
        ),
        ("start", "/events/log", json!("daemon.begin")),
    ] {
        // A connection each: a `start` request ends its connection, even when refused.
        let reply = daemon
            .client()
            .request(operation, path, json!({"types": types}))
            .unwrap();
        let pattern = match &types {
            Value::Array(items) => items[1].as_str().unwrap(),
            other => other.as_str().unwrap(),
        };
        assert_eq!(reply[0]["errorcode"], 400, "{reply:?}");
        let error = reply[0]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!("unknown event type '{pattern}'")),
            "{reply:?}"
        );
    }
    // Exact kinds and prefixes of them are accepted.
    let reply = daemon
        .client()
        .request(
            "retrieve",
            "/events/log",
            json!({"types": "boot.*,dhcp.discover,daemon."}),
        )
        .unwrap();
    assert!(
        reply.iter().all(|message| message.get("error").is_none()),
        "{reply:?}"
    );
}
