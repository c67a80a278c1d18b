#pragma once
// The contrastive losses alone: streamed CLIP and SigLIP losses with their gradients, the straightforward
// B x B versions they are tested against, l2_normalize and zero-shot scoring. Needs only fovea/core.
#include "fovea/loss/clip_loss.hpp"
#include "fovea/loss/normalize.hpp"
#include "fovea/loss/reference.hpp"
#include "fovea/loss/siglip_loss.hpp"
#include "fovea/loss/zero_shot.hpp"
