//! Files nbrt provides to images itself, named in a runtime file by `builtin = "…"` instead
//! of a `source` in the stack: `nbrt-init`, the static PID 1 of the stock stacks, and
//! `nbrt-conda`, the static `conda` / `mamba` of every stock image. Both are built from this
//! workspace, not kept in the stack directory.

use std::path::{Path, PathBuf};

use crate::error::{BuildError, Result};

pub const NBRT_INIT: &str = "nbrt-init";
pub const NBRT_CONDA: &str = "nbrt-conda";
pub const NAMES: &[&str] = &[NBRT_INIT, NBRT_CONDA];

/// How a builtin is found: `$<env>`, else next to the running nbrt; and how it is built.
struct Builtin {
    name: &'static str,
    env: &'static str,
    script: &'static str,
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        name: NBRT_INIT,
        env: "NBRT_INIT_BIN",
        script: "crates/init/build-static.sh",
    },
    Builtin {
        name: NBRT_CONDA,
        env: "NBRT_CONDA_BIN",
        script: "crates/conda/build-static.sh",
    },
];

fn err(message: impl Into<String>) -> BuildError {
    BuildError::step("files", message)
}

/// The file on this machine that stands for builtin `name`, checked to be usable in any
/// image (a statically linked executable).
pub fn resolve(name: &str) -> Result<PathBuf> {
    let Some(builtin) = BUILTINS.iter().find(|b| b.name == name) else {
        return Err(err(format!(
            "unknown builtin {name:?} (known: {})",
            NAMES.join(", ")
        )));
    };
    let how = format!(
        "build it with {} and set {} to the path it prints (or put the static {name} next to \
         the nbrt binary)",
        builtin.script, builtin.env
    );
    let path = match std::env::var_os(builtin.env) {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join(name)))
            .filter(|p| p.is_file())
            .ok_or_else(|| err(format!("builtin {name}: no {name} found; {how}")))?,
    };
    match is_static_elf(&path) {
        Ok(true) => Ok(path),
        Ok(false) => Err(err(format!(
            "builtin {name}: {} is dynamically linked and would not run in every image; {how}",
            path.display()
        ))),
        Err(e) => Err(err(format!(
            "builtin {name}: {}: {e}; {how}",
            path.display()
        ))),
    }
}

/// True for an x86-64/aarch64 ELF executable without a program interpreter (static or
/// static-pie), false for a dynamically linked one.
fn is_static_elf(path: &Path) -> std::result::Result<bool, String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut header = [0u8; 64];
    f.read_exact(&mut header)
        .map_err(|_| "not an ELF executable".to_string())?;
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return Err("not a 64-bit little-endian ELF executable".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([header[o], header[o + 1]]);
    let phoff = u64::from_le_bytes(header[32..40].try_into().map_err(|_| "bad header")?);
    let (phentsize, phnum) = (u16_at(54) as u64, u16_at(56) as u64);
    if phentsize < 4 || phnum > 4096 {
        return Err("bad ELF program header table".into());
    }
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        f.seek(SeekFrom::Start(phoff + i * phentsize))
            .map_err(|e| e.to_string())?;
        let mut kind = [0u8; 4];
        f.read_exact(&mut kind)
            .map_err(|_| "truncated ELF program header table".to_string())?;
        if u32::from_le_bytes(kind) == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_dynamic_from_static_executables() {
        // /bin/sh on Debian is dynamically linked.
        assert_eq!(is_static_elf(Path::new("/bin/sh")), Ok(false));
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("script");
        std::fs::write(&text, "#!/bin/sh\n").unwrap();
        assert!(is_static_elf(&text).is_err());
    }

    #[test]
    fn builtins_are_known_by_name() {
        let message = resolve("nbrt-nope").unwrap_err().to_string();
        assert!(
            message.contains("unknown builtin \"nbrt-nope\" (known: nbrt-init, nbrt-conda)"),
            "{message}"
        );
        assert!(NAMES.contains(&NBRT_CONDA));
    }
}
