//! The arm64 CPU model a spec asks for, in the words of a fleet TOML file:
//!
//! ```toml
//! features = ["psci-0.2", "pmu-v3"]   # VCPU_INIT features; default ["psci-0.2"]
//! psci_version = "1.0"                # default: the newest the kernel offers
//! unknown_registers = "clear"         # clear (default) | keep-host | refuse
//!
//! [id_registers]                      # fields by REGISTER.FIELD; unnamed fields stay the host's
//! "ID_AA64ISAR0_EL1.AES" = 0
//! ID_AA64MMFR0_EL1 = { PARANGE = 5 }  # a table per register works too
//!
//! [hypercalls]                        # services by name; unnamed ones stay the host's
//! trng = false
//!
//! [registers]                         # whole registers, by name or id (see `registers`)
//! MIDR_EL1 = "0x410fd4f1"             # needs capability 239 on the host
//! ```
//!
//! Names are checked while the spec is read, so a typo is reported with the offending key, the
//! nearest known name and (through the TOML parser) its line. Values are checked against the
//! field's width; whether the kernel accepts them on a given host is the planner's business.

use super::registers::RegisterRequests;
use crate::model::arm64::catalog::{self, RegisterRole};
use crate::model::arm64::features::{FeatureConflict, VcpuFeature, VcpuFeatureSet};
use crate::model::arm64::fields::{self, FieldNameError, FieldRef};
use crate::model::arm64::firmware::{FirmwareRegister, HypercallService, PsciVersion};
use crate::model::arm64::reg_id;
use crate::model::arm64::sysreg::SysReg;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// What to do with firmware registers and hypercall bitmaps that the kernel lists and vmfleet
/// does not know (a newer kernel's additions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownRegisterPolicy {
    /// Write 0: a bitmap at 0 offers the guest nothing vmfleet cannot name, so the same spec gives
    /// the same guest on old and new kernels.
    #[default]
    Clear,
    /// Leave the kernel's value.
    KeepHost,
    /// Refuse to run the VM on such a kernel.
    Refuse,
}

impl fmt::Display for UnknownRegisterPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnknownRegisterPolicy::Clear => "clear",
            UnknownRegisterPolicy::KeepHost => "keep-host",
            UnknownRegisterPolicy::Refuse => "refuse",
        })
    }
}

