// fovea-loss: the streamed CLIP and SigLIP losses from the command line.
//
//   fovea-loss --kind clip|siglip --image I.npy --text T.npy --scale S [--bias B] [--grad-image GI.npy]
//              [--grad-text GT.npy] [--threads N] [--tile T] [--json]
//     Loss and gradients of (B, D) embeddings; .npy float32 or float64, computed in that precision (float64 if
//     either file is). Prints loss, grad_scale and grad_bias; writes the embedding gradients when asked.
//     SigLIP's bias defaults to 0.
//   fovea-loss bench --kind clip|siglip --batch B --dim D [--threads N] [--tile T] [--repeat R] [--sgemm] [--json]
//     Times forward + backward on random float32 unit vectors and prints the best of R runs' seconds, GFLOP/s
//     (2 B^2 D per B x B x D product: 4 for CLIP, 3 for SigLIP) and the peak resident memory, also net of the
//     inputs and the gradients. --sgemm also measures fovea::gemm's SGEMM rate on the same product shape and threads,
//     just before and after, for the ratio.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "fovea/io/npy.hpp"
#include "fovea/loss.hpp"

using namespace fovea;

namespace {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char* const kUsage =
    "usage: fovea-loss --kind clip|siglip --image I.npy --text T.npy --scale S [--bias B]\n"
    "                  [--grad-image GI.npy] [--grad-text GT.npy] [--threads N] [--tile T] [--json]\n"
    "       fovea-loss bench --kind clip|siglip --batch B --dim D [--threads N] [--tile T] [--repeat R] [--sgemm]\n"
    "                        [--json]\n";

struct Args {
  bool bench = false, json = false, sgemm = false;
  std::map<std::string, std::string> values;

  bool has(const std::string& k) const { return values.count(k) != 0; }
  const std::string& get(const std::string& k) const {
    auto it = values.find(k);
    if (it == values.end()) throw UsageError("missing --" + k);
    return it->second;
  }
  double number(const std::string& k) const {
    const std::string& s = get(k);
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0') throw UsageError("--" + k + " expects a number, got '" + s + "'");
    return v;
  }
  long whole(const std::string& k, long lo) const {
    const double v = number(k);
    if (v != double(long(v)) || v < double(lo)) throw UsageError("--" + k + " expects a whole number >= " + std::to_string(lo));
    return long(v);
  }
};

Args parse(int argc, char** argv) {
  static const char* const kValued[] = {"kind", "image", "text", "scale", "bias", "grad-image", "grad-text",
                                        "threads", "tile", "batch", "dim", "repeat"};
  Args a;
  int i = 1;
  if (argc > 1 && std::strcmp(argv[1], "bench") == 0) {
    a.bench = true;
    i = 2;
  }
  for (; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--json" || flag == "--sgemm") {
      (flag == "--json" ? a.json : a.sgemm) = true;
      continue;
    }
    if (flag == "-h" || flag == "--help") throw UsageError("");
    bool known = false;
    for (const char* k : kValued) known |= flag == std::string("--") + k;
    if (!known) throw UsageError("unknown argument '" + flag + "'");
    if (i + 1 >= argc) throw UsageError(flag + " needs a value");
    a.values[flag.substr(2)] = argv[++i];
  }
  const std::string kind = a.get("kind");
  if (kind != "clip" && kind != "siglip") throw UsageError("--kind must be clip or siglip, got '" + kind + "'");
  if (kind == "clip" && a.has("bias")) throw UsageError("--bias applies to --kind siglip only");
  if (a.sgemm && !a.bench) throw UsageError("--sgemm is a bench option");
  static const std::vector<std::string> kComputeOnly = {"image", "text", "scale", "grad-image", "grad-text"};
  static const std::vector<std::string> kBenchOnly = {"batch", "dim", "repeat"};
  for (const std::string& k : a.bench ? kComputeOnly : kBenchOnly)
    if (a.has(k)) throw UsageError("--" + k + (a.bench ? " is not a bench option" : " is a bench option"));
  return a;
}

