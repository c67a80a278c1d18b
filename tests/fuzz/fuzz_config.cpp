// Fuzzes the config.json reader: any text gives a HfVisionConfig whose fields are in range, or a FormatError.
#include "common.hpp"
#include "fovea/models/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fovea;
  fuzz::expect_clean([&] {
    const HfVisionConfig c = parse_hf_vision_config(fuzz::bytes(data, size), "config.json 'fuzz'");
    for (const auto& v : {c.hidden_size, c.num_attention_heads, c.num_hidden_layers, c.intermediate_size,
                          c.num_channels, c.projection_dim})
      FOVEA_FUZZ_CHECK(!v || (*v >= 1 && *v <= (Index(1) << 40)));
    for (const auto& v : {c.patch_size, c.image_size})
      FOVEA_FUZZ_CHECK(!v || (v->h >= 1 && v->w >= 1 && v->h <= (Index(1) << 40) && v->w <= (Index(1) << 40)));
    FOVEA_FUZZ_CHECK(!c.layer_norm_eps || *c.layer_norm_eps > 0);
    if (c.hidden_act) (void)hf_activation(*c.hidden_act, c.source);  // accepted names map
    FOVEA_FUZZ_CHECK(!c.global_pool || *c.global_pool == "token" || *c.global_pool == "avg");
  });
  return 0;
}
