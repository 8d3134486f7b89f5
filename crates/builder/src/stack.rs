//! Stacks: a directory of runtime files whose `from` names form a graph (base → jupyter →
//! scipy …). Loading checks the graph (every parent exists, no cycles) and orders it so
//! parents build first.
//!
//! A stack directory holds `<name>/runtime.toml` (with the files that runtime copies beside
//! it) or `<name>.toml` files; a path to a single runtime file is a stack of one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nbrt_oci::Store;

use crate::error::{BuildError, Result};
use crate::runtime_file::{From, RuntimeFile};

/// What a runtime's `from` turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parent {
    /// `[bootstrap]`: a new root file system.
    Scratch,
    /// Another runtime of the same stack.
    Runtime(String),
    /// An image already in the store (by name, ID or digest).
    Image(String),
    /// A docker-archive / OCI archive tar, or an OCI layout directory.
    Path(PathBuf),
    /// An image in a registry.
    Registry(String),
}

#[derive(Debug)]
pub struct Stack {
    pub dir: PathBuf,
    /// Runtimes by name.
    pub runtimes: BTreeMap<String, RuntimeFile>,
    pub parents: BTreeMap<String, Parent>,
    /// Every runtime, parents before children (ties by name).
    pub order: Vec<String>,
}

/// Whether `s` reads as a registry reference (`host.domain/repo:tag`, `host:port/repo`,
/// `localhost/repo`).
fn looks_like_registry_ref(s: &str) -> bool {
    match s.split_once('/') {
        Some((host, rest)) => {
            !rest.is_empty()
                && (host.contains('.') || host.contains(':') || host == "localhost")
                && !s.starts_with('.')
        }
        None => false,
    }
}

fn runtime_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| {
        BuildError::Stack(format!(
            "cannot read stack directory {}: {e}",
            dir.display()
        ))
    })?;
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && path.join("runtime.toml").is_file() {
            files.push(path.join("runtime.toml"));
        } else if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(BuildError::Stack(format!(
            "{} holds no runtime files (<name>/runtime.toml or <name>.toml)",
            dir.display()
        )));
    }
    Ok(files)
}

impl Stack {
    /// Load every runtime file of a stack directory (or a single runtime file) and check the
    /// graph. `store` is asked about parents that are not runtimes of the stack.
    pub fn load(dir: &Path, store: &Store) -> Result<Self> {
        let stack_dir = if dir.is_file() {
            dir.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        } else {
            dir.to_path_buf()
        };
        let mut runtimes: BTreeMap<String, RuntimeFile> = BTreeMap::new();
        for file in runtime_files(dir)? {
            let rt = RuntimeFile::load(&file, &stack_dir)?;
            if let Some(other) = runtimes.get(&rt.name) {
                return Err(rt.error(
                    1,
                    format!(
                        "runtime {:?} is also defined in {}",
                        rt.name,
                        other.path.display()
                    ),
                ));
            }
            runtimes.insert(rt.name.clone(), rt);
        }
        let mut parents = BTreeMap::new();
        for rt in runtimes.values() {
            let parent = match &rt.from {
                From::Scratch => Parent::Scratch,
                From::Named(n) if runtimes.contains_key(n) => Parent::Runtime(n.clone()),
                From::Named(n) => resolve_external(rt, n, store)?,
            };
            parents.insert(rt.name.clone(), parent);
        }
        let order = order(&runtimes, &parents)?;
        Ok(Self {
            dir: stack_dir,
            runtimes,
            parents,
            order,
        })
    }

    /// The runtimes needed to build `name` (its ancestors in the stack, then itself), in
    /// build order.
    pub fn needed_for(&self, name: &str) -> Result<Vec<String>> {
        if !self.runtimes.contains_key(name) {
            return Err(BuildError::Stack(format!(
                "no runtime named {name:?} in {} (it has: {})",
                self.dir.display(),
                self.order.join(", ")
            )));
        }
        let mut needed = BTreeSet::new();
        let mut cur = Some(name.to_string());
        while let Some(n) = cur {
            needed.insert(n.clone());
            cur = match self.parents.get(&n) {
                Some(Parent::Runtime(p)) => Some(p.clone()),
                _ => None,
            };
        }
        Ok(self
            .order
            .iter()
            .filter(|n| needed.contains(*n))
            .cloned()
            .collect())
    }

    /// The graph as a Mermaid flowchart (parents above children), like the image hierarchy
    /// charts of Kubeflow's documentation.
    pub fn mermaid(&self) -> String {
        let mut out = String::from("graph TD\n");
        let id = |n: &str| n.replace(['.', '-'], "_");
        for name in &self.order {
            match &self.parents[name] {
                Parent::Runtime(p) => {
                    out.push_str(&format!("    {}[{p}] --> {}[{name}]\n", id(p), id(name)))
                }
                Parent::Scratch => out.push_str(&format!("    {}[{name}]\n", id(name))),
                Parent::Image(r) | Parent::Registry(r) => out.push_str(&format!(
                    "    {}_from([\"{r}\"]) --> {}[{name}]\n",
                    id(name),
                    id(name)
                )),
                Parent::Path(p) => out.push_str(&format!(
                    "    {}_from([\"{}\"]) --> {}[{name}]\n",
                    id(name),
                    p.display(),
                    id(name)
                )),
            }
        }
        out
    }
}