/// What is wrong with a spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SpecError {
    /// An `id_registers` key that names no field vmfleet knows.
    #[error("id_registers: {0}")]
    FieldName(#[from] FieldNameError),
    /// A field value that does not fit the field.
    #[error(
        "id_registers: `{key}` = {value}: {field} is {width} bits wide, so its values are \
         0..={max:#x}{}",
        signed_note(*.signed)
    )]
    FieldValueOutOfRange {
        /// The key as written.
        key: String,
        /// The value as written.
        value: i128,
        /// The field's full name.
        field: String,
        /// Its width.
        width: u8,
        /// Its largest raw value.
        max: u64,
        /// Whether it is signed.
        signed: bool,
    },
    /// Two keys that name the same field.
    #[error("id_registers: `{key}` and `{first}` both set {field}")]
    DuplicateField {
        /// The second key.
        key: String,
        /// The first key.
        first: String,
        /// The field's full name.
        field: String,
    },
    /// Two keys that name the same service.
    #[error("hypercalls: `{key}` and `{first}` both set {service}")]
    DuplicateService {
        /// The second key.
        key: String,
        /// The first key.
        first: String,
        /// The service.
        service: HypercallService,
    },
    /// `power-off` in the feature list.
    #[error(
        "features: `power-off` is per-vCPU boot state, not part of the CPU model, and cannot be \
         requested in a spec"
    )]
    PowerOffIsNotAModelFeature,
    /// A feature combination `KVM_ARM_VCPU_INIT` refuses.
    #[error("features: {0}")]
    FeatureConflict(FeatureConflict),
    /// A PSCI version of 0.2 or later without the psci-0.2 feature.
    #[error(
        "psci_version = \"{version}\" needs the psci-0.2 feature (without it KVM offers only its \
         legacy PSCI 0.1 and refuses other versions with EINVAL)"
    )]
    PsciVersionNeedsPsci02 {
        /// The version asked for.
        version: PsciVersion,
    },
    /// A `registers` key that names no register vmfleet knows.
    #[error(
        "registers: unknown register `{key}`{} (a key is a register name, such as MIDR_EL1, \
         ID_AA64ISAR0_EL1 or SMCCC_ARCH_WORKAROUND_1, or its KVM id in hex, \"0x6030…\")",
        crate::model::suggest::did_you_mean(.suggestion)
    )]
    UnknownRegister {
        /// The key as written.
        key: String,
        /// The nearest known name.
        suggestion: Option<String>,
    },
    /// A `registers` key that names a register outside the CPU model.
    #[error(
        "registers: `{key}` is {register} ({reg_id:#018x}), not a CPU-model register: only the \
         ID, identification and cache-description registers, the firmware registers and the \
         hypercall bitmaps can be set"
    )]
    NotAModelRegister {
        /// The key as written.
        key: String,
        /// The id.
        reg_id: u64,
        /// Its description.
        register: String,
    },
    /// Two `registers` keys that name the same register.
    #[error("registers: `{key}` and `{first}` both set {register}")]
    DuplicateRegister {
        /// The second key.
        key: String,
        /// The first key.
        first: String,
        /// The register.
        register: String,
    },
    /// A `registers` value that is not a 64-bit number.
    #[error(
        "registers: `{key}` = {value}: not a 64-bit register value; write it in hex: \"0x…\" \
         (at most 16 hex digits)"
    )]
    BadRegisterValue {
        /// The key as written.
        key: String,
        /// The value as written.
        value: String,
    },
    /// A write outside a spec (`ctl set-model --set`) that is not `NAME=VALUE`.
    #[error(
        "`{text}`: expected REGISTER.FIELD=VALUE (ID_AA64ISAR0_EL1.AES=0) or REGISTER=VALUE \
         (MIDR_EL1=0x410fd4f1)"
    )]
    BadAssignment {
        /// The text as given.
        text: String,
    },
    /// A register written whole by `registers` and in part another way.
    #[error(
        "registers: {register} is written whole by `registers`, and {other} sets part of it; \
         put everything in the raw value, or drop the raw write"
    )]
    RawWriteConflict {
        /// The register.
        register: String,
        /// The other request (`id_registers: AES`, `psci_version`, `hypercalls: trng`).
        other: String,
    },
    /// PSCI 0.1 with the psci-0.2 feature.
    #[error(
        "psci_version = \"0.1\" is KVM's legacy PSCI for vCPUs without the psci-0.2 feature; \
         drop psci-0.2 from features or ask for 0.2 or later"
    )]
    Psci01WithPsci02,
}

fn signed_note(signed: bool) -> &'static str {
    if signed {
        " (this field is signed: 0xF means \"not implemented\")"
    } else {
        ""
    }
}

/// Requested ID-register field values, by field. Serializes as a map `"REGISTER.FIELD" = value`;
/// reads that, or one table per register (`ID_AA64ISAR0_EL1 = { AES = 0 }`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdFieldRequests(BTreeMap<FieldRef, u64>);

impl IdFieldRequests {
    /// No requests.
    pub fn new() -> IdFieldRequests {
        IdFieldRequests::default()
    }

    /// Ask for `field` = `value` (replacing an earlier request of the field), checking the width.
    pub fn set(&mut self, field: FieldRef, value: u64) -> Result<(), SpecError> {
        let key = field.full_name();
        self.0
            .insert(field, check_width(&key, field, i128::from(value))?);
        Ok(())
    }

    /// Ask for the field called `key` (`REGISTER.FIELD`) = `value`.
    pub fn set_by_name(&mut self, key: &str, value: u64) -> Result<(), SpecError> {
        self.set(fields::resolve(key)?, value)
    }

    /// Stop asking for `field`; whether it was asked for.
    pub fn remove(&mut self, field: FieldRef) -> bool {
        self.0.remove(&field).is_some()
    }

    /// The value asked for `field`.
    pub fn get(&self, field: FieldRef) -> Option<u64> {
        self.0.get(&field).copied()
    }

