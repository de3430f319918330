/* asyncsummary._native.PendingQueue: a writer's pending events, on the caller's side.
 *
 * The semantics are asyncsummary/_pending.py's (the pure-Python queue, the reference);
 * _engine.py owns the rules (bound, policies, close). What C buys here:
 *
 * - An add is one C call that holds the GIL from start to end and calls no Python code
 *   until its event is committed: it is atomic for other threads and for signal
 *   handlers (which run only between bytecodes) without a lock. The Python queue takes
 *   an RLock with `with` for the same guarantee (a third of the caller's cost).
 * - Events are slots in a ring buffer (see _native.h): no tuple per event, nothing the
 *   GC tracks or the drain must free holding the GIL.
 *
 * The fast path only appends: when the writer is not open (closed, forked, an error to
 * report) or the event does not fit, add() calls `slow` with its own arguments, which
 * takes the engine's lock and applies the rules (then calls put()).
 */
#include "_native.h"

#include <math.h>
#include <structmember.h>

/* ------------------------------------------------------------------- slots */
/* An object that holds no reference to any other object a cycle could run through. */
static inline int is_atom(PyObject *o) {
    return PyLong_CheckExact(o) || PyFloat_CheckExact(o) || PyUnicode_CheckExact(o) ||
           PyBytes_CheckExact(o) || o == Py_None;
}

/* The item tuple of an event C leaves to Python, untracked by the GC when it cannot be
 * part of a cycle (atoms, or a (str, float) scalar payload). */
static PyObject *item_tuple(PyObject *kind, PyObject *payload, PyObject *step, PyObject *wall,
                            Py_ssize_t size) {
    PyObject *size_o = PyLong_FromSsize_t(size);
    if (size_o == NULL) return NULL;
    PyObject *tuple = PyTuple_Pack(5, kind, payload, step, wall, size_o);
    Py_DECREF(size_o);
    if (tuple == NULL) return NULL;
    int atoms = is_atom(kind) && is_atom(step) && is_atom(wall);
    if (!is_atom(payload)) {
        if (PyTuple_CheckExact(payload) && PyTuple_GET_SIZE(payload) == 2 &&
            is_atom(PyTuple_GET_ITEM(payload, 0)) && is_atom(PyTuple_GET_ITEM(payload, 1))) {
            if (PyObject_GC_IsTracked(payload)) PyObject_GC_UnTrack(payload);
        } else {
            atoms = 0;
        }
    }
    if (atoms) PyObject_GC_UnTrack(tuple);
    return tuple;
}

/* A scalar's tag and value into a plain slot; 0 when C cannot frame it. */
static int fill_scalar(slot_t *s, PyObject *tag, PyObject *value) {
    if (!PyUnicode_CheckExact(tag) || !PyFloat_CheckExact(value)) return 0;
    double v = PyFloat_AS_DOUBLE(value);
    if (PyFloat_Pack4(v, (char *)s->f32, 1) < 0) {
        PyErr_Clear(); /* beyond float32's range: an infinity, as _event.float32 */
        if (PyFloat_Pack4(copysign(INFINITY, v), (char *)s->f32, 1) < 0) {
            PyErr_Clear();
            return 0;
        }
    }
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(tag, &n); /* cached in the str: stable */
    if (utf8 == NULL) {
        PyErr_Clear(); /* e.g. a lone surrogate: Python rejects it */
        return 0;
    }
    if (n > SMALL_MAX) return 0;
    Py_INCREF(tag);
    s->obj = tag;
    s->data = (const uint8_t *)utf8;
    s->len = (uint32_t)n;
    s->value = v;
    s->kind = KIND_SCALAR;
    return 1;
}

