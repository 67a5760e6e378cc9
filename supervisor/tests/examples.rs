//! The repository's `examples/` are real: every spec there parses with the product's own parser,
//! every file the README names exists, and, where `/dev/kvm` can run x86 guests, every x86
//! example runs: with `vmfleet run` when its guests end on their own, under `vmfleet serve` (driven
//! by `vmfleet ctl` and `ctl send`, then shut down) when they probe until stopped.
//! Without KVM the live part is SKIPPED.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use supervisor::spec::{FleetSpec, parse};
use vcpu::{GuestArch, Hypervisor};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("supervisor/ lives in the repository")
        .to_path_buf()
}

/// Every `examples/*.toml`, sorted.
fn example_specs() -> Vec<PathBuf> {
    let dir = repo().join("examples");
    let mut specs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    specs.sort();
    specs
}

fn parsed(path: &Path) -> FleetSpec {
    // As `vmfleet run` reads a spec: with the templates it names embedded.
    let text = supervisor::spec::read_spec_file(path).unwrap_or_else(|e| panic!("{e}"));
    parse(&text, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"))
}

fn vmfleet() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmfleet"));
    cmd.current_dir(repo());
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmfleet-examples-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_example_spec_parses() {
    let specs = example_specs();
    let names: Vec<String> = specs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for required in [
        "web.toml",
        "batch.toml",
        "lock.toml",
        "web-tier.toml",
        "arm.toml",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "examples/{required} is missing"
        );
    }
    for spec in &specs {
        let fleet = parsed(spec);
        assert!(!fleet.vms.is_empty(), "{}", spec.display());
    }
    assert_eq!(
        parsed(&repo().join("examples/arm.toml")).arch,
        GuestArch::Aarch64
    );
}

/// Paths in the README that name repository files: `examples/...` and `fixtures/...` anywhere,
/// and every `*.toml` word in a code block (the commands a reader copies), except vmfleet's
/// arguments inside the arm64 lab (after `--`), which name the guest's copies of its inputs.
fn readme_paths(readme: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut in_code = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        // What follows `--` on an arm64-lab line runs in the guest, on its own inputs' names.
        let line = match line.split_once(" -- ") {
            Some((host, _guest)) if line.contains("arm64-lab") => host,
            _ => line,
        };
        let words = line.split(|c: char| {
            c.is_whitespace() || matches!(c, '`' | '(' | ')' | ',' | ';' | '"' | '\'' | '[' | ']')
        });
        for word in words {
            let word = word.trim_end_matches(['.', ':']);
            let repo_path = word.starts_with("examples/") || word.starts_with("fixtures/");
            let copied_spec = in_code && word.ends_with(".toml") && !word.starts_with('#');
            if repo_path || copied_spec {
                paths.push(word.to_string());
            }
        }
    }
    paths
}

/// Whether `pattern` (a path, possibly with one `*` in its file name) names an existing file.
fn exists(pattern: &str) -> bool {
    let path = repo().join(pattern);
    let Some((prefix, suffix)) = pattern.rsplit('/').next().and_then(|f| f.split_once('*')) else {
        return path.exists();
    };
    let dir = path.parent().expect("a file in a directory");
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
    })
}

#[test]
fn every_file_the_readme_names_exists() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let paths = readme_paths(&readme);
    for expected in [
        "examples/web.toml",
        "examples/batch.toml",
        "examples/arm.toml",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "the README does not name {expected} (it names {paths:?})"
        );
    }
    let missing: Vec<&String> = paths.iter().filter(|p| !exists(p)).collect();
    assert!(
        missing.is_empty(),
        "the README names files the repository does not have: {missing:?}"
    );
    assert!(
        !readme.contains("socat"),
        "the README's examples must not need socat"
    );
}

