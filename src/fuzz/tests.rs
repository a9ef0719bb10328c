//! Replays the checked-in fuzz corpus (seeds recorded from real traffic, plus every input
//! that once crashed a target) through the entry points: none may panic.

use std::path::Path;

use super::TARGETS;

#[test]
fn every_corpus_input_passes_its_target_without_a_panic() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, target) in TARGETS {
        let dir = corpus.join(name);
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_file() {
                target(&std::fs::read(&path)?);
                replayed += 1;
            }
        }
        assert!(replayed > 0, "no seed in {}", dir.display());
    }
    Ok(())
}
