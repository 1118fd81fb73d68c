//! Embeds two trees into the binary as tables of (path, bytes): the demo stream under `demo/`, and
//! the built browser player under `../web/dist/` (committed, so no npm step is needed to build).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(
    dir: &Path,
    root: &Path,
    keep: &dyn Fn(&Path) -> bool,
    out: &mut Vec<(String, PathBuf)>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, root, keep, out)?;
        } else if keep(&path) {
            let rel = path
                .strip_prefix(root)
                .map_err(std::io::Error::other)?
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, path.canonicalize()?));
        }
    }
    Ok(())
}

/// Writes `$OUT_DIR/{file}` holding `pub static FILES: &[(&str, &[u8])]`, sorted by path.
fn embed(root: &Path, keep: &dyn Fn(&Path) -> bool, doc: &str, file: &str) -> std::io::Result<()> {
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    if root.is_dir() {
        collect(root, root, keep, &mut files)?;
    }
    files.sort();
    let mut code = format!("/// {doc}\npub static FILES: &[(&str, &[u8])] = &[\n");
    for (rel, abs) in &files {
        writeln!(
            code,
            "    ({rel:?}, include_bytes!({:?})),",
            abs.display().to_string()
        )
        .map_err(std::io::Error::other)?;
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(std::io::Error::other)?);
    std::fs::write(out.join(file), code)
}

fn main() -> std::io::Result<()> {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(std::io::Error::other)?);
    embed(
        &manifest.join("demo"),
        &|p| p.extension().is_some_and(|e| e == "m3u8" || e == "ts"),
        "Demo files: path below `demo/`, bytes.",
        "demo_files.rs",
    )?;
    embed(
        &manifest.join("../web/dist"),
        &|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        },
        "Web player files: path below `web/dist/`, bytes.",
        "web_files.rs",
    )
}
