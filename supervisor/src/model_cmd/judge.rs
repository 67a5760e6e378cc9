//! `vmfleet model judge FP`: calls as JSON lines on stdin, one answer per line on stdout, from
//! the model engine of the host the fingerprint describes, so scripts can ask "what would this
//! host say?" without that host.
//!
//! The line format is documented on the command (`cli::ModelCommand::Judge`) and the answers'
//! schema is `vmfleet.model-judge.v1` (supervisor/schemas/model-judge.v1.schema.json). A line
//! that is not a call gets an `error` answer naming what is wrong; nothing panics, and the
//! engine's state carries over from line to line (a `run` seals the VM for the lines after it).

use super::load_facts;
use crate::common::emit;
use crate::exit::Status;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::io::BufRead;
use std::path::Path;
use vcpu::hypervisor::cpuid::{CpuidEntry, CpuidTable};
use vcpu::model::engine::{Engine, Prediction};
use vcpu::{Call, Origin, Outcome, Reply, Stream, SystemCall, VcpuCall, VcpuId, VmCall, VmId};

/// The version string every answer line carries.
pub const MODEL_JUDGE_SCHEMA: &str = "vmfleet.model-judge.v1";

fn number(object: &Map<String, Value>, key: &str) -> Result<Option<u64>> {
    match object.get(key) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .with_context(|| format!("\"{key}\": {n} is not a non-negative integer")),
        Some(Value::String(s)) => {
            let digits = s
                .strip_prefix("0x")
                .with_context(|| format!("\"{key}\": {s:?} is not a number or 0x-hex string"))?;
            u64::from_str_radix(digits, 16)
                .map(Some)
                .with_context(|| format!("\"{key}\": {s:?} is not a hex number"))
        }
        Some(other) => bail!("\"{key}\": {other} is not a number"),
    }
}

fn required(object: &Map<String, Value>, key: &str, call: &str) -> Result<u64> {
    number(object, key)?.with_context(|| format!("{call} needs \"{key}\""))
}

fn small(value: u64, key: &str) -> Result<u32> {
    u32::try_from(value).with_context(|| format!("\"{key}\": {value} is over 32 bits"))
}

/// The stream and call one line asks about.
pub fn parse_line(line: &str) -> Result<(Stream, Call)> {
    let value: Value = serde_json::from_str(line).context("not JSON")?;
    let Value::Object(object) = value else {
        bail!("not a JSON object");
    };
    let name = match object.get("call") {
        Some(Value::String(name)) => name.as_str(),
        Some(other) => bail!("\"call\": {other} is not a string"),
        None => bail!("no \"call\""),
    };
    let vm = VmId(small(number(&object, "vm")?.unwrap_or(0), "vm")?);
    let vcpu = VcpuId(small(number(&object, "vcpu")?.unwrap_or(0), "vcpu")?);
    let on_vcpu = Stream::Vcpu(vm, vcpu);
    Ok(match name {
        "check_extension" => (
            Stream::Host,
            Call::System(SystemCall::CheckExtension {
                cap: small(required(&object, "cap", name)?, "cap")?,
            }),
        ),
        "get_supported_cpuid" => (Stream::Host, Call::System(SystemCall::GetSupportedCpuid)),
        "get_emulated_cpuid" => (Stream::Host, Call::System(SystemCall::GetEmulatedCpuid)),
        "arm_preferred_target" => (Stream::Vm(vm), Call::Vm(VmCall::ArmPreferredTarget)),
        "arm_get_reg_writable_masks" => (Stream::Vm(vm), Call::Vm(VmCall::ArmGetRegWritableMasks)),
        "enable_cap" => (
            Stream::Vm(vm),
            Call::Vm(VmCall::EnableCap {
                cap: small(required(&object, "cap", name)?, "cap")?,
                flags: 0,
                args: [0; 4],
            }),
        ),
        "set_cpuid2" => {
            let table = object.get("table").context("set_cpuid2 needs \"table\"")?;
            let entries: Vec<CpuidEntry> = serde_json::from_value(table.clone()).context(
                "\"table\": not a list of {function,index,flags,eax,ebx,ecx,edx} entries",
            )?;
            (
                on_vcpu,
                Call::Vcpu(VcpuCall::SetCpuid2 {
                    table: CpuidTable::new(entries),
                }),
            )
        }
        "get_cpuid2" => (on_vcpu, Call::Vcpu(VcpuCall::GetCpuid2)),
        "arm_vcpu_init" => {
            let features = small(number(&object, "features")?.unwrap_or(0), "features")?;
            (
                on_vcpu,
                Call::Vcpu(VcpuCall::ArmVcpuInit {
                    target: small(required(&object, "target", name)?, "target")?,
                    features: [features, 0, 0, 0, 0, 0, 0],
                }),
            )
        }
        "get_reg_list" => (on_vcpu, Call::Vcpu(VcpuCall::GetRegList)),
        "get_one_reg" => (
            on_vcpu,
            Call::Vcpu(VcpuCall::GetOneReg {
                id: required(&object, "id", name)?,
            }),
        ),
        "set_one_reg" => (
            on_vcpu,
            Call::Vcpu(VcpuCall::SetOneReg {
                id: required(&object, "id", name)?,
                value: required(&object, "value", name)?,
            }),
        ),
        "run" => (on_vcpu, Call::Vcpu(VcpuCall::Run)),
        other => bail!(
            "unknown call {other:?} (check_extension, get_supported_cpuid, get_emulated_cpuid, \
             set_cpuid2, get_cpuid2, arm_preferred_target, arm_get_reg_writable_masks, \
             enable_cap, arm_vcpu_init, get_reg_list, get_one_reg, set_one_reg, run)"
        ),
    })
}

