//! One `[[vm]]` entry: its name, its sizes (`count`, `vcpus`, `memory_mib`, `probe_repeats`,
//! `fault_after_passes`, `record_exits`), the fleet-wide limits counting every copy, the copies' names (unique
//! across the fleet), and the [`VmSpec`] it gives, with the CPU model (`x86`, `arm64`) and the
//! after-run actions (`after_run`) each read by its own module.

use super::position::Source;
use super::raw::{RawFleet, RawVm};
use super::top::{TopLevel, check_name};
use super::{
    CpuSpec, DEFAULT_RECORD_EXITS, MAX_COUNT, MAX_FAULT_MEMORY_MIB, MAX_FLEET_VCPUS,
    MAX_MEMORY_MIB, MAX_PROBE_REPEATS, MAX_VCPUS_PER_VM, MAX_VMS, SpecError, VmSpec, after_run,
    arm64, template, x86,
};
use std::collections::HashMap;
use toml::Spanned;
use toml::de::DeTable;
use vcpu::GuestArch;
use vcpu::guests::x86::FAULT_IDT_BASE;

/// What the `[[vm]]` entries so far have taken of the fleet, for the limits and the names.
#[derive(Default)]
struct Tally {
    /// VMs so far, every copy counted.
    vms: usize,
    /// vCPUs so far, all VMs together.
    vcpus: u64,
    /// Every VM name so far, with what made it (for the duplicate-name error).
    names: HashMap<String, String>,
}

/// The sizes of one `[[vm]]` entry.
struct Sizes {
    count: u32,
    vcpus: u32,
    memory_mib: u32,
    probe_repeats: u32,
    fault_after_passes: Option<u32>,
    record_exits: Option<u64>,
}

/// Every `[[vm]]` entry, in file order, each expanded to its copies.
pub(super) fn vms(
    fleet_raw: &RawFleet,
    fleet: &TopLevel,
    doc: &DeTable<'_>,
    src: &Source<'_>,
) -> Result<Vec<VmSpec>, SpecError> {
    let raw: &[Spanned<RawVm>] = &fleet_raw.vm;
    let mut vms: Vec<VmSpec> = Vec::with_capacity(raw.len());
    let mut tally = Tally::default();
    for (index, raw_vm) in raw.iter().enumerate() {
        let vm = raw_vm.get_ref();
        let name = vm.name.get_ref();
        check_name(name).map_err(|m| src.at(Some(vm.name.span()), format!("VM name: {m}")))?;
        let sizes = sizes(vm, fleet.arch, src)?;
        limits(vm, &sizes, &mut tally, src)?;
        let copies = copies(vm, sizes.count, &mut tally, src)?;
        let template = template::template(vm, fleet_raw, fleet, src)?;
        let (cpu, arm64) = match &template {
            Some(t) => (
                CpuSpec {
                    hide: t.x86.hide.clone(),
                    show: t.x86.show.clone(),
                    cpuid: t.x86.cpuid.clone(),
                },
                (fleet.arch == GuestArch::Aarch64)
                    .then(|| arm64::with_fleet_policy(t.arm64.clone(), fleet.unknown_registers)),
            ),
            None => (
                CpuSpec {
                    hide: x86::cpu(vm, fleet.arch, src)?,
                    ..CpuSpec::default()
                },
                arm64::model(vm, index, fleet, doc, src)?,
            ),
        };
        let after_run = after_run::actions(vm, sizes.vcpus, fleet.arch, src)?;
        let vm_spec = VmSpec {
            name: name.clone(),
            vcpus: sizes.vcpus,
            memory_mib: sizes.memory_mib,
            probe_repeats: sizes.probe_repeats,
            fault_after_passes: sizes.fault_after_passes,
            record_exits: sizes.record_exits,
            cpu,
            arm64,
            template: template.map(|t| t.name),
            cross_check: fleet.cross_check,
            after_run,
        };
        vms.extend(copies.into_iter().map(|copy| VmSpec {
            name: copy,
            ..vm_spec.clone()
        }));
    }
    Ok(vms)
}

/// `count`, `vcpus`, `memory_mib`, `probe_repeats` and `fault_after_passes`, each within its
/// bounds, and a deliberate fault that can happen.
fn sizes(vm: &RawVm, arch: GuestArch, src: &Source<'_>) -> Result<Sizes, SpecError> {
    let count = bounded(&vm.count, 1, 1, u64::from(MAX_COUNT), "count", src)?;
    let vcpus = bounded(&vm.vcpus, 1, 1, u64::from(MAX_VCPUS_PER_VM), "vcpus", src)?;
    let memory_mib = bounded(
        &vm.memory_mib,
        1,
        1,
        u64::from(MAX_MEMORY_MIB),
        "memory_mib",
        src,
    )?;
    let probe_repeats = bounded(
        &vm.probe_repeats,
        1,
        0,
        u64::from(MAX_PROBE_REPEATS),
        "probe_repeats",
        src,
    )
    .map_err(|mut e| {
        e.message += " (0 = repeat forever)";
        e
    })?;
    let fault_after_passes = fault_after_passes(vm, arch, probe_repeats, memory_mib, src)?;
    Ok(Sizes {
        count,
        vcpus,
        memory_mib,
        probe_repeats,
        fault_after_passes,
        record_exits: record_exits(vm, probe_repeats, src)?,
    })
}

