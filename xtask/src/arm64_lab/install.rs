//! Installing what the arm64 lab needs, idempotently: every step first looks whether its result is
//! already there and says so; `apt-get update` runs at most once, and only when something has to
//! come from apt. This file has apt itself ([`Apt`]), the machine's sources and the host
//! packages, and [`provision`], which runs every step; the arm64 packages fetched into the cache
//! are in `packages`, the Rust toolchain in `toolchain`.
//!
//! - bookworm-backports, derived from the machine's own `debian.sources` (never a hard-coded
//!   mirror), for QEMU 10 and the 6.12 kernel;
//! - `dpkg --add-architecture arm64`, so apt knows the arm64 packages (kernels, busybox);
//! - host packages: `qemu-system-arm` (from backports), `gcc-aarch64-linux-gnu` and
//!   `libc6-dev-arm64-cross` (the cross linker);
//! - arm64 packages that are *not* installed on the host but fetched with `apt-get download`
//!   into the cache and unpacked there: the kernels and `busybox-static`;
//! - the Rust target `aarch64-unknown-linux-musl` (route 1), or, when rustup cannot add it,
//!   Debian's `rustc-web` with `libstd-rust-web-dev:arm64` (route 2).

use super::Kernel;
use super::packages::{self, KernelImage};
use super::private_apt::PrivateApt;
use super::toolchain::{self, RustRoute};
use crate::{check, may_install, step};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Debian release the installer knows.
pub(super) const CODENAME: &str = "bookworm";
/// The suite QEMU 10 and the 6.12 kernel come from.
pub(super) const BACKPORTS: &str = "bookworm-backports";
/// Where the derived backports source is written.
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";
/// The machine's own deb822 source, the one backports is derived from.
pub(super) const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
/// Where older set-ups keep their sources instead, one line each.
pub(super) const SOURCES_LIST: &str = "/etc/apt/sources.list";
/// Where the backports line derived from it is written.
const BACKPORTS_LIST: &str = "/etc/apt/sources.list.d/bookworm-backports.list";

/// apt, with `apt-get update` run at most once per xtask run.
pub struct Apt {
    updated: bool,
}

impl Apt {
    pub fn new() -> Apt {
        Apt { updated: false }
    }

    pub(super) fn update(&mut self) -> Result<()> {
        if self.updated {
            return Ok(());
        }
        require_root("apt-get update")?;
        errln!("  apt-get update");
        check(
            apt_command("apt-get").args(["update", "-q"]).status(),
            "apt-get update (the package lists could not be refreshed; check the network and \
             /etc/apt/sources.list.d/)",
        )?;
        self.updated = true;
        Ok(())
    }

    /// `apt-get install` `packages`, from `release` when given (`-t`), needed for `why`
    /// (announced first; refused by `--no-install`).
    pub(super) fn install(
        &mut self,
        release: Option<&str>,
        packages: &[&str],
        why: &str,
    ) -> Result<()> {
        may_install(
            &format!(
                "apt package(s) {}{}",
                packages.join(" "),
                release.map(|r| format!(" from {r}")).unwrap_or_default()
            ),
            why,
        )?;
        self.update()?;
        let mut cmd = apt_command("apt-get");
        cmd.args(["install", "-y", "-q", "--no-install-recommends"]);
        if let Some(release) = release {
            cmd.args(["-t", release]);
        }
        cmd.args(packages);
        errln!(
            "  apt-get install{} {}",
            release.map(|r| format!(" -t {r}")).unwrap_or_default(),
            packages.join(" ")
        );
        check(
            cmd.status(),
            &format!(
                "apt-get install {} (see apt's message above; `apt-cache policy {}` shows where \
                 apt looks for them)",
                packages.join(" "),
                packages.join(" ")
            ),
        )
    }

