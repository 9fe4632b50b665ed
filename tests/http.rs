//! The API over HTTP(S), WebSocket and the TLS socket, against a real daemon with real clients
//! (curl, a WebSocket client, the CLI over TLS).

mod common;

use std::process::Command;

use common::DaemonProcess;
use serde_json::{Value, json};

struct Curl {
    status: u16,
    body: String,
    stderr: String,
}

/// Run curl; the status code is appended to the body by `-w`.
fn curl(args: &[&str]) -> Curl {
    let output = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed (tests/run installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Curl {
        status: status.trim().parse().unwrap_or(0),
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn json_of(curl: &Curl) -> Value {
    serde_json::from_str(&curl.body)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", curl.body))
}

#[test]
fn http_tree_with_token_merging_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start(dir.path());
    let base = format!("http://{}", daemon.listener("http"));
    let auth = format!("Authorization: Bearer {}", daemon.admin_token());

    // Without credentials: 401 with a reason.
    let refused = curl(&[&format!("{base}/nodes/")]);
    assert_eq!(refused.status, 401);
    assert!(
        json_of(&refused)["error"]
            .as_str()
            .unwrap()
            .contains("authentication")
    );
    let wrong = curl(&[
        "-H",
        "Authorization: Bearer nope",
        &format!("{base}/nodes/"),
    ]);
    assert_eq!(wrong.status, 401);

    let post = |path: &str, body: Value| {
        curl(&[
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "-X",
            "POST",
            "-d",
            &body.to_string(),
            &format!("{base}{path}"),
        ])
    };
    assert_eq!(
        post(
            "/nodegroups/",
            json!({"name": "compute", "hardwaremanagement.manager": "{node}-bmc"})
        )
        .status,
        200
    );
    let created = post(
        "/noderange/",
        json!({"name": "n[1-3]", "groups": "compute"}),
    );
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(
        json_of(&created)["created"],
        json!(["nodes/n1", "nodes/n2", "nodes/n3"])
    );

    let listing = json_of(&curl(&[
        "-H",
        &auth,
        &format!("{base}/confluent-api/nodes/"),
    ]));
    assert_eq!(
        listing["_links"]["item"],
        json!([{"href": "n1/"}, {"href": "n2/"}, {"href": "n3/"}])
    );

    // Query parameters and PUT update; databynode is a list of per-node messages.
    let put = curl(&[
        "-H",
        &auth,
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"location.rack": "9"}"#,
        &format!("{base}/noderange/n1-n2/attributes/current"),
    ]);
    assert_eq!(put.status, 200, "{}", put.body);
    let current = json_of(&curl(&[
        "-H",
        &auth,
        &format!("{base}/noderange/n1,n3/attributes/current"),
    ]));
    let by_node = current["databynode"].as_array().unwrap();
    assert_eq!(by_node.len(), 2);
    assert_eq!(by_node[0]["n1"]["location.rack"]["value"], "9");
    assert_eq!(
        by_node[0]["n1"]["hardwaremanagement.manager"],
        json!({"value": "n1-bmc", "inheritedfrom": "compute", "expression": "{node}-bmc"})
    );
    assert!(
        by_node[1]["n3"].get("location.rack").is_none(),
        "unset attributes are not current"
    );
    let single = json_of(&curl(&[
        "-H",
        &auth,
        &format!("{base}/nodes/n1/attributes/current"),
    ]));
    assert_eq!(
        single["location.rack"]["value"], "9",
        "single-node requests have no databynode layer"
    );

    // Bad input: each a clear 4xx.
    let malformed = curl(&[
        "-H",
        &auth,
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/json",
        "-d",
        "{not json",
        &format!("{base}/noderange/n1/attributes/all"),
    ]);
    assert_eq!(malformed.status, 400);
    assert!(
        json_of(&malformed)["error"]
            .as_str()
            .unwrap()
            .contains("JSON")
    );
    assert_eq!(
        curl(&["-H", &auth, &format!("{base}/no/such/path")]).status,
        404
    );
    let bad_range = curl(&[
        "-H",
        &auth,
        &format!("{base}/noderange/n1-/attributes/current"),
    ]);
    assert_eq!(bad_range.status, 400, "{}", bad_range.body);
    let unknown_attribute = curl(&[
        "-H",
        &auth,
        "-X",
        "PUT",
        "-d",
        r#"{"locaton.rack": "1"}"#,
        &format!("{base}/noderange/n1/attributes/all"),
    ]);
    assert_eq!(unknown_attribute.status, 400);
    assert!(
        unknown_attribute.body.contains("location.rack"),
        "{}",
        unknown_attribute.body
    );
    let big = dir.path().join("big.json");
    std::fs::write(
        &big,
        format!("{{\"info.note\": \"{}\"}}", "x".repeat(17 * 1024 * 1024)),
    )
    .unwrap();
    let oversized = curl(&[
        "-H",
        &auth,
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", big.display()),
        &format!("{base}/noderange/n1/attributes/all"),
    ]);
    assert_eq!(oversized.status, 413, "{}", oversized.stderr);

    // gzip when asked, and keep-alive across requests.
    let headers = dir.path().join("headers");
    let compressed = curl(&[
        "-H",
        &auth,
        "--compressed",
        "-D",
        headers.to_str().unwrap(),
        &format!("{base}/noderange/n1-n3/attributes/all"),
    ]);
    assert_eq!(compressed.status, 200);
    let header_text = std::fs::read_to_string(&headers).unwrap().to_lowercase();
    assert!(
        header_text.contains("content-encoding: gzip"),
        "{header_text}"
    );
    assert!(header_text.contains("x-content-type-options: nosniff"));
    json_of(&compressed);
    let reuse = Command::new("curl")
        .args([
            "-sv",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-H",
            &auth,
            &format!("{base}/nodes/"),
            &format!("{base}/version"),
        ])
        .output()
        .unwrap();
    let verbose = String::from_utf8_lossy(&reuse.stderr);
    assert!(
        verbose.contains("Re-using existing connection")
            || verbose.contains("Reusing existing connection"),
        "{verbose}"
    );

    let deleted = curl(&["-H", &auth, "-X", "DELETE", &format!("{base}/noderange/n3")]);
    assert_eq!(json_of(&deleted)["deleted"], "n3");
}

#[test]
fn https_with_the_published_site_ca() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start(dir.path());
    let port = daemon.listener("https").port();
    let auth = format!("Authorization: Bearer {}", daemon.admin_token());
    let ca = daemon.ca_path();
    let version = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        &auth,
        &format!("https://localhost:{port}/version"),
    ]);
    assert_eq!(version.status, 200, "{}", version.stderr);
    assert_eq!(json_of(&version)["version"], confluent::VERSION);
    // Without the CA the certificate is not trusted.
    let untrusted = curl(&[&format!("https://localhost:{port}/version")]);
    assert_eq!(untrusted.status, 0);
    // HTTP/2 is negotiated over TLS.
    let h2 = Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "--cacert",
            ca.to_str().unwrap(),
            "-H",
            &auth,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
        ])
        .arg(format!("https://127.0.0.1:{port}/version"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&h2.stdout),
        "2",
        "{}",
        String::from_utf8_lossy(&h2.stderr)
    );
}

