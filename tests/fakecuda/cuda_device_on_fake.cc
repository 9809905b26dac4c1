// kernels/cuda/cuda_device.cu compiled by the host compiler against the fake CUDA runtime (README.md).
#include "kernels/cuda/cuda_device.cu"
