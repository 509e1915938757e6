//! `weft analyze [PATH...]`: Istio's analyzers over a directory of YAML (Istio resources and
//! the Kubernetes ones beside them), with istioctl's codes, levels, messages, line format,
//! `-o json|yaml` and exit status (79 when a message reaches `--failure-threshold`).

mod annotations;
mod gateway;
mod kube;
mod references;
mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use weft_api::{Object, Resource};

/// istioctl's message levels, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        [Level::Error, Level::Warning, Level::Info]
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
    }
}

/// The resource a message is about: `Kind namespace/name` and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub file: PathBuf,
    pub line: usize,
}

impl Origin {
    pub fn of(r: &Resource) -> Origin {
        Origin {
            kind: r.spec.kind().as_str().to_string(),
            namespace: r.meta.namespace.clone(),
            name: r.meta.name.clone(),
            file: r.source.file.clone(),
            line: r.source.line,
        }
    }

    pub fn of_object(o: &Object) -> Origin {
        Origin {
            kind: o.kind.clone(),
            namespace: o.meta.namespace.clone(),
            name: o.meta.name.clone(),
            file: o.source.file.clone(),
            line: o.source.line,
        }
    }

    /// istioctl's sort key for a resource (`Origin.Comparator`): kind, name, namespace.
    fn comparator(&self) -> (&str, &str, &str) {
        (&self.kind, &self.name, &self.namespace)
    }

    /// istioctl's friendly name: `Kind ns/name`, `Kind name` for cluster-scoped kinds.
    pub fn friendly(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub code: &'static str,
    pub level: Level,
    pub text: String,
    pub origin: Origin,
    /// The line of the field at fault (the document's when the field is not found).
    pub line: usize,
}

impl Message {
    /// A message about `origin`, at the line of `field` (a path such as
    /// `spec.http[0].route[0].destination.host`) when given.
    pub fn new(
        code: &'static str,
        level: Level,
        text: String,
        origin: &Origin,
        field: Option<&str>,
    ) -> Message {
        let line = field
            .and_then(|f| weft_api::field_line(&origin.file, origin.line, f))
            .unwrap_or(origin.line);
        Message {
            code,
            level,
            text,
            origin: origin.clone(),
            line,
        }
    }

    pub fn reference(&self) -> String {
        format!("{}:{}", self.origin.file.display(), self.line)
    }