#[test]
fn readme_paths_are_found_and_checked() {
    let text = "See `examples/web.toml`.\n```sh\nvmfleet run examples/lock.toml --record x.trace\n\
                vmfleet run spec.toml   # a spec\n\
                cargo xtask arm64-lab --input examples/arm.toml -- run arm.toml\n```\n\
                prose about f.toml: not a command\n";
    assert_eq!(
        readme_paths(text),
        [
            "examples/web.toml",
            "examples/lock.toml",
            "spec.toml",
            "examples/arm.toml"
        ]
    );
    assert!(exists("examples/web.toml"));
    assert!(exists("fixtures/specs/arm64-*.toml"));
    assert!(!exists("fixtures/specs/nothing-*.toml"));
    assert!(!exists("examples/nothing.toml"));
}

/// Whether this host can run the x86 examples; SKIPPED (counted by `cargo xtask test`) if not.
fn kvm_runs_x86(test: &str) -> bool {
    match vcpu::hypervisor::kvm::KvmHypervisor::open() {
        Ok(kvm) if kvm.arch() == GuestArch::X86_64 => true,
        Ok(kvm) => {
            vcpu::skip::skipped(
                test,
                format!("the examples run x86 guests, this host runs {}", kvm.arch()),
            );
            false
        }
        Err(e) => {
            vcpu::skip::skipped(test, format!("/dev/kvm unusable: {e}"));
            false
        }
    }
}

#[test]
fn every_x86_example_runs() {
    if !kvm_runs_x86("every_x86_example_runs") {
        return;
    }
    let mut ran = 0;
    for spec in example_specs() {
        let fleet = parsed(&spec);
        if fleet.arch != GuestArch::X86_64 {
            continue;
        }
        if fleet.vms.iter().any(|vm| vm.probe_repeats == 0) {
            serve_example(&spec, &fleet);
        } else {
            let out = vmfleet().arg("run").arg(&spec).output().unwrap();
            assert!(
                out.status.success(),
                "vmfleet run {}: {}",
                spec.display(),
                text(&out)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            for vm in &fleet.vms {
                assert!(
                    stdout
                        .lines()
                        .any(|l| l.starts_with(&format!("{} ", vm.name))),
                    "vmfleet run {}: no row for {}: {}",
                    spec.display(),
                    vm.name,
                    text(&out)
                );
            }
        }
        ran += 1;
    }
    assert!(ran >= 4, "only {ran} x86 example(s) ran");
}

/// The daemon child; killed (by its own pid) if the test fails before it exits.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The example's fleet under `vmfleet serve`: every VM is listed, running; a raw request
/// through `ctl send` gets an `ok` reply; `ctl shutdown` ends the daemon with status 0.
fn serve_example(spec: &Path, fleet: &FleetSpec) {
    let dir = scratch(&spec.file_stem().unwrap().to_string_lossy());
    let socket = dir.join("ctl.sock");
    let log = dir.join("serve.err");
    let mut daemon = Daemon(
        vmfleet()
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg(spec)
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(&log).unwrap()))
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            panic!(
                "vmfleet serve {} exited ({status}) before serving: {}",
                spec.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "no socket after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ctl = |args: &[&str]| {
        vmfleet()
            .arg("ctl")
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap()
    };
    let list = ctl(&["list"]);
    assert!(list.status.success(), "ctl list: {}", text(&list));
    let listed = String::from_utf8_lossy(&list.stdout);
    for vm in &fleet.vms {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(&format!("{} ", vm.name))),
            "{} is not listed: {listed}",
            vm.name
        );
    }
    raw_request(&socket);
    let shutdown = ctl(&["shutdown"]);
    assert!(
        shutdown.status.success(),
        "ctl shutdown: {}",
        text(&shutdown)
    );
    let status = daemon.0.wait().unwrap();
    assert!(
        status.success(),
        "vmfleet serve {} ended with {status}: {}",
        spec.display(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `vmfleet ctl send`, what the README uses instead of socat: a raw `list` request line gets
/// an `ok` reply line, printed as it came.
fn raw_request(socket: &Path) {
    let out = vmfleet()
        .args(["ctl", "send", r#"{"op":"list"}"#, "--socket"])
        .arg(socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "ctl send: {}", text(&out));
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(reply.starts_with(r#"{"ok":true"#), "{reply}");
}
