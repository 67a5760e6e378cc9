//! Reading and writing templates: every section, the round trip through `to_toml`, and an error
//! for each kind of bad input that names the place.

use super::*;
use crate::model::arm64::catalog as arm64_catalog;
use crate::model::arm64::fields;

const X86: &str = r#"
name = "web"
arch = "x86_64"
description = "what the web hosts give"

[x86.features]
avx2 = true
"AVX512F" = false

[[x86.cpuid]]
leaf = 0x7
subleaf = 0
ecx = "0b0_1x"
ebx = "0bxx01"
"#;

const ARM64: &str = r#"
arch = "aarch64"

[arm64]
features = ["psci-0.2"]
psci_version = "1.1"
id_registers = { "ID_AA64ISAR0_EL1.AES" = 1 }
hypercalls = { trng = false }
registers = { ID_AA64ISAR1_EL1 = "0bxxxx0000", MIDR_EL1 = "0x410fd4f1" }
"#;

#[test]
fn an_x86_template_reads_every_section() {
    let t = CpuTemplate::parse(X86, "web.toml", "web").unwrap();
    assert_eq!(t.name, "web");
    assert_eq!(t.arch, GuestArch::X86_64);
    assert_eq!(t.x86.show, ["avx2"]);
    assert_eq!(t.x86.hide, ["avx512f"]);
    assert_eq!(t.x86.cpuid.len(), 2);
    let ebx = t.x86.cpuid[0];
    assert_eq!((ebx.leaf, ebx.register), (7, CpuidReg::Ebx));
    assert_eq!((ebx.bits.mask, ebx.bits.value), (0b11, 0b01));
    assert_eq!(t.x86.cpuid[1].register, CpuidReg::Ecx);
}

#[test]
fn an_arm64_template_is_an_arm64_model_with_bitmaps() {
    let t = CpuTemplate::parse(ARM64, "a.toml", "a").unwrap();
    assert_eq!(t.name, "a", "the stem names a template without `name`");
    let isar1 = arm64_catalog::ID_AA64ISAR1_EL1.kvm_reg_id();
    let bits = t.arm64.registers.bits(isar1).unwrap();
    assert_eq!((bits.mask, bits.value), (0xf, 0));
    assert_eq!(bits.apply(0x1234_5678), 0x1234_5670);
    assert_eq!(
        t.arm64.registers.get(arm64_catalog::MIDR_EL1.kvm_reg_id()),
        Some(0x410f_d4f1)
    );
    let aes = fields::resolve("ID_AA64ISAR0_EL1.AES").unwrap();
    assert_eq!(t.arm64.id_registers.get(aes), Some(1));
}

#[test]
fn to_toml_reads_back_the_same_template() {
    for (text, stem) in [(X86, "web"), (ARM64, "a")] {
        let t = CpuTemplate::parse(text, "in.toml", stem).unwrap();
        let written = t.to_toml();
        let again = CpuTemplate::parse(&written, "out.toml", "other")
            .unwrap_or_else(|e| panic!("{e}\n{written}"));
        assert_eq!(again, t, "{written}");
    }
}

#[test]
fn bad_templates_name_what_and_where() {
    let error = |text: &str| {
        CpuTemplate::parse(text, "t.toml", "t")
            .unwrap_err()
            .to_string()
    };
    let e = error("arch = \"riscv\"\n");
    assert!(e.starts_with("t.toml:1:8: arch \"riscv\""), "{e}");
    let e = error("arch = \"x86_64\"\n[x86.features]\navx3 = true\n");
    assert!(
        e.contains("t.toml:3:8") && e.contains("unknown CPU feature `avx3`"),
        "{e}"
    );
    let e = error("arch = \"x86_64\"\n[[x86.cpuid]]\nleaf = 1\necx = \"0b12\"\n");
    assert!(
        e.contains("t.toml:4:7") && e.contains("character 4 is `2`"),
        "{e}"
    );
    let e = error("arch = \"x86_64\"\n[[x86.cpuid]]\nleaf = 1\n");
    assert!(e.contains("sets no register"), "{e}");
    let e = error("arch = \"x86_64\"\ncolour = 1\n");
    assert!(e.contains("t.toml:2:1") && e.contains("colour"), "{e}");
    let e = error("arch = \"x86_64\"\n[arm64]\n");
    assert!(e.contains("an `arm64` table in an x86_64 template"), "{e}");
    let e = error("arch = \"aarch64\"\n[arm64]\nregisters = { MIDR_EL1 = \"0b2\" }\n");
    assert!(e.contains("character 3 is `2`"), "{e}");
    let e =
        error("arch = \"aarch64\"\n[arm64]\nid_registers = { \"ID_AA64ISAR0_EL1.AESX\" = 0 }\n");
    assert!(e.contains("t.toml:3") && e.contains("AESX"), "{e}");
    let e = error("name = \"a b\"\narch = \"x86_64\"\n");
    assert!(e.contains("t.toml:1:8: name:"), "{e}");
    let e = error("arch = \"x86_64\"\n[x86.features]\nsse3 = true\npni = false\n");
    assert!(e.contains("already set"), "{e}");
}
