//! Tests of `spec` (tests), kept beside it so the module itself stays short.

use super::*;

fn err(text: &str) -> SpecError {
    parse(text, "f.toml").expect_err("spec should be rejected")
}

/// The table of every kind of error and where it points: long, so in a file of its own.
mod positions;

#[test]
fn a_full_spec_parses() {
    let spec = parse(
        r#"
name = "t"
[[vm]]
name = "a"
vcpus = 2
memory_mib = 4
probe_repeats = 3
cpu = { base = "host", hide = ["AVX512F", "x2apic"] }
[[vm.after_run]]
action = "rewrite-identical"
[[vm.after_run]]
action = "hide"
features = ["sse4_2"]
vcpu = 1
"#,
        "f.toml",
    )
    .unwrap();
    assert_eq!(spec.name, "t");
    let vm = &spec.vms[0];
    assert_eq!((vm.vcpus, vm.memory_mib, vm.probe_repeats), (2, 4, 3));
    assert_eq!(
        vm.cpu.hide,
        vec!["avx512f".to_string(), "x2apic".to_string()]
    );
    assert_eq!(
        vm.after_run,
        vec![
            AfterRun::RewriteIdentical { vcpu: None },
            AfterRun::Hide {
                features: vec!["sse4_2".into()],
                vcpu: Some(1)
            }
        ]
    );
}

#[test]
fn defaults_apply() {
    let spec = parse("[[vm]]\nname = \"a\"\n", "f.toml").unwrap();
    assert_eq!(spec.name, "fleet");
    assert_eq!(
        (
            spec.vms[0].vcpus,
            spec.vms[0].memory_mib,
            spec.vms[0].probe_repeats
        ),
        (1, 1, 1)
    );
    assert_eq!(spec.vms[0].fault_after_passes, None);
    assert_eq!(spec.vms.len(), 1, "count defaults to 1");
}

#[test]
fn syntax_errors_name_line_and_column() {
    let e = err("[[vm]]\nname = \"a\"\nvcpus = = 2\n");
    assert_eq!((e.line, e.source_name.as_str()), (3, "f.toml"));
    assert!(e.to_string().starts_with("f.toml:3:"), "{e}");
}

#[test]
fn unknown_keys_are_rejected_with_position() {
    let e = err("[[vm]]\nname = \"a\"\nvcpu = 2\n");
    assert_eq!(e.line, 3, "{e}");
    assert!(e.message.contains("vcpu"), "{e}");
}

#[test]
fn unknown_features_point_at_the_name_and_suggest() {
    let e = err("[[vm]]\nname = \"a\"\ncpu = { hide = [\"x2apic\", \"avx512\"] }\n");
    assert_eq!((e.line, e.column), (3, 27), "{e}");
    assert!(e.message.contains("`avx512`"), "{e}");
    assert!(e.message.contains("did you mean"), "{e}");
}

#[test]
fn semantic_errors_have_positions() {
    assert_eq!(err("[[vm]]\nname = \"a\"\nvcpus = 0\n").line, 3);
    assert_eq!(err("[[vm]]\nname = \"a\"\nvcpus = 65\n").line, 3);
    assert_eq!(err("[[vm]]\nname = \"a b\"\n").line, 2);
    assert_eq!(err("[[vm]]\nname = \"a\"\n[[vm]]\nname = \"a\"\n").line, 4);
    assert_eq!(
        err("[[vm]]\nname = \"a\"\ncpu = { base = \"skylake\" }\n").line,
        3
    );
    let e = err(
        "[[vm]]\nname = \"a\"\nvcpus = 2\n[[vm.after_run]]\naction = \"hide\"\nfeatures = [\"sse4_2\"]\nvcpu = 2\n",
    );
    assert_eq!(e.line, 7, "{e}");
    assert_eq!(
        err("[[vm]]\nname = \"a\"\n[[vm.after_run]]\naction = \"explode\"\n").line,
        4
    );
    assert_eq!(
        err("[[vm]]\nname = \"a\"\n[[vm.after_run]]\naction = \"hide\"\n").line,
        4
    );
}