/* The step and wall time of a plain slot; 0 when C cannot frame them. */
static int fill_when(slot_t *s, PyObject *step, PyObject *wall) {
    if (!PyLong_CheckExact(step) || !PyFloat_CheckExact(wall)) return 0;
    int overflow = 0;
    s->step = PyLong_AsLongLongAndOverflow(step, &overflow);
    if (overflow) return 0;
    if (PyFloat_Pack8(PyFloat_AS_DOUBLE(wall), (char *)s->wall, 1) < 0) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

int slot_fill(slot_t *s, PyObject *kind_o, PyObject *payload, PyObject *step_o, PyObject *wall_o,
              Py_ssize_t size) {
    s->size = size;
    s->plain = 0;
    int overflow = 0;
    long kind = PyLong_CheckExact(kind_o) ? PyLong_AsLongAndOverflow(kind_o, &overflow) : -1;
    s->kind = !overflow && kind >= 0 && kind <= INT32_MAX ? (int32_t)kind : -1;
    if (!overflow && kind >= 0 && fill_when(s, step_o, wall_o)) {
        if (kind == KIND_SCALAR) {
            s->plain = PyTuple_CheckExact(payload) && PyTuple_GET_SIZE(payload) == 2 &&
                       fill_scalar(s, PyTuple_GET_ITEM(payload, 0), PyTuple_GET_ITEM(payload, 1));
        } else if (PyBytes_CheckExact(payload)) {
            Py_ssize_t n = PyBytes_GET_SIZE(payload);
            /* A summary of SMALL_MAX is still framed here; other payloads that large
             * are written as their own chunk (see _encoder._frame_one). */
            int framed = kind == KIND_SUMMARY
                             ? n <= SMALL_MAX
                             : n < SMALL_MAX && (kind == KIND_RAW_EVENT || (kind >= 3 && kind <= 9));
            if (framed) {
                Py_INCREF(payload);
                s->obj = payload;
                s->data = (const uint8_t *)PyBytes_AS_STRING(payload);
                s->len = (uint32_t)n;
                s->kind = (int32_t)kind;
                s->plain = 1;
            }
        }
    }
    if (s->plain) return 0;
    s->obj = item_tuple(kind_o, payload, step_o, wall_o, size);
    return s->obj == NULL ? -1 : 0;
}

PyObject *slot_item(const slot_t *s) {
    if (!s->plain) {
        Py_INCREF(s->obj);
        return s->obj;
    }
    PyObject *payload;
    if (s->kind == KIND_SCALAR) {
        payload = Py_BuildValue("(Od)", s->obj, s->value);
        if (payload == NULL) return NULL;
    } else {
        Py_INCREF(s->obj);
        payload = s->obj;
    }
    double wall = PyFloat_Unpack8((const char *)s->wall, 1);
    if (wall == -1.0 && PyErr_Occurred()) {
        Py_DECREF(payload);
        return NULL;
    }
    return Py_BuildValue("(iNLdn)", (int)s->kind, payload, (long long)s->step, wall, s->size);
}

/* ------------------------------------------------------------------- Batch */
/* Frees slots up to `to`, stopping after `budget` of them were the last reference to
 * their object (a real deallocation; a scalar's tag usually is not). How far it got.
 * Each slot is marked free before its decref: a finalizer run by it sees a consistent
 * batch. */
static Py_ssize_t batch_free_some(BatchObject *b, Py_ssize_t to, Py_ssize_t budget) {
    while (b->freed < to && budget > 0) {
        PyObject *obj = b->slots[b->freed].obj;
        b->freed++;
        budget -= Py_REFCNT(obj) == 1;
        Py_DECREF(obj);
    }
    return b->freed;
}

static void batch_dealloc(BatchObject *b) {
    batch_free_some(b, b->n, PY_SSIZE_T_MAX);
    PyMem_Free(b->slots);
    PyObject_Free(b);
}

static Py_ssize_t batch_len(BatchObject *b) { return b->n; }

static PyObject *batch_item(BatchObject *b, PyObject *arg) {
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (i < b->freed || i >= b->n) return PyErr_Format(PyExc_IndexError, "item %zd is not held", i);
    return slot_item(&b->slots[i]);
}

static PyObject *batch_release(BatchObject *b, PyObject *arg) {
    Py_ssize_t every = PyLong_AsSsize_t(arg);
    if (every == -1 && PyErr_Occurred()) return NULL;
    if (every < 1) every = 1;
    while (batch_free_some(b, b->n, every) < b->n) offer_gil();
    Py_RETURN_NONE;
}

static PySequenceMethods batch_as_sequence = {.sq_length = (lenfunc)batch_len};

static PyMethodDef batch_methods[] = {
    {"item", (PyCFunction)batch_item, METH_O, "item(i) -> the pending item i, as a tuple."},
    {"release", (PyCFunction)batch_release, METH_O,
     "release(offer_every) -> None: free every slot still held, offering the GIL after\n"
     "each offer_every objects deallocated (freeing a big batch never holds it in one\n"
     "long stretch; a slot whose object lives on costs a decrement only)."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject Batch_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "asyncsummary._native.Batch",
    .tp_basicsize = sizeof(BatchObject),
    .tp_dealloc = (destructor)batch_dealloc,
    .tp_as_sequence = &batch_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Pending items the drain took off a PendingQueue, in call order (see frame_run).",
    .tp_methods = batch_methods,
};

static BatchObject *batch_new(Py_ssize_t n) {
    BatchObject *b = PyObject_New(BatchObject, &Batch_Type);
    if (b == NULL) return NULL;
    b->n = b->freed = 0;
    b->slots = PyMem_Malloc(sizeof(slot_t) * (size_t)(n ? n : 1));
    if (b->slots == NULL) {
        Py_DECREF(b);
        PyErr_NoMemory();
        return NULL;
    }
    return b;
}

PyDoc_STRVAR(batch_of_doc,
"batch_of(items) -> Batch\n\nA Batch of pending item tuples (kind, payload, step, wall_time, size).");

static PyObject *batch_of(PyObject *self, PyObject *items) {
    PyObject *seq = PySequence_Fast(items, "batch_of() takes a sequence of items");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    BatchObject *b = batch_new(n);
    for (Py_ssize_t i = 0; b != NULL && i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        slot_t *s = &b->slots[i];
        if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 5 &&
            PyLong_CheckExact(PyTuple_GET_ITEM(item, 4))) {
            Py_ssize_t size = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 4));
            if (size == -1 && PyErr_Occurred()) {
                Py_CLEAR(b);
                break;
            }
            if (slot_fill(s, PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1),
                          PyTuple_GET_ITEM(item, 2), PyTuple_GET_ITEM(item, 3), size) < 0) {
                Py_CLEAR(b);
                break;
            }
        } else {
            Py_INCREF(item); /* left to Python as it is */
            s->obj = item;
            s->plain = 0;
            s->size = 0;
        }
        b->n = i + 1;
    }
    Py_DECREF(seq);
    return (PyObject *)b;
}

