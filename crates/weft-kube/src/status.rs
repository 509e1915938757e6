//! Validation results written back to Istio resources, as istiod writes its analysis: a
//! resource Weft leaves out gets `status.validationMessages` (level ERROR, the problem as
//! `weft validate` words it) and `status.observedGeneration`; once fixed, the messages go. A
//! status is written only when it differs from the object's, so a write (which the watch sees
//! again) never loops.

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};

/// The message type of Weft's validation problems.
pub const CODE: &str = "WEFT0001";

/// The status `obj` should have given its problems, when it differs from its current one.
pub fn desired(obj: &DynamicObject, problems: &[String]) -> Option<serde_json::Value> {
    let current = obj
        .data
        .get("status")
        .and_then(|s| s.get("validationMessages"))
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    let messages: Vec<serde_json::Value> = problems
        .iter()
        .map(|p| {
            serde_json::json!({
                "level": "ERROR",
                "type": {"code": CODE, "name": "InvalidResource"},
                "description": p,
            })
        })
        .collect();
    // Messages of other writers (none but ours expected) are replaced only when ours change.
    let ours: Vec<&serde_json::Value> = current
        .iter()
        .filter(|m| m["type"]["code"] == CODE)
        .collect();
    if ours.len() == messages.len() && ours.iter().zip(&messages).all(|(a, b)| *a == b) {
        return None;
    }
    Some(serde_json::json!({"status": {
        "observedGeneration": obj.metadata.generation.unwrap_or_default(),
        "validationMessages": messages,
    }}))
}

/// Writes `status` to the object (its status subresource); failures are logged (the control
/// plane serves on; the next load tries again).
pub async fn write(
    client: kube::Client,
    resource: ApiResource,
    ns: String,
    name: String,
    status: serde_json::Value,
) {
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource);
    if let Err(e) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        let hint = match &e {
            kube::Error::Api(s) if s.code == 403 => format!(
                "; grant the control plane `patch` on {}/status",
                resource.plural
            ),
            _ => String::new(),
        };
        tracing::warn!(object = %format!("{}/{ns}/{name}", resource.plural), error = %e, "cannot write the validation status{hint}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(status: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "a", "namespace": "default", "generation": 3},
            "spec": {}, "status": status,
        }))
        .expect("object")
    }

    #[test]
    fn status_is_written_when_it_changes_only() {
        let problem = vec![
            "kubernetes:…/default/a:1: VirtualService default/a: spec.hosts: required".to_string(),
        ];
        let fresh = object(serde_json::json!({}));
        let status = desired(&fresh, &problem).expect("to write");
        assert_eq!(status["status"]["observedGeneration"], 3);
        assert_eq!(
            status["status"]["validationMessages"][0]["description"],
            problem[0].as_str()
        );
        // Written already: nothing to do; fixed: cleared.
        let written = object(status["status"].clone());
        assert_eq!(desired(&written, &problem), None);
        let cleared = desired(&written, &[]).expect("to clear");
        assert_eq!(
            cleared["status"]["validationMessages"],
            serde_json::json!([])
        );
        assert_eq!(desired(&fresh, &[]), None);
    }
}
