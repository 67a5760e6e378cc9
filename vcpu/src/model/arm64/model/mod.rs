//! The spec side of the arm64 CPU model ([`spec`]: what a fleet file asks for) and the planner
//! ([`mod@plan`]: the ordered, judged writes that make a VM hold it), with the spec's `registers`
//! table of whole-register writes ([`registers`]).

pub mod plan;
pub mod registers;
pub mod spec;

pub use plan::{
    Arm64Plan, Change, PlanError, PlanNote, PlannedWrite, UnknownRegister, UnknownRegisterAction,
    UnknownRegisterDecision, judge, plan,
};
pub use registers::{Assignments, RegisterRequests};
pub use spec::{
    Arm64ModelSpec, IdFieldRequests, ServiceRequests, SpecError, UnknownRegisterPolicy,
};
