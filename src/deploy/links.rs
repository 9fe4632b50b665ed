//! Short links: DHCP boot-file URLs must fit 128 bytes, so the DHCP service hands out
//! `/boot/su/<id>` and remembers what each id stands for; the HTTP boot routes follow them.

use std::collections::{HashMap, VecDeque};

/// Short links remembered at once; the oldest are forgotten first.
const MAX_SHORT_LINKS: usize = 65_536;

/// The short URLs the DHCP service handed out for names too long for the `file` field
/// (`/boot/su/<id>/...`), resolved by the HTTP boot routes.
#[derive(Default)]
pub struct ShortLinks {
    inner: parking_lot::Mutex<ShortLinksInner>,
}

#[derive(Default)]
struct ShortLinksInner {
    targets: HashMap<String, String>,
    order: VecDeque<String>,
}

impl ShortLinks {
    pub fn insert(&self, id: &str, target: &str) {
        let mut inner = self.inner.lock();
        if inner
            .targets
            .insert(id.to_string(), target.to_string())
            .is_none()
        {
            inner.order.push_back(id.to_string());
            while inner.order.len() > MAX_SHORT_LINKS {
                if let Some(oldest) = inner.order.pop_front() {
                    inner.targets.remove(&oldest);
                }
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<String> {
        self.inner.lock().targets.get(id).cloned()
    }
}

impl std::fmt::Debug for ShortLinks {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ShortLinks")
            .field("count", &self.inner.lock().targets.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_links_forget_the_oldest_past_the_limit() {
        let links = ShortLinks::default();
        for index in 0..MAX_SHORT_LINKS + 2 {
            links.insert(&index.to_string(), "http://x/y");
        }
        assert_eq!(links.get("0"), None);
        assert_eq!(links.get("1"), None);
        assert_eq!(links.get("2").as_deref(), Some("http://x/y"));
    }
}
