//! Element-wise and shape operators (ADD, SUB, MUL, LOGISTIC, TANH, LEAKY_RELU,
//! HARD_SWISH, PAD, CONCATENATION, MEAN, RELU, RELU6, MAXIMUM, MINIMUM, PRELU) on int8
//! tensors.
//!
//! Each follows the int8 path of the corresponding TFLM micro kernel, Prepare included:
//! where TFLM derives a multiplier in float rather than double, or truncates to int16,
//! so does this code, because those details decide the last bit of the output.

pub mod activations;
pub mod add_sub;
mod broadcast;
mod common;
pub mod concat;

pub mod mean;
pub mod minmax;
pub mod mul;
pub mod pad;
pub mod prelu;
pub mod relu;
#[cfg(test)]
pub(crate) mod testutil;

pub use activations::{
    HardSwishParams, LeakyReluParams, LogisticParams, TanhParams, hard_swish, leaky_relu, logistic, tanh,
};
pub use add_sub::{AddSubParams, add_sub};
pub use concat::{check_concat_quant, concatenation};
pub use mean::{MeanParams, mean};
pub use minmax::{maximum, minimum};
pub use mul::{MulParams, mul};
pub use pad::{check_pad_constant_quant, check_pad_quant, pad};
pub use prelu::{PreluParams, prelu};
pub use relu::{Relu6Params, ReluParams, relu, relu6};
