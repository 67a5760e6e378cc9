//! What the kernel and the guest did with a requested CPU model.
//!
//! Three views, each by name where the catalog has one:
//! - [`drift`]: every bit the kernel changed between the table vmfleet set (`KVM_SET_CPUID2`) and
//!   the table it holds (`KVM_GET_CPUID2`), matched by `(leaf, subleaf)` with KVM's lookup rule,
//!   not by position. Bits in [`RUNTIME_BITS`] are reported too but marked `runtime`: they follow
//!   guest state (CR4, XCR0, APIC base), they are not the kernel rewriting the model.
//! - [`not_honoured`]: features the request hid that the kernel's table still has set (on a nested
//!   PVM host, anything in leaves 0x1, 0x7 and 0xD may come back).
//! - [`check_guest_view`]: what the guest's own `CPUID` returned at each probed point, compared
//!   with the held table; differences in runtime bits are counted, not reported.

use super::RUNTIME_BITS;
use super::catalog::{self, Feature};
use crate::hypervisor::cpuid::{CpuidEntry, CpuidReg, CpuidTable};
use serde::{Deserialize, Serialize};

/// The bits of `reg` in `entry` that KVM recomputes from guest state ([`RUNTIME_BITS`]).
pub fn runtime_mask(entry: &CpuidEntry, reg: CpuidReg) -> u32 {
    RUNTIME_BITS
        .iter()
        .filter(|(leaf, subleaf, r, _)| *r == reg && entry.matches(*leaf, *subleaf))
        .fold(0, |acc, (_, _, _, mask)| acc | mask)
}

