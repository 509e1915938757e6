//! Loading resources and the mesh config from YAML text and files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::mesh::MeshConfig;
use crate::meta::{Kind, ObjectMeta, RawEnvelope, Resource, Source, Spec};
use crate::node::{self, Node, Value};
use crate::note::{Note, Skip};
use crate::problem::{FieldPath, Problem, Segment};
use crate::validate;

mod classify;

use classify::{Class, classify};

/// Everything read from YAML: the resources Weft applies, the problems that kept documents out,
/// and the documents read but not applied (non-Istio kinds, Istio kinds Weft does not implement).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// Valid resources of the kinds Weft implements.
    pub resources: Vec<Resource>,
    /// Problems; a document with a problem is not among `resources`.
    pub problems: Vec<Problem>,
    /// Documents skipped on purpose, in file order.
    pub notes: Vec<Note>,
    /// The Kubernetes resources among the skipped documents (Service, Namespace, Pod,
    /// Deployment, …) as they were written, for the analyzers that read them.
    pub objects: Vec<Object>,
}

/// A Kubernetes (non-Istio) resource read from YAML: not applied, kept for analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// apiVersion as written.
    pub api_version: String,
    /// Kind as written.
    pub kind: String,
    /// Name, namespace (`default` when not written, empty for a Namespace), labels and
    /// annotations.
    pub meta: ObjectMeta,
    /// The whole document as JSON.
    pub body: serde_json::Value,
    /// Where it came from.
    pub source: Source,
}

impl Parsed {
    fn append(&mut self, mut other: Parsed) {
        self.resources.append(&mut other.resources);
        self.problems.append(&mut other.problems);
        self.notes.append(&mut other.notes);
        self.objects.append(&mut other.objects);
    }
}

/// What one document turned out to be.
enum Outcome {
    Resource(Box<Resource>),
    Problems(Vec<Problem>),
    Note(Note),
}

