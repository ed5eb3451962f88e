// From the runtime dtype and stage count of a call to the template instance that serves it.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include "launch.h"
#include "lslu.h"

namespace lslu_kernels {

// Calls Kernel::run<STAGES, scalar_t>(args, extra...) for args.stages and args.dtype.
template <typename Kernel, typename scalar_t, typename... Extra>
void dispatch_lslu_stages(const LsluArgs& args, Extra&&... extra) {
  static_assert(kLsluMaxStages == 8, "one case per stage count below");
  switch (args.stages) {
    case 1: return Kernel::template run<1, scalar_t>(args, std::forward<Extra>(extra)...);
    case 2: return Kernel::template run<2, scalar_t>(args, std::forward<Extra>(extra)...);
    case 3: return Kernel::template run<3, scalar_t>(args, std::forward<Extra>(extra)...);
    case 4: return Kernel::template run<4, scalar_t>(args, std::forward<Extra>(extra)...);
    case 5: return Kernel::template run<5, scalar_t>(args, std::forward<Extra>(extra)...);
    case 6: return Kernel::template run<6, scalar_t>(args, std::forward<Extra>(extra)...);
    case 7: return Kernel::template run<7, scalar_t>(args, std::forward<Extra>(extra)...);
    case 8: return Kernel::template run<8, scalar_t>(args, std::forward<Extra>(extra)...);
  }
  throw std::invalid_argument("lslu: the C++ backends serve 1 to " + std::to_string(kLsluMaxStages) +
                              " stages, got " + std::to_string(args.stages));
}

template <typename Kernel, typename... Extra>
void dispatch_lslu(const LsluArgs& args, Extra&&... extra) {
  switch (args.dtype) {
    case DType::Float16: return dispatch_lslu_stages<Kernel, Half>(args, std::forward<Extra>(extra)...);
    case DType::BFloat16: return dispatch_lslu_stages<Kernel, BFloat16>(args, std::forward<Extra>(extra)...);
    case DType::Float32: return dispatch_lslu_stages<Kernel, float>(args, std::forward<Extra>(extra)...);
    case DType::Float64: return dispatch_lslu_stages<Kernel, double>(args, std::forward<Extra>(extra)...);
  }
  throw std::invalid_argument("lslu: unknown dtype");
}

}  // namespace lslu_kernels
