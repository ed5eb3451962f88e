// Python bindings of one C++ backend: compiled once into lslu_kernels._C_cpu and, with
// LSLU_CUDA defined, once into lslu_kernels._C_cuda.
//
// Tensors cross as raw addresses (tensor.data_ptr()) with their sizes; the Python side
// (lslu_kernels/cpp_kernels/) allocates and checks them. Every op has the same three
// functions, made from its row of the table of entry points (kernel_abi.h):
//
//   <op>_forward(x, y, params, dtype, outer, channels, inner, size, <exec>, force_int64=False)
//   <op>_backward(grad_output, x, grad_input, params, partial, dtype, outer, channels, inner,
//                 size, partials, <exec>, force_int64=False)
//   <op>_backward_partials(*, dtype, outer, channels, inner, size, multiprocessors)
//
// The kernel calls take their arguments by position as well as by name: the host calls them by
// position on every call, where pybind11 spends over a microsecond matching keyword arguments.
//
// with <exec> `stream` (a cudaStream_t) in _C_cuda and `threads` (OpenMP threads) in _C_cpu.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "decomposition.h"
#include "grid.h"
#include "kernel_abi.h"
#if !defined(LSLU_CUDA)
#include "cpu/isa.h"
#include "trig.h"
#endif

namespace py = pybind11;
using namespace lslu_kernels;

