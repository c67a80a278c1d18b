// Loading a 100 MB safetensors file (warm page cache): zero-copy views against converting copies.
// Each iteration opens the file (validating the header) and reads one 100 MB tensor; bytes_per_second counts
// the tensor's bytes in the file.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "fovea/io/safetensors.hpp"

using namespace fovea;

namespace {

constexpr Index kRows = 5000, kCols = 5000;  // 25M floats = 100 MB as F32
constexpr Index kHalfCols = 2 * kCols;       // 50M halves = 100 MB as F16 / BF16

struct Files {
  std::string f32, f16, bf16;

  Files() {
    const auto dir = std::filesystem::temp_directory_path();
    const std::string tag = std::to_string(std::random_device()());
    f32 = (dir / ("fovea_bench_f32_" + tag + ".safetensors")).string();
    f16 = (dir / ("fovea_bench_f16_" + tag + ".safetensors")).string();
    bf16 = (dir / ("fovea_bench_bf16_" + tag + ".safetensors")).string();
    Tensor<float, 2> w(kRows, kCols);
    std::mt19937 rng(1);
    std::normal_distribution<float> nd;
    for (Index i = 0; i < w.size(); ++i) w.data()[i] = nd(rng);
    SafeTensorsWriter().add("weight", w).metadata("format", "pt").save(f32);
    write_half(f16, "F16", w);
    write_half(bf16, "BF16", w);
  }
  ~Files() {
    std::remove(f32.c_str());
    std::remove(f16.c_str());
    std::remove(bf16.c_str());
  }

  // The writer stores float and double only; 16-bit files are laid out by hand (values: the top 16 bits of
  // each float, so every pattern class occurs, subnormals and NaNs included).
  static void write_half(const std::string& path, const char* dtype, const Tensor<float, 2>& w) {
    std::string h = detail::cat("{\"weight\":{\"dtype\":\"", dtype, "\",\"shape\":[", kRows, ",", kHalfCols,
                                "],\"data_offsets\":[0,", 2 * kRows * kHalfCols, "]}}");
    h.append((8 - h.size() % 8) % 8, ' ');
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[std::size_t(i)] = char((std::uint64_t(h.size()) >> (8 * i)) & 0xff);
    bytes += h;
    bytes.append(reinterpret_cast<const char*>(w.data()), std::size_t(w.size()) * 4);  // 2 halves per float
    std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  }
};

const Files& files() {
  static const Files f;
  return f;
}

}  // namespace

// Zero-copy: open + view. Pages are mapped, not read, so this is the header's cost. No threads involved.
static void BM_open_view_f32(benchmark::State& st) {
  const std::string& path = files().f32;
  for (auto _ : st) {
    const SafeTensors s = SafeTensors::open(path);
    auto v = s.view<float, 2>("weight");
    benchmark::DoNotOptimize(v.data());
  }
  st.SetBytesProcessed(st.iterations() * kRows * kCols * 4);
}
BENCHMARK(BM_open_view_f32)->Arg(1)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime();

// Zero-copy and then every value read once (a sum over the view): the cost of touching the mapped pages.
static void BM_open_view_sum_f32(benchmark::State& st) {
  const std::string& path = files().f32;
  Context ctx(int(st.range(0)));
  for (auto _ : st) {
    const SafeTensors s = SafeTensors::open(path);
    Tensor<float, 0> sum;
    sum.device(ctx.device()) = s.view<float, 2>("weight").sum();
    benchmark::DoNotOptimize(sum.data());
  }
  st.SetBytesProcessed(st.iterations() * kRows * kCols * 4);
}
BENCHMARK(BM_open_view_sum_f32)->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime();

// Copies: args threads, mmap (1) or read into memory (0).
template <class T>
static void get_bench(benchmark::State& st, const std::string& path, Index cols) {
  Context ctx(int(st.range(0)));
  const auto opts = SafeTensorsOptions().use_mmap(st.range(1) != 0);
  for (auto _ : st) {
    const SafeTensors s = SafeTensors::open(path, opts);
    Tensor<T, 2> t = s.get<T, 2>("weight", ctx);
    benchmark::DoNotOptimize(t.data());
  }
  st.SetBytesProcessed(st.iterations() * kRows * cols * (cols == kCols ? 4 : 2));
}

static void BM_get_f32_as_float(benchmark::State& st) { get_bench<float>(st, files().f32, kCols); }
static void BM_get_f32_as_double(benchmark::State& st) { get_bench<double>(st, files().f32, kCols); }
static void BM_get_f16_as_float(benchmark::State& st) { get_bench<float>(st, files().f16, kHalfCols); }
static void BM_get_bf16_as_float(benchmark::State& st) { get_bench<float>(st, files().bf16, kHalfCols); }

static void get_args(benchmark::internal::Benchmark* b) {
  b->ArgsProduct({{1, 2}, {1}})->ArgNames({"threads", "mmap"})->Unit(benchmark::kMillisecond)->UseRealTime();
  b->MinWarmUpTime(0.5);  // the first touches of fresh memory cost far more than later ones
}
BENCHMARK(BM_get_f32_as_float)->Apply(get_args)->Args({1, 0})->Args({2, 0});
BENCHMARK(BM_get_f32_as_double)->Apply(get_args);
BENCHMARK(BM_get_f16_as_float)->Apply(get_args);
BENCHMARK(BM_get_bf16_as_float)->Apply(get_args);
