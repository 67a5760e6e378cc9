//! The catalog of named x86 CPUID feature bits: what users, specs and transcripts say (`avx512f`)
//! instead of positions (`7.0.ebx[16]`).
//!
//! # Naming
//! - Architectural and vendor bits use the lowercase Linux names from
//!   `arch/x86/include/asm/cpufeatures.h`: the quoted `/proc/cpuinfo` name where there is one
//!   (`pni`, `sse4_2`, `pdpe1gb`, `dts`, `monitor`), else the lowercased `X86_FEATURE_` macro name
//!   (`osxsave`, `amd_ibpb`, `spec_ctrl`). Bits Linux only knows through KVM's
//!   `arch/x86/kvm/reverse_cpuid.h` (leaf 7.1 EDX) use those macro names; the few bits neither
//!   defines use the Intel SDM / QEMU spelling (`prefetchwt1`, `pks`, `rao_int`, `hreset`).
//! - Leaf 0x80000007 EDX bit 8 (invariant TSC) is `constant_tsc`, as Linux and KVM
//!   (`KVM_X86_FEATURE_CONSTANT_TSC`) call it; `invtsc` (QEMU's name) is accepted as an alias.
//! - KVM's paravirtual leaf 0x40000001 uses the uapi names with `KVM_FEATURE_` stripped and
//!   lowercased, except for the clock sources, which take their well-known QEMU names
//!   (`kvmclock` = `CLOCKSOURCE`, `kvmclock2` = `CLOCKSOURCE2`, `nopiodelay` = `NOP_IO_DELAY`,
//!   `kvmclock_stable_bit` = `CLOCKSOURCE_STABLE_BIT`); the uapi spellings are aliases.
//!   `kvm_hints_realtime` is EDX bit 0 of that leaf.
//! - Leaf 0x80000001 EDX repeats leaf 1 EDX bits 0-9, 12-17, 23 and 24 on AMD (fpu, vme, ..., mmx,
//!   fxsr). Linux gives them no names of their own ("Don't duplicate feature flags which are
//!   redundant with Intel!"), so neither does this catalog: they render by position
//!   (`0x80000001.0.edx[0]`) and cannot be hidden by name. Hide the leaf 1 bit instead.
//! - Multi-bit fields (APIC ids, counts, address widths, XSAVE sizes) are not features and are not
//!   in the catalog.
//!
//! Names are unique, every `(leaf, subleaf, reg, bit)` appears at most once, and leaves without
//! subleaves use subleaf 0 (tests enforce all three).
//!
//! # Rendering positions
//! A position renders as `leaf.subleaf.reg[bit]` with leaves below 10 bare (`7.0.ebx[16]`) and
//! the others in hex (`0xd.1.eax[3]`, `0x80000001.0.edx[29]`); [`position`] and
//! [`bit_position`] are the one place that format lives.

use super::{CpuidReg, CpuidTable};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A named CPUID feature bit.
///
/// Serializes as its name; a `&'static Feature` deserializes from a name through [`by_name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Feature {
    /// The name `hide` and reports use (see the naming rules above: Linux's where it has one).
    pub name: &'static str,
    /// The CPUID leaf (EAX input) the bit is in.
    pub leaf: u32,
    /// The subleaf (ECX input); 0 for leaves without subleaves.
    pub subleaf: u32,
    /// The output register the bit is in.
    pub reg: CpuidReg,
    /// The bit's position in `reg` (0..=31).
    pub bit: u8,
}

impl Feature {
    /// The feature's bit as a mask of its register.
    pub fn mask(&self) -> u32 {
        1 << self.bit
    }

    /// Whether `table` has this bit set, by KVM's lookup rule; `None` when the table has no entry
    /// for the feature's leaf and subleaf.
    pub fn is_set_in(&self, table: &CpuidTable) -> Option<bool> {
        table
            .lookup(self.leaf, self.subleaf)
            .map(|e| e.reg(self.reg) & self.mask() != 0)
    }

    /// `7.0.ebx[16]`.
    pub fn position(&self) -> String {
        bit_position(self.leaf, self.subleaf, self.reg, u32::from(self.bit))
    }
}

