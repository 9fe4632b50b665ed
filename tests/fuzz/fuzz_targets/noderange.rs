//! Fuzz the noderange grammar (`config::noderange`): parse any UTF-8 text, expand it without
//! a configuration (`Verbatim`) and against a small in-memory `Store`, and abbreviate the
//! results. For the store, abbreviating an expansion and expanding the abbreviation must give
//! the same nodes back.

#![no_main]

use std::sync::{Arc, OnceLock};

use confluent::config::model::{ExpressionValue, Op, Store, Stored};
use confluent::config::noderange::{NodeRange, Verbatim, abbreviate};
use libfuzzer_sys::fuzz_target;

/// A small configuration with static groups, a dynamic group, an alias, literal attributes and
/// an expression attribute, so that every kind of atom has something to match.
fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let name = |text: &str| -> Arc<str> { Arc::from(text) };
        let mut store = Store::new();
        let mut apply = |op: Op| store.apply(&op);
        for group in ["compute", "rack1", "rack2", "spare", "gpu"] {
            apply(Op::GroupCreate { group: name(group) });
        }
        let compute = (1..=8).map(|index| format!("n{index}"));
        let rack1 = (1..=4).map(|index| format!("r1u{index:02}"));
        let rack2 = [8, 9, 10, 11].map(|index| format!("r2u{index}"));
        for node in compute.clone().chain(rack1.clone()).chain(rack2.clone()) {
            apply(Op::NodeCreate { node: name(&node) });
        }
        for node in ["mgmt", "n10", "n010"] {
            apply(Op::NodeCreate { node: name(node) });
        }
        for node in compute {
            apply(Op::NodeSetGroups {
                node: name(&node),
                groups: vec![name("compute")],
            });
        }
        for (rack, nodes) in [
            ("rack1", rack1.collect::<Vec<_>>()),
            ("rack2", rack2.to_vec()),
        ] {
            for node in nodes {
                apply(Op::NodeSetGroups {
                    node: name(&node),
                    groups: vec![name(rack), name("gpu")],
                });
                apply(Op::NodeSet {
                    node: name(&node),
                    attribute: name("location.rack"),
                    stored: Stored::Value(name(rack.trim_start_matches("rack"))),
                });
            }
        }
        apply(Op::NodeSet {
            node: name("mgmt"),
            attribute: name("alias"),
            stored: Stored::Value(name("head,head1")),
        });
        apply(Op::GroupSet {
            group: name("gpu"),
            attribute: name("location.u"),
            stored: Stored::Expression(Arc::new(
                ExpressionValue::parse("{n1}").expect("a fixed valid expression"),
            )),
        });
        apply(Op::GroupSetNoderange {
            group: name("spare"),
            noderange: Some(name("n1-n4,-n2")),
        });
        store
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(range) = NodeRange::parse(text) else {
        return;
    };
    assert_eq!(range.text(), text);

    if let Ok(nodes) = range.expand(&Verbatim) {
        let _ = abbreviate(&nodes, &Verbatim);
    }

    let store = store();
    if let Ok(nodes) = range.expand(store) {
        let abbreviated = abbreviate(&nodes, store);
        if nodes.is_empty() {
            assert!(
                abbreviated.is_empty(),
                "an empty list abbreviates to nothing"
            );
            return;
        }
        let again = NodeRange::parse(&abbreviated)
            .unwrap_or_else(|error| panic!("abbreviation {abbreviated:?} does not parse: {error}"))
            .expand(store)
            .unwrap_or_else(|error| {
                panic!("abbreviation {abbreviated:?} does not expand: {error}")
            });
        assert_eq!(
            nodes, again,
            "abbreviation {abbreviated:?} does not expand back to the same nodes"
        );
    }
});
