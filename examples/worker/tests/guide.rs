//! docs/kinds.md ("Write a job kind") shows this crate's code verbatim, so the guide's code is
//! code that compiles and is tested.

use std::path::Path;

#[test]
fn kinds_guide_is_the_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let guide = read("../../docs/kinds.md");
    let main = read("src/main.rs");
    assert!(guide.contains(main.trim_end()), "docs/kinds.md must show src/main.rs verbatim");
    let normalize = read("src/vector_normalize.rs");
    let code = &normalize[..normalize.find("#[cfg(test)]").expect("tests")];
    assert!(
        guide.contains(code.trim_end()),
        "docs/kinds.md must show src/vector_normalize.rs (without its tests) verbatim"
    );
}