impl fmt::Display for Feature {
    /// `avx512f (7.0.ebx[16])`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.position())
    }
}

impl Serialize for Feature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name)
    }
}

impl<'de> Deserialize<'de> for &'static Feature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        by_name(&name).ok_or_else(|| {
            let hint = suggest(&name)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            serde::de::Error::custom(format!("unknown CPUID feature `{name}`{hint}"))
        })
    }
}

/// A leaf as positions print it: bare below 10 (where decimal and hex agree), else `0x…`.
fn leaf_str(leaf: u32) -> String {
    if leaf < 10 {
        leaf.to_string()
    } else {
        format!("{leaf:#x}")
    }
}

/// `leaf.subleaf.reg`, e.g. `7.0.ebx`, `0x80000001.0.edx`.
pub fn position(leaf: u32, subleaf: u32, reg: CpuidReg) -> String {
    format!("{}.{subleaf}.{reg}", leaf_str(leaf))
}

/// `leaf.subleaf.reg[bit]`, e.g. `7.0.ebx[16]`, `0xd.1.eax[3]`.
pub fn bit_position(leaf: u32, subleaf: u32, reg: CpuidReg, bit: u32) -> String {
    format!("{}[{bit}]", position(leaf, subleaf, reg))
}

const fn f(name: &'static str, leaf: u32, subleaf: u32, reg: CpuidReg, bit: u8) -> Feature {
    Feature {
        name,
        leaf,
        subleaf,
        reg,
        bit,
    }
}

use CpuidReg::{Eax, Ebx, Ecx, Edx};

