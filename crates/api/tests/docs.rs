//! `docs/api.md` shows the shipped samples verbatim: every YAML example in it is one of the
//! sample files, and every sample file appears in it.

use std::path::Path;

const SAMPLES: &[&str] = &[
    "config/samples/clusterpool.yaml",
    "config/examples/practicecluster.yaml",
    "config/samples/session.yaml",
    "config/samples/validationrun.yaml",
];

fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn api_reference_examples_are_the_samples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/api.md")).unwrap();
    let blocks = yaml_blocks(&doc);
    let samples: Vec<String> = SAMPLES
        .iter()
        .map(|f| std::fs::read_to_string(root.join(f)).unwrap())
        .collect();
    for (file, sample) in SAMPLES.iter().zip(&samples) {
        assert!(
            blocks.contains(sample),
            "docs/api.md does not show {file} verbatim"
        );
    }
    for block in &blocks {
        assert!(
            samples.contains(block),
            "docs/api.md has a YAML example that is not a sample file:\n{block}"
        );
    }
}
