//! Can a guest started on one host move to another? For arm64, register by register: what the
//! source host's kernel lists and the destination's does not (a restore of it gets `ENOENT`:
//! firmware and bitmap registers on an older kernel, ID registers a newer kernel added), what the
//! destination lists and the source did not (the guest meets a register it never had), and every
//! value of the guest's model the destination's kernel would refuse, judged by the same rules as
//! everything else ([`judge_before_run`]), so the answer is the destination kernel's.
//!
//! The guest's model is the source host's default one (the values its vCPU reads right after
//! `KVM_ARM_VCPU_INIT` with the fingerprint's features), or a CPU template's as the source's
//! kernel would hold it (its plan on the source's view: what the writes read back, the
//! unknown-register policy's zeros). A template the source cannot run is refused
//! ([`MigrateError::TemplateOnSource`]).
//!
//! The unknown-register policy (clear / keep-host / refuse) decides what a register only the
//! destination lists means for the guest: [`Carryover::policy`] says what happens under each,
//! and `blocks` under the guest's own ([`UnknownRegisterPolicy`], the template's or `clear`).
//!
//! A fingerprint without a register list is compared only when its values hold every register
//! its host lists (a Firecracker fingerprint's dump): then which registers a host has is judged
//! from them.
//!
//! x86: KVM takes any CPUID table, so the question is not what the destination's kernel refuses
//! but what it cannot give: every named feature the guest sees on the source (the supported table
//! with the source's measured host rewrites) that a guest on the destination does not get (its
//! supported table with its rewrites). Using one would fault there.
//!
//! Must not: do I/O (it is part of [`crate::model`]).

use super::HostFacts;
use super::arm64::{features_of, init_facts, offers_writable_imp_id_regs, view_of};
use crate::hypervisor::cpuid::CpuidTable;
use crate::hypervisor::errno::Errno;
use crate::hypervisor::ids::GuestArch;
use crate::model::arm64::firmware::{self, FirmwareId};
use crate::model::arm64::host::HostView;
use crate::model::arm64::model::UnknownRegisterAction;
use crate::model::arm64::validate::{Verdict, judge_before_run};
use crate::model::arm64::{UnknownRegisterPolicy, plan};
use crate::model::arm64::{VcpuFeatureSet, reg_id};
use crate::model::lock_policy;
use crate::model::template::CpuTemplate;
use crate::model::x86::catalog::{CATALOG, Feature};
use std::collections::BTreeMap;

/// One register that does not carry over from the source host to the destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carryover {
    /// The register's id.
    pub id: u64,
    /// Its name (or the id's description).
    pub register: String,
    /// What is wrong with it.
    pub problem: CarryoverProblem,
    /// A firmware register or hypercall bitmap only the destination lists: what happens to the
    /// guest under each unknown-register policy, and whether it blocks the move under the
    /// guest's own; `None` for every other line.
    pub policy: Option<PolicyOutcomes>,
}

/// What a register only the destination lists means for the guest, under each policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyOutcomes {
    /// The guest's policy.
    pub in_effect: UnknownRegisterPolicy,
    /// Whether vmfleet's model names the register (the policy applies only to ones it does not;
    /// a known one follows the template or keeps the destination's value).
    pub known: bool,
    /// `clear`: what the guest sees.
    pub clear: String,
    /// `keep-host`.
    pub keep_host: String,
    /// `refuse`.
    pub refuse: String,
    /// Whether the move is blocked under the policy in effect.
    pub blocks: bool,
}

/// Why a register does not carry over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CarryoverProblem {
    /// The source lists it, the destination does not: restoring the guest's value there gets
    /// `ENOENT`, and the guest loses whatever the value gave it.
    Gone {
        /// The guest's value on the source, if it was read.
        value: Option<u64>,
    },
    /// The destination lists it, the source did not: the guest meets a register it never had,
    /// holding the destination's value.
    New {
        /// The destination's value, if it was read.
        value: Option<u64>,
    },
    /// Both list it, and the destination's kernel refuses the guest's value.
    Refused {
        /// The guest's value.
        value: u64,
        /// The destination's value of it.
        limit: Option<u64>,
        /// The destination kernel's errno.
        errno: Errno,
        /// The refusal: the field, the values and the rule.
        why: String,
    },
}

