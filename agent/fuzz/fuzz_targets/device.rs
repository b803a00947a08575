//! The device both agent-level targets fuzz: the agent on simulated flash (4-byte units,
//! 4 KiB sectors) holding the factory model, with the firmware demo's configuration and
//! a validator that accepts every model.

use std::cell::RefCell;
use std::rc::Rc;

use embedded_storage::nor_flash::NorFlash;
use mota_agent::{Config, Factory, Located, MapStore, Measurement, Run, Validator, Work};
use mota_proto::Limits;
use mota_proto::message::ErrorCode;
use mota_simflash::Region;
use mota_simflash::{Geometry, SimFlash};

pub static FACTORY: &[u8] = include_bytes!("../../runtime/fixtures/models/digits_cnn_v1.tflite");

pub type Part = SimFlash<4, 4096, true>;
pub const STATE: u32 = 3 * 4096;
pub const SLOT: u32 = 32 * 1024;

/// Accepts every model: the validator is the firmware's business, the agent is fuzzed.
pub struct Accept;

impl Validator for Accept {
    fn validate(
        &mut self,
        _: Located,
        _: u32,
        _: Option<Located>,
        _: &mut [u8],
        _: &mut Run,
        _: u32,
    ) -> Result<Option<Measurement>, ErrorCode> {
        Ok(Some(Measurement { accuracy_permille: Some(990), latency_us: Some(1), arena_used: Some(1) }))
    }
}

pub fn config() -> Config<'static> {
    Config {
        device_id: "fuzz-device",
        device_class: "stm32f4-kws",
        agent_version: "fuzz",
        roots: &[mota_proto::testkit::ROOT],
        crypto: &mota_proto::Software,
        limits: Limits {
            max_image_bytes: SLOT,
            max_patch_bytes: 64 * 1024,
            max_arena_bytes: 16 * 1024,
            max_validation_bytes: 16 * 1024,
        },
        erased: 0xFF,
        chunk_bytes: 1024,
        retry_ms: 1000,
        max_trials: 2,
        // The product's trial and the erase in pieces are fuzzed too.
        trial_boots: 2,
        work: Work { flash_bytes: 8192, records: 0 },
        leases: None,
        factory: Some(Factory {
            size: FACTORY.len() as u32,
            name: "digits_cnn",
            version: "1.0.0",
            counter: 1,
            arena_bytes: 4096,
        }),
    }
}

/// The state store on the part's first three sectors.
pub fn store(part: &Rc<RefCell<Part>>) -> Result<MapStore<Region<Part>>, mota_agent::StoreError> {
    MapStore::new(Region::new(part, 0, STATE), 0xFF)
}

/// A part fresh from the factory: the factory model at the start of slot 0.
pub fn part() -> Rc<RefCell<Part>> {
    let mut part = SimFlash::new(Geometry::uniform(3 + 16, 4096, 4, 0xFF).expect("geometry"));
    let mut image = FACTORY.to_vec();
    image.resize(image.len().next_multiple_of(4), 0xFF);
    part.write(STATE, &image).expect("factory");
    Rc::new(RefCell::new(part))
}
