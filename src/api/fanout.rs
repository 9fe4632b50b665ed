//! The fan-out of per-node operations (power, consoles, discovery, ...): a noderange is
//! expanded once, as the caller's tenant sees it, in one configuration view; in that same view
//! each node's handler attribute (`hardwaremanagement.method`: ipmi, redfish, ...) and the other
//! attributes the operation needs are resolved into an owned [`Target`]; then the operation runs
//! on every target with bounded concurrency and a per-node timeout, and each node's result is
//! streamed in Confluent's `databynode` shape as soon as it arrives, in completion order.
//!
//! What it must not do: spawn tasks, or let handlers read the configuration again per node. The
//! per-node futures are driven inside the returned stream (`buffer_unordered`), so dropping the
//! stream (the client went away) drops, and so cancels, every one still in flight; only the
//! daemon spawns long-lived tasks. Everything a handler needs travels in its [`Target`].
//!
//! ```ignore
//! let options = FanOutOptions {
//!     group_by: Some("hardwaremanagement.method"),
//!     attributes: vec!["hardwaremanagement.manager".into()],
//!     ..FanOutOptions::default()
//! };
//! let results = fanout::plan(context, caller.tenant(), range, &options)?.run(|target| async move {
//!     match target.group.as_deref() {
//!         Some("ipmi") => ipmi_power(target).await,
//!         Some("redfish") => redfish_power(target).await,
//!         _ => Err(ApiError::unsupported("power", "this node's hardwaremanagement.method")),
//!     }
//! });
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt, stream};
use serde_json::{Map, Value};
use tracing::Instrument;

use super::nodes::expand_in;
use super::{ApiError, Context, ErrorCode};
use crate::config::catalogue::{self, Sensitivity};
use crate::config::model::{ResolvedValue, Store};

/// Per-node operations in flight at once, unless the operation says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// How long one node's operation may take, unless the operation says otherwise: long enough
/// for a slow BMC to set up a session and answer, short enough that a dead one is reported
/// while the user is still waiting.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What an operation needs from the fan-out.
#[derive(Debug, Clone)]
pub struct FanOutOptions {
    /// Per-node operations in flight at once (0 is taken as 1).
    pub concurrency: usize,
    /// How long one node's operation may run once started; time spent waiting for a
    /// concurrency slot does not count.
    pub timeout: Duration,
    /// The attribute naming each node's handler ([`Target::group`]), e.g.
    /// `hardwaremanagement.method`; `None` puts every node in the group `None`.
    pub group_by: Option<&'static str>,
    /// Further attributes resolved for every node ([`Target::attributes`]), by catalogue name
    /// or alias. Secrets are refused: a handler decrypts one explicitly
    /// (`ConfigEngine::decrypt_node_secret`), so that plain secrets never sit in a plan.
    pub attributes: Vec<String>,
}

impl Default for FanOutOptions {
    fn default() -> FanOutOptions {
        FanOutOptions {
            concurrency: DEFAULT_CONCURRENCY,
            timeout: DEFAULT_TIMEOUT,
            group_by: None,
            attributes: Vec::new(),
        }
    }
}

/// One node's input to a per-node operation, owned, resolved from the plan's configuration
/// view (inheritance and expressions applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node: Arc<str>,
    /// The value of [`FanOutOptions::group_by`] for this node; `None` when it is unset.
    pub group: Option<String>,
    /// The values of [`FanOutOptions::attributes`], keyed by the names as the options spell
    /// them; an attribute unset for this node is absent. Lists are joined with `,`.
    pub attributes: BTreeMap<String, String>,
}

/// A noderange expanded and resolved, ready to [`run`](Plan::run).
#[derive(Debug)]
pub struct Plan {
    /// In noderange order.
    targets: Vec<Target>,
    /// Nodes whose attributes could not be resolved (a broken expression): reported as errors,
    /// never run.
    unresolved: Vec<(Arc<str>, ApiError)>,
    concurrency: usize,
    timeout: Duration,
}

/// An attribute an operation asked for: the name as the options spell it (the key in
/// [`Target::attributes`]) and its canonical name.
struct Wanted<'a> {
    asked: &'a str,
    canonical: String,
}

