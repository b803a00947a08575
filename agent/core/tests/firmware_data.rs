//! The update the example firmware runs under QEMU (agent/firmware, `agent-update`): a
//! signed delta offer from the factory model digits_cnn v1 to v2, its patch and its
//! validation set. Files in agent/firmware/data are checked against what this test
//! makes; `MOTA_BLESS=1 cargo test -p mota-agent --test firmware_data` rewrites them
//! (after a change of the patch format or of the test keys).

mod common;

use common::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../firmware/data/");

#[test]
fn the_firmware_demo_update_is_current() -> TestResult {
    let (old, new) = (model("digits_cnn_v1")?, model("digits_cnn_v2")?);
    let set = set("digits_cnn_v2", 100)?;
    let o = offer(&new, OfferSpec { counter: 1, base: Some(&old), set: Some(&set), ..Default::default() })?;
    let files = [("offer.cbor", &o.envelope), ("patch.mdlt", &o.artifacts[1]), ("set.vset", &o.artifacts[2])];
    let bless = std::env::var_os("MOTA_BLESS").is_some();
    for (name, bytes) in files {
        let path = format!("{DATA}{name}");
        if bless {
            std::fs::write(&path, bytes)?;
        }
        let on_disk = std::fs::read(&path)?;
        assert!(on_disk == *bytes, "{path} is stale: rerun with MOTA_BLESS=1");
    }
    Ok(())
}
