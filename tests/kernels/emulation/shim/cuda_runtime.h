// CPU emulation stand-in for <cuda_runtime.h>: everything lives in kernel_emu.h.
#pragma once
#include "kernel_emu.h"