/// `avx512f 0->1, avx512dq 0->1`: each changed bit of `mask` by name (or position), going from
/// `from` to `to`. When no changed bit has a name and several changed (a count, a size, an id),
/// the register values instead: `0x00000340->0x00000988`.
fn describe_change(
    leaf: u32,
    subleaf: u32,
    reg: CpuidReg,
    from: u32,
    to: u32,
    mask: u32,
) -> String {
    let named = (0..32u8)
        .any(|bit| mask & (1 << bit) != 0 && catalog::at(leaf, subleaf, reg, bit).is_some());
    if !named && mask.count_ones() > 1 {
        return format!("{from:#010x}->{to:#010x}");
    }
    catalog::describe_bits(leaf, subleaf, reg, mask)
        .into_iter()
        .map(|(bit, name)| format!("{name} {}->{}", (from >> bit) & 1, (to >> bit) & 1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bits of one register that differ between the requested and the held table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BitDrift {
    /// The entry's leaf (`function`).
    pub leaf: u32,
    /// The subleaf a guest uses to reach the entry (0 for leaves without subleaves).
    pub subleaf: u32,
    /// The register the bits are in.
    pub reg: CpuidReg,
    /// The changed bits.
    pub bits: u32,
    /// The whole register as requested.
    pub requested: u32,
    /// The whole register as the kernel holds it.
    pub held: u32,
    /// The changed bits by catalog name, or `leaf.subleaf.reg[bit]` where unnamed.
    pub names: Vec<String>,
    /// All of `bits` are runtime bits (tracking guest state); otherwise none are.
    pub runtime: bool,
}

impl BitDrift {
    /// `7.0.ebx: avx512f 0->1, avx512dq 0->1 (kernel rewrote)`.
    pub fn line(&self) -> String {
        let cause = if self.runtime {
            "tracks guest state"
        } else {
            "kernel rewrote"
        };
        format!(
            "{}: {} ({cause})",
            catalog::position(self.leaf, self.subleaf, self.reg),
            describe_change(
                self.leaf,
                self.subleaf,
                self.reg,
                self.requested,
                self.held,
                self.bits
            )
        )
    }
}

/// How the table the kernel holds differs from the one vmfleet set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftReport {
    /// Per register, in the requested table's order; a register with both kinds of change has a
    /// non-runtime entry followed by a runtime one.
    pub changed: Vec<BitDrift>,
    /// `(leaf, subleaf)` requested but not in the kernel's table.
    pub missing_entries: Vec<(u32, u32)>,
    /// `(leaf, subleaf)` in the kernel's table but not requested.
    pub added_entries: Vec<(u32, u32)>,
}

impl DriftReport {
    /// Nothing changed at all, runtime bits included.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.missing_entries.is_empty() && self.added_entries.is_empty()
    }

    /// The changes the kernel made to the model itself (runtime bits left out).
    pub fn kernel_rewrites(&self) -> impl Iterator<Item = &BitDrift> {
        self.changed.iter().filter(|d| !d.runtime)
    }

    /// This report without the runtime-bit changes: what to look at when guest state may have
    /// moved (e.g. a table read back after the guest set CR4.OSXSAVE).
    pub fn ignoring_runtime(&self) -> DriftReport {
        DriftReport {
            changed: self.kernel_rewrites().cloned().collect(),
            missing_entries: self.missing_entries.clone(),
            added_entries: self.added_entries.clone(),
        }
    }

    /// One human line per change, e.g. `7.0.ebx: avx512f 0->1, avx512dq 0->1 (kernel rewrote)`,
    /// `0xd.0: requested entry missing from the kernel's table`.
    pub fn lines(&self) -> Vec<String> {
        let entry = |&(leaf, subleaf): &(u32, u32), what: &str| {
            let leaf = if leaf < 10 {
                leaf.to_string()
            } else {
                format!("{leaf:#x}")
            };
            format!("{leaf}.{subleaf}: {what}")
        };
        self.changed
            .iter()
            .map(BitDrift::line)
            .chain(
                self.missing_entries
                    .iter()
                    .map(|k| entry(k, "requested entry missing from the kernel's table")),
            )
            .chain(
                self.added_entries
                    .iter()
                    .map(|k| entry(k, "entry added by the kernel")),
            )
            .collect()
    }
}

/// The key a guest reaches `entry` with.
fn key(entry: &CpuidEntry) -> (u32, u32) {
    (entry.function, entry.probe_subleaf())
}

/// Every change between the table vmfleet `requested` and the one the kernel `held`, by
/// `(leaf, subleaf)` with KVM's lookup rule. A requested entry shadowed by an earlier one with the
/// same key (unreachable by the guest) is skipped.
pub fn drift(requested: &CpuidTable, held: &CpuidTable) -> DriftReport {
    let mut report = DriftReport::default();
    let mut seen_keys = Vec::new();
    for r in &requested.entries {
        let (leaf, subleaf) = key(r);
        if seen_keys.contains(&(leaf, subleaf)) {
            continue;
        }
        seen_keys.push((leaf, subleaf));
        let Some(h) = held.lookup(leaf, subleaf) else {
            report.missing_entries.push((leaf, subleaf));
            continue;
        };
        for reg in CpuidReg::ALL {
            let (rv, hv) = (r.reg(reg), h.reg(reg));
            let runtime = runtime_mask(h, reg) | runtime_mask(r, reg);
            for (bits, is_runtime) in [((rv ^ hv) & !runtime, false), ((rv ^ hv) & runtime, true)] {
                if bits != 0 {
                    report.changed.push(BitDrift {
                        leaf,
                        subleaf,
                        reg,
                        bits,
                        requested: rv,
                        held: hv,
                        names: catalog::describe_bits(leaf, subleaf, reg, bits)
                            .into_iter()
                            .map(|(_, name)| name)
                            .collect(),
                        runtime: is_runtime,
                    });
                }
            }
        }
    }
    for h in &held.entries {
        let (leaf, subleaf) = key(h);
        if requested.lookup(leaf, subleaf).is_none()
            && !report.added_entries.contains(&(leaf, subleaf))
        {
            report.added_entries.push((leaf, subleaf));
        }
    }
    report
}

/// The catalog entry for `f` (by position), so callers holding any `&Feature` get `'static` ones.
fn catalogued(f: &Feature) -> Option<&'static Feature> {
    catalog::at(f.leaf, f.subleaf, f.reg, f.bit)
}