#[test]
fn count_expands_into_named_copies() {
    let spec = parse(
        "[[vm]]\nname = \"web\"\ncount = 3\nvcpus = 2\nfault_after_passes = 1\n\
             [[vm.after_run]]\naction = \"rewrite-identical\"\n\
             [[vm]]\nname = \"db\"\ncount = 1\n",
        "f.toml",
    )
    .unwrap();
    let names: Vec<&str> = spec.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["web-0", "web-1", "web-2", "db"]);
    for vm in &spec.vms[..3] {
        assert_eq!(vm.vcpus, 2);
        assert_eq!(vm.fault_after_passes, Some(1));
        assert_eq!(
            vm.after_run,
            vec![AfterRun::RewriteIdentical { vcpu: None }]
        );
    }
    assert_eq!(spec.vms[3].vcpus, 1);
    assert_eq!(spec.vms[3].fault_after_passes, None);
}

#[test]
fn count_is_bounded() {
    for bad in ["0", "1001", "-1"] {
        let e = err(&format!("[[vm]]\nname = \"a\"\ncount = {bad}\n"));
        assert_eq!((e.line, e.column), (3, 9), "{e}");
        assert!(e.message.contains("between 1 and 1000"), "{e}");
    }
    let spec = parse("[[vm]]\nname = \"a\"\ncount = 1000\n", "f.toml").unwrap();
    assert_eq!(spec.vms.len(), 1000);
    assert_eq!(spec.vms[999].name, "a-999");
}

#[test]
fn expanded_names_must_be_unique() {
    // A later plain name that a count already made: points at the later entry's name.
    let e = err("[[vm]]\nname = \"a\"\ncount = 2\n[[vm]]\nname = \"a-1\"\n");
    assert_eq!((e.line, e.column), (5, 8), "{e}");
    assert_eq!(
        e.message,
        "duplicate VM name `a-1`: line 5 names a VM `a-1`, but `count = 2` on `a` at line 2 \
             makes a VM `a-1` already"
    );
    // A later count that makes a name already taken.
    let e = err("[[vm]]\nname = \"b-0\"\n[[vm]]\nname = \"b\"\ncount = 4\n");
    assert_eq!((e.line, e.column), (4, 8), "{e}");
    assert!(
        e.message
            .starts_with("duplicate VM name `b-0`: `count = 4` on `b` at line 4"),
        "{e}"
    );
    assert!(
        e.message.ends_with("line 2 names a VM `b-0` already"),
        "{e}"
    );
    // A plain duplicate still says where the first one is.
    let e = err("[[vm]]\nname = \"a\"\n[[vm]]\nname = \"a\"\n");
    assert_eq!((e.line, e.column), (4, 8), "{e}");
    assert!(e.message.contains("line 2 names a VM `a` already"), "{e}");
    // With count = 1 the name is not suffixed, so `a` and `a-0` can coexist.
    parse(
        "[[vm]]\nname = \"a\"\ncount = 1\n[[vm]]\nname = \"a-0\"\n",
        "f.toml",
    )
    .unwrap();
}

#[test]
fn expanded_names_must_stay_short() {
    let long = "x".repeat(62);
    parse(
        &format!("[[vm]]\nname = \"{long}\"\ncount = 10\n"),
        "f.toml",
    )
    .unwrap();
    let e = err(&format!("[[vm]]\nname = \"{long}\"\ncount = 11\n"));
    assert_eq!((e.line, e.column), (2, 8), "{e}");
    assert!(e.message.contains("-10` is longer than 64"), "{e}");
}

#[test]
fn the_fleet_is_bounded_in_vms_and_vcpus() {
    // 4096 VMs of one vCPU are fine; one more VM is not.
    let mut text = String::new();
    for i in 0..4 {
        text += &format!("[[vm]]\nname = \"v{i}\"\ncount = 1000\n");
    }
    text += "[[vm]]\nname = \"w\"\ncount = 96\n";
    assert_eq!(parse(&text, "f.toml").unwrap().vms.len(), 4096);
    let e = err(&(text.clone() + "[[vm]]\nname = \"z\"\n"));
    assert_eq!((e.line, e.column), (17, 8), "points at the VM's name: {e}");
    assert!(e.message.contains("4097 VMs"), "{e}");
    let e = err(&text.replace("count = 96", "count = 97"));
    assert_eq!((e.line, e.column), (15, 9), "points at count: {e}");

    // As many [[vm]] tables: the one past the limit is named.
    let tables: String = (0..=MAX_VMS)
        .map(|i| format!("[[vm]]\nname = \"t{i}\"\n"))
        .collect();
    let e = err(&tables);
    assert_eq!((e.line, e.column), (2 * MAX_VMS + 1, 1), "{e}");
    assert_eq!(e.message, "more than 4096 VMs");

    // vCPUs: 64 x 64 = 4096 is the most.
    let vcpus = "[[vm]]\nname = \"a\"\ncount = 64\nvcpus = 64\n";
    parse(vcpus, "f.toml").unwrap();
    let e = err(&format!("{vcpus}[[vm]]\nname = \"b\"\nvcpus = 1\n"));
    assert_eq!((e.line, e.column), (7, 9), "points at vcpus: {e}");
    assert_eq!(
        e.message,
        "the fleet has 4097 vCPUs with `b` (1 VM(s) x 1 vCPU(s)); at most 4096 vCPUs in a fleet"
    );
    let e = err(&format!("{vcpus}[[vm]]\nname = \"b\"\ncount = 2\n"));
    assert_eq!(
        (e.line, e.column),
        (7, 9),
        "no vcpus key: points at count: {e}"
    );
    assert!(e.message.contains("4098 vCPUs"), "{e}");
    let e = err(&format!("{vcpus}[[vm]]\nname = \"b\"\n"));
    assert_eq!(
        (e.line, e.column),
        (6, 8),
        "neither: points at the name: {e}"
    );
}