    /// Every request, by register encoding then from the highest field down.
    pub fn iter(&self) -> impl Iterator<Item = (FieldRef, u64)> + '_ {
        self.0.iter().map(|(f, v)| (*f, *v))
    }

    /// The requests grouped by register, in encoding order.
    pub fn by_register(&self) -> BTreeMap<SysReg, Vec<(FieldRef, u64)>> {
        let mut grouped: BTreeMap<SysReg, Vec<(FieldRef, u64)>> = BTreeMap::new();
        for (field, value) in self.iter() {
            grouped
                .entry(field.register())
                .or_default()
                .push((field, value));
        }
        grouped
    }

    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many fields are asked for.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

fn check_width(key: &str, field: FieldRef, value: i128) -> Result<u64, SpecError> {
    let max = field.field().max_raw();
    match u64::try_from(value) {
        Ok(raw) if raw <= max => Ok(raw),
        _ => Err(SpecError::FieldValueOutOfRange {
            key: key.to_string(),
            value,
            field: field.full_name(),
            width: field.field().width,
            max,
            signed: field.field().signed,
        }),
    }
}

impl Serialize for IdFieldRequests {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(f, v)| (f.full_name(), *v)))
    }
}

/// One field value as written: any integer, range-checked once the field is known.
struct FieldValue(i128);

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;
        impl Visitor<'_> for IntVisitor {
            type Value = FieldValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer field value")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FieldValue, E> {
                Ok(FieldValue(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FieldValue, E> {
                Ok(FieldValue(v.into()))
            }
        }
        deserializer.deserialize_any(IntVisitor)
    }
}

/// An `id_registers` key: a field (`"ID_AA64ISAR0_EL1.AES"`) or a register whose fields follow
/// in a table (`ID_AA64ISAR0_EL1 = { AES = 0 }`). Names are resolved while the key is read, so
/// that a parser with positions (TOML) puts an unknown name's error on the key itself.
enum EntryKey {
    Field(FieldRef, String),
    Register(String),
}

impl<'de> Deserialize<'de> for EntryKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let key = String::deserialize(deserializer)?;
        resolve_entry_key(key).map_err(de::Error::custom)
    }
}

fn resolve_entry_key(key: String) -> Result<EntryKey, SpecError> {
    if key.contains('.') {
        return Ok(EntryKey::Field(fields::resolve(&key)?, key));
    }
    match fields::resolve_table(&key) {
        Ok(_) => Ok(EntryKey::Register(key)),
        // Not a register, but perhaps a field name on its own: then point at the full name.
        Err(not_a_register @ FieldNameError::UnknownRegister { .. }) => match fields::resolve(&key)
        {
            Err(
                bare_field @ FieldNameError::NotRegisterDotField {
                    suggestion: Some(_),
                    ..
                },
            ) => Err(bare_field.into()),
            _ => Err(not_a_register.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Reads one field value and checks it fits the field, so that a bad value's error sits on the
/// value.
struct FieldValueSeed<'a> {
    key: &'a str,
    field: FieldRef,
}

impl<'de> DeserializeSeed<'de> for FieldValueSeed<'_> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<u64, D::Error> {
        let FieldValue(value) = FieldValue::deserialize(deserializer)?;
        check_width(self.key, self.field, value).map_err(de::Error::custom)
    }
}

/// Reads the key of one field inside a register's table.
struct TableKeySeed<'a> {
    register: &'a str,
}

impl<'de> DeserializeSeed<'de> for TableKeySeed<'_> {
    type Value = (FieldRef, String);
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let name = String::deserialize(deserializer)?;
        let key = format!("{}.{name}", self.register);
        let field = fields::resolve(&key).map_err(|e| de::Error::custom(SpecError::from(e)))?;
        Ok((field, key))
    }
}

/// Reads a register's table of fields.
struct RegisterTableSeed<'a> {
    register: &'a str,
}

impl<'de> DeserializeSeed<'de> for RegisterTableSeed<'_> {
    type Value = Vec<(FieldRef, String, u64)>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RegisterTableSeed<'_> {
    type Value = Vec<(FieldRef, String, u64)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a table of the fields of {} (FIELD = value)",
            self.register
        )
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some((field, key)) = map.next_key_seed(TableKeySeed {
            register: self.register,
        })? {
            let value = map.next_value_seed(FieldValueSeed { key: &key, field })?;
            entries.push((field, key, value));
        }
        Ok(entries)
    }
}