// Resident-set figures of this process from /proc/self/status, in MiB (VmHWM: the peak).
double status_mib(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::strtod(line.c_str() + std::strlen(key) + 1, nullptr) / 1024.0;
  return 0;
}

// Whether a .npy holds float64, from its header alone (a version 1 header fits in the first 64 KiB).
bool stored_as_double(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) detail::throw_format("cannot open '", path, "'");
  std::string head(65546, '\0');
  f.read(&head[0], std::streamsize(head.size()));
  head.resize(std::size_t(f.gcount()));
  const auto h = detail::parse_npy_header(head.data(), head.size(), "'" + path + "'");
  return h.descr == "<f8" || h.descr == "=f8";
}

template <class T>
LossResult<T> run(const Args& a, const Tensor<T, 2>& image, const Tensor<T, 2>& text, T scale, T bias,
                  const Context& ctx) {
  LossOptions opt;
  if (a.has("tile")) opt.tile(a.whole("tile", 0));
  return a.get("kind") == "clip" ? clip_loss(image, text, scale, opt, ctx) : siglip_loss(image, text, scale, bias, opt, ctx);
}

template <class T>
int compute(const Args& a, const Context& ctx) {
  const auto image = read_npy<T, 2>(a.get("image"));
  const auto text = read_npy<T, 2>(a.get("text"));
  const T scale = T(a.number("scale"));
  const T bias = a.has("bias") ? T(a.number("bias")) : T(0);
  const LossResult<T> r = run(a, image, text, scale, bias, ctx);
  if (a.has("grad-image")) write_npy(a.get("grad-image"), r.grad_image);
  if (a.has("grad-text")) write_npy(a.get("grad-text"), r.grad_text);
  if (a.json) {
    nlohmann::json j = {{"loss", double(r.loss)}, {"grad_scale", double(r.grad_scale)}, {"grad_bias", double(r.grad_bias)}};
    std::cout << j.dump() << "\n";
  } else {
    std::printf("loss %.9g\ngrad_scale %.9g\ngrad_bias %.9g\n", double(r.loss), double(r.grad_scale), double(r.grad_bias));
  }
  return 0;
}

// Rows of i.i.d. normals scaled to unit length; each row from its own seed, so threads cannot change the data.
Tensor<float, 2> unit_rows(Index B, Index D, unsigned seed, const Context& ctx) {
  Tensor<float, 2> x(B, D);
  ctx.parallel_range(B, 256, [&](Index b, Index e) {
    for (Index i = b; i < e; ++i) {
      std::mt19937 rng(seed * 2654435761u + unsigned(i));
      std::normal_distribution<float> nd;
      double n = 0;
      for (Index d = 0; d < D; ++d) n += double(x(i, d) = nd(rng)) * x(i, d);
      const float inv = float(1 / std::sqrt(n));
      for (Index d = 0; d < D; ++d) x(i, d) *= inv;
    }
  });
  return x;
}

// The SGEMM rate of fovea::gemm (the kernel the loss's products run) on the loss's own product shape,
// (n, D) x (D, n) with n = min(B, 4096), on the same threads: the yardstick for the loss's GFLOP/s. Best of 3.
double sgemm_gflops(const Tensor<float, 2>& image, const Tensor<float, 2>& text, const Context& ctx) {
  const Index n = std::min<Index>(image.dimension(0), 4096), D = image.dimension(1);
  std::vector<float> c(n * n);
  double best = 1e300;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    gemm<float>(false, true, n, n, D, 1.f, image.data(), D, text.data(), D, 0.f, c.data(), n, ctx);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 2.0 * double(n) * double(n) * double(D) / best / 1e9;
}

