//! API errors are typed: a failure of the server shows clients a stable code and a safe
//! message, never a file path or OS error text, and every transport reports the same code for
//! the same failure. Here the configuration journal fails for real: it lives on a small tmpfs
//! (mounted by the test, which needs root) that is then filled.

mod common;

use std::path::Path;
use std::process::Command;

use common::{DaemonProcess, SmallDisk};
use serde_json::{Value, json};

/// Text that would betray server internals.
fn assert_safe(message: &str, state_dir: &Path) {
    for leak in [
        state_dir.to_string_lossy().as_ref(),
        "/etc/cfg",
        "journal/",
        ".wal",
        "No space left",
        "os error",
    ] {
        assert!(
            !message.contains(leak),
            "client message leaks {leak:?}: {message}"
        );
    }
}

fn curl_json(args: &[&str]) -> (u16, Value) {
    let output = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed (tests/run installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[test]
fn a_failing_journal_gives_every_transport_the_same_safe_error() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("etc/cfg/journal"), "256k");
    let daemon = DaemonProcess::start(dir.path());
    let mut client = daemon.client();
    client
        .request("create", "/noderange/", json!({"name": "n1"}))
        .unwrap();
    disk.fill();
    let change = json!({"location.rack": "r".repeat(30_000)});

    // The unix socket (Confluent's TLV protocol).
    let socket = client
        .request("update", "/noderange/n1/attributes/all", change.clone())
        .expect("the socket answers");
    let socket_error = socket
        .iter()
        .find(|message| message.get("errorcode").is_some())
        .unwrap_or_else(|| panic!("no error message in {socket:?}"))
        .clone();
    assert_eq!(socket_error["errorcode"], 503, "{socket_error}");
    assert_eq!(socket_error["code"], "unavailable", "{socket_error}");
    assert_safe(&socket_error.to_string(), dir.path());

    // HTTP with the administrator token.
    let token = daemon.admin_token();
    let url = format!(
        "http://{}/noderange/n1/attributes/all",
        daemon.listener("http")
    );
    let body = change.to_string();
    let (status, http_error) = curl_json(&[
        "-X",
        "PUT",
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-H",
        "Content-Type: application/json",
        "--data",
        &body,
        &url,
    ]);
    assert_eq!(status, 503, "{http_error}");
    assert_eq!(http_error["code"], socket_error["code"], "{http_error}");
    assert_eq!(http_error["errorcode"], socket_error["errorcode"]);
    assert_eq!(http_error["error"], socket_error["error"]);
    assert_safe(&http_error.to_string(), dir.path());

    // The WebSocket, with the same request as a frame.
    let frame = json!({
        "operation": "update",
        "path": "/noderange/n1/attributes/all",
        "parameters": change,
    });
    let websocket_error = websocket_request(daemon.listener("http"), &token, &frame);
    assert_eq!(
        websocket_error["code"], socket_error["code"],
        "{websocket_error}"
    );
    assert_eq!(websocket_error["errorcode"], socket_error["errorcode"]);
    assert_eq!(websocket_error["error"], socket_error["error"]);
    assert_safe(&websocket_error.to_string(), dir.path());

    // The daemon still answers reads. (Whether the refused change is rolled back in memory is
    // the configuration engine's business; see the engine's apply-before-sync note.)
    let listing = client.request("retrieve", "/nodes/", json!({})).unwrap();
    assert!(format!("{listing:?}").contains("n1/"), "{listing:?}");
}

/// Send one request frame on `/sessions/current/async` and return the first answer.
fn websocket_request(address: std::net::SocketAddr, token: &str, frame: &Value) -> Value {
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
        socket
            .send(Message::Text(format!("!{frame}").into()))
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
                .await
                .expect("an answer within 10 s")
                .expect("stream open")
                .expect("valid frame");
            if let Message::Text(text) = message
                && let Some(body) = text.strip_prefix('!')
            {
                return serde_json::from_str(body).expect("a JSON answer");
            }
        }
    })
}
