//! The `registers` table of an arm64 model spec: whole-register writes, by name or by id.
//!
//! ```toml
//! [registers]
//! MIDR_EL1 = "0x410fd4f1"                       # a catalog name (any ID register, MIDR_EL1,
//! MPIDR_EL1 = "0x80000001"                      #   REVIDR_EL1, AIDR_EL1, MPIDR_EL1, CLIDR_EL1,
//! SMCCC_ARCH_WORKAROUND_1 = "0x1"               #   CTR_EL0), a firmware register (uapi or short
//! "0x603000000013c020" = "0x0000000000000011"   #   name), or a register id in hex
//! ```
//!
//! A key names one CPU-model register (what the pre-run lock guards: the ID space, the
//! identification and cache-description registers, the firmware registers and hypercall
//! bitmaps); core, SVE, timer and other registers are refused, because the guest loader owns
//! them. A value is the full 64-bit register, written as a string (`"0x…"`, or decimal digits)
//! or as a non-negative TOML integer, or a tri-state bitmap (`"0bxxxx0001…"`,
//! [`crate::model::tristate`]: `x` keeps the host's bit), which is how CPU templates (and
//! Firecracker's `reg_modifiers`) change some bits of a register and leave the rest alone. Names are resolved while the key is read, so an unknown one
//! is reported on the key with the nearest known name ([`crate::model::suggest`]).
//!
//! The planner judges each write by the same rules as a field write
//! ([`crate::model::arm64::validate::judge_before_run`]). A register a raw write sets must not
//! also be set another way in the same spec (an `id_registers` field, `psci_version`, a
//! `hypercalls` service): [`super::Arm64ModelSpec::check`] refuses the spec, naming both.

use super::spec::{Arm64ModelSpec, IdFieldRequests, SpecError};
use crate::model::arm64::catalog;
use crate::model::arm64::fields::{self, FieldRef};
use crate::model::arm64::firmware::FirmwareRegister;
use crate::model::arm64::reg_id;
use crate::model::arm64::validate::{LockClass, lock_class};
use crate::model::suggest;
use crate::model::tristate::TriState;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// Register writes, by register id: whole values, or tri-state bitmaps over the host's value.
/// Serializes as a map `name = "0x…"` (whole) or `name = "0b…"` (bitmap).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegisterRequests(BTreeMap<u64, TriState>);

impl RegisterRequests {
    /// No requests.
    pub fn new() -> RegisterRequests {
        RegisterRequests::default()
    }

    /// Ask for register `id` = `value` (replacing an earlier request), checking that `id` is a
    /// CPU-model register.
    pub fn set(&mut self, id: u64, value: u64) -> Result<(), SpecError> {
        self.set_bits(id, TriState::whole(64, value))
    }

    /// Ask for the bits of register `id` that `bits` fixes (the rest stay the host's).
    pub fn set_bits(&mut self, id: u64, bits: TriState) -> Result<(), SpecError> {
        check_model_register(&format!("{id:#018x}"), id)?;
        self.0.insert(id, bits);
        Ok(())
    }

    /// Ask for the register called `key` (a name or a hex id) = `value`.
    pub fn set_by_name(&mut self, key: &str, value: u64) -> Result<(), SpecError> {
        let id = resolve(key)?;
        self.0.insert(id, TriState::whole(64, value));
        Ok(())
    }

    /// The whole value asked for register `id` (`None` when it is not asked for, or only some
    /// of its bits are).
    pub fn get(&self, id: u64) -> Option<u64> {
        self.0
            .get(&id)
            .filter(|bits| bits.is_whole())
            .map(|bits| bits.value)
    }

    /// The bits asked for register `id`.
    pub fn bits(&self, id: u64) -> Option<TriState> {
        self.0.get(&id).copied()
    }

    /// Every request, in register-id order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, TriState)> + '_ {
        self.0.iter().map(|(id, v)| (*id, *v))
    }

    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many registers are asked for.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Every name a `registers` key may use: the catalog's, and the firmware registers' uapi and