/// Every named feature bit, grouped by register in CPUID order.
pub static CATALOG: &[Feature] = &[
    // ---- CPUID 0x1 EDX (Linux word 0). Bits 10 and 20 are reserved.
    f("fpu", 0x1, 0, Edx, 0),
    f("vme", 0x1, 0, Edx, 1),
    f("de", 0x1, 0, Edx, 2),
    f("pse", 0x1, 0, Edx, 3),
    f("tsc", 0x1, 0, Edx, 4),
    f("msr", 0x1, 0, Edx, 5),
    f("pae", 0x1, 0, Edx, 6),
    f("mce", 0x1, 0, Edx, 7),
    f("cx8", 0x1, 0, Edx, 8),
    f("apic", 0x1, 0, Edx, 9),
    f("sep", 0x1, 0, Edx, 11),
    f("mtrr", 0x1, 0, Edx, 12),
    f("pge", 0x1, 0, Edx, 13),
    f("mca", 0x1, 0, Edx, 14),
    f("cmov", 0x1, 0, Edx, 15),
    f("pat", 0x1, 0, Edx, 16),
    f("pse36", 0x1, 0, Edx, 17),
    f("pn", 0x1, 0, Edx, 18),
    f("clflush", 0x1, 0, Edx, 19),
    f("dts", 0x1, 0, Edx, 21),
    f("acpi", 0x1, 0, Edx, 22),
    f("mmx", 0x1, 0, Edx, 23),
    f("fxsr", 0x1, 0, Edx, 24),
    f("sse", 0x1, 0, Edx, 25),
    f("sse2", 0x1, 0, Edx, 26),
    f("ss", 0x1, 0, Edx, 27),
    f("ht", 0x1, 0, Edx, 28),
    f("tm", 0x1, 0, Edx, 29),
    f("ia64", 0x1, 0, Edx, 30),
    f("pbe", 0x1, 0, Edx, 31),
    // ---- CPUID 0x1 ECX (Linux word 4). Bit 16 is reserved.
    f("pni", 0x1, 0, Ecx, 0),
    f("pclmulqdq", 0x1, 0, Ecx, 1),
    f("dtes64", 0x1, 0, Ecx, 2),
    f("monitor", 0x1, 0, Ecx, 3),
    f("ds_cpl", 0x1, 0, Ecx, 4),
    f("vmx", 0x1, 0, Ecx, 5),
    f("smx", 0x1, 0, Ecx, 6),
    f("est", 0x1, 0, Ecx, 7),
    f("tm2", 0x1, 0, Ecx, 8),
    f("ssse3", 0x1, 0, Ecx, 9),
    f("cid", 0x1, 0, Ecx, 10),
    f("sdbg", 0x1, 0, Ecx, 11),
    f("fma", 0x1, 0, Ecx, 12),
    f("cx16", 0x1, 0, Ecx, 13),
    f("xtpr", 0x1, 0, Ecx, 14),
    f("pdcm", 0x1, 0, Ecx, 15),
    f("pcid", 0x1, 0, Ecx, 17),
    f("dca", 0x1, 0, Ecx, 18),
    f("sse4_1", 0x1, 0, Ecx, 19),
    f("sse4_2", 0x1, 0, Ecx, 20),
    f("x2apic", 0x1, 0, Ecx, 21),
    f("movbe", 0x1, 0, Ecx, 22),
    f("popcnt", 0x1, 0, Ecx, 23),
    f("tsc_deadline_timer", 0x1, 0, Ecx, 24),
    f("aes", 0x1, 0, Ecx, 25),
    f("xsave", 0x1, 0, Ecx, 26),
    f("osxsave", 0x1, 0, Ecx, 27),
    f("avx", 0x1, 0, Ecx, 28),
    f("f16c", 0x1, 0, Ecx, 29),
    f("rdrand", 0x1, 0, Ecx, 30),
    f("hypervisor", 0x1, 0, Ecx, 31),
    // ---- CPUID 0x7.0 EBX (Linux word 9). Bit 22 (PCOMMIT) was withdrawn.
    f("fsgsbase", 0x7, 0, Ebx, 0),
    f("tsc_adjust", 0x7, 0, Ebx, 1),
    f("sgx", 0x7, 0, Ebx, 2),
    f("bmi1", 0x7, 0, Ebx, 3),
    f("hle", 0x7, 0, Ebx, 4),
    f("avx2", 0x7, 0, Ebx, 5),
    f("fdp_excptn_only", 0x7, 0, Ebx, 6),
    f("smep", 0x7, 0, Ebx, 7),
    f("bmi2", 0x7, 0, Ebx, 8),
    f("erms", 0x7, 0, Ebx, 9),
    f("invpcid", 0x7, 0, Ebx, 10),
    f("rtm", 0x7, 0, Ebx, 11),
    f("cqm", 0x7, 0, Ebx, 12),
    f("zero_fcs_fds", 0x7, 0, Ebx, 13),
    f("mpx", 0x7, 0, Ebx, 14),
    f("rdt_a", 0x7, 0, Ebx, 15),
    f("avx512f", 0x7, 0, Ebx, 16),
    f("avx512dq", 0x7, 0, Ebx, 17),
    f("rdseed", 0x7, 0, Ebx, 18),
    f("adx", 0x7, 0, Ebx, 19),
    f("smap", 0x7, 0, Ebx, 20),
    f("avx512ifma", 0x7, 0, Ebx, 21),
    f("clflushopt", 0x7, 0, Ebx, 23),
    f("clwb", 0x7, 0, Ebx, 24),
    f("intel_pt", 0x7, 0, Ebx, 25),
    f("avx512pf", 0x7, 0, Ebx, 26),
    f("avx512er", 0x7, 0, Ebx, 27),
    f("avx512cd", 0x7, 0, Ebx, 28),
    f("sha_ni", 0x7, 0, Ebx, 29),
    f("avx512bw", 0x7, 0, Ebx, 30),
    f("avx512vl", 0x7, 0, Ebx, 31),
    // ---- CPUID 0x7.0 ECX (Linux word 16). Bits 17-21 are the MAWAU field.
    f("prefetchwt1", 0x7, 0, Ecx, 0),
    f("avx512vbmi", 0x7, 0, Ecx, 1),
    f("umip", 0x7, 0, Ecx, 2),
    f("pku", 0x7, 0, Ecx, 3),
    f("ospke", 0x7, 0, Ecx, 4),
    f("waitpkg", 0x7, 0, Ecx, 5),
    f("avx512_vbmi2", 0x7, 0, Ecx, 6),
    f("shstk", 0x7, 0, Ecx, 7),
    f("gfni", 0x7, 0, Ecx, 8),
    f("vaes", 0x7, 0, Ecx, 9),
    f("vpclmulqdq", 0x7, 0, Ecx, 10),
    f("avx512_vnni", 0x7, 0, Ecx, 11),
    f("avx512_bitalg", 0x7, 0, Ecx, 12),
    f("tme", 0x7, 0, Ecx, 13),
    f("avx512_vpopcntdq", 0x7, 0, Ecx, 14),
    f("la57", 0x7, 0, Ecx, 16),
    f("rdpid", 0x7, 0, Ecx, 22),
    f("bus_lock_detect", 0x7, 0, Ecx, 24),
    f("cldemote", 0x7, 0, Ecx, 25),
    f("movdiri", 0x7, 0, Ecx, 27),
    f("movdir64b", 0x7, 0, Ecx, 28),
    f("enqcmd", 0x7, 0, Ecx, 29),
    f("sgx_lc", 0x7, 0, Ecx, 30),
    f("pks", 0x7, 0, Ecx, 31),
    // ---- CPUID 0x7.0 EDX (Linux word 18).
    f("avx512_4vnniw", 0x7, 0, Edx, 2),
    f("avx512_4fmaps", 0x7, 0, Edx, 3),
    f("fsrm", 0x7, 0, Edx, 4),
    f("avx512_vp2intersect", 0x7, 0, Edx, 8),
    f("srbds_ctrl", 0x7, 0, Edx, 9),
    f("md_clear", 0x7, 0, Edx, 10),
    f("rtm_always_abort", 0x7, 0, Edx, 11),
    f("tsx_force_abort", 0x7, 0, Edx, 13),
    f("serialize", 0x7, 0, Edx, 14),
    f("hybrid_cpu", 0x7, 0, Edx, 15),
    f("tsxldtrk", 0x7, 0, Edx, 16),
    f("pconfig", 0x7, 0, Edx, 18),
    f("arch_lbr", 0x7, 0, Edx, 19),
    f("ibt", 0x7, 0, Edx, 20),
    f("amx_bf16", 0x7, 0, Edx, 22),
    f("avx512_fp16", 0x7, 0, Edx, 23),
    f("amx_tile", 0x7, 0, Edx, 24),
    f("amx_int8", 0x7, 0, Edx, 25),
    f("spec_ctrl", 0x7, 0, Edx, 26),
    f("intel_stibp", 0x7, 0, Edx, 27),
    f("flush_l1d", 0x7, 0, Edx, 28),
    f("arch_capabilities", 0x7, 0, Edx, 29),
    f("core_capabilities", 0x7, 0, Edx, 30),
    f("spec_ctrl_ssbd", 0x7, 0, Edx, 31),
    // ---- CPUID 0x7.1 EAX (Linux word 12).
    f("sha512", 0x7, 1, Eax, 0),
    f("sm3", 0x7, 1, Eax, 1),
    f("sm4", 0x7, 1, Eax, 2),
    f("rao_int", 0x7, 1, Eax, 3),
    f("avx_vnni", 0x7, 1, Eax, 4),
    f("avx512_bf16", 0x7, 1, Eax, 5),
    f("lass", 0x7, 1, Eax, 6),
    f("cmpccxadd", 0x7, 1, Eax, 7),
    f("arch_perfmon_ext", 0x7, 1, Eax, 8),
    f("fzrm", 0x7, 1, Eax, 10),
    f("fsrs", 0x7, 1, Eax, 11),
    f("fsrc", 0x7, 1, Eax, 12),
    f("fred", 0x7, 1, Eax, 17),
    f("lkgs", 0x7, 1, Eax, 18),
    f("wrmsrns", 0x7, 1, Eax, 19),
    f("amx_fp16", 0x7, 1, Eax, 21),
    f("hreset", 0x7, 1, Eax, 22),
    f("avx_ifma", 0x7, 1, Eax, 23),
    f("lam", 0x7, 1, Eax, 26),
    f("msrlist", 0x7, 1, Eax, 27),
    f("movrs", 0x7, 1, Eax, 31),
    // ---- CPUID 0x7.1 ECX (KVM's reverse_cpuid.h).
    f("msr_imm", 0x7, 1, Ecx, 5),
    // ---- CPUID 0x7.1 EDX (KVM's reverse_cpuid.h and the SDM).
    f("avx_vnni_int8", 0x7, 1, Edx, 4),
    f("avx_ne_convert", 0x7, 1, Edx, 5),
    f("amx_complex", 0x7, 1, Edx, 8),
    f("avx_vnni_int16", 0x7, 1, Edx, 10),
    f("prefetchiti", 0x7, 1, Edx, 14),
    f("user_msr", 0x7, 1, Edx, 15),
    f("cet_sss", 0x7, 1, Edx, 18),
    f("avx10", 0x7, 1, Edx, 19),
    f("apx_f", 0x7, 1, Edx, 21),
    // ---- CPUID 0xD.1 EAX (Linux word 10).
    f("xsaveopt", 0xd, 1, Eax, 0),
    f("xsavec", 0xd, 1, Eax, 1),
    f("xgetbv1", 0xd, 1, Eax, 2),
    f("xsaves", 0xd, 1, Eax, 3),
    f("xfd", 0xd, 1, Eax, 4),
    // ---- KVM paravirtual features, CPUID 0x40000001 EAX / EDX (uapi asm/kvm_para.h).
    f("kvmclock", 0x4000_0001, 0, Eax, 0),
    f("nopiodelay", 0x4000_0001, 0, Eax, 1),
    f("mmu_op", 0x4000_0001, 0, Eax, 2),
    f("kvmclock2", 0x4000_0001, 0, Eax, 3),
    f("async_pf", 0x4000_0001, 0, Eax, 4),
    f("steal_time", 0x4000_0001, 0, Eax, 5),
    f("pv_eoi", 0x4000_0001, 0, Eax, 6),
    f("pv_unhalt", 0x4000_0001, 0, Eax, 7),
    f("pv_tlb_flush", 0x4000_0001, 0, Eax, 9),
    f("async_pf_vmexit", 0x4000_0001, 0, Eax, 10),
    f("pv_send_ipi", 0x4000_0001, 0, Eax, 11),
    f("poll_control", 0x4000_0001, 0, Eax, 12),
    f("pv_sched_yield", 0x4000_0001, 0, Eax, 13),
    f("async_pf_int", 0x4000_0001, 0, Eax, 14),
    f("msi_ext_dest_id", 0x4000_0001, 0, Eax, 15),
    f("hc_map_gpa_range", 0x4000_0001, 0, Eax, 16),
    f("migration_control", 0x4000_0001, 0, Eax, 17),
    f("kvmclock_stable_bit", 0x4000_0001, 0, Eax, 24),
    f("kvm_hints_realtime", 0x4000_0001, 0, Edx, 0),
    // ---- CPUID 0x80000001 EDX (Linux word 1); AMD's copies of leaf 1 EDX bits are omitted.
    f("syscall", 0x8000_0001, 0, Edx, 11),
    f("mp", 0x8000_0001, 0, Edx, 19),
    f("nx", 0x8000_0001, 0, Edx, 20),
    f("mmxext", 0x8000_0001, 0, Edx, 22),
    f("fxsr_opt", 0x8000_0001, 0, Edx, 25),
    f("pdpe1gb", 0x8000_0001, 0, Edx, 26),
    f("rdtscp", 0x8000_0001, 0, Edx, 27),
    f("lm", 0x8000_0001, 0, Edx, 29),
    f("3dnowext", 0x8000_0001, 0, Edx, 30),
    f("3dnow", 0x8000_0001, 0, Edx, 31),
    // ---- CPUID 0x80000001 ECX (Linux word 6).
    f("lahf_lm", 0x8000_0001, 0, Ecx, 0),
    f("cmp_legacy", 0x8000_0001, 0, Ecx, 1),
    f("svm", 0x8000_0001, 0, Ecx, 2),
    f("extapic", 0x8000_0001, 0, Ecx, 3),
    f("cr8_legacy", 0x8000_0001, 0, Ecx, 4),
    f("abm", 0x8000_0001, 0, Ecx, 5),
    f("sse4a", 0x8000_0001, 0, Ecx, 6),
    f("misalignsse", 0x8000_0001, 0, Ecx, 7),
    f("3dnowprefetch", 0x8000_0001, 0, Ecx, 8),
    f("osvw", 0x8000_0001, 0, Ecx, 9),
    f("ibs", 0x8000_0001, 0, Ecx, 10),
    f("xop", 0x8000_0001, 0, Ecx, 11),
    f("skinit", 0x8000_0001, 0, Ecx, 12),
    f("wdt", 0x8000_0001, 0, Ecx, 13),
    f("lwp", 0x8000_0001, 0, Ecx, 15),
    f("fma4", 0x8000_0001, 0, Ecx, 16),
    f("tce", 0x8000_0001, 0, Ecx, 17),
    f("nodeid_msr", 0x8000_0001, 0, Ecx, 19),
    f("tbm", 0x8000_0001, 0, Ecx, 21),
    f("topoext", 0x8000_0001, 0, Ecx, 22),
    f("perfctr_core", 0x8000_0001, 0, Ecx, 23),
    f("perfctr_nb", 0x8000_0001, 0, Ecx, 24),
    f("bpext", 0x8000_0001, 0, Ecx, 26),
    f("ptsc", 0x8000_0001, 0, Ecx, 27),
    f("perfctr_llc", 0x8000_0001, 0, Ecx, 28),
    f("mwaitx", 0x8000_0001, 0, Ecx, 29),
    // ---- CPUID 0x80000007 EDX (advanced power management; Linux scattered.c / amd.c names).
    f("hw_pstate", 0x8000_0007, 0, Edx, 7),
    f("constant_tsc", 0x8000_0007, 0, Edx, 8),
    f("cpb", 0x8000_0007, 0, Edx, 9),
    f("proc_feedback", 0x8000_0007, 0, Edx, 11),
    f("acc_power", 0x8000_0007, 0, Edx, 12),
    f("rapl", 0x8000_0007, 0, Edx, 14),
    // ---- CPUID 0x80000008 EBX (Linux word 13, plus `mba` from scattered.c).
    f("clzero", 0x8000_0008, 0, Ebx, 0),
    f("irperf", 0x8000_0008, 0, Ebx, 1),
    f("xsaveerptr", 0x8000_0008, 0, Ebx, 2),
    f("invlpgb", 0x8000_0008, 0, Ebx, 3),
    f("rdpru", 0x8000_0008, 0, Ebx, 4),
    f("mba", 0x8000_0008, 0, Ebx, 6),
    f("wbnoinvd", 0x8000_0008, 0, Ebx, 9),
    f("amd_ibpb", 0x8000_0008, 0, Ebx, 12),
    f("amd_ibrs", 0x8000_0008, 0, Ebx, 14),
    f("amd_stibp", 0x8000_0008, 0, Ebx, 15),
    f("amd_stibp_always_on", 0x8000_0008, 0, Ebx, 17),
    f("amd_ppin", 0x8000_0008, 0, Ebx, 23),
    f("amd_ssbd", 0x8000_0008, 0, Ebx, 24),
    f("virt_ssbd", 0x8000_0008, 0, Ebx, 25),
    f("amd_ssb_no", 0x8000_0008, 0, Ebx, 26),
    f("cppc", 0x8000_0008, 0, Ebx, 27),
    f("amd_psfd", 0x8000_0008, 0, Ebx, 28),
    f("btc_no", 0x8000_0008, 0, Ebx, 29),
    f("amd_ibpb_ret", 0x8000_0008, 0, Ebx, 30),
    f("brs", 0x8000_0008, 0, Ebx, 31),
];

