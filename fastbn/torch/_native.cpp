// fastbn.torch's native training call: batch norm over dim 1 of a CPU tensor
// whose kernel view is C-contiguous: (N, C) rows (an (N, C) tensor, or NCHW /
// NCDHW in channels_last memory) or (N, C, inner) planes (contiguous NCHW),
// forward and backward in C++ with PyTorch's autograd, the kernels called
// through their C entry points (fastbn/kernels/cabi.py: the same machine code
// and bits as from Python).
//
// Python decides which calls come here (fastbn/torch/_native.py, _native_plan): a Plan
// holds, for one (shape, strides, dtype, threads), the kernels' view and split
// and the entry points' addresses. train() returns (None, 0) for arguments it
// does not take (parameters or running statistics of another dtype, strided,
// of another size), and the caller runs the Python path.
#include <torch/extension.h>

#include <cstdint>
#include <tuple>
#include <utility>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// fastbn/kernels/cabi.py's signatures: the kernel view's sizes d0, d1, d2 and
// the split (rows: rows per chunk, columns per block; planes: unused)
typedef void (*forward_fn)(void*, int64_t, int64_t, int64_t, void*, void*, int64_t, double,
                           void*, double*, int64_t, int64_t);
typedef void (*backward_fn)(void*, void*, int64_t, int64_t, int64_t, double*, double*, void*,
                            int64_t, void*, void*, int64_t, int64_t);
typedef int64_t (*hold_fn)(double*, double*, double*, double*, int64_t);
typedef void (*blend_fn)(void*, double*, void*, double*, int64_t, double, double);

struct Plan {
  int64_t forward, backward, hold, blend32, blend64;   // entry points (addresses)
  int64_t d0, d1, d2, features, chunk, forward_cols, backward_cols;   // view, split
  at::ScalarType dtype;
};

// A parameter vector the kernels take as it is: undefined, or (features,) of
// the input's dtype with unit stride.
bool plain_vector(const at::Tensor& v, const Plan& p) {
  return !v.defined() || (v.scalar_type() == p.dtype && v.dim() == 1 && v.numel() == p.features
                          && v.stride(0) == 1 && v.device().is_cpu());
}

bool running_vector(const at::Tensor& v, const Plan& p) {
  return v.dim() == 1 && v.numel() == p.features && v.stride(0) == 1 && v.device().is_cpu()
         && (v.scalar_type() == at::kFloat || v.scalar_type() == at::kDouble);
}

// The batch variance of the last forward on this thread, when its momentum-0
// hold held an entry (Python warns as its own path does); else undefined.
thread_local at::Tensor held_variance;

