#pragma once
// What every fuzz target shares: the one rule of the harnesses is that a reader given any bytes either returns
// or throws fovea's own FormatError / ShapeError. Any other exception escapes LLVMFuzzerTestOneInput, which
// libFuzzer reports as a crash (as it does a sanitizer report, a timeout or a run past -rss_limit_mb).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"

// Every report is a crash (halt_on_error), with its stack; ubsan.supp silences the known third-party reports it
// lists (and only those), however the binary is started.
// Defined here, not inline: the runtime looks the symbol up, so it must be emitted (one fuzz_*.cpp per binary).
extern "C" __attribute__((used)) const char* __ubsan_default_options() {
  return "halt_on_error=1:print_stacktrace=1:suppressions=" FOVEA_FUZZ_DIR "/ubsan.supp";
}

namespace fovea::fuzz {

// One thread: results must not depend on it, and the machine is shared with the other targets.
inline const Context& ctx() {
  static const Context c(1);
  return c;
}

template <class F>
void expect_clean(F&& f) {
  try {
    f();
  } catch (const FormatError&) {
  } catch (const ShapeError&) {
  }
}

inline std::string bytes(const std::uint8_t* data, std::size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

// A check the harness makes on what the reader returned (a round trip, an invariant): trap so libFuzzer keeps
// the input, with the reason on stderr.
[[noreturn]] inline void invariant_failed(const char* what) {
  std::fprintf(stderr, "fovea fuzz invariant failed: %s\n", what);
  __builtin_trap();
}
#define FOVEA_FUZZ_CHECK(cond) \
  do {                         \
    if (!(cond)) ::fovea::fuzz::invariant_failed(#cond); \
  } while (0)

}  // namespace fovea::fuzz