/// `record_exits`: an integer >= 1, or `"all"` (`None`: no limit). Default: for a guest that
/// repeats forever (`probe_repeats = 0`) [`DEFAULT_RECORD_EXITS`]; a guest with a number of passes
/// is recorded whole (its passes bound its exits, and its report stays complete).
fn record_exits(
    vm: &RawVm,
    probe_repeats: u32,
    src: &Source<'_>,
) -> Result<Option<u64>, SpecError> {
    let Some(value) = &vm.record_exits else {
        return Ok((probe_repeats == 0).then_some(DEFAULT_RECORD_EXITS));
    };
    let refuse = |what: String| {
        src.at(
            Some(value.span()),
            format!(
                "`record_exits` is {what}; it must be an integer >= 1 (exits per vCPU decoded and \
                 recorded one by one) or \"all\" (no limit)"
            ),
        )
    };
    match value.get_ref() {
        toml::Value::Integer(n) => match u64::try_from(*n) {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(refuse(n.to_string())),
        },
        toml::Value::String(s) if s == "all" => Ok(None),
        toml::Value::String(s) => Err(refuse(format!("{s:?}"))),
        other => Err(refuse(format!("a {}", other.type_str()))),
    }
}

/// `fault_after_passes`: x86 only, within the passes the guest makes, and with guest memory
/// below the IDT the fault points at.
fn fault_after_passes(
    vm: &RawVm,
    arch: GuestArch,
    probe_repeats: u32,
    memory_mib: u32,
    src: &Source<'_>,
) -> Result<Option<u32>, SpecError> {
    let Some(f) = &vm.fault_after_passes else {
        return Ok(None);
    };
    if arch == GuestArch::Aarch64 {
        return Err(src.at(
            Some(f.span()),
            "`fault_after_passes` is for the x86 guest; the arm64 guest has no \
             deliberate fault"
                .into(),
        ));
    }
    let passes = bounded(
        &vm.fault_after_passes,
        1,
        1,
        u64::from(MAX_PROBE_REPEATS),
        "fault_after_passes",
        src,
    )?;
    if probe_repeats != 0 && passes > probe_repeats {
        return Err(src.at(
            Some(f.span()),
            format!(
                "`fault_after_passes = {passes}` never happens: the guest halts after \
                 `probe_repeats = {probe_repeats}` pass(es); raise `probe_repeats`, or \
                 set it to 0 (repeat forever)"
            ),
        ));
    }
    if memory_mib > MAX_FAULT_MEMORY_MIB {
        return Err(src.at(
            Some(f.span()),
            format!(
                "`fault_after_passes` needs `memory_mib` <= {MAX_FAULT_MEMORY_MIB} \
                 (it is {memory_mib}): the guest's deliberate triple fault points its \
                 IDT at {FAULT_IDT_BASE:#x}, which must not be guest memory"
            ),
        ));
    }
    Ok(Some(passes))
}

/// The fleet-wide limits, counting every copy: at most [`MAX_VMS`] VMs and [`MAX_FLEET_VCPUS`]
/// vCPUs.
fn limits(vm: &RawVm, sizes: &Sizes, tally: &mut Tally, src: &Source<'_>) -> Result<(), SpecError> {
    let (name, count, vcpus) = (vm.name.get_ref(), sizes.count, sizes.vcpus);
    let total_vms = tally.vms + count as usize;
    let count_or_name = vm
        .count
        .as_ref()
        .map_or_else(|| vm.name.span(), |c| c.span());
    if total_vms > MAX_VMS {
        return Err(src.at(
            Some(count_or_name),
            format!(
                "the fleet has {total_vms} VMs with `{name}` ({count} of them); at most \
                 {MAX_VMS} VMs in a fleet"
            ),
        ));
    }
    tally.vms = total_vms;
    tally.vcpus += u64::from(count) * u64::from(vcpus);
    let fleet_vcpus = tally.vcpus;
    if fleet_vcpus > MAX_FLEET_VCPUS {
        let span = vm
            .vcpus
            .as_ref()
            .map_or(count_or_name.clone(), |v| v.span());
        return Err(src.at(
            Some(span),
            format!(
                "the fleet has {fleet_vcpus} vCPUs with `{name}` ({count} VM(s) x {vcpus} \
                 vCPU(s)); at most {MAX_FLEET_VCPUS} vCPUs in a fleet"
            ),
        ));
    }
    Ok(())
}

/// The names of the copies (`name`, or `name-0` .. `name-{count-1}`), unique across the fleet.
fn copies(
    vm: &RawVm,
    count: u32,
    tally: &mut Tally,
    src: &Source<'_>,
) -> Result<Vec<String>, SpecError> {
    let name = vm.name.get_ref();
    let name_line = src.line(vm.name.span().start);
    let copies: Vec<String> = if count == 1 {
        vec![name.clone()]
    } else {
        (0..count).map(|i| format!("{name}-{i}")).collect()
    };
    for copy in &copies {
        check_name(copy).map_err(|m| {
            src.at(
                Some(vm.name.span()),
                format!("VM name with `count = {count}`: {m}"),
            )
        })?;
        let made_here = if count == 1 {
            format!("line {name_line} names a VM `{copy}`")
        } else {
            format!("`count = {count}` on `{name}` at line {name_line} makes a VM `{copy}`")
        };
        if let Some(first) = tally.names.get(copy) {
            return Err(src.at(
                Some(vm.name.span()),
                format!("duplicate VM name `{copy}`: {made_here}, but {first} already"),
            ));
        }
        tally.names.insert(copy.clone(), made_here);
    }
    Ok(copies)
}

/// An integer key within `min..=max` (`default` when absent).
fn bounded(
    value: &Option<Spanned<i64>>,
    default: u32,
    min: u64,
    max: u64,
    key: &str,
    src: &Source<'_>,
) -> Result<u32, SpecError> {
    let Some(v) = value else { return Ok(default) };
    let n = *v.get_ref();
    if n < min as i64 || n > max as i64 {
        return Err(src.at(
            Some(v.span()),
            format!("`{key}` is {n}; it must be between {min} and {max}"),
        ));
    }
    Ok(n as u32)
}