/// Other spellings [`by_name`] accepts, as `(alias, catalog name)`. No alias is a catalog name.
pub static ALIASES: &[(&str, &str)] = &[
    ("invtsc", "constant_tsc"),
    ("htt", "ht"),
    ("sse3", "pni"),
    ("clocksource", "kvmclock"),
    ("clocksource2", "kvmclock2"),
    ("nop_io_delay", "nopiodelay"),
    ("clocksource_stable_bit", "kvmclock_stable_bit"),
];

/// Lowercase, trimmed, `-` read as `_`.
fn normalise(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('-', "_")
}

/// The feature called `name` (case-insensitive, `-` accepted for `_`, [`ALIASES`] accepted).
pub fn by_name(name: &str) -> Option<&'static Feature> {
    let wanted = normalise(name);
    let canonical = ALIASES
        .iter()
        .find(|(alias, _)| *alias == wanted)
        .map_or(wanted.as_str(), |(_, canonical)| canonical);
    CATALOG.iter().find(|f| f.name == canonical)
}

/// The feature at `(leaf, subleaf, reg, bit)`, if the catalog names that bit.
pub fn at(leaf: u32, subleaf: u32, reg: CpuidReg, bit: u8) -> Option<&'static Feature> {
    CATALOG
        .iter()
        .find(|f| f.leaf == leaf && f.subleaf == subleaf && f.reg == reg && f.bit == bit)
}

