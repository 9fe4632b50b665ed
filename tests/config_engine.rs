//! The configuration engine end to end, in-process: inheritance, expressions, aliases,
//! watchers, persistence across restarts, secrets at rest, dump and restore.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use confluent::config::dump::{self, DumpFormat};
use confluent::config::engine::{ConfigEngine, EngineOptions};
use confluent::config::model::{Resolved, ResolvedValue, Store};
use confluent::config::plan::{self, AttributeInput};
use confluent::config::watch::WatchFilter;

fn open(dir: &Path) -> Arc<ConfigEngine> {
    ConfigEngine::open(
        &dir.join("cfg"),
        &dir.join("keys/master.key"),
        EngineOptions::default(),
    )
    .expect("open configuration")
}

fn set(name: &str, value: &str) -> (String, AttributeInput) {
    (name.to_string(), AttributeInput::Auto(value.to_string()))
}

fn clear(name: &str) -> (String, AttributeInput) {
    (name.to_string(), AttributeInput::Clear)
}

fn define_nodes(engine: &ConfigEngine, names: &[&str], attributes: &[(String, AttributeInput)]) {
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    engine
        .commit_blocking(|store, key| plan::create_nodes(store, key, &names, attributes))
        .expect("create nodes");
}

fn define_group(engine: &ConfigEngine, name: &str, attributes: &[(String, AttributeInput)]) {
    engine
        .commit_blocking(|store, key| plan::create_group(store, key, name, attributes))
        .expect("create group");
}

fn set_nodes(
    engine: &ConfigEngine,
    nodes: &[&str],
    attributes: &[(String, AttributeInput)],
) -> Vec<String> {
    let nodes: Vec<Arc<str>> = nodes.iter().map(|node| Arc::from(*node)).collect();
    engine
        .commit_blocking(|store, key| plan::set_node_attributes(store, key, &nodes, attributes))
        .expect("set attributes")
        .warnings
}

fn resolve(engine: &ConfigEngine, node: &str, attribute: &str) -> Resolved {
    engine.read(|store| store.resolve(node, attribute).expect("node exists"))
}

fn text(engine: &ConfigEngine, node: &str, attribute: &str) -> String {
    match resolve(engine, node, attribute).value {
        ResolvedValue::Text(text) => text.to_string(),
        ResolvedValue::Unset => "<unset>".into(),
        other => format!("{other:?}"),
    }
}

#[test]
fn first_group_in_the_list_wins_and_clear_differs_from_mask() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    define_group(
        &engine,
        "rack1",
        &[set("location.rack", "1"), set("console.method", "ipmi")],
    );
    define_group(
        &engine,
        "compute",
        &[set("location.rack", "99"), set("location.room", "A")],
    );
    define_nodes(&engine, &["n1"], &[set("groups", "rack1,compute")]);
    define_nodes(&engine, &["n2"], &[set("groups", "rack1")]);
    assert_eq!(text(&engine, "n1", "location.rack"), "1");
    assert_eq!(
        resolve(&engine, "n1", "location.rack")
            .inherited_from
            .as_deref(),
        Some("rack1")
    );
    assert_eq!(text(&engine, "n1", "location.room"), "A");
    // Adding a group through its `nodes` puts it in front.
    engine
        .commit_blocking(|store, key| {
            plan::set_group_attributes(
                store,
                key,
                "compute",
                &[("nodes".into(), AttributeInput::Prepend(vec!["n2".into()]))],
            )
        })
        .unwrap();
    assert_eq!(text(&engine, "n2", "location.rack"), "99");
    let groups = engine.read(|store| store.node("n2").unwrap().groups.clone());
    assert_eq!(
        groups.iter().map(|g| &**g).collect::<Vec<_>>(),
        ["compute", "rack1", "everything"]
    );
    // Mask with an empty value, then clear to re-inherit.
    set_nodes(&engine, &["n1"], &[set("location.rack", "")]);
    assert_eq!(text(&engine, "n1", "location.rack"), "");
    assert_eq!(resolve(&engine, "n1", "location.rack").inherited_from, None);
    let warnings = set_nodes(&engine, &["n1"], &[clear("location.rack")]);
    assert_eq!(text(&engine, "n1", "location.rack"), "1");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("inherited from group rack1")),
        "{warnings:?}"
    );
    // Clearing an inherited value is a no-op with a warning.
    let warnings = set_nodes(&engine, &["n1"], &[clear("location.room")]);
    assert_eq!(text(&engine, "n1", "location.room"), "A");
    assert!(
        warnings.iter().any(|w| w.contains("was not cleared")),
        "{warnings:?}"
    );
    // groups^= removes.
    set_nodes(
        &engine,
        &["n1"],
        &[(
            "groups".into(),
            AttributeInput::Remove(vec!["rack1".into()]),
        )],
    );
    assert_eq!(text(&engine, "n1", "location.rack"), "99");
}

