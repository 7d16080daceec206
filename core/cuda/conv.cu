/* conv: op_conv2d through cuDNN (NCHW, BF16 data, fp32 accumulation), then the bias as a
 * second pass: the output is rounded to BF16 before the bias is added, as PyTorch's cuDNN path
 * adds it. cuDNN pads symmetrically only; an asymmetric pad (the VAE encoder's downsampling,
 * F.pad(x, (0, 1, 0, 1))) first copies x into a zero-padded scratch image.
 *
 * The algorithm is cuDNN's first heuristic choice among the deterministic ones, so a shape
 * always runs the same kernel and the same inputs give the same bits. */
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

__global__ void bias_kernel(bf16 *out, const bf16 *bias, int64_t n, int64_t hw, int64_t C) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = f2bf(bf2f(out[i]) + bf2f(bias[i / hw % C]));
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

    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    DNN_OK(cudnnCreateTensorDescriptor(&xd));
    DNN_OK(cudnnCreateTensorDescriptor(&yd));
    DNN_OK(cudnnCreateFilterDescriptor(&wd));
    DNN_OK(cudnnCreateConvolutionDescriptor(&cd));
    DNN_OK(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_BFLOAT16, B, Ci, Hp, Wp));
    DNN_OK(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_BFLOAT16, B, Co, Ho, Wo));
    DNN_OK(cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_BFLOAT16, CUDNN_TENSOR_NCHW, Co, Ci, kh, kw));
    DNN_OK(cudnnSetConvolution2dDescriptor(cd, sym ? pad[0] : 0, sym ? pad[2] : 0, s, s, 1, 1,
                                           CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    DNN_OK(cudnnSetConvolutionMathType(cd, CUDNN_TENSOR_OP_MATH));

    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int found = 0, pick = -1;
    DNN_OK(cudnnGetConvolutionForwardAlgorithm_v7(c->cu->dnn, xd, wd, cd, yd,
                                                  CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &found, perf));
    for (int i = 0; i < found && pick < 0; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].determinism == CUDNN_DETERMINISTIC)
            pick = i;
    if (pick < 0) opcu_die(__FILE__, __LINE__, "cuDNN", "no deterministic convolution algorithm");
    size_t ws_bytes = 0;
    DNN_OK(cudnnGetConvolutionForwardWorkspaceSize(c->cu->dnn, xd, wd, cd, yd, perf[pick].algo,
                                                   &ws_bytes));
    char *scratch = (char *)opcu_scratch(c, pad_bytes + ws_bytes);
    const void *xin = x.data;
    if (!sym) {
        const int64_t n = (int64_t)B * Ci * Hp * Wp;
        pad_kernel<<<opcu_blocks(c, n, 256), 256, 0, opcu_st(c)>>>(
            (bf16 *)scratch, cbf(x), (int64_t)B * Ci, H, W, pad[0], pad[2], Hp, Wp);
        CU_LAUNCHED(c);
        xin = scratch;
    }
    const float one = 1.0f, zero = 0.0f;
    DNN_OK(cudnnConvolutionForward(c->cu->dnn, &one, xd, xin, wd, w.data, cd, perf[pick].algo,
                                   ws_bytes ? scratch + pad_bytes : NULL, ws_bytes, &zero, yd,
                                   out.data));
    cudnnDestroyConvolutionDescriptor(cd);
    cudnnDestroyFilterDescriptor(wd);
    cudnnDestroyTensorDescriptor(yd);
    cudnnDestroyTensorDescriptor(xd);
    if (bias) {
        const int64_t n = (int64_t)B * Co * Ho * Wo;
        bias_kernel<<<opcu_blocks(c, n, 256), 256, 0, opcu_st(c)>>>(mbf(out), cbf(*bias), n,
                                                                    (int64_t)Ho * Wo, Co);
        CU_LAUNCHED(c);
    }
}
