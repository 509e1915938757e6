use super::*;
use weft_xds::pb::google::protobuf::Any;

fn res(name: &str, content: &str) -> NamedResource {
    NamedResource::new(
        name,
        Any {
            type_url: "test".into(),
            value: content.as_bytes().to_vec(),
        },
    )
}

fn names(n: &[&str]) -> Subscription {
    Subscription::Names(Arc::new(n.iter().map(|s| s.to_string()).collect()))
}

fn seen<'a>(sent: Option<&'a str>, acked: Option<&'a str>) -> Seen<'a> {
    Seen {
        sent,
        acked,
        nacked: None,
    }
}

fn sync(t: &Tracker, type_url: &str, seen: &Seen<'_>, since: u64) -> TypeSync {
    t.type_sync("p", type_url, seen, since)
}

#[test]
fn labels_parse_and_order() {
    assert_eq!(
        Label::parse("1700000000/7"),
        Some(Label { push: 7, sub: 0 })
    );
    assert_eq!(
        Label::parse("1700000000/7.2"),
        Some(Label { push: 7, sub: 2 })
    );
    assert_eq!(Label::parse("3"), Some(Label { push: 3, sub: 0 }));
    assert_eq!(Label::parse("v1"), None);
    assert!(Label::parse("1/7.2") > Label::parse("2/7"));
    assert!(Label::parse("1/10") > Label::parse("9/9.5"));
}

#[test]
fn a_push_that_leaves_a_type_unchanged_counts_as_applied() {
    let t = Tracker::default();
    let v = t.record(
        "p",
        types::CLUSTER,
        &Subscription::Wildcard,
        "s/1".into(),
        &[res("a", "1")],
    );
    assert_eq!(v, "s/1");
    assert_eq!(
        sync(&t, types::CLUSTER, &seen(Some("s/1"), Some("s/1")), 1),
        TypeSync::Synced
    );
    // Push 2 before the stream processed it: waiting.
    assert!(matches!(
        sync(&t, types::CLUSTER, &seen(Some("s/1"), Some("s/1")), 2),
        TypeSync::Waiting(_)
    ));
    // Push 2 generates the same clusters: nothing is sent, and the proxy has push 2.
    let v = t.record(
        "p",
        types::CLUSTER,
        &Subscription::Wildcard,
        "s/2".into(),
        &[res("a", "1")],
    );
    assert_eq!(v, "s/2");
    assert_eq!(
        sync(&t, types::CLUSTER, &seen(Some("s/1"), Some("s/1")), 2),
        TypeSync::Synced
    );
    // Push 3 changes them: until the proxy ACKs s/3 it lacks push 3 (the response may
    // not even be sent yet).
    t.record(
        "p",
        types::CLUSTER,
        &Subscription::Wildcard,
        "s/3".into(),
        &[res("a", "2")],
    );
    assert!(matches!(
        sync(&t, types::CLUSTER, &seen(Some("s/1"), Some("s/1")), 3),
        TypeSync::Waiting(_)
    ));
    assert!(matches!(
        sync(&t, types::CLUSTER, &seen(Some("s/3"), Some("s/1")), 3),
        TypeSync::Waiting(_)
    ));
    assert_eq!(
        sync(&t, types::CLUSTER, &seen(Some("s/3"), Some("s/3")), 3),
        TypeSync::Synced
    );
    // Another proxy, another type: nothing known.
    assert!(matches!(
        t.type_sync("q", types::CLUSTER, &seen(None, None), 1),
        TypeSync::Waiting(_)
    ));
    assert!(matches!(
        sync(&t, types::LISTENER, &seen(None, None), 1),
        TypeSync::Waiting(_)
    ));
}

#[test]
fn an_endpoints_only_push_counts_as_applied_where_it_regenerated_nothing() {
    let t = Tracker::default();
    t.pushed(1, true);
    t.record(
        "p",
        types::CLUSTER,
        &Subscription::Wildcard,
        "s/1".into(),
        &[res("a", "1")],
    );
    let acked = seen(Some("s/1"), Some("s/1"));
    // Pushes 2 and 3 moved endpoints only: the clusters of push 1 are those of push 3.
    t.pushed(2, false);
    t.pushed(3, false);
    assert_eq!(sync(&t, types::CLUSTER, &acked, 3), TypeSync::Synced);
    // Push 4 is a full one: waiting until the stream generated it.
    t.pushed(4, true);
    assert!(matches!(
        sync(&t, types::CLUSTER, &acked, 4),
        TypeSync::Waiting(_)
    ));
}

