//! Builds the FIX message store (`src/fix/mmap_store.cpp`), a C++ `FIX::MessageStoreFactory`,
//! and what the sessions' sockets need beyond QuickFIX's API (`src/fix/session_socket.cpp`),
//! against the QuickFIX headers that the `quickfix-ffi` crate ships (the library itself is
//! built and linked by that crate).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/fix/mmap_store.cpp");
    println!("cargo:rerun-if-changed=src/fix/session_socket.cpp");
    println!("cargo:rerun-if-changed=build.rs");
    let headers = quickfix_headers();
    // QuickFIX's cmake build generates an empty `Allocator.h` that its headers include.
    let generated = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("quickfix-generated");
    std::fs::create_dir_all(&generated).expect("create the generated headers' directory");
    std::fs::write(generated.join("Allocator.h"), "/* Empty, as QuickFIX's cmake build generates it. */\n")
        .expect("write Allocator.h");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .include(&generated)
        .include(&headers)
        .file("src/fix/mmap_store.cpp")
        .file("src/fix/session_socket.cpp")
        .warnings(false)
        .compile("cccx_fix_store");
}

/// `libquickfix/src/C++` of the `quickfix-ffi` package this build resolved, found through
/// `cargo metadata` (the crate declares no `links` key, so it exports no paths).
fn quickfix_headers() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(&manifest)
        .output()
        .expect("run cargo metadata");
    if !out.status.success() {
        panic!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let ffi = packages
        .iter()
        .find(|p| p["name"] == "quickfix-ffi")
        .expect("the quickfix-ffi package among the dependencies");
    let manifest_path = PathBuf::from(ffi["manifest_path"].as_str().expect("manifest_path"));
    let dir = manifest_path.parent().expect("package directory").join("libquickfix/src/C++");
    assert!(dir.join("MessageStore.h").exists(), "no QuickFIX headers in {}", dir.display());
    dir
}