#[test]
fn probe_repeats_zero_means_forever() {
    let spec = parse("[[vm]]\nname = \"a\"\nprobe_repeats = 0\n", "f.toml").unwrap();
    assert_eq!(spec.vms[0].probe_repeats, 0);
    let e = err("[[vm]]\nname = \"a\"\nprobe_repeats = -1\n");
    assert_eq!((e.line, e.column), (3, 17), "{e}");
    assert_eq!(
        e.message,
        "`probe_repeats` is -1; it must be between 0 and 100000 (0 = repeat forever)"
    );
    let e = err("[[vm]]\nname = \"a\"\nprobe_repeats = 100001\n");
    assert_eq!(e.line, 3, "{e}");
}

#[test]
fn record_exits_is_a_count_or_all() {
    let ok = |text: &str| parse(text, "f.toml").unwrap().vms[0].record_exits;
    assert_eq!(
        ok("[[vm]]\nname = \"a\"\n"),
        None,
        "a finite guest is whole"
    );
    assert_eq!(
        ok("[[vm]]\nname = \"a\"\nprobe_repeats = 0\n"),
        Some(super::DEFAULT_RECORD_EXITS)
    );
    assert_eq!(ok("[[vm]]\nname = \"a\"\nrecord_exits = 1\n"), Some(1));
    assert_eq!(
        ok("[[vm]]\nname = \"a\"\ncount = 2\nrecord_exits = 200\n"),
        Some(200)
    );
    assert_eq!(ok("[[vm]]\nname = \"a\"\nrecord_exits = \"all\"\n"), None);
    for (value, what) in [
        ("0", "is 0"),
        ("-5", "is -5"),
        ("\"some\"", "is \"some\""),
        ("1.5", "is a float"),
        ("true", "is a boolean"),
    ] {
        let e = err(&format!("[[vm]]\nname = \"a\"\nrecord_exits = {value}\n"));
        assert_eq!((e.line, e.column), (3, 16), "{e}");
        assert!(
            e.message.starts_with(&format!(
                "`record_exits` {what}; it must be an integer >= 1"
            )),
            "{e}"
        );
        assert!(e.message.contains("or \"all\""), "{e}");
    }
    let e = err("[[vm]]\nname = \"a\"\nrecord_exit = 5\n");
    assert!(
        e.message.contains("record_exits"),
        "a near miss is named: {e}"
    );
}

