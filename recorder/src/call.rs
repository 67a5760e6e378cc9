//! What a trace event records as its call: a backend call (`vcpu::Call`, one of the hypervisor
//! boundary's calls or a vCPU's run decision) or a fleet control request (`protocol::Request`).
//!
//! The vcpu crate knows no fleets, so control requests are not among its calls; the trace holds
//! both kinds in one enum whose variants keep the order format-1 traces were written with
//! (bincode 2 writes the variant index): append only.

use protocol::Request;
use serde::{Deserialize, Serialize};
use std::fmt;
use vcpu::{Call, SystemCall, VcpuCall, VmCall};

/// One recorded call, with the layer it was made on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "Call")]
pub enum TraceCall {
    /// A call on `/dev/kvm` itself, on `Stream::Host`.
    System(SystemCall),
    /// A call on a VM, on its `Stream::Vm`.
    Vm(VmCall),
    /// A call on a vCPU, on its `Stream::Vcpu`.
    Vcpu(VcpuCall),
    /// A vCPU thread's control decision (see `vcpu::RunDecision`); reply `Reply::Decision`.
    Decision,
    /// A fleet control request (never `list`), on `Stream::Control`; reply `Reply::Control`, the
    /// reply's one-line summary.
    Control(Request),
}

impl From<Call> for TraceCall {
    fn from(call: Call) -> TraceCall {
        match call {
            Call::System(c) => TraceCall::System(c),
            Call::Vm(c) => TraceCall::Vm(c),
            Call::Vcpu(c) => TraceCall::Vcpu(c),
            Call::Decision => TraceCall::Decision,
        }
    }
}

impl From<Request> for TraceCall {
    fn from(request: Request) -> TraceCall {
        TraceCall::Control(request)
    }
}

impl fmt::Display for TraceCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceCall::System(c) => c.fmt(f),
            TraceCall::Vm(c) => c.fmt(f),
            TraceCall::Vcpu(c) => c.fmt(f),
            // Rendered as vcpu renders it, so transcripts read as before.
            TraceCall::Decision => Call::Decision.fmt(f),
            TraceCall::Control(request) => request.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Control requests sit at variant 4 of the event's call, as format-1 traces have them.
    #[test]
    fn control_requests_keep_their_format_1_bytes() {
        let config = bincode::config::standard();
        let cases = [
            (
                Request::Start {
                    vm: "a".into(),
                    paused: true,
                },
                vec![4u8, 11, 1, 97],
            ),
            (Request::ShutdownForExit, vec![4, 12]),
            (Request::StopAll, vec![4, 9]),
        ];
        for (request, bytes) in cases {
            let call = TraceCall::Control(request);
            let encoded = bincode::serde::encode_to_vec(&call, config).unwrap();
            assert_eq!(encoded, bytes, "{call}");
            let (decoded, _): (TraceCall, _) =
                bincode::serde::decode_from_slice(&bytes, config).unwrap();
            assert_eq!(decoded, call);
        }
        let decision = bincode::serde::encode_to_vec(TraceCall::Decision, config).unwrap();
        assert_eq!(decision, [3]);
    }

    /// System calls keep their format-1 variant numbers; `GET_EMULATED_CPUID`, added after
    /// format 1, is appended (variant 5), so no older call's bytes changed.
    #[test]
    fn system_calls_keep_their_format_1_bytes() {
        let config = bincode::config::standard();
        let cases = [
            (SystemCall::GetApiVersion, vec![0u8, 0]),
            (SystemCall::CheckExtension { cap: 95 }, vec![0, 1, 95]),
            (SystemCall::GetVcpuMmapSize, vec![0, 2]),
            (SystemCall::GetSupportedCpuid, vec![0, 3]),
            (
                SystemCall::CreateVm {
                    vm: vcpu::VmId(1),
                    name: "a".into(),
                },
                vec![0, 4, 1, 1, 97],
            ),
            (SystemCall::GetEmulatedCpuid, vec![0, 5]),
        ];
        for (call, bytes) in cases {
            let call = TraceCall::System(call);
            let encoded = bincode::serde::encode_to_vec(&call, config).unwrap();
            assert_eq!(encoded, bytes, "{call}");
            let (decoded, _): (TraceCall, _) =
                bincode::serde::decode_from_slice(&bytes, config).unwrap();
            assert_eq!(decoded, call);
        }
        assert_eq!(
            TraceCall::System(SystemCall::GetEmulatedCpuid).to_string(),
            "GET_EMULATED_CPUID"
        );
    }

    #[test]
    fn backend_calls_convert_and_render_as_vcpu_renders_them() {
        for call in [
            Call::Decision,
            Call::Vcpu(VcpuCall::Run),
            Call::Vm(VmCall::Destroy),
            Call::System(SystemCall::GetApiVersion),
        ] {
            let shown = call.to_string();
            assert_eq!(TraceCall::from(call).to_string(), shown);
        }
        assert_eq!(
            TraceCall::from(Request::StopAll).to_string(),
            "stop all".to_string()
        );
    }
}
