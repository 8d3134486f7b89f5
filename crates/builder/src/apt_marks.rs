//! apt's marks of automatically installed packages (`/var/lib/apt/extended_states`, what
//! `apt autoremove` reads), written in one form whatever installed the packages.
//!
//! A step that resolves (`apt-get install tree`) lets apt mark the dependencies it pulls in
//! as automatic; a step that installs a lock's pins names every package (`tree=2.1.0-1
//! libfoo=…`), and apt marks them all manual. So that both give the same layer, the lock
//! records each package's mark (`auto = true`), and after either step the file is rewritten:
//! apt's marks, with the lock's for the packages the step pinned, one stanza per automatic
//! package sorted by name (apt's own order follows its package cache, which moves with the
//! mirror's indexes).

use std::collections::BTreeMap;

use crate::lock::Deb;

/// Where apt keeps the marks, relative to the image root.
pub const PATH: &str = "var/lib/apt/extended_states";

/// The packages an `extended_states` text marks automatic: name → architecture.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    let mut auto = BTreeMap::new();
    for stanza in text.split("\n\n") {
        let (mut name, mut arch, mut is_auto) = (None, None, false);
        for line in stanza.lines() {
            match line.split_once(':') {
                Some(("Package", v)) => name = Some(v.trim().to_string()),
                Some(("Architecture", v)) => arch = Some(v.trim().to_string()),
                Some(("Auto-Installed", v)) => is_auto = v.trim() == "1",
                _ => {}
            }
        }
        if let (Some(name), true) = (name, is_auto) {
            auto.insert(name, arch.unwrap_or_default());
        }
    }
    auto
}

/// The file for `auto` (name → architecture), sorted by name.
pub fn render(auto: &BTreeMap<String, String>) -> String {
    auto.iter()
        .map(|(name, arch)| format!("Package: {name}\nArchitecture: {arch}\nAuto-Installed: 1\n\n"))
        .collect()
}

/// The marks a step leaves: apt's (`written`), except that the packages it installed from
/// the lock's `pins` take the lock's marks. apt records an architecture-independent package
/// under the native architecture, which is the pins' own.
pub fn settle(written: &str, pins: Option<&[Deb]>) -> String {
    let mut auto = parse(written);
    if let Some(pins) = pins {
        let native = pins
            .iter()
            .map(|d| d.arch.as_str())
            .find(|a| *a != "all")
            .unwrap_or("all")
            .to_string();
        for d in pins {
            auto.remove(&d.name);
            if d.auto {
                let arch = if d.arch == "all" { &native } else { &d.arch };
                auto.insert(d.name.clone(), arch.clone());
            }
        }
    }
    render(&auto)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deb(name: &str, arch: &str, auto: bool) -> Deb {
        Deb {
            name: name.into(),
            version: "1".into(),
            arch: arch.into(),
            auto,
        }
    }

    #[test]
    fn resolved_and_pinned_installs_leave_the_same_file() {
        // apt's order after resolving `tree`: its cache's, not sorted.
        let resolved = "Package: libz\nArchitecture: amd64\nAuto-Installed: 1\n\n\
                        Package: liba\nArchitecture: amd64\nAuto-Installed: 1\n\n";
        // After `tree=1 liba=1 libz=1 whl=1` apt marked nothing automatic.
        let pins = [
            deb("tree", "amd64", false),
            deb("liba", "amd64", true),
            deb("libz", "amd64", true),
        ];
        assert_eq!(settle(resolved, None), settle("", Some(&pins)));
        assert_eq!(
            settle(resolved, None),
            "Package: liba\nArchitecture: amd64\nAuto-Installed: 1\n\n\
             Package: libz\nArchitecture: amd64\nAuto-Installed: 1\n\n"
        );
    }

    #[test]
    fn marks_below_the_step_stay_and_architecture_independent_pins_take_the_native_one() {
        let below = "Package: old\nArchitecture: amd64\nAuto-Installed: 1\n\n\
                     Package: manual\nArchitecture: amd64\nAuto-Installed: 0\n\n";
        let pins = [deb("whl", "all", true), deb("tool", "amd64", false)];
        assert_eq!(
            settle(below, Some(&pins)),
            "Package: old\nArchitecture: amd64\nAuto-Installed: 1\n\n\
             Package: whl\nArchitecture: amd64\nAuto-Installed: 1\n\n"
        );
    }
}
