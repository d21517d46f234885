//! Writes the CustomResourceDefinitions of cks-lab to a directory (default `crds/`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Generate the cks.io CRD manifests.
#[derive(Parser, Debug)]
struct Args {
    /// Directory to write `<plural>.cks.io.yaml` files into.
    #[arg(long, default_value = "crds")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    for crd in cks_api::crds::all() {
        let path = args.out.join(cks_api::crds::file_name(&crd));
        let yaml = cks_api::crds::to_yaml(&crd).context("serializing CRD to YAML")?;
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