    /// `apt-get download PACKAGE=VERSION` into `dir`; returns the `.deb`. Retries once after a
    /// fresh `apt-get update` (stale lists name files the mirror no longer has). With `private`,
    /// from that suite's own apt state (just updated, so no retry).
    pub(super) fn download(
        &mut self,
        package: &str,
        version: &str,
        dir: &Path,
        private: Option<&PrivateApt>,
    ) -> Result<PathBuf> {
        let tmp = dir.join(".download");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let spec = format!("{package}={version}");
        errln!(
            "  apt-get download {spec}{}",
            private
                .map(|p| format!(" (from {})", p.suite()))
                .unwrap_or_default()
        );
        let attempt = || -> Result<bool> {
            let mut cmd = match private {
                Some(p) => p.command("apt-get"),
                None => apt_command("apt-get"),
            };
            Ok(cmd
                .args(["download", "-q", "-o", "APT::Sandbox::User=root", &spec])
                .current_dir(&tmp)
                .status()
                .context("could not start apt-get download")?
                .success())
        };
        let mut ok = attempt()?;
        if !ok && !self.updated && private.is_none() {
            self.update()?;
            ok = attempt()?;
        }
        if !ok {
            bail!(
                "apt-get download {spec} failed (see apt's message above); `apt-cache madison \
                 {package}` lists what the configured archives offer"
            );
        }
        let deb = fs::read_dir(&tmp)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .with_context(|| {
                format!("apt-get download {spec} left no .deb in {}", tmp.display())
            })?;
        let name = deb
            .file_name()
            .with_context(|| format!("apt-get download {spec} left {}", deb.display()))?;
        let dest = dir.join(name);
        fs::rename(&deb, &dest)?;
        fs::remove_dir_all(&tmp).ok();
        Ok(dest)
    }
}

pub(super) fn apt_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    // Wait for another apt or dpkg (a parallel install, unattended upgrades) instead of failing.
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-o", "DPkg::Lock::Timeout=600"]);
    cmd
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

pub(super) fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!(
            "the arm64 lab must run `{what}` to install what it needs, and that needs root; run \
             `cargo xtask arm64-lab` as root once (later runs find everything installed)"
        );
    }
    Ok(())
}

/// The codename of this Debian (`VERSION_CODENAME` in /etc/os-release).
fn codename() -> Option<String> {
    let text = fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
}

pub(super) fn require_bookworm(what: &str) -> Result<()> {
    let found = codename();
    if found.as_deref() != Some(CODENAME) {
        bail!(
            "the arm64 lab installs {what} from Debian {CODENAME} and {BACKPORTS}, but this \
             machine is {}; install QEMU >= 10 (qemu-system-aarch64), gcc-aarch64-linux-gnu and \
             libc6-dev-arm64-cross by hand",
            found.unwrap_or_else(|| "not Debian (no VERSION_CODENAME in /etc/os-release)".into())
        );
    }
    Ok(())
}

/// The installed version of a Debian package, if it is installed.
pub(super) fn installed_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev} ${Version}", package])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rest = text.strip_prefix("ii ")?;
    Some(rest.trim().to_string())
}

/// `dpkg --compare-versions a gt b`.
pub(super) fn version_gt(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether any apt source already names `suite` (a line that is not a comment).
fn suite_configured(suite: &str) -> bool {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "list" || x == "sources")),
        );
    }
    files.iter().any(|f| {
        fs::read_to_string(f).is_ok_and(|text| {
            let mut disabled = false;
            text.lines().any(|l| {
                let l = l.trim();
                if l.is_empty() {
                    disabled = false;
                }
                if l.starts_with("Enabled:") && l.contains("no") {
                    disabled = true;
                }
                !l.starts_with('#')
                    && !disabled
                    && l.split(|c: char| c.is_whitespace()).any(|w| w == suite)
            })
        })
    })
}

/// The deb822 stanza for bookworm-backports, derived from the `Types: deb` stanza of
/// `debian.sources` whose `Suites:` has `bookworm`: the same `URIs:`, `Components:` and
/// `Signed-By:`.
pub fn backports_stanza(debian_sources: &str) -> Result<String> {
    derived_stanza(debian_sources, BACKPORTS, None)
}