    /// istioctl's log line: `Error [IST0101] (VirtualService default/x file.yaml:12) …`.
    pub fn line(&self) -> String {
        format!(
            "{} [{}] ({} {}) {}",
            self.level.as_str(),
            self.code,
            self.origin.friendly(),
            self.reference(),
            self.text
        )
    }
}

/// istioctl's documentation link for a code.
pub fn doc_url(code: &str) -> String {
    format!(
        "https://istio.io/v1.14/docs/reference/config/analysis/{}/?ref=istioctl-analyze",
        code.to_ascii_lowercase()
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonMessage {
    code: String,
    documentation_url: String,
    level: String,
    message: String,
    origin: String,
    reference: String,
}

/// Everything the analyzers read.
pub struct Input {
    pub resources: Vec<Resource>,
    pub objects: Vec<Object>,
    pub problems: Vec<weft_api::Problem>,
    pub mesh: weft_api::MeshConfig,
}

impl Input {
    /// Reads the paths (directories scanned for YAML) and an optional mesh config file.
    pub fn load(paths: &[PathBuf], mesh_config: Option<&Path>) -> Input {
        let parsed = weft_api::load_paths_with_notes(paths);
        let mut problems = parsed.problems;
        let mesh = match mesh_config {
            None => weft_api::MeshConfig::default(),
            Some(p) => match std::fs::read_to_string(p) {
                Ok(text) => weft_api::parse_mesh_config(&text, p).unwrap_or_else(|e| {
                    problems.extend(e);
                    weft_api::MeshConfig::default()
                }),
                Err(e) => {
                    problems.push(weft_api::Problem {
                        file: p.to_path_buf(),
                        line: 1,
                        kind: None,
                        namespace: None,
                        name: None,
                        field: String::new(),
                        message: format!("cannot read file: {e}"),
                    });
                    weft_api::MeshConfig::default()
                }
            },
        };
        Input {
            resources: parsed.resources,
            objects: parsed.objects,
            problems,
            mesh,
        }
    }

    pub fn objects<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Object> + 'a {
        self.objects.iter().filter(move |o| o.kind == kind)
    }
}

/// The result of a run: the messages (sorted and deduplicated as istioctl does) and the
/// documents that could not be read at all (YAML syntax, unreadable files).
pub struct Analysis {
    pub messages: Vec<Message>,
    pub unparsed: Vec<String>,
}

/// Runs every analyzer.
pub fn analyze(input: &Input) -> Analysis {
    let mut messages = Vec::new();
    let mut unparsed = Vec::new();
    // IST0106: what validation refused (the resources it refused are not analysed further).
    for p in &input.problems {
        match (&p.kind, &p.name) {
            (Some(kind), Some(name)) => {
                let origin = Origin {
                    kind: kind.clone(),
                    namespace: p.namespace.clone().unwrap_or_else(|| "default".into()),
                    name: name.clone(),
                    file: p.file.clone(),
                    line: p.line,
                };
                let what = if p.field.is_empty() {
                    p.message.clone()
                } else {
                    format!("{}: {}", p.field, p.message)
                };
                messages.push(Message {
                    code: "IST0106",
                    level: Level::Error,
                    text: format!("Schema validation error: {what}"),
                    origin,
                    line: p.line,
                });
            }
            _ => unparsed.push(p.to_string()),
        }
    }
    references::run(input, &mut messages);
    rules::run(input, &mut messages);
    gateway::run(input, &mut messages);
    kube::run(input, &mut messages);
    // istioctl's order: level, code, resource (kind, name, namespace), text; identical messages
    // once.
    let suppressed = suppressions(input);
    messages.retain(|m| {
        !suppressed
            .get(&(
                m.origin.kind.clone(),
                m.origin.namespace.clone(),
                m.origin.name.clone(),
            ))
            .is_some_and(|codes| codes.contains("*") || codes.contains(m.code))
    });
    messages.sort_by(|a, b| {
        (a.level, a.code, a.origin.comparator())
            .cmp(&(b.level, b.code, b.origin.comparator()))
            .then_with(|| a.line().cmp(&b.line()))
    });
    messages.dedup_by(|a, b| a.line() == b.line());
    Analysis { messages, unparsed }
}

/// `galley.istio.io/analyze-suppress: CODE[,CODE]` (or `*`) on a resource.
fn suppressions(input: &Input) -> BTreeMap<(String, String, String), BTreeSet<String>> {
    let mut out = BTreeMap::new();
    let metas = input
        .resources
        .iter()
        .map(|r| (r.spec.kind().as_str().to_string(), &r.meta))
        .chain(input.objects.iter().map(|o| (o.kind.clone(), &o.meta)));
    for (kind, meta) in metas {
        if let Some(v) = meta.annotations.get("galley.istio.io/analyze-suppress") {
            out.insert(
                (kind, meta.namespace.clone(), meta.name.clone()),
                v.split(',').map(|c| c.trim().to_string()).collect(),
            );
        }
    }
    out
}

/// How `weft analyze` prints and exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Log,
    Json,
    Yaml,
}

/// What to print on stdout and stderr, and the exit status (istioctl's: 79 when a message is
/// at or above the failure threshold in the log format, 65 when files could not be parsed).
pub fn report(
    a: &Analysis,
    format: Format,
    failure: Level,
    output: Level,
    what: &str,
) -> (String, String, u8) {
    let shown: Vec<&Message> = a.messages.iter().filter(|m| m.level <= output).collect();
    let mut stderr = String::new();
    for u in &a.unparsed {
        stderr.push_str(&format!("Error(s) adding files: {u}\n"));
    }
    let stdout = match format {
        Format::Log => {
            let lines: Vec<String> = shown.iter().map(|m| m.line()).collect();
            format!("{}\n", lines.join("\n"))
        }
        Format::Json | Format::Yaml => {
            let list: Vec<JsonMessage> = shown
                .iter()
                .map(|m| JsonMessage {
                    code: m.code.to_string(),
                    documentation_url: doc_url(m.code),
                    level: m.level.as_str().to_string(),
                    message: m.text.clone(),
                    origin: m.origin.friendly(),
                    reference: m.reference(),
                })
                .collect();
            if format == Format::Json {
                serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
            } else {
                serde_saphyr::to_string(&list).unwrap_or_default()
            }
        }
    };
    if format != Format::Log {
        return (stdout, stderr, 0);
    }
    if a.messages.iter().any(|m| m.level <= failure) {
        stderr.push_str(&format!(
            "Error: Analyzers found issues when analyzing {what}.\nSee https://istio.io/v1.14/docs/reference/config/analysis for more information about causes and resolutions.\n"
        ));
        return (stdout, stderr, 79);
    }
    if shown.is_empty() {
        if a.unparsed.is_empty() {
            stderr.push_str(&format!(
                "\u{2714} No validation issues found when analyzing {what}.\n"
            ));
        } else {
            let n = a.unparsed.len();
            stderr.push_str(&format!(
                "No validation issues found when analyzing {what} (but {n} file{} could not be parsed).\n",
                if n == 1 { "" } else { "s" }
            ));
        }
    }
    (stdout, stderr, if a.unparsed.is_empty() { 0 } else { 65 })
}

#[cfg(test)]
mod tests;
