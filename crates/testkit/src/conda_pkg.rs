//! Small conda packages made by tests (conda's `.tar.bz2` format, deterministic bytes), so
//! conda steps are tested without a package server or conda-forge.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub const PLACEHOLDER: &str = "/opt/anaconda1anaconda2anaconda3";
pub const TIMESTAMP: u64 = 1_700_000_000_000;

#[derive(Clone)]
pub enum Content {
    /// A regular file; `placeholder` marks it for text prefix replacement.
    File {
        data: Vec<u8>,
        mode: u32,
        placeholder: bool,
    },
    Symlink(String),
}

#[derive(Clone)]
pub struct Pkg {
    pub name: String,
    pub version: String,
    pub build: String,
    pub subdir: String,
    pub depends: Vec<String>,
    pub noarch_python: bool,
    pub files: Vec<(String, Content)>,
}

impl Pkg {
    pub fn new(name: &str, version: &str) -> Self {
        Pkg {
            name: name.into(),
            version: version.into(),
            build: "h0_0".into(),
            subdir: "linux-64".into(),
            depends: Vec::new(),
            noarch_python: false,
            files: Vec::new(),
        }
    }

    pub fn depends(mut self, spec: &str) -> Self {
        self.depends.push(spec.into());
        self
    }

    pub fn noarch_python(mut self) -> Self {
        self.noarch_python = true;
        self.subdir = "noarch".into();
        self.build = "py_0".into();
        self
    }

    pub fn file(mut self, path: &str, data: &str) -> Self {
        self.files.push((
            path.into(),
            Content::File {
                data: data.as_bytes().to_vec(),
                mode: 0o644,
                placeholder: false,
            },
        ));
        self
    }

    /// A script with the prefix placeholder in its shebang and body.
    pub fn script(mut self, path: &str, body: &str) -> Self {
        let text = format!(
            "#!{PLACEHOLDER}/bin/sh\n{}\n",
            body.replace("@P@", PLACEHOLDER)
        );
        self.files.push((
            path.into(),
            Content::File {
                data: text.into_bytes(),
                mode: 0o755,
                placeholder: true,
            },
        ));
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.files
            .push((path.into(), Content::Symlink(target.into())));
        self
    }

    pub fn dist_name(&self) -> String {
        format!("{}-{}-{}", self.name, self.version, self.build)
    }

    pub fn index_json(&self) -> serde_json::Value {
        let mut index = serde_json::json!({
            "name": self.name,
            "version": self.version,
            "build": self.build,
            "build_number": 0,
            "depends": self.depends,
            "license": "MIT",
            "subdir": self.subdir,
            "timestamp": TIMESTAMP,
        });
        if self.noarch_python {
            index["noarch"] = "python".into();
        } else {
            index["arch"] = "x86_64".into();
            index["platform"] = "linux".into();
        }
        index
    }

    /// `(archive path, bytes)` of every member, info/ first.
    pub fn members(&self) -> Vec<(String, Content)> {
        let mut paths = Vec::new();
        for (path, content) in &self.files {
            let mut entry = serde_json::json!({"_path": path});
            match content {
                Content::File {
                    data, placeholder, ..
                } => {
                    entry["path_type"] = "hardlink".into();
                    entry["sha256"] = hex::encode(Sha256::digest(data)).into();
                    entry["size_in_bytes"] = data.len().into();
                    if *placeholder {
                        entry["prefix_placeholder"] = PLACEHOLDER.into();
                        entry["file_mode"] = "text".into();
                    }
                }
                Content::Symlink(_) => {
                    entry["path_type"] = "softlink".into();
                }
            }
            paths.push(entry);
        }
        let paths_json = serde_json::json!({"paths_version": 1, "paths": paths});
        let files: String = self.files.iter().map(|(p, _)| format!("{p}\n")).collect();
        let info_file = |data: Vec<u8>| Content::File {
            data,
            mode: 0o644,
            placeholder: false,
        };
        let mut members = vec![
            (
                "info/index.json".to_string(),
                info_file(serde_json::to_vec(&self.index_json()).unwrap()),
            ),
            (
                "info/paths.json".to_string(),
                info_file(serde_json::to_vec(&paths_json).unwrap()),
            ),
            ("info/files".to_string(), info_file(files.into_bytes())),
        ];
        if self.noarch_python {
            members.push((
                "info/link.json".to_string(),
                info_file(
                    br#"{"noarch":{"type":"python","entry_points":[]},"package_metadata_version":1}"#
                        .to_vec(),
                ),
            ));
        }
        members.extend(self.files.iter().cloned());
        members
    }

    /// A `.tar.bz2` written by hand (tar + bzip2), deterministic bytes.
    pub fn tar_bz2(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!("{}.tar.bz2", self.dist_name()));
        let file = std::fs::File::create(&path).unwrap();
        let encoder = bzip2::write::BzEncoder::new(file, bzip2::Compression::best());
        let mut builder = tar::Builder::new(encoder);
        for (name, content) in self.members() {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(TIMESTAMP / 1000);
            header.set_uid(0);
            header.set_gid(0);
            match content {
                Content::File { data, mode, .. } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(mode);
                    header.set_size(data.len() as u64);
                    builder
                        .append_data(&mut header, &name, data.as_slice())
                        .unwrap();
                }
                Content::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder.append_link(&mut header, &name, &target).unwrap();
                }
            }
        }
        builder.into_inner().unwrap().finish().unwrap();
        path
    }
}

/// A channel directory `dir` with each package's `.tar.bz2` in its subdirectory and a
/// `repodata.json` per subdirectory (`linux-64` and `noarch` always, empty when unused), as
/// an indexer writes them: serve it over HTTP ([`crate::serve_dir`]) or use it as `file://`.
pub fn channel(dir: &Path, pkgs: &[Pkg]) -> PathBuf {
    let mut subdirs: std::collections::BTreeMap<
        String,
        serde_json::Map<String, serde_json::Value>,
    > = ["linux-64", "noarch"]
        .into_iter()
        .map(|s| (s.to_string(), serde_json::Map::new()))
        .collect();
    for pkg in pkgs {
        let path = pkg.tar_bz2(&dir.join(&pkg.subdir));
        let bytes = std::fs::read(&path).unwrap();
        let mut record = pkg.index_json();
        record["sha256"] = hex::encode(Sha256::digest(&bytes)).into();
        record["size"] = bytes.len().into();
        subdirs
            .entry(pkg.subdir.clone())
            .or_default()
            .insert(format!("{}.tar.bz2", pkg.dist_name()), record);
    }
    for (subdir, packages) in subdirs {
        std::fs::create_dir_all(dir.join(&subdir)).unwrap();
        let repodata = serde_json::json!({
            "info": {"subdir": subdir},
            "packages": packages,
            "packages.conda": {},
            "repodata_version": 1,
        });
        std::fs::write(
            dir.join(&subdir).join("repodata.json"),
            serde_json::to_vec_pretty(&repodata).unwrap(),
        )
        .unwrap();
    }
    dir.to_path_buf()
}
