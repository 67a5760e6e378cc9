//! The guest kernels the arm64 lab boots ([`Kernel`]): their `--kernel` labels, and where their
//! Debian packages are (name patterns, suites, what is unpacked). `packages` fetches them.

use anyhow::{Context, Result};

/// The guest kernels the lab boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernel {
    /// Debian's 6.12 from bookworm-backports: writable ID registers, writable-mask ioctl.
    #[value(name = "6.12")]
    V6_12,
    /// Debian bookworm's own 6.1: the old-kernel behaviour.
    #[value(name = "6.1")]
    V6_1,
    /// Debian's 7.2 from trixie-backports (through a private apt state, see `private_apt`):
    /// writable MIDR/REVIDR/AIDR (cap 239), the EL0/EL1 floor, PSCI 1.3, `VENDOR_HYP_BMAP_2`.
    #[value(name = "7.2")]
    V7_2,
}

impl Kernel {
    pub const ALL: [Kernel; 3] = [Kernel::V6_12, Kernel::V6_1, Kernel::V7_2];

    pub fn parse(text: &str) -> Result<Kernel> {
        Kernel::ALL
            .into_iter()
            .find(|k| k.label() == text)
            .with_context(|| format!("unknown kernel `{text}`: the lab has 6.12, 6.1 and 7.2"))
    }

    /// `6.12`, `6.1` or `7.2`.
    pub fn label(self) -> &'static str {
        match self {
            Kernel::V6_12 => "6.12",
            Kernel::V6_1 => "6.1",
            Kernel::V7_2 => "7.2",
        }
    }

    /// What `apt-cache pkgnames` is asked for.
    pub(super) fn package_prefix(self) -> &'static str {
        match self {
            Kernel::V6_12 => "linux-image-6.12.",
            Kernel::V6_1 => "linux-image-6.1.",
            // 7.x splits the image out of `linux-image-*` (now dependencies only).
            Kernel::V7_2 => "linux-binary-7.2.",
        }
    }

    /// The packages meant, for error messages.
    pub(super) fn package_pattern(self) -> &'static str {
        match self {
            Kernel::V6_12 => "linux-image-6.12.*+deb12-arm64-unsigned",
            Kernel::V6_1 => {
                "linux-image-6.1.*-arm64-unsigned (or the signed linux-image-6.1.*-arm64)"
            }
            Kernel::V7_2 => "linux-binary-7.2.*+deb13-arm64 (the image of linux-image-7.2.*)",
        }
    }

    /// Where the packages come from.
    pub(super) fn suites(self) -> &'static [&'static str] {
        match self {
            Kernel::V6_12 => &["bookworm-backports"],
            Kernel::V6_1 => &["bookworm", "bookworm-security", "bookworm-updates"],
            Kernel::V7_2 => &["trixie-backports"],
        }
    }

    /// The suite the host's apt must not know, looked up with a private apt state instead.
    pub(super) fn private_suite(self) -> Option<&'static str> {
        match self {
            Kernel::V6_12 | Kernel::V6_1 => None,
            Kernel::V7_2 => Some("trixie-backports"),
        }
    }

    /// What is unpacked from the package: the image first.
    pub(super) fn unpacked_paths(self) -> &'static [&'static str] {
        match self {
            Kernel::V6_12 | Kernel::V6_1 => &["./boot/vmlinuz-*", "./boot/config-*"],
            Kernel::V7_2 => &["./usr/lib/modules/*/vmlinuz"],
        }
    }

    /// Whether `name` is this kernel's generic arm64 image package: the unsigned one when
    /// `unsigned`, else the signed one (no cloud, rt or debug flavours).
    pub(super) fn matches_name(self, name: &str, unsigned: bool) -> bool {
        let Some(rest) = name.strip_prefix(self.package_prefix()) else {
            return false;
        };
        let rest = match (unsigned, rest.strip_suffix("-unsigned")) {
            (true, Some(rest)) => rest,
            (false, None) => rest,
            _ => return false,
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        match self {
            // 6.12.43+deb12-arm64
            Kernel::V6_12 => rest.strip_suffix("+deb12-arm64").is_some_and(digits),
            // 7.2.12+deb13-arm64
            Kernel::V7_2 => rest.strip_suffix("+deb13-arm64").is_some_and(digits),
            // 6.1.0-37-arm64
            Kernel::V6_1 => rest
                .strip_suffix("-arm64")
                .and_then(|v| v.split_once('-'))
                .is_some_and(|(patch, abi)| digits(patch) && digits(abi)),
        }
    }

    pub(super) fn matches_package(self, name: &str) -> bool {
        self.matches_name(name, true) || self.matches_name(name, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_packages_are_recognised() {
        let k612 = Kernel::V6_12;
        assert!(k612.matches_name("linux-image-6.12.95+deb12-arm64-unsigned", true));
        assert!(k612.matches_name("linux-image-6.12.95+deb12-arm64", false));
        assert!(!k612.matches_name("linux-image-6.12.95+deb12-arm64", true));
        assert!(!k612.matches_name("linux-image-6.12.95+deb12-cloud-arm64-unsigned", true));
        assert!(!k612.matches_name("linux-image-6.12.95+deb12-rt-arm64", false));
        let k61 = Kernel::V6_1;
        assert!(k61.matches_name("linux-image-6.1.0-56-arm64-unsigned", true));
        assert!(k61.matches_name("linux-image-6.1.0-56-arm64", false));
        assert!(!k61.matches_name("linux-image-6.1.0-56-cloud-arm64", false));
        assert!(!k61.matches_name("linux-image-6.12.95+deb12-arm64-unsigned", true));
        assert!(!k61.matches_name("linux-image-6.1.0-56-arm64-dbg", false));
        assert_eq!(Kernel::parse("6.1").unwrap(), Kernel::V6_1);
        assert!(Kernel::parse("5.10").is_err());
        let k72 = Kernel::V7_2;
        assert!(k72.matches_name("linux-binary-7.2.12+deb13-arm64", false));
        assert!(!k72.matches_name("linux-binary-7.2.12+deb13-arm64", true));
        assert!(!k72.matches_name("linux-binary-7.2.12+deb13-arm64-16k", false));
        assert!(!k72.matches_name("linux-binary-7.2.12+deb13-arm64-dbg", false));
        assert!(!k72.matches_name("linux-binary-7.2.12+deb13-cloud-arm64", false));
        assert!(!k72.matches_name("linux-binary-7.0.13+deb13-arm64", false));
        // 7.x's linux-image-* holds no image, only dependencies.
        assert!(!k72.matches_name("linux-image-7.2.12+deb13-arm64", false));
        assert!(k72.matches_package("linux-binary-7.2.12+deb13-arm64"));
        assert!(!k612.matches_package("linux-binary-7.2.12+deb13-arm64"));
        assert_eq!(Kernel::parse("7.2").unwrap(), Kernel::V7_2);
        assert_eq!(k72.private_suite(), Some("trixie-backports"));
        assert_eq!(k612.private_suite(), None);
        assert_eq!(k61.private_suite(), None);
    }
}
