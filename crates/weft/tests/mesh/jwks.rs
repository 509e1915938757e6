//! RequestAuthentication with a `jwksUri`: the control plane fetches Istio's JWKS from an
//! identity provider over HTTPS (`openssl s_server` with a certificate from a test CA that
//! `weft control --jwks-ca` trusts) and sends the keys inline, so the sidecars never call out.
//! A rule whose URI cannot be fetched is named in `/debug/config_errors`; when the provider goes
//! away the sidecars keep enforcing the last good keys.

use std::path::Path;
use std::time::Duration;

use crate::netns::wait_for;
use crate::security::{HTTPBIN_URL, code, curl, istio_jwt, security_mesh};

const IDP: u8 = 15;

/// A CA and a server certificate for `ip` signed by it, in `dir` (ca.pem, srv.pem, srv.key).
fn idp_certificates(dir: &Path, ip: &str) {
    crate::pki::ca(dir, "weft-test-idp-ca");
    crate::pki::leaf(
        dir,
        "srv",
        "idp",
        &format!(
            "subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        ),
    );
}

fn request_authentication(uri: &str, dead_uri: &str, forward: bool) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt-example
  namespace: default
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "{uri}"
    forwardOriginalToken: {forward}
  - issuer: "nobody@weft.test"
    jwksUri: "{dead_uri}"
"#
    )
}

#[test]
fn jwks_uri_is_fetched_by_the_control_plane_over_https() {
    crate::netns::require_root();
    let demo = istio_jwt("demo.jwt");
    let mut mesh = security_mesh("");
    let headers = format!("{HTTPBIN_URL}/headers");
    wait_for(Duration::from_secs(20), "httpbin through the mesh", || {
        code(&mesh, &[&headers]) == 200
    });

    // The identity provider: Istio's jwks.json over HTTPS.
    let idp_ip = mesh.ip(IDP);
    let dir = mesh.dir.path().join("idp");
    std::fs::create_dir_all(&dir).expect("idp dir");
    std::fs::write(dir.join("jwks.json"), istio_jwt("jwks.json")).expect("jwks.json");
    idp_certificates(&dir, &idp_ip);
    mesh.add_pod("idp", IDP, None);
    let serve = format!(
        "cd {} && exec openssl s_server -WWW -quiet -accept 8443 -cert srv.pem -key srv.key",
        dir.display()
    );
    mesh.spawn("idp", "app", &["sh", "-c", &serve]);
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().unwrap_or_default();
    let uri = format!("https://{idp_ip}:8443/jwks.json");
    wait_for(Duration::from_secs(20), "the identity provider", || {
        mesh.curl_from(mesh.ns("idp"), &["-sf", "-m", "2", "--cacert", ca, &uri])
            .status
            .success()
    });

    // The control plane trusts the provider's CA.
    mesh.stop_control();
    mesh.control_args = vec!["--jwks-ca".into(), ca.into()];
    mesh.start_control();
    wait_for(Duration::from_secs(40), "the sidecars to reconnect", || {
        let syncz = mesh.debug("/debug/syncz");
        ["httpbin.default", "sleep.default", "tcp-echo.default"]
            .iter()
            .all(|c| syncz.contains(c))
    });
    let dead = format!("https://{idp_ip}:8444/jwks.json");
    mesh.write_config(
        "ra-jwt-example.yaml",
        &request_authentication(&uri, &dead, false),
    );
    mesh.wait_applied("requestauthentication", "jwt-example");
    let bearer = format!("Authorization: Bearer {demo}");
    // Until the first fetch, every token fails; then the keys are pushed.
    wait_for(Duration::from_secs(30), "demo.jwt to be accepted", || {
        code(&mesh, &["-H", &bearer, &headers]) == 200
    });
    let (status, body) = curl(
        &mesh,
        "sleep",
        &["-H", "Authorization: Bearer a.b.c", &headers],
    );
    assert_eq!(status, 401, "{body}");
    assert_eq!(code(&mesh, &[&headers]), 200, "no token passes");

    // The rule whose keys cannot be fetched is named, with its resource and field.
    wait_for(
        Duration::from_secs(20),
        "the dead jwksUri in config_errors",
        || {
            let errors = mesh.debug("/debug/config_errors");
            errors.contains("jwt-example") && errors.contains("jwtRules[1].jwksUri")
        },
    );
    let errors = mesh.debug("/debug/config_errors");
    assert!(
        errors.contains(&dead) && !errors.contains("jwtRules[0]"),
        "{errors}"
    );

    // The provider goes away; a change to the resource is pushed and the keys already fetched
    // stay in force.
    mesh.signal("idp", "app", "KILL");
    mesh.write_config(
        "ra-jwt-example.yaml",
        &request_authentication(&uri, &dead, true),
    );
    mesh.wait_applied("requestauthentication", "jwt-example");
    let (status, body) = curl(&mesh, "sleep", &["-H", &bearer, &headers]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.to_ascii_lowercase().contains("authorization"),
        "forwardOriginalToken did not take effect: {body}"
    );
    let (status, _) = curl(
        &mesh,
        "sleep",
        &["-H", "Authorization: Bearer a.b.c", &headers],
    );
    assert_eq!(status, 401);
}