/// Features the request hid that the kernel's table still has set: the request was not honoured.
/// Only catalog features are reported (matched by position); duplicates collapse.
pub fn not_honoured(hidden: &[&Feature], held: &CpuidTable) -> Vec<&'static Feature> {
    let mut out: Vec<&'static Feature> = Vec::new();
    for f in hidden.iter().filter(|f| f.is_set_in(held) == Some(true)) {
        if let Some(f) = catalogued(f).filter(|f| !out.contains(f)) {
            out.push(f);
        }
    }
    out
}

/// What the guest's `CPUID` returned at one probed point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GuestSeen {
    /// The leaf the guest asked for (EAX in).
    pub leaf: u32,
    /// The subleaf the guest asked for (ECX in).
    pub subleaf: u32,
    /// EAX as the guest's `CPUID` returned it.
    pub eax: u32,
    /// EBX as the guest's `CPUID` returned it.
    pub ebx: u32,
    /// ECX as the guest's `CPUID` returned it.
    pub ecx: u32,
    /// EDX as the guest's `CPUID` returned it.
    pub edx: u32,
}

impl GuestSeen {
    /// The value the guest saw in `reg`.
    pub fn reg(&self, reg: CpuidReg) -> u32 {
        match reg {
            CpuidReg::Eax => self.eax,
            CpuidReg::Ebx => self.ebx,
            CpuidReg::Ecx => self.ecx,
            CpuidReg::Edx => self.edx,
        }
    }
}

/// How the guest's view compares with the table the kernel holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestViewCheck {
    /// Differences outside the runtime bits, one line per register (or per point without a table
    /// entry), e.g. `7.0.ebx: avx512f 0->1 (held -> seen by the guest)`.
    pub mismatches: Vec<String>,
    /// Registers whose only differences are runtime bits (expected: they follow guest state).
    pub runtime_differences: usize,
    /// Table entries `(leaf, subleaf)` the guest never probed.
    pub unseen: Vec<(u32, u32)>,
    /// Hidden features the guest still sees set: the request was not honoured, seen from inside.
    pub hidden_but_visible: Vec<&'static Feature>,
}

impl GuestViewCheck {
    /// The guest saw exactly the held table (runtime bits aside) at every entry.
    pub fn matches_held(&self) -> bool {
        self.mismatches.is_empty() && self.unseen.is_empty()
    }
}

/// A table's entry positions sorted by leaf (table order within a leaf), so that
/// [`CpuidTable::position`]'s answer takes a binary search instead of a scan: checking a guest's
/// view looks up every probe and every entry, ~75 each, for every vCPU of a fleet (the scans
/// were 3% of a 1,000-VM replay).
struct ByLeaf<'a> {
    table: &'a CpuidTable,
    order: Vec<(u32, usize)>,
}

impl<'a> ByLeaf<'a> {
    fn new(table: &'a CpuidTable) -> Self {
        let mut order: Vec<(u32, usize)> = table
            .entries
            .iter()
            .enumerate()
            .map(|(at, e)| (e.function, at))
            .collect();
        order.sort_unstable();
        ByLeaf { table, order }
    }

    /// The first entry that `(leaf, subleaf)` reaches, as [`CpuidTable::position`] says.
    fn position(&self, leaf: u32, subleaf: u32) -> Option<usize> {
        let from = self.order.partition_point(|&(function, _)| function < leaf);
        self.order[from..]
            .iter()
            .take_while(|&&(function, _)| function == leaf)
            .map(|&(_, at)| at)
            .find(|&at| self.table.entries[at].matches(leaf, subleaf))
    }
}