/// `a`, `a or b`, `a, b or c`.
fn one_of(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// Deepest directory nesting followed by [`load_paths`] (guards against symlink loops).
const MAX_DIR_DEPTH: usize = 32;

/// What is known about the document a problem belongs to.
#[derive(Clone, Default)]
struct DocCtx {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

impl DocCtx {
    /// Best-effort kind / namespace / name read straight from the YAML tree.
    fn from_node(doc: &Node) -> Self {
        let meta = doc.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(Node::as_str)
            .map(str::to_owned);
        let namespace = meta
            .and_then(|m| m.get("namespace"))
            .and_then(Node::as_str)
            .unwrap_or("default")
            .to_owned();
        let kind = doc.get("kind").and_then(Node::as_str).map(str::to_owned);
        DocCtx {
            kind,
            namespace: Some(namespace),
            name,
        }
    }
}

fn problem(
    file: &Path,
    line: usize,
    ctx: &DocCtx,
    path: &FieldPath,
    message: impl Into<String>,
) -> Problem {
    Problem {
        file: file.to_path_buf(),
        line,
        kind: ctx.kind.clone(),
        namespace: ctx.namespace.clone(),
        name: ctx.name.clone(),
        field: path.to_string(),
        message: message.into(),
    }
}

/// Converts a serde_path_to_error failure into a path and message; "missing field `x`"
/// gets `x` appended to the path.
fn serde_failure(
    prefix: &FieldPath,
    err: &serde_path_to_error::Error<serde_json::Error>,
) -> (FieldPath, String) {
    let mut path = prefix.clone();
    for seg in err.path().iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => path.0.push(Segment::Index(*index)),
            serde_path_to_error::Segment::Map { key } => path.0.push(Segment::Key(key.clone())),
            serde_path_to_error::Segment::Enum { variant } => {
                path.0.push(Segment::Key(variant.clone()))
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    let msg = err.inner().to_string();
    if let Some(rest) = msg.strip_prefix("missing field `")
        && let Some(field) = rest.strip_suffix('`')
    {
        path.0.push(Segment::Key(field.to_owned()));
        return (path, format!("missing required field `{field}`"));
    }
    (path, msg)
}

fn syntax_problem(file: &Path, err: &serde_saphyr::Error) -> Problem {
    let line = err.location().map_or(1, |l| {
        usize::try_from(l.line()).unwrap_or(usize::MAX).max(1)
    });
    let mut message = err.without_snippet().to_string();
    // The line is already in the problem prefix; drop serde-saphyr's "at line N, column M".
    if let Some(pos) = message.rfind(" at line ")
        && message[pos + 9..]
            .chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == ' ' || c.is_ascii_alphabetic())
    {
        message.truncate(pos);
    }
    Problem {
        file: file.to_path_buf(),
        line,
        kind: None,
        namespace: None,
        name: None,
        field: String::new(),
        message: format!("invalid YAML: {message}"),
    }
}

/// Parses a (multi-document) YAML stream of Istio resources.
///
/// Each document is type-checked and semantically validated; documents with problems are
/// left out of the returned resources, the others are returned even when some fail. Empty
/// documents are skipped, and so are documents Weft does not apply (Kubernetes kinds such as
/// Service or Deployment, Istio kinds Weft does not implement such as EnvoyFilter): they are
/// neither resources nor problems, so they never keep the rest of a file from loading.
/// [`parse_documents_with_notes`] names them. A YAML syntax error fails the whole text.
pub fn parse_documents(text: &str, file: &Path) -> (Vec<Resource>, Vec<Problem>) {
    let parsed = parse_documents_with_notes(text, file);
    (parsed.resources, parsed.problems)
}

/// [`parse_documents`], also returning a [`Note`] for every document skipped on purpose.
pub fn parse_documents_with_notes(text: &str, file: &Path) -> Parsed {
    let mut parsed = Parsed::default();
    let docs = match node::parse_stream(text) {
        Ok(d) => d,
        Err(e) => {
            parsed.problems.push(syntax_problem(file, &e));
            return parsed;
        }
    };
    for doc in &docs {
        match parse_document(doc, file) {
            Outcome::Resource(r) => parsed.resources.push(*r),
            Outcome::Problems(mut p) => parsed.problems.append(&mut p),
            Outcome::Note(n) => {
                if n.skip == Skip::NotIstio
                    && let Some(o) = object(doc, &n)
                {
                    parsed.objects.push(o);
                }
                parsed.notes.push(n);
            }
        }
    }
    parsed
}

fn object(doc: &Node, note: &Note) -> Option<Object> {
    let body = doc.to_json();
    let name = note.name.clone()?;
    let strings = |key: &str| -> BTreeMap<String, String> {
        body["metadata"][key]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespace = match (note.kind.as_str(), &note.namespace) {
        ("Namespace", _) => String::new(),
        (_, Some(ns)) if !ns.is_empty() => ns.clone(),
        _ => "default".to_owned(),
    };
    Some(Object {
        api_version: note.api_version.clone(),
        kind: note.kind.clone(),
        meta: ObjectMeta {
            name,
            namespace,
            labels: strings("labels"),
            annotations: strings("annotations"),
        },
        source: Source {
            file: note.file.clone(),
            line: doc.line,
        },
        body,
    })
}

/// The line of `field` (`spec.http[0].route[1].destination.host`) in the document that starts
/// at `doc_line` of `file`: the deepest part of the path that exists. `None` when the file no
/// longer reads or has no document there.
pub fn field_line(file: &Path, doc_line: usize, field: &str) -> Option<usize> {
    let text = std::fs::read_to_string(file).ok()?;
    let docs = node::parse_stream(&text).ok()?;
    let doc = docs.iter().find(|d| d.line == doc_line)?;
    let mut path = Vec::new();
    for part in field.split('.').filter(|p| !p.is_empty()) {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            path.push(Segment::Key(key.to_owned()));
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse::<usize>() {
                path.push(Segment::Index(i));
            }
        }
    }
    Some(doc.line_of(&path))
}

fn note(doc: &Node, file: &Path, skip: Skip) -> Note {
    let text = |n: Option<&Node>| n.and_then(Node::as_str).map(str::to_owned);
    let meta = doc.get("metadata");
    Note {
        file: file.to_path_buf(),
        // The `kind` key's line, or the document's when it has none.
        line: doc.line_of(&FieldPath::root().key("kind").0),
        api_version: text(doc.get("apiVersion")).unwrap_or_default(),
        kind: text(doc.get("kind")).unwrap_or_default(),
        namespace: text(meta.and_then(|m| m.get("namespace"))),
        name: text(meta.and_then(|m| m.get("name"))),
        skip,
    }
}

fn parse_document(doc: &Node, file: &Path) -> Outcome {
    let root = FieldPath::root();
    let mut ctx = DocCtx::from_node(doc);
    if !matches!(doc.value, Value::Map(_)) {
        ctx = DocCtx::default();
        return Outcome::Problems(vec![problem(
            file,
            doc.line,
            &ctx,
            &root,
            "document must be a mapping with apiVersion, kind, metadata and spec",
        )]);
    }
    let at = |p: &FieldPath| doc.line_of(&p.0);
    let class = match (
        doc.get("apiVersion").and_then(Node::as_str),
        doc.get("kind").and_then(Node::as_str),
    ) {
        (Some(api_version), Some(kind)) => Some(classify(api_version, kind)),
        _ => None,
    };
    if let Some(Class::Skipped(skip)) = class {
        return Outcome::Note(note(doc, file, skip));
    }
    if ["apiVersion", "kind", "metadata", "spec"]
        .iter()
        .all(|k| doc.get(k).is_none())
    {
        return Outcome::Note(note(doc, file, Skip::NotAResource));
    }
    if !matches!(class, Some(Class::Weft(_) | Class::UnservedVersion(_))) {
        // Without a known kind the Display form falls back to "file:line: field: message".
        ctx.kind = None;
    }

    let env: RawEnvelope = match serde_path_to_error::deserialize(doc.to_json()) {
        Ok(e) => e,
        Err(e) => {
            let (path, msg) = serde_failure(&root, &e);
            return Outcome::Problems(vec![problem(file, at(&path), &ctx, &path, msg)]);
        }
    };
    let (ap, kp) = (root.key("apiVersion"), root.key("kind"));
    let kind = match class {
        Some(Class::Weft(k)) => k,
        Some(Class::UnservedVersion(served)) => {
            return Outcome::Problems(vec![problem(
                file,
                at(&ap),
                &ctx,
                &ap,
                format!(
                    "apiVersion {:?} does not serve kind {}; use {}",
                    env.api_version,
                    env.kind,
                    one_of(served)
                ),
            )]);
        }
        Some(Class::UnknownIstioKind(group)) => {
            let kinds = classify::istio_kinds_in(&group);
            let msg = if kinds.is_empty() {
                let weft: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown kind {:?}: Istio serves no API group {group}; supported kinds are {}",
                    env.kind,
                    weft.join(", ")
                )
            } else {
                format!(
                    "unknown kind {:?} in {group}; its kinds are {}",
                    env.kind,
                    kinds.join(", ")
                )
            };
            return Outcome::Problems(vec![problem(file, at(&kp), &ctx, &kp, msg)]);
        }
        Some(Class::Skipped(_)) | None => {
            // Not reached: a parsed envelope has a string apiVersion and kind, so the
            // document was classified above. Kept as an error rather than a panic.
            let supported: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            return Outcome::Problems(vec![problem(
                file,
                at(&kp),
                &ctx,
                &kp,
                format!(
                    "unknown kind {:?}; supported kinds are {}",
                    env.kind,
                    supported.join(", ")
                ),
            )]);
        }
    };
    if !kind.api_versions().contains(&env.api_version.as_str()) {
        return Outcome::Problems(vec![problem(
            file,
            at(&ap),
            &ctx,
            &ap,
            format!(
                "apiVersion {:?} does not serve kind {kind}; use {}",
                env.api_version,
                one_of(kind.api_versions())
            ),
        )]);
    }

    let mut problems = Vec::new();
    let name = env.metadata.name.unwrap_or_default();
    let namespace = env
        .metadata
        .namespace
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    let np = root.key("metadata").key("name");
    if name.is_empty() {
        problems.push(problem(
            file,
            at(&np),
            &ctx,
            &np,
            "metadata.name is required",
        ));
    } else if let Err(e) = validate::validate_object_name(&name) {
        problems.push(problem(file, at(&np), &ctx, &np, e));
    }
    let nsp = root.key("metadata").key("namespace");
    if let Err(e) = validate::validate_namespace_name(&namespace) {
        problems.push(problem(file, at(&nsp), &ctx, &nsp, e));
    }
    let meta = ObjectMeta {
        name,
        namespace,
        labels: env.metadata.labels,
        annotations: env.metadata.annotations,
    };

    let spec_json = match env.spec {
        None | Some(serde_json::Value::Null) => serde_json::Value::Object(serde_json::Map::new()),
        Some(v) => v,
    };
    let spec = match Spec::from_json(kind, spec_json) {
        Ok(s) => s,
        Err(e) => {
            let (path, msg) = serde_failure(&root.key("spec"), &e);
            problems.push(problem(file, at(&path), &ctx, &path, msg));
            return Outcome::Problems(problems);
        }
    };
    let report = validate::validate_spec(&spec, &meta);
    for (path, msg) in report.items {
        problems.push(problem(file, at(&path), &ctx, &path, msg));
    }
    if !problems.is_empty() {
        return Outcome::Problems(problems);
    }
    Outcome::Resource(Box::new(Resource {
        api_version: env.api_version,
        meta,
        spec,
        source: Source {
            file: file.to_path_buf(),
            line: doc.line,
        },
    }))
}

fn collect_yaml_files(
    dir: &Path,
    depth: usize,
    out: &mut Vec<PathBuf>,
    problems: &mut Vec<Problem>,
) {
    let file_problem = |path: &Path, msg: String| Problem {
        file: path.to_path_buf(),
        line: 1,
        kind: None,
        namespace: None,
        name: None,
        field: String::new(),
        message: msg,
    };
    if depth > MAX_DIR_DEPTH {
        problems.push(file_problem(
            dir,
            format!(
                "directory nesting deeper than {MAX_DIR_DEPTH} levels (symlink loop?); not scanned"
            ),
        ));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(file_problem(dir, format!("cannot read directory: {e}")));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) => paths.push(e.path()),
            Err(e) => problems.push(file_problem(
                dir,
                format!("cannot read directory entry: {e}"),
            )),
        }
    }
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect_yaml_files(&path, depth + 1, out, problems);
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml")
        {
            out.push(path);
        }
    }
}