#[test]
fn generations_within_one_push_get_versions_of_their_own() {
    let t = Tracker::default();
    assert_eq!(
        t.record(
            "p",
            types::ROUTE,
            &names(&["80"]),
            "s/4".into(),
            &[res("80", "x")]
        ),
        "s/4"
    );
    // New listeners: the proxy asks for another route table within push 4.
    let both = [res("80", "x"), res("90", "y")];
    assert_eq!(
        t.record(
            "p",
            types::ROUTE,
            &names(&["80", "90"]),
            "s/4".into(),
            &both
        ),
        "s/4.1"
    );
    // Its first response ACKed, the second still in flight: not applied.
    assert!(matches!(
        sync(&t, types::ROUTE, &seen(Some("s/4.1"), Some("s/4")), 4),
        TypeSync::Waiting(_)
    ));
    assert_eq!(
        sync(&t, types::ROUTE, &seen(Some("s/4.1"), Some("s/4.1")), 4),
        TypeSync::Synced
    );
    // Fewer names later (nothing sent): what it holds still covers them.
    assert_eq!(
        t.record("p", types::ROUTE, &names(&["90"]), "s/4".into(), &both),
        "s/4.2"
    );
    assert_eq!(
        sync(&t, types::ROUTE, &seen(Some("s/4.1"), Some("s/4.1")), 4),
        TypeSync::Synced
    );
    // The generator's extra names are not what the proxy subscribed.
    assert_eq!(
        t.record("p", types::ROUTE, &names(&["90"]), "s/5".into(), &both),
        "s/5"
    );
    assert_eq!(
        sync(&t, types::ROUTE, &seen(Some("s/4.1"), Some("s/4.1")), 5),
        TypeSync::Synced
    );
    // A stream still on an older push does not move the labels back.
    assert_eq!(
        t.record("p", types::ROUTE, &names(&["90"]), "s/4".into(), &both),
        "s/4"
    );
}

