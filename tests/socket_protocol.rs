//! The TLV socket protocol with hostile or broken peers: bad frames close the connection,
//! malformed requests get a 400 and the connection stays usable, unknown paths a 404, and the
//! daemon keeps serving everyone else.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::DaemonProcess;
use serde_json::{Value, json};

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let length = payload.len() as u32;
    let mut bytes = ((u32::from(kind) << 24) | length).to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

fn read_frame(stream: &mut UnixStream) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).ok()?;
    let word = u32::from_be_bytes(header);
    let mut payload = vec![0u8; (word & 0xff_ffff) as usize];
    stream.read_exact(&mut payload).ok()?;
    Some(((word >> 24) as u8, payload))
}

fn read_json(stream: &mut UnixStream) -> Value {
    let (kind, payload) = read_frame(stream).expect("a frame");
    assert_eq!(kind, 1);
    serde_json::from_slice(&payload).unwrap()
}

/// Read messages up to `_requestdone`.
fn answer(stream: &mut UnixStream) -> Vec<Value> {
    let mut messages = Vec::new();
    loop {
        let message = read_json(stream);
        if message.get("_requestdone").is_some() {
            return messages;
        }
        messages.push(message);
    }
}

fn connect(daemon: &DaemonProcess) -> UnixStream {
    let mut stream = UnixStream::connect(daemon.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (kind, banner) = read_frame(&mut stream).unwrap();
    assert_eq!(
        (kind, banner.as_slice()),
        (0, b"Confluent -- v4 --".as_slice())
    );
    assert_eq!(read_json(&mut stream), json!({"authpassed": 1}));
    stream
}

#[test]
fn broken_and_malformed_input() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start(dir.path());

    // Invalid JSON inside a valid frame: 400, and the connection stays usable.
    let mut stream = connect(&daemon);
    stream.write_all(&frame(1, b"{not json")).unwrap();
    let reply = answer(&mut stream);
    assert_eq!(reply[0]["errorcode"], 400);
    assert!(reply[0]["error"].as_str().unwrap().contains("invalid JSON"));
    // Missing operation, unknown operation, unknown path, bad noderange, unknown attribute.
    for (request, code, needle) in [
        (json!({"path": "/nodes/"}), 400, "operation"),
        (
            json!({"operation": "explode", "path": "/nodes/"}),
            400,
            "explode",
        ),
        (
            json!({"operation": "retrieve", "path": "/no/such"}),
            404,
            "not found",
        ),
        (
            json!({"operation": "retrieve", "path": "/noderange/n1-/nodes/"}),
            400,
            "noderange",
        ),
        (
            json!({"operation": "create", "path": "/nodes/", "parameters": {"name": "n1", "loction.rack": "1"}}),
            400,
            "location.rack",
        ),
        (
            json!({"operation": "create", "path": "/nodes/", "parameters": {"name": "bad name"}}),
            400,
            "space",
        ),
    ] {
        stream
            .write_all(&frame(1, request.to_string().as_bytes()))
            .unwrap();
        let reply = answer(&mut stream);
        assert_eq!(reply[0]["errorcode"], code, "{request}: {reply:?}");
        assert!(
            reply[0]["error"].as_str().unwrap().contains(needle),
            "{request}: {reply:?}"
        );
    }
    // A valid request still works on the same connection.
    stream
        .write_all(&frame(
            1,
            json!({"operation": "retrieve", "path": "/version"})
                .to_string()
                .as_bytes(),
        ))
        .unwrap();
    assert_eq!(answer(&mut stream)[0]["version"], confluent::VERSION);

    // A framing violation (reserved bit) closes the connection.
    let mut stream = connect(&daemon);
    stream.write_all(&[0x80, 0, 0, 1, b'x']).unwrap();
    assert!(read_frame(&mut stream).is_none(), "connection closed");
    // So does an unknown frame type.
    let mut stream = connect(&daemon);
    stream.write_all(&frame(9, b"x")).unwrap();
    assert!(read_frame(&mut stream).is_none(), "connection closed");

    // A peer that stalls mid-frame does not block others.
    let mut stalled = connect(&daemon);
    stalled.write_all(&[1, 0, 0, 100, b'{']).unwrap();
    let mut other = connect(&daemon);
    other
        .write_all(&frame(
            1,
            json!({"operation": "retrieve", "path": "/nodes/"})
                .to_string()
                .as_bytes(),
        ))
        .unwrap();
    assert!(answer(&mut other).is_empty());
    drop(stalled);
    assert!(daemon.stop().success());
}