impl<'a> Wanted<'a> {
    fn new(asked: &'a str) -> Result<Wanted<'a>, ApiError> {
        let canonical = catalogue::canonical_name(asked)
            .map_err(|error| ApiError::bad_request(error.to_string()))?;
        if catalogue::sensitivity(&canonical) != Sensitivity::Plain {
            return Err(ApiError::bad_request(format!(
                "{canonical} is protected and is not resolved for a per-node operation"
            )));
        }
        Ok(Wanted { asked, canonical })
    }
}

/// Expand `range` as a caller of `tenant` sees it and resolve, in the same configuration view,
/// each node's group and attributes.
///
/// Fails as a whole only when the range or the options are invalid; a node whose attributes
/// cannot be resolved is reported by [`Plan::run`] as that node's error.
pub fn plan(
    context: &Context,
    tenant: Option<&str>,
    range: &str,
    options: &FanOutOptions,
) -> Result<Plan, ApiError> {
    let group_by = options.group_by.map(Wanted::new).transpose()?;
    let attributes = options
        .attributes
        .iter()
        .map(|name| Wanted::new(name))
        .collect::<Result<Vec<_>, _>>()?;
    let (targets, unresolved) = context.config.read(|store| {
        let nodes = expand_in(store, tenant, range)?;
        let mut targets = Vec::with_capacity(nodes.len());
        let mut unresolved = Vec::new();
        for node in nodes {
            match resolve_target(store, &node, group_by.as_ref(), &attributes) {
                Ok(target) => targets.push(target),
                Err(error) => unresolved.push((node, error)),
            }
        }
        Ok::<_, ApiError>((targets, unresolved))
    })?;
    Ok(Plan {
        targets,
        unresolved,
        concurrency: options.concurrency.max(1),
        timeout: options.timeout,
    })
}

fn resolve_target(
    store: &Store,
    node: &Arc<str>,
    group_by: Option<&Wanted>,
    attributes: &[Wanted],
) -> Result<Target, ApiError> {
    // The expansion lists existing nodes only, and the view has not changed since.
    let record = store
        .node(node)
        .ok_or_else(|| ApiError::not_found(format!("node {node} not found")))?;
    let text = |wanted: &Wanted| match store.resolve_in(node, record, &wanted.canonical).value {
        ResolvedValue::Unset => Ok(None),
        ResolvedValue::Text(text) => Ok(Some(text.to_string())),
        ResolvedValue::List(items) => Ok(Some(items.join(","))),
        // Refused by `Wanted::new`; kept an error rather than a panic should the catalogue
        // and the store ever disagree.
        ResolvedValue::Protected { .. } => Err(ApiError::bad_request(format!(
            "{} is protected",
            wanted.canonical
        ))),
        ResolvedValue::Broken(reason) => Err(ApiError::bad_request(format!(
            "{} cannot be evaluated: {reason}",
            wanted.canonical
        ))),
    };
    let group = group_by.map(text).transpose()?.flatten();
    let mut values = BTreeMap::new();
    for wanted in attributes {
        if let Some(value) = text(wanted)? {
            values.insert(wanted.asked.to_string(), value);
        }
    }
    Ok(Target {
        node: node.clone(),
        group,
        attributes: values,
    })
}

impl Plan {
    /// Every target, in noderange order (nodes that could not be resolved are not listed).
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The targets by handler group, each in noderange order; nodes with the group attribute
    /// unset are under `None`.
    pub fn groups(&self) -> BTreeMap<Option<&str>, Vec<&Target>> {
        let mut groups: BTreeMap<Option<&str>, Vec<&Target>> = BTreeMap::new();
        for target in &self.targets {
            groups
                .entry(target.group.as_deref())
                .or_default()
                .push(target);
        }
        groups
    }

