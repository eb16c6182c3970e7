/* metrics_test.c: the Prometheus text of the counters (src/tunnel/metrics.c): bucket placement
 * of cancel delivery times, HTTP status slots, the exposition of a known set of counters, and
 * the text buffer it is written into (src/io/httpd.c). */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "et/httpd.h"
#include "et/tunnel.h"

static et_engine eng; /* only .stats is read by et_metrics_write */

static void test_buckets(void **state)
{
    et_stats *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    assert_int_equal(et_cancel_bucket_us(0), 50);
    assert_true(et_cancel_bucket_us(ET_CANCEL_BUCKETS) == UINT64_MAX);
    for (unsigned i = 1; i < ET_CANCEL_BUCKETS; i++)
        assert_true(et_cancel_bucket_us(i) > et_cancel_bucket_us(i - 1));
    et_stats_cancel_rtt(s, 49000);          /* 49 us */
    et_stats_cancel_rtt(s, 50000);          /* exactly on the bound: le="5e-05" */
    et_stats_cancel_rtt(s, 50001);          /* just over: the next bucket */
    et_stats_cancel_rtt(s, 10000000000ull); /* 10 s: +Inf */
    assert_int_equal(atomic_load(&s->cancel_rtt_buckets[0]), 2);
    assert_int_equal(atomic_load(&s->cancel_rtt_buckets[1]), 1);
    assert_int_equal(atomic_load(&s->cancel_rtt_buckets[ET_CANCEL_BUCKETS]), 1);
    assert_int_equal(atomic_load(&s->cancel_rtt_sum_ns), 49000 + 50000 + 50001 + 10000000000ull);
    free(s);
}

static void test_http_slots(void **state)
{
    static const int known[] = {400, 404, 408, 431, 502, 503, 504};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        unsigned slot = et_http_status_slot(known[i]);
        assert_true(slot < ET_HTTP_STATUS_SLOTS - 1);
        assert_int_equal(et_http_slot_status(slot), known[i]);
    }
    assert_int_equal(et_http_status_slot(200), ET_HTTP_STATUS_SLOTS - 1);
    assert_int_equal(et_http_status_slot(-1), ET_HTTP_STATUS_SLOTS - 1);
    assert_int_equal(et_http_slot_status(ET_HTTP_STATUS_SLOTS - 1), 0);
    assert_int_equal(et_http_slot_status(1000), 0);
}

static void test_exposition(void **state)
{
    et_stats *s = &eng.stats;
    memset(s, 0, sizeof(*s));
    atomic_store(&s->sockets_up, 7);
    atomic_store(&s->sockets_down, 2);
    atomic_store(&s->streams_opened, 10);
    atomic_store(&s->streams_finished, 6);
    atomic_store(&s->streams_cancelled, 3);
    atomic_store(&s->cancels_sent_control, 4);
    atomic_store(&s->frame_errors[et_stat_slot(ET_WE_BAD_PAYLOAD)], 5);
    atomic_store(&s->handshake_refused[et_stat_slot(ET_WE_AUTH_EXPIRED)], 8);
    atomic_store(&s->handshake_refused[et_stat_slot(ET_WE_LIMIT_SESSIONS)], 1);
    atomic_store(&s->frame_errors[et_stat_slot(ET_WE_LIMIT_SESSIONS)], 2);
    et_stats_cancel_rtt(s, 300000); /* 300 us: le="0.0005" and above */
    et_stats_cancel_rtt(s, 20000);
    et_strbuf b = {0};
    et_metrics_write(&eng, &b);
    assert_false(b.failed);
    assert_non_null(b.p);
    assert_int_equal(strlen(b.p), b.len);
    assert_true(b.p[b.len - 1] == '\n');
    static const char *want[] = {
        "# TYPE edgetunnel_sockets_connected gauge\nedgetunnel_sockets_connected 5\n",
        "edgetunnel_streams_open 1\n",
        "edgetunnel_streams_closed_total{outcome=\"cancelled\"} 3\n",
        "edgetunnel_cancels_total{direction=\"sent\",path=\"control\"} 4\n",
        "edgetunnel_frame_errors_total{reason=\"bad_payload\"} 5\n",
        "edgetunnel_handshake_errors_total{reason=\"auth_expired\"} 8\n",
        "edgetunnel_limit_rejections_total{limit=\"sessions\"} 3\n",
        "edgetunnel_cancel_delivery_seconds_bucket{le=\"5e-05\"} 1\n",
        "edgetunnel_cancel_delivery_seconds_bucket{le=\"0.00025\"} 1\n",
        "edgetunnel_cancel_delivery_seconds_bucket{le=\"0.0005\"} 2\n",
        "edgetunnel_cancel_delivery_seconds_bucket{le=\"+Inf\"} 2\n",
        "edgetunnel_cancel_delivery_seconds_count 2\n",
        "edgetunnel_cancel_delivery_seconds_sum 0.000320000\n",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (strstr(b.p, want[i]) == NULL)
            fail_msg("missing %s in:\n%s", want[i], b.p);
    /* No reason is named "unknown" or "none": only codes the spec names are listed. */
    assert_null(strstr(b.p, "reason=\"unknown\""));
    assert_null(strstr(b.p, "reason=\"none\""));
    /* Every line is a comment or a sample with one space before its value. */
    for (char *line = b.p; *line != '\0';) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        if (line[0] != '#') {
            char *sp = memchr(line, ' ', (size_t)(nl - line));
            assert_non_null(sp);
            assert_null(memchr(sp + 1, ' ', (size_t)(nl - sp - 1)));
        }
        line = nl + 1;
    }
    et_strbuf_cleanup(&b);
    assert_null(b.p);
}

static void test_strbuf(void **state)
{
    et_strbuf b = {0};
    char big[10000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    et_strbuf_printf(&b, "%s", "ab");
    et_strbuf_printf(&b, "%s", big); /* past the first 4 KiB */
    et_strbuf_append(&b, "\0z", 2);  /* bytes, not a string */
    assert_false(b.failed);
    assert_int_equal(b.len, 2 + sizeof(big) - 1 + 2);
    assert_memory_equal(b.p, "ab", 2);
    assert_int_equal(b.p[b.len - 2], '\0');
    assert_int_equal(b.p[b.len - 1], 'z');
    assert_int_equal(b.p[b.len], '\0');
    et_strbuf_cleanup(&b);
    et_strbuf empty = {0};
    et_httpd_resp r;
    et_httpd_take(&r, 200, "text/plain", &empty);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 0);
    free(r.body);
    et_strbuf bad = {.failed = true};
    et_httpd_take(&r, 200, "text/plain", &bad);
    assert_int_equal(r.status, 500);
    free(r.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_http_slots),
        cmocka_unit_test(test_exposition),
        cmocka_unit_test(test_strbuf),
    };
    return TU_RUN("metrics", tests);
}
