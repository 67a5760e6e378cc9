//! Unit tests of the Firecracker formats: bitmaps, numbers, templates (with errors naming the key
//! path and the character), serialization and the canonical form.

use super::*;

#[test]
fn a_bitmap_gives_its_bits_and_keeps_the_rest() {
    let b = Bitmap::parse("0bx1_0x", 32).unwrap();
    assert_eq!((b.mask, b.value), (0b0110, 0b0100));
    assert_eq!(b.apply(0b1011), 0b1101);
    assert_eq!(
        b.to_string(),
        format!("0b{}x10x", "x".repeat(28)),
        "written at the register's width, padded with x"
    );
    let full = Bitmap::full(0xdead_beef, 32);
    assert!(full.is_full());
    assert_eq!(Bitmap::parse(&full.to_string(), 32).unwrap(), full);
    assert!(!b.is_full());
    let later = Bitmap::parse("0b0xx", 32).unwrap();
    assert_eq!(b.then(&later).mask, 0b0110);
    assert_eq!(b.then(&later).value, 0b0000);
}

#[test]
fn a_bad_bitmap_names_the_character_at_fault() {
    let err = Bitmap::parse("0b01y1", 32).unwrap_err().to_string();
    assert!(err.contains("character 5 is 'y'"), "{err}");
    let err = Bitmap::parse("01", 32).unwrap_err().to_string();
    assert!(err.contains("does not start with 0b"), "{err}");
    let err = Bitmap::parse("0b___", 32).unwrap_err().to_string();
    assert!(err.contains("empty bitmap"), "{err}");
    let err = Bitmap::parse(&format!("0b1_{}", "0".repeat(32)), 32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("33 bits, over the 32"), "{err}");
    assert!(err.contains("character 3"), "{err}");
}

#[test]
fn numbers_are_hex_or_binary_and_capabilities_decimal() {
    assert_eq!(parse_number("0x7").unwrap(), 7);
    assert_eq!(parse_number("0b101").unwrap(), 5);
    assert!(parse_number("7").is_err());
    assert_eq!(
        KvmCapability::parse("171").unwrap(),
        KvmCapability::Require(171)
    );
    assert_eq!(
        KvmCapability::parse("!172").unwrap(),
        KvmCapability::Drop(172)
    );
    assert_eq!(KvmCapability::Drop(172).to_string(), "!172");
    assert!(KvmCapability::parse("0xab").is_err());
}

const X86: &str = r#"{
  "kvm_capabilities": ["!171"],
  "cpuid_modifiers": [
    {"leaf": "0x7", "subleaf": "0x0", "flags": 1,
     "modifiers": [{"register": "ebx", "bitmap": "0bx0xxxxxxxxxxxx00xxxxxxxxxxxxxxxx"}]}
  ],
  "msr_modifiers": [{"addr": "0x10a", "bitmap": "0b0"}]
}"#;

#[test]
fn an_x86_template_parses_and_writes_back_in_firecrackers_shape() {
    let t = FirecrackerTemplate::parse(X86).unwrap();
    assert_eq!(t.arch().unwrap(), Some(GuestArch::X86_64));
    assert_eq!(t.kvm_capabilities, [KvmCapability::Drop(171)]);
    let leaf = &t.cpuid_modifiers[0];
    assert_eq!((leaf.leaf, leaf.subleaf, leaf.flags), (7, 0, 1));
    assert_eq!(leaf.modifiers[0].0, CpuidReg::Ebx);
    assert_eq!(leaf.modifiers[0].1.mask, 1 << 30 | 0b11 << 16);
    assert_eq!(t.msr_modifiers[0].addr, 0x10a);
    let json = t.to_json(GuestArch::X86_64).unwrap();
    assert_eq!(json["cpuid_modifiers"][0]["leaf"], "0x7");
    assert_eq!(
        json["msr_modifiers"][0]["bitmap"].as_str().unwrap().len(),
        66
    );
    assert!(json.get("reg_modifiers").is_none());
    let again = FirecrackerTemplate::parse(&json.to_string()).unwrap();
    assert_eq!(again.canonical(), t.canonical());
}

