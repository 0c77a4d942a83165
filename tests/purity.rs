//! The decisions are pure by construction, not by agreement: no file under `src/decide/` (nor
//! the data they read, `src/index.rs` and `src/model/`) may reach a runtime, a client, the
//! network, the file system or the clock, nor import a module of the crate that does.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What a pure file must not name, and why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("tokio::", "the async runtime"),
    ("kube::", "the Kubernetes client"),
    ("axum::", "the HTTP server"),
    ("hyper::", "the HTTP stack"),
    ("reqwest::", "the HTTP client"),
    ("rustls", "TLS"),
    ("json_patch", "wire encoding (the webhook builds patches)"),
    ("std::fs", "the file system"),
    ("std::net", "the network (core::net holds the address types)"),
    ("std::process", "processes"),
    ("std::env", "the environment"),
    ("std::thread", "threads"),
    ("SystemTime", "the clock (now is an argument)"),
    ("Instant", "the clock (now is an argument)"),
    ("::now()", "the clock (now is an argument)"),
    ("RwLock", "shared state (the index's handle is `shared_index`)"),
    ("Mutex", "shared state"),
];

/// The crate's own modules a pure file may use.
const PURE_MODULES: &[&str] = &["decide", "index", "model", "config"];

/// Every violation in `text` (file `name`), one line each.
fn violations(name: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        for (token, what) in FORBIDDEN {
            if code.contains(token) {
                out.push(format!("{name}:{}: `{token}` ({what}): {}", n + 1, line.trim()));
            }
        }
        for (i, _) in code.match_indices("crate::") {
            let module: String = code[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` is checked by the lines of its braces.
            if !module.is_empty() && !PURE_MODULES.contains(&module.as_str()) {
                out.push(format!(
                    "{name}:{}: uses crate::{module}, which is not pure: {}",
                    n + 1,
                    line.trim()
                ));
            }
        }
        // Inside `use crate::{ … }` blocks, the module names stand alone at the line start.
        let trimmed = code.trim_start();
        // (`decide::accounting::{` opens a nested group: its first name is the module.)
        if let Some(module) = trimmed
            .strip_suffix("::{")
            .map(|path| path.split("::").next().unwrap_or(path))
            .or_else(|| {
                trimmed
                    .split_once("::")
                    .filter(|_| !trimmed.starts_with("use ") && !trimmed.contains(' '))
                    .map(|(m, _)| m)
            })
            && text_is_in_use_crate_block(text, n)
            && !PURE_MODULES.contains(&module)
            && module != "super"
            && module != "self"
        {
            out.push(format!(
                "{name}:{}: uses crate::{module}, which is not pure: {}",
                n + 1,
                line.trim()
            ));
        }
    }
    out
}

/// Whether line `n` of `text` lies inside a `use crate::{ … };` block.
fn text_is_in_use_crate_block(text: &str, n: usize) -> bool {
    let lines: Vec<&str> = text.lines().collect();
    let mut depth = 0i32;
    let mut inside = false;
    for (i, line) in lines.iter().enumerate() {
        if i == n {
            return inside && depth == 1;
        }
        let code = line.split("//").next().unwrap_or_default();
        if code.trim_start().starts_with("use crate::{") {
            inside = true;
            depth = 0;
        }
        if inside {
            depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
            if depth <= 0 {
                inside = false;
            }
        }
    }
    false
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_decisions_and_the_data_they_read_are_pure() {
    let root = Path::new(ROOT);
    let mut files = Vec::new();
    rust_files(&root.join("src/decide"), &mut files);
    rust_files(&root.join("src/model"), &mut files);
    files.push(root.join("src/index.rs"));
    files.sort();
    assert!(files.len() >= 15, "{files:?}");
    let mut all = Vec::new();
    for file in &files {
        let name = file.strip_prefix(root).unwrap().display().to_string();
        all.extend(violations(&name, &std::fs::read_to_string(file).unwrap()));
    }
    assert!(all.is_empty(), "impure code in pure modules:\n{}", all.join("\n"));
}

/// The check catches what it is there to catch (and leaves comments and pure imports alone).
#[test]
fn the_check_fails_on_a_runtime_a_clock_or_an_impure_module() {
    // (case, source, violations expected)
    let rows: &[(&str, &str, usize)] = &[
        (
            "pure imports",
            "use crate::{\n    config::Config,\n    decide::time::Timestamp,\n};\nuse std::collections::BTreeMap;\n",
            0,
        ),
        (
            "a comment may say tokio::spawn",
            "// tokio::spawn is not used here\nfn f() {}\n",
            0,
        ),
        ("tokio", "fn f() { tokio::spawn(async {}); }\n", 1),
        ("the clock", "let now = std::time::SystemTime::now();\n", 2),
        ("std::net", "use std::net::Ipv4Addr;\n", 1),
        (
            "an impure module in a path",
            "use crate::server::http::HttpError;\n",
            1,
        ),
        (
            "an impure module in a use block",
            "use crate::{\n    decide::placement::Placement,\n    shared_index::SharedIndex,\n};\n",
            1,
        ),
        (
            "nested groups: a pure one, then an impure one",
            "use crate::{\n    decide::accounting::{\n        Load,\n    },\n    server::patch::{\n        Patch,\n    },\n};\n",
            1,
        ),
        (
            "a lock",
            "let l: std::sync::RwLock<u8> = Default::default();\n",
            1,
        ),
    ];
    for (case, source, want) in rows {
        let found = violations("x.rs", source);
        assert_eq!(found.len(), *want, "{case}: {found:#?}");
    }
}
