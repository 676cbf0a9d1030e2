//! Writes the CRDs to `charts/kube-lvs/crds/` (default) or prints them to stdout (`--stdout`).
//!
//! Usage: `cargo run -p kube-lvs-crds --bin crdgen [-- --stdout | --dir <DIR>]`

use std::path::PathBuf;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut dir: Option<PathBuf> = None;
    let mut stdout = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--stdout" => stdout = true,
            "--dir" => dir = Some(args.next().context("--dir needs a path")?.into()),
            "-h" | "--help" => {
                println!(
                    "crdgen [--stdout | --dir DIR]   (default DIR: {})",
                    kube_lvs_crds::CRD_DIR
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?}; try --help"),
        }
    }
    let rendered = kube_lvs_crds::render_crds()?;
    if stdout {
        for (i, crd) in rendered.iter().enumerate() {
            if i > 0 {
                println!("---");
            }
            print!("{}", crd.yaml);
        }
        return Ok(());
    }
    // Default to the chart directory of the workspace this crate belongs to, wherever cargo
    // was started from.
    let dir = dir.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(kube_lvs_crds::CRD_DIR)
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for crd in rendered {
        let path = dir.join(&crd.file_name);
        std::fs::write(&path, crd.yaml).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
