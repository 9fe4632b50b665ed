//! Fuzz the API request parser: bytes → JSON → `api::socket::parse_request`, and the
//! interpretation of attribute values (`api::resources::attribute_input`) for every key of an
//! object, at the top level and inside the request's `parameters`.

#![no_main]

use confluent::api::{Caller, authorize, resources, socket};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn attribute_inputs(value: &Value) {
    if let Value::Object(map) = value {
        for (name, attribute) in map {
            let _ = resources::attribute_input(name, attribute);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    attribute_inputs(&value);
    if let Ok(request) = socket::parse_request(&value) {
        assert!(
            request.parameters.is_object() || !value["parameters"].is_null(),
            "missing or null parameters must become an empty object"
        );
        attribute_inputs(&request.parameters);
        // Authorization is pure: it must decide every parsed request without panicking. Trusted
        // callers may do anything with a path free of relative segments; nodes only /self/.
        let roles = confluent::auth::roles::RoleTable::default();
        let trusted = authorize(&roles, &Caller::LocalTrusted { uid: 0 }, &request);
        assert!(trusted.is_ok() || request.path.split('/').any(|s| s == "." || s == ".."));
        let node = Caller::Node {
            name: std::sync::Arc::from("n1"),
        };
        if authorize(&roles, &node, &request).is_ok() {
            assert!(confluent::api::canonical_path(&request.path)
                .unwrap()
                .starts_with("/self/"));
        }
    }
});
