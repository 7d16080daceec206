"""flux_full: the FLUX.1-dev benchmark's model and its diffusers reference (tests/bench/bench_flux.sh).

  python3 flux_full.py make DIR FIXTURES   writes a diffusers FLUX.1-dev folder with random BF16
      weights: the transformer at full size (FLUX.1-dev's config, 11.9 B parameters, 23.8 GB),
      the VAE and CLIP-L at full size, and a T5 with T5-XXL's width (4096, so the transformer
      gets the input it expects) but 2 of its 24 layers (the full 9.5 GB would not change the
      transformer's step time and would take the disk space the DF11 copy needs). Tokenizers
      are the test fixtures' (real CLIP merges; a small trained SentencePiece model).
  python3 flux_full.py diffusers DIR OUT_JSON   times diffusers' FluxPipeline in BF16 on this
      GPU, 1024x1024, 28 steps, guidance 3.5, seed 42 on a CPU generator: seconds per step
      (median, second run), VAE decode (best of 3, warm), time to the first step (loading
      plus the first run's first step), peak memory (torch.cuda.max_memory_allocated).
Random weights are N(0, 0.02) (norm weights 1): the timings do not depend on the values.
"""
import json
import os
import shutil
import sys
import time

import torch


def make(d, fixtures):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    dev = "cuda"

    def randomize(m):
        with torch.no_grad():
            for n, p in m.named_parameters():
                if p.dim() == 1 and ("norm" in n or "scale" in n):
                    p.fill_(1.0)
                else:
                    p.normal_(0.0, 0.02)
        return m

    with torch.device(dev):
        tr = FluxTransformer2DModel(guidance_embeds=True).to(torch.bfloat16)
    randomize(tr).save_pretrained(f"{d}/transformer", max_shard_size="10GB")
    del tr
    torch.cuda.empty_cache()
    with torch.device(dev):
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=16,
            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
            block_out_channels=[128, 256, 512, 512], layers_per_block=2, norm_num_groups=32,
            use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611,
            shift_factor=0.1159, sample_size=1024).to(torch.bfloat16)
    randomize(vae).save_pretrained(f"{d}/vae")
    clip_cfg = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                              num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                              hidden_act="quick_gelu", projection_dim=768, bos_token_id=49406,
                              eos_token_id=49407, pad_token_id=49407)
    with torch.device(dev):
        clip = CLIPTextModel(clip_cfg).to(torch.bfloat16)
    randomize(clip).save_pretrained(f"{d}/text_encoder")
    t5_cfg = T5Config(vocab_size=32128, d_model=4096, d_kv=64, num_heads=64, d_ff=10240,
                      num_layers=2, feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                      relative_attention_max_distance=128, dropout_rate=0.0)
    with torch.device(dev):
        t5 = T5EncoderModel(t5_cfg).to(torch.bfloat16)
    randomize(t5).save_pretrained(f"{d}/text_encoder_2")
    FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                    max_shift=1.15, base_image_seq_len=256,
                                    max_image_seq_len=4096).save_pretrained(f"{d}/scheduler")
    shutil.copytree(f"{fixtures}/flux_tiny/dev/tokenizer", f"{d}/tokenizer")
    shutil.copytree(f"{fixtures}/flux_tiny/dev/tokenizer_2", f"{d}/tokenizer_2")
    shutil.copy(f"{fixtures}/flux_tiny/dev/model_index.json", f"{d}/model_index.json")


def run_diffusers(d, out_json):
    from diffusers import FluxPipeline

    t0 = time.time()
    pipe = FluxPipeline.from_pretrained(d, torch_dtype=torch.bfloat16).to("cuda")
    torch.cuda.synchronize()
    load_s = time.time() - t0
    stamps = []

    def on_step(p, i, t, kw):
        torch.cuda.synchronize()
        stamps.append(time.time())
        return kw

    res, cold_first = {}, None
    for run in range(2):  # the first run warms cuDNN/cuBLAS up; the second is reported
        torch.cuda.reset_peak_memory_stats()
        stamps.clear()
        g = torch.Generator("cpu").manual_seed(42)
        t0 = time.time()
        lat = pipe("A cat holding a sign that says hello world", height=1024, width=1024,
                   num_inference_steps=28, guidance_scale=3.5, generator=g,
                   output_type="latent", callback_on_step_end=on_step).images
        torch.cuda.synchronize()
        steps = [b - a for a, b in zip(stamps, stamps[1:])]
        if cold_first is None:  # loading plus the first run's first step, as a user sees it
            cold_first = load_s + stamps[0] - t0
        lat = pipe._unpack_latents(lat, 1024, 1024, pipe.vae_scale_factor)
        lat = lat / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
        vae_ms = []
        for _ in range(3):
            torch.cuda.synchronize()
            v0 = time.time()
            with torch.no_grad():
                pipe.vae.decode(lat, return_dict=False)
            torch.cuda.synchronize()
            vae_ms.append((time.time() - v0) * 1e3)
        res = {"load_s": load_s, "first_step_s": cold_first,
               "step_ms_median": sorted(steps)[len(steps) // 2] * 1e3,
               "image_s": stamps[-1] - t0 + min(vae_ms) / 1e3, "vae_ms": min(vae_ms),
               "peak_gb": torch.cuda.max_memory_allocated() / 1e9,
               "torch": torch.__version__}
    json.dump(res, open(out_json, "w"), indent=1)
    print(json.dumps(res))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    else:
        run_diffusers(sys.argv[2], sys.argv[3])