impl<'de> Deserialize<'de> for IdFieldRequests {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RequestsVisitor;
        impl<'de> Visitor<'de> for RequestsVisitor {
            type Value = IdFieldRequests;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of \"REGISTER.FIELD\" = value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IdFieldRequests, A::Error> {
                let mut requests = IdFieldRequests::new();
                let mut keys: BTreeMap<FieldRef, String> = BTreeMap::new();
                while let Some(key) = map.next_key::<EntryKey>()? {
                    let entries = match key {
                        EntryKey::Field(field, key) => {
                            let value = map.next_value_seed(FieldValueSeed { key: &key, field })?;
                            vec![(field, key, value)]
                        }
                        EntryKey::Register(register) => map.next_value_seed(RegisterTableSeed {
                            register: &register,
                        })?,
                    };
                    for (field, key, value) in entries {
                        if let Some(first) = keys.get(&field) {
                            return Err(de::Error::custom(SpecError::DuplicateField {
                                key,
                                first: first.clone(),
                                field: field.full_name(),
                            }));
                        }
                        requests.0.insert(field, value);
                        keys.insert(field, key);
                    }
                }
                Ok(requests)
            }
        }
        deserializer.deserialize_map(RequestsVisitor)
    }
}

/// Requested hypercall services: on (the host must offer it) or off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRequests(BTreeMap<HypercallService, bool>);

impl ServiceRequests {
    /// No requests.
    pub fn new() -> ServiceRequests {
        ServiceRequests::default()
    }

    /// Ask for `service` on or off.
    pub fn set(&mut self, service: HypercallService, on: bool) {
        self.0.insert(service, on);
    }

    /// Stop asking for every service of `register`; whether any was asked for.
    pub fn remove_register(&mut self, register: FirmwareRegister) -> bool {
        let before = self.0.len();
        self.0.retain(|service, _| service.register() != register);
        self.0.len() != before
    }

    /// What is asked for `service`.
    pub fn get(&self, service: HypercallService) -> Option<bool> {
        self.0.get(&service).copied()
    }

    /// The requests for the services of one bitmap register, in bit order.
    pub fn for_register(&self, register: FirmwareRegister) -> Vec<(HypercallService, bool)> {
        register
            .services()
            .filter_map(|s| self.get(s).map(|on| (s, on)))
            .collect()
    }

    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for ServiceRequests {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(s, on)| (s.name(), *on)))
    }
}

/// A `hypercalls` key: the service, resolved while the key is read (so that an unknown name's
/// error sits on the key), and the key as written (for the duplicate error).
struct ServiceKey(HypercallService, String);

impl<'de> Deserialize<'de> for ServiceKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let key = String::deserialize(deserializer)?;
        let service =
            HypercallService::deserialize(de::value::StrDeserializer::<D::Error>::new(&key))?;
        Ok(ServiceKey(service, key))
    }
}

impl<'de> Deserialize<'de> for ServiceRequests {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ServicesVisitor;
        impl<'de> Visitor<'de> for ServicesVisitor {
            type Value = ServiceRequests;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of service = true/false")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ServiceRequests, A::Error> {
                let mut requests = ServiceRequests::new();
                let mut keys: BTreeMap<HypercallService, String> = BTreeMap::new();
                while let Some(ServiceKey(service, key)) = map.next_key()? {
                    let on = map.next_value::<bool>()?;
                    if let Some(first) = keys.get(&service) {
                        return Err(de::Error::custom(SpecError::DuplicateService {
                            key,
                            first: first.clone(),
                            service,
                        }));
                    }
                    keys.insert(service, key);
                    requests.set(service, on);
                }
                Ok(requests)
            }
        }
        deserializer.deserialize_map(ServicesVisitor)
    }
}

