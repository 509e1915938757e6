//! What a stream knows the client holds of one type: the resources it sent, sorted by name.
//! Resources are shared with the push that generated them, so a comparison is a pointer or
//! digest check and a stream's record of a thousand resources is a thousand pointers.

use std::collections::BTreeSet;

use crate::types::NamedResource;

/// Whether two name-sorted lists hold the same resources.
pub(super) fn same_set(a: &[NamedResource], b: &[NamedResource]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y))
}

/// The resources of `out` that `held` (both sorted by name) lacks or holds with other content.
pub(super) fn changed(out: &[NamedResource], held: &[NamedResource]) -> Vec<NamedResource> {
    changed_except(out, held, None)
}

/// [`changed`], with the names in `unheld` counted as not held (assignments of clusters being
/// re-warmed, which go out again whatever their content).
pub(super) fn changed_except(
    out: &[NamedResource],
    held: &[NamedResource],
    unheld: Option<&BTreeSet<String>>,
) -> Vec<NamedResource> {
    let mut result = Vec::new();
    let mut h = held.iter().peekable();
    for r in out {
        while h.next_if(|x| x.name() < r.name()).is_some() {}
        match h.peek() {
            Some(x) if x.same(r) && !unheld.is_some_and(|u| u.contains(r.name())) => {}
            _ => result.push(r.clone()),
        }
    }
    result
}

/// Names of the resources of `updates` that `held` (sorted by name) already has: a new
/// definition of something the client holds (for clusters, Envoy re-warms them).
pub(super) fn redefined(updates: &[NamedResource], held: &[NamedResource]) -> Vec<String> {
    updates
        .iter()
        .filter(|r| held.binary_search_by(|h| h.name().cmp(r.name())).is_ok())
        .map(|r| r.name().to_string())
        .collect()
}

/// The names a push that lists what may have changed (`changed`) makes a stream regenerate:
/// those its subscription covers, and the covered ones of `rewarm`.
pub(super) fn watched(
    changed: &BTreeSet<String>,
    rewarm: Option<&BTreeSet<String>>,
    covers: impl Fn(&str) -> bool,
) -> BTreeSet<String> {
    changed
        .iter()
        .chain(rewarm.into_iter().flatten())
        .filter(|n| covers(n))
        .cloned()
        .collect()
}

/// What a regeneration of some names means for a client.
pub(super) struct Regenerated {
    /// Resources new to the client or changed.
    pub updates: Vec<NamedResource>,
    /// Names the client holds that no longer exist.
    pub removed: Vec<String>,
    /// What the client holds once it has applied both (sorted by name).
    pub held: Vec<NamedResource>,
}

