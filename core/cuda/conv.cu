/* conv: op_conv2d through cuDNN (NCHW, BF16 data, fp32 accumulation), then the bias as a
 * second pass: the output is rounded to BF16 before the bias is added, as PyTorch's cuDNN path
 * adds it. cuDNN pads symmetrically only; an asymmetric pad (the VAE encoder's downsampling,
 * F.pad(x, (0, 1, 0, 1))) first copies x into a zero-padded scratch image.
 *
 * The algorithm is cuDNN's first heuristic choice among the deterministic ones, so a shape
 * always runs the same kernel and the same inputs give the same bits. Descriptors, algorithm
 * and workspace size are made once per shape and kept in the context (a VAE decode is ~100
 * convolutions of a dozen shapes; building them per call cost more host time than the GPU
 * spent on the convolutions). */
#include "core/cuda/common.cuh"

static void dnn_ok(cudnnStatus_t s, const char *what, int line) {
    if (s != CUDNN_STATUS_SUCCESS) opcu_die(__FILE__, line, what, cudnnGetErrorString(s));
}
#define DNN_OK(call) dnn_ok((call), #call, __LINE__)

__global__ void pad_kernel(bf16 *dst, const bf16 *src, int64_t planes, int H, int W, int top,
                           int left, int Hp, int Wp) {
    const int64_t n = planes * Hp * Wp;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t p = i / ((int64_t)Hp * Wp);
        const int y = (int)(i / Wp % Hp) - top, x = (int)(i % Wp) - left;
        dst[i] = (y >= 0 && y < H && x >= 0 && x < W) ? src[(p * H + y) * W + x] : f2bf(0.0f);
    }
}

/* y: planes b C + c (one bias value each); x: VW values a thread, grid-stride over the plane. */
template <int VW> __global__ void bias_kernel(bf16 *out, const bf16 *bias, int64_t hw, int64_t C) {
    const float bc = bf2f(bias[blockIdx.y % C]);
    bf16 *o = out + (int64_t)blockIdx.y * hw;
    for (int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * VW; i < hw;
         i += (int64_t)gridDim.x * blockDim.x * VW) {
        float v[VW];
        ldv<VW>(o + i, v);
#pragma unroll
        for (int k = 0; k < VW; k++)
            v[k] += bc;
        stv<VW>(o + i, v);
    }
}

/* One convolution shape: its cuDNN descriptors and chosen algorithm. */
typedef struct conv_plan {
    int key[11]; /* B, Ci, Hp, Wp, Co, kh, kw, Ho, Wo, stride, symmetric pad (or 0) */
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cudnnConvolutionFwdAlgo_t algo;
    size_t ws_bytes;
} conv_plan;

struct conv_cache {
    int n, cap;
    conv_plan *p;
};

void conv_cache_free(struct conv_cache *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) {
        cudnnDestroyConvolutionDescriptor(c->p[i].cd);
        cudnnDestroyFilterDescriptor(c->p[i].wd);
        cudnnDestroyTensorDescriptor(c->p[i].yd);
        cudnnDestroyTensorDescriptor(c->p[i].xd);
    }
    free(c->p);
    free(c);
}