namespace {

#if defined(LSLU_CUDA)
using EntryPoints = CudaEntryPoints;
constexpr const char* kExec = "stream";
void run(void (*kernel)(const KernelArgs&, void*), const KernelArgs& args, uintptr_t stream) {
  kernel(args, reinterpret_cast<void*>(stream));
}
int64_t partials_of(const EntryPoints& e, const KernelArgs& sizes, int multiprocessors) {
  return e.backward_partials(sizes, multiprocessors);
}
const std::pair<const char*, const EntryPoints*> kOps[] = {{"lslu", &lslu_cuda}, {"pvlu", &pvlu_cuda},
                                                           {"pwlu", &pwlu_cuda}};
#else
using EntryPoints = CpuEntryPoints;
constexpr const char* kExec = "threads";
void run(void (*kernel)(const KernelArgs&, int), const KernelArgs& args, uintptr_t threads) {
  kernel(args, int(threads));
}
int64_t partials_of(const EntryPoints& e, const KernelArgs& sizes, int /*multiprocessors*/) {
  return e.backward_partials(sizes);
}
const std::pair<const char*, const EntryPoints*> kOps[] = {{"lslu", &lslu_cpu}, {"pvlu", &pvlu_cpu},
                                                           {"pwlu", &pwlu_cpu}};

// For tests only (tests/test_trig.py): trig.h's accurate sin and cos, which the CUDA kernels
// use, over a float buffer, compiled for each instruction-set level like the kernels.
struct TrigSincos {
  static LSLU_CPU_INLINE void run(const float* v, float* s, float* c, int64_t n) {
    for (int64_t i = 0; i < n; ++i) trig_sincos(v[i], s[i], c[i]);
  }
};
struct TrigSin {
  static LSLU_CPU_INLINE void run(const float* v, float* s, int64_t n) {
    for (int64_t i = 0; i < n; ++i) s[i] = trig_sin(v[i]);
  }
};
#endif

DType dtype_named(const std::string& name) {
  if (name == "float16") return DType::Float16;
  if (name == "bfloat16") return DType::BFloat16;
  if (name == "float32") return DType::Float32;
  if (name == "float64") return DType::Float64;
  throw std::invalid_argument("lslu_kernels: unsupported dtype " + name);
}

// The one place where KernelArgs is filled.
KernelArgs kernel_args(const std::string& dtype, int64_t outer, int64_t channels, int64_t inner, int size,
                       const std::vector<uintptr_t>& params, const std::vector<uintptr_t>& partial,
                       int64_t partials, bool force_int64) {
  if (params.size() > size_t(kMaxParams) || partial.size() > size_t(kMaxPartialBuffers)) {
    throw std::invalid_argument("lslu_kernels: at most " + std::to_string(kMaxParams) + " parameters and " +
                                std::to_string(kMaxPartialBuffers) + " partial buffers");
  }
  KernelArgs a{};
  a.dtype = dtype_named(dtype);
  a.outer = outer;
  a.channels = channels;
  a.inner = inner;
  a.size = size;
  for (size_t i = 0; i < params.size(); ++i) a.params[i] = reinterpret_cast<const void*>(params[i]);
  for (size_t i = 0; i < partial.size(); ++i) a.partial[i] = reinterpret_cast<void*>(partial[i]);
  a.partials = partials;
  a.force_int64 = force_int64;
  return a;
}

void define_op(py::module_& m, const std::string& op, const EntryPoints& e) {
  m.def(
      (op + "_forward").c_str(),
      [&e](uintptr_t x, uintptr_t y, const std::vector<uintptr_t>& params, const std::string& dtype, int64_t outer,
           int64_t channels, int64_t inner, int size, uintptr_t exec, bool force_int64) {
        KernelArgs a = kernel_args(dtype, outer, channels, inner, size, params, {}, 0, force_int64);
        a.x = reinterpret_cast<const void*>(x);
        a.y = reinterpret_cast<void*>(y);
        py::gil_scoped_release no_gil;
        run(e.forward, a, exec);
      },
      py::arg("x"), py::arg("y"), py::arg("params"), py::arg("dtype"), py::arg("outer"),
      py::arg("channels"), py::arg("inner"), py::arg("size"), py::arg(kExec), py::arg("force_int64") = false);
  m.def(
      (op + "_backward").c_str(),
      [&e](uintptr_t grad_output, uintptr_t x, uintptr_t grad_input, const std::vector<uintptr_t>& params,
           const std::vector<uintptr_t>& partial, const std::string& dtype, int64_t outer, int64_t channels,
           int64_t inner, int size, int64_t partials, uintptr_t exec, bool force_int64) {
        KernelArgs a = kernel_args(dtype, outer, channels, inner, size, params, partial, partials, force_int64);
        a.grad_output = reinterpret_cast<const void*>(grad_output);
        a.x = reinterpret_cast<const void*>(x);
        a.grad_input = reinterpret_cast<void*>(grad_input);
        py::gil_scoped_release no_gil;
        run(e.backward, a, exec);
      },
      py::arg("grad_output"), py::arg("x"), py::arg("grad_input"), py::arg("params"), py::arg("partial"),
      py::arg("dtype"), py::arg("outer"), py::arg("channels"), py::arg("inner"), py::arg("size"),
      py::arg("partials"), py::arg(kExec), py::arg("force_int64") = false);
  m.def(
      (op + "_backward_partials").c_str(),
      [&e](const std::string& dtype, int64_t outer, int64_t channels, int64_t inner, int size, int multiprocessors) {
        return partials_of(e, kernel_args(dtype, outer, channels, inner, size, {}, {}, 0, false), multiprocessors);
      },
      py::kw_only(), py::arg("dtype"), py::arg("outer"), py::arg("channels"), py::arg("inner"), py::arg("size"),
      py::arg("multiprocessors"));
}

// Test only: every (block, thread) of a CUDA launch walked as the kernels walk it
// (decomposition.h). Returns how often each element is visited and how often each
// (part, channel) partial entry is written, for a grid of blocks_per_column blocks per column
// (with sums whose block takes at most max_columns threads * channels per thread).
template <int PACK, typename index_t>
py::tuple walk_counts(bool rows, int64_t outer, int64_t channels, int64_t inner, int64_t blocks_per_column,
                      int64_t max_columns) {
  const BlockShape block = block_shape(rows, PACK, outer, channels, inner, max_columns);
  const int64_t blocks = grid_columns(rows, PACK, channels, block) * blocks_per_column;
  const WalkSizes<index_t> sizes{index_t(outer), index_t(channels), index_t(inner), index_t(blocks_per_column)};
  std::vector<int> visits(size_t(outer * channels * inner), 0), writes(size_t(blocks_per_column * channels), 0);
  int64_t out_of_range = 0;
  // As the kernels: every thread walks its packs; the block (its first thread, here) writes its
  // partial entries.
  const auto walk = [&](auto w, bool first_thread) {
    if (first_thread) {
      for (int64_t c = w.first_written(); c < w.first_written() + w.written(block.x); ++c) {
        ++writes[size_t(int64_t(w.part) * channels + c)];
      }
    }
    if (!w.active()) return;
    for (index_t first = w.begin; first < w.end; first += kUnroll * w.step) {
      for (int u = 0; u < kUnroll; ++u) {
        const index_t k = w.item(first, u);
        if (k >= w.end) continue;
        const int64_t offset = int64_t(w.offset(k));
        for (int j = 0; j < PACK; ++j) {
          if (offset + j < 0 || offset + j >= int64_t(visits.size())) {
            ++out_of_range;
          } else {
            ++visits[size_t(offset + j)];
          }
        }
      }
    }
  };
  for (unsigned b = 0; b < unsigned(blocks); ++b) {
    for (unsigned ty = 0; ty < unsigned(block.y); ++ty) {
      for (unsigned tx = 0; tx < unsigned(block.x); ++tx) {
        const bool first_thread = tx == 0 && ty == 0;
        if (rows) {
          walk(RowsWalk<PACK, index_t>(sizes, b, tx, ty, block.x, block.y), first_thread);
        } else {
          walk(ChannelWalk<PACK, index_t>(sizes, b, tx, ty, block.x, block.y), first_thread);
        }
      }
    }
  }
  return py::make_tuple(visits, writes, out_of_range, py::make_tuple(block.x, block.y), blocks);
}

template <typename index_t>
py::tuple walk_counts_for(int pack, bool rows, int64_t outer, int64_t channels, int64_t inner, int64_t per_column,
                          int64_t max_columns) {
  switch (pack) {
    case 1: return walk_counts<1, index_t>(rows, outer, channels, inner, per_column, max_columns);
    case 2: return walk_counts<2, index_t>(rows, outer, channels, inner, per_column, max_columns);
    case 4: return walk_counts<4, index_t>(rows, outer, channels, inner, per_column, max_columns);
    case 8: return walk_counts<8, index_t>(rows, outer, channels, inner, per_column, max_columns);
  }
  throw std::invalid_argument("decomposition_visits: pack must be 1, 2, 4 or 8");
}

#if !defined(LSLU_CUDA)
// The fused full layer (kernel_abi.h, DwconvArgs), CPU only:
//   lslu_dwconv_forward(x, y, theta, omega, weight, bias, *, dtype, batch, channels, height, width, stages,
//                       channels_last, threads)                                  (bias 0: none)
//   lslu_dwconv_backward(grad_output, x, grad_input, theta, omega, weight, partial, *, <the same sizes>,
//                        partials, threads)         (partial: grad_theta, grad_omega, grad_weight, grad_bias)
//   lslu_dwconv_backward_partials(*, <the same sizes>)
DwconvArgs dwconv_args(const std::string& dtype, int64_t batch, int64_t channels, int64_t height, int64_t width,
                       int stages, bool channels_last, uintptr_t theta, uintptr_t omega, uintptr_t weight) {
  if (stages < 1 || stages > kLsluMaxStages) {
    throw std::invalid_argument("lslu_dwconv: the cpu backend serves 1 to " + std::to_string(kLsluMaxStages) +
                                " stages, got " + std::to_string(stages));
  }
  // Aggregate order (kernel_abi.h); the tensors' pointers and the partials are filled by the caller.
  DwconvArgs a{dtype_named(dtype), batch, channels, height, width, stages, channels_last,
               reinterpret_cast<const void*>(theta), reinterpret_cast<const void*>(omega),
               reinterpret_cast<const void*>(weight)};
  return a;
}

void define_lslu_dwconv(py::module_& m) {
  const CpuDwconvEntryPoints& e = lslu_dwconv_cpu;
  m.def(
      "lslu_dwconv_forward",
      [&e](uintptr_t x, uintptr_t y, uintptr_t theta, uintptr_t omega, uintptr_t weight, uintptr_t bias,
           const std::string& dtype, int64_t batch, int64_t channels, int64_t height, int64_t width, int stages,
           bool channels_last, int threads) {
        DwconvArgs a = dwconv_args(dtype, batch, channels, height, width, stages, channels_last, theta, omega, weight);
        a.bias = reinterpret_cast<const void*>(bias);
        a.x = reinterpret_cast<const void*>(x);
        a.y = reinterpret_cast<void*>(y);
        py::gil_scoped_release no_gil;
        e.forward(a, threads);
      },
      py::arg("x"), py::arg("y"), py::arg("theta"), py::arg("omega"), py::arg("weight"), py::arg("bias"),
      py::kw_only(), py::arg("dtype"), py::arg("batch"), py::arg("channels"), py::arg("height"), py::arg("width"),
      py::arg("stages"), py::arg("channels_last"), py::arg("threads"));
  m.def(
      "lslu_dwconv_backward",
      [&e](uintptr_t grad_output, uintptr_t x, uintptr_t grad_input, uintptr_t theta, uintptr_t omega,
           uintptr_t weight, const std::vector<uintptr_t>& partial, const std::string& dtype, int64_t batch,
           int64_t channels, int64_t height, int64_t width, int stages, bool channels_last, int64_t partials,
           int threads) {
        if (partial.size() != 4) throw std::invalid_argument("lslu_dwconv_backward: 4 partial buffers");
        DwconvArgs a = dwconv_args(dtype, batch, channels, height, width, stages, channels_last, theta, omega, weight);
        a.grad_output = reinterpret_cast<const void*>(grad_output);
        a.x = reinterpret_cast<const void*>(x);
        a.grad_input = reinterpret_cast<void*>(grad_input);
        a.grad_theta_partial = reinterpret_cast<void*>(partial[0]);
        a.grad_omega_partial = reinterpret_cast<void*>(partial[1]);
        a.grad_weight_partial = reinterpret_cast<void*>(partial[2]);
        a.grad_bias_partial = reinterpret_cast<void*>(partial[3]);
        a.partials = partials;
        py::gil_scoped_release no_gil;
        e.backward(a, threads);
      },
      py::arg("grad_output"), py::arg("x"), py::arg("grad_input"), py::arg("theta"), py::arg("omega"),
      py::arg("weight"), py::arg("partial"), py::kw_only(), py::arg("dtype"), py::arg("batch"), py::arg("channels"),
      py::arg("height"), py::arg("width"), py::arg("stages"), py::arg("channels_last"), py::arg("partials"),
      py::arg("threads"));
  m.def(
      "lslu_dwconv_backward_partials",
      [&e](const std::string& dtype, int64_t batch, int64_t channels, int64_t height, int64_t width, int stages,
           bool channels_last) {
        return e.backward_partials(
            dwconv_args(dtype, batch, channels, height, width, stages, channels_last, 0, 0, 0));
      },
      py::kw_only(), py::arg("dtype"), py::arg("batch"), py::arg("channels"), py::arg("height"), py::arg("width"),
      py::arg("stages"), py::arg("channels_last"));
}
#endif

}  // namespace