#[test]
fn expressions_follow_their_references_names_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    define_group(
        &engine,
        "compute",
        &[
            set("hardwaremanagement.manager", "{node}-bmc"),
            set("net.mgt.ipv4_address", "172.17.{location.rack}.{n1}/16"),
            set("location.u", "{(n1-1)%42+1}"),
        ],
    );
    define_nodes(
        &engine,
        &["r3n5"],
        &[set("groups", "compute"), set("location.rack", "7")],
    );
    assert_eq!(
        text(&engine, "r3n5", "hardwaremanagement.manager"),
        "r3n5-bmc"
    );
    assert_eq!(
        text(&engine, "r3n5", "net.mgt.ipv4_address"),
        "172.17.7.3/16"
    );
    assert_eq!(text(&engine, "r3n5", "location.u"), "3");
    let resolved = resolve(
        &engine,
        "r3n5",
        "bmc".replace("bmc", "hardwaremanagement.manager").as_str(),
    );
    assert_eq!(resolved.expression.as_deref(), Some("{node}-bmc"));
    assert_eq!(resolved.inherited_from.as_deref(), Some("compute"));

    let mut watcher = engine.watch(WatchFilter {
        nodes: None,
        attributes: vec!["net.*".into(), "hardwaremanagement.manager".into()],
        collection: true,
        globals: Vec::new(),
    });
    set_nodes(&engine, &["r3n5"], &[set("location.rack", "8")]);
    assert_eq!(
        text(&engine, "r3n5", "net.mgt.ipv4_address"),
        "172.17.8.3/16"
    );
    let change = watcher.blocking_recv().unwrap();
    let changed: Vec<&str> = change.node_attributes["r3n5"]
        .iter()
        .map(|a| &**a)
        .collect();
    assert_eq!(
        changed,
        ["net.mgt.ipv4_address"],
        "the dependent expression is reported, the unwatched cause is not"
    );

    let renames = BTreeMap::from([("r3n5".to_string(), "r4n6".to_string())]);
    engine
        .commit_blocking(|store, _| plan::rename_nodes(store, &renames))
        .unwrap();
    assert_eq!(
        text(&engine, "r4n6", "hardwaremanagement.manager"),
        "r4n6-bmc"
    );
    assert_eq!(
        text(&engine, "r4n6", "net.mgt.ipv4_address"),
        "172.17.8.4/16"
    );
    let change = watcher.blocking_recv().unwrap();
    assert_eq!(
        change.nodes_renamed,
        vec![(Arc::from("r3n5"), Arc::from("r4n6"))]
    );
    assert!(change.node_attributes["r4n6"].contains("hardwaremanagement.manager"));

    // A cycle is a broken value with a reason, not a hang.
    set_nodes(
        &engine,
        &["r4n6"],
        &[
            set("custom.a", "{custom.b}"),
            set("custom.b", "x{custom.a}"),
        ],
    );
    match resolve(&engine, "r4n6", "custom.a").value {
        ResolvedValue::Broken(reason) => assert!(reason.contains("cycle"), "{reason}"),
        other => panic!("expected a broken value, got {other:?}"),
    }
}

