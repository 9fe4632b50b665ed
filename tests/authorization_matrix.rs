//! The authorization matrix: every route of the one route table (`api::routes::ROUTES`, what
//! every transport serves), every operation it answers, against every built-in role.
//! A route or operation missing from `MATRIX` (or listed here but gone) fails the test, so a new
//! route cannot ship without a decision about who may use it.

use std::collections::BTreeSet;
use std::sync::Arc;

use confluent::api::{Caller, Operation, Request, authorize};
use confluent::auth::roles::{Role, RoleTable};
use confluent::auth::{Identity, Method};

/// (route, operation, who may: `A`dministrator, `O`perator, `M`onitor, `S`tub; `-` refused).
const MATRIX: &[(&str, &str, &str)] = &[
    ("/", "retrieve", "AOM-"),
    ("/version", "retrieve", "AO--"),
    ("/networking/", "retrieve", "AO--"),
    ("/networking/dhcp/", "retrieve", "AO--"),
    ("/networking/dhcp/exchanges", "retrieve", "AO--"),
    ("/networking/dhcp/counters", "retrieve", "AO--"),
    ("/networking/dhcp/interfaces/", "retrieve", "AO--"),
    (
        "/networking/dhcp/interfaces/{interface}",
        "retrieve",
        "AO--",
    ),
    ("/networking/dhcp/interfaces/{interface}", "update", "A---"),
    ("/networking/dhcp/interfaces/{interface}", "delete", "A---"),
    // DHCP subnets and pools: read like any configuration, changed by administrators.
    ("/networking/dhcp/subnets/", "retrieve", "AO--"),
    ("/networking/dhcp/subnets/", "create", "A---"),
    ("/networking/dhcp/subnets/{subnet}", "retrieve", "AO--"),
    ("/networking/dhcp/subnets/{subnet}", "update", "A---"),
    ("/networking/dhcp/subnets/{subnet}", "delete", "A---"),
    ("/nodes/", "retrieve", "AOM-"),
    ("/nodes/", "create", "AO--"),
    ("/nodes/{node}/", "retrieve", "AO--"),
    ("/nodes/{node}/", "delete", "AO--"),
    ("/nodes/{node}/attributes/", "retrieve", "AO--"),
    ("/nodes/{node}/attributes/all", "retrieve", "AOM-"),
    ("/nodes/{node}/attributes/all", "update", "AO--"),
    ("/nodes/{node}/attributes/current", "retrieve", "AOM-"),
    ("/nodes/{node}/attributes/current", "update", "AO--"),
    ("/nodes/{node}/attributes/expression", "retrieve", "AO--"),
    ("/nodes/{node}/attributes/expression", "create", "AO--"),
    ("/nodes/{node}/attributes/rename", "update", "AO--"),
    ("/noderange/", "create", "AO--"),
    ("/noderange/{range}/", "retrieve", "AO--"),
    ("/noderange/{range}/", "delete", "AO--"),
    ("/noderange/{range}/nodes/", "retrieve", "AOM-"),
    ("/noderange/{range}/boottimeline", "retrieve", "AO--"),
    ("/noderange/{range}/abbreviate", "create", "AO--"),
    ("/noderange/abbreviate", "create", "AO--"),
    ("/noderange/{range}/attributes/", "retrieve", "AO--"),
    ("/noderange/{range}/attributes/all", "retrieve", "AOM-"),
    ("/noderange/{range}/attributes/all", "update", "AO--"),
    // Watching attributes is reading them over time: as `retrieve`.
    ("/noderange/{range}/attributes/all", "start", "AOM-"),
    ("/noderange/{range}/attributes/current", "retrieve", "AOM-"),
    ("/noderange/{range}/attributes/current", "update", "AO--"),
    (
        "/noderange/{range}/attributes/expression",
        "retrieve",
        "AO--",
    ),
    ("/noderange/{range}/attributes/expression", "create", "AO--"),
    ("/noderange/{range}/attributes/rename", "update", "AO--"),
    ("/nodegroups/", "retrieve", "AO--"),
    ("/nodegroups/", "create", "A---"),
    ("/nodegroups/{group}/", "retrieve", "AO--"),
    // Confluent's Operator may delete `/node*`, which covers groups.
    ("/nodegroups/{group}/", "delete", "AO--"),
    ("/nodegroups/{group}/attributes/", "retrieve", "AO--"),
    // The Monitor patterns `/node*/attributes/all|current` cover groups too.
    ("/nodegroups/{group}/attributes/all", "retrieve", "AOM-"),
    ("/nodegroups/{group}/attributes/all", "update", "AO--"),
    ("/nodegroups/{group}/attributes/current", "retrieve", "AOM-"),
    ("/nodegroups/{group}/attributes/current", "update", "AO--"),
    ("/nodegroups/{group}/attributes/rename", "update", "AO--"),
    ("/events/", "retrieve", "AO--"),
    ("/events/{log}", "retrieve", "AO--"),
    // Following a log is reading it over time: as `retrieve`.
    ("/events/{log}", "start", "AO--"),
    ("/users/", "retrieve", "AO--"),
    ("/users/", "create", "A---"),
    ("/users/{user}", "retrieve", "AO--"),
    ("/users/{user}", "update", "A---"),
    ("/users/{user}", "delete", "A---"),
    ("/usergroups/", "retrieve", "AO--"),
    ("/usergroups/", "create", "A---"),
    ("/usergroups/{usergroup}", "retrieve", "AO--"),
    ("/usergroups/{usergroup}", "update", "A---"),
    ("/usergroups/{usergroup}", "delete", "A---"),
    // Only nodes (API keys) reach /self/.
    ("/self/whoami", "retrieve", "----"),
    ("/sessions/current/async", "start", "AOM-"),
    ("/sessions/current/info", "retrieve", "AOMS"),
    ("/sessions/current/logout", "retrieve", "AOMS"),
    ("/sessions/current/logout", "create", "AOMS"),
    ("/sessions/current/logout", "delete", "AOMS"),
    // Prometheus metrics: Monitor and above (`--metrics-public` skips authentication).
    ("/metrics", "retrieve", "AOM-"),
];

