//! What a stream knows the client holds of one type: the resources it sent, sorted by name.
//! Resources are shared with the push that generated them, so a comparison is a pointer or
//! digest check and a stream's record of a thousand resources is a thousand pointers.

use std::collections::BTreeSet;

use crate::types::NamedResource;

/// Whether two name-sorted lists hold the same resources.
pub(super) fn same_set(a: &[NamedResource], b: &[NamedResource]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y))
}

/// Applies a regeneration of the names in `names` to `held` (sorted by name): resources of
/// `regenerated` replace or join what is held, names that were not regenerated are dropped.
/// Returns the resources the client does not hold yet (new or changed).
pub(super) fn update_held(
    held: &mut Vec<NamedResource>,
    names: &BTreeSet<String>,
    regenerated: &[NamedResource],
) -> Vec<NamedResource> {
    let mut updates = Vec::new();
    for r in regenerated {
        match held.binary_search_by(|h| h.name().cmp(r.name())) {
            Ok(i) if held[i].same(r) => {}
            Ok(i) => {
                held[i] = r.clone();
                updates.push(r.clone());
            }
            Err(i) => {
                held.insert(i, r.clone());
                updates.push(r.clone());
            }
        }
    }
    for name in names {
        if regenerated
            .binary_search_by(|r| r.name().cmp(name))
            .is_err()
            && let Ok(i) = held.binary_search_by(|h| h.name().cmp(name))
        {
            held.remove(i);
        }
    }
    updates
}

/// The resources of `out` that `held` (both sorted by name) lacks or holds with other content.
pub(super) fn changed(out: &[NamedResource], held: &[NamedResource]) -> Vec<NamedResource> {
    let mut result = Vec::new();
    let mut h = held.iter().peekable();
    for r in out {
        while h.next_if(|x| x.name() < r.name()).is_some() {}
        match h.peek() {
            Some(x) if x.same(r) => {}
            _ => result.push(r.clone()),
        }
    }
    result
}

/// Names `held` (sorted by name) has that `out` (sorted by name) lacks.
pub(super) fn missing(out: &[NamedResource], held: &[NamedResource]) -> Vec<String> {
    let mut result = Vec::new();
    let mut o = out.iter().peekable();
    for h in held {
        while o.next_if(|x| x.name() < h.name()).is_some() {}
        if o.peek().is_none_or(|x| x.name() != h.name()) {
            result.push(h.name().to_string());
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::google::protobuf::Any;

    fn r(name: &str, content: &str) -> NamedResource {
        NamedResource::new(
            name,
            Any {
                type_url: "t".into(),
                value: content.as_bytes().to_vec(),
            },
        )
    }

    #[test]
    fn changed_and_missing_compare_by_name_and_content() {
        let held = vec![r("a", "1"), r("b", "1"), r("d", "1")];
        let out = vec![r("a", "1"), r("b", "2"), r("c", "1")];
        let names =
            |v: Vec<NamedResource>| v.iter().map(|r| r.name().to_string()).collect::<Vec<_>>();
        assert_eq!(names(changed(&out, &held)), ["b", "c"]);
        assert_eq!(missing(&out, &held), ["d"]);
        assert!(missing(&held, &held).is_empty());
        assert!(same_set(&held, &held.clone()));
        assert!(!same_set(&out, &held));
    }
}
