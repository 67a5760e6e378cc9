//! From a spec and what the kernel reported about a VM, the writes that make the VM hold the
//! requested model: in order, each with the full 64-bit value, what it changes, why, and vmfleet's
//! verdict on it, so that a run can report and record every decision before the kernel sees a
//! single write.
//!
//! Order: ID-register fields (encoding order: feature-ID registers, then CLIDR, then CTR_EL0),
//! then the spec's whole-register writes (`registers`, in id order: system registers, firmware
//! registers, bitmaps), then PSCI_VERSION, then the hypercall bitmaps, then the unknown firmware
//! registers the policy clears. A register is never planned twice: the spec refuses a raw write
//! to a register it also sets another way. The registers are independent of each other for the kernel; a fixed order keeps
//! traces of the same spec identical.
//!
//! A register the spec touches whose value already is what the spec asks for is not written: it
//! goes to [`Arm64Plan::unchanged`] with the reason, so the report still accounts for it.

use super::spec::{Arm64ModelSpec, SpecError, UnknownRegisterPolicy};
use crate::model::arm64::catalog;
use crate::model::arm64::features::VcpuFeatureSet;
use crate::model::arm64::fields::FieldRef;
use crate::model::arm64::firmware::{self, FirmwareFamily, FirmwareRegister, HypercallService};
use crate::model::arm64::host::HostView;
use crate::model::arm64::reg_id;
use crate::model::arm64::sysreg::SysReg;
use crate::model::arm64::validate::{
    Arm64Refusal, Arm64Rule, Verdict, field_differences, judge_before_run,
};
use crate::model::tristate::TriState;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One field or service a write changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `AES`, or a service name (`trng`).
    pub what: String,
    /// The host's value.
    pub from: u64,
    /// The value asked for.
    pub to: u64,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:#x} -> {:#x}", self.what, self.from, self.to)
    }
}

/// One write of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedWrite {
    /// The register's id.
    pub reg_id: u64,
    /// Its name.
    pub register: String,
    /// What the host holds (`None` when the kernel does not list the register).
    pub host_value: Option<u64>,
    /// The full value to write.
    pub value: u64,
    /// What it changes.
    pub changes: Vec<Change>,
    /// Why vmfleet writes it.
    pub reason: String,
    /// vmfleet's verdict.
    pub verdict: Verdict,
}

impl fmt::Display for PlannedWrite {
    /// `ID_AA64ISAR0_EL1 = 0x1221111110212100 (host 0x1221111110212120): spec: AES 0x2 -> 0x0;
    /// accepted, reads back 0x1221111110212100`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {:#018x} ", self.register, self.value)?;
        match self.host_value {
            Some(host) => write!(f, "(host {host:#018x})")?,
            None => f.write_str("(not listed by the kernel)")?,
        }
        write!(f, ": {}; {}", self.reason, self.verdict)
    }
}

/// What the policy does with one unknown firmware register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnknownRegisterAction {
    /// Write 0 (`clear`).
    WriteZero,
    /// Nothing to write: it already holds 0 (`clear`).
    AlreadyZero,
    /// Leave the kernel's value (`keep-host`).
    KeepHost,
}

/// The decision about one firmware register or bitmap vmfleet does not know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownRegisterDecision {
    /// The register's id.
    pub reg_id: u64,
    /// Its uapi-style name (`KVM_REG_ARM_FW_FEAT_BMAP_REG(4)`).
    pub register: String,
    /// Its family.
    pub family: FirmwareFamily,
    /// What the host holds, if it was read.
    pub host_value: Option<u64>,
    /// What vmfleet does with it, by the spec's [`UnknownRegisterPolicy`].
    pub action: UnknownRegisterAction,
    /// Why, for the report.
    pub reason: String,
}

impl fmt::Display for UnknownRegisterDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:#018x}): {}",
            self.register, self.reg_id, self.reason
        )
    }
}

/// A register the spec touches that needs no write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanNote {
    /// The register's id.
    pub reg_id: u64,
    /// Its name.
    pub register: String,
    /// Why it is not written.
    pub reason: String,
}

impl fmt::Display for PlanNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.register, self.reason)
    }
}

/// The plan for one VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm64Plan {
    /// The VCPU_INIT features every vCPU must be created with.
    pub features: VcpuFeatureSet,
    /// The writes, in order.
    pub writes: Vec<PlannedWrite>,
    /// Registers the spec touches that already hold what it asks for.
    pub unchanged: Vec<PlanNote>,
    /// The decisions about registers vmfleet does not know.
    pub unknown_registers: Vec<UnknownRegisterDecision>,
}

