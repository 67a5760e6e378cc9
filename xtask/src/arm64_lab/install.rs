//! Installing what the arm64 lab needs, idempotently: every step first looks whether its result is
//! already there and says so; `apt-get update` runs at most once, and only when something has to
//! come from apt.
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
use crate::{check, may_install, step};
use anyhow::{Context, Result, bail};
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Debian release the installer knows.
const CODENAME: &str = "bookworm";
/// The suite QEMU 10 and the 6.12 kernel come from.
const BACKPORTS: &str = "bookworm-backports";
/// Where the derived backports source is written.
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";
/// The machine's own deb822 source, the one backports is derived from.
const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
/// Where older set-ups keep their sources instead, one line each.
const SOURCES_LIST: &str = "/etc/apt/sources.list";
/// Where the backports line derived from it is written.
const BACKPORTS_LIST: &str = "/etc/apt/sources.list.d/bookworm-backports.list";

/// The Rust target of route 1.
pub const MUSL_TARGET: &str = "aarch64-unknown-linux-musl";
/// The Rust target of route 2 (Debian's compiler, linked statically with `+crt-static`).
pub const GNU_TARGET: &str = "aarch64-unknown-linux-gnu";

/// How vmfleet is compiled for aarch64.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RustRoute {
    /// rustup's `aarch64-unknown-linux-musl` standard library: a static binary.
    Rustup,
    /// Debian's `rustc-web` and its arm64 standard library, `aarch64-unknown-linux-gnu` with
    /// `+crt-static`.
    Debian { rustc: PathBuf },
}

impl RustRoute {
    pub fn target(&self) -> &'static str {
        match self {
            RustRoute::Rustup => MUSL_TARGET,
            RustRoute::Debian { .. } => GNU_TARGET,
        }
    }
}

/// An arm64 kernel unpacked in the cache.
#[derive(Clone, Debug)]
pub struct KernelImage {
    /// The Debian package it came from, e.g. `linux-image-6.12.43+deb12-arm64-unsigned`.
    pub package: String,
    /// Its Debian version.
    pub version: String,
    /// `boot/vmlinuz-*` (on arm64 an uncompressed `Image`).
    pub image: PathBuf,
}

/// apt, with `apt-get update` run at most once per xtask run.
pub struct Apt {
    updated: bool,
}

impl Apt {
    pub fn new() -> Apt {
        Apt { updated: false }
    }

