//! Build-script helper shared by the `agyn-api-*` crates.
//!
//! Each crate under `crates/api/` contains the generated code of one proto
//! package, so that editing one `.proto` file rebuilds only that package
//! and the crates that depend on it. The helper compiles the package with
//! `protox` (no `protoc` needed), generates buffa messages and ConnectRPC
//! stubs with `connectrpc-build`, and writes `modules.rs`: the module tree
//! that mounts the generated code at its proto path and re-exports the
//! packages it imports from their own crates.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

type BoxError = Box<dyn std::error::Error>;

/// A proto package that the compiled files import, provided by another crate.
pub struct Dependency {
    /// Dotted proto package, e.g. `agynio.api.identity.v1`.
    pub package: &'static str,
    /// Rust crate that contains the generated code, e.g. `agyn_api_identity`.
    pub crate_name: &'static str,
}

/// Returns the repository's `proto/` directory, found from the calling
/// crate's manifest directory.
pub fn proto_root() -> PathBuf {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("proto"))
        .find(|dir| dir.join("agynio").is_dir())
        .expect("proto/agynio not found above the crate directory")
}

/// Compiles `files` (paths relative to `proto/`) into `$OUT_DIR`.
///
/// The generated code ends up in `$OUT_DIR/modules.rs`, which the crate
/// includes at its root. Packages the files import (other than
/// `google.protobuf`, which `buffa-types` provides) must be listed in
/// `dependencies`.
pub fn compile(files: &[&str], dependencies: &[Dependency]) -> Result<(), BoxError> {
    let root = proto_root();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = write_descriptor_set(&root, files, &out_dir.join("package.fds.bin"))?;

    connectrpc_build::Config::new()
        .descriptor_set(&descriptor_path)
        .files(files)
        .out_dir(&out_dir)
        // The descriptor set is rewritten on every build-script run, so the
        // directives connectrpc-build would emit for it keep the crate dirty.
        .emit_rerun_directives(false)
        .compile()?;

    let own_packages = packages_of(&root, files)?;
    emit_json_defaults(&out_dir, &own_packages)?;
    std::fs::write(
        out_dir.join("modules.rs"),
        module_tree(&own_packages, dependencies),
    )?;

    for file in files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}

/// Compiles `files` and their imports into one encoded `FileDescriptorSet`
/// with source info, written to `path`.
pub fn write_descriptor_set(root: &Path, files: &[&str], path: &Path) -> Result<PathBuf, BoxError> {
    let bytes = protox::Compiler::new([root])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(files)?
        .encode_file_descriptor_set();
    std::fs::write(path, bytes)?;
    Ok(path.to_path_buf())
}

/// Predicates that make buffa's generated serde code omit fields holding
/// their default value. Connect JSON from agyn includes those fields (zero
/// numbers, `false`, empty strings and lists, the zero enum value), so that
/// clients never have to guess a missing key. Unset message fields and
/// unset `optional` fields are still omitted.
const DEFAULT_SKIPS: &[&str] = &[
    "::buffa::__private::HashMap::is_empty",
    "::buffa::json_helpers::skip_if::is_default_enum_value",
    "::buffa::json_helpers::skip_if::is_empty_bytes",
    "::buffa::json_helpers::skip_if::is_empty_str",
    "::buffa::json_helpers::skip_if::is_empty_vec",
    "::buffa::json_helpers::skip_if::is_false",
    "::buffa::json_helpers::skip_if::is_zero_i32",
    "::buffa::json_helpers::skip_if::is_zero_i64",
    "::buffa::json_helpers::skip_if::is_zero_u32",
    "::buffa::json_helpers::skip_if::is_zero_u64",
];

/// Rewrites the generated files of `packages` so that default values are
/// serialized (see [`DEFAULT_SKIPS`]).
fn emit_json_defaults(out_dir: &Path, packages: &[String]) -> Result<(), BoxError> {
    for entry in std::fs::read_dir(out_dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        let owned = packages
            .iter()
            .any(|package| name.starts_with(&format!("{package}.")));
        if !owned || !name.ends_with(".rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path)?;
        let mut rewritten = source.clone();
        for skip in DEFAULT_SKIPS {
            rewritten = rewritten.replace(&format!("\"{skip}\""), "\"crate::__emit_default\"");
        }
        if rewritten != source {
            std::fs::write(&path, rewritten)?;
        }
    }
    Ok(())
}

/// Reads the `package` statement of every file, in order, without duplicates.
fn packages_of(root: &Path, files: &[&str]) -> Result<Vec<String>, BoxError> {
    let mut packages = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(root.join(file))?;
        let package = source
            .lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix("package "))
            .map(|rest| rest.trim_end_matches(';').trim().to_string())
            .ok_or_else(|| format!("{file}: no package statement"))?;
        if !packages.contains(&package) {
            packages.push(package);
        }
    }
    Ok(packages)
}

