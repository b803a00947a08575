//! Patches rebuild their targets exactly, whatever the pair; the device decoder resumes
//! at every block boundary; bad patches are refused without panicking.

use std::path::PathBuf;

use mota_delta::encode::{apply, apply_from, best, full, make};
use mota_delta::{Checkpoint, Decoder, DeltaError, IoError, Sink};
use proptest::prelude::*;

fn fixture(name: &str) -> Vec<u8> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../runtime/fixtures/models");
    std::fs::read(dir.join(format!("{name}.tflite"))).unwrap()
}

/// Every ordered pair of fixture models of one family, and across families.
fn pairs() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let names = ["digits_cnn_v1", "digits_cnn_v2", "digits_cnn_v3_bad", "digits_mlp", "kws_dscnn", "resnet_tiny"];
    let mut out = Vec::new();
    for a in names {
        for b in names {
            if a != b {
                out.push((format!("{a}->{b}"), fixture(a), fixture(b)));
            }
        }
    }
    out
}

#[test]
fn fixture_pairs_round_trip_and_best_is_never_larger_than_full() {
    for (name, old, new) in pairs() {
        let patch = best(&old, &new);
        assert_eq!(apply(&old, &patch).unwrap(), new, "{name}");
        assert!(patch.len() <= full(&new).len(), "{name}");
    }
}

#[test]
fn a_fine_tune_costs_a_fraction_of_the_model() {
    let (old, new) = (fixture("digits_cnn_v1"), fixture("digits_cnn_v2"));
    let patch = make(&old, &new);
    eprintln!("digits v1->v2: {} of {} bytes", patch.len(), new.len());
    assert!(patch.len() * 2 < new.len(), "{} of {}", patch.len(), new.len());
}

struct Collect(Vec<u8>);

impl Sink for Collect {
    fn write(&mut self, bytes: &[u8]) -> Result<(), IoError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

struct Mem<'a>(&'a [u8]);

impl mota_delta::Base for Mem<'_> {
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), IoError> {
        let s = offset as usize;
        buf.copy_from_slice(self.0.get(s..s + buf.len()).ok_or(IoError)?);
        Ok(())
    }
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn bench_pair(name: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/pairs").join(name);
    (std::fs::read(dir.join("old.tflite")).unwrap(), std::fs::read(dir.join("new.tflite")).unwrap())
}

#[test]
fn resuming_at_every_block_boundary_equals_an_uninterrupted_run() {
    check_resume(&fixture("kws_dscnn"), &fixture("resnet_tiny"));
}

/// A fine-tune (word differences, scaled predictions, a block size other than 4 KiB) and a
/// last-layer fine-tune (copied blocks).
#[test]
fn resuming_fine_tunes_at_every_block_boundary() {
    for name in ["kws_dscnn/finetune", "kws_dscnn/finetune_last"] {
        let (old, new) = bench_pair(name);
        check_resume(&old, &new);
    }
}

fn check_resume(old: &[u8], new: &[u8]) {
    let (old, new) = (old.to_vec(), new.to_vec());
    for patch in [make(&old, &new), full(&new)] {
        // Decode in odd-sized chunks, recording the checkpoint after each block.
        let mut d = Decoder::new(sha(&old), old.len() as u32, u32::MAX);
        let mut out = Collect(Vec::new());
        let mut checkpoints: Vec<(Checkpoint, usize)> = Vec::new();
        for chunk in patch.chunks(5) {
            d.push(chunk, &mut Mem(&old), &mut out).unwrap();
            if let Some(ck) = d.checkpoint()
                && checkpoints.last().is_none_or(|(c, _)| c.block != ck.block)
            {
                checkpoints.push((ck, out.0.len()));
            }
        }
        d.finish().unwrap();
        assert_eq!(out.0, new);
        assert!(checkpoints.len() > 3);
        for (ck, written) in checkpoints {
            let ck = Checkpoint::from_bytes(&ck.to_bytes());
            assert_eq!(ck.output as usize, written);
            let mut rest = new[..written].to_vec();
            apply_from(&old, &patch, ck, &mut rest).unwrap();
            assert_eq!(rest, new, "resumed at block {}", ck.block);
        }
    }
}

#[test]
fn a_wrong_base_is_refused_before_any_output() {
    let (old, new) = (fixture("digits_cnn_v1"), fixture("digits_cnn_v2"));
    let patch = make(&old, &new);
    let other = fixture("digits_mlp");
    let mut d = Decoder::new(sha(&other), other.len() as u32, u32::MAX);
    let mut out = Collect(Vec::new());
    assert_eq!(d.push(&patch, &mut Mem(&other), &mut out), Err(DeltaError::WrongBase));
    assert!(out.0.is_empty());
    let mut small = Decoder::new(sha(&old), old.len() as u32, 100);
    assert_eq!(small.push(&patch, &mut Mem(&old), &mut out), Err(DeltaError::TargetTooLarge));
}

