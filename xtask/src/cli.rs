//! `cargo xtask`'s command line, declared with clap: the tasks, their options (`--opt value` and
//! `--opt=value`), and `--help` for each.

use crate::arm64_lab::LabArgs;
use clap::{Args, Parser, Subcommand};

/// vmfleet's project chores.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "vmfleet's project chores",
    after_help = "Step lines (==> ...) and install notices go to stderr; results to stdout."
)]
pub struct Cli {
    /// Install nothing (rustup components and targets, apt packages and sources, the arm64
    /// lab's kernels); what needs a missing piece is SKIPPED (`test`) or fails, saying what.
    #[arg(long, global = true)]
    pub no_install: bool,
    #[command(subcommand)]
    pub task: Task,
}

#[derive(Debug, Subcommand)]
pub enum Task {
    /// Everything CI checks: fmt, clippy -D warnings, the source rules (tidy), all tests, the
    /// replay tests again with /dev/kvm unusable, an end-to-end live-vs-replay comparison, and
    /// the arm64 lab.
    ///
    /// Tests that cannot run here print `SKIPPED <test>: <reason>`; the last line is
    /// `N passed, N failed, N skipped` (passed does not count skipped tests). The first run
    /// installs what is missing (rustup components, the arm64 lab's packages), each announced
    /// on stderr; `--no-install` skips what would need them instead.
    Test(TestArgs),
    /// Check the workspace's source rules; with --all, cargo fmt --check and clippy too.
    ///
    /// The rules: `unsafe` only in the KVM backend (vcpu/src/hypervisor/kvm/), each unsafe
    /// block or impl there under a `// SAFETY:` comment; `cfg(target_arch ...)` only in the
    /// backend; no source file outside tests over 800 lines (but for the listed debts, which may
    /// only shrink); the vcpu crate's parts depend one way (vcpu-layers): hypervisor/ on none of
    /// model/, guests/, runtime/; model/ on the hypervisor boundary only, never its kvm/;
    /// guests/ never on runtime/ or the backend; runtime/ never on the backend. Each violation
    /// prints as `path:line: rule: what` (fmt and clippy failures name their files and lines
    /// too); the exit status is non-zero when there is any. `cargo xtask test` runs the same
    /// rules after clippy.
    Tidy(TidyArgs),
    /// Re-record fixtures/*.trace from fixtures/specs/*.toml on this host's KVM (x86 fixtures
    /// need /dev/kvm; arm64-<kernel>-<cpu> fixtures run in the arm64 lab; a spec with a
    /// .requests file beside it is recorded as a vmfleet serve session driven by those
    /// requests), then refresh the replay snapshots.
    Record(RecordArgs),
    /// Build vmfleet in release and run `vmfleet bench [ARGS]` on this host's KVM (needs
    /// /dev/kvm).
    ///
    /// Measures start throughput of 1, 10, 100 VMs x 2 vCPUs against the floor (a bare
    /// kvm-ioctls start loop), scale, supervisor memory per VM and stop latency; fails when a
    /// figure misses its target. Only vmfleet's output goes to stdout, so `--json` is JSON.
    Bench(BenchArgs),
    /// Run a static aarch64 vmfleet on real arm64 KVM (a Debian arm64 kernel at EL2 under
    /// qemu-system-aarch64 TCG) and bring back its output and files.
    ///
    /// Boots the kernel with `-M virt,virtualization=on`, so its /dev/kvm is real arm64 KVM.
    /// Results in DIR: console.log (the whole serial console), vmfleet.stdout, vmfleet.stderr,
    /// vmfleet.status (exit status), dmesg.log, initramfs.cpio.gz, and the files vmfleet wrote.
    /// The first run installs what is missing (root; apt, rustup), each announced on stderr,
    /// and caches the kernels under <target>/arm64-lab/cache. Exit status: non-zero when the
    /// lab fails or vmfleet exits non-zero.
    #[command(name = "arm64-lab")]
    Arm64Lab(LabArgs),
    /// The lab's own checks, as `cargo xtask test` runs them.
    #[command(name = "arm64-lab-selftest", hide = true)]
    Arm64LabSelftest,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Only run `cargo test -p PKG` (repeatable), counted as usual: no fmt, clippy, no-KVM
    /// run, end-to-end comparison or arm64 lab.
    #[arg(short = 'p', long = "package", value_name = "PKG")]
    pub packages: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TidyArgs {
    /// Every rule: `cargo fmt --check` and `cargo clippy --workspace --all-targets -- -D
    /// warnings` too, each run whatever the others gave, ending with the count line
    /// `N passed, N failed, N skipped`.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Only these fixtures: file stems of fixtures/specs/*.toml (e.g. `lock`,
    /// `arm64-6.12-max`); default: all.
    #[arg(value_name = "FIXTURE")]
    pub fixtures: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Passed to `vmfleet bench`: --json, --floor-only, --counts 1,10,100, --runs N, ... (see
    /// `vmfleet bench --help`).
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arm64_lab::Kernel;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("cargo-xtask").chain(args.iter().copied()))
    }

