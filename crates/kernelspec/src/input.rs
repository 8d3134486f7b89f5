//! The values a spec is written from, checked and normalized as the Gateway Provisioners
//! installers do: kernel names, port ranges, languages, variables.

use crate::error::{invalid, Result};

/// Jupyter kernel names: letters, digits, `-`, `.`, `_` (lower-cased, spaces made `_`, as
/// the installers do).
pub fn normalize_kernel_name(name: &str) -> Result<String> {
    let n = name.trim().replace(' ', "_").to_lowercase();
    if n.is_empty()
        || !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(invalid(format!(
            "kernel name {name:?}: use letters, digits, '-', '.', '_' (spaces become '_')"
        )));
    }
    Ok(n)
}

/// `A..B` with A ≤ B; a real range spans at least 1000 ports (the launchers' minimum).
pub fn check_port_range(range: &str) -> Result<()> {
    let parse = |s: &str| s.trim().parse::<u16>();
    let Some((a, b)) = range.split_once("..") else {
        return Err(invalid(format!(
            "port range {range:?}: write it as LOWER..UPPER, e.g. 40000..41000 (0..0: any port)"
        )));
    };
    let (Ok(a), Ok(b)) = (parse(a), parse(b)) else {
        return Err(invalid(format!(
            "port range {range:?}: the bounds must be port numbers"
        )));
    };
    if (a, b) == (0, 0) {
        return Ok(());
    }
    if a > b || a < 1024 {
        return Err(invalid(format!(
            "port range {range:?}: need 1024 ≤ LOWER ≤ UPPER"
        )));
    }
    if b - a < 1000 {
        return Err(invalid(format!(
            "port range {range:?} spans {} ports: the kernel launchers require at least 1000 \
             (MIN_PORT_RANGE_SIZE)",
            b - a
        )));
    }
    Ok(())
}

/// `python` / `R` as Jupyter and the installers spell them.
pub fn normalize_language(lang: &str) -> Result<String> {
    match lang.trim().to_ascii_lowercase().as_str() {
        "python" | "python3" => Ok("python".into()),
        "r" => Ok("R".into()),
        other => Err(invalid(format!(
            "kernel language {other:?}: nbrt writes specs for python and R kernels \
             (the launchers in nbrt's kernel images)"
        ))),
    }
}

/// Whether `n` is an environment variable name.
pub fn valid_env_name(n: &str) -> bool {
    !n.is_empty()
        && !n.as_bytes()[0].is_ascii_digit()
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parse `--env KEY=VALUE` entries.
pub fn parse_env(entries: &[String]) -> Result<Vec<(String, String)>> {
    entries
        .iter()
        .map(|e| {
            let Some((k, v)) = e.split_once('=') else {
                return Err(invalid(format!("--env {e:?}: write KEY=VALUE")));
            };
            if !valid_env_name(k) {
                return Err(invalid(format!(
                    "--env {e:?}: {k:?} is not a variable name"
                )));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Names from the image's [`nbrt_oci::label::KERNEL_ENV`] label (comma or space
/// separated).
pub fn declared_env(label: Option<&str>) -> Vec<String> {
    label
        .unwrap_or("")
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|n| valid_env_name(n))
        .map(str::to_string)
        .collect()
}

/// ipykernel ≥ 7.3 can provision CurveZMQ keys.
pub fn curve_capable(version: Option<&str>) -> bool {
    let Some(v) = version else { return false };
    let mut parts = v.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u64>()
            .unwrap_or(0)
    });
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (7, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked() {
        assert_eq!(normalize_kernel_name("My Kernel").unwrap(), "my_kernel");
        assert!(normalize_kernel_name("a/b").is_err());
        assert!(check_port_range("0..0").is_ok());
        assert!(check_port_range("40000..41000").is_ok());
        assert!(check_port_range("40000..40100").is_err());
        assert!(check_port_range("41000..40000").is_err());
        assert!(check_port_range("40000-41000").is_err());
        assert_eq!(normalize_language("R").unwrap(), "R");
        assert_eq!(normalize_language("Python").unwrap(), "python");
        assert!(normalize_language("scala").is_err());
        assert!(parse_env(&["A=1".into(), "B_2=x=y".into()]).is_ok());
        assert!(parse_env(&["1A=1".into()]).is_err());
        assert!(parse_env(&["A".into()]).is_err());
        assert_eq!(declared_env(Some("A, B C,,bad-name")), ["A", "B", "C"]);
        assert!(curve_capable(Some("7.4.0")));
        assert!(!curve_capable(Some("6.29.5")));
        assert!(!curve_capable(None));
    }
}
