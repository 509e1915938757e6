//! Problems found while loading or validating configuration, with file, line and field path.

use std::fmt;
use std::path::PathBuf;

/// One configuration problem, pointing at the file, line and field that caused it.
///
/// Displayed as `file:line: Kind namespace/name: field.path: message`, or
/// `file:line: field.path: message` when the document did not parse far enough to know
/// its kind and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File the configuration came from.
    pub file: PathBuf,
    /// 1-based line of the offending field (or of the document when no field applies).
    pub line: usize,
    /// Resource kind, e.g. `VirtualService`, when known.
    pub kind: Option<String>,
    /// Resource namespace, when known.
    pub namespace: Option<String>,
    /// Resource name, when known.
    pub name: Option<String>,
    /// Field path using YAML names and indexes, e.g. `spec.http[0].route[1].weight`.
    pub field: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if let (Some(kind), Some(name)) = (&self.kind, &self.name) {
            let ns = self.namespace.as_deref().unwrap_or("default");
            write!(f, "{kind} {ns}/{name}: ")?;
        }
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for Problem {}

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// A field path built up while walking a document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(pub Vec<Segment>);

impl FieldPath {
    /// The empty (document root) path.
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// Path of a child field or map entry.
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut v = self.0.clone();
        v.push(Segment::Key(key.into()));
        FieldPath(v)
    }

    /// Path of a sequence item.
    pub fn idx(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Segment::Index(i));
        FieldPath(v)
    }
}

/// Keys made only of these characters are printed as `.key`, others as `[key]`.
fn plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Key(k) => write!(f, "[{k}]")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_resource() {
        let mut p = Problem {
            file: PathBuf::from("a.yaml"),
            line: 7,
            kind: Some("VirtualService".into()),
            namespace: Some("default".into()),
            name: Some("reviews".into()),
            field: "spec.http[0].route[1].weight".into(),
            message: "total destination weight 120 != 100".into(),
        };
        assert_eq!(
            p.to_string(),
            "a.yaml:7: VirtualService default/reviews: spec.http[0].route[1].weight: total destination weight 120 != 100"
        );
        p.kind = None;
        p.name = None;
        assert_eq!(
            p.to_string(),
            "a.yaml:7: spec.http[0].route[1].weight: total destination weight 120 != 100"
        );
    }

    #[test]
    fn path_rendering() {
        let p = FieldPath::root()
            .key("spec")
            .key("http")
            .idx(0)
            .key("match")
            .idx(1)
            .key("headers")
            .key("end-user");
        assert_eq!(p.to_string(), "spec.http[0].match[1].headers.end-user");
        let q = FieldPath::root()
            .key("metadata")
            .key("labels")
            .key("app.kubernetes.io/name");
        assert_eq!(q.to_string(), "metadata.labels[app.kubernetes.io/name]");
    }
}