/// The deb822 stanza for `suite` (of the same archive), derived like [`backports_stanza`]; with
/// `arch`, an `Architectures:` line limits it to that architecture.
pub(super) fn derived_stanza(
    debian_sources: &str,
    suite: &str,
    arch: Option<&str>,
) -> Result<String> {
    for stanza in debian_sources.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines() {
            if line.trim_start().starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                // A continuation line (e.g. an inline Signed-By key) belongs to the last field.
                if let Some((_, value)) = fields.last_mut() {
                    value.push('\n');
                    value.push_str(line);
                }
                continue;
            }
            if let Some((key, value)) = line.split_once(':') {
                fields.push((key.trim().to_string(), value.trim().to_string()));
            }
        }
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        };
        let words = |key: &str| {
            get(key)
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        if !words("Types").contains(&"deb") || !words("Suites").contains(&CODENAME) {
            continue;
        }
        if get("Enabled").is_some_and(|v| v.eq_ignore_ascii_case("no")) {
            continue;
        }
        let uris = get("URIs").context("its `URIs:` field is missing")?;
        let mut out = format!(
            "# Written by `cargo xtask arm64-lab` (vmfleet): {suite}, derived from\n\
             # {DEBIAN_SOURCES} (same URIs, components and key).\n\
             Types: deb\nURIs: {uris}\nSuites: {suite}\nComponents: {}\n",
            get("Components").unwrap_or("main")
        );
        if let Some(arch) = arch {
            out += &format!("Architectures: {arch}\n");
        }
        if let Some(key) = get("Signed-By") {
            out += &format!("Signed-By: {key}\n");
        }
        return Ok(out);
    }
    bail!("no enabled `Types: deb` stanza with `Suites: {CODENAME}`")
}

/// Make sure apt knows bookworm-backports. Returns whether the sources changed.
fn ensure_backports() -> Result<bool> {
    if suite_configured(BACKPORTS) {
        errln!("  {BACKPORTS}: configured");
        return Ok(false);
    }
    require_bookworm("QEMU 10 and the 6.12 kernel")?;
    may_install(
        &format!("the apt source {BACKPORTS} (derived from this machine's {CODENAME} source)"),
        "the arm64 lab's QEMU 10 and 6.12 kernel come from there",
    )?;
    require_root("writing an apt source for bookworm-backports")?;
    // The deb822 file of current Debian images; older set-ups (debootstrap) have one-line
    // entries in sources.list instead.
    let (from, to, text) = match fs::read_to_string(DEBIAN_SOURCES) {
        Ok(text) => (DEBIAN_SOURCES, BACKPORTS_SOURCE, backports_stanza(&text)),
        Err(_) => (
            SOURCES_LIST,
            BACKPORTS_LIST,
            fs::read_to_string(SOURCES_LIST)
                .map_err(anyhow::Error::from)
                .and_then(|text| backports_line(&text)),
        ),
    };
    let text = text.with_context(|| {
        format!(
            "{BACKPORTS} is not configured and cannot be derived from {from} (the lab copies the \
             {CODENAME} entry's mirror and key); add a {BACKPORTS} source by hand"
        )
    })?;
    fs::write(to, text).with_context(|| format!("writing {to}"))?;
    errln!("  {BACKPORTS}: added {to} (derived from {from})");
    Ok(true)
}

/// The one-line `sources.list` entry for bookworm-backports, derived from the `deb` line for
/// `bookworm` (same options, URI and components).
pub fn backports_line(sources_list: &str) -> Result<String> {
    derived_line(sources_list, BACKPORTS, None)
}

/// The one-line entry for `suite` (of the same archive), derived like [`backports_line`]; with
/// `arch`, an `arch=` option limits it to that architecture.
pub(super) fn derived_line(sources_list: &str, suite: &str, arch: Option<&str>) -> Result<String> {
    for line in sources_list.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        // `[options]` may stand before the URI.
        let arch_opt = arch.map(|a| format!("arch={a}"));
        let (options, rest) = match rest.trim_start().strip_prefix('[') {
            Some(inner) => match inner.split_once(']') {
                Some((opts, rest)) => {
                    let opts: Vec<&str> = opts
                        .split_whitespace()
                        .filter(|o| arch.is_none() || !o.starts_with("arch="))
                        .chain(arch_opt.as_deref())
                        .collect();
                    (format!("[{}] ", opts.join(" ")), rest)
                }
                None => continue,
            },
            None => match &arch_opt {
                Some(opt) => (format!("[{opt}] "), rest),
                None => (String::new(), rest),
            },
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        if let [uri, from_suite, components @ ..] = words.as_slice() {
            if *from_suite == CODENAME && !components.is_empty() {
                return Ok(format!(
                    "# Written by `cargo xtask arm64-lab` (vmfleet): {suite}, derived from \
                     {SOURCES_LIST}.\ndeb {options}{uri} {suite} {}\n",
                    components.join(" ")
                ));
            }
        }
    }
    bail!("no `deb URI {CODENAME} COMPONENTS` line")
}

