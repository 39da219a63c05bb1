/*
 * fused_rnn.h - C API of fused-rnn (hand-kept; matches capi/src/).
 *
 * f32 RNN / LSTM / GRU layers with fused SIMD forward and BPTT backward.
 *
 * Layout (row-major, time-major, PyTorch's):
 *   x [T, B, I], y [T, B, H], states h0, c0, h_n, c_n [B, H];
 *   weight_ih [G*H, I], weight_hh [G*H, H], bias_ih [G*H], bias_hh [G*H],
 *   G = 1 (RNN), 4 (LSTM, gate rows i, f, g, o), 3 (GRU, rows r, z, n).
 *
 * Conventions for every function:
 *   - Returns FRNN_OK (0) or an FRNN_ERR_* code; on error, frnn_last_error_message() describes
 *     it (e.g. "buffer x [T, B, I]: expected length 24, got 23"). Outputs may be partly
 *     written on error.
 *   - A refused call (any FRNN_ERR_* but FRNN_ERR_PANIC) changes nothing in its handle: a layer
 *     keeps its pending backward (a refused training forward, even with another T, B or
 *     lengths, leaves the earlier training forward's backward pending), a stream its state.
 *   - Every buffer comes with its length in elements, checked against the dimensions.
 *   - Optional buffers may be NULL (with length 0): absent inputs mean zeros, absent outputs
 *     are not written. Required pointers that are NULL give FRNN_ERR_NULL.
 *   - Buffers of one call must not overlap where one of them is written (FRNN_ERR_ARGUMENT).
 *   - A layer or stream handle must not be used by two threads at once; distinct handles are
 *     independent. Error messages are per thread.
 *   - No Rust panic crosses the boundary: an internal error returns FRNN_ERR_PANIC.
 *   - Sizes past memory (a layer, its packed weights, a workspace, a stream, a thread count
 *     past 1024) give FRNN_ERR_ARGUMENT, the message naming what could not be allocated; the
 *     host process is never aborted (capi/tests/oversized.c runs under ulimit -v).
 *
 * Loss convention of backward: L = sum(y * dy) + sum(h_n * dh_n) + sum(c_n * dc_n), i.e. dy,
 * dh_n, dc_n are dL/dy, dL/dh_n, dL/dc_n (NULL = zeros).
 */
#ifndef FUSED_RNN_H
#define FUSED_RNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. */
#define FRNN_OK 0
#define FRNN_ERR_NULL 1     /* a required pointer is NULL, or NULL with a nonzero length */
#define FRNN_ERR_LENGTH 2   /* a buffer length does not match the dimensions */
#define FRNN_ERR_ARGUMENT 3 /* unknown cell, zero dimension, buffer this cell has no use for
                               (c0 for a GRU), misaligned or overlapping buffers, overflow */
#define FRNN_ERR_STATE 4    /* call out of order: backward without a training forward, or a
                               second backward without a new forward */
#define FRNN_ERR_FORMAT 5   /* safetensors data without the expected names/dtypes/shapes */
#define FRNN_ERR_PANIC 6    /* internal error; please report */

/* Cell kinds. */
#define FRNN_CELL_RNN_TANH 0         /* h' = tanh(W_ih x + b_ih + W_hh h + b_hh) */
#define FRNN_CELL_RNN_RELU 1         /* h' = relu(...) */
#define FRNN_CELL_LSTM 2             /* PyTorch nn.LSTM */
#define FRNN_CELL_GRU 3              /* PyTorch nn.GRU (reset after the recurrent matmul,
                                        ONNX linear_before_reset = 1) */
#define FRNN_CELL_GRU_RESET_BEFORE 4 /* classic GRU, h' = (1-z)*h + z*n with
                                        n = tanh(W_in x + b_in + W_hn (r*h) + b_hn) */

/* Opaque layer: parameters plus reusable workspaces. */
typedef struct frnn_layer frnn_layer;

/* Opaque stream: a copy of a layer prepared for one step at a time, with the state of B
 * sequences (see frnn_stream_create). */
typedef struct frnn_stream frnn_stream;

/* Message of the most recent failed call on this thread ("" if none). Never NULL; valid until
 * the next failing call on this thread. */
const char *frnn_last_error_message(void);

/* Creates a layer from parameters in PyTorch's layout (copied). w_ih_len must be
 * G*hidden*input, w_hh_len G*hidden*hidden, b_ih_len and b_hh_len G*hidden.
 * On success *out is a new handle to free with frnn_layer_free. */
