//! `vmfleet baseline`: the most capable CPU template every given host can run, field by field by
//! each field's own rule, with the hosts that limit each choice. From the hosts' facts alone.
//!
//! - x86, every register that holds named features (and that every host's supported table has):
//!   a bit is 1 when every host's guest gets it (the supported table with its measured rewrites),
//!   else 0, limited by the hosts that lack it. A bit one host forces to 1 (a nested PVM host
//!   rewrites leaves 0x1, 0x7, 0xD) and another cannot give has no value that holds on every host:
//!   it is left to each host and named. Bits the guest's own state drives (OSXSAVE, APIC, OSPKE)
//!   and the HTT bit vmfleet sets per VM are left alone.
//! - arm64, for the VCPU_INIT feature set every host measured: every field of every ID register
//!   all hosts list, by its safe type: lower-safe the minimum (signed fields compare signed),
//!   higher-safe and higher-or-zero-safe the maximum, exact and untyped fields equal or left to
//!   each host and named. Hypercall services: the intersection; PSCI version: the lowest. Other
//!   CPU-model registers (identification, cache description, SMCCC workarounds) that differ are
//!   named and left to each host. Registers only some hosts list are named.
//!
//! Then every host checks the template ([`check_template`]): a field a host's kernel refuses to
//! change (no writable mask, an older kernel) is left to each host, named with that host's rule,
//! until every host accepts. So what `baseline` writes, `check` accepts, by construction.
//!
//! Must not: do I/O (it is part of [`crate::model`]).

use super::HostFacts;
use super::arm64::init_facts;
use super::migrate::x86_guest_view;
use super::template::{Forced, bit_name, check_template, forced_in, is_feature_register};
use crate::hypervisor::cpuid::{CpuidReg, CpuidTable};
use crate::hypervisor::ids::GuestArch;
use crate::model::arm64::fields::{self, FieldCheck, FieldRef, SafeType};
use crate::model::arm64::firmware::{FirmwareRegister, HypercallService, PsciVersion};
use crate::model::arm64::sysreg::SysReg;
use crate::model::arm64::{Arm64ModelSpec, reg_id};
use crate::model::lock_policy;
use crate::model::template::CpuTemplate;
use crate::model::tristate::TriState;
use crate::model::x86::catalog::CATALOG;
use crate::model::x86::drift::runtime_mask;
use crate::model::x86::model::{CpuidBits, X86CpuModel};
use std::collections::{BTreeMap, BTreeSet};

/// One choice of the baseline, or one thing it had to leave to each host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The bit, field, service or register, by name.
    pub what: String,
    /// The value the template gives it (`None`: left to each host).
    pub value: Option<u64>,
    /// The rule that chose it, or why no value holds everywhere.
    pub rule: String,
    /// The hosts (indexes into the input) that limit it: those whose own value is the choice
    /// while another host's is more capable, or those that disagree.
    pub hosts: Vec<usize>,
}

/// What `baseline` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Baseline {
    /// The template.
    pub template: CpuTemplate,
    /// Each field or bit some host could give more of, and who limits it.
    pub limited: Vec<Limit>,
    /// What no value makes the same on every host: left out of the template, each host keeps its
    /// own (a guest moving between them can see it change).
    pub not_uniform: Vec<Limit>,
    /// Registers (or CPUID leaves) only some hosts have: left out of the template.
    pub only_some: Vec<Limit>,
}

/// Why no baseline can be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BaselineError {
    /// No host was given.
    #[error("a baseline needs at least one host")]
    NoHosts,
    /// Hosts of both architectures.
    #[error(
        "host {first} runs {first_arch} guests and host {other} runs {other_arch} guests: a \
         template is for one architecture, so make one baseline per architecture"
    )]
    MixedArch {
        /// The first host's index.
        first: usize,
        /// Its architecture.
        first_arch: GuestArch,
        /// The first host of the other architecture.
        other: usize,
        /// Its architecture.
        other_arch: GuestArch,
    },
    /// A host lacks what a baseline needs.
    #[error("host {host} has {what}")]
    Missing {
        /// The host's index.
        host: usize,
        /// What it lacks, in words.
        what: String,
    },
}