#[test]
fn invalid_changes_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    define_nodes(&engine, &["n1"], &[]);
    let before = engine.last_seq();
    let nodes = vec![Arc::from("n1")];
    let error = engine
        .commit_blocking(|store, key| {
            plan::set_node_attributes(store, key, &nodes, &[set("loction.rack", "1")])
        })
        .unwrap_err();
    assert!(
        error.to_string().contains("location.rack"),
        "suggests the nearest name: {error}"
    );
    let error = engine
        .commit_blocking(|store, key| {
            plan::set_node_attributes(store, key, &nodes, &[set("net.hwaddr", "zz:zz")])
        })
        .unwrap_err();
    assert!(error.to_string().contains("net.hwaddr"), "{error}");
    let error = engine
        .commit_blocking(|store, key| {
            plan::set_node_attributes(store, key, &nodes, &[set("location.u", "{(n1-1}")])
        })
        .unwrap_err();
    assert!(error.to_string().contains("expression"), "{error}");
    // A valid change followed by an invalid one in the same request: nothing is applied.
    let error = engine
        .commit_blocking(|store, key| {
            plan::set_node_attributes(
                store,
                key,
                &nodes,
                &[set("location.rack", "2"), set("nosuch.thing", "x")],
            )
        })
        .unwrap_err();
    assert!(error.to_string().contains("nosuch.thing"));
    assert_eq!(text(&engine, "n1", "location.rack"), "<unset>");
    assert_eq!(engine.last_seq(), before);
    // Names are unique across nodes, groups and aliases.
    define_group(&engine, "rack1", &[]);
    let names = vec!["rack1".to_string()];
    assert!(
        engine
            .commit_blocking(|store, key| plan::create_nodes(store, key, &names, &[]))
            .is_err()
    );
}

#[test]
fn aliases_resolve_wherever_a_node_name_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    define_nodes(&engine, &["n1", "n2"], &[]);
    set_nodes(&engine, &["n1"], &[set("alias", "login1,frontend")]);
    let expanded = engine.read(|store| store.expand("frontend,n2").unwrap());
    assert_eq!(
        expanded.iter().map(|n| &**n).collect::<Vec<_>>(),
        ["n1", "n2"]
    );
    // An alias may not shadow another name.
    let nodes = vec![Arc::from("n2")];
    assert!(
        engine
            .commit_blocking(|store, key| plan::set_node_attributes(
                store,
                key,
                &nodes,
                &[set("alias", "login1")]
            ))
            .is_err()
    );
    let names = vec!["frontend".to_string()];
    assert!(
        engine
            .commit_blocking(|store, key| plan::create_nodes(store, key, &names, &[]))
            .is_err()
    );
    // Aliases survive a restart.
    engine.close();
    drop(engine);
    let engine = open(dir.path());
    assert_eq!(
        engine
            .read(|store| store.canonical_node("login1"))
            .as_deref(),
        Some("n1")
    );
}

#[test]
fn changes_survive_restart_with_and_without_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = ConfigEngine::open(
            &dir.path().join("cfg"),
            &dir.path().join("keys/master.key"),
            EngineOptions {
                snapshot_every: 7,
                ..EngineOptions::default()
            },
        )
        .unwrap();
        define_group(&engine, "rack1", &[set("location.rack", "1")]);
        for index in 0..40 {
            define_nodes(
                &engine,
                &[&format!("n{index}")],
                &[
                    set("groups", "rack1"),
                    set("location.u", &index.to_string()),
                ],
            );
        }
        // No close(): as if the process died; snapshots were taken along the way.
    }
    let engine = open(dir.path());
    assert_eq!(engine.read(Store::node_count), 40);
    assert_eq!(text(&engine, "n39", "location.u"), "39");
    assert_eq!(text(&engine, "n39", "location.rack"), "1");
    let seq = engine.last_seq();
    assert_eq!(seq, 41);
    engine.close();
    drop(engine);
    let engine = open(dir.path());
    assert_eq!(engine.last_seq(), seq);
    assert_eq!(engine.read(Store::node_count), 40);
}

fn grep_dir(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|window| window == needle)
        {
            hits.push(path.display().to_string());
        }
    }
    hits
}

