//! Files nbrt provides to images itself, named in a runtime file by `builtin = "…"` instead
//! of a `source` in the stack. Today that is `nbrt-init`, the static PID 1 of the stock
//! stacks: it is built from this workspace, not kept in the stack directory.

use std::path::{Path, PathBuf};

use crate::error::{BuildError, Result};

pub const NBRT_INIT: &str = "nbrt-init";
pub const NAMES: &[&str] = &[NBRT_INIT];

/// Where nbrt-init is found: `$NBRT_INIT_BIN`, else next to the running nbrt.
const INIT_ENV: &str = "NBRT_INIT_BIN";

fn err(message: impl Into<String>) -> BuildError {
    BuildError::step("files", message)
}

/// The file on this machine that stands for builtin `name`, checked to be usable in any
/// image (for nbrt-init: a statically linked executable).
pub fn resolve(name: &str) -> Result<PathBuf> {
    if name != NBRT_INIT {
        return Err(err(format!("unknown builtin {name:?}")));
    }
    let how = "build it with crates/init/build-static.sh and set NBRT_INIT_BIN to the path it \
               prints (or put the static nbrt-init next to the nbrt binary)";
    let path = match std::env::var_os(INIT_ENV) {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join(NBRT_INIT)))
            .filter(|p| p.is_file())
            .ok_or_else(|| err(format!("builtin nbrt-init: no nbrt-init found; {how}")))?,
    };
    match is_static_elf(&path) {
        Ok(true) => Ok(path),
        Ok(false) => Err(err(format!(
            "builtin nbrt-init: {} is dynamically linked and would not run in every image; {how}",
            path.display()
        ))),
        Err(e) => Err(err(format!(
            "builtin nbrt-init: {}: {e}; {how}",
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
}
