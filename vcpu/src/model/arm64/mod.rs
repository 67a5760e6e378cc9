//! The arm64 guest CPU model, as data and rules: register ids, the ID-register field tables, the
//! firmware pseudo-registers, KVM's rules for writing them, and the planner that turns a spec into
//! judged writes.
//!
//! Owns, one concept per module (the same parts as [`super::x86`], plus what arm64 adds):
//! - catalog ([`catalog`]): the ID-space registers by name (every feature-ID slot, CTR, CLIDR,
//!   MIDR, …); [`fields`]: the fields of the ID registers vmfleet can change, with the type KVM
//!   judges a change by; [`features`]: the `KVM_ARM_VCPU_INIT` features and the kernel's rules
//!   for combining them; [`firmware`]: PSCI version, SMCCC workarounds, hypercall bitmaps and
//!   their named services; [`smccc`]: the SMCCC function ids KVM serves (shared with the built-in
//!   guest, which makes the calls); [`kernels`]: what kernels after 6.12 changed, each change
//!   with the host facts that show it (never a version string);
//! - build ([`model`]): the spec (serde) and the planner that turns it into ordered, judged
//!   writes;
//! - validate ([`validate`]): KVM's acceptance rules, applied before the kernel sees a write, and
//!   the arm64 rules of the pre-run lock (its lock classes, which the lock policy applies);
//! - drift ([`drift`]): what the kernel holds after the writes against what the plan expected
//!   to read back, what the built-in guest saw against what is held, and the digest of a vCPU's
//!   model registers (the fleet reads the values; the differences are named through
//!   [`validate::register_changes`]);
//! - the encodings: [`reg_id`] (the 64-bit `KVM_{GET,SET}_ONE_REG` id and which family an id
//!   belongs to), [`sysreg`] (`(op0, op1, CRn, CRm, op2)` ↔ id, and the index into the 192
//!   writable masks), [`host`] (what the kernel reported about one VM, the input every judgement
//!   needs).
//!
//! Must not: do I/O, call a backend, the guests or the runtime, or branch on the host
//! architecture: every rule is a function of values the kernel reported (the register list, the
//! values read right after the first `KVM_ARM_VCPU_INIT`, the writable masks). So a model is
//! planned, judged and tested the same way on an x86 development machine as on an arm64 host, and
//! a recorded arm64 trace replays anywhere.
//!
//! Where the semantics reference leaves a rule open, the code takes the reading that refuses
//! rather than the one that might accept, and says so: a refusal vmfleet predicts wrongly costs a
//! spec edit; an acceptance it predicts wrongly costs a fleet that runs a model nobody asked for.

#![deny(missing_docs)]

pub mod catalog;
pub mod drift;
pub mod features;
pub mod fields;
pub mod firmware;
pub mod host;
pub mod kernels;
pub mod model;
pub mod reg_id;
pub mod smccc;
pub mod sysreg;
pub mod validate;

use crate::model::suggest;

pub use catalog::{Register, RegisterRole, Scope};
pub use features::{VcpuFeature, VcpuFeatureSet};
pub use fields::{FieldRef, IdField, SafeType};
pub use firmware::{FirmwareRegister, HypercallService, PsciVersion};
pub use host::HostView;
pub use model::{Arm64ModelSpec, Arm64Plan, PlanError, SpecError, UnknownRegisterPolicy, plan};
pub use reg_id::RegClass;
pub use sysreg::SysReg;
pub use validate::{Arm64Refusal, Arm64Rule, LockClass, Verdict, WritableMasks, lock_class};