/// Loads resources from files and directories (scanned recursively for `*.yaml` / `*.yml`
/// in sorted path order). Unreadable paths become problems; good documents are returned;
/// documents Weft does not apply are skipped as in [`parse_documents`].
pub fn load_paths(paths: &[PathBuf]) -> (Vec<Resource>, Vec<Problem>) {
    let parsed = load_paths_with_notes(paths);
    (parsed.resources, parsed.problems)
}

/// [`load_paths`], also returning a [`Note`] for every document skipped on purpose.
pub fn load_paths_with_notes(paths: &[PathBuf]) -> Parsed {
    let mut files = Vec::new();
    let mut parsed = Parsed::default();
    for p in paths {
        if p.is_dir() {
            collect_yaml_files(p, 0, &mut files, &mut parsed.problems);
        } else {
            files.push(p.clone());
        }
    }
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(text) => parsed.append(parse_documents_with_notes(&text, &f)),
            Err(e) => parsed.problems.push(Problem {
                file: f.clone(),
                line: 1,
                kind: None,
                namespace: None,
                name: None,
                field: String::new(),
                message: format!("cannot read file: {e}"),
            }),
        }
    }
    parsed
}

/// Parses the mesh config file (a single YAML mapping, Istio's `mesh` ConfigMap key).
///
/// Missing fields take Istio 1.14 defaults; empty text yields [`MeshConfig::default`].
/// `extensionProviders` are merged over the built-ins by name; unknown fields are errors.
pub fn parse_mesh_config(text: &str, file: &Path) -> Result<MeshConfig, Vec<Problem>> {
    let docs = node::parse_stream(text).map_err(|e| vec![syntax_problem(file, &e)])?;
    let ctx = DocCtx::default();
    let root = FieldPath::root();
    let doc = match docs.as_slice() {
        [] => return Ok(MeshConfig::default()),
        [d] => d,
        [_, second, ..] => {
            return Err(vec![problem(
                file,
                second.line,
                &ctx,
                &root,
                "mesh config must be a single YAML document",
            )]);
        }
    };
    if !matches!(doc.value, Value::Map(_)) {
        return Err(vec![problem(
            file,
            doc.line,
            &ctx,
            &root,
            "mesh config must be a YAML mapping",
        )]);
    }
    let mut mesh: MeshConfig = serde_path_to_error::deserialize(doc.to_json()).map_err(|e| {
        let (path, msg) = serde_failure(&root, &e);
        vec![problem(file, doc.line_of(&path.0), &ctx, &path, msg)]
    })?;
    let mut report = validate::Report::default();
    validate::validate_mesh_config(&mut report, &mesh);
    if !report.items.is_empty() {
        return Err(report
            .items
            .into_iter()
            .map(|(path, msg)| problem(file, doc.line_of(&path.0), &ctx, &path, msg))
            .collect());
    }
    mesh.merge_builtin_providers();
    Ok(mesh)
}

#[cfg(test)]
mod tests_invalid;
#[cfg(test)]
mod tests_valid;
#[cfg(test)]
mod tests_versions;
