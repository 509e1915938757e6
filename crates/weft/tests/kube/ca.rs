//! The CA on Kubernetes: a pod's ServiceAccount token for the audience `istio-ca`, reviewed by
//! the API server (TokenReview), gets `spiffe://TRUST_DOMAIN/ns/NS/sa/SA` (the trust domain of
//! the MeshConfig in ConfigMap `istio-system/istio`); a token for another audience, or of a
//! ServiceAccount deleted since, is refused. The self-signed root is kept in Secret
//! `istio-ca-secret` (a new replica signs with it); Istio's plug-in Secret `cacerts` takes its
//! place for the replicas started after it is created.

use std::time::Duration;

use crate::cluster::{Cluster, Control, wait_for};

/// Asks the CA for a certificate with `token`: the leaf's URI SAN, or the refusal.
async fn certificate(control: &Control, token: &str) -> Result<String, String> {
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", control.xds))
            .expect("uri")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
    let client = weft_identity::CaClient::new(channel, token.to_string());
    let (_key, csr) = weft_identity::generate_key_and_csr().expect("CSR");
    let chain = client
        .create_certificate(&csr, Duration::from_secs(3600))
        .await
        .map_err(|e| e.to_string())?;
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(chain[0].as_bytes())
        .map_err(|e| format!("leaf PEM: {e:?}"))?;
    let info = weft_identity::describe(&der).map_err(|e| e.to_string())?;
    Ok(info.uris.join(","))
}

/// The `root-cert.pem` of ConfigMap `istio-ca-root-cert` in `ns`, once it is there.
fn wait_root(cluster: &Cluster, ns: &str) -> String {
    let mut root = String::new();
    wait_for(
        &format!("istio-ca-root-cert in {ns}"),
        Duration::from_secs(30),
        || {
            let out = cluster.try_kubectl(
                &[
                    "-n",
                    ns,
                    "get",
                    "configmap",
                    "istio-ca-root-cert",
                    "-o",
                    "json",
                ],
                "",
            )?;
            let cm: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
            root = cm["data"]["root-cert.pem"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if root.contains("BEGIN CERTIFICATE") {
                Ok(())
            } else {
                Err(out)
            }
        },
    );
    root
}

/// The last certificate of the chain the CA returns for `token`.
async fn chain_root(control: &Control, token: &str) -> String {
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", control.xds))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
    let (_key, csr) = weft_identity::generate_key_and_csr().expect("CSR");
    let chain = weft_identity::CaClient::new(channel, token.to_string())
        .create_certificate(&csr, Duration::from_secs(3600))
        .await
        .expect("certificate");
    chain.last().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_get_their_spiffe_identity() {
    let cluster = Cluster::up();
    // The mesh config where Istio keeps it: ConfigMap `istio`, key `mesh`, in the control
    // plane's namespace.
    cluster.kubectl(&["create", "namespace", "istio-system"]);
    cluster.kubectl_in(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    trustDomain: weft.test
",
    );
    cluster.kubectl(&["create", "namespace", "demo"]);
    cluster.kubectl(&["-n", "demo", "create", "serviceaccount", "app"]);
    let token = |aud: &str| {
        cluster
            .kubectl(&["-n", "demo", "create", "token", "app", "--audience", aud])
            .trim()
            .to_string()
    };
    let good = token("istio-ca");
    let other = token("other");
    let control = Control::start(&cluster);
    control.wait(
        "/debug/registryz",
        "the control plane",
        Duration::from_secs(60),
        |_| true,
    );

    // The CA root in every namespace, as istiod publishes it; the chain ends with it.
    let root = wait_root(&cluster, "demo");
    let first_root = chain_root(&control, &good).await;
    assert_eq!(root.trim(), first_root.trim());
    cluster.kubectl(&["create", "namespace", "later"]);
    assert_eq!(wait_root(&cluster, "later"), root);

    assert_eq!(
        certificate(&control, &good).await,
        Ok("spiffe://weft.test/ns/demo/sa/app".to_string())
    );
    let refused = certificate(&control, &other)
        .await
        .expect_err("other audience");
    assert!(
        refused.contains("Unauthenticated") || refused.contains("did not authenticate"),
        "{refused}"
    );
    // The API server's own reason names the token's audience.
    assert!(refused.contains("other"), "{refused}");
    // Not a token at all.
    let refused = certificate(&control, "garbage").await.expect_err("garbage");
    assert!(refused.contains("did not authenticate"), "{refused}");

    // The root is kept in the cluster: a new replica (its own empty state directory) signs
    // with it.
    let kept = cluster.kubectl(&[
        "-n",
        "istio-system",
        "get",
        "secret",
        "istio-ca-secret",
        "-o",
        r#"go-template={{index .data "ca-cert.pem" | base64decode}}"#,
    ]);
    assert_eq!(kept.trim(), root.trim());
    let replica = Control::start_in(&cluster, "replica", &["--webhook-addr", ""]);
    replica.wait(
        "/debug/registryz",
        "the replica",
        Duration::from_secs(60),
        |_| true,
    );
    assert_eq!(chain_root(&replica, &good).await.trim(), root.trim());
    drop(replica);

    // Istio's plug-in CA: root → intermediate in Secret cacerts; replicas started after it
    // issue through the intermediate, and publish its root.
    let pki = tempfile::tempdir().expect("dir");
    crate::pki::ca(pki.path(), "Plug-in Root");
    crate::pki::leaf(
        pki.path(),
        "intermediate",
        "Plug-in Intermediate",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    let file = |n: &str| pki.path().join(n).to_string_lossy().into_owned();
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(file("intermediate.pem")).expect("pem"),
        std::fs::read_to_string(file("ca.pem")).expect("pem")
    );
    std::fs::write(file("cert-chain.pem"), chain).expect("chain");
    cluster.kubectl(&[
        "-n",
        "istio-system",
        "create",
        "secret",
        "generic",
        "cacerts",
        &format!("--from-file=ca-cert.pem={}", file("intermediate.pem")),
        &format!("--from-file=ca-key.pem={}", file("intermediate.key")),
        &format!("--from-file=root-cert.pem={}", file("ca.pem")),
        &format!("--from-file=cert-chain.pem={}", file("cert-chain.pem")),
    ]);
    drop(control);
    let plugged = Control::start_in(&cluster, "plugged", &["--webhook-addr", ""]);
    plugged.wait(
        "/debug/registryz",
        "the plugged-in replica",
        Duration::from_secs(60),
        |_| true,
    );
    let plugin_root = std::fs::read_to_string(file("ca.pem")).expect("root");
    assert_eq!(chain_root(&plugged, &good).await.trim(), plugin_root.trim());
    wait_for(
        "the plug-in root published",
        Duration::from_secs(30),
        || {
            let r = wait_root(&cluster, "demo");
            if r.trim() == plugin_root.trim() {
                Ok(())
            } else {
                Err(r)
            }
        },
    );
    let control = plugged;

    // The ServiceAccount is deleted: its tokens no longer authenticate.
    cluster.kubectl(&["-n", "demo", "delete", "serviceaccount", "app"]);
    let start = std::time::Instant::now();
    loop {
        match certificate(&control, &good).await {
            Err(e) if e.contains("did not authenticate") => break,
            other => assert!(
                start.elapsed() < Duration::from_secs(30),
                "a deleted ServiceAccount's token still gets {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
