/* C test of the fused-rnn C API, built and run by capi/tests/c_test.rs.
 *
 * case_data.h (generated) holds, per cell, the weights, inputs and every output and gradient
 * the Rust API computed, as f32 bit patterns. Through the C API this program runs forward
 * (training), backward (overwrite, then accumulate), streaming steps and loading from
 * safetensors, and requires bitwise equality; then it checks the error paths (wrong length,
 * NULL pointers, unknown cell, wrong call order, overlapping buffers, bad files). */
#include "fused_rnn.h"
#include "case_data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

    /* Streaming: T steps from (h0, c0), state in place. */
    float *h = floats(c->h0), *cs = floats(c->c0);
    size_t xs = c->B * c->I;
    for (size_t t = 0; t < c->T; t++) {
        rc = frnn_step(l, c->B, x + t * xs, xs, h, c->h0.n, cs, c->c0.n);
        CHECK(rc == FRNN_OK, "%s step %zu: %d %s", ctx, t, rc, frnn_last_error_message());
    }
    same(ctx, "step h", h, c->step_h);
    same(ctx, "step c", cs, c->step_c);

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

int main(void) {
    CHECK(frnn_last_error_message() != NULL && frnn_last_error_message()[0] == '\0',
          "no error yet");
    for (size_t k = 0; k < N_CASES; k++) run_case(&CASES[k]);

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
