/* C test of the fused-rnn C API, built and run by capi/tests/c_test.rs.
 *
 * case_data.h (generated) holds, per cell, the weights, inputs and every output and gradient
 * the Rust API computed, as f32 bit patterns. Through the C API this program runs forward
 * (training), backward (overwrite, then accumulate; and after refused training forwards of
 * other sizes, which leave the pending backward pending), streaming steps and loading from
 * safetensors, and requires bitwise equality; then it checks the error paths (wrong length,
 * NULL pointers, unknown cell, wrong call order, overlapping buffers, bad files). Then a
 * stream (frnn_stream_*) on two threads, against a one-thread Rust stream. */
#define _POSIX_C_SOURCE 199309L /* nanosleep */
#include "fused_rnn.h"
#include "case_data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures = 0;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            failures++;                                    \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);    \
            printf(__VA_ARGS__);                           \
            printf("\n");                                  \
        }                                                  \
    } while (0)

/* A float copy of a bit-pattern array (NULL for an empty one). */
static float *floats(arr a) {
    if (a.n == 0) return NULL;
    float *f = malloc(a.n * sizeof(float));
    memcpy(f, a.p, a.n * sizeof(float));
    return f;
}

static float *zeros(size_t n) { return n ? calloc(n, sizeof(float)) : NULL; }

