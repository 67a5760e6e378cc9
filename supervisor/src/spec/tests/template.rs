//! `template = "file.toml"` in a spec: the template's text travels in the spec's `[templates]`
//! table (embedded when the spec is read from a file), gives the VM its whole model, and every
//! mistake points at the `template` key.

use super::*;

fn err(text: &str) -> SpecError {
    parse(text, "f.toml").expect_err("spec should be rejected")
}

fn with_template(template: &str, extra: &str) -> String {
    format!(
        "name = \"t\"\n[[vm]]\nname = \"a\"\ntemplate = \"t.toml\"\n{extra}\n[templates]\n\"t.toml\" = {}\n",
        toml::Value::String(template.to_string())
    )
}

#[test]
fn an_x86_template_gives_the_vm_its_model() {
    let text = with_template(
        "arch = \"x86_64\"\n[x86.features]\navx2 = false\nsse4_2 = true\n\
         [[x86.cpuid]]\nleaf = 7\necx = \"0b0\"\n",
        "",
    );
    let spec = parse(&text, "f.toml").unwrap();
    let vm = &spec.vms[0];
    assert_eq!(vm.template.as_deref(), Some("t"));
    assert_eq!(vm.cpu.hide, ["avx2"]);
    assert_eq!(vm.cpu.show, ["sse4_2"]);
    assert_eq!(vm.cpu.cpuid.len(), 1);
    let model = vm.cpu.model_hiding(&vm.cpu.hide);
    assert_eq!(model.show, ["sse4_2"]);
}

#[test]
fn an_arm64_template_gives_the_vm_its_model_with_the_fleets_policy() {
    let template = "arch = \"aarch64\"\n[arm64]\nid_registers = { \"ID_AA64ISAR0_EL1.AES\" = 0 }\n";
    let text = format!(
        "arch = \"aarch64\"\nunknown_registers = \"refuse\"\n{}",
        with_template(template, "")
    );
    let spec = parse(&text, "f.toml").unwrap();
    let model = spec.vms[0].arm64.as_ref().unwrap();
    assert_eq!(model.id_registers.len(), 1);
    assert_eq!(model.unknown_registers, UnknownRegisterPolicy::Refuse);
}

#[test]
fn template_mistakes_point_at_the_template_key() {
    let x86 = "arch = \"x86_64\"\n";
    let e = err(&with_template(x86, "cpu = { hide = [\"avx2\"] }"));
    assert_eq!((e.line, e.column), (4, 12), "{e}");
    assert!(e.message.contains("drop its `cpu` or `arm64` table"), "{e}");
    let e = err(&with_template("arch = \"aarch64\"\n", ""));
    assert!(
        e.message
            .contains("is for aarch64 guests and the fleet runs x86_64"),
        "{e}"
    );
    let e = err(&with_template(
        "arch = \"x86_64\"\n[x86.features]\navx3 = true\n",
        "",
    ));
    assert!(
        e.message.contains("t.toml:3:8") && e.message.contains("avx3"),
        "{e}"
    );
    let e = err("[[vm]]\nname = \"a\"\ntemplate = \"gone.toml\"\n");
    assert_eq!((e.line, e.column), (3, 12), "{e}");
    assert!(
        e.message.contains("not in the spec's [templates] table"),
        "{e}"
    );
    let e = err("[[vm]]\nname = \"a\"\ntemplat = \"x.toml\"\n");
    assert!(e.message.contains("did you mean `template`"), "{e}");
}

#[test]
fn embedding_reads_each_template_beside_the_spec_once() {
    let dir = std::env::temp_dir().join(format!("vmfleet-spec-template-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("t")).unwrap();
    std::fs::write(
        dir.join("t/base.toml"),
        "arch = \"x86_64\"\n[x86.features]\navx2 = false\n",
    )
    .unwrap();
    let spec = "[[vm]]\nname = \"a\"\ntemplate = \"t/base.toml\"\n[[vm]]\nname = \"b\"\n\
                template = \"t/base.toml\"\n";
    let embedded = embed_templates(spec, "s.toml", &dir).unwrap();
    assert_eq!(embedded.matches("[templates]").count(), 1);
    let parsed = parse(&embedded, "s.toml").unwrap();
    assert!(parsed.vms.iter().all(|vm| vm.cpu.hide == ["avx2"]));
    // Embedding is idempotent: a spec that has its table is left alone.
    assert_eq!(
        embed_templates(&embedded, "s.toml", &dir).unwrap(),
        embedded
    );
    let missing = "[[vm]]\nname = \"a\"\ntemplate = \"nope.toml\"\n";
    let e = embed_templates(missing, "s.toml", &dir)
        .unwrap_err()
        .to_string();
    assert!(e.contains("s.toml: reading template `nope.toml`"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
