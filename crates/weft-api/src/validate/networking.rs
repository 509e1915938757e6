//! ServiceEntry, WorkloadEntry, Gateway, Sidecar and ProxyConfig validation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::common::{ServerTlsMode, ServerTlsProtocol, ServerTlsSettings};
use crate::networking::{
    CaptureMode, Gateway, OutboundTrafficMode, ProxyConfig, Resolution, ServiceEntry, Sidecar,
    WorkloadEntry,
};
use crate::problem::FieldPath;
use crate::protocol::Protocol;
use crate::validate::Report;
use crate::validate::checks::{
    is_dns1123_label, selector_labels, split_host_port, validate_export_to, validate_fqdn,
    validate_ip, validate_ip_subnet, validate_labels, validate_namespace_slash_host,
    validate_object_name, validate_port, validate_port_name, validate_protocol,
    validate_unix_address, validate_wildcard_domain, validate_workload_selector,
};
use crate::validate::virtual_service::validate_destination;

const UNIX_PREFIX: &str = "unix://";

pub(crate) fn validate_service_entry(
    r: &mut Report,
    p: &FieldPath,
    se: &ServiceEntry,
    namespace: &str,
) {
    if let Some(ws) = &se.workload_selector {
        selector_labels(r, &p.key("workloadSelector").key("labels"), &ws.labels);
        if !se.endpoints.is_empty() {
            r.err(
                &p.key("workloadSelector"),
                "only one of workloadSelector or endpoints is allowed in a ServiceEntry",
            );
        }
    }
    if se.hosts.is_empty() {
        r.err(&p.key("hosts"), "service entry must have at least one host");
    }
    for (i, h) in se.hosts.iter().enumerate() {
        let hp = p.key("hosts").idx(i);
        if h == "*" {
            r.err(
                &hp,
                "invalid host *; a ServiceEntry cannot capture every host",
            );
        } else {
            r.check(&hp, validate_wildcard_domain(h));
        }
    }
    let mut cidr_found = false;
    for (i, a) in se.addresses.iter().enumerate() {
        cidr_found |= a.contains('/');
        r.check(&p.key("addresses").idx(i), validate_ip_subnet(a));
    }
    if cidr_found && !matches!(se.resolution, Resolution::None | Resolution::Static) {
        r.err(
            &p.key("addresses"),
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }

    let mut port_names: BTreeSet<&str> = BTreeSet::new();
    let mut port_numbers: BTreeSet<u32> = BTreeSet::new();
    for (i, port) in se.ports.iter().enumerate() {
        let pp = p.key("ports").idx(i);
        if !port_names.insert(port.name.as_str()) {
            r.err(
                &pp.key("name"),
                format!("service entry port name {:?} already defined", port.name),
            );
        }
        if !port_numbers.insert(port.number) {
            r.err(
                &pp.key("number"),
                format!("service entry port {} already defined", port.number),
            );
        }
        if port.target_port != 0 {
            r.check(
                &pp.key("targetPort"),
                validate_port(i64::from(port.target_port)),
            );
        }
        r.check(&pp.key("name"), validate_port_name(&port.name));
        r.check(&pp.key("protocol"), validate_protocol(&port.protocol));
        r.check(&pp.key("number"), validate_port(i64::from(port.number)));
    }

    match se.resolution {
        Resolution::None => {
            if !se.endpoints.is_empty() {
                r.err(
                    &p.key("endpoints"),
                    "no endpoints should be provided for resolution type NONE; use STATIC or DNS",
                );
            }
        }
        Resolution::Static => {
            let mut unix = false;
            for (i, ep) in se.endpoints.iter().enumerate() {
                let ep_path = p.key("endpoints").idx(i);
                if let Some(path) = ep.address.strip_prefix(UNIX_PREFIX) {
                    unix = true;
                    r.check(&ep_path.key("address"), validate_unix_address(path));
                    if !ep.ports.is_empty() {
                        r.err(
                            &ep_path.key("ports"),
                            format!("unix endpoint {} must not include ports", ep.address),
                        );
                    }
                } else {
                    r.check(&ep_path.key("address"), validate_ip(&ep.address));
                    endpoint_ports_defined(r, &ep_path, &ep.ports, &port_names);
                }
                validate_labels(r, &ep_path.key("labels"), &ep.labels);
            }
            if unix && se.ports.len() != 1 {
                r.err(
                    &p.key("ports"),
                    "exactly 1 service port required for unix endpoints",
                );
            }
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            // Envoy's LOGICAL_DNS takes one endpoint (later Istio validates this too).
            if se.resolution == Resolution::DnsRoundRobin && se.endpoints.len() > 1 {
                r.err(
                    &p.key("endpoints"),
                    "there must be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN; use DNS for several",
                );
            }
            if se.endpoints.is_empty() {
                for (i, h) in se.hosts.iter().enumerate() {
                    if validate_fqdn(h).is_err() {
                        r.err(
                            &p.key("hosts").idx(i),
                            "hosts must be FQDN if no endpoints are provided for resolution mode DNS",
                        );
                    }
                }
            }
            for (i, ep) in se.endpoints.iter().enumerate() {
                let ep_path = p.key("endpoints").idx(i);
                if ep.address.parse::<IpAddr>().is_err() && validate_fqdn(&ep.address).is_err() {
                    r.err(
                        &ep_path.key("address"),
                        format!(
                            "endpoint address {:?} is not a valid FQDN or an IP address",
                            ep.address
                        ),
                    );
                }
                validate_labels(r, &ep_path.key("labels"), &ep.labels);
                endpoint_ports_defined(r, &ep_path, &ep.ports, &port_names);
                for (name, port) in &ep.ports {
                    let kp = ep_path.key("ports").key(name.as_str());
                    r.check(&kp, validate_port_name(name));
                    r.check(&kp, validate_port(i64::from(*port)));
                }
            }
        }
    }

    if se.resolution != Resolution::None && se.hosts.len() > 1 {
        for (i, port) in se.ports.iter().enumerate() {
            let proto = Protocol::from_istio_name(&port.protocol);
            if !proto.is_http() && !proto.is_tls() {
                r.err(
                    &p.key("ports").idx(i).key("protocol"),
                    "multiple hosts provided with non-HTTP, non-TLS ports; use one host per ServiceEntry or resolution NONE",
                );
                break;
            }
        }
    }
    validate_export_to(r, &p.key("exportTo"), namespace, &se.export_to, true, false);
}

fn endpoint_ports_defined(
    r: &mut Report,
    ep_path: &FieldPath,
    ports: &BTreeMap<String, u32>,
    port_names: &BTreeSet<&str>,
) {
    for (name, port) in ports {
        if !port_names.contains(name.as_str()) {
            r.err(
                &ep_path.key("ports").key(name.as_str()),
                format!(
                    "endpoint port {port} ({name}) is not defined by the service entry's ports"
                ),
            );
        }
    }
}

pub(crate) fn validate_workload_entry(r: &mut Report, p: &FieldPath, we: &WorkloadEntry) {
    let ap = p.key("address");
    if we.address.is_empty() {
        r.err(
            &ap,
            "address must be set (an IP, a DNS name or unix://path)",
        );
        return;
    }
    if let Some(path) = we.address.strip_prefix(UNIX_PREFIX) {
        r.check(&ap, validate_unix_address(path));
        if !we.ports.is_empty() {
            r.err(
                &p.key("ports"),
                format!("unix endpoint {} must not include ports", we.address),
            );
        }
    } else if we.address.parse::<IpAddr>().is_err() && validate_fqdn(&we.address).is_err() {
        r.err(
            &ap,
            format!(
                "endpoint address {:?} is not a valid FQDN or an IP address",
                we.address
            ),
        );
    }
    validate_labels(r, &p.key("labels"), &we.labels);
    for (name, port) in &we.ports {
        let kp = p.key("ports").key(name.as_str());
        r.check(&kp, validate_port_name(name));
        r.check(&kp, validate_port(i64::from(*port)));
    }
    if !we.locality.is_empty() && we.locality.split('/').any(str::is_empty) {
        r.err(
            &p.key("locality"),
            "locality must be region/zone/subzone without empty parts",
        );
    }
    if !we.service_account.is_empty() {
        r.check(
            &p.key("serviceAccount"),
            validate_object_name(&we.service_account),
        );
    }
}

pub(crate) fn validate_gateway(r: &mut Report, p: &FieldPath, gw: &Gateway, name: &str) {
    if !name.is_empty() && !is_dns1123_label(name) {
        r.err(
            &FieldPath::root().key("metadata").key("name"),
            format!("invalid gateway name: {name:?} (must be a DNS label, no dots)"),
        );
    }
    if gw.selector.is_empty() {
        r.err(
            &p.key("selector"),
            "selector is required, e.g. {istio: ingressgateway}",
        );
    }
    validate_labels(r, &p.key("selector"), &gw.selector);
    if gw.servers.is_empty() {
        r.err(&p.key("servers"), "gateway must have at least one server");
    }
    let mut port_names: BTreeSet<&str> = BTreeSet::new();
    for (i, s) in gw.servers.iter().enumerate() {
        let sp = p.key("servers").idx(i);
        if s.hosts.is_empty() {
            r.err(
                &sp.key("hosts"),
                "server config must contain at least one host",
            );
        }
        for (j, h) in s.hosts.iter().enumerate() {
            for e in validate_namespace_slash_host(h, true) {
                r.err(&sp.key("hosts").idx(j), e);
            }
        }
        let mut port_ok = false;
        match &s.port {
            None => r.err(&sp.key("port"), "port is required"),
            Some(port) => {
                let pp = sp.key("port");
                port_ok = true;
                if Protocol::from_istio_name(&port.protocol) == Protocol::Unsupported {
                    port_ok = false;
                    r.err(&pp.key("protocol"), format!(
                        "invalid protocol {:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP, HTTPS, TLS",
                        port.protocol
                    ));
                }
                if port.number > 0
                    && let Err(e) = validate_port(i64::from(port.number))
                {
                    port_ok = false;
                    r.err(&pp.key("number"), e);
                }
                if port.name.is_empty() {
                    port_ok = false;
                    r.err(&pp.key("name"), "port name must be set");
                } else if !port_names.insert(port.name.as_str()) {
                    r.err(
                        &pp.key("name"),
                        format!(
                            "port names in servers must be unique: duplicate name {}",
                            port.name
                        ),
                    );
                }
            }
        }
        if let Some(bind) = s.bind.strip_prefix(UNIX_PREFIX) {
            r.check(&sp.key("bind"), validate_unix_address(bind));
            if s.port.as_ref().is_some_and(|pt| pt.number != 0) {
                r.err(
                    &sp.key("port").key("number"),
                    "port number must be 0 for unix domain socket",
                );
            }
        } else if !s.bind.is_empty() {
            r.check(&sp.key("bind"), validate_ip(&s.bind));
        }
        if let Some(tls) = &s.tls {
            validate_server_tls(r, &sp.key("tls"), tls);
        }
        if port_ok && let Some(port) = &s.port {
            let proto = Protocol::from_istio_name(&port.protocol);
            match &s.tls {
                None if proto.is_tls() => {
                    r.err(
                        &sp.key("tls"),
                        "server must have TLS settings for HTTPS/TLS protocols",
                    );
                }
                Some(tls) if !proto.is_tls() => {
                    let passthrough = matches!(
                        tls.mode,
                        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
                    ) && tls.ca_certificates.is_empty()
                        && tls.private_key.is_empty()
                        && tls.server_certificate.is_empty();
                    if proto.is_http() {
                        if !passthrough {
                            r.err(&sp.key("tls"), "server cannot have TLS settings for plain text HTTP ports (only httpsRedirect is allowed)");
                        }
                    } else {
                        r.err(
                            &sp.key("tls"),
                            "server cannot have TLS settings for non HTTPS/TLS ports",
                        );
                    }
                }
                _ => {}
            }
        }
    }
}

/// Server TLS settings (certificates required for SIMPLE/MUTUAL without credentialName).
pub(crate) fn validate_server_tls(r: &mut Report, p: &FieldPath, t: &ServerTlsSettings) {
    if t.min_protocol_version != ServerTlsProtocol::TlsAuto
        && t.max_protocol_version != ServerTlsProtocol::TlsAuto
        && t.min_protocol_version > t.max_protocol_version
    {
        r.err(
            &p.key("minProtocolVersion"),
            "minProtocolVersion must not be greater than maxProtocolVersion",
        );
    }
    if t.mode == ServerTlsMode::IstioMutual {
        for (field, v) in [
            ("serverCertificate", &t.server_certificate),
            ("privateKey", &t.private_key),
            ("caCertificates", &t.ca_certificates),
            ("credentialName", &t.credential_name),
        ] {
            if !v.is_empty() {
                r.err(
                    &p.key(field),
                    format!("ISTIO_MUTUAL TLS cannot have an associated {field}"),
                );
            }
        }
        return;
    }
    if matches!(t.mode, ServerTlsMode::Simple | ServerTlsMode::Mutual)
        && !t.credential_name.is_empty()
    {
        return;
    }
    if matches!(t.mode, ServerTlsMode::Simple | ServerTlsMode::Mutual) {
        let mode = if t.mode == ServerTlsMode::Simple {
            "SIMPLE"
        } else {
            "MUTUAL"
        };
        if t.server_certificate.is_empty() {
            r.err(
                &p.key("serverCertificate"),
                format!("{mode} TLS requires a server certificate (or credentialName)"),
            );
        }
        if t.private_key.is_empty() {
            r.err(
                &p.key("privateKey"),
                format!("{mode} TLS requires a private key (or credentialName)"),
            );
        }
        if t.mode == ServerTlsMode::Mutual && t.ca_certificates.is_empty() {
            r.err(
                &p.key("caCertificates"),
                "MUTUAL TLS requires a client CA bundle (or credentialName)",
            );
        }
    }
}

pub(crate) fn validate_sidecar(r: &mut Report, p: &FieldPath, sc: &Sidecar) {
    if let Some(ws) = &sc.workload_selector {
        selector_labels(r, &p.key("workloadSelector").key("labels"), &ws.labels);
    }
    if sc.egress.is_empty() && sc.ingress.is_empty() && sc.outbound_traffic_policy.is_none() {
        r.err(
            p,
            "sidecar: empty configuration provided; set ingress, egress or outboundTrafficPolicy",
        );
        return;
    }
    let mut ports: BTreeSet<u32> = BTreeSet::new();
    for (i, ing) in sc.ingress.iter().enumerate() {
        let ip = p.key("ingress").idx(i);
        let Some(port) = &ing.port else {
            r.err(
                &ip.key("port"),
                "sidecar: port is required for ingress listeners",
            );
            continue;
        };
        if !port.name.is_empty() {
            r.check(&ip.key("port").key("name"), validate_port_name(&port.name));
        }
        r.check(
            &ip.key("port").key("protocol"),
            validate_protocol(&port.protocol),
        );
        r.check(
            &ip.key("port").key("number"),
            validate_port(i64::from(port.number)),
        );
        if !ing.bind.is_empty() {
            r.check(&ip.key("bind"), validate_ip(&ing.bind));
        }
        if !ports.insert(port.number) {
            r.err(
                &ip.key("port").key("number"),
                "sidecar: ports on IP bound listeners must be unique",
            );
        }
        let de = &ing.default_endpoint;
        if let Some(path) = de.strip_prefix(UNIX_PREFIX) {
            r.check(&ip.key("defaultEndpoint"), validate_unix_address(path));
        } else if !de.is_empty() {
            match split_host_port(de) {
                Err(e) => r.err(&ip.key("defaultEndpoint"), e),
                Ok((host, port_s)) => {
                    if !["", "127.0.0.1", "0.0.0.0", "::1", "::"].contains(&host) {
                        r.err(&ip.key("defaultEndpoint"), "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port>, unix://filepath or unset");
                    }
                    match port_s.parse::<i64>() {
                        Ok(n) => r.check(&ip.key("defaultEndpoint"), validate_port(n)),
                        Err(_) => r.err(
                            &ip.key("defaultEndpoint"),
                            format!("sidecar: defaultEndpoint port ({port_s}) is not a number"),
                        ),
                    }
                }
            }
        }
        if let Some(tls) = &ing.tls {
            let tp = ip.key("tls");
            if !tls.subject_alt_names.is_empty() {
                r.err(
                    &tp.key("subjectAltNames"),
                    "sidecar: subjectAltNames is not supported in ingress tls",
                );
            }
            if tls.https_redirect {
                r.err(
                    &tp.key("httpsRedirect"),
                    "sidecar: httpsRedirect is not supported",
                );
            }
            if !tls.credential_name.is_empty() {
                r.err(
                    &tp.key("credentialName"),
                    "sidecar: credentialName is not currently supported",
                );
            }
            if matches!(
                tls.mode,
                ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough
            ) {
                r.err(
                    &tp.key("mode"),
                    "cannot set mode to ISTIO_MUTUAL or AUTO_PASSTHROUGH in sidecar ingress tls",
                );
            }
            if !Protocol::from_istio_name(&port.protocol).is_tls() {
                r.err(
                    &tp,
                    "server cannot have TLS settings for non HTTPS/TLS ports",
                );
            }
            validate_server_tls(r, &tp, tls);
        }
    }

    let mut ports: BTreeSet<u32> = BTreeSet::new();
    let mut uds: BTreeSet<&str> = BTreeSet::new();
    let mut catch_all = false;
    for (i, eg) in sc.egress.iter().enumerate() {
        let ep = p.key("egress").idx(i);
        match &eg.port {
            None => {
                if catch_all {
                    r.err(
                        &ep,
                        "sidecar: egress can have only one listener with empty port",
                    );
                    continue;
                }
                if i == sc.egress.len() - 1 {
                    catch_all = true;
                } else {
                    r.err(&ep, "sidecar: the egress listener with empty port should be the last listener in the list");
                }
            }
            Some(port) => {
                let pp = ep.key("port");
                if !port.name.is_empty() {
                    r.check(&pp.key("name"), validate_port_name(&port.name));
                }
                r.check(&pp.key("protocol"), validate_protocol(&port.protocol));
                if port.number == 0 {
                    match eg.bind.strip_prefix(UNIX_PREFIX) {
                        None => r.err(&ep.key("bind"), "sidecar: ports with 0 value must have a unix domain socket bind address"),
                        Some(path) => r.check(&ep.key("bind"), validate_unix_address(path)),
                    }
                    if !matches!(eg.capture_mode, CaptureMode::Default | CaptureMode::None) {
                        r.err(&ep.key("captureMode"), "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners");
                    }
                    if !uds.insert(eg.bind.as_str()) {
                        r.err(
                            &ep.key("bind"),
                            "sidecar: unix domain socket values for listeners must be unique",
                        );
                    }
                } else {
                    r.check(&pp.key("number"), validate_port(i64::from(port.number)));
                    if !eg.bind.is_empty() {
                        r.check(&ep.key("bind"), validate_ip(&eg.bind));
                    }
                    if !ports.insert(port.number) {
                        r.err(
                            &pp.key("number"),
                            "sidecar: ports on IP bound listeners must be unique",
                        );
                    }
                }
            }
        }
        if eg.hosts.is_empty() {
            r.err(
                &ep.key("hosts"),
                "sidecar: egress listener must contain at least one host",
            );
        }
        for (j, h) in eg.hosts.iter().enumerate() {
            for e in validate_namespace_slash_host(h, false) {
                r.err(&ep.key("hosts").idx(j), e);
            }
        }
    }
    if let Some(tp) = &sc.outbound_traffic_policy
        && let Some(proxy) = &tp.egress_proxy
    {
        let pp = p.key("outboundTrafficPolicy").key("egressProxy");
        if tp.mode != OutboundTrafficMode::AllowAny {
            r.err(
                &pp,
                "sidecar: egressProxy must be set only with ALLOW_ANY outboundTrafficPolicy mode",
            );
        } else {
            r.check(&pp.key("host"), validate_fqdn(&proxy.host));
            if proxy.port.is_none() {
                r.err(&pp.key("port"), "sidecar: egressProxy port must be set");
            } else {
                validate_destination(r, &pp, proxy);
            }
        }
    }
}

pub(crate) fn validate_proxy_config(r: &mut Report, p: &FieldPath, pc: &ProxyConfig) {
    validate_workload_selector(r, &p.key("selector"), pc.selector.as_ref());
    if pc.concurrency.is_some_and(|c| c < 0) {
        r.err(
            &p.key("concurrency"),
            "concurrency must be greater than or equal to 0",
        );
    }
}