/* ------------------------------------------------------------ PendingQueue */
typedef struct {
    PyObject_HEAD
    ring_t ring; /* the queued slots */
    Py_ssize_t bytes; /* accounted bytes of the queued events */
    Py_ssize_t deferred; /* of those, the DEFERRED ones' (see q_commit) */
    Py_ssize_t room;  /* add() appends while bytes + size <= room */
    Py_ssize_t batch_bytes, overhead;
    long long added; /* events ever appended (and not taken back by unappend) */
    char open;       /* the engine's gate: False sends every add to `slow` */
    char wake_sent;
    PyObject *wake, *slow;
    /* The native lane (_lane.c), once the engine started it; see q_give. */
    lane_t *lane;
    Py_ssize_t max_pending;   /* the room with no batch in flight */
    Py_ssize_t lane_reserved; /* room the lane's batch keeps until it is written */
    Py_ssize_t unlaneable;    /* queued slots the lane cannot write */
    ring_t freeing;           /* slots the lane wrote, freed a few per add */
    slot_t *spare;            /* an empty array, the ring's after the next hand-over */
    Py_ssize_t spare_cap;
} QueueObject;

/* Slots a queue keeps once empty: a batch's worth; a larger ring (a backlog's) is freed. */
#define KEEP_SLOTS 4096

static inline slot_t *q_at(QueueObject *q, Py_ssize_t i) { return ring_at(&q->ring, i); }

/* Room for one more slot; runs no Python code. */
static int q_reserve(QueueObject *q) {
    if (q->ring.count < q->ring.cap) return 0;
    Py_ssize_t cap = q->ring.cap ? q->ring.cap * 2 : 64;
    slot_t *slots = PyMem_Malloc(sizeof(slot_t) * (size_t)cap);
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < q->ring.count; i++) slots[i] = *q_at(q, i);
    PyMem_Free(q->ring.slots);
    q->ring.slots = slots;
    q->ring.cap = cap;
    q->ring.head = 0;
    return 0;
}

/* What the lane writes: plain slots of every kind but summaries (Python validates those). */
static inline int laneable(const slot_t *s) { return s->plain && s->kind != KIND_SUMMARY; }

/* A slot's accounted bytes if it is a build still to come (see q_commit), else 0. */
static inline Py_ssize_t deferred_bytes(const slot_t *s) {
    return s->kind == KIND_DEFERRED ? s->size : 0;
}

/* Frees up to k slots from the head of a ring that is no queue's (its array stays). */
static void ring_free_head(ring_t *r, Py_ssize_t k) {
    for (; k > 0 && r->count; k--) {
        PyObject *obj = ring_at(r, 0)->obj;
        r->head = (r->head + 1) & (r->cap - 1);
        r->count--;
        Py_DECREF(obj);
    }
}

/* Frees up to k of the slots the lane wrote; an emptied array becomes the spare. Only
 * plain slots reach the lane: their objects are exact str or bytes, whose
 * deallocation runs no Python code. */
static void q_free_some(QueueObject *q, Py_ssize_t k) {
    ring_t *r = &q->freeing;
    ring_free_head(r, k);
    if (r->slots != NULL && r->count == 0) {
        if (q->spare == NULL && r->cap <= KEEP_SLOTS) {
            q->spare = r->slots;
            q->spare_cap = r->cap;
        } else {
            PyMem_Free(r->slots);
        }
        r->slots = NULL;
        r->cap = r->head = 0;
    }
}

/* Whether the lane may take the whole ring: it is on, can write every slot, and its
 * copies stay within the bound (see q_give); else the loop takes batches. */
static inline int q_lane_can_take(QueueObject *q) {
    return q->lane && lane_is_on(q->lane) && !q->unlaneable && 2 * q->bytes <= q->max_pending;
}

/* The lane wrote its batch: its room comes back. Whether any did. */
static int q_reap(QueueObject *q) {
    if (q->lane_reserved == 0 || !lane_done(q->lane)) return 0;
    q->room += q->lane_reserved;
    q->lane_reserved = 0;
    return 1;
}

/* Offers the lane a batch (after q_reap and q_free_some): on success the slots it
 * finished before are to be freed, and the batch keeps its room (its slots and the
 * lane's framed copy) until written. Whether the lane took it. */
