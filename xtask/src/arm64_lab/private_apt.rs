//! A Debian suite the host's apt must not know, looked up and downloaded from with an apt state
//! of its own under the lab's cache: `trixie-backports` (Linux 7.x) on a bookworm host.
//!
//! Why not a file in /etc/apt/sources.list.d like bookworm-backports: a trixie source on a
//! bookworm machine is a "FrankenDebian" set-up that every later `apt-get update` on the host
//! would index (all architectures), and the lab only ever wants one arm64 kernel image out of it.
//! Why not fetching the `.deb` by hand from `Packages.xz`: apt already checks the whole chain
//! (InRelease signed by the key the machine's own bookworm source names, then the index's and the
//! package's SHA256); a hand-written fetcher would have to redo that to be as safe.
//!
//! So the lab writes `<cache>/apt-<suite>/sources.list.d/<suite>.sources`, derived from the
//! machine's own bookworm entry (same mirror, components and `Signed-By:` key, limited to arm64),
//! and runs `apt-get`/`apt-cache` with `-o Dir::Etc::SourceList=/dev/null -o
//! Dir::Etc::SourceParts=… -o Dir::State::Lists=… -o Dir::Cache=…`: apt sees that suite and
//! nothing else, and the host's own lists and sources stay untouched.

use super::install::{
    DEBIAN_SOURCES, SOURCES_LIST, apt_command, derived_line, derived_stanza, require_root,
};
use crate::check;
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// An apt state of its own for one suite, under the cache.
#[derive(Clone, Debug)]
pub struct PrivateApt {
    suite: String,
    dir: PathBuf,
}

impl PrivateApt {
    /// Writes the suite's source (derived from the machine's bookworm entry) under
    /// `<cache>/apt-<suite>` and runs `apt-get update` on it (a few hundred kB: the arm64 index).
    pub fn prepare(suite: &str, cache: &Path) -> Result<PrivateApt> {
        let dir = cache.join(format!("apt-{suite}"));
        let apt = PrivateApt {
            suite: suite.to_string(),
            dir,
        };
        let parts = apt.dir.join("sources.list.d");
        for sub in [
            parts.clone(),
            apt.dir.join("lists/partial"),
            apt.dir.join("cache/archives/partial"),
        ] {
            fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        }
        let (from, file, text) = match fs::read_to_string(DEBIAN_SOURCES) {
            Ok(text) => (
                DEBIAN_SOURCES,
                format!("{suite}.sources"),
                derived_stanza(&text, suite, Some("arm64")),
            ),
            Err(_) => (
                SOURCES_LIST,
                format!("{suite}.list"),
                fs::read_to_string(SOURCES_LIST)
                    .map_err(anyhow::Error::from)
                    .and_then(|text| derived_line(&text, suite, Some("arm64"))),
            ),
        };
        let text = text.with_context(|| {
            format!(
                "the lab's private apt source for {suite} cannot be derived from {from} (it copies \
                 the bookworm entry's mirror and key)"
            )
        })?;
        let path = parts.join(&file);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        require_root(&format!("apt-get update of the private {suite} lists"))?;
        errln!(
            "  apt-get update ({suite} only, private state in {})",
            apt.dir.display()
        );
        check(
            apt.command("apt-get").args(["update", "-q"]).status(),
            &format!(
                "apt-get update of {suite} (lists in {}; check the network and {})",
                apt.dir.display(),
                path.display()
            ),
        )?;
        Ok(apt)
    }

    /// The suite's name, e.g. `trixie-backports`.
    pub fn suite(&self) -> &str {
        &self.suite
    }

    /// The `-o` options that point apt at this state and nothing else.
    pub fn options(&self) -> Vec<String> {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        [
            "Dir::Etc::SourceList=/dev/null".to_string(),
            format!("Dir::Etc::SourceParts={}", d("sources.list.d")),
            format!("Dir::State::Lists={}", d("lists")),
            format!("Dir::Cache={}", d("cache")),
            // The private directories belong to root; apt's `_apt` user cannot write them.
            "APT::Sandbox::User=root".to_string(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    /// `program` (`apt-get`, `apt-cache`) with [`PrivateApt::options`].
    pub fn command(&self, program: &str) -> std::process::Command {
        let mut cmd = apt_command(program);
        cmd.args(self.options());
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_point_every_directory_into_the_cache() {
        let apt = PrivateApt {
            suite: "trixie-backports".into(),
            dir: PathBuf::from("/c/apt-trixie-backports"),
        };
        let opts = apt.options();
        assert!(opts.chunks(2).all(|pair| pair[0] == "-o"));
        let values: Vec<&str> = opts.iter().skip(1).step_by(2).map(String::as_str).collect();
        assert_eq!(
            values,
            [
                "Dir::Etc::SourceList=/dev/null",
                "Dir::Etc::SourceParts=/c/apt-trixie-backports/sources.list.d",
                "Dir::State::Lists=/c/apt-trixie-backports/lists",
                "Dir::Cache=/c/apt-trixie-backports/cache",
                "APT::Sandbox::User=root",
            ]
        );
    }

    #[test]
    fn the_private_source_is_derived_and_limited_to_arm64() {
        let sources = "Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm \
                       bookworm-updates\nComponents: main\nSigned-By: /k.gpg\n";
        let stanza = derived_stanza(sources, "trixie-backports", Some("arm64")).unwrap();
        assert!(stanza.contains("URIs: http://deb.example/debian\n"));
        assert!(stanza.contains("Suites: trixie-backports\n"));
        assert!(stanza.contains("Architectures: arm64\n"));
        assert!(stanza.contains("Signed-By: /k.gpg\n"));
        let list = "deb [signed-by=/k.gpg arch=amd64] http://deb.example/debian bookworm main\n";
        assert_eq!(
            derived_line(list, "trixie-backports", Some("arm64"))
                .unwrap()
                .lines()
                .last()
                .unwrap(),
            "deb [signed-by=/k.gpg arch=arm64] http://deb.example/debian trixie-backports main"
        );
        assert_eq!(
            derived_line(
                "deb http://deb.example/debian bookworm main\n",
                "trixie-backports",
                Some("arm64")
            )
            .unwrap()
            .lines()
            .last()
            .unwrap(),
            "deb [arch=arm64] http://deb.example/debian trixie-backports main"
        );
    }
}
