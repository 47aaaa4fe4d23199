// Skips of numpy's MT19937 stream for the image specs' RNG replay (lwengine/specs/image/rng.py).
// State layout is numpy's: key[624] words and pos in 0..624 (624: the block is used up).
//   mt19937_skip_words:  advance by n output words (torch's generator / random_raw draws).
//   mt19937_skip_gauss_pairs: advance by `pairs` accepted polar attempts of numpy's legacy Gaussian
//     (RandomState.standard_normal with no cached value: 2 Gaussians per accepted attempt; an attempt
//     reads 2 legacy doubles = 4 words whatever its outcome).
#pragma once
#include <cstdint>

namespace lwe {
void mt19937_skip_words(uint32_t* key, int* pos, uint64_t n);
void mt19937_skip_gauss_pairs(uint32_t* key, int* pos, uint64_t pairs);
}  // namespace lwe
