//! Every fuzz target's properties, over its committed seeds (`fuzz/seeds/<target>/`) and over
//! whatever a local `cargo fuzz` run left in `fuzz/corpus/<target>/`: the fuzzers' checks run on
//! every CI run, even where no nightly toolchain can run libFuzzer.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

type Check = fn(&[u8]);

const TARGETS: &[(&str, Check)] = &[
    ("frames", gateway::fuzzing::frames),
    ("signals", gateway::fuzzing::signals),
    ("playlist", gateway::fuzzing::playlist),
    ("token", gateway::fuzzing::token),
    ("range", gateway::fuzzing::range),
    ("path", gateway::fuzzing::path),
    ("cmcd", gateway::fuzzing::cmcd),
];

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_passes_its_targets_checks() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    for (target, check) in TARGETS {
        let seeds = files(&fuzz.join("seeds").join(target));
        assert!(seeds.len() >= 5, "{target}: only {} seeds", seeds.len());
        let corpus = files(&fuzz.join("corpus").join(target));
        for file in seeds.iter().chain(&corpus) {
            let data = std::fs::read(file).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", file.display());
        }
    }
}

/// The path checks the playlist and path targets share refuse what they must.
#[test]
fn the_shared_path_check_refuses_dot_segments_and_relative_paths() {
    use peer_assist::fuzzing::assert_absolute_clean;
    assert!(std::panic::catch_unwind(|| assert_absolute_clean("/a/../b.ts")).is_err());
    assert!(std::panic::catch_unwind(|| assert_absolute_clean("/a/./b.ts")).is_err());
    assert!(std::panic::catch_unwind(|| assert_absolute_clean("a.ts")).is_err());
    assert_absolute_clean("/a/b.ts?x=/../");
}
