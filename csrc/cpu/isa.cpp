// The chosen instruction-set level of the CPU kernels (isa.h).
#include "isa.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace lslu_kernels {
namespace {

std::atomic<int> chosen_isa{int(CpuIsa::Baseline)};

CpuIsa best_supported(CpuIsa cap) {
  CpuIsa best = CpuIsa::Baseline;
  for (CpuIsa isa : kCpuIsas) {
    if (int(isa) <= int(cap) && cpu_supports(isa)) best = isa;
  }
  return best;
}

}  // namespace

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Avx512: return "avx512";
    case CpuIsa::Avx2: return "avx2";
    case CpuIsa::Baseline: return "baseline";
  }
  return "unknown";
}

CpuIsa cpu_isa_named(const std::string& name) {
  for (CpuIsa isa : kCpuIsas) {
    if (name == cpu_isa_name(isa)) return isa;
  }
  throw std::invalid_argument("lslu_kernels: unknown CPU instruction-set level '" + name +
                              "' (known: avx512, avx2, baseline)");
}

int cpu_isa_vector_bits(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Avx512: return 512;
    case CpuIsa::Avx2: return 256;
    case CpuIsa::Baseline:
#if defined(__x86_64__) || defined(__aarch64__)
      return 128;
#else
      return 0;
#endif
  }
  return 0;
}

bool cpu_supports(CpuIsa isa) {
#if defined(LSLU_CPU_X86_LEVELS)
  __builtin_cpu_init();  // idempotent; libgcc's constructor may not have run yet for a static initializer
#endif
  switch (isa) {
    case CpuIsa::Baseline: return true;
#if defined(LSLU_CPU_X86_LEVELS)
    // The features of each x86-64 level, as libgcc reads them from cpuid (and the OS's
    // saving of the vector registers, from xgetbv).
    case CpuIsa::Avx2: return __builtin_cpu_supports("x86-64-v3");
    case CpuIsa::Avx512: return __builtin_cpu_supports("x86-64-v4");
#else
    case CpuIsa::Avx2:
    case CpuIsa::Avx512: return false;  // not an x86-64 build: only the baseline exists
#endif
  }
  return false;
}

CpuIsa cpu_isa() { return CpuIsa(chosen_isa.load(std::memory_order_relaxed)); }

void set_cpu_isa(CpuIsa isa) {
  if (!cpu_supports(isa)) {
    std::string supported;
    for (CpuIsa level : kCpuIsas) {
      if (cpu_supports(level)) supported += std::string(supported.empty() ? "" : ", ") + cpu_isa_name(level);
    }
    throw std::invalid_argument(std::string("lslu_kernels: this CPU (or build) has no ") + cpu_isa_name(isa) +
                                " level; it supports " + supported);
  }
  chosen_isa.store(int(isa), std::memory_order_relaxed);
}

void set_cpu_isa_from_environment() {
  const char* value = std::getenv("LSLU_KERNELS_CPU_ISA");
  const std::string name = value == nullptr ? "auto" : value;
  if (name.empty() || name == "auto") {
    set_cpu_isa(best_supported(CpuIsa::Avx512));
    return;
  }
  CpuIsa cap;
  try {
    cap = cpu_isa_named(name);
  } catch (const std::invalid_argument&) {
    throw std::invalid_argument("LSLU_KERNELS_CPU_ISA must be auto, avx512, avx2 or baseline, got '" + name + "'");
  }
  set_cpu_isa(best_supported(cap));
}

}  // namespace lslu_kernels