/// The baseline of `hosts`, named `name`.
pub fn baseline(hosts: &[&HostFacts], name: &str) -> Result<Baseline, BaselineError> {
    let first = hosts.first().ok_or(BaselineError::NoHosts)?;
    if let Some(other) = hosts.iter().position(|h| h.arch != first.arch) {
        return Err(BaselineError::MixedArch {
            first: 0,
            first_arch: first.arch,
            other,
            other_arch: hosts[other].arch,
        });
    }
    let mut out = Baseline {
        template: CpuTemplate {
            name: name.to_string(),
            description: Some(format!(
                "vmfleet baseline of {} host(s): the most every one of them can give",
                hosts.len()
            )),
            arch: first.arch,
            x86: X86CpuModel::default(),
            arm64: Arm64ModelSpec::default(),
            firecracker: Default::default(),
        },
        limited: Vec::new(),
        not_uniform: Vec::new(),
        only_some: Vec::new(),
    };
    match first.arch {
        GuestArch::X86_64 => x86(hosts, &mut out)?,
        GuestArch::Aarch64 => arm64(hosts, &mut out)?,
    }
    settle(hosts, &mut out);
    Ok(out)
}

/// The hosts whose value is `pick`, when some other host's is not.
fn limiting(values: &[u64], pick: u64) -> Vec<usize> {
    if values.iter().all(|&v| v == pick) {
        return Vec::new();
    }
    (0..values.len()).filter(|&i| values[i] == pick).collect()
}

fn x86(hosts: &[&HostFacts], out: &mut Baseline) -> Result<(), BaselineError> {
    let views: Vec<CpuidTable> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            x86_guest_view(h).ok_or(BaselineError::Missing {
                host: i,
                what: "no supported CPUID table".into(),
            })
        })
        .collect::<Result<_, _>>()?;
    let registers: BTreeSet<(u32, u32, CpuidReg)> =
        CATALOG.iter().map(|f| (f.leaf, f.subleaf, f.reg)).collect();
    for (leaf, subleaf, reg) in registers {
        let entries: Vec<_> = views.iter().map(|v| v.lookup(leaf, subleaf)).collect();
        let present: Vec<usize> = (0..hosts.len()).filter(|&i| entries[i].is_some()).collect();
        if present.is_empty() {
            continue;
        }
        let position = crate::model::x86::catalog::position(leaf, subleaf, reg);
        if present.len() < hosts.len() {
            out.only_some.push(Limit {
                what: format!("CPUID leaf {leaf:#x} subleaf {subleaf} ({position})"),
                value: None,
                rule: "only some hosts have the leaf: left out".into(),
                hosts: present,
            });
            continue;
        }
        let entries: Vec<_> = entries.into_iter().flatten().collect();
        // Bits the guest's state or vmfleet's per-VM topology drives.
        let mut skip = entries.iter().fold(0u32, |m, e| m | runtime_mask(e, reg));
        if (leaf, subleaf, reg) == (1, 0, CpuidReg::Edx) {
            skip |= 1 << 28;
        }
        let forced: Vec<Forced> = hosts
            .iter()
            .map(|h| forced_in(h, leaf, subleaf, reg))
            .collect();
        let mut bits = TriState::host(32);
        for bit in (0..32).filter(|b| skip & (1 << b) == 0) {
            let values: Vec<u64> = entries
                .iter()
                .map(|e| u64::from(e.reg(reg) >> bit & 1))
                .collect();
            let forced_on: Vec<usize> = (0..hosts.len())
                .filter(|&i| forced[i].bit(bit) == Some(true))
                .collect();
            let all = values.iter().all(|&v| v == 1);
            if !all && !forced_on.is_empty() {
                out.not_uniform.push(Limit {
                    what: bit_name(leaf, subleaf, reg, bit),
                    value: None,
                    rule: "some hosts force it on after KVM_SET_CPUID2 and others cannot give it: \
                           no value holds on every host"
                        .into(),
                    hosts: (0..hosts.len())
                        .filter(|&i| values[i] == 0)
                        .chain(forced_on)
                        .collect(),
                });
                continue;
            }
            bits.set_bit(bit, all);
            let lacking = limiting(&values, u64::from(all));
            if !lacking.is_empty() && is_feature_register(leaf, subleaf, reg) {
                out.limited.push(Limit {
                    what: bit_name(leaf, subleaf, reg, bit),
                    value: Some(0),
                    rule: "feature bits: the intersection (a guest must not see a feature a host \
                           lacks)"
                        .into(),
                    hosts: lacking,
                });
            }
        }
        if !bits.is_host() {
            out.template.x86.cpuid.push(CpuidBits {
                leaf,
                subleaf,
                register: reg,
                bits,
            });
        }
    }
    Ok(())
}

/// A field's raw value as a number to compare (signed fields sign-extended).
fn ordered(field: &fields::IdField, raw: u64) -> i64 {
    let width = u32::from(field.width);
    if field.signed && width < 64 && raw >> (width - 1) & 1 == 1 {
        raw as i64 - (1i64 << width)
    } else {
        raw as i64
    }
}

