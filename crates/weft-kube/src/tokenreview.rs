//! Who a bearer token stands for on Kubernetes, as Istio's CA asks: a TokenReview of the
//! pod's projected ServiceAccount token for the audience `istio-ca`; the identity is the
//! namespace and service account the API server names (`system:serviceaccount:NS:SA`), never
//! what the CSR says. The API server refuses tokens of deleted ServiceAccounts and pods.

use std::future::Future;
use std::pin::Pin;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use tonic::Status;
use weft_control::ca::{ServiceAccount, TokenReviewer};

/// The audience Istio's CA asks tokens to be for.
pub const AUDIENCE: &str = "istio-ca";

/// TokenReviews through the API server.
pub struct KubeTokenReviewer {
    client: kube::Client,
}

impl KubeTokenReviewer {
    pub fn new(client: kube::Client) -> Self {
        KubeTokenReviewer { client }
    }
}

/// The namespace and service account of a service-account user name.
pub fn service_account(username: &str) -> Option<ServiceAccount> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then(|| ServiceAccount {
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

async fn review(client: kube::Client, token: String) -> Result<ServiceAccount, Status> {
    let api: Api<TokenReview> = Api::all(client);
    let request = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token),
            audiences: Some(vec![AUDIENCE.to_string()]),
        },
        ..Default::default()
    };
    let reviewed = api
        .create(&PostParams::default(), &request)
        .await
        .map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 403 => Status::internal(format!(
                "the control plane may not review tokens: grant its service account `create` on \
                 tokenreviews.authentication.k8s.io (the API server said: {})",
                s.message
            )),
            _ => Status::unavailable(format!(
                "cannot review the token with the API server: {e}; retry"
            )),
        })?;
    let status = reviewed.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Err(Status::unauthenticated(format!(
            "the API server did not authenticate the token for audience {AUDIENCE}: {}",
            status.error.as_deref().unwrap_or("no reason given")
        )));
    }
    if let Some(auds) = &status.audiences
        && !auds.iter().any(|a| a == AUDIENCE)
    {
        return Err(Status::unauthenticated(format!(
            "the token is for {auds:?}, not {AUDIENCE}"
        )));
    }
    let user = status.user.and_then(|u| u.username).unwrap_or_default();
    service_account(&user).ok_or_else(|| {
        Status::unauthenticated(format!(
            "the token is {user:?}'s, not a service account's (system:serviceaccount:NS:NAME)"
        ))
    })
}

impl TokenReviewer for KubeTokenReviewer {
    fn review(
        &self,
        token: &str,
    ) -> Pin<Box<dyn Future<Output = Result<ServiceAccount, Status>> + Send + 'static>> {
        Box::pin(review(self.client.clone(), token.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_user_names() {
        let sa = service_account("system:serviceaccount:default:bookinfo-reviews").expect("sa");
        assert_eq!(
            (sa.namespace.as_str(), sa.name.as_str()),
            ("default", "bookinfo-reviews")
        );
        assert!(service_account("system:admin").is_none());
        assert!(service_account("system:serviceaccount:default").is_none());
        assert!(service_account("system:serviceaccount::x").is_none());
        assert!(service_account("system:serviceaccount:a:b:c").is_none());
    }
}
