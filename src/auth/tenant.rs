//! Tenants (reference 5.5): nodes and groups carry an optional tenant tag (set when a tenant
//! user creates them, never changed by attribute writes); users are keyed `tenant/name`.
//!
//! The default tenant (no tag) is the site's own: its users see every node, so the hot path of
//! the site's requests is the plain store with no filtering. A tenant user sees the store only
//! through a [`TenantView`], a [`Universe`] that hides everything not tagged with its tenant; in
//! that view the built-in group `everything` holds the tenant's nodes.

use std::sync::Arc;

use crate::config::model::{EVERYTHING, Store};
use crate::config::noderange::{GroupMembers, Universe};

/// The store as seen by the users of one tenant.
pub struct TenantView<'a> {
    pub store: &'a Store,
    pub tenant: &'a str,
}

impl<'a> TenantView<'a> {
    pub fn new(store: &'a Store, tenant: &'a str) -> TenantView<'a> {
        TenantView { store, tenant }
    }

    pub fn owns_node(&self, node: &str) -> bool {
        node_in_tenant(self.store, node, Some(self.tenant))
    }

    pub fn owns_group(&self, group: &str) -> bool {
        group_in_tenant(self.store, group, Some(self.tenant))
    }
}

/// Whether a node is visible to a caller of `tenant` (`None`: the default tenant, which sees
/// every node).
pub fn node_in_tenant(store: &Store, node: &str, tenant: Option<&str>) -> bool {
    match tenant {
        None => store.node(node).is_some(),
        Some(tenant) => store
            .node(node)
            .is_some_and(|record| record.tenant.as_deref() == Some(tenant)),
    }
}

/// Whether a group is visible to a caller of `tenant`; `everything` is visible to all.
pub fn group_in_tenant(store: &Store, group: &str, tenant: Option<&str>) -> bool {
    match tenant {
        None => store.group(group).is_some(),
        Some(_) if group == EVERYTHING => true,
        Some(tenant) => store
            .group(group)
            .is_some_and(|record| record.tenant.as_deref() == Some(tenant)),
    }
}

impl Universe for TenantView<'_> {
    fn node(&self, name: &str) -> Option<Arc<str>> {
        let canonical = self.store.canonical_node(name)?;
        self.owns_node(&canonical).then_some(canonical)
    }

    fn group(&self, name: &str) -> Option<GroupMembers> {
        if name == EVERYTHING {
            let mut nodes = Vec::new();
            self.for_each_node(&mut |node| nodes.push(node.clone()));
            return Some(GroupMembers {
                nodes,
                noderange: None,
            });
        }
        if !self.owns_group(name) {
            return None;
        }
        let mut members = Universe::group(self.store, name)?;
        members.nodes.retain(|node| self.owns_node(node));
        Some(members)
    }

    fn group_names(&self) -> Vec<Arc<str>> {
        self.store
            .group_names_sorted()
            .into_iter()
            .filter(|group| self.owns_group(group))
            .collect()
    }

    fn for_each_node(&self, visit: &mut dyn FnMut(&Arc<str>)) {
        let tenant = self.tenant;
        self.store.for_each_node(&mut |node| {
            if node_in_tenant(self.store, node, Some(tenant)) {
                visit(node);
            }
        });
    }

    fn attribute_matches(
        &self,
        node: &str,
        attribute_pattern: &str,
        visit: &mut dyn FnMut(&str) -> bool,
    ) -> Result<bool, String> {
        if !self.owns_node(node) {
            return Ok(false);
        }
        self.store.attribute_matches(node, attribute_pattern, visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Op;

    #[test]
    fn a_tenant_sees_only_its_own() {
        let mut store = Store::new();
        for (node, tenant) in [
            ("a1", Some("acme")),
            ("a2", Some("acme")),
            ("b1", Some("beta")),
            ("s1", None),
        ] {
            store.apply(&Op::NodeCreate {
                node: Arc::from(node),
            });
            store.apply(&Op::NodeSetTenant {
                node: Arc::from(node),
                tenant: tenant.map(Arc::from),
            });
        }
        let view = TenantView::new(&store, "acme");
        let everything = crate::config::noderange::expand("everything", &view).unwrap();
        assert_eq!(everything, vec![Arc::<str>::from("a1"), Arc::from("a2")]);
        assert!(crate::config::noderange::expand("b1", &view).is_err());
        assert_eq!(
            crate::config::noderange::expand("a1-a2", &view)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(store.expand("everything").unwrap().len(), 4);
    }
}
