//! Table tests: one invalid spec per case and the field paths it must report.

use std::path::Path;

use crate::load::parse_documents;

fn fields_for(api: &str, kind: &str, spec: &str) -> Vec<String> {
    let yaml = format!(
        "apiVersion: {api}\nkind: {kind}\nmetadata: {{name: t, namespace: ns}}\nspec:\n{spec}"
    );
    let (res, probs) = parse_documents(&yaml, Path::new("t.yaml"));
    assert!(res.is_empty() != probs.is_empty(), "{res:?} {probs:?}");
    probs.into_iter().map(|p| p.field).collect()
}

const NET: &str = "networking.istio.io/v1beta1";
const SEC: &str = "security.istio.io/v1beta1";

#[test]
fn virtual_service_cases() {
    let cases: &[(&str, &[&str])] = &[
        (
            "  hosts: [a]\n  http:\n  - route: [{destination: {host: a}}]\n    redirect: {uri: /b}\n",
            &["spec.http[0].redirect"],
        ),
        (
            "  http:\n  - route: [{destination: {host: a}}]\n  tcp:\n  - route: [{destination: {host: a}}]\n",
            &["spec.tcp"],
        ),
        (
            "  hosts: [a.example.com]\n  tls:\n  - match: [{sniHosts: [b.example.com]}]\n    route: [{destination: {host: a.example.com}}]\n",
            &["spec.tls[0].match[0].sniHosts[0]"],
        ),
        (
            "  hosts: [a]\n  http:\n  - route: [{destination: {host: a}}]\n    retries: {attempts: -1, retryOn: 'bogus,503'}\n",
            &[
                "spec.http[0].retries.attempts",
                "spec.http[0].retries.retryOn",
            ],
        ),
        (
            "  hosts: [a]\n  http:\n  - route: [{destination: {host: a}}]\n    mirror: {host: b}\n    mirrorPercentage: {value: 150}\n",
            &["spec.http[0].mirrorPercentage.value"],
        ),
        (
            "  hosts: [a]\n  http:\n  - route: [{destination: {host: a}}]\n    fault: {abort: {httpStatus: 503, percentage: {value: 101}}}\n",
            &["spec.http[0].fault.abort.percentage.value"],
        ),
        (
            "  hosts: ['*']\n  http:\n  - route: [{destination: {host: a}}]\n",
            &["spec.hosts[0]"],
        ),
        (
            "  hosts: [a, a]\n  gateways: [istio-system/gw, mesh]\n  http:\n  - route: [{destination: {host: a}}]\n",
            &["spec.hosts[1]"],
        ),
        (
            "  hosts: [a]\n  http:\n  - route: [{destination: {host: a}}]\n    timeout: 0s\n    headers: {request: {set: {':path': x}}}\n",
            &["spec.http[0].headers.request.set[:path]"],
        ),
        (
            "  hosts: [a]\n  http:\n  - delegate: {name: b}\n    route: [{destination: {host: a}}]\n",
            &["spec.http[0].route"],
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(
            fields_for(NET, "VirtualService", spec),
            *want,
            "spec:\n{spec}"
        );
    }
}

#[test]
fn networking_cases() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "ServiceEntry",
            "  hosts: ['*.example.com']\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: DNS\n",
            &["spec.hosts[0]"],
        ),
        (
            "ServiceEntry",
            "  hosts: [a.example.com]\n  workloadSelector: {labels: {app: a}}\n  endpoints: [{address: 10.0.0.1}]\n  resolution: STATIC\n",
            &["spec.workloadSelector"],
        ),
        (
            "ServiceEntry",
            "  hosts: [a.example.com, b.example.com]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n  resolution: DNS\n",
            &["spec.ports[0].protocol"],
        ),
        ("Sidecar", "  {}\n", &["spec"]),
        (
            "Gateway",
            "  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [example.com]\n    tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}\n",
            &["spec.servers[0].tls"],
        ),
        (
            "Gateway",
            "  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [example.com]\n    tls: {mode: SIMPLE}\n",
            &[
                "spec.servers[0].tls.serverCertificate",
                "spec.servers[0].tls.privateKey",
            ],
        ),
        (
            "WorkloadEntry",
            "  address: unix:///var/run/app.sock\n  ports: {http: 80}\n",
            &["spec.ports"],
        ),
        (
            "DestinationRule",
            "  host: a\n  workloadSelector: {matchLabels: {app: a}}\n  exportTo: ['*']\n",
            &["spec.exportTo"],
        ),
        (
            "DestinationRule",
            "  host: a\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN, consistentHash: {useSourceIp: true}}\n    connectionPool: {http: {maxRetries: -1}}\n",
            &[
                "spec.trafficPolicy.connectionPool.http.maxRetries",
                "spec.trafficPolicy.loadBalancer",
            ],
        ),
        (
            "DestinationRule",
            "  host: a\n  trafficPolicy:\n    tls: {mode: MUTUAL}\n",
            &[
                "spec.trafficPolicy.tls.clientCertificate",
                "spec.trafficPolicy.tls.privateKey",
            ],
        ),
        (
            "Sidecar",
            "  workloadSelector: {labels: {app: '*'}}\n  ingress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    defaultEndpoint: 10.0.0.1:8080\n",
            &[
                "spec.workloadSelector.labels.app",
                "spec.ingress[0].defaultEndpoint",
            ],
        ),
        ("ProxyConfig", "  concurrency: -1\n", &["spec.concurrency"]),
    ];
    for (kind, spec, want) in cases {
        assert_eq!(fields_for(NET, kind, spec), *want, "{kind}:\n{spec}");
    }
}

