// LSLU on CUDA (SPEC.md 1.1 and 3): the engine (engine.cuh) with LsluOp (lslu.h), one
// instance per dtype and stage count.
#include "cuda/engine.cuh"
#include "lslu.h"

namespace lslu_kernels {
namespace {

struct LsluVisit {
  template <typename Body>
  static void visit(const KernelArgs& a, Body&& body) {
    LSLU_DTYPE_SWITCH(a.dtype, scalar_t, [&] {
      LSLU_STAGES_SWITCH(a.size, STAGES, [&] { body(LsluOp<scalar_t, STAGES>(a)); });
    });
  }
};

}  // namespace

const CudaEntryPoints lslu_cuda = cuda_engine::EntryPoints<LsluVisit>::table();

}  // namespace lslu_kernels