#[test]
fn secrets_are_never_on_disk_in_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    define_nodes(
        &engine,
        &["n1"],
        &[
            set("bmcpass", "Sup3rSecretBmcPassw0rd"),
            set("crypted.rootpassword", "RootPasswordPlain42"),
            set("custom.nodesecret.token", "NodeTokenPlain77"),
        ],
    );
    let resolved = resolve(&engine, "n1", "secret.hardwaremanagementpassword");
    assert_eq!(resolved.value, ResolvedValue::Protected { is_set: true });
    let decrypted = engine
        .decrypt_node_secret("n1", "secret.hardwaremanagementpassword")
        .unwrap()
        .unwrap();
    assert_eq!(&decrypted[..], b"Sup3rSecretBmcPassw0rd");
    engine.snapshot().unwrap();
    let dump_dir = dir.path().join("dump");
    engine
        .read(|store| {
            dump::dump(
                store,
                engine.master_key(),
                &dump_dir,
                DumpFormat::Json,
                false,
                None,
            )
        })
        .unwrap();
    engine.close();
    for secret in [
        "Sup3rSecretBmcPassw0rd",
        "RootPasswordPlain42",
        "NodeTokenPlain77",
    ] {
        assert_eq!(
            grep_dir(dir.path(), secret.as_bytes()),
            Vec::<String>::new(),
            "{secret} found in plain text"
        );
    }
    // The hash is SHA-512 crypt.
    let hashed = engine.read(|store| {
        store
            .node("n1")
            .unwrap()
            .attributes
            .get("crypted.rootpassword")
            .cloned()
    });
    match hashed {
        Some(confluent::config::model::Stored::Hashed { hash, grub_hash }) => {
            assert!(hash.starts_with("$6$"));
            assert!(confluent::config::secrets::sha512_crypt_verify(
                "RootPasswordPlain42",
                &hash
            ));
            assert!(grub_hash.unwrap().starts_with("grub.pbkdf2.sha512.10000."));
        }
        other => panic!("expected a hash, got {other:?}"),
    }
}

#[test]
fn dump_and_restore_round_trip_reencrypting_secrets() {
    let source_dir = tempfile::tempdir().unwrap();
    let engine = open(source_dir.path());
    define_group(
        &engine,
        "compute",
        &[
            set("hardwaremanagement.manager", "{node}-bmc"),
            set("bmcuser", "admin"),
        ],
    );
    define_group(&engine, "dyn", &[set("noderange", "compute,-n2")]);
    define_nodes(
        &engine,
        &["n1", "n2"],
        &[set("groups", "compute"), set("bmcpass", "p4ss")],
    );
    for format in [DumpFormat::Json, DumpFormat::Yaml] {
        let dump_dir = source_dir.path().join(format!("dump-{format:?}"));
        engine
            .read(|store| {
                dump::dump(
                    store,
                    engine.master_key(),
                    &dump_dir,
                    format,
                    false,
                    Some(b"pass phrase"),
                )
            })
            .unwrap();
        let target_dir = tempfile::tempdir().unwrap();
        let target = open(target_dir.path());
        define_nodes(&target, &["stale"], &[]);
        let loaded = dump::load(&dump_dir, target.master_key(), Some(b"pass phrase")).unwrap();
        target
            .commit_blocking(|store, _| Ok(dump::plan_restore(store, &loaded, true).unwrap()))
            .unwrap();
        assert_eq!(
            target
                .read(|store| store.node_names_sorted())
                .iter()
                .map(|n| &**n)
                .collect::<Vec<_>>(),
            ["n1", "n2"]
        );
        assert_eq!(text(&target, "n2", "hardwaremanagement.manager"), "n2-bmc");
        let expanded = target.read(|store| store.expand("dyn").unwrap());
        assert_eq!(expanded.iter().map(|n| &**n).collect::<Vec<_>>(), ["n1"]);
        let secret = target
            .decrypt_node_secret("n1", "secret.hardwaremanagementpassword")
            .unwrap()
            .unwrap();
        assert_eq!(&secret[..], b"p4ss");
        let user = target
            .decrypt_node_secret("n1", "secret.hardwaremanagementuser")
            .unwrap()
            .unwrap();
        assert_eq!(&user[..], b"admin");
        // The wrong passphrase cannot restore.
        assert!(dump::load(&dump_dir, target.master_key(), Some(b"wrong")).is_err());
    }
    // Redacted dumps carry no key and no secrets.
    let redacted = source_dir.path().join("redacted");
    engine
        .read(|store| {
            dump::dump(
                store,
                engine.master_key(),
                &redacted,
                DumpFormat::Json,
                true,
                None,
            )
        })
        .unwrap();
    assert!(!redacted.join("keys.json").exists());
    let text = std::fs::read_to_string(redacted.join("main.json")).unwrap();
    assert!(text.contains("*REDACTED*"));
}

