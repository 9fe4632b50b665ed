//! Fuzz attribute expressions (`config::expression`): parse any UTF-8 template and evaluate it
//! for two nodes through a small `ExpressionContext`. Checks that every attribute evaluation
//! asks for is listed in `references()` (dependency tracking relies on it), that a template
//! which does not use the node name evaluates the same for every node, that a template without
//! fields evaluates to its literal, and that `escape_literal` text parses back to itself.

#![no_main]

use std::borrow::Cow;
use std::cell::RefCell;

use confluent::config::expression::{ExpressionContext, Template, escape_literal};
use libfuzzer_sys::fuzz_target;

/// A node with a few fixed attributes; it records every attribute name it is asked for.
struct Context {
    node_name: &'static str,
    asked: RefCell<Vec<String>>,
}

impl Context {
    fn new(node_name: &'static str) -> Context {
        Context {
            node_name,
            asked: RefCell::new(Vec::new()),
        }
    }
}

impl ExpressionContext for Context {
    fn node_name(&self) -> &str {
        self.node_name
    }

    fn attribute(&self, name: &str) -> Result<Option<Cow<'_, str>>, String> {
        self.asked.borrow_mut().push(name.to_owned());
        match name {
            "id.index" => Ok(Some(Cow::Borrowed("42"))),
            "location.rack" => Ok(Some(Cow::Borrowed("7"))),
            "location.u" => Ok(Some(Cow::Borrowed("-3"))),
            "net.hostname" => Ok(Some(Cow::Borrowed("r3u07-eth0"))),
            "custom.wide" => Ok(Some(Cow::Borrowed("ÄÖü€𝄞"))),
            "broken" => Err("broken on purpose".to_owned()),
            _ => Ok(None),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    let escaped = Template::parse(&escape_literal(text))
        .unwrap_or_else(|error| panic!("escaped literal does not parse: {error}"));
    assert_eq!(escaped.literal().as_deref(), Some(text));

    let Ok(template) = Template::parse(text) else {
        return;
    };
    assert_eq!(template.text(), text);

    let first = Context::new("r3u07n12");
    let second = Context::new("node-a9");
    let first_value = template.evaluate(&first);
    let second_value = template.evaluate(&second);

    for context in [&first, &second] {
        for name in context.asked.borrow().iter() {
            assert!(
                template.references().contains(name),
                "evaluation read {name:?}, which references() does not list"
            );
        }
    }
    if !template.uses_node_name() {
        assert_eq!(
            first_value.as_ref().ok(),
            second_value.as_ref().ok(),
            "a template that does not use the node name gave different values"
        );
    }
    if let Some(literal) = template.literal() {
        assert!(!template.is_expression());
        assert_eq!(first_value.ok(), Some(literal));
    }
});