    /// Run `per_node` on every target, at most the plan's concurrency at once, each under the
    /// plan's timeout, and stream one `{"databynode": {node: ...}}` message per node as its
    /// result arrives: the value on success, [`ApiError::to_json`] on error (`timeout` when the
    /// node did not finish in time, `internal` when its operation panicked). Nodes the plan
    /// could not resolve come first, as errors.
    ///
    /// Nothing starts before the stream is polled. CANCEL-SAFETY: the per-node futures live
    /// inside the stream; dropping it drops every one in flight and starts no more.
    pub fn run<F, Fut>(self, mut per_node: F) -> impl Stream<Item = Value> + Send + Unpin + 'static
    where
        F: FnMut(Target) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Value, ApiError>> + Send + 'static,
    {
        let Plan {
            targets,
            unresolved,
            concurrency,
            timeout,
        } = self;
        let unresolved = unresolved
            .into_iter()
            .map(|(node, error)| by_node(&node, Err(error)));
        // `map` calls `per_node` only when `buffer_unordered` has a free slot, so a target's
        // future is created (and its timeout starts) when it is admitted.
        let running = stream::iter(targets)
            .map(move |target| {
                let node = target.node.clone();
                let span = tracing::debug_span!("fanout", node = %node);
                let operation = span.in_scope(|| per_node(target));
                async move {
                    // A panicking handler fails its node only, as it would in a task of its own.
                    let guarded = AssertUnwindSafe(operation).catch_unwind();
                    let result = match tokio::time::timeout(timeout, guarded).await {
                        Ok(Ok(result)) => result,
                        Ok(Err(panic)) => {
                            tracing::error!(
                                panic = panic_message(&*panic),
                                "per-node operation panicked"
                            );
                            Err(ApiError::new(
                                ErrorCode::Internal,
                                "the operation failed on this node",
                            ))
                        }
                        Err(_elapsed) => Err(ApiError::new(
                            ErrorCode::Timeout,
                            format!("the operation did not finish within {timeout:?}"),
                        )),
                    };
                    by_node(&node, result)
                }
                .instrument(span)
            })
            .buffer_unordered(concurrency);
        stream::iter(unresolved).chain(running)
    }
}

/// `{"databynode": {node: value-or-error}}`.
fn by_node(node: &str, result: Result<Value, ApiError>) -> Value {
    let inner = match result {
        Ok(value) => value,
        Err(error) => error.to_json(),
    };
    let mut nodes = Map::with_capacity(1);
    nodes.insert(node.to_string(), inner);
    let mut message = Map::with_capacity(1);
    message.insert("databynode".to_string(), Value::Object(nodes));
    Value::Object(message)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else {
        "(not a string)"
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;
    use tokio::time::{Instant, sleep};

    use super::*;
    use crate::config::engine::{ConfigEngine, EngineOptions};
    use crate::config::model::Op;
    use crate::config::plan::{self as change, AttributeInput};

    /// A whole API context over a real configuration engine in `dir`.
    fn context(dir: &Path) -> Context {
        let config = ConfigEngine::open(
            &dir.join("cfg"),
            &dir.join("keys/master.key"),
            EngineOptions::default(),
        )
        .expect("open configuration");
        let events = Arc::new(
            crate::eventlog::EventLogs::open(&dir.join("log"), Default::default())
                .expect("open event logs"),
        );
        Context {
            config,
            auth: Arc::new(crate::auth::Authenticator::new(
                Default::default(),
                Default::default(),
            )),
            admin_token: Arc::new(
                crate::auth::token::AdminToken::load_or_create(&dir.join("admin.token"))
                    .expect("admin token"),
            ),
            dhcp_exchanges: Arc::new(crate::dhcp::ExchangeLog::with_events(events.clone())),
            dhcp_interfaces: Arc::default(),
            events,
            metrics: Arc::new(crate::metrics::Metrics::new()),
        }
    }

    fn inputs(attributes: &[(&str, &str)]) -> Vec<(String, AttributeInput)> {
        attributes
            .iter()
            .map(|(name, value)| (name.to_string(), AttributeInput::Auto(value.to_string())))
            .collect()
    }

    /// Create nodes with attributes, tagged with `tenant` as a tenant user's creation is.
    async fn create_nodes(
        context: &Context,
        names: &[&str],
        attributes: &[(&str, &str)],
        tenant: Option<&str>,
    ) {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let attributes = inputs(attributes);
        let tenant: Option<Arc<str>> = tenant.map(Arc::from);
        context
            .config
            .commit(move |store, key| {
                let mut plan = change::create_nodes(store, key, &names, &attributes)?;
                plan.ops.extend(names.iter().map(|node| Op::NodeSetTenant {
                    node: Arc::from(node.as_str()),
                    tenant: tenant.clone(),
                }));
                Ok(plan)
            })
            .await
            .expect("create nodes");
    }

    async fn create_group(context: &Context, name: &str, attributes: &[(&str, &str)]) {
        let name = name.to_string();
        let attributes = inputs(attributes);
        context
            .config
            .commit(move |store, key| change::create_group(store, key, &name, &attributes))
            .await
            .expect("create group");
    }

    fn options(concurrency: usize, timeout: Duration) -> FanOutOptions {
        FanOutOptions {
            concurrency,
            timeout,
            ..FanOutOptions::default()
        }
    }

    /// The one node a message is about, and its inner object.
    fn split(message: &Value) -> (String, Value) {
        let nodes = message["databynode"]
            .as_object()
            .unwrap_or_else(|| panic!("not a databynode message: {message}"));
        assert_eq!(nodes.len(), 1, "{message}");
        let (node, inner) = nodes.iter().next().expect("one node");
        (node.clone(), inner.clone())
    }

    fn order(messages: &[Value]) -> Vec<String> {
        messages.iter().map(|message| split(message).0).collect()
    }

    /// Each node sleeps the number of seconds of its `custom.delay` attribute.
    async fn sleep_for_delay(target: Target) -> Result<Value, ApiError> {
        let seconds: u64 = target.attributes["custom.delay"].parse().expect("a delay");
        sleep(Duration::from_secs(seconds)).await;
        Ok(json!({"slept": seconds}))
    }

    #[tokio::test(start_paused = true)]
    async fn results_arrive_in_completion_order() {
        let dir = tempfile::tempdir().unwrap();
        let context = context(dir.path());
        create_nodes(&context, &["n1"], &[("custom.delay", "10")], None).await;
        create_nodes(&context, &["n2"], &[("custom.delay", "1")], None).await;
        create_nodes(&context, &["n3"], &[("custom.delay", "5")], None).await;
        let options = FanOutOptions {
            attributes: vec!["custom.delay".into()],
            ..options(8, Duration::from_secs(60))
        };
        let plan = plan(&context, None, "n1-n3", &options).unwrap();
        let mut stream = plan.run(sleep_for_delay);
        let started = Instant::now();
        // Each result is handed out when its node finishes, not when the slowest does.
        let mut arrivals = Vec::new();
        while let Some(message) = stream.next().await {
            arrivals.push((split(&message).0, started.elapsed().as_secs()));
            assert_eq!(split(&message).1["slept"], arrivals.last().unwrap().1);
        }
        assert_eq!(
            arrivals,
            vec![("n2".into(), 1), ("n3".into(), 5), ("n1".into(), 10)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_never_exceeds_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let context = context(dir.path());
        create_nodes(
            &context,
            &["n1", "n2", "n3", "n4", "n5", "n6", "n7"],
            &[],
            None,
        )
        .await;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let plan = plan(
            &context,
            None,
            "n1-n7",
            &options(3, Duration::from_secs(60)),
        )
        .unwrap();
        let (counter, peak) = (in_flight.clone(), most.clone());
        let messages: Vec<Value> = plan
            .run(move |target| {
                let (counter, peak) = (counter.clone(), peak.clone());
                async move {
                    let now = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    // Different lengths, so that slots free up at different times.
                    let number: u64 = target.node[1..].parse().unwrap();
                    sleep(Duration::from_millis(100 * (number % 3 + 1))).await;
                    counter.fetch_sub(1, Ordering::SeqCst);
                    Ok(json!({"done": true}))
                }
            })
            .collect()
            .await;
        let mut nodes = order(&messages);
        nodes.sort();
        assert_eq!(nodes, ["n1", "n2", "n3", "n4", "n5", "n6", "n7"]);
        assert_eq!(most.load(Ordering::SeqCst), 3);
        assert_eq!(in_flight.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_times_out_does_not_hold_up_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let context = context(dir.path());
        create_nodes(&context, &["n1"], &[("custom.delay", "3600")], None).await;
        create_nodes(&context, &["n2", "n3"], &[("custom.delay", "2")], None).await;
        let options = FanOutOptions {
            attributes: vec!["custom.delay".into()],
            ..options(8, Duration::from_secs(30))
        };
        let started = Instant::now();
        let messages: Vec<Value> = plan(&context, None, "n1-n3", &options)
            .unwrap()
            .run(sleep_for_delay)
            .collect()
            .await;
        assert_eq!(order(&messages), ["n2", "n3", "n1"]);
        let (_, timed_out) = split(&messages[2]);
        assert_eq!(timed_out["code"], "timeout", "{timed_out}");
        assert_eq!(timed_out["errorcode"], 504, "{timed_out}");
        assert!(timed_out["error"].is_string(), "{timed_out}");
        assert_eq!(split(&messages[0]).1, json!({"slept": 2}));
        // The timed-out node was given up on at its deadline, not waited for.
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_node_keeps_the_others_going() {
        let dir = tempfile::tempdir().unwrap();
        let context = context(dir.path());
        create_nodes(&context, &["n1", "n2", "n3"], &[], None).await;
        let messages: Vec<Value> = plan(&context, None, "n1-n3", &options(1, DEFAULT_TIMEOUT))
            .unwrap()
            .run(|target| async move {
                match &*target.node {
                    "n1" => Err(ApiError::new(ErrorCode::Unavailable, "the BMC refused")),
                    "n2" => panic!("a handler bug"),
                    _ => Ok(json!({"state": "on"})),
                }
            })
            .collect()
            .await;
        // With one slot the nodes run in noderange order.
        assert_eq!(
            messages,
            [
                json!({"databynode": {"n1": {
                    "errorcode": 503, "error": "the BMC refused", "code": "unavailable"
                }}}),
                json!({"databynode": {"n2": {
                    "errorcode": 500, "error": "the operation failed on this node",
                    "code": "internal"
                }}}),
                json!({"databynode": {"n3": {"state": "on"}}}),
            ]
        );
    }

    /// Counts the per-node futures dropped before they finished.
    struct CancelGuard {
        cancelled: Arc<AtomicUsize>,
        finished: bool,
    }

    impl Drop for CancelGuard {
        fn drop(&mut self) {
            if !self.finished {
                self.cancelled.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_stream_cancels_the_nodes_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let context = context(dir.path());
        create_nodes(&context, &["n1", "n2", "n3", "n4", "n5"], &[], None).await;
        let started = Arc::new(AtomicUsize::new(0));
        let cancelled = Arc::new(AtomicUsize::new(0));
        let (starts, cancels) = (started.clone(), cancelled.clone());
        let mut stream = plan(&context, None, "n1-n5", &options(3, DEFAULT_TIMEOUT))
            .unwrap()
            .run(move |target| {
                starts.fetch_add(1, Ordering::SeqCst);
                let guard = CancelGuard {
                    cancelled: cancels.clone(),
                    finished: false,
                };
                async move {
                    // Moves the whole guard in: a block using only `guard.finished` would
                    // capture just that field and drop the guard at once.
                    let mut guard = guard;
                    if &*target.node != "n1" {
                        std::future::pending::<()>().await;
                    }
                    guard.finished = true;
                    Ok(json!({"done": true}))
                }
            });
        let first = stream.next().await.expect("a first result");
        assert_eq!(split(&first).0, "n1");
        // The next poll gives n1's slot to n4; then n2, n3 and n4 are in flight, n5 waits.
        let waited = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
        assert!(waited.is_err(), "{waited:?}");
        assert_eq!(started.load(Ordering::SeqCst), 4);
        assert_eq!(cancelled.load(Ordering::SeqCst), 0);
        drop(stream);
        assert_eq!(cancelled.load(Ordering::SeqCst), 3);
        assert_eq!(started.load(Ordering::SeqCst), 4, "n5 never started");
        // Nothing else holds the operation: no task outlived the stream.
        assert_eq!(Arc::strong_count(&cancelled), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn nodes_are_grouped_by_their_resolved_handler_attribute() {
        let dir = tempfile::tempdir().unwrap();
        let context = context(dir.path());
        create_group(
            &context,
            "redfishes",
            &[
                ("hardwaremanagement.method", "redfish"),
                ("hardwaremanagement.manager", "{nodename}-xcc"),
            ],
        )
        .await;
        create_nodes(&context, &["r1", "r2"], &[("groups", "redfishes")], None).await;
        // Set on the node, over the group's value.
        create_nodes(
            &context,
            &["i1"],
            &[
                ("groups", "redfishes"),
                ("hardwaremanagement.method", "ipmi"),
                ("hardwaremanagement.manager", "10.0.0.9"),
            ],
            None,
        )
        .await;
        create_nodes(&context, &["u1"], &[], None).await;
        let options = FanOutOptions {
            group_by: Some("hardwaremanagement.method"),
            // Asked for by alias: the key stays the name as asked.
            attributes: vec!["bmc".into(), "groups".into()],
            ..FanOutOptions::default()
        };
        let plan = plan(&context, None, "r1,r2,i1,u1", &options).unwrap();
        let groups: BTreeMap<Option<&str>, Vec<&str>> = plan
            .groups()
            .into_iter()
            .map(|(group, targets)| (group, targets.iter().map(|t| &*t.node).collect()))
            .collect();
        assert_eq!(
            groups,
            BTreeMap::from([
                (None, vec!["u1"]),
                (Some("ipmi"), vec!["i1"]),
                (Some("redfish"), vec!["r1", "r2"]),
            ])
        );
        let by_node: BTreeMap<&str, &Target> = plan
            .targets()
            .iter()
            .map(|target| (&*target.node, target))
            .collect();
        assert_eq!(
            by_node["r2"].attributes,
            BTreeMap::from([
                ("bmc".to_string(), "r2-xcc".to_string()),
                ("groups".to_string(), "redfishes,everything".to_string()),
            ])
        );
        assert_eq!(by_node["i1"].attributes["bmc"], "10.0.0.9");
        assert_eq!(
            by_node["u1"].attributes,
            BTreeMap::from([("groups".to_string(), "everything".to_string())]),
            "an unset attribute is absent"
        );
        // The handler gets the same owned target.
        let messages: Vec<Value> = plan
            .run(|target| async move { Ok(json!({"group": target.group})) })
            .collect()
            .await;
        assert!(messages.contains(&json!({"databynode": {"u1": {"group": null}}})));
        assert!(messages.contains(&json!({"databynode": {"r1": {"group": "redfish"}}})));
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_whose_attributes_cannot_be_resolved_is_reported_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let context = context(dir.path());
        create_nodes(
            &context,
            &["n1"],
            &[("custom.a", "{custom.b}"), ("custom.b", "x{custom.a}")],
            None,
        )
        .await;
        create_nodes(&context, &["n2"], &[("custom.a", "fine")], None).await;
        let options = FanOutOptions {
            attributes: vec!["custom.a".into()],
            ..FanOutOptions::default()
        };
        let plan = plan(&context, None, "n1,n2", &options).unwrap();
        assert_eq!(plan.targets().len(), 1);
        let messages: Vec<Value> = plan
            .run(|target| async move { Ok(json!({"a": target.attributes["custom.a"]})) })
            .collect()
            .await;
        assert_eq!(order(&messages), ["n1", "n2"]);
        let (_, broken) = split(&messages[0]);
        assert_eq!(broken["code"], "bad_request", "{broken}");
        assert!(
            broken["error"].as_str().unwrap().contains("cycle"),
            "{broken}"
        );
        assert_eq!(split(&messages[1]).1, json!({"a": "fine"}));
    }

    #[tokio::test]
    async fn invalid_ranges_and_attributes_fail_the_whole_plan() {
        let dir = tempfile::tempdir().unwrap();
        let context = context(dir.path());
        create_nodes(&context, &["n1"], &[], None).await;
        let code = |range: &str, options: &FanOutOptions| {
            plan(&context, None, range, options)
                .map(|_| ())
                .unwrap_err()
                .code
        };
        assert_eq!(
            code("n1[", &FanOutOptions::default()),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code("nosuchnode", &FanOutOptions::default()),
            ErrorCode::BadRequest
        );
        let asking = |name: &str| FanOutOptions {
            attributes: vec![name.to_string()],
            ..FanOutOptions::default()
        };
        assert_eq!(
            code("n1", &asking("no.such.attribute")),
            ErrorCode::BadRequest
        );
        assert_eq!(code("n1", &asking("net.*.hwaddr")), ErrorCode::BadRequest);
        // Secrets are decrypted by handlers on explicit request, never carried in a plan.
        assert_eq!(code("n1", &asking("bmcpass")), ErrorCode::BadRequest);
        assert_eq!(
            code("n1", &asking("crypted.rootpassword")),
            ErrorCode::BadRequest
        );
    }

    #[tokio::test]
    async fn a_tenant_sees_only_its_own_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let context = context(dir.path());
        create_nodes(&context, &["a1", "a2"], &[], Some("acme")).await;
        create_nodes(&context, &["b1"], &[], Some("beta")).await;
        create_nodes(&context, &["s1"], &[], None).await;
        let nodes = |tenant: Option<&str>, range: &str| {
            plan(&context, tenant, range, &FanOutOptions::default()).map(|plan| {
                plan.targets()
                    .iter()
                    .map(|target| target.node.to_string())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(nodes(Some("acme"), "everything").unwrap(), ["a1", "a2"]);
        assert_eq!(nodes(None, "everything").unwrap(), ["a1", "a2", "b1", "s1"]);
        // Another tenant's node is refused like a missing one, marked hidden for the audit.
        let refused = nodes(Some("acme"), "a1,b1").unwrap_err();
        assert_eq!(refused.code, ErrorCode::BadRequest);
        assert!(refused.hidden);
        let missing = nodes(Some("acme"), "a1,zz9").unwrap_err();
        assert!(!missing.hidden);
    }
}