fn resolve_external(rt: &RuntimeFile, from: &str, store: &Store) -> Result<Parent> {
    let pathish = from.starts_with("./")
        || from.starts_with("../")
        || from.starts_with('/')
        || from.ends_with(".tar")
        || from.ends_with(".tar.gz");
    if pathish {
        let path = rt.dir.join(from);
        if path.exists() {
            return Ok(Parent::Path(path));
        }
        return Err(rt.error(
            rt.from_line,
            format!("parent {from:?}: {} does not exist", path.display()),
        ));
    }
    if store.resolve(from).is_ok() {
        return Ok(Parent::Image(from.to_string()));
    }
    if looks_like_registry_ref(from) {
        return Ok(Parent::Registry(from.to_string()));
    }
    Err(rt.error(
        rt.from_line,
        format!(
            "parent {from:?} is missing: it is not a runtime of this stack, not an image in the store \
             (`nbrt images`), not a file, and not a registry reference (host/repository:tag)"
        ),
    ))
}

/// Topological order, parents first; a cycle is reported with the files and lines involved.
fn order(
    runtimes: &BTreeMap<String, RuntimeFile>,
    parents: &BTreeMap<String, Parent>,
) -> Result<Vec<String>> {
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for start in runtimes.keys() {
        let mut chain: Vec<String> = Vec::new();
        let mut cur = start.clone();
        loop {
            if done.contains(&cur) {
                break;
            }
            if let Some(pos) = chain.iter().position(|c| *c == cur) {
                let cycle: Vec<String> = chain[pos..]
                    .iter()
                    .map(|n| {
                        let rt = &runtimes[n];
                        format!("{} ({}:{})", n, rt.path.display(), rt.from_line)
                    })
                    .collect();
                return Err(BuildError::Stack(format!(
                    "the stack has a cycle: {} → {cur}",
                    cycle.join(" → ")
                )));
            }
            chain.push(cur.clone());
            match parents.get(&cur) {
                Some(Parent::Runtime(p)) => cur = p.clone(),
                _ => break,
            }
        }
        for n in chain.into_iter().rev() {
            if done.insert(n.clone()) {
                out.push(n);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("runtime.toml"), body).unwrap();
    }

    #[test]
    fn orders_parents_first_and_draws_the_graph() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        let dir = tmp.path().join("stacks");
        write(&dir, "scipy", "name = \"scipy\"\nfrom = \"jupyter\"\n");
        write(&dir, "base", "name = \"base\"\n[bootstrap]\n");
        write(&dir, "jupyter", "name = \"jupyter\"\nfrom = \"base\"\n");
        write(&dir, "kernel-py", "name = \"kernel-py\"\nfrom = \"base\"\n");
        let stack = Stack::load(&dir, &store).unwrap();
        assert_eq!(stack.order, ["base", "jupyter", "kernel-py", "scipy"]);
        assert_eq!(
            stack.needed_for("scipy").unwrap(),
            ["base", "jupyter", "scipy"]
        );
        let m = stack.mermaid();
        assert!(m.contains("base[base] --> jupyter[jupyter]"), "{m}");
        assert!(m.contains("jupyter[jupyter] --> scipy[scipy]"), "{m}");
    }

    #[test]
    fn cycles_and_missing_parents_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        let dir = tmp.path().join("cycle");
        write(&dir, "a", "name = \"a\"\nfrom = \"b\"\n");
        write(&dir, "b", "name = \"b\"\n\nfrom = \"a\"\n");
        let err = Stack::load(&dir, &store).unwrap_err().to_string();
        assert!(
            err.contains("cycle") && err.contains("b/runtime.toml:3"),
            "{err}"
        );
        let dir = tmp.path().join("missing");
        write(&dir, "a", "name = \"a\"\nfrom = \"jupytr\"\n");
        let err = Stack::load(&dir, &store).unwrap_err().to_string();
        assert!(
            err.contains("a/runtime.toml:2") && err.contains("\"jupytr\" is missing"),
            "{err}"
        );
    }

    #[test]
    fn registry_references() {
        assert!(looks_like_registry_ref(
            "quay.io/jupyter/base-notebook:2024"
        ));
        assert!(looks_like_registry_ref("127.0.0.1:5000/nb/base"));
        assert!(!looks_like_registry_ref("jupyter"));
        assert!(!looks_like_registry_ref("nb/base"));
    }
}
