//! A checkpoint reads back only whole: a flipped byte or a truncation in any of its files is
//! found before anything is loaded, and a missing one is said to be missing.

use candle_core::Device;

use super::*;
use crate::train::optim::AdamWConfig;

fn saved(dir: &Path) -> Result<TrainState> {
    let p = ParamStore::new(0, &Device::Cpu);
    p.normal("w", 64, 1.0)?;
    let opt = AdamW::with_default_groups(p.trainable_vars(), AdamWConfig::default())?;
    let state = TrainState {
        step: 0,
        config: serde_json::json!({"dim": 64}),
        rng: Rng::new(1),
        data_position: 0,
        losses: vec![(1, 2.5)],
    };
    Checkpoint::save(dir, &opt, &state)?;
    Ok(state)
}

#[test]
fn a_whole_checkpoint_is_found_with_its_state() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::wrap)?;
    let ckpt = dir.path().join("ckpt");
    assert_eq!(Checkpoint::inspect(&ckpt), Found::Nothing);
    let state = saved(&ckpt)?;
    assert_eq!(Checkpoint::inspect(&ckpt), Found::Whole(state));
    Ok(())
}

#[test]
fn every_flipped_byte_or_truncation_is_found() -> Result<()> {
    let dir = tempfile::tempdir().map_err(Error::wrap)?;
    let ckpt = dir.path().join("ckpt");
    for name in [MODEL, OPTIMIZER, STATE, CHECKSUMS] {
        for damage in ["flip", "truncate"] {
            saved(&ckpt)?;
            let path = ckpt.join(name);
            let mut bytes = fs::read(&path)?;
            if damage == "flip" {
                let at = bytes.len() / 2;
                bytes[at] ^= 0x01;
            } else {
                bytes.truncate(bytes.len() / 3);
            }
            fs::write(&path, &bytes)?;
            match Checkpoint::inspect(&ckpt) {
                Found::Damaged(why) => assert!(why.contains("ckpt"), "{why}"),
                other => panic!("{damage} of {name} not found: {other:?}"),
            }
            Checkpoint::discard(&ckpt)?;
            assert_eq!(Checkpoint::inspect(&ckpt), Found::Nothing);
        }
    }
    Ok(())
}

#[test]
fn reading_a_missing_checkpoint_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let err = Checkpoint::read_state(&dir.path().join("nope")).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}