int frnn_layer_create(int cell, size_t input_size, size_t hidden_size,
                      const float *w_ih, size_t w_ih_len,
                      const float *w_hh, size_t w_hh_len,
                      const float *b_ih, size_t b_ih_len,
                      const float *b_hh, size_t b_hh_len,
                      frnn_layer **out);

/* Creates a layer from a PyTorch state_dict saved as safetensors (bytes of the whole file):
 * parameters weight_ih_l{layer_index}, weight_hh_l..., bias_ih_l..., bias_hh_l..., with the
 * suffix _reverse when reverse != 0. Tensors may be F32 or F64 (F64 rounds to nearest f32).
 * The file does not record the cell kind: `cell` says which it is. Errors: FRNN_ERR_FORMAT
 * with the missing name or the expected and actual dtype/shape. */
int frnn_layer_from_safetensors(const uint8_t *bytes, size_t len, int cell,
                                size_t layer_index, int reverse, frnn_layer **out);

/* Frees a layer and joins its threads (frnn_layer_set_threads). NULL is a no-op. */
void frnn_layer_free(frnn_layer *layer);

/* Writes the layer's cell (FRNN_CELL_*), input width I and hidden width H; NULL outputs are
 * skipped. */
int frnn_layer_sizes(const frnn_layer *layer, int *cell, size_t *input_size,
                     size_t *hidden_size);

/* Runs the layer over seq_len = T steps of batch = B sequences.
 *   x    [T, B, I]  required
 *   h0   [B, H]     optional (NULL = zeros)
 *   c0   [B, H]     optional, LSTM only (must be NULL otherwise)
 *   y    [T, B, H]  required output
 *   h_n  [B, H]     optional output: final hidden state
 *   c_n  [B, H]     optional output, LSTM only: final cell state
 * training != 0 keeps what frnn_backward needs (in the handle, until the next accepted
 * training forward: a refused one leaves the pending backward pending); training = 0 keeps
 * nothing and does not disturb a pending backward. */
int frnn_forward(frnn_layer *layer, size_t seq_len, size_t batch, int training,
                 const float *x, size_t x_len,
                 const float *h0, size_t h0_len,
                 const float *c0, size_t c0_len,
                 float *y, size_t y_len,
                 float *h_n, size_t h_n_len,
                 float *c_n, size_t c_n_len);

/* Backpropagation through time over the last training forward (same T and B; x must be the
 * input that forward saw). Consumes it: a second backward needs a new training forward.
 *   dy [T, B, H], dh_n [B, H], dc_n [B, H] (LSTM): upstream gradients, optional (NULL = zeros)
 *   dx [T, B, I], dh0 [B, H], dc0 [B, H] (LSTM): input gradients, optional, overwritten
 *   dw_ih [G*H, I], dw_hh [G*H, H], db_ih [G*H], db_hh [G*H]: weight gradients, optional;
 *     overwritten when accumulate = 0, added to (grad += new) when accumulate != 0. */
int frnn_backward(frnn_layer *layer,
                  const float *x, size_t x_len,
                  const float *dy, size_t dy_len,
                  const float *dh_n, size_t dh_n_len,
                  const float *dc_n, size_t dc_n_len,
                  float *dx, size_t dx_len,
                  float *dh0, size_t dh0_len,
                  float *dc0, size_t dc0_len,
                  float *dw_ih, size_t dw_ih_len,
                  float *dw_hh, size_t dw_hh_len,
                  float *db_ih, size_t db_ih_len,
                  float *db_hh, size_t db_hh_len,
                  int accumulate);

/* Forward over a padded batch: B = lengths_len rows, row b valid for its first lengths[b]
 * steps (0 <= lengths[b] <= seq_len), x [T, B, I] with T = seq_len. As frnn_forward otherwise,
 * except: y is 0 at the padding, h_n and c_n hold each row's state after its own last step
 * (its initial state for length 0), and the padding of x is never read (NaN there changes
 * nothing). Each row's outputs are the bits it gives run alone. PyTorch's packed sequences
 * (pack_padded_sequence) without the sorting. training != 0 keeps what frnn_backward_padded
 * needs, until the next accepted training frnn_forward_padded (a refused one, even with other
 * lengths, leaves it pending); the padded and the fixed-length pending backward are kept
 * apart. The batch runs as one pass per distinct length over the rows still live (a padded
 * step is not computed); the workspace is reused while lengths and seq_len stay the same.
 * Errors: FRNN_ERR_NULL for NULL lengths, FRNN_ERR_ARGUMENT for a length past seq_len, no
 * rows or seq_len = 0. */