/// The catalog name closest to `name` (aliases count as their feature), for "unknown feature
/// `avx512` — did you mean `avx512f`?". Closeness is the edit distance with underscores ignored
/// (`sse42` is next to `sse4_2`, not `sse2`), then the plain edit distance; ties go to the earlier
/// catalog entry. `None` when nothing is close: the distance must be at most a third of the
/// name's length (at least 1, at most 3).
pub fn suggest(name: &str) -> Option<&'static str> {
    let spellings = CATALOG
        .iter()
        .map(|f| f.name)
        .chain(ALIASES.iter().map(|&(alias, _)| alias));
    let spelling = crate::model::suggest::closest(name, spellings)?;
    Some(
        ALIASES
            .iter()
            .find(|&&(alias, _)| alias == spelling)
            .map_or(spelling, |&(_, canonical)| canonical),
    )
}

/// Each set bit of `mask` as `(bit, name)`, the name from the catalog or `leaf.subleaf.reg[bit]`
/// (e.g. `1.0.ebx[24]`).
pub fn describe_bits(leaf: u32, subleaf: u32, reg: CpuidReg, mask: u32) -> Vec<(u32, String)> {
    (0..32u32)
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| {
            let name = u8::try_from(bit)
                .ok()
                .and_then(|b| at(leaf, subleaf, reg, b))
                .map(|f| f.name.to_string())
                .unwrap_or_else(|| bit_position(leaf, subleaf, reg, bit));
            (bit, name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_lowercase() {
        let mut seen = HashSet::new();
        for f in CATALOG {
            assert!(seen.insert(f.name), "duplicate name {}", f.name);
            assert_eq!(
                f.name,
                normalise(f.name),
                "{} is not in normal form",
                f.name
            );
        }
    }

    #[test]
    fn positions_are_unique_and_in_range() {
        let mut seen = HashSet::new();
        for f in CATALOG {
            assert!(f.bit < 32, "{} has bit {}", f.name, f.bit);
            assert!(
                seen.insert((f.leaf, f.subleaf, f.reg, f.bit)),
                "{f} shares its position with another feature"
            );
        }
    }

    #[test]
    fn aliases_resolve_and_shadow_no_name() {
        for (alias, canonical) in ALIASES {
            assert!(
                CATALOG.iter().all(|f| f.name != *alias),
                "alias {alias} is a catalog name"
            );
            assert_eq!(by_name(alias).map(|f| f.name), Some(*canonical));
        }
    }

    #[test]
    fn well_known_bits() {
        let cases = [
            ("avx512f", 0x7, 0, Ebx, 16),
            ("avx2", 0x7, 0, Ebx, 5),
            ("sse4_2", 0x1, 0, Ecx, 20),
            ("x2apic", 0x1, 0, Ecx, 21),
            ("hypervisor", 0x1, 0, Ecx, 31),
            ("lm", 0x8000_0001, 0, Edx, 29),
            ("nx", 0x8000_0001, 0, Edx, 20),
            ("svm", 0x8000_0001, 0, Ecx, 2),
            ("constant_tsc", 0x8000_0007, 0, Edx, 8),
            ("invtsc", 0x8000_0007, 0, Edx, 8),
            ("kvmclock2", 0x4000_0001, 0, Eax, 3),
            ("pv_unhalt", 0x4000_0001, 0, Eax, 7),
            ("kvm_hints_realtime", 0x4000_0001, 0, Edx, 0),
            ("xsaves", 0xd, 1, Eax, 3),
            ("avx_vnni", 0x7, 1, Eax, 4),
            ("pdpe1gb", 0x8000_0001, 0, Edx, 26),
            ("rdtscp", 0x8000_0001, 0, Edx, 27),
            ("avx512vl", 0x7, 0, Ebx, 31),
            ("osxsave", 0x1, 0, Ecx, 27),
            ("amd_ssbd", 0x8000_0008, 0, Ebx, 24),
        ];
        for (name, leaf, subleaf, reg, bit) in cases {
            let f = by_name(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(
                (f.leaf, f.subleaf, f.reg, f.bit),
                (leaf, subleaf, reg, bit),
                "{name}"
            );
            assert_eq!(at(leaf, subleaf, reg, bit), Some(f), "at() for {name}");
        }
    }

    #[test]
    fn amd_duplicates_of_leaf1_edx_are_unnamed() {
        for bit in [
            0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17, 23, 24,
        ] {
            assert_eq!(at(0x8000_0001, 0, Edx, bit), None, "bit {bit}");
        }
    }

    #[test]
    fn by_name_normalises() {
        let avx512f = by_name("avx512f").unwrap();
        assert_eq!(by_name("AVX512F"), Some(avx512f));
        assert_eq!(by_name(" Avx512F "), Some(avx512f));
        assert_eq!(by_name("sse4-2").unwrap().name, "sse4_2");
        assert_eq!(by_name("SSE4_2").unwrap().name, "sse4_2");
        assert_eq!(by_name("Pv-Unhalt").unwrap().name, "pv_unhalt");
        assert_eq!(by_name("avx512"), None);
        assert_eq!(by_name(""), None);
    }

    #[test]
    fn suggest_finds_close_names_only() {
        assert_eq!(suggest("avx512"), Some("avx512f"));
        assert_eq!(suggest("sse42"), Some("sse4_2"));
        assert_eq!(suggest("avx512vnni"), Some("avx512_vnni"));
        assert_eq!(suggest("x2apci"), Some("x2apic"));
        assert_eq!(suggest("invtcs"), Some("constant_tsc"));
        assert_eq!(suggest("completely_unrelated_words"), None);
        assert_eq!(suggest(""), None);
    }

    #[test]
    fn display_and_describe_bits() {
        assert_eq!(
            by_name("avx512f").unwrap().to_string(),
            "avx512f (7.0.ebx[16])"
        );
        assert_eq!(
            by_name("lm").unwrap().to_string(),
            "lm (0x80000001.0.edx[29])"
        );
        assert_eq!(
            by_name("xsaves").unwrap().to_string(),
            "xsaves (0xd.1.eax[3])"
        );
        assert_eq!(
            describe_bits(0x7, 0, Ebx, (1 << 16) | (1 << 22)),
            vec![(16, "avx512f".to_string()), (22, "7.0.ebx[22]".to_string())]
        );
        assert_eq!(
            describe_bits(0x1, 0, Ebx, 1 << 24),
            vec![(24, "1.0.ebx[24]".to_string())]
        );
        assert!(describe_bits(0x1, 0, Ecx, 0).is_empty());
    }

    #[test]
    fn feature_serializes_as_its_name_and_back() {
        let f = by_name("avx512f").unwrap();
        let json = serde_json::to_string(&vec![f]).unwrap();
        assert_eq!(json, r#"["avx512f"]"#);
        let back: Vec<&'static Feature> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![f]);
        let err = serde_json::from_str::<&'static Feature>(r#""avx512""#).unwrap_err();
        assert!(err.to_string().contains("did you mean `avx512f`"), "{err}");
    }

    #[test]
    fn is_set_in_uses_the_lookup_rule() {
        use crate::hypervisor::cpuid::{CpuidEntry, FLAG_SIGNIFICANT_INDEX};
        let table = CpuidTable::new(vec![CpuidEntry {
            function: 7,
            index: 0,
            flags: FLAG_SIGNIFICANT_INDEX,
            eax: 0,
            ebx: 1 << 16,
            ecx: 0,
            edx: 0,
        }]);
        assert_eq!(by_name("avx512f").unwrap().is_set_in(&table), Some(true));
        assert_eq!(by_name("avx2").unwrap().is_set_in(&table), Some(false));
        assert_eq!(by_name("avx_vnni").unwrap().is_set_in(&table), None);
    }
}
