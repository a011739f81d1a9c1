// Train a small MLP with CoCD through the C++ API (cocd::Optimizer).
//
// The same problem as train_mlp_c.c: a fixed teacher network labels synthetic data and
// a student learns it from loss values alone. Here the hidden and output layers are
// two param groups with their own learning rates, the objective is a lambda, and the
// learning rate decays between epochs through set_group().
//   train_mlp_cpp [epochs]     exits 1 unless the loss went down
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cocd/optimizer.hpp"

namespace {

constexpr int D = 4, H = 8, N = 256, kBatch = 32;

struct Mlp {
  std::vector<float> w1 = std::vector<float>(H * D), b1 = std::vector<float>(H),
                     w2 = std::vector<float>(H), b2 = std::vector<float>(1);

  Mlp(uint32_t seed, float scale) {
    uint32_t s = seed;
    for (float& w : w1) w = scale * uniform(s);
    for (float& b : b1) b = 0.5f * scale * uniform(s);
    for (float& w : w2) w = scale * uniform(s);
  }

  // A fixed linear congruential generator: the same data on every platform.
  static float uniform(uint32_t& state) {
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(state >> 8) / 16777216.0f * 2.0f - 1.0f;
  }

  float operator()(const float* x) const {
    float out = b2[0];
    for (int j = 0; j < H; ++j) {
      float a = b1[j];
      for (int k = 0; k < D; ++k) a += w1[j * D + k] * x[k];
      out += w2[j] * std::tanh(a);
    }
    return out;
  }

  double mse(const float* x, const float* y, int count) const {
    double total = 0.0;
    for (int i = 0; i < count; ++i) {
      const double e = static_cast<double>((*this)(x + i * D)) - y[i];
      total += e * e;
    }
    return total / count;
  }
};

}  // namespace

int main(int argc, char** argv) {
  const int epochs = argc > 1 ? std::atoi(argv[1]) : 40;
  const Mlp teacher(7u, 1.0f);
  Mlp student(12345u, 0.3f);
  std::vector<float> x(N * D), y(N);
  uint32_t s = 99u;
  for (float& v : x) v = Mlp::uniform(s);
  for (int i = 0; i < N; ++i) y[i] = teacher(&x[i * D]);

  cocd::GroupOptions hidden, output;
  hidden.lr = 0.02;
  hidden.eps = 1e-2;
  hidden.momentum = 0.95;
  output = hidden;
  output.lr = 0.03;
  cocd::Options options;
  options.compute_budget = 8;  // B: coordinates refreshed per step (16 evaluations)
  cocd::Optimizer opt(
      {
          cocd::ParamSpan(student.w1.data(), H * D, 0),  // group 0: hidden layer
          cocd::ParamSpan(student.b1.data(), H, 0),
          cocd::ParamSpan(student.w2.data(), H, 1),  // group 1: output layer
          cocd::ParamSpan(student.b2.data(), 1, 1),
      },
      {hidden, output}, options);
  std::printf("CoCD (C++ API): %lld parameters, optimizer memory %zu bytes\n",
              static_cast<long long>(opt.size()), opt.memory_bytes());

  const double first = student.mse(x.data(), y.data(), N);
  double last = first;
  std::printf("epoch %3d  loss %.6f\n", 0, first);
  for (int epoch = 1; epoch <= epochs; ++epoch) {
    for (int start = 0; start < N; start += kBatch) {
      const float* bx = &x[start * D];
      const float* by = &y[start];
      opt.step([&] { return student.mse(bx, by, kBatch); });  // fixed mini-batch per step
    }
    last = student.mse(x.data(), y.data(), N);
    std::printf("epoch %3d  loss %.6f\n", epoch, last);
    for (int g = 0; g < opt.num_groups(); ++g) {  // a learning-rate schedule
      cocd::GroupOptions hp = opt.group(g);
      hp.lr *= 0.98;
      opt.set_group(g, hp);
    }
  }
  return last < first ? 0 : 1;
}