#[test]
fn truncated_and_corrupted_patches_are_errors() {
    let (old, new) = (fixture("digits_cnn_v1"), fixture("digits_cnn_v2"));
    let patch = make(&old, &new);
    for len in [0, 10, 79, 80, 82, patch.len() / 2, patch.len() - 1] {
        assert!(apply(&old, &patch[..len]).is_err(), "truncated to {len}");
    }
    let mut longer = patch.clone();
    longer.push(0);
    assert_eq!(apply(&old, &longer), Err(DeltaError::TrailingBytes));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..2000 {
        let mut bad = patch.clone();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let i = (state as usize) % bad.len();
        bad[i] ^= 1 << (state >> 61);
        // Any error is fine; a panic or a wrong output accepted is not.
        if let Ok(out) = apply(&old, &bad) {
            assert_eq!(out, new, "a corrupted patch produced another output");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_pairs_round_trip(
        old in proptest::collection::vec(any::<u8>(), 0..20_000),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<i8>(), 0..3u8), 0..200),
    ) {
        let mut new = old.clone();
        for (at, v, kind) in edits {
            if new.is_empty() { new.push(v as u8); continue; }
            let i = at.index(new.len());
            match kind {
                0 => new[i] = new[i].wrapping_add(v as u8),
                1 => new.insert(i, v as u8),
                _ => { new.remove(i); }
            }
        }
        let patch = best(&old, &new);
        prop_assert_eq!(apply(&old, &patch).unwrap(), new);
    }

    #[test]
    fn arbitrary_patches_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
        let old = vec![7u8; 1000];
        let _ = apply(&old, &bytes);
    }
}

/// The committed patch pins format v2: it must keep decoding to the fine-tuned model, and
/// the encoder must keep producing it byte for byte (regenerate with `mota delta make` on
/// a deliberate format change, and say so in the commit).
#[test]
fn the_committed_patch_pins_the_format() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let patch = std::fs::read(dir.join("digits_cnn_v1_v2.mdlt")).unwrap();
    let (old, new) = (fixture("digits_cnn_v1"), fixture("digits_cnn_v2"));
    assert_eq!(apply(&old, &patch).unwrap(), new);
    assert_eq!(best(&old, &new), patch);
}

/// Every pair of the benchmark corpus (`bench/pairs`, made by `bench/make_pairs.py`):
/// fine-tunes, re-quantizations, a layer added, retrains.
#[test]
fn benchmark_pairs_round_trip() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/pairs");
    let mut count = 0;
    for family in std::fs::read_dir(&root).unwrap().flatten().filter(|e| e.path().is_dir()) {
        for pair in std::fs::read_dir(family.path()).unwrap().flatten() {
            let (old, new) =
                (std::fs::read(pair.path().join("old.tflite")), std::fs::read(pair.path().join("new.tflite")));
            let (Ok(old), Ok(new)) = (old, new) else { continue };
            let patch = best(&old, &new);
            assert_eq!(apply(&old, &patch).unwrap(), new, "{}", pair.path().display());
            assert!(patch.len() <= full(&new).len());
            count += 1;
        }
    }
    assert!(count >= 20, "only {count} pairs found");
}

#[test]
fn a_decoder_restarted_in_place_decodes_like_a_new_one() {
    let (a, b, c) = (fixture("digits_cnn_v1"), fixture("digits_cnn_v2"), fixture("digits_cnn_v3_bad"));
    let mut d = Decoder::new(sha(&a), a.len() as u32, u32::MAX);
    let mut out = Collect(Vec::new());
    d.push(&make(&a, &b), &mut Mem(&a), &mut out).unwrap();
    assert_eq!(out.0, b);
    // The same decoder, used (and dirtied) once, re-armed for another pair.
    let patch = make(&b, &c);
    d.restart(sha(&b), b.len() as u32, u32::MAX);
    let mut again = Collect(Vec::new());
    d.push(&patch, &mut Mem(&b), &mut again).unwrap();
    d.finish().unwrap();
    assert_eq!(again.0, c);
    // And re-armed at a checkpoint: the rest equals the rest.
    let mut probe = Decoder::new(sha(&b), b.len() as u32, u32::MAX);
    let mut first = Collect(Vec::new());
    let mut at = None;
    for piece in patch.chunks(7) {
        probe.push(piece, &mut Mem(&b), &mut first).unwrap();
        if let Some(ck) = probe.checkpoint().filter(|ck| ck.block == 1) {
            at = Some((ck, first.0.len()));
            break;
        }
    }
    let (ck, written) = at.expect("a second block");
    d.restart_at(ck, b.len() as u32, u32::MAX).unwrap();
    let mut rest = Collect(c[..written].to_vec());
    d.push(&patch[ck.patch_offset as usize..], &mut Mem(&b), &mut rest).unwrap();
    assert_eq!(rest.0, c);
    let bad = Checkpoint { block_size: 0, ..ck };
    assert!(d.restart_at(bad, b.len() as u32, u32::MAX).is_err());
}

#[test]
fn a_lent_buffer_decodes_like_the_inline_one_and_comes_back() {
    let (a, b) = (fixture("digits_cnn_v1"), fixture("digits_cnn_v2"));
    let patch = make(&a, &b);
    let mut arena = vec![0xEEu8; mota_delta::BLOCK_BUFFER + 100];
    assert!(Decoder::with_buffer(sha(&a), a.len() as u32, u32::MAX, &mut arena[..100]).is_none(), "too short");
    let mut d = Decoder::with_buffer(sha(&a), a.len() as u32, u32::MAX, &mut arena[..]).expect("long enough");
    let mut out = Collect(Vec::new());
    for piece in patch.chunks(333) {
        d.push(piece, &mut Mem(&a), &mut out).unwrap();
    }
    d.finish().unwrap();
    assert_eq!(out.0, b);
    // Lent out between patches: the decoder forgets its patch, then works again.
    d.lend_buffer().fill(0xA5);
    assert!(d.push(&patch[..200], &mut Mem(&a), &mut out).is_err(), "no patch armed");
    d.restart(sha(&a), a.len() as u32, u32::MAX);
    let mut again = Collect(Vec::new());
    d.push(&patch, &mut Mem(&a), &mut again).unwrap();
    assert_eq!(again.0, b);
    assert_eq!(d.into_buffer().len(), mota_delta::BLOCK_BUFFER + 100);
}
