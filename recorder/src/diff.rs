//! Where two calls differ, narrower than their one-line renderings: the first differing CPUID
//! entry and register, the first differing word of an array, or the fields a rendering omits.

use crate::call::TraceCall;
use vcpu::VcpuCall;
use vcpu::hypervisor::cpuid::{CpuidEntry, CpuidTable};

/// A short description of where `actual` departs from the recorded `expected`, or an empty string
/// when the two renderings already show it (different kinds of call, different plain values).
pub fn describe_difference(expected: &TraceCall, actual: &TraceCall) -> String {
    if expected == actual {
        return String::new();
    }
    match (expected, actual) {
        (
            TraceCall::Vcpu(VcpuCall::SetCpuid2 { table: recorded }),
            TraceCall::Vcpu(VcpuCall::SetCpuid2 { table: now }),
        ) => table_difference(recorded, now),
        (
            TraceCall::Vcpu(VcpuCall::ArmVcpuInit {
                target: t1,
                features: f1,
            }),
            TraceCall::Vcpu(VcpuCall::ArmVcpuInit {
                target: t2,
                features: f2,
            }),
        ) if t1 == t2 => first_word_difference("features", f1, f2),
        _ if expected.to_string() == actual.to_string() => {
            format!("recorded {expected:?}, this run {actual:?}")
        }
        _ => String::new(),
    }
}

/// The first difference between two CPUID tables, by position (order matters to KVM).
pub fn table_difference(recorded: &CpuidTable, now: &CpuidTable) -> String {
    let first = recorded
        .entries
        .iter()
        .zip(&now.entries)
        .enumerate()
        .find(|(_, (r, n))| r != n)
        .map(|(i, (r, n))| format!("first difference at entry {i}: {}", entry_difference(r, n)));
    let count = (recorded.len() != now.len()).then(|| {
        format!(
            "recorded table has {} entries, this run's has {}",
            recorded.len(),
            now.len()
        )
    });
    match (count, first) {
        (Some(c), Some(f)) => format!("{c}; {f}"),
        (Some(c), None) => c,
        (None, Some(f)) => f,
        (None, None) => String::new(),
    }
}

fn entry_difference(r: &CpuidEntry, n: &CpuidEntry) -> String {
    if (r.function, r.index) != (n.function, n.index) {
        return format!(
            "recorded leaf {:#x}.{}, this run leaf {:#x}.{}",
            r.function, r.index, n.function, n.index
        );
    }
    let fields = [
        ("flags", r.flags, n.flags),
        ("eax", r.eax, n.eax),
        ("ebx", r.ebx, n.ebx),
        ("ecx", r.ecx, n.ecx),
        ("edx", r.edx, n.edx),
    ];
    let changed: Vec<String> = fields
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(name, a, b)| format!("{name} recorded {a:#010x}, this run {b:#010x}"))
        .collect();
    format!("leaf {:#x}.{} {}", r.function, r.index, changed.join(", "))
}

fn first_word_difference(what: &str, recorded: &[u32], now: &[u32]) -> String {
    recorded
        .iter()
        .zip(now)
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| format!("{what}[{i}] recorded {a:#x}, this run {b:#x}"))
        .unwrap_or_default()
}