struct BatchNormFunction : public torch::autograd::Function<BatchNormFunction> {
  // Absent tensors come as empty optionals: autograd records an undefined
  // at::Tensor argument as an input and asks it for its device.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const std::optional<at::Tensor>& weight_opt,
                            const std::optional<at::Tensor>& bias_opt, const Plan* p,
                            const std::optional<at::Tensor>& running_mean_opt,
                            const std::optional<at::Tensor>& running_var_opt, double momentum,
                            double eps) {
    const at::Tensor weight = weight_opt.value_or(at::Tensor());
    const at::Tensor bias = bias_opt.value_or(at::Tensor());
    const at::Tensor running_mean = running_mean_opt.value_or(at::Tensor());
    const at::Tensor running_var = running_var_opt.value_or(at::Tensor());
    const int64_t f = p->features;
    at::Tensor y = at::empty_like(input);         // input is dense: the same strides
    at::Tensor stats = at::empty({3, f}, input.options().dtype(at::kDouble));
    at::Tensor gamma = weight.defined() ? weight : at::ones({f}, input.options());
    at::Tensor beta = bias.defined() ? bias : at::zeros({f}, input.options());
    double* s = stats.data_ptr<double>();
    reinterpret_cast<forward_fn>(p->forward)(input.data_ptr(), p->d0, p->d1, p->d2,
                                             gamma.data_ptr(), beta.data_ptr(), f, eps,
                                             y.data_ptr(), s, p->chunk, p->forward_cols);
    // the batch's statistics for the running update: the mean, and the variance
    // held within float64's range (as the Python path's momentum-0 update)
    at::Tensor batch = at::empty({2, f}, stats.options());
    double* b = batch.data_ptr<double>();
    if (reinterpret_cast<hold_fn>(p->hold)(s, s + f, b, b + f, f) > 0)
      held_variance = stats[1];
    if (running_mean.defined()) {
      const double count = static_cast<double>(input.numel() / f);
      auto blend = reinterpret_cast<blend_fn>(
          running_mean.scalar_type() == at::kFloat ? p->blend32 : p->blend64);
      blend(running_mean.data_ptr(), s, running_var.data_ptr(), b + f, f, momentum,
            count / (count - 1.0));
    }
    ctx->save_for_backward({input, weight, stats});
    // the backward's part of the plan, by value (the Plan may go before the graph)
    ctx->saved_data["plan"] = std::vector<int64_t>{p->backward, p->d0, p->d1, p->d2, f,
                                                   p->chunk, p->backward_cols};
    ctx->saved_data["bias"] = bias.defined();
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &weight = saved[1], &stats = saved[2];
    const bool has_bias = ctx->saved_data["bias"].toBool();
    at::Tensor dy = grads[0];
    variable_list out(8);
    if (!dy.defined()) return out;
    const auto plan = ctx->saved_data["plan"].toIntVector();
    const int64_t f = plan[4];
    if (at::GradMode::is_enabled()) {
      // create_graph=True: the registered backward operator, whose own autograd
      // formula refuses a second derivative with fastbn's message
      static auto op = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fastbn::batch_norm_backward", "")
                           .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                               const at::Tensor&, const at::Tensor&,
                               const std::optional<at::Tensor>&, const at::Tensor&,
                               const at::Tensor&, bool)>();
      std::optional<at::Tensor> w;
      if (weight.defined()) w = weight;
      auto res = op.call(dy, input, w, stats[0], stats[2], true);
      out[0] = std::get<0>(res);
      if (weight.defined()) out[1] = std::get<1>(res);
      if (has_bias) out[2] = std::get<2>(res);
      return out;
    }
    if (!dy.strides().equals(input.strides())) {  // e.g. expanded, or another layout
      at::Tensor dense = at::empty_like(input);
      dense.copy_(dy);
      dy = dense;
    }
    at::Tensor dx = at::empty_like(input);
    at::Tensor both = at::empty({2, f}, input.options());
    at::Tensor gamma = weight.defined() ? weight : at::ones({f}, input.options());
    const double* s = stats.data_ptr<double>();
    reinterpret_cast<backward_fn>(plan[0])(
        dy.data_ptr(), input.data_ptr(), plan[1], plan[2], plan[3], const_cast<double*>(s),
        const_cast<double*>(s + 2 * f), gamma.data_ptr(), f, dx.data_ptr(), both.data_ptr(),
        plan[5], plan[6]);
    out[0] = dx;
    if (weight.defined()) out[1] = both[0];
    if (has_bias) out[2] = both[1];
    return out;
  }
};

// (output, the batch variance when the hold held an entry, else None), or
// (None, None) when the call is not one this path takes.
std::tuple<at::Tensor, at::Tensor> train(const Plan& p, const at::Tensor& input,
                                      const std::optional<at::Tensor>& weight,
                                      const std::optional<at::Tensor>& bias,
                                      const std::optional<at::Tensor>& running_mean,
                                      const std::optional<at::Tensor>& running_var,
                                      double momentum, double eps) {
  const at::Tensor none;
  if (input.scalar_type() != p.dtype || !input.device().is_cpu()
      || input.numel() != p.d0 * p.d1 * p.d2 || !plain_vector(weight.value_or(none), p)
      || !plain_vector(bias.value_or(none), p))
    return {none, none};
  if (running_mean.has_value() != running_var.has_value()) return {none, none};
  if (running_mean.has_value()
      && !(running_vector(*running_mean, p) && running_vector(*running_var, p)
           && running_mean->scalar_type() == running_var->scalar_type()))
    return {none, none};
  held_variance = none;
  at::Tensor y = BatchNormFunction::apply(input, weight, bias, &p, running_mean, running_var,
                                          momentum, eps);
  at::Tensor held;
  std::swap(held, held_variance);         // (the thread keeps no tensor alive)
  return {y, held};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  py::class_<Plan>(m, "Plan")
      .def(py::init([](int64_t forward, int64_t backward, int64_t hold, int64_t blend32,
                       int64_t blend64, int64_t d0, int64_t d1, int64_t d2, int64_t features,
                       int64_t chunk, int64_t forward_cols, int64_t backward_cols,
                       bool float64) {
        return Plan{forward, backward, hold, blend32, blend64, d0, d1, d2, features, chunk,
                    forward_cols, backward_cols, float64 ? at::kDouble : at::kFloat};
      }),
           py::kw_only(), py::arg("forward"), py::arg("backward"), py::arg("hold"),
           py::arg("blend32"), py::arg("blend64"), py::arg("d0"), py::arg("d1"), py::arg("d2"),
           py::arg("features"), py::arg("chunk"), py::arg("forward_cols"),
           py::arg("backward_cols"), py::arg("float64"));
  m.def("train", &train, py::call_guard<py::gil_scoped_release>());
}