#[test]
fn websocket_delivers_attribute_changes() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start(dir.path());
    let mut client = daemon.client();
    client
        .request("create", "/noderange/", json!({"name": "n[1-2]"}))
        .unwrap();
    let address = daemon.listener("http");
    let token = daemon.admin_token();
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
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket upgrade");
        async fn text<
            S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
        >(
            socket: &mut S,
        ) -> String {
            loop {
                let message =
                    tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
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
        socket.send(Message::Text("?".into())).await.unwrap();
        assert_eq!(text(&mut socket).await, "?");
        socket
            .send(Message::Text(
                r#"!{"operation": "watch", "noderange": "n1", "attributes": ["location.*"]}"#
                    .into(),
            ))
            .await
            .unwrap();
        let watching: Value = serde_json::from_str(&text(&mut socket).await[1..]).unwrap();
        assert_eq!(watching["watching"]["nodes"], 1);
        // A change to n2 is not delivered; a change to n1 is, with its new value.
        let mut api =
            confluent::cli::client::Client::connect_to(&dir.path().join("run/api.sock")).unwrap();
        api.request(
            "update",
            "/noderange/n2/attributes/all",
            json!({"location.rack": "2"}),
        )
        .unwrap();
        api.request(
            "update",
            "/noderange/n1/attributes/all",
            json!({"location.rack": "1", "info.note": "x"}),
        )
        .unwrap();
        let change: Value = serde_json::from_str(&text(&mut socket).await[1..]).unwrap();
        assert_eq!(
            change["changes"]["databynode"],
            json!({"n1": {"location.rack": {"value": "1"}}})
        );
        // Malformed frames get an error, the socket stays usable.
        socket.send(Message::Text("!{broken".into())).await.unwrap();
        assert!(text(&mut socket).await.contains("invalid JSON"));
    });
}

#[test]
fn cli_over_tls_trusts_on_first_use_and_detects_changes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let daemon = DaemonProcess::start(&dir.path().join("state"));
    let port = daemon.listener("tls_socket").port();
    let run = |extra_env: &[(&str, &str)], args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_confluent"));
        command
            .args(args)
            .env("HOME", &home)
            .env("CONFLUENT_HOST", format!("127.0.0.1:{port}"));
        for (key, value) in extra_env {
            command.env(key, value);
        }
        command.output().unwrap()
    };
    let token = daemon.admin_token();
    let output = run(&[("CONFLUENT_TOKEN", &token)], &["nodedefine", "r1n[1-2]"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let known = std::fs::read_to_string(home.join(".confluent/knownhosts")).unwrap();
    assert!(
        known.starts_with(&format!("{port}@127.0.0.1 sha512$")),
        "{known}"
    );
    let output = run(&[("CONFLUENT_TOKEN", &token)], &["nodelist"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "r1n1\nr1n2\n");
    // Wrong credentials are refused.
    let output = run(&[("CONFLUENT_TOKEN", "wrong")], &["nodelist"]);
    assert!(!output.status.success());
    // A different certificate for the same host:port is refused.
    std::fs::write(
        home.join(".confluent/knownhosts"),
        format!("{port}@127.0.0.1 sha512$00\n"),
    )
    .unwrap();
    let output = run(&[("CONFLUENT_TOKEN", &token)], &["nodelist"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("changed"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // With the site CA installed, verification uses it instead.
    std::fs::copy(daemon.ca_path(), home.join(".confluent/ca.pem")).unwrap();
    let output = run(&[("CONFLUENT_TOKEN", &token)], &["nodelist"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
