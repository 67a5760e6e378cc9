//! Can a guest started on one host move to another? For arm64, register by register: what the
//! source host's kernel lists and the destination's does not (a restore of it gets `ENOENT`:
//! firmware and bitmap registers on an older kernel, ID registers a newer kernel added), what the
//! destination lists and the source did not (the guest meets a register it never had), and every
//! value of the guest's model the destination's kernel would refuse, judged by the same rules as
//! everything else ([`judge_before_run`]), so the answer is the destination kernel's.
//!
//! The guest's model is the source host's default one: the values its vCPU reads right after
//! `KVM_ARM_VCPU_INIT` with the fingerprint's features (a template's model comes with templates).
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
use super::arm64::{features_of, init_facts, view_of};
use crate::hypervisor::abi::KVM_CAP_ARM_WRITABLE_IMP_ID_REGS;
use crate::hypervisor::cpuid::CpuidTable;
use crate::hypervisor::errno::Errno;
use crate::hypervisor::ids::GuestArch;
use crate::model::arm64::host::HostView;
use crate::model::arm64::validate::{Verdict, judge_before_run};
use crate::model::arm64::{VcpuFeatureSet, reg_id};
use crate::model::lock_policy;
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
    /// A fingerprint lacks what the comparison needs.
    #[error("the {which} fingerprint has {what}")]
    Missing {
        /// `source` or `destination`.
        which: &'static str,
        /// What is missing, in words.
        what: String,
    },
}

/// Every CPU-model register of the source's default guest model that does not carry over to
/// the destination, in the source's register-list order, then the destination's new ones.
pub fn arm64_carryover(from: &HostFacts, to: &HostFacts) -> Result<Vec<Carryover>, MigrateError> {
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
    let init = from_sets
        .iter()
        .copied()
        .find(|set| to_sets.contains(set))
        .ok_or_else(|| {
            let hex = |sets: &[u32]| {
                sets.iter()
                    .map(|s| format!("{s:#x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            missing(
                "destination",
                format!(
                    "no vCPU initialised with features the source has (source: {}; \
                     destination: {})",
                    hex(&from_sets),
                    hex(&to_sets)
                ),
            )
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
            });
        }
    }
    for &id in to_list
        .iter()
        .filter(|id| model(id) && !from_list.contains(id))
    {
        found.push(Carryover {
            id,
            register: reg_id::describe(id),
            problem: CarryoverProblem::New {
                value: to_values.get(&id).copied(),
            },
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

/// The destination as a VM's planner sees it ([`view_of`]), with capability 239 if it offers it
/// (a VM whose model sets MIDR_EL1 enables it).
fn destination_view(to: &HostFacts, list: &Vec<u64>, values: &BTreeMap<u64, u64>) -> HostView {
    let offers_239 = to
        .capabilities
        .iter()
        .any(|&(cap, v)| cap == KVM_CAP_ARM_WRITABLE_IMP_ID_REGS && v != 0);
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
    let supported = facts.x86.supported.as_ref()?;
    let entries = supported
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
    Some(CpuidTable::new(entries))
}

/// Every named x86 feature the default guest sees on the source that a guest on the
/// destination does not get, in catalog order.
pub fn x86_lost_features(
    from: &HostFacts,
    to: &HostFacts,
) -> Result<Vec<&'static Feature>, MigrateError> {
    if from.arch != to.arch {
        return Err(MigrateError::MixedArch {
            from: from.arch,
            to: to.arch,
        });
    }
    let view = |facts: &HostFacts, which| {
        x86_guest_view(facts).ok_or(MigrateError::Missing {
            which,
            what: "no supported CPUID table".into(),
        })
    };
    let (source, destination) = (view(from, "source")?, view(to, "destination")?);
    Ok(CATALOG
        .iter()
        .filter(|f| f.is_set_in(&source) == Some(true) && f.is_set_in(&destination) != Some(true))
        .collect())
}
