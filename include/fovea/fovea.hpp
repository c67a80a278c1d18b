#pragma once
// Everything fovea offers. Include a layer's own header instead to pay only for that layer
// (fovea/loss.hpp for the contrastive losses alone).
#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/gemm.hpp"
#include "fovea/core/tensor.hpp"

#include "fovea/io/image.hpp"
#include "fovea/io/npy.hpp"
#include "fovea/io/preprocess.hpp"
#include "fovea/io/safetensors.hpp"

#include "fovea/ops/activation.hpp"
#include "fovea/ops/attention.hpp"
#include "fovea/ops/conv2d.hpp"
#include "fovea/ops/flatten.hpp"
#include "fovea/ops/interpolate.hpp"
#include "fovea/ops/linear.hpp"
#include "fovea/ops/norm.hpp"
#include "fovea/ops/patch_embed.hpp"
#include "fovea/ops/pooling.hpp"
#include "fovea/ops/softmax.hpp"

#include "fovea/nn/attention.hpp"
#include "fovea/nn/attention_pool.hpp"
#include "fovea/nn/batch_norm.hpp"
#include "fovea/nn/conv2d.hpp"
#include "fovea/nn/encoder_block.hpp"
#include "fovea/nn/layer_norm.hpp"
#include "fovea/nn/linear.hpp"
#include "fovea/nn/mlp.hpp"
#include "fovea/nn/patch_embed.hpp"

#include "fovea/models/config.hpp"
#include "fovea/models/resnet.hpp"
#include "fovea/models/vit.hpp"
#include "fovea/models/weights.hpp"
#include "fovea/models/navit.hpp"
#include "fovea/navit/pack.hpp"
#include "fovea/navit/patchify.hpp"

#include "fovea/loss.hpp"