fn arm64(hosts: &[&HostFacts], out: &mut Baseline) -> Result<(), BaselineError> {
    let sets = |h: &HostFacts| -> Vec<u32> {
        h.arm64
            .init_features
            .into_iter()
            .chain(h.arm64.other_inits.iter().map(|o| o.init_features))
            .collect()
    };
    let init = sets(hosts[0])
        .into_iter()
        .find(|set| hosts.iter().all(|h| sets(h).contains(set)))
        .ok_or(BaselineError::Missing {
            host: 0,
            what: "no VCPU_INIT feature set that every host measured".into(),
        })?;
    let facts: Vec<(BTreeSet<u64>, &BTreeMap<u64, u64>)> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let (list, values) = init_facts(h, init).ok_or(BaselineError::Missing {
                host: i,
                what: format!("no vCPU initialised with features {init:#x}"),
            })?;
            let list = match list {
                Some(list) => list.iter().copied().collect(),
                None => values.keys().copied().collect(),
            };
            Ok((list, values))
        })
        .collect::<Result<_, _>>()?;
    let model = &mut out.template.arm64;
    model.features = super::arm64::features_of(init);
    let all_ids: BTreeSet<u64> = facts
        .iter()
        .flat_map(|(list, _)| list.iter().copied())
        .filter(|&id| lock_policy::is_model_register(GuestArch::Aarch64, id))
        .collect();
    for id in all_ids {
        let listing: Vec<usize> = (0..hosts.len())
            .filter(|&i| facts[i].0.contains(&id))
            .collect();
        if listing.len() < hosts.len() {
            out.only_some.push(Limit {
                what: reg_id::describe(id),
                value: None,
                rule: "only some hosts list it: left out (a guest moving to a host without it \
                       loses it)"
                    .into(),
                hosts: listing,
            });
            continue;
        }
        let Some(values) = facts
            .iter()
            .map(|(_, v)| v.get(&id).copied())
            .collect::<Option<Vec<u64>>>()
        else {
            continue;
        };
        let table = SysReg::from_kvm_reg_id(id).ok().and_then(fields::table_for);
        if let Some(table) = table {
            for field in table.fields {
                let Some(field_ref) = fields::field_of(table.register, field.name) else {
                    continue;
                };
                let raws: Vec<u64> = values.iter().map(|&v| field.raw(v)).collect();
                let pick = pick_field(field, &raws);
                match pick {
                    Some((raw, rule)) => {
                        let _ = model.id_registers.set(field_ref, raw);
                        let lacking = limiting(&raws, raw);
                        if !lacking.is_empty() {
                            out.limited.push(Limit {
                                what: field_ref.full_name(),
                                value: Some(raw),
                                rule,
                                hosts: lacking,
                            });
                        }
                    }
                    None => out.not_uniform.push(not_uniform_field(field_ref, &raws)),
                }
            }
            continue;
        }
        firmware_or_other(
            id,
            &values,
            model,
            out_lists(&mut out.limited, &mut out.not_uniform),
        );
    }
    Ok(())
}

/// The two lists a firmware register's choice may add to.
struct Lists<'a> {
    limited: &'a mut Vec<Limit>,
    not_uniform: &'a mut Vec<Limit>,
}

fn out_lists<'a>(limited: &'a mut Vec<Limit>, not_uniform: &'a mut Vec<Limit>) -> Lists<'a> {
    Lists {
        limited,
        not_uniform,
    }
}

/// The value of a field every host accepts, by its safe type, and the rule; `None` when only
/// equal values would do and they differ.
fn pick_field(field: &fields::IdField, raws: &[u64]) -> Option<(u64, String)> {
    let first = raws[0];
    if raws.iter().all(|&r| r == first) {
        return Some((first, "the same on every host".into()));
    }
    let by = |f: fn(i64, i64) -> bool| {
        raws.iter().copied().reduce(|a, b| {
            if f(ordered(field, b), ordered(field, a)) {
                b
            } else {
                a
            }
        })
    };
    match field.check {
        FieldCheck::Typed {
            safe: SafeType::LowerSafe,
            ..
        } => by(|b, a| b < a).map(|v| (v, "lower-safe: the lowest host's value".into())),
        FieldCheck::Typed {
            safe: SafeType::HigherSafe | SafeType::HigherOrZeroSafe,
            ..
        } => by(|b, a| b > a).map(|v| (v, "higher-safe: the highest host's value".into())),
        _ => None,
    }
}