#[test]
fn group_rules_dynamic_and_builtin() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    define_nodes(&engine, &["n1", "n2", "n3"], &[]);
    define_group(&engine, "odd", &[set("noderange", "n1,n3")]);
    assert_eq!(engine.read(|store| store.expand("odd").unwrap()).len(), 2);
    // A dynamic group has no attributes.
    assert!(
        engine
            .commit_blocking(|store, key| plan::set_group_attributes(
                store,
                key,
                "odd",
                &[set("location.rack", "1")]
            ))
            .is_err()
    );
    assert!(
        engine
            .commit_blocking(|store, _| plan::delete_groups(store, &["everything".into()]))
            .is_err()
    );
    assert_eq!(
        engine
            .read(|store| store.expand("everything").unwrap())
            .len(),
        3
    );
    // Deleting a group removes it from members' lists; renaming rewrites them.
    define_group(
        &engine,
        "rack",
        &[set("nodes", "n1,n2"), set("location.rack", "4")],
    );
    engine
        .commit_blocking(|store, _| plan::rename_group(store, "rack", "rack4"))
        .unwrap();
    assert_eq!(
        resolve(&engine, "n1", "location.rack")
            .inherited_from
            .as_deref(),
        Some("rack4")
    );
    engine
        .commit_blocking(|store, _| plan::delete_groups(store, &["rack4".into()]))
        .unwrap();
    assert_eq!(text(&engine, "n1", "location.rack"), "<unset>");
    let groups = engine.read(|store| store.node("n1").unwrap().groups.clone());
    assert_eq!(
        groups.iter().map(|g| &**g).collect::<Vec<_>>(),
        ["everything"]
    );
}

#[test]
fn attribute_filters_see_direct_inherited_expression_and_unset_values() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    define_group(
        &engine,
        "rack1",
        &[set("location.rack", "1"), set("location.u", "{n1}")],
    );
    define_group(&engine, "rack2", &[set("location.rack", "2")]);
    define_nodes(&engine, &["n1", "n2", "n3"], &[set("groups", "rack1")]);
    define_nodes(&engine, &["n4"], &[set("groups", "rack2,rack1")]);
    define_nodes(&engine, &["n5"], &[]);
    set_nodes(&engine, &["n2"], &[set("location.rack", "2")]);
    let expand = |range: &str| -> Vec<String> {
        engine
            .read(|store| store.expand(range).unwrap())
            .iter()
            .map(|n| n.to_string())
            .collect()
    };
    // Inherited from the first group, overridden on n2, earlier group wins for n4.
    assert_eq!(expand("location.rack=1"), ["n1", "n3"]);
    assert_eq!(expand("location.rack=2"), ["n2", "n4"]);
    // Unset compares as the empty string.
    assert_eq!(expand("location.rack="), ["n5"]);
    assert_eq!(expand("location.rack!=1"), ["n2", "n4", "n5"]);
    // Expressions are evaluated per node.
    assert_eq!(expand("location.u=3"), ["n3"]);
    assert_eq!(expand("location.u=~^[12]$"), ["n1", "n2"]);
    // Aliased names work; never-set attributes match only the empty value.
    assert_eq!(expand("bmc="), ["n1", "n2", "n3", "n4", "n5"]);
    assert!(expand("info.note=x").is_empty());
    // Protected attributes cannot be filtered on.
    assert!(
        engine
            .read(|store| store.expand("secret.hardwaremanagementpassword=x"))
            .is_err()
    );
}

#[test]
fn watchers_hear_group_settings_that_no_node_inherits_yet() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let mut watcher = engine.watch(WatchFilter {
        nodes: None,
        attributes: vec!["discovery.*".into()],
        collection: false,
        globals: Vec::new(),
    });
    engine
        .commit_blocking(|store, key| {
            plan::set_group_attributes(store, key, "everything", &[set("discovery.policy", "open")])
        })
        .unwrap();
    let change = watcher.blocking_recv().unwrap();
    assert!(change.node_attributes.is_empty());
    let changed: Vec<&str> = change.group_attributes["everything"]
        .iter()
        .map(|a| &**a)
        .collect();
    assert_eq!(changed, ["discovery.policy"]);
    // Attributes the watcher did not ask for are not delivered.
    engine
        .commit_blocking(|store, key| {
            plan::set_group_attributes(store, key, "everything", &[set("location.room", "a")])
        })
        .unwrap();
    engine
        .commit_blocking(|store, key| {
            plan::set_group_attributes(
                store,
                key,
                "everything",
                &[set("discovery.policy", "manual")],
            )
        })
        .unwrap();
    let change = watcher.blocking_recv().unwrap();
    assert!(change.group_attributes["everything"].contains("discovery.policy"));
}