/// Compares `out`, a regeneration of `names` (sorted by name), with what the client `held`;
/// names in `unheld` count as not held. `None` when nothing changed, without copying `held`.
pub(super) fn regenerate(
    held: &[NamedResource],
    names: &BTreeSet<String>,
    out: &[NamedResource],
    unheld: Option<&BTreeSet<String>>,
) -> Option<Regenerated> {
    let before: Vec<NamedResource> = names
        .iter()
        .filter(|n| !unheld.is_some_and(|u| u.contains(*n)))
        .filter_map(|n| {
            let i = held.binary_search_by(|h| h.name().cmp(n)).ok()?;
            Some(held[i].clone())
        })
        .collect();
    let updates = changed(out, &before);
    let removed = missing(out, &before);
    if updates.is_empty() && removed.is_empty() {
        return None;
    }
    let held = if names.len().saturating_mul(8) < held.len() {
        // A few names regenerated (an endpoint push) among the thousands held: each put in
        // place by binary search, without comparing every held name.
        let mut merged = held.to_vec();
        for n in names {
            if out.binary_search_by(|x| x.name().cmp(n)).is_err()
                && let Ok(i) = merged.binary_search_by(|h| h.name().cmp(n))
            {
                merged.remove(i);
            }
        }
        for x in out {
            match merged.binary_search_by(|h| h.name().cmp(x.name())) {
                Ok(i) => merged[i] = x.clone(),
                Err(i) => merged.insert(i, x.clone()),
            }
        }
        merged
    } else {
        // Both sorted by name: merged in one pass (no sort of the thousands of assignments a
        // proxy holds on every push).
        let mut merged: Vec<NamedResource> = Vec::with_capacity(held.len() + out.len());
        let mut o = out.iter().peekable();
        for h in held {
            while let Some(x) = o.next_if(|x| x.name() < h.name()) {
                merged.push(x.clone());
            }
            if !names.contains(h.name()) {
                merged.push(h.clone());
            }
        }
        merged.extend(o.cloned());
        merged
    };
    debug_assert!(held.windows(2).all(|w| w[0].name() <= w[1].name()));
    Some(Regenerated {
        updates,
        removed,
        held,
    })
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
    use crate::testutil::raw_resource;

    fn r(name: &str, content: &str) -> NamedResource {
        raw_resource(name, content.as_bytes())
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

    #[test]
    fn a_regeneration_of_some_names_changes_only_those() {
        let held = vec![r("a", "1"), r("b", "1"), r("d", "1")];
        let names =
            |v: &[NamedResource]| v.iter().map(|r| r.name().to_string()).collect::<Vec<_>>();
        let set = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        // "b" changed, "d" is gone, "a" was not regenerated.
        let out = vec![r("b", "2")];
        let g = regenerate(&held, &set(&["b", "d"]), &out, None).unwrap();
        assert_eq!(names(&g.updates), ["b"]);
        assert_eq!(g.removed, ["d"]);
        assert_eq!(names(&g.held), ["a", "b"]);
        // New names before, between and after the held ones keep the held set in order.
        let added = vec![r("0", "1"), r("c", "1"), r("z", "1")];
        let g2 = regenerate(&held, &set(&["0", "c", "z"]), &added, None).unwrap();
        assert_eq!(names(&g2.held), ["0", "a", "b", "c", "d", "z"]);
        assert_eq!(g2.held[1].resource(), held[0].resource());
        // Same content: nothing; unless the name is to be sent again.
        let same = vec![r("a", "1")];
        assert!(regenerate(&held, &set(&["a"]), &same, None).is_none());
        let again = regenerate(&held, &set(&["a"]), &same, Some(&set(&["a"]))).unwrap();
        assert_eq!(names(&again.updates), ["a"]);
        assert_eq!(
            names(&changed_except(&same, &held, Some(&set(&["a"])))),
            ["a"]
        );
        assert_eq!(redefined(&out, &held), ["b"]);
        let w = watched(&set(&["a", "x"]), Some(&set(&["b"])), |n| n != "x");
        assert_eq!(w, set(&["a", "b"]));
    }

    #[test]
    fn a_few_names_among_many_are_put_in_place() {
        // 60 held (every other number), a few regenerated: changed, removed, added before,
        // between and after; the same as the whole merge would give.
        let key = |i: usize| format!("outbound|8080||svc-{i:03}.bench.svc.cluster.local");
        let held: Vec<NamedResource> = (0..120).step_by(2).map(|i| r(&key(i), "1")).collect();
        let set = |n: &[String]| n.iter().cloned().collect::<BTreeSet<_>>();
        let cases: Vec<(Vec<String>, Vec<NamedResource>)> = vec![
            (vec![key(10)], vec![r(&key(10), "2")]),
            (vec![key(10)], vec![]),
            (vec![key(11)], vec![r(&key(11), "1")]),
            (
                vec![key(0), key(119), key(200)],
                vec![r(&key(119), "1"), r(&key(200), "1")],
            ),
            (
                vec![key(4), key(5), key(6)],
                vec![r(&key(5), "1"), r(&key(6), "3")],
            ),
        ];
        for (names, out) in cases {
            let g = regenerate(&held, &set(&names), &out, None).expect("a change");
            let mut expected: Vec<NamedResource> = held
                .iter()
                .filter(|h| !names.iter().any(|n| n == h.name()))
                .chain(out.iter())
                .cloned()
                .collect();
            expected.sort_by(|a, b| a.name().cmp(b.name()));
            let got: Vec<(&str, &envoy_types::pb::google::protobuf::Any)> =
                g.held.iter().map(|h| (h.name(), h.resource())).collect();
            let want: Vec<(&str, &envoy_types::pb::google::protobuf::Any)> =
                expected.iter().map(|h| (h.name(), h.resource())).collect();
            assert_eq!(got, want, "{names:?}");
        }
    }
}