impl Arm64Plan {
    /// Every refused write's refusal.
    pub fn refusals(&self) -> impl Iterator<Item = &Arm64Refusal> {
        self.writes.iter().filter_map(|w| w.verdict.refusal())
    }

    /// Whether no write is refused (unjudged writes are not refusals: the kernel will decide).
    pub fn is_accepted(&self) -> bool {
        self.refusals().next().is_none()
    }
}

impl fmt::Display for Arm64Plan {
    /// One line per decision, for reports.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "vCPU features: {}", self.features)?;
        for write in &self.writes {
            writeln!(f, "write {write}")?;
        }
        for note in &self.unchanged {
            writeln!(f, "keep {note}")?;
        }
        for decision in &self.unknown_registers {
            writeln!(f, "unknown {decision}")?;
        }
        Ok(())
    }
}

/// A firmware register vmfleet does not know, as a refusing policy reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownRegister {
    /// The register's id.
    pub reg_id: u64,
    /// Its uapi-style name.
    pub register: String,
    /// Its family.
    pub family: FirmwareFamily,
    /// What the host holds, if it was read.
    pub host_value: Option<u64>,
}

impl fmt::Display for UnknownRegister {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({:#018x}",
            self.family, self.register, self.reg_id
        )?;
        if let Some(value) = self.host_value {
            write!(f, ", host value {value:#x}")?;
        }
        f.write_str(")")
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why no plan could be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum PlanError {
    /// The spec contradicts itself.
    #[error("{0}")]
    Spec(#[from] SpecError),
    /// The host view lacks a value the plan needs (a bug in whoever gathered it).
    #[error(
        "{register} ({reg_id:#018x}) is in KVM_GET_REG_LIST, but its value was not read, so \
         there is no host value to plan against"
    )]
    MissingHostValue {
        /// The register's id.
        reg_id: u64,
        /// Its name.
        register: String,
    },
    /// The policy is `refuse` and the kernel lists registers vmfleet does not know.
    #[error(
        "unknown_registers = \"refuse\", and the kernel lists firmware registers vmfleet does \
         not know: {}", list(.registers)
    )]
    UnknownRegisters {
        /// The registers.
        registers: Vec<UnknownRegister>,
    },
}