/// short names.
fn known_names() -> impl Iterator<Item = &'static str> {
    catalog::REGISTERS.iter().map(|r| r.name).chain(
        FirmwareRegister::ALL
            .into_iter()
            .flat_map(|r| [r.name(), r.short_name()]),
    )
}

/// The register id a `registers` key names: a catalog name, a firmware register's uapi or short
/// name, or an id in hex (`0x6030…`). Only CPU-model registers are accepted.
pub fn resolve(key: &str) -> Result<u64, SpecError> {
    let trimmed = key.trim();
    if let Some(hex) = trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
    {
        let id = u64::from_str_radix(&hex.replace('_', ""), 16).map_err(|_| {
            SpecError::UnknownRegister {
                key: key.to_string(),
                suggestion: None,
            }
        })?;
        check_model_register(key, id)?;
        return Ok(id);
    }
    if let Some(register) = catalog::by_name(trimmed) {
        return Ok(register.kvm_reg_id());
    }
    if let Some(register) = FirmwareRegister::from_name(trimmed) {
        return Ok(register.id());
    }
    Err(SpecError::UnknownRegister {
        key: key.to_string(),
        suggestion: suggest::closest(trimmed, known_names()).map(str::to_string),
    })
}

/// Refuse an id that is not a CPU-model register (or not a 64-bit arm64 id at all).
fn check_model_register(key: &str, id: u64) -> Result<(), SpecError> {
    if reg_id::is_arm64(id)
        && reg_id::size_bytes(id) == 8
        && lock_class(id) != LockClass::NotCpuModel
    {
        return Ok(());
    }
    Err(SpecError::NotAModelRegister {
        key: key.to_string(),
        reg_id: id,
        register: reg_id::describe(id),
    })
}

/// The name a request serializes under: the catalog's or the firmware uapi name, else the id.
fn name_of(id: u64) -> String {
    if let Some(register) = catalog::by_id(id) {
        return register.name.to_string();
    }
    match FirmwareRegister::from_id(id) {
        Some(register) => register.name().to_string(),
        None => format!("{id:#018x}"),
    }
}

/// A request as the spec writes it: `"0x…"` for a whole value, the bitmap otherwise.
fn value_text(bits: &TriState) -> String {
    if bits.is_whole() {
        format!("{:#018x}", bits.value)
    } else {
        bits.to_string()
    }
}

impl Serialize for RegisterRequests {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.0
                .iter()
                .map(|(id, bits)| (name_of(*id), value_text(bits))),
        )
    }
}

/// A `registers` key, resolved while it is read (so a parser with positions puts the error on
/// the key), and the key as written (for the duplicate error).
struct RegisterKey(u64, String);

impl<'de> Deserialize<'de> for RegisterKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let key = String::deserialize(deserializer)?;
        let id = resolve(&key).map_err(de::Error::custom)?;
        Ok(RegisterKey(id, key))
    }
}

/// A full register value (`"0x…"`, decimal digits in a string, or a non-negative integer) or a
/// tri-state bitmap (`"0b…"`).
struct RegisterValue(TriState);

/// The text of a value that is not a 64-bit register value (the key is not known here: the
/// parser's position names it).
fn bad_value<E: de::Error>(value: impl fmt::Display) -> E {
    E::custom(format!(
        "registers: `{value}` is not a 64-bit register value; write it in hex as a string: \
         \"0x…\" (at most 16 hex digits), or as a bitmap \"0b…\" of 0, 1 and x (the host's bit)"
    ))
}

