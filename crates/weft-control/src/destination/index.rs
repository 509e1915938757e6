//! Istio 1.14's DestinationRule index and its lookup for one proxy, after istiod's
//! `pilot/pkg/model`: `SetDestinationRules` and `mergeDestinationRule` build the tables once per
//! push; `destinationRule(proxyNamespace, service)` picks the rules for a service and
//! `SidecarScope.DestinationRule` picks among them by `workloadSelector`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use weft_api::networking::DestinationRule;
use weft_api::{MeshConfig, Resource, Spec};

use crate::push::DOMAIN_SUFFIX;
use crate::registry::{Registry, Service};

type Labels = BTreeMap<String, String>;

/// `visibility.Public`.
const PUBLIC: &str = "*";
/// `visibility.Private`.
const PRIVATE: &str = ".";

/// istiod's `consolidatedDestRule`: one rule, or several for one host merged into the first.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The (merged) rule, its host resolved to a FQDN.
    pub rule: Arc<DestinationRule>,
    /// The namespace of the first rule (`rule.Namespace` in istiod).
    pub namespace: String,
    /// The name of the first rule (for the clusters' `istio.config` metadata).
    pub name: String,
}

impl Entry {
    fn selector(&self) -> Option<&Labels> {
        self.rule
            .workload_selector
            .as_ref()
            .map(|s| &s.match_labels)
    }
}

/// istiod's `consolidatedDestRules`: per host, the merged rules and their `exportTo`.
#[derive(Debug, Default)]
struct Table {
    export_to: HashMap<String, BTreeSet<String>>,
    rules: HashMap<String, Vec<Entry>>,
    /// The wildcard hosts among those of `rules`.
    wildcards: Vec<String>,
}

impl Table {
    /// `mergeDestinationRule`: a rule for a host already in the table is merged into the
    /// entries it may merge with (subsets appended unless the name is taken, the top-level
    /// traffic policy taken when the entry has none, the host's `exportTo` taken when it had
    /// none); it is a new entry unless one of them has no selector like it, or the same one.
    fn merge(
        &mut self,
        host: &str,
        namespace: &str,
        name: &str,
        rule: &Arc<DestinationRule>,
        export: &BTreeSet<String>,
    ) {
        let Some(list) = self.rules.get_mut(host) else {
            self.rules.insert(
                host.to_string(),
                vec![Entry {
                    rule: rule.clone(),
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                }],
            );
            self.export_to.insert(host.to_string(), export.clone());
            if weft_api::host::is_wildcard(host) {
                self.wildcards.push(host.to_string());
            }
            return;
        };
        let new_selector = rule.workload_selector.as_ref().map(|s| &s.match_labels);
        let mut add = true;
        for entry in list.iter_mut() {
            let old_selector = entry.selector();
            // `labels.Instance.Equals`, where an absent selector has no labels.
            let selectors_match = (old_selector.is_none_or(Labels::is_empty)
                && new_selector.is_none_or(Labels::is_empty))
                || old_selector == new_selector;
            let both_with = old_selector.is_some() && new_selector.is_some();
            let both_without = old_selector.is_none() && new_selector.is_none();
            if both_with && !selectors_match {
                continue;
            }
            if both_without || (new_selector.is_some() && selectors_match) {
                add = false;
            }
            let merged = Arc::make_mut(&mut entry.rule);
            let existing: HashSet<String> = merged.subsets.iter().map(|s| s.name.clone()).collect();
            merged.subsets.extend(
                rule.subsets
                    .iter()
                    .filter(|s| !existing.contains(&s.name))
                    .cloned(),
            );
            if merged.traffic_policy.is_none() && rule.traffic_policy.is_some() {
                merged.traffic_policy = rule.traffic_policy.clone();
            }
            if !export.is_empty() && self.export_to.get(host).is_none_or(BTreeSet::is_empty) {
                self.export_to.insert(host.to_string(), export.clone());
            }
        }
        if add {
            list.push(Entry {
                rule: rule.clone(),
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        }
    }

    /// `MostSpecificHostMatch`: the exact host, else the longest wildcard host that covers
    /// `needle` (alphabetically first among equally long ones).
    fn most_specific(&self, needle: &str) -> Option<&str> {
        if let Some((host, _)) = self.rules.get_key_value(needle) {
            return Some(host);
        }
        let needle_wildcard = weft_api::host::is_wildcard(needle);
        self.wildcards
            .iter()
            .map(String::as_str)
            .filter(|h| {
                if needle_wildcard {
                    needle.len() >= h.len() && needle[1..].ends_with(&h[1..])
                } else {
                    needle.ends_with(&h[1..])
                }
            })
            .min_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)))
    }

    /// The entries for the most specific host matching `hostname`.
    fn lookup(&self, hostname: &str) -> Option<(&str, &[Entry])> {
        let host = self.most_specific(hostname)?;
        Some((host, self.rules.get(host)?.as_slice()))
    }
}

