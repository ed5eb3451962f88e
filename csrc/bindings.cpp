// Python bindings of one C++ backend: compiled once into lslu_kernels._C_cpu and,
// with LSLU_CUDA defined, once into lslu_kernels._C_cuda.
//
// Tensors cross as raw addresses (tensor.data_ptr()) with their sizes; the
// Python side (lslu_kernels/cpp_kernels/) allocates and checks them.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "grid.h"
#include "launch.h"
#include "lslu.h"
#if !defined(LSLU_CUDA)
#include "cpu/isa.h"
#include "trig.h"
#endif

namespace py = pybind11;
using namespace lslu_kernels;

namespace {

DType dtype_named(const std::string& name) {
  if (name == "float16") return DType::Float16;
  if (name == "bfloat16") return DType::BFloat16;
  if (name == "float32") return DType::Float32;
  if (name == "float64") return DType::Float64;
  throw std::invalid_argument("lslu_kernels: unsupported dtype " + name);
}

const void* address(uintptr_t a) { return reinterpret_cast<const void*>(a); }
void* mutable_address(uintptr_t a) { return reinterpret_cast<void*>(a); }

LsluArgs lslu_args(const std::string& dtype, int64_t outer, int64_t channels, int64_t inner, int stages,
                   uintptr_t theta, uintptr_t omega) {
  LsluArgs args{};
  args.dtype = dtype_named(dtype);
  args.outer = outer;
  args.channels = channels;
  args.inner = inner;
  args.stages = stages;
  args.theta = address(theta);
  args.omega = address(omega);
  return args;
}

#if defined(LSLU_CUDA)
// `launch` is the cudaStream_t to launch on.
void forward(const LsluArgs& args, uintptr_t launch) { lslu_forward_cuda(args, mutable_address(launch)); }
void backward(const LsluArgs& args, uintptr_t launch) { lslu_backward_cuda(args, mutable_address(launch)); }
#else
// `launch` is the number of threads.
void forward(const LsluArgs& args, uintptr_t launch) { lslu_forward_cpu(args, int(launch)); }
void backward(const LsluArgs& args, uintptr_t launch) { lslu_backward_cpu(args, int(launch)); }

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

}  // namespace

#if defined(LSLU_CUDA)
PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "lslu-kernels: hand-written CUDA kernels (raw-pointer interface)";
  // Asks the current device (the occupancy of the backward kernel that the sizes select).
  m.def(
      "lslu_backward_partials",
      [](const std::string& dtype, int64_t outer, int64_t channels, int64_t inner, int stages, int multiprocessors) {
        return lslu_backward_partials_cuda(dtype_named(dtype), stages, outer, channels, inner, multiprocessors);
      },
      py::arg("dtype"), py::arg("outer"), py::arg("channels"), py::arg("inner"), py::arg("stages"),
      py::arg("multiprocessors"));
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
  m.def(
      "lslu_backward_partials",
      [](const std::string& /*dtype*/, int64_t outer, int64_t channels, int64_t inner, int /*stages*/,
         int /*multiprocessors*/) { return lslu_backward_partials_cpu(outer, channels, inner); },
      py::arg("dtype"), py::arg("outer"), py::arg("channels"), py::arg("inner"), py::arg("stages"),
      py::arg("multiprocessors"));

  // The instruction-set level of the kernels (csrc/cpu/isa.h): LSLU_KERNELS_CPU_ISA caps it here, at load.
  set_cpu_isa_from_environment();
  m.def(
      "set_isa", [](const std::string& name) { set_cpu_isa(cpu_isa_named(name)); }, py::arg("name"),
      "Runs the kernels at level `name` (avx512, avx2, baseline) from now on; ValueError if the CPU lacks it.");
  m.def(
      "isa", [] { return std::string(cpu_isa_name(cpu_isa())); }, "The level the kernels run at now.");
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
      "trig_sincos",
      [](uintptr_t v, uintptr_t s, uintptr_t c, int64_t n) {
        py::gil_scoped_release no_gil;
        run_at_level<TrigSincos>(cpu_isa(), static_cast<const float*>(address(v)),
                                 static_cast<float*>(mutable_address(s)), static_cast<float*>(mutable_address(c)), n);
      },
      py::arg("v"), py::arg("s"), py::arg("c"), py::arg("n"),
      "For tests: s[i], c[i] = sin(v[i]), cos(v[i]) by trig.h's trig_sincos (float buffers of n), at the current level.");
  m.def(
      "trig_sin",
      [](uintptr_t v, uintptr_t s, int64_t n) {
        py::gil_scoped_release no_gil;
        run_at_level<TrigSin>(cpu_isa(), static_cast<const float*>(address(v)), static_cast<float*>(mutable_address(s)),
                              n);
      },
      py::arg("v"), py::arg("s"), py::arg("n"),
      "For tests: s[i] = sin(v[i]) by trig.h's trig_sin (float buffers of n), at the current level.");
