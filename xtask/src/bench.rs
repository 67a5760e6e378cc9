//! `cargo xtask bench [ARGS]`: build `vmfleet` in release and run `vmfleet bench [ARGS]` on this
//! host's KVM; and `cargo xtask test`'s check that `cargo xtask bench --json` prints one JSON
//! document alone on stdout ([`bench_json_is_json`]).
//!
//! The bench is the one place xtask builds the host's `vmfleet` in release: it measures. But for
//! the check of its stdout, which measures only the floor (`--floor-only`: a bare kvm-ioctls
//! loop, no vmfleet figure, so no target a dev build could miss), `cargo xtask test` sets
//! [`BENCH_PROFILE_ENV`]`=dev`: the bench then builds and runs the dev `vmfleet` that `cargo test
//! --workspace` has just built, and the test run compiles nothing in release for the host.

use crate::{cargo, check, kvm_unusable_reason, root, step, vmfleet_dev, vmfleet_release};
use anyhow::{Context, Result, bail};
use std::env;
use std::process::Command;

/// `dev` here makes `cargo xtask bench` build and run the dev-profile `vmfleet` (see the module's
/// doc); anything else, or unset, the release one.
pub const BENCH_PROFILE_ENV: &str = "VMFLEET_XTASK_BENCH_PROFILE";

/// `cargo xtask bench [ARGS]` (see the module's doc).
pub fn bench(args: &[String]) -> Result<()> {
    if let Some(reason) = kvm_unusable_reason() {
        bail!(
            "`cargo xtask bench` measures vmfleet on this host's KVM and needs a usable /dev/kvm \
             ({reason}); run it on a machine with KVM"
        );
    }
    let dev = env::var(BENCH_PROFILE_ENV).is_ok_and(|profile| profile == "dev");
    let bin = if dev {
        // The very build of `cargo test --workspace`, which makes `vmfleet` for supervisor's
        // tests: after it, nothing to do. Not `-p supervisor` nor `--bin vmfleet`: with fewer
        // packages or no test targets, cargo resolves other features for some dependencies
        // (tracing-subscriber, serde_json) and compiles them again.
        step("cargo test --workspace --no-run (the dev vmfleet, as cargo test builds it)");
        check(
            cargo()
                .args(["test", "--locked", "--workspace", "--no-run"])
                .status(),
            "cargo test --workspace --no-run",
        )?;
        vmfleet_dev()
    } else {
        step("cargo build --release -p supervisor (vmfleet)");
        check(
            cargo()
                .args([
                    "build",
                    "--release",
                    "--locked",
                    "-p",
                    "supervisor",
                    "--bin",
                    "vmfleet",
                ])
                .status(),
            "cargo build --release",
        )?;
        vmfleet_release()
    };
    step(&format!("vmfleet bench {}", args.join(" ")));
    let status = Command::new(&bin)
        .arg("bench")
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("could not start {}", bin.display()))?;
    match status.code() {
        Some(0) => Ok(()),
        // `target_missed` in vmfleet's exit-status table (supervisor/src/exit.rs).
        Some(9) => {
            bail!("vmfleet bench: a measured figure missed its target (see its report)")
        }
        _ => bail!("vmfleet bench failed ({status}); its error is printed above"),
    }
}

/// `cargo xtask bench --json` as a script runs it (the smallest measurement: the floor, one
/// VM; with the dev build, see the module's doc): its stdout must parse as one JSON document of
/// schema `vmfleet.bench.v1`, so nothing of xtask's (step lines, cargo's output) may reach
/// stdout. The document itself is validated
/// against the schema by `supervisor/tests/json_schema.rs`.
pub fn bench_json_is_json() -> Result<()> {
    let out = cargo()
        .args(["run", "--quiet", "--locked", "-p", "xtask", "--"])
        .args([
            "bench",
            "--json",
            "--floor-only",
            "--counts",
            "1",
            "--runs",
            "1",
        ])
        .env(BENCH_PROFILE_ENV, "dev")
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("could not start cargo xtask bench")?;
    if !out.status.success() {
        bail!("cargo xtask bench --json failed ({})", out.status);
    }
    let stdout = String::from_utf8(out.stdout).context("bench --json stdout is not UTF-8")?;
    // serde_json refuses trailing characters: this is exactly one document.
    let document: serde_json::Value = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "cargo xtask bench --json printed something other than one JSON document:\n{stdout}"
        )
    })?;
    let schema = document["schema"].as_str().unwrap_or_default();
    if schema != "vmfleet.bench.v1" {
        bail!(
            "cargo xtask bench --json printed a document of schema {schema:?}, not vmfleet.bench.v1"
        );
    }
    Ok(())
}
