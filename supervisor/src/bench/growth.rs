//! The trace-growth figure of `vmfleet bench`: how fast the trace of a guest that keeps running
//! grows once its `record_exits` budget is spent, per VM-hour.
//!
//! One VM of [`VCPUS_PER_VM`](super::VCPUS_PER_VM) vCPUs running the long-running guest
//! (`probe_repeats = 0`, `record_exits =` [`GROWTH_RECORD_EXITS`]) is recorded to a trace file by
//! the real recorder, as `vmfleet run --record` records, twice: stopped [`GROWTH_SETTLE`] after its
//! start (its budget long spent), and [`GROWTH_WINDOW`] later. The difference of the two traces'
//! sizes is what the window added (everything else, the start, the budget's exits, the shutdown
//! and the end record, is in both), extrapolated to an hour. The pair is measured
//! [`GROWTH_RUNS`] times and the median taken: how a window's summaries fall into the trace's
//! compressed blocks varies by a few hundred bytes from run to run.

use super::BenchError;
use super::measure::median;
use super::record::Scratch;
use super::vmfleet::{bench_runtime, bench_trace, wrong};
use std::path::Path;
use std::time::Duration;

/// `record_exits` of the measured VM: spent within milliseconds of its start.
pub const GROWTH_RECORD_EXITS: u64 = 1000;
/// From the start to the first stop: the budget is spent well before.
pub const GROWTH_SETTLE: Duration = Duration::from_millis(300);
/// The second run runs this much longer than the first.
pub const GROWTH_WINDOW: Duration = Duration::from_secs(4);
/// Pairs of runs measured; the figure is their median.
pub const GROWTH_RUNS: usize = 3;
/// Trace growth per VM-hour beyond the budget, at most.
pub const GROWTH_TARGET_BYTES_PER_VM_HOUR: u64 = 1 << 20;

/// The spec of the measured fleet.
fn growth_spec_text(vcpus: u32) -> String {
    format!(
        "name = \"growth\"\n[[vm]]\nname = \"spin\"\nvcpus = {vcpus}\nmemory_mib = 1\n\
         probe_repeats = 0\nrecord_exits = {GROWTH_RECORD_EXITS}\n"
    )
}

/// Trace bytes added per VM-hour by a guest running past its `record_exits` budget (one VM of
/// `vcpus` vCPUs; see the module documentation).
pub fn vmfleet_trace_growth(vcpus: u32) -> Result<f64, BenchError> {
    let dir = Scratch::new("growth")?;
    let mut per_hour = Vec::with_capacity(GROWTH_RUNS);
    for _ in 0..GROWTH_RUNS {
        let short = recorded_bytes(vcpus, GROWTH_SETTLE, &dir.path().join("short.trace"))?;
        let long = recorded_bytes(
            vcpus,
            GROWTH_SETTLE + GROWTH_WINDOW,
            &dir.path().join("long.trace"),
        )?;
        let added = long.saturating_sub(short) as f64;
        per_hour.push(added * 3600.0 / GROWTH_WINDOW.as_secs_f64());
    }
    median(&per_hour).ok_or_else(|| wrong("vmfleet", 1, "no sample"))
}

/// Record the growth fleet for `running` after its start, stop it, and return the trace's size.
fn recorded_bytes(vcpus: u32, running: Duration, path: &Path) -> Result<u64, BenchError> {
    let text = growth_spec_text(vcpus);
    let spec = crate::spec::parse(&text, "the growth fleet")?;
    let kvm =
        vcpu::hypervisor::kvm::KvmHypervisor::open().map_err(|e| BenchError::Floor(e.into()))?;
    let (recorder, writer) = bench_trace(&kvm, &text, "the growth fleet", path, 1)?;
    let hv: std::sync::Arc<dyn vcpu::Hypervisor> = std::sync::Arc::new(
        recorder::RecordingHypervisor::new(Box::new(kvm), recorder.clone()),
    );
    bench_runtime()?.block_on(async {
        let fleet = crate::fleet::Fleet::new(hv, &spec.name)
            .await
            .map_err(|e| wrong("vmfleet", 1, e))?
            .with_control_log(recorder.clone());
        for vm in spec.vms.clone() {
            let name = vm.name.clone();
            fleet.create(vm).await.map_err(|e| wrong("vmfleet", 1, e))?;
            fleet
                .start(&name)
                .await
                .map_err(|e| wrong("vmfleet", 1, e))?;
        }
        tokio::time::sleep(running).await;
        let report = fleet.shutdown().await;
        let short = report
            .vms
            .iter()
            .flat_map(|vm| &vm.vcpus)
            .find(|v| v.exits_counted == 0);
        match short {
            Some(v) => Err(wrong(
                "vmfleet",
                1,
                format!(
                    "vcpu{} did not run beyond its record_exits budget ({} exits)",
                    v.id, v.exits
                ),
            )),
            None => Ok(()),
        }
    })?;
    let summary = writer
        .finish()
        .map_err(|e| wrong("vmfleet", 1, format!("finishing the trace: {e}")))?;
    Ok(summary.bytes)
}
