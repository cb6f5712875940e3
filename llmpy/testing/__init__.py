"""What the tests (tests/, tests/gpu/) and the measuring scripts (dev/bench.py, dev/cuda/) share:
error measures (compare), bf16 inputs and transfers on the GPU (bf16), CUDA-event timing
(timing) and the PyTorch GPT-2 reference (torch_gpt2). Each module imports only what it needs:
compare needs NumPy alone, bf16 and timing CuPy, torch_gpt2 PyTorch."""