/// What the DestinationRule lookups of a proxy depend on: its namespace and workload labels,
/// and a key naming the outcome. Proxies with the same key resolve every service to the same
/// rule, so the resources built from those rules can be shared by them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope {
    /// `None` stands for any namespace that no rule singles out.
    namespace: Option<String>,
    labels: Labels,
    key: String,
}

impl Scope {
    /// Empty for the proxies that see what a proxy in a namespace no rule names sees (the
    /// common case); otherwise the namespace and which of its `workloadSelector`s match.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// What the index was built from, to tell whether a later push resolves any proxy's rules
/// differently.
#[derive(Debug, Default, PartialEq)]
pub struct Inputs {
    rules: Vec<(String, String, DestinationRule)>,
    root_namespace: String,
    default_export_to: Vec<String>,
    /// Labels of the workloads in namespaces with `workloadSelector` rules.
    selected: Vec<(String, String, Labels)>,
}

/// The DestinationRules of a push, indexed as istiod 1.14 indexes them.
#[derive(Debug, Default)]
pub struct Index {
    root_namespace: String,
    /// `namespaceLocal`: per namespace, its rules visible in it (exportTo empty, `*`, `.` or
    /// the namespace itself), with or without selector.
    namespace_local: HashMap<String, Table>,
    /// `exportedByNamespace`: per namespace, its rules visible elsewhere.
    exported: HashMap<String, Table>,
    /// `rootNamespaceLocal`: the root namespace's private rules.
    root_local: Table,
    /// Per namespace, its rules' distinct `workloadSelector`s in config order.
    selectors: BTreeMap<String, Vec<Labels>>,
    /// Namespaces whose proxies may see other rules than a namespace no rule names: those
    /// with rules visible in them, the root namespace, and those named in an `exportTo`.
    special: BTreeSet<String>,
    /// The special namespaces whose proxies (without a matching selector) do resolve some
    /// service differently.
    distinct: BTreeSet<String>,
    inputs: Arc<Inputs>,
}

impl Index {
    /// `SetDestinationRules`. Rules are taken in config order, which stands in for istiod's
    /// creation-time order (Weft's config has no creation times).
    pub fn build(resources: &[Resource], mesh: &MeshConfig, registry: &Registry) -> Index {
        let root = mesh.root_namespace.clone();
        let default_private = mesh
            .default_destination_rule_export_to
            .iter()
            .any(|e| e == PRIVATE);
        let mut ix = Index {
            root_namespace: root.clone(),
            ..Index::default()
        };
        let mut inputs = Inputs {
            root_namespace: root.clone(),
            default_export_to: mesh.default_destination_rule_export_to.clone(),
            ..Inputs::default()
        };
        for r in resources {
            let Spec::DestinationRule(dr) = &r.spec else {
                continue;
            };
            let ns = r.meta.namespace.as_str();
            inputs
                .rules
                .push((ns.to_string(), r.meta.name.clone(), dr.clone()));
            let host = weft_api::resolve_host(&dr.host, ns, DOMAIN_SUFFIX);
            let rule = Arc::new(DestinationRule {
                host: host.clone(),
                ..dr.clone()
            });
            // Rules with a workloadSelector are not exported to other namespaces.
            let export: BTreeSet<String> = match &dr.workload_selector {
                None => dr.export_to.iter().cloned().collect(),
                Some(sel) => {
                    let known = ix.selectors.entry(ns.to_string()).or_default();
                    if !known.contains(&sel.match_labels) {
                        known.push(sel.match_labels.clone());
                    }
                    BTreeSet::from([PRIVATE.to_string()])
                }
            };
            if export.is_empty()
                || export.contains(PUBLIC)
                || export.contains(PRIVATE)
                || export.contains(ns)
            {
                ix.namespace_local.entry(ns.to_string()).or_default().merge(
                    &host,
                    ns,
                    &r.meta.name,
                    &rule,
                    &export,
                );
            }
            // Without exportTo the mesh default applies, of which only `.` and `*` count.
            let private_only = (export.is_empty() && default_private)
                || (export.len() == 1 && (export.contains(PRIVATE) || export.contains(ns)));
            if !private_only {
                ix.exported.entry(ns.to_string()).or_default().merge(
                    &host,
                    ns,
                    &r.meta.name,
                    &rule,
                    &export,
                );
            } else if ns == root {
                ix.root_local.merge(&host, ns, &r.meta.name, &rule, &export);
            }
        }
        ix.special = ix.namespace_local.keys().cloned().collect();
        ix.special.insert(root);
        for table in ix.exported.values() {
            ix.special
                .extend(table.export_to.values().flatten().cloned());
        }
        let common: Vec<Option<&Entry>> = registry
            .services
            .iter()
            .map(|svc| ix.resolve_with(None, svc, |_| false))
            .collect();
        let distinct: BTreeSet<String> = ix
            .special
            .iter()
            .filter(|ns| {
                registry.services.iter().zip(&common).any(|(svc, common)| {
                    !same_rule(ix.resolve_with(Some(ns), svc, |_| false), *common)
                })
            })
            .cloned()
            .collect();
        ix.distinct = distinct;
        if !ix.selectors.is_empty() {
            inputs.selected = registry
                .workloads
                .values()
                .filter(|w| ix.selectors.contains_key(&w.namespace))
                .map(|w| (w.namespace.clone(), w.name.clone(), w.labels.clone()))
                .collect();
        }
        ix.inputs = Arc::new(inputs);
        ix
    }

