/* The factory model (agent/runtime/fixtures/models/digits_cnn_v1.tflite), embedded in the
   image as it would be flashed into slot A at the factory. The Makefile puts its folder on
   the assembler's include path. */
    .section .rodata.factory_model, "a"
    .balign 16
    .global factory_model
factory_model:
    .incbin "digits_cnn_v1.tflite"
factory_model_end:

    .balign 4
    .global factory_model_size
factory_model_size:
    .word factory_model_end - factory_model
