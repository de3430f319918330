/* asyncsummary._native: the drain's per-event work in C, mostly without the GIL.
 *
 * Used by asyncsummary/_encoder.py, which defines the semantics (its pure-Python
 * implementation is the reference; both give byte-identical output). This module
 * only knows the wire formats:
 *
 *   Event:    0x09 <double wall_time>  [0x10 <varint step>, omitted for 0]
 *             <field tag> <varint length> <payload>
 *   TFRecord: uint64 length (LE), uint32 masked_crc32c(length bytes),
 *             data, uint32 masked_crc32c(data)
 *   masked(crc) = ((crc >> 15) | (crc << 17)) + 0xA282EAD8  (mod 2**32), CRC-32C.
 *
 * frame_run() reads a run of plain slots of a Batch (see _native.h and _queue.c) with
 * the GIL held, then builds, frames and CRCs the whole run into one bytes object with
 * the GIL released. Anything unusual ends the run, and Python handles that one item:
 * this file never raises for bad input, it declines it.
 *
 * CRC-32C: SSE4.2's crc32 instruction where the CPU has it (checked at import), on
 * three interleaved streams for buffers of 192 bytes or more, a slicing-by-8 table
 * otherwise.
 */
#include "_native.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>


/* ----------------------------------------------------------------- CRC-32C */
static uint32_t crc_table[8][256];

static void crc_table_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) {
            uint32_t prev = crc_table[t - 1][i];
            crc_table[t][i] = (prev >> 8) ^ crc_table[0][prev & 0xFF];
        }
    }
}

