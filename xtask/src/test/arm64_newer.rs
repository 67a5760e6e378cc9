//! `cargo xtask test`'s arm64 lab step on a newer kernel (Debian's 7.2 from trixie-backports):
//! the `arm64-7.2-max+model` fixture's fleet recorded live there and replayed here byte for byte,
//! and `vmfleet host --fingerprint` measured live, checked for what 7.2 answers (capability 239
//! offered, every kernel probe's answer) and used as the model that judges the live trace
//! (`vmfleet replay --model`: no call may differ). The 6.12 steps are in `arm64` and `test.rs`.

use crate::{arm64_lab, target_dir, vmfleet_dev};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::fs;
use std::process::{Command, Stdio};

/// The fixture whose fleet the lab runs live on 7.2.
const FIXTURE: &str = "arm64-7.2-max+model";

/// What Linux 7.2 answers each kernel probe (measured in the lab, `-cpu max`): EL1 = 0 refused
/// (the floor is enforced), DebugVer = 5 refused, PMUVer = 0xF stored as 0.
fn probes_on_7_2() -> Value {
    serde_json::json!({
        "el_floor": true,
        "debug_ver_floor": true,
        "pmu_imp_def": "reads-as-not-implemented"
    })
}

/// What is wrong with a live 7.2 fingerprint: its probes not as 7.2 answers them, or no
/// capability 239 (`KVM_CAP_ARM_WRITABLE_IMP_ID_REGS`).
fn fingerprint_problems(live: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let probes = &live["arm64"]["kernel_probes"];
    if *probes != probes_on_7_2() {
        problems.push(format!(
            "kernel probes {probes}, expected {}",
            probes_on_7_2()
        ));
    }
    let cap_239 = live["capabilities"].as_array().and_then(|caps| {
        caps.iter()
            .find(|c| c["number"] == 239)
            .map(|c| c["value"].clone())
    });
    if cap_239 != Some(Value::from(1)) {
        problems.push(format!(
            "capability 239 (KVM_CAP_ARM_WRITABLE_IMP_ID_REGS) is {}, expected 1",
            cap_239.map_or("absent".to_string(), |v| v.to_string())
        ));
    }
    problems
}

/// Record the 7.2 model fixture's fleet live on 7.2 `-cpu max`, replay it here (transcripts
/// identical), measure `host --fingerprint --json` live (probes and cap 239 as 7.2 answers), and
/// judge the live trace with the model of that fingerprint (no call differs).
pub fn arm64_newer_kernel_fleet_replays_here(lab: &arm64_lab::Lab) -> Result<()> {
    let replayed = super::lab_fleet_replays_here(
        lab,
        arm64_lab::Kernel::V7_2,
        FIXTURE,
        "xtask-test-7.2-fleet",
    )?;
    let (outcome, trace) = (replayed.outcome, replayed.trace);

    let mut run = arm64_lab::LabRun::new(arm64_lab::Kernel::V7_2, "max");
    run.out = Some(target_dir().join("arm64-lab/xtask-test-7.2-fingerprint"));
    run.args = ["host", "--fingerprint", "--json"]
        .map(String::from)
        .to_vec();
    let fp = lab.run(&run)?;
    fp.ensure_success()?;
    let document: Value = serde_json::from_str(&fp.stdout).with_context(|| {
        format!(
            "`vmfleet host --fingerprint --json` on 7.2 printed something other than one JSON \
             document (in {})",
            fp.out.join("vmfleet.stdout").display()
        )
    })?;
    let saved = fp.out.join("live-fingerprint.json");
    fs::write(&saved, &fp.stdout).with_context(|| format!("writing {}", saved.display()))?;
    let problems = fingerprint_problems(&document);
    if !problems.is_empty() {
        bail!(
            "the live 7.2 fingerprint ({}) is not what 7.2 answers: {}",
            saved.display(),
            problems.join("; ")
        );
    }
    let judged = Command::new(vmfleet_dev())
        .arg("replay")
        .arg("--model")
        .arg(&saved)
        .arg(&trace)
        .stderr(Stdio::inherit())
        .output()
        .context("running vmfleet replay --model")?;
    let report = String::from_utf8_lossy(&judged.stdout);
    if !judged.status.success() {
        bail!(
            "vmfleet replay --model {} {}: some recorded call differs from the model's \
             prediction ({}):\n{}",
            saved.display(),
            trace.display(),
            judged.status,
            report.trim_end()
        );
    }
    outln!(
        "  {FIXTURE} on {}: live and replayed transcripts identical; live fingerprint: probes \
         {}, cap 239 offered; {}",
        outcome.kernel_release,
        document["arm64"]["kernel_probes"],
        report.trim_end()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::root;

    /// This step alone, on the real lab (downloads the 7.2 kernel once, boots QEMU twice; needs
    /// the dev `vmfleet`, e.g. from `cargo build -p supervisor`): `cargo test -p xtask --
    /// --ignored the_newer_kernel_step_passes`.
    #[test]
    #[ignore = "boots the arm64 lab"]
    fn the_newer_kernel_step_passes() {
        let lab = arm64_lab::Lab::prepare(&[arm64_lab::Kernel::V7_2]).unwrap();
        arm64_newer_kernel_fleet_replays_here(&lab).unwrap();
    }

    #[test]
    fn a_fingerprint_without_7_2s_answers_is_reported() {
        let saved = root().join("fixtures/fingerprints/arm64-7.2-max.host.json");
        let mut doc: Value = serde_json::from_str(&fs::read_to_string(saved).unwrap()).unwrap();
        assert!(fingerprint_problems(&doc).is_empty());
        doc["arm64"]["kernel_probes"]["el_floor"] = Value::Bool(false);
        for cap in doc["capabilities"].as_array_mut().unwrap() {
            if cap["number"] == 239 {
                cap["value"] = Value::from(0);
            }
        }
        let problems = fingerprint_problems(&doc);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[1].contains("capability 239"));
    }
}
