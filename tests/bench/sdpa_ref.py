"""The ceiling for op_attention: PyTorch's scaled_dot_product_attention on the same GPU, at the
shapes bench_runtime measures (bf16, no mask; PyTorch picks its fastest backend). Run by
tools/device-check.sh next to bench_runtime. Prints one line per shape."""
import torch
import torch.nn.functional as F


def bench(what, b, h, l, d, iters=20):
    q, k, v = (torch.randn(b, h, l, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    for _ in range(3):
        F.scaled_dot_product_attention(q, k, v)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        F.scaled_dot_product_attention(q, k, v)
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / iters
    print(f"{what:<26} {b}x{h}x{l}x{d}  {ms:7.3f} ms {4 * b * h * l * l * d / ms / 1e9:6.0f} TFLOP/s"
          f"  (torch {torch.__version__} SDPA)")


if __name__ == "__main__":
    bench("FLUX 1024^2", 1, 24, 4608, 128)
    bench("SD3.5 Large 1024^2 CFG", 2, 38, 4429, 64)
    bench("VAE mid block 512^2", 1, 1, 4096, 512)