/* A quiet NaN, from its bits (no libm needed). */
static float nan_f(void) {
    uint32_t u = 0x7fc00000u;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* n NaNs (NULL for none): an output buffer that shows whether it was written. */
static float *nans(size_t n) {
    float *f = zeros(n);
    for (size_t i = 0; i < n; i++) f[i] = nan_f();
    return f;
}

/* Bitwise equality of n floats with the expected bits. */
static void same(const char *ctx, const char *what, const float *got, arr want) {
    for (size_t i = 0; i < want.n; i++) {
        uint32_t g;
        memcpy(&g, &got[i], sizeof g);
        if (g != want.p[i]) {
            float w;
            memcpy(&w, &want.p[i], sizeof w);
            CHECK(0, "%s %s[%zu]: got %.9g, want %.9g", ctx, what, i, got[i], w);
            return;
        }
    }
}

static const char *cell_name(int cell) {
    switch (cell) {
    case FRNN_CELL_RNN_TANH: return "rnn_tanh";
    case FRNN_CELL_LSTM: return "lstm";
    case FRNN_CELL_GRU: return "gru";
    case FRNN_CELL_GRU_RESET_BEFORE: return "gru_reset_before";
    default: return "?";
    }
}

static void run_case(const case_data *c) {
    const char *ctx = cell_name(c->cell);
    float *w_ih = floats(c->w_ih), *w_hh = floats(c->w_hh);
    float *b_ih = floats(c->b_ih), *b_hh = floats(c->b_hh);
    float *x = floats(c->x), *h0 = floats(c->h0), *c0 = floats(c->c0);
    float *dy = floats(c->dy), *dh_n = floats(c->dh_n), *dc_n = floats(c->dc_n);
    size_t yn = c->y.n, sn = c->h_n.n, cn = c->c_n.n;
    float *y = zeros(yn), *h_n = zeros(sn), *c_n = zeros(cn);
    float *dx = zeros(c->dx.n), *dh0 = zeros(c->dh0.n), *dc0 = zeros(c->dc0.n);
    float *dw_ih = zeros(c->dw_ih.n), *dw_hh = zeros(c->dw_hh.n);
    float *db_ih = zeros(c->db_ih.n), *db_hh = zeros(c->db_hh.n);

    frnn_layer *l = NULL;
    int rc = frnn_layer_create(c->cell, c->I, c->H, w_ih, c->w_ih.n, w_hh, c->w_hh.n, b_ih,
                               c->b_ih.n, b_hh, c->b_hh.n, &l);
    CHECK(rc == FRNN_OK && l != NULL, "%s create: %d %s", ctx, rc, frnn_last_error_message());
    if (rc != FRNN_OK) return;

    int cell = -1;
    size_t in = 0, hid = 0;
    rc = frnn_layer_sizes(l, &cell, &in, &hid);
    CHECK(rc == FRNN_OK && cell == c->cell && in == c->I && hid == c->H, "%s sizes", ctx);
    /* NULL outputs are skipped, not refused. */
    hid = 0;
    rc = frnn_layer_sizes(l, NULL, NULL, &hid);
    CHECK(rc == FRNN_OK && hid == c->H, "%s sizes with NULL outputs: %d %s", ctx, rc,
          frnn_last_error_message());

    /* Forward (training) and backward (overwrite). */
    rc = frnn_forward(l, c->T, c->B, 1, x, c->x.n, h0, c->h0.n, c0, c->c0.n, y, yn, h_n, sn,
                      c_n, cn);
    CHECK(rc == FRNN_OK, "%s forward: %d %s", ctx, rc, frnn_last_error_message());
    same(ctx, "y", y, c->y);
    same(ctx, "h_n", h_n, c->h_n);
    same(ctx, "c_n", c_n, c->c_n);
    rc = frnn_backward(l, x, c->x.n, dy, c->dy.n, dh_n, c->dh_n.n, dc_n, c->dc_n.n, dx,
                       c->dx.n, dh0, c->dh0.n, dc0, c->dc0.n, dw_ih, c->dw_ih.n, dw_hh,
                       c->dw_hh.n, db_ih, c->db_ih.n, db_hh, c->db_hh.n, 0);
    CHECK(rc == FRNN_OK, "%s backward: %d %s", ctx, rc, frnn_last_error_message());
    same(ctx, "dx", dx, c->dx);
    same(ctx, "dh0", dh0, c->dh0);
    same(ctx, "dc0", dc0, c->dc0);
    same(ctx, "dw_ih", dw_ih, c->dw_ih);
    same(ctx, "dw_hh", dw_hh, c->dw_hh);
    same(ctx, "db_ih", db_ih, c->db_ih);
    same(ctx, "db_hh", db_hh, c->db_hh);

    /* A second backward needs a new forward. */
    rc = frnn_backward(l, x, c->x.n, dy, c->dy.n, NULL, 0, NULL, 0, NULL, 0, NULL, 0, NULL, 0,
                       NULL, 0, NULL, 0, NULL, 0, NULL, 0, 0);
    CHECK(rc == FRNN_ERR_STATE, "%s second backward: %d", ctx, rc);

    /* Forward again, backward accumulating into the same gradient buffers. */
    rc = frnn_forward(l, c->T, c->B, 1, x, c->x.n, h0, c->h0.n, c0, c->c0.n, y, yn, NULL, 0,
                      NULL, 0);
    CHECK(rc == FRNN_OK, "%s forward 2: %d %s", ctx, rc, frnn_last_error_message());
    rc = frnn_backward(l, x, c->x.n, dy, c->dy.n, dh_n, c->dh_n.n, dc_n, c->dc_n.n, NULL, 0,
                       NULL, 0, NULL, 0, dw_ih, c->dw_ih.n, dw_hh, c->dw_hh.n, db_ih,
                       c->db_ih.n, db_hh, c->db_hh.n, 1);
    CHECK(rc == FRNN_OK, "%s backward accumulate: %d %s", ctx, rc, frnn_last_error_message());
    same(ctx, "acc dw_ih", dw_ih, c->acc_dw_ih);
    same(ctx, "acc dw_hh", dw_hh, c->acc_dw_hh);
    same(ctx, "acc db_ih", db_ih, c->acc_db_ih);
    same(ctx, "acc db_hh", db_hh, c->acc_db_hh);

    /* A refused training forward changes nothing in the handle: after one with another T (x
     * too short for it) and one with another B (y too short for it), the backward of the
     * forward before them still runs and gives the clean forward + backward's gradients. */
    {
        rc = frnn_forward(l, c->T, c->B, 1, x, c->x.n, h0, c->h0.n, c0, c->c0.n, y, yn, NULL,
                          0, NULL, 0);
        CHECK(rc == FRNN_OK, "%s forward before refused: %d %s", ctx, rc,
              frnn_last_error_message());
        float *ry = zeros((c->T + 1) * (c->B + 1) * c->H);
        rc = frnn_forward(l, c->T + 1, c->B, 1, x, c->x.n, NULL, 0, NULL, 0, ry,
                          (c->T + 1) * c->B * c->H, NULL, 0, NULL, 0);
        CHECK(rc == FRNN_ERR_LENGTH && strstr(frnn_last_error_message(), "x [T, B, I]"),
              "%s refused forward, T + 1: %d %s", ctx, rc, frnn_last_error_message());
        rc = frnn_forward(l, c->T, c->B + 1, 1, x, c->x.n, NULL, 0, NULL, 0, ry, yn, NULL, 0,
                          NULL, 0);
        CHECK(rc == FRNN_ERR_LENGTH, "%s refused forward, B + 1: %d %s", ctx, rc,
              frnn_last_error_message());
        float *rdx = nans(c->dx.n), *rdh0 = nans(c->dh0.n), *rdc0 = nans(c->dc0.n);
        float *rdw_ih = nans(c->dw_ih.n), *rdw_hh = nans(c->dw_hh.n);
        float *rdb_ih = nans(c->db_ih.n), *rdb_hh = nans(c->db_hh.n);
        rc = frnn_backward(l, x, c->x.n, dy, c->dy.n, dh_n, c->dh_n.n, dc_n, c->dc_n.n, rdx,
                           c->dx.n, rdh0, c->dh0.n, rdc0, c->dc0.n, rdw_ih, c->dw_ih.n,
                           rdw_hh, c->dw_hh.n, rdb_ih, c->db_ih.n, rdb_hh, c->db_hh.n, 0);
        CHECK(rc == FRNN_OK, "%s backward after refused forwards: %d %s", ctx, rc,
              frnn_last_error_message());
        same(ctx, "dx after refused", rdx, c->dx);
        same(ctx, "dh0 after refused", rdh0, c->dh0);
        same(ctx, "dc0 after refused", rdc0, c->dc0);
        same(ctx, "dw_ih after refused", rdw_ih, c->dw_ih);
        same(ctx, "dw_hh after refused", rdw_hh, c->dw_hh);
        same(ctx, "db_ih after refused", rdb_ih, c->db_ih);
        same(ctx, "db_hh after refused", rdb_hh, c->db_hh);
        free(ry); free(rdx); free(rdh0); free(rdc0);
        free(rdw_ih); free(rdw_hh); free(rdb_ih); free(rdb_hh);
    }

    /* Streaming: T steps from (h0, c0), state in place. */
    float *h = floats(c->h0), *cs = floats(c->c0);
    size_t xs = c->B * c->I;
    for (size_t t = 0; t < c->T; t++) {
        rc = frnn_step(l, c->B, x + t * xs, xs, h, c->h0.n, cs, c->c0.n);
        CHECK(rc == FRNN_OK, "%s step %zu: %d %s", ctx, t, rc, frnn_last_error_message());
    }
    same(ctx, "step h", h, c->step_h);
    same(ctx, "step c", cs, c->step_c);

    /* A padded batch, rows of lengths 4, 0, 2 (c_test.rs), NaN in the padding of x and dy. */
    {
        size_t lengths[3] = {4, 0, 2}, nb = sizeof lengths / sizeof lengths[0];
        CHECK(c->B == nb && c->T == 4, "%s padded case dims", ctx);
        float *px = floats(c->x), *pdy = floats(c->dy);
        for (size_t t = 0; t < c->T; t++) {
            for (size_t r = 0; r < nb; r++) {
                if (t < lengths[r]) continue;
                for (size_t k = 0; k < c->I; k++) px[(t * nb + r) * c->I + k] = nan_f();
                for (size_t k = 0; k < c->H; k++) pdy[(t * nb + r) * c->H + k] = nan_f();
            }
        }
        float *py = zeros(yn), *phn = zeros(sn), *pcn = zeros(cn);
        float *pdx = zeros(c->dx.n), *pdh0 = zeros(sn), *pdc0 = zeros(cn);
        rc = frnn_forward_padded(l, c->T, lengths, nb, 1, px, c->x.n, h0, c->h0.n, c0,
                                 c->c0.n, py, yn, phn, sn, pcn, cn);
        CHECK(rc == FRNN_OK, "%s forward_padded: %d %s", ctx, rc, frnn_last_error_message());
        same(ctx, "padded y", py, c->pad_y);
        same(ctx, "padded h_n", phn, c->pad_h_n);
        same(ctx, "padded c_n", pcn, c->pad_c_n);
        /* Refused (y too short) with other lengths: the pending backward_padded stays. */
        size_t other[3] = {3, 1, 2};
        rc = frnn_forward_padded(l, c->T, other, nb, 1, px, c->x.n, NULL, 0, NULL, 0, py,
                                 yn - 1, NULL, 0, NULL, 0);
        CHECK(rc == FRNN_ERR_LENGTH, "%s refused forward_padded: %d %s", ctx, rc,
              frnn_last_error_message());
        rc = frnn_backward_padded(l, px, c->x.n, pdy, c->dy.n, dh_n, c->dh_n.n, dc_n,
                                  c->dc_n.n, pdx, c->dx.n, pdh0, sn, pdc0, cn, dw_ih,
                                  c->dw_ih.n, dw_hh, c->dw_hh.n, db_ih, c->db_ih.n, db_hh,
                                  c->db_hh.n, 0);
        CHECK(rc == FRNN_OK, "%s backward_padded: %d %s", ctx, rc, frnn_last_error_message());
        same(ctx, "padded dx", pdx, c->pad_dx);
        same(ctx, "padded dh0", pdh0, c->pad_dh0);
        same(ctx, "padded dc0", pdc0, c->pad_dc0);
        same(ctx, "padded dw_ih", dw_ih, c->pad_dw_ih);
        same(ctx, "padded dw_hh", dw_hh, c->pad_dw_hh);
        same(ctx, "padded db_ih", db_ih, c->pad_db_ih);
        same(ctx, "padded db_hh", db_hh, c->pad_db_hh);
        /* Consumed; and the fixed-length backward has no pending forward of its own here. */
        rc = frnn_backward_padded(l, px, c->x.n, NULL, 0, NULL, 0, NULL, 0, NULL, 0, NULL, 0,
                                  NULL, 0, NULL, 0, NULL, 0, NULL, 0, NULL, 0, 0);
        CHECK(rc == FRNN_ERR_STATE, "%s second backward_padded: %d", ctx, rc);
        size_t past[3] = {4, 5, 2};
        rc = frnn_forward_padded(l, c->T, past, nb, 0, px, c->x.n, NULL, 0, NULL, 0, py, yn,
                                 NULL, 0, NULL, 0);
        CHECK(rc == FRNN_ERR_ARGUMENT && strstr(frnn_last_error_message(), "past seq_len"),
              "%s length past T: %d %s", ctx, rc, frnn_last_error_message());
        rc = frnn_forward_padded(l, c->T, NULL, nb, 0, px, c->x.n, NULL, 0, NULL, 0, py, yn,
                                 NULL, 0, NULL, 0);
        CHECK(rc == FRNN_ERR_NULL, "%s NULL lengths: %d", ctx, rc);
        /* lengths in the memory of an output: an overlap like any other. */
        size_t *in_y = (size_t *)(void *)py;
        in_y[0] = 4; in_y[1] = 0; in_y[2] = 2;
        rc = frnn_forward_padded(l, c->T, in_y, nb, 0, px, c->x.n, NULL, 0, NULL, 0, py, yn,
                                 NULL, 0, NULL, 0);
        CHECK(rc == FRNN_ERR_ARGUMENT && strstr(frnn_last_error_message(), "overlap"),
              "%s lengths overlapping y: %d %s", ctx, rc, frnn_last_error_message());
        free(px); free(pdy); free(py); free(phn); free(pcn); free(pdx); free(pdh0); free(pdc0);
    }

    /* The same layer from its safetensors state_dict: inference forward gives the same y. */
    frnn_layer *l2 = NULL;
    rc = frnn_layer_from_safetensors(c->st, c->st_len, c->cell, 0, 0, &l2);
    CHECK(rc == FRNN_OK, "%s from_safetensors: %d %s", ctx, rc, frnn_last_error_message());
    if (rc == FRNN_OK) {
        memset(y, 0, yn * sizeof(float));
        rc = frnn_forward(l2, c->T, c->B, 0, x, c->x.n, h0, c->h0.n, c0, c->c0.n, y, yn, NULL,
                          0, NULL, 0);
        CHECK(rc == FRNN_OK, "%s forward (loaded): %d %s", ctx, rc, frnn_last_error_message());
        same(ctx, "y (loaded)", y, c->y);
    }
    frnn_layer_free(l2);

    /* Error paths. */
    rc = frnn_forward(l, c->T, c->B, 0, x, c->x.n - 1, h0, c->h0.n, NULL, 0, y, yn, NULL, 0,
                      NULL, 0);
    CHECK(rc == FRNN_ERR_LENGTH && strstr(frnn_last_error_message(), "x [T, B, I]"),
          "%s short x: %d %s", ctx, rc, frnn_last_error_message());
    rc = frnn_forward(l, c->T, c->B, 0, x, c->x.n, h0, c->h0.n, NULL, 0, y, yn - 1, NULL, 0,
                      NULL, 0);
    CHECK(rc == FRNN_ERR_LENGTH && strstr(frnn_last_error_message(), "expected length"),
          "%s short y: %d %s", ctx, rc, frnn_last_error_message());
    rc = frnn_forward(l, c->T, c->B, 0, NULL, c->x.n, NULL, 0, NULL, 0, y, yn, NULL, 0, NULL,
                      0);
    CHECK(rc == FRNN_ERR_NULL && strstr(frnn_last_error_message(), "x is NULL"),
          "%s NULL x: %d %s", ctx, rc, frnn_last_error_message());
    rc = frnn_forward(l, c->T, c->B, 0, x, c->x.n, NULL, c->h0.n, NULL, 0, y, yn, NULL, 0,
                      NULL, 0);
    CHECK(rc == FRNN_ERR_NULL, "%s NULL h0 with a length: %d", ctx, rc);
    rc = frnn_forward(l, 0, c->B, 0, x, 0, NULL, 0, NULL, 0, y, 0, NULL, 0, NULL, 0);
    CHECK(rc == FRNN_ERR_ARGUMENT, "%s T = 0: %d %s", ctx, rc, frnn_last_error_message());
    /* y overlapping x. */
    float *both = zeros(c->x.n + yn);
    rc = frnn_forward(l, c->T, c->B, 0, both, c->x.n, NULL, 0, NULL, 0, both + 1, yn, NULL, 0,
                      NULL, 0);
    CHECK(rc == FRNN_ERR_ARGUMENT && strstr(frnn_last_error_message(), "overlap"),
          "%s overlap: %d %s", ctx, rc, frnn_last_error_message());
    free(both);
    if (c->c0.n == 0) {
        /* A cell state for a cell without one. */
        float dummy[64] = {0};
        rc = frnn_forward(l, c->T, c->B, 0, x, c->x.n, NULL, 0, dummy, sn, y, yn, NULL, 0,
                          NULL, 0);
        CHECK(rc == FRNN_ERR_ARGUMENT && strstr(frnn_last_error_message(), "c0"),
              "%s c0 given: %d %s", ctx, rc, frnn_last_error_message());
        rc = frnn_step(l, c->B, x, xs, h, sn, dummy, sn);
        CHECK(rc == FRNN_ERR_ARGUMENT, "%s step with c: %d", ctx, rc);
    } else {
        rc = frnn_step(l, c->B, x, xs, h, sn, NULL, 0);
        CHECK(rc == FRNN_ERR_NULL, "%s LSTM step without c: %d", ctx, rc);
    }
    frnn_layer_free(l);

    /* Backward on a fresh layer. */
    frnn_layer *l3 = NULL;
    rc = frnn_layer_create(c->cell, c->I, c->H, w_ih, c->w_ih.n, w_hh, c->w_hh.n, b_ih,
                           c->b_ih.n, b_hh, c->b_hh.n, &l3);
    CHECK(rc == FRNN_OK, "%s create 3", ctx);
    rc = frnn_backward(l3, x, c->x.n, NULL, 0, NULL, 0, NULL, 0, NULL, 0, NULL, 0, NULL, 0,
                       NULL, 0, NULL, 0, NULL, 0, NULL, 0, 0);
    CHECK(rc == FRNN_ERR_STATE && strstr(frnn_last_error_message(), "training forward"),
          "%s backward first: %d %s", ctx, rc, frnn_last_error_message());
    frnn_layer_free(l3);

    /* Wrong weight length at creation. */
    frnn_layer *bad = NULL;
    rc = frnn_layer_create(c->cell, c->I, c->H, w_ih, c->w_ih.n - 1, w_hh, c->w_hh.n, b_ih,
                           c->b_ih.n, b_hh, c->b_hh.n, &bad);
    CHECK(rc == FRNN_ERR_LENGTH && bad == NULL && strstr(frnn_last_error_message(), "weight_ih"),
          "%s short w_ih: %d %s", ctx, rc, frnn_last_error_message());
    /* The wrong layer index in the file. */
    rc = frnn_layer_from_safetensors(c->st, c->st_len, c->cell, 1, 0, &bad);
    CHECK(rc == FRNN_ERR_FORMAT && strstr(frnn_last_error_message(), "_l1"),
          "%s layer 1: %d %s", ctx, rc, frnn_last_error_message());

    free(w_ih); free(w_hh); free(b_ih); free(b_hh); free(x); free(h0); free(c0); free(dy);
    free(dh_n); free(dc_n); free(y); free(h_n); free(c_n); free(dx); free(dh0); free(dc0);
    free(dw_ih); free(dw_hh); free(db_ih); free(db_hh); free(h); free(cs);
    printf("%s: checked\n", ctx);
}

/* c_test.rs's `values(seed, n)` scaled by `scale` in f32: the same bits. */
static void gen(uint64_t seed, size_t n, float scale, float *out) {
    uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    for (size_t k = 0; k < n; k++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        out[k] = (((float)(s >> 40) / (float)(1ULL << 24)) * 2.0f - 1.0f) * scale;
    }
}

static void pause_us(long us) {
    struct timespec ts = {0, us * 1000L};
    nanosleep(&ts, NULL);
}

/* A two-thread stream (an LSTM large enough for its steps to be split over a worker thread)
 * against the states a one-thread Rust stream computed, bit for bit; most steps come after a
 * pause, in which the worker computes the next step's recurrent half. Then its error paths. */
static void check_stream(void) {
    const char *ctx = "stream";
    enum { I = STREAM_I, H = STREAM_H, G = 4 * STREAM_H, T = STREAM_T };
    float *w_ih = malloc(sizeof(float) * G * I), *w_hh = malloc(sizeof(float) * G * H);
    float b_ih[G], b_hh[G], x[T * I], h0[H], c0[H], h[H], c[H];
    gen(STREAM_SEED + 1, G * I, 0.05f, w_ih);
    gen(STREAM_SEED + 2, G * H, 0.05f, w_hh);
    gen(STREAM_SEED + 3, G, 0.05f, b_ih);
    gen(STREAM_SEED + 4, G, 0.05f, b_hh);
    gen(STREAM_SEED + 5, T * I, 1.0f, x);
    gen(STREAM_SEED + 6, H, 1.0f, h0);
    gen(STREAM_SEED + 7, H, 1.0f, c0);
    frnn_layer *l = NULL;
    int rc = frnn_layer_create(FRNN_CELL_LSTM, I, H, w_ih, G * I, w_hh, G * H, b_ih, G, b_hh, G,
                               &l);
    CHECK(rc == FRNN_OK, "%s create: %d %s", ctx, rc, frnn_last_error_message());
    rc = frnn_layer_set_threads(l, 0);
    CHECK(rc == FRNN_ERR_ARGUMENT && strstr(frnn_last_error_message(), "threads"),
          "%s 0 threads: %d %s", ctx, rc, frnn_last_error_message());
    rc = frnn_layer_set_threads(l, 2);
    CHECK(rc == FRNN_OK, "%s 2 threads: %d %s", ctx, rc, frnn_last_error_message());
    frnn_stream *s = NULL;
    rc = frnn_stream_create(l, 0, &s);
    CHECK(rc == FRNN_ERR_ARGUMENT && s == NULL, "%s B = 0: %d %s", ctx, rc,
          frnn_last_error_message());
    rc = frnn_stream_create(l, 1, &s);
    CHECK(rc == FRNN_OK && s != NULL, "%s stream create: %d %s", ctx, rc,
          frnn_last_error_message());
    /* The stream holds its own copy of the layer. */
    frnn_layer_free(l);
    if (s == NULL) return;
    rc = frnn_stream_set_spin_window(s, 50000);
    CHECK(rc == FRNN_OK, "%s spin window: %d", ctx, rc);
    for (size_t t = 0; t < T; t++) {
        if (t != 0 && t != 3) pause_us(300);
        rc = frnn_stream_step(s, x + t * I, I, h, H);
        CHECK(rc == FRNN_OK, "%s step %zu: %d %s", ctx, t, rc, frnn_last_error_message());
        char what[32];
        snprintf(what, sizeof what, "step %zu", t);
        same(ctx, what, h, (arr){stream_h + t * H, H});
    }
    rc = frnn_stream_get_state(s, NULL, 0, c, H);
    CHECK(rc == FRNN_OK, "%s get c: %d %s", ctx, rc, frnn_last_error_message());
    same(ctx, "c after the steps", c, (arr){stream_c_end, H});
    memset(h, 0, sizeof h);
    rc = frnn_stream_get_state(s, h, H, NULL, 0);
    CHECK(rc == FRNN_OK, "%s get h: %d %s", ctx, rc, frnn_last_error_message());
    same(ctx, "h after the steps", h, (arr){stream_h + (T - 1) * H, H});
    rc = frnn_stream_set_state(s, h0, H, c0, H);
    CHECK(rc == FRNN_OK, "%s set state: %d %s", ctx, rc, frnn_last_error_message());
    pause_us(300);
    rc = frnn_stream_step(s, x, I, h, H);
    CHECK(rc == FRNN_OK, "%s step after set_state: %d", ctx, rc);
    same(ctx, "h after set_state", h, (arr){stream_h_after_set, H});
    rc = frnn_stream_reset(s);
    CHECK(rc == FRNN_OK, "%s reset: %d", ctx, rc);
    pause_us(300);
    rc = frnn_stream_step(s, x, I, h, H);
    CHECK(rc == FRNN_OK, "%s step after reset: %d", ctx, rc);
    same(ctx, "h after reset", h, (arr){stream_h_after_reset, H});

    /* Error paths. */
    rc = frnn_stream_step(s, x, I - 1, h, H);
    CHECK(rc == FRNN_ERR_LENGTH && strstr(frnn_last_error_message(), "x_t [B, I]"),
          "%s short x_t: %d %s", ctx, rc, frnn_last_error_message());
    rc = frnn_stream_step(s, x, I, h, H + 1);
    CHECK(rc == FRNN_ERR_LENGTH && strstr(frnn_last_error_message(), "h [B, H]"),
          "%s long h: %d %s", ctx, rc, frnn_last_error_message());
    rc = frnn_stream_step(s, x, I, x + 1, H);
    CHECK(rc == FRNN_ERR_ARGUMENT && strstr(frnn_last_error_message(), "overlap"),
          "%s overlapping x_t and h: %d %s", ctx, rc, frnn_last_error_message());
    rc = frnn_stream_step(s, NULL, I, h, H);
    CHECK(rc == FRNN_ERR_NULL && strstr(frnn_last_error_message(), "x_t is NULL"),
          "%s NULL x_t: %d %s", ctx, rc, frnn_last_error_message());
    rc = frnn_stream_step(s, x, I, NULL, 0);
    CHECK(rc == FRNN_OK, "%s step without h: %d %s", ctx, rc, frnn_last_error_message());
    rc = frnn_stream_set_state(s, h0, H, NULL, 0);
    CHECK(rc == FRNN_ERR_ARGUMENT && strstr(frnn_last_error_message(), "c"),
          "%s LSTM state without c: %d %s", ctx, rc, frnn_last_error_message());
    rc = frnn_stream_set_state(s, h0, H - 1, c0, H);
    CHECK(rc == FRNN_ERR_LENGTH, "%s short h state: %d %s", ctx, rc, frnn_last_error_message());
    rc = frnn_stream_get_state(s, h, H - 1, NULL, 0);
    CHECK(rc == FRNN_ERR_LENGTH && strstr(frnn_last_error_message(), "h [B, H]"),
          "%s short h out: %d %s", ctx, rc, frnn_last_error_message());
    rc = frnn_stream_step(NULL, x, I, h, H);
    CHECK(rc == FRNN_ERR_NULL && strstr(frnn_last_error_message(), "stream is NULL"),
          "%s NULL stream step: %d", ctx, rc);
    CHECK(frnn_stream_reset(NULL) == FRNN_ERR_NULL, "%s NULL stream reset", ctx);
    CHECK(frnn_stream_set_spin_window(NULL, 1) == FRNN_ERR_NULL, "%s NULL stream window", ctx);
    CHECK(frnn_stream_set_state(NULL, h0, H, c0, H) == FRNN_ERR_NULL, "%s NULL set_state", ctx);
    CHECK(frnn_stream_get_state(NULL, h, H, c, H) == FRNN_ERR_NULL, "%s NULL get_state", ctx);
    CHECK(frnn_stream_create(NULL, 1, &s) == FRNN_ERR_NULL, "%s NULL layer create", ctx);
    CHECK(frnn_layer_set_threads(NULL, 2) == FRNN_ERR_NULL, "%s NULL layer threads", ctx);
    frnn_stream_free(s);
    frnn_stream_free(NULL);
    free(w_ih);
    free(w_hh);
    printf("%s: checked\n", ctx);
}

int main(void) {
    CHECK(frnn_last_error_message() != NULL && frnn_last_error_message()[0] == '\0',
          "no error yet");
    for (size_t k = 0; k < N_CASES; k++) run_case(&CASES[k]);
    check_stream();

    /* Calls that need no case. */
    frnn_layer *l = NULL;
    float w[4] = {0};
    int rc = frnn_layer_create(9, 1, 1, w, 1, w, 1, w, 1, w, 1, &l);
    CHECK(rc == FRNN_ERR_ARGUMENT && strstr(frnn_last_error_message(), "unknown cell"),
          "unknown cell: %d", rc);
    rc = frnn_layer_create(FRNN_CELL_RNN_TANH, 1, 1, w, 1, w, 1, w, 1, w, 1, NULL);
    CHECK(rc == FRNN_ERR_NULL, "NULL out: %d", rc);
    rc = frnn_layer_create(FRNN_CELL_RNN_TANH, 1, 1, NULL, 1, w, 1, w, 1, w, 1, &l);
    CHECK(rc == FRNN_ERR_NULL && strstr(frnn_last_error_message(), "w_ih"), "NULL w_ih: %d",
          rc);
    rc = frnn_layer_create(FRNN_CELL_RNN_TANH, 1, 0, w, 0, w, 0, w, 0, w, 0, &l);
    CHECK(rc == FRNN_ERR_ARGUMENT, "H = 0: %d %s", rc, frnn_last_error_message());
    rc = frnn_forward(NULL, 1, 1, 0, w, 1, NULL, 0, NULL, 0, w + 1, 1, NULL, 0, NULL, 0);
    CHECK(rc == FRNN_ERR_NULL && strstr(frnn_last_error_message(), "layer is NULL"),
          "NULL layer: %d", rc);
    rc = frnn_step(NULL, 1, w, 1, w + 1, 1, NULL, 0);
    CHECK(rc == FRNN_ERR_NULL, "NULL layer step: %d", rc);
    rc = frnn_layer_sizes(NULL, NULL, NULL, NULL);
    CHECK(rc == FRNN_ERR_NULL, "NULL layer sizes: %d", rc);
    const uint8_t junk[16] = "not safetensors";
    rc = frnn_layer_from_safetensors(junk, sizeof junk, FRNN_CELL_LSTM, 0, 0, &l);
    CHECK(rc == FRNN_ERR_FORMAT && strstr(frnn_last_error_message(), "safetensors"),
          "junk file: %d %s", rc, frnn_last_error_message());
    rc = frnn_layer_from_safetensors(NULL, 10, FRNN_CELL_LSTM, 0, 0, &l);
    CHECK(rc == FRNN_ERR_NULL, "NULL bytes: %d", rc);
    frnn_layer_free(NULL);

    if (failures) {
        printf("%d C API check(s) failed\n", failures);
        return 1;
    }
    printf("all C API checks passed\n");
    return 0;
}
