//! The tables of a spec and their keys, checked on the spanned document before the typed parse: an
//! unknown key is refused at its position with the nearest known key (`vcpu::model::suggest`, the
//! one "did you mean" rule of vmfleet), or with the table it belongs in. Also the span look-ups the
//! later rules use to point at a value inside a `[[vm]]` table.

use super::SpecError;
use super::position::Source;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The tables of a spec and their keys. An unknown key is refused with the nearest known one, or
/// with the table it belongs in when it is a key of another table.
const TOP_KEYS: &[&str] = &[
    "name",
    "arch",
    "cross_check",
    "unknown_registers",
    "vm",
    "templates",
];
const VM_KEYS: &[&str] = &[
    "name",
    "count",
    "vcpus",
    "memory_mib",
    "probe_repeats",
    "fault_after_passes",
    "record_exits",
    "cpu",
    "arm64",
    "template",
    "after_run",
];
const CPU_KEYS: &[&str] = &["base", "hide"];
const AFTER_RUN_KEYS: &[&str] = &["action", "features", "field", "value", "vcpu"];
const ARM64_KEYS: &[&str] = &[
    "features",
    "id_registers",
    "hypercalls",
    "psci_version",
    "registers",
    "unknown_registers",
];
/// Every table, where an error says a key is, with its keys.
pub(super) const TABLES: &[(&str, &[&str])] = &[
    ("at the top level", TOP_KEYS),
    ("in [[vm]]", VM_KEYS),
    ("in a VM's `cpu`", CPU_KEYS),
    ("in [[vm.after_run]]", AFTER_RUN_KEYS),
    ("in [vm.arm64]", ARM64_KEYS),
];

/// Refuse the first unknown key (in file order) of every table whose keys are fixed. Values of
/// the wrong shape are left to the typed parse, which names them.
pub(super) fn check_keys(doc: &DeTable<'_>, src: &Source<'_>) -> Result<(), SpecError> {
    let mut tables: Vec<(&DeTable<'_>, usize)> = vec![(doc, 0)];
    for vm in array_tables(doc.get("vm")) {
        tables.push((vm, 1));
        if let Some(DeValue::Table(cpu)) = vm.get("cpu").map(|v| v.get_ref()) {
            tables.push((cpu, 2));
        }
        tables.extend(array_tables(vm.get("after_run")).map(|a| (a, 3)));
        if let Some(DeValue::Table(arm64)) = vm.get("arm64").map(|v| v.get_ref()) {
            tables.push((arm64, 4));
        }
    }
    let mut unknown: Vec<(Range<usize>, String)> = Vec::new();
    for (table, kind) in tables {
        let (_, known) = TABLES[kind];
        if let Some(key) = table
            .keys()
            .filter(|k| !known.contains(&k.get_ref().as_ref()))
            .min_by_key(|k| k.span().start)
        {
            unknown.push((key.span(), unknown_key(key.get_ref(), kind)));
        }
    }
    match unknown.into_iter().min_by_key(|(span, _)| span.start) {
        Some((span, message)) => Err(src.at(Some(span), message)),
        None => Ok(()),
    }
}

/// The tables of an array of tables (`[[vm]]`), or none when the value is something else.
fn array_tables<'a, 'i>(
    value: Option<&'a Spanned<DeValue<'i>>>,
) -> impl Iterator<Item = &'a DeTable<'i>> {
    let items: &[Spanned<DeValue<'i>>] = match value.map(|v| v.get_ref()) {
        Some(DeValue::Array(items)) => items,
        _ => &[],
    };
    items.iter().filter_map(|v| match v.get_ref() {
        DeValue::Table(t) => Some(t),
        _ => None,
    })
}

/// The message for an unknown `key` in a table of `kind` (an index into [`TABLES`]).
fn unknown_key(key: &str, kind: usize) -> String {
    let (table, known) = TABLES[kind];
    let mut message = format!("unknown key `{key}` {table}");
    let near = did_you_mean(key, known);
    if !near.is_empty() {
        message += &near;
    } else if let Some((elsewhere, _)) = TABLES.iter().find(|(_, keys)| keys.contains(&key)) {
        message += &format!(": `{key}` belongs {elsewhere}");
    } else {
        message += &format!("; the keys there are {}", backticked(known));
    }
    message
}

/// ` (did you mean `x`?)` when a known name is close to `name`, else nothing.
pub(super) fn did_you_mean(name: &str, known: &[&str]) -> String {
    vcpu::model::suggest::closest(name, known.iter().copied())
        .map(|near| format!(" (did you mean `{near}`?)"))
        .unwrap_or_default()
}

/// `` `a`, `b` ``: names as a list in an error.
fn backticked(names: &[&str]) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    names.join(", ")
}

/// The span of the value at `path` inside the `index`th `[[vm]]` table.
pub(super) fn vm_value_span(
    doc: &DeTable<'_>,
    index: usize,
    path: &[&str],
) -> Option<Range<usize>> {
    let mut value = match doc.get("vm")?.get_ref() {
        DeValue::Array(items) => items.get(index)?,
        _ => return None,
    };
    for key in path {
        value = match value.get_ref() {
            DeValue::Table(t) => t.get(*key)?,
            _ => return None,
        };
    }
    Some(value.span())
}

/// The TOML parser puts an error in an arm64 `features` list on the whole list: narrow it to
/// the first element that is not a vCPU feature's name.
pub(super) fn narrow(doc: &DeTable<'_>, span: Range<usize>) -> Range<usize> {
    for vm in array_tables(doc.get("vm")) {
        let Some(DeValue::Table(arm64)) = vm.get("arm64").map(|v| v.get_ref()) else {
            continue;
        };
        let Some(features) = arm64.get("features").filter(|f| f.span() == span) else {
            continue;
        };
        if let DeValue::Array(items) = features.get_ref() {
            if let Some(bad) = items.iter().find(|item| match item.get_ref() {
                DeValue::String(name) => vcpu::model::arm64::VcpuFeature::from_name(name).is_none(),
                _ => true,
            }) {
                return bad.span();
            }
        }
    }
    span
}
