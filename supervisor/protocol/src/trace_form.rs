//! A [`Request`]'s trace form: its serde `Serialize`/`Deserialize`, the one place that says how a
//! trace holds a control request.
//!
//! Traces of format 1 hold control requests in the layout of the enum the vcpu crate once had for
//! them (`ControlCall`): bincode 2 with serde writes a variant's index, then its fields, and the
//! JSON of `trace show` names the variant. [`Form`] mirrors that enum exactly: the same variant
//! names, fields and order, and it must never change, or every recorded trace stops reading. It
//! differs from [`Request`] in three ways, which the conversions below are about: a paused start is
//! its own variant (`StartPaused`, added last, so older traces kept their numbers), a `set-model`
//! with arm64 writes is its own variant too (`SetModelWrites`, appended after
//! `ShutdownForExit`; one without writes keeps the format-1 `SetModel` bytes), and `list` has no
//! form at all (it is never recorded; recording it is an error).

use crate::Request;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The format-1 layout of a control request. Variant order is the trace format: append only.
#[derive(Serialize, Deserialize)]
#[serde(rename = "ControlCall")]
enum Form {
    Create {
        spec: String,
    },
    Start {
        vm: String,
    },
    Pause {
        vm: String,
    },
    Resume {
        vm: String,
    },
    Stop {
        vm: String,
    },
    Wait {
        vm: String,
    },
    Remove {
        vm: String,
    },
    Model {
        vm: String,
    },
    SetModel {
        vm: String,
        hide: Vec<String>,
    },
    StopAll,
    Shutdown,
    StartPaused {
        vm: String,
    },
    ShutdownForExit,
    SetModelWrites {
        vm: String,
        hide: Vec<String>,
        set: Vec<String>,
    },
}

impl Form {
    /// The form of `request`, or `None` for `list`, which has none.
    fn of(request: &Request) -> Option<Form> {
        let vm = |vm: &String| vm.clone();
        Some(match request {
            Request::List => return None,
            Request::Create { spec } => Form::Create { spec: spec.clone() },
            Request::Start {
                vm: v,
                paused: false,
            } => Form::Start { vm: vm(v) },
            Request::Start {
                vm: v,
                paused: true,
            } => Form::StartPaused { vm: vm(v) },
            Request::Pause { vm: v } => Form::Pause { vm: vm(v) },
            Request::Resume { vm: v } => Form::Resume { vm: vm(v) },
            Request::Stop { vm: v } => Form::Stop { vm: vm(v) },
            Request::Wait { vm: v } => Form::Wait { vm: vm(v) },
            Request::Remove { vm: v } => Form::Remove { vm: vm(v) },
            Request::Model { vm: v } => Form::Model { vm: vm(v) },
            Request::SetModel { vm: v, hide, set } if set.is_empty() => Form::SetModel {
                vm: vm(v),
                hide: hide.clone(),
            },
            Request::SetModel { vm: v, hide, set } => Form::SetModelWrites {
                vm: vm(v),
                hide: hide.clone(),
                set: set.clone(),
            },
            Request::StopAll => Form::StopAll,
            Request::Shutdown => Form::Shutdown,
            Request::ShutdownForExit => Form::ShutdownForExit,
        })
    }

    fn into_request(self) -> Request {
        match self {
            Form::Create { spec } => Request::Create { spec },
            Form::Start { vm } => Request::Start { vm, paused: false },
            Form::StartPaused { vm } => Request::Start { vm, paused: true },
            Form::Pause { vm } => Request::Pause { vm },
            Form::Resume { vm } => Request::Resume { vm },
            Form::Stop { vm } => Request::Stop { vm },
            Form::Wait { vm } => Request::Wait { vm },
            Form::Remove { vm } => Request::Remove { vm },
            Form::Model { vm } => Request::Model { vm },
            Form::SetModel { vm, hide } => Request::SetModel {
                vm,
                hide,
                set: Vec::new(),
            },
            Form::SetModelWrites { vm, hide, set } => Request::SetModel { vm, hide, set },
            Form::StopAll => Request::StopAll,
            Form::Shutdown => Request::Shutdown,
            Form::ShutdownForExit => Request::ShutdownForExit,
        }
    }
}

impl Serialize for Request {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match Form::of(self) {
            Some(form) => form.serialize(serializer),
            None => Err(serde::ser::Error::custom(format!(
                "the control request `{self}` is never recorded, so it has no trace form"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Request, D::Error> {
        Form::deserialize(deserializer).map(Form::into_request)
    }
}

#[cfg(test)]
mod tests;
