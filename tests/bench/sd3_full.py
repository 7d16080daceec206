"""sd3_full: the SD3.5 Large benchmark's model and its diffusers reference (tests/bench/bench_sd3.sh).

  python3 sd3_full.py make DIR FIXTURES   writes a diffusers StableDiffusion3Pipeline folder with
      random BF16 weights: the transformer at full size (SD3.5 Large's config, docs/MODEL-SPEC.md §2.1:
      38 layers, 38 heads x 64, 8.06 B parameters + the pos_embed buffer, 16.3 GB, two shards as
      the published one), the VAE (docs/MODEL-SPEC.md §3.1), CLIP-L and CLIP-G with their projections at
      full size, and a T5 with T5-XXL's width (4096, so the transformer gets the input it expects)
      but 2 of its 24 layers: the full 9.5 GB would not change the transformer's step time and
      would take the disk space the DF11 copy needs. Tokenizers are the test fixtures'
      (FIXTURES/tokenizers/{clip,clip_g,t5}: real CLIP merges, a small trained SentencePiece
      model, so T5's embedding has the fixture vocabulary's rows). Built on the GPU.
  python3 sd3_full.py diffusers DIR OUT_JSON   times diffusers' StableDiffusion3Pipeline in BF16
      on this GPU, 1024x1024, 28 steps, guidance 4.5 (CFG: a batch of 2 per step), negative prompt
      "" (the default), max_sequence_length 256, seed 42 on a CPU generator: ms per step (median,
      second run), VAE decode (best of 3, warm), time to the first step (loading plus the first
      run's first step), peak memory (torch.cuda.max_memory_allocated), s per image. Then it
      measures the floor: the FLOP of one CFG step (counted from the config) at the rate cuBLAS
      reaches on the step's GEMM shapes, and with the attention at SDPA's rate.
  --tiny (either mode, not for the benchmark): small configs, CPU, 128x128, 2 steps; checks the
      script here, and that model_index.json equals what diffusers' save_pretrained writes.
Random weights are N(0, 0.02), norm weights 1 and norm biases 0: the timings do not depend on
the values. The JSON records the torch, diffusers and transformers versions it ran with.
"""
import json
import os
import shutil
import sys
import time

import torch

PROMPT = "A cat holding a sign that says hello world"


def quiet():
    """Errors only from diffusers and transformers: no progress bars or dtype notes in the logs."""
    import diffusers
    import transformers
    for lib in (diffusers, transformers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()


def configs(tiny):
    """Component configs: SD3.5 Large's (docs/MODEL-SPEC.md §2.1, 3.1, 4.1, 4.2), or small ones with the
    same wiring (joint width = T5 width, pooled width = CLIP-L + CLIP-G projections)."""
    if tiny:
        clip_l = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=1, projection_dim=64)
        clip_g = dict(clip_l)
        t5 = dict(d_model=128, d_kv=64, num_heads=2, d_ff=256, num_layers=2)
        tr = dict(sample_size=16, num_layers=3, num_attention_heads=2, joint_attention_dim=128,
                  caption_projection_dim=128, pooled_projection_dim=128, pos_embed_max_size=24)
        vae = dict(block_out_channels=[32, 64, 64, 64], norm_num_groups=8, sample_size=128)
    else:
        clip_l = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                      num_attention_heads=12, projection_dim=768)
        clip_g = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                      num_attention_heads=20, projection_dim=1280)
        t5 = dict(d_model=4096, d_kv=64, num_heads=64, d_ff=10240, num_layers=2)
        tr = dict(sample_size=128, num_layers=38, num_attention_heads=38, joint_attention_dim=4096,
                  caption_projection_dim=2432, pooled_projection_dim=2048, pos_embed_max_size=192)
        vae = dict(block_out_channels=[128, 256, 512, 512], norm_num_groups=32, sample_size=1024)
    tr.update(patch_size=2, in_channels=16, out_channels=16, attention_head_dim=64,
              qk_norm="rms_norm", dual_attention_layers=())
    return clip_l, clip_g, t5, tr, vae