#endif
  // The CUDA grids' wave arithmetic (grid.h), in both extensions: plain host code.
  m.def("wave_blocks_per_column", &grid::blocks_per_column, py::arg("outer"), py::arg("channels"), py::arg("inner"),
        py::arg("resident_blocks"), py::arg("multiprocessors"));
  m.def(
      "lslu_forward",
      [](uintptr_t x, uintptr_t y, uintptr_t theta, uintptr_t omega, const std::string& dtype, int64_t outer,
         int64_t channels, int64_t inner, int stages, uintptr_t launch, bool force_int64) {
        LsluArgs args = lslu_args(dtype, outer, channels, inner, stages, theta, omega);
        args.force_int64 = force_int64;
        args.x = address(x);
        args.y = mutable_address(y);
        py::gil_scoped_release no_gil;
        forward(args, launch);
      },
      py::arg("x"), py::arg("y"), py::arg("theta"), py::arg("omega"), py::kw_only(), py::arg("dtype"),
      py::arg("outer"), py::arg("channels"), py::arg("inner"), py::arg("stages"),
      py::arg("launch"), py::arg("force_int64") = false);
  m.def(
      "lslu_backward",
      [](uintptr_t grad_output, uintptr_t x, uintptr_t grad_input, uintptr_t theta, uintptr_t omega,
         uintptr_t dtheta_partial, uintptr_t domega_partial, const std::string& dtype, int64_t outer, int64_t channels,
         int64_t inner, int stages, int64_t partials, uintptr_t launch, bool force_int64) {
        LsluArgs args = lslu_args(dtype, outer, channels, inner, stages, theta, omega);
        args.force_int64 = force_int64;
        args.grad_output = address(grad_output);
        args.x = address(x);
        args.grad_input = mutable_address(grad_input);
        args.dtheta_partial = mutable_address(dtheta_partial);
        args.domega_partial = mutable_address(domega_partial);
        args.partials = partials;
        py::gil_scoped_release no_gil;
        backward(args, launch);
      },
      py::arg("grad_output"), py::arg("x"), py::arg("grad_input"), py::arg("theta"), py::arg("omega"),
      py::arg("dtheta_partial"), py::arg("domega_partial"), py::kw_only(), py::arg("dtype"), py::arg("outer"),
      py::arg("channels"), py::arg("inner"), py::arg("stages"), py::arg("partials"),
      py::arg("launch"), py::arg("force_int64") = false);
  m.attr("max_lslu_stages") = kLsluMaxStages;

  // ---- pvlu ----
  m.def(
      "pvlu_backward_partials",
      [](const std::string& dtype, int64_t outer, int64_t channels, int64_t inner, int multiprocessors) {
#if defined(LSLU_CUDA)
        return pvlu_backward_partials_cuda(dtype_named(dtype), outer, channels, inner, multiprocessors);
#else
        (void)dtype, (void)multiprocessors;
        return pvlu_backward_partials_cpu(outer, channels, inner);
#endif
      },
      py::arg("dtype"), py::arg("outer"), py::arg("channels"), py::arg("inner"), py::arg("multiprocessors"));
  m.def(
      "pvlu_forward",
      [](uintptr_t x, uintptr_t y, uintptr_t alpha, uintptr_t beta, const std::string& dtype, int64_t outer,
         int64_t channels, int64_t inner, uintptr_t launch, bool force_int64) {
        PvluArgs args{};
        args.force_int64 = force_int64;
        args.dtype = dtype_named(dtype);
        args.outer = outer;
        args.channels = channels;
        args.inner = inner;
        args.alpha = address(alpha);
        args.beta = address(beta);
        args.x = address(x);
        args.y = mutable_address(y);
        py::gil_scoped_release no_gil;
#if defined(LSLU_CUDA)
        pvlu_forward_cuda(args, mutable_address(launch));
#else
        pvlu_forward_cpu(args, int(launch));
#endif
      },
      py::arg("x"), py::arg("y"), py::arg("alpha"), py::arg("beta"), py::kw_only(), py::arg("dtype"),
      py::arg("outer"), py::arg("channels"), py::arg("inner"), py::arg("launch"), py::arg("force_int64") = false);
  m.def(
      "pvlu_backward",
      [](uintptr_t grad_output, uintptr_t x, uintptr_t grad_input, uintptr_t alpha, uintptr_t beta,
         uintptr_t dalpha_partial, uintptr_t dbeta_partial, const std::string& dtype, int64_t outer,
         int64_t channels, int64_t inner, int64_t partials, uintptr_t launch, bool force_int64) {
        PvluArgs args{};
        args.force_int64 = force_int64;
        args.dtype = dtype_named(dtype);
        args.outer = outer;
        args.channels = channels;
        args.inner = inner;
        args.alpha = address(alpha);
        args.beta = address(beta);
        args.grad_output = address(grad_output);
        args.x = address(x);
        args.grad_input = mutable_address(grad_input);
        args.dalpha_partial = mutable_address(dalpha_partial);
        args.dbeta_partial = mutable_address(dbeta_partial);
        args.partials = partials;
        py::gil_scoped_release no_gil;
#if defined(LSLU_CUDA)
        pvlu_backward_cuda(args, mutable_address(launch));
#else
        pvlu_backward_cpu(args, int(launch));
#endif
      },
      py::arg("grad_output"), py::arg("x"), py::arg("grad_input"), py::arg("alpha"), py::arg("beta"),
      py::arg("dalpha_partial"), py::arg("dbeta_partial"), py::kw_only(), py::arg("dtype"), py::arg("outer"),
      py::arg("channels"), py::arg("inner"), py::arg("partials"), py::arg("launch"), py::arg("force_int64") = false);

  // ---- pwlu ----
  m.def(
      "pwlu_backward_partials",
      [](const std::string& dtype, int64_t outer, int64_t channels, int64_t inner, int intervals,
         int multiprocessors) -> int64_t {
#if defined(LSLU_CUDA)
        return pwlu_backward_partials_cuda(dtype_named(dtype), outer, channels, inner, intervals, multiprocessors);
#else
        (void)dtype, (void)intervals, (void)multiprocessors;
        return pwlu_backward_partials_cpu(outer, channels, inner);
#endif
      },
      py::arg("dtype"), py::arg("outer"), py::arg("channels"), py::arg("inner"), py::arg("intervals"),
      py::arg("multiprocessors"));
  m.def(
      "pwlu_forward",
      [](uintptr_t x, uintptr_t y, uintptr_t points, uintptr_t left_bound, uintptr_t right_bound,
         uintptr_t left_slope, uintptr_t right_slope, const std::string& dtype, int64_t outer, int64_t channels,
         int64_t inner, int intervals, uintptr_t launch, bool force_int64) {
        PwluArgs args{};
        args.force_int64 = force_int64;
        args.dtype = dtype_named(dtype);
        args.outer = outer;
        args.channels = channels;
        args.inner = inner;
        args.intervals = intervals;
        args.points = address(points);
        args.left_bound = address(left_bound);
        args.right_bound = address(right_bound);
        args.left_slope = address(left_slope);
        args.right_slope = address(right_slope);
        args.x = address(x);
        args.y = mutable_address(y);
        py::gil_scoped_release no_gil;
#if defined(LSLU_CUDA)
        pwlu_forward_cuda(args, mutable_address(launch));
#else
        pwlu_forward_cpu(args, int(launch));
#endif
      },
      py::arg("x"), py::arg("y"), py::arg("points"), py::arg("left_bound"), py::arg("right_bound"),
      py::arg("left_slope"), py::arg("right_slope"), py::kw_only(), py::arg("dtype"), py::arg("outer"),
      py::arg("channels"), py::arg("inner"), py::arg("intervals"), py::arg("launch"), py::arg("force_int64") = false);
  m.def(
      "pwlu_backward",
      [](uintptr_t grad_output, uintptr_t x, uintptr_t grad_input, uintptr_t points, uintptr_t left_bound,
         uintptr_t right_bound, uintptr_t left_slope, uintptr_t right_slope, uintptr_t dpoints_partial,
         uintptr_t dscalars_partial, const std::string& dtype, int64_t outer, int64_t channels, int64_t inner,
         int intervals, int64_t partials, uintptr_t launch, bool force_int64) {
        PwluArgs args{};
        args.force_int64 = force_int64;
        args.dtype = dtype_named(dtype);
        args.outer = outer;
        args.channels = channels;
        args.inner = inner;
        args.intervals = intervals;
        args.points = address(points);
        args.left_bound = address(left_bound);
        args.right_bound = address(right_bound);
        args.left_slope = address(left_slope);
        args.right_slope = address(right_slope);
        args.grad_output = address(grad_output);
        args.x = address(x);
        args.grad_input = mutable_address(grad_input);
        args.dpoints_partial = mutable_address(dpoints_partial);
        args.dscalars_partial = mutable_address(dscalars_partial);
        args.partials = partials;
        py::gil_scoped_release no_gil;
#if defined(LSLU_CUDA)
        pwlu_backward_cuda(args, mutable_address(launch));
#else
        pwlu_backward_cpu(args, int(launch));
#endif
      },
      py::arg("grad_output"), py::arg("x"), py::arg("grad_input"), py::arg("points"), py::arg("left_bound"),
      py::arg("right_bound"), py::arg("left_slope"), py::arg("right_slope"), py::arg("dpoints_partial"),
      py::arg("dscalars_partial"), py::kw_only(), py::arg("dtype"), py::arg("outer"), py::arg("channels"),
      py::arg("inner"), py::arg("intervals"), py::arg("partials"), py::arg("launch"), py::arg("force_int64") = false);
  m.attr("max_pwlu_intervals") = kPwluMaxIntervals;
}