    /// What the index was built from.
    pub fn inputs(&self) -> &Arc<Inputs> {
        &self.inputs
    }

    /// The scope of a proxy in `namespace` with these workload labels.
    pub fn scope(&self, namespace: &str, labels: Labels) -> Scope {
        let key = if self.special.contains(namespace) {
            let bits: String = self
                .selectors
                .get(namespace)
                .into_iter()
                .flatten()
                .map(|sel| if selects(sel, &labels) { '1' } else { '0' })
                .collect();
            if bits.contains('1') || self.distinct.contains(namespace) {
                format!("{namespace}|{bits}")
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        Scope {
            namespace: Some(namespace.to_string()),
            labels,
            key,
        }
    }

    /// One scope for each key a proxy of this push can have: the common one, and those of the
    /// special namespaces for a proxy without a registered workload and for each workload there.
    pub fn scopes(&self, registry: &Registry) -> Vec<Scope> {
        let mut out = vec![Scope::default()];
        let mut seen = HashSet::from([String::new()]);
        for ns in &self.special {
            let workloads = registry
                .workloads
                .range((ns.clone(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, w)| w.labels.clone());
            for labels in std::iter::once(Labels::new()).chain(workloads) {
                let scope = self.scope(ns, labels);
                if seen.insert(scope.key.clone()) {
                    out.push(scope);
                }
            }
        }
        out
    }

    /// The rule that applies to `svc` for a proxy of `scope`.
    pub(crate) fn resolve(&self, scope: &Scope, svc: &Service) -> Option<&Entry> {
        self.resolve_with(scope.namespace.as_deref(), svc, |sel| {
            selects(sel, &scope.labels)
        })
    }

    /// `destinationRule(proxyNamespace, service)` then `SidecarScope.DestinationRule` for
    /// outbound traffic: the first rule of the proxy's namespace whose selector `matches`, else
    /// the rule without selector.
    fn resolve_with(
        &self,
        namespace: Option<&str>,
        svc: &Service,
        matches: impl Fn(&Labels) -> bool,
    ) -> Option<&Entry> {
        let entries = self.candidates(namespace, svc)?;
        let mut catch_all = None;
        for entry in entries {
            match entry.selector() {
                None => catch_all = Some(entry),
                Some(sel) => {
                    if namespace == Some(entry.namespace.as_str()) && matches(sel) {
                        return Some(entry);
                    }
                }
            }
        }
        catch_all
    }

    /// `destinationRule(proxyNamespace, service)`: the proxy's namespace's rules (the root
    /// namespace's private ones for a proxy in the root namespace), then the rules the
    /// service's namespace exports to the proxy's, then those the root namespace exports to it.
    fn candidates(&self, namespace: Option<&str>, svc: &Service) -> Option<&[Entry]> {
        let local = match namespace {
            Some(ns) if ns == self.root_namespace => Some(&self.root_local),
            Some(ns) => self.namespace_local.get(ns),
            None => None,
        };
        if let Some((_, entries)) = local.and_then(|t| t.lookup(&svc.hostname)) {
            return Some(entries);
        }
        if !svc.namespace.is_empty()
            && let Some(entries) = self.exported_to(&svc.namespace, &svc.hostname, namespace)
        {
            return Some(entries);
        }
        self.exported_to(&self.root_namespace, &svc.hostname, namespace)
    }

    /// `getExportedDestinationRuleFromNamespace`: the owner's exported rules for the most
    /// specific host, when that host's `exportTo` includes the client's namespace.
    fn exported_to(&self, owner: &str, hostname: &str, client: Option<&str>) -> Option<&[Entry]> {
        let table = self.exported.get(owner)?;
        let (host, entries) = table.lookup(hostname)?;
        let visible = table.export_to.get(host).is_none_or(|e| {
            e.is_empty() || e.contains(PUBLIC) || client.is_some_and(|c| e.contains(c))
        });
        visible.then_some(entries)
    }
}

/// `labels.Instance.SubsetOf`: every label of the selector is on the workload.
fn selects(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn same_rule(a: Option<&Entry>, b: Option<&Entry>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(&a.rule, &b.rule) || a.rule == b.rule,
        _ => false,
    }
}