/// The arm64 CPU model a spec asks for. Everything it does not name stays as the host has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arm64ModelSpec {
    /// The VCPU_INIT features of every vCPU of the VM. Replaces the default, `["psci-0.2"]`.
    #[serde(default = "default_features")]
    pub features: VcpuFeatureSet,
    /// ID-register fields to set.
    #[serde(default, skip_serializing_if = "IdFieldRequests::is_empty")]
    pub id_registers: IdFieldRequests,
    /// Hypercall services to switch on or off.
    #[serde(default, skip_serializing_if = "ServiceRequests::is_empty")]
    pub hypercalls: ServiceRequests,
    /// Whole registers to write (`registers`), by id.
    #[serde(default, skip_serializing_if = "RegisterRequests::is_empty")]
    pub registers: RegisterRequests,
    /// The PSCI version the guest sees (default: the newest the kernel offers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psci_version: Option<PsciVersion>,
    /// What to do with firmware registers vmfleet does not know.
    #[serde(default)]
    pub unknown_registers: UnknownRegisterPolicy,
}

fn default_features() -> VcpuFeatureSet {
    VcpuFeatureSet::of(&[VcpuFeature::Psci0_2])
}

impl Default for Arm64ModelSpec {
    /// The host's model, with PSCI 0.2 and later, and unknown registers cleared.
    fn default() -> Self {
        Arm64ModelSpec {
            features: default_features(),
            id_registers: IdFieldRequests::new(),
            hypercalls: ServiceRequests::new(),
            registers: RegisterRequests::new(),
            psci_version: None,
            unknown_registers: UnknownRegisterPolicy::default(),
        }
    }
}

impl Arm64ModelSpec {
    /// The contradictions a spec can have on its own, whatever the host: feature combinations
    /// `KVM_ARM_VCPU_INIT` refuses, and a PSCI version the features rule out.
    pub fn check(&self) -> Result<(), SpecError> {
        if self.features.contains(VcpuFeature::PowerOff) {
            return Err(SpecError::PowerOffIsNotAModelFeature);
        }
        if let Some(conflict) = self.features.conflict() {
            return Err(SpecError::FeatureConflict(conflict));
        }
        self.check_raw_writes()?;
        let psci_0_2 = self.features.contains(VcpuFeature::Psci0_2);
        match self.psci_version {
            Some(PsciVersion::V0_1) if psci_0_2 => Err(SpecError::Psci01WithPsci02),
            Some(version) if !psci_0_2 && version != PsciVersion::V0_1 => {
                Err(SpecError::PsciVersionNeedsPsci02 { version })
            }
            _ => Ok(()),
        }
    }

    /// A register the `registers` table writes whole must not be set another way too.
    fn check_raw_writes(&self) -> Result<(), SpecError> {
        for (id, _) in self.registers.iter() {
            let register = reg_id::describe(id);
            let conflict = |other: String| SpecError::RawWriteConflict {
                register: register.clone(),
                other,
            };
            let fields: Vec<&str> = self
                .id_registers
                .iter()
                .filter(|(field, _)| field.register().kvm_reg_id() == id)
                .map(|(field, _)| field.field().name)
                .collect();
            if !fields.is_empty() {
                return Err(conflict(format!("id_registers ({})", fields.join(", "))));
            }
            if self.psci_version.is_some() && id == FirmwareRegister::PsciVersion.id() {
                return Err(conflict("psci_version".to_string()));
            }
            if let Some(bitmap) = FirmwareRegister::from_id(id).filter(|r| r.is_bitmap()) {
                let services: Vec<&str> = self
                    .hypercalls
                    .for_register(bitmap)
                    .iter()
                    .map(|(service, _)| service.name())
                    .collect();
                if !services.is_empty() {
                    return Err(conflict(format!("hypercalls ({})", services.join(", "))));
                }
            }
        }
        Ok(())
    }

    /// Whether the spec changes MIDR_EL1, REVIDR_EL1 or AIDR_EL1 (by field or whole), which the
    /// kernel allows only on a VM that enabled `KVM_CAP_ARM_WRITABLE_IMP_ID_REGS` (239) before
    /// its first vCPU was created.
    pub fn writes_implementation_id(&self) -> bool {
        let implementation =
            |id: u64| catalog::by_id(id).is_some_and(|r| r.role == RegisterRole::Implementation);
        self.registers.iter().any(|(id, _)| implementation(id))
            || self
                .id_registers
                .iter()
                .any(|(field, _)| implementation(field.register().kvm_reg_id()))
    }
}
