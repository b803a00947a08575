//! What the registry learns from a model and a validation set before it accepts them,
//! using the very runtime devices run: a model the backend accepts is one every device of
//! its class can parse, plan and execute, and the accuracy it records on the set is the
//! accuracy a healthy device reproduces bit for bit.

use std::time::Instant;

use mota_runtime::validation::{self, Clock, Expectation, ValidationSet};
use mota_runtime::{Interpreter, Model, PreparedOp};

/// Why a model or set was refused (each a 422 with this text).
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Devices could not run the model.
    #[error("devices cannot run this model: {0}")]
    Model(String),
    /// The set is not a mota validation set.
    #[error("not a usable validation set: {0}")]
    Set(String),
    /// The set does not fit the model, or running it failed.
    #[error("the validation set cannot be evaluated on this model: {0}")]
    Evaluation(String),
}

/// What the registry records of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFacts {
    /// Operator names in execution order.
    pub ops: Vec<String>,
    /// Tensor arena bytes the runtime needs.
    pub arena_bytes: u32,
}

/// Parses and plans `bytes` with mota-runtime.
pub fn model(bytes: &[u8]) -> Result<ModelFacts, InspectError> {
    let model = Model::parse(bytes).map_err(|e| InspectError::Model(e.to_string()))?;
    let ops = (0..model.operator_count())
        .map(|i| model.operator(i).map(|o| o.op.name().to_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| InspectError::Model(e.to_string()))?;
    let arena = mota_runtime::arena_size(&model).map_err(|e| InspectError::Model(e.to_string()))?;
    let arena_bytes = u32::try_from(arena).map_err(|_| InspectError::Model(format!("arena of {arena} bytes")))?;
    Ok(ModelFacts { ops, arena_bytes })
}

/// What the registry records of a validation set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetFacts {
    /// Records in the set.
    pub records: u32,
    /// `int8` or `float32`.
    pub input_type: &'static str,
    /// The input shape every record has.
    pub input_shape: Vec<u32>,
    /// `label` or `output`.
    pub expectation: &'static str,
    /// Number of classes (0 with expected outputs).
    pub classes: u32,
}

/// Parses and checks a set.
pub fn set(bytes: &[u8]) -> Result<SetFacts, InspectError> {
    let set = ValidationSet::parse(bytes).map_err(|e| InspectError::Set(e.to_string()))?;
    if set.is_empty() {
        return Err(InspectError::Set("it has no records".into()));
    }
    let (expectation, classes) = match set.expectation {
        Expectation::Label { classes } => ("label", classes),
        Expectation::Output { .. } => ("output", 0),
    };
    Ok(SetFacts {
        records: set.len() as u32,
        input_type: set.input_type.name(),
        input_shape: set.dims[..set.rank].to_vec(),
        expectation,
        classes,
    })
}

/// The accuracy (permille) and mean host latency of `model` on `set`.
pub fn evaluate(model: &[u8], arena_bytes: u32, set: &[u8]) -> Result<(u16, u32), InspectError> {
    let parsed = Model::parse(model).map_err(|e| InspectError::Model(e.to_string()))?;
    let set = ValidationSet::parse(set).map_err(|e| InspectError::Set(e.to_string()))?;
    let mut arena = vec![0u8; arena_bytes as usize];
    let mut cache = vec![PreparedOp::EMPTY; parsed.operator_count()];
    let mut interp =
        Interpreter::with_cache(parsed, &mut arena, &mut cache).map_err(|e| InspectError::Model(e.to_string()))?;
    let start = HostClock(Instant::now());
    let report =
        validation::evaluate(&mut interp, &set, &start, None).map_err(|e| InspectError::Evaluation(e.to_string()))?;
    Ok((report.accuracy_permille, report.mean_latency_us))
}

struct HostClock(Instant);

impl Clock for HostClock {
    fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/runtime/fixtures/models/");
        std::fs::read(format!("{path}{name}")).unwrap_or_default()
    }

    #[test]
    fn a_fixture_model_is_accepted_with_its_ops_and_arena() {
        let facts = model(&fixture("digits_cnn_v1.tflite"));
        let facts = facts.ok().filter(|f| !f.ops.is_empty() && f.arena_bytes > 0);
        assert!(facts.is_some_and(|f| f.ops.iter().any(|o| o == "CONV_2D")));
    }

    #[test]
    fn truncated_or_foreign_bytes_are_refused_with_a_reason() {
        let bytes = fixture("digits_cnn_v1.tflite");
        for bad in [&bytes[..bytes.len() / 2], b"not a model at all".as_slice(), &[]] {
            assert!(matches!(model(bad), Err(InspectError::Model(m)) if !m.is_empty()));
        }
        assert!(matches!(set(&bytes), Err(InspectError::Set(_))), "a model is not a set");
    }
}