/// The value the host holds for a listed register.
fn listed_value(host: &HostView, id: u64) -> Result<u64, PlanError> {
    host.value(id).ok_or_else(|| PlanError::MissingHostValue {
        reg_id: id,
        register: reg_id::describe(id),
    })
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Plan the writes that give a VM the model `spec` asks for, on the host described by `host`.
///
/// Fails only when no meaningful plan exists: the spec contradicts itself, the host view lacks a
/// value, or the unknown-register policy refuses this kernel. A write the kernel would refuse is
/// part of the plan, with its refusal, so that the report can show every problem at once.
pub fn plan(spec: &Arm64ModelSpec, host: &HostView) -> Result<Arm64Plan, PlanError> {
    spec.check()?;
    let mut plan = Arm64Plan {
        features: spec.features,
        writes: Vec::new(),
        unchanged: Vec::new(),
        unknown_registers: Vec::new(),
    };
    for (reg, requests) in spec.id_registers.by_register() {
        plan_id_register(&mut plan, reg, &requests, host, spec.features)?;
    }
    for (id, bits) in spec.registers.iter() {
        plan_raw(&mut plan, id, bits, host, spec.features)?;
    }
    if let Some(version) = spec.psci_version {
        let register = FirmwareRegister::PsciVersion;
        let reason = format!("spec: psci_version = \"{version}\"");
        let change = |from: u64| Change {
            what: "PSCI version".to_string(),
            from,
            to: version.reg_value(),
        };
        plan_register(
            &mut plan,
            register.id(),
            version.reg_value(),
            change,
            reason,
            host,
            spec.features,
        )?;
    }
    for register in FirmwareRegister::ALL.into_iter().filter(|r| r.is_bitmap()) {
        let requests = spec.hypercalls.for_register(register);
        if !requests.is_empty() {
            plan_bitmap(&mut plan, register, &requests, host, spec.features)?;
        }
    }
    plan_unknown_registers(&mut plan, spec.unknown_registers, host, spec.features)?;
    Ok(plan)
}

fn plan_id_register(
    plan: &mut Arm64Plan,
    reg: SysReg,
    requests: &[(FieldRef, u64)],
    host: &HostView,
    features: VcpuFeatureSet,
) -> Result<(), PlanError> {
    let id = reg.kvm_reg_id();
    let name = catalog::name_of(reg);
    let listed = host.lists(id);
    let base = if listed { listed_value(host, id)? } else { 0 };
    let value = requests
        .iter()
        .fold(base, |value, (field, raw)| field.field().with(value, *raw));
    let changes: Vec<Change> = requests
        .iter()
        .filter(|(field, raw)| field.field().raw(base) != *raw)
        .map(|(field, raw)| Change {
            what: field.field().name.to_string(),
            from: field.field().raw(base),
            to: *raw,
        })
        .collect();
    if listed && changes.is_empty() {
        let asked: Vec<String> = requests
            .iter()
            .map(|(field, raw)| format!("{} = {raw:#x}", field.field().name))
            .collect();
        plan.unchanged.push(PlanNote {
            reg_id: id,
            register: name,
            reason: format!("the host already has {}", asked.join(", ")),
        });
        return Ok(());
    }
    let reason = format!("spec: {}", join(&changes));
    plan.writes.push(PlannedWrite {
        reg_id: id,
        register: name,
        host_value: listed.then_some(base),
        value,
        changes,
        reason,
        verdict: judge(id, value, host, features),
    });
    Ok(())
}

/// A `registers` write: written when it differs from the host's value, its changes named by
/// field where the register has a field table.
fn plan_raw(
    plan: &mut Arm64Plan,
    id: u64,
    bits: TriState,
    host: &HostView,
    features: VcpuFeatureSet,
) -> Result<(), PlanError> {
    let name = reg_id::describe(id);
    let host_value = if host.lists(id) {
        Some(listed_value(host, id)?)
    } else {
        None
    };
    // A bitmap's `x` bits are the host's: over 0 where the host does not list the register.
    let from = host_value.unwrap_or(0);
    let value = bits.apply(from);
    if host_value == Some(value) {
        plan.unchanged.push(PlanNote {
            reg_id: id,
            register: name,
            reason: format!("the host already has {value:#018x} (spec: registers)"),
        });
        return Ok(());
    }
    let changes: Vec<Change> = field_differences(id, from, value)
        .into_iter()
        .map(|d| Change {
            what: d.field.unwrap_or("value").to_string(),
            from: d.old,
            to: d.new,
        })
        .collect();
    let asked = if bits.is_whole() {
        format!("{value:#018x}")
    } else {
        format!("{bits} (the host's {from:#018x} → {value:#018x})")
    };
    let reason = format!("spec: registers = {asked}: {}", join(&changes));
    plan.writes.push(PlannedWrite {
        reg_id: id,
        register: name,
        host_value,
        value,
        changes,
        reason,
        verdict: judge(id, value, host, features),
    });
    Ok(())
}

/// A whole-register request (PSCI_VERSION): written when it differs from the host's value.
fn plan_register(
    plan: &mut Arm64Plan,
    id: u64,
    value: u64,
    change: impl Fn(u64) -> Change,
    reason: String,
    host: &HostView,
    features: VcpuFeatureSet,
) -> Result<(), PlanError> {
    let name = reg_id::describe(id);
    let host_value = if host.lists(id) {
        Some(listed_value(host, id)?)
    } else {
        None
    };
    if host_value == Some(value) {
        plan.unchanged.push(PlanNote {
            reg_id: id,
            register: name,
            reason: format!("the host already has {value:#x} ({reason})"),
        });
        return Ok(());
    }
    plan.writes.push(PlannedWrite {
        reg_id: id,
        register: name,
        host_value,
        value,
        changes: vec![change(host_value.unwrap_or(0))],
        reason,
        verdict: judge(id, value, host, features),
    });
    Ok(())
}

fn plan_bitmap(
    plan: &mut Arm64Plan,
    register: FirmwareRegister,
    requests: &[(HypercallService, bool)],
    host: &HostView,
    features: VcpuFeatureSet,
) -> Result<(), PlanError> {
    let id = register.id();
    let asked: Vec<String> = requests
        .iter()
        .map(|(service, on)| format!("{service} = {on}"))
        .collect();
    let reason = format!("spec: hypercalls {}", asked.join(", "));
    if !host.lists(id) && requests.iter().all(|(_, on)| !on) {
        plan.unchanged.push(PlanNote {
            reg_id: id,
            register: register.name().to_string(),
            reason: format!(
                "this kernel has no {register}, so it offers none of its services ({reason})"
            ),
        });
        return Ok(());
    }
    let base = if host.lists(id) {
        listed_value(host, id)?
    } else {
        0
    };
    let value = requests.iter().fold(base, |value, (service, on)| {
        if *on {
            value | service.mask()
        } else {
            value & !service.mask()
        }
    });
    let changes: Vec<Change> = requests
        .iter()
        .filter(|(service, _)| (base ^ value) & service.mask() != 0)
        .map(|(service, _)| Change {
            what: service.name().to_string(),
            from: u64::from(base & service.mask() != 0),
            to: u64::from(value & service.mask() != 0),
        })
        .collect();
    if host.lists(id) && changes.is_empty() {
        plan.unchanged.push(PlanNote {
            reg_id: id,
            register: register.name().to_string(),
            reason: format!("the host already has {reason}"),
        });
        return Ok(());
    }
    plan.writes.push(PlannedWrite {
        reg_id: id,
        register: register.name().to_string(),
        host_value: host.lists(id).then_some(base),
        value,
        changes,
        reason,
        verdict: judge(id, value, host, features),
    });
    Ok(())
}

fn plan_unknown_registers(
    plan: &mut Arm64Plan,
    policy: UnknownRegisterPolicy,
    host: &HostView,
    features: VcpuFeatureSet,
) -> Result<(), PlanError> {
    let unknown: Vec<UnknownRegister> = firmware::unknown_registers(&host.register_ids)
        .into_iter()
        .map(|(id, family)| UnknownRegister {
            reg_id: id,
            register: reg_id::describe(id),
            family,
            host_value: host.value(id),
        })
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    if policy == UnknownRegisterPolicy::Refuse {
        return Err(PlanError::UnknownRegisters { registers: unknown });
    }
    for register in unknown {
        let what = match register.family {
            FirmwareFamily::Bitmap => "a hypercall bitmap",
            FirmwareFamily::Firmware => "a firmware register",
        };
        let (action, reason) = match (policy, register.host_value) {
            (UnknownRegisterPolicy::KeepHost, _) => (
                UnknownRegisterAction::KeepHost,
                format!(
                    "{what} vmfleet does not know; unknown_registers = \"keep-host\": the \
                     kernel's value stays"
                ),
            ),
            (_, Some(0)) => (
                UnknownRegisterAction::AlreadyZero,
                format!(
                    "{what} vmfleet does not know; unknown_registers = \"clear\": it already \
                     holds 0"
                ),
            ),
            _ => (
                UnknownRegisterAction::WriteZero,
                format!(
                    "{what} vmfleet does not know; unknown_registers = \"clear\": written 0 so \
                     that the guest is offered nothing vmfleet cannot name"
                ),
            ),
        };
        if action == UnknownRegisterAction::WriteZero {
            let from = register.host_value.unwrap_or(0);
            plan.writes.push(PlannedWrite {
                reg_id: register.reg_id,
                register: register.register.clone(),
                host_value: register.host_value,
                value: 0,
                changes: vec![Change {
                    what: "value".to_string(),
                    from,
                    to: 0,
                }],
                reason: reason.clone(),
                verdict: judge(register.reg_id, 0, host, features),
            });
        }
        plan.unknown_registers.push(UnknownRegisterDecision {
            reg_id: register.reg_id,
            register: register.register,
            family: register.family,
            host_value: register.host_value,
            action,
            reason,
        });
    }
    Ok(())
}

/// [`judge_before_run`], with what a refusal for want of capability 239 means for this VM: the
/// fleet enables the capability whenever the host offers it and the spec changes MIDR_EL1,
/// REVIDR_EL1 or AIDR_EL1, so a VM without it is on a host without it. The planner's verdict on
/// every write, and `ctl set-model`'s before the first run.
pub fn judge(id: u64, value: u64, host: &HostView, features: VcpuFeatureSet) -> Verdict {
    match judge_before_run(id, value, host, features) {
        Verdict::Refused(refusal) if refusal.rule == Arm64Rule::ImplementationIdNotWritable => {
            let hint = format!(
                "this host's KVM does not offer KVM_CAP_ARM_WRITABLE_IMP_ID_REGS (239, Linux \
                 6.15 and later), so the kernel refuses any change to {} with EINVAL; keep the \
                 host's value {:#x}",
                reg_id::describe(id),
                refusal.limit
            );
            Verdict::Refused(refusal.with_hint(Some(hint)))
        }
        verdict => verdict,
    }
}