#[test]
fn a_rejected_current_config_is_final_an_older_one_is_not() {
    let t = Tracker::default();
    t.record(
        "p",
        types::LISTENER,
        &Subscription::Wildcard,
        "s/1".into(),
        &[res("l", "1")],
    );
    t.record(
        "p",
        types::LISTENER,
        &Subscription::Wildcard,
        "s/2".into(),
        &[res("l", "bad")],
    );
    let nack = Seen {
        sent: Some("s/2"),
        acked: Some("s/1"),
        nacked: Some(("s/2", "bad listener")),
    };
    match sync(&t, types::LISTENER, &nack, 2) {
        TypeSync::Rejected(m) => {
            assert!(m.contains("s/2") && m.contains("bad listener"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // Push 3 fixes it; until it is sent the old NACK is not the last word.
    t.record(
        "p",
        types::LISTENER,
        &Subscription::Wildcard,
        "s/3".into(),
        &[res("l", "good")],
    );
    assert!(matches!(
        sync(&t, types::LISTENER, &nack, 3),
        TypeSync::Waiting(_)
    ));
    let fixed = Seen {
        sent: Some("s/3"),
        acked: Some("s/3"),
        nacked: Some(("s/2", "bad listener")),
    };
    assert_eq!(sync(&t, types::LISTENER, &fixed, 3), TypeSync::Synced);
}

#[test]
fn old_contents_are_forgotten_but_unchanged_pushes_cost_nothing() {
    let t = Tracker::default();
    t.record(
        "p",
        types::CLUSTER,
        &Subscription::Wildcard,
        "s/1".into(),
        &[res("a", "1")],
    );
    for n in 2..100 {
        t.record(
            "p",
            types::CLUSTER,
            &Subscription::Wildcard,
            format!("s/{n}"),
            &[res("a", "1")],
        );
    }
    assert_eq!(
        sync(&t, types::CLUSTER, &seen(Some("s/1"), Some("s/1")), 99),
        TypeSync::Synced
    );
    for n in 100..120 {
        t.record(
            "p",
            types::CLUSTER,
            &Subscription::Wildcard,
            format!("s/{n}"),
            &[res("a", &n.to_string())],
        );
    }
    match sync(&t, types::CLUSTER, &seen(Some("s/1"), Some("s/1")), 119) {
        TypeSync::Waiting(m) => assert!(m.contains("no longer known"), "{m}"),
        other => panic!("{other:?}"),
    }
    t.retain_connected(&HashSet::new());
    assert_eq!(lock(&t.proxies).len(), 1, "recently heard of");
}

#[test]
fn kinds_as_istioctl_names_them() {
    for (name, kind) in [
        ("virtualservice", Kind::VirtualService),
        ("VirtualService", Kind::VirtualService),
        ("virtualservices", Kind::VirtualService),
        ("vs", Kind::VirtualService),
        ("dr", Kind::DestinationRule),
        ("destinationrule", Kind::DestinationRule),
        ("se", Kind::ServiceEntry),
        ("serviceentries", Kind::ServiceEntry),
        ("gw", Kind::Gateway),
        ("sidecar", Kind::Sidecar),
        (
            "networking.istio.io/v1beta1/VirtualService",
            Kind::VirtualService,
        ),
        ("peerauthentication", Kind::PeerAuthentication),
        ("authorizationpolicies", Kind::AuthorizationPolicy),
        ("telemetries", Kind::Telemetry),
    ] {
        assert_eq!(parse_kind(name), Some(kind), "{name}");
    }
    assert_eq!(parse_kind("envoyfilter"), None);
    assert_eq!(
        parse_resource("VirtualService/default/reviews"),
        Some(("VirtualService".into(), "default".into(), "reviews".into()))
    );
    assert_eq!(parse_resource("default/reviews"), None);
}

fn vs(name: &str, host: &str, line: usize) -> Resource {
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{host}]\n  http:\n  - route: [{{destination: {{host: {host}}}}}]\n"
    );
    let (mut rs, problems) = weft_api::parse_documents(&text, std::path::Path::new("vs.yaml"));
    assert!(problems.is_empty(), "{problems:?}");
    let mut r = rs.remove(0);
    r.source.line = line;
    r
}

fn snapshot(resources: Vec<Resource>, fingerprint: u64) -> Snapshot {
    Snapshot {
        resources: Arc::new(resources),
        fingerprint,
        ..Snapshot::default()
    }
}

#[test]
fn a_resource_is_in_force_from_the_push_that_brought_its_content() {
    let first = Applied::first(
        &snapshot(vec![vs("a", "x", 1), vs("b", "y", 9)], 1),
        1,
        "s/1",
    );
    let key = |n: &str| DocKey::new("VirtualService", "default", n);
    assert_eq!(first.since[&key("a")].push, 1);
    // b changes, a stays.
    let second = first.next(
        &snapshot(vec![vs("a", "x", 1), vs("b", "z", 9)], 2),
        Some((2, "s/2")),
    );
    assert_eq!(second.since[&key("a")].push, 1);
    assert_eq!(second.since[&key("b")].push, 2);
    assert_eq!(second.since[&key("b")].version, "s/2");
    // A reload that changed nothing keeps everything.
    let third = second.next(&snapshot(vec![vs("a", "x", 1), vs("b", "z", 9)], 3), None);
    assert_eq!(third.since, second.since);
    assert_eq!(third.fingerprint, 3);

    let t = Tracker::default();
    let d = |applied: &Applied, disk: u64, kind: &str, name: &str| {
        distribution(applied, disk, kind, "default", name, &[], &t)
    };
    assert_eq!(d(&third, 4, "vs", "a").state, State::Loading);
    let a = d(&third, 3, "vs", "a");
    assert_eq!(a.state, State::Applied, "no proxies: nothing to wait for");
    assert_eq!(a.version.as_deref(), Some("s/1"));
    assert_eq!(a.resource, "VirtualService default/a");
    assert_eq!(a.source.as_deref(), Some("vs.yaml:1"));
    assert_eq!(
        d(&third, 3, "virtualservice", "nope").state,
        State::NotFound
    );
    assert_eq!(d(&third, 3, "envoyfilter", "a").state, State::UnknownKind);
}

#[test]
fn refused_and_skipped_resources_are_final() {
    let key = DocKey::new("VirtualService", "default", "a");
    let mut snap = snapshot(vec![vs("a", "x", 1)], 1);
    snap.refused.insert(
        PathBuf::from("vs.yaml"),
        RefusedFile {
            problems: vec!["vs.yaml:3: VirtualService default/b: spec.http: bad".into()],
            documents: vec![DocKey::new("VirtualService", "default", "b")],
        },
    );
    snap.notes.push(Note {
        file: PathBuf::from("f.yaml"),
        line: 2,
        api_version: "networking.istio.io/v1alpha3".into(),
        kind: "EnvoyFilter".into(),
        namespace: Some("istio-system".into()),
        name: Some("f".into()),
        skip: weft_api::Skip::UnsupportedIstio,
    });
    let applied = Applied::first(&snap, 1, "s/1");
    let t = Tracker::default();
    let d = |kind: &str, ns: &str, name: &str| distribution(&applied, 1, kind, ns, name, &[], &t);
    // b is named by the problem; a is in force from the same (refused) file.
    let b = d("vs", "default", "b");
    assert_eq!(b.state, State::Rejected);
    assert!(b.errors[0].contains("spec.http"), "{b:?}");
    let a = d("vs", "default", "a");
    assert_eq!(a.state, State::Rejected);
    assert!(
        a.message
            .as_deref()
            .is_some_and(|m| m.contains("last good content")),
        "{a:?}"
    );
    let f = d("envoyfilter", "istio-system", "f");
    assert_eq!(f.state, State::Skipped);
    assert!(f.errors[0].contains("not supported by Weft"), "{f:?}");
    assert!(f.state.is_final() && a.state.is_final() && !State::NotFound.is_final());

    let mut snap = snapshot(vec![vs("a", "x", 1)], 1);
    snap.flagged
        .push((key, "vs.yaml:1: VirtualService default/a: duplicate".into()));
    let applied = Applied::first(&snap, 1, "s/1");
    let a = distribution(&applied, 1, "vs", "default", "a", &[], &t);
    assert_eq!(a.state, State::Rejected);
}