static const conv_plan *conv_plan_get(op_ctx *c, const int key[11]) {
    struct conv_cache *cc = c->cu->conv;
    if (!cc) {
        cc = c->cu->conv = (struct conv_cache *)calloc(1, sizeof *cc);
        if (!cc) opcu_die(__FILE__, __LINE__, "conv plan", "out of host memory");
    }
    for (int i = 0; i < cc->n; i++)
        if (!memcmp(cc->p[i].key, key, sizeof cc->p[i].key)) return &cc->p[i];
    if (cc->n == cc->cap) {
        cc->cap = cc->cap ? 2 * cc->cap : 16;
        cc->p = (conv_plan *)realloc(cc->p, sizeof *cc->p * (size_t)cc->cap);
        if (!cc->p) opcu_die(__FILE__, __LINE__, "conv plan", "out of host memory");
    }
    conv_plan *p = &cc->p[cc->n];
    memcpy(p->key, key, sizeof p->key);
    const int B = key[0], Ci = key[1], Hp = key[2], Wp = key[3], Co = key[4], kh = key[5],
              kw = key[6], Ho = key[7], Wo = key[8], s = key[9], sp = key[10];
    DNN_OK(cudnnCreateTensorDescriptor(&p->xd));
    DNN_OK(cudnnCreateTensorDescriptor(&p->yd));
    DNN_OK(cudnnCreateFilterDescriptor(&p->wd));
    DNN_OK(cudnnCreateConvolutionDescriptor(&p->cd));
    DNN_OK(
        cudnnSetTensor4dDescriptor(p->xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_BFLOAT16, B, Ci, Hp, Wp));
    DNN_OK(
        cudnnSetTensor4dDescriptor(p->yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_BFLOAT16, B, Co, Ho, Wo));
    DNN_OK(
        cudnnSetFilter4dDescriptor(p->wd, CUDNN_DATA_BFLOAT16, CUDNN_TENSOR_NCHW, Co, Ci, kh, kw));
    DNN_OK(cudnnSetConvolution2dDescriptor(p->cd, sp >> 16, sp & 0xFFFF, s, s, 1, 1,
                                           CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    DNN_OK(cudnnSetConvolutionMathType(p->cd, CUDNN_TENSOR_OP_MATH));
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int found = 0, pick = -1;
    DNN_OK(cudnnGetConvolutionForwardAlgorithm_v7(c->cu->dnn, p->xd, p->wd, p->cd, p->yd,
                                                  CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &found, perf));
    for (int i = 0; i < found && pick < 0; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].determinism == CUDNN_DETERMINISTIC)
            pick = i;
    if (pick < 0) opcu_die(__FILE__, __LINE__, "cuDNN", "no deterministic convolution algorithm");
    p->algo = perf[pick].algo;
    DNN_OK(cudnnGetConvolutionForwardWorkspaceSize(c->cu->dnn, p->xd, p->wd, p->cd, p->yd, p->algo,
                                                   &p->ws_bytes));
    cc->n++;
    return p;
}

extern "C" void opcu_conv2d(op_ctx *c, tensor out, tensor x, tensor w, const tensor *bias, int s,
                            const int pad[4]) {
    const int B = (int)x.shape[0], Ci = (int)x.shape[1], H = (int)x.shape[2], W = (int)x.shape[3];
    const int Co = (int)w.shape[0], kh = (int)w.shape[2], kw = (int)w.shape[3];
    const int Ho = (int)out.shape[2], Wo = (int)out.shape[3];
    if ((int64_t)B * Co * Ho * Wo == 0) return;
    /* symmetric part for cuDNN; the rest by an explicit padded copy */
    const int sym = pad[0] == pad[1] && pad[2] == pad[3];
    const int Hp = sym ? H : H + pad[0] + pad[1], Wp = sym ? W : W + pad[2] + pad[3];
    const size_t pad_bytes = sym ? 0 : ((size_t)B * Ci * Hp * Wp * sizeof(bf16) + 255) / 256 * 256;
    const int key[11] = {B, Ci, Hp, Wp, Co, kh, kw, Ho, Wo, s, sym ? pad[0] << 16 | pad[2] : 0};
    const conv_plan *p = conv_plan_get(c, key);
    char *scratch = (char *)opcu_scratch(c, pad_bytes + p->ws_bytes);
    const void *xin = x.data;
    if (!sym) {
        const int64_t n = (int64_t)B * Ci * Hp * Wp;
        pad_kernel<<<opcu_blocks(c, n, 256), 256, 0, opcu_st(c)>>>(
            (bf16 *)scratch, cbf(x), (int64_t)B * Ci, H, W, pad[0], pad[2], Hp, Wp);
        CU_LAUNCHED(c);
        xin = scratch;
    }
    const float one = 1.0f, zero = 0.0f;
    DNN_OK(cudnnConvolutionForward(c->cu->dnn, &one, p->xd, xin, p->wd, w.data, p->cd, p->algo,
                                   p->ws_bytes ? scratch + pad_bytes : NULL, p->ws_bytes, &zero,
                                   p->yd, out.data));
    if (bias) {
        /* the planes on y (B Co of them, well under 65535 for these models), each swept by
           enough blocks to fill the GPU */
        const int64_t hw = (int64_t)Ho * Wo, planes = (int64_t)B * Co;
        CHECK(planes <= 65535);
        const int vw = hw % 8 == 0 && opcu_al16(out.data) ? 8 : 1;
        int64_t bx = (hw / vw + 255) / 256, want = 4 * c->cu->sms / planes + 1;
        bx = bx < want ? bx : want;
        const dim3 grid((unsigned)bx, (unsigned)planes);
        if (vw == 8)
            bias_kernel<8><<<grid, 256, 0, opcu_st(c)>>>(mbf(out), cbf(*bias), hw, Co);
        else
            bias_kernel<1><<<grid, 256, 0, opcu_st(c)>>>(mbf(out), cbf(*bias), hw, Co);
        CU_LAUNCHED(c);
    }
}
