//! What identical VMs' x86 reports repeat, held and worked out once per fleet: the CPUID tables
//! the kernel holds (interned by content) and the drift between a requested table and a held one
//! (its transcript lines and its changes as data, cached by those two tables).
//!
//! Why: a fleet of N VMs of one spec asks for the same model on the same host, so each of their
//! vCPUs reads back the same table and drifts the same way. Worked out per VM, the drift is the
//! costliest CPU work of a VM's report and, with a host that rewrites leaves 0x1, 0x7 and 0xD,
//! the largest part of its memory (one `String` and one change per bit, per vCPU, per VM). Here
//! the second VM with the same inputs gets the first one's `Arc`s: nothing is formatted or
//! copied again, and the reports (and what `model` answers) point at one copy.
//!
//! Only truly identical inputs share: tables are compared by content (`CpuidTable`'s `Eq`), and
//! the drift is a pure function of the two tables ([`drift::drift`]), so a shared report is the
//! one the VM would have worked out itself. Entries no report holds any more are dropped as the
//! cache grows, so a long-lived fleet (`serve`) whose VMs come and go does not keep them all.

use crate::report::{DriftChange, drift_changes};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use vcpu::hypervisor::cpuid::CpuidTable;
use vcpu::model::x86::drift;

/// The fewest entries of each map before unused ones are dropped.
const PRUNE_FLOOR: usize = 64;

/// The drift between a requested and a held table, as every report shares it.
#[derive(Clone, Debug)]
pub(in crate::fleet) struct SharedDrift {
    /// The transcript's lines ([`drift::DriftReport::lines`]).
    pub lines: Arc<[String]>,
    /// The same changes as data ([`drift_changes`]).
    pub changes: Arc<[DriftChange]>,
}

/// The fleet's interned tables and cached drifts (see the module's doc).
#[derive(Default)]
pub(in crate::fleet) struct SharedModels {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Every table handed out, by content. Hashed with foldhash, not SipHash: a table is ~500
    /// words, every VM's loop interns a few under this fleet-wide lock, and SipHash took ~2 µs
    /// of it per table (no key here comes from an adversary: the tables are the fleet's own).
    tables: HashSet<Arc<CpuidTable>, foldhash::fast::RandomState>,
    /// Drop unused tables when `tables` reaches this size.
    tables_prune_at: usize,
    /// The drift of (requested, held), keyed by the addresses of the two interned tables; each
    /// entry keeps both alive, so an address is never reused while its key is here.
    drifts: HashMap<(usize, usize), DriftEntry>,
    /// Drop unused drifts when `drifts` reaches this size.
    drifts_prune_at: usize,
    /// How many drifts were worked out (not found): what the tests count.
    computed: usize,
}

struct DriftEntry {
    _requested: Arc<CpuidTable>,
    _held: Arc<CpuidTable>,
    drift: SharedDrift,
}

impl SharedModels {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The cache holds no invariant a panicking holder could break halfway: every insert is
        // one map operation.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The fleet's one copy of `table` (`table` itself, the first time it is seen).
    pub fn table(&self, table: CpuidTable) -> Arc<CpuidTable> {
        self.lock().table(table)
    }

    /// The drift from `requested` to `held` (both interned by [`SharedModels::table`]), worked out
    /// the first time these two tables are seen and shared after.
    pub fn drift(&self, requested: &Arc<CpuidTable>, held: &Arc<CpuidTable>) -> SharedDrift {
        let mut inner = self.lock();
        let key = (Arc::as_ptr(requested) as usize, Arc::as_ptr(held) as usize);
        if let Some(entry) = inner.drifts.get(&key) {
            return entry.drift.clone();
        }
        let report = drift::drift(requested, held);
        let shared = SharedDrift {
            lines: report.lines().into(),
            changes: drift_changes(&report).into(),
        };
        inner.computed += 1;
        if inner.drifts.len() >= inner.drifts_prune_at.max(PRUNE_FLOOR) {
            // An entry only this cache holds (its lines are in no report) can go.
            inner
                .drifts
                .retain(|_, e| Arc::strong_count(&e.drift.lines) > 1);
            inner.drifts_prune_at = 2 * inner.drifts.len();
        }
        inner.drifts.insert(
            key,
            DriftEntry {
                _requested: Arc::clone(requested),
                _held: Arc::clone(held),
                drift: shared.clone(),
            },
        );
        shared
    }

    /// How many drifts were worked out rather than shared.
    #[cfg(test)]
    pub fn computed(&self) -> usize {
        self.lock().computed
    }
}

impl Inner {
    fn table(&mut self, table: CpuidTable) -> Arc<CpuidTable> {
        if let Some(found) = self.tables.get(&table) {
            return Arc::clone(found);
        }
        if self.tables.len() >= self.tables_prune_at.max(PRUNE_FLOOR) {
            // A table only this cache holds (no report, no pending drift, no cached drift) can go.
            self.tables.retain(|t| Arc::strong_count(t) > 1);
            self.tables_prune_at = 2 * self.tables.len();
        }
        let table = Arc::new(table);
        self.tables.insert(Arc::clone(&table));
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcpu::hypervisor::cpuid::CpuidEntry;

    fn table(ebx: u32) -> CpuidTable {
        CpuidTable::new(vec![CpuidEntry {
            function: 7,
            index: 0,
            flags: 0,
            eax: 0,
            ebx,
            ecx: 0,
            edx: 0,
        }])
    }

    #[test]
    fn equal_tables_are_one_copy_and_their_drift_is_worked_out_once() {
        let shared = SharedModels::default();
        let (requested, held) = (shared.table(table(0)), shared.table(table(0b11)));
        assert!(Arc::ptr_eq(&requested, &shared.table(table(0))));
        assert!(!Arc::ptr_eq(&requested, &held));
        let first = shared.drift(&requested, &held);
        let second = shared.drift(&shared.table(table(0)), &shared.table(table(0b11)));
        assert_eq!(shared.computed(), 1);
        assert!(Arc::ptr_eq(&first.lines, &second.lines));
        assert!(Arc::ptr_eq(&first.changes, &second.changes));
        // What the VM would have worked out itself.
        let own = drift::drift(&table(0), &table(0b11));
        assert_eq!(&*first.lines, own.lines().as_slice());
        assert_eq!(&*first.changes, drift_changes(&own).as_slice());
    }

    #[test]
    fn different_inputs_do_not_share() {
        let shared = SharedModels::default();
        let requested = shared.table(table(0));
        let a = shared.drift(&requested, &shared.table(table(1)));
        let b = shared.drift(&requested, &shared.table(table(2)));
        let c = shared.drift(&shared.table(table(1)), &shared.table(table(2)));
        assert_eq!(shared.computed(), 3);
        assert!(!Arc::ptr_eq(&a.lines, &b.lines));
        assert!(!Arc::ptr_eq(&b.changes, &c.changes));
        assert_ne!(a.lines, b.lines);
    }

    #[test]
    fn unused_entries_are_dropped_as_the_cache_grows() {
        let shared = SharedModels::default();
        let kept = shared.table(table(u32::MAX));
        for ebx in 0..(4 * PRUNE_FLOOR as u32) {
            let requested = shared.table(table(ebx));
            drop(shared.drift(&requested, &kept));
        }
        let inner = shared.lock();
        assert!(
            inner.tables.len() <= 2 * PRUNE_FLOOR,
            "{}",
            inner.tables.len()
        );
        assert!(
            inner.drifts.len() <= 2 * PRUNE_FLOOR,
            "{}",
            inner.drifts.len()
        );
        assert!(inner.tables.contains(&*kept));
    }
}