static int q_offer(QueueObject *q, const ring_t *batch, Py_ssize_t taken, long long seq) {
    ring_t fin;
    if (!lane_offer(q->lane, batch, taken, seq, &fin)) return 0;
    q->freeing = fin;
    q->lane_reserved = 2 * taken;
    q->room -= q->lane_reserved;
    return 1;
}

/* Hands the whole ring to the lane when it is idle (else a later add tries again): a
 * pointer swap, the ring getting the spare array. The ring's room shrinks by what the
 * batch keeps (its slots and the lane's framed copy) until the lane wrote it. */
static void q_give(QueueObject *q) {
    if (!lane_idle(q->lane)) {
        lane_want(q->lane); /* it looks again once done (see _lane.c) */
        if (!lane_idle(q->lane)) return;
    }
    q_reap(q); /* the last batch's room */
    q_free_some(q, PY_SSIZE_T_MAX); /* the batch before last, if not freed yet */
    if (q->spare == NULL) {
        Py_ssize_t cap = q->ring.cap < KEEP_SLOTS ? q->ring.cap : KEEP_SLOTS;
        q->spare = PyMem_Malloc(sizeof(slot_t) * (size_t)cap);
        if (q->spare == NULL) return; /* the next add tries again */
        q->spare_cap = cap;
    }
    if (!q_offer(q, &q->ring, q->bytes, q->added)) return;
    q->ring.slots = q->spare;
    q->ring.cap = q->spare_cap;
    q->ring.head = q->ring.count = 0;
    q->spare = NULL;
    q->bytes = 0;
}

static inline int q_has_room(QueueObject *q, Py_ssize_t size) {
    return q->bytes + size <= q->room || (q_reap(q) && q->bytes + size <= q->room);
}

/* Whether the queue holds a batch for the drain. A DEFERRED event (a summary a worker
 * builds) is accounted by its inputs, a snapshot that its build releases long before
 * the drain comes: it counts toward the bound but not toward a batch, so that a
 * histogram or an image does not wake the loop, which would take the GIL and a core
 * from the trainer for a few KB. The flush_secs timer writes them, or a batch of other
 * events, or the queue holding a quarter of its room (as batch_bytes is at most): an
 * add still finds the rest free, as when the drain kept the queue near empty. */
static inline int q_batch_due(const QueueObject *q) {
    return q->bytes - q->deferred >= q->batch_bytes || q->bytes >= q->room / 4;
}

/* Appends a filled slot (room reserved) and wakes the drain when a batch is pending:
 * the lane when it is on and can write the whole ring, else the engine's loop. */
static PyObject *q_commit(QueueObject *q, const slot_t *s) {
    *q_at(q, q->ring.count) = *s;
    q->ring.count++;
    q->bytes += s->size;
    q->deferred += deferred_bytes(s);
    q->added++;
    q->unlaneable += !laneable(s);
    if (q->freeing.count) q_free_some(q, 2);
    /* Committed: any Python code from here on (the wake-up) sees the event queued. */
    if (!q_batch_due(q)) Py_RETURN_NONE;
    /* The lane takes the whole ring (a backlog too) when it can; else the loop. */
    if (q_lane_can_take(q)) {
        q_give(q);
        Py_RETURN_NONE;
    }
    if (!q->wake_sent) {
        q->wake_sent = 1;
        PyObject *r = PyObject_CallNoArgs(q->wake);
        if (r == NULL) return NULL;
        Py_DECREF(r);
    }
    Py_RETURN_NONE;
}

/* Moves the first k slots out (counters updated) into *out; the caller frees them. */
static void q_detach(QueueObject *q, Py_ssize_t k, slot_t *out) {
    for (Py_ssize_t i = 0; i < k; i++) {
        out[i] = *q_at(q, i);
        q->bytes -= out[i].size;
        q->deferred -= deferred_bytes(&out[i]);
        q->unlaneable -= !laneable(&out[i]);
    }
    q->ring.head = (q->ring.head + k) & (q->ring.cap ? q->ring.cap - 1 : 0);
    q->ring.count -= k;
}

/* Drops every queued slot, one at a time, the counters updated before each decref
 * (which may run Python code: it finds the queue consistent). How many were dropped. */
static Py_ssize_t q_drop_all(QueueObject *q) {
    Py_ssize_t k = 0;
    for (; q->ring.count; k++) {
        slot_t s = *q_at(q, 0);
        q->ring.head = (q->ring.head + 1) & (q->ring.cap - 1);
        q->ring.count--;
        q->bytes -= s.size;
        q->deferred -= deferred_bytes(&s);
        q->unlaneable -= !laneable(&s);
        Py_DECREF(s.obj);
    }
    return k;
}

static void free_slots(slot_t *slots, Py_ssize_t k) {
    for (Py_ssize_t i = 0; i < k; i++) Py_DECREF(slots[i].obj);
}

