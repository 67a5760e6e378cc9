//! Tests of `spec` (positions): every kind of error `parse` gives points at its key or value.

use super::*;

/// One spec per kind of error `parse` can give, with where it must point (line, column) and
/// a piece of its message. The position is the offending key or value, never just the table.
#[test]
fn every_kind_of_error_points_at_its_key_or_value() {
    const X: &str = "[[vm]]\nname = \"a\"\n";
    const A: &str = "arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n";
    let x = |rest: &str| format!("{X}{rest}");
    let a = |rest: &str| format!("{A}{rest}");
    let cases: Vec<(String, usize, usize, &str)> = vec![
        // TOML itself.
        (x("vcpus = = 2\n"), 3, 9, "extra `=`"),
        (
            x("vcpus = \"2\"\n"),
            3,
            9,
            "invalid type: string \"2\", expected i64",
        ),
        ("[[vm]]\nname = 3\n".into(), 2, 8, "expected a string"),
        ("vm = 3\n".into(), 1, 6, "expected a sequence"),
        ("[[vm]]\nvcpus = 2\n".into(), 1, 1, "missing key `name`"),
        (
            x("[[vm.after_run]]\nvcpu = 0\n"),
            3,
            1,
            "missing key `action`",
        ),
        (
            x("cross_check = 1\n"),
            3,
            1,
            "unknown key `cross_check` in [[vm]]: `cross_check` belongs at the top level",
        ),
        // Unknown keys, in every table.
        (
            format!("nme = \"x\"\n{X}"),
            1,
            1,
            "unknown key `nme` at the top level (did you mean `name`?)",
        ),
        (
            x("vcpu = 2\n"),
            3,
            1,
            "unknown key `vcpu` in [[vm]] (did you mean `vcpus`?)",
        ),
        (x("memorymib = 2\n"), 3, 1, "(did you mean `memory_mib`?)"),
        (x("hide = []\n"), 3, 1, "`hide` belongs in a VM's `cpu`"),
        (
            x("colour = 1\n"),
            3,
            1,
            "the keys there are `name`, `count`",
        ),
        (
            x("cpu = { hid = [] }\n"),
            3,
            9,
            "unknown key `hid` in a VM's `cpu` (did you mean `hide`?)",
        ),
        (
            x("[[vm.after_run]]\nacton = \"hide\"\n"),
            4,
            1,
            "in [[vm.after_run]] (did you mean `action`?)",
        ),
        (
            a("[vm.arm64]\nfeature = []\n"),
            5,
            1,
            "in [vm.arm64] (did you mean `features`?)",
        ),
        (
            a("[vm.arm64]\npsci = \"1.0\"\n"),
            5,
            1,
            "unknown key `psci` in [vm.arm64]",
        ),
        // The fleet.
        (
            format!("name = \"a b\"\n{X}"),
            1,
            8,
            "fleet name: `a b` contains ' '",
        ),
        (
            format!("name = \"-x\"\n{X}"),
            1,
            8,
            "fleet name: `-x` starts with `-`",
        ),
        (
            format!("arch = \"sparc\"\n{X}"),
            1,
            8,
            "unknown arch `sparc`: expected",
        ),
        (
            format!("arch = \"aarch46\"\n{X}"),
            1,
            8,
            "unknown arch `aarch46` (did you mean `aarch64`?)",
        ),
        (
            format!("cross_check = true\n{X}"),
            1,
            15,
            "`cross_check` applies to aarch64 fleets",
        ),
        (
            format!("unknown_registers = \"clear\"\n{X}"),
            1,
            21,
            "`unknown_registers` applies to aarch64 fleets",
        ),
        (
            format!("arch = \"aarch64\"\nunknown_registers = \"nope\"\n{X}"),
            2,
            21,
            "unknown variant `nope`",
        ),
        // A VM's name and sizes.
        (
            "[[vm]]\nname = \"\"\n".into(),
            2,
            8,
            "VM name: must not be empty",
        ),
        (
            "[[vm]]\nname = \"-x\"\n".into(),
            2,
            8,
            "VM name: `-x` starts with `-`, so a command line would take it for an option",
        ),
        (
            "[[vm]]\nname = \"a.b\"\n".into(),
            2,
            8,
            "VM name: `a.b` contains '.'",
        ),
        (
            format!("[[vm]]\nname = \"{}\"\n", "y".repeat(65)),
            2,
            8,
            "is longer than 64 characters",
        ),
        (
            format!("[[vm]]\nname = \"{}\"\ncount = 10\n", "y".repeat(63)),
            2,
            8,
            "VM name with `count = 10`",
        ),
        (
            x("count = 0\n"),
            3,
            9,
            "`count` is 0; it must be between 1 and 1000",
        ),
        (
            x("vcpus = 65\n"),
            3,
            9,
            "`vcpus` is 65; it must be between 1 and 64",
        ),
        (
            x("memory_mib = 0\n"),
            3,
            14,
            "`memory_mib` is 0; it must be between 1 and 16384",
        ),
        (x("probe_repeats = 100001\n"), 3, 17, "(0 = repeat forever)"),
        (
            x("fault_after_passes = 0\n"),
            3,
            22,
            "`fault_after_passes` is 0",
        ),
        (x("fault_after_passes = 2\n"), 3, 22, "never happens"),
        (
            x("memory_mib = 4096\nfault_after_passes = 1\n"),
            4,
            22,
            "needs `memory_mib` <= 4095",
        ),
        (a("fault_after_passes = 1\n"), 4, 22, "is for the x86 guest"),
        (
            format!("{X}[[vm]]\nname = \"b\"\n[[vm]]\nname = \"a\"\n"),
            6,
            8,
            "duplicate VM name `a`: line 6 names a VM `a`, but line 2",
        ),
        (
            x("count = 1000\nvcpus = 5\n"),
            4,
            9,
            "at most 4096 vCPUs in a fleet",
        ),
        // The x86 model.
        (
            x("cpu = { base = \"skylake\" }\n"),
            3,
            16,
            "unknown CPU base `skylake`",
        ),
        (
            x("cpu = { hide = [\"x2apic\", \"avx512\"] }\n"),
            3,
            27,
            "unknown CPU feature `avx512` in `hide` (did you mean `avx512f`?)",
        ),
        (
            x("cpu = { hide = [\"avx2\", \"AVX2\"] }\n"),
            3,
            25,
            "feature `avx2` is listed twice in `hide`",
        ),
        (
            x("[vm.arm64]\n"),
            3,
            1,
            "an `arm64` table needs `arch = \"aarch64\"`",
        ),
        (
            a("cpu = { hide = [\"avx2\"] }\n"),
            4,
            17,
            "`cpu` is the x86 CPUID model",
        ),
        // After the run.
        (
            x("vcpus = 2\n[[vm.after_run]]\naction = \"hide\"\nfeatures = [\"avx2\"]\nvcpu = 2\n"),
            7,
            8,
            "vcpu 2 does not exist: `a` has vCPUs 0..=1",
        ),
        (
            x("[[vm.after_run]]\naction = \"explode\"\n"),
            4,
            10,
            "unknown action `explode`: expected",
        ),
        (
            x("[[vm.after_run]]\naction = \"rewrite_identical\"\n"),
            4,
            10,
            "unknown action `rewrite_identical` (did you mean `rewrite-identical`?)",
        ),
        (
            x("[[vm.after_run]]\naction = \"hide\"\n"),
            4,
            10,
            "action \"hide\" needs a non-empty `features` list",
        ),
        (
            x("[[vm.after_run]]\naction = \"hide\"\nfeatures = [\"avx\", \"sse9\"]\n"),
            5,
            20,
            "unknown CPU feature `sse9` in `features`",
        ),
        (
            x("[[vm.after_run]]\naction = \"rewrite-identical\"\nfeatures = [\"avx2\"]\n"),
            5,
            13,
            "`features` does not apply to action \"rewrite-identical\"",
        ),
        (
            x("[[vm.after_run]]\naction = \"hide\"\nfield = \"X.Y\"\nfeatures = [\"avx2\"]\n"),
            5,
            9,
            "`field` only applies to action \"set\"",
        ),
        (
            x("[[vm.after_run]]\naction = \"set\"\n"),
            4,
            10,
            "action \"set\" is for aarch64 fleets; this one is x86_64",
        ),
        (
            a("[[vm.after_run]]\naction = \"hide\"\nfeatures = [\"avx2\"]\n"),
            5,
            10,
            "action \"hide\" is for x86_64 fleets",
        ),
        (
            a("[[vm.after_run]]\naction = \"set\"\nvalue = 0\n"),
            5,
            10,
            "action \"set\" needs `field`",
        ),
        (
            a("[[vm.after_run]]\naction = \"set\"\nfield = \"ID_AA64PFR0_EL1.CSV3\"\n"),
            5,
            10,
            "action \"set\" needs `value`",
        ),
        (
            a("[[vm.after_run]]\naction = \"set\"\nfield = \"ID_AA64PFR0_EL1.CSV9\"\nvalue = 0\n"),
            6,
            9,
            "ID_AA64PFR0_EL1 has no field `CSV9`",
        ),
        (
            a("[[vm.after_run]]\naction = \"set\"\nfield = \"ID_AA64PFR0_EL1.CSV3\"\nvalue = -1\n"),
            7,
            9,
            "`value` is -1; ID_AA64PFR0_EL1.CSV3 is 4 bits wide",
        ),
        (
            a("[[vm.after_run]]\naction = \"set\"\nfield = \"ID_AA64PFR0_EL1.CSV3\"\nvalue = 16\n"),
            7,
            9,
            "so its values are 0..=0xf",
        ),
        // The arm64 model: what is wrong within the table points at its key.
        (
            a("[vm.arm64]\nfeatures = [\"power-off\"]\n"),
            5,
            12,
            "arm64 model of `a`: features: `power-off` is per-vCPU boot state",
        ),
        (
            a("[vm.arm64]\nfeatures = [\"psci-0.2\", \"ptrauth-address\"]\n"),
            5,
            12,
            "ptrauth-address and ptrauth-generic must be requested together",
        ),
        (
            a("[vm.arm64]\nfeatures = []\npsci_version = \"1.0\"\n"),
            6,
            16,
            "psci_version = \"1.0\" needs the psci-0.2 feature",
        ),
        (
            a("[vm.arm64]\npsci_version = \"0.1\"\n"),
            5,
            16,
            "psci_version = \"0.1\" is KVM's legacy PSCI",
        ),
        (
            a("[vm.arm64]\npsci_version = \"9.9\"\n"),
            5,
            16,
            "unknown PSCI version `9.9`",
        ),
        (
            a("[vm.arm64]\nfeatures = [\"sve\", \"pmuv3\"]\n"),
            5,
            20,
            "unknown vCPU feature `pmuv3`",
        ),
        (
            a("[vm.arm64]\nunknown_registers = \"nope\"\n"),
            5,
            21,
            "unknown variant `nope`",
        ),
        (
            a("[vm.arm64]\nid_registers = { \"ID_AA64ISAR0_EL1.AESX\" = 0 }\n"),
            5,
            18,
            "has no field `AESX`",
        ),
        (
            a("[vm.arm64]\nid_registers = { \"ID_AA64ISR0_EL1.AES\" = 0 }\n"),
            5,
            18,
            "unknown register `ID_AA64ISR0_EL1` — did you mean `ID_AA64ISAR0_EL1.AES`?",
        ),
        (
            a("[vm.arm64]\nid_registers = { \"ID_AA64ISAR0_EL1.AES\" = 16 }\n"),
            5,
            43,
            "ID_AA64ISAR0_EL1.AES is 4 bits wide",
        ),
        (
            a("[vm.arm64]\nid_registers = { \"ID_AA64ISAR0_EL1.AES\" = \"x\" }\n"),
            5,
            43,
            "expected an integer field value",
        ),
        (
            a("[vm.arm64]\nid_registers = { ID_AA64ISAR0_EL1 = { AESX = 0 } }\n"),
            5,
            39,
            "has no field `AESX`",
        ),
        (
            a(
                "[vm.arm64]\nid_registers = { \"ID_AA64ISAR0_EL1.AES\" = 1, ID_AA64ISAR0_EL1 = { AES = 0 } }\n",
            ),
            5,
            16,
            "both set ID_AA64ISAR0_EL1.AES",
        ),
        (
            a("[vm.arm64]\nid_registers = { CSV3 = 0 }\n"),
            5,
            18,
            "`CSV3` is not of the form REGISTER.FIELD (e.g. ID_AA64ISAR0_EL1.AES) — did you mean `ID_AA64PFR0_EL1.CSV3`?",
        ),
        (
            a("[vm.arm64]\nid_registers = { \"REVIDR_EL1.Revision\" = 0 }\n"),
            5,
            18,
            "vmfleet has no field table for REVIDR_EL1",
        ),
        (
            a("[[vm.after_run]]\naction = \"set\"\nfield = \"CSV3\"\nvalue = 0\n"),
            6,
            9,
            "`CSV3` is not of the form REGISTER.FIELD",
        ),
        (
            a("[vm.arm64]\nhypercalls = { trg = false }\n"),
            5,
            16,
            "unknown hypercall service `trg` — did you mean `trng`?",
        ),
        (
            a("[vm.arm64]\nhypercalls = { trng = false, TRNG = true }\n"),
            5,
            14,
            "hypercalls: `trng` and `TRNG` both set trng",
        ),
        (
            a("[vm.arm64]\nhypercalls = { trng = 1 }\n"),
            5,
            23,
            "expected a boolean",
        ),
    ];
    let mut wrong = Vec::new();
    for (text, line, column, fragment) in &cases {
        let e = err(text);
        let shown = e.to_string();
        let prefix = format!("f.toml:{line}:{column}: ");
        if !shown.starts_with(&prefix) || !shown.contains(fragment) {
            wrong.push(format!(
                "{text:?}\n  want {prefix}…{fragment}…\n  got  {shown}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
