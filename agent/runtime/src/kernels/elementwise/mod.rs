//! Element-wise and shape operators (ADD, SUB, MUL, LOGISTIC, TANH, LEAKY_RELU,
//! HARD_SWISH, PAD, CONCATENATION, MEAN): being written.