static int parse_size(PyObject *o, Py_ssize_t *size) {
    *size = PyLong_AsSsize_t(o);
    return *size == -1 && PyErr_Occurred() ? -1 : 0;
}

PyDoc_STRVAR(q_add_doc,
"add(kind, payload, step, wall_time, size) -> None\n\n"
"Queue one event (size: its payload's bytes; the queue adds the overhead). Atomic.\n"
"When the gate is closed or the event does not fit: slow(kind, payload, step,\n"
"wall_time, size), whose result is returned.");

static PyObject *q_add(QueueObject *q, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) return PyErr_Format(PyExc_TypeError, "add() takes 5 arguments (%zd given)", nargs);
    Py_ssize_t size;
    if (parse_size(args[4], &size) < 0) return NULL;
    slot_t s;
    /* First what may run Python code (an allocation may start the GC), then the test
     * and the commit, which run none. */
    if (slot_fill(&s, args[0], args[1], args[2], args[3], size + q->overhead) < 0) return NULL;
    if (q_reserve(q) < 0 || !q->open || !q_has_room(q, s.size)) {
        Py_DECREF(s.obj);
        if (PyErr_Occurred()) return NULL;
        return PyObject_Vectorcall(q->slow, args, 5, NULL);
    }
    return q_commit(q, &s);
}

PyDoc_STRVAR(q_add_scalar_doc,
"add_scalar(tag, value, step, wall_time, size) -> None\n\n"
"add(SCALAR, (tag, value), step, wall_time, size) without making the tuple.");

static PyObject *q_add_scalar(QueueObject *q, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5)
        return PyErr_Format(PyExc_TypeError, "add_scalar() takes 5 arguments (%zd given)", nargs);
    Py_ssize_t size;
    if (parse_size(args[4], &size) < 0) return NULL;
    slot_t s;
    s.plain = fill_when(&s, args[2], args[3]) && fill_scalar(&s, args[0], args[1]);
    if (s.plain) {
        s.size = size + q->overhead;
        if (q_reserve(q) == 0 && q->open && q_has_room(q, s.size)) return q_commit(q, &s);
        Py_DECREF(s.obj);
        if (PyErr_Occurred()) return NULL;
    }
    /* Anything else goes the general way, with the payload tuple. */
    PyObject *payload = PyTuple_Pack(2, args[0], args[1]);
    if (payload == NULL) return NULL;
    PyObject *kind = PyLong_FromLong(KIND_SCALAR);
    if (kind == NULL) {
        Py_DECREF(payload);
        return NULL;
    }
    PyObject *full[5] = {kind, payload, args[2], args[3], args[4]};
    PyObject *r = s.plain ? PyObject_Vectorcall(q->slow, full, 5, NULL)
                          : q_add(q, full, 5);
    Py_DECREF(kind);
    Py_DECREF(payload);
    return r;
}

PyDoc_STRVAR(q_put_doc,
"put(kind, payload, step, wall_time, size, drop_oldest) -> int\n\n"
"The slow path's append, under the engine's lock: size is the accounted size. When\n"
"the event does not fit: -1 (nothing queued), or with drop_oldest the oldest events\n"
"are dropped until it fits (an event larger than the room is still queued). Returns\n"
"how many were dropped. The gate is not looked at.");

static PyObject *q_put(QueueObject *q, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) return PyErr_Format(PyExc_TypeError, "put() takes 6 arguments (%zd given)", nargs);
    Py_ssize_t size;
    if (parse_size(args[4], &size) < 0) return NULL;
    int drop_oldest = PyObject_IsTrue(args[5]);
    if (drop_oldest < 0) return NULL;
    slot_t s;
    if (slot_fill(&s, args[0], args[1], args[2], args[3], size) < 0) return NULL;
    if (q_reserve(q) < 0) {
        Py_DECREF(s.obj);
        return NULL;
    }
    q_reap(q);
    Py_ssize_t k = 0, freed = 0;
    while (k < q->ring.count && q->bytes - freed + size > q->room) freed += q_at(q, k++)->size;
    if (q->bytes + size > q->room && !drop_oldest) {
        Py_DECREF(s.obj);
        return PyLong_FromLong(-1);
    }
    slot_t *dropped = k ? PyMem_Malloc(sizeof(slot_t) * (size_t)k) : NULL;
    if (k && dropped == NULL) {
        Py_DECREF(s.obj);
        return PyErr_NoMemory();
    }
    q_detach(q, k, dropped);
    PyObject *r = q_commit(q, &s);
    free_slots(dropped, k); /* after the commit: their finalizers may run Python code */
    PyMem_Free(dropped);
    if (r == NULL) return NULL;
    Py_DECREF(r);
    return PyLong_FromSsize_t(k);
}

PyDoc_STRVAR(q_batch_due_doc, "batch_due() -> bool: whether a batch waits for the drain (see q_batch_due).");

static PyObject *q_batch_due_m(QueueObject *q, PyObject *unused) {
    return PyBool_FromLong(q_batch_due(q));
}