#[test]
fn an_arm64_template_keeps_no_bit_above_the_register() {
    let t = FirecrackerTemplate::parse(
        r#"{"vcpu_features": [{"index": 0, "bitmap": "0b1xxxxx"}],
            "reg_modifiers": [{"addr": "0x603000000013c030", "bitmap": "0b0000_xxxx"}]}"#,
    )
    .unwrap();
    assert_eq!(t.arch().unwrap(), Some(GuestArch::Aarch64));
    assert_eq!(t.reg_modifiers[0].bitmap.mask, 0xf0);
    let json = t.to_json(GuestArch::Aarch64).unwrap();
    assert_eq!(json["reg_modifiers"][0]["addr"], "0x603000000013c030");
    assert_eq!(
        json["reg_modifiers"][0]["bitmap"].as_str().unwrap().len(),
        130
    );
    // A 32-bit register written 128 bits wide, 0 above: fine; 1 above: refused.
    let ok = format!(
        r#"{{"reg_modifiers": [{{"addr": "0x6020000000110000", "bitmap": "0b{}"}}]}}"#,
        "0".repeat(128)
    );
    assert_eq!(
        FirecrackerTemplate::parse(&ok).unwrap().reg_modifiers[0]
            .bitmap
            .mask,
        0xffff_ffff
    );
    let bad = format!(
        r#"{{"reg_modifiers": [{{"addr": "0x6020000000110000", "bitmap": "0b1{}"}}]}}"#,
        "0".repeat(40)
    );
    let err = format!("{:#}", FirecrackerTemplate::parse(&bad).unwrap_err());
    assert!(
        err.contains("reg_modifiers[0].bitmap: sets bit 40, over the 32 bits"),
        "{err}"
    );
}

#[test]
fn template_errors_name_the_key_path() {
    let err = |text: &str| format!("{:#}", FirecrackerTemplate::parse(text).unwrap_err());
    let e = err(
        r#"{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0,
        "modifiers": [{"register": "eax", "bitmap": "0b1"}, {"register": "r9", "bitmap": "0b1"}]}]}"#,
    );
    assert!(
        e.contains("cpuid_modifiers[0].modifiers[1].register"),
        "{e}"
    );
    let e = err(r#"{"msr_modifiers": [{"addr": "16", "bitmap": "0b1"}]}"#);
    assert!(e.contains("msr_modifiers[0].addr"), "{e}");
    let e = err(r#"{"vcpu_features": [{"index": 7, "bitmap": "0b1"}]}"#);
    assert!(e.contains("vcpu_features[0].index"), "{e}");
    let e = err(r#"{"cpuid_modifier": []}"#);
    assert!(e.contains("unknown field"), "{e}");
    let mixed = FirecrackerTemplate::parse(
        r#"{"msr_modifiers": [{"addr": "0x10", "bitmap": "0b1"}],
            "reg_modifiers": [{"addr": "0x603000000013c030", "bitmap": "0b1"}]}"#,
    )
    .unwrap();
    assert!(mixed.arch().is_err());
}

#[test]
fn the_canonical_form_ignores_order_and_merges_in_order() {
    let a = FirecrackerTemplate::parse(
        r#"{"reg_modifiers": [
            {"addr": "0x603000000013c030", "bitmap": "0b11"},
            {"addr": "0x603000000013c031", "bitmap": "0bxxxx"},
            {"addr": "0x603000000013c030", "bitmap": "0b0x"}]}"#,
    )
    .unwrap();
    let b = FirecrackerTemplate::parse(
        r#"{"reg_modifiers": [{"addr": "0x603000000013c030", "bitmap": "0b01"}]}"#,
    )
    .unwrap();
    assert_eq!(a.canonical(), b.canonical());
}

#[test]
fn a_fingerprint_gives_every_bit() {
    let doc = |bitmap: &str| {
        serde_json::json!({
            "firecracker_version": "1.16.0-dev",
            "kernel_version": "6.18.0",
            "microcode_version": "0x1",
            "bios_version": "1.0",
            "bios_revision": "1.0",
            "guest_cpu_config": {
                "kvm_capabilities": [],
                "cpuid_modifiers": [{"leaf": "0x0", "subleaf": "0x0", "flags": 0,
                    "modifiers": [{"register": "eax", "bitmap": bitmap}]}]
            }
        })
    };
    let full = doc(&format!("0b{}", "0".repeat(32)));
    assert!(FirecrackerFingerprint::detect(&full));
    FirecrackerFingerprint::from_value(full).unwrap();
    let err = format!(
        "{:#}",
        FirecrackerFingerprint::from_value(doc("0b1x")).unwrap_err()
    );
    assert!(
        err.contains("guest_cpu_config.cpuid_modifiers[0].modifiers[0].bitmap"),
        "{err}"
    );
    assert!(!FirecrackerFingerprint::detect(
        &serde_json::json!({"schema": "vmfleet.fingerprint.v1"})
    ));
}
