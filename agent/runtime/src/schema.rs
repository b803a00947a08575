//! The parts of TFLite's `schema.fbs` that mota-runtime reads: field ids (the order of
//! fields in each table, which is what the wire format keys on), enum values and
//! builtin operator codes. Written by hand from `tensorflow/compiler/mlir/lite/schema/schema.fbs`
//! (TFLite schema version 3); only fields the runtime uses are named.

/// `Model` table fields.
pub mod model {
    pub const VERSION: usize = 0;
    pub const OPERATOR_CODES: usize = 1;
    pub const SUBGRAPHS: usize = 2;
    pub const BUFFERS: usize = 4;
}

/// `OperatorCode` table fields.
pub mod operator_code {
    pub const DEPRECATED_BUILTIN_CODE: usize = 0;
    pub const BUILTIN_CODE: usize = 3;
}

/// `SubGraph` table fields.
pub mod subgraph {
    pub const TENSORS: usize = 0;
    pub const INPUTS: usize = 1;
    pub const OUTPUTS: usize = 2;
    pub const OPERATORS: usize = 3;
}

/// `Tensor` table fields.
pub mod tensor {
    pub const SHAPE: usize = 0;
    pub const TYPE: usize = 1;
    pub const BUFFER: usize = 2;
    pub const NAME: usize = 3;
    pub const QUANTIZATION: usize = 4;
    pub const IS_VARIABLE: usize = 5;
    pub const SPARSITY: usize = 6;
}

/// `QuantizationParameters` table fields.
pub mod quantization {
    pub const SCALE: usize = 2;
    pub const ZERO_POINT: usize = 3;
    pub const QUANTIZED_DIMENSION: usize = 6; // `details` is a union: two slots
}

/// `Operator` table fields.
pub mod operator {
    pub const OPCODE_INDEX: usize = 0;
    pub const INPUTS: usize = 1;
    pub const OUTPUTS: usize = 2;
    pub const BUILTIN_OPTIONS_TYPE: usize = 3;
    pub const BUILTIN_OPTIONS: usize = 4;
}

/// `Buffer` table fields.
pub mod buffer {
    pub const DATA: usize = 0;
    pub const OFFSET: usize = 1;
}

/// `TensorType` values.
pub mod tensor_type {
    pub const FLOAT32: i8 = 0;
    pub const INT32: i8 = 2;
    pub const UINT8: i8 = 3;
    pub const INT64: i8 = 4;
    pub const INT16: i8 = 7;
    pub const INT8: i8 = 9;
}

/// `BuiltinOptions` union tags.
pub mod options {
    pub const CONV_2D: u8 = 1;
    pub const DEPTHWISE_CONV_2D: u8 = 2;
    pub const POOL_2D: u8 = 5;
    pub const FULLY_CONNECTED: u8 = 8;
    pub const SOFTMAX: u8 = 9;
    pub const CONCATENATION: u8 = 10;
    pub const ADD: u8 = 11;
    pub const MUL: u8 = 21;
    pub const REDUCER: u8 = 27;
    pub const SUB: u8 = 28;
    pub const GATHER: u8 = 23;
    pub const SQUEEZE: u8 = 30;
    pub const STRIDED_SLICE: u8 = 32;
    pub const TRANSPOSE_CONV: u8 = 49;
    pub const PACK: u8 = 59;
    pub const UNPACK: u8 = 64;
    pub const RESIZE_NEAREST_NEIGHBOR: u8 = 74;
    pub const LEAKY_RELU: u8 = 75;
}