PyDoc_STRVAR(q_fits_doc, "fits(size) -> bool: whether an event of this accounted size fits now.");

static PyObject *q_fits(QueueObject *q, PyObject *arg) {
    Py_ssize_t size;
    if (parse_size(arg, &size) < 0) return NULL;
    return PyBool_FromLong(q_has_room(q, size));
}

PyDoc_STRVAR(q_unappend_doc,
"unappend(seq) -> bool\n\n"
"Take back the last event if it is still queued and was the seq-th appended.");

static PyObject *q_unappend(QueueObject *q, PyObject *arg) {
    long long seq = PyLong_AsLongLong(arg);
    if (seq == -1 && PyErr_Occurred()) return NULL;
    if (q->added != seq || q->ring.count == 0) Py_RETURN_FALSE;
    slot_t s = *q_at(q, q->ring.count - 1);
    q->ring.count--;
    q->bytes -= s.size;
    q->deferred -= deferred_bytes(&s);
    q->unlaneable -= !laneable(&s);
    q->added--;
    Py_DECREF(s.obj);
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(q_take_doc,
"take(batch_bytes, max_pending) -> (Batch, taken, seq) or None\n\n"
"Detach the drain's next batch: events from the head while they fit in batch_bytes\n"
"(at least one); taken: their accounted bytes; seq: the sequence number of the last\n"
"of them. The room becomes max_pending less what the batch keeps (itself, and its\n"
"copies when it holds several events: see _pending.reserved_for). None when empty.\n"
"Either way the next add that fills a batch wakes the drain again.");

static PyObject *q_take(QueueObject *q, PyObject *args) {
    Py_ssize_t batch_bytes, max_pending;
    if (!PyArg_ParseTuple(args, "nn", &batch_bytes, &max_pending)) return NULL;
    q->wake_sent = 0;
    if (q->ring.count == 0) Py_RETURN_NONE;
    Py_ssize_t n = q->ring.count, taken = q->bytes;
    if (taken > batch_bytes) {
        taken = q_at(q, 0)->size;
        n = 1;
        while (n < q->ring.count && taken + q_at(q, n)->size <= batch_bytes) taken += q_at(q, n++)->size;
    }
    BatchObject *b = batch_new(n);
    if (b == NULL) return NULL;
    q_detach(q, n, b->slots);
    b->n = n;
    if (q->ring.count == 0 && q->ring.cap > KEEP_SLOTS) { /* a backlog's ring is not kept for good */
        PyMem_Free(q->ring.slots);
        q->ring.slots = NULL;
        q->ring.cap = q->ring.head = 0;
    }
    q->room = max_pending - (n == 1 ? taken : 3 * taken);
    return Py_BuildValue("(NnL)", b, taken, q->added - (long long)q->ring.count);
}

/* Frees the slots of a ring (and its array). */
static void ring_drop(ring_t *r) {
    ring_free_head(r, PY_SSIZE_T_MAX);
    PyMem_Free(r->slots);
    r->slots = NULL;
    r->cap = r->head = 0;
}

PyDoc_STRVAR(q_lane_start_doc,
"lane_start(fd, budget, max_pending) -> int\n\n"
"Let the native lane write full batches of the queue to file descriptor fd (see\n"
"_lane.c), at most budget bytes more before it stops for the engine to rotate the\n"
"file; max_pending: the room with no batch in flight. The engine must hold no batch\n"
"of its own. Returns the pipe the lane signals on (readable: see lane_stop).");

static PyObject *q_lane_start(QueueObject *q, PyObject *args) {
    int fd;
    long long budget;
    Py_ssize_t max_pending;
    if (!PyArg_ParseTuple(args, "iLn", &fd, &budget, &max_pending)) return NULL;
    if (q->lane == NULL && (q->lane = lane_new()) == NULL) return NULL;
    q->max_pending = max_pending;
    if (lane_start(q->lane, fd, budget) < 0) return NULL;
    return PyLong_FromLong(lane_fd(q->lane));
}

PyDoc_STRVAR(q_lane_give_doc,
"lane_give() -> bool\n\n"
"Hand queued events to the lane now (started and idle; the loop then waits for it).\n"
"The whole ring when it fits in half the bound, as the add that fills a batch does;\n"
"a backlog past that, its head: as much as keeps the ring and the lane's copies\n"
"within the bound with half the room left for the adds meanwhile (at least one\n"
"event). False when nothing was given: empty, something only Python frames queued,\n"
"the lane off or busy.");

static PyObject *q_lane_give(QueueObject *q, PyObject *unused) {
    if (q->ring.count == 0 || q->lane == NULL || !lane_is_on(q->lane) || q->unlaneable ||
        !lane_idle(q->lane))
        Py_RETURN_FALSE;
    Py_ssize_t before = q->ring.count;
    if (2 * q->bytes <= q->max_pending) {
        q_give(q);
        return PyBool_FromLong(q->ring.count < before);
    }
    Py_ssize_t limit = (q->max_pending - q->bytes) / 2, taken = q_at(q, 0)->size, k = 1;
    while (k < q->ring.count && taken + q_at(q, k)->size <= limit) taken += q_at(q, k++)->size;
    Py_ssize_t cap = 64;
    while (cap < k) cap *= 2;
    ring_t head = {PyMem_Malloc(sizeof(slot_t) * (size_t)cap), cap, 0, k};
    if (head.slots == NULL) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < k; i++) head.slots[i] = *q_at(q, i);
    q_reap(q);
    q_free_some(q, PY_SSIZE_T_MAX);
    if (!q_offer(q, &head, taken, q->added - (q->ring.count - k))) {
        PyMem_Free(head.slots); /* the slots are still the ring's */
        Py_RETURN_FALSE;
    }
    q->ring.head = (q->ring.head + k) & (q->ring.cap - 1); /* moved, not copied */
    q->ring.count -= k;
    q->bytes -= taken;
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(q_lane_stop_doc,
"lane_stop() -> bool\n\n"
"No more batches for the lane. True when it is idle (lane_collect may be called);\n"
"False: it is writing one, and its pipe becomes readable when it is done. Its pipe\n"
"also becomes readable when it stops by itself (a write failed, the file is full).");

static PyObject *q_lane_stop(QueueObject *q, PyObject *unused) {
    return PyBool_FromLong(q->lane == NULL || lane_stop(q->lane));
}

PyDoc_STRVAR(q_lane_collect_doc,
"lane_collect() -> (events, bytes, seq, batches, errno, rest, rest_events, rest_seq, rest_taken)\n\n"
"What the idle lane wrote since the last collect: events, bytes, the sequence number\n"
"of the last event written, batches ever written. errno != 0: its last batch failed;\n"
"rest is that batch's unwritten framed bytes (rest_events events up to rest_seq,\n"
"rest_taken accounted bytes, whose room stays kept for the engine to give back).\n"
"Frees what the lane finished.");

static PyObject *q_lane_collect(QueueObject *q, PyObject *unused) {
    lane_result_t got = {0};
    if (q->lane != NULL) {
        ring_t fin;
        if (lane_collect(q->lane, &fin, &got) < 0) return NULL;
        q_free_some(q, PY_SSIZE_T_MAX);
        q->freeing = fin;
        q_free_some(q, PY_SSIZE_T_MAX);
        if (got.rest == NULL) q->room += q->lane_reserved; /* else the engine's to give back */
        q->lane_reserved = 0;
    }
    return Py_BuildValue("(LLLLiNnLn)", got.events, got.bytes, got.seq, got.batches, got.err,
                         got.rest ? got.rest : Py_NewRef(Py_None), got.rest_events,
                         got.rest_seq, got.rest_taken);
}

PyDoc_STRVAR(q_lane_held_doc,
"lane_held() -> (events, taken, written, bytes, batches)\n\n"
"The batch the lane is writing (events, accounted bytes), the events and bytes it\n"
"wrote since the last lane_collect, and the batches it ever wrote.");

static PyObject *q_lane_held(QueueObject *q, PyObject *unused) {
    Py_ssize_t events = 0, taken = 0;
    long long written = 0, bytes = 0, batches = 0;
    if (q->lane) lane_held(q->lane, &events, &taken, &written, &bytes, &batches);
    return Py_BuildValue("(nnLLL)", events, taken, written, bytes, batches);
}

PyDoc_STRVAR(q_clear_doc, "clear() -> int: drop every queued event; how many there were.");

static PyObject *q_clear(QueueObject *q, PyObject *unused) {
    return PyLong_FromSsize_t(q_drop_all(q));
}

static Py_ssize_t q_len(QueueObject *q) { return q->ring.count; }

static int q_traverse(QueueObject *q, visitproc visit, void *arg) {
    Py_VISIT(q->wake);
    Py_VISIT(q->slow);
    return 0;
}

static int q_clear_refs(QueueObject *q) {
    Py_CLEAR(q->wake);
    Py_CLEAR(q->slow);
    return 0;
}

static void q_dealloc(QueueObject *q) {
    PyObject_GC_UnTrack(q);
    q_clear_refs(q);
    q_drop_all(q);
    PyMem_Free(q->ring.slots);
    if (q->lane != NULL) {
        ring_t fin, held;
        lane_release(q->lane, &fin, &held);
        ring_drop(&fin);
        if (held.count) ring_drop(&held); /* a forked child's copy of the lane's batch */
    }
    ring_drop(&q->freeing);
    PyMem_Free(q->spare);
    PyObject_GC_Del(q);
}

static PyObject *q_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *names[] = {"room", "batch_bytes", "overhead", "wake", "slow", NULL};
    Py_ssize_t room, batch_bytes, overhead;
    PyObject *wake, *slow;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nnnOO:PendingQueue", names, &room, &batch_bytes,
                                     &overhead, &wake, &slow))
        return NULL;
    if (!PyCallable_Check(wake) || !PyCallable_Check(slow))
        return PyErr_Format(PyExc_TypeError, "wake and slow must be callable");
    QueueObject *q = (QueueObject *)type->tp_alloc(type, 0);
    if (q == NULL) return NULL;
    q->ring.slots = NULL;
    q->ring.cap = q->ring.head = q->ring.count = q->bytes = q->deferred = 0;
    q->lane = NULL;
    q->max_pending = room;
    q->lane_reserved = q->unlaneable = 0;
    q->freeing = (ring_t){NULL, 0, 0, 0};
    q->spare = NULL;
    q->spare_cap = 0;
    q->room = room;
    q->batch_bytes = batch_bytes;
    q->overhead = overhead;
    q->added = 0;
    q->open = 1;
    q->wake_sent = 0;
    Py_INCREF(wake);
    q->wake = wake;
    Py_INCREF(slow);
    q->slow = slow;
    return (PyObject *)q;
}