int bench(const Args& a, const Context& ctx) {
  const Index B = a.whole("batch", 1), D = a.whole("dim", 1);
  const long repeat = a.has("repeat") ? a.whole("repeat", 1) : 1;
  const bool clip = a.get("kind") == "clip";
  const double baseline = status_mib("VmRSS:");
  const auto image = unit_rows(B, D, 1, ctx), text = unit_rows(B, D, 2, ctx);
  // On a shared machine the yardstick is only comparable when taken around the run itself: before and after,
  // averaged. Its output buffer must not count in the loss's peak, hence the VmHWM reset (Linux >= 4.0).
  double sgemm = 0;
  if (a.sgemm) {
    sgemm = sgemm_gflops(image, text, ctx);
    std::ofstream("/proc/self/clear_refs") << "5";
  }
  // CLIP's usual learned scale (1 / 0.07 at init, 100 at the clamp); SigLIP's init (10, -10).
  const float scale = clip ? 100.f : 10.f, bias = clip ? 0.f : -10.f;
  double best = 1e300, loss = 0;
  for (long r = 0; r < repeat; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    const LossResult<float> res = run(a, image, text, scale, bias, ctx);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
    loss = res.loss;
  }
  const double flops = (clip ? 4.0 : 3.0) * 2.0 * double(B) * double(B) * double(D);
  const double peak = status_mib("VmHWM:");
  if (a.sgemm) sgemm = (sgemm + sgemm_gflops(image, text, ctx)) / 2;
  const double tensors = 4.0 * double(B) * double(D) * sizeof(float) / (1024.0 * 1024.0);  // inputs + gradients
  const double extra = peak - baseline - tensors;
  const Index tile = a.has("tile") && a.whole("tile", 0) ? std::min<Index>(a.whole("tile", 0), B) : detail::auto_loss_tile(B);
  if (a.json) {
    nlohmann::json j = {{"kind", a.get("kind")}, {"batch", B},          {"dim", D},
                        {"threads", ctx.num_threads()},
                        {"tile", tile},          {"seconds", best},     {"gflops", flops / best / 1e9},
                        {"peak_rss_mib", peak},  {"baseline_rss_mib", baseline},
                        {"inputs_and_grads_mib", tensors}, {"extra_mib", extra}, {"loss", loss}};
    if (a.sgemm) j["sgemm_gflops"] = sgemm;
    std::cout << j.dump() << "\n";
  } else {
    std::printf("%s B=%ld D=%ld threads=%d tile=%ld: %.4f s, %.1f GFLOP/s, peak RSS %.1f MiB (%.1f MiB beyond the "
                "%.1f MiB process baseline and %.1f MiB of inputs and gradients), loss %.6g\n",
                a.get("kind").c_str(), long(B), long(D), ctx.num_threads(), long(tile), best, flops / best / 1e9, peak,
                extra, baseline, tensors, loss);
    if (a.sgemm) std::printf("SGEMM on the same product shape and threads: %.1f GFLOP/s (the loss reached %.0f%%)\n",
                             sgemm, 100 * flops / best / 1e9 / sgemm);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    const Context ctx(a.has("threads") ? int(a.whole("threads", 1)) : Context::default_num_threads());
#ifdef __GLIBC__
    // After the first Context, which fixes glibc's thresholds high (32 MiB) for the GEMMs' packing buffers:
    // here blocks of 4 MiB and more are mapped and unmapped instead, so that the SGEMM yardstick's packing
    // buffers (8 MiB per thread) do not linger in the threads' heaps into the loss's peak memory, while a
    // tile's GEMM buffers (under 1 MiB) still stay in the heaps.
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
    if (a.bench) return bench(a, ctx);
    const bool as_double = stored_as_double(a.get("image")) || stored_as_double(a.get("text"));
    return as_double ? compute<double>(a, ctx) : compute<float>(a, ctx);
  } catch (const UsageError& e) {
    if (*e.what()) std::cerr << "fovea-loss: " << e.what() << "\n";
    std::cerr << kUsage;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "fovea-loss: " << e.what() << "\n";
    return 1;
  }
}