def randomize(m):
    """N(0, 0.02) for every parameter; the parameters of normalization layers (LayerNorm,
    GroupNorm, diffusers' RMSNorm, T5LayerNorm) get weight 1, bias 0. Buffers (SD3's pos_embed,
    CLIP's position ids) keep their values, as in a real checkpoint."""
    with torch.no_grad():
        for mod in m.modules():
            is_norm = "Norm" in type(mod).__name__
            for n, p in mod.named_parameters(recurse=False):
                if is_norm:
                    p.fill_(1.0 if n == "weight" else 0.0)
                else:
                    p.normal_(0.0, 0.02)
    return m


def model_index(tok_classes):
    """model_index.json as diffusers' DiffusionPipeline.save_pretrained writes it for
    StableDiffusion3Pipeline (the tokenizer classes are those transformers loads here)."""
    import diffusers
    idx = {"_class_name": "StableDiffusion3Pipeline", "_diffusers_version": diffusers.__version__,
           "feature_extractor": [None, None], "image_encoder": [None, None],
           "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
           "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
           "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
           "text_encoder_3": ["transformers", "T5EncoderModel"],
           "tokenizer": ["transformers", tok_classes[0]],
           "tokenizer_2": ["transformers", tok_classes[1]],
           "tokenizer_3": ["transformers", tok_classes[2]],
           "transformer": ["diffusers", "SD3Transformer2DModel"],
           "vae": ["diffusers", "AutoencoderKL"]}
    return dict(sorted(idx.items()))


def make(d, fixtures, tiny=False):
    import diffusers
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import (CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer,
                              T5Config, T5EncoderModel, T5TokenizerFast)

    torch.manual_seed(0)
    dev = "cpu" if tiny else "cuda"
    bf = torch.bfloat16
    cl, cg, c5, ct, cv = configs(tiny)
    os.makedirs(d, exist_ok=True)
    toks = fixtures + "/tokenizers"
    for src, dst in (("clip", "tokenizer"), ("clip_g", "tokenizer_2"), ("t5", "tokenizer_3")):
        shutil.copytree(f"{toks}/{src}", f"{d}/{dst}", dirs_exist_ok=True)
    tok_l = CLIPTokenizer.from_pretrained(f"{d}/tokenizer")
    tok_g = CLIPTokenizer.from_pretrained(f"{d}/tokenizer_2")
    tok_t5 = T5TokenizerFast.from_pretrained(f"{d}/tokenizer_3")

    # one component at a time on the device, freed before the next: the transformer's F32
    # construction (32 GB) plus its BF16 copy (16 GB) is the peak
    with torch.device(dev):
        tr = SD3Transformer2DModel(**ct).to(bf)
    randomize(tr).save_pretrained(f"{d}/transformer", max_shard_size="10GB")
    del tr
    with torch.device(dev):
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2,
            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
            act_fn="silu", mid_block_add_attention=True, use_quant_conv=False,
            use_post_quant_conv=False, scaling_factor=1.5305, shift_factor=0.0609, **cv).to(bf)
    randomize(vae).save_pretrained(f"{d}/vae")
    del vae
    # CLIP ids as the fixtures' tokenizers give them (BOS 49406, EOS 49407: pooled = first EOS)
    for name, c, act in (("text_encoder", cl, "quick_gelu"), ("text_encoder_2", cg, "gelu")):
        cfg = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, hidden_act=act,
                             layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407,
                             pad_token_id=49407, **c)
        with torch.device(dev):
            m = CLIPTextModelWithProjection(cfg).to(bf)
        randomize(m).save_pretrained(f"{d}/{name}")
        del m
    t5_cfg = T5Config(vocab_size=len(tok_t5), feed_forward_proj="gated-gelu",
                      relative_attention_num_buckets=32, relative_attention_max_distance=128,
                      layer_norm_epsilon=1e-6, dropout_rate=0.0, **c5)
    with torch.device(dev):
        t5 = T5EncoderModel(t5_cfg).to(bf)
    randomize(t5).save_pretrained(f"{d}/text_encoder_3")
    del t5
    if dev == "cuda":
        torch.cuda.empty_cache()
    # the published SD3.5 scheduler_config.json: shift 3.0, everything else the defaults
    os.makedirs(f"{d}/scheduler", exist_ok=True)
    sched = {"_class_name": "FlowMatchEulerDiscreteScheduler",
             "_diffusers_version": diffusers.__version__, "num_train_timesteps": 1000, "shift": 3.0}
    with open(f"{d}/scheduler/scheduler_config.json", "w") as f:
        json.dump(sched, f, indent=2)
    idx = model_index([type(t).__name__ for t in (tok_l, tok_g, tok_t5)])
    with open(f"{d}/model_index.json", "w") as f:
        json.dump(idx, f, indent=2)
    if tiny:
        check_index(d, idx)


