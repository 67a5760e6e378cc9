//! Firecracker custom CPU templates through `vmfleet template import-firecracker` and
//! `export-firecracker`: the two examples in `fixtures/firecracker/` (x86 masking AVX-512, shaped
//! like Firecracker's T2; arm64 lowering ID_AA64ISAR0_EL1 fields, shaped like its V1N1) import,
//! and export back to equivalent JSON (same bits per leaf and register, order-insensitive); an
//! import of an export is the same template; named features and fields export as register ids
//! and bit positions; MSRs are kept, warned of, and refused at run time; bad input is refused
//! with the file and the key path.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use supervisor::firecracker::convert::{export, import};
use supervisor::firecracker::format::FirecrackerTemplate;
use vcpu::Hypervisor as _;
use vcpu::model::template::CpuTemplate;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example(name: &str) -> PathBuf {
    root().join(format!("fixtures/firecracker/{name}.template.json"))
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmfleet-fc-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn vmfleet(args: &[&str], paths: &[&Path]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmfleet"));
    cmd.arg("template").args(args);
    for p in paths {
        cmd.arg(p);
    }
    cmd.output().unwrap()
}

fn parse(path: &Path) -> FirecrackerTemplate {
    FirecrackerTemplate::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Import `name` to TOML and export that back to JSON through the CLI: (TOML, JSON, stderr of
/// the import).
fn round_trip(name: &str, dir: &Path) -> (PathBuf, PathBuf, String) {
    let (toml, json) = (
        dir.join(format!("{name}.toml")),
        dir.join(format!("{name}.json")),
    );
    let out = vmfleet(&["import-firecracker", "-o"], &[&toml, &example(name)]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let out = vmfleet(&["export-firecracker", "-o"], &[&json, &toml]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    (toml, json, stderr)
}

#[test]
fn x86_avx512_off_imports_and_exports_to_equivalent_json() {
    let dir = scratch("x86");
    let (toml, json, stderr) = round_trip("x86-avx512-off", &dir);
    assert_eq!(
        parse(&json).canonical(),
        parse(&example("x86-avx512-off")).canonical()
    );
    // The MSR is kept, and said to be unsupported.
    assert!(stderr.contains("warning: MSR 0x10a"), "{stderr}");
    let text = std::fs::read_to_string(&toml).unwrap();
    let t = CpuTemplate::parse(&text, "t.toml", "t").unwrap();
    assert_eq!(t.firecracker.msrs.len(), 1);
    assert_eq!(t.firecracker.kvm_capabilities, ["!56"]);
    assert_eq!(
        t.name, "x86-avx512-off",
        "named after the file, without .template"
    );
    let refusal = t.refuse_unmodelled().unwrap_err();
    assert!(refusal.contains("MSR 0x10a"), "{refusal}");
    // AVX-512F (7.0.ebx[16]) is cleared by the raw bits.
    let ebx = t
        .x86
        .cpuid
        .iter()
        .find(|b| (b.leaf, b.subleaf, b.register.name()) == (7, 0, "ebx"))
        .unwrap();
    assert_eq!(ebx.bits.bit(16), Some(false));
    // The TOML, with its [firecracker] table, is an instance of the template format's schema.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("supervisor/schemas/template.v1.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let doc = serde_json::to_value(toml::from_str::<toml::Value>(&text).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    // `template show` lists the MSR in the template and warns of it.
    let out = vmfleet(&["show"], &[&toml]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("addr = 0x10a"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: MSR 0x10a"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn arm64_isar0_lowered_imports_and_exports_to_equivalent_json() {
    let dir = scratch("arm64");
    let (toml, json, stderr) = round_trip("arm64-isar0-lowered", &dir);
    assert_eq!(
        parse(&json).canonical(),
        parse(&example("arm64-isar0-lowered")).canonical()
    );
    assert!(stderr.is_empty(), "{stderr}");
    let t = CpuTemplate::parse(&std::fs::read_to_string(&toml).unwrap(), "t", "t").unwrap();
    assert_eq!(
        t.arm64.features.to_string(),
        "psci-0.2, ptrauth-address, ptrauth-generic"
    );
    let isar0 = t.arm64.registers.bits(0x6030_0000_0013_c030).unwrap();
    assert_eq!(isar0.bit(12), Some(true), "ID_AA64ISAR0_EL1.SHA1 = 1");
    assert_eq!(isar0.bit(13), Some(false));
    assert_eq!(t.firecracker.kvm_capabilities, ["171", "172"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_import_of_an_export_is_the_same_template() {
    for name in ["x86-avx512-off", "arm64-isar0-lowered"] {
        let fc = parse(&example(name));
        let t = import(&fc, name).unwrap().template;
        let back = export(&t).unwrap().template;
        assert_eq!(back.canonical(), fc.canonical(), "{name}");
        assert_eq!(import(&back, name).unwrap().template, t, "{name}");
    }
}

#[test]
fn named_features_and_fields_export_as_register_bits() {
    let x86 = CpuTemplate::parse(
        "arch = \"x86_64\"\n[x86.features]\navx512f = false\navx2 = true\n",
        "x.toml",
        "x",
    )
    .unwrap();
    let fc = export(&x86).unwrap().template.canonical();
    let ebx = fc.cpuid[&(7, 0, vcpu::hypervisor::cpuid::CpuidReg::Ebx)];
    assert_eq!(ebx, (1 << 16 | 1 << 5, 1 << 5), "avx512f = 0, avx2 = 1");
    assert_eq!(fc.cpuid_flags[&(7, 0)], 1);

    let arm = CpuTemplate::parse(
        "arch = \"aarch64\"\n[arm64]\npsci_version = \"1.1\"\n\
         id_registers = { \"ID_AA64ISAR0_EL1.AES\" = 1 }\nhypercalls = { trng = false }\n",
        "a.toml",
        "a",
    )
    .unwrap();
    let converted = export(&arm).unwrap();
    let fc = converted.template.canonical();
    assert_eq!(
        fc.registers[&0x6030_0000_0013_c030],
        (0xf0, 0x10),
        "AES = 1"
    );
    assert_eq!(
        fc.registers[&0x6030_0000_0014_0000],
        (u128::from(u64::MAX), 0x10001),
        "PSCI 1.1"
    );
    assert_eq!(fc.registers[&0x6030_0000_0016_0000], (1, 0), "TRNG off");
    assert!(
        fc.vcpu_features.is_empty(),
        "Firecracker's default features"
    );
    assert!(
        converted
            .warnings
            .iter()
            .any(|w| w.contains("unknown_registers = \"clear\"")),
        "{:?}",
        converted.warnings
    );
}

#[test]
fn bad_input_is_refused_with_the_file_and_the_key() {
    let dir = scratch("bad");
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"reg_modifiers": [{"addr": "0x603000000013c030", "bitmap": "0b0z"}]}"#,
    )
    .unwrap();
    let out = vmfleet(&["import-firecracker"], &[&bad]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.json") && stderr.contains("reg_modifiers[0].bitmap"),
        "{stderr}"
    );
    // A core register is no CPU-model register: a template cannot hold it.
    std::fs::write(
        &bad,
        r#"{"reg_modifiers": [{"addr": "0x6030000000100000", "bitmap": "0b1"}]}"#,
    )
    .unwrap();
    let out = vmfleet(&["import-firecracker"], &[&bad]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("0x6030000000100000"), "{stderr}");
    // An output that exists is not replaced without --force.
    let toml = dir.join("out.toml");
    std::fs::write(&toml, "").unwrap();
    let out = vmfleet(
        &["import-firecracker", "-o"],
        &[&toml, &example("x86-avx512-off")],
    );
    assert_eq!(out.status.code(), Some(10));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_firecracker_custom_template_round_trips() {
    let dir = root().join("fixtures/firecracker/custom_cpu_templates");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let fc = parse(&path);
        let converted = import(&fc, &name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let back = export(&converted.template).unwrap().template;
        let (mut want, got) = (fc.canonical(), back.canonical());
        // Leaf flags are KVM's on export; import warned of each one it changed.
        for ((leaf, _), flags) in want.cpuid_flags.iter_mut() {
            if let Some(w) = converted
                .warnings
                .iter()
                .find(|w| w.contains(&format!("(leaf {leaf:#x}): flags")))
            {
                assert!(w.contains("dropped"), "{w}");
                *flags = 1 - *flags;
            }
        }
        assert_eq!(got, want, "{name}");
        assert_eq!(
            import(&back, &name).unwrap().template,
            converted.template,
            "{name}"
        );
        seen += 1;
    }
    assert_eq!(seen, 11);
}

#[test]
fn a_fleet_naming_a_template_with_msrs_is_refused_naming_each_msr() {
    let fc = parse(&example("x86-avx512-off"));
    let template = import(&fc, "t").unwrap().template.to_toml();
    let spec = format!(
        "name = \"f\"\n[[vm]]\nname = \"a\"\ntemplate = \"t.toml\"\n[templates]\n\"t.toml\" = {}\n",
        toml::Value::String(template.clone())
    );
    let e = supervisor::spec::parse(&spec, "f.toml").unwrap_err();
    assert_eq!((e.line, e.column), (4, 12), "{e}");
    assert!(
        e.message.contains("MSR 0x10a") && e.message.contains("does not model MSRs"),
        "{e}"
    );
    // Without its MSRs the same template runs.
    let mut t = CpuTemplate::parse(&template, "t.toml", "t").unwrap();
    t.firecracker.msrs.clear();
    let spec = format!(
        "name = \"f\"\n[[vm]]\nname = \"a\"\ntemplate = \"t.toml\"\n[templates]\n\"t.toml\" = {}\n",
        toml::Value::String(t.to_toml())
    );
    supervisor::spec::parse(&spec, "f.toml").unwrap();
}

/// Firecracker's T2A (AMD, no MSRs) through the whole path: imported with the CLI, run on this
/// host's /dev/kvm by a fleet spec naming it (the report says whether the guest sees it and names
/// each bit the host changed), and exported back to JSON equivalent to the original.
#[test]
fn firecracker_t2a_imports_runs_on_kvm_and_exports_equivalent_json() {
    let test = "firecracker_t2a_imports_runs_on_kvm_and_exports_equivalent_json";
    match vcpu::hypervisor::kvm::KvmHypervisor::open() {
        Ok(kvm) if kvm.arch() == vcpu::GuestArch::X86_64 => {}
        Ok(kvm) => {
            return vcpu::skip::skipped(test, format!("T2A is x86, this host runs {}", kvm.arch()));
        }
        Err(e) => return vcpu::skip::skipped(test, format!("/dev/kvm unusable: {e}")),
    }
    let dir = scratch("t2a");
    let original = root().join("fixtures/firecracker/custom_cpu_templates/T2A.json");
    let toml = dir.join("t2a.toml");
    let out = vmfleet(&["import-firecracker", "-o"], &[&toml, &original]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let spec = dir.join("fleet.toml");
    std::fs::write(
        &spec,
        "name = \"fc\"\n[[vm]]\nname = \"t2a\"\nvcpus = 2\ntemplate = \"t2a.toml\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmfleet"))
        .args(["run", "--json"])
        .arg(&spec)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let vm = &report["vms"][0];
    assert_eq!(vm["state"]["status"], "completed", "{vm}");
    assert_eq!(
        vm["template"]["name"], "T2A",
        "named after the Firecracker file"
    );
    // Whatever this host does with the template, every bit it changed is named by position.
    for change in vm["template"]["changed_by_host"].as_array().unwrap() {
        assert!(change["register"].as_str().is_some_and(|r| !r.is_empty()));
    }
    let guest_saw = vm["vcpus"][0]["guest"]["passes"].as_u64().unwrap_or(0);
    assert!(guest_saw > 0, "the guest ran its CPUID probe: {vm}");
    let json = dir.join("t2a.json");
    let out = vmfleet(&["export-firecracker", "-o"], &[&json, &toml]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(parse(&json).canonical(), parse(&original).canonical());
    let _ = std::fs::remove_dir_all(&dir);
}