fn hex(v: u64) -> Value {
    Value::String(format!("{v:#x}"))
}

fn reply_json(reply: &Reply) -> Value {
    match reply {
        Reply::Done => Value::Null,
        Reply::Value(v) => hex(*v),
        Reply::Cpuid(table) => json!(table.entries),
        Reply::RegList(ids) | Reply::Masks(ids) => ids.iter().map(|&v| hex(v)).collect(),
        Reply::VcpuInit { target, features } => {
            json!({"target": target, "features": hex(u64::from(features[0]))})
        }
        other => Value::String(other.to_string()),
    }
}

/// One answer line, `schema` first; absent fields are left out (`ok` is `null` for an unknown).
#[derive(Default, Serialize)]
struct Answer {
    schema: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ok: Option<Option<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errno: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    judged: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn outcome_answer(outcome: &Outcome) -> Answer {
    match outcome {
        Ok(reply) => Answer {
            ok: Some(Some(true)),
            reply: Some(reply_json(reply)),
            ..Answer::new()
        },
        Err(failure) => Answer {
            ok: Some(Some(false)),
            errno: Some(failure.errno.to_string()),
            origin: Some(match failure.origin {
                Origin::Kernel => "kernel",
                Origin::Lock => "vmfleet_lock",
            }),
            ..Answer::new()
        },
    }
}

impl Answer {
    fn new() -> Answer {
        Answer {
            schema: MODEL_JUDGE_SCHEMA,
            ..Answer::default()
        }
    }
}

/// The answer to line `number` (1-based, counting blank lines) of the input, as one line of JSON
/// (never fails: a bad line is an `error` answer that names its line).
pub fn answer(engine: &mut Engine, number: usize, line: &str) -> String {
    let answer = match parse_line(line) {
        Err(e) => Answer {
            error: Some(format!("line {number}: {e:#}")),
            ..Answer::new()
        },
        Ok((stream, call)) => match engine.call(stream, &call) {
            Prediction::Judged(outcome) => outcome_answer(&outcome),
            Prediction::Unknown { why } => Answer {
                ok: Some(None),
                unknown: Some(why),
                ..Answer::new()
            },
            Prediction::NotJudged => Answer {
                ok: Some(Some(true)),
                judged: Some(false),
                ..Answer::new()
            },
        },
    };
    serde_json::to_string(&answer).unwrap_or_else(|e| {
        format!("{{\"schema\":\"{MODEL_JUDGE_SCHEMA}\",\"error\":\"rendering the answer: {e}\"}}")
    })
}

/// `vmfleet model judge FP`: answer each line of stdin (blank lines are skipped).
pub fn run(fingerprint: &Path) -> Result<Status> {
    let mut engine = Engine::new(load_facts(fingerprint)?);
    for (index, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.with_context(|| format!("reading line {} of stdin", index + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        emit(&(answer(&mut engine, index + 1, &line) + "\n"))?;
    }
    Ok(Status::Success)
}
