/* asyncsummary._native's shared declarations: a pending event as C holds it.
 *
 * _queue.c keeps the writer's pending events (the caller's side) as slots, and hands the
 * drain batches of them; _native.c frames a batch's slots. A slot holds no Python object
 * of its own making for the usual events: a scalar is its tag (the caller's str) and C
 * numbers, a summary its payload (the caller's bytes). So queueing an event allocates
 * nothing the GC sees, and the drain frees almost nothing while it holds the GIL.
 */
#ifndef ASYNCSUMMARY_NATIVE_H
#define ASYNCSUMMARY_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* Item kinds: see _encoder.py. */
#define KIND_RAW_EVENT 0
#define KIND_SUMMARY 5
#define KIND_SCALAR 100
#define KIND_DEFERRED 101
/* Payloads up to this size are framed in C; larger ones stay their own bytes object. */
#define SMALL_MAX (64 * 1024)

typedef struct {
    /* Owned. plain: the payload (bytes) or, for a scalar, its tag (str); otherwise the
     * whole pending item (kind, payload, step, wall_time, size), which Python frames. */
    PyObject *obj;
    const uint8_t *data; /* plain: the payload's bytes or the tag's UTF-8, inside obj */
    double value;        /* scalars: the value */
    int64_t step;
    Py_ssize_t size; /* accounted bytes (see _engine.ITEM_OVERHEAD) */
    uint32_t len;    /* of data */
    int32_t kind;
    /* plain: packed when queued, so that framing needs no Python API (nor the GIL) */
    uint8_t wall[8]; /* the wall time, little-endian double */
    uint8_t f32[4];  /* scalars: the value, little-endian float (inf beyond its range) */
    uint8_t plain;
} slot_t;

/* Fills *s from one item's parts (new references in s->obj); -1 with an exception set
 * only when out of memory. An item C cannot frame becomes a non-plain slot. */
int slot_fill(slot_t *s, PyObject *kind, PyObject *payload, PyObject *step, PyObject *wall,
              Py_ssize_t size);
/* The item (kind, payload, step, wall_time, size) of a slot: a new reference. */
PyObject *slot_item(const slot_t *s);

/* A batch the drain took off a queue: slots[freed:n] are still held. */
typedef struct {
    PyObject_HEAD
    slot_t *slots;
    Py_ssize_t n;
    Py_ssize_t freed;
} BatchObject;

extern PyTypeObject Batch_Type;

/* A ring of slots: count of them from head, in a power-of-two array of cap. */
typedef struct {
    slot_t *slots;
    Py_ssize_t cap, head, count;
} ring_t;

static inline slot_t *ring_at(const ring_t *r, Py_ssize_t i) {
    return &r->slots[(r->head + i) & (r->cap - 1)];
}

/* Bytes of a plain slot's TFRecord, and the record written at p (pure C: no GIL). */
size_t slot_record_size(const slot_t *s);
uint8_t *put_slot_record(uint8_t *p, const slot_t *s);

/* The native lane (_lane.c): a thread that writes batches of plain slots to a file
 * without the GIL. Every function but the thread's is called holding the GIL. */
typedef struct lane lane_t;
extern const int HAVE_LANE; /* 0 where it cannot be built (Windows) */
lane_t *lane_new(void);            /* NULL with an exception set */
int lane_fd(lane_t *L);            /* the pipe the lane tells the loop through */
int lane_start(lane_t *L, int fd, long long budget); /* -1 with an exception set */
int lane_stop(lane_t *L);          /* no more batches; 1 when idle, else the pipe says */
int lane_is_on(lane_t *L);
int lane_idle(lane_t *L);
void lane_want(lane_t *L);         /* an add found it busy with a full ring */
int lane_done(lane_t *L);          /* idle, and its last batch was written */
/* Hands a batch over (1), or 0 when busy or off; *fin gets the last finished slots. */
int lane_offer(lane_t *L, const ring_t *batch, Py_ssize_t taken, long long seq, ring_t *fin);
/* What the idle lane wrote since the last collect (see PendingQueue.lane_collect). */
typedef struct {
    long long events, bytes, seq, batches;
    int err;          /* errno of a failed last batch, or 0 */
    PyObject *rest;   /* its unwritten framed bytes (a new reference), or NULL */
    Py_ssize_t rest_events, rest_taken;
    long long rest_seq;
} lane_result_t;
/* -1 with an exception set; *fin gets the slots it finished. */
int lane_collect(lane_t *L, ring_t *fin, lane_result_t *out);
void lane_held(lane_t *L, Py_ssize_t *events, Py_ssize_t *taken, long long *written,
               long long *bytes, long long *batches);
/* The queue is going: the thread ends; *fin (and, in a forked child, *held) to free. */
int lane_release(lane_t *L, ring_t *fin, ring_t *held);

/* Gives the GIL to a thread that waits for it (see _native.c). */
void offer_gil(void);
/* Adds PendingQueue, Batch and batch_of to the module; -1 on error. */
int queue_init(PyObject *module);

#endif