/// Why two fingerprints cannot be compared.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MigrateError {
    /// The hosts run guests of different architectures.
    #[error(
        "the source host runs {from} guests and the destination {to}: no guest moves between them"
    )]
    MixedArch {
        /// The source's architecture.
        from: GuestArch,
        /// The destination's.
        to: GuestArch,
    },
    /// The template cannot run on the source host.
    #[error("the template cannot run on the source host: {0}")]
    TemplateOnSource(String),
    /// A fingerprint lacks what the comparison needs.
    #[error("the {which} fingerprint has {what}")]
    Missing {
        /// `source` or `destination`.
        which: &'static str,
        /// What is missing, in words.
        what: String,
    },
}

/// Every CPU-model register of the guest's model (the source's default one, or `template`'s as
/// the source would hold it) that does not carry over to the destination, in the source's
/// register-list order, then the destination's new ones.
pub fn arm64_carryover(
    from: &HostFacts,
    to: &HostFacts,
    template: Option<&CpuTemplate>,
) -> Result<Vec<Carryover>, MigrateError> {
    if from.arch != to.arch {
        return Err(MigrateError::MixedArch {
            from: from.arch,
            to: to.arch,
        });
    }
    if from.arch != GuestArch::Aarch64 {
        return Err(MigrateError::Missing {
            which: "source",
            what: format!("{} guests, not arm64 ones", from.arch),
        });
    }
    let missing = |which, what: String| MigrateError::Missing { which, what };
    // The guest's features: the source's main set if the destination measured it too, else
    // the first other set both measured (a fingerprint made from a trace has every set its
    // fleet used).
    let sets = |facts: &HostFacts| -> Vec<u32> {
        facts
            .arm64
            .init_features
            .into_iter()
            .chain(facts.arm64.other_inits.iter().map(|o| o.init_features))
            .collect()
    };
    let (from_sets, to_sets) = (sets(from), sets(to));
    let wanted = template.map(|t| t.arm64.features.bits());
    let init = from_sets
        .iter()
        .copied()
        .find(|set| to_sets.contains(set) && wanted.is_none_or(|w| w == *set))
        .ok_or_else(|| {
            let hex = |sets: &[u32]| {
                sets.iter()
                    .map(|s| format!("{s:#x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            match wanted {
                Some(w) => missing(
                    if from_sets.contains(&w) {
                        "destination"
                    } else {
                        "source"
                    },
                    format!(
                        "no vCPU initialised with the template's features {w:#x} ({}) (source \
                         measured: {}; destination: {})",
                        features_of(w),
                        hex(&from_sets),
                        hex(&to_sets)
                    ),
                ),
                None => missing(
                    "destination",
                    format!(
                        "no vCPU initialised with features the source has (source: {}; \
                         destination: {})",
                        hex(&from_sets),
                        hex(&to_sets)
                    ),
                ),
            }
        })?;
    let (from_list, from_values) = init_facts(from, init).ok_or_else(|| {
        missing(
            "source",
            format!("no vCPU initialised with features {init:#x}"),
        )
    })?;
    let from_list = listed(from, from_list, from_values)
        .ok_or_else(|| missing("source", "no register list".into()))?;
    let (to_list, to_values) = init_facts(to, init).ok_or_else(|| {
        missing(
            "destination",
            format!("no vCPU initialised with features {init:#x}"),
        )
    })?;
    let to_list = listed(to, to_list, to_values)
        .ok_or_else(|| missing("destination", "no register list".into()))?;
    let policy = template.map_or(UnknownRegisterPolicy::default(), |t| {
        t.arm64.unknown_registers
    });
    let guest_values = match template {
        Some(t) => template_values(from, t, &from_list, from_values)?,
        None => from_values.clone(),
    };
    let from_values = &guest_values;
    let destination = destination_view(to, &to_list, to_values);
    let features = features_of(init);
    let model = |id: &u64| lock_policy::is_model_register(GuestArch::Aarch64, *id);
    let mut found = Vec::new();
    for &id in from_list.iter().filter(|id| model(id)) {
        let value = from_values.get(&id).copied();
        let problem = if !to_list.contains(&id) {
            Some(CarryoverProblem::Gone { value })
        } else {
            value.and_then(|value| refused(id, value, &destination, features))
        };
        if let Some(problem) = problem {
            found.push(Carryover {
                id,
                register: reg_id::describe(id),
                problem,
                policy: None,
            });
        }
    }
    for &id in to_list
        .iter()
        .filter(|id| model(id) && !from_list.contains(id))
    {
        let value = to_values.get(&id).copied();
        found.push(Carryover {
            id,
            register: reg_id::describe(id),
            problem: CarryoverProblem::New { value },
            policy: policy_outcomes(id, value, policy),
        });
    }
    Ok(found)
}

/// The registers a host lists for a vCPU: its register list, else (a fingerprint whose values
/// hold every register, [`super::Arm64HostFacts::registers_from_values`]) the ids of its values,
/// in id order.
fn listed(
    facts: &HostFacts,
    list: Option<&Vec<u64>>,
    values: &BTreeMap<u64, u64>,
) -> Option<Vec<u64>> {
    match list {
        Some(list) => Some(list.clone()),
        None if facts.arm64.registers_from_values => Some(values.keys().copied().collect()),
        None => None,
    }
}

/// The values a vCPU on the source holds under `template`: its plan on the source's view, the
/// writes as they read back and the unknown-register policy's zeros over the default values.
fn template_values(
    from: &HostFacts,
    template: &CpuTemplate,
    list: &Vec<u64>,
    values: &BTreeMap<u64, u64>,
) -> Result<BTreeMap<u64, u64>, MigrateError> {
    let offers_239 = offers_writable_imp_id_regs(from);
    let view = view_of(
        from,
        Some(list),
        values.clone(),
        offers_239 && template.arm64.writes_implementation_id(),
    );
    let plan =
        plan(&template.arm64, &view).map_err(|e| MigrateError::TemplateOnSource(e.to_string()))?;
    let mut out = values.clone();
    for write in &plan.writes {
        match &write.verdict {
            Verdict::Refused(refusal) => {
                return Err(MigrateError::TemplateOnSource(refusal.headline()));
            }
            Verdict::Accepted { readback } => {
                out.insert(write.reg_id, *readback);
            }
            Verdict::Unjudged { .. } => {
                out.insert(write.reg_id, write.value);
            }
        }
    }
    for decision in &plan.unknown_registers {
        if decision.action == UnknownRegisterAction::WriteZero {
            out.insert(decision.reg_id, 0);
        }
    }
    Ok(out)
}

/// What a register only the destination lists means for the guest under each policy (firmware
/// registers and hypercall bitmaps only; `None` for an ID register).
fn policy_outcomes(
    id: u64,
    value: Option<u64>,
    in_effect: UnknownRegisterPolicy,
) -> Option<PolicyOutcomes> {
    let kind = firmware::classify(id)?;
    let shown = match (kind, value) {
        (FirmwareId::Known(register), Some(v)) if register.is_bitmap() => {
            format!(
                "{v:#x} (services: {})",
                firmware::describe_services(register, v)
            )
        }
        (_, Some(v)) => format!("{v:#x}"),
        (_, None) => "its value (unread)".to_string(),
    };
    let known = matches!(kind, FirmwareId::Known(_));
    let offers = value != Some(0);
    let (clear, keep_host, refuse) = if known {
        let text = format!(
            "vmfleet knows it: the guest gets {shown} unless its model sets it (the policy does \
             not apply)"
        );
        (text.clone(), text.clone(), text)
    } else {
        (
            "vmfleet writes 0: the guest meets nothing new".to_string(),
            format!("the guest meets {shown} after the move"),
            "vmfleet refuses to run the VM on the destination (a register it does not know)"
                .to_string(),
        )
    };
    let blocks = !known
        && match in_effect {
            UnknownRegisterPolicy::Clear => false,
            UnknownRegisterPolicy::KeepHost => offers,
            UnknownRegisterPolicy::Refuse => true,
        };
    Some(PolicyOutcomes {
        in_effect,
        known,
        clear,
        keep_host,
        refuse,
        blocks,
    })
}

/// The destination as a VM's planner sees it ([`view_of`]), with capability 239 if it offers it
/// (a VM whose model sets MIDR_EL1 enables it).
fn destination_view(to: &HostFacts, list: &Vec<u64>, values: &BTreeMap<u64, u64>) -> HostView {
    let offers_239 = offers_writable_imp_id_regs(to);
    view_of(to, Some(list), values.clone(), offers_239)
}

/// The destination kernel's refusal of the guest's `value`, if it refuses it.
fn refused(
    id: u64,
    value: u64,
    destination: &HostView,
    features: VcpuFeatureSet,
) -> Option<CarryoverProblem> {
    match judge_before_run(id, value, destination, features) {
        Verdict::Refused(refusal) => Some(CarryoverProblem::Refused {
            value,
            limit: destination.value(id),
            errno: refusal.errno,
            why: refusal.to_string(),
        }),
        _ => None,
    }
}

/// What a guest on a host with `facts` sees of CPUID in the default model: the supported table
/// with the host's measured rewrites applied.
pub(super) fn x86_guest_view(facts: &HostFacts) -> Option<CpuidTable> {
    Some(with_rewrites(facts, facts.x86.supported.as_ref()?))
}

/// `table` as the host `facts` describes would hold it: its measured rewrites applied.
fn with_rewrites(facts: &HostFacts, table: &CpuidTable) -> CpuidTable {
    let entries = table
        .entries
        .iter()
        .map(|entry| {
            let (function, index) = (entry.function, entry.index);
            let mut entry = *entry;
            for rewrite in facts
                .x86
                .rewrites
                .iter()
                .filter(|r| r.function == function && r.index == index)
            {
                let reg = entry.reg_mut(rewrite.register);
                *reg = *reg & !rewrite.mask | rewrite.value & rewrite.mask;
            }
            entry
        })
        .collect();
    CpuidTable::new(entries)
}

/// Every named x86 feature the guest sees on the source (the default model, or `template` built
/// on the source's supported table) that a guest on the destination (the same model built
/// there) does not get, in catalog order.
pub fn x86_lost_features(
    from: &HostFacts,
    to: &HostFacts,
    template: Option<&CpuTemplate>,
) -> Result<Vec<&'static Feature>, MigrateError> {
    if from.arch != to.arch {
        return Err(MigrateError::MixedArch {
            from: from.arch,
            to: to.arch,
        });
    }
    let view = |facts: &HostFacts, which| -> Result<CpuidTable, MigrateError> {
        let supported = facts.x86.supported.as_ref().ok_or(MigrateError::Missing {
            which,
            what: "no supported CPUID table".into(),
        })?;
        let table = match template {
            Some(t) => {
                t.x86
                    .build(supported, 0, 1)
                    .map_err(|e| match which {
                        "source" => MigrateError::TemplateOnSource(e.to_string()),
                        _ => MigrateError::Missing {
                            which,
                            what: format!("no table the template builds on: {e}"),
                        },
                    })?
                    .table
            }
            None => supported.clone(),
        };
        Ok(with_rewrites(facts, &table))
    };
    let (source, destination) = (view(from, "source")?, view(to, "destination")?);
    Ok(CATALOG
        .iter()
        .filter(|f| f.is_set_in(&source) == Some(true) && f.is_set_in(&destination) != Some(true))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arm64::firmware::FirmwareRegister;

    /// `KVM_REG_ARM_FW_FEAT_BMAP_REG(9)`: a bitmap of a kernel newer than vmfleet's catalog.
    const UNKNOWN_BITMAP: u64 = 0x6030_0000_0016_0009;

    #[test]
    fn an_unknown_new_bitmap_blocks_by_the_guests_policy() {
        let outcome = |value, policy| policy_outcomes(UNKNOWN_BITMAP, Some(value), policy).unwrap();
        let clear = outcome(0b11, UnknownRegisterPolicy::Clear);
        assert!(!clear.known && !clear.blocks);
        assert!(clear.clear.contains("writes 0"));
        assert!(outcome(0b11, UnknownRegisterPolicy::KeepHost).blocks);
        assert!(!outcome(0, UnknownRegisterPolicy::KeepHost).blocks);
        assert!(outcome(0, UnknownRegisterPolicy::Refuse).blocks);
        let known = FirmwareRegister::VendorHypBitmap2.id();
        let p = policy_outcomes(known, Some(0), UnknownRegisterPolicy::Refuse).unwrap();
        assert!(p.known && !p.blocks, "{p:?}");
        // An ID register is not the policy's business.
        let isar0 = crate::model::arm64::catalog::ID_AA64ISAR0_EL1.kvm_reg_id();
        assert_eq!(
            policy_outcomes(isar0, Some(1), UnknownRegisterPolicy::Refuse),
            None
        );
    }
}