    fn lab(args: &[&str]) -> LabArgs {
        match parse(args).unwrap().task {
            Task::Arm64Lab(lab) => lab,
            other => panic!("not the lab: {other:?}"),
        }
    }

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn options_take_their_value_either_way() {
        for args in [
            &["arm64-lab", "--kernel=6.1", "--smp=2", "--cpu=neoverse-n1"][..],
            &[
                "arm64-lab",
                "--kernel",
                "6.1",
                "--smp",
                "2",
                "--cpu",
                "neoverse-n1",
            ],
        ] {
            let lab = lab(args);
            assert_eq!(lab.kernel, Kernel::V6_1, "{args:?}");
            assert_eq!((lab.smp, lab.cpu.as_str()), (2, "neoverse-n1"), "{args:?}");
        }
        let lab = lab(&["arm64-lab"]);
        assert_eq!(
            (lab.kernel, lab.cpu.as_str(), lab.smp),
            (Kernel::V6_12, "max", 1)
        );
        assert_eq!(lab.timeout, 300);
        assert!(lab.args.is_empty());
    }

    #[test]
    fn vmfleet_args_follow_the_double_dash() {
        let lab = lab(&[
            "arm64-lab",
            "--timeout=60",
            "--",
            "run",
            "arm.toml",
            "--record",
            "x",
        ]);
        assert_eq!(lab.args, ["run", "arm.toml", "--record", "x"]);
        assert_eq!(lab.timeout, 60);
    }

    #[test]
    fn bad_values_are_clap_errors() {
        for (args, kind) in [
            (&["arm64-lab", "--kernel=5.10"][..], ErrorKind::InvalidValue),
            (&["arm64-lab", "--smp", "0"], ErrorKind::ValueValidation),
            (&["arm64-lab", "--smp=9"], ErrorKind::ValueValidation),
            (&["arm64-lab", "--timeout", "0"], ErrorKind::ValueValidation),
            (
                &["arm64-lab", "--timeout", "soon"],
                ErrorKind::ValueValidation,
            ),
            (
                &["arm64-lab", "--input", "/no/such/file"],
                ErrorKind::ValueValidation,
            ),
            (&["arm64-lab", "--cpu="], ErrorKind::ValueValidation),
            (&["arm64-lab", "--kernel"], ErrorKind::InvalidValue),
            (&["arm64-lab", "--bogus"], ErrorKind::UnknownArgument),
            (&["test", "extra"], ErrorKind::UnknownArgument),
            (&["frobnicate"], ErrorKind::InvalidSubcommand),
            (&[], ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand),
        ] {
            let err = parse(args).expect_err(&format!("{args:?} parsed"));
            assert_eq!(err.kind(), kind, "{args:?}: {err}");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
        let err = parse(&["arm64-lab", "--kernel=5.10"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("6.12") && err.contains("6.1"), "{err}");
    }

    #[test]
    fn every_task_has_its_own_help() {
        for task in ["test", "record", "bench", "arm64-lab"] {
            let err = parse(&[task, "--help"]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::DisplayHelp, "{task}");
            assert!(
                err.to_string().contains(&format!("cargo xtask {task}")),
                "{task}: {err}"
            );
        }
        let help = parse(&["arm64-lab", "--help"]).unwrap_err().to_string();
        for option in [
            "--kernel",
            "--cpu",
            "--smp",
            "--out",
            "--input",
            "--timeout",
            "--no-install",
        ] {
            assert!(help.contains(option), "{option} missing from:\n{help}");
        }
        let top = parse(&["--help"]).unwrap_err().to_string();
        assert!(!top.contains("arm64-lab-selftest"), "{top}");
        assert!(matches!(
            parse(&["arm64-lab-selftest"]).unwrap().task,
            Task::Arm64LabSelftest
        ));
    }

    #[test]
    fn bench_passes_its_arguments_through() {
        let cli = parse(&["bench", "--floor-only", "--counts", "1,10,100", "--json"]).unwrap();
        match cli.task {
            Task::Bench(b) => {
                assert_eq!(b.args, ["--floor-only", "--counts", "1,10,100", "--json"])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_install_goes_before_or_after_the_task() {
        assert!(parse(&["--no-install", "test"]).unwrap().no_install);
        let cli = parse(&["test", "--no-install", "-p", "vcpu", "--package=recorder"]).unwrap();
        assert!(cli.no_install);
        match cli.task {
            Task::Test(t) => assert_eq!(t.packages, ["vcpu", "recorder"]),
            other => panic!("{other:?}"),
        }
        assert!(!parse(&["test"]).unwrap().no_install);
    }

    #[test]
    fn tidy_runs_the_source_rules_or_all() {
        for (args, all) in [(&["tidy"][..], false), (&["tidy", "--all"], true)] {
            match parse(args).unwrap().task {
                Task::Tidy(t) => assert_eq!(t.all, all, "{args:?}"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            parse(&["tidy", "--fix"]).unwrap_err().kind(),
            ErrorKind::UnknownArgument
        );
        let help = Cli::command()
            .find_subcommand_mut("tidy")
            .expect("a tidy task")
            .render_long_help()
            .to_string();
        assert!(help.contains("--all") && help.contains("SAFETY"), "{help}");
    }
}
