// CPU emulation stand-in for <cuda_fp16.h>: everything lives in kernel_emu.h.
#pragma once
#include "kernel_emu.h"