static PyMethodDef q_methods[] = {
    {"add", (PyCFunction)(void (*)(void))q_add, METH_FASTCALL, q_add_doc},
    {"add_scalar", (PyCFunction)(void (*)(void))q_add_scalar, METH_FASTCALL, q_add_scalar_doc},
    {"put", (PyCFunction)(void (*)(void))q_put, METH_FASTCALL, q_put_doc},
    {"fits", (PyCFunction)q_fits, METH_O, q_fits_doc},
    {"batch_due", (PyCFunction)q_batch_due_m, METH_NOARGS, q_batch_due_doc},
    {"unappend", (PyCFunction)q_unappend, METH_O, q_unappend_doc},
    {"take", (PyCFunction)q_take, METH_VARARGS, q_take_doc},
    {"clear", (PyCFunction)q_clear, METH_NOARGS, q_clear_doc},
    {"lane_start", (PyCFunction)q_lane_start, METH_VARARGS, q_lane_start_doc},
    {"lane_give", (PyCFunction)q_lane_give, METH_NOARGS, q_lane_give_doc},
    {"lane_stop", (PyCFunction)q_lane_stop, METH_NOARGS, q_lane_stop_doc},
    {"lane_collect", (PyCFunction)q_lane_collect, METH_NOARGS, q_lane_collect_doc},
    {"lane_held", (PyCFunction)q_lane_held, METH_NOARGS, q_lane_held_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef q_members[] = {
    {"open", T_BOOL, offsetof(QueueObject, open), 0, "The gate: False sends every add to slow."},
    {"wake_sent", T_BOOL, offsetof(QueueObject, wake_sent), 0, "The drain was woken for a batch."},
    {"room", T_PYSSIZET, offsetof(QueueObject, room), 0, "Bytes the queued events may take."},
    {"bytes", T_PYSSIZET, offsetof(QueueObject, bytes), READONLY, "Accounted bytes queued."},
    {"deferred", T_PYSSIZET, offsetof(QueueObject, deferred), READONLY,
     "Of those, the DEFERRED events' (they do not make a batch)."},
    {"added", T_LONGLONG, offsetof(QueueObject, added), READONLY, "Events ever appended."},
    {"unlaneable", T_PYSSIZET, offsetof(QueueObject, unlaneable), READONLY,
     "Queued events the lane cannot write."},
    {"lane_reserved", T_PYSSIZET, offsetof(QueueObject, lane_reserved), READONLY,
     "Room kept for the lane's batch."},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods q_as_sequence = {.sq_length = (lenfunc)q_len};

static PyTypeObject Queue_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "asyncsummary._native.PendingQueue",
    .tp_basicsize = sizeof(QueueObject),
    .tp_dealloc = (destructor)q_dealloc,
    .tp_as_sequence = &q_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "PendingQueue(room, batch_bytes, overhead, wake, slow): a writer's pending events "
              "(see asyncsummary/_pending.py).",
    .tp_traverse = (traverseproc)q_traverse,
    .tp_clear = (inquiry)q_clear_refs,
    .tp_methods = q_methods,
    .tp_members = q_members,
    .tp_new = q_new,
};

static PyMethodDef functions[] = {
    {"batch_of", batch_of, METH_O, batch_of_doc},
    {NULL, NULL, 0, NULL},
};

int queue_init(PyObject *module) {
    if (PyType_Ready(&Batch_Type) < 0 || PyType_Ready(&Queue_Type) < 0) return -1;
    if (PyModule_AddFunctions(module, functions) < 0) return -1;
    Py_INCREF(&Batch_Type);
    if (PyModule_AddObject(module, "Batch", (PyObject *)&Batch_Type) < 0) {
        Py_DECREF(&Batch_Type);
        return -1;
    }
    if (PyModule_AddIntConstant(module, "LANE", HAVE_LANE) < 0) return -1;
    Py_INCREF(&Queue_Type);
    if (PyModule_AddObject(module, "PendingQueue", (PyObject *)&Queue_Type) < 0) {
        Py_DECREF(&Queue_Type);
        return -1;
    }
    return 0;
}
