//! The arm64 packages the lab fetches into its cache, not installed on the host: the kernels
//! ([`ensure_kernel`]) and `busybox-static` ([`ensure_busybox`]), each the newest version apt
//! offers, downloaded with `apt-get download` and unpacked (only the files the lab needs) into
//! the cache, where later runs find them. A kernel from a suite the host does not know
//! (trixie-backports) is looked up with a private apt state (`private_apt`).

use super::Kernel;
use super::install::{Apt, BACKPORTS, CODENAME, apt_command, require_bookworm, version_gt};
use super::private_apt::PrivateApt;
use crate::{check, may_install};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An arm64 kernel unpacked in the cache.
#[derive(Clone, Debug)]
pub struct KernelImage {
    /// The Debian package it came from, e.g. `linux-image-6.12.43+deb12-arm64-unsigned`.
    pub package: String,
    /// Its Debian version.
    pub version: String,
    /// `boot/vmlinuz-*` or `usr/lib/modules/*/vmlinuz` (on arm64 an uncompressed `Image`).
    pub image: PathBuf,
}

/// One arm64 package on offer: name and version.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Offer {
    package: String,
    version: String,
}

/// `apt-cache`, the host's or a private suite's.
fn apt_cache(private: Option<&PrivateApt>) -> Command {
    match private {
        Some(p) => p.command("apt-cache"),
        None => apt_command("apt-cache"),
    }
}

/// The arm64 versions of `package` that `apt-cache madison` lists from one of `suites`.
fn offers(package: &str, suites: &[&str], private: Option<&PrivateApt>) -> Vec<Offer> {
    let Ok(out) = apt_cache(private)
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
fn package_names(prefix: &str, private: Option<&PrivateApt>) -> Vec<String> {
    apt_cache(private)
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
        .stdin(dpkg.stdout.take().context("dpkg-deb's stdout is piped")?)
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

/// The kernel image in an unpacked package: `boot/vmlinuz-*` (Debian up to 6.12), else
/// `usr/lib/modules/*/vmlinuz` (the `linux-binary-*` packages of 7.x).
fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    let boot = fs::read_dir(dir.join("boot")).ok().and_then(|entries| {
        entries.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
    });
    boot.or_else(|| {
        fs::read_dir(dir.join("usr/lib/modules"))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("vmlinuz")))
            .find(|p| p.is_file())
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
    let private = match kernel.private_suite() {
        Some(suite) => Some(PrivateApt::prepare(suite, cache)?),
        None => {
            apt.update()?;
            None
        }
    };
    let names = package_names(kernel.package_prefix(), private.as_ref());
    let mut candidates: Vec<Offer> = Vec::new();
    for preferred in [true, false] {
        for name in names.iter().filter(|n| kernel.matches_name(n, preferred)) {
            candidates.extend(offers(name, kernel.suites(), private.as_ref()));
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
    let deb = apt.download(
        &format!("{}:arm64", offer.package),
        &offer.version,
        cache,
        private.as_ref(),
    )?;
    let dest = cache.join(unpacked_name(&offer.package, &offer.version));
    unpack(&deb, &dest, kernel.unpacked_paths())?;
    fs::remove_file(&deb).ok();
    let image = find_vmlinuz(&dest)
        .with_context(|| format!("{} has no {}", offer.package, kernel.unpacked_paths()[0]))?;
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
        None,
    ))
    .context(
        "apt offers no busybox-static:arm64 (is `dpkg --add-architecture arm64` done and apt \
         updated?)",
    )?;
    let deb = apt.download("busybox-static:arm64", &offer.version, cache, None)?;
    let dest = cache.join(unpacked_name("busybox-static", &offer.version));
    // `*` matches `/` too: ./bin/busybox or ./usr/bin/busybox, whichever the package has.
    unpack(&deb, &dest, &["./*bin/busybox"])?;
    fs::remove_file(&deb).ok();
    find(&dest).with_context(|| format!("busybox-static {} has no busybox binary", offer.version))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let trixie = "linux-binary-7.2.12+deb13-arm64:arm64 | 7.2.12-1~bpo13+1 | http://deb.example/debian trixie-backports/main arm64 Packages\n";
        assert_eq!(
            parse_madison(trixie, &["trixie-backports"]),
            vec![Offer {
                package: "linux-binary-7.2.12+deb13-arm64".into(),
                version: "7.2.12-1~bpo13+1".into()
            }]
        );
    }

    #[test]
    fn the_newest_7_2_wins_and_its_image_is_found_where_7_x_keeps_it() {
        let offer = |v: &str| Offer {
            package: format!("linux-binary-{v}+deb13-arm64"),
            version: format!("{v}-1~bpo13+1"),
        };
        let best = newest(vec![offer("7.2.9"), offer("7.2.12"), offer("7.2.11")]).unwrap();
        assert_eq!(best.version, "7.2.12-1~bpo13+1");
        let dir = std::env::temp_dir().join(format!("vmfleet-vmlinuz-{}", std::process::id()));
        let image = dir.join("usr/lib/modules/7.2.12+deb13-arm64/vmlinuz");
        fs::create_dir_all(image.parent().unwrap()).unwrap();
        fs::write(&image, b"Image").unwrap();
        assert_eq!(find_vmlinuz(&dir), Some(image));
        fs::remove_dir_all(&dir).unwrap();
    }
}