static uint32_t crc32c_table(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;
        crc = crc_table[7][w & 0xFF] ^ crc_table[6][(w >> 8) & 0xFF] ^
              crc_table[5][(w >> 16) & 0xFF] ^ crc_table[4][(w >> 24) & 0xFF] ^
              crc_table[3][(w >> 32) & 0xFF] ^ crc_table[2][(w >> 40) & 0xFF] ^
              crc_table[1][(w >> 48) & 0xFF] ^ crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
#endif
    while (n--) crc = crc_table[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_SSE42_PATH 1
#include <nmmintrin.h>

/* SSE4.2 CRC-32C, three streams at a time.
 *
 * Why: the crc32 instruction has a latency of 3 cycles, but the CPU can start one
 * every cycle. One stream (each step waits for the previous step's result) runs at
 * 8 bytes per 3 cycles; three independent streams keep the unit busy: 3x the speed.
 *
 * How: a chunk of 3 * L bytes is cut into blocks A, B, C of L bytes, and one loop
 * computes a = crc(0, A), b = crc(0, B), d = crc(0, C) side by side, where crc(s, X)
 * is the CRC register (before the final inversion) after X, from register s. That
 * register is linear over GF(2) in s and X, so crc(s, X) = shift_|X|(s) ^ crc(0, X),
 * where shift_L(s), the register s after L zero bytes, is a linear map on 32 bits:
 * four lookups in 256-entry tables (one per byte of s), XOR'd. Hence the register
 * after the chunk, from the running register c:
 *     crc(c, A B C) = shift_L(shift_L(shift_L(c) ^ a) ^ b) ^ d.
 * The streams start from 0 rather than from c so that the lookups are not on the
 * crc instructions' dependency chain: the next chunk's crcs run while this chunk is
 * combined, as long as a chunk's crcs take longer than the three lookups in a row.
 * The tables for each L are built at module init (crc_shift_init).
 *
 * Block sizes: long blocks take large buffers with few combines (on 1 MiB, 16 KiB
 * blocks measured ~1% faster than 8 KiB, 32 KiB no better), then short and tiny
 * ones the rest; under 3 * CRC_TINY bytes (a buffer, or the tail of one) one stream
 * is used. Measured on an AMD EPYC (Zen 4): three streams win from the first whole
 * chunk of 3 * 64 bytes (192 bytes: 12 ns against 20), while blocks of 32 bytes lose
 * to one stream (the combine becomes the bottleneck); with the 64-byte tier, no size
 * tried up to 64 KiB was slower than with 256 alone. */
#define CRC_LONG 16384
#define CRC_SHORT 256
#define CRC_TINY 64

/* shift_L as four tables: t[k][x] is shift_L of byte x placed at byte k. */
typedef struct {
    uint32_t t[4][256];
} shift_table;

static shift_table crc_shift_long, crc_shift_short, crc_shift_tiny;

/* A 32x32 GF(2) matrix is stored as its columns: m[i] is the image of bit i. */
static uint32_t gf2_apply(const uint32_t m[32], uint32_t v) {
    uint32_t r = 0;
    for (int i = 0; v; i++, v >>= 1)
        if (v & 1) r ^= m[i];
    return r;
}

/* out = a b (b first, then a); out must alias neither. */
static void gf2_multiply(uint32_t out[32], const uint32_t a[32], const uint32_t b[32]) {
    for (int i = 0; i < 32; i++) out[i] = gf2_apply(a, b[i]);
}

/* The tables of shift_n. Its matrix is the n-th power of the one for one zero byte
 * (a step of the byte-wise table loop), by repeated squaring as in zlib's
 * crc32_combine. */
static void crc_shift_init(shift_table *table, size_t n) {
    uint32_t power[32], result[32], tmp[32];
    for (int i = 0; i < 32; i++) {
        uint32_t bit = 1u << i;
        power[i] = crc_table[0][bit & 0xFF] ^ (bit >> 8); /* one zero byte */
        result[i] = bit;                                  /* identity */
    }
    for (; n; n >>= 1) {
        if (n & 1) {
            gf2_multiply(tmp, power, result);
            memcpy(result, tmp, sizeof tmp);
        }
        gf2_multiply(tmp, power, power);
        memcpy(power, tmp, sizeof tmp);
    }
    for (int k = 0; k < 4; k++)
        for (uint32_t x = 0; x < 256; x++) table->t[k][x] = gf2_apply(result, x << (8 * k));
}

static inline uint32_t crc_shift(const shift_table *table, uint32_t s) {
    return table->t[0][s & 0xFF] ^ table->t[1][(s >> 8) & 0xFF] ^
           table->t[2][(s >> 16) & 0xFF] ^ table->t[3][s >> 24];
}

static inline uint64_t load64(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* The register after one chunk of 3 * len bytes (len a multiple of 32), from c. */
__attribute__((target("sse4.2"))) static inline uint32_t crc3(uint32_t c, const uint8_t *p,
                                                               size_t len,
                                                               const shift_table *table) {
    uint64_t a = 0, b = 0, d = 0;
    for (const uint8_t *end = p + len; p < end; p += 32) {
        for (int i = 0; i < 32; i += 8) {
            a = _mm_crc32_u64(a, load64(p + i));
            b = _mm_crc32_u64(b, load64(p + len + i));
            d = _mm_crc32_u64(d, load64(p + 2 * len + i));
        }
    }
    c = crc_shift(table, c) ^ (uint32_t)a;
    c = crc_shift(table, c) ^ (uint32_t)b;
    return crc_shift(table, c) ^ (uint32_t)d;
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const uint8_t *p,
                                                                size_t n) {
    uint32_t c = ~crc;
    size_t skew = -(uintptr_t)p & 7; /* bytes up to an 8-byte boundary */
    if (n >= skew + 3 * CRC_TINY) {
        /* Align p to 8 bytes (loads across cache lines cost), in at most 3 steps. */
        if ((uintptr_t)p & 1) {
            c = _mm_crc32_u8(c, *p);
            p += 1, n -= 1;
        }
        if ((uintptr_t)p & 2) {
            uint16_t h;
            memcpy(&h, p, 2);
            c = _mm_crc32_u16(c, h);
            p += 2, n -= 2;
        }
        if ((uintptr_t)p & 4) {
            uint32_t w;
            memcpy(&w, p, 4);
            c = _mm_crc32_u32(c, w);
            p += 4, n -= 4;
        }
        for (; n >= 3 * CRC_LONG; p += 3 * CRC_LONG, n -= 3 * CRC_LONG)
            c = crc3(c, p, CRC_LONG, &crc_shift_long);
        for (; n >= 3 * CRC_SHORT; p += 3 * CRC_SHORT, n -= 3 * CRC_SHORT)
            c = crc3(c, p, CRC_SHORT, &crc_shift_short);
        for (; n >= 3 * CRC_TINY; p += 3 * CRC_TINY, n -= 3 * CRC_TINY)
            c = crc3(c, p, CRC_TINY, &crc_shift_tiny);
    }
    uint64_t c64 = c;
    for (; n >= 8; p += 8, n -= 8) c64 = _mm_crc32_u64(c64, load64(p));
    c = (uint32_t)c64;
    while (n--) c = _mm_crc32_u8(c, *p++);
    return ~c;
}
#endif

static uint32_t (*crc32c)(uint32_t, const uint8_t *, size_t) = crc32c_table;
static const char *crc32c_name = "table";

static inline uint32_t masked(uint32_t crc) {
    return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

/* ------------------------------------------------------------ wire helpers */
static inline int varint_len(uint64_t v) {
    int n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *put_varint(uint8_t *p, uint64_t v) {
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static inline uint8_t *put_le32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
    return p + 4;
}

static inline uint8_t *put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
    return p + 8;
}

/* Reads a varint; 0 when it runs past the end or over ten bytes. */
static inline int get_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out) {
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (p >= end) return 0;
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = v;
            *pp = p;
            return 1;
        }
    }
    return 0;
}

/* Whether a message has field `field` with wire type 2 (at its top level), or, with
 * `inner` set, whether a field-1 message of it does (Summary.value[*].metadata).
 * Returns 1 when unsure (a group, a malformed field): only ever asked of summaries
 * that protobuf itself also validates, so "unsure" only costs a slower path. */
static int has_field(const uint8_t *p, const uint8_t *end, uint64_t field, int inner) {
    while (p < end) {
        uint64_t key, len;
        if (!get_varint(&p, end, &key)) return 1;
        switch (key & 7) {
            case 0:
                if (!get_varint(&p, end, &len)) return 1;
                break;
            case 1:
                if (end - p < 8) return 1;
                p += 8;
                break;
            case 5:
                if (end - p < 4) return 1;
                p += 4;
                break;
            case 2:
                if (!get_varint(&p, end, &len) || len > (uint64_t)(end - p)) return 1;
                if (inner) {
                    if ((key >> 3) == 1 && has_field(p, p + len, field, 0)) return 1;
                } else if ((key >> 3) == field) {
                    return 1;
                }
                p += len;
                break;
            default:
                return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------- frame_run */
enum { D_RAW, D_FIELD, D_SCALAR };

typedef struct {
    const uint8_t *data; /* payload bytes, or the scalar's tag in UTF-8 */
    uint32_t len;        /* of data */
    uint32_t event_len;  /* of the serialized Event */
    uint32_t value_len;  /* scalars: Summary.Value's length */
    uint8_t what;        /* D_* */
    uint8_t field_tag;   /* D_FIELD: the Event field's tag byte */
    uint8_t step_len;    /* bytes of step[]: 0 for step 0 */
    uint8_t meta;        /* summaries: holds plugin metadata (or maybe) */
    uint8_t step[11];    /* 0x10 and the step's varint */
    uint8_t wall[8];     /* the wall time, little-endian double */
    uint8_t f32[4];      /* scalars: the value, little-endian float */
} desc_t;

/* Fills `d` from one slot (see _native.h); 0 when Python must handle it. Pure C:
 * what needed Python (packing the floats, checking types) was done when it was queued. */
static int gather(const slot_t *s, desc_t *d) {
    if (!s->plain) return 0;
    d->data = s->data;
    d->len = s->len;
    memcpy(d->wall, s->wall, 8);
    if (s->kind == KIND_SCALAR) {
        memcpy(d->f32, s->f32, 4);
        d->what = D_SCALAR;
    } else {
        d->what = s->kind == KIND_RAW_EVENT ? D_RAW : D_FIELD;
        d->field_tag = (uint8_t)((s->kind << 3) | 2);
    }
    int64_t step = s->step;
    if (step) {
        d->step[0] = 0x10;
        d->step_len = (uint8_t)(put_varint(d->step + 1, (uint64_t)step) - d->step);
    } else {
        d->step_len = 0;
    }
    d->meta = 0;
    switch (d->what) {
        case D_RAW:
            d->event_len = d->len;
            break;
        case D_FIELD:
            d->event_len = 9 + d->step_len + 1 + varint_len(d->len) + d->len;
            break;
        default: { /* Summary(value=[Value(tag=tag, simple_value=v)]), proto3: no empty tag */
            uint32_t value_head = d->len ? 1 + varint_len(d->len) + d->len + 1 : 1;
            d->value_len = value_head + 4;
            uint32_t summary_len = 1 + varint_len(d->value_len) + d->value_len;
            d->event_len = 9 + d->step_len + 1 + varint_len(summary_len) + summary_len;
        }
    }
    return 1;
}

static uint8_t *put_event(uint8_t *q, const desc_t *d) {
    if (d->what == D_RAW) {
        memcpy(q, d->data, d->len);
        return q + d->len;
    }
    *q++ = 0x09;
    memcpy(q, d->wall, 8);
    q += 8;
    memcpy(q, d->step, d->step_len);
    q += d->step_len;
    if (d->what == D_FIELD) {
        *q++ = d->field_tag;
        q = put_varint(q, d->len);
        memcpy(q, d->data, d->len);
        return q + d->len;
    }
    *q++ = 0x2A; /* Event.summary */
    q = put_varint(q, 1 + varint_len(d->value_len) + d->value_len);
    *q++ = 0x0A; /* Summary.value */
    q = put_varint(q, d->value_len);
    if (d->len) {
        *q++ = 0x0A; /* Value.tag */
        q = put_varint(q, d->len);
        memcpy(q, d->data, d->len);
        q += d->len;
    }
    *q++ = 0x15; /* Value.simple_value */
    memcpy(q, d->f32, 4);
    return q + 4;
}

static uint8_t *put_record(uint8_t *p, const desc_t *d) {
    uint8_t *len = p;
    p = put_le64(p, d->event_len);
    p = put_le32(p, masked(crc32c(0, len, 8)));
    uint8_t *event = p;
    p = put_event(p, d);
    return put_le32(p, masked(crc32c(0, event, (size_t)(p - event))));
}

/* For the lane (_lane.c), which is only given plain slots. */
size_t slot_record_size(const slot_t *s) {
    desc_t d;
    return gather(s, &d) ? 16 + (size_t)d.event_len : 0;
}

uint8_t *put_slot_record(uint8_t *p, const slot_t *s) {
    desc_t d;
    return gather(s, &d) ? put_record(p, &d) : p;
}

static inline int is_summary(const desc_t *d) {
    return d->what == D_FIELD && d->field_tag == ((KIND_SUMMARY << 3) | 2);
}

PyDoc_STRVAR(frame_run_doc,
"frame_run(batch, start, max_items, max_bytes, probe_items) -> (chunk, stop, probes, meta)\n\n"
"Frame batch[start:stop]\n"
"(a Batch, see PendingQueue.take) as TFRecords in one bytes object, stop being where\n"
"the run ended: the first item this function leaves to Python, the end, max_items, or\n"
"where max_bytes of output is reached (at least one item is taken when any can be).\n"
"The GIL is held while reading the slots (some nanoseconds each) and released while\n"
"framing. probes: the run's summaries as Event-shaped bytes (0x2A, length, summary,\n"
"...) in pieces of at most probe_items, for protobuf to validate; meta: indices of\n"
"the summaries that hold plugin metadata (or may). chunk is None when stop == start.");

static PyObject *frame_run(PyObject *self, PyObject *args) {
    BatchObject *batch;
    Py_ssize_t start, max_items, max_bytes, probe_items;
    if (!PyArg_ParseTuple(args, "O!nnnn", &Batch_Type, &batch, &start, &max_items, &max_bytes,
                          &probe_items))
        return NULL;
    if (probe_items < 1) probe_items = 1;
    Py_ssize_t n = batch->n;
    if (start < batch->freed || start > n)
        return PyErr_Format(PyExc_IndexError, "start out of range");
    if (max_items < 1) max_items = 1;
    if (n - start > max_items) n = start + max_items;
    Py_ssize_t room = n - start;
    desc_t *descs = room ? PyMem_Malloc(sizeof(desc_t) * (size_t)room) : NULL;
    /* Sizes of the probe pieces: at most one per probe_items summaries. */
    Py_ssize_t *pieces = room ? PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(room / probe_items + 2)) : NULL;
    if (room && (descs == NULL || pieces == NULL)) {
        PyMem_Free(descs);
        PyMem_Free(pieces);
        return PyErr_NoMemory();
    }
    Py_ssize_t count = 0, total = 0, n_pieces = 0, in_piece = 0;
    while (start + count < n) {
        desc_t *d = &descs[count];
        if (!gather(&batch->slots[start + count], d)) break;
        Py_ssize_t size = 16 + (Py_ssize_t)d->event_len;
        if (count && total + size > max_bytes) break;
        total += size;
        if (is_summary(d)) {
            if (in_piece == 0) pieces[n_pieces++] = 0;
            pieces[n_pieces - 1] += 1 + varint_len(d->len) + d->len;
            if (++in_piece == probe_items) in_piece = 0;
        }
        count++;
    }
    PyObject *chunk = NULL, *probes = NULL, *meta = NULL, *result = NULL;
    if (count == 0) {
        PyMem_Free(descs);
        PyMem_Free(pieces);
        return Py_BuildValue("(OnNN)", Py_None, start, PyList_New(0), PyList_New(0));
    }
    chunk = PyBytes_FromStringAndSize(NULL, total);
    probes = PyList_New(n_pieces);
    if (chunk == NULL || probes == NULL) goto done;
    for (Py_ssize_t i = 0; i < n_pieces; i++) {
        PyObject *piece = PyBytes_FromStringAndSize(NULL, pieces[i]);
        if (piece == NULL) goto done;
        PyList_SET_ITEM(probes, i, piece);
    }
    uint8_t **probe_at = PyMem_Malloc(sizeof(uint8_t *) * (size_t)(n_pieces + 1));
    if (probe_at == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n_pieces; i++)
        probe_at[i] = (uint8_t *)PyBytes_AS_STRING(PyList_GET_ITEM(probes, i));
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(chunk);
    Py_ssize_t n_meta = 0;
    Py_BEGIN_ALLOW_THREADS
    uint8_t *p = out;
    Py_ssize_t piece = 0, in = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        desc_t *d = &descs[i];
        p = put_record(p, d);
        if (is_summary(d)) {
            uint8_t *q = probe_at[piece];
            *q++ = 0x2A;
            q = put_varint(q, d->len);
            memcpy(q, d->data, d->len);
            probe_at[piece] = q + d->len;
            if (++in == probe_items) {
                in = 0;
                piece++;
            }
            /* A byte 0x4A (Value.metadata's tag) somewhere is needed for metadata. */
            if (memchr(d->data, 0x4A, d->len) && has_field(d->data, d->data + d->len, 9, 1)) {
                d->meta = 1;
                n_meta++;
            }
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(probe_at);
    meta = PyList_New(n_meta);
    if (meta == NULL) goto done;
    for (Py_ssize_t i = 0, k = 0; i < count && k < n_meta; i++) {
        if (descs[i].meta) {
            PyObject *index = PyLong_FromSsize_t(start + i);
            if (index == NULL) goto done;
            PyList_SET_ITEM(meta, k++, index);
        }
    }
    result = Py_BuildValue("(OnOO)", chunk, start + count, probes, meta);
done:
    PyMem_Free(descs);
    PyMem_Free(pieces);
    Py_XDECREF(chunk);
    Py_XDECREF(probes);
    Py_XDECREF(meta);
    return result;
}

/* ---------------------------------------------------------- other helpers */
PyDoc_STRVAR(frame_large_doc,
"frame_large(head, data) -> (prefix, suffix)\n\n"
"The framing of one record whose data is head + data, without copying data:\n"
"the record is prefix + data + suffix (prefix: length, its CRC, head). The CRC of\n"
"data runs with the GIL released.");

static PyObject *frame_large(PyObject *self, PyObject *args) {
    Py_buffer head, data;
    if (!PyArg_ParseTuple(args, "y*y*", &head, &data)) return NULL;
    uint64_t length = (uint64_t)head.len + (uint64_t)data.len;
    uint8_t len_bytes[8];
    put_le64(len_bytes, length);
    uint32_t crc = crc32c(0, (const uint8_t *)head.buf, (size_t)head.len);
    Py_BEGIN_ALLOW_THREADS
    crc = crc32c(crc, (const uint8_t *)data.buf, (size_t)data.len);
    Py_END_ALLOW_THREADS
    PyObject *prefix = PyBytes_FromStringAndSize(NULL, 12 + head.len);
    PyObject *suffix = PyBytes_FromStringAndSize(NULL, 4);
    if (prefix != NULL && suffix != NULL) {
        uint8_t *p = (uint8_t *)PyBytes_AS_STRING(prefix);
        memcpy(p, len_bytes, 8);
        put_le32(p + 8, masked(crc32c(0, len_bytes, 8)));
        memcpy(p + 12, head.buf, (size_t)head.len);
        put_le32((uint8_t *)PyBytes_AS_STRING(suffix), masked(crc));
    }
    PyBuffer_Release(&head);
    PyBuffer_Release(&data);
    if (prefix == NULL || suffix == NULL) {
        Py_XDECREF(prefix);
        Py_XDECREF(suffix);
        return NULL;
    }
    return Py_BuildValue("(NN)", prefix, suffix);
}

/* Gives the GIL to a thread that waits for it: a bare release and take-back would
 * mostly take it right back (the waiter is still waking up). Sleeps the timer slack. */
void offer_gil(void) {
    struct timespec pause = {0, 1000};
    Py_BEGIN_ALLOW_THREADS
    nanosleep(&pause, NULL);
    Py_END_ALLOW_THREADS
}

PyDoc_STRVAR(join_doc,
"join(parts) -> bytes\n\n"
"b''.join(parts) for a list of bytes, the copying done with the GIL released (a big\n"
"fresh buffer costs a page fault per 4 KiB: not to be paid holding the GIL).");

static PyObject *join(PyObject *self, PyObject *args) {
    PyObject *parts;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &parts)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(parts), total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *part = PyList_GET_ITEM(parts, i);
        if (!PyBytes_CheckExact(part)) return PyErr_Format(PyExc_TypeError, "join() takes bytes only");
        total += PyBytes_GET_SIZE(part);
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) return NULL;
    /* The list is the caller's own, so its items stay alive and in place meanwhile. */
    char *p = PyBytes_AS_STRING(result);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *part = PyList_GET_ITEM(parts, i);
        memcpy(p, PyBytes_AS_STRING(part), (size_t)PyBytes_GET_SIZE(part));
        p += PyBytes_GET_SIZE(part);
    }
    Py_END_ALLOW_THREADS
    return result;
}

PyDoc_STRVAR(crc32c_doc,
"crc32c(data, table=False) -> int\n\nThe (unmasked) CRC-32C of data, GIL released; table=True uses\n"
"the slicing-by-8 table even where the CPU has SSE4.2 (for tests).");

static PyObject *crc32c_py(PyObject *self, PyObject *args) {
    Py_buffer data;
    int table = 0;
    if (!PyArg_ParseTuple(args, "y*|p", &data, &table)) return NULL;
    uint32_t (*fn)(uint32_t, const uint8_t *, size_t) = table ? crc32c_table : crc32c;
    uint32_t crc;
    Py_BEGIN_ALLOW_THREADS
    crc = fn(0, (const uint8_t *)data.buf, (size_t)data.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLong(crc);
}

static PyMethodDef methods[] = {
    {"frame_run", frame_run, METH_VARARGS, frame_run_doc},
    {"frame_large", frame_large, METH_VARARGS, frame_large_doc},
    {"join", join, METH_VARARGS, join_doc},
    {"crc32c", crc32c_py, METH_VARARGS, crc32c_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "asyncsummary._native",
    "The drain's per-event framing in C (see asyncsummary/_encoder.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    crc_table_init();
#ifdef HAVE_SSE42_PATH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        crc_shift_init(&crc_shift_long, CRC_LONG);
        crc_shift_init(&crc_shift_short, CRC_SHORT);
        crc_shift_init(&crc_shift_tiny, CRC_TINY);
        crc32c = crc32c_sse42;
        crc32c_name = "sse4.2";
    }
#endif
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddStringConstant(m, "CRC32C", crc32c_name) < 0 || queue_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