impl<'de> Deserialize<'de> for RegisterValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl Visitor<'_> for ValueVisitor {
            type Value = RegisterValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 64-bit register value, \"0x…\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RegisterValue, E> {
                Ok(RegisterValue(TriState::whole(64, v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RegisterValue, E> {
                u64::try_from(v)
                    .map(|v| RegisterValue(TriState::whole(64, v)))
                    .map_err(|_| bad_value(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RegisterValue, E> {
                if v.trim_start().starts_with("0b") || v.trim_start().starts_with("0B") {
                    return TriState::parse(v.trim(), 64)
                        .map(RegisterValue)
                        .map_err(|e| E::custom(format!("registers: {e}")));
                }
                parse_value(v)
                    .map(|v| RegisterValue(TriState::whole(64, v)))
                    .ok_or_else(|| bad_value(v))
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// A register value as text: `0x…` hex (`_` allowed between digits) or decimal digits.
pub fn parse_value(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => {
            let hex = hex.replace('_', "");
            if hex.is_empty() {
                return None;
            }
            u64::from_str_radix(&hex, 16).ok()
        }
        None if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => text.parse().ok(),
        None => None,
    }
}

impl<'de> Deserialize<'de> for RegisterRequests {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RequestsVisitor;
        impl<'de> Visitor<'de> for RequestsVisitor {
            type Value = RegisterRequests;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of REGISTER = \"0x…\"")
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RegisterRequests, A::Error> {
                let mut requests = RegisterRequests::new();
                let mut keys: BTreeMap<u64, String> = BTreeMap::new();
                while let Some(RegisterKey(id, key)) = map.next_key()? {
                    let RegisterValue(value) = map.next_value()?;
                    if let Some(first) = keys.get(&id) {
                        return Err(de::Error::custom(SpecError::DuplicateRegister {
                            key,
                            first: first.clone(),
                            register: reg_id::describe(id),
                        }));
                    }
                    keys.insert(id, key);
                    requests.0.insert(id, value);
                }
                Ok(requests)
            }
        }
        deserializer.deserialize_map(RequestsVisitor)
    }
}

/// Writes asked for outside a spec (`vmfleet ctl set-model --set`): ID-register fields and
/// whole registers, with the spec's rules (names resolved, widths checked, no register set twice
/// or both whole and by field).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignments {
    /// `REGISTER.FIELD=VALUE` writes.
    pub fields: IdFieldRequests,
    /// `REGISTER=VALUE` writes (a name or a hex id).
    pub registers: RegisterRequests,
}

impl Assignments {
    /// Read `REGISTER.FIELD=VALUE` and `REGISTER=VALUE` items (values: `0x…` hex or decimal).
    pub fn parse(items: &[String]) -> Result<Assignments, SpecError> {
        let mut fields = IdFieldRequests::new();
        let mut field_keys: BTreeMap<FieldRef, String> = BTreeMap::new();
        let mut registers = RegisterRequests::new();
        let mut register_keys: BTreeMap<u64, String> = BTreeMap::new();
        for item in items {
            let Some((key, value)) = item.split_once('=') else {
                return Err(SpecError::BadAssignment { text: item.clone() });
            };
            let (key, value) = (key.trim(), value.trim());
            if key.contains('.') {
                let field = fields::resolve(key)?;
                let raw = parse_value(value)
                    .ok_or_else(|| SpecError::BadAssignment { text: item.clone() })?;
                if let Some(first) = field_keys.get(&field) {
                    return Err(SpecError::DuplicateField {
                        key: key.to_string(),
                        first: first.clone(),
                        field: field.full_name(),
                    });
                }
                fields.set(field, raw)?;
                field_keys.insert(field, key.to_string());
            } else {
                let id = resolve(key)?;
                let raw = parse_value(value).ok_or_else(|| SpecError::BadRegisterValue {
                    key: key.to_string(),
                    value: value.to_string(),
                })?;
                if let Some(first) = register_keys.get(&id) {
                    return Err(SpecError::DuplicateRegister {
                        key: key.to_string(),
                        first: first.clone(),
                        register: reg_id::describe(id),
                    });
                }
                registers.0.insert(id, TriState::whole(64, raw));
                register_keys.insert(id, key.to_string());
            }
        }
        let spec = Arm64ModelSpec {
            id_registers: fields,
            registers,
            ..Arm64ModelSpec::default()
        };
        spec.check()?;
        Ok(Assignments {
            fields: spec.id_registers,
            registers: spec.registers,
        })
    }

    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.registers.is_empty()
    }

    /// The full register writes, in register-id order: each whole-register write, and each
    /// register whose fields are set, over the value `held` gives for it (what the VM holds now).
    pub fn writes(&self, held: impl Fn(u64) -> u64) -> Vec<(u64, u64)> {
        let mut writes: BTreeMap<u64, u64> = self
            .registers
            .iter()
            .map(|(id, bits)| (id, bits.apply(held(id))))
            .collect();
        for (reg, requests) in self.fields.by_register() {
            let id = reg.kvm_reg_id();
            let value = requests.iter().fold(held(id), |value, (field, raw)| {
                field.field().with(value, *raw)
            });
            writes.insert(id, value);
        }
        writes.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_resolve_to_the_same_register() {
        let midr = catalog::MIDR_EL1.kvm_reg_id();
        assert_eq!(resolve("MIDR_EL1").unwrap(), midr);
        assert_eq!(resolve("midr-el1").unwrap(), midr);
        assert_eq!(resolve(&format!("{midr:#x}")).unwrap(), midr);
        let wa1 = FirmwareRegister::SmcccArchWorkaround1.id();
        assert_eq!(resolve("KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1").unwrap(), wa1);
        assert_eq!(resolve("SMCCC_ARCH_WORKAROUND_1").unwrap(), wa1);
        assert_eq!(
            resolve("CLIDR_EL1").unwrap(),
            catalog::CLIDR_EL1.kvm_reg_id()
        );
    }

    #[test]
    fn an_unknown_name_gets_the_nearest_one() {
        match resolve("MIDR_EL2") {
            Err(SpecError::UnknownRegister { suggestion, .. }) => {
                assert_eq!(suggestion.as_deref(), Some("MIDR_EL1"))
            }
            other => panic!("{other:?}"),
        }
        let text = resolve("CLIDR_EL").unwrap_err().to_string();
        assert!(text.contains("did you mean `CLIDR_EL1`"), "{text}");
    }

    #[test]
    fn only_model_registers_are_accepted() {
        // The PC, a core register.
        let text = resolve("0x6030000000100040").unwrap_err().to_string();
        assert!(text.contains("not a CPU-model register"), "{text}");
        let text = resolve("0x1234").unwrap_err().to_string();
        assert!(text.contains("not a CPU-model register"), "{text}");
        assert!(matches!(
            resolve("0xzz"),
            Err(SpecError::UnknownRegister { .. })
        ));
    }

    #[test]
    fn values_are_full_64_bit_numbers() {
        assert_eq!(parse_value("0xFFFF_FFFF_FFFF_FFFF"), Some(u64::MAX));
        assert_eq!(parse_value("17"), Some(17));
        assert_eq!(parse_value("0x1_0000_0000_0000_0000"), None);
        assert_eq!(parse_value("0x"), None);
        assert_eq!(parse_value("-1"), None);
    }

    #[test]
    fn assignments_read_fields_and_registers_with_the_specs_rules() {
        let items = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got =
            Assignments::parse(&items(&["ID_AA64ISAR0_EL1.AES=0", "MIDR_EL1=0x410fd4f1"])).unwrap();
        assert_eq!(got.fields.len(), 1);
        assert_eq!(
            got.registers.get(catalog::MIDR_EL1.kvm_reg_id()),
            Some(0x410f_d4f1)
        );
        let isar0 = catalog::ID_AA64ISAR0_EL1.kvm_reg_id();
        let writes = got.writes(|_| 0xf0);
        assert_eq!(
            writes,
            [(catalog::MIDR_EL1.kvm_reg_id(), 0x410f_d4f1), (isar0, 0)]
        );
        let error = |list: &[&str]| Assignments::parse(&items(list)).unwrap_err().to_string();
        assert!(error(&["MIDR_EL1"]).contains("expected REGISTER.FIELD=VALUE"));
        assert!(error(&["MIDR_EL1=0xg"]).contains("not a 64-bit register value"));
        assert!(error(&["ID_AA64ISAR0_EL1.AES=0x10"]).contains("4 bits wide"));
        assert!(error(&["ID_AA64ISAR0_EL1.AESX=0"]).contains("AESX"));
        assert!(error(&["MIDR_EL1=1", "midr_el1=2"]).contains("both set MIDR_EL1"));
        assert!(
            error(&["ID_AA64ISAR0_EL1.AES=0", "ID_AA64ISAR0_EL1=0"])
                .contains("written whole by `registers`")
        );
        assert!(Assignments::parse(&[]).unwrap().is_empty());
    }
}
