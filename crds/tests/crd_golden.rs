//! The checked-in CRDs must be exactly what the generator produces today.

use std::path::PathBuf;

#[test]
fn checked_in_crds_match_the_generator() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(kube_lvs_crds::CRD_DIR);
    let rendered = kube_lvs_crds::render_crds().expect("CRDs render");
    assert_eq!(rendered.len(), 2);
    for crd in rendered {
        let path = dir.join(&crd.file_name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == crd.yaml,
            "{} is missing or out of date with the API types; regenerate it with \
             `cargo run -p kube-lvs-crds --bin crdgen` and commit the result",
            path.display()
        );
    }
}
