//! The Rust side of the arm64 lab: how `vmfleet` is compiled for aarch64 ([`RustRoute`]), and
//! getting that compiler ([`ensure_rust`]): rustup's `aarch64-unknown-linux-musl` target (route 1)
//! or, when rustup cannot add it, Debian's `rustc-web` with `libstd-rust-web-dev:arm64` (route
//! 2). Each install is announced first (`--no-install` refuses it).

use super::install::{Apt, installed_version, require_bookworm};
use crate::may_install;
use anyhow::{Result, bail};
use std::env;
use std::path::PathBuf;
use std::process::Command;

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