def check_index(d, idx):
    """--tiny: the folder loads as a StableDiffusion3Pipeline, and saving it again writes the same
    model_index.json (all keys but the version)."""
    from diffusers import StableDiffusion3Pipeline
    pipe = StableDiffusion3Pipeline.from_pretrained(d, torch_dtype=torch.bfloat16)
    again = d.rstrip("/") + ".resaved"
    pipe.save_pretrained(again)
    with open(f"{again}/model_index.json") as f:
        theirs = json.load(f)
    shutil.rmtree(again)
    theirs.pop("_name_or_path", None)  # added by from_pretrained, not by a fresh save
    assert theirs == idx, f"model_index.json differs from diffusers':\n{theirs}\n{idx}"
    print("model_index.json: equal to what diffusers writes")


def step_flop(c, n_img, n_txt, batch):
    """FLOP of one transformer forward (multiply-add = 2), counted from the config: the joint
    blocks' linears and attention (image then text tokens; the last block has no text output
    or text MLP), plus the patch, context and output projections. The adaLN linears act on one
    row per image and are left out."""
    dim = c["num_attention_heads"] * c["attention_head_dim"]
    p = c["patch_size"] ** 2 * c["in_channels"]
    f = 0
    for i in range(c["num_layers"]):
        last = i == c["num_layers"] - 1
        f += 2 * n_img * dim * dim * (3 + 1 + 8)  # q, k, v, out, MLP (4D up, 4D down)
        f += 2 * n_txt * dim * dim * (3 if last else 3 + 1 + 8)
        f += 4 * (n_img + n_txt) ** 2 * dim  # QK^T and PV
    f += 2 * n_img * p * dim * 2 + 2 * n_txt * c["joint_attention_dim"] * dim
    return batch * f


def timed(fn, iters, dev):
    """Milliseconds per call of fn (CUDA events on the GPU; a wall clock for --tiny on the CPU),
    after 3 warm calls."""
    for _ in range(3):
        fn()
    if dev != "cuda":
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t0) * 1e3 / iters
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / iters


