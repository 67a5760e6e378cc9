//! Can a host run a CPU template? Every bit or field the host cannot give, with the value asked
//! for, the host's limit, the rule and the name, from the host's facts alone (its fingerprint).
//! `vmfleet check TEMPLATE FP...`, `vmfleet baseline` (to prove what it wrote) and `vmfleet nfd`
//! (one label per template) all ask this one function, and it asks the same rules a live VM's
//! plan is judged by, so the answer is the kernel's.
//!
//! x86: KVM takes any CPUID table, so the question is what the guest would see. A bit the
//! template fixes is a problem when the host rewrites it after `KVM_SET_CPUID2` to the other value
//! (the fingerprint's measured rewrites: a nested PVM host sets bits of leaves 0x1, 0x7 and 0xD
//! whatever it is given), or when it is set in a feature register and the host's
//! `KVM_GET_SUPPORTED_CPUID` does not offer it (the guest would be promised a feature the vCPU
//! does not implement). Bits outside feature registers (signature, topology, cache description)
//! take any value.
//!
//! arm64: the template's model is planned on the host's view ([`view_of`]: its register list and
//! values for the template's VCPU_INIT features, its writable masks or the pre-6.7 rule, its
//! kernel probes), and every refused write is a problem; a feature set the fingerprint never
//! measured is a problem too (vmfleet cannot say what such a vCPU starts with, so it does not
//! guess).
//!
//! Must not: do I/O (it is part of [`crate::model`]).

use super::HostFacts;
use super::arm64::{init_facts, offers_writable_imp_id_regs, view_of};
use crate::hypervisor::cpuid::CpuidReg;
use crate::hypervisor::errno::Errno;
use crate::hypervisor::ids::GuestArch;
use crate::model::arm64::fields;
use crate::model::arm64::host::HostView;
use crate::model::arm64::sysreg::SysReg;
use crate::model::arm64::validate::{Arm64Refusal, Verdict, judge_before_run};
use crate::model::arm64::{Arm64ModelSpec, plan, reg_id};
use crate::model::template::CpuTemplate;
use crate::model::x86::catalog::{self, CATALOG};
use std::collections::{BTreeMap, BTreeSet};

/// Why a host cannot give one bit or field of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// x86: a feature bit the host's supported CPUID does not offer.
    Unsupported,
    /// x86: the host rewrites the bit after `KVM_SET_CPUID2` (measured).
    Rewritten,
    /// arm64: the host's kernel refuses the write, with this errno.
    Refused(Errno),
    /// The fingerprint lacks what the answer needs; vmfleet does not guess.
    Unknown,
    /// The template cannot be built on this host at all (x86: a leaf the host lacks; arm64: the
    /// plan fails).
    Invalid,
}

impl ProblemKind {
    /// The kind's one-word name, as `--json` prints it.
    pub fn name(&self) -> &'static str {
        match self {
            ProblemKind::Unsupported => "unsupported",
            ProblemKind::Rewritten => "rewritten",
            ProblemKind::Refused(_) => "refused",
            ProblemKind::Unknown => "unknown",
            ProblemKind::Invalid => "invalid",
        }
    }
}

/// One bit or field a host cannot give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateProblem {
    /// What: `avx512f (7.0.ebx[16])`, `7.0.ebx[30]`, `ID_AA64ISAR0_EL1.AES`, a register.
    pub what: String,
    /// The value the template asks for (a bit's 0/1, a field's raw value, a register's value).
    pub requested: Option<u64>,
    /// The host's limit in the same unit (what it offers, holds or rewrites to).
    pub limit: Option<u64>,
    /// The rule, in words.
    pub rule: String,
    /// Why, with the kind.
    pub kind: ProblemKind,
}

/// A host's answer to a template.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateCheck {
    /// Every bit or field the host cannot give, in register order.
    pub problems: Vec<TemplateProblem>,
    /// What is worth knowing and blocks nothing (a write vmfleet cannot judge, a fact the
    /// fingerprint lacks and the conservative rule used instead).
    pub notes: Vec<String>,
}