/// A node of the module tree: child modules and the lines placed inside.
#[derive(Default)]
struct ModuleNode {
    children: BTreeMap<String, ModuleNode>,
    body: Vec<String>,
}

impl ModuleNode {
    fn at(&mut self, package: &str) -> &mut ModuleNode {
        package.split('.').fold(self, |node, segment| {
            node.children.entry(segment.to_string()).or_default()
        })
    }

    fn render(&self, out: &mut String, depth: usize) {
        let indent = "    ".repeat(depth);
        for line in &self.body {
            let _ = writeln!(out, "{indent}{line}");
        }
        for (name, child) in &self.children {
            let _ = writeln!(out, "{indent}{ALLOW}");
            let _ = writeln!(out, "{indent}pub mod {name} {{");
            child.render(out, depth + 1);
            let _ = writeln!(out, "{indent}}}");
        }
    }
}

const ALLOW: &str = "#[allow(non_camel_case_types, dead_code, unused_imports, \
    unused_qualifications, clippy::all, clippy::pedantic, \
    impl_trait_redundant_captures)]";

fn module_tree(own_packages: &[String], dependencies: &[Dependency]) -> String {
    let mut root = ModuleNode::default();
    for package in own_packages {
        root.at(package).body.push(format!(
            "include!(concat!(env!(\"OUT_DIR\"), \"/{package}.mod.rs\"));"
        ));
    }
    for dependency in dependencies {
        let path = dependency.package.replace('.', "::");
        root.at(dependency.package)
            .body
            .push(format!("pub use ::{}::{path}::*;", dependency.crate_name));
    }
    let mut out = String::from(
        "// @generated by agyn-api-build. Do not edit.\n\n\
         /// Serde predicate that never skips a field, so JSON output includes\n\
         /// default values.\n\
         #[doc(hidden)]\n\
         pub fn __emit_default<T: ?Sized>(_: &T) -> bool {\n    false\n}\n\n",
    );
    root.render(&mut out, 0);
    out
}

/// Compiles every proto file under `proto/` into one descriptor set at
/// `$OUT_DIR/<name>` and writes `$OUT_DIR/gateway_methods.rs`, a table of
/// every method of every `*Gateway` service.
pub fn compile_catalog(name: &str) -> Result<(), BoxError> {
    let root = proto_root();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut files = Vec::new();
    collect_protos(&root, &root, &mut files)?;
    files.sort();
    let file_refs: Vec<&str> = files.iter().map(String::as_str).collect();
    write_descriptor_set(&root, &file_refs, &out_dir.join(name))?;

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.open_files(&file_refs)?;
    let set = compiler.file_descriptor_set();
    let mut table = String::from(
        "// @generated by agyn-api-build. Do not edit.\n\
         /// `(procedure path, server streaming, client streaming)` of every gateway method.\n\
         pub const GATEWAY_METHODS: &[(&str, bool, bool)] = &[\n",
    );
    for file in &set.file {
        for service in &file.service {
            let service_name = service.name();
            if !service_name.ends_with("Gateway") {
                continue;
            }
            for method in &service.method {
                let _ = writeln!(
                    table,
                    "    (\"/{}.{}/{}\", {}, {}),",
                    file.package(),
                    service_name,
                    method.name(),
                    method.server_streaming(),
                    method.client_streaming()
                );
            }
        }
    }
    table.push_str("];\n");
    std::fs::write(out_dir.join("gateway_methods.rs"), table)?;
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}

fn collect_protos(root: &Path, dir: &Path, files: &mut Vec<String>) -> Result<(), BoxError> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(root, &path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            let relative = path
                .strip_prefix(root)?
                .to_string_lossy()
                .replace('\\', "/");
            files.push(relative);
        }
    }
    Ok(())
}
