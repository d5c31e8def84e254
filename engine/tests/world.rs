//! Components that Rust would not produce, made from WAT and WIT, are
//! refused at load with a message naming the problem.

use sluice::sandbox::{LoadError, Sandbox, SandboxConfig};
use wit_component::{ComponentEncoder, StringEncoding, embed_component_metadata};
use wit_parser::Resolve;

/// A core module from `wat`, carrying the world `script` of `wit`, made
/// into a component.
fn component(wit: &str, wat: &str) -> Vec<u8> {
    let mut resolve = Resolve::default();
    let package = resolve.push_str("test.wit", wit).expect("test WIT parses");
    let world = resolve.select_world(&[package], Some("script")).expect("world");
    let mut module = wat::parse_str(wat).expect("test WAT parses");
    embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8).expect("embed");
    ComponentEncoder::default().module(&module).expect("module").validate(true).encode().expect("encode")
}

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig { max_concurrent_calls: 2, ..SandboxConfig::default() }).expect("sandbox")
}

/// The filter export has the right name but the wrong type.
#[test]
fn wrong_filter_signature_is_a_mismatch() {
    let wit = r#"
        package sluice:event-export@0.1.0;
        interface filter { filter: func(event: string) -> bool; }
        world script { export filter; }
    "#;
    let wat = r#"(module
        (memory (export "memory") 1)
        (func (export "sluice:event-export/filter@0.1.0#filter") (param i32 i32) (result i32) i32.const 1)
        (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 8))"#;
    let error = sandbox().load(&component(wit, wat)).expect_err("refused");
    assert!(matches!(error, LoadError::Mismatch { .. }), "{error:?}");
    assert!(error.to_string().contains("filter"), "{error}");
}

/// A script that wants the network (or anything but `host`) is refused.
#[test]
fn foreign_import_is_named() {
    let wit = r#"
        package sluice:event-export@0.1.0;
        interface filter { filter: func(event: string) -> bool; }
        world script {
            import evil:net/socket@1.0.0;
            export filter;
        }
        package evil:net@1.0.0 { interface socket { connect: func(port: u32); } }
    "#;
    let wat = r#"(module
        (import "evil:net/socket@1.0.0" "connect" (func (param i32)))
        (memory (export "memory") 1)
        (func (export "sluice:event-export/filter@0.1.0#filter") (param i32 i32) (result i32) i32.const 1)
        (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 8))"#;
    let error = sandbox().load(&component(wit, wat)).expect_err("refused");
    assert_eq!(error, LoadError::ForeignImport { name: "evil:net/socket@1.0.0".into() });
}

/// A newer, incompatible world version is refused by version, not by a
/// confusing type error.
#[test]
fn unsupported_major_version_is_named() {
    let wit = r#"
        package sluice:event-export@2.0.0;
        interface filter { filter: func(event: string) -> bool; }
        world script { export filter; }
    "#;
    let wat = r#"(module
        (memory (export "memory") 1)
        (func (export "sluice:event-export/filter@2.0.0#filter") (param i32 i32) (result i32) i32.const 1)
        (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 8))"#;
    let error = sandbox().load(&component(wit, wat)).expect_err("refused");
    assert_eq!(error, LoadError::UnsupportedVersion { found: "2.0.0".into() });
    assert_eq!(error.code(), "unsupported_wit_version");
}

/// A plain core module without the SDK's metadata.
#[test]
fn core_module_without_world_is_refused() {
    let module = wat::parse_str("(module (func (export \"filter\")))").expect("wat");
    assert_eq!(sandbox().load(&module).expect_err("refused"), LoadError::NoWorld);
}

#[test]
fn upload_size_is_capped() {
    let sandbox = Sandbox::new(SandboxConfig { max_script_bytes: 10, ..SandboxConfig::default() }).expect("sandbox");
    assert_eq!(sandbox.load(&[0u8; 11]).expect_err("refused"), LoadError::TooLarge { size: 11, limit: 10 });
}
