//! The lab's own checks for `cargo xtask test`: the way back from the guest works (a stand-in
//! program's files come back byte-exact), and `vmfleet host` on 6.12 sees real arm64 KVM.

use super::{Kernel, Lab, LabOutcome, LabRun, indent, lab_dir, print_outcome};
use anyhow::{Context, Result, bail};
use std::fs;

/// The check `cargo xtask test` makes: on 6.12 with `-cpu max`, `vmfleet host` says KVM is
/// available, the guest architecture is aarch64, KVM is the kernel's own (`kvm`), and the arm64
/// capabilities answer (PSCI 0.2: this is really arm64 KVM).
pub fn smoke_test(lab: &Lab) -> Result<LabOutcome> {
    let run = LabRun::new(Kernel::V6_12, "max");
    let outcome = lab.run(&run)?;
    print_outcome(&outcome);
    outcome.ensure_success()?;
    let lines: Vec<&str> = outcome.stdout.lines().map(str::trim_end).collect();
    // (what must be printed, whether a line only has to start with it)
    let expect = [
        ("kvm:          available (/dev/kvm, API 12)", false),
        ("arch:         aarch64", false),
        ("kernel:       6.12.", true),
        ("kvm module:   kvm", false),
        ("  KVM_CAP_ARM_PSCI_0_2 (102) = 1", false),
    ];
    for (text, prefix) in expect {
        let found = lines.iter().any(|l| {
            if prefix {
                l.starts_with(text)
            } else {
                *l == text
            }
        });
        if !found {
            bail!(
                "`vmfleet host` in the arm64 lab did not print `{}`; it printed:\n{}",
                text.trim(),
                indent(&outcome.stdout)
            );
        }
    }
    outln!("  vmfleet host: KVM available, arch aarch64, arm64 capabilities answer");
    Ok(outcome)
}

/// A stand-in for vmfleet that proves the way back: it doubles a pseudo-random input into a
/// binary file, prints on both streams and exits 3. The file must come back byte-exact, the
/// unchanged input must not come back, and the status and streams must be vmfleet's.
pub fn transport_test(lab: &Lab) -> Result<LabOutcome> {
    let dir = lab_dir().join("transport-test");
    fs::create_dir_all(&dir)?;
    let seed_path = dir.join("seed.bin");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let seed: Vec<u8> = (0..300 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(&seed_path, &seed)?;
    let program = dir.join("stand-in");
    fs::write(
        &program,
        "#!/bin/sh\n# stands in for vmfleet in the lab's transport test\n\
         cat seed.bin seed.bin > out/echo.bin\n\
         echo \"stdout: $*\"\necho 'stderr line' >&2\nexit 3\n",
    )?;
    let mut stand_in = lab.clone();
    stand_in.vmfleet = program;
    let mut run = LabRun::new(Kernel::V6_12, "max");
    run.out = Some(dir.join("out"));
    run.inputs = vec![seed_path];
    run.args = vec!["a b".into(), "it's".into()];
    let outcome = stand_in.run(&run)?;
    print_outcome(&outcome);
    let echo = outcome.out.join("out/echo.bin");
    let back = fs::read(&echo).with_context(|| format!("{} did not come back", echo.display()))?;
    let expected = [seed.as_slice(), seed.as_slice()].concat();
    if back != expected {
        bail!(
            "{} came back different from what the guest wrote",
            echo.display()
        );
    }
    if outcome.files != vec![echo.clone()] {
        bail!("expected only out/echo.bin back, got {:?}", outcome.files);
    }
    if outcome.exit_code != 3
        || outcome.stdout != "stdout: a b it's\n"
        || outcome.stderr != "stderr line\n"
    {
        bail!(
            "the stand-in's status and streams came back wrong: {} {:?} {:?}",
            outcome.exit_code,
            outcome.stdout,
            outcome.stderr
        );
    }
    outln!("  {} bytes came back byte-exact", back.len());
    Ok(outcome)
}