#[test]
fn security_cases() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "RequestAuthentication",
            "  jwtRules:\n  - jwksUri: ftp://example.com/jwks\n  - issuer: x\n    jwks: 'not json'\n",
            &[
                "spec.jwtRules[0].issuer",
                "spec.jwtRules[0].jwksUri",
                "spec.jwtRules[1].jwks",
            ],
        ),
        (
            "RequestAuthentication",
            "  jwtRules:\n  - issuer: x\n    jwks: '{\"keys\": [{\"kty\": \"RSA\", \"e\": \"AQAB\"}]}'\n  - issuer: y\n    jwks: '{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"a\", \"y\": \"b\"}]}'\n",
            &["spec.jwtRules[0].jwks"],
        ),
        ("AuthorizationPolicy", "  action: DENY\n", &["spec.rules"]),
        (
            "AuthorizationPolicy",
            "  rules:\n  - from: [{source: {}}]\n    to: [{operation: {ports: ['http']}}]\n",
            &[
                "spec.rules[0].from[0].source",
                "spec.rules[0].to[0].operation.ports[0]",
            ],
        ),
        (
            "AuthorizationPolicy",
            "  action: CUSTOM\n  provider: {name: authz}\n  rules:\n  - from: [{source: {principals: [a]}}]\n",
            &["spec.rules[0].from[0].source.principals"],
        ),
        (
            "PeerAuthentication",
            "  selector: {matchLabels: {app: a}}\n  portLevelMtls: {0: {mode: STRICT}}\n",
            &["spec.portLevelMtls.0"],
        ),
    ];
    for (kind, spec, want) in cases {
        assert_eq!(fields_for(SEC, kind, spec), *want, "{kind}:\n{spec}");
    }
}

#[test]
fn telemetry_cases() {
    let cases: &[(&str, &[&str])] = &[
        (
            "  accessLogging:\n  - filter: {expression: 'response.code >= (400'}\n",
            &["spec.accessLogging[0].filter.expression"],
        ),
        (
            "  metrics:\n  - overrides:\n    - tagOverrides: {a: {operation: REMOVE, value: x}}\n",
            &["spec.metrics[0].overrides[0].tagOverrides.a.value"],
        ),
        (
            "  metrics:\n  - overrides:\n    - tagOverrides: {my-tag: {value: request.host}}\n",
            &["spec.metrics[0].overrides[0].tagOverrides.my-tag"],
        ),
        (
            "  tracing:\n  - customTags: {t: {literal: {value: ''}}}\n",
            &["spec.tracing[0].customTags.t.literal.value"],
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(
            fields_for("telemetry.istio.io/v1alpha1", "Telemetry", spec),
            *want,
            "{spec}"
        );
    }
}
