//! Istio's name table (NDS) for a sidecar's DNS proxy, as istiod's `BuildNameTable` makes it:
//! every service the proxy imports that has an address for it (its VIPs, or, when the proxy
//! asks for `DNS_AUTO_ALLOCATE`, the address allocated for a ServiceEntry without any), under
//! its host name; `*.svc.cluster.local` services as `Kubernetes` with their short name and
//! namespace (so `name`, `name.ns` and `name.ns.svc` resolve), the others as `External`.
//! Wildcard hosts are left to the upstream resolver.

use weft_xds::NamedResource;
use weft_xds::istio::{NameInfo, NameTable};

use super::ProxyView;

/// The proxy's name table; `auto_allocate` is its `DNS_AUTO_ALLOCATE` metadata.
pub fn name_table(view: &ProxyView, auto_allocate: bool) -> NameTable {
    let mut table = NameTable::default();
    for svc in view.visible_services() {
        if svc.hostname.starts_with('*') || (svc.auto_vip && !auto_allocate) || svc.vips.is_empty()
        {
            continue;
        }
        let suffix = format!(".{}.svc.{}", svc.namespace, crate::push::DOMAIN_SUFFIX);
        let (registry, shortname, namespace) = match svc.hostname.strip_suffix(&suffix) {
            Some(short) => ("Kubernetes", short.to_string(), svc.namespace.clone()),
            None => ("External", String::new(), String::new()),
        };
        table.table.insert(
            svc.hostname.clone(),
            NameInfo {
                ips: svc.vips.iter().map(|ip| ip.to_string()).collect(),
                registry: registry.into(),
                shortname,
                namespace,
                alt_hosts: Vec::new(),
            },
        );
    }
    table
}

/// The NDS response: one unnamed resource, as istiod sends it.
pub fn resources(view: &ProxyView, auto_allocate: bool) -> Vec<NamedResource> {
    vec![NamedResource::new(
        "",
        crate::envoy::any(&name_table(view, auto_allocate)),
    )]
}