fn example(route: &str) -> String {
    route
        .replace("{node}", "n1")
        .replace("{range}", "n1,n2")
        .replace("{group}", "g1")
        .replace("{usergroup}", "ug1")
        .replace("{user}", "u1")
        .replace("{subnet}", "10.0.0.0_24")
        .replace("{log}", "audit")
}

fn user(role: Role, tenant: Option<&str>) -> Caller {
    Caller::User(Arc::new(Identity {
        user: Arc::from("u"),
        tenant: tenant.map(Arc::from),
        role,
        method: Method::Password,
    }))
}

fn request(route: &str, operation: Operation) -> Request {
    Request {
        operation,
        path: example(route),
        parameters: serde_json::json!({}),
    }
}

fn all_routes() -> BTreeSet<(String, &'static str)> {
    confluent::api::routes::ROUTES
        .iter()
        .flat_map(|route| {
            route
                .operations
                .iter()
                .map(|operation| (route.path.to_string(), operation.as_str()))
        })
        .collect()
}

#[test]
fn every_route_is_in_the_matrix_and_every_role_gets_its_decision() {
    let routes = all_routes();
    let listed: BTreeSet<(String, &str)> = MATRIX
        .iter()
        .map(|(route, operation, _)| (route.to_string(), *operation))
        .collect();
    let missing: Vec<_> = routes.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the authorization matrix: {missing:?}"
    );
    let stale: Vec<_> = listed.difference(&routes).collect();
    assert!(
        stale.is_empty(),
        "matrix rows for routes that no longer exist: {stale:?}"
    );

    let roles = RoleTable::default();
    let mut wrong = Vec::new();
    for (route, operation, expected) in MATRIX {
        let operation = Operation::parse(operation).unwrap();
        let request = request(route, operation);
        for (index, role) in [
            Role::Administrator,
            Role::Operator,
            Role::Monitor,
            Role::Stub,
        ]
        .into_iter()
        .enumerate()
        {
            let allowed = authorize(&roles, &user(role.clone(), None), &request).is_ok();
            let expected = expected.as_bytes()[index] != b'-';
            if allowed != expected {
                wrong.push(format!(
                    "{role} {} {}: allowed={allowed}, expected {expected}",
                    operation.as_str(),
                    request.path
                ));
            }
        }
        // The administrator token is an Administrator; local root is trusted with everything.
        assert_eq!(
            authorize(&roles, &Caller::AdminToken, &request).is_ok(),
            expected.starts_with('A'),
            "admin token {route}"
        );
        assert!(authorize(&roles, &Caller::LocalTrusted { uid: 0 }, &request).is_ok());
        // A node reaches only its /self/ routes.
        assert_eq!(
            authorize(
                &roles,
                &Caller::Node {
                    name: Arc::from("n1")
                },
                &request
            )
            .is_ok(),
            route.starts_with("/self/"),
            "node {route}"
        );
        // Tenant users never reach the site's logs, network data or user groups.
        let tenant_allowed =
            authorize(&roles, &user(Role::Administrator, Some("acme")), &request).is_ok();
        let site_only = ["/events", "/networking", "/usergroups"]
            .iter()
            .any(|prefix| route.starts_with(prefix));
        assert_eq!(
            tenant_allowed,
            expected.starts_with('A') && !site_only,
            "tenant administrator {route}"
        );
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn shutdown_and_path_tricks_are_refused() {
    let roles = RoleTable::default();
    let admin = user(Role::Administrator, None);
    let shutdown = Request {
        operation: Operation::Shutdown,
        path: "/".into(),
        parameters: serde_json::json!({}),
    };
    assert!(authorize(&roles, &admin, &shutdown).is_err());
    assert!(authorize(&roles, &Caller::LocalTrusted { uid: 0 }, &shutdown).is_ok());
    let operator = user(Role::Operator, None);
    for path in [
        "/nodes/n1/attributes/../../../users/x",
        "/nodes/n1/attributes/./all",
    ] {
        let request = Request {
            operation: Operation::Update,
            path: path.into(),
            parameters: serde_json::json!({}),
        };
        assert!(authorize(&roles, &operator, &request).is_err(), "{path}");
    }
    // Doubled slashes are the same path.
    let request = Request {
        operation: Operation::Create,
        path: "//users//".into(),
        parameters: serde_json::json!({}),
    };
    assert!(authorize(&roles, &operator, &request).is_err());
}

#[test]
fn custom_roles_from_yaml() {
    let mut roles = RoleTable::default();
    roles
        .merge_yaml(
            "allowedbyrole:\n  Racker:\n    retrieve: ['/nodes/', '/noderange/*/attributes/current']\n    update: ['/noderange/*/attributes/current']\ndeniedbyrole:\n  Racker:\n    update: ['/noderange/mgmt*']\n",
        )
        .unwrap();
    let racker = user(roles.resolve("rack").unwrap(), None);
    let allowed = |operation, path: &str| {
        authorize(
            &roles,
            &racker,
            &Request {
                operation,
                path: path.into(),
                parameters: serde_json::json!({}),
            },
        )
        .is_ok()
    };
    assert!(allowed(Operation::Retrieve, "/nodes/"));
    assert!(allowed(
        Operation::Update,
        "/noderange/n1/attributes/current"
    ));
    assert!(!allowed(
        Operation::Update,
        "/noderange/mgmt1/attributes/current"
    ));
    assert!(!allowed(Operation::Retrieve, "/users/"));
}
