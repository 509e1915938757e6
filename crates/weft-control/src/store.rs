//! The config store: Istio YAML from a directory (and the mesh config file), reloaded on change.
//! A file with any problem keeps its last good content in force, so a bad edit never takes
//! config away from the mesh; the problems are logged and shown at `/debug/config_errors`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weft_api::{MeshConfig, Problem, Resource};

use crate::error::ControlError;

/// What one load produced.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub resources: Arc<Vec<Resource>>,
    pub mesh: Arc<MeshConfig>,
    /// Problems of the latest attempt, one line each (`file:line: Kind ns/name: field: message`).
    pub problems: Vec<String>,
}

/// Loads and re-loads the config directory, remembering the last good content of each file.
#[derive(Debug)]
pub struct ConfigStore {
    dir: PathBuf,
    mesh_file: Option<PathBuf>,
    good: BTreeMap<PathBuf, Vec<Resource>>,
    good_mesh: Option<Arc<MeshConfig>>,
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

impl ConfigStore {
    pub fn new(dir: PathBuf, mesh_file: Option<PathBuf>) -> Self {
        ConfigStore {
            dir,
            mesh_file,
            good: BTreeMap::new(),
            good_mesh: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn mesh_file(&self) -> Option<&Path> {
        self.mesh_file.as_deref()
    }

    /// Files that are not Istio resources: the mesh config when it lives in the directory, and
    /// Weft's own `weft.yaml` (pods for `weft up`).
    fn skip(&self, path: &Path) -> bool {
        self.mesh_file.as_deref() == Some(path)
            || path.file_name().and_then(|n| n.to_str()) == Some(crate::WEFT_FILE)
            || path.file_name().and_then(|n| n.to_str()) == Some("mesh.yaml")
    }

    /// Reads everything again. Fails only when the directory itself cannot be read at the
    /// first load; later failures keep the last good content and are reported as problems.
    pub fn load(&mut self) -> Result<Snapshot, ControlError> {
        let mut problems: Vec<String> = Vec::new();
        let mut files = Vec::new();
        if let Err(e) = yaml_files(&self.dir, &mut files) {
            if self.good.is_empty() && self.good_mesh.is_none() {
                return Err(ControlError::ConfigDir {
                    dir: self.dir.clone(),
                    source: e,
                });
            }
            problems.push(format!(
                "{}: cannot read the config directory: {e}",
                self.dir.display()
            ));
        }
        let mut seen = BTreeMap::new();
        for file in files.iter().filter(|f| !self.skip(f)) {
            match std::fs::read_to_string(file) {
                Ok(text) => {
                    let (resources, file_problems) = weft_api::parse_documents(&text, file);
                    if file_problems.is_empty() {
                        seen.insert(file.clone(), resources);
                    } else {
                        problems.extend(file_problems.iter().map(Problem::to_string));
                        if let Some(old) = self.good.get(file) {
                            tracing::warn!(file = %file.display(), "keeping the last good content of this file until it is fixed");
                            seen.insert(file.clone(), old.clone());
                        }
                    }
                }
                Err(e) => {
                    problems.push(format!("{}: cannot read: {e}", file.display()));
                    if let Some(old) = self.good.get(file) {
                        seen.insert(file.clone(), old.clone());
                    }
                }
            }
        }
        self.good = seen;
        let all: Vec<Resource> = self.good.values().flatten().cloned().collect();
        problems.extend(weft_api::validate(&all).iter().map(Problem::to_string));

        let mesh = match &self.mesh_file {
            None => Arc::new(MeshConfig::default()),
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => match weft_api::parse_mesh_config(&text, path) {
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
}