#if defined(LSLU_CUDA)
PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "lslu-kernels: hand-written CUDA kernels (raw-pointer interface)";
  m.def(
      "device_support",
      [](int device) {
        const CudaDeviceSupport s = cuda_device_support(device);
        py::dict d;
        d["driver_version"] = s.driver_version;
        d["runtime_version"] = s.runtime_version;
        d["compute_capability"] = s.compute_capability;
        d["image_ok"] = s.image_ok;
        d["error"] = s.error;
        return d;
      },
      py::arg("device"),
      "What this extension can do on CUDA device `device`: driver_version, runtime_version, compute_capability "
      "(major * 10 + minor), image_ok (a kernel's attributes could be read there) and error (the first CUDA "
      "error string, \"\" when none). Never raises for a missing or old driver.");
#else
PYBIND11_MODULE(_C_cpu, m) {
  m.doc() = "lslu-kernels: hand-written C++ CPU kernels (raw-pointer interface)";
  // The instruction-set level of the kernels (csrc/cpu/isa.h): LSLU_KERNELS_CPU_ISA caps it here, at load.
  set_cpu_isa_from_environment();
  m.def(
      "set_isa", [](const std::string& name) { set_cpu_isa(cpu_isa_named(name)); }, py::arg("name"),
      "Runs the kernels at level `name` (avx512, avx2, baseline) from now on; ValueError if the CPU lacks it.");
  m.def(
      "isa", [] { return std::string(cpu_isa_name(cpu_isa())); }, "The level the kernels run at now.");
  m.def(
      "vector_bits", [] { return cpu_isa_vector_bits(cpu_isa()); },
      "The widest vectors, in bits, of the code at the level the kernels run at now (0: none known).");
  m.def(
      "supported_isas",
      [] {
        py::list names;
        for (CpuIsa isa : kCpuIsas) {
          if (cpu_supports(isa)) names.append(cpu_isa_name(isa));
        }
        return names;
      },
      "The levels this CPU and build run, lowest first.");
  m.def(
      "decomposition_visits",
      [](bool rows, int pack, bool int64, int64_t outer, int64_t channels, int64_t inner, int64_t blocks_per_column,
         int64_t max_columns) {
        return int64 ? walk_counts_for<int64_t>(pack, rows, outer, channels, inner, blocks_per_column, max_columns)
                     : walk_counts_for<int32_t>(pack, rows, outer, channels, inner, blocks_per_column, max_columns);
      },
      py::arg("rows"), py::arg("pack"), py::arg("int64"), py::arg("outer"), py::arg("channels"), py::arg("inner"),
      py::arg("blocks_per_column"), py::arg("max_columns") = kUnboundedColumns,
      "Test only: (element visits, partial-entry writes, out-of-range offsets, block (x, y), blocks) of the CUDA "
      "engine's decomposition (csrc/decomposition.h) enumerated on the host.");
  m.def(
      "trig_sincos",
      [](uintptr_t v, uintptr_t s, uintptr_t c, int64_t n) {
        py::gil_scoped_release no_gil;
        run_at_level<TrigSincos>(cpu_isa(), reinterpret_cast<const float*>(v), reinterpret_cast<float*>(s),
                                 reinterpret_cast<float*>(c), n);
      },
      py::arg("v"), py::arg("s"), py::arg("c"), py::arg("n"),
      "Test only: s[i], c[i] = sin(v[i]), cos(v[i]) by trig.h's trig_sincos (float buffers of n), at the current level.");
  m.def(
      "trig_sin",
      [](uintptr_t v, uintptr_t s, int64_t n) {
        py::gil_scoped_release no_gil;
        run_at_level<TrigSin>(cpu_isa(), reinterpret_cast<const float*>(v), reinterpret_cast<float*>(s), n);
      },
      py::arg("v"), py::arg("s"), py::arg("n"),
      "Test only: s[i] = sin(v[i]) by trig.h's trig_sin (float buffers of n), at the current level.");
  define_lslu_dwconv(m);
#endif
  // The CUDA grids' wave arithmetic (grid.h), in both extensions: plain host code.
  m.def("wave_blocks_per_column", &grid::blocks_per_column, py::arg("outer"), py::arg("channels"), py::arg("inner"),
        py::arg("resident_blocks"), py::arg("multiprocessors"));
  for (const auto& [op, entry] : kOps) define_op(m, op, *entry);
  m.attr("max_lslu_stages") = kLsluMaxStages;
  m.attr("max_pwlu_intervals") = kPwluMaxIntervals;
}
