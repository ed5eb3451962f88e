// Instruction-set levels of the CPU kernels: every op's work functions are compiled once
// per level, and the level chosen at run time picks which of them runs.
//
// Levels: avx512 (x86-64-v4), avx2 (x86-64-v3: AVX2 + FMA), baseline (the compiler's
// target: SSE2 on x86-64, the only level elsewhere). The chosen level is the best one the
// CPU supports, capped by the environment variable LSLU_KERNELS_CPU_ISA (auto, avx512,
// avx2, baseline) when the extension loads; set_cpu_isa changes it later, so that one
// machine can run the kernels on each of its levels. The AVX levels fuse multiply-adds
// (GCC contracts a * b + c in C++), so results may differ in the last bits from one level
// to another; at one level, results are reproducible (the summation orders are fixed).
//
// How a kernel uses it: the body of a piece of work is a struct with a static run(...)
// whose every callee is always-inline (LSLU_CPU_INLINE), so that each of run_at_level's
// per-level instances compiles all of it for its instruction set. OpenMP regions stay
// outside (GCC outlines them before inlining, with the enclosing function's target):
//
//   const CpuIsa isa = cpu_isa();   // once per call, before the parallel region
//   #pragma omp parallel for
//   for (...) run_at_level<Work>(isa, args...);
#pragma once

#include <string>
#include <utility>

namespace lslu_kernels {

#define LSLU_CPU_INLINE inline __attribute__((always_inline))

enum class CpuIsa { Baseline = 0, Avx2 = 1, Avx512 = 2 };

// The levels this build has code for, lowest first, and their names.
constexpr CpuIsa kCpuIsas[] = {CpuIsa::Baseline, CpuIsa::Avx2, CpuIsa::Avx512};
const char* cpu_isa_name(CpuIsa isa);
// Throws std::invalid_argument for a name other than avx512, avx2 and baseline.
CpuIsa cpu_isa_named(const std::string& name);

// The widest vectors the compiler uses in `isa`'s code, in bits: 512 (avx512: GCC's generic
// tuning would prefer 256, LSLU_CPU_TARGET_AVX512 asks for 512; clang's may stay at 256), 256 (avx2), 128 (baseline:
// SSE2 on x86-64, NEON on AArch64; 0 where the baseline has no vector unit we know of).
int cpu_isa_vector_bits(CpuIsa isa);
// Whether the CPU (and this build) runs `isa`'s code.
bool cpu_supports(CpuIsa isa);
// The level the kernels run at now.
CpuIsa cpu_isa();
// Throws std::invalid_argument for a level cpu_supports denies.
void set_cpu_isa(CpuIsa isa);
// Sets the level from LSLU_KERNELS_CPU_ISA (unset or auto: the best supported; a level:
// the best supported up to it). Throws std::invalid_argument for an unknown value.
void set_cpu_isa_from_environment();

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LSLU_CPU_X86_LEVELS 1
// prefer-vector-width=512: full-width AVX-512 loops (same operations per element, so the same
// results as 256-bit ones; GCC's generic x86-64-v4 tuning stays at 256 bits).
#if defined(__clang__)
#define LSLU_CPU_TARGET_AVX512 __attribute__((target("arch=x86-64-v4")))
#else
#define LSLU_CPU_TARGET_AVX512 __attribute__((target("arch=x86-64-v4,prefer-vector-width=512")))
#endif
#define LSLU_CPU_TARGET_AVX2 __attribute__((target("arch=x86-64-v3")))
#endif

// Work::run(args...) compiled for one level each.
template <typename Work, typename... Args>
void run_baseline(Args&&... args) {
  Work::run(std::forward<Args>(args)...);
}
#if defined(LSLU_CPU_X86_LEVELS)
template <typename Work, typename... Args>
LSLU_CPU_TARGET_AVX2 void run_avx2(Args&&... args) {
  Work::run(std::forward<Args>(args)...);
}
template <typename Work, typename... Args>
LSLU_CPU_TARGET_AVX512 void run_avx512(Args&&... args) {
  Work::run(std::forward<Args>(args)...);
}
#endif

// Work::run(args...) in the version compiled for `isa`.
template <typename Work, typename... Args>
void run_at_level(CpuIsa isa, Args&&... args) {
#if defined(LSLU_CPU_X86_LEVELS)
  if (isa == CpuIsa::Avx512) return run_avx512<Work>(std::forward<Args>(args)...);
  if (isa == CpuIsa::Avx2) return run_avx2<Work>(std::forward<Args>(args)...);
#endif
  run_baseline<Work>(std::forward<Args>(args)...);
}

}  // namespace lslu_kernels