#[test]
fn fault_after_passes_rules() {
    let ok = |text: &str| parse(text, "f.toml").unwrap().vms[0].fault_after_passes;
    assert_eq!(
        ok("[[vm]]\nname = \"a\"\nfault_after_passes = 1\n"),
        Some(1)
    );
    assert_eq!(
        ok("[[vm]]\nname = \"a\"\nprobe_repeats = 0\nfault_after_passes = 7\n"),
        Some(7)
    );
    assert_eq!(
        ok("[[vm]]\nname = \"a\"\nprobe_repeats = 3\nfault_after_passes = 3\n"),
        Some(3)
    );
    assert_eq!(
        ok("[[vm]]\nname = \"a\"\nmemory_mib = 4095\nfault_after_passes = 1\n"),
        Some(1)
    );

    let e = err("[[vm]]\nname = \"a\"\nfault_after_passes = 0\n");
    assert_eq!((e.line, e.column), (3, 22), "{e}");
    assert!(e.message.contains("between 1 and 100000"), "{e}");
    // It would never happen: the guest halts first.
    let e = err("[[vm]]\nname = \"a\"\nfault_after_passes = 2\n");
    assert_eq!((e.line, e.column), (3, 22), "{e}");
    assert!(
        e.message.contains("never happens")
            && e.message.contains("`probe_repeats = 1`")
            && e.message.contains("set it to 0"),
        "{e}"
    );
    // Guest memory must stay below the deliberate fault's IDT.
    let e = err("[[vm]]\nname = \"a\"\nmemory_mib = 4096\nfault_after_passes = 1\n");
    assert_eq!((e.line, e.column), (4, 22), "{e}");
    assert!(
        e.message.contains("`memory_mib` <= 4095 (it is 4096)") && e.message.contains("0xffff0000"),
        "{e}"
    );
    assert_eq!(MAX_FAULT_MEMORY_MIB, 4095);
}

#[test]
fn an_empty_fleet_points_at_the_start_of_the_file_or_its_vm_key() {
    let e = err("name = \"x\"\n");
    assert_eq!((e.line, e.column), (1, 1), "{e}");
    assert!(
        e.to_string()
            .starts_with("f.toml:1:1: the fleet has no VMs"),
        "{e}"
    );
    let e = err("name = \"x\"\nvm = []\n");
    assert_eq!((e.line, e.column), (2, 6), "{e}");
}

/// The key lists that unknown keys are checked against are the keys the typed parse reads:
/// each known key, in its table, gets no "unknown key" error.
#[test]
fn the_known_keys_are_the_keys_read() {
    let value = |key: &str| match key {
        "name" => "\"n\"",
        "arch" => "\"aarch64\"",
        "cross_check" => "true",
        "unknown_registers" => "\"clear\"",
        "vm" | "after_run" => "[]",
        "cpu" => "{}",
        "arm64" => "{}",
        "hide" | "features" => "[]",
        "base" => "\"host\"",
        "action" => "\"set\"",
        "field" => "\"ID_AA64PFR0_EL1.CSV3\"",
        "id_registers" | "hypercalls" => "{}",
        "psci_version" => "\"1.0\"",
        _ => "1",
    };
    for (kind, (_, keys)) in TABLES.iter().enumerate() {
        for key in *keys {
            let line = format!("{key} = {}\n", value(key));
            let text = match kind {
                0 => format!("{line}[[vm]]\nname = \"a\"\n"),
                1 => format!(
                    "arch = \"aarch64\"\n[[vm]]\n{}{line}",
                    if *key == "name" { "" } else { "name = \"a\"\n" }
                ),
                2 => format!("[[vm]]\nname = \"a\"\n[vm.cpu]\n{line}"),
                3 => format!(
                    "arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n[[vm.after_run]]\n{}{line}",
                    if *key == "action" {
                        ""
                    } else {
                        "action = \"set\"\n"
                    }
                ),
                _ => format!("arch = \"aarch64\"\n[[vm]]\nname = \"a\"\n[vm.arm64]\n{line}"),
            };
            if let Err(e) = parse(&text, "f.toml") {
                assert!(
                    !e.message.contains("unknown key"),
                    "{key} in table {kind}: {e}"
                );
            }
        }
    }
}

#[test]
fn garbage_never_panics() {
    for text in [
        "\u{0}\u{1}",
        "[[vm]",
        "vm = 3",
        "[[vm]]\nname = 3",
        "\"",
        "[vm]\nname=\"a\"",
    ] {
        let _ = parse(text, "g.toml");
    }
}

/// Every way a name is refused reads as it did when the rule returned a `String`.
#[test]
fn name_errors_read_as_before() {
    use super::top::check_name;
    let text = |name: &str| check_name(name).map_err(|e| e.to_string());
    assert_eq!(text(""), Err("must not be empty".to_string()));
    assert_eq!(
        text("-x"),
        Err(
            "`-x` starts with `-`, so a command line would take it for an option; start it \
             with a letter, a digit or `_`"
                .to_string()
        )
    );
    let long = "a".repeat(65);
    assert_eq!(
        text(&long),
        Err(format!("`{long}` is longer than 64 characters"))
    );
    assert_eq!(
        text("a b"),
        Err("`a b` contains ' '; use letters, digits, `-` and `_`".to_string())
    );
    assert_eq!(text("web_1-a"), Ok(()));
}