def floor(c, n_img, n_txt, batch, dev):
    """The floor of one CFG step: its FLOP at the rate cuBLAS reaches here on the GEMMs a joint
    block issues (F.linear with bias, as diffusers calls them), and a second figure with the
    attention timed with PyTorch's SDPA instead."""
    import torch.nn.functional as F
    dim, hd = c["num_attention_heads"] * c["attention_head_dim"], c["attention_head_dim"]
    bf = dict(device=dev, dtype=torch.bfloat16)
    gemm_flop, gemm_ms = 0, 0.0
    for rows in (batch * n_img, batch * n_txt):
        for k, n, count in ((dim, dim, 4), (dim, 4 * dim, 1), (4 * dim, dim, 1)):
            x, w, bias = torch.randn(rows, k, **bf), torch.randn(n, k, **bf), torch.randn(n, **bf)
            gemm_ms += count * timed(lambda: F.linear(x, w, bias), 20, dev)
            gemm_flop += count * 2 * rows * k * n
    q, k, v = (torch.randn(batch, c["num_attention_heads"], n_img + n_txt, hd, **bf)
               for _ in range(3))
    attn_ms = timed(lambda: F.scaled_dot_product_attention(q, k, v), 20, dev)
    total = step_flop(c, n_img, n_txt, batch)
    attn_flop = c["num_layers"] * 4 * batch * (n_img + n_txt) ** 2 * dim
    rate = gemm_flop / gemm_ms / 1e9  # TFLOP/s
    return {"step_tflop": total / 1e12, "gemm_tflops": rate, "floor_ms": total / rate / 1e9,
            "sdpa_ms_per_layer": attn_ms,
            "floor_sdpa_ms": (total - attn_flop) / rate / 1e9 + c["num_layers"] * attn_ms}


def run_diffusers(d, out_json, tiny=False):
    import diffusers
    import transformers
    from diffusers import StableDiffusion3Pipeline

    dev = "cpu" if tiny else "cuda"
    size, steps = (128, 2) if tiny else (1024, 28)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    with open(f"{d}/transformer/config.json") as f:
        tcfg = json.load(f)
    n_img = (size // 8 // tcfg["patch_size"]) ** 2
    t0 = time.time()
    pipe = StableDiffusion3Pipeline.from_pretrained(d, torch_dtype=torch.bfloat16).to(dev)
    pipe.set_progress_bar_config(disable=True)
    sync()
    load_s = time.time() - t0
    stamps = []

    def on_step(p, i, t, kw):
        sync()
        stamps.append(time.time())
        return kw

    res, cold_first = {}, None
    for run in range(2):  # the first run warms cuDNN/cuBLAS up; the second is reported
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        stamps.clear()
        g = torch.Generator("cpu").manual_seed(42)
        t0 = time.time()
        lat = pipe(PROMPT, height=size, width=size, num_inference_steps=steps, guidance_scale=4.5,
                   max_sequence_length=256, generator=g, output_type="latent",
                   callback_on_step_end=on_step).images
        sync()
        step_s = [b - a for a, b in zip(stamps, stamps[1:])]
        if cold_first is None:  # loading plus the first run's first step, as a user sees it
            cold_first = load_s + stamps[0] - t0
        # the pipeline's own decode input (pipeline_stable_diffusion_3.py::__call__)
        lat = lat / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
        vae_ms = []
        for _ in range(3):
            sync()
            v0 = time.time()
            with torch.no_grad():
                pipe.vae.decode(lat, return_dict=False)
            sync()
            vae_ms.append((time.time() - v0) * 1e3)
        res = {"load_s": load_s, "first_step_s": cold_first,
               "step_ms_median": sorted(step_s)[len(step_s) // 2] * 1e3,
               "image_s": stamps[-1] - t0 + min(vae_ms) / 1e3, "vae_ms": min(vae_ms),
               "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if dev == "cuda" else 0.0,
               "torch": torch.__version__, "diffusers": diffusers.__version__,
               "transformers": transformers.__version__,
               "gpu": torch.cuda.get_device_name() if dev == "cuda" else "cpu"}
    # after the runs, so that the first step above includes starting CUDA, as ours does
    res.update(floor(tcfg, n_img, 77 + 256, 2, dev))
    with open(out_json, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res))


if __name__ == "__main__":
    tiny = "--tiny" in sys.argv
    quiet()
    args = [a for a in sys.argv[1:] if a != "--tiny"]
    if len(args) != 3 or args[0] not in ("make", "diffusers"):
        sys.exit("usage: sd3_full.py make DIR FIXTURES | diffusers DIR OUT_JSON  [--tiny]")
    if args[0] == "make":
        make(args[1], args[2], tiny)
    else:
        run_diffusers(args[1], args[2], tiny)
