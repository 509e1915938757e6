//! The config store: Istio YAML from a directory (and the mesh config file), reloaded on change.
//! A file with any problem keeps its last good content in force, so a bad edit never takes
//! config away from the mesh; the problems are logged and shown at `/debug/config_errors`.
//! Documents Weft reads but does not apply (Kubernetes kinds, Istio kinds Weft does not
//! implement such as EnvoyFilter) are logged once per change of their file — a warning for
//! kinds Istio would apply, debug for the rest — and shown at `/debug/config_skipped`.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use weft_api::{MeshConfig, Note, Problem, Resource};

use crate::error::ControlError;

/// Kind, namespace and name of a document, as written (`kind` is the YAML kind name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct DocKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl DocKey {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        DocKey {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn of(r: &Resource) -> Self {
        DocKey::new(r.kind().as_str(), &r.meta.namespace, &r.meta.name)
    }

    /// The document a problem belongs to, when the problem names it.
    pub fn of_problem(p: &Problem) -> Option<Self> {
        Some(DocKey::new(
            p.kind.as_deref()?,
            p.namespace.as_deref().unwrap_or("default"),
            p.name.as_deref()?,
        ))
    }
}

impl fmt::Display for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A file whose latest content is not in force (its last good content, if any, stays).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RefusedFile {
    /// Why, one line each (`file:line: Kind ns/name: field: message`).
    pub problems: Vec<String>,
    /// The documents of its latest content that could be named, good or bad.
    pub documents: Vec<DocKey>,
}

/// What one load produced.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub resources: Arc<Vec<Resource>>,
    pub mesh: Arc<MeshConfig>,
    /// Problems of the latest attempt, one line each (`file:line: Kind ns/name: field: message`).
    pub problems: Vec<String>,
    /// Files whose latest content was refused, by path.
    pub refused: BTreeMap<PathBuf, RefusedFile>,
    /// Problems across resources (duplicates, …) naming a resource that is in force.
    pub flagged: Vec<(DocKey, String)>,
    /// Documents read but not applied, in file order.
    pub notes: Vec<Note>,
    /// Hash of what this load read (see [`fingerprint`]): equal to [`fingerprint`] of the
    /// directory as long as nothing changed on disk since.
    pub fingerprint: u64,
    /// The platform registry's services and workloads (Kubernetes), from the source.
    pub platform: Arc<crate::registry::Platform>,
}

/// Loads and re-loads the config directory, remembering the last good content of each file.
#[derive(Debug)]
pub struct ConfigStore {
    dir: PathBuf,
    /// More directories of resources read with `dir` (e.g. those `weft up` generates).
    extra: Vec<PathBuf>,
    mesh_file: Option<PathBuf>,
    good: BTreeMap<PathBuf, Vec<Resource>>,
    good_mesh: Option<Arc<MeshConfig>>,
    /// Per file, the hash of the content whose skipped documents were logged.
    noted: BTreeMap<PathBuf, u64>,
    /// Per file, the hash of the content last read and what parsing it gave.
    parsed: BTreeMap<PathBuf, (u64, Arc<weft_api::Parsed>)>,
    /// A source beside the directory (Kubernetes), merged at each load.
    source: Option<Arc<dyn crate::source::Source>>,
}

