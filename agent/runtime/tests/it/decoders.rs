//! Property tests for the runtime's other decoders: validation sets and `.npy` files
//! never panic on arbitrary bytes, and what is built parses back.

use mota_runtime::DType;
use mota_runtime::npy::Npy;
use mota_runtime::validation::{self, Expectation, ValidationSet};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn validation_sets_round_trip(
        dims in proptest::collection::vec(1usize..6, 1..5),
        rows in 0usize..20,
        classes in 1u32..20,
        seed in any::<u64>(),
    ) {
        let per_row: usize = dims.iter().product();
        let inputs: Vec<u8> = (0..rows * per_row).map(|i| (seed.wrapping_mul(i as u64 + 1) >> 7) as u8).collect();
        let labels: Vec<u16> = (0..rows).map(|i| (i as u32 % classes) as u16).collect();
        let bytes = validation::build(DType::Int8, &dims, &inputs, Some((&labels, classes)), None).unwrap();
        let set = ValidationSet::parse(&bytes).unwrap();
        prop_assert_eq!(set.len(), rows);
        prop_assert_eq!(set.expectation, Expectation::Label { classes });
        for r in 0..rows {
            let (x, label) = set.record(r).unwrap();
            prop_assert_eq!(x, &inputs[r * per_row..(r + 1) * per_row]);
            prop_assert_eq!(u16::from_le_bytes([label[0], label[1]]), labels[r]);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_set_and_npy_parsers(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(set) = ValidationSet::parse(&bytes) {
            for r in 0..set.len().min(64) {
                let _ = set.record(r);
            }
        }
        let _ = Npy::parse(&bytes);
        let mut with_magic = b"MOTAVSET\x01\x00".to_vec();
        with_magic.extend(&bytes);
        let _ = ValidationSet::parse(&with_magic);
        let mut npy = b"\x93NUMPY\x01\x00".to_vec();
        npy.extend(&bytes);
        let _ = Npy::parse(&npy);
    }

    #[test]
    fn npy_round_trips(shape in proptest::collection::vec(1usize..5, 1..4), seed in any::<u8>()) {
        let n: usize = shape.iter().product();
        let npy = Npy { descr: "|i1".into(), shape, data: (0..n).map(|i| (i as u8).wrapping_add(seed)).collect() };
        prop_assert_eq!(Npy::parse(&npy.to_bytes()).unwrap(), npy);
    }
}