/// `dpkg --add-architecture arm64` unless it is there. Returns whether it changed.
fn ensure_arm64_arch() -> Result<bool> {
    let out = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .context("could not run dpkg --print-foreign-architectures (is this Debian?)")?;
    if String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .any(|a| a == "arm64")
    {
        errln!("  dpkg architecture arm64: present");
        return Ok(false);
    }
    may_install(
        "the dpkg architecture arm64 (dpkg --add-architecture arm64)",
        "the arm64 lab fetches arm64 kernels and busybox through apt",
    )?;
    require_root("dpkg --add-architecture arm64")?;
    errln!("  dpkg --add-architecture arm64");
    check(
        Command::new("dpkg")
            .args(["--add-architecture", "arm64"])
            .status(),
        "dpkg --add-architecture arm64",
    )?;
    Ok(true)
}

/// The host packages: QEMU 10 and the cross linker.
fn ensure_host_packages(apt: &mut Apt) -> Result<()> {
    match installed_version("qemu-system-arm") {
        Some(v) if !version_gt("1:10~", &v) => errln!("  qemu-system-arm {v}: present"),
        found => {
            if let Some(v) = found {
                errln!("  qemu-system-arm {v}: older than QEMU 10, upgrading from {BACKPORTS}");
            }
            require_bookworm("QEMU 10")?;
            apt.install(
                Some(BACKPORTS),
                &["qemu-system-arm"],
                "the arm64 lab boots its kernels at EL2 under QEMU >= 10",
            )?;
        }
    }
    let missing: Vec<&str> = ["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"]
        .into_iter()
        .filter(|p| match installed_version(p) {
            Some(v) => {
                errln!("  {p} {v}: present");
                false
            }
            None => true,
        })
        .collect();
    if !missing.is_empty() {
        apt.install(
            None,
            &missing,
            "the arm64 lab links the aarch64 vmfleet with them",
        )?;
    }
    Ok(())
}

/// Everything the host needs from apt. Cheap when all is there: no `apt-get update`.
pub fn ensure_host(apt: &mut Apt) -> Result<()> {
    let sources_changed = ensure_backports()?;
    let arch_changed = ensure_arm64_arch()?;
    if sources_changed || arch_changed {
        apt.update()?;
    }
    ensure_host_packages(apt)
}

/// Everything, for `kernels`: host packages, busybox, kernels, Rust. Returns busybox, the kernel
/// images (in the order asked) and the Rust route.
pub fn provision(
    kernels: &[Kernel],
    cache: &Path,
) -> Result<(PathBuf, Vec<KernelImage>, RustRoute)> {
    step("arm64 lab: installing what it needs (skipping what is present)");
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let mut apt = Apt::new();
    ensure_host(&mut apt)?;
    let busybox = packages::ensure_busybox(&mut apt, cache)?;
    let images = kernels
        .iter()
        .map(|k| packages::ensure_kernel(*k, &mut apt, cache))
        .collect::<Result<Vec<_>>>()?;
    let route = toolchain::ensure_rust(&mut apt)?;
    Ok((busybox, images, route))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCES: &str = "Types: deb\n\
        # http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
        URIs: http://deb.example/debian\n\
        Suites: bookworm bookworm-updates\n\
        Components: main\n\
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
        \n\
        Types: deb\n\
        URIs: http://deb.example/debian-security\n\
        Suites: bookworm-security\n\
        Components: main\n\
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";

    #[test]
    fn backports_is_derived_from_the_bookworm_stanza() {
        let stanza = backports_stanza(SOURCES).unwrap();
        assert!(stanza.contains("URIs: http://deb.example/debian\n"));
        assert!(stanza.contains("Suites: bookworm-backports\n"));
        assert!(stanza.contains("Components: main\n"));
        assert!(stanza.contains("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"));
        assert!(!stanza.contains("security"));
    }

    #[test]
    fn backports_needs_a_bookworm_stanza() {
        assert!(backports_stanza("Types: deb\nURIs: x\nSuites: trixie\n").is_err());
    }

    #[test]
    fn backports_line_is_derived_from_the_bookworm_line() {
        let list = "# deb http://old.example/debian bookworm main\n\
                    deb http://deb.example/debian-security bookworm-security main\n\
                    deb [signed-by=/k.gpg] http://deb.example/debian bookworm main contrib\n";
        assert_eq!(
            backports_line(list).unwrap().lines().last().unwrap(),
            "deb [signed-by=/k.gpg] http://deb.example/debian bookworm-backports main contrib"
        );
        assert!(backports_line("deb http://x/debian trixie main\n").is_err());
    }
}
