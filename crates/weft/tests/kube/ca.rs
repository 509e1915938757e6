//! The CA on Kubernetes: a pod's ServiceAccount token for the audience `istio-ca`, reviewed by
//! the API server (TokenReview), gets `spiffe://cluster.local/ns/NS/sa/SA`; a token for another
//! audience, or of a ServiceAccount deleted since, is refused.

use std::time::Duration;

use crate::cluster::{Cluster, Control};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_get_their_spiffe_identity() {
    let cluster = Cluster::up();
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

    assert_eq!(
        certificate(&control, &good).await,
        Ok("spiffe://cluster.local/ns/demo/sa/app".to_string())
    );
    let refused = certificate(&control, &other)
        .await
        .expect_err("other audience");
    assert!(
        refused.contains("Unauthenticated") || refused.contains("did not authenticate"),
        "{refused}"
    );
    assert!(refused.contains("istio-ca"), "{refused}");
    // Not a token at all.
    let refused = certificate(&control, "garbage").await.expect_err("garbage");
    assert!(refused.contains("did not authenticate"), "{refused}");

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