impl TemplateCheck {
    /// Whether the host can run the template.
    pub fn runs(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Why a template cannot be checked against a host at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateCheckError {
    /// The template is for the other architecture.
    #[error("template {template} is for {template_arch} guests and the host runs {host_arch} ones")]
    MixedArch {
        /// The template's name.
        template: String,
        /// Its architecture.
        template_arch: GuestArch,
        /// The host's.
        host_arch: GuestArch,
    },
}

/// Check `template` against the host `facts` describe.
pub fn check_template(
    template: &CpuTemplate,
    facts: &HostFacts,
) -> Result<TemplateCheck, TemplateCheckError> {
    if template.arch != facts.arch {
        return Err(TemplateCheckError::MixedArch {
            template: template.name.clone(),
            template_arch: template.arch,
            host_arch: facts.arch,
        });
    }
    Ok(match template.arch {
        GuestArch::X86_64 => check_x86(template, facts),
        GuestArch::Aarch64 => check_arm64(template, facts),
    })
}

/// Whether `(leaf, subleaf, reg)` holds named features: there a set bit promises the guest
/// something, so the host must offer it.
pub fn is_feature_register(leaf: u32, subleaf: u32, reg: CpuidReg) -> bool {
    CATALOG
        .iter()
        .any(|f| f.leaf == leaf && f.subleaf == subleaf && f.reg == reg)
}

/// The name of a bit: the catalog's feature with its position, or the position alone.
pub fn bit_name(leaf: u32, subleaf: u32, reg: CpuidReg, bit: u32) -> String {
    match catalog::at(leaf, subleaf, reg, bit as u8) {
        Some(feature) => feature.to_string(),
        None => catalog::bit_position(leaf, subleaf, reg, bit),
    }
}

/// The bits of one CPUID register the host holds at a value of its own after `KVM_SET_CPUID2`
/// (its measured rewrites), gathered in one pass over them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forced {
    /// The bits the host forces.
    pub mask: u32,
    /// Their values (only the bits of `mask`).
    pub value: u32,
}

impl Forced {
    /// The value the host forces `bit` to, if it does.
    pub fn bit(&self, bit: u32) -> Option<bool> {
        let m = 1u32 << bit;
        (self.mask & m != 0).then_some(self.value & m != 0)
    }
}

/// What the host `facts` describe forces of register `reg` of leaf `leaf`, subleaf `subleaf`
/// (the first rewrite that names a bit decides it).
pub fn forced_in(facts: &HostFacts, leaf: u32, subleaf: u32, reg: CpuidReg) -> Forced {
    facts
        .x86
        .rewrites
        .iter()
        .filter(|r| r.function == leaf && r.index == subleaf && r.register == reg)
        .fold(Forced::default(), |forced, r| {
            let new = r.mask & !forced.mask;
            Forced {
                mask: forced.mask | new,
                value: forced.value | r.value & new,
            }
        })
}

fn check_x86(template: &CpuTemplate, facts: &HostFacts) -> TemplateCheck {
    let mut out = TemplateCheck::default();
    let Some(supported) = facts.x86.supported.as_ref() else {
        out.problems.push(TemplateProblem {
            what: "the supported CPUID table".into(),
            requested: None,
            limit: None,
            rule: "the fingerprint has no KVM_GET_SUPPORTED_CPUID table, so nothing the template \
                   asks can be checked"
                .into(),
            kind: ProblemKind::Unknown,
        });
        return out;
    };
    let built = match template.x86.build(supported, 0, 1) {
        Ok(built) => built,
        Err(e) => {
            out.problems.push(TemplateProblem {
                what: "the CPUID table".into(),
                requested: None,
                limit: None,
                rule: e.to_string(),
                kind: ProblemKind::Invalid,
            });
            return out;
        }
    };
    // Every bit the template fixes, once, in (leaf, subleaf, register, bit) order.
    let mut fixed: BTreeSet<(u32, u32, CpuidReg, u32)> = BTreeSet::new();
    for bits in &template.x86.cpuid {
        for bit in 0..32 {
            if bits.bits.bit(bit).is_some() {
                fixed.insert((bits.leaf, bits.subleaf, bits.register, bit));
            }
        }
    }
    for name in template.x86.show.iter().chain(&template.x86.hide) {
        if let Some(f) = catalog::by_name(name) {
            fixed.insert((f.leaf, f.subleaf, f.reg, u32::from(f.bit)));
        }
    }
    if facts.x86.rewrites.is_empty() {
        out.notes.push(
            "the fingerprint measured no host rewrites of CPUID: every bit is taken as held as \
             written"
                .into(),
        );
    }
    let mut forced_regs: BTreeMap<(u32, u32, CpuidReg), Forced> = BTreeMap::new();
    for (leaf, subleaf, reg, bit) in fixed {
        let m = 1u32 << bit;
        let forced = *forced_regs
            .entry((leaf, subleaf, reg))
            .or_insert_with(|| forced_in(facts, leaf, subleaf, reg));
        let Some(entry) = built.table.lookup(leaf, subleaf) else {
            // A hidden feature whose leaf the host lacks: the guest does not see it anyway.
            continue;
        };
        let requested = entry.reg(reg) & m != 0;
        let offered = supported
            .lookup(leaf, subleaf)
            .is_some_and(|e| e.reg(reg) & m != 0);
        let problem = |limit: bool, rule: String, kind| TemplateProblem {
            what: bit_name(leaf, subleaf, reg, bit),
            requested: Some(u64::from(requested)),
            limit: Some(u64::from(limit)),
            rule,
            kind,
        };
        match forced.bit(bit) {
            Some(forced) if forced != requested => out.problems.push(problem(
                forced,
                format!(
                    "the host rewrites this bit to {} after KVM_SET_CPUID2 (measured), so the \
                     guest would not see the template",
                    u8::from(forced)
                ),
                ProblemKind::Rewritten,
            )),
            Some(_) => {}
            None if requested && !offered && is_feature_register(leaf, subleaf, reg) => {
                out.problems.push(problem(
                    false,
                    "a feature bit must be offered by the host's KVM_GET_SUPPORTED_CPUID: KVM \
                     would take the bit, but the vCPU does not implement the feature"
                        .into(),
                    ProblemKind::Unsupported,
                ))
            }
            None => {}
        }
    }
    out
}

fn check_arm64(template: &CpuTemplate, facts: &HostFacts) -> TemplateCheck {
    let mut out = TemplateCheck::default();
    let model = &template.arm64;
    let init = model.features.bits();
    let Some((list, values)) = init_facts(facts, init) else {
        out.problems.push(TemplateProblem {
            what: format!("VCPU_INIT features {}", model.features),
            requested: Some(u64::from(init)),
            limit: facts.arm64.init_features.map(u64::from),
            rule: "the fingerprint measured no vCPU initialised with these features, so what such \
                   a vCPU starts with is unknown (record a fleet that uses them, or fingerprint \
                   the host with them)"
                .into(),
            kind: ProblemKind::Unknown,
        });
        return out;
    };
    if list.is_none() {
        out.notes.push(
            "the fingerprint has no register list: every register the template names is taken \
             as listed"
                .into(),
        );
    }
    if facts.arm64.masks.is_none() {
        out.notes.push(
            "the fingerprint has no writable masks: the pre-6.7 rule is used (no ID register \
             field may change)"
                .into(),
        );
    }
    let offers_239 = offers_writable_imp_id_regs(facts);
    let mut list = list.cloned();
    if list.is_none() {
        // Without a list, the registers the fingerprint has values for stand in for it.
        list = Some(values.keys().copied().collect());
    }
    let view = view_of(
        facts,
        list.as_ref(),
        values.clone(),
        offers_239 && model.writes_implementation_id(),
    );
    let plan = match plan::plan(model, &view) {
        Ok(plan) => plan,
        Err(e) => {
            out.problems.push(TemplateProblem {
                what: "the arm64 model".into(),
                requested: None,
                limit: None,
                rule: e.to_string(),
                kind: ProblemKind::Invalid,
            });
            return out;
        }
    };
    for write in &plan.writes {
        match &write.verdict {
            Verdict::Refused(refusal) => {
                // The kernel names the first field it refuses; judge each changed field alone
                // so that every one the host cannot give is named.
                let each =
                    refused_fields(write.reg_id, write.host_value, write.value, &view, model);
                if each.is_empty() {
                    out.problems.push(problem_of(refusal, write.reg_id));
                } else {
                    out.problems.extend(each);
                }
            }
            Verdict::Unjudged { why } => out
                .notes
                .push(format!("{}: not judged: {why}", write.register)),
            Verdict::Accepted { .. } => {}
        }
    }
    out
}

/// A refusal as a problem.
fn problem_of(refusal: &Arm64Refusal, reg: u64) -> TemplateProblem {
    let what = match &refusal.field {
        Some(field) => format!("{}.{}", refusal.register_name(), field.name),
        None => reg_id::describe(reg),
    };
    TemplateProblem {
        what,
        requested: Some(refusal.requested),
        limit: Some(refusal.limit),
        rule: format!("{} ({})", refusal.rule, refusal.errno),
        kind: ProblemKind::Refused(refusal.errno),
    }
}

/// Each field of register `id` that `value` changes from `host`, judged alone (the host's value
/// with only that field changed): the refused ones. Empty for a register without a field table
/// or one the host does not list.
fn refused_fields(
    id: u64,
    host: Option<u64>,
    value: u64,
    view: &HostView,
    model: &Arm64ModelSpec,
) -> Vec<TemplateProblem> {
    let (Some(host), Some(table)) = (
        host,
        SysReg::from_kvm_reg_id(id).ok().and_then(fields::table_for),
    ) else {
        return Vec::new();
    };
    table
        .fields
        .iter()
        .filter(|f| f.raw(host) != f.raw(value))
        .filter_map(|f| {
            let alone = f.with(host, f.raw(value));
            match judge_before_run(id, alone, view, model.features) {
                Verdict::Refused(refusal) => Some(problem_of(&refusal, id)),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