    fn update(&mut self) -> Result<()> {
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
    fn install(&mut self, release: Option<&str>, packages: &[&str], why: &str) -> Result<()> {
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
    /// fresh `apt-get update` (stale lists name files the mirror no longer has).
    fn download(&mut self, package: &str, version: &str, dir: &Path) -> Result<PathBuf> {
        let tmp = dir.join(".download");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let spec = format!("{package}={version}");
        errln!("  apt-get download {spec}");
        let mut ok = apt_command("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root", &spec])
            .current_dir(&tmp)
            .status()
            .context("could not start apt-get download")?
            .success();
        if !ok && !self.updated {
            self.update()?;
            ok = apt_command("apt-get")
                .args(["download", "-q", "-o", "APT::Sandbox::User=root", &spec])
                .current_dir(&tmp)
                .status()
                .context("could not start apt-get download")?
                .success();
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
        let dest = dir.join(deb.file_name().expect("a .deb has a name"));
        fs::rename(&deb, &dest)?;
        fs::remove_dir_all(&tmp).ok();
        Ok(dest)
    }
}

fn apt_command(program: &str) -> Command {
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

fn require_root(what: &str) -> Result<()> {
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

fn require_bookworm(what: &str) -> Result<()> {
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
fn installed_version(package: &str) -> Option<String> {
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
fn version_gt(a: &str, b: &str) -> bool {
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
            "# Written by `cargo xtask arm64-lab` (vmfleet): {BACKPORTS}, derived from\n\
             # {DEBIAN_SOURCES} (same URIs, components and key).\n\
             Types: deb\nURIs: {uris}\nSuites: {BACKPORTS}\nComponents: {}\n",
            get("Components").unwrap_or("main")
        );
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
    for line in sources_list.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        // `[options]` may stand before the URI.
        let (options, rest) = match rest.trim_start().strip_prefix('[') {
            Some(inner) => match inner.split_once(']') {
                Some((opts, rest)) => (format!("[{opts}] "), rest),
                None => continue,
            },
            None => (String::new(), rest),
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        if let [uri, suite, components @ ..] = words.as_slice() {
            if *suite == CODENAME && !components.is_empty() {
                return Ok(format!(
                    "# Written by `cargo xtask arm64-lab` (vmfleet): {BACKPORTS}, derived from \
                     {SOURCES_LIST}.\ndeb {options}{uri} {BACKPORTS} {}\n",
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

/// One arm64 package on offer: name and version.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Offer {
    package: String,
    version: String,
}

/// The arm64 versions of `package` that `apt-cache madison` lists from one of `suites`.
fn offers(package: &str, suites: &[&str]) -> Vec<Offer> {
    let Ok(out) = Command::new("apt-cache")
        .args(["madison", &format!("{package}:arm64")])
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    parse_madison(&String::from_utf8_lossy(&out.stdout), suites)
}

/// Parse `apt-cache madison` lines (`name | version | uri suite/component arch Packages`).
fn parse_madison(text: &str, suites: &[&str]) -> Vec<Offer> {
    text.lines()
        .filter_map(|line| {
            let mut cols = line.split('|').map(str::trim);
            let (name, version, origin) = (cols.next()?, cols.next()?, cols.next()?);
            // `URI SUITE/COMPONENT ARCH Packages`
            let mut words = origin.split_whitespace().skip(1);
            let suite = words.next()?.split('/').next()?;
            let arch = words.next()?;
            (arch == "arm64" && suites.contains(&suite)).then(|| Offer {
                package: name.trim_end_matches(":arm64").to_string(),
                version: version.to_string(),
            })
        })
        .collect()
}

/// The newest offer.
fn newest(offers: Vec<Offer>) -> Option<Offer> {
    offers.into_iter().reduce(|a, b| {
        if version_gt(&b.version, &a.version) {
            b
        } else {
            a
        }
    })
}

/// Package names apt knows that start with `prefix`.
fn package_names(prefix: &str) -> Vec<String> {
    Command::new("apt-cache")
        .args(["pkgnames", prefix])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().trim_end_matches(":arm64").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Directory name of an unpacked package in the cache.
fn unpacked_name(package: &str, version: &str) -> String {
    format!("{package}_{}_arm64", version.replace(':', "%3a"))
}

/// Unpack `paths` (e.g. `./boot`) of `deb` into `dest`, atomically (a temporary directory renamed
/// into place), with `dpkg-deb --fsys-tarfile | tar -x`: `dpkg -x` of only what the lab needs.
fn unpack(deb: &Path, dest: &Path, paths: &[&str]) -> Result<()> {
    let tmp = dest.with_extension("partial");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    errln!("  unpacking {} into {}", deb.display(), dest.display());
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start dpkg-deb")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&tmp)
        .arg("--wildcards")
        .args(paths)
        .stdin(dpkg.stdout.take().expect("piped"))
        .status();
    let dpkg_status = dpkg.wait()?;
    check(tar, &format!("unpacking {}", deb.display()))?;
    if !dpkg_status.success() {
        bail!(
            "dpkg-deb --fsys-tarfile {} failed ({dpkg_status})",
            deb.display()
        );
    }
    let _ = fs::remove_dir_all(dest);
    fs::rename(&tmp, dest)?;
    Ok(())
}

fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    fs::read_dir(dir.join("boot"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
}

/// Cached unpacked kernels for `kernel`, newest first by Debian version.
fn cached_kernel(kernel: Kernel, cache: &Path) -> Option<KernelImage> {
    let mut found: Vec<KernelImage> = fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|dir| {
            let name = dir.file_name()?.to_string_lossy().to_string();
            let stem = name.strip_suffix("_arm64")?;
            let (package, version) = stem.split_once('_')?;
            if !kernel.matches_package(package) {
                return None;
            }
            Some(KernelImage {
                package: package.to_string(),
                version: version.replace("%3a", ":"),
                image: find_vmlinuz(&dir)?,
            })
        })
        .collect();
    found.sort_by(|a, b| {
        if version_gt(&a.version, &b.version) {
            std::cmp::Ordering::Less
        } else {
            std::cmp::Ordering::Greater
        }
    });
    found.into_iter().next()
}

/// The kernel image for `kernel`: from the cache, or the newest package apt offers, downloaded
/// and unpacked into the cache.
pub fn ensure_kernel(kernel: Kernel, apt: &mut Apt, cache: &Path) -> Result<KernelImage> {
    if let Some(found) = cached_kernel(kernel, cache) {
        errln!(
            "  kernel {}: {} {} (cached; delete {} to look for a newer one)",
            kernel.label(),
            found.package,
            found.version,
            cache
                .join(unpacked_name(&found.package, &found.version))
                .display()
        );
        return Ok(found);
    }
    require_bookworm("the arm64 kernels")?;
    may_install(
        &format!(
            "arm64 kernel {} ({}, downloaded into {})",
            kernel.label(),
            kernel.package_pattern(),
            cache.display()
        ),
        "the arm64 lab boots it; `apt-get update` first",
    )?;
    apt.update()?;
    let names = package_names(kernel.package_prefix());
    let mut candidates: Vec<Offer> = Vec::new();
    for preferred in [true, false] {
        for name in names.iter().filter(|n| kernel.matches_name(n, preferred)) {
            candidates.extend(offers(name, kernel.suites()));
        }
        if !candidates.is_empty() {
            break;
        }
    }
    let Some(offer) = newest(candidates) else {
        bail!(
            "no arm64 package {} in {} (is `dpkg --add-architecture arm64` done and apt \
             updated? `apt-cache pkgnames {}` lists what apt knows)",
            kernel.package_pattern(),
            kernel.suites().join(" or "),
            kernel.package_prefix()
        );
    };
    errln!(
        "  kernel {}: {} {}",
        kernel.label(),
        offer.package,
        offer.version
    );
    let deb = apt.download(&format!("{}:arm64", offer.package), &offer.version, cache)?;
    let dest = cache.join(unpacked_name(&offer.package, &offer.version));
    unpack(&deb, &dest, &["./boot/vmlinuz-*", "./boot/config-*"])?;
    fs::remove_file(&deb).ok();
    let image =
        find_vmlinuz(&dest).with_context(|| format!("{} has no boot/vmlinuz-*", offer.package))?;
    Ok(KernelImage {
        package: offer.package,
        version: offer.version,
        image,
    })
}

/// The static arm64 busybox: from the cache, or `busybox-static:arm64` downloaded and unpacked.
pub fn ensure_busybox(apt: &mut Apt, cache: &Path) -> Result<PathBuf> {
    let find = |dir: &Path| {
        ["bin/busybox", "usr/bin/busybox"]
            .iter()
            .map(|p| dir.join(p))
            .find(|p| p.is_file())
    };
    if let Ok(entries) = fs::read_dir(cache) {
        for dir in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            let name = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            if name.starts_with("busybox-static_") && name.ends_with("_arm64") {
                if let Some(bin) = find(&dir) {
                    errln!("  busybox-static:arm64: {} (cached)", bin.display());
                    return Ok(bin);
                }
            }
        }
    }
    require_bookworm("busybox-static:arm64")?;
    may_install(
        &format!("busybox-static:arm64 (downloaded into {})", cache.display()),
        "the arm64 lab's initramfs runs it; `apt-get update` first",
    )?;
    apt.update()?;
    let offer = newest(offers(
        "busybox-static",
        &[CODENAME, "bookworm-security", "bookworm-updates", BACKPORTS],
    ))
    .context(
        "apt offers no busybox-static:arm64 (is `dpkg --add-architecture arm64` done and apt \
         updated?)",
    )?;
    let deb = apt.download("busybox-static:arm64", &offer.version, cache)?;
    let dest = cache.join(unpacked_name("busybox-static", &offer.version));
    // `*` matches `/` too: ./bin/busybox or ./usr/bin/busybox, whichever the package has.
    unpack(&deb, &dest, &["./*bin/busybox"])?;
    fs::remove_file(&deb).ok();
    find(&dest).with_context(|| format!("busybox-static {} has no busybox binary", offer.version))
}

/// The Rust side: route 1 (rustup's musl target) unless it cannot be had, then route 2 (Debian's
/// rustc-web). `VMFLEET_LAB_RUST=debian` forces route 2 (to test it).
pub fn ensure_rust(apt: &mut Apt) -> Result<RustRoute> {
    let forced = env::var("VMFLEET_LAB_RUST").ok();
    if forced.as_deref() != Some("debian") {
        if rustup_has_target()? {
            errln!("  rust target {MUSL_TARGET}: present");
            return Ok(RustRoute::Rustup);
        }
        let allowed = may_install(
            &format!("the rustup target {MUSL_TARGET} (rustup target add {MUSL_TARGET})"),
            "the arm64 lab cross-builds a static aarch64 vmfleet",
        );
        let added = allowed.is_ok()
            && Command::new("rustup")
                .args(["target", "add", MUSL_TARGET])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        if added {
            return Ok(RustRoute::Rustup);
        }
        if let Err(refused) = allowed {
            // --no-install: route 2 only if it is already there.
            let have = installed_version("rustc-web").is_some()
                && installed_version("libstd-rust-web-dev:arm64").is_some();
            if !have {
                return Err(refused);
            }
        }
        errln!(
            "  rustup could not add {MUSL_TARGET}; falling back to Debian's rustc-web with \
             libstd-rust-web-dev:arm64 (route 2)"
        );
    } else {
        errln!("  VMFLEET_LAB_RUST=debian: Debian's rustc-web (route 2)");
    }
    let rustc = PathBuf::from("/usr/bin/rustc");
    let have = installed_version("rustc-web").is_some()
        && installed_version("libstd-rust-web-dev:arm64").is_some();
    if have {
        errln!("  rustc-web, libstd-rust-web-dev:arm64: present");
    } else {
        require_bookworm("rustc-web")?;
        apt.install(
            None,
            &["rustc-web", "libstd-rust-web-dev:arm64"],
            "the arm64 lab cross-builds vmfleet with Debian's Rust, as rustup has no aarch64 musl target",
        )?;
    }
    if !rustc.is_file() {
        bail!(
            "rustc-web is installed but {} is missing; reinstall rustc-web",
            rustc.display()
        );
    }
    Ok(RustRoute::Debian { rustc })
}

fn rustup_has_target() -> Result<bool> {
    let out = match Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    {
        Ok(out) => out,
        Err(_) => return Ok(false),
    };
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == MUSL_TARGET))
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
    let busybox = ensure_busybox(&mut apt, cache)?;
    let images = kernels
        .iter()
        .map(|k| ensure_kernel(*k, &mut apt, cache))
        .collect::<Result<Vec<_>>>()?;
    let route = ensure_rust(&mut apt)?;
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

    #[test]
    fn madison_lines_are_filtered_by_suite_and_arch() {
        let text = " linux-image-6.12.43+deb12-arm64-unsigned:arm64 | 6.12.43-1~bpo12+1 | http://deb.example/debian bookworm-backports/main arm64 Packages\n\
                    busybox-static:arm64 | 1:1.35.0-4+b3 | http://deb.example/debian bookworm/main arm64 Packages\n\
                    busybox-static | 1:1.35.0-4+b3 | http://deb.example/debian bookworm/main amd64 Packages\n";
        assert_eq!(
            parse_madison(text, &["bookworm-backports"]),
            vec![Offer {
                package: "linux-image-6.12.43+deb12-arm64-unsigned".into(),
                version: "6.12.43-1~bpo12+1".into()
            }]
        );
        assert_eq!(parse_madison(text, &["bookworm"]).len(), 1);
    }
}