/// Fields of the options tables the runtime reads.
pub mod option_fields {
    /// `Conv2DOptions`, `DepthwiseConv2DOptions`, `Pool2DOptions`: `padding`.
    pub const PADDING: usize = 0;
    /// ... `stride_w`.
    pub const STRIDE_W: usize = 1;
    /// ... `stride_h`.
    pub const STRIDE_H: usize = 2;
    /// `Conv2DOptions.fused_activation_function`.
    pub const CONV_ACTIVATION: usize = 3;
    /// `Conv2DOptions.dilation_w_factor`.
    pub const CONV_DILATION_W: usize = 4;
    /// `Conv2DOptions.dilation_h_factor`.
    pub const CONV_DILATION_H: usize = 5;
    /// `DepthwiseConv2DOptions.depth_multiplier`.
    pub const DW_DEPTH_MULTIPLIER: usize = 3;
    /// `DepthwiseConv2DOptions.fused_activation_function`.
    pub const DW_ACTIVATION: usize = 4;
    /// `DepthwiseConv2DOptions.dilation_w_factor`.
    pub const DW_DILATION_W: usize = 5;
    /// `DepthwiseConv2DOptions.dilation_h_factor`.
    pub const DW_DILATION_H: usize = 6;
    /// `Pool2DOptions.filter_width`.
    pub const POOL_FILTER_W: usize = 3;
    /// `Pool2DOptions.filter_height`.
    pub const POOL_FILTER_H: usize = 4;
    /// `Pool2DOptions.fused_activation_function`.
    pub const POOL_ACTIVATION: usize = 5;
    /// `FullyConnectedOptions.fused_activation_function`.
    pub const FC_ACTIVATION: usize = 0;
    /// `FullyConnectedOptions.weights_format`.
    pub const FC_WEIGHTS_FORMAT: usize = 1;
    /// `SoftmaxOptions.beta`.
    pub const SOFTMAX_BETA: usize = 0;
    /// `ConcatenationOptions.axis`.
    pub const CONCAT_AXIS: usize = 0;
    /// `ConcatenationOptions.fused_activation_function`.
    pub const CONCAT_ACTIVATION: usize = 1;
    /// `AddOptions`/`SubOptions`/`MulOptions.fused_activation_function`.
    pub const ARITH_ACTIVATION: usize = 0;
    /// `ReducerOptions.keep_dims`.
    pub const REDUCER_KEEP_DIMS: usize = 0;
    /// `LeakyReluOptions.alpha`.
    pub const LEAKY_RELU_ALPHA: usize = 0;
    /// `TransposeConvOptions.fused_activation_function` (padding and strides as conv).
    pub const TRANSPOSE_CONV_ACTIVATION: usize = 3;
    /// `SqueezeOptions.squeeze_dims`.
    pub const SQUEEZE_DIMS: usize = 0;
    /// `StridedSliceOptions.begin_mask`.
    pub const SLICE_BEGIN_MASK: usize = 0;
    /// `StridedSliceOptions.end_mask`.
    pub const SLICE_END_MASK: usize = 1;
    /// `StridedSliceOptions.ellipsis_mask`.
    pub const SLICE_ELLIPSIS_MASK: usize = 2;
    /// `StridedSliceOptions.new_axis_mask`.
    pub const SLICE_NEW_AXIS_MASK: usize = 3;
    /// `StridedSliceOptions.shrink_axis_mask`.
    pub const SLICE_SHRINK_AXIS_MASK: usize = 4;
    /// `StridedSliceOptions.offset`.
    pub const SLICE_OFFSET: usize = 5;
    /// `GatherOptions.axis`.
    pub const GATHER_AXIS: usize = 0;
    /// `GatherOptions.batch_dims`.
    pub const GATHER_BATCH_DIMS: usize = 1;
    /// `PackOptions.values_count` and `UnpackOptions.num`.
    pub const PACK_COUNT: usize = 0;
    /// `PackOptions.axis` and `UnpackOptions.axis`.
    pub const PACK_AXIS: usize = 1;
    /// `ResizeNearestNeighborOptions.align_corners`.
    pub const RESIZE_ALIGN_CORNERS: usize = 0;
    /// `ResizeNearestNeighborOptions.half_pixel_centers`.
    pub const RESIZE_HALF_PIXEL_CENTERS: usize = 1;
}

/// `BuiltinOperator` codes of the supported operators.
pub mod builtin {
    pub const ADD: i32 = 0;
    pub const AVERAGE_POOL_2D: i32 = 1;
    pub const CONCATENATION: i32 = 2;
    pub const CONV_2D: i32 = 3;
    pub const DEPTHWISE_CONV_2D: i32 = 4;
    pub const DEQUANTIZE: i32 = 6;
    pub const FULLY_CONNECTED: i32 = 9;
    pub const LOGISTIC: i32 = 14;
    pub const MAX_POOL_2D: i32 = 17;
    pub const MUL: i32 = 18;
    pub const RELU: i32 = 19;
    pub const RELU_N1_TO_1: i32 = 20;
    pub const RELU6: i32 = 21;
    pub const RESHAPE: i32 = 22;
    pub const SOFTMAX: i32 = 25;
    pub const TANH: i32 = 28;
    pub const PAD: i32 = 34;
    pub const GATHER: i32 = 36;
    pub const TRANSPOSE: i32 = 39;
    pub const MEAN: i32 = 40;
    pub const SUB: i32 = 41;
    pub const SQUEEZE: i32 = 43;
    pub const STRIDED_SLICE: i32 = 45;
    pub const SPLIT: i32 = 49;
    pub const PRELU: i32 = 54;
    pub const MAXIMUM: i32 = 55;
    pub const ARG_MAX: i32 = 56;
    pub const MINIMUM: i32 = 57;
    pub const TRANSPOSE_CONV: i32 = 67;
    pub const EXPAND_DIMS: i32 = 70;
    pub const SHAPE: i32 = 77;
    pub const ARG_MIN: i32 = 79;
    pub const PACK: i32 = 83;
    pub const UNPACK: i32 = 88;
    pub const RESIZE_NEAREST_NEIGHBOR: i32 = 97;
    pub const LEAKY_RELU: i32 = 98;
    pub const SPLIT_V: i32 = 102;
    pub const QUANTIZE: i32 = 114;
    pub const HARD_SWISH: i32 = 117;
}