fn not_uniform_field(field: FieldRef, raws: &[u64]) -> Limit {
    let kind = match field.field().check {
        FieldCheck::Typed { safe, .. } => format!("an {safe} field"),
        FieldCheck::NoKernelEntry => "a field the kernel has no entry for".into(),
        FieldCheck::Untyped => "a field whose type vmfleet does not model".into(),
        FieldCheck::WholeRegister => "a field of a register judged whole".into(),
    };
    let values: Vec<String> = raws.iter().map(|r| format!("{r:#x}")).collect();
    Limit {
        what: field.full_name(),
        value: None,
        rule: format!(
            "{kind} must equal each host's own value, and the hosts differ ({}): left to each host",
            values.join(", ")
        ),
        hosts: (0..raws.len()).collect(),
    }
}

/// A CPU-model register without a field table: hypercall bitmaps (the intersection, by
/// service), the PSCI version (the lowest), anything else named when the hosts differ.
fn firmware_or_other(id: u64, values: &[u64], model: &mut Arm64ModelSpec, lists: Lists<'_>) {
    let register = FirmwareRegister::from_id(id);
    if let Some(register) = register.filter(|r| r.is_bitmap()) {
        for service in HypercallService::ALL
            .into_iter()
            .filter(|s| s.register() == register)
        {
            let has: Vec<u64> = values
                .iter()
                .map(|v| u64::from(v & service.mask() != 0))
                .collect();
            let on = has.iter().all(|&h| h == 1);
            model.hypercalls.set(service, on);
            let lacking = limiting(&has, u64::from(on));
            if !lacking.is_empty() {
                lists.limited.push(Limit {
                    what: format!("hypercall service {}", service.name()),
                    value: Some(u64::from(on)),
                    rule: "hypercall services: the intersection".into(),
                    hosts: lacking,
                });
            }
        }
        return;
    }
    if register == Some(FirmwareRegister::PsciVersion) {
        let versions: Vec<PsciVersion> = values
            .iter()
            .filter_map(|&v| PsciVersion::from_reg_value(v))
            .collect();
        if let Some(lowest) = versions.iter().min_by_key(|v| v.reg_value()) {
            if versions.len() == values.len() {
                model.psci_version = Some(*lowest);
                let lacking = limiting(values, lowest.reg_value());
                if !lacking.is_empty() {
                    lists.limited.push(Limit {
                        what: "PSCI version".into(),
                        value: Some(lowest.reg_value()),
                        rule: "the lowest host's version".into(),
                        hosts: lacking,
                    });
                }
                return;
            }
        }
    }
    if values.iter().any(|&v| v != values[0]) {
        lists.not_uniform.push(Limit {
            what: reg_id::describe(id),
            value: None,
            rule: format!(
                "the hosts differ ({}) and vmfleet does not choose a value every host accepts: \
                 left to each host",
                values
                    .iter()
                    .map(|v| format!("{v:#x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            hosts: (0..values.len()).collect(),
        });
    }
}

/// Check the template on every host; a field a host refuses to change is left to each host,
/// named with that host's rule, until every host accepts (each pass removes at least one field,
/// so this ends).
fn settle(hosts: &[&HostFacts], out: &mut Baseline) {
    loop {
        let mut dropped = false;
        for (i, host) in hosts.iter().enumerate() {
            let Ok(check) = check_template(&out.template, host) else {
                return;
            };
            for problem in check.problems {
                let register = FirmwareRegister::ALL
                    .into_iter()
                    .find(|r| reg_id::describe(r.id()) == problem.what);
                let firmware = match register {
                    Some(FirmwareRegister::PsciVersion) => {
                        out.template.arm64.psci_version.take().is_some()
                    }
                    Some(r) => out.template.arm64.hypercalls.remove_register(r),
                    None => false,
                };
                if firmware {
                    dropped = true;
                    out.not_uniform.push(Limit {
                        what: problem.what.clone(),
                        value: None,
                        rule: format!("host {i} cannot change it: {}", problem.rule),
                        hosts: vec![i],
                    });
                }
                if let Some(field) = fields::by_name(&problem.what) {
                    if out.template.arm64.id_registers.remove(field) {
                        dropped = true;
                        out.limited.retain(|l| l.what != problem.what);
                        out.not_uniform.push(Limit {
                            what: problem.what.clone(),
                            value: None,
                            rule: format!("host {i} cannot change it: {}", problem.rule),
                            hosts: vec![i],
                        });
                    }
                }
            }
        }
        if !dropped {
            return;
        }
    }
}

#[cfg(test)]
#[path = "baseline_tests.rs"]
mod tests;
