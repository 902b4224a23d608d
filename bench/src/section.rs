//! The part of `docs/benchmarks.md` a benchmark owns: the text between its
//! begin and end markers, replaced on every run; everything else is kept.

use anyhow::Context;
use std::path::Path;

/// Replaces the text from `begin` to `end` (markers included) in `path`
/// with `section`, or appends `section` when the markers are not there.
pub fn write_section(path: &Path, begin: &str, end: &str, section: &str) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if e > b => format!("{}{}{}", &old[..b], section.trim_end(), &old[e + end.len()..]),
        _ => format!("{}\n\n{}\n", old.trim_end(), section.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_its_own_section() {
        let path = std::env::temp_dir().join(format!("section-test-{}.md", std::process::id()));
        std::fs::write(&path, "# Title\n\nintro\n").expect("write");
        write_section(&path, "<!-- A -->", "<!-- /A -->", "<!-- A -->\nfirst\n<!-- /A -->").expect("append");
        write_section(&path, "<!-- B -->", "<!-- /B -->", "<!-- B -->\nother\n<!-- /B -->").expect("append");
        write_section(&path, "<!-- A -->", "<!-- /A -->", "<!-- A -->\nsecond\n<!-- /A -->").expect("replace");
        let text = std::fs::read_to_string(&path).expect("read");
        let _ = std::fs::remove_file(&path);
        assert!(text.starts_with("# Title\n\nintro\n"), "{text}");
        assert!(text.contains("second") && !text.contains("first"), "{text}");
        assert!(text.contains("other"), "{text}");
        assert!(text.find("second") < text.find("other"), "a replaced section keeps its place: {text}");
    }
}