impl fmt::Debug for dyn crate::source::Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Source")
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let path = e.path();
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if e.file_type()?.is_dir() {
            yaml_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|x| x.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Files that are not Istio resources: the mesh config when it lives in the directory, and
/// Weft's own `weft.yaml` (pods for `weft up`).
fn skipped(mesh_file: Option<&Path>, path: &Path) -> bool {
    mesh_file == Some(path)
        || path.file_name().and_then(|n| n.to_str()) == Some(crate::WEFT_FILE)
        || path.file_name().and_then(|n| n.to_str()) == Some("mesh.yaml")
}

/// Everything one load reads: the directory's resource files and the mesh config file.
struct Read {
    dir_error: Option<(PathBuf, std::io::Error)>,
    files: Vec<(PathBuf, std::io::Result<String>)>,
    mesh: Option<(PathBuf, std::io::Result<String>)>,
}

impl Read {
    fn now(dirs: &[PathBuf], mesh_file: Option<&Path>) -> Read {
        let mut paths = Vec::new();
        let mut dir_error = None;
        for dir in dirs {
            if let Err(e) = yaml_files(dir, &mut paths) {
                dir_error.get_or_insert((dir.clone(), e));
            }
        }
        let files = paths
            .into_iter()
            .filter(|f| !skipped(mesh_file, f))
            .map(|f| {
                let text = std::fs::read_to_string(&f);
                (f, text)
            })
            .collect();
        let mesh = mesh_file.map(|m| (m.to_path_buf(), std::fs::read_to_string(m)));
        Read {
            dir_error,
            files,
            mesh,
        }
    }

    fn fingerprint(&self) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        self.dir_error.as_ref().map(|(_, e)| e.kind()).hash(&mut h);
        for (path, text) in self.files.iter().chain(self.mesh.iter()) {
            path.hash(&mut h);
            match text {
                Ok(t) => t.hash(&mut h),
                Err(e) => e.kind().hash(&mut h),
            }
        }
        h.finish()
    }
}

/// A hash of the config files as they are on disk now (the config directory first, then the
/// extra ones), comparable with [`Snapshot::fingerprint`]: different when a file changed since
/// that load (the control plane has not read the edit yet).
pub fn fingerprint(dirs: &[PathBuf], mesh_file: Option<&Path>) -> u64 {
    Read::now(dirs, mesh_file).fingerprint()
}

