// kernels/cuda/cuda_weights.cu compiled by the host compiler against the fake CUDA runtime (README.md).
#include "kernels/cuda/cuda_weights.cu"