/// Compare what the guest `seen` at each probed point with the `held` table, and look for
/// `hidden` features the guest can still see.
pub fn check_guest_view(
    held: &CpuidTable,
    seen: &[GuestSeen],
    hidden: &[&'static Feature],
) -> GuestViewCheck {
    let mut check = GuestViewCheck::default();
    // The held entry each probe reached (one indexed lookup per probe: a table and a probe list
    // are each ~75 long, and this runs for every vCPU of a fleet).
    let index = ByLeaf::new(held);
    let found: Vec<Option<usize>> = seen
        .iter()
        .map(|s| index.position(s.leaf, s.subleaf))
        .collect();
    let mut reached = vec![false; held.entries.len()];
    for (s, &at) in seen.iter().zip(&found) {
        let Some(at) = at else {
            check.mismatches.push(format!(
                "{}: the guest saw eax={:#010x} ebx={:#010x} ecx={:#010x} edx={:#010x} where the kernel \
                 holds no entry",
                key_str(s.leaf, s.subleaf),
                s.eax,
                s.ebx,
                s.ecx,
                s.edx
            ));
            continue;
        };
        reached[at] = true;
        let e = &held.entries[at];
        // Report under the entry's own key, so names resolve (leaf 1 probed with subleaf 5 is 1.0).
        let (leaf, subleaf) = key(e);
        for reg in CpuidReg::ALL {
            let diff = e.reg(reg) ^ s.reg(reg);
            let runtime = runtime_mask(e, reg);
            if diff & !runtime != 0 {
                check.mismatches.push(format!(
                    "{}: {} (held -> seen by the guest)",
                    catalog::position(leaf, subleaf, reg),
                    describe_change(leaf, subleaf, reg, e.reg(reg), s.reg(reg), diff & !runtime)
                ));
            } else if diff != 0 {
                check.runtime_differences += 1;
            }
        }
    }
    for (at, e) in held.entries.iter().enumerate() {
        // An entry shadowed by an earlier one with the same key cannot be reached; not "unseen".
        let reachable = index.position(e.function, e.probe_subleaf()) == Some(at);
        if !reached[at] && reachable {
            check.unseen.push(key(e));
        }
    }
    for f in hidden {
        let target = index.position(f.leaf, f.subleaf);
        let visible = seen.iter().zip(&found).any(|(s, &at)| {
            let same_point = (s.leaf, s.subleaf) == (f.leaf, f.subleaf)
                || (s.leaf == f.leaf && target.is_some() && at == target);
            same_point && s.reg(f.reg) & f.mask() != 0
        });
        if !visible {
            continue;
        }
        if let Some(f) = catalogued(f).filter(|f| !check.hidden_but_visible.contains(f)) {
            check.hidden_but_visible.push(f);
        }
    }
    check
}

fn key_str(leaf: u32, subleaf: u32) -> String {
    if leaf < 10 {
        format!("{leaf}.{subleaf}")
    } else {
        format!("{leaf:#x}.{subleaf}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::cpuid::FLAG_SIGNIFICANT_INDEX;
    use crate::model::x86::model::X86CpuModel;

    fn entry(function: u32, index: u32, flags: u32, regs: [u32; 4]) -> CpuidEntry {
        let [eax, ebx, ecx, edx] = regs;
        CpuidEntry {
            function,
            index,
            flags,
            eax,
            ebx,
            ecx,
            edx,
        }
    }

    fn feature(name: &str) -> &'static Feature {
        catalog::by_name(name).unwrap()
    }

    /// A supported table shaped like the PVM host's (leaf 7.0 EBX 0x01800002: no AVX-512 offered).
    fn supported() -> CpuidTable {
        CpuidTable::new(vec![
            entry(0x0, 0, 0, [0xd, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]),
            entry(0x1, 0, 0, [0x5_0654, 0x0000_0800, 0xf6fa_3203, 0x078b_fbff]),
            entry(0x7, 0, FLAG_SIGNIFICANT_INDEX, [0, 0x0180_0002, 0, 0]),
            entry(0xd, 0, FLAG_SIGNIFICANT_INDEX, [0x7, 0x240, 0x340, 0]),
            entry(0xd, 1, FLAG_SIGNIFICANT_INDEX, [0x1, 0x240, 0, 0]),
            entry(0x4000_0001, 0, 0, [0x0100_7efb, 0, 0, 0]),
            entry(0x8000_0001, 0, 0, [0, 0, 0x121, 0x2c10_0800]),
        ])
    }

    /// Every probe point of `table`, as the guest would report it with no state changes.
    fn guest_view_of(table: &CpuidTable) -> Vec<GuestSeen> {
        table
            .entries
            .iter()
            .map(|e| GuestSeen {
                leaf: e.function,
                subleaf: e.probe_subleaf(),
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
            })
            .collect()
    }

    #[test]
    fn identical_tables_do_not_drift() {
        let t = supported();
        let report = drift(&t, &t);
        assert!(report.is_empty());
        assert!(report.lines().is_empty());
    }

    #[test]
    fn drift_matches_entries_by_key_not_position() {
        let requested = supported();
        let mut held = requested.clone();
        held.entries.reverse();
        assert!(drift(&requested, &held).is_empty());
        // A leaf without the significant-index flag is found whatever its index says.
        held.entries
            .iter_mut()
            .find(|e| e.function == 0x8000_0001)
            .unwrap()
            .index = 3;
        assert!(drift(&requested, &held).is_empty());
    }

    #[test]
    fn drift_names_changed_bits_and_separates_runtime_ones() {
        let requested = supported();
        let mut held = requested.clone();
        held.lookup_mut(7, 0).unwrap().ebx |= (1 << 16) | (1 << 17) | (1 << 22);
        held.lookup_mut(1, 0).unwrap().ecx |= 1 << 27; // OSXSAVE
        held.lookup_mut(1, 0).unwrap().ecx ^= 1 << 0; // pni flipped off
        held.lookup_mut(0xd, 0).unwrap().ebx = 0x988;
        let report = drift(&requested, &held);
        assert_eq!(
            report.lines(),
            vec![
                "1.0.ecx: pni 1->0 (kernel rewrote)".to_string(),
                "1.0.ecx: osxsave 0->1 (tracks guest state)".to_string(),
                "7.0.ebx: avx512f 0->1, avx512dq 0->1, 7.0.ebx[22] 0->1 (kernel rewrote)"
                    .to_string(),
                "0xd.0.ebx: 0x00000240->0x00000988 (tracks guest state)".to_string(),
            ]
        );
        let avx = &report.changed[2];
        assert_eq!(
            (avx.leaf, avx.subleaf, avx.reg, avx.bits, avx.runtime),
            (7, 0, CpuidReg::Ebx, 0x0043_0000, false)
        );
        assert_eq!(avx.names, vec!["avx512f", "avx512dq", "7.0.ebx[22]"]);
        assert_eq!((avx.requested, avx.held), (0x0180_0002, 0x01c3_0002));
        let rewrites = report.ignoring_runtime();
        assert_eq!(rewrites.changed.len(), 2);
        assert!(rewrites.changed.iter().all(|d| !d.runtime));
        assert!(!report.is_empty());
    }

    #[test]
    fn drift_reports_missing_and_added_entries() {
        let requested = supported();
        let mut held = requested.clone();
        held.entries
            .retain(|e| !(e.function == 0xd && e.index == 1));
        held.entries.push(entry(0x4000_0010, 0, 0, [1, 2, 3, 4]));
        let report = drift(&requested, &held);
        assert!(report.changed.is_empty());
        assert_eq!(report.missing_entries, vec![(0xd, 1)]);
        assert_eq!(report.added_entries, vec![(0x4000_0010, 0)]);
        assert_eq!(
            report.lines(),
            vec![
                "0xd.1: requested entry missing from the kernel's table".to_string(),
                "0x40000010.0: entry added by the kernel".to_string(),
            ]
        );
    }

    #[test]
    fn not_honoured_lists_hidden_features_still_set() {
        let mut held = supported();
        held.lookup_mut(7, 0).unwrap().ebx |= 1 << 16;
        let hidden = [
            feature("avx512f"),
            feature("avx2"),
            feature("hypervisor"),
            feature("constant_tsc"),
        ];
        // avx2 is clear, hypervisor is set (leaf 1 ECX bit 31 in this table), constant_tsc has no
        // entry at all.
        assert_eq!(
            not_honoured(&hidden, &held),
            vec![feature("avx512f"), feature("hypervisor")]
        );
        assert!(not_honoured(&[], &held).is_empty());
        // A caller's own (non-'static) copy resolves to the catalog entry.
        let copy = *feature("avx512f");
        assert_eq!(not_honoured(&[&copy], &held), vec![feature("avx512f")]);
    }

    #[test]
    fn guest_view_matching_the_held_table() {
        let held = supported();
        let check = check_guest_view(&held, &guest_view_of(&held), &[]);
        assert!(check.matches_held(), "{check:?}");
        assert_eq!(check.runtime_differences, 0);
    }

    #[test]
    fn guest_view_runtime_bits_are_counted_not_mismatched() {
        let held = supported();
        let mut seen = guest_view_of(&held);
        seen[1].ecx |= 1 << 27; // the guest set CR4.OSXSAVE
        seen[3].ebx = 0x988; // and XCR0
        let check = check_guest_view(&held, &seen, &[]);
        assert!(check.matches_held(), "{check:?}");
        assert_eq!(check.runtime_differences, 2);
    }

    #[test]
    fn guest_view_mismatches_unseen_and_unknown_points() {
        let held = supported();
        let mut seen = guest_view_of(&held);
        seen[2].ebx |= 1 << 5; // avx2 appears
        seen[1].ecx &= !(1 << 31); // hypervisor disappears, plus a runtime bit
        seen[1].ecx |= 1 << 27;
        seen.retain(|s| s.leaf != 0x8000_0001);
        seen.push(GuestSeen {
            leaf: 0x14,
            subleaf: 0,
            eax: 1,
            ebx: 0,
            ecx: 0,
            edx: 0,
        });
        let check = check_guest_view(&held, &seen, &[]);
        assert_eq!(
            check.mismatches,
            vec![
                "1.0.ecx: hypervisor 1->0 (held -> seen by the guest)".to_string(),
                "7.0.ebx: avx2 0->1 (held -> seen by the guest)".to_string(),
                "0x14.0: the guest saw eax=0x00000001 ebx=0x00000000 ecx=0x00000000 edx=0x00000000 \
                 where the kernel holds no entry"
                    .to_string(),
            ]
        );
        assert_eq!(
            check.runtime_differences, 0,
            "the OSXSAVE change shares a register with a mismatch"
        );
        assert_eq!(check.unseen, vec![(0x8000_0001, 0)]);
        assert!(!check.matches_held());
    }

    #[test]
    fn guest_view_reports_hidden_features_it_still_sees() {
        let held = supported();
        let seen = guest_view_of(&held);
        let check = check_guest_view(
            &held,
            &seen,
            &[feature("hypervisor"), feature("avx2"), feature("lm")],
        );
        // hypervisor is set in leaf 1 ECX; avx2 is clear; lm (0x80000001 EDX[29]) is set.
        assert_eq!(
            check.hidden_but_visible,
            vec![feature("hypervisor"), feature("lm")]
        );
    }

    /// What this PVM host does: vmfleet hides avx512f, the kernel rewrites leaf 7 from the real
    /// CPU, and the guest sees avx512f anyway.
    #[test]
    fn pvm_host_rewriting_leaf_7_is_caught_three_ways() {
        let mut supported = supported();
        supported.lookup_mut(7, 0).unwrap().ebx = 0xf1bf_07ab; // a host that does offer AVX-512
        let model = X86CpuModel::hiding(vec!["avx512f".into()]);
        let requested = model.build(&supported, 0, 1).unwrap();
        assert_eq!(requested.hidden, vec![feature("avx512f")]);
        assert_eq!(requested.table.lookup(7, 0).unwrap().ebx & (1 << 16), 0);

        // KVM_SET_CPUID2 stored a rewritten leaf 7 (avx512f back), and the guest later set OSXSAVE.
        let mut held = requested.table.clone();
        held.lookup_mut(7, 0).unwrap().ebx |= 1 << 16;
        held.lookup_mut(1, 0).unwrap().ecx |= 1 << 27;

        let report = drift(&requested.table, &held);
        let rewrites: Vec<_> = report.kernel_rewrites().collect();
        assert_eq!(rewrites.len(), 1);
        assert_eq!(rewrites[0].names, vec!["avx512f"]);
        assert!(
            report
                .lines()
                .contains(&"7.0.ebx: avx512f 0->1 (kernel rewrote)".to_string())
        );
        assert!(
            report
                .changed
                .iter()
                .any(|d| d.runtime && d.names == ["osxsave"])
        );

        let hidden = requested.requested_hidden();
        assert_eq!(not_honoured(&hidden, &held), vec![feature("avx512f")]);

        let check = check_guest_view(&held, &guest_view_of(&held), &hidden);
        assert!(
            check.matches_held(),
            "the guest sees what the kernel holds: {check:?}"
        );
        assert_eq!(check.hidden_but_visible, vec![feature("avx512f")]);
    }

    /// The host as measured: its supported table does not offer avx512f at all (leaf 7.0 EBX
    /// 0x01800002), the request keeps it clear, and the kernel's rewrite still shows up.
    #[test]
    fn features_the_host_did_not_offer_are_still_checked() {
        let requested = X86CpuModel::hiding(vec!["avx512f".into(), "constant_tsc".into()])
            .build(&supported(), 0, 1)
            .unwrap();
        assert_eq!(requested.hidden, vec![feature("avx512f")]);
        assert_eq!(requested.already_absent, vec![feature("constant_tsc")]);
        let mut held = requested.table.clone();
        held.lookup_mut(7, 0).unwrap().ebx |= 1 << 16;
        assert_eq!(
            not_honoured(&requested.hidden, &held),
            vec![feature("avx512f")]
        );
        let check = check_guest_view(&held, &guest_view_of(&held), &requested.hidden);
        assert_eq!(check.hidden_but_visible, vec![feature("avx512f")]);

        // A kernel that adds the leaf the request left out, with the hidden bit set.
        held.entries
            .push(entry(0x8000_0007, 0, 0, [0, 0, 0, 1 << 8]));
        assert_eq!(
            not_honoured(&requested.requested_hidden(), &held),
            vec![feature("avx512f"), feature("constant_tsc")]
        );
        assert_eq!(
            drift(&requested.table, &held).added_entries,
            vec![(0x8000_0007, 0)]
        );
    }

    #[test]
    fn reports_serialize_with_feature_names() {
        let mut held = supported();
        held.lookup_mut(7, 0).unwrap().ebx |= 1 << 16;
        let check = check_guest_view(&held, &guest_view_of(&held), &[feature("avx512f")]);
        let json = serde_json::to_string(&check).unwrap();
        assert!(
            json.contains(r#""hidden_but_visible":["avx512f"]"#),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<GuestViewCheck>(&json).unwrap(),
            check
        );
        let report = drift(&supported(), &held);
        let back: DriftReport =
            serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(back, report);
    }
}
