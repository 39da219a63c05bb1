/* The C host survives requests past memory: run under `ulimit -v` (1.5 GB) by c_test.rs, every
 * call below must return an error code (FRNN_ERR_ARGUMENT), never abort the process. */
#include <stdio.h>
#include <stdlib.h>

#include "fused_rnn.h"

static int failures = 0;

static void expect(const char *what, int got, int want) {
    if (got != want) {
        printf("FAIL %s: got %d, want %d (%s)\n", what, got, want, frnn_last_error_message());
        failures++;
    } else {
        printf("ok %s: %s\n", what, frnn_last_error_message());
    }
}

int main(void) {
    /* An RNN with I = 2^25, H = 1: 128 MiB of weights, whose packed copy (16-column panels)
     * is 2 GiB, past the limit. */
    size_t input = (size_t)1 << 25;
    float *w_ih = calloc(input, sizeof(float));
    float w_hh = 0.5f, b_ih = 0.0f, b_hh = 0.0f;
    if (!w_ih) {
        printf("FAIL could not allocate the test's own weights\n");
        return 1;
    }
    frnn_layer *layer = NULL;
    int rc = frnn_layer_create(FRNN_CELL_RNN_TANH, input, 1, w_ih, input, &w_hh, 1, &b_ih, 1,
                               &b_hh, 1, &layer);
    expect("create", rc, FRNN_OK);
    if (rc != FRNN_OK) return 1;
    float y = 0.0f;
    expect("forward with a packed copy past memory",
           frnn_forward(layer, 1, 1, 0, w_ih, input, NULL, 0, NULL, 0, &y, 1, NULL, 0, NULL, 0),
           FRNN_ERR_ARGUMENT);
    frnn_stream *stream = NULL;
    expect("stream over a packed copy past memory", frnn_stream_create(layer, 1, &stream),
           FRNN_ERR_ARGUMENT);
    expect("set_threads(SIZE_MAX)", frnn_layer_set_threads(layer, (size_t)-1), FRNN_ERR_ARGUMENT);
    expect("set_threads(2^40)", frnn_layer_set_threads(layer, (size_t)1 << 40),
           FRNN_ERR_ARGUMENT);
    frnn_layer_free(layer);
    free(w_ih);

    /* A small layer: a stream of 2^40 rows. */
    float small[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    rc = frnn_layer_create(FRNN_CELL_RNN_TANH, 1, 1, small, 1, small + 1, 1, small + 2, 1,
                           small + 3, 1, &layer);
    expect("create small", rc, FRNN_OK);
    expect("stream of 2^40 rows", frnn_stream_create(layer, (size_t)1 << 40, &stream),
           FRNN_ERR_ARGUMENT);
    frnn_layer_free(layer);

    if (failures) {
        printf("%d oversized checks failed\n", failures);
        return 1;
    }
    printf("all oversized checks passed\n");
    return 0;
}
