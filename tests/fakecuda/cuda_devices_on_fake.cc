// kernels/cuda/cuda_devices.cu compiled by the host compiler against the fake CUDA runtime (README.md).
#include "kernels/cuda/cuda_devices.cu"