int frnn_forward_padded(frnn_layer *layer, size_t seq_len, const size_t *lengths,
                        size_t lengths_len, int training,
                        const float *x, size_t x_len,
                        const float *h0, size_t h0_len,
                        const float *c0, size_t c0_len,
                        float *y, size_t y_len,
                        float *h_n, size_t h_n_len,
                        float *c_n, size_t c_n_len);

/* Backward over the last training frnn_forward_padded, as frnn_backward otherwise: dy at the
 * padding is never read, dh_n and dc_n of a row enter at its last valid step, dx is 0 at the
 * padding. Consumes the forward: a second one needs a new frnn_forward_padded
 * (FRNN_ERR_STATE). */
int frnn_backward_padded(frnn_layer *layer,
                         const float *x, size_t x_len,
                         const float *dy, size_t dy_len,
                         const float *dh_n, size_t dh_n_len,
                         const float *dc_n, size_t dc_n_len,
                         float *dx, size_t dx_len,
                         float *dh0, size_t dh0_len,
                         float *dc0, size_t dc0_len,
                         float *dw_ih, size_t dw_ih_len,
                         float *dw_hh, size_t dw_hh_len,
                         float *db_ih, size_t db_ih_len,
                         float *db_hh, size_t db_hh_len,
                         int accumulate);

/* One streaming (inference) step for batch = B sequences: reads x_t [B, I] and the state
 * h [B, H] (and c [B, H], required for the LSTM, NULL otherwise) and overwrites the state with
 * the next one. Equal to frnn_forward with T = 1, h0 = h, c0 = c, y = h_n = new h. Does not
 * disturb a pending backward. Stateless, and on a layer with 2+ threads each call enters the
 * layer's thread pool, which can make it no faster, or slower, than one thread. For low
 * latency use a stream (frnn_stream_*), whose worker threads wait for the next step (timings:
 * BENCHMARKS.md). */
int frnn_step(frnn_layer *layer, size_t batch,
              const float *x_t, size_t x_len,
              float *h, size_t h_len,
              float *c, size_t c_len);

/* Sets how many threads the layer's calls use: 1 (the default) runs everything on the calling
 * thread; more starts a pool of that many (batch rows, or hidden-unit slices at small batch,
 * per thread; results bit-identical for every count). Streams created afterwards take the
 * count. Errors: FRNN_ERR_ARGUMENT for 0, for more than 1024 (MAX_THREADS of the Rust crate),
 * or if the threads cannot be started. */
int frnn_layer_set_threads(frnn_layer *layer, size_t threads);

/* Creates a stream of batch = B sequences over a copy of the layer's parameters and thread
 * count, state zero. Its steps allocate nothing and equal frnn_forward over the same inputs bit
 * for bit. On a layer with 2+ threads, a step with fewer than 8 rows and enough work (e.g. an
 * LSTM with I = H = 128 and up) is split by hidden units over worker threads the stream owns,
 * which spin for a while after each step (frnn_stream_set_spin_window) and, when steps come
 * with pauses between them, compute the next step's recurrent half in the pause (step times:
 * BENCHMARKS.md). On success *out is a new handle to free with frnn_stream_free;
 * the layer may be freed independently. */
int frnn_stream_create(const frnn_layer *layer, size_t batch, frnn_stream **out);

/* Frees a stream and joins its worker threads. NULL is a no-op. */
void frnn_stream_free(frnn_stream *stream);

/* Advances every sequence by one step on x_t [B, I] (required) and writes the new hidden
 * state to h [B, H] (optional output; NULL to skip). */
int frnn_stream_step(frnn_stream *stream, const float *x_t, size_t x_len,
                     float *h, size_t h_len);

/* Replaces the state: h [B, H] (required) and c [B, H] (required for the LSTM, NULL
 * otherwise: FRNN_ERR_ARGUMENT). */
int frnn_stream_set_state(frnn_stream *stream, const float *h, size_t h_len,
                          const float *c, size_t c_len);

/* Copies the state out: h [B, H] and (LSTM only) c [B, H], each optional (NULL to skip). */
int frnn_stream_get_state(const frnn_stream *stream, float *h, size_t h_len,
                          float *c, size_t c_len);

/* Sets every state of the stream to zero. */
int frnn_stream_reset(frnn_stream *stream);

/* How long the stream's worker threads (if its steps are split) spin after each step waiting
 * for the next before they park, in microseconds (200 by default). A step that comes while
 * they spin runs on all of them; after they parked, steps run on the calling thread alone
 * until they come within the window of each other again. A longer window trades a busy core
 * for latency when steps come at a steady rate further apart; 0 parks them right away. */
int frnn_stream_set_spin_window(frnn_stream *stream, uint64_t microseconds);

#ifdef __cplusplus
}
#endif

#endif /* FUSED_RNN_H */