fn text_hash(text: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl ConfigStore {
    pub fn new(dir: PathBuf, mesh_file: Option<PathBuf>) -> Self {
        ConfigStore {
            dir,
            extra: Vec::new(),
            mesh_file,
            good: BTreeMap::new(),
            good_mesh: None,
            noted: BTreeMap::new(),
            parsed: BTreeMap::new(),
            source: None,
        }
    }

    /// Merges what `source` holds into every load.
    pub fn with_source(mut self, source: Arc<dyn crate::source::Source>) -> Self {
        self.source = Some(source);
        self
    }

    /// Reads the resources of `dirs` too, after the config directory's.
    pub fn with_extra_dirs(mut self, dirs: Vec<PathBuf>) -> Self {
        self.extra = dirs;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The config directory, then the extra ones.
    pub fn dirs(&self) -> Vec<PathBuf> {
        std::iter::once(self.dir.clone())
            .chain(self.extra.iter().cloned())
            .collect()
    }

    pub fn mesh_file(&self) -> Option<&Path> {
        self.mesh_file.as_deref()
    }

    /// Logs the skipped documents of a file whose content changed since they were last logged.
    fn log_notes(&mut self, file: &Path, text: &str, notes: &[Note]) {
        let hash = text_hash(text);
        if self.noted.get(file) == Some(&hash) {
            return;
        }
        self.noted.insert(file.to_path_buf(), hash);
        for n in notes {
            if n.is_warning() {
                tracing::warn!(note = %n, "document not applied");
            } else {
                tracing::debug!(note = %n, "document skipped");
            }
        }
    }

    /// Reads everything again. Fails only when the directory itself cannot be read at the
    /// first load; later failures keep the last good content and are reported as problems.
    pub fn load(&mut self) -> Result<Snapshot, ControlError> {
        let read = Read::now(&self.dirs(), self.mesh_file.as_deref());
        let fingerprint = read.fingerprint();
        let mut problems: Vec<String> = Vec::new();
        let mut refused: BTreeMap<PathBuf, RefusedFile> = BTreeMap::new();
        let mut notes = Vec::new();
        if let Some((dir, e)) = read.dir_error {
            if self.good.is_empty() && self.good_mesh.is_none() {
                return Err(ControlError::ConfigDir { dir, source: e });
            }
            problems.push(format!(
                "{}: cannot read the config directory: {e}",
                dir.display()
            ));
        }
        let mut seen = BTreeMap::new();
        for (file, text) in read.files {
            match text {
                Ok(text) => {
                    // A file read before with the same text is not parsed again.
                    let hash = text_hash(&text);
                    let parsed = match self.parsed.get(&file) {
                        Some((h, p)) if *h == hash => p.clone(),
                        _ => {
                            let p = Arc::new(weft_api::parse_documents_with_notes(&text, &file));
                            self.parsed.insert(file.clone(), (hash, p.clone()));
                            p
                        }
                    };
                    self.log_notes(&file, &text, &parsed.notes);
                    notes.extend(parsed.notes.iter().cloned());
                    if parsed.problems.is_empty() {
                        seen.insert(file, parsed.resources.clone());
                    } else {
                        problems.extend(parsed.problems.iter().map(Problem::to_string));
                        let mut documents: Vec<DocKey> =
                            parsed.resources.iter().map(DocKey::of).collect();
                        documents.extend(parsed.problems.iter().filter_map(DocKey::of_problem));
                        documents.sort();
                        documents.dedup();
                        refused.insert(
                            file.clone(),
                            RefusedFile {
                                problems: parsed.problems.iter().map(Problem::to_string).collect(),
                                documents,
                            },
                        );
                        if let Some(old) = self.good.get(&file) {
                            tracing::warn!(file = %file.display(), "keeping the last good content of this file until it is fixed");
                            seen.insert(file, old.clone());
                        }
                    }
                }
                Err(e) => {
                    let problem = format!("{}: cannot read: {e}", file.display());
                    problems.push(problem.clone());
                    refused.insert(
                        file.clone(),
                        RefusedFile {
                            problems: vec![problem],
                            documents: Vec::new(),
                        },
                    );
                    if let Some(old) = self.good.get(&file) {
                        seen.insert(file, old.clone());
                    }
                }
            }
        }
        self.noted
            .retain(|f, _| seen.contains_key(f) || refused.contains_key(f));
        self.parsed
            .retain(|f, _| seen.contains_key(f) || refused.contains_key(f));
        self.good = seen;
        let mut all: Vec<Resource> = self.good.values().flatten().cloned().collect();
        let from_source = self
            .source
            .as_ref()
            .map(|s| s.snapshot())
            .unwrap_or_default();
        all.extend(from_source.resources);
        problems.extend(from_source.problems);
        let cross = weft_api::validate(&all);
        problems.extend(cross.iter().map(Problem::to_string));
        let flagged = cross
            .iter()
            .filter_map(|p| Some((DocKey::of_problem(p)?, p.to_string())))
            .collect();

        let mesh = match read.mesh {
            _ if from_source.mesh.is_some() => from_source.mesh.unwrap_or_default(),
            None => Arc::new(MeshConfig::default()),
            Some((path, text)) => match text {
                Ok(text) => match weft_api::parse_mesh_config(&text, &path) {
                    Ok(m) => Arc::new(m),
                    Err(ps) => {
                        problems.extend(ps.iter().map(Problem::to_string));
                        self.good_mesh.clone().unwrap_or_default()
                    }
                },
                Err(e) => {
                    problems.push(format!(
                        "{}: cannot read the mesh config: {e}",
                        path.display()
                    ));
                    self.good_mesh.clone().unwrap_or_default()
                }
            },
        };
        self.good_mesh = Some(mesh.clone());
        for p in &problems {
            tracing::error!(problem = %p, "config rejected");
        }
        Ok(Snapshot {
            resources: Arc::new(all),
            mesh,
            problems,
            refused,
            flagged,
            notes,
            fingerprint,
            platform: from_source.platform,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WE: &str = "apiVersion: networking.istio.io/v1beta1\nkind: WorkloadEntry\nmetadata: {name: a, namespace: default}\nspec: {address: 10.0.0.1}\n";

    #[test]
    fn a_bad_edit_keeps_the_last_good_content_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, WE).unwrap();
        let mut store = ConfigStore::new(dir.path().to_path_buf(), None);
        let first = store.load().unwrap();
        assert_eq!(first.resources.len(), 1);
        assert!(first.problems.is_empty());

        std::fs::write(&file, WE.replace("address: 10.0.0.1", "adress: 10.0.0.2")).unwrap();
        let second = store.load().unwrap();
        assert_eq!(second.resources.len(), 1, "the last good content stays");
        assert_eq!(second.resources, first.resources);
        assert_eq!(second.problems.len(), 1);
        let p = &second.problems[0];
        assert!(
            p.contains("a.yaml") && p.contains("WorkloadEntry default/a") && p.contains("adress"),
            "{p}"
        );

        // A new file that is bad from the start contributes nothing.
        std::fs::write(dir.path().join("b.yaml"), "kind: Nope\n").unwrap();
        let third = store.load().unwrap();
        assert_eq!(third.resources.len(), 1);
        assert!(third.problems.iter().any(|p| p.contains("b.yaml")));

        // Fixing it brings the new content in.
        std::fs::write(&file, WE.replace("10.0.0.1", "10.0.0.3")).unwrap();
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        let fourth = store.load().unwrap();
        assert!(fourth.problems.is_empty());
        match &fourth.resources[0].spec {
            weft_api::Spec::WorkloadEntry(we) => assert_eq!(we.address, "10.0.0.3"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bad_mesh_config_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let mesh = dir.path().join("mesh.yaml");
        std::fs::write(&mesh, "trustDomain: example.org\n").unwrap();
        let mut store = ConfigStore::new(dir.path().to_path_buf(), Some(mesh.clone()));
        assert_eq!(store.load().unwrap().mesh.trust_domain, "example.org");
        std::fs::write(&mesh, "trustDomain: [oops]\n").unwrap();
        let snap = store.load().unwrap();
        assert_eq!(snap.mesh.trust_domain, "example.org");
        assert!(
            snap.problems
                .iter()
                .any(|p| p.contains("mesh.yaml") && p.contains("trustDomain")),
            "{:?}",
            snap.problems
        );
    }

    /// Records the events logged while `f` runs: (level, message and fields).
    fn logged<T>(f: impl FnOnce() -> T) -> (T, Vec<(tracing::Level, String)>) {
        use std::sync::Mutex;
        use tracing::field::{Field, Visit};

        #[derive(Default)]
        struct Capture(Arc<Mutex<Vec<(tracing::Level, String)>>>);
        struct Text(String);
        impl Visit for Text {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        impl tracing::Subscriber for Capture {
            fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
                tracing::span::Id::from_u64(1)
            }
            fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
            fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
            fn event(&self, event: &tracing::Event<'_>) {
                let mut text = Text(String::new());
                event.record(&mut text);
                if let Ok(mut v) = self.0.lock() {
                    v.push((*event.metadata().level(), text.0));
                }
            }
            fn enter(&self, _: &tracing::span::Id) {}
            fn exit(&self, _: &tracing::span::Id) {}
        }
        let capture = Capture::default();
        let events = capture.0.clone();
        let out = tracing::subscriber::with_default(capture, f);
        let events = events.lock().map(|v| v.clone()).unwrap_or_default();
        (out, events)
    }

    const SKIPPED: &str = "---\napiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: f, namespace: istio-system}\nspec: {}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: details}\nspec: {}\n";

    #[test]
    fn skipped_documents_are_listed_and_logged_once_per_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, format!("{WE}{SKIPPED}")).unwrap();
        let mut store = ConfigStore::new(dir.path().to_path_buf(), None);
        let (snap, events) = logged(|| store.load().unwrap());
        assert_eq!(snap.resources.len(), 1, "the WorkloadEntry still loads");
        assert!(snap.problems.is_empty(), "{:?}", snap.problems);
        let notes: Vec<String> = snap.notes.iter().map(ToString::to_string).collect();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].contains("warning: EnvoyFilter istio-system/f"),
            "{notes:?}"
        );
        assert!(notes[1].contains("note: Service details"), "{notes:?}");
        let warn: Vec<_> = events
            .iter()
            .filter(|(l, _)| *l == tracing::Level::WARN)
            .collect();
        assert_eq!(warn.len(), 1, "{events:?}");
        assert!(
            warn[0].1.contains("EnvoyFilter istio-system/f")
                && warn[0].1.contains("not supported by Weft"),
            "{events:?}"
        );
        assert!(
            events
                .iter()
                .any(|(l, t)| *l == tracing::Level::DEBUG && t.contains("Service details")),
            "{events:?}"
        );

        // Same content: listed again, not logged again.
        let (snap, events) = logged(|| store.load().unwrap());
        assert_eq!(snap.notes.len(), 2);
        assert!(
            events.iter().all(|(_, t)| !t.contains("EnvoyFilter")),
            "{events:?}"
        );

        // The file changes: logged again.
        std::fs::write(&file, format!("# edited\n{WE}{SKIPPED}")).unwrap();
        let (_, events) = logged(|| store.load().unwrap());
        assert_eq!(
            events
                .iter()
                .filter(|(l, t)| *l == tracing::Level::WARN && t.contains("EnvoyFilter"))
                .count(),
            1,
            "{events:?}"
        );
    }

    #[test]
    fn refused_files_name_their_documents_and_the_fingerprint_follows_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, WE).unwrap();
        let mut store = ConfigStore::new(dir.path().to_path_buf(), None);
        let first = store.load().unwrap();
        assert!(first.refused.is_empty());
        assert_eq!(
            first.fingerprint,
            fingerprint(&[dir.path().to_path_buf()], None)
        );

        // Another document in the file goes bad: the file is refused, naming both.
        let bad = WE
            .replace("name: a", "name: b")
            .replace("address: 10.0.0.1", "adress: x");
        std::fs::write(&file, format!("{WE}---\n{bad}")).unwrap();
        assert_ne!(
            first.fingerprint,
            fingerprint(&[dir.path().to_path_buf()], None),
            "an edit not yet read"
        );
        let second = store.load().unwrap();
        assert_eq!(
            second.fingerprint,
            fingerprint(&[dir.path().to_path_buf()], None)
        );
        let refused = &second.refused[&file];
        assert_eq!(
            refused.documents,
            vec![
                DocKey::new("WorkloadEntry", "default", "a"),
                DocKey::new("WorkloadEntry", "default", "b")
            ]
        );
        assert!(refused.problems[0].contains("adress"), "{refused:?}");
        // Hidden files and weft.yaml are not config.
        std::fs::write(dir.path().join(".a.yaml.tmp"), "x").unwrap();
        std::fs::write(dir.path().join("weft.yaml"), "pods: []\n").unwrap();
        assert_eq!(
            second.fingerprint,
            fingerprint(&[dir.path().to_path_buf()], None)
        );

        // A duplicate is flagged (both stay in force).
        std::fs::write(&file, WE).unwrap();
        std::fs::write(dir.path().join("b.yaml"), WE).unwrap();
        let third = store.load().unwrap();
        assert!(third.refused.is_empty());
        assert_eq!(third.flagged.len(), 1, "{:?}", third.flagged);
        assert_eq!(
            third.flagged[0].0,
            DocKey::new("WorkloadEntry", "default", "a")
        );
        assert!(
            third.flagged[0].1.contains("duplicate"),
            "{:?}",
            third.flagged
        );
    }

    #[test]
    fn extra_directories_add_their_resources_and_count_in_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let extra = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), WE).unwrap();
        std::fs::write(
            extra.path().join("b.yaml"),
            WE.replace("name: a", "name: b"),
        )
        .unwrap();
        let dirs = vec![dir.path().to_path_buf(), extra.path().to_path_buf()];
        let mut store = ConfigStore::new(dir.path().to_path_buf(), None)
            .with_extra_dirs(vec![extra.path().to_path_buf()]);
        assert_eq!(store.dirs(), dirs);
        let snap = store.load().unwrap();
        let mut names: Vec<&str> = snap
            .resources
            .iter()
            .map(|r| r.meta.name.as_str())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(snap.fingerprint, fingerprint(&dirs, None));
        std::fs::write(
            extra.path().join("c.yaml"),
            WE.replace("name: a", "name: c"),
        )
        .unwrap();
        assert_ne!(snap.fingerprint, fingerprint(&dirs, None));
        // A missing extra directory after the first load is a problem, not a failure.
        drop(extra);
        let later = store.load().unwrap();
        assert!(
            later
                .problems
                .iter()
                .any(|p| p.contains("cannot read the config directory")),
            "{:?}",
            later.problems
        );
    }
}
